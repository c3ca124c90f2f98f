//! The round state machine: which dealer command is allowed when, and the typed error that
//! says what to do instead.
//!
//! ```text
//!   Idle ──open──▶ Open{closes_at} ──deadline or close──▶ Closed ──result──▶ (settled) ──▶ Idle
//!                      │                                     │
//!                      └────────────────void─────────────────┴──▶ (voided) ──▶ Idle
//! ```

use crate::ids::RoundId;
use crate::protocol::{ErrorCode, LastRound, Outcome, RoundState, ServerTime, SpotId, TableConfig};

/// Longest `void` reason accepted, in characters.
pub const MAX_VOID_REASON_CHARS: usize = crate::protocol::VOID_REASON_MAX_CHARS;

/// The phase of the round in progress.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    Idle,
    Open {
        closes_at: ServerTime,
    },
    /// `result` is only ever `Some` while replaying a log that holds a `round.result` whose
    /// `round.settled` was not written (the node died in between); live, a result settles the
    /// round in the same call.
    Closed {
        result: Option<(Outcome, Option<u64>)>,
    },
}

/// A dealer or operator command that cannot be done now, or not with these arguments.
/// (Serializable: a dealer action on another node than the table's owner travels to it.)
#[derive(Debug, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DealerError {
    #[error("round {round} is still {state}: submit its result or void it before opening another")]
    RoundInProgress { round: RoundId, state: RoundState },
    #[error("no round is taking bets (the table is {state}): open a round first")]
    BettingNotOpen { state: RoundState },
    #[error("betting on round {round} is still open: close betting first, then submit the result")]
    BettingStillOpen { round: RoundId },
    #[error(
        "no round is waiting for a result (the table is idle): open a round and close betting first"
    )]
    NoRoundToSettle,
    #[error("no round is in progress, so there is nothing to void")]
    NoRoundToVoid,
    #[error("the outcome names no spot: send the winning spot, e.g. {{\"outcome\": \"banker\"}}")]
    EmptyOutcome,
    #[error("the outcome names {spot:?}, which is not a spot of this table; its spots are {known}")]
    UnknownSpot { spot: SpotId, known: String },
    #[error("the outcome names {spot:?} twice: name each winning spot once")]
    DuplicateSpot { spot: SpotId },
    #[error("the void reason is longer than {MAX_VOID_REASON_CHARS} characters: shorten it")]
    ReasonTooLong,
}

impl DealerError {
    /// The `error.code` to send to a dealer console.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::RoundInProgress { .. }
            | Self::BettingNotOpen { .. }
            | Self::BettingStillOpen { .. }
            | Self::NoRoundToSettle
            | Self::NoRoundToVoid => ErrorCode::WrongState,
            Self::EmptyOutcome
            | Self::UnknownSpot { .. }
            | Self::DuplicateSpot { .. }
            | Self::ReasonTooLong => ErrorCode::InvalidCommand,
        }
    }
}

/// The round in progress and how the last one ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rounds {
    pub phase: Phase,
    /// The round in progress; `Some` exactly when `phase` is not `Idle`.
    pub current: Option<RoundId>,
    pub last: Option<LastRound>,
    /// The highest round number ever opened on this table (0: none). Rounds count up from 1.
    pub last_id: u64,
}

impl Rounds {
    pub fn new() -> Self {
        Self {
            phase: Phase::Idle,
            current: None,
            last: None,
            last_id: 0,
        }
    }

    pub fn state(&self) -> RoundState {
        match self.phase {
            Phase::Idle => RoundState::Idle,
            Phase::Open { .. } => RoundState::BettingOpen,
            Phase::Closed { .. } => RoundState::BettingClosed,
        }
    }

    pub fn closes_at(&self) -> Option<ServerTime> {
        match self.phase {
            Phase::Open { closes_at } => Some(closes_at),
            _ => None,
        }
    }

