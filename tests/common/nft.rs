//! A firewall rule of a test's own: an nftables table holding one `output` chain, deleted when
//! dropped (also when the test panics). Packets between local processes on loopback pass the
//! `output` hook, so a rule there cuts one path between two node processes of a test and no other.
//!
//! Needs root and nftables' `nft` (tests/run.sh installs it); [`NftTable::create`] says why
//! when it cannot.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// An `inet` table named after the test process, with a `drop` chain on the output hook.
pub struct NftTable {
    name: String,
}

/// Runs `nft -f -` on `script`.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `nft` ({e}): install nftables (tests/run.sh does)"))?;
    child
        .stdin
        .take()
        .ok_or("nft has no stdin")?
        .write_all(script.as_bytes())
        .map_err(|e| format!("cannot write to nft: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft did not finish: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed on `{}`: {}",
            script.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NftTable {
    /// Creates the table and its output chain, with no rule yet; or says why it cannot (not root,
    /// no `nft`, nftables not permitted here).
    pub fn create() -> Result<NftTable, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: nftables rules need root".into());
        }
        let name = format!(
            "tablecast_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        nft(&format!(
            "add table inet {name}\nadd chain inet {name} out {{ type filter hook output priority 0; policy accept; }}\n"
        ))?;
        Ok(NftTable { name })
    }

    /// Adds `rule` (nft syntax, such as `ip saddr 127.0.0.3 udp dport 4000 drop`) to the chain.
    pub fn add(&self, rule: &str) -> Result<(), String> {
        nft(&format!("add rule inet {} out {rule}\n", self.name))
    }

    /// Removes every rule, keeping the table.
    pub fn flush(&self) -> Result<(), String> {
        nft(&format!("flush chain inet {} out\n", self.name))
    }

    /// The packets the chain's rules have matched so far (their counters).
    pub fn matched(&self) -> u64 {
        let out = Command::new("nft")
            .args(["list", "chain", "inet", &self.name, "out"])
            .output();
        let Ok(out) = out else { return 0 };
        let text = String::from_utf8_lossy(&out.stdout);
        // `counter packets N bytes M` in each rule.
        text.split("packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}\n", self.name));
    }
}
