//! The control plane: one single writer per table, on its owner, and one feed per node that
//! serves the table's players.
//!
//! ```text
//!  data channel (media worker) ─┐  attach/detach   ┌──────┐  Public, Private,   ┌────────┐
//!                               ├─ session ───────▶│ feed │◀── Welcome (one ────│ writer │─▶ EventStore
//!  WebSocket (its own task) ────┘  parse, ping,    └──┬───┘   message per       └────────┘   (append,
//!                                  limits    commands─┼──────── feed) ─────────────▲          fenced)
//!                                                     └─▶ members: data channels (one message
//!                                                         per media worker), WebSockets (a queue each)
//! ```
//! - `session`: per-connection parsing, `ping`, who is speaking, and limits on what one
//!   connection may send, shared by both transports.
//! - `writer`: the table's single writer. It feeds commands to the sans-IO
//!   [`crate::table::Table`], appends what it produces to the log in one fenced batch (group
//!   commit), and only then answers and sends each feed one message per event.
//! - `feed`: a node's members of a table and its replay ring; it answers a player that resumes,
//!   and delivers each event to every member.
//! - `channel`: the [`crate::media::ControlHook`] the media workers call for `control` data
//!   channels, with one map of connections per worker.
//!
//! Every queue is bounded: a full writer queue refuses the message (the client is told), a
//! feed that falls behind is dropped and resubscribes from its last seq, a WebSocket that falls
//! behind is closed and resumes. The WebSocket side lives in `api/ws.rs`; the HTTP round routes
//! in `api/tables.rs`.

mod channel;
mod feed;
pub mod link;
pub mod placement;
pub mod session;
mod writer;

pub use crate::config::ControlConfig as Limits;
pub use feed::{FeedId, FeedMsg, MemberMsg, SOCKET_QUEUE};
pub use writer::{DealerAction, DealerOutcome, Origin, StartMode, TableUnavailable, WriterMsg};

use crate::auth::Tokens;
use crate::ids::{SessionId, TableId, UserId};
use crate::media::MediaHandle;
use crate::media::frame_clock::NamedFrame;
use crate::metrics::{Metrics, TableMetrics};
use crate::protocol::{ClientMessage, Snapshot, TableConfig};
use crate::store::{EventStore, Fence, StoreError};
use crate::table::ReplayError;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// One control connection, on either transport.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
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

/// A table's writer, wherever it runs: the one seam behind which the owner's writer sits.
#[derive(Clone, Debug)]
pub struct TableHandle {
    pub id: TableId,
    tx: mpsc::Sender<WriterMsg>,
    metrics: Arc<TableMetrics>,
    /// True when the writer is another node's (reached over a link).
    remote: bool,
}

/// How long an HTTP request waits for the table's writer (across a link, possibly) to answer.
const REMOTE_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

impl TableHandle {
    pub(crate) fn new(
        id: TableId,
        tx: mpsc::Sender<WriterMsg>,
        metrics: Arc<TableMetrics>,
        remote: bool,
    ) -> TableHandle {
        TableHandle {
            id,
            tx,
            metrics,
            remote,
        }
    }

    /// Posts a message; false when the table has stopped or its queue is full (counted).
    pub fn post(&self, msg: WriterMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics
                    .control_writer_full
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(table_id = %self.id, "the table's writer queue is full: a message was refused and its sender told");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// A player's table command, from a connection of this node's feed.
    pub fn command(&self, conn: ConnId, user: UserId, msg: ClientMessage) -> bool {
        self.post(WriterMsg::Command {
            origin: Origin {
                feed: FeedId::LOCAL,
                conn,
            },
            user,
            msg,
        })
    }

    /// The table as of its last durable event.
    pub async fn snapshot(&self) -> Result<Snapshot, TableUnavailable> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Snapshot { reply }).await.is_err() {
            return Err(self.unavailable());
        }
        match tokio::time::timeout(REMOTE_ANSWER, rx).await {
            Ok(Ok(snapshot)) => Ok(snapshot),
            _ => Err(self.unavailable()),
        }
    }

    /// Why a request could not be answered: the local writer stopped, or the owner is away.
    pub fn unavailable(&self) -> TableUnavailable {
        if self.remote {
            TableUnavailable::Moving(self.id.clone())
        } else {
            TableUnavailable::Stopped(self.id.clone())
        }
    }

    /// Runs a dealer action; the answer comes once its effects are durable.
    pub async fn dealer(&self, action: DealerAction) -> Result<DealerOutcome, TableUnavailable> {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(WriterMsg::Dealer { action, reply })
            .await
            .is_err()
        {
            return Err(self.unavailable());
        }
        match tokio::time::timeout(REMOTE_ANSWER, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => Err(self.unavailable()),
        }
    }
}

