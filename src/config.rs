//! Node configuration: `config.toml`, every key overridable by `TABLECAST_SECTION_KEY`.
//!
//! Loading, validation and environment overrides live here; every key is documented, with its
//! default, in the shipped `config.toml`.

use crate::ids::TableId;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The whole node configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub metrics: MetricsConfig,
    pub media: MediaConfig,
    pub auth: AuthConfig,
    pub data: DataConfig,
    pub log: LogConfig,
    pub control: ControlConfig,
    pub cluster: ClusterConfig,
    /// Caps and rates on what one client may open (sessions, WebSockets).
    pub limits: LimitsConfig,
    /// TURN servers handed to clients in WHIP/WHEP replies, for networks that block UDP.
    pub turn: TurnConfig,
    /// Tables this node serves (`[[tables]]`). Kept as raw TOML here; the control plane parses it.
    pub tables: Vec<toml::Table>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id in the cluster. Empty: the host name.
    pub id: String,
    /// Region label, for routing players to a nearby node, and for choosing a table's owner
    /// (`[[tables]] region`).
    pub region: String,
    /// The base URL other nodes and clients reach this node at (`https://node-a.example:8443`),
    /// used in redirects, in the cluster's node list and by the links between nodes. Empty: the
    /// main listener's address (right on one machine only).
    pub public_url: String,
}

/// `[cluster]`: several nodes as one system, coordinated through Redis (docs/cluster.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:6379/0` (or `rediss://`, `redis+unix:///path`). Empty: this node is alone
    /// and needs no Redis: every table is its own, logged under `[data] dir`.
    pub redis_url: String,
    /// A node whose heartbeat is older than this is dead for routing and ownership, and its
    /// entry is removed by the live nodes.
    pub node_timeout_secs: u64,
    /// How long a table's ownership lease lasts without renewal (renewed four times per lease).
    /// A dead owner's tables move after at most this long.
    pub lease_ms: u64,
    /// A draining node (SIGTERM, or `POST /api/v1/cluster/nodes/{id}/drain`) exits after at
    /// most this long, whether or not its tables and players have moved.
    pub drain_timeout_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            node_timeout_secs: 5,
            lease_ms: 2000,
            drain_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Address the sockets of this node's pulls of other nodes' cameras (the cascade) bind to,
    /// and announce. `""`: `bind_ip`. A distinct address lets a firewall tell the pulls apart.
    #[serde(with = "optional_ip")]
    pub relay_bind_ip: Option<IpAddr>,
}

/// `[auth]`: the keys tokens are signed with, and demo mode. See `auth::keys`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The primary HS256 secret, at least 32 bytes. Empty: a random secret is generated and kept
    /// in the data dir.
    pub secret: String,
    /// The id of the primary key: the `kid` of the tokens it signs.
    pub key_id: String,
    /// The id of the key `tablecast token` and demo tokens are signed with. Empty: the primary.
    pub signing_key: String,
    /// When set, every token must carry this `iss`, and issued tokens carry it.
    pub issuer: String,
    /// When set, every token must carry this `aud`, and issued tokens carry it.
    pub audience: String,
    /// Clock skew allowed on `exp`, in seconds.
    pub leeway_secs: u64,
    /// More keys, by id (`[[auth.keys]]`), for rotation and for backends that sign with ES256.
    pub keys: Vec<KeyConfig>,
    /// Demo mode: serves `POST /api/v1/demo/token` so the demo pages work without a token issuer.
    pub demo: bool,

    // Demo mode's limits (see `api/demo.rs`).
    /// Only clients whose TCP peer address is in one of these networks get demo dealer tokens.
    pub demo_dealer_networks: Vec<IpNetwork>,
    /// The only tables demo tokens are issued for.
    pub demo_tables: Vec<TableId>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            secret: String::new(),
            key_id: "primary".into(),
            signing_key: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway_secs: 30,
            keys: Vec::new(),
            demo: true,
            demo_dealer_networks: vec![IpNetwork::LOOPBACK_V4, IpNetwork::LOOPBACK_V6],
            // "demo" is a valid id by construction: lowercase ASCII letters only.
            demo_tables: TableId::parse("demo").into_iter().collect(),
        }
    }
}

/// One `[[auth.keys]]` entry: an HS256 `secret` or an ES256 `public_key`, never both.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// What tokens signed with this key put in their `kid` header.
    pub id: String,
    /// HS256 secret, at least 32 bytes.
    pub secret: String,
    /// PEM file of an ES256 (P-256) public key: the node verifies, the backend signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Directory for table logs and generated secrets.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, as in RUST_LOG (which wins when set).
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

