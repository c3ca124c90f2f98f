//! [`MediaHandle`]: how the HTTP layer reaches the media workers. (Stub: replaced by the workers.)

use super::{MediaError, PatchOutcome, PatchRequest, Role, SessionAnswer, SessionRequest};
use crate::config::MediaConfig;
use crate::ids::{SessionId, TableId};
use crate::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the media plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind media UDP socket {addr}: {source}; choose another [media] udp_port or stop the process using it")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The running media plane: its workers and a handle to reach them.
pub struct Media {
    pub handle: MediaHandle,
}

impl Media {
    /// Binds one UDP socket per worker and starts the worker threads.
    pub fn start(config: &MediaConfig, metrics: Arc<Metrics>) -> Result<Media, StartError> {
        let _ = (config, metrics);
        Ok(Media { handle: MediaHandle {} })
    }

    /// Closes every session and joins the workers.
    pub async fn shutdown(self) {}
}

/// Cloneable handle to the media workers; every call is a message to the owning worker.
#[derive(Clone)]
pub struct MediaHandle {}

impl MediaHandle {
    /// Answers a WHIP or WHEP offer, placing the session on a worker.
    pub async fn open(&self, req: SessionRequest) -> Result<SessionAnswer, MediaError> {
        let _ = req;
        Err(MediaError::Unavailable("not implemented yet".into()))
    }

    /// Applies a WHIP/WHEP PATCH: trickled candidates or an ICE restart.
    pub async fn patch(&self, req: PatchRequest) -> Result<PatchOutcome, MediaError> {
        let _ = req;
        Err(MediaError::Unavailable("not implemented yet".into()))
    }

    /// Ends a session (WHIP/WHEP DELETE).
    pub async fn close(&self, role: Role, table: &TableId, session: &SessionId) -> Result<(), MediaError> {
        let _ = (role, table, session);
        Err(MediaError::NoSession(session.to_string()))
    }
}
