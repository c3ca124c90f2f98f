//! What a run found, as JSON (`--json FILE`) and as a table on stdout.
//!
//! The JSON's top level is the measured result (the fixed run, or the ramp's last good step):
//! `subscribers`, `loss_ratio`, `server_cpu_cores`, `server_rss_bytes`, `loadgen_cpu_cores` and
//! the latency figures, plus `bets`, `steps` (every step of a ramp), `machine`, and, when Janus
//! ran too, `janus` (the same shape) and `comparison`.

use super::stats::Percentiles;
use serde::Serialize;
use std::fmt::Write as _;

/// One measurement window at one number of subscribers.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StepReport {
    pub target: String,
    /// Subscribers connected and counted in the window.
    pub subscribers: usize,
    pub subscribers_requested: usize,
    /// Joins that failed (signalling refused, or no connection within 15 s).
    pub join_failures: usize,
    /// Subscribers that connected, then lost their connection.
    pub dropped: usize,
    pub duration_secs: f64,
    pub packets_delivered: u64,
    pub packets_expected: u64,
    pub loss_ratio: f64,
    /// What the dealer sent in the window (video + audio), per second.
    pub publisher_packets_per_sec: f64,
    /// Publisher send time → arrival at a subscriber (one clock), sampled.
    pub forward_latency_ms: Percentiles,
    pub forward_latency_by_packet_ms: ForwardByKind,
    /// Start of the join (before signalling) → first keyframe packet at the subscriber.
    pub join_to_keyframe_ms: Percentiles,
    /// A public table event's `server_ms` → its arrival at each subscriber.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_fanout_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_events_delivered: Option<u64>,
    pub server_cpu_cores: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    pub server_peak_rss_bytes: Option<u64>,
    /// (RSS now − RSS with the dealer and no subscriber) / subscribers.
    pub server_rss_per_subscriber_bytes: Option<u64>,
    pub loadgen_cpu_cores: f64,
    /// CPU the rest of the machine used in the window (every process but the server and the
    /// load tool): a shared machine's noise. Large values make the row suspect.
    pub other_cpu_cores: f64,
    /// CPU time the hypervisor gave to others while this machine wanted it.
    pub steal_cpu_cores: f64,
    /// The load tool used ≥ 90% of the CPUs it may run on: its figures (latency above all) may
    /// measure the tool, not the server.
    pub loadgen_saturated: bool,
    /// Loss, p99 forwarding latency and join failures all within the limits.
    pub passed: bool,
}

/// Forwarding latency by packet kind. A keyframe arrives as a burst (24 packets at once), which
/// a server fans out copy by copy: its packets wait longest.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct ForwardByKind {
    pub audio: Percentiles,
    pub video_delta: Percentiles,
    pub video_keyframe: Percentiles,
}

/// The bet phase: players keep bets outstanding on an open round as fast as they are answered.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BetReport {
    pub players: usize,
    pub outstanding_per_player: usize,
    pub duration_secs: f64,
    pub accepted: u64,
    pub accepted_per_sec: f64,
    pub rejected: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_rejection: Option<String>,
    pub unanswered: u64,
    /// `bet.place` sent → `bet.accepted` (or rejected) received.
    pub latency_ms: Percentiles,
    pub server_cpu_cores: Option<f64>,
    pub loadgen_cpu_cores: f64,
    pub loadgen_saturated: bool,
    pub note: String,
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub loadgen_allowed_cpus: usize,
    pub kernel: String,
    pub load_average_at_start: String,
    pub node_cpus: Option<String>,
}

impl Machine {
    pub fn probe(node_cpus: Option<String>) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Machine {
            cpu_model: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            loadgen_allowed_cpus: super::procfs::allowed_cpus(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_average_at_start: read("/proc/loadavg").trim().to_owned(),
            node_cpus,
        }
    }
}

/// Everything one target (tablecast or Janus) gave in a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunReport {
    /// The fixed run, or the ramp's last step that passed (its first step when none did).
    #[serde(flatten)]
    pub result: StepReport,
    pub mode: String,
    /// Ramp: the most subscribers that passed (0 when none did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_subscribers: Option<usize>,
    pub server_rss_baseline_bytes: Option<u64>,
    /// Keyframe requests that reached the synthetic dealer over the whole run.
    pub dealer_keyframe_requests: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bets: Option<BetReport>,
    pub steps: Vec<StepReport>,
    pub limits: Limits,
    pub machine: Machine,
}

/// The pass rule of a step.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Limits {
    pub max_loss_ratio: f64,
    pub max_p99_forward_latency_ms: f64,
}

/// Both targets of one run, side by side.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Comparison {
    /// Ramp: tablecast's max subscribers / Janus's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_subscribers_ratio: Option<f64>,
    /// Server CPU per subscriber, Janus / tablecast (> 1: tablecast is cheaper).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_per_subscriber_ratio: Option<f64>,
    /// Server RSS per subscriber, Janus / tablecast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_subscriber_ratio: Option<f64>,
}

/// The whole output.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Output {
    #[serde(flatten)]
    pub primary: RunReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub janus: Option<RunReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

