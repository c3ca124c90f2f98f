//! The tablecast side: a node to measure (started here as its own process, or one already
//! running), its synthetic dealer, WHEP players and dealer round actions over HTTP.
//!
//! A node the tool starts is this same binary, `serve`, with a generated config in a temp dir:
//! plain HTTP on 127.0.0.1, media on 127.0.0.1 with `--node-workers` workers (one by default),
//! a fresh secret, and a `bench` table whose limits let one player bet as fast as the node
//! answers (`[control]` rate limits raised to match). Its own process, so `/proc` figures are the
//! node's alone and `taskset` can pin it.

use super::BenchError;
use super::viewer::{ViewerSetup, video_payload_types};
use crate::auth::{TokenRole, Tokens};
use crate::client::{PublishOptions, Publisher, Target, driver};
use crate::ids::UserId;
use crate::media::keyframe::VideoCodec;
use crate::media::peer::media_engine;
use rtc::interceptor::Registry;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The table the generated config serves.
pub const BENCH_TABLE: &str = "bench";

/// A process the tool started (a node or Janus), stopped with SIGTERM when dropped.
pub struct Spawned {
    pub child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
    keep_dir: bool,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `program args…`, pinned to `cpus` (a `taskset` list) when given, logging to
    /// `dir/log_name`.
    pub fn start(
        program: &Path,
        args: &[String],
        cpus: Option<&str>,
        dir: PathBuf,
        log_name: &str,
        keep_dir: bool,
    ) -> Result<Spawned, BenchError> {
        let log = dir.join(log_name);
        let out = std::fs::File::create(&log).map_err(|e| BenchError::io("create a log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| BenchError::io("create a log", e))?;
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(program);
                c
            }
            None => Command::new(program),
        };
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent. The process dies
        // with the load tool even when the tool is killed and its `Drop`s never run.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Our environment must not reconfigure the node behind the generated config's back.
        for (key, _) in std::env::vars() {
            if key.starts_with(crate::config::ENV_PREFIX) {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().map_err(|e| BenchError::Spawn {
            program: program.display().to_string(),
            source: e,
        })?;
        Ok(Spawned {
            child,
            dir,
            log,
            keep_dir,
        })
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Exited already? Then why.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            // Reaped already (it exited, or `kill` ran): its pid may belong to another process.
            self.clean_up();
            return;
        }
        // SIGTERM first (both the node and Janus shut down cleanly on it), SIGKILL after 5 s.
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.clean_up();
    }
}

impl Spawned {
    /// SIGKILLs the process now and waits for it (a cluster's nodes would drain on SIGTERM).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn clean_up(&mut self) {
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_tcp_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::io("find a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| BenchError::io("find a free port", e))
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(label: &str) -> Result<PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!(
        "tablecast-bench-{label}-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    ));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create a temp dir", e))?;
    Ok(dir)
}

/// The config of a node started for a run; `metrics`: a port on 127.0.0.1 for its metrics
/// listener (none by default).
pub fn node_config(port: u16, workers: usize, secret: &str, metrics: Option<u16>) -> String {
    let metrics = metrics.map_or_else(String::new, |p| format!("127.0.0.1:{p}"));
    format!(
        r#"# Generated by `tablecast bench`.
[http]
listen = "127.0.0.1:{port}"
tls = false
web_root = "web"

[media]
workers = {workers}
bind_ip = "127.0.0.1"
udp_port = 0
announce_ips = ["127.0.0.1"]

[auth]
secret = "{secret}"
demo = false

# No listener on a fixed port; the cascade run reads its nodes' metrics on a free one.
[metrics]
listen = "{metrics}"

[data]
dir = "data"

[log]
filter = "warn"

# Saturation runs: one player may send and bet as fast as the node answers.
[control]
messages_per_sec = 1000000.0
messages_burst = 1000000
bets_per_sec = 1000000.0
bets_burst = 1000000

# Every bench player joins from 127.0.0.1, as one user per player but one address.
[limits]
sessions_per_address = 1000000
setups_per_sec = 1000000.0
setups_burst = 1000000
websockets_per_address = 1000000
pending_websockets_per_address = 1000000

[[tables]]
id = "{BENCH_TABLE}"
name = "Bench"
betting_window_secs = 3600

[[tables.spots]]
id = "player"
odds = "1:1"
min_bet = 1
max_bet = 1000
max_per_player_round = 1000000000000

[[tables.spots]]
id = "banker"
odds = "19:20"
min_bet = 1
max_bet = 1000
max_per_player_round = 1000000000000
"#
    )
}

/// A WHEP session the tool opened, and the token that may end it.
pub struct Session {
    resource: driver::Resource,
    token: String,
}

/// Which tablecast node to drive, and how to speak for it.
pub struct Tablecast {
    pub base_url: String,
    pub table: String,
    tokens: Tokens,
    http: reqwest::Client,
    pub pid: Option<u32>,
    pub process: Option<Spawned>,
    /// Players negotiate transport-cc and send its feedback (`--transport-cc`).
    pub players_transport_cc: bool,
}

impl Tablecast {
    /// Starts a node of this binary for the run and waits until it is ready.
    pub async fn start(
        workers: usize,
        cpus: Option<&str>,
        keep_dir: bool,
    ) -> Result<Tablecast, BenchError> {
        let dir = temp_dir("node")?;
        let secret = hex::encode(rand::random::<[u8; 24]>());
        let port = free_tcp_port()?;
        let mut node = Self::launch(
            dir,
            port,
            &node_config(port, workers, &secret, None),
            &secret,
            cpus,
            keep_dir,
        )?;
        node.wait_ready().await?;
        Ok(node)
    }

