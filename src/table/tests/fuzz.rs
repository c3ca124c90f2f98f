//! Thousands of random rounds in simulated time, checked against a simple model after every
//! input: totals equal the accepted bets, seq has no gap, retries are answered identically,
//! late bets are refused, payouts are exact, and the log replays to the same snapshot.

use super::*;
use crate::protocol::{RejectCode, SpotTotal};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

const ROUNDS: u64 = 3_000;
const PLAYERS: usize = 12;
const SPOTS: [&str; 4] = ["player", "banker", "tie", "dragon"]; // dragon does not exist

/// What the players were told: the model the table must agree with.
#[derive(Default)]
struct Model {
    /// Accepted bets of the round in progress: (player, id) → (spot, amount, live).
    bets: BTreeMap<(String, String), (String, u64, bool)>,
    /// Every answer given in this round and the previous one: (player, id) → (request, reply).
    answers: BTreeMap<(String, String), (PlaceBet, Reply)>,
    previous_answers: BTreeMap<(String, String), (PlaceBet, Reply)>,
    round: Option<RoundId>,
    closes_at: ServerTime,
    outcome: Option<Outcome>,
}

impl Model {
    fn totals(&self) -> (BTreeMap<String, SpotTotal>, u64) {
        let mut per: BTreeMap<String, SpotTotal> = ["player", "banker", "tie"]
            .iter()
            .map(|s| (s.to_string(), SpotTotal::default()))
            .collect();
        let mut stake: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for ((p, _), (s, amount, live)) in &self.bets {
            if *live {
                per.get_mut(s).unwrap().amount += amount;
                *stake.entry((p, s)).or_default() += amount;
            }
        }
        for (_, s) in stake.keys() {
            per.get_mut(*s).unwrap().bettors += 1;
        }
        let mut players: Vec<&str> = stake.keys().map(|(p, _)| *p).collect();
        players.dedup();
        (per, players.len() as u64)
    }

    fn answer(&self, key: &(String, String)) -> Option<&(PlaceBet, Reply)> {
        self.answers
            .get(key)
            .or_else(|| self.previous_answers.get(key))
    }
}

fn assert_totals_match(view: &TotalsView, model: &Model) {
    let (want, bettors) = model.totals();
    let got: BTreeMap<String, SpotTotal> = view
        .spots
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(got, want, "totals of round {}", view.round);
    assert_eq!(view.bettors, bettors);
}