/// A table as this node serves it: its writer, and this node's feed of it.
#[derive(Clone, Debug)]
pub struct TableRef {
    id: TableId,
    /// Where the table's writer is now: here, or the link to its owner. Changes when the
    /// table moves; the feed and the sessions follow it.
    route: watch::Receiver<TableHandle>,
    members: mpsc::Sender<MemberMsg>,
}

impl TableRef {
    pub fn id(&self) -> &TableId {
        &self.id
    }

    /// The table's writer as of now.
    pub fn writer(&self) -> TableHandle {
        self.route.borrow().clone()
    }

    /// Tells the feed a connection joined (or said `hello` again); false when it has stopped
    /// or is overloaded.
    pub fn attach(
        &self,
        conn: ConnId,
        user: UserId,
        outlet: Option<Outlet>,
        resume_after_seq: Option<u64>,
    ) -> bool {
        self.members
            .try_send(MemberMsg::Attach {
                conn,
                user,
                outlet,
                resume_after_seq,
            })
            .is_ok()
    }

    /// Tells the feed a connection left. A full queue cannot lose it: it waits its turn.
    pub fn detach(&self, conn: ConnId) {
        if let Err(mpsc::error::TrySendError::Full(msg)) =
            self.members.try_send(MemberMsg::Detach { conn })
        {
            let members = self.members.clone();
            tokio::spawn(async move {
                let _ = members.send(msg).await;
            });
        }
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

/// Data-channel connections are kept in this many maps, by the media worker in their session
/// id, so that workers never wait for each other's lock.
const CHANNEL_SHARDS: usize = 64;

/// A data channel's connection and the table it joined (see `channel`).
pub(crate) struct ChannelEntry {
    session: session::ControlSession,
    table: TableRef,
}

/// A table this node serves: its feed's handle, where its writer is, and the writer when it
/// runs here.
struct Slot {
    config: TableConfig,
    table: TableRef,
    route: watch::Sender<TableHandle>,
    writer: Option<LocalWriter>,
}

/// A writer running on this node.
struct LocalWriter {
    fence: Fence,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Every table this node serves and the connections watching them.
pub struct ControlPlane {
    /// The tables this node serves now, by id: one registry, changed at runtime as tables
    /// move between nodes.
    tables: RwLock<BTreeMap<TableId, Slot>>,
    tokens: Arc<Tokens>,
    limits: Limits,
    metrics: Arc<Metrics>,
    next_conn: AtomicU64,
    /// Set once the media plane has started (it needs this plane as its hook first).
    media: Arc<OnceLock<MediaHandle>>,
    /// Data-channel connections, by session, sharded by media worker (see `channel`).
    channels: Box<[Mutex<HashMap<SessionId, ChannelEntry>>]>,
    /// Set to true by [`ControlPlane::stop`]; every feed watches it.
    stopping: watch::Sender<bool>,
    feeds: Mutex<Vec<JoinHandle<()>>>,
    /// Set by [`ControlPlane::close_connections`]; every WebSocket watches it.
    closing: watch::Sender<bool>,
}

impl ControlPlane {
    /// A control plane with no table yet.
    pub fn new(tokens: Arc<Tokens>, limits: Limits, metrics: Arc<Metrics>) -> Arc<ControlPlane> {
        let (stopping, _) = watch::channel(false);
        Arc::new(ControlPlane {
            tables: RwLock::new(BTreeMap::new()),
            tokens,
            limits,
            metrics,
            next_conn: AtomicU64::new(1),
            media: Arc::new(OnceLock::new()),
            channels: (0..CHANNEL_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            stopping,
            feeds: Mutex::new(Vec::new()),
            closing: watch::channel(false).0,
        })
    }

    /// A node alone: parses the `[[tables]]` entries (the built-in demo table when there are
    /// none), rebuilds every table from its log and starts its writer and feed here.
    pub async fn start(
        tables: &[toml::Table],
        store: Arc<dyn EventStore>,
        tokens: Arc<Tokens>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<ControlPlane>, StartError> {
        let plane = ControlPlane::new(tokens, limits, metrics);
        for config in table_configs(tables, plane.limits.max_message_bytes)? {
            plane
                .start_writer(
                    &config,
                    store.clone(),
                    Fence::LOCAL,
                    Arc::new(crate::cluster::LeaseClock::forever()),
                    StartMode::Restart,
                )
                .await?;
        }
        Ok(plane)
    }

    /// Serves a table's players here: starts this node's feed of it, with its writer at
    /// `route` (a local writer, or the link to the owner). Does nothing if it is served.
    pub fn serve_table(&self, config: TableConfig, route: TableHandle) -> TableRef {
        self.serve(config, route, None)
    }

    fn serve(
        &self,
        config: TableConfig,
        route: TableHandle,
        writer: Option<LocalWriter>,
    ) -> TableRef {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = tables.get(&config.id) {
            return slot.table.clone();
        }
        let id = config.id.clone();
        let (route_tx, route_rx) = watch::channel(route);
        let (members, from_members) = mpsc::channel(feed::MEMBER_QUEUE);
        let feed = feed::Feed::new(
            id.clone(),
            FeedId::LOCAL,
            route_rx.clone(),
            self.media.clone(),
            self.metrics.table(&id),
            self.limits.replay_window,
        );
        let span = tracing::info_span!("feed", table_id = %id);
        let task = tokio::spawn(
            feed.run(from_members, self.stopping.subscribe())
                .instrument(span),
        );
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        let table = TableRef {
            id: id.clone(),
            route: route_rx,
            members,
        };
        tables.insert(
            id,
            Slot {
                config,
                table: table.clone(),
                route: route_tx,
                writer,
            },
        );
        table
    }

    /// Rebuilds a table from `store` and starts its writer here, holding `fence`; the table's
    /// route (and feed) then lead to it. A table not yet served here is served from now on.
    pub async fn start_writer(
        &self,
        config: &TableConfig,
        store: Arc<dyn EventStore>,
        fence: Fence,
        lease: Arc<crate::cluster::LeaseClock>,
        mode: StartMode,
    ) -> Result<TableHandle, StartError> {
        let (stop, stop_rx) = watch::channel(false);
        let started = writer::spawn(
            config.clone(),
            store,
            (fence, lease),
            mode,
            self.limits.clone(),
            self.metrics.table(&config.id),
            self.media.clone(),
            stop_rx,
        )
        .await?;
        let handle = started.handle.clone();
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let local = LocalWriter {
            fence,
            stop,
            task: started.task,
        };
        match tables.get_mut(&config.id) {
            Some(slot) => {
                if let Some(old) = slot.writer.replace(local) {
                    old.stop.send_replace(true);
                }
                slot.route.send_replace(handle.clone());
            }
            None => {
                drop(tables);
                self.serve(config.clone(), handle.clone(), Some(local));
            }
        }
        Ok(handle)
    }

    /// Points the table at another writer (the link to its new owner), and stops the writer
    /// that ran here, if any, once its current turn is durable: its task is returned, to wait
    /// for.
    pub fn route(&self, table: &TableId, route: TableHandle) -> Option<JoinHandle<()>> {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let slot = tables.get_mut(table)?;
        slot.route.send_replace(route);
        let old = slot.writer.take()?;
        old.stop.send_replace(true);
        Some(old.task)
    }

    /// True when the table's writer ran here and has stopped by itself (its log refused it).
    pub fn has_stopped_writer(&self, table: &TableId) -> bool {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables
            .get(table)
            .and_then(|slot| slot.writer.as_ref())
            .is_some_and(|w| w.task.is_finished())
    }

    /// The table's writer handle, when its writer runs here.
    pub fn local_handle(&self, table: &TableId) -> Option<TableHandle> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let slot = tables.get(table)?;
        slot.writer
            .as_ref()
            .filter(|w| !w.task.is_finished())
            .map(|_| slot.table.writer())
    }

    /// The table's counters.
    pub fn table_metrics(&self, table: &TableId) -> Arc<TableMetrics> {
        self.metrics.table(table)
    }

    /// The fence of the table's writer here, if it runs here and has not stopped.
    pub fn local_writer(&self, table: &TableId) -> Option<Fence> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables
            .get(table)
            .and_then(|slot| slot.writer.as_ref())
            .filter(|w| !w.task.is_finished())
            .map(|w| w.fence)
    }

    /// The tables whose writer runs here, with their fences.
    pub fn local_writers(&self) -> Vec<(TableId, Fence)> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables
            .iter()
            .filter_map(|(id, slot)| slot.writer.as_ref().map(|w| (id.clone(), w.fence)))
            .collect()
    }

    /// The configuration of a table served here.
    pub fn table_config(&self, table: &TableId) -> Option<TableConfig> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.get(table).map(|slot| slot.config.clone())
    }

    /// Stops every table's writer once its current turn is durable, and waits for them and the
    /// feeds, so the store they share is closed (and its `LOCK` released) when this returns.
    /// Messages sent afterwards get [`TableUnavailable`].
    pub async fn stop(&self) {
        self.stopping.send_replace(true);
        let writers: Vec<LocalWriter> = {
            let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
            tables
                .values_mut()
                .filter_map(|slot| slot.writer.take())
                .collect()
        };
        for writer in &writers {
            writer.stop.send_replace(true);
        }
        let feeds = std::mem::take(&mut *self.feeds.lock().unwrap_or_else(|e| e.into_inner()));
        for task in writers.into_iter().map(|w| w.task).chain(feeds) {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a table task panicked");
            }
        }
    }

