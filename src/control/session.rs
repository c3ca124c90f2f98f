//! One control connection's own business, before anything reaches the table: reading and
//! checking each message, rate limits on what a connection may send, `ping`, `video.view`, and
//! who the connection is. The same code serves data channels (on media worker threads) and WebSockets
//! (on their tasks), so both transports behave the same.
//!
//! Nothing here blocks or allocates per message beyond the parse and the reply.

use super::{ConnId, Limits};
use crate::auth::{Identity, TokenRole, Tokens};
use crate::ids::{SessionId, TableId, UserId};
use crate::media::{Quality, View};
use crate::protocol::{
    self, ClientMessage, ErrorCode, PROTOCOL_VERSION, Reply, ServerMessage, SessionMessage,
    ViewQuality,
};
use std::time::Instant;

pub use crate::limits::Bucket;

/// Who a connection speaks for, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    pub user: UserId,
    pub role: TokenRole,
}

/// What to do with one message.
#[derive(Debug)]
pub enum Step {
    /// Answer this connection only (an error, a `pong`).
    Reply(String),
    /// Join the table, or rejoin it from `resume_after_seq`.
    Attach {
        speaker: Speaker,
        resume_after_seq: Option<u64>,
    },
    /// A table command for the table's single writer.
    Command {
        speaker: Speaker,
        msg: ClientMessage,
    },
    /// How `user`'s page shows the video of WHEP `session` (the data channel's own session when
    /// `None`), for its media worker ([`crate::media::MediaHandle::set_view`]).
    View {
        session: Option<SessionId>,
        user: UserId,
        view: View,
    },
    /// Close the connection, telling the client why (an `error` event with `code`, then the close).
    Close { code: ErrorCode, reason: String },
}

/// `video.view` messages a connection may send at once, and then per second: a page sends one
/// on connect, one when its size, visibility or preference settles (debounced), and one every
/// few seconds. More is a client at fault: answered like garbage, then closed.
const VIEW_BURST: u32 = 10;
const VIEW_PER_SEC: f64 = 2.0;

/// Per-connection state.
#[derive(Debug)]
pub struct ControlSession {
    pub conn: ConnId,
    table: TableId,
    /// Known from the start on a data channel (the WHEP session's token); from `hello` on a
    /// WebSocket.
    speaker: Option<Speaker>,
    attached: bool,
    messages: Bucket,
    views: Bucket,
    garbage: Bucket,
    garbage_seen: u64,
}

impl ControlSession {
    pub fn new(
        conn: ConnId,
        table: TableId,
        speaker: Option<Speaker>,
        limits: &Limits,
        now: Instant,
    ) -> Self {
        Self {
            conn,
            table,
            speaker,
            attached: false,
            messages: Bucket::new(limits.messages_burst, limits.messages_per_sec, now),
            views: Bucket::new(VIEW_BURST, VIEW_PER_SEC, now),
            garbage: Bucket::new(limits.garbage_burst, limits.garbage_per_sec, now),
            garbage_seen: 0,
        }
    }

    pub fn attached(&self) -> bool {
        self.attached
    }

    pub fn speaker(&self) -> Option<&Speaker> {
        self.speaker.as_ref()
    }

