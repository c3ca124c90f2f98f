//! The plan of a run, for each target:
//!
//! ```text
//!  start the server (or use --url) ─▶ dealer publishes ─▶ 1.5 s: baseline RSS
//!  ─▶ for each step (one step, or a ramp of them):
//!       join players at --join-rate ─▶ wait for their first keyframes ─▶ settle
//!       ─▶ window of --duration: count, sample latency; a round every --round-every
//!       ─▶ (ramp) stop at the first step that fails
//!  ─▶ (fixed, tablecast, control on) bet phase ─▶ stop everything
//! ```

use super::feeder::Feeder;
use super::janus::{Janus, JanusOptions, default_route_ip};
use super::loadgen::{Cmd, LoadGen, ThreadSnapshot};
use super::node::Tablecast;
use super::report::{
    self, Comparison, ForwardByKind, Limits, Machine, Output, RunReport, StepReport,
};
use super::stats::percentiles;
use super::viewer::ViewerSetup;
use super::{BenchArgs, BenchError, TargetKind, procfs, rounds};
use crate::client::Publisher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Media packets per second one player receives (130 video + 50 audio).
const PACKETS_PER_PLAYER: u32 = 180;

/// The server under test.
enum Sut {
    Tablecast(Box<Tablecast>),
    Janus(Janus),
}

impl Sut {
    fn name(&self) -> &'static str {
        match self {
            Sut::Tablecast(_) => "tablecast",
            Sut::Janus(_) => "janus",
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Sut::Tablecast(n) => n.pid,
            Sut::Janus(j) => Some(j.pid()),
        }
    }

    async fn join(&self, i: usize, control: bool) -> Result<ViewerSetup, BenchError> {
        match self {
            Sut::Tablecast(n) => n.join(i, IpAddr::from([127, 0, 0, 1]), control).await,
            Sut::Janus(j) => j.join().await,
        }
    }
}

/// The synthetic dealer of a target.
enum Source {
    Publisher(Publisher),
    Feeder(Feeder),
}

impl Source {
    fn sent(&self) -> u64 {
        match self {
            Source::Publisher(p) => {
                let s = p.stats();
                s.video_sent + s.audio_sent
            }
            Source::Feeder(f) => f.video_sent.load(Relaxed) + f.audio_sent.load(Relaxed),
        }
    }

    fn keyframe_requests(&self) -> u64 {
        match self {
            Source::Publisher(p) => p.stats().plis_received,
            Source::Feeder(f) => f.plis.load(Relaxed),
        }
    }

    async fn stop(self) {
        match self {
            Source::Publisher(p) => {
                let _ = p.close().await;
            }
            Source::Feeder(f) => f.stop(),
        }
    }
}

/// Runs the benchmark the options describe.
pub async fn run(args: &BenchArgs) -> Result<Output, BenchError> {
    if args.subscribers == 0 || args.join_rate <= 0.0 || args.duration.is_zero() {
        return Err(BenchError::Usage(
            "--subscribers, --join-rate and --duration must be positive".into(),
        ));
    }
    if args.url.is_some() && args.secret.is_none() {
        return Err(BenchError::Usage(
            "--url needs --secret (the node's [auth] secret, or TABLECAST_AUTH_SECRET) to sign tokens".into(),
        ));
    }
    let kinds: &[TargetKind] = match args.target {
        TargetKind::Tablecast => &[TargetKind::Tablecast],
        TargetKind::Janus => &[TargetKind::Janus],
        TargetKind::Both => &[TargetKind::Tablecast, TargetKind::Janus],
    };
    println!("{}", report::header());
    let mut reports = Vec::new();
    for &kind in kinds {
        reports.push(run_target(kind, args).await?);
    }
    let mut reports = reports.into_iter();
    let primary = reports.next().unwrap_or_default();
    let janus = reports.next();
    let comparison = janus.as_ref().map(|j| Comparison::of(&primary, j));
    Ok(Output {
        primary,
        janus,
        comparison,
    })
}