    /// The id the next round will get, if one may open now.
    pub fn check_open(&self) -> Result<RoundId, DealerError> {
        match self.current {
            Some(round) => Err(DealerError::RoundInProgress {
                round,
                state: self.state(),
            }),
            None => Ok(RoundId(self.last_id.saturating_add(1))),
        }
    }

    pub fn open(&mut self, round: RoundId, closes_at: ServerTime) {
        self.phase = Phase::Open { closes_at };
        self.current = Some(round);
        self.last_id = round.0;
    }

    /// The round whose betting may close now.
    pub fn check_close(&self) -> Result<RoundId, DealerError> {
        match (&self.phase, self.current) {
            (Phase::Open { .. }, Some(round)) => Ok(round),
            _ => Err(DealerError::BettingNotOpen {
                state: self.state(),
            }),
        }
    }

    pub fn close(&mut self) {
        self.phase = Phase::Closed { result: None };
    }

    /// The round a result may be submitted for, after checking the outcome against the spots.
    pub fn check_result(
        &self,
        config: &TableConfig,
        outcome: &Outcome,
    ) -> Result<RoundId, DealerError> {
        let round = match (&self.phase, self.current) {
            (Phase::Closed { .. }, Some(round)) => round,
            (Phase::Open { .. }, Some(round)) => {
                return Err(DealerError::BettingStillOpen { round });
            }
            _ => return Err(DealerError::NoRoundToSettle),
        };
        if outcome.0.is_empty() {
            return Err(DealerError::EmptyOutcome);
        }
        for (i, spot) in outcome.0.iter().enumerate() {
            if config.spot(spot.as_str()).is_none() {
                let known = config
                    .spots
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(DealerError::UnknownSpot {
                    spot: spot.clone(),
                    known,
                });
            }
            if outcome.0.iter().skip(i + 1).any(|o| o == spot) {
                return Err(DealerError::DuplicateSpot { spot: spot.clone() });
            }
        }
        Ok(round)
    }

    pub fn check_void(&self) -> Result<RoundId, DealerError> {
        self.current.ok_or(DealerError::NoRoundToVoid)
    }

    /// The round ended (settled or voided): back to idle.
    pub fn finish(&mut self, last: LastRound) {
        self.phase = Phase::Idle;
        self.current = None;
        self.last = Some(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dealer_commands_in_the_wrong_state_say_what_to_do() {
        let config = TableConfig::demo_baccarat();
        let mut r = Rounds::new();
        assert_eq!(
            r.check_close(),
            Err(DealerError::BettingNotOpen {
                state: RoundState::Idle
            })
        );
        assert_eq!(r.check_void(), Err(DealerError::NoRoundToVoid));
        let banker = Outcome::single(SpotId::parse("banker").unwrap());
        assert_eq!(
            r.check_result(&config, &banker),
            Err(DealerError::NoRoundToSettle)
        );

        let id = r.check_open().unwrap();
        assert_eq!(id, RoundId(1));
        r.open(id, ServerTime(1000));
        let e = r.check_open().unwrap_err();
        assert!(
            e.to_string().contains("submit its result or void it"),
            "{e}"
        );
        let e = r.check_result(&config, &banker).unwrap_err();
        assert!(e.to_string().contains("close betting first"), "{e}");
        assert_eq!(e.code(), ErrorCode::WrongState);

        r.close();
        assert_eq!(r.check_result(&config, &banker), Ok(RoundId(1)));
        let bad = Outcome::single(SpotId::parse("dragon").unwrap());
        let e = r.check_result(&config, &bad).unwrap_err();
        assert!(e.to_string().contains("player, banker, tie"), "{e}");
        assert_eq!(e.code(), ErrorCode::InvalidCommand);
        assert_eq!(
            r.check_result(&config, &Outcome(vec![])),
            Err(DealerError::EmptyOutcome)
        );

        r.finish(LastRound::Settled {
            round: RoundId(1),
            outcome: banker,
        });
        assert_eq!(r.check_open(), Ok(RoundId(2)));
    }
}
