//! Shared helpers: a real node on port 0, an HTTP client for it, and [`wait_until`] to wait for
//! what the node does without guessing how long it takes.
#![allow(dead_code)]

pub mod cluster;
pub mod control;
pub mod log;
pub mod netns;
pub mod nft;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod round;
pub mod video_map;

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tablecast::app::{self, RunningNode};
use tablecast::auth::TokenRole;
use tablecast::config::Config;

/// The fixed secret of test nodes, so tests can also sign tokens on their own.
pub const TEST_SECRET: &str = "tablecast-test-secret-0123456789abcdef";

/// What the player, dealer and token helpers need of a node, whether it runs in this process
/// ([`TestNode`]) or as its own ([`process::NodeProcess`]).
pub trait NodeRef {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    fn base_url(&self) -> String;
    /// The address of the main (plain HTTP) listener.
    fn http_addr(&self) -> std::net::SocketAddr;
    /// A client for the node's HTTP API.
    fn client(&self) -> &reqwest::Client;
    /// A token for `user` as `role` on `table`, that this node accepts.
    fn issue_token(&self, role: TokenRole, table: &str, user: &str) -> String;

    /// The node's URL of `path` (which starts with `/`).
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }
}

impl<T: NodeRef + ?Sized> NodeRef for &T {
    fn base_url(&self) -> String {
        (**self).base_url()
    }
    fn http_addr(&self) -> std::net::SocketAddr {
        (**self).http_addr()
    }
    fn client(&self) -> &reqwest::Client {
        (**self).client()
    }
    fn issue_token(&self, role: TokenRole, table: &str, user: &str) -> String {
        (**self).issue_token(role, table, user)
    }
}

/// A token signed with [`TEST_SECRET`], as every node started from [`test_config`] accepts.
pub fn test_token(role: TokenRole, table: &str, user: &str) -> String {
    let user = tablecast::ids::UserId::parse(user).expect("a valid user id");
    tablecast::auth::Tokens::from_secret(TEST_SECRET.as_bytes())
        .issue(role, table, &user, Duration::from_secs(600))
        .expect("token")
}

/// A node on 127.0.0.1:0 with plain HTTP, ephemeral media ports, a metrics listener on
/// 127.0.0.1:0, a temp data dir and demo on.
pub struct TestNode {
    pub node: RunningNode,
    pub client: reqwest::Client,
    pub dir: PathBuf,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    /// Starts a node after `tweak` adjusts the test config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = temp_dir("node");
        let mut config = test_config(&dir);
        tweak(&mut config);
        let _ = tablecast::telemetry::init(&config.log);
        let node = app::start(config).await.expect("test node starts");
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        TestNode { node, client, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.node.base_url(), path)
    }

    /// `GET /metrics` on the node's metrics listener (no token needed there).
    pub fn metrics_url(&self) -> String {
        let addr = self
            .node
            .metrics_addr()
            .expect("test nodes have a metrics listener");
        format!("http://{addr}/metrics")
    }

    pub fn token(&self, role: TokenRole, table: &str) -> String {
        self.node
            .issue_token(role, table, "tester", Duration::from_secs(600))
            .expect("token")
    }

    pub async fn stop(self) {
        self.node.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl NodeRef for TestNode {
    fn base_url(&self) -> String {
        self.node.base_url()
    }
    fn http_addr(&self) -> std::net::SocketAddr {
        self.node.http_addr()
    }
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
    /// Signed by the node itself, so it holds whatever `[auth]` the test gave the node.
    fn issue_token(&self, role: TokenRole, table: &str, user: &str) -> String {
        self.node
            .issue_token(role, table, user, Duration::from_secs(600))
            .expect("token")
    }
}

/// The config every test node starts from.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.http.tls = false;
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.http.cert = dir.join("certs/tablecast.crt");
    config.http.key = dir.join("certs/tablecast.key");
    config.http.web_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    config.media.udp_port = 0;
    config.media.workers = 1;
    config.media.bind_ip = "127.0.0.1".parse().expect("ip");
    config.media.announce_ips = vec!["127.0.0.1".parse().expect("ip")];
    config.data.dir = dir.join("data");
    config.auth.secret = TEST_SECRET.to_owned();
    config.auth.demo = true;
    // Tests open many sessions and sockets as one user from one address; the tests of the caps
    // themselves (tests/limits.rs) set their own.
    config.limits.sessions_per_user = 10_000;
    config.limits.sessions_per_address = 10_000;
    config.limits.setups_per_sec = 10_000.0;
    config.limits.setups_burst = 10_000;
    config.limits.websockets_per_address = 10_000;
    config.limits.pending_websockets_per_address = 10_000;
    config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.log.filter = "warn".to_owned();
    config
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tablecast-{label}-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 6]>())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A minimal, well-formed offer for tests that get past the HTTP checks: one VP8 video section
/// with the given direction (`sendonly` for WHIP, `recvonly` for WHEP).
pub fn offer(direction: &str) -> String {
    [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF",
        "a=setup:actpass",
        &format!("a={direction}"),
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "",
    ]
    .join("\r\n")
}

/// Where a test client connects, as `role`, to the node's demo table.
pub fn target(node: &(impl NodeRef + ?Sized), role: TokenRole) -> tablecast::client::Target {
    tablecast::client::Target {
        base_url: node.base_url(),
        table: "demo".into(),
        camera: None,
        token: node.issue_token(role, "demo", "tester"),
    }
}

/// A dealer publishing the client's synthetic H.264 and Opus to the demo table.
pub async fn dealer(
    node: &(impl NodeRef + ?Sized),
    epoch: std::time::Instant,
) -> tablecast::client::Publisher {
    tablecast::client::Publisher::connect(
        target(node, TokenRole::Dealer),
        tablecast::client::PublishOptions::default(),
        epoch,
    )
    .await
    .unwrap_or_else(|e| panic!("the dealer publishes: {e}"))
}

/// A player watching the demo table with `options`.
pub async fn player(
    node: &(impl NodeRef + ?Sized),
    options: tablecast::client::SubscribeOptions,
    epoch: std::time::Instant,
) -> tablecast::client::Subscriber {
    tablecast::client::Subscriber::connect(target(node, TokenRole::Player), options, epoch)
        .await
        .unwrap_or_else(|e| panic!("the player joins: {e}"))
}

/// A player without the `control` data channel: media only.
pub fn media_only() -> tablecast::client::SubscribeOptions {
    tablecast::client::SubscribeOptions {
        data_channel: false,
        ..Default::default()
    }
}

/// Calls `probe` every 50 ms until `done` holds for what it returns, and returns that value.
/// Panics if it does not hold within `within`, naming where it was called, what was awaited and
/// the last value seen.
///
/// This is how a test waits for something to happen. A fixed sleep stays only where the passing
/// time is itself what is tested (a measurement window, a silence, a limiter refilling) or paces
/// a sender, and then says so.
#[track_caller]
pub fn wait_until<T: Debug>(
    within: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> impl Future<Output = T> {
    // An `async fn` cannot take the caller's location; this function returns its future instead.
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + within;
        loop {
            let value = probe().await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{caller}: timed out after {within:?} waiting until {what}; last seen: {value:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// [`wait_until`] for code outside a runtime: polls `done` every 20 ms until it holds, or
/// panics after `within`.
#[track_caller]
pub fn wait_until_blocking(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
