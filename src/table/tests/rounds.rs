//! One behaviour per test: the round lifecycle, bet rules, idempotency, settlement, coalescing.

use super::*;
use crate::protocol::{BetResult, ErrorCode, PayoutReason, RejectCode, SpotTotal};

fn code(r: &Reply) -> RejectCode {
    match r {
        Reply::BetRejected { code, .. } => *code,
        other => panic!("not a rejection: {other:?}"),
    }
}

#[test]
fn a_round_goes_open_closed_result_settled_with_events_in_order() {
    let mut sim = Sim::new(manual_config());
    let round = sim.open();
    assert_eq!(round, RoundId(1));
    assert_eq!(
        sim.table.snapshot().closes_at_server_ms,
        Some(T0.plus_secs(15))
    );
    sim.bet("alice", place("b1", 1, "banker", 1000));
    sim.advance(15_000);
    assert_eq!(sim.table.state(), RoundState::BettingClosed);
    sim.result("banker");
    assert_eq!(sim.table.state(), RoundState::Idle);

    let types: Vec<&str> = sim
        .events
        .iter()
        .map(|e| match &e.event {
            PublicEvent::RoundOpened { .. } => "round.opened",
            PublicEvent::Totals(t) if t.is_final => "totals(final)",
            PublicEvent::Totals(_) => "totals",
            PublicEvent::BettingClosed { early: false, .. } => "betting.closed",
            PublicEvent::RoundResult { .. } => "round.result",
            PublicEvent::RoundSettled { .. } => "round.settled",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        types,
        [
            "round.opened",
            "totals",
            "totals(final)",
            "betting.closed",
            "round.result",
            "round.settled"
        ]
    );
    // The deadline-driven close carries the deadline as its time, however late the caller woke.
    assert_eq!(sim.events[3].server_ms, T0.plus_secs(15));
    assert_eq!(payout_total(&sim.payouts_of("alice")[0]), 1950);
    sim.assert_seq_gap_free();
}

#[test]
fn a_bet_at_or_after_the_deadline_is_rejected_by_server_time_even_before_the_timer_runs() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    let deadline = T0.plus_secs(15);
    sim.now = ServerTime(deadline.0 - 1); // no handle_timeout: the caller is late, not the rule
    assert!(matches!(
        sim.bet("alice", place("b1", 1, "tie", 100)),
        Reply::BetAccepted { .. }
    ));
    sim.now = deadline;
    let r = sim.bet("alice", place("b2", 1, "tie", 100));
    assert_eq!(code(&r), RejectCode::BettingClosed);
    // Betting closed (final totals, betting.closed) before the late bet was judged.
    let last = sim.events.last().unwrap();
    assert!(matches!(last.event, PublicEvent::BettingClosed { .. }));
    let final_totals = sim.totals_events().last().unwrap().1.clone();
    assert!(final_totals.is_final);
    assert_eq!(
        final_totals.spots[&spot("tie")],
        SpotTotal {
            amount: 100,
            bettors: 1
        }
    );
    // Much later, still closed.
    sim.now = deadline.plus_secs(3600);
    assert_eq!(
        code(&sim.bet("bob", place("b3", 1, "tie", 100))),
        RejectCode::BettingClosed
    );
}

#[test]
fn the_same_bet_id_gets_the_identical_reply_and_is_counted_once() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    let first = sim.bet("alice", place("b1", 1, "player", 500));
    let records = sim.records.len();
    for _ in 0..5 {
        assert_eq!(sim.bet("alice", place("b1", 1, "player", 500)), first);
    }
    assert_eq!(sim.records.len(), records, "a retry is not logged again");
    let totals = sim.table.snapshot().totals.unwrap();
    assert_eq!(
        totals.spots[&spot("player")],
        SpotTotal {
            amount: 500,
            bettors: 1
        }
    );
    // Another player may use the same id: ids are per player.
    assert!(matches!(
        sim.bet("bob", place("b1", 1, "player", 500)),
        Reply::BetAccepted { .. }
    ));
    // After settlement a retry still gets the same answer, not "betting closed".
    sim.close();
    sim.result("player");
    assert_eq!(sim.bet("alice", place("b1", 1, "player", 500)), first);
}

