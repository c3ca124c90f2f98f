//! Publisher RTP → track → router → subscribers: a publisher's packet is stripped of its leg's
//! header extensions, marked if it starts a keyframe, tagged with its layer (video), handed once
//! to each other worker with subscribers of the table camera, buffered for NACKs, and rewritten
//! into the stream of each local subscriber whose selector takes its layer (`simulcast.rs`).

use super::{Worker, WorkerMsg};
use crate::media::Role;
use crate::media::frame_clock::FrameClocks;
use crate::media::frame_size;
use crate::media::keyframe::{self, VideoCodec};
use crate::media::peer::{InTrack, MediaKind, Peer, RouterKey};
use crate::media::router::{Forward, LayerTag, RELAY_LAYERS};
use crate::media::selector::{AUDIO_RESERVE_BPS, Limits, Switch, Verdict};
use crate::media::simulcast::{LayerStates, Layers};
use crate::media::subscriber::Rewrite;
use rtc::sansio::Protocol;
use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tracing::{debug, info};

/// Packets written to one subscriber's connection before it is drained. rtc queues each written
/// packet in every stage of its pipeline and keeps those queues' capacity, so the per-subscriber
/// memory grows with this; a few packets already spread the drain's cost and keep the
/// subscriber's state in cache.
const DRAIN_EVERY: usize = 4;

/// Whether a player's link estimate (`estimate.rs`) limits its layer (and paces and probes it).
/// The estimate is shown in the session listing either way.
const LINK_ADAPTATION: bool = true;

/// Bytes a packet takes on the wire besides its payload: RTP header and extensions, SRTP tag,
/// UDP and IP headers (about).
pub(super) const RTP_OVERHEAD: usize = 60;

/// Datagrams queued during a fan-out before they are sent, without waiting for the fan-out to
/// end: a keyframe (about 24 packets) for about 40 players.
const FLUSH_AT: usize = 1024;

/// What taking in one packet of a source's track decided.
struct Ingested {
    /// Audio: the source epoch players get it under.
    epoch: Option<u64>,
    /// Video: the layer it belongs to (None: an SSRC that is no known layer; dropped).
    layer: Option<usize>,
    /// It is the first packet of a keyframe of its layer.
    keyframe: bool,
}

/// Takes in one packet of `track`, from a publisher or from a relay of another node: strips the
/// leg's header extensions and tracks the layers.
fn ingest(
    track: &mut InTrack,
    packet: &mut rtc::rtp::Packet,
    epochs: &AtomicU64,
    now: Instant,
) -> Ingested {
    // Header extensions are negotiated per leg; the source's ids mean nothing downstream.
    packet.header.extension = false;
    packet.header.extension_profile = 0;
    packet.header.extensions.clear();
    // The padding that aligned the source's extensions; left set, an extension added downstream
    // (transport-cc) is written with the wrong length and the packet is malformed.
    packet.header.extensions_padding = 0;
    // A packet of a keyframe, and then (video) whether it is the keyframe's first packet.
    let mut keyframe = track
        .video_codec
        .is_some_and(|c| keyframe::is_keyframe(c, &packet.payload));
    let ssrc = packet.header.ssrc;
    let mut out = Ingested {
        epoch: None,
        layer: None,
        keyframe: false,
    };
    match track.kind {
        MediaKind::Audio => {
            if ssrc != track.ssrc {
                // The source restarted its stream (new SSRC): subscribers re-anchor.
                track.ssrc = ssrc;
                track.epoch = epochs.fetch_add(1, Relaxed);
            }
            out.epoch = Some(track.epoch);
        }
        MediaKind::Video => {
            let layer = match track.layers.by_ssrc(ssrc) {
                Some(layer) => Some(layer),
                // Without simulcast a new SSRC is the source restarting its stream.
                None if !track.layers.is_simulcast() => Some(track.layers.open(None, ssrc)),
                None => None,
            };
            let Some(layer) = layer else { return out };
            let size = track
                .video_codec
                .filter(|_| keyframe)
                .and_then(|c| frame_size::keyframe_size(c, &packet.payload));
            // Players start, and layers switch, only at a keyframe's first packet.
            keyframe &= track.layers.starts_frame(layer, packet.header.timestamp);
            track
                .layers
                .on_packet(layer, packet.payload.len(), size, now);
            out.layer = Some(layer);
        }
    }
    out.keyframe = keyframe;
    out
}

