//! Datagrams in, peer connections driven: demultiplexing one datagram to its session (STUN by
//! ICE ufrag, the rest by source address), taking everything a connection gives back after an
//! input (datagrams to send, events, RTP, RTCP, data-channel messages), and the deadline heap
//! that wakes each connection when it asks to be.

use super::Worker;
use super::control::control_channel;
use crate::media::demux::{self, Kind, NewPath};
use crate::media::frame_clock::{FrameClock, VIDEO_CLOCK_RATE};
use crate::media::keyframe;
use crate::media::peer::{InTrack, MediaKind};
use crate::media::simulcast::Layers;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tracing::{debug, info};

impl Worker {
    pub(super) fn on_datagram(
        &mut self,
        from: SocketAddr,
        dst: Option<IpAddr>,
        data: &[u8],
        now: Instant,
    ) {
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
        self.rx_buf.extend_from_slice(data);
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: self.rx_buf.split(),
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

    /// Takes everything a peer connection has to give after an input, and acts on it.
    pub(super) fn drive(&mut self, slot: usize, now: Instant) {
        // Reused across calls (taken, so a nested call would just start an empty one).
        let mut rtp = std::mem::take(&mut self.drive_rtp);
        let mut rtcp = std::mem::take(&mut self.drive_rtcp);
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
                        // anchoring and the packet buffer keeps answering NACKs. A simulcast
                        // track opens once per layer (rid), all under one track id.
                        let rid = init.rid.as_deref().filter(|r| !r.is_empty());
                        if let Some(track) = peer.in_tracks.get_mut(&init.track_id) {
                            match track.kind {
                                MediaKind::Audio if track.ssrc != init.ssrc => {
                                    track.ssrc = init.ssrc;
                                    track.epoch = self.epochs.fetch_add(1, Relaxed);
                                }
                                MediaKind::Audio => {}
                                MediaKind::Video if track.layers.by_ssrc(init.ssrc).is_none() => {
                                    // A layer with a new SSRC is a new source: a new epoch,
                                    // which players start at its first keyframe.
                                    track.layers.open(rid, init.ssrc);
                                }
                                MediaKind::Video => {}
                            }
                            peer.span.in_scope(|| info!(track = %init.track_id, rid = rid.unwrap_or("-"), ssrc = init.ssrc, "publisher layer open"));
                        } else if let Some(receiver) = peer.pc.rtp_receiver(init.receiver_id) {
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
                            peer.span.in_scope(|| info!(track = %init.track_id, ?kind, %mime, rid = rid.unwrap_or("-"), ssrc = init.ssrc, "publisher track open"));
                            let mut layers = Layers::default();
                            let mut clock = None;
                            if kind == MediaKind::Video {
                                layers.open(rid, init.ssrc);
                                let c = Arc::new(FrameClock::new(VIDEO_CLOCK_RATE));
                                self.frames
                                    .publish(&peer.key.table, &peer.key.camera, c.clone());
                                clock = Some(c);
                            }
                            peer.in_tracks.insert(
                                init.track_id.clone(),
                                InTrack {
                                    kind,
                                    video_codec,
                                    receiver: init.receiver_id,
                                    ssrc: init.ssrc,
                                    epoch: self.epochs.fetch_add(1, Relaxed),
                                    layers,
                                    clock,
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
                                peer.video_map.on_channel_open(now);
                                for map in &mut peer.relay_maps {
                                    map.on_channel_open(now);
                                }
                                // A relay's channel carries its video.maps to the edge node,
                                // and nothing of the table's.
                                if !peer.relay {
                                    self.control.opened(control_channel(peer));
                                }
                            }
                        }
                    }
                    RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(id))
                        if peer.control == Some(id) =>
                    {
                        peer.control = None;
                        peer.span.in_scope(|| info!("control channel closed"));
                        if !peer.relay {
                            self.control.closed(control_channel(peer));
                        }
                    }
                    _ => {}
                }
            }
            while let Some(msg) = peer.pc.poll_read() {
                match msg.message {
                    RTCMessage::RtpPacket(track_id, packet) => rtp.push((track_id, packet)),
                    RTCMessage::RtcpPacket(_, packets) => rtcp.extend(packets),
                    RTCMessage::DataChannelMessage(id, message)
                        if Some(id) == peer.control && !peer.relay =>
                    {
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
        for (track_id, packet) in rtp.drain(..) {
            self.on_publisher_rtp(slot, &track_id, packet, now);
        }
        if !rtcp.is_empty() {
            self.on_publisher_rtcp(slot, &rtcp);
            self.on_subscriber_rtcp(slot, &rtcp, now);
            rtcp.clear();
        }
        self.resend_lost_repairs(slot, now);
        self.drive_rtp = rtp;
        self.drive_rtcp = rtcp;
        if let Some(reason) = close_reason {
            self.remove(slot, reason);
        }
    }

    pub(super) fn schedule(&mut self, slot: usize, now: Instant) {
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

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _, _))| *t);
        match (timer, self.pace_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends what the paced players' buckets let through now (`pacer.rs`), and sets the next
    /// pacing round while any player still has packets waiting.
    pub(super) fn run_pacers(&mut self, now: Instant) {
        if self.pace_at.is_some_and(|t| t > now) {
            return;
        }
        self.pace_at = None;
        let mut slots = std::mem::take(&mut self.paced);
        slots.retain(|&slot| {
            let Some(peer) = self.peers[slot].as_mut() else {
                return false;
            };
            while let Some((sender_id, packet)) = peer.pacer.pop_ready(now) {
                let bytes = packet.payload.len() as u64;
                if let Some(mut sender) = peer.pc.rtp_sender(sender_id)
                    && sender.write_rtp(now, packet).is_ok()
                {
                    peer.metrics.rtp_packets_out.fetch_add(1, Relaxed);
                    peer.metrics.rtp_bytes_out.fetch_add(bytes, Relaxed);
                }
            }
            while let Some(out) = peer.pc.poll_write() {
                self.send.push(out.transport.peer_addr, out.message);
            }
            // A probe's duplicates after the video: they fill what the bucket has left.
            let probing = peer.prober.active() && self.send_probe(slot, now);
            let Some(peer) = self.peers[slot].as_mut() else {
                return false;
            };
            peer.pacer.listed = !peer.pacer.is_empty() || probing;
            peer.pacer.listed
        });
        if !slots.is_empty() {
            self.pace_at = Some(now + crate::media::pacer::PACE_TICK);
        }
        slots.append(&mut self.paced);
        self.paced = slots;
    }

    pub(super) fn run_timers(&mut self, now: Instant) {
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
}
