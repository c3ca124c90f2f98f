//! The round's transitions, shared by live handling (`mod.rs`) and replay (`record.rs`).
//!
//! `apply_*` change state only; the other steps also queue the events that announce the change.
//! Replay calls only `apply_*` (the events are already in the log); live handling and
//! `Table::restore` call the full steps.

use super::round::Phase;
use super::timer::Timer;
use super::{DealerError, Table, settle};
use crate::ids::{RoundId, UserId};
use crate::protocol::{LastRound, Outcome, PublicEvent, Reply, ServerTime};

impl Table {
    pub(super) fn advance(&mut self, now: ServerTime) {
        self.now = self.now.max(now);
        while let Some((timer, at)) = self.timers.next_expired(self.now) {
            self.timers.stop(timer);
            match timer {
                // Deadline-driven events carry their deadline as their time, so the log does
                // not depend on how late the caller woke up.
                Timer::CloseBetting => self.close_betting(at, false),
                Timer::FlushTotals => self.flush_totals(at),
                // Auto-open uses the real time: after a long outage the round must not open
                // (and close) in the past. The timer is only armed while idle, so this succeeds.
                Timer::AutoOpen => {
                    let _ = self.open_round(self.now);
                }
            }
        }
    }

    pub(super) fn open_round(&mut self, at: ServerTime) -> Result<RoundId, DealerError> {
        let round = self.rounds.check_open()?;
        let closes_at = at.plus_secs(self.config.betting_window_secs);
        self.apply_open(round, closes_at);
        self.outbox.publish(
            at,
            PublicEvent::RoundOpened {
                round,
                closes_at_server_ms: closes_at,
            },
        );
        Ok(round)
    }

    pub(super) fn apply_open(&mut self, round: RoundId, closes_at: ServerTime) {
        self.rounds.open(round, closes_at);
        self.book.start_round(round);
        self.totals.start_round(&self.config, round);
        self.coalescer.dirty = false;
        self.timers.stop(Timer::AutoOpen);
        self.timers.set(Timer::CloseBetting, closes_at);
    }

    /// Final totals (always), then `betting.closed`.
    pub(super) fn close_betting(&mut self, at: ServerTime, early: bool) {
        let Some(round) = self.rounds.current else {
            return;
        };
        self.apply_close();
        if let Some(view) = self.totals.view(true) {
            self.outbox.publish(at, PublicEvent::Totals(view));
        }
        self.coalescer.sent(at);
        self.outbox
            .publish(at, PublicEvent::BettingClosed { round, early });
    }

    pub(super) fn apply_close(&mut self) {
        self.rounds.close();
        self.timers.stop(Timer::CloseBetting);
        self.timers.stop(Timer::FlushTotals);
    }

    /// The projection changed: send `totals` now if the interval allows, else arm the flush.
    pub(super) fn totals_changed(&mut self) {
        self.coalescer.dirty = true;
        let next = self.coalescer.next_allowed();
        if self.now >= next {
            self.flush_totals(self.now);
        } else if self.timers.get(Timer::FlushTotals).is_none() {
            self.timers.set(Timer::FlushTotals, next);
        }
    }

    pub(super) fn flush_totals(&mut self, at: ServerTime) {
        if !self.coalescer.dirty || !matches!(self.rounds.phase, Phase::Open { .. }) {
            return;
        }
        if let Some(view) = self.totals.view(false) {
            self.outbox.publish(at, PublicEvent::Totals(view));
        }
        self.coalescer.sent(at);
        self.timers.stop(Timer::FlushTotals);
    }

    /// Payouts, then `round.settled`. `round.result` is already out (live) or logged (restore).
    pub(super) fn settle(&mut self, round: RoundId, outcome: Outcome) {
        let payouts = settle::payouts(&self.config, round, Some(&outcome), self.book.live_bets());
        self.apply_finish(self.now, LastRound::Settled { round, outcome }, &payouts);
        for (user, reply) in payouts {
            self.outbox.reply(user, reply);
        }
        self.outbox
            .publish(self.now, PublicEvent::RoundSettled { round });
    }

    /// `round.voided`, then refunds.
    pub(super) fn void_round(&mut self, round: RoundId, reason: String) {
        let payouts = settle::payouts(&self.config, round, None, self.book.live_bets());
        self.apply_finish(
            self.now,
            LastRound::Voided {
                round,
                reason: reason.clone(),
            },
            &payouts,
        );
        self.outbox
            .publish(self.now, PublicEvent::RoundVoided { round, reason });
        for (user, reply) in payouts {
            self.outbox.reply(user, reply);
        }
    }

    pub(super) fn apply_finish(
        &mut self,
        at: ServerTime,
        last: LastRound,
        payouts: &[(UserId, Reply)],
    ) {
        self.rounds.finish(last);
        self.totals.clear();
        self.coalescer.dirty = false;
        self.timers.stop(Timer::CloseBetting);
        self.timers.stop(Timer::FlushTotals);
        self.last_payouts = payouts.iter().cloned().collect();
        if let Some(pause) = self.config.auto_open_pause_secs {
            self.timers.set(Timer::AutoOpen, at.plus_secs(pause));
        }
    }
}