    /// Reads one message and says what to do with it.
    pub fn on_message(
        &mut self,
        data: &[u8],
        tokens: &Tokens,
        now: Instant,
        server_ms: u64,
    ) -> Step {
        if !self.messages.take(now) {
            return self.garbage(
                now,
                ErrorCode::RateLimited,
                "too many messages on this connection; slow down".into(),
            );
        }
        let msg = match protocol::parse_client(data) {
            Ok(msg) => msg,
            Err(e) => {
                let Reply::Error { code, message, .. } = e.to_reply() else {
                    unreachable!("to_reply gives an error")
                };
                return self.garbage(now, code, message);
            }
        };
        match msg {
            ClientMessage::Ping { client_ms } => Step::Reply(protocol::encode(
                &ServerMessage::Session(SessionMessage::Pong {
                    client_ms,
                    server_ms: protocol::ServerTime(server_ms),
                }),
            )),
            ClientMessage::Hello {
                token,
                resume_after_seq,
                v,
            } => {
                if v.is_some_and(|v| v != PROTOCOL_VERSION) {
                    return error_reply(
                        None,
                        ErrorCode::InvalidMessage,
                        format!(
                            "protocol version {} is not spoken here; this node speaks v{PROTOCOL_VERSION}",
                            v.unwrap_or_default()
                        ),
                    );
                }
                match self.identify(&token, tokens) {
                    Ok(speaker) => {
                        self.speaker = Some(speaker.clone());
                        self.attached = true;
                        Step::Attach {
                            speaker,
                            resume_after_seq,
                        }
                    }
                    Err(message) => {
                        if self.attached {
                            error_reply(None, ErrorCode::Unauthorized, message)
                        } else {
                            Step::Close {
                                code: ErrorCode::Unauthorized,
                                reason: message,
                            }
                        }
                    }
                }
            }
            msg => {
                let Some(speaker) = self.speaker.clone().filter(|_| self.attached) else {
                    return error_reply(
                        msg.id().cloned(),
                        ErrorCode::Unauthorized,
                        "send hello first: {\"type\":\"hello\",\"token\":\"…\"}".into(),
                    );
                };
                if let Err(message) = may_send(&msg, speaker.role) {
                    return error_reply(msg.id().cloned(), ErrorCode::Unauthorized, message);
                }
                match msg {
                    ClientMessage::VideoView {
                        width,
                        height,
                        hidden,
                        quality,
                        session,
                    } => {
                        if !self.views.take(now) {
                            return self.garbage(
                                now,
                                ErrorCode::RateLimited,
                                format!("too many video.view messages; at most {VIEW_PER_SEC} a second: send one when the view changes"),
                            );
                        }
                        let quality = match quality {
                            ViewQuality::Auto => Quality::Auto,
                            ViewQuality::High => Quality::High,
                            ViewQuality::Low => Quality::Low,
                        };
                        Step::View {
                            session,
                            user: speaker.user,
                            view: View {
                                width,
                                height,
                                hidden,
                                quality,
                            },
                        }
                    }
                    msg => Step::Command { speaker, msg },
                }
            }
        }
    }

    /// Who the `hello` token says this is. On a data channel the session already proved its
    /// token, so an empty `token` keeps that identity and a non-empty one must agree with it.
    fn identify(&self, token: &str, tokens: &Tokens) -> Result<Speaker, String> {
        if token.is_empty()
            && let Some(speaker) = &self.speaker
        {
            return Ok(speaker.clone());
        }
        let identity: Identity = tokens
            .verify(token)
            .map_err(|e| format!("hello refused: {e}"))?;
        identity
            .require(
                &self.table,
                &[TokenRole::Player, TokenRole::Dealer, TokenRole::Operator],
                "player, dealer or operator",
            )
            .map_err(|e| format!("hello refused: {e}"))?;
        let speaker = Speaker {
            user: identity.user,
            role: identity.role,
        };
        if let Some(known) = &self.speaker
            && known.user != speaker.user
        {
            return Err(format!(
                "hello refused: the token is for {} but this connection belongs to {}",
                speaker.user, known.user
            ));
        }
        Ok(speaker)
    }

    /// A message that is no use: answer with an error, or close once the client keeps at it.
    fn garbage(&mut self, now: Instant, code: ErrorCode, message: String) -> Step {
        self.garbage_seen += 1;
        if self.garbage.take(now) {
            error_reply(None, code, message)
        } else {
            Step::Close {
                code: ErrorCode::RateLimited,
                reason: format!(
                    "closed after {} bad or excess messages ({message}); fix the client and reconnect",
                    self.garbage_seen
                ),
            }
        }
    }
}

/// Whether a token role may send this command.
fn may_send(msg: &ClientMessage, role: TokenRole) -> Result<(), String> {
    let allowed = match msg {
        ClientMessage::OperatorMute { .. } => role == TokenRole::Operator,
        m if m.needs_dealer() => matches!(role, TokenRole::Dealer | TokenRole::Operator),
        _ => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "a {} token may not send this message; it needs a {} token",
            role.as_str(),
            if matches!(msg, ClientMessage::OperatorMute { .. }) {
                "operator"
            } else {
                "dealer or operator"
            }
        ))
    }
}

fn error_reply(id: Option<crate::ids::BetId>, code: ErrorCode, message: String) -> Step {
    Step::Reply(protocol::encode(&Reply::Error { id, code, message }))
}

