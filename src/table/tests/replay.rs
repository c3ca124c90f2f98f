//! Rebuilding from the log: identical snapshots, and a restart voiding the interrupted round.

use super::*;
use crate::protocol::{BetResult, PayoutReason};

/// A table mid-round with bets, a cancel, a mute, chat and earlier rounds behind it.
fn busy_sim() -> Sim {
    let mut sim = Sim::new(manual_config());
    for round in 1..=3 {
        sim.open();
        sim.bet("alice", place(&format!("a{round}"), round, "banker", 1000));
        sim.advance(50);
        sim.bet("bob", place(&format!("b{round}"), round, "player", 500));
        sim.advance(15_000);
        if round == 2 {
            sim.void();
        } else {
            sim.result("banker");
        }
    }
    sim.open();
    sim.bet("alice", place("a4", 4, "tie", 300));
    sim.bet("alice", place("a5", 4, "banker", 200));
    sim.bet("bob", place("b4", 4, "player", 700));
    sim.advance(10);
    sim.cancel("alice", "a5");
    sim.table
        .handle_chat(sim.now, &user("bob"), &bet_id("m1"), "go player");
    sim.table.handle_mute(sim.now, &user("bob"), true);
    sim.drain();
    sim
}

#[test]
fn replaying_the_log_rebuilds_an_identical_snapshot_mid_round_and_when_idle() {
    let mut sim = busy_sim();
    let replayed = Table::replay(manual_config(), sim.records.clone()).unwrap();
    assert_eq!(replayed.snapshot(), sim.table.snapshot());
    assert!(replayed.is_muted(&user("bob")));
    assert_eq!(
        replayed.replies_for(&user("alice")),
        sim.table.replies_for(&user("alice"))
    );

    sim.advance(20_000);
    sim.result("tie");
    let replayed = Table::replay(manual_config(), sim.records.clone()).unwrap();
    assert_eq!(replayed.snapshot(), sim.table.snapshot());
    assert_eq!(replayed.snapshot().last_seq, sim.events.len() as u64);
}

#[test]
fn a_replayed_table_carries_on_exactly_like_the_original() {
    let mut live = busy_sim();
    let replayed = Table::replay(manual_config(), live.records.clone()).unwrap();
    let mut twin = Sim::from_table(replayed, live.now);
    for sim in [&mut live, &mut twin] {
        // A retry of an accepted bet is still recognised after replay.
        assert!(matches!(
            sim.bet("alice", place("a4", 4, "tie", 300)),
            Reply::BetAccepted { .. }
        ));
        sim.bet("carol", place("c4", 4, "tie", 100));
        sim.advance(20_000);
        sim.result("player");
    }
    let tail = live.events.len() - 4;
    assert_eq!(live.events[tail..], twin.events[twin.events.len() - 4..]);
    assert_eq!(live.table.snapshot(), twin.table.snapshot());
}

#[test]
fn restoring_with_an_open_round_voids_it_with_node_restart_and_refunds_every_bet() {
    let sim = busy_sim();
    let last_seq = sim.table.last_seq();
    let restart_at = sim.now.plus_secs(30);
    let mut restored = Sim::from_table(
        Table::restore(manual_config(), sim.records.clone(), restart_at).unwrap(),
        restart_at,
    );

    let first = &restored.events[0];
    assert_eq!(first.seq, last_seq + 1, "seq continues across the restart");
    assert_eq!(
        first.event,
        PublicEvent::RoundVoided {
            round: RoundId(4),
            reason: "node_restart".into()
        }
    );
    let alice = &restored.payouts_of("alice")[0];
    assert!(
        matches!(alice, Reply::Payout { round: RoundId(4), reason: PayoutReason::Voided, total: 300, bets }
        if bets.len() == 1 && bets[0].result == BetResult::Refunded),
        "{alice:?}"
    );
    assert_eq!(payout_total(&restored.payouts_of("bob")[0]), 700);
    assert_eq!(restored.table.state(), RoundState::Idle);

    // The void is logged: the old log plus the new records replay to the restored state.
    let mut full = sim.records.clone();
    full.extend(restored.records.clone());
    assert_eq!(
        Table::replay(manual_config(), full.clone())
            .unwrap()
            .snapshot(),
        restored.table.snapshot()
    );
    // And the table goes on with round 5.
    assert_eq!(restored.open(), RoundId(5));
}

#[test]
fn restoring_after_a_logged_result_without_settlement_settles_with_that_result() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    sim.bet("alice", place("a1", 1, "tie", 100));
    sim.close();
    sim.result("tie");
    // The node died after writing round.result but before round.settled.
    let cut = sim.records.iter().position(|r| matches!(r, Record::Event(e) if matches!(e.event, PublicEvent::RoundSettled { .. }))).unwrap();
    let restored = Table::restore(manual_config(), sim.records[..cut].to_vec(), sim.now).unwrap();
    let mut restored = Sim::from_table(restored, sim.now);
    assert!(matches!(
        restored.events[0].event,
        PublicEvent::RoundSettled { round: RoundId(1) }
    ));
    assert_eq!(payout_total(&restored.payouts_of("alice")[0]), 900);
    assert_eq!(
        restored.table.snapshot().last_round,
        sim.table.snapshot().last_round
    );
    restored.drain();
}

#[test]
fn restoring_an_idle_table_changes_nothing_and_an_empty_log_is_a_fresh_table() {
    let mut sim = Sim::new(manual_config());
    sim.open();
    sim.close();
    sim.result("player");
    let mut restored =
        Table::restore(manual_config(), sim.records.clone(), sim.now.plus_secs(60)).unwrap();
    assert!(matches!(restored.poll_output(), Output::Timeout(None)));
    assert_eq!(restored.snapshot(), sim.table.snapshot());
    let fresh = Table::restore(manual_config(), Vec::new(), T0).unwrap();
    assert_eq!(fresh.snapshot().last_seq, 0);
    assert_eq!(fresh.snapshot().state, RoundState::Idle);
}

#[test]
fn a_log_that_does_not_fit_the_rules_is_refused_with_the_record_index() {
    let sim = busy_sim();
    let mut bad = sim.records.clone();
    // Drop round 4's round.opened: its bets no longer have an open round.
    let i = bad
        .iter()
        .rposition(
            |r| matches!(r, Record::Event(e) if matches!(e.event, PublicEvent::RoundOpened { .. })),
        )
        .unwrap();
    bad.remove(i);
    let e = Table::replay(manual_config(), bad).unwrap_err();
    assert!(
        matches!(
            e,
            ReplayError::SeqGap { .. } | ReplayError::Inconsistent { .. }
        ),
        "{e}"
    );
    let mut bad = sim.records.clone();
    if let Some(Record::BetAccepted { spot: s, .. }) = bad
        .iter_mut()
        .rev()
        .find(|r| matches!(r, Record::BetAccepted { .. }))
    {
        *s = spot("dragon");
    }
    assert!(matches!(
        Table::replay(manual_config(), bad),
        Err(ReplayError::Inconsistent { .. })
    ));
}
