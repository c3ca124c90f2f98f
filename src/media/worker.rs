//! A media worker: one thread, one UDP socket, every session placed on it.
//!
//! Each turn of the loop: receive a batch of datagrams and demultiplex them (STUN by ICE ufrag,
//! the rest by source address) into their sessions' sans-IO peer connections; act on what the
//! connections give back (forward RTP through the routers, answer NACKs, relay keyframe requests,
//! control messages); fire due timers from a deadline heap; send the batch. Then sleep until the
//! next datagram, message or deadline. Workers talk to each other and to the HTTP layer only by
//! [`WorkerMsg`].

use super::control::{ControlChannel, ControlHook};
use super::demux::{self, Kind, NewPath};
use super::keyframe;
use super::peer::{self, InTrack, MediaKind, Peer, RouterKey};
use super::restart;
use super::router::{Forward, Router};
use super::subscriber::Rewrite;
use super::udp::{RecvBatch, SendQueue};
use super::{MediaError, PatchOutcome, PatchRequest, Role, SessionAnswer, SessionRequest};
use crate::ids::SessionId;
use crate::metrics::Metrics;
use bytes::BytesMut;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span, warn};

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
    Close {
        session: SessionId,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// A new publisher went live for `key`: close any other publisher session of it.
    ReplacePublisher {
        key: RouterKey,
        keep: SessionId,
    },
    /// A packet from a publisher on another worker.
    Forward {
        key: RouterKey,
        fwd: Arc<Forward>,
    },
    /// Worker `worker` gained (or lost) its first (or last) subscriber of `key`.
    Interest {
        key: RouterKey,
        worker: usize,
        on: bool,
    },
    /// A subscriber on another worker wants a keyframe of `key`.
    KeyframeRequest {
        key: RouterKey,
    },
    /// Send `text` on the `control` data channel of each of these sessions (all on this worker).
    ControlSend {
        sessions: Vec<SessionId>,
        text: Arc<str>,
    },
    /// Close a session for a reason of the node's (a flooding client, an operator's kick).
    Kick {
        session: SessionId,
        reason: String,
        reply: oneshot::Sender<Result<(), MediaError>>,
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
    workers: Vec<mpsc::Sender<WorkerMsg>>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    send: SendQueue,
    recv: Option<RecvBatch>,
    metrics: Arc<Metrics>,
    config: WorkerConfig,
    /// Source epochs, shared by all workers so that a later source always has a larger epoch.
    epochs: Arc<AtomicU64>,
    /// The control plane, told about `control` data channels.
    control: Arc<dyn ControlHook>,
}

/// A control channel whose peer has not taken this many bytes is closed: the player is gone or
/// cannot keep up, and it will resume from its last seq when it reconnects.
const CONTROL_BACKLOG_LIMIT: usize = 4 * 1024 * 1024;

fn control_channel(peer: &Peer) -> ControlChannel<'_> {
    ControlChannel {
        session: &peer.session,
        table: &peer.key.table,
        user: &peer.user,
        role: peer.role,
        token_role: peer.token_role,
    }
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
        } = shared;
        let recv = RecvBatch::new(&socket)?;
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
            workers,
            timers: BinaryHeap::new(),
            send: SendQueue::default(),
            recv: Some(recv),
            metrics,
            config,
            epochs,
            control,
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
            self.run_timers(Instant::now());
            self.flush();
        }
        self.close_all();
        self.flush();
    }

    fn flush(&mut self) {
        if self.send.is_empty() {
            return;
        }
        let r = self.send.flush(self.socket.get_ref());
        if r.dropped > 0 || r.failed > 0 {
            debug!(dropped = r.dropped, failed = r.failed, error = ?r.last_error, "media send incomplete");
        }
    }

    // ---- messages -------------------------------------------------------------------------

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
            WorkerMsg::Close { session, reply } => {
                let result = match self.by_session.get(&session).copied() {
                    Some(slot) => {
                        self.remove(slot, "closed by client (DELETE)");
                        Ok(())
                    }
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
                    .filter(|(_, p)| p.role == Role::Publisher && p.key == key && p.session != keep)
                    .map(|(i, _)| i)
                    .collect();
                for slot in old {
                    self.remove(
                        slot,
                        "replaced by a new WHIP session for the same table camera",
                    );
                }
            }
            WorkerMsg::Forward { key, fwd } => self.fan_out(&key, &fwd, now),
            WorkerMsg::Interest { key, worker, on } => {
                let bits = self.remote_interest.entry(key.clone()).or_insert(0);
                if on {
                    *bits |= 1 << worker;
                } else {
                    *bits &= !(1 << worker);
                    if *bits == 0 {
                        self.remote_interest.remove(&key);
                    }
                }
            }
            WorkerMsg::KeyframeRequest { key } => {
                if let Some(router) = self.routers.get_mut(&key)
                    && let Some(publisher) = router.publisher
                    && router.pli.allow(now)
                {
                    self.send_pli(publisher, now);
                }
            }
            WorkerMsg::ControlSend { sessions, text } => {
                for session in &sessions {
                    if let Some(&slot) = self.by_session.get(session) {
                        self.control_send(slot, &text, now);
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
            WorkerMsg::Shutdown { done } => return Some(done),
        }
        None
    }

    fn open(
        &mut self,
        req: SessionRequest,
        session: SessionId,
        now: Instant,
    ) -> Result<SessionAnswer, MediaError> {
        let span = info_span!("session", session_id = %session, table_id = %req.table, camera = %req.camera, role = req.role.as_str(), user = %req.user);
        let peer::Answered {
            pc,
            video,
            audio,
            sdp,
        } = peer::answer(req.role, &req.offer_sdp, &self.local_addrs, now)
            .inspect_err(|e| span.in_scope(|| info!(error = %e, "offer refused")))?;
        let ufrag = restart::attribute(&sdp, "ice-ufrag")
            .ok_or_else(|| MediaError::Unavailable("our answer has no a=ice-ufrag".into()))?
            .to_owned();
        let etag = new_etag();
        let key = RouterKey {
            table: req.table.clone(),
            camera: req.camera.clone(),
        };
        let metrics = self.metrics.table(&req.table);
        let peer = Peer {
            session: session.clone(),
            role: req.role,
            key: key.clone(),
            user: req.user,
            token_role: req.token_role,
            pc,
            ufrag: ufrag.clone(),
            etag: etag.clone(),
            span: span.clone(),
            metrics,
            created: now,
            connected_at: None,
            last_rx: now,
            paths: Default::default(),
            in_tracks: HashMap::new(),
            out_video: video,
            out_audio: audio,
            control: None,
            deadline: None,
            closing: false,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.peers[slot] = Some(peer);
                slot
            }
            None => {
                self.peers.push(Some(peer));
                self.generations.push(0);
                self.peers.len() - 1
            }
        };
        self.generations[slot] += 1;
        self.by_session.insert(session.clone(), slot);
        self.by_ufrag.insert(ufrag, slot);

        let router = self.routers.entry(key.clone()).or_insert_with(|| {
            Router::new(self.config.nack_buffer_packets, self.config.pli_throttle)
        });
        match req.role {
            Role::Publisher => {
                let old = router.publisher.replace(slot);
                if let Some(old) = old {
                    self.remove(
                        old,
                        "replaced by a new WHIP session for the same table camera",
                    );
                    if let Some(router) = self.routers.get_mut(&key) {
                        router.publisher = Some(slot);
                    }
                }
                for (i, w) in self.workers.iter().enumerate() {
                    if i != self.index {
                        let _ = w.try_send(WorkerMsg::ReplacePublisher {
                            key: key.clone(),
                            keep: session.clone(),
                        });
                    }
                }
            }
            Role::Subscriber => {
                router.subscribers.push(slot);
                if router.subscribers.len() == 1 {
                    self.announce_interest(&key, true);
                }
            }
        }
        if let Some(p) = self.peers[slot].as_ref() {
            sessions_gauge(&p.metrics, req.role).fetch_add(1, Relaxed);
            p.span
                .in_scope(|| info!(candidates = ?self.local_addrs, "session answered"));
        }
        self.drive(slot, now);
        Ok(SessionAnswer {
            session,
            answer_sdp: sdp,
            etag,
        })
    }

    fn patch(&mut self, req: PatchRequest, now: Instant) -> Result<PatchOutcome, MediaError> {
        let slot = *self
            .by_session
            .get(&req.session)
            .ok_or_else(|| MediaError::NoSession(req.session.to_string()))?;
        let peer = self.peers[slot]
            .as_mut()
            .ok_or_else(|| MediaError::NoSession(req.session.to_string()))?;
        if peer.role != req.role || peer.key.table != req.table {
            return Err(MediaError::NoSession(req.session.to_string()));
        }
        let if_match = req
            .if_match
            .as_deref()
            .map(str::trim)
            .ok_or(MediaError::PreconditionRequired)?;
        if if_match == "*" {
            return self.restart_ice(slot, &req.sdpfrag, now);
        }
        if if_match != peer.etag {
            return Err(MediaError::PreconditionFailed);
        }
        let mut added = 0;
        for line in req.sdpfrag.lines() {
            let line = line.trim();
            if let Some(candidate) = line.strip_prefix("a=candidate:") {
                let init = rtc::peer_connection::transport::RTCIceCandidateInit {
                    candidate: format!("candidate:{candidate}"),
                    ..Default::default()
                };
                peer.pc
                    .add_remote_candidate(init)
                    .map_err(|e| MediaError::BadSdpFrag(format!("candidate refused: {e}")))?;
                added += 1;
            }
        }
        if added == 0
            && !req.sdpfrag.contains("a=end-of-candidates")
            && !req.sdpfrag.contains("a=ice-ufrag")
        {
            return Err(MediaError::BadSdpFrag(
                "no a=candidate lines in the body".into(),
            ));
        }
        self.drive(slot, now);
        Ok(PatchOutcome::Trickled)
    }

    /// Restarts ICE on a session (RFC 9725 §4.4) and answers with our new credentials.
    ///
    /// The old ufrag stops routing at once: once `rtc` has applied the restart its agent checks
    /// STUN only against the new credentials (rtc-ice-0.21.1 `Agent::apply_restart`), so binding
    /// requests with the old ufrag would be refused anyway. Addresses stay routable, and a
    /// session's outgoing streams (SSRC, sequence and timestamp rewriting) are untouched: only
    /// the path changes.
    fn restart_ice(
        &mut self,
        slot: usize,
        sdpfrag: &str,
        now: Instant,
    ) -> Result<PatchOutcome, MediaError> {
        let request = restart::RestartRequest::parse(sdpfrag)?;
        let Some(peer) = self.peers[slot].as_mut() else {
            return Err(MediaError::Unavailable("session vanished".into()));
        };
        let restarted = restart::apply(&mut peer.pc, &request, now).inspect_err(|e| {
            peer.span
                .in_scope(|| info!(error = %e, "ICE restart refused"))
        })?;
        self.by_ufrag.remove(&peer.ufrag);
        self.by_ufrag.insert(restarted.ufrag.clone(), slot);
        peer.ufrag = restarted.ufrag;
        peer.etag = new_etag();
        peer.span
            .in_scope(|| info!(remote_ufrag = %request.ufrag, "ICE restarted"));
        let etag = peer.etag.clone();
        self.drive(slot, now);
        Ok(PatchOutcome::Restarted {
            sdpfrag: restarted.sdpfrag,
            etag,
        })
    }

    fn announce_interest(&self, key: &RouterKey, on: bool) {
        for (i, w) in self.workers.iter().enumerate() {
            if i != self.index {
                let _ = w.try_send(WorkerMsg::Interest {
                    key: key.clone(),
                    worker: self.index,
                    on,
                });
            }
        }
    }

    // ---- datagrams ------------------------------------------------------------------------

    fn on_datagram(&mut self, from: SocketAddr, dst: Option<IpAddr>, data: &[u8], now: Instant) {
        let kind = demux::classify(data);
        let slot = match kind {
            Kind::Stun => demux::stun_server_ufrag(data)
                .and_then(|u| self.by_ufrag.get(u).copied())
                .or_else(|| self.by_addr.get(&from).copied()),
            Kind::Dtls | Kind::Rtp => self.by_addr.get(&from).copied(),
            Kind::Unknown => None,
        };
        let Some(slot) = slot else {
            self.metrics.node.datagrams_unroutable.fetch_add(1, Relaxed);
            return;
        };
        let local_addr = dst
            .and_then(|ip| self.local_addrs.iter().find(|a| a.ip() == ip))
            .or_else(|| self.local_addrs.first())
            .copied()
            .unwrap_or(from);
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        peer.last_rx = now;
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = peer.pc.handle_read(msg) {
            peer.span.in_scope(
                || debug!(error = %e, from = %from, "datagram refused by the peer connection"),
            );
        }
        if kind == Kind::Stun && demux::is_binding_request(data) {
            // `handle_read` logs and swallows what its stages refuse (rtc-0.21.1
            // `peer_connection/handler/mod.rs`, `pump_reads`), so acceptance shows in the reply:
            // the agent answers a binding request with a success response only when it carried
            // our ufrag and passed MESSAGE-INTEGRITY with our password. Then its source is a
            // path of this session; a stranger naming our ufrag gets nothing routed.
            let mut accepted = false;
            while let Some(out) = peer.pc.poll_write() {
                accepted |=
                    out.transport.peer_addr == from && demux::is_binding_success(&out.message);
                self.send.push(out.transport.peer_addr, out.message);
            }
            if accepted && let NewPath::Added { evicted } = peer.paths.stun_from(from, now) {
                peer.span.in_scope(|| info!(remote = %from, "new path"));
                self.by_addr.insert(from, slot);
                if let Some(old) = evicted
                    && self.by_addr.get(&old) == Some(&slot)
                {
                    self.by_addr.remove(&old);
                }
            }
        }
        self.drive(slot, now);
    }

    // ---- driving a peer connection --------------------------------------------------------

    /// Takes everything a peer connection has to give after an input, and acts on it.
    fn drive(&mut self, slot: usize, now: Instant) {
        let mut rtp: Vec<(String, rtc::rtp::Packet)> = Vec::new();
        let mut rtcp: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
        let mut close_reason = None;
        let mut became_connected = false;
        {
            let Some(peer) = self.peers[slot].as_mut() else {
                return;
            };
            while let Some(out) = peer.pc.poll_write() {
                self.send.push(out.transport.peer_addr, out.message);
            }
            while let Some(event) = peer.pc.poll_event() {
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                        peer.span.in_scope(|| debug!(%state, "connection state"));
                        match state {
                            RTCPeerConnectionState::Connected if peer.connected_at.is_none() => {
                                peer.connected_at = Some(now);
                                became_connected = true;
                            }
                            RTCPeerConnectionState::Failed => {
                                close_reason = Some("connection failed (ICE or DTLS)")
                            }
                            RTCPeerConnectionState::Closed => {
                                close_reason = Some("connection closed by the remote peer")
                            }
                            _ => {}
                        }
                    }
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        // `rtc` opens the tracks again after a renegotiation (an ICE restart);
                        // the same track and SSRC is the same source, so subscribers keep their
                        // anchoring and the packet buffer keeps answering NACKs.
                        let epoch = match peer.in_tracks.get(&init.track_id) {
                            Some(t) if t.ssrc == init.ssrc => t.epoch,
                            _ => self.epochs.fetch_add(1, Relaxed),
                        };
                        if let Some(receiver) = peer.pc.rtp_receiver(init.receiver_id) {
                            let track = receiver.track();
                            let kind = if track.kind()
                                == rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video
                            {
                                MediaKind::Video
                            } else {
                                MediaKind::Audio
                            };
                            let mime = track
                                .codec(init.ssrc)
                                .map(|c| c.mime_type.clone())
                                .unwrap_or_default();
                            let video_codec = keyframe::VideoCodec::from_mime(&mime);
                            peer.span.in_scope(|| info!(track = %init.track_id, ?kind, %mime, ssrc = init.ssrc, "publisher track open"));
                            peer.in_tracks.insert(
                                init.track_id.clone(),
                                InTrack {
                                    kind,
                                    video_codec,
                                    ssrc: init.ssrc,
                                    receiver: init.receiver_id,
                                    epoch,
                                },
                            );
                        }
                    }
                    RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) => {
                        if let Some(dc) = peer.pc.data_channel(id) {
                            let label = dc.label().to_owned();
                            peer.span.in_scope(|| info!(%label, "data channel open"));
                            if label == "control" && peer.control.is_none() {
                                peer.control = Some(id);
                                self.control.opened(control_channel(peer));
                            }
                        }
                    }
                    RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(id))
                        if peer.control == Some(id) =>
                    {
                        peer.control = None;
                        peer.span.in_scope(|| info!("control channel closed"));
                        self.control.closed(control_channel(peer));
                    }
                    _ => {}
                }
            }
            while let Some(msg) = peer.pc.poll_read() {
                match msg.message {
                    RTCMessage::RtpPacket(track_id, packet) => rtp.push((track_id, packet)),
                    RTCMessage::RtcpPacket(_, packets) => rtcp.extend(packets),
                    RTCMessage::DataChannelMessage(id, message) if Some(id) == peer.control => {
                        self.control.message(control_channel(peer), &message.data);
                    }
                    _ => {}
                }
            }
            while let Some(out) = peer.pc.poll_write() {
                self.send.push(out.transport.peer_addr, out.message);
            }
            self.schedule(slot, now);
        }
        if became_connected {
            self.on_connected(slot, now);
        }
        for (track_id, packet) in rtp {
            self.on_publisher_rtp(slot, &track_id, packet, now);
        }
        if !rtcp.is_empty() {
            self.on_subscriber_rtcp(slot, rtcp, now);
        }
        if let Some(reason) = close_reason {
            self.remove(slot, reason);
        }
    }

    fn schedule(&mut self, slot: usize, now: Instant) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        if let Some(t) = peer.pc.poll_timeout() {
            let t = t.max(now);
            if peer.deadline.is_none_or(|d| t < d || d <= now) {
                peer.deadline = Some(t);
                self.timers.push(Reverse((t, slot, self.generations[slot])));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    fn run_timers(&mut self, now: Instant) {
        let mut fired = 0;
        while let Some(Reverse((t, slot, generation))) = self.timers.peek().copied() {
            if t > now || fired > 10_000 {
                break;
            }
            self.timers.pop();
            if self.generations.get(slot) != Some(&generation) {
                continue;
            }
            let Some(peer) = self.peers[slot].as_mut() else {
                continue;
            };
            if peer.deadline != Some(t) {
                continue;
            }
            peer.deadline = None;
            fired += 1;
            if let Err(e) = peer.pc.handle_timeout(now) {
                peer.span
                    .in_scope(|| debug!(error = %e, "timeout handling failed"));
            }
            self.drive(slot, now);
        }
    }

    fn on_connected(&mut self, slot: usize, now: Instant) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let dtls = dtls_version(&mut peer.pc, now);
        let setup_ms = now.saturating_duration_since(peer.created).as_millis() as u64;
        peer.span
            .in_scope(|| info!(dtls = %dtls, setup_ms, remote = ?peer.paths.addrs().collect::<Vec<_>>(), "connected"));
        let (role, key) = (peer.role, peer.key.clone());
        if role == Role::Subscriber {
            self.request_keyframe(&key, now);
        }
    }

    // ---- forwarding -----------------------------------------------------------------------

    fn on_publisher_rtp(
        &mut self,
        slot: usize,
        track_id: &str,
        mut packet: rtc::rtp::Packet,
        now: Instant,
    ) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        if peer.role != Role::Publisher {
            return;
        }
        let Some(track) = peer.in_tracks.get_mut(track_id) else {
            return;
        };
        if packet.header.ssrc != track.ssrc {
            // The publisher restarted its stream (new SSRC): subscribers re-anchor.
            track.ssrc = packet.header.ssrc;
            track.epoch = self.epochs.fetch_add(1, Relaxed);
        }
        peer.metrics.rtp_packets_in.fetch_add(1, Relaxed);
        peer.metrics
            .rtp_bytes_in
            .fetch_add(packet.payload.len() as u64, Relaxed);
        // Header extensions are negotiated per leg; the publisher's ids mean nothing downstream.
        packet.header.extension = false;
        packet.header.extension_profile = 0;
        packet.header.extensions.clear();
        let keyframe = track
            .video_codec
            .is_some_and(|c| keyframe::is_keyframe(c, &packet.payload));
        let fwd = Forward {
            kind: track.kind,
            codec: track.video_codec,
            epoch: track.epoch,
            keyframe,
            packet,
        };
        let key = peer.key.clone();
        if let Some(bits) = self.remote_interest.get(&key).copied() {
            let shared = Arc::new(fwd.clone());
            for (i, w) in self.workers.iter().enumerate() {
                if bits & (1 << i) != 0 && i != self.index {
                    let _ = w.try_send(WorkerMsg::Forward {
                        key: key.clone(),
                        fwd: shared.clone(),
                    });
                }
            }
        }
        self.fan_out(&key, &fwd, now);
    }

    /// Buffers a packet for NACKs and sends it to every local subscriber of the table camera.
    fn fan_out(&mut self, key: &RouterKey, fwd: &Forward, now: Instant) {
        let Some(router) = self.routers.get_mut(key) else {
            return;
        };
        router
            .buffer(fwd.kind)
            .insert(fwd.epoch, fwd.codec, &fwd.packet);
        let mut want_keyframe = false;
        for &sub in &router.subscribers {
            let Some(peer) = self.peers[sub].as_mut() else {
                continue;
            };
            if peer.connected_at.is_none() {
                continue;
            }
            let out = match fwd.kind {
                MediaKind::Video => peer.out_video.as_mut(),
                MediaKind::Audio => peer.out_audio.as_mut(),
            };
            let Some(out) = out else { continue };
            let Some(pt) = out.payload_type(fwd.codec) else {
                continue;
            };
            let (seq, timestamp) = match out.stream.rewrite(
                fwd.epoch,
                fwd.packet.header.sequence_number,
                fwd.packet.header.timestamp,
                fwd.keyframe,
                now,
            ) {
                Rewrite::Send { seq, timestamp } => (seq, timestamp),
                Rewrite::WaitForKeyframe => {
                    want_keyframe = true;
                    continue;
                }
                Rewrite::Stale => continue,
            };
            let mut packet = fwd.packet.clone();
            packet.header.ssrc = out.stream.ssrc;
            packet.header.sequence_number = seq;
            packet.header.timestamp = timestamp;
            packet.header.payload_type = pt;
            let bytes = packet.payload.len() as u64;
            let sender_id = out.sender;
            if let Some(mut sender) = peer.pc.rtp_sender(sender_id) {
                match sender.write_rtp(now, packet) {
                    Ok(()) => {
                        peer.metrics.rtp_packets_out.fetch_add(1, Relaxed);
                        peer.metrics.rtp_bytes_out.fetch_add(bytes, Relaxed);
                    }
                    Err(e) => peer.span.in_scope(|| debug!(error = %e, "forward refused")),
                }
            }
            while let Some(out) = peer.pc.poll_write() {
                self.send.push(out.transport.peer_addr, out.message);
            }
            if peer.deadline.is_none() {
                // The first packet arms the sender-report timer.
                if let Some(t) = peer.pc.poll_timeout() {
                    peer.deadline = Some(t);
                    self.timers
                        .push(Reverse((t.max(now), sub, self.generations[sub])));
                }
            }
        }
        if want_keyframe {
            self.request_keyframe(key, now);
        }
    }

    fn on_subscriber_rtcp(
        &mut self,
        slot: usize,
        packets: Vec<Box<dyn rtc::rtcp::Packet>>,
        now: Instant,
    ) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        if peer.role != Role::Subscriber {
            return;
        }
        let key = peer.key.clone();
        let mut keyframe = false;
        for p in &packets {
            let any = p.as_any();
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                peer.metrics.nacks_received.fetch_add(1, Relaxed);
                let Some(router) = self.routers.get(&key) else {
                    continue;
                };
                let (out, buffer) = if peer
                    .out_video
                    .as_ref()
                    .is_some_and(|o| o.stream.ssrc == nack.media_ssrc)
                {
                    (peer.out_video.as_ref(), &router.video)
                } else if peer
                    .out_audio
                    .as_ref()
                    .is_some_and(|o| o.stream.ssrc == nack.media_ssrc)
                {
                    (peer.out_audio.as_ref(), &router.audio)
                } else {
                    continue;
                };
                let Some(out) = out else { continue };
                let sender_id = out.sender;
                let ssrc = out.stream.ssrc;
                for pair in &nack.nacks {
                    for lost in pair.packet_list() {
                        let Some((epoch, src_seq)) = out.stream.source_seq(lost) else {
                            continue;
                        };
                        let Some((codec, original)) = buffer.get(epoch, src_seq) else {
                            continue;
                        };
                        let Some((seq, timestamp)) = out.stream.rewrite_retransmission(
                            epoch,
                            src_seq,
                            original.header.timestamp,
                        ) else {
                            continue;
                        };
                        let Some(pt) = out.payload_type(codec) else {
                            continue;
                        };
                        let mut packet = original.clone();
                        packet.header.ssrc = ssrc;
                        packet.header.sequence_number = seq;
                        packet.header.timestamp = timestamp;
                        packet.header.payload_type = pt;
                        if let Some(mut sender) = peer.pc.rtp_sender(sender_id)
                            && sender.write_rtp(now, packet).is_ok()
                        {
                            peer.metrics.retransmissions.fetch_add(1, Relaxed);
                        }
                    }
                }
            } else if any.is::<PictureLossIndication>()
                || any.is::<rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest>()
            {
                peer.metrics.plis_received.fetch_add(1, Relaxed);
                keyframe = true;
            }
        }
        while let Some(out) = peer.pc.poll_write() {
            self.send.push(out.transport.peer_addr, out.message);
        }
        if keyframe {
            self.request_keyframe(&key, now);
        }
    }

    /// Asks the publisher of `key` for a keyframe, throttled per table camera.
    fn request_keyframe(&mut self, key: &RouterKey, now: Instant) {
        let Some(router) = self.routers.get_mut(key) else {
            return;
        };
        if !router.allow_keyframe_request(now) {
            return;
        }
        match router.publisher {
            Some(publisher) => self.send_pli(publisher, now),
            None => {
                for (i, w) in self.workers.iter().enumerate() {
                    if i != self.index {
                        let _ = w.try_send(WorkerMsg::KeyframeRequest { key: key.clone() });
                    }
                }
            }
        }
    }

    fn send_pli(&mut self, slot: usize, now: Instant) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let video: Vec<(rtc::rtp_transceiver::RTCRtpReceiverId, u32)> = peer
            .in_tracks
            .values()
            .filter(|t| t.kind == MediaKind::Video)
            .map(|t| (t.receiver, t.ssrc))
            .collect();
        for (receiver, media_ssrc) in video {
            if let Some(mut r) = peer.pc.rtp_receiver(receiver) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if r.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                    peer.metrics.plis_sent.fetch_add(1, Relaxed);
                }
            }
        }
        while let Some(out) = peer.pc.poll_write() {
            self.send.push(out.transport.peer_addr, out.message);
        }
    }

    // ---- lifecycle ------------------------------------------------------------------------

    fn reap(&mut self, now: Instant) {
        let mut doomed = Vec::new();
        for (slot, peer) in self.peers.iter_mut().enumerate() {
            let Some(peer) = peer else { continue };
            for addr in peer.paths.expire(now) {
                if self.by_addr.get(&addr) == Some(&slot) {
                    self.by_addr.remove(&addr);
                }
            }
            if peer.connected_at.is_none()
                && now.saturating_duration_since(peer.created) > self.config.connect_timeout
            {
                doomed.push((slot, "never connected; check that UDP to the media port is allowed and [media] announce_ips is right"));
            } else if peer.connected_at.is_some()
                && now.saturating_duration_since(peer.last_rx) > self.config.idle_timeout
            {
                doomed.push((slot, "no packets from the client within the idle timeout"));
            }
        }
        for (slot, reason) in doomed {
            self.metrics.node.sessions_reaped.fetch_add(1, Relaxed);
            self.remove(slot, reason);
        }
    }

    fn remove(&mut self, slot: usize, reason: &str) {
        let Some(mut peer) = self.peers[slot].take() else {
            return;
        };
        if peer.control.take().is_some() {
            self.control.closed(control_channel(&peer));
        }
        let _ = peer.pc.close();
        while let Some(out) = peer.pc.poll_write() {
            self.send.push(out.transport.peer_addr, out.message);
        }
        self.generations[slot] += 1;
        self.free.push(slot);
        self.by_session.remove(&peer.session);
        self.by_ufrag.remove(&peer.ufrag);
        for addr in peer.paths.addrs() {
            if self.by_addr.get(&addr) == Some(&slot) {
                self.by_addr.remove(&addr);
            }
        }
        sessions_gauge(&peer.metrics, peer.role).fetch_sub(1, Relaxed);
        let lived_ms = peer.created.elapsed().as_millis() as u64;
        peer.span
            .in_scope(|| info!(reason, lived_ms, "session closed"));
        let mut lost_interest = false;
        if let Some(router) = self.routers.get_mut(&peer.key) {
            match peer.role {
                Role::Publisher => {
                    if router.publisher == Some(slot) {
                        router.publisher = None;
                    }
                }
                Role::Subscriber => {
                    router.subscribers.retain(|&s| s != slot);
                    lost_interest = router.subscribers.is_empty();
                }
            }
            if router.is_idle() && !self.remote_interest.contains_key(&peer.key) {
                self.routers.remove(&peer.key);
            }
        }
        if lost_interest {
            self.announce_interest(&peer.key, false);
        }
    }

    /// Sends one control-plane message on a session's `control` channel.
    fn control_send(&mut self, slot: usize, text: &str, now: Instant) {
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

    fn close_all(&mut self) {
        for slot in 0..self.peers.len() {
            if self.peers[slot].is_some() {
                self.remove(slot, "node shutting down");
            }
        }
    }
}

/// A fresh quoted entity tag for a session's ICE generation.
fn new_etag() -> String {
    format!("\"{}\"", hex::encode(rand::random::<[u8; 8]>()))
}

/// The negotiated DTLS version, from the transport stats.
fn dtls_version(pc: &mut rtc::peer_connection::RTCPeerConnection, now: Instant) -> String {
    let report = pc.get_stats(now, rtc::statistics::StatsSelector::None);
    report
        .transport()
        .map(|t| t.tls_version.clone())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn sessions_gauge(m: &crate::metrics::TableMetrics, role: Role) -> &std::sync::atomic::AtomicI64 {
    match role {
        Role::Publisher => &m.publishers,
        Role::Subscriber => &m.subscribers,
    }
}