    /// Closes every WebSocket connection, telling each player to reconnect and resume (the
    /// node is stopping; in a cluster, another node serves them).
    pub fn close_connections(&self) {
        self.closing.send_replace(true);
    }

    /// Turns true when the node closes its connections.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Names the frame of the dealer's video a `dealer.result` belongs to, when the dealer did
    /// not (`media::frame_clock`). Done by the node that takes the command in, which is where
    /// the dealer's video arrives; the table's writer may be another node's.
    pub fn name_result_frame(&self, table: &TableId, msg: &mut ClientMessage) {
        name_unnamed_result(msg, |captured_at| {
            self.media
                .get()
                .and_then(|m| m.frames.name_result(table, captured_at))
        });
    }

    /// Connects the media plane, once it has started with this plane as its hook.
    pub fn attach_media(&self, media: MediaHandle) {
        let _ = self.media.set(media);
    }

    /// Tells the media worker of WHEP `session` how `user`'s page shows its video
    /// (`video.view`). The session is on this node (a player's media and control connections
    /// go to the same node); when it is not, or is not `user`'s, nothing happens.
    /// `maps`: the WebSocket the view came on, which then gets the session's `video.map`s
    /// (`media::video_map`) while the session has no `control` channel of its own.
    pub fn set_view(
        &self,
        session: &SessionId,
        user: &UserId,
        view: crate::media::View,
        maps: Option<crate::media::video_map::MapSocket>,
    ) {
        if let Some(media) = self.media.get() {
            media.set_view(session, user, view, maps);
        }
    }

