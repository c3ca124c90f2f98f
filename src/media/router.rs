//! A table camera's media on one worker: its publisher (when it is on this worker), its local
//! subscribers, the packet buffers that answer NACKs, and the keyframe-request throttle.
//!
//! Forwarding is one map lookup (the router) and then a loop over its subscribers.

use super::keyframe::{PliThrottle, VideoCodec};
use super::peer::{InTrack, MediaKind};
use crate::metrics::TableMetrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One RTP packet on its way from a publisher to subscribers.
#[derive(Debug, Clone)]
pub struct Forward {
    pub kind: MediaKind,
    pub codec: Option<VideoCodec>,
    /// Identifies the source (publisher session and SSRC, or for video the forwarded layer's
    /// run); see `subscriber.rs`. Meaningful only when `selected`.
    pub epoch: u64,
    /// Players get it: audio, or the video layer the camera's selector forwards. A packet of
    /// another layer travels only to relays (`layer`).
    pub selected: bool,
    /// It starts a keyframe (of its layer, for video).
    pub keyframe: bool,
    /// As players get it (VP8 renumbered for the camera when `selected`).
    pub packet: rtc::rtp::Packet,
    /// Video, while another node relays the camera: which layer it is, for the relays' streams.
    pub layer: Option<LayerTag>,
}

/// A video packet's layer, as a relay to another node carries it: every layer on its own
/// stream, with the publisher's own payload (the edge numbers VP8 for its players itself).
#[derive(Debug, Clone)]
pub struct LayerTag {
    pub index: u8,
    /// The layer's own source epoch (`simulcast::Layers::epoch`).
    pub epoch: u64,
    /// The publisher's payload when `packet`'s was rewritten for the players.
    pub original: Option<bytes::Bytes>,
}

impl Forward {
    /// The packet as a relay's layer stream carries it.
    pub fn relay_packet(&self) -> rtc::rtp::Packet {
        let mut packet = self.packet.clone();
        if let Some(original) = self.layer.as_ref().and_then(|l| l.original.as_ref()) {
            packet.payload = original.clone();
        }
        packet
    }
}

/// Layers a relay to another node carries at most: one video section of its offer each.
/// Browsers' and OBS's simulcast send at most three.
pub const RELAY_LAYERS: usize = 3;

/// Recent packets of one track, by sequence number, for answering NACKs.
/// Holds `rtp::Packet`s whose payloads are shared `Bytes`: no copy per subscriber.
pub struct PacketBuffer {
    slots: Vec<Option<(u64, Option<VideoCodec>, rtc::rtp::Packet)>>,
    mask: usize,
}

impl PacketBuffer {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(16, 1 << 15).next_power_of_two();
        Self {
            slots: vec![None; capacity],
            mask: capacity - 1,
        }
    }

    pub fn insert(&mut self, epoch: u64, codec: Option<VideoCodec>, packet: &rtc::rtp::Packet) {
        let i = packet.header.sequence_number as usize & self.mask;
        self.slots[i] = Some((epoch, codec, packet.clone()));
    }

    /// The buffered packet `seq` of source `epoch`, with its codec.
    pub fn get(&self, epoch: u64, seq: u16) -> Option<(Option<VideoCodec>, &rtc::rtp::Packet)> {
        match &self.slots[seq as usize & self.mask] {
            Some((e, c, p)) if *e == epoch && p.header.sequence_number == seq => Some((*c, p)),
            _ => None,
        }
    }
}

/// A camera this node pulls from the table's origin node (the cascade, `relay.rs`), taken in on
/// one worker as a publisher's tracks would be.
pub struct RelaySource {
    /// Which pull it is: a newer pull of the same camera replaces it.
    pub id: u64,
    pub video: InTrack,
    pub audio: InTrack,
    /// Asks the pull for a keyframe from the origin, of the layer with this SSRC (the origin's
    /// SSRC for that layer's stream).
    pub keyframes: mpsc::UnboundedSender<u32>,
    pub metrics: Arc<TableMetrics>,
    pub span: tracing::Span,
}

impl RelaySource {
    pub fn new(
        id: u64,
        keyframes: mpsc::UnboundedSender<u32>,
        metrics: Arc<TableMetrics>,
        span: tracing::Span,
    ) -> Self {
        let track = |kind| InTrack {
            kind,
            video_codec: None,
            receiver: Default::default(),
            ssrc: 0,
            epoch: 0,
            layers: Default::default(),
            selector: Default::default(),
        };
        Self {
            id,
            video: track(MediaKind::Video),
            audio: track(MediaKind::Audio),
            keyframes,
            metrics,
            span,
        }
    }
}

/// Per-worker state of one table camera.
pub struct Router {
    /// Slot of the publisher session, when it runs on this worker.
    pub publisher: Option<usize>,
    /// The pull from the origin node, when this worker takes it in.
    pub relay: Option<RelaySource>,
    /// Slots of this worker's subscriber sessions.
    pub subscribers: Vec<usize>,
    /// How many of them are relays to other nodes.
    pub relays: usize,
    pub video: PacketBuffer,
    /// Per video layer, for relays' NACKs (their streams are per layer); empty without relays.
    pub layers: Vec<PacketBuffer>,
    buffer_packets: usize,
    pub audio: PacketBuffer,
    /// Throttles keyframe requests going toward the publisher.
    pub pli: PliThrottle,
    /// The camera's VP8 numbering as its players see it (`vp8.rs`); it outlives publishers,
    /// so a dealer who reconnects continues it too.
    pub vp8: crate::media::vp8::Vp8Numbering,
}

impl Router {
    pub fn new(buffer_packets: usize, pli_interval: Duration) -> Self {
        Self {
            publisher: None,
            relay: None,
            subscribers: Vec::new(),
            relays: 0,
            video: PacketBuffer::new(buffer_packets),
            layers: Vec::new(),
            buffer_packets,
            audio: PacketBuffer::new(buffer_packets.min(256)),
            pli: PliThrottle::new(pli_interval),
            vp8: Default::default(),
        }
    }

    pub fn buffer(&mut self, kind: MediaKind) -> &mut PacketBuffer {
        match kind {
            MediaKind::Video => &mut self.video,
            MediaKind::Audio => &mut self.audio,
        }
    }

    /// The NACK buffer of video layer `i`, made on first use.
    pub fn layer_buffer(&mut self, i: usize) -> &mut PacketBuffer {
        while self.layers.len() <= i {
            self.layers.push(PacketBuffer::new(self.buffer_packets));
        }
        &mut self.layers[i]
    }

    pub fn is_idle(&self) -> bool {
        self.publisher.is_none() && self.relay.is_none() && self.subscribers.is_empty()
    }

    pub fn allow_keyframe_request(&mut self, now: Instant) -> bool {
        self.pli.allow(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> rtc::rtp::Packet {
        let mut p = rtc::rtp::Packet::default();
        p.header.sequence_number = seq;
        p
    }

    #[test]
    fn buffer_answers_only_for_the_same_epoch_and_sequence() {
        let mut b = PacketBuffer::new(16);
        b.insert(1, None, &pkt(5));
        assert!(b.get(1, 5).is_some());
        assert!(
            b.get(2, 5).is_none(),
            "a packet of an older source is never resent"
        );
        b.insert(1, None, &pkt(21)); // same slot, newer packet
        assert!(b.get(1, 5).is_none());
        assert!(b.get(1, 21).is_some());
    }
}
