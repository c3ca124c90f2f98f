//! Transport-wide congestion control towards a player, in one wire-most interceptor.
//!
//! It numbers every RTP packet that leaves (media, RTX repairs and probes alike: all are bytes
//! the link must carry) in the `transport-cc` header extension, keeps what left in a send
//! history, resolves the player's transport-cc feedback against it, and hands the verdicts to the
//! link estimator (`estimate.rs`).
//!
//! `rtc` has the same as two interceptors, a numbering one and a history one. This is one, for
//! the per-packet cost of a node fanning out to hundreds of players:
//!
//! - one hand-over per packet instead of two;
//! - the history is a ring indexed by the transport-wide number. Every number handed out here
//!   is recorded, so the ring is dense and feedback finds its packet by a subtraction, where a
//!   history keyed by hash maps inserts and removes three entries per packet;
//! - the extension's two bytes are cut from a shared slab instead of allocated per packet;
//! - RTX packets are recognised on their own SSRC, so they need no trip back to the media SSRC
//!   to be numbered (`rtx.rs`).
//!
//! A repair on RTX that the feedback reports lost is passed to the worker, which sends it again
//! (`rtx::RepairLog`): a player does not always ask twice.
//!
//! Wire-most, so the departure it records is the moment the packet left, after the worker's
//! pacer held it.

use super::estimate::LinkStats;
use super::rtx::RtxRoute;
use bytes::{BufMut, BytesMut};
use rtc::interceptor::{
    BandwidthEstimator, Interceptor, Packet, PacketReport, StreamInfo, TaggedPacket, convert_twcc,
};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `a=extmap` URI of the transport-wide sequence number.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// How long a packet no feedback has named yet is kept: several round trips on any path worth
/// estimating, and feedback comes every few tens of milliseconds.
const HORIZON: Duration = Duration::from_secs(2);

/// At most this many packets in the history: half the 16-bit number space, so a number in
/// feedback names one packet only.
const MAX_HISTORY: usize = 1 << 15;

/// Bytes per slab the extensions are cut from (two each).
const SLAB: usize = 4096;

/// One packet that left.
#[derive(Debug, Clone, Copy)]
struct Sent {
    ssrc: u32,
    seq: u16,
    size: usize,
    departure: Instant,
    arrived: bool,
    arrival: Option<Duration>,
}

/// What left, in transport-wide order: `sent[i]` carried number `first + i`.
#[derive(Debug, Default)]
struct SendRing {
    first: u16,
    sent: VecDeque<Sent>,
    /// How many packets from the front have a verdict to hand over: up to and including the
    /// newest one reported arrived. Older ones not reported by then are lost.
    settled: usize,
}

impl SendRing {
    fn push(&mut self, number: u16, sent: Sent) {
        if self.sent.is_empty() {
            self.first = number;
        }
        debug_assert_eq!(number, self.first.wrapping_add(self.sent.len() as u16));
        if self.sent.len() == MAX_HISTORY {
            self.pop_front();
        }
        self.sent.push_back(sent);
    }

    fn pop_front(&mut self) -> Option<Sent> {
        let sent = self.sent.pop_front()?;
        self.first = self.first.wrapping_add(1);
        self.settled = self.settled.saturating_sub(1);
        Some(sent)
    }

    /// Applies one packet's verdict from feedback; a number the ring does not hold (before the
    /// first packet, or pruned) says nothing.
    fn acknowledge(&mut self, number: u16, arrived: bool, arrival: Option<Duration>) {
        let i = usize::from(number.wrapping_sub(self.first));
        let Some(sent) = self.sent.get_mut(i) else {
            return;
        };
        sent.arrived = arrived;
        sent.arrival = arrival;
        if arrived {
            self.settled = self.settled.max(i + 1);
        }
    }

    /// Moves every settled packet into `out`, in send order.
    fn take(&mut self, out: &mut Vec<PacketReport>) {
        while self.settled > 0 {
            let number = self.first;
            let Some(s) = self.pop_front() else { break };
            out.push(PacketReport {
                ssrc: s.ssrc,
                id: 0,
                rtp_sequence_number: s.seq,
                is_twcc: true,
                twcc_sequence_number: number,
                size: s.size,
                arrived: s.arrived,
                departure: s.departure,
                arrival: s.arrival,
                ecn: Ecn::NotEct,
            });
        }
    }

    /// Forgets unsettled packets that left before `cutoff`: their feedback was lost, or never
    /// came.
    fn prune(&mut self, cutoff: Instant) {
        while self.settled == 0 && self.sent.front().is_some_and(|s| s.departure < cutoff) {
            self.pop_front();
        }
    }
}

