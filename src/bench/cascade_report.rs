//! The figures of a `bench --cascade` run: printed as a table, and written as JSON.

use super::report::Machine;
use super::stats::Percentiles;
use serde::Serialize;
use std::fmt::Write;

/// One phase: N players on some nodes, measured over one window.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Phase {
    /// The nodes the players were spread over (round-robin).
    pub nodes: Vec<String>,
    pub players: usize,
    pub players_connected: usize,
    pub players_with_keyframe: usize,
    /// Joins refused, or connections that never came up or dropped.
    pub players_failed: usize,
    pub window_secs: f64,
    pub loss_ratio: f64,
    pub packets_delivered: u64,
    /// The publisher's send time (stamped in the payload) to the kernel's receive time at the
    /// player, every packet kind, ms.
    pub latency_ms: Percentiles,
    /// Join to first keyframe of the phase's players, joined at --join-rate, ms.
    pub join_ms: Percentiles,
    /// Cores the origin process used over the window (`/proc/PID/stat`, utime + stime).
    pub origin_cpu_cores: Option<f64>,
    /// From the origin's metrics listener, over the window.
    pub origin_packets_received_per_sec: Option<f64>,
    pub origin_packets_forwarded_per_sec: Option<f64>,
    /// Packets forwarded per packet received: the origin's fan-out (players, or relays).
    pub origin_forwarded_per_received: Option<f64>,
    /// `tablecast_relays{direction="out"}` at the end of the window.
    pub origin_relays_out: Option<f64>,
    /// Cores of each edge, in the order of [`CascadeReport::edges`].
    pub edge_cpu_cores: Vec<Option<f64>>,
    pub redis_cpu_cores: Option<f64>,
    pub loadgen_cpu_cores: f64,
    /// Busy and stolen cores of the whole machine over the window.
    pub machine_busy_cores: f64,
    pub steal_cpu_cores: f64,
}

/// Join to first keyframe of one player at a time, on a node otherwise without joins, ms.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JoinProbes {
    pub origin: Vec<f64>,
    /// On an edge that already pulls the camera for its other players.
    pub edge_warm: Vec<f64>,
    /// On an edge with no pull: it had no player for longer than the pull's linger.
    pub edge_cold: Vec<f64>,
    pub origin_p50: Option<f64>,
    pub edge_warm_p50: Option<f64>,
    pub edge_cold_p50: Option<f64>,
    /// Probes that got no keyframe within 10 s, or could not join.
    pub failed: usize,
}

impl JoinProbes {
    pub fn finish(mut self) -> Self {
        self.origin_p50 = median(&self.origin);
        self.edge_warm_p50 = median(&self.edge_warm);
        self.edge_cold_p50 = median(&self.edge_cold);
        self
    }
}

/// What the hop through an edge adds to a player's latency: phase B's figure minus phase A's.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct HopAdded {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct CascadeReport {
    /// Node id of the table's owner (the origin) and of the two edges.
    pub origin: String,
    pub edges: Vec<String>,
    /// How the processes were pinned, in words.
    pub pinning: String,
    pub players: usize,
    /// Phase A: every player on the origin.
    pub on_origin: Phase,
    /// Phase B: the players spread over the two edges.
    pub on_edges: Phase,
    /// Origin cores in B / in A.
    pub origin_cpu_ratio: Option<f64>,
    /// Origin packets forwarded in B / in A.
    pub origin_forwarded_ratio: Option<f64>,
    pub hop_added: HopAdded,
    pub join_probes: JoinProbes,
    /// Keyframe requests that reached the synthetic dealer over the whole run.
    pub dealer_keyframe_requests: u64,
    pub machine: Machine,
}

impl CascadeReport {
    /// Fills in the ratios and differences of B against A.
    pub fn compare(mut self) -> Self {
        let (a, b) = (&self.on_origin, &self.on_edges);
        self.origin_cpu_ratio = ratio(b.origin_cpu_cores, a.origin_cpu_cores);
        self.origin_forwarded_ratio = ratio(
            b.origin_packets_forwarded_per_sec,
            a.origin_packets_forwarded_per_sec,
        );
        let both = a.latency_ms.samples > 0 && b.latency_ms.samples > 0;
        self.hop_added = HopAdded {
            p50_ms: both.then_some(b.latency_ms.p50 - a.latency_ms.p50),
            p99_ms: both.then_some(b.latency_ms.p99 - a.latency_ms.p99),
        };
        self
    }
}

fn ratio(b: Option<f64>, a: Option<f64>) -> Option<f64> {
    a.zip(b).and_then(|(a, b)| (a > 0.0).then(|| b / a))
}

/// The median of a few samples (the mean of the middle two when even).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn pct_of_core(v: Option<f64>) -> String {
    opt(v.map(|c| c * 100.0), 1)
}

fn samples(v: &[f64]) -> String {
    let v: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
    v.join(" ")
}

