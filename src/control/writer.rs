//! A table's single writer: one tokio task, on the table's owner, that owns the [`Table`] and
//! its log.
//!
//! Each turn: take every waiting message (up to a batch), feed them to the sans-IO table,
//! append everything it produced to the log in **one** `EventStore::append` (one fsync: group
//! commit), and only then send: public events and private replies to every feed (one message
//! per feed, whatever its number of players; see `feed.rs`), HTTP answers. So no player ever
//! sees an event or an acknowledgement that a crash could take back.
//!
//! A welcome is made between turns, when nothing is waiting to be made durable, and sent on the
//! feed's ordered queue, so the snapshot a player is shown and the live events that follow meet
//! exactly: no gap, no duplicate.

use super::feed::{FeedId, FeedMsg};
use super::session::Bucket;
use super::{ConnId, Limits, StartError, TableHandle, server_ms};
use crate::cluster::LeaseClock;
use crate::ids::{RoundId, TableId, UserId};
use crate::media::frame_clock::NamedFrame;
use crate::metrics::TableMetrics;
use crate::protocol::{
    self, ClientMessage, ErrorCode, Outcome, PROTOCOL_VERSION, PublicEvent, Reply, SequencedEvent,
    ServerMessage, ServerTime, SessionMessage, TableConfig,
};
use crate::store::{EventStore, Fence, StoreError};
use crate::table::{DealerError, Output, Record, Table};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// A dealer or operator action from HTTP.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum DealerAction {
    Open,
    Close,
    Result {
        outcome: Outcome,
        media_ts: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_clock: Option<u32>,
        /// Wall-clock ms the result was seen at, for the frame captured then (`frame_clock`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        captured_at: Option<u64>,
    },
    Void {
        reason: Option<String>,
    },
}

/// What a dealer action did: the round it acted on, or why it was refused.
pub type DealerOutcome = Result<RoundId, DealerError>;

/// The table cannot take the request now.
#[derive(Debug, thiserror::Error)]
pub enum TableUnavailable {
    /// Its writer here has stopped (its log could not be written).
    #[error(
        "table {0} is stopped: its log could not be written; see the node's log, fix the disk, and restart the node"
    )]
    Stopped(TableId),
    /// Its owner is another node, out of reach right now (the table is moving after a failure
    /// or a drain), or slow to answer.
    #[error(
        "table {0} is moving to another node or its owner is slow to answer; try again in a second"
    )]
    Moving(TableId),
}

/// How long acknowledgements wait for a lapsed lease to be confirmed before the writer steps
/// down.
const LEASE_HOLD: Duration = Duration::from_secs(5);
/// Most messages taken in one turn (one append, one fsync).
const MAX_BATCH: usize = 1024;
/// The writer's inbox. A full inbox refuses the message (the sender says so to its client).
pub(super) const WRITER_QUEUE: usize = 65_536;

/// Where a command came from: a connection of one of the table's feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub feed: FeedId,
    pub conn: ConnId,
}

/// What a table's writer takes.
#[derive(Debug)]
pub enum WriterMsg {
    /// A table command from a player, a dealer console or an operator.
    Command {
        origin: Origin,
        user: UserId,
        msg: ClientMessage,
    },
    /// A member joined a feed: it needs the table as it is now (`welcome`), or only the
    /// user's private replies (it resumed from the feed's ring). `ahead_of` is a resume point
    /// the feed had not reached.
    Join {
        origin: Origin,
        user: UserId,
        welcome: bool,
        ahead_of: Option<u64>,
    },
    /// A dealer or operator action over HTTP.
    Dealer {
        action: DealerAction,
        reply: oneshot::Sender<DealerOutcome>,
    },
    Snapshot {
        reply: oneshot::Sender<protocol::Snapshot>,
    },
    /// A feed (re)connects and wants every public event after `after_seq`.
    Subscribe {
        feed: FeedId,
        tx: mpsc::Sender<FeedMsg>,
        after_seq: u64,
    },
}

struct UserLimits {
    bets: Bucket,
    chat: Bucket,
}

