//! One session: an `RTCPeerConnection` answering a WHIP or WHEP offer, and what the worker needs
//! to know about it (role, table, tracks, outgoing streams, timers).
//!
//! The node is ICE-lite with its own ICE credentials per session (so a STUN request can be routed
//! to its session by ufrag) and one host candidate per announced address on the worker's port.
//! `rtc` draws the credentials (it must draw new ones on an ICE restart, see `restart.rs`); the
//! worker reads the ufrag back from the answer.

pub use super::engine::media_engine;
use super::engine::{publisher_ingest, subscriber_feedback};
use super::estimate::LinkStats;
use super::keyframe::VideoCodec;
use super::router::RELAY_LAYERS;
use super::rtcp_tap::{RtcpTap, SenderReportTap};
use super::rtx::{self, OutRtx, RtxRoute, RtxWrap};
use super::selector::Selector;
use super::simulcast::Layers;
use super::subscriber::OutStream;
use super::transport_cc::TRANSPORT_CC_URI;
use super::{MediaError, Role};
use crate::ids::{CameraId, SessionId, TableId, UserId};
use crate::metrics::TableMetrics;
use rtc::data_channel::RTCDataChannelId;
use rtc::interceptor::{
    NackGeneratorBuilder, ReceiverReportBuilder, Registry, SenderReportBuilder, Slot,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::{
    SctpMaxMessageSize, SettingEngineBuilder,
};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A table camera: what publishers feed and subscribers watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouterKey {
    pub table: TableId,
    pub camera: CameraId,
}

/// The kinds of media a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// A track a publisher sends us.
#[derive(Debug, Clone)]
pub struct InTrack {
    pub kind: MediaKind,
    pub video_codec: Option<VideoCodec>,
    pub receiver: rtc::rtp_transceiver::RTCRtpReceiverId,
    /// Audio: the SSRC, and the source epoch, which changes whenever the source changes (new
    /// session or new SSRC) so that subscribers re-anchor.
    pub ssrc: u32,
    pub epoch: u64,
    /// Video: its layers (one without simulcast). Each player's selector picks among them.
    pub layers: Layers,
    /// Video: the camera's frames in time, which results are stamped with (`frame_clock.rs`).
    pub clock: Option<Arc<super::frame_clock::FrameClock>>,
}

impl InTrack {
    /// The SSRCs a keyframe request for `layers` goes to: those of the layers whose bits are
    /// set (players and relays ask for the layers they wait for), every layer's for 0.
    pub fn keyframe_ssrcs_of(&self, layers: u8) -> impl Iterator<Item = u32> + '_ {
        (0..self.layers.len().min(8))
            .filter(move |i| layers == 0 || layers & (1 << i) != 0)
            .filter_map(|i| self.layers.get(i).map(|l| l.ssrc))
    }
}

/// One outgoing stream of a subscriber.
pub struct OutSender {
    pub sender: RTCRtpSenderId,
    pub stream: OutStream,
    /// Negotiated payload type for each codec the subscriber accepted.
    pub pt_h264: Option<u8>,
    pub pt_vp8: Option<u8>,
    pub pt_opus: Option<u8>,
    /// The RTX stream NACKs are answered on, when the subscriber negotiated RTX.
    pub rtx: Option<super::rtx::OutRtx>,
}

impl OutSender {
    pub fn payload_type(&self, codec: Option<VideoCodec>) -> Option<u8> {
        match codec {
            Some(VideoCodec::H264) => self.pt_h264,
            Some(VideoCodec::Vp8) => self.pt_vp8,
            None => self.pt_opus,
        }
    }
}

