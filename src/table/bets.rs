//! Bet validation and idempotency: the bet book of the round in progress.
//!
//! Rules, in the order they are checked:
//! 1. **Idempotency.** The answer to `(player, bet id)` is remembered. The same id with the same
//!    content gets the remembered reply again (never counted twice); with different content it
//!    gets `duplicate_id`, which is not remembered. After a cancel, the remembered reply becomes
//!    `bet.cancelled`, so a retry reports the bet's current truth. Answers are kept for the round
//!    in progress and the one before; accepted bets survive a restart (they are in the log),
//!    rejections do not.
//! 2. **Open by server time.** A round is open and `now < closes_at`; the client's clock never
//!    counts. The bet must name that round.
//! 3. **Spot, amount, limits.** The spot exists; the amount is a positive integer of minor
//!    units within the spot's `min_bet..=max_bet`; the player's live stake on that spot this
//!    round stays within `max_per_player_round`.

use crate::ids::{BetId, RoundId, UserId};
use crate::protocol::{RejectCode, Reply, ServerTime, SpotId, TableConfig, WireAmount};
use std::collections::BTreeMap;

use super::round::{Phase, Rounds};

/// A `bet.place` as the table core takes it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PlaceBet {
    pub id: BetId,
    pub round: RoundId,
    /// Unvalidated: an unknown spot is a `bet.rejected{unknown_spot}`.
    pub spot: String,
    /// Unvalidated: anything but a positive integer is a `bet.rejected{invalid_amount}`.
    pub amount: WireAmount,
}

/// An accepted bet of the round in progress.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct LiveBet {
    pub spot: SpotId,
    pub amount: u64,
    pub cancelled: bool,
}

#[derive(Clone, PartialEq, Eq, Debug)]
struct Answer {
    /// What the player sent, to tell a retry from a reused id.
    request: PlaceBet,
    reply: Reply,
    /// The table's round number when the answer was given (for pruning).
    round_seen: u64,
    /// Insertion order, so re-sent replies come out in the order they were first given.
    order: u64,
}

/// What to do with a `bet.place`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Decision {
    /// A retry: send this reply again, change nothing.
    Repeat(Reply),
    /// Valid: accept it (after the caller's own checks).
    Accept {
        round: RoundId,
        spot: SpotId,
        amount: u64,
    },
    /// Refuse it; `remember` is false only for `duplicate_id`.
    Reject {
        code: RejectCode,
        message: String,
        remember: bool,
    },
}

/// What a `bet.cancel` did.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Cancel {
    /// Newly cancelled (`first`) or already cancelled (a retry).
    Done {
        round: RoundId,
        spot: SpotId,
        amount: u64,
        first: bool,
    },
    UnknownBet,
    BettingClosed,
}

/// The accepted bets of the round in progress, the live stake per player and spot, and the
/// remembered answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BetBook {
    round: Option<RoundId>,
    /// Invariant: holds exactly the bets accepted in `round`, cancelled ones flagged.
    bets: BTreeMap<(UserId, BetId), LiveBet>,
    /// Invariant: the sum of the live (not cancelled) `bets` per player and spot; no zero entries.
    stakes: BTreeMap<(UserId, SpotId), u64>,
    answers: BTreeMap<(UserId, BetId), Answer>,
    next_order: u64,
}

impl BetBook {
    /// A new round: no bets, no stakes; answers older than the previous round are forgotten.
    pub fn start_round(&mut self, round: RoundId) {
        self.round = Some(round);
        self.bets.clear();
        self.stakes.clear();
        let keep_from = round.0.saturating_sub(1);
        self.answers.retain(|_, a| a.round_seen >= keep_from);
    }

    /// Decides a `bet.place` from `user` at server time `now`.
    pub fn check(
        &self,
        config: &TableConfig,
        rounds: &Rounds,
        now: ServerTime,
        user: &UserId,
        req: &PlaceBet,
    ) -> Decision {
        if let Some(a) = self.answers.get(&(user.clone(), req.id.clone())) {
            if a.request == *req {
                return Decision::Repeat(a.reply.clone());
            }
            let message = format!(
                "bet id {} was already used for a different bet: use a fresh id for every bet",
                req.id
            );
            return Decision::Reject {
                code: RejectCode::DuplicateId,
                message,
                remember: false,
            };
        }
        let reject = |code, message: String| Decision::Reject {
            code,
            message,
            remember: true,
        };

        let open = match (&rounds.phase, rounds.current) {
            (Phase::Open { closes_at }, Some(round)) => {
                // Belt and braces: the table closes betting before handling a late input, but
                // the deadline is checked here too, by server time only.
                if now >= *closes_at {
                    let msg = format!(
                        "betting on round {round} closed at server time {closes_at}: bets count by server time"
                    );
                    return reject(RejectCode::BettingClosed, msg);
                }
                round
            }
            (Phase::Closed { .. }, Some(round)) if req.round == round => {
                let msg = format!(
                    "betting on round {round} has closed: bets count by server time, whatever the client clock says"
                );
                return reject(RejectCode::BettingClosed, msg);
            }
            (Phase::Idle, None) if req.round.0 == rounds.last_id && rounds.last_id > 0 => {
                let msg = format!(
                    "round {} has finished: wait for the next round.opened",
                    req.round
                );
                return reject(RejectCode::BettingClosed, msg);
            }
            _ => {
                return reject(
                    RejectCode::RoundNotOpen,
                    "no round is taking bets: wait for round.opened".into(),
                );
            }
        };
        if req.round != open {
            return reject(
                RejectCode::WrongRound,
                format!("round {open} is taking bets, not round {}", req.round),
            );
        }
        let Some(spot) = config.spot(&req.spot) else {
            let known = config
                .spots
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let shown: String = req.spot.chars().take(64).collect();
            return reject(
                RejectCode::UnknownSpot,
                format!("no spot {shown:?} on this table; its spots are {known}"),
            );
        };
        let Some(amount) = req.amount.minor_units() else {
            let msg = format!(
                "amount {} is not a positive whole number of minor units of {}",
                req.amount.0, config.currency
            );
            return reject(RejectCode::InvalidAmount, msg);
        };
        if amount < spot.min_bet {
            return reject(
                RejectCode::BelowMin,
                format!("the minimum bet on {} is {}", spot.id, spot.min_bet),
            );
        }
        if amount > spot.max_bet {
            return reject(
                RejectCode::AboveMax,
                format!("the maximum bet on {} is {}", spot.id, spot.max_bet),
            );
        }
        let have = self
            .stakes
            .get(&(user.clone(), spot.id.clone()))
            .copied()
            .unwrap_or(0);
        if have.saturating_add(amount) > spot.max_per_player_round {
            let room = spot.max_per_player_round.saturating_sub(have);
            let msg = format!(
                "you have {have} on {} this round and the limit is {}: at most {room} more",
                spot.id, spot.max_per_player_round
            );
            return reject(RejectCode::PlayerLimit, msg);
        }
        Decision::Accept {
            round: open,
            spot: spot.id.clone(),
            amount,
        }
    }

