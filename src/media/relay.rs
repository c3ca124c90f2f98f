//! The cascade: a node that serves a table's players but not its dealer (an edge) pulls each
//! camera its players watch from the table's origin node once, and fans it out to its own
//! players.
//!
//! ```text
//!   dealer ─WHIP─▶ origin ──relay session (ICE + DTLS-SRTP)──▶ edge pull ─▶ edge worker ─▶ players
//! ```
//!
//! - On the origin the pull is one more subscriber session, opened at `POST /cluster/v1/relay/
//!   {table}` with the edge's node credential (an operator token of the cluster's keys, user
//!   `node.{id}`), counted as a relay rather than a player.
//! - On the edge, [`Cascade`] runs one pull per table camera with local players: a full-ICE
//!   client on its own UDP socket, since the node's workers are ICE-lite. Its packets go to one
//!   worker, which takes them in as it would a publisher's (`RelaySource`): layer tracking, the
//!   NACK buffer that answers the edge's players, and the per-player rewriting that keeps their
//!   sequence numbers continuous when the pull moves to a new origin.
//! - Losses on the hop are NACKed to the origin by the pull; the edge's players' keyframe
//!   requests reach the pull through the worker's per-camera throttle, and the origin throttles
//!   them again per camera.
//! - A pull lives while the camera has players on this node, and [`LINGER`] after the last one
//!   leaves. It follows the table's owner: when the owner changes (a failover), the pull moves to
//!   the new one.
//! - A pull that has not been connected for [`UNREACHABLE_AFTER`] (the relay session cannot be
//!   opened, ICE/DTLS does not connect, or the connection was lost and does not come back) marks
//!   the table's origin unreachable from this node ([`RelayInfo::unreachable`], kept by
//!   `reach.rs`); the mark goes as soon as a pull connects again. `/readyz`, the heartbeat and
//!   `join` read it.

use super::handle::MediaHandle;
use super::keyframe::VideoCodec;
use super::peer::{MediaKind, RouterKey, media_engine};
use super::router::{RELAY_LAYERS, RelaySource};
use super::video_map::parse_relay_map;
use super::worker::WorkerMsg;
use crate::client::driver;
use crate::client::{ClientError, Target};
use crate::ids::TableId;
use crate::metrics::Metrics;
use rtc::interceptor::{NackGeneratorBuilder, ReceiverReportBuilder, Registry, Slot};
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

mod reach;

use reach::{Reach, mark, observe};
pub use reach::{UNREACHABLE_AFTER, Unreachable};

/// The path a relay session is opened at on the origin, before `/{table}`.
pub const RELAY_PATH: &str = "cluster/v1/relay";
/// How long a pull outlives the last local player of its camera, so that a player who
/// reloads the page finds it still running.
pub const LINGER: Duration = Duration::from_secs(5);
/// How long a pull may take to connect before it is tried again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a pull looks at the table's owner and at its local players.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// The wait before trying again after a pull failed.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// A test hook: the fraction of RTP datagrams from the origin that a pull drops on receipt, as
/// a lossy link between the nodes would (the cascade's loss test). Unset in production.
pub const TEST_LOSS_ENV: &str = "TABLECAST_TEST_RELAY_LOSS";

/// Where each table's origin is, and the credential it accepts from this node.
pub trait Origins: Send + Sync + 'static {
    /// The base URL of the node that owns the table (its dealer publishes there), when it is
    /// another node.
    fn origin_url(&self, table: &TableId) -> Option<String>;
    /// A bearer token the origin accepts from this node.
    fn node_credential(&self) -> Option<String>;
}

/// Players of each table camera on this node, kept by the workers as subscribers come and go.
#[derive(Default)]
pub struct Viewers(Mutex<HashMap<RouterKey, usize>>);