/// A session and everything the worker tracks about it.
pub struct Peer {
    pub session: SessionId,
    pub role: Role,
    /// Shared, so the forwarding path can hold it without copying its strings.
    pub key: Arc<RouterKey>,
    pub user: UserId,
    pub token_role: crate::auth::TokenRole,
    /// The token that opened the session (see [`super::Requester::may_touch`]).
    pub token: crate::auth::TokenDigest,
    /// The session's `[limits]` slot, given back when the peer is dropped.
    pub permit: Option<crate::limits::Permit>,
    pub pc: RTCPeerConnection,
    pub ufrag: String,
    pub etag: String,
    pub span: tracing::Span,
    pub metrics: Arc<TableMetrics>,
    pub created: Instant,
    pub connected_at: Option<Instant>,
    pub last_rx: Instant,
    /// Source addresses this session has sent STUN from (for demultiplexing).
    pub paths: super::demux::Paths,
    /// Publisher: its tracks by `rtc` track id.
    pub in_tracks: HashMap<String, InTrack>,
    /// Subscriber: outgoing video and audio.
    pub out_video: Option<OutSender>,
    pub out_audio: Option<OutSender>,
    /// Relay to another node: one outgoing video stream per layer of the camera, by layer
    /// index (`out_video` is None).
    pub out_layers: Vec<OutSender>,
    pub control: Option<RTCDataChannelId>,
    /// The deadline currently registered for this peer in the worker's timer heap.
    pub deadline: Option<Instant>,
    pub closing: bool,
    /// A subscriber that is another node's pull of the camera (`relay.rs`).
    pub relay: bool,
    /// Player: how its page shows the video.
    pub view: super::View,
    /// Player: which video layer it gets.
    pub selector: Selector,
    /// Player: its video, paced to its link (`pacer.rs`).
    pub pacer: super::pacer::Pacer<(RTCRtpSenderId, rtc::rtp::Packet)>,
    /// Player: probes of its link before it goes up a layer (`probe.rs`).
    pub prober: super::probe::Prober,
    /// Subscriber: what its feedback says about its link.
    pub link: Arc<LinkStats>,
    /// Player: which frame of the camera each of its frames is (`video_map.rs`).
    pub video_map: super::video_map::VideoMap,
    /// Relay: the same for each of its layer streams, by layer index, for the edge's players.
    pub relay_maps: Vec<super::video_map::VideoMap>,
}

/// A connection that has answered its offer.
pub struct Answered {
    pub pc: RTCPeerConnection,
    /// Subscriber: the outgoing video stream, when the offer can receive video.
    pub video: Option<OutSender>,
    /// Subscriber: the outgoing audio stream, when the offer can receive audio.
    pub audio: Option<OutSender>,
    /// Relay: the outgoing video stream of each layer, one per video section of the offer.
    pub layers: Vec<OutSender>,
    /// The answer SDP, with our host candidates.
    pub sdp: String,
    /// Subscriber: what its feedback says about its link.
    pub link: Arc<LinkStats>,
}

