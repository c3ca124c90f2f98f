//! A media worker: one thread, one UDP socket, every session placed on it.
//!
//! Each turn of the loop: receive a batch of datagrams and demultiplex them (STUN by ICE ufrag,
//! the rest by source address) into their sessions' sans-IO peer connections; act on what the
//! connections give back (forward RTP through the routers, answer NACKs, relay keyframe requests,
//! control messages); fire due timers from a deadline heap; send the batch. Then sleep until the
//! next datagram, message or deadline. Workers talk to each other and to the HTTP layer only by
//! [`WorkerMsg`].
//!
//! This file is the loop and its messages; the rest, in the order a packet meets it:
//! - `drive`: a datagram to its session, a session's connection driven, the deadline heap;
//! - `fanout`: publisher RTP → router → subscribers (and to the other workers);
//! - `feedback`: subscribers' NACKs and keyframe requests;
//! - `control`: sending on `control` data channels;
//! - `session`: a session's life — answered, patched (trickle, ICE restart), connected, removed
//!   or reaped.

mod control;
mod drive;
mod fanout;
mod feedback;
mod session;

use super::control::ControlHook;
use super::peer::{MediaKind, Peer, RouterKey};
use super::router::{Forward, Router};
use super::udp::{RecvBatch, SendQueue};
use super::{MediaError, PatchOutcome, PatchRequest, Role, SessionAnswer, SessionRequest};
use crate::ids::SessionId;
use crate::metrics::Metrics;
use bytes::BytesMut;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Size of the buffer received datagrams are copied into for `rtc` (see `Worker::rx_buf`).
const RX_BUFFER: usize = 64 * 1024;

