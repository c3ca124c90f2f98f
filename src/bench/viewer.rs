//! One light player: a sans-IO `rtc` peer connection for ICE, DTLS, SCTP and RTCP, with media
//! counted before it reaches the connection.
//!
//! SRTP encrypts the payload, not the header (RFC 3711 §3.1), so an SRTP packet's SSRC, sequence
//! number and payload type are readable as they arrive. A viewer counts every media packet from
//! that clear header and hands only these to its peer connection:
//! - everything that is not media (STUN, DTLS, SCTP, SRTCP);
//! - every video packet until the first keyframe (decrypted to find the keyframe: join time);
//! - then one media packet in `sample_every`, decrypted to read the publisher's send time that
//!   [`crate::client::synth`] stamped into the payload (forwarding latency, one clock).
//!
//! So the load tool does a small fraction of the node's cryptography per packet.
//!
//! With the `control` data channel, a viewer says `hello`, timestamps every public table event it
//! receives (fan-out latency from the event's `server_ms`), and, when told, places bets as fast
//! as they are answered (a fixed number outstanding).

use super::stats::{Reservoir, SeqCounter};
use crate::client::synth;
use crate::media::keyframe::{self, VideoCodec};
use rtc::data_channel::RTCDataChannelId;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A signalled peer connection, ready for a load thread to drive.
pub struct ViewerSetup {
    pub pc: RTCPeerConnection,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    /// Bit `pt` set: payload type `pt` is video (from the negotiated SDP).
    pub video_pts: u128,
    /// When the tool began to join (before signalling): join time counts from here.
    pub started: Instant,
    /// Say `hello` on the `control` data channel once it opens.
    pub control: bool,
    /// The peer connection sends transport-cc feedback: it must see every packet, as a
    /// browser's does, or its reports call the packets it did not see lost.
    pub feedback: bool,
}

/// Samples and counters one load thread gathers from all its viewers.
pub struct Samples {
    /// The clock the publisher stamps payloads with.
    pub epoch: Instant,
    /// Forwarding latency by packet kind: audio, video of delta frames, video of keyframes.
    pub forward_us: [Reservoir; 3],
    pub join_us: Vec<u64>,
    pub fanout_us: Reservoir,
    pub bet_us: Reservoir,
    pub bets_accepted: u64,
    pub bets_rejected: u64,
    pub first_rejection: Option<String>,
    pub events: u64,
    /// Public events older than this (server time, ms) are not fan-out samples (snapshots,
    /// replays, events from before the measurement).
    pub fanout_from_ms: u64,
}

impl Samples {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            forward_us: std::array::from_fn(|_| Reservoir::with_cap(1_000_000)),
            join_us: Vec::new(),
            fanout_us: Reservoir::with_cap(2_000_000),
            bet_us: Reservoir::with_cap(2_000_000),
            bets_accepted: 0,
            bets_rejected: 0,
            first_rejection: None,
            events: 0,
            fanout_from_ms: u64::MAX,
        }
    }
}

/// A bet run: keep `window` bets outstanding on `round` until `until`.
#[derive(Debug, Clone, Copy)]
pub struct BetPlan {
    pub round: u64,
    pub until: Instant,
    pub window: usize,
}

struct Bets {
    plan: BetPlan,
    next: u64,
    outstanding: VecDeque<(u64, Instant)>,
}

/// How a viewer ended, when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    NeverConnected,
    Dropped,
}

pub struct Viewer {
    pc: RTCPeerConnection,
    pub socket: UdpSocket,
    local: SocketAddr,
    video_pts: u128,
    started: Instant,
    say_hello: bool,
    pub connected_at: Option<Instant>,
    pub first_keyframe_at: Option<Instant>,
    pub video: SeqCounter,
    pub audio: SeqCounter,
    sample_every: u32,
    since_sample: u32,
    /// Every packet goes into the peer connection (`ViewerSetup::feedback`); `sampled` says
    /// whether the one going in now is a latency sample.
    feed_all: bool,
    sampled: bool,
    control: Option<RTCDataChannelId>,
    pub welcomed: bool,
    bets: Option<Bets>,
    bet_seq: u64,
    pub ended: Option<Ended>,
    /// The deadline registered for this viewer in its thread's timer heap.
    pub deadline: Option<Instant>,
}

/// RTP (not RTCP) with a dynamic payload type: media we count without decrypting.
pub fn is_media(datagram: &[u8]) -> bool {
    datagram.len() >= 12 && datagram[0] >> 6 == 2 && (96..=127).contains(&(datagram[1] & 0x7f))
}

/// The payload types of the `m=video` sections of an SDP, as a bit set.
pub fn video_payload_types(sdp: &str) -> u128 {
    let mut bits = 0u128;
    for line in sdp.lines() {
        let Some(rest) = line.trim().strip_prefix("m=video ") else {
            continue;
        };
        for pt in rest.split_whitespace().skip(2) {
            if let Ok(pt) = pt.parse::<u8>()
                && pt < 128
            {
                bits |= 1 << pt;
            }
        }
    }
    bits
}