    /// Starts this binary on `config` (listening on 127.0.0.1:`port`, signing with `secret`)
    /// in `dir`, without waiting for it; see [`Tablecast::wait_ready`].
    pub fn launch(
        dir: PathBuf,
        port: u16,
        config_text: &str,
        secret: &str,
        cpus: Option<&str>,
        keep_dir: bool,
    ) -> Result<Tablecast, BenchError> {
        let config = dir.join("node.toml");
        std::fs::write(&config, config_text)
            .map_err(|e| BenchError::io("write the node config", e))?;
        let exe = std::env::current_exe().map_err(|e| BenchError::io("find this binary", e))?;
        let args = vec![
            "--config".to_owned(),
            config.display().to_string(),
            "serve".to_owned(),
        ];
        let process = Spawned::start(&exe, &args, cpus, dir, "node.log", keep_dir)?;
        Ok(Tablecast {
            base_url: format!("http://127.0.0.1:{port}"),
            table: BENCH_TABLE.to_owned(),
            tokens: Tokens::from_secret(secret.as_bytes()),
            http: driver::http_client(),
            pid: Some(process.pid()),
            process: Some(process),
            players_transport_cc: false,
        })
    }

    /// A node that is already running (its `[auth] secret` signs our tokens).
    pub fn external(url: &str, table: &str, secret: &str, pid: Option<u32>) -> Tablecast {
        Tablecast {
            base_url: url.trim_end_matches('/').to_owned(),
            table: table.to_owned(),
            tokens: Tokens::from_secret(secret.as_bytes()),
            http: driver::http_client(),
            pid,
            process: None,
            players_transport_cc: false,
        }
    }

