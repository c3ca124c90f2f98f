//! The worker's side of `control` data channels: the session as the [`ControlHook`] sees it,
//! and sending the control plane's messages, with a backlog limit.
//!
//! [`ControlHook`]: crate::media::ControlHook

use super::Worker;
use crate::media::control::ControlChannel;
use crate::media::peer::Peer;
use std::time::Instant;
use tracing::debug;

/// A control channel whose peer has not taken this many bytes is closed: the player is gone or
/// cannot keep up, and it will resume from its last seq when it reconnects.
const CONTROL_BACKLOG_LIMIT: usize = 4 * 1024 * 1024;

/// The session a control channel belongs to, as the control hook sees it.
pub(super) fn control_channel(peer: &Peer) -> ControlChannel<'_> {
    ControlChannel {
        session: &peer.session,
        table: &peer.key.table,
        user: &peer.user,
        role: peer.role,
        token_role: peer.token_role,
    }
}

impl Worker {
    /// Sends one control-plane message on a session's `control` channel.
    pub(super) fn control_send(&mut self, slot: usize, text: &str, now: Instant) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let Some(mut dc) = peer.control.and_then(|id| peer.pc.data_channel(id)) else {
            return;
        };
        if dc.outstanding_bytes() > CONTROL_BACKLOG_LIMIT {
            self.remove(
                slot,
                "control channel backlog over 4 MiB: the player is not reading; it resumes when it reconnects",
            );
            return;
        }
        if let Err(e) = dc.send_text(now, text) {
            peer.span
                .in_scope(|| debug!(error = %e, "control message not sent"));
        }
        self.drive(slot, now);
    }
}