/// Whether a synthetic H.264 payload belongs to a keyframe: the SPS/PPS STAP-A or an FU-A
/// fragment of an IDR slice (not only the keyframe's first packet, as `is_keyframe` checks).
fn is_keyframe_packet(payload: &[u8]) -> bool {
    match payload.first().map(|b| b & 0x1f) {
        Some(24) => true,
        Some(28) => payload.get(1).is_some_and(|b| b & 0x1f == 5),
        Some(5) => true,
        _ => false,
    }
}

/// Connections that have not come up within this are counted as failed joins.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl Viewer {
    pub fn new(setup: ViewerSetup, sample_every: u32) -> Self {
        Self {
            pc: setup.pc,
            socket: setup.socket,
            local: setup.local,
            video_pts: setup.video_pts,
            started: setup.started,
            say_hello: setup.control,
            connected_at: None,
            first_keyframe_at: None,
            video: SeqCounter::default(),
            audio: SeqCounter::default(),
            sample_every: sample_every.max(1),
            since_sample: 0,
            feed_all: setup.feedback,
            sampled: true,
            control: None,
            welcomed: false,
            bets: None,
            bet_seq: 0,
            ended: None,
            deadline: None,
        }
    }

    pub fn set_sample_every(&mut self, every: u32) {
        self.sample_every = every.max(1);
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// One datagram in. Returns true when the peer connection took it (drive it after).
    pub fn input(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        if is_media(data) {
            let pt = data[1] & 0x7f;
            let seq = u16::from_be_bytes([data[2], data[3]]);
            let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
            let video = self.video_pts & (1 << pt) != 0;
            if video {
                self.video.on_packet(ssrc, seq);
            } else {
                self.audio.on_packet(ssrc, seq);
            }
            let looking_for_keyframe = video && self.first_keyframe_at.is_none();
            self.since_sample += 1;
            self.sampled = looking_for_keyframe || self.since_sample >= self.sample_every;
            if !self.sampled && !self.feed_all {
                return false;
            }
            if self.sampled {
                self.since_sample = 0;
            }
        }
        let _ = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: bytes::BytesMut::from(data),
        });
        true
    }

    pub fn timeout(&mut self, now: Instant) {
        let _ = self.pc.handle_timeout(now);
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// Takes everything the peer connection has after an input; `arrival` is when the input's
    /// datagram reached the socket (the kernel's stamp), or was read.
    pub fn drive(&mut self, now: Instant, arrival: Instant, s: &mut Samples) {
        self.flush();
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected => {
                        self.connected_at.get_or_insert(now);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.ended.get_or_insert(if self.connected_at.is_some() {
                            Ended::Dropped
                        } else {
                            Ended::NeverConnected
                        });
                    }
                    _ => {}
                },
                RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) => {
                    let is_control = self
                        .pc
                        .data_channel(id)
                        .is_some_and(|dc| dc.label() == "control");
                    if is_control && self.control.is_none() {
                        self.control = Some(id);
                        if self.say_hello {
                            // The WHEP session's token already says who this is.
                            self.send_control(now, r#"{"type":"hello","token":""}"#.to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        while let Some(msg) = self.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(_, packet) => self.on_rtp(arrival, &packet, s),
                RTCMessage::DataChannelMessage(id, m) if Some(id) == self.control => {
                    self.on_control(now, &m.data, s)
                }
                _ => {}
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            let _ = self.socket.send_to(&out.message, out.transport.peer_addr);
        }
    }

    fn on_rtp(&mut self, arrival: Instant, packet: &rtc::rtp::Packet, s: &mut Samples) {
        let video = self.video_pts & (1 << (packet.header.payload_type & 0x7f)) != 0;
        if video && self.first_keyframe_at.is_none() {
            if !keyframe::is_keyframe(VideoCodec::H264, &packet.payload) {
                return;
            }
            self.first_keyframe_at = Some(arrival);
            s.join_us
                .push(arrival.saturating_duration_since(self.started).as_micros() as u64);
        }
        if !std::mem::replace(&mut self.sampled, true) {
            return;
        }
        let codec = video.then_some(VideoCodec::H264);
        if let Some(sent) = synth::payload_stamp(codec, &packet.payload) {
            let at = arrival.saturating_duration_since(s.epoch).as_micros() as u64;
            // A stamp from the future is not our publisher's (or is garbage): skip it.
            if let Some(latency) = at.checked_sub(sent)
                && latency < 60_000_000
            {
                let kind = match (video, is_keyframe_packet(&packet.payload)) {
                    (false, _) => 0,
                    (true, false) => 1,
                    (true, true) => 2,
                };
                s.forward_us[kind].push(latency);
            }
        }
    }

    fn send_control(&mut self, now: Instant, text: String) {
        if let Some(mut dc) = self.control.and_then(|id| self.pc.data_channel(id)) {
            let _ = dc.send_text(now, text);
        }
    }

    fn on_control(&mut self, now: Instant, data: &[u8], s: &mut Samples) {
        #[derive(serde::Deserialize)]
        struct Msg {
            #[serde(rename = "type")]
            typ: String,
            seq: Option<u64>,
            server_ms: Option<u64>,
            id: Option<String>,
            code: Option<String>,
        }
        let Ok(msg) = serde_json::from_slice::<Msg>(data) else {
            return;
        };
        match msg.typ.as_str() {
            "welcome" | "resumed" => self.welcomed = true,
            "bet.accepted" | "bet.rejected" | "error" => {
                let Some(n) = msg.id.as_deref().and_then(|id| id.strip_prefix('b')) else {
                    return;
                };
                let Ok(n) = n.parse::<u64>() else { return };
                self.on_bet_answer(now, n, msg.typ == "bet.accepted", msg.code, s);
            }
            _ => {
                if let (Some(_), Some(server_ms)) = (msg.seq, msg.server_ms) {
                    s.events += 1;
                    if server_ms >= s.fanout_from_ms {
                        let arrival_us = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_micros() as u64);
                        s.fanout_us
                            .push(arrival_us.saturating_sub(server_ms.saturating_mul(1000)));
                    }
                }
            }
        }
    }

    /// Starts keeping `plan.window` bets outstanding.
    pub fn start_bets(&mut self, now: Instant, plan: BetPlan) {
        if self.control.is_none() || !self.welcomed {
            return;
        }
        self.bets = Some(Bets {
            plan,
            next: self.bet_seq,
            outstanding: VecDeque::new(),
        });
        for _ in 0..plan.window {
            self.place_bet(now);
        }
        self.flush();
    }

    fn place_bet(&mut self, now: Instant) {
        let Some(bets) = self.bets.as_mut() else {
            return;
        };
        if now >= bets.plan.until {
            return;
        }
        let n = bets.next;
        bets.next += 1;
        self.bet_seq = bets.next;
        bets.outstanding.push_back((n, now));
        let spot = if n % 2 == 0 { "player" } else { "banker" };
        let text = format!(
            r#"{{"type":"bet.place","id":"b{n}","round":{},"spot":"{spot}","amount":1}}"#,
            bets.plan.round
        );
        self.send_control(now, text);
    }

    fn on_bet_answer(
        &mut self,
        now: Instant,
        n: u64,
        accepted: bool,
        code: Option<String>,
        s: &mut Samples,
    ) {
        let Some(bets) = self.bets.as_mut() else {
            return;
        };
        let Some(i) = bets.outstanding.iter().position(|(m, _)| *m == n) else {
            return;
        };
        let (_, sent) = bets.outstanding.remove(i).unwrap_or((n, now));
        if now > bets.plan.until {
            // Answered after the run ended: not counted, not replaced.
            return;
        }
        s.bet_us
            .push(now.saturating_duration_since(sent).as_micros() as u64);
        if accepted {
            s.bets_accepted += 1;
        } else {
            s.bets_rejected += 1;
            if s.first_rejection.is_none() {
                s.first_rejection = code;
            }
        }
        self.place_bet(now);
    }

    /// Bets still unanswered (they end the run as unanswered, not as accepted).
    pub fn stop_bets(&mut self) -> usize {
        self.bets.take().map_or(0, |b| b.outstanding.len())
    }

    pub fn close(&mut self) {
        let _ = self.pc.close();
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_is_told_from_rtcp_stun_and_dtls_by_the_header() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 0x80 | 102; // marker set, PT 102
        assert!(is_media(&rtp));
        rtp[1] = 200; // RTCP sender report
        assert!(!is_media(&rtp));
        assert!(!is_media(&[
            0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0
        ])); // STUN
        assert!(!is_media(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0])); // DTLS
        assert!(!is_media(&[0x80, 102])); // too short
    }

    #[test]
    fn every_packet_of_a_synthetic_keyframe_is_told_from_a_delta_frame() {
        let mut n = 0;
        let key = synth::video_frame(VideoCodec::H264, true, 24, 1100, 1, &mut n);
        assert!(key.iter().all(|p| is_keyframe_packet(p)));
        let delta = synth::video_frame(VideoCodec::H264, false, 4, 1100, 1, &mut n);
        assert!(delta.iter().all(|p| !is_keyframe_packet(p)));
    }

    #[test]
    fn video_payload_types_come_from_the_video_sections() {
        let sdp =
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 108\r\n";
        let bits = video_payload_types(sdp);
        assert_eq!(bits, (1 << 102) | (1 << 108));
    }
}
