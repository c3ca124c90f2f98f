//! A table's feed on this node: the players connected here, and what they are sent.
//!
//! The table's writer (`writer.rs`, on the owner) sends each feed one [`FeedMsg`] per event,
//! whatever the number of players the feed serves; the feed then sends it to its members: one
//! message per media worker for data channels, one queue entry per WebSocket. A feed keeps
//! the last public events (the replay ring), so a player that resumes is answered here.
//!
//! Ordering is the whole contract: the writer sends a feed its public events, private replies
//! and welcomes on one ordered queue, and only once they are durable. A member that needs a
//! snapshot waits, receiving nothing, until its `Welcome` arrives; the welcome shows the table
//! as of its `seq`, and every public event after it follows on the same queue. So what a
//! player is shown and the live events meet exactly: no gap, no duplicate.

use super::writer::{Origin, WriterMsg};
use super::{ConnId, Outlet, TableHandle};
use crate::ids::{SessionId, TableId, UserId};
use crate::media::MediaHandle;
use crate::metrics::TableMetrics;
use crate::protocol::{self, ServerMessage, SessionMessage};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// Which feed of a table a message is for. The owner's own feed is [`FeedId::LOCAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FeedId(pub u64);

impl FeedId {
    pub const LOCAL: FeedId = FeedId(0);
}

/// What the writer sends a feed, in order, once durable. It crosses between nodes as JSON
/// (`link.rs`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FeedMsg {
    /// A public event, for every member.
    Public { seq: u64, text: Arc<str> },
    /// A private reply, for every connection of `user` here.
    Private { user: UserId, text: Arc<str> },
    /// A message for one connection (a refusal before the table saw the command).
    ToConn { conn: ConnId, text: Arc<str> },
    /// The table as of `seq`, for a member that joins without a usable resume point, then the
    /// user's private replies of the round.
    Welcome {
        conn: ConnId,
        seq: u64,
        text: Arc<str>,
        replies: Vec<Arc<str>>,
    },
    /// The user's private replies of the round, for a member that resumed from the ring.
    Replies {
        conn: ConnId,
        replies: Vec<Arc<str>>,
    },
    /// The writer could not replay what this feed missed: its ring is emptied, every member is
    /// welcomed afresh, and the writer's ring follows.
    Reset,
}

/// What a connection on this node tells its table's feed.
#[derive(Debug)]
pub enum MemberMsg {
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
}

/// A WebSocket member's queue; a member this far behind is dropped and resumes on reconnect.
pub const SOCKET_QUEUE: usize = 4096;
/// The writer's queue to one feed: events for every member pass here once.
pub(super) const FEED_QUEUE: usize = 65_536;
/// Attaches and detaches waiting for the feed.
pub(super) const MEMBER_QUEUE: usize = 16_384;

struct Member {
    user: UserId,
    outlet: Outlet,
    /// False until its `Welcome` (or `Replies`) arrives: it is sent nothing before.
    ready: bool,
}

pub(super) struct Feed {
    pub table: TableId,
    pub id: FeedId,
    /// Where the table's writer is now (see `TableRef`).
    route: watch::Receiver<TableHandle>,
    pub media: Arc<OnceLock<MediaHandle>>,
    pub metrics: Arc<TableMetrics>,
    pub replay_window: usize,
    members: HashMap<ConnId, Member>,
    by_user: HashMap<UserId, Vec<ConnId>>,
    /// Ready data-channel members grouped by media worker, rebuilt when membership changes.
    channel_groups: Vec<Arc<[SessionId]>>,
    groups_dirty: bool,
    /// The last public events, encoded, for players that resume.
    ring: VecDeque<(u64, Arc<str>)>,
    /// The last seq sent to members.
    delivered_seq: u64,
}

impl Feed {
    pub fn new(
        table: TableId,
        id: FeedId,
        route: watch::Receiver<TableHandle>,
        media: Arc<OnceLock<MediaHandle>>,
        metrics: Arc<TableMetrics>,
        replay_window: usize,
    ) -> Self {
        Self {
            table,
            id,
            route,
            media,
            metrics,
            replay_window: replay_window.max(1),
            members: HashMap::new(),
            by_user: HashMap::new(),
            channel_groups: Vec::new(),
            groups_dirty: true,
            ring: VecDeque::new(),
            delivered_seq: 0,
        }
    }

    /// Subscribes to the table's writer, then delivers until the node stops. When the writer
    /// drops this feed (it fell behind, stepped down, or the table moved), the feed subscribes
    /// again, wherever the writer now is, from the last seq it delivered.
    pub async fn run(
        mut self,
        mut from_members: mpsc::Receiver<MemberMsg>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let Some(mut from_writer) = self.subscribe(&mut stopping).await else {
            return;
        };
        loop {
            tokio::select! {
                biased;
                msg = from_writer.recv() => match msg {
                    Some(msg) => self.on_writer(msg),
                    None => match self.subscribe(&mut stopping).await {
                        Some(rx) => {
                            from_writer = rx;
                            self.rejoin_waiting();
                        }
                        None => break,
                    },
                },
                msg = from_members.recv() => match msg {
                    Some(msg) => self.on_member(msg),
                    None => break,
                },
                changed = stopping.changed() => {
                    if changed.is_err() || *stopping.borrow() {
                        break;
                    }
                }
            }
        }
        debug!(feed = self.id.0, "table feed ends");
    }

