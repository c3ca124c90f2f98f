//! Where a session's `control` data channel meets the control plane.
//!
//! The media workers own the data channels (they live inside each session's sans-IO peer
//! connection); the control plane owns what is said on them. A worker calls a [`ControlHook`]
//! when a `control` channel opens, carries a message or closes, on the worker's own thread, so
//! an implementation must not block: parse, then hand off by message. The control plane answers
//! through [`super::MediaHandle::control_send`] and closes a session through
//! [`super::MediaHandle::kick`].

use super::Role;
use crate::auth::TokenRole;
use crate::ids::{SessionId, TableId, UserId};

/// The session a control channel belongs to, borrowed from the worker for one call.
#[derive(Debug, Clone, Copy)]
pub struct ControlChannel<'a> {
    pub session: &'a SessionId,
    pub table: &'a TableId,
    pub user: &'a UserId,
    /// WHIP (a dealer console publishing) or WHEP (a player).
    pub role: Role,
    /// The role of the token the session was opened with.
    pub token_role: TokenRole,
}

/// The control plane, as the media workers see it.
pub trait ControlHook: Send + Sync + 'static {
    /// The session's `control` channel is open and can be sent on.
    fn opened(&self, channel: ControlChannel<'_>);
    /// A message arrived on the channel (text or binary, as sent).
    fn message(&self, channel: ControlChannel<'_>, data: &[u8]);
    /// The channel closed, or its session ended. Called once per `opened`.
    fn closed(&self, channel: ControlChannel<'_>);
    /// The largest message the control plane sends on a channel, in bytes: the SCTP
    /// max-message-size each session negotiates.
    fn max_message_bytes(&self) -> usize {
        crate::protocol::DATA_CHANNEL_MAX_MESSAGE_BYTES
    }
}

/// A node without a control plane: channels open and stay silent.
pub struct NoControl;

impl ControlHook for NoControl {
    fn opened(&self, _: ControlChannel<'_>) {}
    fn message(&self, _: ControlChannel<'_>, _: &[u8]) {}
    fn closed(&self, _: ControlChannel<'_>) {}
}
