//! A table's single writer: one tokio task that owns the [`Table`], its log and its members.
//!
//! Each turn: take every waiting message (up to a batch), feed them to the sans-IO table,
//! append everything it produced to the log in **one** `EventStore::append` (one fsync: group
//! commit), and only then send: replies, public events to every member, HTTP answers. So no
//! player ever sees an event or an acknowledgement that a crash could take back.
//!
//! A member that says `hello` is attached between turns, when nothing is waiting to be made
//! durable, so what it is replayed (or the snapshot it is shown) and the live events that follow
//! meet exactly: no gap, no duplicate.

use super::session::Bucket;
use super::{ConnId, Limits, Outlet, StartError, TableHandle, TableMsg, server_ms};
use crate::ids::{RoundId, SessionId, TableId, UserId};
use crate::media::MediaHandle;
use crate::metrics::{Metrics, TableMetrics};
use crate::protocol::{
    self, ErrorCode, Outcome, PROTOCOL_VERSION, PublicEvent, Reply, SequencedEvent, ServerMessage,
    ServerTime, SessionMessage, TableConfig,
};
use crate::store::{EventStore, Fence, StoreError};
use crate::table::{DealerError, Output, Record, Table};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// A dealer or operator action from HTTP.
#[derive(Debug, Clone)]
pub enum DealerAction {
    Open,
    Close,
    Result {
        outcome: Outcome,
        media_ts: Option<u64>,
    },
    Void {
        reason: Option<String>,
    },
}

/// What a dealer action did: the round it acted on, or why it was refused.
pub type DealerOutcome = Result<RoundId, DealerError>;

/// The table's actor has stopped (its log could not be written).
#[derive(Debug, thiserror::Error)]
#[error(
    "table {0} is stopped: its log could not be written; see the node's log, fix the disk, and restart the node"
)]
pub struct TableUnavailable(pub TableId);

/// Most messages taken in one turn (one append, one fsync).
const MAX_BATCH: usize = 1024;
/// A WebSocket member's queue; a member this far behind is dropped and resumes on reconnect.
pub const SOCKET_QUEUE: usize = 4096;

struct Member {
    user: UserId,
    outlet: Outlet,
}

struct UserLimits {
    bets: Bucket,
    chat: Bucket,
}

/// Work made by the table that waits for the log.
enum Delivery {
    Public(SequencedEvent),
    Private(UserId, Reply),
    Http(oneshot::Sender<DealerOutcome>, DealerOutcome),
    Snapshot(oneshot::Sender<protocol::Snapshot>),
}

struct TableActor {
    id: TableId,
    table: Table,
    store: Arc<dyn EventStore>,
    limits: Limits,
    metrics: Arc<TableMetrics>,
    media: Arc<OnceLock<MediaHandle>>,
    members: HashMap<ConnId, Member>,
    by_user: HashMap<UserId, Vec<ConnId>>,
    /// Data-channel members grouped by media worker, rebuilt when membership changes.
    channel_groups: Vec<Arc<[SessionId]>>,
    groups_dirty: bool,
    user_limits: HashMap<UserId, UserLimits>,
    /// The last public events, encoded, for players that resume.
    ring: VecDeque<(u64, Arc<str>)>,
    /// The last seq sent to members (every event up to it is durable).
    delivered_seq: u64,
    records: Vec<Record>,
    deliveries: Vec<Delivery>,
    deadline: Option<ServerTime>,
    /// The ownership lease every append carries.
    fence: Fence,
}

