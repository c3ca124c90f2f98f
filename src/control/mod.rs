//! The control plane: one single-writer actor per table, and the connections that watch it.
//!
//! ```text
//!  data channel (media worker thread) ─┐                         ┌─▶ EventStore (append, fsync)
//!                                      ├─ session ─▶ TableActor ─┤
//!  WebSocket (its own task) ───────────┘  parse,      one task,  └─▶ members: data channels (one
//!                                         ping,       owns the       message per media worker) and
//!                                         limits      Table          WebSockets (a queue each)
//! ```
//! - `session`: per-connection parsing, `ping`, who is speaking, and limits on what one connection
//!   may send, shared by both transports.
//! - `actor`: the table's single writer. It feeds commands to the sans-IO [`crate::table::Table`],
//!   appends what it produces to the log in one batch (group commit), and only then answers and
//!   fans out; it also replays missed events to a player that resumes.
//! - `channel`: the [`ControlHook`] the media workers call for `control` data channels.
//!
//! The WebSocket side lives in `api/ws.rs`; the HTTP round routes in `api/tables.rs`.

mod actor;
mod channel;
pub mod session;

pub use crate::config::ControlConfig as Limits;
pub use actor::{DealerAction, DealerOutcome, SOCKET_QUEUE, TableUnavailable};

use crate::auth::Tokens;
use crate::ids::{SessionId, TableId, UserId};
use crate::media::MediaHandle;
use crate::metrics::Metrics;
use crate::protocol::{ClientMessage, Snapshot, TableConfig};
use crate::store::{EventStore, StoreError};
use crate::table::ReplayError;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// One control connection, on either transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Where a member's messages go.
#[derive(Debug, Clone)]
pub enum Outlet {
    /// The `control` data channel of a WHEP (or WHIP) session.
    Channel(SessionId),
    /// A WebSocket's task. The actor holds the only sender: dropping it closes the socket.
    Socket(mpsc::Sender<Arc<str>>),
}

/// What a table actor takes.
#[derive(Debug)]
pub enum TableMsg {
    /// A connection said `hello`. `outlet` is `None` for a repeated `hello` on a connection
    /// that is already a member.
    Attach {
        conn: ConnId,
        user: UserId,
        outlet: Option<Outlet>,
        resume_after_seq: Option<u64>,
    },
    Detach {
        conn: ConnId,
    },
    Command {
        conn: ConnId,
        user: UserId,
        msg: ClientMessage,
    },
    /// A dealer or operator action over HTTP.
    Dealer {
        action: DealerAction,
        reply: oneshot::Sender<DealerOutcome>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
}

/// A running table's mailbox.
#[derive(Clone, Debug)]
pub struct TableHandle {
    pub id: TableId,
    tx: mpsc::UnboundedSender<TableMsg>,
}

impl TableHandle {
    /// Posts a message; false when the table has stopped.
    pub fn send(&self, msg: TableMsg) -> bool {
        self.tx.send(msg).is_ok()
    }

    /// The table as of its last durable event.
    pub async fn snapshot(&self) -> Result<Snapshot, TableUnavailable> {
        let (reply, rx) = oneshot::channel();
        if !self.send(TableMsg::Snapshot { reply }) {
            return Err(TableUnavailable(self.id.clone()));
        }
        rx.await.map_err(|_| TableUnavailable(self.id.clone()))
    }

    /// Runs a dealer action; the answer comes once its effects are durable.
    pub async fn dealer(&self, action: DealerAction) -> Result<DealerOutcome, TableUnavailable> {
        let (reply, rx) = oneshot::channel();
        if !self.send(TableMsg::Dealer { action, reply }) {
            return Err(TableUnavailable(self.id.clone()));
        }
        rx.await.map_err(|_| TableUnavailable(self.id.clone()))
    }
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("[[tables]] entry {index}: {message}; fix it in config.toml (see docs/protocol.md)")]
    Config { index: usize, message: String },
    #[error("table {table}: cannot read its log: {source}")]
    Load { table: TableId, source: StoreError },
    #[error("table {table}: cannot rebuild from its log: {source}")]
    Replay { table: TableId, source: ReplayError },
    #[error("table {table}: cannot write its log: {source}")]
    Append { table: TableId, source: StoreError },
}