/// Builds a peer connection for `role` and answers `offer_sdp`.
///
/// Returns the connection and the answer SDP, which carries our host candidates (so clients
/// that do not trickle, like OBS, need nothing more).
pub fn answer(
    role: Role,
    relay: bool,
    offer_sdp: &str,
    candidates: &[SocketAddr],
    max_message_bytes: usize,
    now: Instant,
) -> Result<Answered, MediaError> {
    let setting_engine = SettingEngineBuilder::new()
        .with_lite(true)
        .with_answering_dtls_role(RTCDtlsRole::Server)
        // An ICE-lite node only hears the client's consent checks, which clients send about
        // every 5 s (RFC 7675; aiortc, GStreamer). The 5 s default made connections flap to
        // "disconnected" between two checks; two missed checks now, and failed 30 s after the
        // last one, when consent has expired.
        .with_ice_timeouts(
            Some(std::time::Duration::from_secs(12)),
            Some(std::time::Duration::from_secs(18)),
            None,
        )
        // The SCTP reassembly buffer of a data channel is as large as the max-message-size, and
        // is kept for the session's life: at rtc's default of 64 KiB it was the largest single
        // piece of memory per player.
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(max_message_bytes as u32))
        .build();
    // Where the worker's RTX packets go; set once the answer says what was negotiated.
    let rtx_route = Arc::new(RtxRoute::default());
    // What the player's feedback says about its link (`estimate.rs`).
    let link = Arc::new(LinkStats::default());
    let mut engine = media_engine(true, true, role == Role::Subscriber)?;
    let registry = match role {
        Role::Publisher => publisher_ingest(
            Registry::new()
                .with(
                    Slot::NackGenerator,
                    NackGeneratorBuilder::new()
                        .with_interval(Duration::from_millis(50))
                        .build(),
                )
                .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
                // Application-most: the receiver reports have read the dealer's sender reports
                // by then (`frame_clock.rs` reads them too).
                .with(Slot::from(11_500usize), SenderReportTap::default()),
            &mut engine,
        )?,
        Role::Subscriber => subscriber_feedback(
            {
                let registry = Registry::new()
                    .with(Slot::SenderReport, SenderReportBuilder::new().build())
                    .with(Slot::from(11_500usize), RtcpTap::new(link.clone()));
                if rtx::offered(offer_sdp) {
                    // Application-ward of the sender reports, so they never count a
                    // retransmission (`rtx.rs`). Transport-cc numbering recognises the RTX SSRC
                    // (`transport_cc.rs`).
                    registry.with(Slot::from(11_600usize), RtxWrap::new(rtx_route.clone()))
                } else {
                    registry
                }
            },
            &mut engine,
            link.clone(),
            rtx_route.clone(),
            offer_sdp.contains(TRANSPORT_CC_URI),
        )?,
    };
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(|e| MediaError::Unavailable(format!("cannot create peer connection: {e}")))?;

    if !offer_sdp.trim_start().starts_with("v=0") {
        return Err(MediaError::BadSdp(
            "the body is not SDP (it must start with v=0)".into(),
        ));
    }
    let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
        .map_err(|e| MediaError::BadSdp(e.to_string()))?;
    pc.set_remote_description(now, offer)
        .map_err(|e| MediaError::UnusableSdp(e.to_string()))?;

    let mut video = None;
    let mut audio = None;
    let mut layers = Vec::new();
    if role == Role::Subscriber {
        let (has_video, has_audio) = offered_kinds(offer_sdp);
        if !has_video && !has_audio {
            return Err(MediaError::UnusableSdp(
                "the offer has no audio or video section to receive into; add recvonly transceivers".into(),
            ));
        }
        if relay {
            // One video section per layer: every layer crosses to the other node, whose players
            // then get the layer chosen there.
            let sections = video_sections(offer_sdp).min(RELAY_LAYERS);
            for i in 0..sections {
                layers.push(add_out_track(&mut pc, RtpCodecKind::Video, false, i)?);
            }
        } else if has_video {
            let rtx = rtx::offered(offer_sdp);
            video = Some(add_out_track(&mut pc, RtpCodecKind::Video, rtx, 0)?);
        }
        if has_audio {
            audio = Some(add_out_track(&mut pc, RtpCodecKind::Audio, false, 0)?);
        }
    }

    for addr in candidates {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(|e| MediaError::Unavailable(format!("bad local candidate {addr}: {e}")))?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(|e| MediaError::Unavailable(format!("bad local candidate {addr}: {e}")))?;
        pc.add_local_candidate(init)
            .map_err(|e| MediaError::Unavailable(format!("cannot add candidate {addr}: {e}")))?;
    }

    let answer = pc
        .create_answer(None)
        .map_err(|e| MediaError::UnusableSdp(e.to_string()))?;
    for id in video.iter().chain(&audio).chain(&layers) {
        name_codec(&mut pc, *id)?;
    }
    pc.set_local_description(now, answer)
        .map_err(|e| MediaError::UnusableSdp(e.to_string()))?;
    let sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| MediaError::Unavailable("no local description after answering".into()))?;
    // Sections `rtc` cannot answer (one whose transport is not RTP, say) are left out of the
    // answer. Without one audio or video section left there is no session, and no ICE ufrag to
    // route it by.
    if !sdp_has_active_media(&sdp) {
        return Err(MediaError::UnusableSdp(match role {
            Role::Publisher => "no audio or video in the offer can be received: send H.264 (packetization-mode=1), VP8 or Opus".into(),
            Role::Subscriber => "no audio or video section of the offer can be answered: offer UDP/TLS/RTP/SAVPF sections that receive H.264 (packetization-mode=1), VP8 or Opus".into(),
        }));
    }

    let video = match video {
        Some(sender_id) => Some(out_sender(&mut pc, sender_id, 90_000, true)?),
        None => None,
    };
    if let Some(out) = &video
        && let Some(rtx) = &out.rtx
    {
        rtx_route.set(
            out.stream.ssrc,
            rtx.ssrc,
            [rtx.pt_h264, rtx.pt_vp8].into_iter().flatten(),
        );
    }
    let audio = match audio {
        Some(sender_id) => Some(out_sender(&mut pc, sender_id, 48_000, false)?),
        None => None,
    };
    let layers = layers
        .into_iter()
        .map(|id| out_sender(&mut pc, id, 90_000, true))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Answered {
        pc,
        video,
        audio,
        layers,
        sdp,
        link,
    })
}

