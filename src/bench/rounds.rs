//! Load on the control plane: dealer rounds during a measurement window (every public event
//! they produce is a fan-out sample at every player), and the bet phase (players keep a fixed
//! number of bets outstanding on one open round, as fast as the node answers).

use super::loadgen::{Cmd, LoadGen};
use super::node::Tablecast;
use super::report::BetReport;
use super::stats::percentiles;
use super::viewer::BetPlan;
use super::{BenchArgs, BenchError, procfs};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tracing::warn;

/// Runs dealer rounds (open, close, result) every `every` until `stop`.
/// Returns how many dealer actions failed.
pub async fn cycle(node: &Tablecast, every: Duration, stop: &AtomicBool) -> usize {
    let mut errors = 0;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(500)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Relaxed) {
        tick.tick().await;
        if stop.load(Relaxed) {
            break;
        }
        for (action, pause) in [("open", 300), ("close", 0), ("result", 0)] {
            if let Err(e) = node.dealer(action).await {
                errors += 1;
                if errors <= 3 {
                    warn!(error = %e, "dealer action failed");
                }
            }
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
    errors
}

/// Players keep `--bet-window` bets outstanding on one open round for `--bet-duration`.
pub async fn bets(
    node: &Tablecast,
    load: &LoadGen,
    args: &BenchArgs,
) -> Result<BetReport, BenchError> {
    let before = load.snapshot().await;
    let round = node.dealer("open").await?;
    let pid = node.pid;
    let cpu_a = pid.and_then(|p| procfs::cpu(Some(p)));
    let gen_a = procfs::cpu(None);
    let until = Instant::now() + args.bet_duration;
    let plan = BetPlan {
        round,
        until,
        window: args.bet_window.max(1),
    };
    load.broadcast(|| Cmd::Bets(plan));
    tokio::time::sleep_until(until.into()).await;
    let cpu_b = pid.and_then(|p| procfs::cpu(Some(p)));
    let gen_b = procfs::cpu(None);
    // Answers still in flight at `until` are not counted; give them a moment to land first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.broadcast(|| Cmd::StopBets);
    let mut s = load.snapshot().await;
    let _ = node.dealer("close").await;
    let _ = node.dealer("result").await;
    let secs = args.bet_duration.as_secs_f64();
    let loadgen_cpu = gen_a.zip(gen_b).map_or(0.0, |(a, b)| b.cores_since(&a));
    Ok(BetReport {
        players: before.welcomed,
        outstanding_per_player: plan.window,
        duration_secs: secs,
        accepted: s.bets_accepted,
        accepted_per_sec: s.bets_accepted as f64 / secs,
        rejected: s.bets_rejected,
        first_rejection: s.first_rejection.take(),
        unanswered: s.bets_unanswered,
        latency_ms: percentiles(&mut s.bet_us, 0.001),
        server_cpu_cores: cpu_a.zip(cpu_b).map(|(a, b)| b.cores_since(&a)),
        loadgen_cpu_cores: loadgen_cpu,
        loadgen_saturated: loadgen_cpu >= 0.9 * procfs::allowed_cpus() as f64,
        note: "[control] bets_per_sec and messages_per_sec raised to 1e6 in the generated config; every accepted bet is fsynced to the table log (group commit) before it is acknowledged".into(),
    })
}