/// Messages a worker takes.
pub enum WorkerMsg {
    Open {
        req: SessionRequest,
        session: SessionId,
        reply: oneshot::Sender<Result<SessionAnswer, MediaError>>,
    },
    Patch {
        req: PatchRequest,
        reply: oneshot::Sender<Result<PatchOutcome, MediaError>>,
    },
    /// A client's DELETE: closes the session if `requester` may (else answers `NoSession`).
    Close {
        role: Role,
        table: crate::ids::TableId,
        session: SessionId,
        requester: super::Requester,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// A new publisher went live for `key`: close any other publisher session of it.
    ReplacePublisher {
        key: RouterKey,
        keep: SessionId,
    },
    /// A packet from a publisher on another worker.
    Forward {
        key: Arc<RouterKey>,
        fwd: Arc<Forward>,
    },
    /// Worker `worker` gained (or lost) its first (or last) subscriber, or relay, of `key`.
    Interest {
        key: RouterKey,
        worker: usize,
        what: Interest,
        on: bool,
    },
    /// A subscriber on another worker wants a keyframe of `key`: of the layer players get
    /// (`layers` 0), or (relays to other nodes) of the layers whose bits are set.
    KeyframeRequest {
        key: RouterKey,
        layers: u8,
    },
    /// A pull of `key` from the table's origin node starts feeding this worker (`relay.rs`).
    RelayOpen {
        key: RouterKey,
        source: super::router::RelaySource,
    },
    /// A packet of that pull.
    RelayRtp {
        key: Arc<RouterKey>,
        relay: u64,
        kind: MediaKind,
        codec: Option<super::keyframe::VideoCodec>,
        packet: rtc::rtp::Packet,
    },
    /// The origin's map of a pull's stream changed from its frame `rtp` on (`relay.rs`).
    RelayMap {
        key: RouterKey,
        ssrc: u32,
        rtp: u32,
    },
    /// The pull ended.
    RelayClose {
        key: RouterKey,
        relay: u64,
    },
    /// Send `text` on the `control` data channel of each of these sessions (all on this worker).
    ControlSend {
        sessions: Arc<[SessionId]>,
        text: Arc<str>,
    },
    /// How a player's page shows the video (`MediaHandle::set_view`).
    View {
        session: SessionId,
        user: crate::ids::UserId,
        view: super::View,
        /// The player's WebSocket, for its `video.map` when it has no `control` channel.
        maps: Option<super::video_map::MapSocket>,
    },
    /// Close a session for a reason of the node's (a flooding client, an operator's kick).
    Kick {
        session: SessionId,
        reason: String,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// Describe the sessions of `table` (all tables when `None`).
    List {
        table: Option<crate::ids::TableId>,
        reply: oneshot::Sender<Vec<super::SessionInfo>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Settings a worker needs.
#[derive(Clone)]
pub struct WorkerConfig {
    pub pli_throttle: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub nack_buffer_packets: usize,
}

/// What every worker of a node is given alike.
#[derive(Clone)]
pub struct WorkerShared {
    /// Every worker's queue, by worker index.
    pub workers: Vec<mpsc::Sender<WorkerMsg>>,
    pub metrics: Arc<Metrics>,
    pub config: WorkerConfig,
    /// Source epochs, shared by all workers so that a later source always has a larger epoch.
    pub epochs: Arc<AtomicU64>,
    /// The control plane, told about `control` data channels.
    pub control: Arc<dyn ControlHook>,
    /// Players of each table camera on this node (the cascade pulls what they watch).
    pub viewers: Arc<super::relay::Viewers>,
    /// The frames of the cameras dealers publish on this node (`frame_clock.rs`).
    pub frames: Arc<super::frame_clock::FrameClocks>,
}

pub struct Worker {
    index: usize,
    socket: Arc<AsyncFd<UdpSocket>>,
    /// Our candidates: announced address + this worker's port.
    local_addrs: Vec<SocketAddr>,
    peers: Vec<Option<Peer>>,
    generations: Vec<u64>,
    free: Vec<usize>,
    by_session: HashMap<SessionId, usize>,
    by_ufrag: HashMap<String, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    routers: HashMap<RouterKey, Router>,
    /// Other workers with subscribers of a key, as a bit set.
    remote_interest: HashMap<RouterKey, u64>,
    /// Per table camera, a bit for each other worker with a relay to another node of it: those
    /// get every video layer, not only the forwarded one.
    relay_interest: HashMap<RouterKey, u64>,
    workers: Vec<mpsc::Sender<WorkerMsg>>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    send: SendQueue,
    recv: Option<RecvBatch>,
    /// Every datagram is copied into this buffer and split off to `rtc`, whose `handle_read`
    /// takes an owned `BytesMut`. `rtc` reads it (SRTP and DTLS decrypt into new buffers, STUN
    /// is copied) and drops it, so the buffer is reclaimed as it fills: one copy per datagram and
    /// no allocation.
    rx_buf: BytesMut,
    /// What `drive` takes from a connection, reused from call to call.
    drive_rtp: Vec<(String, rtc::rtp::Packet)>,
    /// Packets to send to local subscribers at the end of this batch of input (`fanout.rs`).
    pending: Vec<(Arc<RouterKey>, Forward)>,
    /// One table camera's share of `pending`, reused.
    batch: Vec<Forward>,
    /// Slots of players whose pacer holds packets (`pacer.rs`), and when they are next let out.
    paced: Vec<usize>,
    pace_at: Option<Instant>,
    drive_rtcp: Vec<Box<dyn rtc::rtcp::Packet>>,
    /// RTX packets a player's feedback reported lost, reused (`resend_lost_repairs`).
    lost_rtx: Vec<u16>,
    metrics: Arc<Metrics>,
    config: WorkerConfig,
    /// Source epochs, shared by all workers so that a later source always has a larger epoch.
    epochs: Arc<AtomicU64>,
    /// The control plane, told about `control` data channels.
    control: Arc<dyn ControlHook>,
    viewers: Arc<super::relay::Viewers>,
    frames: Arc<super::frame_clock::FrameClocks>,
}

impl Worker {
    pub fn new(
        index: usize,
        socket: UdpSocket,
        local_addrs: Vec<SocketAddr>,
        shared: WorkerShared,
    ) -> std::io::Result<Self> {
        let WorkerShared {
            workers,
            metrics,
            config,
            epochs,
            control,
            viewers,
            frames,
        } = shared;
        let recv = RecvBatch::new(&socket)?;
        let send = SendQueue::for_socket(&socket);
        debug!(worker = index, gso = send.gso(), "media socket ready");
        Ok(Self {
            index,
            #[allow(deprecated)] // `register` is not in every tokio 1.x this crate accepts
            socket: Arc::new(AsyncFd::new(socket)?),
            local_addrs,
            peers: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_session: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            routers: HashMap::new(),
            remote_interest: HashMap::new(),
            relay_interest: HashMap::new(),
            workers,
            timers: BinaryHeap::new(),
            send,
            recv: Some(recv),
            rx_buf: BytesMut::with_capacity(RX_BUFFER),
            drive_rtp: Vec::new(),
            pending: Vec::new(),
            batch: Vec::new(),
            paced: Vec::new(),
            pace_at: None,
            drive_rtcp: Vec::new(),
            lost_rtx: Vec::new(),
            metrics,
            config,
            epochs,
            control,
            viewers,
            frames,
        })
    }

    /// Runs until `Shutdown`.
    pub async fn run(mut self, mut rx: mpsc::Receiver<WorkerMsg>) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            let sleep_until = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            let socket = self.socket.clone();
            tokio::select! {
                ready = socket.readable() => {
                    match ready {
                        Ok(mut guard) => {
                            let mut batch = self.recv.take();
                            if let Some(b) = batch.as_mut() {
                                for _ in 0..16 {
                                    match guard.try_io(|s| b.recv(s.get_ref())) {
                                        Ok(Ok(n)) => {
                                            let now = Instant::now();
                                            for (from, dst, data) in b.datagrams(n) {
                                                self.on_datagram(from, dst, data, now);
                                            }
                                            self.fan_out_pending(now);
                                        }
                                        Ok(Err(e)) => { debug!(error = %e, "media socket receive error"); break; }
                                        Err(_would_block) => break,
                                    }
                                }
                            }
                            self.recv = batch;
                        }
                        Err(e) => warn!(error = %e, "media socket is not readable; worker stops"),
                    }
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    if let Some(done) = self.on_msg(msg) {
                        self.close_all();
                        self.flush();
                        let _ = done.send(());
                        return;
                    }
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(msg) => if let Some(done) = self.on_msg(msg) {
                                self.close_all();
                                self.flush();
                                let _ = done.send(());
                                return;
                            },
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(sleep_until.into()) => {}
                _ = housekeeping.tick() => self.reap(Instant::now()),
            }
            let now = Instant::now();
            self.run_timers(now);
            self.fan_out_pending(now);
            self.run_pacers(now);
            self.flush();
        }
        self.close_all();
        self.flush();
    }

    fn flush(&mut self) {
        send_queued(&mut self.send, self.socket.get_ref());
    }

    /// Handles one message; returns the shutdown acknowledger when told to stop.
    fn on_msg(&mut self, msg: WorkerMsg) -> Option<oneshot::Sender<()>> {
        let now = Instant::now();
        match msg {
            WorkerMsg::Open {
                req,
                session,
                reply,
            } => {
                let _ = reply.send(self.open(req, session, now));
            }
            WorkerMsg::Patch { req, reply } => {
                let _ = reply.send(self.patch(req, now));
            }
            WorkerMsg::Close {
                role,
                table,
                session,
                requester,
                reply,
            } => {
                let owned = self.by_session.get(&session).copied().filter(|&slot| {
                    self.peers[slot].as_ref().is_some_and(|p| {
                        p.role == role
                            && p.key.table == table
                            && requester.may_touch(&p.user, &p.token)
                    })
                });
                let result = match owned {
                    Some(slot) => {
                        self.remove(slot, "closed by client (DELETE)");
                        Ok(())
                    }
                    // Someone else's session answers as if it did not exist.
                    None => Err(MediaError::NoSession(session.to_string())),
                };
                let _ = reply.send(result);
            }
            WorkerMsg::ReplacePublisher { key, keep } => {
                let old: Vec<usize> = self
                    .peers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
                    .filter(|(_, p)| {
                        p.role == Role::Publisher && *p.key == key && p.session != keep
                    })
                    .map(|(i, _)| i)
                    .collect();
                for slot in old {
                    self.remove(
                        slot,
                        "replaced by a new WHIP session for the same table camera",
                    );
                }
            }
            WorkerMsg::Forward { key, fwd } => self.fan_out(key, Forward::clone(&fwd)),
            WorkerMsg::Interest {
                key,
                worker,
                what,
                on,
            } => {
                let map = match what {
                    Interest::Subscribers => &mut self.remote_interest,
                    Interest::Relays => &mut self.relay_interest,
                };
                let bits = map.entry(key.clone()).or_insert(0);
                if on {
                    *bits |= 1 << worker;
                } else {
                    *bits &= !(1 << worker);
                    if *bits == 0 {
                        map.remove(&key);
                    }
                }
            }
            WorkerMsg::KeyframeRequest { key, layers } => {
                if let Some(router) = self.routers.get_mut(&key)
                    && (router.publisher.is_some() || router.relay.is_some())
                    && router.pli.allow(now)
                {
                    self.keyframe_from_source(&key, layers, now);
                }
            }
            WorkerMsg::RelayOpen { key, source } => {
                let router = self.routers.entry(key).or_insert_with(|| {
                    Router::new(self.config.nack_buffer_packets, self.config.pli_throttle)
                });
                router.relay = Some(source);
            }
            WorkerMsg::RelayRtp {
                key,
                relay,
                kind,
                codec,
                packet,
            } => {
                if let Some(source) = self
                    .routers
                    .get_mut(&*key)
                    .and_then(|r| r.relay.as_mut())
                    .filter(|r| r.id == relay)
                    && kind == MediaKind::Video
                    && codec.is_some()
                    && source.video.video_codec != codec
                {
                    source.video.video_codec = codec;
                }
                self.on_relay_rtp(key, relay, kind, packet, now);
            }
            WorkerMsg::RelayMap { key, ssrc, rtp } => {
                if let Some(router) = self.routers.get(&key) {
                    for &sub in &router.subscribers {
                        if let Some(peer) = self.peers[sub].as_mut() {
                            peer.video_map.on_relay_anchor(ssrc, rtp, now);
                        }
                    }
                }
            }
            WorkerMsg::RelayClose { key, relay } => {
                if let Some(router) = self.routers.get_mut(&key)
                    && router.relay.as_ref().is_some_and(|r| r.id == relay)
                {
                    router.relay = None;
                    if router.is_idle() && !self.remote_interest.contains_key(&key) {
                        self.routers.remove(&key);
                    }
                }
            }
            WorkerMsg::ControlSend { sessions, text } => {
                for session in sessions.iter() {
                    if let Some(&slot) = self.by_session.get(session) {
                        self.control_send(slot, &text, now);
                    }
                }
            }
            WorkerMsg::View {
                session,
                user,
                view,
                maps,
            } => {
                if let Some(&slot) = self.by_session.get(&session)
                    && let Some(peer) = self.peers[slot].as_mut()
                    && peer.role == Role::Subscriber
                    && !peer.relay
                    && peer.user == user
                {
                    peer.view = view;
                    if let Some(socket) = maps {
                        peer.video_map.on_socket(socket, Instant::now());
                    }
                }
            }
            WorkerMsg::Kick {
                session,
                reason,
                reply,
            } => {
                let result = match self.by_session.get(&session).copied() {
                    Some(slot) => {
                        self.remove(slot, &reason);
                        Ok(())
                    }
                    None => Err(MediaError::NoSession(session.to_string())),
                };
                let _ = reply.send(result);
            }
            WorkerMsg::List { table, reply } => {
                let mut addrs: HashMap<usize, SocketAddr> = HashMap::new();
                for (addr, &slot) in &self.by_addr {
                    addrs.insert(slot, *addr);
                }
                let list = self
                    .peers
                    .iter()
                    .enumerate()
                    .filter_map(|(slot, p)| p.as_ref().map(|p| (slot, p)))
                    .filter(|(_, p)| table.as_ref().is_none_or(|t| *t == p.key.table))
                    .map(|(slot, p)| super::SessionInfo {
                        session: p.session.clone(),
                        table: p.key.table.clone(),
                        camera: p.key.camera.clone(),
                        role: p.role,
                        user: p.user.clone(),
                        worker: self.index,
                        age_ms: now.saturating_duration_since(p.created).as_millis() as u64,
                        connected_ms: p
                            .connected_at
                            .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                        addr: addrs.get(&slot).copied(),
                        control: p.control.is_some(),
                        relay: p.relay,
                        link: (p.role == Role::Subscriber).then(|| p.link.snapshot()),
                        view: (p.role == Role::Subscriber && !p.relay).then_some(p.view),
                        layer: (p.role == Role::Subscriber && !p.relay).then(|| {
                            let states = self
                                .routers
                                .get(&*p.key)
                                .map(|r| r.states)
                                .unwrap_or_default();
                            let index = p.selector.current();
                            let state = index
                                .and_then(|i| states.get(i))
                                .copied()
                                .unwrap_or_default();
                            super::PlayerLayer {
                                index,
                                width: state.width,
                                height: state.height,
                                bitrate_bps: state.bitrate,
                                pending: p.selector.pending(),
                                paused: p.selector.paused(),
                            }
                        }),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            WorkerMsg::Shutdown { done } => return Some(done),
        }
        None
    }

    fn announce_interest(&self, key: &RouterKey, what: Interest, on: bool) {
        for (i, w) in self.workers.iter().enumerate() {
            if i != self.index {
                let _ = w.try_send(WorkerMsg::Interest {
                    key: key.clone(),
                    worker: self.index,
                    what,
                    on,
                });
            }
        }
    }
}

/// What a worker tells the others it has of a table camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Subscribers (players or relays): they get the forwarded layer.
    Subscribers,
    /// Relays to other nodes: they get every layer.
    Relays,
}

/// Sends what `send` holds on `socket`, logging what the kernel would not take.
fn send_queued(send: &mut SendQueue, socket: &UdpSocket) {
    if send.is_empty() {
        return;
    }
    let r = send.flush(socket);
    if r.dropped > 0 || r.failed > 0 {
        debug!(dropped = r.dropped, failed = r.failed, error = ?r.last_error, "media send incomplete");
    }
}
