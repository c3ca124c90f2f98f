//! Client → server messages: players (`hello`, `bet.place`, `bet.cancel`, `chat`, `ping`,
//! `video.view`) and the dealer / operator console (`dealer.*`, `operator.mute`).

use super::types::{Outcome, WireAmount};
use super::view::{ViewQuality, view_px};
use crate::ids::{BetId, RoundId, SessionId, UserId};
use serde::{Deserialize, Serialize};

/// One message from a client. Unknown fields are ignored, so clients may add fields.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientMessage {
    /// First message on a control connection.
    #[serde(rename = "hello")]
    Hello {
        token: String,
        /// Replay every public event after this seq instead of sending a snapshot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_after_seq: Option<u64>,
        /// Protocol version the client speaks; absent means 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v: Option<u32>,
    },
    /// Place a bet. `spot` stays a plain string and `amount` any JSON number here, so the table
    /// core can answer a bad one with a `bet.rejected` that carries the bet's `id`.
    #[serde(rename = "bet.place")]
    BetPlace {
        id: BetId,
        round: RoundId,
        spot: String,
        amount: WireAmount,
    },
    /// Withdraw one of your bets while betting is open.
    #[serde(rename = "bet.cancel")]
    BetCancel { id: BetId },
    /// Say something to the table (at most 280 characters).
    #[serde(rename = "chat")]
    Chat { id: BetId, text: String },
    /// Clock-offset probe; answered by `pong`.
    #[serde(rename = "ping")]
    Ping { client_ms: u64 },
    /// How the player's page shows the video of a WHEP session, for the node's choice of
    /// simulcast layer. Not a table command: the connection's node takes it.
    #[serde(rename = "video.view")]
    VideoView {
        /// The video element's rendered size in device pixels (0 when not known), capped at
        /// [`super::MAX_VIEW_PX`].
        #[serde(deserialize_with = "view_px")]
        width: u16,
        #[serde(deserialize_with = "view_px")]
        height: u16,
        /// The page is hidden: no video until it is shown again.
        #[serde(default)]
        hidden: bool,
        #[serde(default)]
        quality: ViewQuality,
        /// The WHEP session the page watches (the last part of its `Location`). Needed on a
        /// WebSocket; a data channel's own session when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<SessionId>,
    },

    /// Dealer: open a new round now.
    #[serde(rename = "dealer.open")]
    DealerOpen { id: BetId },
    /// Dealer: close betting before the deadline.
    #[serde(rename = "dealer.close")]
    DealerClose { id: BetId },
    /// Dealer: the round's result.
    #[serde(rename = "dealer.result")]
    DealerResult {
        id: BetId,
        outcome: Outcome,
        /// The frame of the dealer's video the result belongs to, as the reference layer's RTP
        /// timestamp (`media::frame_clock`). The node that takes the command in fills it when
        /// absent: from `captured_at`, else the newest frame it has received of the camera.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_ts: Option<u64>,
        /// The clock `media_ts` is in: the SSRC of the camera's reference layer. Filled with
        /// `media_ts` by the node; a caller naming its own `media_ts` may leave it out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_clock: Option<u32>,
        /// When the result was seen, wall-clock milliseconds since the Unix epoch (a studio
        /// system on NTP): the result belongs to the frame captured then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        captured_at: Option<u64>,
    },
    /// Dealer or operator: void the round in progress; every bet is refunded.
    #[serde(rename = "dealer.void")]
    DealerVoid {
        id: BetId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Operator: mute or unmute a player's chat.
    #[serde(rename = "operator.mute")]
    OperatorMute {
        id: BetId,
        user: UserId,
        muted: bool,
    },
}

/// Every `type` a client may send, for telling "unknown type" from "malformed message".
pub const CLIENT_TYPES: &[&str] = &[
    "hello",
    "bet.place",
    "bet.cancel",
    "chat",
    "ping",
    "video.view",
    "dealer.open",
    "dealer.close",
    "dealer.result",
    "dealer.void",
    "operator.mute",
];

impl ClientMessage {
    /// The command id the message carries, if any (used to address a reply).
    pub fn id(&self) -> Option<&BetId> {
        match self {
            Self::Hello { .. } | Self::Ping { .. } | Self::VideoView { .. } => None,
            Self::BetPlace { id, .. }
            | Self::BetCancel { id }
            | Self::Chat { id, .. }
            | Self::DealerOpen { id }
            | Self::DealerClose { id }
            | Self::DealerResult { id, .. }
            | Self::DealerVoid { id, .. }
            | Self::OperatorMute { id, .. } => Some(id),
        }
    }

    /// True for messages only a dealer or operator token may send.
    pub fn needs_dealer(&self) -> bool {
        matches!(
            self,
            Self::DealerOpen { .. }
                | Self::DealerClose { .. }
                | Self::DealerResult { .. }
                | Self::DealerVoid { .. }
                | Self::OperatorMute { .. }
        )
    }
}