/// Work made by the table that waits for the log.
enum Delivery {
    Public(SequencedEvent),
    Private(UserId, Reply),
    ToConn(Origin, Reply),
    Http(oneshot::Sender<DealerOutcome>, DealerOutcome),
    Snapshot(oneshot::Sender<protocol::Snapshot>),
}

struct TableWriter {
    /// The node's media plane, once started: the frames of the dealer's video it receives.
    media: Arc<std::sync::OnceLock<crate::media::MediaHandle>>,
    id: TableId,
    table: Table,
    store: Arc<dyn EventStore>,
    limits: Limits,
    metrics: Arc<TableMetrics>,
    /// The table's feeds: this node's, and one per other node with players.
    feeds: HashMap<FeedId, mpsc::Sender<FeedMsg>>,
    user_limits: HashMap<UserId, UserLimits>,
    /// The last public events, encoded, for feeds that resubscribe.
    ring: VecDeque<(u64, Arc<str>)>,
    /// The last seq sent to feeds (every event up to it is durable).
    delivered_seq: u64,
    records: Vec<Record>,
    deliveries: Vec<Delivery>,
    deadline: Option<ServerTime>,
    /// The ownership lease every append carries.
    fence: Fence,
    /// Nothing is acknowledged past it (see [`LeaseClock`]).
    lease: Arc<LeaseClock>,
}

/// A started writer: its handle and its task.
pub(super) struct Started {
    pub handle: TableHandle,
    pub task: JoinHandle<()>,
}

/// How a writer comes to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// The node (re)starts: a round it died in is finished (voided, or settled when resulted),
    /// since its players have gone.
    Restart,
    /// A node takes a table over from another (failover, drain): the round goes on where the
    /// log left it, closing at the same server-time deadline (at once if it has passed).
    Takeover,
}

/// Rebuilds a table from its log, finishes or resumes the round in progress (see
/// [`StartMode`]), and starts its writer. The writer's first feed is `local_feed`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn spawn(
    config: TableConfig,
    store: Arc<dyn EventStore>,
    (fence, lease): (Fence, Arc<LeaseClock>),
    mode: StartMode,
    limits: Limits,
    metrics: Arc<TableMetrics>,
    media: Arc<std::sync::OnceLock<crate::media::MediaHandle>>,
    stopping: watch::Receiver<bool>,
) -> Result<Started, StartError> {
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
    let now = ServerTime(server_ms());
    let table = match mode {
        StartMode::Restart => Table::restore(config, records, now),
        StartMode::Takeover => Table::replay(config, records),
    }
    .map_err(|source| StartError::Replay {
        table: id.clone(),
        source,
    })?;
    let delivered_seq = ring.back().map(|(seq, _)| *seq).unwrap_or(0);
    let mut writer = TableWriter {
        media,
        metrics,
        id: id.clone(),
        table,
        store,
        limits,
        feeds: HashMap::new(),
        user_limits: HashMap::new(),
        ring,
        delivered_seq,
        records: Vec::new(),
        deliveries: Vec::new(),
        deadline: None,
        fence,
        lease,
    };
    if mode == StartMode::Takeover {
        writer.table.handle_timeout(now);
    }
    writer.drain();
    let finished = writer.records.len();
    writer
        .flush()
        .instrument(span.clone())
        .await
        .map_err(|source| StartError::Append {
            table: id.clone(),
            source,
        })?;
    span.in_scope(|| {
        info!(
            store = writer.store.kind(),
            records = logged,
            last_seq = writer.table.last_seq(),
            state = %writer.table.state(),
            ?mode,
            %fence,
            finished_interrupted_round = finished > 0,
            "table ready"
        )
    });
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let handle = TableHandle::new(id, tx, writer.metrics.clone(), false);
    let task = tokio::spawn(writer.run(rx, stopping).instrument(span));
    Ok(Started { handle, task })
}