    /// Subscribes to the writer the route leads to now; while it leads nowhere that takes
    /// the subscription (a writer stopping, a table moving), waits for the route to change.
    /// `None` once the node stops.
    async fn subscribe(
        &mut self,
        stopping: &mut watch::Receiver<bool>,
    ) -> Option<mpsc::Receiver<FeedMsg>> {
        loop {
            if *stopping.borrow() {
                return None;
            }
            let writer = self.route.borrow_and_update().clone();
            let (tx, rx) = mpsc::channel(FEED_QUEUE);
            if writer.post(WriterMsg::Subscribe {
                feed: self.id,
                tx,
                after_seq: self.delivered_seq,
            }) {
                debug!(after_seq = self.delivered_seq, "table feed subscribed");
                return Some(rx);
            }
            tokio::select! {
                changed = self.route.changed() => if changed.is_err() { return None },
                changed = stopping.changed() => if changed.is_err() { return None },
            }
        }
    }

    fn on_writer(&mut self, msg: FeedMsg) {
        match msg {
            FeedMsg::Public { seq, text } => self.publish(seq, text),
            FeedMsg::Private { user, text } => {
                // A member still waiting for its welcome gets the user's replies with it.
                let conns = self.by_user.get(&user).cloned().unwrap_or_default();
                for conn in conns {
                    if self.members.get(&conn).is_some_and(|m| m.ready) {
                        self.send_to(conn, text.clone());
                    }
                }
            }
            FeedMsg::ToConn { conn, text } => self.send_to(conn, text),
            FeedMsg::Welcome {
                conn,
                seq,
                text,
                replies,
            } => {
                if let Some(member) = self.members.get_mut(&conn) {
                    member.ready = true;
                    self.groups_dirty = true;
                    debug!(%conn, seq, "member welcomed with a snapshot");
                    self.send_to(conn, text);
                    for reply in replies {
                        self.send_to(conn, reply);
                    }
                }
            }
            FeedMsg::Replies { conn, replies } => {
                for reply in replies {
                    self.send_to(conn, reply);
                }
            }
            FeedMsg::Reset => {
                warn!(
                    feed = self.id.0,
                    "this feed missed events the table could not replay; every member is sent the table afresh"
                );
                self.ring.clear();
                self.delivered_seq = 0;
                let joins: Vec<(ConnId, UserId)> = self
                    .members
                    .iter_mut()
                    .map(|(conn, m)| {
                        m.ready = false;
                        (*conn, m.user.clone())
                    })
                    .collect();
                self.groups_dirty = true;
                for (conn, user) in joins {
                    self.join(conn, user, true, None);
                }
            }
        }
    }

    fn on_member(&mut self, msg: MemberMsg) {
        match msg {
            MemberMsg::Attach {
                conn,
                user,
                outlet,
                resume_after_seq,
            } => self.attach(conn, user, outlet, resume_after_seq),
            MemberMsg::Detach { conn } => self.detach(conn),
        }
    }

    /// After subscribing to another writer (the table moved, here or away): the members still
    /// waiting for their welcome asked the writer that dropped this feed, which will never
    /// answer; ask the new one.
    fn rejoin_waiting(&mut self) {
        let waiting: Vec<(ConnId, UserId)> = self
            .members
            .iter()
            .filter(|(_, m)| !m.ready)
            .map(|(conn, m)| (*conn, m.user.clone()))
            .collect();
        for (conn, user) in waiting {
            debug!(%conn, "asking the table's new writer for a waiting member's welcome");
            self.join(conn, user, true, None);
        }
    }

    /// Asks the writer for what a member needs besides the ring: a welcome, or the replies.
    fn join(&mut self, conn: ConnId, user: UserId, welcome: bool, ahead_of: Option<u64>) {
        let origin = Origin {
            feed: self.id,
            conn,
        };
        let writer = self.route.borrow().clone();
        if !writer.post(WriterMsg::Join {
            origin,
            user,
            welcome,
            ahead_of,
        }) {
            let text: Arc<str> = Arc::from(super::channel::unavailable(&self.table));
            self.send_to(conn, text);
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
                        ready: false,
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
                if let Some(member) = self.members.get_mut(&conn) {
                    member.ready = true;
                    self.groups_dirty = true;
                }
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
                self.join(conn, user, false, None);
            }
            resume => {
                if let Some(member) = self.members.get_mut(&conn)
                    && member.ready
                {
                    // A repeated `hello`: stop sending until the new welcome.
                    member.ready = false;
                    self.groups_dirty = true;
                }
                let ahead_of = resume.filter(|&a| a > last);
                self.join(conn, user, true, ahead_of);
            }
        }
    }

    /// Sends one durable public event to every ready member.
    fn publish(&mut self, seq: u64, text: Arc<str>) {
        if seq <= self.delivered_seq {
            // Already here (a replay after a resubscription overlaps what was delivered).
            return;
        }
        self.delivered_seq = seq;
        self.ring.push_back((seq, text.clone()));
        while self.ring.len() > self.replay_window {
            self.ring.pop_front();
        }
        if let Some(media) = self.media.clone().get() {
            if self.groups_dirty {
                self.rebuild_groups(media);
            }
            media.control_fanout(&self.channel_groups, &text);
        }
        let mut gone = Vec::new();
        for (conn, member) in &self.members {
            if member.ready
                && let Outlet::Socket(tx) = &member.outlet
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
        for member in self.members.values().filter(|m| m.ready) {
            if let Outlet::Channel(session) = &member.outlet
                && let Some(w) = media.worker_index(session)
                && let Some(group) = groups.get_mut(w)
            {
                group.push(session.clone());
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
                self.by_user.remove(user);
            }
        }
    }
}