impl Viewers {
    pub fn add(&self, key: &RouterKey) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(key.clone()).or_insert(0) += 1;
    }

    pub fn remove(&self, key: &RouterKey) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    pub fn count(&self, key: &RouterKey) -> usize {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).copied().unwrap_or(0)
    }
}

/// One relay as an operator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayInfo {
    pub table: TableId,
    pub camera: crate::ids::CameraId,
    /// The origin's base URL, while connected.
    pub origin: Option<String>,
    pub connected: bool,
    pub packets: u64,
    /// Video layers the pull carries (the camera's simulcast layers at the origin).
    pub layers: usize,
    /// Set while no pull of this camera has worked for [`UNREACHABLE_AFTER`].
    pub unreachable: Option<Unreachable>,
}

/// The pulls of this node (an edge), one per table camera with local players.
pub struct Cascade {
    media: MediaHandle,
    origins: Arc<dyn Origins>,
    metrics: Arc<Metrics>,
    /// The IP the pulls' sockets bind to, and announce as their candidate.
    bind_ip: IpAddr,
    announce_ip: IpAddr,
    pulls: Mutex<HashMap<RouterKey, Arc<Mutex<RelayInfo>>>>,
    /// See [`TEST_LOSS_ENV`].
    test_loss: f64,
}

