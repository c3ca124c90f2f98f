//! An interceptor that lets a subscriber's keyframe requests and NACKs reach the worker.
//!
//! `rtc` ends inbound RTCP at the last interceptor unless a packet is marked
//! `DeliverToApplication`. The node answers NACKs from its own per-track packet buffer (one
//! buffer per track, not one per subscriber) and relays keyframe requests to the publisher, so it
//! needs exactly those: PLI, FIR and generic NACK. Receiver reports and the rest stay with the
//! interceptors. A player's REMB (its own estimate of its link) is read here into its
//! [`LinkStats`], for players without transport-wide congestion control.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::time::SystemInstant;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::estimate::LinkStats;

/// Marks PLI, FIR and NACK for delivery; strips everything else from the compound packet.
pub struct RtcpTap {
    link: Arc<LinkStats>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpTap {
    pub fn new(link: Arc<LinkStats>) -> Self {
        Self {
            link,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

fn wanted(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<TransportLayerNack>()
}

/// The round trip time a receiver report says (RFC 3550 §6.4.1): now, less the middle 32 bits
/// of the NTP time of the sender report it answers, less the delay the player held it. The
/// sender reports carry the system clock's NTP time, as read here.
fn round_trip(report: &ReceptionReport) -> Option<Duration> {
    if report.last_sender_report == 0 {
        return None;
    }
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let now = (SystemInstant::unix2ntp(unix) >> 16) as u32;
    let rtt = now
        .wrapping_sub(report.last_sender_report)
        .wrapping_sub(report.delay);
    // Units of 1/65536 s; a negative or absurd one (a clock step) says nothing.
    (rtt < 65536 * 10).then(|| Duration::from_micros(u64::from(rtt) * 1_000_000 / 65536))
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                let any = p.as_any();
                if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                    self.link.on_remb(f64::from(remb.bitrate));
                } else if let Some(rr) = any.downcast_ref::<ReceiverReport>()
                    && let Some(rtt) = rr.reports.iter().find_map(round_trip)
                {
                    self.link.on_rtt(rtt);
                }
            }
        }
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| wanted(p.as_ref()))
        {
            let keep: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| wanted(p.as_ref()))
                .cloned()
                .collect();
            msg.message.packet = Packet::Rtcp(keep);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Lets a dealer's RTCP sender reports reach the worker, for the camera's frame clock
/// (`frame_clock.rs`): each maps one of its streams' RTP timestamps to its NTP clock.
///
/// `rtc` ends inbound RTCP at the last interceptor unless a packet is marked
/// `DeliverToApplication` (see [`RtcpTap`]). The reports are delivered without their reception
/// blocks: `rtc` files a packet under the stream its first SSRC names, and a block names a stream
/// of the node's, where the report's own SSRC names the dealer's stream it is about.
#[derive(Default)]
pub struct SenderReportTap {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderReportTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let reports: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
                .map(|sr| {
                    Box::new(SenderReport {
                        reports: Vec::new(),
                        profile_extensions: Default::default(),
                        ..sr.clone()
                    }) as Box<dyn rtc::rtcp::Packet>
                })
                .collect();
            if !reports.is_empty() {
                // The reception reports and the rest stay with the interceptors, which have
                // read them already.
                msg.message.packet = Packet::Rtcp(reports);
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for SenderReportTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