#[test]
fn the_same_bet_id_with_different_content_is_rejected_as_duplicate_id_and_changes_nothing() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    sim.bet("alice", place("b1", 1, "player", 500));
    assert_eq!(
        code(&sim.bet("alice", place("b1", 1, "player", 600))),
        RejectCode::DuplicateId
    );
    assert_eq!(
        code(&sim.bet("alice", place("b1", 1, "banker", 500))),
        RejectCode::DuplicateId
    );
    assert_eq!(
        sim.table.snapshot().totals.unwrap().spots[&spot("player")].amount,
        500
    );
    // The original answer still stands.
    assert!(matches!(
        sim.bet("alice", place("b1", 1, "player", 500)),
        Reply::BetAccepted { amount: 500, .. }
    ));
}

#[test]
fn a_rejected_bet_retried_with_the_same_id_gets_the_same_rejection() {
    let mut sim = Sim::new(manual_config());
    let early = sim.bet("alice", place("b1", 1, "player", 500));
    assert_eq!(code(&early), RejectCode::RoundNotOpen);
    sim.open();
    assert_eq!(sim.bet("alice", place("b1", 1, "player", 500)), early);
    assert!(
        sim.table
            .snapshot()
            .totals
            .unwrap()
            .spots
            .values()
            .all(|t| t.amount == 0)
    );
}

#[test]
fn bets_on_unknown_spots_bad_amounts_wrong_rounds_and_over_limits_are_rejected_with_their_codes() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    let mut n = 0;
    let mut bet = |sim: &mut Sim, req: PlaceBet| {
        n += 1;
        code(&sim.bet(
            "alice",
            PlaceBet {
                id: bet_id(&format!("x{n}")),
                ..req
            },
        ))
    };
    assert_eq!(
        bet(&mut sim, place("_", 1, "dragon", 500)),
        RejectCode::UnknownSpot
    );
    assert_eq!(
        bet(&mut sim, place("_", 2, "tie", 500)),
        RejectCode::WrongRound
    );
    assert_eq!(
        bet(&mut sim, place("_", 1, "tie", 99)),
        RejectCode::BelowMin
    );
    assert_eq!(
        bet(&mut sim, place("_", 1, "tie", 20_001)),
        RejectCode::AboveMax
    );
    for bad in ["0", "-100", "150.5", "1e3"] {
        let amount: WireAmount = serde_json::from_str(bad).unwrap();
        assert_eq!(
            bet(
                &mut sim,
                PlaceBet {
                    amount,
                    ..place("_", 1, "tie", 1)
                }
            ),
            RejectCode::InvalidAmount,
            "{bad}"
        );
    }
    // max_per_player_round on tie is 40_000: two max bets fit, a third does not.
    assert!(matches!(
        sim.bet("alice", place("t1", 1, "tie", 20_000)),
        Reply::BetAccepted { .. }
    ));
    assert!(matches!(
        sim.bet("alice", place("t2", 1, "tie", 20_000)),
        Reply::BetAccepted { .. }
    ));
    let r = sim.bet("alice", place("t3", 1, "tie", 100));
    assert_eq!(code(&r), RejectCode::PlayerLimit);
    assert!(matches!(&r, Reply::BetRejected { message, .. } if message.contains("at most 0 more")));
    // The limit is per player: bob may still bet.
    assert!(matches!(
        sim.bet("bob", place("t1", 1, "tie", 100)),
        Reply::BetAccepted { .. }
    ));
}

#[test]
fn cancel_withdraws_a_bet_only_while_betting_is_open_and_a_retry_reports_it_cancelled() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    sim.bet("alice", place("b1", 1, "banker", 1000));
    sim.bet("alice", place("b2", 1, "banker", 300));
    let c = sim.cancel("alice", "b1");
    assert_eq!(
        c,
        Reply::BetCancelled {
            id: bet_id("b1"),
            round: RoundId(1),
            spot: spot("banker"),
            amount: 1000
        }
    );
    assert_eq!(sim.cancel("alice", "b1"), c, "cancel is idempotent");
    assert_eq!(
        sim.bet("alice", place("b1", 1, "banker", 1000)),
        c,
        "placing a cancelled id reports it cancelled"
    );
    assert!(
        matches!(
            sim.cancel("bob", "b2"),
            Reply::Error {
                code: ErrorCode::UnknownBet,
                ..
            }
        ),
        "only your own bets"
    );
    assert_eq!(
        sim.table.snapshot().totals.unwrap().spots[&spot("banker")],
        SpotTotal {
            amount: 300,
            bettors: 1
        }
    );
    sim.close();
    assert!(matches!(
        sim.cancel("alice", "b2"),
        Reply::Error {
            code: ErrorCode::BettingClosed,
            ..
        }
    ));
    sim.result("banker");
    let payout = &sim.payouts_of("alice")[0];
    assert!(
        matches!(payout, Reply::Payout { bets, total: 585, .. } if bets.len() == 1),
        "{payout:?}"
    );
}