/// Numbers departing packets, keeps them, and feeds the estimator (see the module doc).
pub struct TransportCc<E: BandwidthEstimator> {
    estimator: E,
    route: Arc<RtxRoute>,
    link: Arc<LinkStats>,
    /// The extension id per sending SSRC (the bound streams and their RTX SSRCs).
    streams: Vec<(u32, u8)>,
    next: u16,
    ring: SendRing,
    slab: BytesMut,
    /// Reused for each feedback's verdicts.
    reports: Vec<PacketReport>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl<E: BandwidthEstimator> TransportCc<E> {
    /// Feeds `estimator`; `route` names the RTX SSRC; lost repairs go to `link`.
    pub fn new(estimator: E, route: Arc<RtxRoute>, link: Arc<LinkStats>) -> Self {
        Self {
            estimator,
            route,
            link,
            streams: Vec::new(),
            next: rand::random::<u16>(),
            ring: SendRing::default(),
            slab: BytesMut::new(),
            reports: Vec::new(),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn extension_id(&self, ssrc: u32, payload_type: u8) -> Option<u8> {
        let find = |ssrc| self.streams.iter().find(|s| s.0 == ssrc).map(|s| s.1);
        find(ssrc).or_else(|| {
            let media = self.route.media_ssrc_for(ssrc, payload_type);
            (media != ssrc).then(|| find(media)).flatten()
        })
    }

    /// The extension's two bytes, cut from the slab.
    fn number(&mut self, n: u16) -> bytes::Bytes {
        if self.slab.capacity() < 2 {
            self.slab = BytesMut::with_capacity(SLAB);
        }
        self.slab.put_u16(n);
        self.slab.split_to(2).freeze()
    }
}

impl<E: BandwidthEstimator> Protocol<TaggedPacket, TaggedPacket, ()> for TransportCc<E> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let mut fed = false;
            for p in packets {
                if let Some(feedback) = p.as_any().downcast_ref::<TransportLayerCc>() {
                    for ack in convert_twcc(feedback) {
                        self.ring
                            .acknowledge(ack.sequence_number, ack.arrived, ack.arrival);
                    }
                    fed = true;
                }
            }
            if fed {
                let mut reports = std::mem::take(&mut self.reports);
                reports.clear();
                self.ring.take(&mut reports);
                self.estimator.on_reports(msg.now, &reports);
                if reports.iter().any(|r| !r.arrived) {
                    let route = &self.route;
                    self.link.rtx_lost(
                        reports
                            .iter()
                            .filter(|r| !r.arrived && route.is_rtx_ssrc(r.ssrc))
                            .map(|r| r.rtp_sequence_number),
                    );
                }
                self.reports = reports;
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet
            && let Some(id) = self.extension_id(packet.header.ssrc, packet.header.payload_type)
        {
            let n = self.next;
            let ext = self.number(n);
            if packet.header.set_extension(id, ext).is_ok() {
                self.next = n.wrapping_add(1);
                self.ring
                    .prune(msg.now.checked_sub(HORIZON).unwrap_or(msg.now));
                self.ring.push(
                    n,
                    Sent {
                        ssrc: packet.header.ssrc,
                        seq: packet.header.sequence_number,
                        size: packet.marshal_size(),
                        departure: msg.now,
                        arrived: false,
                        arrival: None,
                    },
                );
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl<E: BandwidthEstimator> Interceptor for TransportCc<E> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let Some(id) = info
            .rtp_header_extensions
            .iter()
            .find(|e| e.uri == TRANSPORT_CC_URI)
            .and_then(|e| u8::try_from(e.id).ok())
        else {
            return;
        };
        for ssrc in std::iter::once(info.ssrc).chain(info.ssrc_rtx) {
            self.streams.retain(|s| s.0 != ssrc);
            self.streams.push((ssrc, id));
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams
            .retain(|s| s.0 != info.ssrc && Some(s.0) != info.ssrc_rtx);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(departure: Instant) -> Sent {
        Sent {
            ssrc: 1,
            seq: 0,
            size: 1200,
            departure,
            arrived: false,
            arrival: None,
        }
    }

    #[test]
    fn feedback_settles_packets_up_to_the_newest_arrived_across_the_wrap() {
        let t0 = Instant::now();
        let mut ring = SendRing::default();
        for n in 0..6u16 {
            ring.push(65533u16.wrapping_add(n), sent(t0));
        }
        // 65533 arrived, 65534 lost, 65535 and 0 arrived; 1 and 2 not reported yet.
        ring.acknowledge(65533, true, Some(Duration::from_millis(5)));
        ring.acknowledge(65534, false, None);
        ring.acknowledge(65535, true, Some(Duration::from_millis(7)));
        ring.acknowledge(0, true, Some(Duration::from_millis(8)));
        ring.acknowledge(40000, true, Some(Duration::ZERO)); // not in the ring: ignored
        let mut out = Vec::new();
        ring.take(&mut out);
        let numbers: Vec<(u16, bool)> = out
            .iter()
            .map(|r| (r.twcc_sequence_number, r.arrived))
            .collect();
        assert_eq!(
            numbers,
            [(65533, true), (65534, false), (65535, true), (0, true)]
        );
        assert_eq!(ring.first, 1);
        assert_eq!(ring.sent.len(), 2);
        out.clear();
        ring.take(&mut out);
        assert!(out.is_empty(), "nothing new settled");
    }

    #[test]
    fn loss_alone_settles_nothing_and_old_unsettled_packets_are_pruned() {
        let t0 = Instant::now();
        let mut ring = SendRing::default();
        for n in 10..14u16 {
            ring.push(n, sent(t0 + Duration::from_millis(u64::from(n))));
        }
        ring.acknowledge(10, false, None);
        let mut out = Vec::new();
        ring.take(&mut out);
        assert!(out.is_empty());
        ring.prune(t0 + Duration::from_millis(12));
        assert_eq!(ring.first, 12);
        ring.acknowledge(13, true, Some(Duration::ZERO));
        ring.take(&mut out);
        assert_eq!(out.len(), 2);
        assert!(!out[0].arrived && out[1].arrived);
    }

    #[test]
    fn the_history_holds_half_the_number_space_at_most() {
        let t0 = Instant::now();
        let mut ring = SendRing::default();
        for n in 0..(MAX_HISTORY as u32 + 10) {
            ring.push(n as u16, sent(t0));
        }
        assert_eq!(ring.sent.len(), MAX_HISTORY);
        assert_eq!(ring.first, 10);
    }
}
