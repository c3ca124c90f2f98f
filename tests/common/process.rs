//! A node as its own process, so a test can SIGKILL, SIGSTOP/SIGCONT or SIGTERM it.
//!
//! [`NodeProcess`] is the `tablecast` binary serving a config written from [`test_config`] on
//! free loopback ports, logging to a file in its own temp dir. It is a [`NodeRef`], so the
//! players, dealer calls and tokens of [`super::control`] work against it. A node that panics a
//! test prints the tail of its log on the way out (see its `Drop`), and keeps its temp dir.
//! [`super::cluster::Cluster`] runs several.

use super::redis::free_port;
use super::{NodeRef, temp_dir, test_config};
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;

/// How long a node process gets to answer `GET /readyz` with 200 (a debug build on a busy
/// machine starts slowly).
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// Lines of its log a failing node prints.
const TAIL_LINES: usize = 50;

/// What differs between the nodes of a test. Everything else is [`test_config`]'s.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `[node] id`. Empty: `node`.
    pub id: String,
    /// `[node] region`. Empty: the default (`local`).
    pub region: String,
    /// `[cluster] redis_url`. Empty: the node is alone.
    pub redis_url: String,
    /// A TOML document of `[[tables]]` entries (with their `[[tables.spots]]`). Empty: the
    /// built-in demo table.
    pub tables: String,
    /// Extra environment of the process, such as `("RUST_LOG", "debug")`. `TABLECAST_*` variables
    /// of the test's own environment are not passed on, so the config file is all there is.
    pub env: Vec<(String, String)>,
}

impl NodeOptions {
    /// A node with `id`, alone, serving `tables` (see [`NodeOptions::tables`]).
    pub fn new(id: &str, tables: &str) -> NodeOptions {
        NodeOptions {
            id: id.to_owned(),
            tables: tables.to_owned(),
            ..Default::default()
        }
    }
}

/// A `tablecast serve` process on 127.0.0.1, killed (SIGKILL) when dropped.
///
/// Every method takes `&self`, so a scenario can signal one node of a
/// [`Cluster`](super::cluster::Cluster) while players hold on to the others. Signals go to the
/// pid of the running process; a node that is not running (killed, or exited) panics the
/// signalling methods.
pub struct NodeProcess {
    pub id: String,
    /// Its config, log and data dir.
    pub dir: PathBuf,
    http_port: u16,
    metrics_port: u16,
    media_port: u16,
    env: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
    client: reqwest::Client,
}

impl NodeProcess {
    /// Spawns a node and waits until it is ready.
    pub async fn start(options: NodeOptions) -> NodeProcess {
        let node = Self::spawn_with(options, |_| {});
        node.wait_ready().await;
        node
    }

    /// Spawns a node without waiting for it; see [`NodeProcess::wait_ready`].
    pub fn spawn(options: NodeOptions) -> NodeProcess {
        Self::spawn_with(options, |_| {})
    }

