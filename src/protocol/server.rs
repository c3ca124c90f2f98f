//! Server → client messages: sequenced public table events, private replies to one player,
//! and per-connection session messages (`welcome`, `pong`).

use super::config::TableConfig;
use super::types::{Outcome, ServerTime, SpotId};
use crate::ids::{BetId, RoundId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A public table event with its place in the table's sequence.
///
/// Invariant (kept by `table::event`): `seq` starts at 1 and increases by exactly one per table
/// with no gaps, across restarts. On the wire the fields sit side by side with the event's:
/// `{"seq": 7, "server_ms": …, "type": "round.opened", …}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SequencedEvent {
    pub seq: u64,
    /// When the event took effect, by server time.
    pub server_ms: ServerTime,
    #[serde(flatten)]
    pub event: PublicEvent,
}

/// Events every watcher of a table sees, in `seq` order.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PublicEvent {
    #[serde(rename = "round.opened")]
    RoundOpened {
        round: RoundId,
        closes_at_server_ms: ServerTime,
    },
    #[serde(rename = "totals")]
    Totals(TotalsView),
    #[serde(rename = "betting.closed")]
    BettingClosed {
        round: RoundId,
        /// True when the dealer closed betting before the deadline.
        early: bool,
    },
    #[serde(rename = "round.result")]
    RoundResult {
        round: RoundId,
        outcome: Outcome,
        /// The frame of the dealer's video the result belongs to: an RTP timestamp of the
        /// camera's reference layer (`media::frame_clock`). Each player maps it to its own video
        /// through its private `video.map`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_ts: Option<u64>,
        /// The clock `media_ts` is in (the reference layer's SSRC), as `video.map` names it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_clock: Option<u32>,
    },
    #[serde(rename = "round.settled")]
    RoundSettled { round: RoundId },
    #[serde(rename = "round.voided")]
    RoundVoided { round: RoundId, reason: String },
    #[serde(rename = "chat")]
    Chat {
        id: BetId,
        user: UserId,
        text: String,
    },
}

/// The per-spot projection of a round's live bets.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TotalsView {
    pub round: RoundId,
    /// Every spot of the table, including those nobody has bet on.
    pub spots: BTreeMap<SpotId, SpotTotal>,
    /// Distinct players with at least one live bet in the round.
    pub bettors: u64,
    /// True on the last `totals` of a round, sent as betting closes.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// Sum and bettor count of one spot.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct SpotTotal {
    /// Sum of live bets, minor units.
    pub amount: u64,
    /// Distinct players with a live bet on the spot.
    pub bettors: u64,
}

/// Why a bet was refused (`bet.rejected.code`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// No round is open.
    RoundNotOpen,
    /// The round's betting closed (by server time) before the bet arrived.
    BettingClosed,
    /// The bet names another round than the one taking bets.
    WrongRound,
    UnknownSpot,
    /// The amount is not a positive integer of minor units.
    InvalidAmount,
    BelowMin,
    AboveMax,
    /// The player's bets on this spot this round would exceed `max_per_player_round`.
    PlayerLimit,
    /// This bet id was already used by this player for a different bet.
    DuplicateId,
    /// The table's totals would overflow; practically unreachable.
    TableLimit,
}

/// `error.code`: protocol errors and refused commands other than bets.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    TooLarge,
    Malformed,
    UnknownType,
    /// A known type with missing or invalid fields.
    InvalidMessage,
    Unauthorized,
    RateLimited,
    /// `bet.cancel` named a bet that is not live in the current round.
    UnknownBet,
    /// `bet.cancel` after betting closed.
    BettingClosed,
    Muted,
    ChatTooLong,
    ChatEmpty,
    /// A dealer command in the wrong round state (the message says what to do).
    WrongState,
    /// A dealer command with a bad argument (unknown outcome spot …).
    InvalidCommand,
    /// The connection's table is not served here (said only to a token good for that table).
    UnknownTable,
    /// The table cannot take this now: the node is stopping (reconnect, to another node, and
    /// resume), or the table is moving to another node (send the same command again in a
    /// moment; bets are idempotent).
    Unavailable,
}

/// What happened to one bet at the end of its round.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetResult {
    Won,
    Lost,
    /// Lost, but returned because a `push_on` spot won (baccarat: player/banker on a tie).
    Push,
    /// The round was voided.
    Refunded,
}

/// One bet's line in a `payout`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BetPayout {
    pub id: BetId,
    pub spot: SpotId,
    pub amount: u64,
    pub result: BetResult,
    /// What comes back to the player, stake included (0 on a loss).
    pub paid: u64,
}

/// Why a payout was made.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutReason {
    Settled,
    Voided,
}

