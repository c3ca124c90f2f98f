//! A player that counts what it receives: WHEP with recvonly audio and video and, optionally,
//! the `control` data channel. It can lose packets on purpose and flood keyframe requests, to
//! test what the node does about both.

use super::driver::{self, Resource, RestartAsk};
use super::rtx::{RtxFlow, RtxUnwrap};
use super::synth;
use super::{ClientError, Target};
use crate::media::keyframe::VideoCodec;
use crate::media::peer::media_engine;
use rtc::data_channel::RTCDataChannelId;
use rtc::interceptor::{NackGeneratorBuilder, ReceiverReportBuilder, Registry, Slot};
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

/// How the player behaves.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub data_channel: bool,
    /// Ask for retransmissions of lost packets.
    pub nack: bool,
    /// Drop this fraction of incoming RTP before decryption, as a lossy network would.
    pub drop_ratio: f64,
    /// Send a keyframe request this often (a misbehaving client).
    pub pli_every: Option<Duration>,
    /// Keep every packet's header values (tests); off for load.
    pub record: bool,
    /// Wait for the connection before returning.
    pub wait_connected: bool,
    /// Never send DTLS: ICE completes but the handshake never starts (a client that vanishes
    /// between ICE and DTLS).
    pub hold_dtls: bool,
    /// Offer RTX (RFC 4588) for video, as browsers do.
    pub rtx: bool,
    /// Offer transport-wide congestion control and report every packet's arrival, as browsers
    /// do.
    pub transport_cc: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            data_channel: true,
            nack: true,
            drop_ratio: 0.0,
            pli_every: None,
            record: true,
            wait_connected: true,
            hold_dtls: false,
            rtx: false,
            transport_cc: false,
        }
    }
}

/// One received RTP packet.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub at: Instant,
    /// Publisher send → arrival here, when the payload is synthetic and shares our epoch.
    pub latency_us: Option<u64>,
    /// The send stamp a synthetic payload carries (µs since the client's epoch): which of the
    /// publisher's frames this packet is of.
    pub sent_us: Option<u64>,
}

/// What a subscriber has seen.
#[derive(Debug, Clone, Default)]
pub struct SubscriberStats {
    pub connected: bool,
    pub connected_at: Option<Instant>,
    pub first_video_at: Option<Instant>,
    pub video_packets: u64,
    pub audio_packets: u64,
    pub dropped_on_purpose: u64,
    pub plis_sent: u64,
    pub video: Vec<Received>,
    pub audio: Vec<Received>,
    pub control_messages: Vec<String>,
    pub control_open: bool,
    /// RTP datagrams taken in, by the SSRC of their header (clear in SRTP) before any RTX
    /// decapsulation: the media SSRCs and, with RTX, the repair SSRC.
    pub wire_ssrcs: Vec<(u32, u64)>,
    /// RTCP sender reports received (RFC 3550 6.4.1), by the SSRC they report on.
    pub sender_reports: HashMap<u32, u64>,
    /// Video packets that carried a header extension (with `transport_cc`: its sequence number).
    pub video_with_extension: u64,
}

/// A running subscriber.
pub struct Subscriber {
    pub resource: Resource,
    token: String,
    http: reqwest::Client,
    stats: Arc<Mutex<SubscriberStats>>,
    sender_reports: super::reports::SenderReports,
    control_tx: mpsc::UnboundedSender<String>,
    restart_tx: mpsc::UnboundedSender<RestartAsk>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn connect(
        target: Target,
        options: SubscribeOptions,
        epoch: Instant,
    ) -> Result<Subscriber, ClientError> {
        let sender_reports = super::reports::SenderReports::default();
        let mut registry = Registry::new()
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .with(
                Slot::from(10_500usize),
                super::reports::SenderReportTap::new(sender_reports.clone()),
            );
        let rtx_flow = Arc::new(std::sync::OnceLock::new());
        if options.rtx {
            // Wire-ward of the NACK generator, so it sees repairs as the packets they repair.
            registry = registry.with(Slot::from(6_500usize), RtxUnwrap::new(rtx_flow.clone()));
        }
        if options.nack {
            registry = registry.with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_interval(Duration::from_millis(20))
                    .build(),
            );
        }
        let mut me =
            media_engine(true, true, options.rtx).map_err(|e| ClientError::Rtc(e.to_string()))?;
        if options.transport_cc {
            registry = rtc::peer_connection::configuration::interceptor_registry::configure_twcc_receiver_only(registry, &mut me)
                .map_err(|e| ClientError::Rtc(e.to_string()))?;
        }
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
        driver::receive_video_and_audio(&mut pc, 1)?;
        if options.data_channel {
            pc.create_data_channel("control", None)?;
        }
        let mut socket = UdpSocket::bind("127.0.0.1:0").await?;
        let mut local = socket.local_addr()?;
        let http = driver::http_client();
        let resource = driver::negotiate(&http, &target, "whep", &mut pc, local).await?;
        if let Some(flow) = pc
            .remote_description()
            .and_then(|d| RtxFlow::from_sdp(&d.sdp))
        {
            let _ = rtx_flow.set(flow);
        }
        let (restart_tx, mut restart_rx) = mpsc::unbounded_channel::<RestartAsk>();
        let (task_http, task_token) = (http.clone(), target.token.clone());
        let mut task_resource = resource.clone();

