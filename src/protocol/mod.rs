//! The control protocol: versioned JSON messages, the one contract with `web/tablecast.js`.
//! `docs/protocol.md` documents every message with an example.
//!
//! Every message is one JSON object with a `type`. Client → server messages are
//! [`ClientMessage`]; read them with [`parse_client`], which tells an oversize message, malformed
//! JSON, an unknown type and a known type with bad fields apart, so the caller can answer with an
//! `error{code, message}` ([`ProtocolError::to_reply`]) and keep the connection.
//! Server → client messages are [`ServerMessage`]: sequenced public events, private replies and
//! session messages.
//!
//! Layout: `types.rs` (time, spot ids, odds, outcome, amounts), `config.rs` (`TableConfig`),
//! `client.rs`, `server.rs`, `view.rs` (`video.view`'s fields). No I/O here: bytes in, values out.

mod client;
mod config;
mod server;
mod types;
mod view;

pub use client::{CLIENT_TYPES, ClientMessage};
pub use config::{ConfigError, DEFAULT_TOTALS_INTERVAL_MS, SpotConfig, TableConfig};
pub use server::{
    BetPayout, BetResult, ErrorCode, LastRound, PayoutReason, PublicEvent, RejectCode, Reply,
    RoundState, SequencedEvent, ServerMessage, SessionMessage, Snapshot, SpotTotal, TotalsView,
};
pub use types::{InvalidOdds, MAX_AMOUNT, Odds, Outcome, ServerTime, SpotId, WireAmount};
pub use view::{MAX_VIEW_PX, ViewQuality};

use crate::ids::BetId;

/// The protocol version this server speaks (`hello.v`, `welcome.v`).
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest client message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Longest chat message, in characters (Unicode scalar values).
pub const CHAT_MAX_CHARS: usize = 280;
/// Longest reason a dealer may give for voiding a round, in characters.
pub const VOID_REASON_MAX_CHARS: usize = 200;
/// Largest message the node sends on a `control` data channel, in bytes: the SCTP
/// max-message-size it negotiates (RFC 8841), which is also the size of the reassembly buffer
/// the node keeps for each channel. A table whose `welcome` could outgrow it is refused at
/// start (`TableConfig::validate`), so no message is ever too large to send.
pub const DATA_CHANNEL_MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Why a client message could not be read. The connection stays open; answer with
/// [`ProtocolError::to_reply`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}: send smaller messages")]
    TooLarge { size: usize },
    #[error("malformed JSON: {detail}: send one JSON object per message")]
    Malformed { detail: String },
    #[error(
        "message has no string \"type\" field: every message needs one, e.g. {{\"type\":\"ping\",\"client_ms\":0}}"
    )]
    MissingType,
    #[error("unknown message type {ty:?}: see docs/protocol.md for the types a client may send")]
    UnknownType { ty: String },
    #[error("invalid {ty} message: {detail}")]
    Invalid {
        ty: String,
        id: Option<BetId>,
        detail: String,
    },
}

impl ProtocolError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::Malformed { .. } | Self::MissingType => ErrorCode::Malformed,
            Self::UnknownType { .. } => ErrorCode::UnknownType,
            Self::Invalid { .. } => ErrorCode::InvalidMessage,
        }
    }

    /// The `error` event to send back.
    pub fn to_reply(&self) -> Reply {
        let id = match self {
            Self::Invalid { id, .. } => id.clone(),
            _ => None,
        };
        Reply::Error {
            id,
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// Reads one client message (a WebSocket text frame or a data-channel message).
pub fn parse_client(bytes: &[u8]) -> Result<ClientMessage, ProtocolError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge { size: bytes.len() });
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed {
            detail: e.to_string(),
        })?;
    let ty = match value.get("type").and_then(|t| t.as_str()) {
        Some(ty) => ty.chars().take(64).collect::<String>(),
        None => return Err(ProtocolError::MissingType),
    };
    if !CLIENT_TYPES.contains(&ty.as_str()) {
        return Err(ProtocolError::UnknownType { ty });
    }
    // Recover the id for the error reply when it is itself valid.
    let id = value
        .get("id")
        .and_then(|v| v.as_str())
        .and_then(|s| BetId::parse(s).ok());
    serde_json::from_value(value).map_err(|e| ProtocolError::Invalid {
        ty,
        id,
        detail: e.to_string(),
    })
}

/// Serializes any server message to its JSON text.
pub fn encode<T: serde::Serialize>(msg: &T) -> String {
    // Serializing these types cannot fail: every map key is a string and no custom Serialize
    // impl returns an error. Fall back to an error object rather than panic all the same.
    serde_json::to_string(msg).unwrap_or_else(|e| {
        format!(r#"{{"type":"error","code":"malformed","message":"encode failed: {e}"}}"#)
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::protocol_md_examples;
