//! Feedback from subscribers: NACKs answered from the table camera's packet buffer (rewritten
//! into the subscriber's stream), and keyframe requests (PLI/FIR) passed on to the publisher,
//! throttled per table camera, through whichever worker the publisher is on.

use super::{Worker, WorkerMsg};
use crate::media::Role;
use crate::media::keyframe::VideoCodec;
use crate::media::peer::{MediaKind, OutSender, RouterKey};
use crate::media::vp8::Vp8Numbering;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// The media SSRC of a keyframe request (PLI or FIR), or None for other RTCP.
fn keyframe_request_ssrc(any: &dyn std::any::Any) -> Option<u32> {
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        return Some(pli.media_ssrc);
    }
    any.downcast_ref::<rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest>()
        .map(|fir| fir.fir.first().map_or(fir.media_ssrc, |e| e.ssrc))
}

/// The repair of source packet (`epoch`, `src_seq`) of `out`'s stream, `original` from the
/// buffers: rewritten into the subscriber's stream (and its VP8 numbering, `vp8`), on RTX when
/// negotiated (its own payload type and sequence numbers; the `RtxWrap` interceptors give it
/// its SSRC), else as the packet was. The flag says whether it is RTX.
fn repair(
    out: &mut OutSender,
    vp8: Option<&Vp8Numbering>,
    epoch: u64,
    src_seq: u16,
    codec: Option<VideoCodec>,
    original: &rtc::rtp::Packet,
) -> Option<(rtc::rtp::Packet, bool)> {
    let (seq, timestamp) =
        out.stream
            .rewrite_retransmission(epoch, src_seq, original.header.timestamp)?;
    let pt = out.payload_type(codec)?;
    let mut packet = original.clone();
    if let Some(vp8) = vp8 {
        packet.payload = vp8.renumber(packet.payload);
    }
    packet.header.ssrc = out.stream.ssrc;
    packet.header.sequence_number = seq;
    packet.header.timestamp = timestamp;
    packet.header.payload_type = pt;
    if let Some(out_rtx) = out.rtx.as_mut()
        && let Some(rtx_pt) = out_rtx.payload_type(codec)
    {
        let packet = crate::media::rtx::packet(&packet, rtx_pt, out_rtx.seq);
        out_rtx.seq = out_rtx.seq.wrapping_add(1);
        return Some((packet, true));
    }
    Some((packet, false))
}

/// The repair of a player's video packet `out_seq` (its own numbering): found through the
/// player's selector in the camera's per-layer buffers, then as [`repair`] makes it.
fn repair_video(
    out: &mut OutSender,
    selector: &crate::media::selector::Selector,
    router: &crate::media::router::Router,
    out_seq: u16,
) -> Option<(rtc::rtp::Packet, bool)> {
    let (epoch, src_seq) = out.stream.source_seq(out_seq)?;
    let (codec, original) = selector
        .source_of(epoch)
        .and_then(|(layer, source)| router.layers.get(layer)?.get(source, src_seq))?;
    let vp8 = (codec == Some(VideoCodec::Vp8)).then_some(&selector.vp8);
    repair(out, vp8, epoch, src_seq, codec, original)
}

/// How many of a player's last video packets a probe repeats, round and round.
const PROBE_DEPTH: u16 = 48;

/// How many times a repair reported lost is sent again before the player is left to ask.
const MAX_UNASKED: u8 = 2;

