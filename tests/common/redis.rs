//! A real redis-server on a free loopback port, in its own temp dir, for cluster tests.
//! It can be killed and started again on the same port and dir (an outage), or paused.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    /// `appendonly yes` with `appendfsync always`, as docs/cluster.md asks for production.
    pub aof: bool,
}

impl RedisServer {
    /// Starts redis-server with AOF on (`appendfsync always`).
    pub fn start() -> RedisServer {
        Self::start_with(true)
    }

    /// Starts redis-server; without `aof` it keeps nothing across a restart.
    pub fn start_with(aof: bool) -> RedisServer {
        let port = free_port();
        let dir = super::temp_dir("redis");
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            aof,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server again (after [`RedisServer::kill`]) on the same port and dir, and
    /// waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.aof { "yes" } else { "no" },
                "--appendfsync",
                "always",
                "--dir",
                self.dir.to_str().expect("utf-8 temp dir"),
                "--loglevel",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (tests/run.sh installs it: apt install redis-server)");
        self.child = Some(child);
        super::wait_until_blocking("redis-server answers", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// SIGKILLs the server (an outage), and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port free on 127.0.0.1 now (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
