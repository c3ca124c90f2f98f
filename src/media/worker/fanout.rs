//! Publisher RTP → router → subscribers: a publisher's packet is stripped of its leg's header
//! extensions, marked if it starts a keyframe, handed once to each other worker with subscribers
//! of the table camera, buffered for NACKs and rewritten into each local subscriber's stream.

use super::{Worker, WorkerMsg};
use crate::media::Role;
use crate::media::keyframe;
use crate::media::peer::{MediaKind, RouterKey};
use crate::media::router::Forward;
use crate::media::subscriber::Rewrite;
use rtc::sansio::Protocol;
use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tracing::debug;

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
    pub(super) fn fan_out(&mut self, key: &RouterKey, fwd: &Forward, now: Instant) {
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
}
