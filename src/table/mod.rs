//! The sans-IO table core: one live-dealer table's rounds, bets, totals and sequenced events.
//!
//! No sockets, clocks, tasks or locks. Time is an input ([`ServerTime`], milliseconds since
//! the Unix epoch, passed by the caller) and work is polled output, so the same inputs always
//! give the same outputs, and tests run thousands of rounds in milliseconds.
//!
//! # Driving contract
//! The owner (the tokio table actor) does, in a loop:
//! 1. feed **one** input: a `handle_*(now, …)` call (a player's bet, a dealer command …) or
//!    [`Table::handle_timeout`] when the last deadline has passed. Every `handle_*` first runs
//!    the timers due by `now`, so a bet that arrives after the deadline finds betting closed
//!    even if `handle_timeout` was not called in time. Time never runs backwards inside the
//!    core: an earlier `now` than already seen is treated as the latest one seen;
//! 2. call [`Table::poll_output`] until it returns [`Output::Timeout`], and for each output:
//!    - [`Output::Record`] and [`Output::Public`]: append to the table's log, in order (see
//!      [`Output::record`]). Outputs that follow must not be delivered until these are durable:
//!      a bet is acknowledged only after its `Record::BetAccepted` is fsynced;
//!    - [`Output::Public`]: then send to every watcher of the table;
//!    - [`Output::Private`]: send to that player's connections only;
//!    - [`Output::Timeout`]: sleep until then (or until the next input), then `handle_timeout`.
//!
//! Getters: [`Table::snapshot`] (for `welcome` and `GET /api/v1/tables/{table}`),
//! [`Table::replies_for`] (private replies to re-send on resume), [`Table::last_seq`].
//! Rebuilding: [`Table::replay`] (exactly the state the log describes) and [`Table::restore`]
//! (replay, then finish the round the node died in; see below).
//!
//! # Round states
//! ```text
//!                 open (dealer, or auto-open after the pause)
//!   ┌──────┐ ─────────────────────────────────────────────▶ ┌──────────────────────┐
//!   │ idle │                                                │ betting open         │
//!   └──────┘ ◀───┐                                          │ until closes_at      │
//!      ▲         │ void (refund all)                        └──────────────────────┘
//!      │         │                                            │ closes_at passes (server time)
//!      │         ├────────────────────────────────────────────┤ or dealer closes early
//!      │         │                                            ▼      [final totals, betting.closed]
//!      │         │                                          ┌──────────────────────┐
//!      │         └───────────────────────────────────────── │ betting closed       │
//!      │                                                    └──────────────────────┘
//!      │   round.settled, payouts      ┌─────────┐ result      │
//!      └────────────────────────────── │ result  │ ◀───────────┘  [round.result]
//!        (settled → idle)              └─────────┘
//! ```
//! `result → settled → idle` happens inside one `handle_result` call, so a snapshot only ever
//! shows `idle`, `betting_open` or `betting_closed`.
//!
//! # Restart
//! [`Table::restore`] replays the log, then finishes a round the node died in:
//! - open, or closed without a result: **voided** with reason `"node_restart"`; every bet is
//!   refunded (`round.voided` + a `payout` per player), and the void is itself logged;
//! - closed with a logged `round.result` but no `round.settled`: settled with that result.
//!
//! No acknowledged bet can disappear: it was in the log before it was acknowledged, so replay
//! books it and the void or settlement pays it.
//!
//! Layout: `round.rs` (state machine), `timer.rs` (deadlines), `bets.rs` (validation and
//! idempotency), `totals.rs` (projection and coalescing), `event.rs` (seq and outputs),
//! `settle.rs` (payouts), `record.rs` (the log records and replay), `lifecycle.rs` (the
//! transitions both share), `command.rs` (`handle_command`), `chat.rs`.

mod bets;
mod chat;
mod command;
mod event;
mod lifecycle;
mod record;
mod round;
mod settle;
mod timer;
mod totals;

#[cfg(test)]
mod tests;

pub use bets::PlaceBet;
pub use event::Output;
pub use record::{Record, ReplayError};
pub use round::{DealerError, MAX_VOID_REASON_CHARS};
pub use settle::bet_result;
pub use timer::{Timer, TimerTable};

pub use crate::protocol::ServerTime;

use crate::ids::{BetId, RoundId, UserId};
use crate::protocol::{
    ConfigError, ErrorCode, Outcome, PublicEvent, RejectCode, Reply, RoundState, Snapshot,
    TableConfig,
};
use bets::{BetBook, Cancel, Decision};
use chat::{Chat, ChatCheck};
use event::Outbox;
use round::{Phase, Rounds};
use std::collections::BTreeMap;
use totals::{Coalescer, Totals};

/// The void reason a dealer gets when it gives none.
pub const DEFAULT_VOID_REASON: &str = "dealer_void";
/// The void reason of a round interrupted by a node restart.
pub const RESTART_VOID_REASON: &str = "node_restart";