/// A player's private reply from the table.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Reply {
    #[serde(rename = "bet.accepted")]
    BetAccepted {
        id: BetId,
        round: RoundId,
        spot: SpotId,
        amount: u64,
    },
    #[serde(rename = "bet.rejected")]
    BetRejected {
        id: BetId,
        code: RejectCode,
        message: String,
    },
    #[serde(rename = "bet.cancelled")]
    BetCancelled {
        id: BetId,
        round: RoundId,
        spot: SpotId,
        amount: u64,
    },
    /// Sent to every player with a live bet when the round settles or is voided.
    #[serde(rename = "payout")]
    Payout {
        round: RoundId,
        reason: PayoutReason,
        total: u64,
        bets: Vec<BetPayout>,
    },
    /// A dealer or operator command succeeded.
    #[serde(rename = "ok")]
    Ok {
        id: BetId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        round: Option<RoundId>,
    },
    /// A bad message or a refused command; `id` when the command had one.
    #[serde(rename = "error")]
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<BetId>,
        code: ErrorCode,
        message: String,
    },
}

/// Where the table's round is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundState {
    Idle,
    BettingOpen,
    BettingClosed,
}

impl std::fmt::Display for RoundState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Idle => "idle",
            Self::BettingOpen => "betting_open",
            Self::BettingClosed => "betting_closed",
        })
    }
}

/// How the last finished round ended.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LastRound {
    Settled { round: RoundId, outcome: Outcome },
    Voided { round: RoundId, reason: String },
}

/// The table as of `last_seq`: what `welcome` and `GET /api/v1/tables/{table}` show.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub table: TableConfig,
    pub state: RoundState,
    /// The round in progress (open or closed), if any.
    pub round: Option<RoundId>,
    pub closes_at_server_ms: Option<ServerTime>,
    /// Live totals of the round in progress.
    pub totals: Option<TotalsView>,
    pub last_round: Option<LastRound>,
    /// When auto-open will open the next round.
    pub next_round_at_server_ms: Option<ServerTime>,
    /// The seq of the last public event included in this snapshot (0: none yet).
    pub last_seq: u64,
}

/// The size of the largest `welcome` a table configured as `config` can produce, in bytes:
/// every spot bet on with the largest totals, and the larger of a last round won by every spot
/// and one voided with the longest reason, every character escaped. Every other message a
/// player is sent is smaller (a `totals` or `round.result` is part of this snapshot; chat and
/// replies are bounded on their own).
pub fn welcome_bound(config: &TableConfig) -> usize {
    let round = RoundId(u64::MAX);
    let most = SpotTotal {
        amount: u64::MAX,
        bettors: u64::MAX,
    };
    let snapshot = |last_round| Snapshot {
        table: config.clone(),
        state: RoundState::BettingClosed,
        round: Some(round),
        closes_at_server_ms: Some(ServerTime(u64::MAX)),
        totals: Some(TotalsView {
            round,
            spots: config.spots.iter().map(|s| (s.id.clone(), most)).collect(),
            bettors: u64::MAX,
            is_final: false,
        }),
        last_round: Some(last_round),
        next_round_at_server_ms: Some(ServerTime(u64::MAX)),
        last_seq: u64::MAX,
    };
    let settled = LastRound::Settled {
        round,
        outcome: Outcome(config.spots.iter().map(|s| s.id.clone()).collect()),
    };
    let voided = LastRound::Voided {
        round,
        // A control character is the longest a character gets in JSON (`\u0001`).
        reason: "\u{1}".repeat(super::VOID_REASON_MAX_CHARS),
    };
    [settled, voided]
        .into_iter()
        .map(|last| {
            super::encode(&ServerMessage::Session(SessionMessage::Welcome {
                v: super::PROTOCOL_VERSION,
                snapshot: Box::new(snapshot(last)),
                seq: u64::MAX,
            }))
            .len()
        })
        .max()
        .unwrap_or(0)
}

/// Per-connection messages that are neither table events nor replies.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SessionMessage {
    #[serde(rename = "welcome")]
    Welcome {
        v: u32,
        snapshot: Box<Snapshot>,
        seq: u64,
    },
    /// The answer to `hello` with `resume_after_seq` when the server still has every missed
    /// event: the events `after_seq + 1 ..= last_seq` follow at once, then live events.
    #[serde(rename = "resumed")]
    Resumed { after_seq: u64, last_seq: u64 },
    #[serde(rename = "pong")]
    Pong {
        client_ms: u64,
        server_ms: ServerTime,
    },
    /// Private to a player (`media::video_map`): its frame `rtp` is the camera's frame
    /// `media_ts` in clock `media_clock`, and its later frames follow at the same rate.
    #[serde(rename = "video.map")]
    VideoMap {
        /// Of which of the session's streams (a relay to an edge node has one per layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ssrc: Option<u32>,
        /// Of which WHEP session (on a WebSocket, which outlives sessions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        rtp: u32,
        media_ts: u32,
        media_clock: u32,
    },
}

/// Anything the server sends; serializes to one JSON object with a `type`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerMessage {
    Event(SequencedEvent),
    Reply(Reply),
    Session(SessionMessage),
}
