//! `tablecast bench --cluster`: what the cluster's control plane costs a player who is not on
//! the table's owner.
//!
//! ```text
//!  redis-server on a free loopback port ─▶ nodes a, b, c (this binary, `[cluster] redis_url`)
//!  ─▶ all ready, and one owns the table ─▶ N players' WebSockets, round-robin over the nodes,
//!     each welcomed ─▶ --rounds rounds on the owner over REST: open, every player bets once
//!     within --bet-spread, close, result ─▶ every player has the last event ─▶ kill everything
//! ```
//!
//! Fan-out latency is each public event's `server_ms` (stamped on the owner) to its arrival at
//! a player; bet latency is `bet.place` to `bet.accepted`. Both are split by where the player
//! is connected: on the owner, or on another node (its events cross a node-to-node link, its
//! bets are forwarded to the owner). Every process runs on this host, so there is one clock.

use super::cluster_report::{ClusterReport, NodeCpu, Split};
use super::node::{Spawned, Tablecast, free_tcp_port, node_config, temp_dir};
use super::report::Machine;
use super::stats::percentiles;
use super::ws_player::{self, PlayerSpec, Progress, Tally};
use super::{BenchArgs, BenchError, procfs};
use crate::auth::TokenRole;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// How long the cluster gets to come up, elect an owner, and welcome every player.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A redis-server and the nodes on it. Dropping it kills them all (nodes first).
pub(super) struct Cluster {
    pub(super) nodes: Vec<Tablecast>,
    pub(super) ids: Vec<String>,
    /// Each node's metrics listener (`http://127.0.0.1:PORT/metrics`), when it has one.
    pub(super) metrics_urls: Vec<Option<String>>,
    pub(super) redis: Spawned,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL: on SIGTERM a clustered node drains, handing its tables to the others.
        for node in &mut self.nodes {
            if let Some(p) = node.process.as_mut() {
                p.kill();
            }
        }
        self.nodes.clear();
        self.redis.kill();
    }
}

