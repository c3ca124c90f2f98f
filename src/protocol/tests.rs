//! Wire-format tests: every message's JSON shape and the parse errors.

use super::*;
use crate::ids::{BetId, RoundId, UserId};
use serde_json::json;

fn bet(id: &str) -> BetId {
    BetId::parse(id).unwrap()
}

#[test]
fn client_messages_parse_from_their_documented_json() {
    let m =
        parse_client(br#"{"type":"bet.place","id":"b1","round":7,"spot":"banker","amount":500}"#)
            .unwrap();
    assert_eq!(
        m,
        ClientMessage::BetPlace {
            id: bet("b1"),
            round: RoundId(7),
            spot: "banker".into(),
            amount: 500.into()
        }
    );
    assert!(matches!(
        parse_client(br#"{"type":"hello","token":"t","resume_after_seq":41}"#),
        Ok(ClientMessage::Hello {
            resume_after_seq: Some(41),
            ..
        })
    ));
    assert!(matches!(
        parse_client(br#"{"type":"ping","client_ms":5,"extra":1}"#),
        Ok(ClientMessage::Ping { client_ms: 5 })
    ));
    assert!(matches!(
        parse_client(br#"{"type":"dealer.result","id":"c1","outcome":"tie"}"#),
        Ok(ClientMessage::DealerResult { media_ts: None, .. })
    ));
    for ty in CLIENT_TYPES {
        // Every listed type is known to the parser: bad fields, never "unknown type".
        let e = parse_client(format!(r#"{{"type":"{ty}","zzz":1}}"#).as_bytes());
        assert!(!matches!(e, Err(ProtocolError::UnknownType { .. })), "{ty}");
    }
}

#[test]
fn oversize_malformed_untyped_unknown_and_invalid_messages_get_distinct_error_codes() {
    let big = format!(
        r#"{{"type":"chat","id":"c","text":"{}"}}"#,
        "x".repeat(MAX_MESSAGE_BYTES)
    );
    let e = parse_client(big.as_bytes()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::TooLarge);

    assert_eq!(
        parse_client(b"{not json").unwrap_err().code(),
        ErrorCode::Malformed
    );
    assert_eq!(
        parse_client(br#"[1,2]"#).unwrap_err(),
        ProtocolError::MissingType
    );
    assert_eq!(
        parse_client(br#"{"type":"bet.explode"}"#)
            .unwrap_err()
            .code(),
        ErrorCode::UnknownType
    );

    let e =
        parse_client(br#"{"type":"bet.place","id":"b9","round":"seven","spot":"tie","amount":1}"#)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidMessage);
    let reply = serde_json::to_value(e.to_reply()).unwrap();
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "invalid_message");
    assert_eq!(reply["id"], "b9");
}

#[test]
fn a_bad_amount_or_spot_still_parses_so_the_core_can_reject_it_by_id() {
    for body in [
        r#"{"type":"bet.place","id":"b1","round":1,"spot":"banker","amount":-5}"#,
        r#"{"type":"bet.place","id":"b1","round":1,"spot":"banker","amount":2.5}"#,
        r#"{"type":"bet.place","id":"b1","round":1,"spot":"no such spot","amount":5}"#,
    ] {
        assert!(
            matches!(
                parse_client(body.as_bytes()),
                Ok(ClientMessage::BetPlace { .. })
            ),
            "{body}"
        );
    }
}

#[test]
fn a_video_view_parses_with_its_defaults_and_names_its_session_when_it_likes() {
    let m = parse_client(
        br#"{"type":"video.view","width":780,"height":438,"hidden":true,"quality":"low","session":"01ab-n1"}"#,
    )
    .unwrap();
    assert_eq!(
        m,
        ClientMessage::VideoView {
            width: 780,
            height: 438,
            hidden: true,
            quality: ViewQuality::Low,
            session: Some(crate::ids::SessionId::parse("01ab-n1").unwrap()),
        }
    );
    assert_eq!(m.id(), None);
    assert!(!m.needs_dealer());
    // A data channel's view may leave out all but the size.
    assert_eq!(
        parse_client(br#"{"type":"video.view","width":0,"height":0}"#).unwrap(),
        ClientMessage::VideoView {
            width: 0,
            height: 0,
            hidden: false,
            quality: ViewQuality::Auto,
            session: None,
        }
    );
    let back = serde_json::to_value(&m).unwrap();
    assert_eq!(back["type"], "video.view");
    assert_eq!(back["quality"], "low");
}

#[test]
fn a_video_view_size_is_rounded_and_capped_but_never_negative() {
    let size = |w: &str, h: &str| {
        let body = format!(r#"{{"type":"video.view","width":{w},"height":{h}}}"#);
        match parse_client(body.as_bytes()) {
            Ok(ClientMessage::VideoView { width, height, .. }) => Ok((width, height)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    };
    assert_eq!(size("1023.75", "575.4").unwrap(), (1024, 575));
    assert_eq!(size("99999", "1e308").unwrap(), (MAX_VIEW_PX, MAX_VIEW_PX));
    assert_eq!(
        size("18446744073709551615", "16384").unwrap(),
        (MAX_VIEW_PX, MAX_VIEW_PX)
    );
    for (w, h) in [
        ("-1", "10"),
        ("10", "-0.5"),
        ("\"wide\"", "10"),
        ("null", "10"),
    ] {
        let e = size(w, h).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidMessage, "{w}x{h}: {e}");
    }
}

#[test]
fn a_video_view_with_an_unknown_quality_or_a_missing_size_is_an_invalid_message() {
    let e = parse_client(br#"{"type":"video.view","width":10,"height":10,"quality":"ultra"}"#)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidMessage);
    let text = e.to_string();
    assert!(text.contains("ultra") && text.contains("auto"), "{text}");
    for body in [
        r#"{"type":"video.view","height":10}"#,
        r#"{"type":"video.view","width":10}"#,
        r#"{"type":"video.view","width":10,"height":10,"hidden":"yes"}"#,
        r#"{"type":"video.view","width":10,"height":10,"session":"no spaces"}"#,
    ] {
        let e = parse_client(body.as_bytes()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidMessage, "{body}: {e}");
        let reply = serde_json::to_value(e.to_reply()).unwrap();
        assert_eq!(reply["type"], "error");
    }
}

#[test]
fn sequenced_events_put_seq_and_type_side_by_side_and_read_back() {
    let ev = SequencedEvent {
        seq: 12,
        server_ms: ServerTime(1_700_000_000_000),
        event: PublicEvent::RoundOpened {
            round: RoundId(3),
            closes_at_server_ms: ServerTime(1_700_000_015_000),
        },
    };
    let v = serde_json::to_value(&ev).unwrap();
    assert_eq!(
        v,
        json!({"seq":12,"server_ms":1_700_000_000_000u64,"type":"round.opened","round":3,"closes_at_server_ms":1_700_000_015_000u64})
    );
    let back: ServerMessage = serde_json::from_value(v).unwrap();
    assert_eq!(back, ServerMessage::Event(ev));
}

#[test]
fn totals_replies_and_session_messages_have_their_documented_shape() {
    let spot = SpotId::parse("banker").unwrap();
    let totals = PublicEvent::Totals(TotalsView {
        round: RoundId(3),
        spots: [(
            spot.clone(),
            SpotTotal {
                amount: 1500,
                bettors: 2,
            },
        )]
        .into(),
        bettors: 2,
        is_final: false,
    });
    let v = serde_json::to_value(SequencedEvent {
        seq: 1,
        server_ms: ServerTime(5),
        event: totals,
    })
    .unwrap();
    assert_eq!(v["type"], "totals");
    assert_eq!(v["spots"]["banker"]["amount"], 1500);
    assert_eq!(v["final"], false);

    let r = Reply::BetRejected {
        id: bet("b2"),
        code: RejectCode::BettingClosed,
        message: "late".into(),
    };
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({"type":"bet.rejected","id":"b2","code":"betting_closed","message":"late"})
    );
    let back: ServerMessage = serde_json::from_str(&encode(&r)).unwrap();
    assert_eq!(back, ServerMessage::Reply(r));

    let p = SessionMessage::Pong {
        client_ms: 10,
        server_ms: ServerTime(20),
    };
    assert_eq!(
        encode(&p),
        r#"{"type":"pong","client_ms":10,"server_ms":20}"#
    );

    let chat = PublicEvent::Chat {
        id: bet("c1"),
        user: UserId::parse("alice").unwrap(),
        text: "hi".into(),
    };
    let v = serde_json::to_value(SequencedEvent {
        seq: 2,
        server_ms: ServerTime(6),
        event: chat,
    })
    .unwrap();
    assert_eq!(v["type"], "chat");
    assert_eq!(v["user"], "alice");
}

/// The ```json blocks of docs/protocol.md.
pub(crate) fn protocol_md_examples() -> Vec<serde_json::Value> {
    let doc = include_str!("../../docs/protocol.md");
    doc.split("```json")
        .skip(1)
        .map(|block| {
            let body = block.split("```").next().unwrap();
            serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("bad JSON in docs/protocol.md ({e}): {body}"))
        })
        .collect()
}

#[test]
fn every_example_in_protocol_md_parses_and_server_examples_serialize_back_exactly() {
    let examples = protocol_md_examples();
    assert!(examples.len() >= 25, "{} examples", examples.len());
    let mut client_types = std::collections::BTreeSet::new();
    for v in examples {
        if v.get("kind").is_some() {
            continue; // log records: checked in table::record's tests
        }
        let ty = v["type"].as_str().unwrap().to_owned();
        if CLIENT_TYPES.contains(&ty.as_str()) && v.get("seq").is_none() {
            parse_client(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{ty}: {e}"));
            client_types.insert(ty);
        } else {
            let msg: ServerMessage =
                serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{ty}: {e}: {v}"));
            assert_eq!(
                serde_json::to_value(&msg).unwrap(),
                v,
                "{ty} does not serialize back to its example"
            );
        }
    }
    assert_eq!(
        client_types.len(),
        CLIENT_TYPES.len(),
        "every client type has an example: {client_types:?}"
    );
}
