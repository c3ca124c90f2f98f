//! RTX (RFC 4588): answering a subscriber's NACK on a retransmission stream of its own, for
//! subscribers whose offer has `video/rtx` (browsers do).
//!
//! A retransmission on the media SSRC looks to the receiver like a late packet; on RTX it is
//! plainly a repair, with its own SSRC and sequence numbers, so the receiver's loss and jitter
//! statistics (and its bandwidth estimate) stay true. Subscribers that did not offer RTX keep
//! getting plain retransmissions.
//!
//! `rtc` 0.21 negotiates RTX and announces the repair flow (`a=ssrc-group:FID`) when an encoding
//! carries an RTX SSRC, but `RTCRtpSender::write_rtp` only takes packets on the track's media SSRC
//! (rtc-0.21.1 `rtp_transceiver/rtp_sender/mod.rs`, `ErrSenderWithNoSSRCs`). So the worker writes
//! an RTX packet on the media SSRC with the RTX payload type, and the [`RtxWrap`] interceptor
//! moves it to the RTX SSRC on its way out, application-ward of the sender reports, so a repair
//! (an old timestamp) never counts in the media stream's report. Transport-cc numbering, further
//! down, knows the RTX SSRC, so repairs and probes count in the link estimate as the bytes on
//! the wire they are (`transport_cc.rs`).
//!
//! What it needs to know is set once, after negotiation, in a shared [`RtxRoute`].

use super::keyframe::VideoCodec;
use bytes::{BufMut, BytesMut};
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Instant;

/// A subscriber's RTX stream (RFC 4588): its own SSRC, payload types and sequence numbers.
pub struct OutRtx {
    pub ssrc: u32,
    /// The RTX payload type repairing each codec (`a=fmtp:<rtx> apt=<codec>`).
    pub pt_h264: Option<u8>,
    pub pt_vp8: Option<u8>,
    /// The next RTX sequence number.
    pub seq: u16,
    /// The repairs sent lately, for sending again those the player's feedback reports lost.
    pub repairs: RepairLog,
}

impl OutRtx {
    /// What the subscriber negotiated, from its sender's parameters: RTX for the payload types
    /// the node sends (`pt_h264`, `pt_vp8`), on the encoding's RTX SSRC. `None` without either.
    pub fn negotiated(
        params: &rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters,
        pt_h264: Option<u8>,
        pt_vp8: Option<u8>,
    ) -> Option<Self> {
        let ssrc = params
            .encodings
            .first()
            .and_then(|e| e.rtp_coding_parameters.rtx.as_ref())
            .map(|r| r.ssrc)?;
        let rtx_for = |primary: Option<u8>| {
            let primary = primary?;
            params.rtp_parameters.codecs.iter().find_map(|c| {
                let apt = c.rtp_codec.sdp_fmtp_line.split(';').find_map(|p| {
                    p.trim()
                        .strip_prefix("apt=")
                        .and_then(|v| v.trim().parse::<u8>().ok())
                });
                (c.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx") && apt == Some(primary))
                    .then_some(c.payload_type)
            })
        };
        let (rtx_h264, rtx_vp8) = (rtx_for(pt_h264), rtx_for(pt_vp8));
        (rtx_h264.is_some() || rtx_vp8.is_some()).then(|| OutRtx {
            ssrc,
            pt_h264: rtx_h264,
            pt_vp8: rtx_vp8,
            seq: rand::random::<u16>() & 0x3fff,
            repairs: RepairLog::default(),
        })
    }

    pub fn payload_type(&self, codec: Option<VideoCodec>) -> Option<u8> {
        match codec {
            Some(VideoCodec::H264) => self.pt_h264,
            Some(VideoCodec::Vp8) => self.pt_vp8,
            None => None,
        }
    }
}

/// How many repairs [`RepairLog`] remembers: over a second of them at 5% loss of 2000 packets
/// a second, where transport-cc feedback tells of a lost one within a round trip and a report
/// interval.
const REPAIR_LOG: usize = 256;

/// The last repairs a player was sent on RTX, by RTX sequence number: which packet of the media
/// stream each carried, and how many times that packet has been sent again unasked. A player
/// asks again for a repair it misses, but not always: when its feedback reports a repair lost,
/// the worker sends it again unasked (`Worker::resend_lost_repairs`). Probes' RTX is not
/// logged, so a lost probe is not resent.
#[derive(Debug, Default)]
pub struct RepairLog {
    /// Empty until the first repair; then indexed by RTX sequence number modulo its length.
    entries: Vec<Repair>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Repair {
    rtx_seq: u16,
    media_seq: u16,
    unasked: u8,
    live: bool,
}

impl RepairLog {
    /// The repair of media packet `media_seq` left as RTX packet `rtx_seq`, the `unasked`th
    /// time it was sent without a NACK.
    pub fn sent(&mut self, rtx_seq: u16, media_seq: u16, unasked: u8) {
        if self.entries.is_empty() {
            self.entries = vec![Repair::default(); REPAIR_LOG];
        }
        self.entries[usize::from(rtx_seq) % REPAIR_LOG] = Repair {
            rtx_seq,
            media_seq,
            unasked,
            live: true,
        };
    }