    /// Books an accepted bet and remembers its `bet.accepted`, which it returns.
    pub fn accept(
        &mut self,
        user: &UserId,
        req: PlaceBet,
        round: RoundId,
        spot: SpotId,
        amount: u64,
    ) -> Reply {
        let reply = Reply::BetAccepted {
            id: req.id.clone(),
            round,
            spot: spot.clone(),
            amount,
        };
        // Config validation bounds every stake by max_per_player_round <= MAX_AMOUNT, so this
        // sum cannot overflow; saturating keeps it panic-free regardless.
        let stake = self.stakes.entry((user.clone(), spot.clone())).or_insert(0);
        *stake = stake.saturating_add(amount);
        self.bets.insert(
            (user.clone(), req.id.clone()),
            LiveBet {
                spot,
                amount,
                cancelled: false,
            },
        );
        self.remember(user, req, reply.clone(), round.0);
        reply
    }

    /// Remembers a rejection so a retry of the same id gets the same answer.
    pub fn remember_rejection(
        &mut self,
        user: &UserId,
        req: PlaceBet,
        reply: Reply,
        rounds: &Rounds,
    ) {
        let round_seen = rounds.current.map_or(rounds.last_id, |r| r.0);
        self.remember(user, req, reply, round_seen);
    }

    fn remember(&mut self, user: &UserId, req: PlaceBet, reply: Reply, round_seen: u64) {
        let order = self.next_order;
        self.next_order += 1;
        self.answers.insert(
            (user.clone(), req.id.clone()),
            Answer {
                request: req,
                reply,
                round_seen,
                order,
            },
        );
    }

    /// Cancels `user`'s bet `id` of the round in progress if betting is open.
    pub fn cancel(&mut self, user: &UserId, id: &BetId, betting_open: bool) -> Cancel {
        let Some(round) = self.round else {
            return Cancel::UnknownBet;
        };
        let key = (user.clone(), id.clone());
        let Some(bet) = self.bets.get_mut(&key) else {
            return Cancel::UnknownBet;
        };
        if bet.cancelled {
            return Cancel::Done {
                round,
                spot: bet.spot.clone(),
                amount: bet.amount,
                first: false,
            };
        }
        if !betting_open {
            return Cancel::BettingClosed;
        }
        bet.cancelled = true;
        let (spot, amount) = (bet.spot.clone(), bet.amount);
        let stake_key = (user.clone(), spot.clone());
        if let Some(stake) = self.stakes.get_mut(&stake_key) {
            *stake = stake.saturating_sub(amount);
            if *stake == 0 {
                self.stakes.remove(&stake_key);
            }
        }
        if let Some(a) = self.answers.get_mut(&key) {
            a.reply = Reply::BetCancelled {
                id: id.clone(),
                round,
                spot: spot.clone(),
                amount,
            };
        }
        Cancel::Done {
            round,
            spot,
            amount,
            first: true,
        }
    }

    /// The live bets of the round in progress, in `(player, bet id)` order.
    pub fn live_bets(&self) -> impl Iterator<Item = (&UserId, &BetId, &LiveBet)> {
        self.bets
            .iter()
            .filter(|(_, b)| !b.cancelled)
            .map(|((u, id), b)| (u, id, b))
    }

    /// The remembered replies to `user`'s bets (this round and the one before), in the order
    /// they were first given: re-sent after a resume so an optimistic UI settles every bet.
    pub fn replies_for(&self, user: &UserId) -> Vec<Reply> {
        let mut mine: Vec<&Answer> = self
            .answers
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|(_, a)| a)
            .collect();
        mine.sort_by_key(|a| a.order);
        mine.into_iter().map(|a| a.reply.clone()).collect()
    }
}
