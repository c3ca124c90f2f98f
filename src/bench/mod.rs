//! `tablecast bench`: how many players one core serves, what latency the node adds, and the same
//! figures for Janus on the same machine.
//!
//! One process publishes a synthetic dealer and opens N players, built to stay lighter than the
//! server it loads:
//! - `node`: the node under test (started here as a separate, pinnable process, or one already
//!   running), its WHIP dealer, WHEP players and dealer round actions;
//! - `janus`: Janus started with a generated config, watched over its HTTP API; `feeder` sends
//!   its streaming plugin the same synthetic dealer as plain RTP;
//! - `viewer`: one player. Media is counted from the clear SRTP header; only non-media packets,
//!   the packets up to the first keyframe and a sample of the rest reach its `rtc` connection;
//! - `loadgen`: a few threads, each one epoll loop driving many viewers;
//! - `run`: the plan (join at a pace, settle, measure a window, bet phase; or a ramp of steps);
//!   `rounds`: dealer rounds during a window and the bet phase;
//! - `stats`, `procfs`, `report`: loss and percentiles, `/proc` CPU and RSS, the table and JSON;
//! - `cluster` (`--cluster`): a redis-server and three nodes, control WebSockets (`ws_player`)
//!   on every node, fan-out and bet latency on the table's owner against the other nodes;
//!   `cluster_report` prints and serialises it;
//! - `cascade` (`--cascade`): a redis-server, an origin and two edges; players on the origin
//!   against players on the edges (the origin's CPU and fan-out, the hop's latency, join on a
//!   warm and a cold edge); `pinning` places the processes on cores, `cascade_report` prints.
//!
//! Every latency is measured on one clock: the dealer stamps its send time into each payload and
//! the players read it in the same process; control events carry the node's `server_ms`, read
//! against the same host's wall clock.

pub mod cascade;
pub mod cascade_report;
pub mod cluster;
pub mod cluster_report;
mod feeder;
mod janus;
mod loadgen;
mod node;
mod pinning;
mod poll;
mod procfs;
pub mod report;
mod rounds;
mod run;
mod stats;
mod viewer;
mod ws_player;

pub use run::run;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    Tablecast,
    Janus,
    /// tablecast, then Janus, with the same settings; the output compares them.
    Both,
}

/// `tablecast bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Players to open (with --ramp: the first step; with --cluster: control WebSockets).
    #[arg(long, visible_alias = "players", default_value_t = 100)]
    pub subscribers: usize,
    /// Length of each measurement window (90s, 20s, 500ms).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Raise the number of players step by step until loss or p99 latency passes its limit;
    /// report the last good step.
    #[arg(long)]
    pub ramp: bool,
    /// Players added per ramp step.
    #[arg(long, default_value_t = 100)]
    pub ramp_step: usize,
    /// Stop the ramp here even if every step passed.
    #[arg(long, default_value_t = 5000)]
    pub ramp_max: usize,
    /// A step passes while loss stays below this ratio (and join failures too).
    #[arg(long, default_value_t = 0.005)]
    pub max_loss: f64,
    /// A step passes while p99 forwarding latency stays below this.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub max_p99: Duration,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// tablecast, janus, or both (side by side, one after the other).
    #[arg(long, value_enum, default_value = "tablecast")]
    pub target: TargetKind,
    /// Base URL of a running node (default: start one for the run).
    #[arg(long)]
    pub url: Option<String>,
    /// The running node's `[auth] secret`, to sign dealer and player tokens (with --url).
    #[arg(long, env = "TABLECAST_AUTH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The running node's table (with --url).
    #[arg(long, default_value = "bench")]
    pub table: String,
    /// The running node's pid, for its CPU and RSS (with --url).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Pin the node (or Janus) the tool starts to these CPUs (a `taskset -c` list, e.g. 1).
    #[arg(long)]
    pub node_cpus: Option<String>,
    /// Media workers of the node the tool starts.
    #[arg(long, default_value_t = 1)]
    pub node_workers: usize,
    /// Players joining per second.
    #[arg(long, default_value_t = 100.0)]
    pub join_rate: f64,
    /// Wait this long after the last join (and its first keyframe) before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Players do not open the control data channel (media only).
    #[arg(long)]
    pub no_control: bool,
    /// Players negotiate transport-wide congestion control and send its feedback, as browsers
    /// do: the node then numbers every packet, keeps its send history and runs each player's
    /// link estimate (`tablecast` only).
    #[arg(long)]
    pub transport_cc: bool,
    /// During each window, a round opens, closes and gets its result this often (fan-out
    /// latency samples).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub round_every: Duration,
    /// Length of the bet-throughput phase after a fixed run (0s: none).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub bet_duration: Duration,
    /// Bets each player keeps outstanding in the bet phase.
    #[arg(long, default_value_t = 4)]
    pub bet_window: usize,
    /// Load-generator threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Media packets decrypted per second, over all players, for latency samples.
    #[arg(long, default_value_t = 10_000)]
    pub latency_samples_per_sec: u32,
    /// The Janus binary.
    #[arg(long, default_value = "janus")]
    pub janus_bin: PathBuf,
    /// Where Janus's plugins/ and transports/ are.
    #[arg(long, default_value = "/usr/lib/x86_64-linux-gnu/janus")]
    pub janus_lib_dir: PathBuf,
    /// Janus `event_loops` (0: Janus's default, a thread per handle).
    #[arg(long, default_value_t = 1)]
    pub janus_event_loops: usize,
    /// The local address Janus and its viewers use (default: the default route's; Janus never
    /// gathers candidates on loopback).
    #[arg(long)]
    pub janus_ip: Option<IpAddr>,
    /// Keep the started node's (or Janus's) temp dir, config and log.
    #[arg(long)]
    pub keep: bool,
    /// Measure the cluster's control plane instead: a redis-server and this many nodes (3 when
    /// given bare) on loopback, the players' control WebSockets spread round-robin over them,
    /// --rounds dealer rounds with one bet per player each; no media.
    #[arg(long, num_args = 0..=1, default_missing_value = "3", value_name = "NODES")]
    pub cluster: Option<usize>,
    /// Dealer rounds of a --cluster run.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// With --cluster: each player bets at a random point this long after a round opens.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub bet_spread: Duration,
    /// Measure the cascade instead: a redis-server, the table's origin and two edges on
    /// loopback, each pinned to its own core where there are enough; --subscribers players on
    /// the origin, then as many spread over the edges, a --duration window each; then join
    /// probes on the origin and on warm and cold edges. Media only.
    #[arg(long, conflicts_with_all = ["cluster", "ramp", "url"])]
    pub cascade: bool,
    /// Join probes of each kind (origin, each edge warm, each edge cold) in a --cascade run.
    #[arg(long, default_value_t = 3)]
    pub probes: usize,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}; is it installed and on PATH?")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Target(String),
    #[error("a player could not join: {0}")]
    Join(String),
    #[error("{0}")]
    Usage(String),
}

impl BenchError {
    pub fn io(what: &'static str, source: std::io::Error) -> Self {
        BenchError::Io { what, source }
    }
}

/// `20s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 500ms, 20s, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("ms").is_err());
    }
}
