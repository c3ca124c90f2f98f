//! The media plane: UDP sockets, WebRTC sessions and RTP forwarding.
//!
//! A packet's path: publisher → track → router → subscriber.
//! - `worker`: one thread and one UDP socket per worker; demultiplexes by ICE ufrag, then by
//!   remote address, drives each session's sans-IO `RTCPeerConnection`, batches I/O and sleeps
//!   until the next deadline.
//! - `peer`: one `RTCPeerConnection` and its role (publisher or subscriber); `engine`: the codecs
//!   and extensions every connection negotiates.
//! - `restart`: ICE restart of a session (WHIP/WHEP `PATCH` with `If-Match: "*"`); `trickle`:
//!   the client's trickled candidates (`PATCH` with the session's ETag).
//! - `router`: a table camera's tracks mapped to their subscribers.
//! - `simulcast`: a camera's layers and which one is forwarded (switched at keyframes).
//! - `subscriber`: per-subscriber SSRC/sequence/timestamp rewriting.
//! - `keyframe`: keyframe detection and PLI throttling; `frame_size`: a keyframe's picture size.
//! - `rtx`: answering NACKs on an RTX stream (RFC 4588) for subscribers that negotiated one.
//!
//! The rest of the node talks to the workers only through [`MediaHandle`], by message.

pub mod control;
pub mod demux;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod frame_clock;
pub mod frame_size;
pub mod keyframe;
pub mod pacer;
pub mod peer;
pub mod probe;
pub mod relay;
pub mod restart;
pub mod router;
pub(crate) mod rtcp_tap;
pub mod rtx;
pub mod selector;
pub mod simulcast;
pub mod subscriber;
pub mod transport_cc;
pub mod trickle;
pub mod udp;
pub mod video_map;
pub mod vp8;
mod worker;

pub use control::{ControlChannel, ControlHook, NoControl};
pub use error::MediaError;

use crate::auth::{Identity, TokenDigest, TokenRole};
use crate::ids::{CameraId, SessionId, TableId, UserId};
use crate::limits::Permit;

/// Whether a session sends media in (WHIP) or takes it out (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Publisher,
    Subscriber,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        }
    }
}

/// A WHIP or WHEP offer to answer.
#[derive(Debug)]
pub struct SessionRequest {
    pub role: Role,
    pub table: TableId,
    pub camera: CameraId,
    pub user: UserId,
    /// The role of the token the session was opened with (what its control channel may do).
    pub token_role: TokenRole,
    /// The token the session was opened with: it may PATCH and DELETE the session for as long
    /// as the session lives, even after it expires.
    pub token: TokenDigest,
    /// The session's slot under `[limits]`, held until the session ends.
    pub permit: Option<Permit>,
    /// A subscriber that is another node's pull of the camera (`relay.rs`), not a player.
    pub relay: bool,
    pub offer_sdp: String,
}

/// Who asks to PATCH or DELETE a session, from their verified token.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user: UserId,
    pub token: TokenDigest,
    /// The token is past its `exp`.
    pub expired: bool,
    /// An operator token for the session's table (the API checked the table).
    pub operator: bool,
}

impl Requester {
    pub fn from_identity(identity: &Identity) -> Self {
        Self {
            user: identity.user.clone(),
            token: identity.token,
            expired: identity.expired,
            operator: identity.role == TokenRole::Operator,
        }
    }

    /// Whether this requester may touch a session opened by `owner` with the token `opened_with`:
    /// the very token that opened it (expired or not), or a current token of the same user, or a
    /// current operator token of the table.
    pub fn may_touch(&self, owner: &UserId, opened_with: &TokenDigest) -> bool {
        self.token == *opened_with || (!self.expired && (self.operator || self.user == *owner))
    }
}

/// The answer to a [`SessionRequest`].
#[derive(Debug, Clone)]
pub struct SessionAnswer {
    pub session: SessionId,
    pub answer_sdp: String,
    pub etag: String,
}

/// A WHIP/WHEP `PATCH` (RFC 9725 §4.3): trickled candidates, or an ICE restart.
#[derive(Debug, Clone)]
pub struct PatchRequest {
    pub role: Role,
    pub table: TableId,
    pub session: SessionId,
    /// The `If-Match` header, verbatim (`"*"` or a quoted entity tag).
    pub if_match: Option<String>,
    /// The `application/trickle-ice-sdpfrag` body.
    pub sdpfrag: String,
    pub requester: Requester,
}

/// What a `PATCH` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchOutcome {
    /// Candidates were added (`204`).
    Trickled,
    /// ICE restarted (`200` with the new sdpfrag and ETag).
    Restarted { sdpfrag: String, etag: String },
}

/// One session, as an operator sees it (`GET /api/v1/tables/{table}/sessions`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub session: SessionId,
    pub table: TableId,
    pub camera: CameraId,
    #[serde(serialize_with = "role_str")]
    pub role: Role,
    pub user: UserId,
    pub worker: usize,
    /// Since the offer was answered.
    pub age_ms: u64,
    /// Since ICE and DTLS completed (absent while connecting).
    pub connected_ms: Option<u64>,
    /// The remote address media flows from, once known.
    pub addr: Option<std::net::SocketAddr>,
    /// Whether its `control` data channel is open.
    pub control: bool,
    /// Another node's pull of the camera (`relay.rs`), not a player.
    pub relay: bool,
    /// Subscriber: what its feedback says about its link (`estimate.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<estimate::Link>,
    /// Player: how its page shows the video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<View>,
    /// Player: the video layer it gets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<PlayerLayer>,
}

/// The video layer a player gets, as the session listing shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PlayerLayer {
    /// The layer's index among the camera's layers, in the order the publisher sent them.
    pub index: Option<usize>,
    pub width: u16,
    pub height: u16,
    pub bitrate_bps: u32,
    /// A switch waits for a keyframe of this layer.
    pub pending: Option<usize>,
    /// The page is hidden: no video is sent.
    pub paused: bool,
}

/// How a player's page shows the video, as it says over the control channel (`video.view`,
/// docs/protocol.md). The player's layer is the highest that fits both this and its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct View {
    /// The video element's rendered size in device pixels; 0 when not known.
    pub width: u16,
    pub height: u16,
    /// The page is hidden: no video is sent until it is shown again, and then from a keyframe.
    pub hidden: bool,
    /// The player's own choice of quality.
    pub quality: Quality,
}

/// A player's quality preference: the page's quality menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// The highest layer the link and the rendered size call for.
    #[default]
    Auto,
    /// The highest layer the link carries, whatever the rendered size.
    High,
    /// The lowest layer.
    Low,
}

fn role_str<S: serde::Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.as_str())
}

mod handle;
pub use handle::{Media, MediaHandle, StartError};