#[test]
fn void_refunds_every_live_bet_and_leaves_cancelled_ones_out() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    sim.bet("alice", place("a1", 1, "banker", 1000));
    sim.bet("alice", place("a2", 1, "tie", 200));
    sim.bet("bob", place("b1", 1, "player", 700));
    sim.bet("bob", place("b2", 1, "player", 100));
    sim.cancel("bob", "b2");
    sim.close();
    sim.void();
    assert!(
        matches!(&sim.events.last().unwrap().event, PublicEvent::RoundVoided { reason, .. } if reason == "dealer_void")
    );
    for (who, total) in [("alice", 1200), ("bob", 700)] {
        let p = sim.payouts_of(who);
        assert_eq!(p.len(), 1);
        assert!(
            matches!(&p[0], Reply::Payout { reason: PayoutReason::Voided, bets, .. }
            if bets.iter().all(|b| b.result == BetResult::Refunded && b.paid == b.amount))
        );
        assert_eq!(payout_total(&p[0]), total);
    }
    assert_eq!(
        sim.table.snapshot().last_round,
        Some(LastRound::Voided {
            round: RoundId(1),
            reason: "dealer_void".into()
        })
    );
    // A void while betting is still open works too.
    sim.open();
    sim.bet("carol", place("c1", 2, "tie", 500));
    sim.table
        .handle_void(sim.now, Some("card misdeal"))
        .unwrap();
    sim.drain();
    assert_eq!(payout_total(&sim.payouts_of("carol")[0]), 500);
}

#[test]
fn settlement_pays_each_spot_by_its_odds_and_pushes_player_and_banker_on_a_tie() {
    for (won, expect) in [
        // payouts of (player 1000, banker 1000, tie 1000)
        ("player", [2000, 0, 0]),
        ("banker", [0, 1950, 0]),
        ("tie", [1000, 1000, 9000]),
    ] {
        let mut sim = Sim::new(manual_config());
        sim.open();
        sim.bet("p", place("x", 1, "player", 1000));
        sim.bet("b", place("x", 1, "banker", 1000));
        sim.bet("t", place("x", 1, "tie", 1000));
        sim.bet("small", place("x", 1, "banker", 100));
        sim.bet("small", place("y", 1, "banker", 105));
        sim.close();
        sim.result(won);
        for (who, want) in ["p", "b", "t"].iter().zip(expect) {
            assert_eq!(payout_total(&sim.payouts_of(who)[0]), want, "{won}: {who}");
        }
        // small: banker 100 + banker 105: 195 + 204 (99.75 rounded down) when banker wins.
        let small = payout_total(&sim.payouts_of("small")[0]);
        let want_small = match won {
            "banker" => 195 + 204,
            "tie" => 205,
            _ => 0,
        };
        assert_eq!(small, want_small, "{won}");
    }
}

#[test]
fn totals_are_coalesced_to_one_per_interval_plus_a_final_one_at_close() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    for i in 0..14_000u64 {
        sim.bet(
            &format!("u{}", i % 50),
            place(&format!("b{i}"), 1, "player", 100),
        );
        sim.advance(1);
    }
    sim.advance(2_000);
    let totals = sim.totals_events();
    let finals = totals.iter().filter(|(_, t)| t.is_final).count();
    assert_eq!(finals, 1);
    for pair in totals.windows(2) {
        let gap = pair[1].0.millis_since(pair[0].0);
        assert!(pair[1].1.is_final || gap >= 200, "totals {gap} ms apart");
    }
    // 14 s of continuous betting at one per 200 ms: about 70, and never more.
    assert!(
        (65..=71).contains(&(totals.len() - 1)),
        "{} totals",
        totals.len()
    );
    let last = totals.last().unwrap().1.clone();
    assert_eq!(
        last.spots[&spot("player")],
        SpotTotal {
            amount: 14_000 * 100,
            bettors: 50
        }
    );
}