    pub async fn wait_ready(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(p) = self.process.as_mut()
                && let Some(status) = p.exited()
            {
                return Err(BenchError::Target(format!(
                    "the node exited ({status}) before it was ready:\n{}",
                    p.log_tail()
                )));
            }
            let ok = self
                .http
                .get(format!("{}/readyz", self.base_url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tail = self
                    .process
                    .as_ref()
                    .map(Spawned::log_tail)
                    .unwrap_or_default();
                return Err(BenchError::Target(format!(
                    "the node at {} was not ready within 20 s\n{tail}",
                    self.base_url
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn token(&self, role: TokenRole, user: &str) -> Result<String, BenchError> {
        let user = UserId::parse(user).map_err(|e| BenchError::Target(e.to_string()))?;
        self.tokens
            .issue(role, &self.table, &user, Duration::from_secs(6 * 3600))
            .map_err(|e| BenchError::Target(format!("cannot sign a token: {e}")))
    }

    fn target(&self, role: TokenRole, user: &str) -> Result<Target, BenchError> {
        Ok(Target {
            base_url: self.base_url.clone(),
            table: self.table.clone(),
            camera: None,
            token: self.token(role, user)?,
        })
    }

    /// Publishes the synthetic dealer: H.264 at 30 fps in 4 packets a frame and a keyframe
    /// (24 packets) every 2 s, about 130 packets/s and 1.2 Mbit/s, plus Opus at 50 packets/s.
    pub async fn publish(&self, epoch: Instant) -> Result<Publisher, BenchError> {
        Publisher::connect(
            self.target(TokenRole::Dealer, "bench-dealer")?,
            dealer_shape(),
            epoch,
        )
        .await
        .map_err(|e| BenchError::Target(format!("the synthetic dealer could not publish: {e}")))
    }

    /// Signals one WHEP player (`i` names its user) on a socket bound to `bind_ip`.
    pub async fn join(
        &self,
        i: usize,
        bind_ip: IpAddr,
        control: bool,
    ) -> Result<ViewerSetup, BenchError> {
        self.join_session(i, bind_ip, control)
            .await
            .map(|(setup, _)| setup)
    }

    /// [`Tablecast::join`], keeping the WHEP session to end it with [`Tablecast::leave`].
    pub async fn join_session(
        &self,
        i: usize,
        bind_ip: IpAddr,
        control: bool,
    ) -> Result<(ViewerSetup, Session), BenchError> {
        let started = Instant::now();
        let target = self.target(TokenRole::Player, &format!("bench-{i}"))?;
        let mut pc = light_peer_connection(self.players_transport_cc)?;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .map_err(rtc_err)?;
        }
        if control {
            pc.create_data_channel("control", None).map_err(rtc_err)?;
        }
        let (socket, local) = viewer_socket(bind_ip)?;
        let resource = driver::negotiate(&self.http, &target, "whep", &mut pc, local)
            .await
            .map_err(|e| BenchError::Join(e.to_string()))?;
        let video_pts = pc
            .remote_description()
            .map(|d| video_payload_types(&d.sdp))
            .unwrap_or(0);
        let setup = ViewerSetup {
            pc,
            socket,
            local,
            video_pts,
            started,
            control,
            feedback: self.players_transport_cc,
        };
        Ok((
            setup,
            Session {
                resource,
                token: target.token,
            },
        ))
    }

    /// Ends a player's WHEP session (DELETE), so the node stops sending to it at once.
    pub async fn leave(&self, session: &Session) -> Result<(), BenchError> {
        let status = driver::delete(&self.http, &session.resource, &session.token)
            .await
            .map_err(|e| BenchError::Target(format!("DELETE of a WHEP session: {e}")))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(BenchError::Target(format!(
                "DELETE {} answered {status}",
                session.resource.location
            )))
        }
    }

    /// A dealer action over HTTP (`open`, `close`, `result`); returns the round it acted on.
    pub async fn dealer(&self, action: &str) -> Result<u64, BenchError> {
        let body = if action == "result" {
            r#"{"outcome":"banker"}"#
        } else {
            "{}"
        };
        let resp = self
            .http
            .post(format!(
                "{}/api/v1/tables/{}/round/{action}",
                self.base_url, self.table
            ))
            .bearer_auth(self.token(TokenRole::Dealer, "bench-dealer")?)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| BenchError::Target(format!("round/{action}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(BenchError::Target(format!(
                "round/{action} answered {status}: {text}"
            )));
        }
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("round").and_then(|r| r.as_u64()))
            .ok_or_else(|| BenchError::Target(format!("round/{action} answered {text}")))
    }
}

/// The synthetic dealer's shape (the Janus feeder sends the same).
pub fn dealer_shape() -> PublishOptions {
    PublishOptions {
        video: Some(VideoCodec::H264),
        audio: true,
        packets_per_frame: 4,
        keyframe_extra_packets: 20,
        packet_size: 1100,
    }
}

/// A peer connection with no interceptors: no receiver reports, no NACKs (loss is counted as
/// the node delivers it, not as retransmissions repair it). With `transport_cc`, it offers
/// transport-wide congestion control and reports every packet's arrival, as a browser does.
pub fn light_peer_connection(
    transport_cc: bool,
) -> Result<rtc::peer_connection::RTCPeerConnection, BenchError> {
    let mut me = media_engine(true, true, false).map_err(|e| BenchError::Join(e.to_string()))?;
    let mut registry = Registry::new();
    if transport_cc {
        registry = rtc::peer_connection::configuration::interceptor_registry::configure_twcc_receiver_only(registry, &mut me)
            .map_err(|e| BenchError::Join(e.to_string()))?;
    }
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(crate::client::ice_settings(SettingEngineBuilder::new()).build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .map_err(rtc_err)
}

/// A viewer's own non-blocking socket, with room for a keyframe burst or two.
pub fn viewer_socket(bind_ip: IpAddr) -> Result<(UdpSocket, SocketAddr), BenchError> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(SocketAddr::new(bind_ip, 0)),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(|e| BenchError::io("open a viewer socket", e))?;
    let _ = socket.set_recv_buffer_size(1 << 20);
    socket
        .set_nonblocking(true)
        .map_err(|e| BenchError::io("open a viewer socket", e))?;
    socket
        .bind(&SocketAddr::new(bind_ip, 0).into())
        .map_err(|e| BenchError::io("bind a viewer socket", e))?;
    let socket: UdpSocket = socket.into();
    // Latency samples end at the kernel's receive time when it gives one (see `poll`).
    let _ = super::poll::timestamp_arrivals(std::os::fd::AsRawFd::as_raw_fd(&socket));
    let local = socket
        .local_addr()
        .map_err(|e| BenchError::io("bind a viewer socket", e))?;
    Ok((socket, local))
}

pub fn rtc_err(e: rtc::shared::error::Error) -> BenchError {
    BenchError::Join(format!("WebRTC: {e}"))
}
