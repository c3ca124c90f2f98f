//! A real redis-server on a free loopback port, in its own temp dir, for cluster tests.
//! It can be killed and started again on the same port and dir (an outage), or paused.

use std::io::{Read, Write};
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
        let dir = super::temp_dir("redis");
        // A free port can be taken by another test between the check and redis-server's bind:
        // try another one then.
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir: dir.clone(),
                child: None,
                aof,
            };
            if server.spawn_and_wait(std::time::Duration::from_secs(10)) {
                return server;
            }
            server.kill();
            std::mem::forget(server);
        }
        panic!("redis-server did not start on any of 5 free ports; see its output above");
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server again (after [`RedisServer::kill`]) on the same port and dir, and
    /// waits until it answers.
    pub fn restart(&mut self) {
        assert!(
            self.spawn_and_wait(Duration::from_secs(10)),
            "redis-server did not answer on port {} within 10 s",
            self.port
        );
    }

    /// Starts redis-server; true once it answers, false if it exited or stayed silent.
    fn spawn_and_wait(&mut self, within: Duration) -> bool {
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
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if self.answers_as_ours() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// True once a redis-server answers on the port with this server's dir: a bare TCP connect
    /// can reach whatever else holds the port for a moment (another test checking it is free)
    /// while this redis-server fails to bind and exits.
    fn answers_as_ours(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"CONFIG GET dir\r\n").is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        // Its own temp dir's name is unique; redis-server reports the path after resolving links.
        let dir = self
            .dir
            .file_name()
            .expect("a named temp dir")
            .to_string_lossy();
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            reply.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&reply).contains(dir.as_ref()) {
                return true;
            }
        }
        false
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

/// A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range (32768 and up), so
/// that no outgoing connection of a concurrent test takes it before the server binds it.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in 20000..32000 on 127.0.0.1")
}
