//! The table's log records (event sourcing) and rebuilding a table from them.
//!
//! The store appends, in `poll_output` order, every [`Record`] the table produces: each public
//! event (`Record::Event`), each accepted bet and cancellation, and each chat mute. Payouts are
//! not logged: they follow from the bets and the result. Replaying the records through
//! [`Table::replay`] gives back the same state, snapshot and seq as the table that wrote them.

use super::bets::{Cancel, PlaceBet};
use super::round::Phase;
use super::timer::Timer;
use super::{RESTART_VOID_REASON, Table, settle};
use crate::ids::{BetId, RoundId, UserId};
use crate::protocol::{
    ConfigError, LastRound, PublicEvent, SequencedEvent, ServerTime, SpotId, TableConfig,
};
use serde::{Deserialize, Serialize};

/// One entry of a table's durable log. JSON: `{"kind": "bet_accepted", …}`; an event record
/// is the event's own JSON plus `"kind": "event"`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A public event, exactly as sent.
    Event(SequencedEvent),
    /// A bet accepted into `round`; logged before its `bet.accepted` is sent.
    BetAccepted {
        at: ServerTime,
        user: UserId,
        id: BetId,
        round: RoundId,
        spot: SpotId,
        amount: u64,
    },
    /// An accepted bet withdrawn while betting was open.
    BetCancelled {
        at: ServerTime,
        user: UserId,
        id: BetId,
        round: RoundId,
    },
    /// An operator muted or unmuted a player's chat.
    ChatMute {
        at: ServerTime,
        user: UserId,
        muted: bool,
    },
}

/// Why a log could not be replayed. Both mean the log is damaged or belongs to other rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("the table config is invalid: {0}")]
    Config(#[from] ConfigError),
    #[error(
        "record {index}: event seq {found} follows seq {last}: the log has a gap or a repeat; \
         run `tablecast audit verify` on it"
    )]
    SeqGap { index: usize, last: u64, found: u64 },
    #[error("record {index}: {detail}: the log does not fit this table's rounds or config")]
    Inconsistent { index: usize, detail: String },
}

