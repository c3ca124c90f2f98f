//! The totals projection of the round in progress (per-spot sums and bettor counts), and the
//! coalescer that limits `totals` events to one per interval per table.
//!
//! Invariant: after every input, `spots[s].amount` is the sum of the live bets on `s`,
//! `spots[s].bettors` the number of players with a live bet on `s`, and `bettors` the number of
//! players with any live bet. The table's tests check it against the bet book after every step.

use crate::ids::{RoundId, UserId};
use crate::protocol::{ServerTime, SpotId, SpotTotal, TableConfig, TotalsView};
use std::collections::BTreeMap;

/// Live totals of one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    round: Option<RoundId>,
    spots: BTreeMap<SpotId, SpotTotal>,
    /// Live stake per player and spot (to know when a player stops counting as a bettor).
    per_player_spot: BTreeMap<(UserId, SpotId), u64>,
    /// Number of spots each player has a live bet on; no zero entries.
    per_player: BTreeMap<UserId, u64>,
}

impl Totals {
    /// Zeroes every spot of the table for `round`.
    pub fn start_round(&mut self, config: &TableConfig, round: RoundId) {
        self.round = Some(round);
        self.spots = config
            .spots
            .iter()
            .map(|s| (s.id.clone(), SpotTotal::default()))
            .collect();
        self.per_player_spot.clear();
        self.per_player.clear();
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Whether adding `amount` to `spot` keeps its sum representable.
    pub fn can_add(&self, spot: &SpotId, amount: u64) -> bool {
        self.spots
            .get(spot)
            .is_none_or(|t| t.amount.checked_add(amount).is_some())
    }

    pub fn add(&mut self, user: &UserId, spot: &SpotId, amount: u64) {
        let stake = self
            .per_player_spot
            .entry((user.clone(), spot.clone()))
            .or_insert(0);
        let new_on_spot = *stake == 0;
        *stake = stake.saturating_add(amount);
        let total = self.spots.entry(spot.clone()).or_default();
        // `can_add` was checked before accepting the bet, so this does not saturate.
        total.amount = total.amount.saturating_add(amount);
        if new_on_spot {
            total.bettors += 1;
            let spots_of_player = self.per_player.entry(user.clone()).or_insert(0);
            *spots_of_player += 1;
        }
    }

    pub fn remove(&mut self, user: &UserId, spot: &SpotId, amount: u64) {
        let key = (user.clone(), spot.clone());
        let Some(stake) = self.per_player_spot.get_mut(&key) else {
            return;
        };
        *stake = stake.saturating_sub(amount);
        let gone_from_spot = *stake == 0;
        if gone_from_spot {
            self.per_player_spot.remove(&key);
        }
        if let Some(total) = self.spots.get_mut(spot) {
            total.amount = total.amount.saturating_sub(amount);
            if gone_from_spot {
                total.bettors = total.bettors.saturating_sub(1);
            }
        }
        if gone_from_spot && let Some(n) = self.per_player.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_player.remove(user);
            }
        }
    }

    /// The projection as a wire value, if a round is in progress.
    pub fn view(&self, is_final: bool) -> Option<TotalsView> {
        Some(TotalsView {
            round: self.round?,
            spots: self.spots.clone(),
            bettors: self.per_player.len() as u64,
            is_final,
        })
    }
}

/// Decides when the next `totals` may go out: at most one per `interval_ms` per table. The
/// final totals at close are always sent and also restart the interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Coalescer {
    interval_ms: u64,
    last_sent: Option<ServerTime>,
    /// The projection changed since the last `totals` sent.
    pub dirty: bool,
}

impl Coalescer {
    pub fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms,
            last_sent: None,
            dirty: false,
        }
    }

    /// The earliest time the next `totals` may be sent.
    pub fn next_allowed(&self) -> ServerTime {
        self.last_sent
            .map_or(ServerTime(0), |t| t.plus_millis(self.interval_ms))
    }

    pub fn sent(&mut self, now: ServerTime) {
        self.last_sent = Some(now);
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn bettor_counts_follow_players_not_bets() {
        let config = TableConfig::demo_baccarat();
        let (banker, tie) = (
            SpotId::parse("banker").unwrap(),
            SpotId::parse("tie").unwrap(),
        );
        let mut t = Totals::default();
        t.start_round(&config, RoundId(1));
        t.add(&u("a"), &banker, 100);
        t.add(&u("a"), &banker, 200);
        t.add(&u("a"), &tie, 100);
        t.add(&u("b"), &banker, 500);
        let v = t.view(false).unwrap();
        assert_eq!(
            v.spots[&banker],
            SpotTotal {
                amount: 800,
                bettors: 2
            }
        );
        assert_eq!(
            v.spots[&tie],
            SpotTotal {
                amount: 100,
                bettors: 1
            }
        );
        assert_eq!(v.bettors, 2);
        assert_eq!(v.spots.len(), 3, "every spot appears, bet on or not");

        t.remove(&u("a"), &banker, 100);
        assert_eq!(
            t.view(false).unwrap().spots[&banker],
            SpotTotal {
                amount: 700,
                bettors: 2
            }
        );
        t.remove(&u("a"), &banker, 200);
        t.remove(&u("a"), &tie, 100);
        let v = t.view(false).unwrap();
        assert_eq!(
            v.spots[&banker],
            SpotTotal {
                amount: 500,
                bettors: 1
            }
        );
        assert_eq!(v.bettors, 1);
    }

    #[test]
    fn the_coalescer_allows_one_send_per_interval() {
        let mut c = Coalescer::new(200);
        assert_eq!(c.next_allowed(), ServerTime(0));
        c.sent(ServerTime(1000));
        assert_eq!(c.next_allowed(), ServerTime(1200));
        assert!(!c.dirty);
    }
}