async fn start_sut(kind: TargetKind, args: &BenchArgs) -> Result<Sut, BenchError> {
    match kind {
        TargetKind::Janus => {
            let ip = args.janus_ip.or_else(default_route_ip).ok_or_else(|| {
                BenchError::Usage(
                    "no non-loopback address to run Janus on (it never gathers on loopback); pass --janus-ip".into(),
                )
            })?;
            let janus = Janus::start(&JanusOptions {
                binary: args.janus_bin.clone(),
                lib_dir: args.janus_lib_dir.clone(),
                event_loops: args.janus_event_loops,
                ip,
                cpus: args.node_cpus.clone(),
                keep_dir: args.keep,
            })
            .await?;
            info!(pid = janus.pid(), %ip, "Janus is up");
            Ok(Sut::Janus(janus))
        }
        _ => match (&args.url, &args.secret) {
            (Some(url), Some(secret)) => {
                let mut node = Tablecast::external(url, &args.table, secret, args.server_pid);
                node.players_transport_cc = args.transport_cc;
                Ok(Sut::Tablecast(Box::new(node)))
            }
            _ => {
                let mut node =
                    Tablecast::start(args.node_workers, args.node_cpus.as_deref(), args.keep)
                        .await?;
                node.players_transport_cc = args.transport_cc;
                info!(pid = ?node.pid, url = %node.base_url, "node is up");
                Ok(Sut::Tablecast(Box::new(node)))
            }
        },
    }
}