impl Worker {
    pub(super) fn on_publisher_rtp(
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
        peer.metrics.rtp_packets_in.fetch_add(1, Relaxed);
        peer.metrics
            .rtp_bytes_in
            .fetch_add(packet.payload.len() as u64, Relaxed);
        let got = ingest(track, &mut packet, &self.epochs, now);
        if let (Some(clock), Some(_)) = (&track.clock, got.layer) {
            clock.on_packet(packet.header.ssrc, packet.header.timestamp, now);
        }
        let (kind, codec) = (track.kind, track.video_codec);
        let layer = layer_tag(&mut track.layers, got.layer, &self.epochs, now);
        let key = peer.key.clone();
        self.forward_source(key, kind, codec, got.epoch, got.keyframe, packet, layer);
    }

    /// A packet of a camera this node pulls from the table's origin node (`relay.rs`): taken in
    /// as a publisher's would be, with keyframe requests going back up the relay.
    pub(super) fn on_relay_rtp(
        &mut self,
        key: Arc<RouterKey>,
        relay: u64,
        kind: MediaKind,
        mut packet: rtc::rtp::Packet,
        now: Instant,
    ) {
        let Some(router) = self.routers.get_mut(&*key) else {
            return;
        };
        let Some(source) = router.relay.as_mut().filter(|r| r.id == relay) else {
            return;
        };
        if router.publisher.is_some() {
            // A dealer publishing on this node itself goes first.
            return;
        }
        source.metrics.rtp_packets_in.fetch_add(1, Relaxed);
        source
            .metrics
            .rtp_bytes_in
            .fetch_add(packet.payload.len() as u64, Relaxed);
        let track = match kind {
            MediaKind::Video => &mut source.video,
            MediaKind::Audio => &mut source.audio,
        };
        // Each of the pull's video streams is one layer of the camera at the origin.
        let ssrc = packet.header.ssrc;
        if kind == MediaKind::Video
            && track.layers.by_ssrc(ssrc).is_none()
            && track.layers.len() < RELAY_LAYERS
        {
            let name = format!("relay{}", track.layers.len());
            track.layers.open(Some(&name), ssrc);
        }
        let got = ingest(track, &mut packet, &self.epochs, now);
        let codec = track.video_codec;
        let layer = layer_tag(&mut track.layers, got.layer, &self.epochs, now);
        self.forward_source(key, kind, codec, got.epoch, got.keyframe, packet, layer);
    }