#[test]
fn thousands_of_random_rounds_keep_every_invariant_the_players_rely_on() {
    let mut rng = StdRng::seed_from_u64(0x0007_ab1e_ca57);
    let config = TableConfig {
        betting_window_secs: 1,
        auto_open_pause_secs: Some(1),
        ..TableConfig::demo_baccarat()
    };
    let mut sim = Sim::new(config.clone());
    let mut model = Model::default();
    let (mut seen_events, mut seen_private) = (0, 0);
    let (mut finished, mut next_id, mut accepted, mut replays_checked) = (0u64, 0u64, 0u64, 0);
    let (mut retries, mut duplicates, mut late, mut cancels) = (0u64, 0u64, 0u64, 0u64);

    while finished < ROUNDS {
        let player = format!("p{}", rng.random_range(0..PLAYERS));
        match rng.random_range(0..100) {
            0..=29 => sim.advance(rng.random_range(0..120)),
            30..=79 => {
                // A fresh bet, a retry of an earlier one, or an earlier id with new content.
                let reuse = model
                    .answers
                    .keys()
                    .filter(|(p, _)| *p == player)
                    .map(|(_, id)| id.clone())
                    .next_back();
                let kind = rng.random_range(0..10);
                let (id, req) = match (reuse, kind) {
                    (Some(id), 0) => {
                        let key = (player.clone(), id.clone());
                        (id, model.answer(&key).unwrap().0.clone())
                    }
                    (Some(id), 1) => {
                        let mut req = model
                            .answer(&(player.clone(), id.clone()))
                            .unwrap()
                            .0
                            .clone();
                        req.amount = WireAmount::from(req.amount.minor_units().unwrap_or(1) + 1);
                        (id, req)
                    }
                    _ => {
                        next_id += 1;
                        let id = format!("b{next_id}");
                        let round = model.round.map_or(1, |r| r.0)
                            + [0, 0, 0, 0, 0, 0, 0, 0, 1]
                                .get(rng.random_range(0..10))
                                .copied()
                                .unwrap_or(0);
                        let amount = match rng.random_range(0..20) {
                            0 => 0,
                            1 => 50,
                            2 => 150_000,
                            _ => rng.random_range(1..=250) * 100,
                        };
                        let spot = SPOTS[rng.random_range(0..SPOTS.len())];
                        (id.clone(), place(&id, round, spot, amount))
                    }
                };
                let key = (player.clone(), id);
                let known = model.answer(&key).cloned();
                let reply = sim.bet(&player, req.clone());
                match known {
                    Some((old_req, old_reply)) if old_req == req => {
                        assert_eq!(reply, old_reply, "a retry gets the same answer");
                        retries += 1;
                    }
                    Some(_) => {
                        assert!(matches!(
                            reply,
                            Reply::BetRejected {
                                code: RejectCode::DuplicateId,
                                ..
                            }
                        ));
                        duplicates += 1;
                    }
                    None => {
                        if let Reply::BetAccepted {
                            round,
                            ref spot,
                            amount,
                            ..
                        } = reply
                        {
                            assert_eq!(Some(round), model.round);
                            assert!(
                                sim.now < model.closes_at,
                                "accepted at {:?}, deadline {:?}",
                                sim.now,
                                model.closes_at
                            );
                            model
                                .bets
                                .insert(key.clone(), (spot.to_string(), amount, true));
                            accepted += 1;
                        } else if model.round == Some(req.round) && sim.now >= model.closes_at {
                            assert!(
                                matches!(
                                    reply,
                                    Reply::BetRejected {
                                        code: RejectCode::BettingClosed,
                                        ..
                                    }
                                ),
                                "{reply:?}"
                            );
                            late += 1;
                        }
                        model.answers.insert(key, (req, reply));
                    }
                }
            }
            80..=86 => {
                let live: Vec<String> = model
                    .bets
                    .iter()
                    .filter(|((p, _), b)| *p == player && b.2)
                    .map(|((_, id), _)| id.clone())
                    .collect();
                if let Some(id) = live.first() {
                    let reply = sim.cancel(&player, id);
                    if let Reply::BetCancelled { .. } = reply {
                        assert!(sim.now < model.closes_at);
                        let key = (player.clone(), id.clone());
                        model.bets.get_mut(&key).unwrap().2 = false;
                        model.answers.get_mut(&key).unwrap().1 = reply;
                        cancels += 1;
                    }
                }
            }
            87..=90 => {
                let _ = sim.table.handle_close(sim.now);
                sim.drain();
            }
            91..=98 => {
                let won = ["player", "banker", "tie"][rng.random_range(0..3)];
                let _ = sim.table.handle_result(sim.now, outcome(won), None, None);
                sim.drain();
            }
            _ => {
                let _ = sim.table.handle_void(sim.now, None);
                sim.drain();
            }
        }

        // Follow the public events and check payouts as rounds end.
        let new_private: Vec<(UserId, Reply)> = sim.private[seen_private..].to_vec();
        seen_private = sim.private.len();
        for ev in sim.events[seen_events..].iter().cloned() {
            match ev.event {
                PublicEvent::RoundOpened {
                    round,
                    closes_at_server_ms,
                } => {
                    model.previous_answers = std::mem::take(&mut model.answers);
                    model.bets.clear();
                    model.round = Some(round);
                    model.closes_at = closes_at_server_ms;
                    model.outcome = None;
                }
                PublicEvent::Totals(view) if view.is_final => assert_totals_match(&view, &model),
                PublicEvent::RoundResult { outcome, .. } => model.outcome = Some(outcome),
                PublicEvent::RoundSettled { round } | PublicEvent::RoundVoided { round, .. } => {
                    let mut want: BTreeMap<String, u64> = BTreeMap::new();
                    for ((p, _), (s, amount, live)) in &model.bets {
                        if *live {
                            let paid = match &model.outcome {
                                Some(o) => bet_result(&config, o, &spot(s), *amount).1,
                                None => *amount,
                            };
                            *want.entry(p.clone()).or_default() += paid;
                        }
                    }
                    let got: BTreeMap<String, u64> = new_private
                        .iter()
                        .filter(
                            |(_, r)| matches!(r, Reply::Payout { round: r2, .. } if *r2 == round),
                        )
                        .map(|(u, r)| (u.to_string(), payout_total(r)))
                        .collect();
                    assert_eq!(got, want, "payouts of round {round}");
                    finished += 1;
                }
                _ => {}
            }
        }
        seen_events = sim.events.len();

        if let Some(view) = sim.table.snapshot().totals {
            assert_totals_match(&view, &model);
        }
        if finished > 0 && finished % 750 == 0 && replays_checked < finished / 750 {
            replays_checked += 1;
            let replayed = Table::replay(config.clone(), sim.records.clone()).unwrap();
            assert_eq!(
                replayed.snapshot(),
                sim.table.snapshot(),
                "replay after {finished} rounds"
            );
        }
    }

    sim.assert_seq_gap_free();
    let totals = sim.totals_events();
    for pair in totals.windows(2) {
        assert!(
            pair[1].1.is_final || pair[1].0.millis_since(pair[0].0) >= config.totals_interval_ms
        );
    }
    let replayed = Table::replay(config, sim.records.clone()).unwrap();
    assert_eq!(replayed.snapshot(), sim.table.snapshot());
    let counts = format!(
        "accepted {accepted}, retries {retries}, duplicates {duplicates}, late {late}, cancels {cancels}"
    );
    assert!(
        accepted > 10_000 && retries > 1_000 && duplicates > 1_000 && late > 1_000 && cancels > 500,
        "{counts}"
    );
    println!("{counts}, events {}", sim.events.len());
    assert!(replays_checked >= 3);
}