async fn run_target(kind: TargetKind, args: &BenchArgs) -> Result<RunReport, BenchError> {
    let machine = Machine::probe(args.node_cpus.clone());
    let epoch = Instant::now();
    let sut = Arc::new(start_sut(kind, args).await?);
    let source = match &*sut {
        Sut::Tablecast(node) => Source::Publisher(node.publish(epoch).await?),
        Sut::Janus(janus) => Source::Feeder(Feeder::start(janus, epoch)?),
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let baseline = sut
        .pid()
        .and_then(|p| procfs::memory(Some(p)))
        .map(|m| m.rss);
    let load = Arc::new(
        LoadGen::start(args.threads, epoch)
            .map_err(|e| BenchError::io("start the load threads", e))?,
    );
    let control = matches!(*sut, Sut::Tablecast(_)) && !args.no_control;
    let plan: Vec<usize> = if args.ramp {
        let step = args.ramp_step.max(1);
        let first = args.subscribers.max(1);
        (0..)
            .map(|i| first + i * step)
            .take_while(|n| *n <= args.ramp_max.max(first))
            .collect()
    } else {
        vec![args.subscribers]
    };
    let mut joiner = Joiner::default();
    let mut steps = Vec::new();
    let outcome = async {
        for &n in &plan {
            let every = (n as u64 * u64::from(PACKETS_PER_PLAYER))
                .div_ceil(u64::from(args.latency_samples_per_sec.max(1)))
                .max(1) as u32;
            load.broadcast(|| Cmd::SampleEvery(every));
            let mut join_us = Vec::new();
            joiner
                .join_to(n, &sut, &load, args.join_rate, control)
                .await;
            wait_for_keyframes(n, &load, &joiner, &mut join_us).await;
            tokio::time::sleep(args.settle).await;
            let step = measure(
                n, &sut, &load, &source, args, control, &joiner, join_us, baseline,
            )
            .await;
            println!("{}", report::row(&step));
            let passed = step.passed;
            steps.push(step);
            if args.ramp && !passed {
                break;
            }
        }
        let bets = if !args.ramp && control && !args.bet_duration.is_zero() {
            let bets = match &*sut {
                Sut::Tablecast(node) => rounds::bets(node, &load, args).await,
                Sut::Janus(_) => Err(BenchError::Usage("bets need a tablecast node".into())),
            };
            match bets {
                Ok(b) => Some(b),
                Err(e) => {
                    warn!(error = %e, "the bet phase failed");
                    None
                }
            }
        } else {
            None
        };
        Ok::<_, BenchError>(bets)
    }
    .await;
    load.stop();
    let dealer_keyframe_requests = source.keyframe_requests();
    source.stop().await;
    drop(sut);
    let bets = outcome?;

    let limits = Limits {
        max_loss_ratio: args.max_loss,
        max_p99_forward_latency_ms: args.max_p99.as_secs_f64() * 1000.0,
    };
    let last_good = steps.iter().rev().find(|s| s.passed).cloned();
    let (result, max_subscribers) = if args.ramp {
        let max = last_good.as_ref().map_or(0, |s| s.subscribers);
        (
            last_good
                .or_else(|| steps.first().cloned())
                .unwrap_or_default(),
            Some(max),
        )
    } else {
        (steps.first().cloned().unwrap_or_default(), None)
    };
    Ok(RunReport {
        result,
        mode: if args.ramp { "ramp" } else { "fixed" }.to_owned(),
        max_subscribers,
        server_rss_baseline_bytes: baseline,
        dealer_keyframe_requests,
        bets,
        steps,
        limits,
        machine,
    })
}

/// Opens players at a steady pace and hands them to the load threads.
#[derive(Default)]
struct Joiner {
    next: usize,
    failures: Arc<AtomicUsize>,
}

impl Joiner {
    async fn join_to(
        &mut self,
        n: usize,
        sut: &Arc<Sut>,
        load: &Arc<LoadGen>,
        rate: f64,
        control: bool,
    ) {
        let start = Instant::now();
        let first = self.next;
        // At most this many signalling exchanges in flight when the server slows down.
        let in_flight = Arc::new(Semaphore::new(256));
        let mut tasks = JoinSet::new();
        while self.next < n {
            let at = start + Duration::from_secs_f64((self.next - first) as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let (sut, load, failures, i) =
                (sut.clone(), load.clone(), self.failures.clone(), self.next);
            tasks.spawn(async move {
                match sut.join(i, control).await {
                    Ok(setup) => load.add(setup),
                    Err(e) => {
                        if failures.fetch_add(1, Relaxed) < 5 {
                            warn!(player = i, error = %e, "join failed");
                        }
                    }
                }
                drop(permit);
            });
            self.next += 1;
        }
        while tasks.join_next().await.is_some() {}
    }

    fn failures(&self) -> usize {
        self.failures.load(Relaxed)
    }
}

/// Waits until every player has its first keyframe or has failed (at most 20 s).
async fn wait_for_keyframes(n: usize, load: &LoadGen, joiner: &Joiner, join_us: &mut Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = load.snapshot().await;
        join_us.extend(s.join_us);
        let done = s.with_keyframe + s.never_connected + s.dropped + joiner.failures();
        if done >= n || Instant::now() > deadline {
            if done < n {
                warn!(
                    players = n,
                    with_keyframe = s.with_keyframe,
                    "not every player got a keyframe within 20 s"
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    requested: usize,
    sut: &Arc<Sut>,
    load: &LoadGen,
    source: &Source,
    args: &BenchArgs,
    control: bool,
    joiner: &Joiner,
    mut join_us: Vec<u64>,
    baseline: Option<u64>,
) -> StepReport {
    let pid = sut.pid();
    let a = load.snapshot().await;
    join_us.extend(a.join_us.iter().copied());
    let cpu_a = pid.and_then(|p| procfs::cpu(Some(p)));
    let gen_a = procfs::cpu(None);
    let machine_a = procfs::machine();
    let sent_a = source.sent();
    let t0 = Instant::now();
    load.broadcast(|| Cmd::FanoutFrom(crate::control::server_ms()));
    let stop = Arc::new(AtomicBool::new(false));
    let cycler = control.then(|| {
        let (sut, stop, every) = (sut.clone(), stop.clone(), args.round_every);
        tokio::spawn(async move {
            match &*sut {
                Sut::Tablecast(node) => rounds::cycle(node, every, &stop).await,
                Sut::Janus(_) => 0,
            }
        })
    });
    tokio::time::sleep(args.duration).await;
    let b = load.snapshot().await;
    let cpu_b = pid.and_then(|p| procfs::cpu(Some(p)));
    let gen_b = procfs::cpu(None);
    let machine_b = procfs::machine();
    let sent_b = source.sent();
    let elapsed = t0.elapsed().as_secs_f64();
    let memory = pid.and_then(|p| procfs::memory(Some(p)));
    stop.store(true, Relaxed);
    if let Some(c) = cycler {
        let _ = c.await;
    }
    step_report(StepInput {
        target: sut.name(),
        requested,
        a: &a,
        b,
        join_us,
        elapsed,
        server_cpu: cpu_a.zip(cpu_b).map(|(a, b)| b.cores_since(&a)),
        loadgen_cpu: gen_a.zip(gen_b).map_or(0.0, |(a, b)| b.cores_since(&a)),
        machine: machine_a
            .zip(machine_b)
            .map_or((0.0, 0.0), |(a, b)| b.since(&a)),
        rss: memory.map(|m| m.rss),
        peak_rss: memory.map(|m| m.peak_rss),
        baseline,
        sent: sent_b.saturating_sub(sent_a),
        join_failures: joiner.failures(),
        control,
        args,
    })
}

struct StepInput<'a> {
    target: &'static str,
    requested: usize,
    a: &'a ThreadSnapshot,
    b: ThreadSnapshot,
    join_us: Vec<u64>,
    elapsed: f64,
    server_cpu: Option<f64>,
    loadgen_cpu: f64,
    /// Busy and stolen cores of the whole machine.
    machine: (f64, f64),
    rss: Option<u64>,
    peak_rss: Option<u64>,
    baseline: Option<u64>,
    sent: u64,
    join_failures: usize,
    control: bool,
    args: &'a BenchArgs,
}

fn step_report(i: StepInput<'_>) -> StepReport {
    let StepInput {
        a,
        mut b,
        mut join_us,
        args,
        ..
    } = i;
    join_us.append(&mut b.join_us);
    let window = b.media().since(a.media());
    let mut all: Vec<u64> = b.forward_us.iter().flatten().copied().collect();
    let forward = percentiles(&mut all, 0.001);
    let [audio, delta, key] = &mut b.forward_us;
    let by_kind = ForwardByKind {
        audio: percentiles(audio, 0.001),
        video_delta: percentiles(delta, 0.001),
        video_keyframe: percentiles(key, 0.001),
    };
    let subscribers = b.connected;
    let failures = i.join_failures + b.never_connected;
    let loss = window.loss_ratio();
    let max_p99_ms = args.max_p99.as_secs_f64() * 1000.0;
    let passed = subscribers > 0
        && forward.samples > 0
        && loss < args.max_loss
        && forward.p99 < max_p99_ms
        && (failures + b.dropped) as f64 <= args.max_loss * i.requested as f64;
    StepReport {
        target: i.target.to_owned(),
        subscribers,
        subscribers_requested: i.requested,
        join_failures: failures,
        dropped: b.dropped,
        duration_secs: i.elapsed,
        packets_delivered: window.received,
        packets_expected: window.expected,
        loss_ratio: loss,
        publisher_packets_per_sec: i.sent as f64 / i.elapsed.max(1e-9),
        forward_latency_ms: forward,
        forward_latency_by_packet_ms: by_kind,
        join_to_keyframe_ms: percentiles(&mut join_us, 0.001),
        control_fanout_ms: i.control.then(|| percentiles(&mut b.fanout_us, 0.001)),
        control_events_delivered: i.control.then_some(b.events),
        server_cpu_cores: i.server_cpu,
        server_rss_bytes: i.rss,
        server_peak_rss_bytes: i.peak_rss,
        server_rss_per_subscriber_bytes: i
            .rss
            .zip(i.baseline)
            .filter(|_| subscribers > 0)
            .map(|(rss, base)| rss.saturating_sub(base) / subscribers as u64),
        loadgen_cpu_cores: i.loadgen_cpu,
        other_cpu_cores: (i.machine.0 - i.server_cpu.unwrap_or(0.0) - i.loadgen_cpu).max(0.0),
        steal_cpu_cores: i.machine.1,
        loadgen_saturated: i.loadgen_cpu >= 0.9 * procfs::allowed_cpus() as f64,
        passed,
    }
}