/// Which kinds the offer has m-lines for (port not 0).
fn offered_kinds(sdp: &str) -> (bool, bool) {
    let mut video = false;
    let mut audio = false;
    for line in sdp.lines() {
        let mut parts = line.split_whitespace();
        let (Some(media), Some(port)) = (parts.next(), parts.next()) else {
            continue;
        };
        if port == "0" {
            continue;
        }
        match media {
            "m=video" => video = true,
            "m=audio" => audio = true,
            _ => {}
        }
    }
    (video, audio)
}

/// How many video sections the offer has (port not 0).
fn video_sections(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| {
            let mut parts = l.split_whitespace();
            parts.next() == Some("m=video") && parts.next().is_some_and(|port| port != "0")
        })
        .count()
}

fn sdp_has_active_media(sdp: &str) -> bool {
    let (video, audio) = offered_kinds(sdp);
    video || audio
}

/// Adds our outgoing track of `kind`, with an RTX SSRC when `rtx` (the offer has RTX).
fn add_out_track(
    pc: &mut RTCPeerConnection,
    kind: RtpCodecKind,
    rtx: bool,
    index: usize,
) -> Result<RTCRtpSenderId, MediaError> {
    let ssrc = rand::random::<u32>();
    let rtx = rtx.then(|| RTCRtpRtxParameters {
        ssrc: loop {
            let s = rand::random::<u32>();
            if s != ssrc {
                break s;
            }
        },
    });
    let label = match (kind, index) {
        (RtpCodecKind::Video, 0) => "video".to_owned(),
        (RtpCodecKind::Video, i) => format!("video{i}"),
        _ => "audio".to_owned(),
    };
    let track = MediaStreamTrack::new(
        "tablecast".to_owned(),
        label.clone(),
        label.clone(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx,
                ..Default::default()
            },
            ..Default::default()
        }],
    );
    pc.add_track(track)
        .map_err(|e| MediaError::UnusableSdp(format!("cannot send {label}: {e}")))
}

/// Names the negotiated codec in the encoding of our track on sender `id`.
///
/// `rtc` binds a sender's stream to its interceptors (transport-cc numbering, the
/// congestion-control history, sender reports) only when the track's encoding names a codec the
/// answer negotiated; one that names none is sent bare. Without this a player's packets carried no
/// transport-wide sequence number and it got no sender reports, so its link could not be
/// estimated and its audio and video had no common clock. Called after the answer is created
/// (the codecs are known) and before it is applied (the streams are bound then).
fn name_codec(pc: &mut RTCPeerConnection, id: RTCRtpSenderId) -> Result<(), MediaError> {
    let mut sender = pc
        .rtp_sender(id)
        .ok_or_else(|| MediaError::Unavailable("sender vanished".into()))?;
    let Some(codec) = sender
        .get_parameters()
        .rtp_parameters
        .codecs
        .first()
        .map(|c| c.rtp_codec.clone())
    else {
        // Nothing negotiated for this section; the answer check below reports it.
        return Ok(());
    };
    let track = sender.track();
    let codings = track
        .codings()
        .iter()
        .cloned()
        .map(|mut coding| {
            coding.codec = codec.clone();
            coding
        })
        .collect();
    let named = MediaStreamTrack::new(
        track.stream_id().clone(),
        track.track_id().clone(),
        track.label().clone(),
        track.kind(),
        codings,
    );
    sender
        .replace_track(named)
        .map_err(|e| MediaError::Unavailable(format!("cannot name the sent codec: {e}")))
}

