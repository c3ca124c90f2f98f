//! `tablecast bench --cascade`: what a hop through an edge costs a player, and what the cascade
//! saves the origin.
//!
//! ```text
//!  pin this tool (see `pinning`) ─▶ redis-server on a free loopback port, nodes a, b, c with
//!  metrics listeners ─▶ the table's owner (the origin) by the cluster API; pin the nodes
//!  ─▶ the synthetic dealer publishes to the origin
//!  ─▶ phase A: N players on the origin: join at --join-rate, first keyframes, settle, window
//!     of --duration; then they leave (WHEP DELETE)
//!  ─▶ phase B: N players round-robin over the two edges: the same; before they leave, join
//!     probes on the origin and on the edges (warm: the edge pulls the camera already)
//!  ─▶ join probes on each edge once its pull has ended (cold) ─▶ kill everything
//! ```
//!
//! Over each window: the origin's CPU from `/proc/PID/stat`, its packets received and
//! forwarded from its metrics listener, and the players' latency (the publisher's send time
//! stamped in each payload to the kernel's receive time at the player; one host, one clock).
//! A join probe is one player joining alone: its WHEP request to its first keyframe packet.

use super::cascade_report::{CascadeReport, JoinProbes, Phase};
use super::cluster::{Cluster, node_id};
use super::loadgen::{Cmd, LoadGen};
use super::node::Session;
use super::pinning::Plan;
use super::report::Machine;
use super::stats::percentiles;
use super::{BenchArgs, BenchError, procfs};
use crate::client::driver;
use crate::media::relay::LINGER;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Media packets per second one player receives (130 video + 50 audio).
const PACKETS_PER_PLAYER: u64 = 180;
/// A probe that has no keyframe by then failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Between probes: more than the node's 500 ms keyframe-request throttle, so that a probe never
/// waits because the one before it just asked for a keyframe.
const PROBE_GAP: Duration = Duration::from_millis(700);
/// Player numbers (user ids `bench-{i}`): phase A from 0, phase B from here, probes after.
const PHASE_B_FIRST: usize = 1_000_000;
const PROBE_FIRST: usize = 2_000_000;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs the cascade bench.
pub async fn run(args: &BenchArgs) -> Result<CascadeReport, BenchError> {
    if args.subscribers == 0 || args.join_rate <= 0.0 || args.duration.is_zero() || args.probes == 0
    {
        return Err(BenchError::Usage(
            "--cascade needs positive --subscribers, --join-rate, --duration and --probes".into(),
        ));
    }
    if args.url.is_some() {
        return Err(BenchError::Usage(
            "--cascade starts its own redis-server and nodes; drop --url".into(),
        ));
    }
    let machine = Machine::probe(None);
    let plan = Plan::for_cpus(&procfs::allowed_cpu_list());
    let mut problems: Vec<String> = plan.pin_self().into_iter().collect();
    let cluster = Cluster::start(3, args.keep, true).await?;
    let origin = cluster.wait_for_owner().await?;
    let edges = [(origin + 1) % 3, (origin + 2) % 3];
    problems.extend(plan.pin_nodes(
        cluster.nodes[origin].pid,
        edges.map(|e| cluster.nodes[e].pid),
    ));
    let pinning = plan.describe(
        (
            &cluster.ids[origin],
            [&cluster.ids[edges[0]], &cluster.ids[edges[1]]],
        ),
        &problems,
    );
    info!(origin = %cluster.ids[origin], %pinning, "the cluster is up");

    let epoch = Instant::now();
    let dealer = cluster.nodes[origin].publish(epoch).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = Run {
        cluster: &cluster,
        origin,
        edges,
        args,
        epoch,
    };
    let outcome = run.phases().await;
    let dealer_keyframe_requests = dealer.stats().plis_received;
    let _ = dealer.close().await;
    drop(cluster);
    let (on_origin, on_edges, join_probes) = outcome?;
    Ok(CascadeReport {
        origin: node_id(origin),
        edges: edges.iter().map(|&e| node_id(e)).collect(),
        pinning,
        players: args.subscribers,
        on_origin,
        on_edges,
        join_probes: join_probes.finish(),
        dealer_keyframe_requests,
        machine,
        ..CascadeReport::default()
    }
    .compare())
}

