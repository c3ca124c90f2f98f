//! A synthetic dealer: publishes over WHIP and sends video and audio shaped like a studio camera.

use super::driver::{self, Resource, RestartAsk};
use super::synth;
use super::{ClientError, Target};
use crate::media::keyframe::VideoCodec;
use crate::media::peer::media_engine;
use crate::media::rtcp_tap::RtcpTap;
use rtc::interceptor::{NackResponderBuilder, Registry, SenderReportBuilder, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::message::RTCMessage;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub video: Option<VideoCodec>,
    pub audio: bool,
    /// RTP packets per video frame (4 at 30 fps ≈ 130 packets/s with keyframes).
    pub packets_per_frame: usize,
    /// Extra packets a keyframe takes on top of `packets_per_frame`.
    pub keyframe_extra_packets: usize,
    pub packet_size: usize,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            video: Some(VideoCodec::H264),
            audio: true,
            packets_per_frame: 4,
            keyframe_extra_packets: 4,
            packet_size: 1100,
        }
    }
}

/// Counters of a publisher.
#[derive(Debug, Clone, Default)]
pub struct PublisherStats {
    pub connected: bool,
    pub video_sent: u64,
    pub audio_sent: u64,
    pub keyframes_sent: u64,
    /// Keyframe requests (PLI) that reached this publisher.
    pub plis_received: u64,
    pub nacks_received: u64,
    /// The video frames sent lately, oldest first: RTP timestamp, wall-clock ms (Unix) at
    /// capture (when it was sent, for this synthetic camera), and the send stamp its payloads
    /// carry (`synth`, µs since the client's epoch; [`super::Received::sent_us`]). At most
    /// [`FRAMES_KEPT`].
    pub frames: std::collections::VecDeque<(u32, u64, u64)>,
}

/// Frames a publisher's stats remember: 20 s at 30 frames a second.
pub const FRAMES_KEPT: usize = 600;
/// How often the publisher sends a sender report of its video (RFC 3550 section 6.4.1).
const SENDER_REPORT_EVERY: Duration = Duration::from_secs(1);

/// A running synthetic publisher.
pub struct Publisher {
    pub resource: Resource,
    token: String,
    http: reqwest::Client,
    stats: Arc<Mutex<PublisherStats>>,
    restart_tx: mpsc::UnboundedSender<RestartAsk>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

struct Out {
    sender: RTCRtpSenderId,
    ssrc: u32,
    pt: u8,
    seq: u16,
}

impl Publisher {
    /// Publishes to `target` and returns once the connection is up.
    pub async fn connect(
        target: Target,
        options: PublishOptions,
        epoch: Instant,
    ) -> Result<Publisher, ClientError> {
        let registry = Registry::new()
            .with(Slot::NackResponder, NackResponderBuilder::new().build())
            .with(Slot::SenderReport, SenderReportBuilder::new().build())
            .with(Slot::from(11_500usize), RtcpTap::new(Default::default()));
        let me = media_engine(
            options.video == Some(VideoCodec::H264),
            options.video == Some(VideoCodec::Vp8),
            false,
        )
        .map_err(|e| ClientError::Rtc(e.to_string()))?;
        // An ICE restart moves to a new socket: the old address's candidate must go with it.
        let setting_engine = super::ice_settings(SettingEngineBuilder::new())
            .with_discard_local_candidates_during_ice_restart(true)
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(setting_engine)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(Instant::now())?;
        let mut add =
            |kind: RtpCodecKind, label: &str| -> Result<(RTCRtpSenderId, u32), ClientError> {
                let ssrc = rand::random::<u32>();
                let track = MediaStreamTrack::new(
                    "dealer".into(),
                    label.into(),
                    label.into(),
                    kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        ..Default::default()
                    }],
                );
                Ok((pc.add_track(track)?, ssrc))
            };
        let video = options
            .video
            .map(|_| add(RtpCodecKind::Video, "video"))
            .transpose()?;
        let audio = if options.audio {
            Some(add(RtpCodecKind::Audio, "audio")?)
        } else {
            None
        };

        let mut socket = UdpSocket::bind("127.0.0.1:0").await?;
        let mut local = socket.local_addr()?;
        let http = driver::http_client();
        let resource = driver::negotiate(&http, &target, "whip", &mut pc, local).await?;
        let (restart_tx, mut restart_rx) = mpsc::unbounded_channel::<RestartAsk>();
        let (task_http, task_token) = (http.clone(), target.token.clone());
        let mut task_resource = resource.clone();