impl Worker {
    /// Sends again the video repairs that player `slot`'s transport-cc feedback reported lost
    /// (`rtx::RepairLog`): one atomic load when there are none.
    pub(super) fn resend_lost_repairs(&mut self, slot: usize, now: Instant) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let mut lost = std::mem::take(&mut self.lost_rtx);
        peer.link.take_lost_rtx(&mut lost);
        if lost.is_empty() {
            self.lost_rtx = lost;
            return;
        }
        let router = self.routers.get(&peer.key);
        let selector = &peer.selector;
        for rtx_seq in lost.drain(..) {
            let (Some(router), Some(out)) = (router, peer.out_video.as_mut()) else {
                break;
            };
            let Some((media_seq, unasked)) = out.rtx.as_mut().and_then(|r| r.repairs.lost(rtx_seq))
            else {
                continue;
            };
            if unasked >= MAX_UNASKED || peer.pacer.in_debt(now) {
                continue;
            }
            let Some((packet, true)) = repair_video(out, selector, router, media_seq) else {
                continue;
            };
            if let Some(rtx) = out.rtx.as_mut() {
                rtx.repairs
                    .sent(packet.header.sequence_number, media_seq, unasked + 1);
            }
            peer.pacer
                .charge(packet.payload.len() + super::fanout::RTP_OVERHEAD, now);
            if let Some(mut sender) = peer.pc.rtp_sender(out.sender)
                && sender.write_rtp(now, packet).is_ok()
            {
                peer.metrics.retransmissions.fetch_add(1, Relaxed);
                peer.metrics.rtx_packets.fetch_add(1, Relaxed);
                peer.metrics.rtx_unasked.fetch_add(1, Relaxed);
            }
        }
        self.lost_rtx = lost;
        while let Some(out) = peer.pc.poll_write() {
            self.send.push(out.transport.peer_addr, out.message);
        }
    }

    /// Sends the duplicates a probe of player `slot`'s link grants now (`probe.rs`): RTX copies
    /// of its last video packets, which it discards. Returns whether the probe goes on.
    pub(super) fn send_probe(&mut self, slot: usize, now: Instant) -> bool {
        let Some(peer) = self.peers[slot].as_mut() else {
            return false;
        };
        let budget = peer.prober.take(&peer.link, now);
        if !peer.prober.active() {
            return false;
        }
        if peer.pacer.saturated(now) {
            // Video first; the probe's bytes are not owed.
            return true;
        }
        let Some(router) = self.routers.get(&peer.key) else {
            return true;
        };
        let selector = &peer.selector;
        let Some(out) = peer.out_video.as_mut().filter(|o| o.rtx.is_some()) else {
            return true;
        };
        let Some(last) = out.stream.last_seq() else {
            return true;
        };
        let sender_id = out.sender;
        let mut sent = 0usize;
        let mut tries = 0;
        while sent < budget && tries < PROBE_DEPTH {
            tries += 1;
            peer.prober.cursor = (peer.prober.cursor + 1) % PROBE_DEPTH;
            let out_seq = last.wrapping_sub(peer.prober.cursor);
            let Some((packet, _)) = repair_video(out, selector, router, out_seq) else {
                continue;
            };
            let wire = packet.payload.len() + super::fanout::RTP_OVERHEAD;
            peer.pacer.charge(wire, now);
            if let Some(mut sender) = peer.pc.rtp_sender(sender_id)
                && sender.write_rtp(now, packet).is_ok()
            {
                sent += wire;
                tries = 0;
                peer.metrics.probe_packets.fetch_add(1, Relaxed);
            }
        }
        peer.prober.owe(sent.saturating_sub(budget));
        while let Some(out) = peer.pc.poll_write() {
            self.send.push(out.transport.peer_addr, out.message);
        }
        true
    }

    /// A dealer's sender reports: each maps one of its layers' RTP clock to the dealer's NTP
    /// clock, for the camera's frame clock (`frame_clock.rs`).
    pub(super) fn on_publisher_rtcp(
        &mut self,
        slot: usize,
        packets: &[Box<dyn rtc::rtcp::Packet>],
    ) {
        let Some(peer) = self.peers[slot].as_ref() else {
            return;
        };
        if peer.role != Role::Publisher {
            return;
        }
        for p in packets {
            let Some(sr) = p
                .as_any()
                .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
            else {
                continue;
            };
            for clock in peer.in_tracks.values().filter_map(|t| t.clock.as_ref()) {
                clock.on_sender_report(sr.ssrc, sr.ntp_time, sr.rtp_time);
            }
        }
    }

    pub(super) fn on_subscriber_rtcp(
        &mut self,
        slot: usize,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        if peer.role != Role::Subscriber {
            return;
        }
        let key = peer.key.clone();
        // Keyframes wanted, of these layers: a player's current one, a relay's streams'.
        let mut layers_wanted: u8 = 0;
        for p in packets {
            let any = p.as_any();
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                peer.metrics.nacks_received.fetch_add(1, Relaxed);
                let Some(router) = self.routers.get(&key) else {
                    continue;
                };
                let ssrc = nack.media_ssrc;
                // A player's video is one of the camera's layers, the one its selector
                // forwards; a relay's streams are one layer each.
                let video = peer
                    .out_video
                    .as_ref()
                    .is_some_and(|o| o.stream.ssrc == ssrc);
                let relay_layer = peer.out_layers.iter().position(|o| o.stream.ssrc == ssrc);
                let selector = &peer.selector;
                let out = if video {
                    peer.out_video.as_mut()
                } else if let Some(i) = relay_layer {
                    peer.out_layers.get_mut(i)
                } else {
                    peer.out_audio.as_mut().filter(|o| o.stream.ssrc == ssrc)
                };
                let Some(out) = out else { continue };
                let sender_id = out.sender;
                for pair in &nack.nacks {
                    for lost in pair.packet_list() {
                        let Some((epoch, src_seq)) = out.stream.source_seq(lost) else {
                            continue;
                        };
                        let found = if video {
                            selector.source_of(epoch).and_then(|(layer, source)| {
                                router.layers.get(layer)?.get(source, src_seq)
                            })
                        } else if let Some(i) = relay_layer {
                            router.layers.get(i).and_then(|b| b.get(epoch, src_seq))
                        } else {
                            router.audio.get(epoch, src_seq)
                        };
                        let Some((codec, original)) = found else {
                            continue;
                        };
                        if peer.pacer.in_debt(now) {
                            // The link is behind already: the player asks again.
                            continue;
                        }
                        let vp8 =
                            (video && codec == Some(VideoCodec::Vp8)).then_some(&selector.vp8);
                        let Some((packet, rtx)) = repair(out, vp8, epoch, src_seq, codec, original)
                        else {
                            continue;
                        };
                        if let Some(log) = out.rtx.as_mut().filter(|_| rtx && video) {
                            log.repairs.sent(packet.header.sequence_number, lost, 0);
                        }
                        // Late already: not held by the pacer, but its bytes count.
                        peer.pacer
                            .charge(packet.payload.len() + super::fanout::RTP_OVERHEAD, now);
                        if let Some(mut sender) = peer.pc.rtp_sender(sender_id)
                            && sender.write_rtp(now, packet).is_ok()
                        {
                            peer.metrics.retransmissions.fetch_add(1, Relaxed);
                            if rtx {
                                peer.metrics.rtx_packets.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }
            } else if let Some(media_ssrc) = keyframe_request_ssrc(any) {
                peer.metrics.plis_received.fetch_add(1, Relaxed);
                match peer
                    .out_layers
                    .iter()
                    .position(|o| o.stream.ssrc == media_ssrc)
                {
                    Some(i) => layers_wanted |= 1 << i,
                    // A player's: of the layer it gets, or is waiting for (every layer's
                    // before it has one).
                    None => {
                        layers_wanted |= peer
                            .selector
                            .current()
                            .or(peer.selector.pending())
                            .map_or(0xff, |l| 1 << l)
                    }
                }
            }
        }
        while let Some(out) = peer.pc.poll_write() {
            self.send.push(out.transport.peer_addr, out.message);
        }
        if layers_wanted != 0 {
            self.request_keyframe(&key, layers_wanted, now);
        }
    }

    /// Asks the source of `key` for a keyframe of each layer whose bit `layers` sets (every
    /// layer for 0), throttled per table camera: one request for all of them, so the throttle
    /// lets a relay's start through whole.
    pub(super) fn request_keyframe(&mut self, key: &RouterKey, layers: u8, now: Instant) {
        let Some(router) = self.routers.get_mut(key) else {
            return;
        };
        if !router.allow_keyframe_request(now) {
            return;
        }
        if router.publisher.is_some() || router.relay.is_some() {
            self.keyframe_from_source(key, layers, now);
            return;
        }
        for (i, w) in self.workers.iter().enumerate() {
            if i != self.index {
                let _ = w.try_send(WorkerMsg::KeyframeRequest {
                    key: key.clone(),
                    layers,
                });
            }
        }
    }

    /// Sends a keyframe request to the source of `key` on this worker (its publisher, or the
    /// pull from the origin node), already throttled. `layers` as for [`Self::request_keyframe`].
    pub(super) fn keyframe_from_source(&mut self, key: &RouterKey, layers: u8, now: Instant) {
        let Some(router) = self.routers.get(key) else {
            return;
        };
        match (router.publisher, router.relay.as_ref()) {
            (Some(publisher), _) => self.send_pli(publisher, layers, now),
            (None, Some(relay)) => {
                // Each layer of this node's copy is one of the pull's streams: asking for it
                // asks the origin for that layer.
                for ssrc in relay.video.keyframe_ssrcs_of(layers) {
                    let _ = relay.keyframes.send(ssrc);
                }
            }
            (None, None) => {}
        }
    }

    /// Asks the publisher in `slot` for a keyframe of the layers `layers` names (see
    /// [`Self::request_keyframe`]).
    pub(super) fn send_pli(&mut self, slot: usize, layers: u8, now: Instant) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let video: Vec<(rtc::rtp_transceiver::RTCRtpReceiverId, u32)> = peer
            .in_tracks
            .values()
            .filter(|t| t.kind == MediaKind::Video)
            .flat_map(|t| {
                t.keyframe_ssrcs_of(layers)
                    .map(move |ssrc| (t.receiver, ssrc))
            })
            .collect();
        for (receiver, media_ssrc) in video {
            self.send_pli_to(slot, receiver, media_ssrc, now);
        }
    }

    /// Sends one PLI for `media_ssrc` to the publisher in `slot`.
    pub(super) fn send_pli_to(
        &mut self,
        slot: usize,
        receiver: rtc::rtp_transceiver::RTCRtpReceiverId,
        media_ssrc: u32,
        now: Instant,
    ) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        if let Some(mut r) = peer.pc.rtp_receiver(receiver) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            if r.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                peer.metrics.plis_sent.fetch_add(1, Relaxed);
            }
        }
        while let Some(out) = peer.pc.poll_write() {
            self.send.push(out.transport.peer_addr, out.message);
        }
    }
}