/// `[limits]`: caps on what one user or one client address may hold or open at once, so that
/// one client cannot crowd out the others. Every refusal is a `429` with `Retry-After` (or an
/// `error` event and a close on a WebSocket), counted in `tablecast_limit_refusals_total`.
/// Addresses are counted per IPv4 address and per IPv6 /64.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// WHIP and WHEP sessions one user (a token's `sub`) may hold at once.
    pub sessions_per_user: u32,
    /// WHIP and WHEP sessions one client address may hold at once.
    pub sessions_per_address: u32,
    /// WHIP/WHEP session setups (`POST`) and WebSocket opens one client address may make per
    /// second, and in a burst.
    pub setups_per_sec: f64,
    pub setups_burst: u32,
    /// WebSockets (`GET /ws/{table}`) one client address may hold open at once.
    pub websockets_per_address: u32,
    /// Of those, WebSockets that have not yet sent `hello`.
    pub pending_websockets_per_address: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sessions_per_user: 8,
            sessions_per_address: 64,
            setups_per_sec: 10.0,
            setups_burst: 40,
            websockets_per_address: 64,
            pending_websockets_per_address: 16,
        }
    }
}

/// `[metrics]`: where Prometheus scrapes `GET /metrics` without a token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A plain-HTTP listener serving only `GET /metrics`, to anyone who reaches it. `""`: none
    /// (the main listener still serves `/metrics`, to operator tokens only).
    #[serde(with = "optional_addr")]
    pub listen: Option<SocketAddr>,
}

/// `Option<SocketAddr>` written as a string, `""` meaning none, so that the key always has a
/// value to show, to compare and to override from the environment.
mod optional_addr {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim().parse().map(Some).map_err(|_| {
            D::Error::custom(format!(
                "{text:?} is not an address: use IP:PORT such as \"127.0.0.1:9464\", or \"\" for none"
            ))
        })
    }
}

/// `Option<IpAddr>` written as a string, `""` meaning none, as [`optional_addr`].
mod optional_ip {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::net::IpAddr;

    pub fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim().parse().map(Some).map_err(|_| {
            D::Error::custom(format!(
                "{text:?} is not an IP address: use one such as \"10.0.0.5\", or \"\" for media.bind_ip"
            ))
        })
    }
}

/// `[control]`: limits of the control plane's connections and players.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Public events kept in memory per table for players that resume; one further behind
    /// gets a snapshot instead.
    pub replay_window: usize,
    /// Messages of any kind one connection may send per second, and in a burst.
    pub messages_per_sec: f64,
    pub messages_burst: u32,
    /// Bad messages (malformed, unknown, oversized, over the rate) one connection may send per
    /// second and in a burst, each answered with an `error`; past that it is closed.
    pub garbage_per_sec: f64,
    pub garbage_burst: u32,
    /// Bets and cancels one player may send per second, and in a burst.
    pub bets_per_sec: f64,
    pub bets_burst: u32,
    /// Chat messages one player may send per second, and in a burst.
    pub chat_per_sec: f64,
    pub chat_burst: u32,
    /// A WebSocket that has not said `hello` by then is closed.
    pub hello_timeout_secs: u64,
    /// Largest message sent on a `control` data channel, in bytes (the SCTP max-message-size
    /// every session negotiates). Each player's channel keeps a buffer this size, so it is
    /// memory per player; a table whose `welcome` could be larger is refused at start.
    pub max_message_bytes: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            replay_window: 10_000,
            messages_per_sec: 50.0,
            messages_burst: 100,
            garbage_per_sec: 0.5,
            garbage_burst: 10,
            bets_per_sec: 10.0,
            bets_burst: 20,
            chat_per_sec: 0.5,
            chat_burst: 3,
            hello_timeout_secs: 10,
            max_message_bytes: crate::protocol::DATA_CHANNEL_MAX_MESSAGE_BYTES,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            region: "local".into(),
            public_url: String::new(),
        }
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
            relay_bind_ip: None,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { dir: "data".into() }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info,rtc_ice=error,rtc_dtls=error,rtc_sctp=warn".into(),
            format: "text".into(),
        }
    }
}

mod load;
mod network;
mod turn;

pub(crate) use load::from_text_with_env;
pub use load::{ConfigError, ENV_PREFIX, Loaded, SHIPPED_CONFIG};
pub use network::{InvalidNetwork, IpNetwork};
pub use turn::{TurnConfig, TurnSecret};

impl Config {
    /// Reads `path` (or the built-in defaults when it does not exist), applies `TABLECAST_*`
    /// environment overrides and validates the result. See [`Loaded::notes`] for what to log.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        load::load(path, std::env::vars())
    }

    /// Like [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        load::load(path, env)
    }

    /// Parses a TOML document (no environment overrides) and validates it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        load::from_toml(text)
    }

    /// The tables this node serves: the `id` of every `[[tables]]` entry, or the built-in `demo`
    /// table when there are none. Ids were validated at load time.
    pub fn table_ids(&self) -> Vec<TableId> {
        let ids: Vec<TableId> = self
            .tables
            .iter()
            .filter_map(|t| t.get("id").and_then(|v| v.as_str()))
            .filter_map(|id| TableId::parse(id).ok())
            .collect();
        if ids.is_empty() {
            // "demo" is a valid id by construction: lowercase ASCII letters only.
            TableId::parse("demo").into_iter().collect()
        } else {
            ids
        }
    }

    /// This node's id: `[node] id`, or the host name when empty.
    pub fn node_id(&self) -> String {
        if self.node.id.is_empty() {
            host_name()
        } else {
            self.node.id.clone()
        }
    }
}

/// The machine's host name, or `localhost` when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}