impl Cluster {
    /// Starts a redis-server and `count` nodes on it, each with a metrics listener when
    /// `metrics`; returns once every node is ready.
    pub(super) async fn start(
        count: usize,
        keep: bool,
        metrics: bool,
    ) -> Result<Cluster, BenchError> {
        let redis_port = free_tcp_port()?;
        let redis_dir = temp_dir("redis")?;
        let redis_args: Vec<String> = [
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &redis_dir.display().to_string(),
            "--loglevel",
            "warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut redis = Spawned::start(
            Path::new("redis-server"),
            &redis_args,
            None,
            redis_dir.clone(),
            "redis.log",
            keep,
        )
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&redis_dir);
        })?;
        wait_for_redis(&mut redis, redis_port).await?;
        let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
        let secret = hex::encode(rand::random::<[u8; 24]>());
        let mut cluster = Cluster {
            nodes: Vec::new(),
            ids: Vec::new(),
            metrics_urls: Vec::new(),
            redis,
        };
        for i in 0..count {
            let id = node_id(i);
            let port = free_tcp_port()?;
            let metrics_port = if metrics {
                Some(free_tcp_port()?)
            } else {
                None
            };
            let config = format!(
                "{}\n[node]\nid = \"{id}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\n[cluster]\nredis_url = \"{redis_url}\"\n",
                node_config(port, 1, &secret, metrics_port)
            );
            let dir = temp_dir(&format!("node-{id}"))?;
            cluster
                .nodes
                .push(Tablecast::launch(dir, port, &config, &secret, None, keep)?);
            cluster.ids.push(id);
            cluster
                .metrics_urls
                .push(metrics_port.map(|p| format!("http://127.0.0.1:{p}/metrics")));
        }
        for node in &mut cluster.nodes {
            node.wait_ready().await?;
        }
        Ok(cluster)
    }

    /// Waits until every node names the same owner of the table; returns its index.
    pub(super) async fn wait_for_owner(&self) -> Result<usize, BenchError> {
        let http = crate::client::driver::http_client();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let mut owners = Vec::new();
            for node in &self.nodes {
                let token = node.token(TokenRole::Player, "bench-probe")?;
                let owner = http
                    .get(format!("{}/api/v1/tables/{}", node.base_url, node.table))
                    .bearer_auth(token)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok();
                let owner = match owner {
                    Some(r) => r.json::<serde_json::Value>().await.ok(),
                    None => None,
                };
                owners.push(owner.and_then(|v| v["owner"].as_str().map(str::to_owned)));
            }
            if let Some(Some(first)) = owners.first()
                && owners.iter().all(|o| o.as_ref() == Some(first))
                && let Some(i) = self.ids.iter().position(|id| id == first)
            {
                return Ok(i);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Target(format!(
                    "no node owned the table within {} s (owners seen: {owners:?})",
                    READY_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// CPU time of each node, then of redis.
    pub(super) fn cpu(&self) -> Vec<Option<procfs::CpuReading>> {
        self.nodes
            .iter()
            .map(|n| n.pid)
            .chain([Some(self.redis.pid())])
            .map(|pid| pid.and_then(|p| procfs::cpu(Some(p))))
            .collect()
    }
}

/// `a`, `b`, `c`, … `z`, then `n26`, `n27`, …
pub(super) fn node_id(i: usize) -> String {
    match u8::try_from(i) {
        Ok(i) if i < 26 => char::from(b'a' + i).to_string(),
        _ => format!("n{i}"),
    }
}

async fn wait_for_redis(redis: &mut Spawned, port: u16) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = redis.exited() {
            return Err(BenchError::Target(format!(
                "redis-server exited ({status}) before it answered:\n{}",
                redis.log_tail()
            )));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Target(format!(
                "redis-server did not answer on 127.0.0.1:{port} within 10 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the cluster bench with `count` nodes.
pub async fn run(args: &BenchArgs, count: usize) -> Result<ClusterReport, BenchError> {
    if count < 2 || args.subscribers == 0 || args.rounds == 0 {
        return Err(BenchError::Usage(
            "--cluster needs at least 2 nodes, and --subscribers and --rounds must be positive"
                .into(),
        ));
    }
    let machine = Machine::probe(None);
    let cluster = Cluster::start(count, args.keep, false).await?;
    let owner = cluster.wait_for_owner().await?;
    info!(
        nodes = count,
        owner = %cluster.ids[owner],
        "the cluster is up and the table has its owner"
    );

    let n = args.subscribers;
    let progress = Progress::new(n);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut players = JoinSet::new();
    for i in 0..n {
        let node = &cluster.nodes[i % count];
        let spec = PlayerSpec {
            url: format!(
                "{}/ws/{}",
                node.base_url.replacen("http://", "ws://", 1),
                node.table
            ),
            token: node.token(TokenRole::Player, &format!("bench-{i}"))?,
            node: i % count,
            bet_spread: args.bet_spread,
        };
        players.spawn(ws_player::play(i, spec, progress.clone(), stop_rx.clone()));
        if i % 50 == 49 {
            // A pace the nodes' accept loops take without a backlog.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + READY_WITHIN;
    while progress.welcomed.load(Relaxed) < n {
        if Instant::now() > deadline || progress.failed.load(Relaxed) > 0 {
            let _ = stop_tx.send(true);
            let tallies = players.join_all().await;
            let why = tallies
                .iter()
                .find_map(|t| t.failed.clone())
                .unwrap_or_else(|| "no welcome".into());
            return Err(BenchError::Join(format!(
                "{} of {n} players were welcomed: {why}",
                progress.welcomed.load(Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let dealer = &cluster.nodes[owner];
    let cpu_a = cluster.cpu();
    let gen_a = procfs::cpu(None);
    let machine_a = procfs::machine();
    let t0 = Instant::now();
    let mut dealer_errors = 0;
    for _ in 0..args.rounds {
        for (action, pause) in [
            ("open", args.bet_spread + Duration::from_millis(500)),
            ("close", Duration::ZERO),
            ("result", Duration::from_millis(300)),
        ] {
            if let Err(e) = dealer.dealer(action).await {
                dealer_errors += 1;
                if dealer_errors <= 3 {
                    warn!(error = %e, "dealer action failed");
                }
            }
            tokio::time::sleep(pause).await;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_b = cluster.cpu();
    let gen_b = procfs::cpu(None);
    let machine_b = procfs::machine();

    let last_seq = last_seq(dealer).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.lowest_seq() < last_seq && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let tallies = players.join_all().await;
    drop(cluster);

    let cores = |a: &Option<procfs::CpuReading>, b: &Option<procfs::CpuReading>| {
        a.zip(*b).map(|(a, b)| b.cores_since(&a))
    };
    let mut node_cpu: Vec<NodeCpu> = (0..count)
        .map(|i| NodeCpu {
            node: node_id(i),
            owner: i == owner,
            players: tallies.iter().filter(|t| t.node == i).count(),
            cpu_cores: cores(&cpu_a[i], &cpu_b[i]),
        })
        .collect();
    node_cpu.sort_by_key(|c| !c.owner);
    let (lost, duplicated, expected) = count_events(&tallies, last_seq);
    let split = |on_owner: bool, pick: fn(&Tally) -> &Vec<u64>| {
        let mut v: Vec<u64> = tallies
            .iter()
            .filter(|t| (t.node == owner) == on_owner)
            .flat_map(|t| pick(t).iter().copied())
            .collect();
        percentiles(&mut v, 0.001)
    };
    let loadgen_cpu = gen_a.zip(gen_b).map_or(0.0, |(a, b)| b.cores_since(&a));
    let (busy, steal) = machine_a
        .zip(machine_b)
        .map_or((0.0, 0.0), |(a, b)| b.since(&a));
    Ok(ClusterReport {
        nodes: count,
        owner: node_id(owner),
        players: n,
        players_on_owner: tallies.iter().filter(|t| t.node == owner).count(),
        players_failed: tallies.iter().filter(|t| t.failed.is_some()).count(),
        first_failure: tallies.iter().find_map(|t| t.failed.clone()),
        rounds: args.rounds,
        dealer_errors,
        duration_secs: elapsed,
        fanout_ms: Split::of(
            split(true, |t| &t.fanout_us),
            split(false, |t| &t.fanout_us),
        ),
        bet_ms: Split::of(split(true, |t| &t.bet_us), split(false, |t| &t.bet_us)),
        bets_sent: tallies.iter().map(|t| t.bets_sent).sum(),
        bets_accepted: tallies.iter().map(|t| t.bet_us.len() as u64).sum(),
        bets_rejected: tallies.iter().map(|t| t.bets_rejected).sum(),
        first_rejection: tallies.iter().find_map(|t| t.first_rejection.clone()),
        last_seq,
        events_expected: expected,
        events_lost: lost,
        events_duplicated: duplicated,
        node_cpu,
        redis_cpu_cores: cores(&cpu_a[count], &cpu_b[count]),
        loadgen_cpu_cores: loadgen_cpu,
        machine_busy_cores: busy,
        steal_cpu_cores: steal,
        machine,
    })
}

/// The owner's `last_seq`: the last public event of the run.
async fn last_seq(owner: &Tablecast) -> Result<u64, BenchError> {
    let token = owner.token(TokenRole::Player, "bench-probe")?;
    let v: serde_json::Value = crate::client::driver::http_client()
        .get(format!("{}/api/v1/tables/{}", owner.base_url, owner.table))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| BenchError::Target(format!("the table's snapshot: {e}")))?
        .json()
        .await
        .map_err(|e| BenchError::Target(format!("the table's snapshot: {e}")))?;
    v["last_seq"]
        .as_u64()
        .ok_or_else(|| BenchError::Target(format!("the table's snapshot has no last_seq: {v}")))
}

/// Events lost, duplicated and expected over every player: each welcomed player must get every
/// public event after its welcome's seq up to `last_seq`, once.
fn count_events(tallies: &[Tally], last_seq: u64) -> (u64, u64, u64) {
    let (mut lost, mut duplicated, mut expected) = (0, 0, 0);
    for t in tallies {
        let Some(from) = t.welcome_seq else { continue };
        let mut seen = HashSet::new();
        for &seq in &t.seqs {
            if !seen.insert(seq) {
                duplicated += 1;
            }
        }
        let want = last_seq.saturating_sub(from);
        let got = seen.iter().filter(|&&s| s > from && s <= last_seq).count() as u64;
        expected += want;
        lost += want.saturating_sub(got);
    }
    (lost, duplicated, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_missing_or_repeated_after_the_welcome_are_counted() {
        let tallies = [
            Tally {
                welcome_seq: Some(3),
                seqs: vec![4, 5, 5, 7],
                ..Tally::default()
            },
            Tally {
                welcome_seq: Some(0),
                seqs: (1..=7).collect(),
                ..Tally::default()
            },
            Tally::default(),
        ];
        assert_eq!(count_events(&tallies, 7), (1, 1, 11));
    }

    #[test]
    fn nodes_are_named_by_letter() {
        assert_eq!(node_id(0), "a");
        assert_eq!(node_id(2), "c");
        assert_eq!(node_id(30), "n30");
    }
}