/// The summary printed at the end of a run.
pub fn render(r: &CascadeReport) -> String {
    let (a, b) = (&r.on_origin, &r.on_edges);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "cascade: origin {}, edges {}; {}",
        r.origin,
        r.edges.join(" and "),
        r.pinning
    );
    let _ = writeln!(
        t,
        "{} players per phase, {:.1} s windows; A: all on the origin, B: spread over the edges",
        r.players, a.window_secs
    );
    let row = |t: &mut String, name: &str, a: String, b: String, x: String| {
        let _ = writeln!(t, "{name:<34} {a:>18} {b:>18} {x:>12}");
    };
    row(
        &mut t,
        "",
        "A: on the origin".into(),
        "B: on the edges".into(),
        "B/A".into(),
    );
    row(
        &mut t,
        "players connected / with video",
        format!("{}/{}", a.players_connected, a.players_with_keyframe),
        format!("{}/{}", b.players_connected, b.players_with_keyframe),
        String::new(),
    );
    row(
        &mut t,
        "origin cpu, % of a core",
        pct_of_core(a.origin_cpu_cores),
        pct_of_core(b.origin_cpu_cores),
        opt(r.origin_cpu_ratio, 2),
    );
    row(
        &mut t,
        "origin packets forwarded /s",
        opt(a.origin_packets_forwarded_per_sec, 0),
        opt(b.origin_packets_forwarded_per_sec, 0),
        opt(r.origin_forwarded_ratio, 3),
    );
    row(
        &mut t,
        "  per packet the origin received",
        opt(a.origin_forwarded_per_received, 2),
        opt(b.origin_forwarded_per_received, 2),
        String::new(),
    );
    row(
        &mut t,
        "origin relay sessions",
        opt(a.origin_relays_out, 0),
        opt(b.origin_relays_out, 0),
        String::new(),
    );
    let edges = |p: &Phase| {
        let v: Vec<String> = p.edge_cpu_cores.iter().map(|c| pct_of_core(*c)).collect();
        v.join(", ")
    };
    row(
        &mut t,
        "edges' cpu, % of a core",
        edges(a),
        edges(b),
        String::new(),
    );
    row(
        &mut t,
        "loss %",
        format!("{:.3}", a.loss_ratio * 100.0),
        format!("{:.3}", b.loss_ratio * 100.0),
        String::new(),
    );
    let pct = |p: &Percentiles| format!("{:.2}/{:.2}/{:.2}", p.p50, p.p95, p.p99);
    row(
        &mut t,
        "latency p50/p95/p99 ms",
        pct(&a.latency_ms),
        pct(&b.latency_ms),
        String::new(),
    );
    row(
        &mut t,
        "  hop adds, p50 / p99 ms",
        String::new(),
        format!(
            "{} / {}",
            opt(r.hop_added.p50_ms, 2),
            opt(r.hop_added.p99_ms, 2)
        ),
        String::new(),
    );
    row(
        &mut t,
        "join of the phase p50/p99 ms",
        format!("{:.0}/{:.0}", a.join_ms.p50, a.join_ms.p99),
        format!("{:.0}/{:.0}", b.join_ms.p50, b.join_ms.p99),
        String::new(),
    );
    let j = &r.join_probes;
    let _ = writeln!(
        t,
        "join probes, WHEP POST to first keyframe, median ms [samples]: origin {} [{}]; edge warm {} [{}]; edge cold {} [{}]; {} failed",
        opt(j.origin_p50, 0),
        samples(&j.origin),
        opt(j.edge_warm_p50, 0),
        samples(&j.edge_warm),
        opt(j.edge_cold_p50, 0),
        samples(&j.edge_cold),
        j.failed
    );
    for (name, p) in [("A", a), ("B", b)] {
        let _ = writeln!(
            t,
            "{name}: load tool {:.2} cores, redis {}, machine busy {:.2} of {}, steal {:.2}; {} failed players",
            p.loadgen_cpu_cores,
            opt(p.redis_cpu_cores, 2),
            p.machine_busy_cores,
            r.machine.cpus,
            p.steal_cpu_cores,
            p.players_failed,
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(cpu: f64, fwd: f64, p50: f64, p99: f64) -> Phase {
        Phase {
            origin_cpu_cores: Some(cpu),
            origin_packets_forwarded_per_sec: Some(fwd),
            latency_ms: Percentiles {
                samples: 10,
                p50,
                p95: p99,
                p99,
                max: p99,
            },
            ..Phase::default()
        }
    }

    #[test]
    fn edges_are_compared_against_the_origin() {
        let r = CascadeReport {
            on_origin: phase(0.2, 9000.0, 2.0, 8.0),
            on_edges: phase(0.05, 360.0, 2.5, 9.5),
            ..CascadeReport::default()
        }
        .compare();
        assert_eq!(r.origin_cpu_ratio, Some(0.25));
        assert_eq!(r.origin_forwarded_ratio, Some(0.04));
        assert_eq!(r.hop_added.p50_ms, Some(0.5));
        assert_eq!(r.hop_added.p99_ms, Some(1.5));
        let text = render(&r);
        assert!(text.contains("origin cpu"), "{text}");
        assert!(text.contains("0.25"), "{text}");
    }

    #[test]
    fn no_samples_no_difference() {
        let mut b = phase(0.0, 0.0, 0.0, 0.0);
        b.latency_ms.samples = 0;
        let r = CascadeReport {
            on_origin: phase(0.0, 0.0, 2.0, 8.0),
            on_edges: b,
            ..CascadeReport::default()
        }
        .compare();
        assert_eq!(r.origin_cpu_ratio, None);
        assert_eq!(r.hop_added.p50_ms, None);
    }

    #[test]
    fn medians_of_a_few_probes() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
