//! What every peer connection negotiates: the codecs the node forwards (and their RTX), and what
//! a publisher's leg adds on top (simulcast header extensions, transport-wide congestion control).

use super::MediaError;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

fn video_feedback() -> Vec<RTCPFeedback> {
    [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.into(),
            parameter: parameter.into(),
        })
        .collect()
}

/// RTX payload type for each video payload type registered below (`apt`).
const RTX_PAYLOAD_TYPES: &[(u8, u8)] = &[(96, 97), (102, 103), (108, 109), (112, 113), (116, 117)];

/// The codecs the node forwards: Opus, VP8 and H.264 (packetization-mode 1, the profiles OBS and
/// browsers use). No transcoding, so nothing else can be relayed. With `rtx`, each video codec
/// also gets its `video/rtx` (RFC 4588), negotiated only with peers that offer it.
pub fn media_engine(h264: bool, vp8: bool, rtx: bool) -> Result<MediaEngine, MediaError> {
    let mut me = MediaEngine::default();
    let codec = |mime: &str, clock_rate, channels, fmtp: &str, fb: Vec<RTCPFeedback>| RTCRtpCodec {
        mime_type: mime.into(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp.into(),
        rtcp_feedback: fb,
    };
    let register = |me: &mut MediaEngine, rtp_codec, payload_type, kind| {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec,
                payload_type,
            },
            kind,
        )
        .map_err(|e| MediaError::Unavailable(format!("codec registration failed: {e}")))
    };
    register(
        &mut me,
        codec(
            MIME_TYPE_OPUS,
            48000,
            2,
            "minptime=10;useinbandfec=1",
            vec![],
        ),
        111,
        RtpCodecKind::Audio,
    )?;
    if vp8 {
        register(
            &mut me,
            codec(MIME_TYPE_VP8, 90000, 0, "", video_feedback()),
            96,
            RtpCodecKind::Video,
        )?;
    }
    for (pt, fmtp) in if !h264 {
        &[][..]
    } else {
        &[
            (
                102,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
            ),
            (
                108,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            ),
            (
                112,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
            ),
            (
                116,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f",
            ),
        ][..]
    } {
        register(
            &mut me,
            codec(MIME_TYPE_H264, 90000, 0, fmtp, video_feedback()),
            *pt,
            RtpCodecKind::Video,
        )?;
    }
    if rtx {
        for &(apt, pt) in RTX_PAYLOAD_TYPES {
            if (apt == 96 && vp8) || (apt != 96 && h264) {
                register(
                    &mut me,
                    codec(MIME_TYPE_RTX, 90000, 0, &format!("apt={apt}"), vec![]),
                    pt,
                    RtpCodecKind::Video,
                )?;
            }
        }
    }
    Ok(me)
}

/// What a publisher's leg negotiates on top of the codecs, each only with a peer that offers it:
///
/// - simulcast ingest: the `sdes:mid`, `sdes:rtp-stream-id` and `sdes:repaired-rtp-stream-id`
///   header extensions, without which a browser refuses an answer to its `a=simulcast:send`
///   offer; `rtc` then answers `a=simulcast:recv` with the offered rids (RFC 8853) and tells
///   each layer apart by its rid;
/// - transport-wide congestion control (`transport-cc` feedback and its header extension): the
///   node reports every packet's arrival time back, so the publisher's bandwidth estimate can
///   ramp up to what the path carries. Without it a browser only has the receiver reports'
///   loss to go on, and it keeps its encoder low for a long time.
pub(super) fn publisher_ingest(
    registry: Registry,
    engine: &mut MediaEngine,
) -> Result<Registry, MediaError> {
    configure_simulcast_extension_headers(engine).map_err(|e| {
        MediaError::Unavailable(format!("cannot register simulcast extensions: {e}"))
    })?;
    configure_twcc_receiver_only(registry, engine)
        .map_err(|e| MediaError::Unavailable(format!("cannot register transport-cc: {e}")))
}

/// What a subscriber's leg negotiates on top of the codecs, each only with a peer that offers it:
///
/// - transport-wide congestion control: the node numbers every packet it sends in a
///   `transport-cc` header extension and the player reports each one's arrival time, from which
///   `estimate.rs` estimates what the player's link carries;
/// - `goog-remb`, for players that report their own estimate instead.
///
/// One wire-most interceptor numbers the packets, records what left and drives the estimator
/// (`transport_cc.rs`).
pub(super) fn subscriber_feedback(
    registry: Registry,
    engine: &mut MediaEngine,
    link: std::sync::Arc<super::estimate::LinkStats>,
    rtx_route: std::sync::Arc<super::rtx::RtxRoute>,
    transport_cc_offered: bool,
) -> Result<Registry, MediaError> {
    engine.register_feedback(
        RTCPFeedback {
            typ: "goog-remb".into(),
            parameter: String::new(),
        },
        RtpCodecKind::Video,
    );
    if !transport_cc_offered {
        // Nothing to number packets for, and no reports to feed an estimator: a send history
        // would cost work per packet for nothing.
        return Ok(registry);
    }
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        engine.register_feedback(
            RTCPFeedback {
                typ: "transport-cc".into(),
                parameter: String::new(),
            },
            kind,
        );
        engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: super::transport_cc::TRANSPORT_CC_URI.to_owned(),
                },
                kind,
                None,
            )
            .map_err(|e| MediaError::Unavailable(format!("cannot register transport-cc: {e}")))?;
    }
    Ok(registry.with(
        rtc::interceptor::Slot::CongestionControl,
        super::transport_cc::TransportCc::new(
            super::estimate::LinkEstimator::new(link.clone()),
            rtx_route,
            link,
        ),
    ))
}
