//! A network namespace joined to this one by a veth pair, so that a test can be a client whose
//! source address is not loopback. Traffic stays on the pair: the test's node listens on the
//! root-side address this helper assigned, and the client runs inside the namespace.
//!
//! Needs root and iproute2's `ip` (and `curl` for [`Netns::curl`]); [`Netns::create`] says why
//! when it cannot, so the test can skip.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace `name` holding one end of a veth pair, `peer_ip`/30; the other end is in this
/// namespace with `host_ip`/30. Dropping it deletes both.
pub struct Netns {
    name: String,
    host_veth: String,
    host_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(program)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

impl Netns {
    /// Creates the namespace and the pair, or says why it cannot (not root, no `ip` or `curl`,
    /// namespaces not permitted here).
    pub fn create() -> Result<Netns, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: creating a network namespace needs root".into());
        }
        if !have("ip") {
            return Err("iproute2's `ip` is not installed".into());
        }
        if !have("curl") {
            return Err("`curl` is not installed".into());
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{n}", std::process::id() % 0x10_0000);
        // One /30 of 198.18.0.0/15 (set aside for network tests, RFC 2544), picked at random so
        // that concurrent test processes do not collide.
        let block: u32 = rand::random::<u32>() % (1 << 15);
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + block * 4;
        let netns = Netns {
            name: format!("tc-test-{tag}"),
            // Interface names are at most 15 bytes.
            host_veth: format!("tch{tag}"),
            host_ip: Ipv4Addr::from(base + 1),
            peer_ip: Ipv4Addr::from(base + 2),
        };
        let peer_veth = format!("tcp{tag}");
        ip(&["netns", "add", &netns.name])?;
        // From here on, Drop cleans up whatever was made.
        ip(&[
            "link",
            "add",
            &netns.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer_veth,
            "netns",
            &netns.name,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", netns.host_ip),
            "dev",
            &netns.host_veth,
        ])?;
        ip(&["link", "set", &netns.host_veth, "up"])?;
        ip(&[
            "-n",
            &netns.name,
            "addr",
            "add",
            &format!("{}/30", netns.peer_ip),
            "dev",
            &peer_veth,
        ])?;
        ip(&["-n", &netns.name, "link", "set", &peer_veth, "up"])?;
        ip(&["-n", &netns.name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// This namespace's end of the pair: where a node listens for the namespace's client.
    pub fn host_ip(&self) -> IpAddr {
        self.host_ip.into()
    }

    /// The client's source address, as the node sees it.
    pub fn peer_ip(&self) -> IpAddr {
        self.peer_ip.into()
    }

    /// `curl` inside the namespace: returns the HTTP status and the body. Retries, until
    /// `deadline`, while the connection itself fails (the link may still be coming up).
    pub async fn curl(&self, args: &[&str], deadline: std::time::Instant) -> (u16, String) {
        loop {
            let out = tokio::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.name,
                    "curl",
                    "-sS",
                    "--max-time",
                    "5",
                ])
                .args(["-w", "\n%{http_code}"])
                .args(args)
                .output()
                .await
                .expect("run curl in the namespace");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
            let code: u16 = code.trim().parse().unwrap_or(0);
            if code != 0 {
                return (code, body.to_owned());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "curl in namespace {} never got an answer: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; the namespace is then empty.
        let _ = ip(&["link", "del", &self.host_veth]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