impl Comparison {
    pub fn of(t: &RunReport, j: &RunReport) -> Comparison {
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let per_sub = |r: &StepReport| {
            r.server_cpu_cores
                .filter(|_| r.subscribers > 0)
                .map(|c| c / r.subscribers as f64)
        };
        Comparison {
            max_subscribers_ratio: match (t.max_subscribers, j.max_subscribers) {
                (Some(a), Some(b)) => ratio(a as f64, b as f64),
                _ => None,
            },
            cpu_per_subscriber_ratio: match (per_sub(&j.result), per_sub(&t.result)) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => None,
            },
            rss_per_subscriber_ratio: match (
                j.result.server_rss_per_subscriber_bytes,
                t.result.server_rss_per_subscriber_bytes,
            ) {
                (Some(a), Some(b)) => ratio(a as f64, b as f64),
                _ => None,
            },
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |v| format!("{:.1}", v as f64 / (1024.0 * 1024.0)),
    )
}

fn kib(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.0}", v as f64 / 1024.0))
}

/// The header of the step table.
pub fn header() -> String {
    format!(
        "{:<9} {:>6} {:>5} {:>10} {:>8} {:>21} {:>13} {:>13} {:>6} {:>8} {:>7} {:>7} {:>5} {}",
        "target",
        "subs",
        "fail",
        "delivered",
        "loss%",
        "fwd p50/p95/p99 ms",
        "join p50/p99",
        "ctrl p50/p99",
        "cpu",
        "rss MiB",
        "KiB/sub",
        "gen cpu",
        "other",
        "ok"
    )
}

/// One row of the step table. `*` after the load tool's CPU marks a saturated load tool.
pub fn row(s: &StepReport) -> String {
    let f = &s.forward_latency_ms;
    let j = &s.join_to_keyframe_ms;
    let ctrl = s
        .control_fanout_ms
        .map_or_else(|| "-".to_owned(), |c| format!("{:.1}/{:.1}", c.p50, c.p99));
    format!(
        "{:<9} {:>6} {:>5} {:>10} {:>8.3} {:>21} {:>13} {:>13} {:>6} {:>8} {:>7} {:>6}{} {:>5.2} {}",
        s.target,
        s.subscribers,
        s.join_failures + s.dropped,
        s.packets_delivered,
        s.loss_ratio * 100.0,
        format!("{:.2}/{:.2}/{:.2}", f.p50, f.p95, f.p99),
        format!("{:.0}/{:.0}", j.p50, j.p99),
        ctrl,
        opt(s.server_cpu_cores, 2),
        mib(s.server_rss_bytes),
        kib(s.server_rss_per_subscriber_bytes),
        format!("{:.2}", s.loadgen_cpu_cores),
        if s.loadgen_saturated { "*" } else { " " },
        s.other_cpu_cores,
        if s.passed { "yes" } else { "NO" },
    )
}

/// The summary printed at the end of a run.
pub fn render(out: &Output) -> String {
    let mut text = String::new();
    let mut runs = vec![&out.primary];
    runs.extend(out.janus.as_ref());
    let _ = writeln!(text, "{}", header());
    for r in &runs {
        for s in &r.steps {
            let _ = writeln!(text, "{}", row(s));
        }
    }
    for r in &runs {
        if let Some(max) = r.max_subscribers {
            let _ = writeln!(
                text,
                "{}: ramp maximum {max} subscribers (loss < {}%, p99 forwarding < {} ms)",
                r.result.target,
                r.limits.max_loss_ratio * 100.0,
                r.limits.max_p99_forward_latency_ms
            );
        }
        if let Some(b) = &r.bets {
            let _ = writeln!(
                text,
                "{}: bets {:.0}/s accepted ({} accepted, {} rejected{}, {} unanswered) by {} players with {} outstanding each; latency p50 {:.1} ms p99 {:.1} ms; node cpu {} cores, load tool {:.2}{}",
                r.result.target,
                b.accepted_per_sec,
                b.accepted,
                b.rejected,
                b.first_rejection
                    .as_ref()
                    .map_or_else(String::new, |c| format!(", first: {c}")),
                b.unanswered,
                b.players,
                b.outstanding_per_player,
                b.latency_ms.p50,
                b.latency_ms.p99,
                opt(b.server_cpu_cores, 2),
                b.loadgen_cpu_cores,
                if b.loadgen_saturated {
                    " (saturated)"
                } else {
                    ""
                },
            );
        }
    }
    if let Some(c) = &out.comparison {
        let _ = writeln!(
            text,
            "tablecast vs Janus: max subscribers x{}, Janus CPU per subscriber / tablecast x{}, Janus RSS per subscriber / tablecast x{}",
            opt(c.max_subscribers_ratio, 2),
            opt(c.cpu_per_subscriber_ratio, 2),
            opt(c.rss_per_subscriber_ratio, 2)
        );
    }
    if runs
        .iter()
        .any(|r| r.steps.iter().any(|s| s.loadgen_saturated))
    {
        let _ = writeln!(
            text,
            "* the load tool was saturated (>= 90% of its CPUs): those rows may measure the tool, not the server"
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_has_the_promised_top_level_keys() {
        let out = Output {
            primary: RunReport {
                result: StepReport {
                    subscribers: 5,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let v = serde_json::to_value(&out).unwrap();
        for key in [
            "subscribers",
            "loss_ratio",
            "server_cpu_cores",
            "server_rss_bytes",
            "loadgen_cpu_cores",
            "forward_latency_ms",
            "join_to_keyframe_ms",
            "packets_delivered",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["subscribers"], 5);
        assert!(render(&out).contains("target"));
    }
}