/// Every table of the node and the connections watching them.
pub struct ControlPlane {
    tables: BTreeMap<TableId, TableHandle>,
    tokens: Arc<Tokens>,
    limits: Limits,
    next_conn: AtomicU64,
    /// Set once the media plane has started (it needs this plane as its hook first).
    media: Arc<OnceLock<MediaHandle>>,
    /// Data-channel connections, by session (see `channel`).
    channels: Mutex<HashMap<SessionId, session::ControlSession>>,
    /// Set to true by [`ControlPlane::stop`]; every table actor watches it.
    stopping: watch::Sender<bool>,
    actors: Mutex<Vec<JoinHandle<()>>>,
}

impl ControlPlane {
    /// Parses the `[[tables]]` entries (the built-in demo table when there are none), rebuilds
    /// every table from its log and starts its actor.
    pub async fn start(
        tables: &[toml::Table],
        store: Arc<dyn EventStore>,
        tokens: Arc<Tokens>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<ControlPlane>, StartError> {
        let media = Arc::new(OnceLock::new());
        let (stopping, stop_rx) = watch::channel(false);
        let mut handles = BTreeMap::new();
        let mut actors = Vec::new();
        for config in table_configs(tables, limits.max_message_bytes)? {
            let (handle, task) = actor::spawn(
                config,
                store.clone(),
                limits.clone(),
                metrics.clone(),
                media.clone(),
                stop_rx.clone(),
            )
            .await?;
            handles.insert(handle.id.clone(), handle);
            actors.push(task);
        }
        Ok(Arc::new(ControlPlane {
            tables: handles,
            tokens,
            limits,
            next_conn: AtomicU64::new(1),
            media,
            channels: Mutex::new(HashMap::new()),
            stopping,
            actors: Mutex::new(actors),
        }))
    }

    /// Stops every table actor once its current turn is durable, and waits for them, so the
    /// store they share is closed (and its `LOCK` released) when this returns. Messages sent
    /// afterwards get [`TableUnavailable`].
    pub async fn stop(&self) {
        self.stopping.send_replace(true);
        let actors = std::mem::take(&mut *self.actors.lock().unwrap_or_else(|e| e.into_inner()));
        for actor in actors {
            if let Err(e) = actor.await {
                tracing::error!(error = %e, "a table actor panicked");
            }
        }
    }

    /// Connects the media plane, once it has started with this plane as its hook.
    pub fn attach_media(&self, media: MediaHandle) {
        let _ = self.media.set(media);
    }

    pub fn table(&self, id: &TableId) -> Option<&TableHandle> {
        self.tables.get(id)
    }

    pub fn table_ids(&self) -> impl Iterator<Item = &TableId> {
        self.tables.keys()
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}

/// The current server time, in milliseconds since the Unix epoch.
pub fn server_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The tables of `[[tables]]`, or the demo table when there are none.
pub(crate) fn table_configs(
    tables: &[toml::Table],
    max_message_bytes: usize,
) -> Result<Vec<TableConfig>, StartError> {
    if tables.is_empty() {
        return Ok(vec![TableConfig::demo_baccarat()]);
    }
    tables
        .iter()
        .enumerate()
        .map(|(index, t)| {
            let config: TableConfig =
                toml::Value::Table(t.clone())
                    .try_into()
                    .map_err(|e: toml::de::Error| StartError::Config {
                        index,
                        message: e.message().to_owned(),
                    })?;
            config
                .validate()
                .and_then(|()| config.check_message_size(max_message_bytes))
                .map_err(|e| StartError::Config {
                    index,
                    message: e.to_string(),
                })?;
            Ok(config)
        })
        .collect()
}