impl Table {
    /// Rebuilds exactly the state the records describe, without producing any output: a round
    /// that was open is open again, with its deadline timer armed (possibly in the past).
    pub fn replay(
        config: TableConfig,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Table, ReplayError> {
        let mut table = Table::new(config)?;
        for (index, record) in records.into_iter().enumerate() {
            table.apply(index, record)?;
        }
        Ok(table)
    }

    /// Replays the records, then finishes the round the node died in (see the module doc):
    /// an open or unresulted round is voided with reason `"node_restart"` and every bet
    /// refunded; a resulted but unsettled round is settled. The outputs (to be logged and sent
    /// like any others) are waiting in `poll_output`. Timers are not run: call
    /// `handle_timeout(now)` next, as usual.
    pub fn restore(
        config: TableConfig,
        records: impl IntoIterator<Item = Record>,
        now: ServerTime,
    ) -> Result<Table, ReplayError> {
        let mut table = Self::replay(config, records)?;
        table.now = table.now.max(now);
        if let Some(round) = table.rounds.current {
            match table.rounds.phase.clone() {
                Phase::Closed {
                    result: Some((outcome, _)),
                } => table.settle(round, outcome),
                _ => table.void_round(round, RESTART_VOID_REASON.to_owned()),
            }
        }
        Ok(table)
    }

    fn apply(&mut self, index: usize, record: Record) -> Result<(), ReplayError> {
        let bad = |detail: String| ReplayError::Inconsistent { index, detail };
        match record {
            Record::Event(ev) => {
                let last = self.outbox.last_seq();
                if ev.seq != last.saturating_add(1) {
                    return Err(ReplayError::SeqGap {
                        index,
                        last,
                        found: ev.seq,
                    });
                }
                self.now = self.now.max(ev.server_ms);
                self.apply_event(ev.server_ms, ev.event).map_err(bad)?;
                self.outbox.replayed(ev.seq);
            }
            Record::BetAccepted {
                at,
                user,
                id,
                round,
                spot,
                amount,
            } => {
                self.now = self.now.max(at);
                self.check_open_round(round).map_err(bad)?;
                if self.config.spot(spot.as_str()).is_none() {
                    return Err(bad(format!(
                        "bet {id} is on spot {spot}, which this table does not have"
                    )));
                }
                let request = PlaceBet {
                    id,
                    round,
                    spot: spot.as_str().to_owned(),
                    amount: amount.into(),
                };
                self.totals.add(&user, &spot, amount);
                self.book.accept(&user, request, round, spot, amount);
                self.replayed_totals_change();
            }
            Record::BetCancelled {
                at,
                user,
                id,
                round,
            } => {
                self.now = self.now.max(at);
                self.check_open_round(round).map_err(bad)?;
                match self.book.cancel(&user, &id, true) {
                    Cancel::Done {
                        spot,
                        amount,
                        first: true,
                        ..
                    } => {
                        self.totals.remove(&user, &spot, amount);
                        self.replayed_totals_change();
                    }
                    _ => {
                        return Err(bad(format!(
                            "cancel of bet {id}, which is not a live bet of {user}"
                        )));
                    }
                }
            }
            Record::ChatMute { at, user, muted } => {
                self.now = self.now.max(at);
                self.chat.set_muted(&user, muted);
            }
        }
        Ok(())
    }

    fn check_open_round(&self, round: RoundId) -> Result<(), String> {
        match (&self.rounds.phase, self.rounds.current) {
            (Phase::Open { .. }, Some(r)) if r == round => Ok(()),
            _ => Err(format!(
                "a bet record for round {round}, which is not taking bets"
            )),
        }
    }

    /// What `totals_changed` would have left behind: dirty, with the flush armed. A `totals`
    /// record that follows in the log clears both, as it did live.
    fn replayed_totals_change(&mut self) {
        self.coalescer.dirty = true;
        if self.timers.get(Timer::FlushTotals).is_none() {
            self.timers
                .set(Timer::FlushTotals, self.coalescer.next_allowed());
        }
    }

    fn apply_event(&mut self, at: ServerTime, event: PublicEvent) -> Result<(), String> {
        let current = self.rounds.current;
        let not_current = |what: &str, round: RoundId| {
            format!("{what} for round {round}, but the round is {current:?}")
        };
        match event {
            PublicEvent::RoundOpened {
                round,
                closes_at_server_ms,
            } => match self.rounds.check_open() {
                Ok(next) if next == round => self.apply_open(round, closes_at_server_ms),
                _ => {
                    return Err(format!(
                        "round.opened for round {round} while round {current:?} is in progress"
                    ));
                }
            },
            PublicEvent::Totals(view) => {
                if current != Some(view.round) {
                    return Err(not_current("totals", view.round));
                }
                self.coalescer.sent(at);
                self.timers.stop(Timer::FlushTotals);
            }
            PublicEvent::BettingClosed { round, .. } => {
                if current != Some(round) || !matches!(self.rounds.phase, Phase::Open { .. }) {
                    return Err(not_current("betting.closed", round));
                }
                self.apply_close();
            }
            PublicEvent::RoundResult {
                round,
                outcome,
                media_ts,
                ..
            } => {
                self.rounds
                    .check_result(&self.config, &outcome)
                    .map_err(|e| e.to_string())?;
                if current != Some(round) {
                    return Err(not_current("round.result", round));
                }
                self.rounds.phase = Phase::Closed {
                    result: Some((outcome, media_ts)),
                };
            }
            PublicEvent::RoundSettled { round } => {
                let Phase::Closed {
                    result: Some((outcome, _)),
                } = self.rounds.phase.clone()
                else {
                    return Err(format!(
                        "round.settled for round {round} without a round.result"
                    ));
                };
                if current != Some(round) {
                    return Err(not_current("round.settled", round));
                }
                let payouts =
                    settle::payouts(&self.config, round, Some(&outcome), self.book.live_bets());
                self.apply_finish(at, LastRound::Settled { round, outcome }, &payouts);
            }
            PublicEvent::RoundVoided { round, reason } => {
                if current != Some(round) {
                    return Err(not_current("round.voided", round));
                }
                let payouts = settle::payouts(&self.config, round, None, self.book.live_bets());
                self.apply_finish(at, LastRound::Voided { round, reason }, &payouts);
            }
            PublicEvent::Chat { id, user, .. } => self.chat.posted(&user, &id),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TotalsView;

    #[test]
    fn records_round_trip_through_json_with_a_kind_tag() {
        let user = UserId::parse("alice").unwrap();
        let recs = vec![
            Record::Event(SequencedEvent {
                seq: 1,
                server_ms: ServerTime(10),
                event: PublicEvent::Totals(TotalsView {
                    round: RoundId(1),
                    spots: Default::default(),
                    bettors: 0,
                    is_final: true,
                }),
            }),
            Record::BetAccepted {
                at: ServerTime(11),
                user: user.clone(),
                id: BetId::parse("b1").unwrap(),
                round: RoundId(1),
                spot: SpotId::parse("tie").unwrap(),
                amount: 100,
            },
            Record::ChatMute {
                at: ServerTime(12),
                user,
                muted: true,
            },
        ];
        for r in recs {
            let text = serde_json::to_string(&r).unwrap();
            assert!(text.contains("\"kind\""), "{text}");
            assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r, "{text}");
        }
    }

    #[test]
    fn the_record_examples_in_protocol_md_parse_and_serialize_back_exactly() {
        let records: Vec<serde_json::Value> = crate::protocol::protocol_md_examples()
            .into_iter()
            .filter(|v| v.get("kind").is_some())
            .collect();
        assert_eq!(records.len(), 3);
        for v in records {
            let r: Record = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&r).unwrap(), v);
        }
    }

    #[test]
    fn a_log_with_a_seq_gap_is_refused() {
        let ev = |seq| {
            Record::Event(SequencedEvent {
                seq,
                server_ms: ServerTime(seq),
                event: PublicEvent::Chat {
                    id: BetId::parse("c").unwrap(),
                    user: UserId::parse("u").unwrap(),
                    text: "x".into(),
                },
            })
        };
        let e = Table::replay(TableConfig::demo_baccarat(), [ev(1), ev(3)]).unwrap_err();
        assert_eq!(
            e,
            ReplayError::SeqGap {
                index: 1,
                last: 1,
                found: 3
            }
        );
    }
}
