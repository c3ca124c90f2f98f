//! The figures of a `bench --cluster` run: printed as a table, and written as JSON.

use super::report::Machine;
use super::stats::Percentiles;
use serde::Serialize;
use std::fmt::Write;

/// One latency, for players on the table's owner and on the other nodes, and how much slower
/// the others are.
#[derive(Debug, Clone, Serialize)]
pub struct Split {
    pub owner: Percentiles,
    pub other: Percentiles,
    /// other p50 / owner p50 (`None` when the owner's is zero or missing).
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
}

impl Split {
    pub fn of(owner: Percentiles, other: Percentiles) -> Split {
        let ratio = |o: f64, n: f64| (o > 0.0 && owner.samples > 0).then(|| n / o);
        Split {
            ratio_p50: ratio(owner.p50, other.p50),
            ratio_p99: ratio(owner.p99, other.p99),
            owner,
            other,
        }
    }
}

/// A node's share of the run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCpu {
    pub node: String,
    pub owner: bool,
    pub players: usize,
    /// Cores it used during the rounds (`/proc/PID/stat`).
    pub cpu_cores: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub nodes: usize,
    /// The node id of the table's owner.
    pub owner: String,
    pub players: usize,
    pub players_on_owner: usize,
    /// Players whose WebSocket failed or ended before the run did.
    pub players_failed: usize,
    pub first_failure: Option<String>,
    pub rounds: usize,
    pub dealer_errors: usize,
    /// Length of the rounds, seconds.
    pub duration_secs: f64,
    /// Owner's `server_ms` to arrival at the player, ms (1 ms resolution: `server_ms` is whole
    /// milliseconds, so figures read up to 1 ms high).
    pub fanout_ms: Split,
    /// `bet.place` sent to `bet.accepted` received, ms.
    pub bet_ms: Split,
    pub bets_sent: u64,
    pub bets_accepted: u64,
    pub bets_rejected: u64,
    pub first_rejection: Option<String>,
    /// The table's last public event at the end of the run.
    pub last_seq: u64,
    /// Public events the players should have received, summed over players.
    pub events_expected: u64,
    pub events_lost: u64,
    pub events_duplicated: u64,
    /// The owner first.
    pub node_cpu: Vec<NodeCpu>,
    pub redis_cpu_cores: Option<f64>,
    pub loadgen_cpu_cores: f64,
    /// Busy and stolen cores of the whole machine during the rounds.
    pub machine_busy_cores: f64,
    pub steal_cpu_cores: f64,
    pub machine: Machine,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn pct(p: &Percentiles) -> String {
    format!("{:.2}/{:.2}/{:.2}", p.p50, p.p95, p.p99)
}

/// The summary printed at the end of a run.
pub fn render(r: &ClusterReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "cluster: {} nodes on one redis-server, table owned by node {}; {} players ({} on the owner), {} rounds in {:.1} s",
        r.nodes, r.owner, r.players, r.players_on_owner, r.rounds, r.duration_secs
    );
    let _ = writeln!(
        text,
        "{:<18} {:>8} {:>22} {:>22} {:>14}",
        "latency (ms)", "samples", "owner p50/p95/p99", "other p50/p95/p99", "x p50/p99"
    );
    for (name, s) in [
        ("control fan-out", &r.fanout_ms),
        ("bet → accepted", &r.bet_ms),
    ] {
        let _ = writeln!(
            text,
            "{:<18} {:>8} {:>22} {:>22} {:>14}",
            name,
            s.owner.samples + s.other.samples,
            pct(&s.owner),
            pct(&s.other),
            format!("{}/{}", opt(s.ratio_p50, 2), opt(s.ratio_p99, 2)),
        );
    }
    let _ = writeln!(
        text,
        "events: last seq {}, {} expected over all players, {} lost, {} duplicated; bets: {} sent, {} accepted, {} rejected{}; {} players failed{}; {} dealer errors",
        r.last_seq,
        r.events_expected,
        r.events_lost,
        r.events_duplicated,
        r.bets_sent,
        r.bets_accepted,
        r.bets_rejected,
        r.first_rejection
            .as_ref()
            .map_or_else(String::new, |c| format!(" (first: {c})")),
        r.players_failed,
        r.first_failure
            .as_ref()
            .map_or_else(String::new, |c| format!(" (first: {c})")),
        r.dealer_errors,
    );
    let nodes: Vec<String> = r
        .node_cpu
        .iter()
        .map(|n| {
            format!(
                "{}{} {} ({} players)",
                n.node,
                if n.owner { " (owner)" } else { "" },
                opt(n.cpu_cores, 2),
                n.players
            )
        })
        .collect();
    let _ = writeln!(
        text,
        "cpu cores: {}; redis {}; load tool {:.2}; machine busy {:.2} of {}, steal {:.2}",
        nodes.join(", "),
        opt(r.redis_cpu_cores, 2),
        r.loadgen_cpu_cores,
        r.machine_busy_cores,
        r.machine.cpus,
        r.steal_cpu_cores,
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_other_over_owner() {
        let p = |p50, p99| Percentiles {
            samples: 10,
            p50,
            p95: p99,
            p99,
            max: p99,
        };
        let s = Split::of(p(2.0, 4.0), p(3.0, 10.0));
        assert_eq!((s.ratio_p50, s.ratio_p99), (Some(1.5), Some(2.5)));
        assert_eq!(Split::of(p(0.0, 0.0), p(3.0, 10.0)).ratio_p50, None);
    }
}