/// Rebuilds a table from its log, finishes a round the node died in, and starts its actor.
pub(super) async fn spawn(
    config: TableConfig,
    store: Arc<dyn EventStore>,
    limits: Limits,
    metrics: Arc<Metrics>,
    media: Arc<OnceLock<MediaHandle>>,
    stopping: watch::Receiver<bool>,
) -> Result<(TableHandle, JoinHandle<()>), StartError> {
    let id = config.id.clone();
    let span = info_span!("table", table_id = %id);
    let records = store.load(&id).await.map_err(|source| StartError::Load {
        table: id.clone(),
        source,
    })?;
    let logged = records.len();
    let window = limits.replay_window.max(1);
    let mut ring = VecDeque::with_capacity(window.min(65536));
    for record in records.iter().rev() {
        if ring.len() == window {
            break;
        }
        if let Record::Event(ev) = record {
            ring.push_front((ev.seq, Arc::from(protocol::encode(ev))));
        }
    }
    let table = Table::restore(config, records, ServerTime(server_ms())).map_err(|source| {
        StartError::Replay {
            table: id.clone(),
            source,
        }
    })?;
    let delivered_seq = ring.back().map(|(seq, _)| *seq).unwrap_or(0);
    let mut actor = TableActor {
        metrics: metrics.table(&id),
        id: id.clone(),
        table,
        store,
        limits,
        media,
        members: HashMap::new(),
        by_user: HashMap::new(),
        channel_groups: Vec::new(),
        groups_dirty: true,
        user_limits: HashMap::new(),
        ring,
        delivered_seq,
        records: Vec::new(),
        deliveries: Vec::new(),
        deadline: None,
        fence: Fence::LOCAL,
    };
    actor.drain();
    let finished = actor.records.len();
    actor
        .flush()
        .instrument(span.clone())
        .await
        .map_err(|source| StartError::Append {
            table: id.clone(),
            source,
        })?;
    span.in_scope(|| {
        info!(
            store = actor.store.kind(),
            records = logged,
            last_seq = actor.table.last_seq(),
            state = %actor.table.state(),
            finished_interrupted_round = finished > 0,
            "table ready"
        )
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(actor.run(rx, stopping).instrument(span));
    Ok((TableHandle { id, tx }, task))
}

impl TableActor {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<TableMsg>,
        mut stopping: watch::Receiver<bool>,
    ) {
        loop {
            if *stopping.borrow_and_update() {
                break;
            }
            let wake = self.deadline.map(|t| {
                let wait = t.0.saturating_sub(server_ms());
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            let turn = tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let mut turn = self.handle(msg).await;
                    let mut taken = 1;
                    while turn.is_ok() && taken < MAX_BATCH {
                        let Ok(msg) = rx.try_recv() else { break };
                        turn = self.handle(msg).await;
                        taken += 1;
                    }
                    turn
                }
                () = sleep_until(wake) => {
                    self.table.handle_timeout(ServerTime(server_ms()));
                    self.drain();
                    Ok(())
                }
                changed = stopping.changed() => {
                    // A dropped sender also means the node is going away.
                    if changed.is_err() {
                        break;
                    }
                    Ok(())
                }
            };
            if let Err(e) = turn.and(self.flush().await) {
                error!(error = %e, "table stopped: its log could not be written; nothing unlogged was acknowledged; fix the disk and restart the node to resume the table from its log");
                break;
            }
        }
        debug!("table actor ends");
    }

    async fn handle(&mut self, msg: TableMsg) -> Result<(), StoreError> {
        match msg {
            TableMsg::Attach {
                conn,
                user,
                outlet,
                resume_after_seq,
            } => {
                // What the member is shown must meet the live events exactly: settle first.
                self.flush().await?;
                self.attach(conn, user, outlet, resume_after_seq);
            }
            TableMsg::Detach { conn } => self.detach(conn),
            TableMsg::Command { conn, user, msg } => {
                if let Some(refusal) = self.rate_limit(&user, &msg) {
                    self.send_to(conn, Arc::from(protocol::encode(&refusal)));
                } else {
                    self.table
                        .handle_command(ServerTime(server_ms()), &user, msg);
                    self.drain();
                }
            }
            TableMsg::Dealer { action, reply } => {
                let now = ServerTime(server_ms());
                let outcome = match action {
                    DealerAction::Open => self.table.handle_open(now),
                    DealerAction::Close => self.table.handle_close(now),
                    DealerAction::Result { outcome, media_ts } => {
                        self.table.handle_result(now, outcome, media_ts)
                    }
                    DealerAction::Void { reason } => self.table.handle_void(now, reason.as_deref()),
                };
                self.drain();
                self.deliveries.push(Delivery::Http(reply, outcome));
            }
            TableMsg::Snapshot { reply } => self.deliveries.push(Delivery::Snapshot(reply)),
        }
        Ok(())
    }

    /// Moves the table's output into the log batch and the deliveries.
    fn drain(&mut self) {
        loop {
            let out = self.table.poll_output();
            if let Some(record) = out.record() {
                self.records.push(record);
            }
            match out {
                Output::Timeout(t) => {
                    self.deadline = t;
                    return;
                }
                Output::Public(ev) => self.deliveries.push(Delivery::Public(ev)),
                Output::Private { user, reply } => {
                    self.deliveries.push(Delivery::Private(user, reply))
                }
                Output::Record(_) => {}
            }
        }
    }

    /// Makes the batch durable, then delivers what waited for it.
    async fn flush(&mut self) -> Result<(), StoreError> {
        if !self.records.is_empty() {
            let records = std::mem::take(&mut self.records);
            let count = records.len();
            let started = Instant::now();
            self.store.append(&self.id, self.fence, records).await?;
            self.metrics.log_appends.fetch_add(1, Relaxed);
            self.metrics.log_records.fetch_add(count as u64, Relaxed);
            let took = started.elapsed();
            if took > Duration::from_millis(100) {
                warn!(
                    records = count,
                    took_ms = took.as_millis() as u64,
                    "log append was slow; bets wait for it: check the disk under [data] dir"
                );
            }
        }
        for delivery in std::mem::take(&mut self.deliveries) {
            match delivery {
                Delivery::Public(ev) => self.publish(ev),
                Delivery::Private(user, reply) => {
                    let text: Arc<str> = Arc::from(protocol::encode(&reply));
                    for conn in self.by_user.get(&user).cloned().unwrap_or_default() {
                        self.send_to(conn, text.clone());
                    }
                }
                Delivery::Http(reply, outcome) => {
                    let _ = reply.send(outcome);
                }
                Delivery::Snapshot(reply) => {
                    let _ = reply.send(self.table.snapshot());
                }
            }
        }
        Ok(())
    }

    /// Sends one durable public event to every member.
    fn publish(&mut self, ev: SequencedEvent) {
        log_event(&ev);
        let text: Arc<str> = Arc::from(protocol::encode(&ev));
        self.delivered_seq = ev.seq;
        self.ring.push_back((ev.seq, text.clone()));
        while self.ring.len() > self.limits.replay_window.max(1) {
            self.ring.pop_front();
        }
        self.metrics.control_events.fetch_add(1, Relaxed);
        if let Some(media) = self.media.clone().get() {
            if self.groups_dirty {
                self.rebuild_groups(media);
            }
            media.control_fanout(&self.channel_groups, &text);
        }
        let mut gone = Vec::new();
        for (conn, member) in &self.members {
            if let Outlet::Socket(tx) = &member.outlet
                && tx.try_send(text.clone()).is_err()
            {
                gone.push(*conn);
            }
        }
        for conn in gone {
            warn!(%conn, "WebSocket member dropped: its queue is full or closed; it resumes from its last seq when it reconnects");
            self.detach(conn);
        }
    }

    fn rebuild_groups(&mut self, media: &MediaHandle) {
        let mut groups: Vec<Vec<SessionId>> = vec![Vec::new(); media.worker_count()];
        for member in self.members.values() {
            if let Outlet::Channel(session) = &member.outlet
                && let Some(w) = media.worker_index(session)
            {
                groups[w].push(session.clone());
            }
        }
        self.channel_groups = groups.into_iter().map(Arc::from).collect();
        self.groups_dirty = false;
    }

    fn send_to(&mut self, conn: ConnId, text: Arc<str>) {
        let Some(member) = self.members.get(&conn) else {
            return;
        };
        match &member.outlet {
            Outlet::Channel(session) => {
                if let Some(media) = self.media.get() {
                    media.control_send(session, text);
                }
            }
            Outlet::Socket(tx) => {
                if tx.try_send(text).is_err() {
                    warn!(%conn, "WebSocket member dropped: its queue is full or closed; it resumes from its last seq when it reconnects");
                    self.detach(conn);
                }
            }
        }
    }

    fn attach(
        &mut self,
        conn: ConnId,
        user: UserId,
        outlet: Option<Outlet>,
        resume_after_seq: Option<u64>,
    ) {
        match outlet {
            Some(outlet) => {
                if let Some(old) = self.members.insert(
                    conn,
                    Member {
                        user: user.clone(),
                        outlet,
                    },
                ) {
                    self.forget_user_conn(&old.user, conn);
                }
                self.by_user.entry(user.clone()).or_default().push(conn);
                self.groups_dirty = true;
                self.metrics
                    .control_members
                    .store(self.members.len() as u64, Relaxed);
            }
            None if !self.members.contains_key(&conn) => return,
            None => {}
        }
        let last = self.delivered_seq;
        let oldest = self.ring.front().map(|(seq, _)| *seq).unwrap_or(last + 1);
        match resume_after_seq {
            Some(after) if after <= last && after + 1 >= oldest => {
                let resumed = ServerMessage::Session(SessionMessage::Resumed {
                    after_seq: after,
                    last_seq: last,
                });
                self.send_to(conn, Arc::from(protocol::encode(&resumed)));
                let missed: Vec<Arc<str>> = self
                    .ring
                    .iter()
                    .filter(|(seq, _)| *seq > after)
                    .map(|(_, text)| text.clone())
                    .collect();
                debug!(%conn, %user, after, last, replayed = missed.len(), "member resumed");
                for text in missed {
                    self.send_to(conn, text);
                }
            }
            resume => {
                if let Some(after) = resume.filter(|&a| a > last) {
                    let refusal = Reply::Error {
                        id: None,
                        code: ErrorCode::InvalidMessage,
                        message: format!(
                            "resume_after_seq {after} is ahead of this table's last seq {last}; here is the table as it is now"
                        ),
                    };
                    self.send_to(conn, Arc::from(protocol::encode(&refusal)));
                }
                let welcome = ServerMessage::Session(SessionMessage::Welcome {
                    v: PROTOCOL_VERSION,
                    snapshot: Box::new(self.table.snapshot()),
                    seq: last,
                });
                debug!(%conn, %user, ?resume, last, "member welcomed with a snapshot");
                self.send_to(conn, Arc::from(protocol::encode(&welcome)));
            }
        }
        for reply in self.table.replies_for(&user) {
            self.send_to(conn, Arc::from(protocol::encode(&reply)));
        }
    }

    fn detach(&mut self, conn: ConnId) {
        if let Some(member) = self.members.remove(&conn) {
            self.forget_user_conn(&member.user, conn);
            self.groups_dirty = true;
            self.metrics
                .control_members
                .store(self.members.len() as u64, Relaxed);
        }
    }

    fn forget_user_conn(&mut self, user: &UserId, conn: ConnId) {
        if let Some(conns) = self.by_user.get_mut(user) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                // The user's rate limits stay: a reconnect must not refill them. They are
                // forgotten once full again (see `prune_user_limits`).
                self.by_user.remove(user);
            }
        }
    }

    /// Forgets the rate limits of users with no connection whose buckets have refilled: they
    /// remember nothing a fresh bucket would not.
    fn prune_user_limits(&mut self, now: Instant) {
        let by_user = &self.by_user;
        self.user_limits.retain(|user, l| {
            by_user.contains_key(user) || !(l.bets.is_full(now) && l.chat.is_full(now))
        });
    }

    /// Per-player limits on bets and chat; the refusal to send, if over.
    fn rate_limit(&mut self, user: &UserId, msg: &protocol::ClientMessage) -> Option<Reply> {
        use protocol::ClientMessage as M;
        let now = Instant::now();
        if self.user_limits.len() >= USER_LIMITS_PRUNE_AT && !self.user_limits.contains_key(user) {
            self.prune_user_limits(now);
        }
        let limits = &self.limits;
        let entry = self
            .user_limits
            .entry(user.clone())
            .or_insert_with(|| UserLimits {
                bets: Bucket::new(limits.bets_burst, limits.bets_per_sec, now),
                chat: Bucket::new(limits.chat_burst, limits.chat_per_sec, now),
            });
        let (bucket, what) = match msg {
            M::BetPlace { .. } | M::BetCancel { .. } => (&mut entry.bets, "bets"),
            M::Chat { .. } => (&mut entry.chat, "chat messages"),
            _ => return None,
        };
        if bucket.take(now) {
            return None;
        }
        self.metrics.control_rate_limited.fetch_add(1, Relaxed);
        Some(Reply::Error {
            id: msg.id().cloned(),
            code: ErrorCode::RateLimited,
            message: format!("too many {what}; slow down and send this again"),
        })
    }
}

/// Above this many remembered users, those whose limits have refilled are forgotten.
const USER_LIMITS_PRUNE_AT: usize = 4096;

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn log_event(ev: &SequencedEvent) {
    match &ev.event {
        PublicEvent::RoundOpened {
            round,
            closes_at_server_ms,
        } => info!(seq = ev.seq, %round, closes_at = closes_at_server_ms.0, "round opened"),
        PublicEvent::BettingClosed { round, early } => {
            info!(seq = ev.seq, %round, early, "betting closed")
        }
        PublicEvent::RoundResult { round, outcome, .. } => {
            info!(seq = ev.seq, %round, ?outcome, "round result")
        }
        PublicEvent::RoundSettled { round } => info!(seq = ev.seq, %round, "round settled"),
        PublicEvent::RoundVoided { round, reason } => {
            info!(seq = ev.seq, %round, %reason, "round voided")
        }
        PublicEvent::Totals(_) | PublicEvent::Chat { .. } => {}
    }
}