    /// RTX packet `rtx_seq` was lost: the media packet it carried and how many times that was
    /// sent unasked, if it was a logged repair (once: the entry is then forgotten).
    pub fn lost(&mut self, rtx_seq: u16) -> Option<(u16, u8)> {
        let e = self.entries.get_mut(usize::from(rtx_seq) % REPAIR_LOG)?;
        (e.live && e.rtx_seq == rtx_seq).then(|| {
            e.live = false;
            (e.media_seq, e.unasked)
        })
    }
}

/// Whether an offer has an RTX payload type (`a=rtpmap:<pt> rtx/90000`).
pub fn offered(offer_sdp: &str) -> bool {
    offer_sdp.lines().any(|l| {
        l.trim()
            .strip_prefix("a=rtpmap:")
            .and_then(|m| m.split_whitespace().nth(1))
            .is_some_and(|codec| codec.to_ascii_lowercase().starts_with("rtx/"))
    })
}

/// Where a subscriber's RTX packets go: which media SSRC they are written on, which payload
/// types mark them, and the SSRC they leave on. Written once after negotiation; read per packet
/// without a lock.
#[derive(Debug, Default)]
pub struct RtxRoute {
    media_ssrc: AtomicU32,
    rtx_ssrc: AtomicU32,
    /// Bit `pt` set: payload type `pt` (0-127) is an RTX payload type.
    payload_types: [AtomicU64; 2],
}

impl RtxRoute {
    /// Routes packets written on `media_ssrc` with one of `payload_types` to `rtx_ssrc`.
    pub fn set(&self, media_ssrc: u32, rtx_ssrc: u32, payload_types: impl IntoIterator<Item = u8>) {
        for pt in payload_types {
            let pt = pt & 0x7f;
            self.payload_types[usize::from(pt >> 6)].fetch_or(1 << (pt & 63), Relaxed);
        }
        self.media_ssrc.store(media_ssrc, Relaxed);
        self.rtx_ssrc.store(rtx_ssrc, Relaxed);
    }

    fn is_rtx(&self, pt: u8) -> bool {
        let pt = pt & 0x7f;
        self.payload_types[usize::from(pt >> 6)].load(Relaxed) & (1 << (pt & 63)) != 0
    }

    /// The SSRC a packet on `ssrc` with payload type `pt` leaves on.
    pub fn ssrc_for(&self, ssrc: u32, pt: u8) -> u32 {
        if self.is_rtx(pt) && ssrc == self.media_ssrc.load(Relaxed) {
            self.rtx_ssrc.load(Relaxed)
        } else {
            ssrc
        }
    }

    /// Whether `ssrc` is the RTX SSRC.
    pub fn is_rtx_ssrc(&self, ssrc: u32) -> bool {
        ssrc != 0 && ssrc == self.rtx_ssrc.load(Relaxed)
    }

