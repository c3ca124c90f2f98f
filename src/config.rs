//! Node configuration: `config.toml`, every key overridable by `TABLECAST_SECTION_KEY`.
//!
//! Loading, validation and environment overrides live here; every key is documented, with its
//! default, in the shipped `config.toml`.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub auth: AuthConfig,
    pub data: DataConfig,
    pub log: LogConfig,
    /// Tables this node serves (`[[tables]]`). Kept as raw TOML here; the control plane parses it.
    pub tables: Vec<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id in the cluster. Empty: the host name.
    pub id: String,
    /// Region label, for routing players to a nearby node.
    pub region: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listener for the HTTP API, WHIP/WHEP and pages.
    pub listen: SocketAddr,
    /// Serve HTTPS on `listen` (self-signed certificate generated on first run unless cert/key given).
    pub tls: bool,
    /// PEM certificate chain. Generated here on first run when it does not exist.
    pub cert: PathBuf,
    /// PEM private key. Generated here on first run when it does not exist.
    pub key: PathBuf,
    /// Optional second, plain-HTTP listener (for running behind a TLS-terminating proxy).
    pub plain_listen: Option<SocketAddr>,
    /// Directory of the web pages and `tablecast.js`.
    pub web_root: PathBuf,
    /// Largest accepted SDP body, in bytes.
    pub max_sdp_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Media worker threads, each owning one UDP socket. 0: one per core.
    pub workers: usize,
    /// Address the media sockets bind to.
    pub bind_ip: IpAddr,
    /// First UDP port; worker i binds `udp_port + i`. 0: ephemeral ports (tests).
    pub udp_port: u16,
    /// Addresses announced in ICE candidates (public IPs for nodes behind NAT).
    /// Empty: the bind address, or every local interface address when bound to 0.0.0.0.
    pub announce_ips: Vec<IpAddr>,
    /// SO_RCVBUF for each media socket, in bytes.
    pub socket_recv_buffer: usize,
    /// SO_SNDBUF for each media socket, in bytes.
    pub socket_send_buffer: usize,
    /// At most one keyframe request per track per this many milliseconds reaches a publisher.
    pub pli_throttle_ms: u64,
    /// A session that has not connected after this many seconds is closed.
    pub connect_timeout_secs: u64,
    /// A connected session that sends nothing for this many seconds is closed.
    pub idle_timeout_secs: u64,
    /// RTP packets each track keeps for answering NACKs (power of two).
    pub nack_buffer_packets: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for tokens. Empty: a random secret is generated and kept in the data dir.
    pub secret: String,
    /// Demo mode: serves `POST /api/v1/demo/token` so the demo pages work without a token issuer.
    pub demo: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Directory for table logs and generated secrets.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, as in RUST_LOG (which wins when set).
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node: NodeConfig::default(),
            http: HttpConfig::default(),
            media: MediaConfig::default(),
            auth: AuthConfig::default(),
            data: DataConfig::default(),
            log: LogConfig::default(),
            tables: Vec::new(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { id: String::new(), region: "local".into() }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls: true,
            cert: "certs/tablecast.crt".into(),
            key: "certs/tablecast.key".into(),
            plain_listen: None,
            web_root: "web".into(),
            max_sdp_bytes: 64 * 1024,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            udp_port: 10000,
            announce_ips: Vec::new(),
            socket_recv_buffer: 4 * 1024 * 1024,
            socket_send_buffer: 4 * 1024 * 1024,
            pli_throttle_ms: 500,
            connect_timeout_secs: 15,
            idle_timeout_secs: 30,
            nack_buffer_packets: 1024,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { secret: String::new(), demo: false }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { dir: "data".into() }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info".into(), format: "text".into() }
    }
}