/// The `error` a WebSocket gets for a `video.view` that names no session: a WebSocket is not
/// part of any WHEP session, so it cannot tell which video the view is of.
pub fn view_needs_session() -> String {
    protocol::encode(&Reply::Error {
        id: None,
        code: ErrorCode::InvalidMessage,
        message: "video.view on a WebSocket must name its WHEP session: \"session\", the last part of the WHEP Location".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn conn_state(speaker: Option<Speaker>, now: Instant) -> ControlSession {
        ControlSession::new(
            ConnId(1),
            TableId::parse("demo").unwrap(),
            speaker,
            &Limits::default(),
            now,
        )
    }

    fn tokens() -> Tokens {
        Tokens::from_secret(b"conn_state-test-secret-conn_state-test-secret")
    }

    fn token(t: &Tokens, role: TokenRole, table: &str, user: &str) -> String {
        t.issue(
            role,
            table,
            &UserId::parse(user).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    fn reply_type(step: &Step) -> serde_json::Value {
        match step {
            Step::Reply(text) => serde_json::from_str(text).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn ping_is_answered_with_the_clients_time_and_the_servers() {
        let now = Instant::now();
        let mut e = conn_state(None, now);
        let step = e.on_message(br#"{"type":"ping","client_ms":42}"#, &tokens(), now, 1000);
        let v = reply_type(&step);
        assert_eq!(v["type"], "pong");
        assert_eq!(v["client_ms"], 42);
        assert_eq!(v["server_ms"], 1000);
    }

    #[test]
    fn commands_before_hello_are_refused_and_the_connection_stays() {
        let now = Instant::now();
        let mut e = conn_state(None, now);
        let step = e.on_message(
            br#"{"type":"bet.place","id":"b1","round":1,"spot":"player","amount":100}"#,
            &tokens(),
            now,
            0,
        );
        let v = reply_type(&step);
        assert_eq!(v["code"], "unauthorized");
        assert_eq!(v["id"], "b1");
    }

    #[test]
    fn a_websocket_hello_needs_a_token_for_this_table() {
        let now = Instant::now();
        let t = tokens();
        let mut e = conn_state(None, now);
        let other = token(&t, TokenRole::Player, "other", "p1");
        let hello = format!(r#"{{"type":"hello","token":"{other}"}}"#);
        assert!(matches!(
            e.on_message(hello.as_bytes(), &t, now, 0),
            Step::Close { code: ErrorCode::Unauthorized, reason: m } if m.contains("other")
        ));
        let mut e = conn_state(None, now);
        let good = token(&t, TokenRole::Player, "demo", "p1");
        let hello = format!(r#"{{"type":"hello","token":"{good}","resume_after_seq":7}}"#);
        match e.on_message(hello.as_bytes(), &t, now, 0) {
            Step::Attach {
                speaker,
                resume_after_seq,
            } => {
                assert_eq!(speaker.user.as_str(), "p1");
                assert_eq!(resume_after_seq, Some(7));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_data_channel_hello_may_omit_the_token_but_not_change_user() {
        let now = Instant::now();
        let t = tokens();
        let me = Speaker {
            user: UserId::parse("p1").unwrap(),
            role: TokenRole::Player,
        };
        let mut e = conn_state(Some(me.clone()), now);
        assert!(matches!(
            e.on_message(br#"{"type":"hello","token":""}"#, &t, now, 0),
            Step::Attach { speaker, .. } if speaker == me
        ));
        let other = token(&t, TokenRole::Player, "demo", "p2");
        let hello = format!(r#"{{"type":"hello","token":"{other}"}}"#);
        let v = reply_type(&e.on_message(hello.as_bytes(), &t, now, 0));
        assert_eq!(v["code"], "unauthorized");
    }

    #[test]
    fn players_may_not_deal_and_dealers_may_not_mute() {
        let now = Instant::now();
        let t = tokens();
        for (role, msg, ok) in [
            (
                TokenRole::Player,
                r#"{"type":"dealer.open","id":"c1"}"#,
                false,
            ),
            (
                TokenRole::Dealer,
                r#"{"type":"dealer.open","id":"c1"}"#,
                true,
            ),
            (
                TokenRole::Dealer,
                r#"{"type":"operator.mute","id":"c2","user":"p1","muted":true}"#,
                false,
            ),
            (
                TokenRole::Operator,
                r#"{"type":"operator.mute","id":"c2","user":"p1","muted":true}"#,
                true,
            ),
        ] {
            let speaker = Speaker {
                user: UserId::parse("u").unwrap(),
                role,
            };
            let mut e = conn_state(Some(speaker), now);
            assert!(matches!(
                e.on_message(br#"{"type":"hello","token":""}"#, &t, now, 0),
                Step::Attach { .. }
            ));
            let step = e.on_message(msg.as_bytes(), &t, now, 0);
            assert_eq!(matches!(step, Step::Command { .. }), ok, "{role:?} {msg}");
        }
    }

    #[test]
    fn garbage_gets_errors_until_the_rate_is_passed_then_the_connection_closes() {
        let now = Instant::now();
        let limits = Limits::default();
        let mut e = conn_state(None, now);
        let mut errors = 0;
        let closed = loop {
            match e.on_message(b"{not json", &tokens(), now, 0) {
                Step::Reply(text) => {
                    assert!(text.contains("\"malformed\""), "{text}");
                    errors += 1;
                }
                Step::Close { reason, .. } => break reason,
                other => panic!("{other:?}"),
            }
            assert!(errors <= limits.garbage_burst, "never closed");
        };
        assert_eq!(errors, limits.garbage_burst);
        assert!(closed.contains("bad or excess messages"), "{closed}");
    }

    #[test]
    fn garbage_spread_out_in_time_is_forgiven() {
        let mut now = Instant::now();
        let mut e = conn_state(None, now);
        for _ in 0..200 {
            now += Duration::from_secs(2);
            assert!(matches!(
                e.on_message(b"[]", &tokens(), now, 0),
                Step::Reply(_)
            ));
        }
    }

    #[test]
    fn a_video_view_is_for_the_speakers_own_sessions_once_attached() {
        let now = Instant::now();
        let t = tokens();
        let view = br#"{"type":"video.view","width":390.4,"height":219,"quality":"high"}"#;
        let mut e = conn_state(None, now);
        assert_eq!(
            reply_type(&e.on_message(view, &t, now, 0))["code"],
            "unauthorized"
        );
        let me = Speaker {
            user: UserId::parse("p1").unwrap(),
            role: TokenRole::Player,
        };
        let mut e = conn_state(Some(me), now);
        assert!(matches!(
            e.on_message(br#"{"type":"hello","token":""}"#, &t, now, 0),
            Step::Attach { .. }
        ));
        match e.on_message(view, &t, now, 0) {
            Step::View {
                session: None,
                user,
                view,
            } => {
                assert_eq!(user.as_str(), "p1");
                assert_eq!(
                    view,
                    View {
                        width: 390,
                        height: 219,
                        hidden: false,
                        quality: Quality::High
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        let v = reply_type(&e.on_message(
            br#"{"type":"video.view","width":1,"height":1,"quality":"best"}"#,
            &t,
            now,
            0,
        ));
        assert_eq!(v["code"], "invalid_message");
        assert!(v["message"].as_str().unwrap().contains("best"), "{v}");
    }

    #[test]
    fn a_flood_of_video_views_is_refused_then_closed_and_a_steady_page_never_is() {
        let mut now = Instant::now();
        let t = tokens();
        let me = Speaker {
            user: UserId::parse("p1").unwrap(),
            role: TokenRole::Player,
        };
        let view = br#"{"type":"video.view","width":640,"height":360}"#;
        let mut e = conn_state(Some(me.clone()), now);
        e.on_message(br#"{"type":"hello","token":""}"#, &t, now, 0);
        let mut views = 0;
        let mut refused = 0;
        let reason = loop {
            match e.on_message(view, &t, now, 0) {
                Step::View { .. } => views += 1,
                Step::Reply(text) => {
                    assert!(text.contains("rate_limited"), "{text}");
                    refused += 1;
                }
                Step::Close { reason, .. } => break reason,
                other => panic!("{other:?}"),
            }
            assert!(views + refused < 1000, "never closed");
        };
        assert_eq!(views, VIEW_BURST);
        assert_eq!(refused, Limits::default().garbage_burst);
        assert!(reason.contains("bad or excess"), "{reason}");

        // A page that resizes now and then and says so every 5 s for an hour.
        let mut e = conn_state(Some(me), now);
        e.on_message(br#"{"type":"hello","token":""}"#, &t, now, 0);
        for i in 0..720 {
            now += Duration::from_secs(5);
            for _ in 0..(1 + i % 3) {
                assert!(matches!(e.on_message(view, &t, now, 0), Step::View { .. }));
            }
        }
    }

    #[test]
    fn oversized_messages_get_an_error_naming_the_limit() {
        let now = Instant::now();
        let mut e = conn_state(None, now);
        let big = vec![b' '; protocol::MAX_MESSAGE_BYTES + 1];
        let v = reply_type(&e.on_message(&big, &tokens(), now, 0));
        assert_eq!(v["code"], "too_large");
    }
}
