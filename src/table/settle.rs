//! Settlement: what each player gets back when a round settles or is voided.
//!
//! For a bet of `stake` on a spot with odds `num:den`:
//! - the spot won: `paid = stake + floor(stake * num / den)` (rounded **down** to a whole minor
//!   unit; the house keeps the fraction, e.g. 5 cents on banker at 19:20 pays 5 + 4 = 9);
//! - the spot lost but one of its `push_on` spots won: `paid = stake` (push);
//! - otherwise: `paid = 0`;
//! - the round was voided: `paid = stake` (refund).
//!
//! All integer arithmetic; `Odds::winnings` computes in `u128`, and config validation keeps
//! every possible payout within `MAX_AMOUNT`, so sums cannot overflow `u64`.

use super::bets::LiveBet;
use crate::ids::{BetId, RoundId, UserId};
use crate::protocol::{BetPayout, BetResult, Outcome, PayoutReason, Reply, SpotId, TableConfig};
use std::collections::BTreeMap;

/// How a bet of `stake` on `spot` ends when `outcome` wins: its result and what it pays back.
pub fn bet_result(
    config: &TableConfig,
    outcome: &Outcome,
    spot: &SpotId,
    stake: u64,
) -> (BetResult, u64) {
    let Some(spot) = config.spot(spot.as_str()) else {
        // Unreachable: bets are only accepted on spots of this config. Refund rather than guess.
        return (BetResult::Refunded, stake);
    };
    if outcome.contains(&spot.id) {
        (
            BetResult::Won,
            stake.saturating_add(spot.odds.winnings(stake)),
        )
    } else if spot.push_on.iter().any(|p| outcome.contains(p)) {
        (BetResult::Push, stake)
    } else {
        (BetResult::Lost, 0)
    }
}

/// One `payout` per player with a live bet, in player order; `outcome: None` refunds (void).
pub(crate) fn payouts<'a>(
    config: &TableConfig,
    round: RoundId,
    outcome: Option<&Outcome>,
    bets: impl Iterator<Item = (&'a UserId, &'a BetId, &'a LiveBet)>,
) -> Vec<(UserId, Reply)> {
    let mut per_player: BTreeMap<&UserId, (u64, Vec<BetPayout>)> = BTreeMap::new();
    for (user, id, bet) in bets {
        let (result, paid) = match outcome {
            Some(o) => bet_result(config, o, &bet.spot, bet.amount),
            None => (BetResult::Refunded, bet.amount),
        };
        let entry = per_player.entry(user).or_default();
        entry.0 = entry.0.saturating_add(paid);
        entry.1.push(BetPayout {
            id: id.clone(),
            spot: bet.spot.clone(),
            amount: bet.amount,
            result,
            paid,
        });
    }
    let reason = if outcome.is_some() {
        PayoutReason::Settled
    } else {
        PayoutReason::Voided
    };
    per_player
        .into_iter()
        .map(|(user, (total, bets))| {
            (
                user.clone(),
                Reply::Payout {
                    round,
                    reason,
                    total,
                    bets,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bet(spot: &str, amount: u64) -> LiveBet {
        LiveBet {
            spot: SpotId::parse(spot).unwrap(),
            amount,
            cancelled: false,
        }
    }

    fn br(c: &TableConfig, won: &str, spot: &str, stake: u64) -> (BetResult, u64) {
        bet_result(c, &outcome(won), &SpotId::parse(spot).unwrap(), stake)
    }

    fn outcome(spot: &str) -> Outcome {
        Outcome::single(SpotId::parse(spot).unwrap())
    }

    #[test]
    fn baccarat_pays_player_1_to_1_banker_19_to_20_tie_8_to_1_rounding_down() {
        let c = TableConfig::demo_baccarat();
        assert_eq!(br(&c, "player", "player", 1000), (BetResult::Won, 2000));
        assert_eq!(br(&c, "banker", "banker", 1000), (BetResult::Won, 1950));
        assert_eq!(br(&c, "banker", "banker", 105), (BetResult::Won, 204)); // 99.75 → 99
        assert_eq!(br(&c, "banker", "banker", 5), (BetResult::Won, 9)); // 4.75 → 4
        assert_eq!(br(&c, "tie", "tie", 250), (BetResult::Won, 2250));
        assert_eq!(br(&c, "banker", "player", 1000), (BetResult::Lost, 0));
        assert_eq!(br(&c, "player", "tie", 1000), (BetResult::Lost, 0));
    }

    #[test]
    fn player_and_banker_bets_push_on_a_tie() {
        let c = TableConfig::demo_baccarat();
        assert_eq!(br(&c, "tie", "player", 700), (BetResult::Push, 700));
        assert_eq!(br(&c, "tie", "banker", 700), (BetResult::Push, 700));
    }

    #[test]
    fn payouts_sum_each_players_bets_and_a_void_refunds_every_stake() {
        let c = TableConfig::demo_baccarat();
        let (a, b) = (UserId::parse("a").unwrap(), UserId::parse("b").unwrap());
        let ids: Vec<BetId> = (0..3)
            .map(|i| BetId::parse(&format!("x{i}")).unwrap())
            .collect();
        let bets = [bet("banker", 1000), bet("tie", 100), bet("player", 300)];
        let list = [
            (&a, &ids[0], &bets[0]),
            (&a, &ids[1], &bets[1]),
            (&b, &ids[2], &bets[2]),
        ];

        let settled = payouts(&c, RoundId(4), Some(&outcome("banker")), list.into_iter());
        assert_eq!(settled.len(), 2);
        assert!(
            matches!(&settled[0].1, Reply::Payout { total: 1950, reason: PayoutReason::Settled, bets, .. } if bets.len() == 2)
        );
        assert!(matches!(&settled[1].1, Reply::Payout { total: 0, .. }));

        let voided = payouts(&c, RoundId(4), None, list.into_iter());
        assert!(matches!(
            &voided[0].1,
            Reply::Payout {
                total: 1100,
                reason: PayoutReason::Voided,
                ..
            }
        ));
        assert!(matches!(&voided[1].1, Reply::Payout { total: 300, .. }));
    }
}