impl TableWriter {
    /// A result that reached the writer without its frame named: the node that took it in has
    /// no dealer video of the table. The dealer's WHIP session is on the table's owner, so the
    /// writer names it (`media::frame_clock`), a link's latency later.
    fn name_frame(&self, captured_at: Option<u64>) -> Option<NamedFrame> {
        self.media.get()?.frames.name_result(&self.id, captured_at)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<WriterMsg>, mut stopping: watch::Receiver<bool>) {
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
                match e {
                    StoreError::Fenced { .. } | StoreError::LeaseLapsed { .. } => {
                        warn!(error = %e, "table writer steps down: nothing unlogged was acknowledged")
                    }
                    e => {
                        error!(error = %e, "table stopped: its log could not be written; nothing unlogged was acknowledged; fix the disk and restart the node to resume the table from its log")
                    }
                }
                break;
            }
        }
        debug!("table writer ends");
    }

    async fn handle(&mut self, msg: WriterMsg) -> Result<(), StoreError> {
        match msg {
            WriterMsg::Join {
                origin,
                user,
                welcome,
                ahead_of,
            } => {
                // What the member is shown must meet the live events exactly: settle first.
                self.flush().await?;
                self.join(origin, &user, welcome, ahead_of);
            }
            WriterMsg::Command { origin, user, msg } => {
                if let Some(refusal) = self.rate_limit(&user, &msg) {
                    self.deliveries.push(Delivery::ToConn(origin, refusal));
                } else {
                    let mut msg = msg;
                    super::name_unnamed_result(&mut msg, |at| self.name_frame(at));
                    self.table
                        .handle_command(ServerTime(server_ms()), &user, msg);
                    self.drain();
                }
            }
            WriterMsg::Dealer { action, reply } => {
                let now = ServerTime(server_ms());
                let outcome = match action {
                    DealerAction::Open => self.table.handle_open(now),
                    DealerAction::Close => self.table.handle_close(now),
                    DealerAction::Result {
                        outcome,
                        media_ts,
                        media_clock,
                        captured_at,
                    } => {
                        let (media_ts, media_clock) =
                            super::frame_fields(media_ts, media_clock, || {
                                self.name_frame(captured_at)
                            });
                        self.table
                            .handle_result(now, outcome, media_ts, media_clock)
                    }
                    DealerAction::Void { reason } => self.table.handle_void(now, reason.as_deref()),
                };
                self.drain();
                self.deliveries.push(Delivery::Http(reply, outcome));
            }
            WriterMsg::Snapshot { reply } => self.deliveries.push(Delivery::Snapshot(reply)),
            WriterMsg::Subscribe {
                feed,
                tx,
                after_seq,
            } => {
                self.flush().await?;
                self.subscribe(feed, tx, after_seq);
            }
        }
        Ok(())
    }

    /// Sends a member's welcome (or its replies) to its feed, between turns.
    fn join(&mut self, origin: Origin, user: &UserId, welcome: bool, ahead_of: Option<u64>) {
        let last = self.delivered_seq;
        let mut replies: Vec<Arc<str>> = Vec::new();
        if welcome && let Some(after) = ahead_of.filter(|&a| a > last) {
            let refusal = Reply::Error {
                id: None,
                code: ErrorCode::InvalidMessage,
                message: format!(
                    "resume_after_seq {after} is ahead of this table's last seq {last}; here is the table as it is now"
                ),
            };
            self.send_feed(
                origin.feed,
                FeedMsg::ToConn {
                    conn: origin.conn,
                    text: Arc::from(protocol::encode(&refusal)),
                },
            );
        }
        for reply in self.table.replies_for(user) {
            replies.push(Arc::from(protocol::encode(&reply)));
        }
        let msg = if welcome {
            let welcome = ServerMessage::Session(SessionMessage::Welcome {
                v: PROTOCOL_VERSION,
                snapshot: Box::new(self.table.snapshot()),
                seq: last,
            });
            FeedMsg::Welcome {
                conn: origin.conn,
                seq: last,
                text: Arc::from(protocol::encode(&welcome)),
                replies,
            }
        } else {
            FeedMsg::Replies {
                conn: origin.conn,
                replies,
            }
        };
        self.send_feed(origin.feed, msg);
    }

    /// A feed (re)connects: it is sent every public event after `after_seq` from the ring; when
    /// the ring no longer holds them all, it is told to start afresh, then sent the whole ring.
    fn subscribe(&mut self, feed: FeedId, tx: mpsc::Sender<FeedMsg>, after_seq: u64) {
        let oldest = self
            .ring
            .front()
            .map(|(seq, _)| *seq)
            .unwrap_or(self.delivered_seq + 1);
        let mut backlog: Vec<FeedMsg> = Vec::new();
        if after_seq + 1 >= oldest && after_seq <= self.delivered_seq {
            backlog.extend(self.ring.iter().filter(|(seq, _)| *seq > after_seq).map(
                |(seq, text)| FeedMsg::Public {
                    seq: *seq,
                    text: text.clone(),
                },
            ));
        } else {
            backlog.push(FeedMsg::Reset);
        }
        debug!(
            feed = feed.0,
            after_seq,
            replayed = backlog.len(),
            "feed subscribed"
        );
        self.feeds.insert(feed, tx);
        for msg in backlog {
            self.send_feed(feed, msg);
        }
    }

    /// Sends to one feed. A feed whose queue is full is dropped (counted and logged); it
    /// subscribes again from its last seq.
    fn send_feed(&mut self, feed: FeedId, msg: FeedMsg) {
        let Some(tx) = self.feeds.get(&feed) else {
            return;
        };
        if tx.try_send(msg).is_err() {
            warn!(
                feed = feed.0,
                "a feed fell behind or closed: dropped; it resubscribes from its last seq"
            );
            self.metrics.control_feed_drops.fetch_add(1, Relaxed);
            self.feeds.remove(&feed);
        }
    }

    fn send_all(&mut self, msg: FeedMsg) {
        let mut gone = Vec::new();
        for (id, tx) in &self.feeds {
            if tx.try_send(msg.clone()).is_err() {
                gone.push(*id);
            }
        }
        for feed in gone {
            warn!(
                feed = feed.0,
                "a feed fell behind or closed: dropped; it resubscribes from its last seq"
            );
            self.metrics.control_feed_drops.fetch_add(1, Relaxed);
            self.feeds.remove(&feed);
        }
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
            self.hold_for_lease().await?;
        }
        for delivery in std::mem::take(&mut self.deliveries) {
            match delivery {
                Delivery::Public(ev) => self.publish(ev),
                Delivery::Private(user, reply) => {
                    let text: Arc<str> = Arc::from(protocol::encode(&reply));
                    self.send_all(FeedMsg::Private { user, text });
                }
                Delivery::ToConn(origin, reply) => {
                    let text: Arc<str> = Arc::from(protocol::encode(&reply));
                    self.send_feed(
                        origin.feed,
                        FeedMsg::ToConn {
                            conn: origin.conn,
                            text,
                        },
                    );
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

    /// A batch that reached the shared log passed its fence check there: it may be
    /// acknowledged. A batch kept only on this node's disk (the shared log is away) may be
    /// acknowledged only while nobody can claim the table: while every other node is cut off
    /// from Redis too (the placement task confirms it on the [`LeaseClock`]), or once the
    /// spool has been copied to the shared log. Until then nothing is acknowledged; after
    /// [`LEASE_HOLD`] the writer gives the table up.
    async fn hold_for_lease(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        while self.store.spooling(&self.id).await && !self.lease.is_valid(Instant::now()) {
            if started.elapsed() > LEASE_HOLD {
                return Err(StoreError::LeaseLapsed {
                    table: self.id.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let held = started.elapsed();
        if held > Duration::from_millis(100) {
            info!(
                held_ms = held.as_millis() as u64,
                "acknowledgements waited until no other node could own the table"
            );
        }
        Ok(())
    }

    /// Sends one durable public event to every feed, once.
    fn publish(&mut self, ev: SequencedEvent) {
        log_event(&ev);
        let text: Arc<str> = Arc::from(protocol::encode(&ev));
        self.delivered_seq = ev.seq;
        self.ring.push_back((ev.seq, text.clone()));
        while self.ring.len() > self.limits.replay_window.max(1) {
            self.ring.pop_front();
        }
        self.metrics.control_events.fetch_add(1, Relaxed);
        self.send_all(FeedMsg::Public { seq: ev.seq, text });
    }

    /// Forgets the rate limits of users whose buckets have refilled: they remember nothing a
    /// fresh bucket would not (so a reconnect never refills a bucket early).
    fn prune_user_limits(&mut self, now: Instant) {
        self.user_limits
            .retain(|_, l| !(l.bets.is_full(now) && l.chat.is_full(now)));
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