        let mut pt_of = |id: RTCRtpSenderId, want: &str| -> Option<u8> {
            let mut s = pc.rtp_sender(id)?;
            s.get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(want))
                .map(|c| c.payload_type)
        };
        let video = match (video, options.video) {
            (Some((sender, ssrc)), Some(codec)) => {
                let mime = if codec == VideoCodec::H264 {
                    "video/H264"
                } else {
                    "video/VP8"
                };
                let pt = pt_of(sender, mime)
                    .ok_or_else(|| ClientError::Rtc(format!("{mime} was not accepted")))?;
                Some((
                    Out {
                        sender,
                        ssrc,
                        pt,
                        seq: rand::random(),
                    },
                    codec,
                ))
            }
            _ => None,
        };
        let audio = match audio {
            Some((sender, ssrc)) => {
                let pt = pt_of(sender, "audio/opus")
                    .ok_or_else(|| ClientError::Rtc("Opus was not accepted".into()))?;
                Some(Out {
                    sender,
                    ssrc,
                    pt,
                    seq: rand::random(),
                })
            }
            None => None,
        };

        let stats = Arc::new(Mutex::new(PublisherStats::default()));
        let (stop, mut stopped) = oneshot::channel();
        let (up_tx, mut up_rx) = watch::channel(false);
        let task_stats = stats.clone();
        let task = tokio::spawn(async move {
            let mut video = video;
            let mut audio = audio;
            let mut buf = vec![0u8; 2048];
            let mut video_tick =
                tokio::time::interval(Duration::from_micros(1_000_000 / synth::VIDEO_FPS as u64));
            let mut audio_tick = tokio::time::interval(synth::AUDIO_PTIME);
            let mut frame: u64 = 0;
            let mut audio_n: u64 = 0;
            let mut counter: u64 = 0;
            let mut connected = false;
            let mut last_key: Option<Instant> = None;
            let mut last_report: Option<Instant> = None;
            let mut key_wanted = true;
            loop {
                driver::flush(&mut pc, &socket).await;
                while let Some(event) = pc.poll_event() {
                    if let Some(up) = driver::is_connected(&event) {
                        connected = up;
                        let _ = up_tx.send(up);
                        task_stats.lock().map(|mut s| s.connected = up).ok();
                    }
                }
                while let Some(msg) = pc.poll_read() {
                    if let RTCMessage::RtcpPacket(_, packets) = msg.message {
                        let mut s = task_stats.lock().unwrap_or_else(|p| p.into_inner());
                        for p in packets {
                            if p.as_any().is::<PictureLossIndication>() {
                                s.plis_received += 1;
                                key_wanted = true;
                            } else if p.as_any().is::<TransportLayerNack>() {
                                s.nacks_received += 1;
                            }
                        }
                    }
                }
                let deadline = pc
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                tokio::select! {
                    _ = &mut stopped => break,
                    r = socket.recv_from(&mut buf) => if let Ok((n, from)) = r { driver::feed(&mut pc, local, from, &buf[..n]) },
                    _ = tokio::time::sleep_until(deadline.into()) => { let _ = pc.handle_timeout(Instant::now()); }
                    Some(reply) = restart_rx.recv() => {
                        let moved = driver::move_and_restart(&task_http, &mut task_resource, &task_token, &mut pc).await;
                        let _ = reply.send(moved.map(|(new_socket, new_local)| {
                            socket = new_socket;
                            local = new_local;
                            task_resource.clone()
                        }));
                    }
                    _ = video_tick.tick(), if connected && video.is_some() => {
                        let now = Instant::now();
                        let keyframe = key_wanted || last_key.is_none_or(|t| now.duration_since(t) >= synth::KEYFRAME_INTERVAL);
                        if keyframe { last_key = Some(now); key_wanted = false; }
                        if let Some((out, codec)) = video.as_mut() {
                            let ts = (frame * (synth::VIDEO_CLOCK / synth::VIDEO_FPS) as u64) as u32;
                            if last_report.is_none_or(|t| now.duration_since(t) >= SENDER_REPORT_EVERY) {
                                last_report = Some(now);
                                sender_report(&mut pc, out, ts);
                            }
                            let stamp = synth::micros_since(epoch);
                            let payloads = synth::video_frame(*codec, keyframe, options.packets_per_frame + usize::from(keyframe) * options.keyframe_extra_packets, options.packet_size, stamp, &mut counter);
                            let last = payloads.len() - 1;
                            for (i, payload) in payloads.into_iter().enumerate() {
                                send(&mut pc, out, ts, i == last, payload, now);
                            }
                            let mut s = task_stats.lock().unwrap_or_else(|p| p.into_inner());
                            s.video_sent += last as u64 + 1;
                            s.keyframes_sent += u64::from(keyframe);
                            if s.frames.len() == FRAMES_KEPT {
                                s.frames.pop_front();
                            }
                            s.frames.push_back((ts, crate::control::server_ms(), stamp));
                        }
                        frame += 1;
                    }
                    _ = audio_tick.tick(), if connected && audio.is_some() => {
                        if let Some(out) = audio.as_mut() {
                            let ts = (audio_n * 960) as u32;
                            send(&mut pc, out, ts, false, synth::audio_packet(synth::micros_since(epoch), &mut counter), Instant::now());
                            task_stats.lock().map(|mut s| s.audio_sent += 1).ok();
                        }
                        audio_n += 1;
                    }
                }
            }
            let _ = pc.close();
            driver::flush(&mut pc, &socket).await;
        });
        let up = tokio::time::timeout(Duration::from_secs(10), up_rx.wait_for(|up| *up)).await;
        if !matches!(up, Ok(Ok(_))) {
            task.abort();
            return Err(ClientError::Timeout(Duration::from_secs(10)));
        }
        Ok(Publisher {
            resource,
            token: target.token,
            http,
            stats,
            restart_tx,
            stop: Some(stop),
            task,
        })
    }

    pub fn stats(&self) -> PublisherStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Moves to a new local UDP socket (a network change) and restarts ICE over WHIP `PATCH`
    /// (RFC 9725 §4.4). Returns once the server's answer is applied. Updates
    /// [`Publisher::resource`]'s ETag.
    pub async fn restart_ice(&mut self) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        let gone = || ClientError::Rtc("the publisher task has stopped".into());
        self.restart_tx.send(reply).map_err(|_| gone())?;
        self.resource = answer.await.map_err(|_| gone())??;
        Ok(())
    }

    /// Stops sending and DELETEs the session; returns the DELETE status.
    pub async fn close(mut self) -> Result<u16, ClientError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        driver::delete(&self.http, &self.resource, &self.token).await
    }

    /// Stops sending without telling the server (a dealer whose network vanished).
    pub async fn vanish(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// A sender report of the video stream: this moment, as NTP time, is RTP timestamp `ts` (the
/// frame captured now). Written here: `rtc`'s report interceptor reports only a stream whose
/// encoding named a negotiated codec, which an offerer's cannot before the answer.
fn sender_report(pc: &mut rtc::peer_connection::RTCPeerConnection, out: &Out, ts: u32) {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ntp = rtc::shared::time::SystemInstant::unix2ntp(unix);
    let report = rtc::rtcp::sender_report::SenderReport {
        ssrc: out.ssrc,
        ntp_time: ntp,
        rtp_time: ts,
        packet_count: u32::from(out.seq),
        octet_count: 0,
        reports: vec![],
        profile_extensions: Default::default(),
    };
    if let Some(mut sender) = pc.rtp_sender(out.sender) {
        let _ = sender.write_rtcp(Instant::now(), vec![Box::new(report)]);
    }
}

fn send(
    pc: &mut rtc::peer_connection::RTCPeerConnection,
    out: &mut Out,
    ts: u32,
    marker: bool,
    payload: bytes::Bytes,
    now: Instant,
) {
    let mut packet = rtc::rtp::Packet::default();
    packet.header.version = 2;
    packet.header.marker = marker;
    packet.header.payload_type = out.pt;
    packet.header.sequence_number = out.seq;
    packet.header.timestamp = ts;
    packet.header.ssrc = out.ssrc;
    packet.payload = payload;
    out.seq = out.seq.wrapping_add(1);
    if let Some(mut sender) = pc.rtp_sender(out.sender) {
        let _ = sender.write_rtp(now, packet);
    }
}