impl Cascade {
    pub fn new(
        media: MediaHandle,
        origins: Arc<dyn Origins>,
        metrics: Arc<Metrics>,
        bind_ip: IpAddr,
        announce_ip: Option<IpAddr>,
    ) -> Arc<Self> {
        // Unless told, the address the workers announce first.
        let announce_ip = announce_ip
            .or_else(|| {
                media
                    .candidates
                    .first()
                    .and_then(|c| c.first())
                    .map(|a| a.ip())
            })
            .unwrap_or(bind_ip);
        let test_loss = std::env::var(TEST_LOSS_ENV)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|r| *r > 0.0)
            .map_or(0.0, |r| r.min(1.0));
        if test_loss > 0.0 {
            warn!(
                loss = test_loss,
                "{TEST_LOSS_ENV} is set: relays drop this fraction of the origin's packets (a test hook; unset it)"
            );
        }
        Arc::new(Self {
            media,
            origins,
            metrics,
            bind_ip,
            announce_ip,
            pulls: Mutex::new(HashMap::new()),
            test_loss,
        })
    }

    /// The pulls running now.
    pub fn list(&self) -> Vec<RelayInfo> {
        let pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        pulls
            .values()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// The tables whose origin this node cannot reach now: one entry per table, the camera
    /// that has been failing longest.
    pub fn unreachable(&self) -> Vec<(TableId, Unreachable)> {
        let mut tables: HashMap<TableId, Unreachable> = HashMap::new();
        for relay in self.list() {
            let Some(u) = relay.unreachable else { continue };
            match tables.get(&relay.table) {
                Some(have) if have.since_ms <= u.since_ms => {}
                _ => {
                    tables.insert(relay.table, u);
                }
            }
        }
        let mut list: Vec<_> = tables.into_iter().collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Makes sure `key` is pulled from its origin while it has players here. Called when a
    /// player opens a session for a table this node does not own.
    pub fn ensure(self: &Arc<Self>, key: RouterKey) {
        let info = {
            let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
            if pulls.contains_key(&key) {
                return;
            }
            let info = Arc::new(Mutex::new(RelayInfo {
                table: key.table.clone(),
                camera: key.camera.clone(),
                origin: None,
                connected: false,
                packets: 0,
                layers: 0,
                unreachable: None,
            }));
            pulls.insert(key.clone(), info.clone());
            info
        };
        let this = self.clone();
        let span = info_span!("relay", table_id = %key.table, camera = %key.camera);
        tokio::spawn(
            async move {
                this.supervise(&key, &info).await;
                let mut pulls = this.pulls.lock().unwrap_or_else(|e| e.into_inner());
                pulls.remove(&key);
            }
            .instrument(span),
        );
    }

    /// Runs pulls of `key` until it has had no local player for [`LINGER`].
    async fn supervise(&self, key: &RouterKey, info: &Mutex<RelayInfo>) {
        let mut idle_since: Option<Instant> = None;
        let mut reach = Reach::default();
        loop {
            if self.idle_too_long(key, &mut idle_since) {
                return;
            }
            let Some(origin) = self.origins.origin_url(&key.table) else {
                // This node owns the table (its dealer publishes here), or nobody does.
                reach = Reach::default();
                mark(info, None);
                tokio::time::sleep(CHECK_EVERY).await;
                continue;
            };
            let Some(token) = self.origins.node_credential() else {
                warn!(
                    "cannot issue this node's credential; the table's video cannot reach its players here"
                );
                reach.failed(&origin, "this node cannot issue its node credential".into());
                observe(&mut reach, info, &origin);
                tokio::time::sleep(RETRY_AFTER * 4).await;
                continue;
            };
            let id = rand::random::<u64>() | 1;
            let started = Instant::now();
            let attempt = self.pull(key, id, &origin, token, info, &mut idle_since);
            tokio::pin!(attempt);
            let mut watch = tokio::time::interval(CHECK_EVERY);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut attempt => break outcome,
                    _ = watch.tick() => observe(&mut reach, info, &origin),
                }
            };
            match outcome {
                Ok(ended) => {
                    info!(%origin, ended, "relay ended");
                    reach.failed(&origin, format!("the relay session ended: {ended}"));
                }
                Err(e) => {
                    warn!(%origin, error = %e, "cannot pull the table's video from its origin; trying again (check that this node reaches the origin's media ports over UDP)");
                    reach.failed(&origin, e.to_string());
                }
            }
            self.media
                .relay_send_wait(
                    key,
                    WorkerMsg::RelayClose {
                        key: key.clone(),
                        relay: id,
                    },
                )
                .await;
            {
                let mut i = info.lock().unwrap_or_else(|e| e.into_inner());
                i.connected = false;
                i.origin = None;
            }
            observe(&mut reach, info, &origin);
            if started.elapsed() < RETRY_AFTER * 4 {
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }

    /// True once `key` has had no player here for [`LINGER`].
    fn idle_too_long(&self, key: &RouterKey, idle_since: &mut Option<Instant>) -> bool {
        if self.media.viewers.count(key) > 0 {
            *idle_since = None;
            return false;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        since.elapsed() >= LINGER
    }

    /// One pull from `origin`, until it fails, the table's owner changes or the camera has had
    /// no player here for [`LINGER`]. Returns why it ended.
    async fn pull(
        &self,
        key: &RouterKey,
        id: u64,
        origin: &str,
        token: String,
        info: &Mutex<RelayInfo>,
        idle_since: &mut Option<Instant>,
    ) -> Result<&'static str, ClientError> {
        let registry = Registry::new()
            .with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_interval(Duration::from_millis(20))
                    .build(),
            )
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build());
        let engine =
            media_engine(true, true, false).map_err(|e| ClientError::Rtc(e.to_string()))?;
        let setting_engine = crate::client::ice_settings(SettingEngineBuilder::new()).build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(setting_engine)
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .build(Instant::now())?;
        driver::receive_video_and_audio(&mut pc, RELAY_LAYERS)?;
        // The origin tells the pull, on this channel, which frame of the camera each of its
        // streams' frames is (`video.map`), for the players here to reveal results on.
        pc.create_data_channel("control", None)?;
        let frames = self.media.frames.relayed(&key.table, &key.camera);
        frames.clear_relayed();
        let socket = UdpSocket::bind(SocketAddr::new(self.bind_ip, 0)).await?;
        let local = SocketAddr::new(self.announce_ip, socket.local_addr()?.port());
        let http = driver::http_client();
        let target = Target {
            base_url: origin.to_owned(),
            table: key.table.to_string(),
            camera: Some(key.camera.to_string()),
            token: token.clone(),
        };
        let resource = driver::negotiate(&http, &target, RELAY_PATH, &mut pc, local).await?;
        let codecs = pc
            .remote_description()
            .map(|d| payload_codecs(&d.sdp))
            .unwrap_or_default();
        debug!(session = %resource.location, "relay session opened on the origin");

        let metrics = self.metrics.table(&key.table);
        let (keyframes_tx, mut keyframes) = mpsc::unbounded_channel();
        let span = tracing::Span::current();
        self.media
            .relay_send_wait(
                key,
                WorkerMsg::RelayOpen {
                    key: key.clone(),
                    source: RelaySource::new(id, keyframes_tx, metrics.clone(), span),
                },
            )
            .await;
        let shared_key = Arc::new(key.clone());
        let opened = Instant::now();
        let mut connected = false;
        let mut buf = vec![0u8; 2048];
        let mut tracks: HashMap<String, (MediaKind, RTCRtpReceiverId)> = HashMap::new();
        // Each video stream's SSRC (one per layer of the camera) and its receiver.
        let mut video_ssrcs: HashMap<u32, RTCRtpReceiverId> = HashMap::new();
        let mut check = tokio::time::interval(CHECK_EVERY);
        let ended = loop {
            driver::flush(&mut pc, &socket).await;
            let mut down = false;
            while let Some(event) = pc.poll_event() {
                match driver::is_connected(&event) {
                    Some(true) if !connected => {
                        connected = true;
                        metrics.relays_in.fetch_add(1, Relaxed);
                        let mut i = info.lock().unwrap_or_else(|e| e.into_inner());
                        i.connected = true;
                        i.origin = Some(origin.to_owned());
                        info!(%origin, connect_ms = opened.elapsed().as_millis() as u64, "relay connected: pulling the table's video from its origin");
                    }
                    Some(false) => down = true,
                    _ => {}
                }
                if let RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) = event
                    && let Some(r) = pc.rtp_receiver(init.receiver_id)
                {
                    let kind = match r.track().kind() {
                        RtpCodecKind::Video => MediaKind::Video,
                        _ => MediaKind::Audio,
                    };
                    tracks.insert(init.track_id.clone(), (kind, init.receiver_id));
                }
            }
            if down {
                break "the connection to the origin was lost";
            }
            // The origin's maps of its streams, for every worker's players here (below).
            let mut maps = Vec::new();
            while let Some(msg) = pc.poll_read() {
                if let RTCMessage::DataChannelMessage(_, message) = &msg.message {
                    if let Some((ssrc, anchor)) = parse_relay_map(&message.data) {
                        debug!(
                            ssrc,
                            rtp = anchor.rtp,
                            media_ts = anchor.frame.media_ts,
                            media_clock = anchor.frame.clock,
                            "the origin's video.map of a relay stream"
                        );
                        frames.set_relayed(ssrc, anchor.rtp, anchor.frame);
                        maps.push((ssrc, anchor.rtp));
                    }
                    continue;
                }
                if let RTCMessage::RtpPacket(track_id, packet) = msg.message {
                    let Some(&(kind, receiver)) = tracks.get(&track_id) else {
                        continue;
                    };
                    let mut new_layer = false;
                    let codec = match kind {
                        MediaKind::Video => {
                            new_layer = video_ssrcs.insert(packet.header.ssrc, receiver).is_none();
                            codecs.get(&packet.header.payload_type).copied()
                        }
                        MediaKind::Audio => None,
                    };
                    if let Ok(mut i) = info.lock() {
                        i.packets += 1;
                        i.layers = video_ssrcs.len();
                    }
                    if new_layer {
                        debug!(
                            ssrc = packet.header.ssrc,
                            layers = video_ssrcs.len(),
                            "relay carries a new video layer"
                        );
                    }
                    let handed = self.media.relay_send(
                        key,
                        WorkerMsg::RelayRtp {
                            key: shared_key.clone(),
                            relay: id,
                            kind,
                            codec,
                            packet,
                        },
                    );
                    if !handed
                        && metrics
                            .relay_drops
                            .fetch_add(1, Relaxed)
                            .is_multiple_of(1000)
                    {
                        warn!(
                            "the media worker's queue is full: packets from the origin are dropped (see tablecast_relay_packets_dropped_total); the node needs more CPU or fewer players"
                        );
                    }
                }
            }
            for (ssrc, rtp) in maps {
                self.media.relay_map(key, ssrc, rtp).await;
            }
            let deadline = pc
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                r = socket.recv_from(&mut buf) => if let Ok((n, from)) = r {
                    let data = &buf[..n];
                    // RTP, not RTCP (RFC 5761: RTCP packet types 192-223 in the second byte).
                    let rtp = matches!(data.first(), Some(128..=191)) && !matches!(data.get(1), Some(192..=223));
                    if rtp && self.test_loss > 0.0 && rand::random::<f64>() < self.test_loss {
                        continue;
                    }
                    driver::feed(&mut pc, local, from, data);
                },
                _ = tokio::time::sleep_until(deadline.into()) => { let _ = pc.handle_timeout(Instant::now()); }
                Some(media_ssrc) = keyframes.recv() => {
                    // A keyframe of that layer, asked of the origin on its stream.
                    if let Some(&receiver) = video_ssrcs.get(&media_ssrc)
                        && let Some(mut r) = pc.rtp_receiver(receiver)
                    {
                        let _ = r.write_rtcp(Instant::now(), vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })]);
                    }
                }
                _ = check.tick() => {
                    if !connected && opened.elapsed() > CONNECT_TIMEOUT {
                        break "it did not connect in time";
                    }
                    if self.origins.origin_url(&key.table).as_deref() != Some(origin) {
                        break "the table's owner changed";
                    }
                    if self.idle_too_long(key, idle_since) {
                        break "no player watches the camera on this node any more";
                    }
                }
            }
        };
        if connected {
            metrics.relays_in.fetch_sub(1, Relaxed);
        }
        // The pull's maps go with it (a newer pull, or a dealer here, has its own clock).
        self.media
            .frames
            .unpublish(&key.table, &key.camera, &frames);
        let _ = pc.close();
        driver::flush(&mut pc, &socket).await;
        // Best effort: the origin reaps the session by itself if this does not reach it.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            driver::delete(&http, &resource, &token),
        )
        .await;
        Ok(ended)
    }
}