struct Run<'a> {
    cluster: &'a Cluster,
    origin: usize,
    edges: [usize; 2],
    args: &'a BenchArgs,
    epoch: Instant,
}

impl Run<'_> {
    async fn phases(&self) -> Result<(Phase, Phase, JoinProbes), BenchError> {
        let mut probes = JoinProbes::default();
        let mut probe_n = PROBE_FIRST;

        let a = self.join(&[self.origin], 0).await?;
        let on_origin = self.measure(&a).await;
        println!("phase A (on the origin) measured");
        self.leave(a).await;
        self.wait_for_origin_players(0).await;

        let b = self.join(&self.edges, PHASE_B_FIRST).await?;
        let on_edges = self.measure(&b).await;
        println!("phase B (on the edges) measured");
        for _ in 0..self.args.probes {
            let o = self.probe(self.origin, &mut probe_n).await;
            record(&mut probes.origin, &mut probes.failed, o);
            for &e in &self.edges {
                let w = self.probe(e, &mut probe_n).await;
                record(&mut probes.edge_warm, &mut probes.failed, w);
            }
        }
        self.leave(b).await;

        for _ in 0..self.args.probes {
            for &e in &self.edges {
                if !self.wait_until_no_pull(e).await {
                    warn!(edge = %self.cluster.ids[e], "the edge still pulls; no cold probe");
                    probes.failed += 1;
                    continue;
                }
                let c = self.probe(e, &mut probe_n).await;
                record(&mut probes.edge_cold, &mut probes.failed, c);
            }
        }
        Ok((on_origin, on_edges, probes))
    }

    /// Joins `--subscribers` players round-robin over `nodes` at `--join-rate`, and waits for
    /// their first keyframes and `--settle`.
    async fn join(&self, nodes: &[usize], first: usize) -> Result<Players, BenchError> {
        let n = self.args.subscribers;
        let load = LoadGen::start(self.args.threads, self.epoch)
            .map_err(|e| BenchError::io("start the load threads", e))?;
        let every = (n as u64 * PACKETS_PER_PLAYER)
            .div_ceil(u64::from(self.args.latency_samples_per_sec.max(1)))
            .max(1) as u32;
        load.broadcast(|| Cmd::SampleEvery(every));
        let start = Instant::now();
        let joins = (0..n).map(|i| {
            let node = nodes[i % nodes.len()];
            let at = start + Duration::from_secs_f64(i as f64 / self.args.join_rate);
            let load = &load;
            async move {
                tokio::time::sleep_until(at.into()).await;
                let joined = self.cluster.nodes[node]
                    .join_session(first + i, LOOPBACK, false)
                    .await;
                match joined {
                    Ok((setup, session)) => {
                        load.add(setup);
                        Some((node, session))
                    }
                    Err(e) => {
                        warn!(player = i, error = %e, "join failed");
                        None
                    }
                }
            }
        });
        let joined = futures_util::future::join_all(joins).await;
        let failures = joined.iter().filter(|j| j.is_none()).count();
        let sessions: Vec<(usize, Session)> = joined.into_iter().flatten().collect();
        let mut players = Players {
            load,
            sessions,
            failures,
            join_us: Vec::new(),
            nodes: nodes.to_vec(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = players.load.snapshot().await;
            players.join_us.extend(s.join_us);
            let done = s.with_keyframe + s.never_connected + s.dropped + failures;
            if done >= n || Instant::now() > deadline {
                if done < n {
                    warn!(
                        players = n,
                        with_keyframe = s.with_keyframe,
                        "not every player got a keyframe within 20 s"
                    );
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(self.args.settle).await;
        Ok(players)
    }

    /// One window of `--duration` over the players on their nodes.
    async fn measure(&self, players: &Players) -> Phase {
        let origin_metrics = self.cluster.metrics_urls[self.origin].as_deref();
        let snap_a = players.load.snapshot().await;
        let cpu_a = self.cluster.cpu();
        let gen_a = procfs::cpu(None);
        let machine_a = procfs::machine();
        let metrics_a = scrape(origin_metrics).await;
        let t0 = Instant::now();
        tokio::time::sleep(self.args.duration).await;
        let metrics_b = scrape(origin_metrics).await;
        let snap_b = players.load.snapshot().await;
        let cpu_b = self.cluster.cpu();
        let gen_b = procfs::cpu(None);
        let machine_b = procfs::machine();
        let secs = t0.elapsed().as_secs_f64();

        let cores = |i: usize| cpu_a[i].zip(cpu_b[i]).map(|(a, b)| b.cores_since(&a));
        let rate = |name: &str| {
            let a = sample(metrics_a.as_deref(), name, "table=\"bench\"")?;
            let b = sample(metrics_b.as_deref(), name, "table=\"bench\"")?;
            Some((b - a).max(0.0) / secs)
        };
        let received = rate("tablecast_rtp_packets_received_total");
        let forwarded = rate("tablecast_rtp_packets_forwarded_total");
        let window = snap_b.media().since(snap_a.media());
        let mut latency: Vec<u64> = snap_b.forward_us.iter().flatten().copied().collect();
        let mut join_us = players.join_us.clone();
        join_us.extend(snap_a.join_us.iter().chain(&snap_b.join_us));
        let (busy, steal) = machine_a
            .zip(machine_b)
            .map_or((0.0, 0.0), |(a, b)| b.since(&a));
        let failed = players.failures + snap_b.never_connected + snap_b.dropped;
        Phase {
            nodes: players.nodes.iter().map(|&i| node_id(i)).collect(),
            players: self.args.subscribers,
            players_connected: snap_b.connected,
            players_with_keyframe: snap_b.with_keyframe,
            players_failed: failed,
            window_secs: secs,
            loss_ratio: window.loss_ratio(),
            packets_delivered: window.received,
            latency_ms: percentiles(&mut latency, 0.001),
            join_ms: percentiles(&mut join_us, 0.001),
            origin_cpu_cores: cores(self.origin),
            origin_packets_received_per_sec: received,
            origin_packets_forwarded_per_sec: forwarded,
            origin_forwarded_per_received: received
                .zip(forwarded)
                .and_then(|(r, f)| (r > 0.0).then(|| f / r)),
            origin_relays_out: sample(
                metrics_b.as_deref(),
                "tablecast_relays",
                "table=\"bench\",direction=\"out\"",
            ),
            edge_cpu_cores: self.edges.iter().map(|&e| cores(e)).collect(),
            redis_cpu_cores: cores(self.cluster.nodes.len()),
            loadgen_cpu_cores: gen_a.zip(gen_b).map_or(0.0, |(a, b)| b.cores_since(&a)),
            machine_busy_cores: busy,
            steal_cpu_cores: steal,
        }
    }

    /// Ends every player's session (DELETE on its node), then the load threads.
    async fn leave(&self, players: Players) {
        let leaves = players
            .sessions
            .iter()
            .map(|(node, s)| self.cluster.nodes[*node].leave(s));
        let failed = futures_util::future::join_all(leaves)
            .await
            .into_iter()
            .filter(Result::is_err)
            .count();
        if failed > 0 {
            warn!(failed, "some players' sessions could not be ended");
        }
        players.load.stop();
    }

    /// Waits (at most 10 s) until the origin has `n` WHEP sessions, so the next phase starts
    /// from a clean origin.
    async fn wait_for_origin_players(&self, n: usize) {
        let url = self.cluster.metrics_urls[self.origin].as_deref();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let text = scrape(url).await;
            if sample(text.as_deref(), "tablecast_subscribers", "table=\"bench\"")
                .is_some_and(|v| v as usize == n)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        warn!(
            want = n,
            "the origin did not get back to its players within 10 s"
        );
    }

    /// Waits until edge `e` has no pull of the table (its pull outlives its last player by
    /// the linger); false when it still has one after the linger and 10 s more.
    async fn wait_until_no_pull(&self, e: usize) -> bool {
        let url = self.cluster.metrics_urls[e].as_deref();
        let deadline = Instant::now() + LINGER + Duration::from_secs(10);
        while Instant::now() < deadline {
            let text = scrape(url).await;
            let pulls = sample(
                text.as_deref(),
                "tablecast_relays",
                "table=\"bench\",direction=\"in\"",
            );
            if pulls == Some(0.0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// One player joins node `i` alone: ms from its WHEP request to its first keyframe.
    async fn probe(&self, i: usize, n: &mut usize) -> Result<f64, BenchError> {
        tokio::time::sleep(PROBE_GAP).await;
        *n += 1;
        let node = &self.cluster.nodes[i];
        let load =
            LoadGen::start(1, self.epoch).map_err(|e| BenchError::io("start a load thread", e))?;
        let outcome = async {
            let (setup, session) = node.join_session(*n, LOOPBACK, false).await?;
            load.add(setup);
            let deadline = Instant::now() + PROBE_TIMEOUT;
            let joined = loop {
                let s = load.snapshot().await;
                if let Some(&us) = s.join_us.first() {
                    break Ok(us as f64 / 1000.0);
                }
                if s.never_connected + s.dropped > 0 || Instant::now() > deadline {
                    break Err(BenchError::Join(format!(
                        "a probe on node {} had no keyframe within {} s",
                        self.cluster.ids[i],
                        PROBE_TIMEOUT.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if let Err(e) = node.leave(&session).await {
                warn!(error = %e, "a probe's session could not be ended");
            }
            joined
        }
        .await;
        load.stop();
        outcome
    }
}

/// The players of one phase.
struct Players {
    load: LoadGen,
    /// Each joined player's node and WHEP session.
    sessions: Vec<(usize, Session)>,
    failures: usize,
    /// Join times gathered while waiting for the first keyframes.
    join_us: Vec<u64>,
    nodes: Vec<usize>,
}

fn record(to: &mut Vec<f64>, failed: &mut usize, probe: Result<f64, BenchError>) {
    match probe {
        Ok(ms) => to.push(ms),
        Err(e) => {
            warn!(error = %e, "join probe failed");
            *failed += 1;
        }
    }
}

/// A node's metrics text (`None` when it has no listener or does not answer).
async fn scrape(url: Option<&str>) -> Option<String> {
    driver::http_client()
        .get(url?)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of `name{labels}` in Prometheus text.
fn sample(text: Option<&str>, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text?
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_name_and_exact_labels() {
        let text = "# TYPE tablecast_relays gauge\n\
            tablecast_relays{table=\"bench\",direction=\"in\"} 0\n\
            tablecast_relays{table=\"bench\",direction=\"out\"} 2\n\
            tablecast_rtp_packets_forwarded_total{table=\"bench\"} 12345\n";
        let out = sample(
            Some(text),
            "tablecast_relays",
            "table=\"bench\",direction=\"out\"",
        );
        assert_eq!(out, Some(2.0));
        assert_eq!(
            sample(
                Some(text),
                "tablecast_rtp_packets_forwarded_total",
                "table=\"bench\""
            ),
            Some(12345.0)
        );
        assert_eq!(sample(Some(text), "tablecast_relays", "table=\"x\""), None);
        assert_eq!(sample(None, "tablecast_relays", ""), None);
    }
}