    /// Spawns a node after `tweak` adjusts its config file, as a TOML table (such as
    /// `config["cluster"]["lease_ms"] = 500.into()`), without waiting for it.
    pub fn spawn_with(options: NodeOptions, tweak: impl FnOnce(&mut toml::Table)) -> NodeProcess {
        let id = if options.id.is_empty() {
            "node".to_owned()
        } else {
            options.id.clone()
        };
        let dir = temp_dir(&format!("node-{id}"));
        let http_port = free_port();
        let metrics_port = free_port();
        let media_port = free_udp_port();

        let mut config = test_config(&dir);
        config.http.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, http_port));
        config.metrics.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port)));
        config.media.udp_port = media_port;
        config.log.filter = "info,rtc_ice=error,rtc_dtls=error,rtc_sctp=warn".to_owned();
        config.node.id = id.clone();
        if !options.region.is_empty() {
            config.node.region = options.region.clone();
        }
        config.node.public_url = format!("http://127.0.0.1:{http_port}");
        config.cluster.redis_url = options.redis_url.clone();
        let mut table = match toml::Value::try_from(&config) {
            Ok(toml::Value::Table(table)) => table,
            other => panic!("the test config serializes to a TOML table, not {other:?}"),
        };
        if !options.tables.trim().is_empty() {
            let mut tables: toml::Table = toml::from_str(&options.tables)
                .unwrap_or_else(|e| panic!("NodeOptions::tables is TOML: {e}"));
            let entries = tables
                .remove("tables")
                .unwrap_or_else(|| panic!("NodeOptions::tables has [[tables]] entries"));
            table.insert("tables".to_owned(), entries);
        }
        tweak(&mut table);
        let text = toml::to_string(&table).expect("the config serializes");
        std::fs::write(dir.join("tablecast.toml"), text).expect("config written");

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        let node = NodeProcess {
            id,
            dir,
            http_port,
            metrics_port,
            media_port,
            env: options.env,
            child: Mutex::new(None),
            client,
        };
        node.launch();
        node
    }

    /// Starts the binary on the config file, its output appended to the log.
    fn launch(&self) {
        let mut child = self.child.lock().unwrap();
        if let Some(running) = child.as_mut() {
            assert!(
                !matches!(running.try_wait(), Ok(None)),
                "node {} is still running: kill, terminate or wait_exit first",
                self.id
            );
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("node log opens");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tablecast"));
        cmd.arg("--config")
            .arg(self.dir.join("tablecast.toml"))
            .arg("serve")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TABLECAST_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent. It makes the node
        // die with the test process (thread) that spawned it, even when that is SIGKILLed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let spawned = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("node {} spawns: {e}", self.id));
        *child = Some(spawned);
    }

    /// Starts the node again after it was killed or exited: the same config, ports and data
    /// dir. Then [`NodeProcess::wait_ready`]. Call it from the test's thread or a runtime worker:
    /// the node dies with the thread that spawned it (`PR_SET_PDEATHSIG`), so never from
    /// `spawn_blocking`.
    pub fn restart(&self) {
        self.append_log(&format!(
            "---- test harness: restart of node {} ----",
            self.id
        ));
        self.launch();
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The node's `/metrics` listener (no token needed there).
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// The UDP port of its (one) media worker.
    pub fn media_port(&self) -> u16 {
        self.media_port
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The pid of the running process, if it is running.
    pub fn pid(&self) -> Option<u32> {
        let mut child = self.child.lock().unwrap();
        let running = child.as_mut()?;
        matches!(running.try_wait(), Ok(None)).then(|| running.id())
    }

    /// The exit status, if the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap();
        child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Polls `GET /readyz` until it answers 200. Panics, with the log's tail, when the process
    /// exits first or it is not ready within [`READY_WITHIN`].
    #[track_caller]
    pub fn wait_ready(&self) -> impl Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = Instant::now() + READY_WITHIN;
            let url = self.url("/readyz");
            loop {
                if let Some(status) = self.exited() {
                    panic!(
                        "{caller}: node {} exited with {status} before it was ready\n{}",
                        self.id,
                        self.tail_log()
                    );
                }
                let last = match self.client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => return,
                    Ok(r) => format!("status {}", r.status()),
                    Err(e) => format!("{e}"),
                };
                assert!(
                    Instant::now() < deadline,
                    "{caller}: node {} not ready after {READY_WITHIN:?} (last: {last})\n{}",
                    self.id,
                    self.tail_log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// SIGKILL, and reap: the node is gone when this returns.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        if let Some(c) = child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the node freezes, its sockets stay open.
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`NodeProcess::stop`].
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM: the node drains and exits; see [`NodeProcess::wait_exit`].
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("node {} is not running\n{}", self.id, self.tail_log()));
        let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: kill(2) has no memory effects; `pid` is our own unreaped child, so it cannot
        // name another process.
        let r = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            r,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits until the process exits and returns how. Panics, with the log's tail, when it is
    /// still running after `within`.
    #[track_caller]
    pub fn wait_exit(&self, within: Duration) -> impl Future<Output = ExitStatus> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = Instant::now() + within;
            loop {
                if let Some(status) = self.exited() {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "{caller}: node {} still running after {within:?}\n{}",
                    self.id,
                    self.tail_log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The last lines of the node's log (stdout and stderr, across restarts), with a header
    /// naming the node.
    pub fn tail_log(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(TAIL_LINES);
        format!(
            "---- node {} ({}), last {} lines of {} ----\n{}\n---- end of node {} ----",
            self.id,
            self.base_url(),
            lines.len() - from,
            self.log_path().display(),
            lines[from..].join("\n"),
            self.id
        )
    }

    fn append_log(&self, line: &str) {
        use std::io::Write as _;
        if let Ok(mut f) = OpenOptions::new().append(true).open(self.log_path()) {
            let _ = writeln!(f, "{line}");
        }
    }
}

impl NodeRef for NodeProcess {
    fn base_url(&self) -> String {
        NodeProcess::base_url(self)
    }
    fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port))
    }
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
    /// Signed with [`TEST_SECRET`](super::TEST_SECRET), the `[auth] secret` of every node
    /// process (unless a test's tweak changed it).
    fn issue_token(&self, role: TokenRole, table: &str, user: &str) -> String {
        super::test_token(role, table, user)
    }
}

impl Drop for NodeProcess {
    /// Kills the node. When the test is failing, prints the log's tail and keeps the temp dir.
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.tail_log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A UDP port free on 127.0.0.1 now (the OS picks it).
/// A UDP port free on 127.0.0.1 now, below the kernel's ephemeral range (see `free_port`).
pub fn free_udp_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port in 20000..32000 on 127.0.0.1")
}
