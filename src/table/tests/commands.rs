//! Dealer and operator commands, auto-open, chat, re-sent replies and clock handling.

use super::*;
use crate::protocol::{ErrorCode, RejectCode};

fn code(r: &Reply) -> RejectCode {
    match r {
        Reply::BetRejected { code, .. } => *code,
        other => panic!("not a rejection: {other:?}"),
    }
}

#[test]
fn dealer_commands_in_the_wrong_state_get_typed_errors_and_via_handle_command_an_error_reply() {
    let mut sim = Sim::new(manual_config());
    assert!(matches!(
        sim.table.handle_close(sim.now),
        Err(DealerError::BettingNotOpen { .. })
    ));
    assert!(matches!(
        sim.table.handle_result(sim.now, outcome("tie"), None, None),
        Err(DealerError::NoRoundToSettle)
    ));
    assert!(matches!(
        sim.table.handle_void(sim.now, None),
        Err(DealerError::NoRoundToVoid)
    ));
    sim.open();
    assert!(matches!(
        sim.table.handle_open(sim.now),
        Err(DealerError::RoundInProgress { .. })
    ));
    assert!(matches!(
        sim.table.handle_result(sim.now, outcome("tie"), None, None),
        Err(DealerError::BettingStillOpen { .. })
    ));
    assert_eq!(
        sim.table.handle_void(sim.now, Some(&"x".repeat(201))),
        Err(DealerError::ReasonTooLong)
    );
    sim.drain();
    assert_eq!(sim.events.len(), 1, "refused commands produce no events");

    let dealer = user("dealer");
    assert!(sim.table.handle_command(
        sim.now,
        &dealer,
        ClientMessage::DealerOpen { id: bet_id("c1") }
    ));
    assert!(sim.table.handle_command(
        sim.now,
        &dealer,
        ClientMessage::DealerClose { id: bet_id("c2") }
    ));
    let msg = ClientMessage::DealerResult {
        id: bet_id("c3"),
        outcome: outcome("dragon"),
        media_ts: None,
        media_clock: None,
        captured_at: None,
    };
    sim.table.handle_command(sim.now, &dealer, msg);
    assert!(
        !sim.table
            .handle_command(sim.now, &dealer, ClientMessage::Ping { client_ms: 1 })
    );
    sim.drain();
    let replies: Vec<&Reply> = sim.private.iter().map(|(_, r)| r).collect();
    assert!(
        matches!(replies[0], Reply::Error { code: ErrorCode::WrongState, message, .. } if message.contains("void it"))
    );
    assert_eq!(
        *replies[1],
        Reply::Ok {
            id: bet_id("c2"),
            round: Some(RoundId(1))
        }
    );
    assert!(
        matches!(replies[2], Reply::Error { code: ErrorCode::InvalidCommand, message, .. } if message.contains("player, banker, tie"))
    );
}

#[test]
fn auto_open_opens_the_first_round_at_once_and_the_next_after_the_pause() {
    let mut sim = Sim::new(TableConfig::demo_baccarat()); // pause 5 s
    assert_eq!(sim.table.poll_timeout(), Some(ServerTime(0)));
    sim.advance(0);
    assert_eq!(sim.table.current_round(), Some(RoundId(1)));
    sim.advance(15_000);
    sim.result("player");
    let settled_at = sim.now;
    assert_eq!(
        sim.table.snapshot().next_round_at_server_ms,
        Some(settled_at.plus_secs(5))
    );
    sim.advance(4_999);
    assert_eq!(sim.table.state(), RoundState::Idle);
    sim.advance(1);
    assert_eq!(sim.table.current_round(), Some(RoundId(2)));
    assert!(matches!(
        sim.events.last().unwrap().event,
        PublicEvent::RoundOpened { .. }
    ));
    assert_eq!(
        sim.events.last().unwrap().server_ms,
        settled_at.plus_secs(5)
    );
}

#[test]
fn chat_is_public_at_most_280_characters_and_muted_players_are_refused() {
    let mut sim = Sim::new(manual_config());
    let alice = user("alice");
    sim.table
        .handle_chat(sim.now, &alice, &bet_id("m1"), "good luck 🍀");
    sim.table
        .handle_chat(sim.now, &alice, &bet_id("m1"), "good luck 🍀"); // retry: dropped
    sim.table
        .handle_chat(sim.now, &alice, &bet_id("m2"), &"é".repeat(280));
    sim.table
        .handle_chat(sim.now, &alice, &bet_id("m3"), &"é".repeat(281));
    sim.table.handle_chat(sim.now, &alice, &bet_id("m4"), "   ");
    sim.table.handle_mute(sim.now, &alice, true);
    sim.table
        .handle_chat(sim.now, &alice, &bet_id("m5"), "hello?");
    sim.drain();
    assert_eq!(sim.events.len(), 2);
    let codes: Vec<ErrorCode> = sim
        .private
        .iter()
        .map(|(_, r)| match r {
            Reply::Error { code, .. } => *code,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            ErrorCode::ChatTooLong,
            ErrorCode::ChatEmpty,
            ErrorCode::Muted
        ]
    );
    assert!(
        sim.records
            .iter()
            .any(|r| matches!(r, Record::ChatMute { muted: true, .. }))
    );
    assert!(sim.table.is_muted(&alice));
}

#[test]
fn replies_for_a_player_resend_their_bet_answers_and_last_payout() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    let a = sim.bet("alice", place("b1", 1, "tie", 100));
    let r = sim.bet("alice", place("b2", 1, "tie", 1));
    sim.bet("bob", place("b3", 1, "tie", 100));
    sim.close();
    sim.result("tie");
    let p = sim.payouts_of("alice")[0].clone();
    assert_eq!(sim.table.replies_for(&user("alice")), vec![a, r, p]);
}

#[test]
fn a_clock_that_steps_back_is_treated_as_the_latest_time_seen() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    sim.now = T0.plus_secs(16);
    sim.table.handle_timeout(sim.now);
    sim.now = T0; // the caller's clock stepped back
    assert_eq!(
        code(&sim.bet("alice", place("b1", 1, "tie", 100))),
        RejectCode::BettingClosed
    );
    sim.now = T0.plus_secs(17);
    sim.result("tie");
    sim.now = T0.plus_secs(1);
    sim.open();
    assert!(
        sim.events
            .windows(2)
            .all(|w| w[0].server_ms <= w[1].server_ms)
    );
}
