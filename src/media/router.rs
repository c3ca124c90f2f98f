//! A table camera's media on one worker: its publisher (when it is on this worker), its local
//! subscribers, the packet buffers that answer NACKs, and the keyframe-request throttle.
//!
//! Forwarding is one map lookup (the router) and then a loop over its subscribers.

use super::keyframe::{PliThrottle, VideoCodec};
use super::peer::{InTrack, MediaKind};
use super::simulcast::LayerStates;
use crate::metrics::TableMetrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One RTP packet on its way from a publisher to subscribers.
#[derive(Debug, Clone)]
pub struct Forward {
    pub kind: MediaKind,
    pub codec: Option<VideoCodec>,
    /// Audio: identifies the source (publisher session and SSRC); see `subscriber.rs`.
    /// Video carries its layer's in `layer`.
    pub epoch: u64,
    /// It starts a keyframe (of its layer, for video).
    pub keyframe: bool,
    /// As the source sent it, less the header extensions of its leg.
    pub packet: rtc::rtp::Packet,
    /// Video: which layer it is. Each player's selector picks its layer among them, and a relay
    /// to another node carries every layer on its own stream.
    pub layer: Option<LayerTag>,
}

/// A video packet's layer.
#[derive(Debug, Clone)]
pub struct LayerTag {
    pub index: u8,
    /// The layer's own source epoch (`simulcast::Layers::epoch`).
    pub epoch: u64,
    /// What every layer of the camera was doing when the packet came in.
    pub states: LayerStates,
}

/// Layers a relay to another node carries at most: one video section of its offer each.
pub const RELAY_LAYERS: usize = super::simulcast::MAX_LAYERS;

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
            clock: None,
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
    /// Per video layer, for NACKs (players' and relays').
    pub layers: Vec<PacketBuffer>,
    /// What the camera's layers are doing, from the latest video packet.
    pub states: LayerStates,
    buffer_packets: usize,
    pub audio: PacketBuffer,
    /// Throttles keyframe requests going toward the publisher.
    pub pli: PliThrottle,
}

impl Router {
    pub fn new(buffer_packets: usize, pli_interval: Duration) -> Self {
        Self {
            publisher: None,
            relay: None,
            subscribers: Vec::new(),
            relays: 0,
            layers: Vec::new(),
            states: LayerStates::default(),
            buffer_packets,
            audio: PacketBuffer::new(buffer_packets.min(256)),
            pli: PliThrottle::new(pli_interval),
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