/// The video codec of each payload type in an SDP (`a=rtpmap:96 VP8/90000`).
fn payload_codecs(sdp: &str) -> HashMap<u8, VideoCodec> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=rtpmap:"))
        .filter_map(|rest| {
            let (pt, codec) = rest.split_once(' ')?;
            let mime = format!("video/{}", codec.split('/').next()?);
            Some((pt.parse().ok()?, VideoCodec::from_mime(&mime)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_map_to_their_video_codecs() {
        let sdp = "m=video 9 UDP/TLS/RTP/SAVPF 96 102 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=rtpmap:97 rtx/90000\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let map = payload_codecs(sdp);
        assert_eq!(map.get(&96), Some(&VideoCodec::Vp8));
        assert_eq!(map.get(&102), Some(&VideoCodec::H264));
        assert_eq!(map.get(&97), None);
        assert_eq!(map.get(&111), None);
    }

    #[test]
    fn viewers_count_per_camera_and_forget_the_empty() {
        let v = Viewers::default();
        let key = RouterKey {
            table: TableId::parse("demo").unwrap(),
            camera: crate::ids::CameraId::main(),
        };
        v.add(&key);
        v.add(&key);
        v.remove(&key);
        assert_eq!(v.count(&key), 1);
        v.remove(&key);
        v.remove(&key);
        assert_eq!(v.count(&key), 0);
    }
}