/// One table. See the module doc for how to drive it.
#[derive(Debug)]
pub struct Table {
    config: TableConfig,
    /// The latest time seen; never decreases.
    now: ServerTime,
    rounds: Rounds,
    book: BetBook,
    totals: Totals,
    coalescer: Coalescer,
    timers: TimerTable,
    outbox: Outbox,
    chat: Chat,
    /// Each player's payout of the last finished round, for `replies_for`.
    last_payouts: BTreeMap<UserId, Reply>,
}

impl Table {
    /// A fresh table with no rounds. With `auto_open_pause_secs` set, its first round opens at
    /// the first `handle_timeout`.
    pub fn new(config: TableConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut timers = TimerTable::default();
        if config.auto_open_pause_secs.is_some() {
            timers.set(Timer::AutoOpen, ServerTime(0));
        }
        Ok(Self {
            coalescer: Coalescer::new(config.totals_interval_ms),
            config,
            now: ServerTime(0),
            rounds: Rounds::new(),
            book: BetBook::default(),
            totals: Totals::default(),
            timers,
            outbox: Outbox::default(),
            chat: Chat::default(),
            last_payouts: BTreeMap::new(),
        })
    }

    // ---- getters ----

    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// The seq of the last public event produced (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.outbox.last_seq()
    }

    pub fn state(&self) -> RoundState {
        self.rounds.state()
    }

    /// The round in progress, if any.
    pub fn current_round(&self) -> Option<RoundId> {
        self.rounds.current
    }

    pub fn is_muted(&self, user: &UserId) -> bool {
        self.chat.is_muted(user)
    }

    /// The table as of [`Table::last_seq`], including outputs not yet polled.
    pub fn snapshot(&self) -> Snapshot {
        let open = matches!(self.rounds.phase, Phase::Open { .. });
        Snapshot {
            table: self.config.clone(),
            state: self.rounds.state(),
            round: self.rounds.current,
            closes_at_server_ms: self.rounds.closes_at(),
            totals: self.rounds.current.and_then(|_| self.totals.view(!open)),
            last_round: self.rounds.last.clone(),
            // A fresh auto-open table's deadline is "as soon as it runs" (0): not a time to show.
            next_round_at_server_ms: self.timers.get(Timer::AutoOpen).filter(|t| t.0 > 0),
            last_seq: self.outbox.last_seq(),
        }
    }

    /// `user`'s remembered private replies: the answers to their bets of this round and the one
    /// before (each names its round), then their payout of the last finished round. Re-send
    /// them after a resume so an optimistic UI can settle every pending bet.
    pub fn replies_for(&self, user: &UserId) -> Vec<Reply> {
        let mut replies = self.book.replies_for(user);
        replies.extend(self.last_payouts.get(user).cloned());
        replies
    }

    // ---- handle_* ----

    /// Runs every timer due by `now`.
    pub fn handle_timeout(&mut self, now: ServerTime) {
        self.advance(now);
    }

    /// A player's `bet.place`. Queues exactly one private reply to `user`; if the bet is new and
    /// valid, a `Record::BetAccepted` before it, and possibly a `totals` event after it.
    pub fn handle_bet(&mut self, now: ServerTime, user: &UserId, bet: PlaceBet) {
        self.advance(now);
        let reject = |bet: &PlaceBet, code, message| Reply::BetRejected {
            id: bet.id.clone(),
            code,
            message,
        };
        match self
            .book
            .check(&self.config, &self.rounds, self.now, user, &bet)
        {
            Decision::Repeat(reply) => self.outbox.reply(user.clone(), reply),
            Decision::Reject {
                code,
                message,
                remember,
            } => {
                let reply = reject(&bet, code, message);
                if remember {
                    self.book
                        .remember_rejection(user, bet, reply.clone(), &self.rounds);
                }
                self.outbox.reply(user.clone(), reply);
            }
            Decision::Accept {
                round,
                spot,
                amount,
            } => {
                if !self.totals.can_add(&spot, amount) {
                    let reply = reject(
                        &bet,
                        RejectCode::TableLimit,
                        format!("the table cannot take more on {spot}"),
                    );
                    self.book
                        .remember_rejection(user, bet, reply.clone(), &self.rounds);
                    self.outbox.reply(user.clone(), reply);
                    return;
                }
                let (at, id) = (self.now, bet.id.clone());
                self.outbox.record(Record::BetAccepted {
                    at,
                    user: user.clone(),
                    id,
                    round,
                    spot: spot.clone(),
                    amount,
                });
                self.totals.add(user, &spot, amount);
                let reply = self.book.accept(user, bet, round, spot, amount);
                self.outbox.reply(user.clone(), reply);
                self.totals_changed();
            }
        }
    }

    /// A player's `bet.cancel`: withdraws one of their bets while betting is open. Replies
    /// `bet.cancelled` (again, to a retry) or `error{unknown_bet | betting_closed}`.
    pub fn handle_cancel(&mut self, now: ServerTime, user: &UserId, id: &BetId) {
        self.advance(now);
        let open = matches!(self.rounds.phase, Phase::Open { .. });
        match self.book.cancel(user, id, open) {
            Cancel::Done {
                round,
                spot,
                amount,
                first,
            } => {
                if first {
                    let at = self.now;
                    self.outbox.record(Record::BetCancelled {
                        at,
                        user: user.clone(),
                        id: id.clone(),
                        round,
                    });
                    self.totals.remove(user, &spot, amount);
                }
                self.outbox.reply(
                    user.clone(),
                    Reply::BetCancelled {
                        id: id.clone(),
                        round,
                        spot,
                        amount,
                    },
                );
                if first {
                    self.totals_changed();
                }
            }
            Cancel::UnknownBet => {
                let message = format!("you have no bet {id} in the round in progress");
                self.outbox.reply(
                    user.clone(),
                    Reply::Error {
                        id: Some(id.clone()),
                        code: ErrorCode::UnknownBet,
                        message,
                    },
                );
            }
            Cancel::BettingClosed => {
                let message = "betting has closed: bets can no longer be cancelled".to_owned();
                let reply = Reply::Error {
                    id: Some(id.clone()),
                    code: ErrorCode::BettingClosed,
                    message,
                };
                self.outbox.reply(user.clone(), reply);
            }
        }
    }

    /// A player's `chat`: a public `chat` event, or a private `error` (muted, empty, too long).
    pub fn handle_chat(&mut self, now: ServerTime, user: &UserId, id: &BetId, text: &str) {
        self.advance(now);
        match self.chat.check(user, id, text) {
            ChatCheck::Duplicate => {}
            ChatCheck::Refuse(code, message) => {
                self.outbox.reply(
                    user.clone(),
                    Reply::Error {
                        id: Some(id.clone()),
                        code,
                        message,
                    },
                );
            }
            ChatCheck::Post => {
                self.chat.posted(user, id);
                let event = PublicEvent::Chat {
                    id: id.clone(),
                    user: user.clone(),
                    text: text.to_owned(),
                };
                self.outbox.publish(self.now, event);
            }
        }
    }

    /// Operator: mute or unmute `user`'s chat. Logged (`Record::ChatMute`) when it changes.
    pub fn handle_mute(&mut self, now: ServerTime, user: &UserId, muted: bool) {
        self.advance(now);
        if self.chat.set_muted(user, muted) {
            self.outbox.record(Record::ChatMute {
                at: self.now,
                user: user.clone(),
                muted,
            });
        }
    }

    /// Dealer: open a round now. Betting closes `betting_window_secs` later.
    pub fn handle_open(&mut self, now: ServerTime) -> Result<RoundId, DealerError> {
        self.advance(now);
        self.open_round(self.now)
    }

    /// Dealer: close betting before the deadline (final `totals`, then `betting.closed`).
    pub fn handle_close(&mut self, now: ServerTime) -> Result<RoundId, DealerError> {
        self.advance(now);
        let round = self.rounds.check_close()?;
        self.close_betting(self.now, true);
        Ok(round)
    }

    /// Dealer: the round's result. Emits `round.result`, a `payout` to every player with a live
    /// bet, then `round.settled`; the table is idle again.
    pub fn handle_result(
        &mut self,
        now: ServerTime,
        outcome: Outcome,
        media_ts: Option<u64>,
        media_clock: Option<u32>,
    ) -> Result<RoundId, DealerError> {
        self.advance(now);
        let round = self.rounds.check_result(&self.config, &outcome)?;
        self.outbox.publish(
            self.now,
            PublicEvent::RoundResult {
                round,
                outcome: outcome.clone(),
                media_ts,
                media_clock,
            },
        );
        self.settle(round, outcome);
        Ok(round)
    }

    /// Dealer or operator: void the round in progress (open or closed). Every live bet is
    /// refunded: `round.voided`, then a `payout` (reason `voided`) to each player.
    pub fn handle_void(
        &mut self,
        now: ServerTime,
        reason: Option<&str>,
    ) -> Result<RoundId, DealerError> {
        self.advance(now);
        let reason = reason
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or(DEFAULT_VOID_REASON);
        if reason.chars().count() > MAX_VOID_REASON_CHARS {
            return Err(DealerError::ReasonTooLong);
        }
        let round = self.rounds.check_void()?;
        self.void_round(round, reason.to_owned());
        Ok(round)
    }

    // ---- poll_* ----

    /// The next piece of work; [`Output::Timeout`] when there is none left.
    pub fn poll_output(&mut self) -> Output {
        self.outbox
            .pop()
            .unwrap_or_else(|| Output::Timeout(self.timers.next_timeout()))
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<ServerTime> {
        self.timers.next_timeout()
    }
}