        let stats = Arc::new(Mutex::new(SubscriberStats::default()));
        let (stop, mut stopped) = oneshot::channel();
        let (up_tx, mut up_rx) = watch::channel(false);
        let (control_tx, mut control_rx) = mpsc::unbounded_channel::<String>();
        let task_stats = stats.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            // track id → (kind is video, codec, receiver)
            let mut tracks: HashMap<String, (bool, Option<VideoCodec>, RTCRtpReceiverId, u32)> =
                HashMap::new();
            let mut control: Option<RTCDataChannelId> = None;
            let mut pli_tick =
                tokio::time::interval(options.pli_every.unwrap_or(Duration::from_secs(3600)));
            let mut rng_state: u64 = rand::random::<u64>() | 1;
            loop {
                if options.hold_dtls {
                    driver::flush_except_dtls(&mut pc, &socket).await;
                } else {
                    driver::flush(&mut pc, &socket).await;
                }
                while let Some(event) = pc.poll_event() {
                    if let Some(up) = driver::is_connected(&event) {
                        let _ = up_tx.send(up);
                        let mut s = task_stats.lock().unwrap_or_else(|p| p.into_inner());
                        s.connected = up;
                        if up && s.connected_at.is_none() {
                            s.connected_at = Some(Instant::now());
                        }
                    }
                    match event {
                        RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                            if let Some(r) = pc.rtp_receiver(init.receiver_id) {
                                let track = r.track();
                                let video = track.kind() == RtpCodecKind::Video;
                                let codec = track
                                    .codec(init.ssrc)
                                    .and_then(|c| VideoCodec::from_mime(&c.mime_type));
                                tracks.insert(
                                    init.track_id.clone(),
                                    (video, codec, init.receiver_id, init.ssrc),
                                );
                            }
                        }
                        RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) => {
                            control = Some(id);
                            task_stats.lock().map(|mut s| s.control_open = true).ok();
                        }
                        _ => {}
                    }
                }
                while let Some(msg) = pc.poll_read() {
                    let now = Instant::now();
                    match msg.message {
                        RTCMessage::RtpPacket(track_id, packet) => {
                            let (video, codec) = tracks
                                .get(&track_id)
                                .map(|t| (t.0, t.1))
                                .unwrap_or((false, None));
                            let sent_us = synth::payload_stamp(
                                if video {
                                    codec.or(Some(VideoCodec::H264))
                                } else {
                                    None
                                },
                                &packet.payload,
                            );
                            let latency_us = sent_us
                                .and_then(|sent| synth::micros_since(epoch).checked_sub(sent));
                            let r = Received {
                                ssrc: packet.header.ssrc,
                                seq: packet.header.sequence_number,
                                timestamp: packet.header.timestamp,
                                at: now,
                                latency_us,
                                sent_us,
                            };
                            let mut s = task_stats.lock().unwrap_or_else(|p| p.into_inner());
                            if video {
                                s.video_packets += 1;
                                if packet.header.extension {
                                    s.video_with_extension += 1;
                                }
                                s.first_video_at.get_or_insert(now);
                                if options.record {
                                    s.video.push(r);
                                }
                            } else {
                                s.audio_packets += 1;
                                if options.record {
                                    s.audio.push(r);
                                }
                            }
                        }
                        RTCMessage::DataChannelMessage(_, m) => {
                            let text = String::from_utf8_lossy(&m.data).into_owned();
                            task_stats
                                .lock()
                                .map(|mut s| s.control_messages.push(text))
                                .ok();
                        }
                        _ => {}
                    }
                }
                let deadline = pc
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                tokio::select! {
                    _ = &mut stopped => break,
                    r = socket.recv_from(&mut buf) => if let Ok((n, from)) = r {
                        let data = &buf[..n];
                        // RTP, not RTCP (RFC 5761: RTCP packet types 192-223 in the second byte).
                        let is_rtp = matches!(data.first(), Some(128..=191)) && !matches!(data.get(1), Some(192..=223));
                        if is_rtp && options.drop_ratio > 0.0 {
                            rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
                            if (rng_state % 1_000_000) as f64 / 1_000_000.0 < options.drop_ratio {
                                task_stats.lock().map(|mut s| s.dropped_on_purpose += 1).ok();
                                continue;
                            }
                        }
                        if is_rtp && let Some(ssrc) = data.get(8..12) {
                            let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
                            let mut s = task_stats.lock().unwrap_or_else(|p| p.into_inner());
                            match s.wire_ssrcs.iter_mut().find(|(x, _)| *x == ssrc) {
                                Some((_, n)) => *n += 1,
                                None => s.wire_ssrcs.push((ssrc, 1)),
                            }
                        }
                        driver::feed(&mut pc, local, from, data);
                    },
                    _ = tokio::time::sleep_until(deadline.into()) => { let _ = pc.handle_timeout(Instant::now()); }
                    Some(reply) = restart_rx.recv() => {
                        let moved = driver::move_and_restart(&task_http, &mut task_resource, &task_token, &mut pc).await;
                        let _ = reply.send(moved.map(|(new_socket, new_local)| {
                            socket = new_socket;
                            local = new_local;
                            task_resource.clone()
                        }));
                    }
                    text = control_rx.recv() => if let (Some(text), Some(id)) = (text, control)
                        && let Some(mut dc) = pc.data_channel(id) {
                        let _ = dc.send_text(Instant::now(), text);
                    },
                    _ = pli_tick.tick(), if options.pli_every.is_some() => {
                        let video = tracks.values().find(|t| t.0).map(|t| (t.2, t.3));
                        if let Some((receiver, ssrc)) = video
                            && let Some(mut r) = pc.rtp_receiver(receiver)
                            && r.write_rtcp(Instant::now(), vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc })]).is_ok()
                        {
                            task_stats.lock().map(|mut s| s.plis_sent += 1).ok();
                        }
                    }
                }
            }
            let _ = pc.close();
            driver::flush(&mut pc, &socket).await;
        });
        if options.wait_connected {
            let up = tokio::time::timeout(Duration::from_secs(10), up_rx.wait_for(|up| *up)).await;
            if !matches!(up, Ok(Ok(_))) {
                task.abort();
                return Err(ClientError::Timeout(Duration::from_secs(10)));
            }
        }
        Ok(Subscriber {
            resource,
            token: target.token,
            http,
            stats,
            sender_reports,
            control_tx,
            restart_tx,
            stop: Some(stop),
            task,
        })
    }

    pub fn stats(&self) -> SubscriberStats {
        let mut stats = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        stats.sender_reports = self
            .sender_reports
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        stats
    }

    /// Moves to a new local UDP socket (a network change) and restarts ICE over WHEP `PATCH`
    /// (RFC 9725 §4.4). Returns once the server's answer is applied; the connection itself comes
    /// back when the new path's checks succeed. Updates [`Subscriber::resource`]'s ETag.
    pub async fn restart_ice(&mut self) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        let gone = || ClientError::Rtc("the subscriber task has stopped".into());
        self.restart_tx.send(reply).map_err(|_| gone())?;
        self.resource = answer.await.map_err(|_| gone())??;
        Ok(())
    }

    /// Sends a text message on the control channel.
    pub fn send_control(&self, text: impl Into<String>) {
        let _ = self.control_tx.send(text.into());
    }

    pub async fn close(mut self) -> Result<u16, ClientError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        driver::delete(&self.http, &self.resource, &self.token).await
    }
}