    /// Forwards a source's packet: audio under its `epoch`, video with its `layer`. It goes to
    /// each other worker with subscribers of the camera, and to this worker's.
    #[allow(clippy::too_many_arguments)]
    fn forward_source(
        &mut self,
        key: Arc<RouterKey>,
        kind: MediaKind,
        codec: Option<VideoCodec>,
        epoch: Option<u64>,
        keyframe: bool,
        packet: rtc::rtp::Packet,
        layer: Option<LayerTag>,
    ) {
        if epoch.is_none() && layer.is_none() {
            return;
        }
        let bits = self.remote_interest.get(&key).copied().unwrap_or(0)
            | self.relay_interest.get(&key).copied().unwrap_or(0);
        let fwd = Forward {
            kind,
            codec,
            epoch: epoch.unwrap_or(0),
            keyframe,
            packet,
            layer,
        };
        if bits != 0 {
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
        self.fan_out(key, fwd);
    }

    /// Queues a packet for [`Worker::fan_out_pending`]: packets are sent per subscriber in
    /// batches, so each subscriber's connection is drained once per batch rather than once per
    /// packet, and its state stays in cache while it takes the whole batch.
    pub(super) fn fan_out(&mut self, key: Arc<RouterKey>, fwd: Forward) {
        self.pending.push((key, fwd));
    }

    /// Sends every queued packet: per table camera, the packets are buffered for NACKs in
    /// arrival order, then each local subscriber gets all of them in order and its connection
    /// is drained once.
    pub(super) fn fan_out_pending(&mut self, now: Instant) {
        let mut batch = std::mem::take(&mut self.batch);
        while let Some((key, _)) = self.pending.first() {
            let key = Arc::clone(key);
            batch.extend(
                self.pending
                    .extract_if(.., |(k, _)| *k == key)
                    .map(|(_, fwd)| fwd),
            );
            self.fan_out_batch(&key, &batch, now);
            batch.clear();
        }
        self.batch = batch;
    }

    fn fan_out_batch(&mut self, key: &RouterKey, batch: &[Forward], now: Instant) {
        let Some(router) = self.routers.get_mut(key) else {
            return;
        };
        for fwd in batch {
            match &fwd.layer {
                Some(tag) => {
                    router.states = tag.states;
                    router.layer_buffer(tag.index as usize).insert(
                        tag.epoch,
                        fwd.codec,
                        &fwd.packet,
                    );
                }
                None => router.audio.insert(fwd.epoch, fwd.codec, &fwd.packet),
            }
        }
        let states = router.states;
        let epochs = &self.epochs;
        let mut want_layers = 0u8;
        for &sub in &router.subscribers {
            let Some(peer) = self.peers[sub].as_mut() else {
                continue;
            };
            if peer.connected_at.is_none() {
                continue;
            }
            let budget = LINK_ADAPTATION.then(|| peer.link.estimate()).flatten();
            let limits = Limits {
                budget,
                proven: budget.is_some() && peer.link.limited_by_transport_cc(),
                view: peer.view,
            };
            if !peer.relay {
                // Paced to the estimate, but never below what the player is being sent: the
                // lowest layer goes out even when nothing fits, and a pacer slower than it would
                // only queue it until its keyframes were trimmed. A probe raises it to its rate.
                let sending = peer
                    .selector
                    .current()
                    .and_then(|l| states.get(l))
                    .map_or(0, |s| u64::from(s.bitrate))
                    + AUDIO_RESERVE_BPS;
                let floor = peer
                    .prober
                    .pacing_floor(&peer.link)
                    .unwrap_or(0)
                    .max(sending);
                peer.pacer
                    .set_rate(limits.budget.map(|b| b.max(floor)), now);
                if LINK_ADAPTATION
                    && peer.prober.maybe_start(
                        &peer.link,
                        peer.selector.probe_target(),
                        sending,
                        now,
                    )
                {
                    let target = peer.link.snapshot().probing_bps;
                    peer.span.in_scope(|| {
                        debug!(
                            probe_kbps = target.map(|b| b / 1000),
                            estimate_kbps = limits.budget.map(|b| b / 1000),
                            "probing player link"
                        )
                    });
                    if !peer.pacer.listed {
                        peer.pacer.listed = true;
                        self.paced.push(sub);
                    }
                    if self.pace_at.is_none() {
                        self.pace_at = Some(now + crate::media::pacer::PACE_TICK);
                    }
                }
            }
            for (i, fwd) in batch.iter().enumerate() {
                if i > 0 && i % DRAIN_EVERY == 0 {
                    while let Some(out) = peer.pc.poll_write() {
                        self.send.push(out.transport.peer_addr, out.message);
                    }
                }
                // A relay to another node gets each layer on its own stream; a player gets the
                // layer its selector takes.
                let (out, epoch, layer) = match (fwd.kind, &fwd.layer) {
                    (MediaKind::Audio, _) => (peer.out_audio.as_mut(), fwd.epoch, None),
                    (MediaKind::Video, Some(tag)) if peer.relay => (
                        peer.out_layers.get_mut(tag.index as usize),
                        tag.epoch,
                        Some(tag.index),
                    ),
                    (MediaKind::Video, Some(tag)) => {
                        let verdict = peer.selector.on_packet(
                            &states,
                            tag.index as usize,
                            tag.epoch,
                            fwd.keyframe,
                            limits,
                            now,
                            || epochs.fetch_add(1, Relaxed),
                        );
                        want_layers |= peer.selector.poll_keyframe_request();
                        if let Some(switch) = peer.selector.poll_switch() {
                            log_switch(&peer.span, &peer.metrics, &states, switch, limits);
                        }
                        match verdict {
                            Verdict::Forward { epoch } => {
                                (peer.out_video.as_mut(), epoch, Some(tag.index))
                            }
                            Verdict::Drop => continue,
                        }
                    }
                    (MediaKind::Video, None) => continue,
                };
                let Some(out) = out else { continue };
                let Some(pt) = out.payload_type(fwd.codec) else {
                    continue;
                };
                let (seq, timestamp) = match out.stream.rewrite(
                    epoch,
                    fwd.packet.header.sequence_number,
                    fwd.packet.header.timestamp,
                    fwd.keyframe,
                    now,
                ) {
                    Rewrite::Send { seq, timestamp } => (seq, timestamp),
                    Rewrite::WaitForKeyframe => {
                        if let Some(i) = layer {
                            want_layers |= 1 << i;
                        }
                        continue;
                    }
                    Rewrite::Stale => continue,
                };
                let mut packet = fwd.packet.clone();
                if !peer.relay && fwd.codec == Some(VideoCodec::Vp8) {
                    // The player's own VP8 numbering, continuous across its layers.
                    packet.payload = peer.selector.vp8.rewrite(packet.payload, fwd.keyframe);
                }
                if fwd.kind == MediaKind::Video && out.stream.take_new_run() {
                    let map = match layer {
                        Some(i) if peer.relay => {
                            let i = usize::from(i);
                            if peer.relay_maps.len() <= i {
                                peer.relay_maps.resize_with(i + 1, Default::default);
                            }
                            let map = &mut peer.relay_maps[i];
                            map.set_stream(out.stream.ssrc);
                            map
                        }
                        _ => &mut peer.video_map,
                    };
                    map.on_run(
                        timestamp,
                        fwd.packet.header.ssrc,
                        fwd.packet.header.timestamp,
                        now,
                    );
                }
                packet.header.ssrc = out.stream.ssrc;
                packet.header.sequence_number = seq;
                packet.header.timestamp = timestamp;
                packet.header.payload_type = pt;
                let bytes = packet.payload.len() as u64;
                let sender_id = out.sender;
                if peer.pacer.is_paced() {
                    // Audio goes at once; video as the player's bucket lets it.
                    let wire = packet.payload.len() + RTP_OVERHEAD;
                    if fwd.kind == MediaKind::Audio {
                        peer.pacer.charge(wire, now);
                    } else if !peer.pacer.admit(wire, now) {
                        let dropped = peer.pacer.push((sender_id, packet), wire);
                        if dropped > 0 {
                            peer.metrics.pacer_drops.fetch_add(dropped as u64, Relaxed);
                        }
                        if !peer.pacer.listed {
                            peer.pacer.listed = true;
                            self.paced.push(sub);
                            if self.pace_at.is_none() {
                                self.pace_at = Some(now + crate::media::pacer::PACE_TICK);
                            }
                        }
                        continue;
                    }
                }
                if let Some(mut sender) = peer.pc.rtp_sender(sender_id) {
                    match sender.write_rtp(now, packet) {
                        Ok(()) => {
                            peer.metrics.rtp_packets_out.fetch_add(1, Relaxed);
                            peer.metrics.rtp_bytes_out.fetch_add(bytes, Relaxed);
                        }
                        Err(e) => peer.span.in_scope(|| debug!(error = %e, "forward refused")),
                    }
                }
            }
            if peer.video_map.due(now) || peer.relay_maps.iter().any(|m| m.due(now)) {
                send_video_maps(peer, &self.frames, key, now);
            }
            while let Some(out) = peer.pc.poll_write() {
                self.send.push(out.transport.peer_addr, out.message);
            }
            if self.send.len() >= FLUSH_AT {
                // Send what the players so far have: they need not wait for the rest of the
                // fan-out, and a keyframe for a thousand players is not held in memory at once.
                super::send_queued(&mut self.send, self.socket.get_ref());
            }
            let Some(peer) = self.peers[sub].as_mut() else {
                continue;
            };
            if peer.deadline.is_none() {
                // The first packet arms the sender-report timer.
                if let Some(t) = peer.pc.poll_timeout() {
                    peer.deadline = Some(t);
                    self.timers
                        .push(Reverse((t.max(now), sub, self.generations[sub])));
                }
            }
        }
        if want_layers != 0 {
            self.request_keyframe(key, want_layers, now);
        }
    }
}

/// Tells a player its `video.map` when its run's anchor is found or changed, and a relay those
/// of its layer streams (`video_map.rs`). A player whose `video.view` came on a WebSocket gets
/// it there (its table events come there), naming the session; else on its `control` channel.
/// One that cannot be sent is tried again shortly.
fn send_video_maps(peer: &mut Peer, frames: &FrameClocks, key: &RouterKey, now: Instant) {
    let clock = frames.camera(&key.table, &key.camera);
    let channel = peer
        .control
        .filter(|id| peer.pc.data_channel(*id).is_some());
    if peer.video_map.due(now) {
        let socket = peer.video_map.socket().cloned();
        let can_send = socket.is_some() || channel.is_some();
        if let Some(anchor) = peer.video_map.poll(clock.as_deref(), can_send, now) {
            let sent = match socket {
                Some(socket) => {
                    let text = anchor.message(None, Some(peer.session.as_str()));
                    socket
                        .try_send(Arc::from(text.as_str()))
                        .map(|()| text)
                        .map_err(|e| e.to_string())
                }
                None => send_on_channel(peer, channel, anchor.message(None, None), now),
            };
            if sent_or_retry(peer, sent) {
                peer.video_map.not_sent(now);
            }
        }
    }
    for i in 0..peer.relay_maps.len() {
        if !peer.relay_maps[i].due(now) {
            continue;
        }
        let map = &mut peer.relay_maps[i];
        if let Some(anchor) = map.poll(clock.as_deref(), channel.is_some(), now) {
            let text = anchor.message(map.stream(), None);
            let sent = send_on_channel(peer, channel, text, now);
            if sent_or_retry(peer, sent) {
                peer.relay_maps[i].not_sent(now);
            }
        }
    }
}

fn send_on_channel(
    peer: &mut Peer,
    channel: Option<rtc::data_channel::RTCDataChannelId>,
    text: String,
    now: Instant,
) -> Result<String, String> {
    match channel.and_then(|id| peer.pc.data_channel(id)) {
        Some(mut dc) => dc
            .send_text(now, &text)
            .map(|()| text)
            .map_err(|e| e.to_string()),
        None => Err("no control channel".into()),
    }
}

/// Logs a map's sending; true when it must be tried again.
fn sent_or_retry(peer: &Peer, sent: Result<String, String>) -> bool {
    match sent {
        Ok(text) => {
            peer.span.in_scope(|| debug!(map = %text, "video.map"));
            false
        }
        Err(e) => {
            peer.span
                .in_scope(|| debug!(error = %e, "video.map not sent; trying again shortly"));
            true
        }
    }
}

/// The tag of a video packet of `layer`: its index, the layer's own epoch, and what every layer
/// is doing.
fn layer_tag(
    layers: &mut Layers,
    layer: Option<usize>,
    epochs: &AtomicU64,
    now: Instant,
) -> Option<LayerTag> {
    let index = layer?;
    if index >= RELAY_LAYERS {
        return None;
    }
    let epoch = layers.epoch(index, || epochs.fetch_add(1, Relaxed))?;
    Some(LayerTag {
        index: index as u8,
        epoch,
        states: layers.states(now),
    })
}

/// Logs a change of a player's layer and counts it (switches between layers, not the start).
fn log_switch(
    span: &tracing::Span,
    metrics: &crate::metrics::TableMetrics,
    states: &LayerStates,
    switch: Switch,
    limits: Limits,
) {
    let size = |i: Option<usize>| {
        i.and_then(|i| states.get(i))
            .filter(|s| s.width > 0)
            .map(|s| format!("{}x{}", s.width, s.height))
            .unwrap_or_else(|| "?".into())
    };
    let reason = switch.reason.as_str();
    if switch.from.is_some() {
        metrics.layer_switches.fetch_add(1, Relaxed);
    }
    let (from, to) = (size(switch.from), size(Some(switch.to)));
    let estimate_kbps = limits.budget.map(|b| b / 1000);
    let view = limits.view;
    span.in_scope(|| {
        info!(%from, %to, reason, ?estimate_kbps, view_width = view.width, view_height = view.height, "player layer switch")
    });
}