    /// The table, if this node serves it now.
    pub fn table(&self, id: &TableId) -> Option<TableRef> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|slot| slot.table.clone())
    }

    /// The tables this node serves now.
    pub fn table_ids(&self) -> Vec<TableId> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The shard of the data-channel map that holds `session`'s connection.
    pub(crate) fn channel_shard(
        &self,
        session: &SessionId,
    ) -> &Mutex<HashMap<SessionId, ChannelEntry>> {
        let worker = session
            .as_str()
            .get(..2)
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .unwrap_or(0);
        &self.channels[worker % CHANNEL_SHARDS]
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

/// Fills the `media_ts` and `media_clock` of a `dealer.result` that names no frame with
/// `name(captured_at)`; any other message is left alone.
pub(crate) fn name_unnamed_result(
    msg: &mut ClientMessage,
    name: impl FnOnce(Option<u64>) -> Option<NamedFrame>,
) {
    if let ClientMessage::DealerResult {
        media_ts,
        media_clock,
        captured_at,
        ..
    } = msg
    {
        (*media_ts, *media_clock) = frame_fields(*media_ts, *media_clock, || name(*captured_at));
    }
}

/// A result's `media_ts` and `media_clock`: as given when it names its frame, else as `name`
/// names it (nothing when it cannot).
pub(crate) fn frame_fields(
    media_ts: Option<u64>,
    media_clock: Option<u32>,
    name: impl FnOnce() -> Option<NamedFrame>,
) -> (Option<u64>, Option<u32>) {
    if media_ts.is_some() {
        return (media_ts, media_clock);
    }
    match name() {
        Some(f) => (Some(u64::from(f.media_ts)), Some(f.clock)),
        None => (None, None),
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