    /// The media SSRC of an RTX packet on `ssrc` with payload type `pt` (`ssrc` for others).
    pub fn media_ssrc_for(&self, ssrc: u32, pt: u8) -> u32 {
        if self.is_rtx(pt) && ssrc == self.rtx_ssrc.load(Relaxed) && ssrc != 0 {
            self.media_ssrc.load(Relaxed)
        } else {
            ssrc
        }
    }
}

/// Moves RTX packets to the RTX SSRC (see the module doc).
pub struct RtxWrap {
    route: Arc<RtxRoute>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtxWrap {
    /// Moves RTX packets to the RTX SSRC.
    pub fn new(route: Arc<RtxRoute>) -> Self {
        Self {
            route,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxWrap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet {
            let (ssrc, pt) = (packet.header.ssrc, packet.header.payload_type);
            packet.header.ssrc = self.route.ssrc_for(ssrc, pt);
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RtxWrap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The RTX packet (RFC 4588 §4) repairing `original` (already rewritten for the subscriber):
/// same timestamp and marker, the RTX payload type and sequence number, and the original
/// sequence number (OSN) ahead of the original payload. Its SSRC stays the media SSRC; the
/// interceptor moves it.
pub fn packet(original: &rtc::rtp::Packet, payload_type: u8, seq: u16) -> rtc::rtp::Packet {
    let mut payload = BytesMut::with_capacity(2 + original.payload.len());
    payload.put_u16(original.header.sequence_number);
    payload.put_slice(&original.payload);
    let mut header = original.header.clone();
    header.payload_type = payload_type;
    header.sequence_number = seq;
    // Padding belongs to the original packet's length; the RTX payload is not padded.
    header.padding = false;
    rtc::rtp::Packet {
        header,
        payload: payload.freeze(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_repair_names_its_media_packet_once_and_a_probe_names_none() {
        let mut log = RepairLog::default();
        assert_eq!(log.lost(5), None, "nothing sent yet");
        log.sent(5, 1000, 0);
        log.sent(6, 1001, 1);
        assert_eq!(log.lost(6), Some((1001, 1)));
        assert_eq!(log.lost(6), None, "once");
        // Overwritten by a repair REPAIR_LOG later: the old number names nothing.
        log.sent(5 + REPAIR_LOG as u16, 2000, 0);
        assert_eq!(log.lost(5), None);
        assert_eq!(log.lost(5 + REPAIR_LOG as u16), Some((2000, 0)));
        // RTX numbers never logged (a probe's) name nothing.
        assert_eq!(log.lost(7), None);
    }

    #[test]
    fn only_rtx_payload_types_on_the_media_ssrc_move() {
        let route = RtxRoute::default();
        assert_eq!(
            route.ssrc_for(7, 97),
            7,
            "nothing routed before negotiation"
        );
        route.set(7, 70, [97, 103]);
        assert_eq!(route.ssrc_for(7, 97), 70);
        assert_eq!(route.ssrc_for(7, 103), 70);
        assert_eq!(route.ssrc_for(7, 96), 7, "media stays");
        assert_eq!(route.ssrc_for(9, 97), 9, "another stream stays");
    }

    #[test]
    fn an_rtx_packet_carries_the_original_sequence_number_first() {
        let mut original = rtc::rtp::Packet::default();
        original.header.sequence_number = 0xabcd;
        original.header.timestamp = 42;
        original.header.marker = true;
        original.header.payload_type = 96;
        original.payload = bytes::Bytes::from_static(&[1, 2, 3]);
        let rtx = packet(&original, 97, 5);
        assert_eq!(rtx.header.payload_type, 97);
        assert_eq!(rtx.header.sequence_number, 5);
        assert_eq!(rtx.header.timestamp, 42);
        assert!(rtx.header.marker);
        assert_eq!(&rtx.payload[..], &[0xab, 0xcd, 1, 2, 3]);
    }
}