fn out_sender(
    pc: &mut RTCPeerConnection,
    id: RTCRtpSenderId,
    clock_rate: u32,
    video: bool,
) -> Result<OutSender, MediaError> {
    let mut sender = pc
        .rtp_sender(id)
        .ok_or_else(|| MediaError::Unavailable("sender vanished".into()))?;
    let ssrc = sender
        .track()
        .ssrcs()
        .next()
        .ok_or_else(|| MediaError::Unavailable("sender has no SSRC".into()))?;
    let params = sender.get_parameters();
    let mut pt_h264 = None;
    let mut pt_vp8 = None;
    let mut pt_opus = None;
    for c in &params.rtp_parameters.codecs {
        let mime = c.rtp_codec.mime_type.to_ascii_lowercase();
        if mime == "video/h264" {
            // Prefer packetization-mode=1 with the constrained baseline profile browsers favour.
            let better = c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1")
                && (pt_h264.is_none() || c.rtp_codec.sdp_fmtp_line.contains("42e01f"));
            if better {
                pt_h264 = Some(c.payload_type);
            }
        } else if mime == "video/vp8" && pt_vp8.is_none() {
            pt_vp8 = Some(c.payload_type);
        } else if mime == "audio/opus" && pt_opus.is_none() {
            pt_opus = Some(c.payload_type);
        }
    }
    if video && pt_h264.is_none() && pt_vp8.is_none() {
        return Err(MediaError::UnusableSdp(
            "the offer accepts neither H.264 nor VP8 video".into(),
        ));
    }
    let first_seq = rand::random::<u16>() & 0x3fff;
    let first_ts = rand::random::<u32>();
    Ok(OutSender {
        sender: id,
        stream: OutStream::new(ssrc, clock_rate, video, first_seq, first_ts),
        pt_h264,
        pt_vp8,
        pt_opus,
        rtx: OutRtx::negotiated(params, pt_h264, pt_vp8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chromium 156's offer for the dealer page's three encodings (q, h, f) plus audio.
    const CHROMIUM_SIMULCAST_OFFER: &str = include_str!("testdata/chromium-simulcast-offer.sdp");

    fn video_section(sdp: &str) -> Vec<&str> {
        sdp.lines()
            .skip_while(|l| !l.starts_with("m=video"))
            .skip(1)
            .take_while(|l| !l.starts_with("m="))
            .collect()
    }

    #[test]
    fn a_relay_gets_one_video_stream_per_offered_video_section_and_a_player_one() {
        let addr: SocketAddr = "127.0.0.1:10000".parse().unwrap();
        let now = Instant::now();
        for (relay, sections) in [(true, RELAY_LAYERS), (true, 1), (false, 1)] {
            let mut client = RTCPeerConnectionBuilder::new()
                .with_media_engine(media_engine(true, true, false).unwrap())
                .build(now)
                .unwrap();
            crate::client::driver::receive_video_and_audio(&mut client, sections).unwrap();
            let offer = client.create_offer(None).unwrap();
            let answered = answer(Role::Subscriber, relay, &offer.sdp, &[addr], 16 * 1024, now)
                .expect("answer");
            let ssrcs: std::collections::HashSet<u32> =
                answered.layers.iter().map(|o| o.stream.ssrc).collect();
            if relay {
                assert!(answered.video.is_none(), "a relay's video is its layers");
                assert_eq!(answered.layers.len(), sections);
                assert_eq!(ssrcs.len(), sections, "each layer has its own SSRC");
            } else {
                assert!(answered.video.is_some());
                assert!(answered.layers.is_empty());
            }
            assert!(answered.audio.is_some());
            assert_eq!(
                answered.sdp.matches("a=sendonly").count(),
                sections + 1,
                "every video section and the audio one send: {}",
                answered.sdp
            );
        }
    }

    #[test]
    fn the_answer_caps_data_channel_messages_at_the_configured_size() {
        let addr: SocketAddr = "127.0.0.1:10000".parse().unwrap();
        // The Chromium offer with a data channel section, as a player page's offer has.
        let offer = CHROMIUM_SIMULCAST_OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
            + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\n\
               c=IN IP4 0.0.0.0\n\
               a=ice-ufrag:lzZ2\n\
               a=ice-pwd:G943qX1LfZv4KOAUWxbc5tnO\n\
               a=fingerprint:sha-256 4E:3E:74:86:D8:B2:5E:41:3A:8C:A3:71:BB:8A:17:E3:B7:E8:20:07:BD:CC:8F:2B:43:0E:B8:FC:D8:FF:67:D7\n\
               a=setup:actpass\n\
               a=mid:2\n\
               a=sctp-port:5000\n\
               a=max-message-size:262144\n";
        let offer = offer.replace('\n', "\r\n");
        for limit in [4096, 16 * 1024] {
            let answered = answer(
                Role::Subscriber,
                false,
                &offer,
                &[addr],
                limit,
                Instant::now(),
            )
            .expect("answer");
            let line = format!("a=max-message-size:{limit}");
            assert!(
                answered.sdp.lines().any(|l| l == line),
                "{line} in {}",
                answered.sdp
            );
        }
    }

    #[test]
    fn a_simulcast_offer_is_answered_with_its_rids_and_the_extensions_that_name_them() {
        let addr: SocketAddr = "127.0.0.1:10000".parse().unwrap();
        let offer = CHROMIUM_SIMULCAST_OFFER.replace('\n', "\r\n");
        let answered = answer(
            Role::Publisher,
            false,
            &offer,
            &[addr],
            16 * 1024,
            Instant::now(),
        )
        .expect("answer");
        let video = video_section(&answered.sdp);
        assert!(video.contains(&"a=simulcast:recv q;h;f"), "{video:#?}");
        for rid in ["q", "h", "f"] {
            assert!(
                video.contains(&format!("a=rid:{rid} recv").as_str()),
                "{video:#?}"
            );
        }
        for uri in [
            "urn:ietf:params:rtp-hdrext:sdes:mid",
            "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        ] {
            assert!(
                video
                    .iter()
                    .any(|l| l.starts_with("a=extmap:") && l.ends_with(uri)),
                "no {uri} in {video:#?}"
            );
        }
        assert!(
            video
                .iter()
                .any(|l| l.starts_with("a=rtcp-fb:") && l.ends_with(" transport-cc")),
            "{video:#?}"
        );
    }

    #[test]
    fn an_offer_without_simulcast_gets_an_answer_without_it() {
        let addr: SocketAddr = "127.0.0.1:10000".parse().unwrap();
        // One encoding: Chromium names its SSRC instead of the rids.
        let offer: String = CHROMIUM_SIMULCAST_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=rid:"))
            .map(|l| match l.strip_prefix("a=simulcast:") {
                Some(_) => "a=ssrc:1234 cname:dealer".to_owned(),
                None => l.to_owned(),
            })
            .map(|l| format!("{l}\r\n"))
            .collect();
        let answered = answer(
            Role::Publisher,
            false,
            &offer,
            &[addr],
            16 * 1024,
            Instant::now(),
        )
        .expect("answer");
        assert!(!answered.sdp.contains("a=simulcast"), "{}", answered.sdp);
        assert!(!answered.sdp.contains("a=rid:"), "{}", answered.sdp);
    }

    #[test]
    fn an_offer_with_no_section_the_node_can_answer_is_unusable_for_either_role() {
        // Found by the sdp_offer fuzz target (docs/reliability.md): a WHEP offer whose only
        // section's transport is not RTP (`m=audio 9 0 0`: protocol `0`) was answered with no
        // media section and no ICE ufrag, and the worker then refused its own answer as "media
        // workers are unavailable" (503) instead of the offer as unusable (422).
        let offer = "v=0\no=- 8 2 IN IP4 1\ns=\nt=0 0\nm=audio 9 0 0\na=ice-ufrag:Z\na=ice-pwd:L\na=fingerprint: s\na=mid:0";
        let addr: SocketAddr = "127.0.0.1:10000".parse().unwrap();
        for role in [Role::Subscriber, Role::Publisher] {
            let err = answer(role, false, offer, &[addr], 16 * 1024, Instant::now())
                .err()
                .expect("refused");
            assert!(
                matches!(err, MediaError::UnusableSdp(_)),
                "{role:?}: {err:?}"
            );
        }
    }

    #[test]
    fn garbage_offers_are_refused_with_a_reason_not_a_panic() {
        let now = Instant::now();
        let addr: SocketAddr = "127.0.0.1:10000".parse().unwrap();
        for bad in [
            "",
            "hello",
            "v=0\r\n",
            "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\nm=video x",
        ] {
            let err = answer(Role::Publisher, false, bad, &[addr], 16 * 1024, now)
                .err()
                .expect("refused");
            assert!(
                matches!(err, MediaError::BadSdp(_) | MediaError::UnusableSdp(_)),
                "{bad:?} gave {err:?}"
            );
        }
    }
}
