//! A player's downlink: how much it carries, estimated from what the player reports back.
//!
//! Players that negotiated transport-wide congestion control (`transport-cc`, as browsers do)
//! report the arrival time of every packet the node sent them. `rtc`'s congestion-control
//! interceptor joins those reports with the send times and hands them to a
//! [`BandwidthEstimator`]; this module's [`LinkEstimator`] is that estimator, in the spirit of
//! Google Congestion Control: a delay half and a loss half, the lower of the two winning.
//!
//! - **Delivered rate:** bytes that arrived over the last [`RATE_WINDOW`] of the player's own
//!   arrival clock.
//! - **Queueing delay:** each packet's one-way delay less the smallest one seen recently. A link
//!   whose queue grows (a rate limiter, a mobile cell) shows it before it loses anything.
//! - **Loss:** the share of reported packets that never arrived, over at least [`LOSS_WINDOW`]
//!   and [`LOSS_MIN_PACKETS`]: a few packets lost together are a burst the player repairs, not a
//!   link that is full.
//!
//! Congestion (a standing queue over [`QUEUE_OVERUSE`] while the link delivers less than is
//! sent, or loss over [`LOSS_HIGH`]) that lasts [`CONGESTION_HOLD`] sets the estimate to
//! [`BACKOFF`] of what was delivered. A link that has shown congestion is held to
//! what it has been seen to carry: the estimate may climb while the link is quiet, but only to
//! [`GROWTH_CAP`] times the delivered rate. A link that has never shown congestion, or not for
//! [`Memory`]'s time, has no limit: the node does not guess a ceiling it has no evidence of, and
//! a player on a good link gets the top layer from its first frame. Each time a limit is lifted
//! and congestion comes back within a short while, the memory doubles, so a link that really is
//! narrow is not tried again and again.
//!
//! **Probing.** A player held below the layer it wants is not moved up on trust: that is a
//! switch to a picture the link may not carry, and a freeze when it does not. Instead the worker
//! sends, on top of the player's video, duplicates of its recent packets as RTX (which the player
//! discards) until the player receives the rate the next layer needs ([`LinkStats::start_probe`]).
//! If the link carries it (the queue does not grow, nothing more is lost) the limit rises to what
//! was carried and the player goes up; if the queue grows, the probe stops at once, the limit
//! stays, and the picture never changed. A player that can be probed has its limit raised only so;
//! one that cannot (no RTX) has it lifted after the memory above.
//!
//! Players that offer only REMB (the receiver's own estimate) get that instead.
//!
//! Sans-IO: every instant is a parameter. The worker reads the result through [`LinkStats`],
//! shared with the interceptor inside the player's peer connection.

use rtc::interceptor::{BandwidthEstimator, PacketReport};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

/// The window the delivered rate is taken over.
pub const RATE_WINDOW: Duration = Duration::from_millis(750);
/// A standing queue this long, while the link delivers less than [`BEHIND`] of what is sent,
/// means the link is full.
pub const QUEUE_OVERUSE: Duration = Duration::from_millis(80);
/// Congestion must last this long to lower the estimate: a moment's queue or a burst of loss is
/// the player's to repair, not a reason to take its picture away.
pub const CONGESTION_HOLD: Duration = Duration::from_millis(500);
/// Loss is counted over at least this long...
pub const LOSS_WINDOW: Duration = Duration::from_secs(1);
/// ...and at least this many packets.
pub const LOSS_MIN_PACKETS: usize = 200;
/// A probe fails once the queue has grown this much since it started.
pub const PROBE_QUEUE_FAIL_MS: f64 = 30.0;
/// A probe succeeds once the player has received its rate this long, with the queue grown no
/// more than [`PROBE_QUEUE_OK_MS`].
pub const PROBE_PROVE: Duration = Duration::from_millis(700);
/// See [`PROBE_PROVE`].
pub const PROBE_QUEUE_OK_MS: f64 = 15.0;
/// A probe fails when more than this share of its packets is lost, over this much more than
/// was lost before it.
pub const PROBE_LOSS_FAIL: f64 = 0.05;
/// See [`QUEUE_OVERUSE`].
pub const BEHIND: f64 = 0.9;
/// Smoothed loss above this means the link is full.
pub const LOSS_HIGH: f64 = 0.10;
/// Smoothed loss above this holds the estimate where it is.
pub const LOSS_LOW: f64 = 0.02;
/// On congestion, the estimate becomes this share of what was delivered.
pub const BACKOFF: f64 = 0.85;
/// A congested link's estimate climbs to at most this many times what it delivers.
pub const GROWTH_CAP: f64 = 1.5;
/// How fast a limited estimate climbs while the link is quiet, per second.
pub const GROWTH_PER_SEC: f64 = 1.08;
/// The shortest time a limit is kept after the last congestion.
pub const MEMORY_MIN: Duration = Duration::from_secs(8);
/// The longest.
pub const MEMORY_MAX: Duration = Duration::from_secs(64);
/// Congestion this soon after a limit was lifted doubles the memory.
const RELAPSE: Duration = Duration::from_secs(10);
/// How long the smallest one-way delay is remembered (the link's base delay).
const BASE_WINDOW: Duration = Duration::from_secs(10);
/// Below this nothing is worth estimating.
pub const MIN_BITRATE: f64 = 50_000.0;

/// What the worker reads about a player's link. Written by the estimator inside the player's
/// peer connection, read by the worker that owns both: relaxed atomics, and a lock only around
/// the repairs reported lost, taken when there are some.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// The estimate, bits per second; 0 while the link has no limit.
    limit_bps: AtomicU64,
    /// Bits per second the player has been receiving.
    delivered_bps: AtomicU64,
    /// Smoothed loss, parts per million.
    loss_ppm: AtomicU32,
    /// Queueing delay, microseconds.
    queue_us: AtomicU32,
    /// Round trip time, microseconds (0: not known).
    rtt_us: AtomicU32,
    /// Transport-cc reports have arrived.
    twcc: AtomicBool,
    /// The player's REMB, bits per second (0: none).
    remb_bps: AtomicU64,
    /// Times congestion set a limit.
    backoffs: AtomicU64,
    /// The worker can probe this player (it has video with RTX): its limit is raised by probes,
    /// not lifted after a while.
    can_probe: AtomicBool,
    /// The probe in progress: its number and the rate it sends at, bits per second (0: none).
    pub(crate) probe_seq: AtomicU32,
    probe_bps: AtomicU64,
    /// The estimator's verdict: the probe's number << 2 | 1 (carried) or 2 (not).
    probe_verdict: AtomicU64,
    probes_ok: AtomicU64,
    probes_failed: AtomicU64,
    /// The table's counters, once the session is set up.
    pub metrics: std::sync::OnceLock<Arc<crate::metrics::TableMetrics>>,
    /// RTX sequence numbers the player's transport-cc feedback reported lost, for the worker
    /// to send again (`rtx::RepairLog`); `lost_rtx_waiting` says the list is not empty.
    lost_rtx: std::sync::Mutex<Vec<u16>>,
    lost_rtx_waiting: AtomicBool,
}

/// A snapshot of [`LinkStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Link {
    /// What the player's link is estimated to carry, bits per second; None while no limit is
    /// known (the link has not shown congestion, or has no feedback at all).
    pub estimate_bps: Option<u64>,
    pub delivered_bps: u64,
    /// Share of packets lost, 0..1.
    pub loss: f64,
    pub queue_ms: f64,
    pub rtt_ms: Option<f64>,
    /// Where the estimate comes from: "transport-cc", "remb" or "none".
    pub feedback: &'static str,
    pub backoffs: u64,
    /// The rate a probe in progress sends at, bits per second.
    pub probing_bps: Option<u64>,
    /// Probes the link carried, and probes it did not.
    pub probes_ok: u64,
    pub probes_failed: u64,
}

/// How a probe ended (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// The link carried the probe's rate; the limit is raised to it.
    Carried,
    /// The queue grew or packets were lost: the limit stays.
    NotCarried,
}

impl LinkStats {
    /// Feedback reported these RTX packets lost.
    pub fn rtx_lost(&self, seqs: impl IntoIterator<Item = u16>) {
        let mut lost = self.lost_rtx.lock().unwrap_or_else(|p| p.into_inner());
        lost.extend(seqs);
        // Bounded: a worker that has not drained it for long has nothing left to repair.
        if lost.len() > 1024 {
            let excess = lost.len() - 1024;
            lost.drain(..excess);
        }
        if !lost.is_empty() {
            self.lost_rtx_waiting.store(true, Relaxed);
        }
    }

    /// Moves the RTX packets reported lost since the last call into `into`: one atomic load
    /// when there are none.
    pub fn take_lost_rtx(&self, into: &mut Vec<u16>) {
        if !self.lost_rtx_waiting.swap(false, Relaxed) {
            return;
        }
        let mut lost = self.lost_rtx.lock().unwrap_or_else(|p| p.into_inner());
        into.append(&mut lost);
    }

    pub fn snapshot(&self) -> Link {
        let twcc = self.twcc.load(Relaxed);
        let remb = self.remb_bps.load(Relaxed);
        let limit = self.limit_bps.load(Relaxed);
        let (estimate_bps, feedback) = if twcc {
            ((limit > 0).then_some(limit), "transport-cc")
        } else if remb > 0 {
            (Some(remb), "remb")
        } else {
            (None, "none")
        };
        let rtt = self.rtt_us.load(Relaxed);
        Link {
            estimate_bps,
            delivered_bps: self.delivered_bps.load(Relaxed),
            loss: f64::from(self.loss_ppm.load(Relaxed)) / 1e6,
            queue_ms: f64::from(self.queue_us.load(Relaxed)) / 1e3,
            rtt_ms: (rtt > 0).then(|| f64::from(rtt) / 1e3),
            feedback,
            backoffs: self.backoffs.load(Relaxed),
            probing_bps: Some(self.probe_bps.load(Relaxed)).filter(|&b| b > 0),
            probes_ok: self.probes_ok.load(Relaxed),
            probes_failed: self.probes_failed.load(Relaxed),
        }
    }

    /// A transport-cc player limited to `limit_bps`, receiving `delivered_bps`, after `backoffs`
    /// backoffs (tests of what reads these).
    #[cfg(test)]
    pub fn set_for_test(&self, limit_bps: u64, delivered_bps: u64, backoffs: u64) {
        self.twcc.store(true, Relaxed);
        self.limit_bps.store(limit_bps, Relaxed);
        self.delivered_bps.store(delivered_bps, Relaxed);
        self.backoffs.store(backoffs, Relaxed);
    }

    /// Times congestion has lowered the estimate.
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(Relaxed)
    }

    /// The worker can probe this player's link (see the module doc).
    pub fn set_can_probe(&self, yes: bool) {
        self.can_probe.store(yes, Relaxed);
    }

    /// Whether a limit set by transport-cc holds this player (probing can raise it).
    pub fn limited_by_transport_cc(&self) -> bool {
        self.twcc.load(Relaxed) && self.limit_bps.load(Relaxed) > 0
    }

    /// The worker starts sending at `bps` in all to find out whether the link carries it;
    /// returns the probe's number, for [`LinkStats::probe_verdict`].
    pub fn start_probe(&self, bps: u64) -> u32 {
        let seq = self.probe_seq.fetch_add(1, Relaxed).wrapping_add(1);
        self.probe_bps.store(bps.max(1), Relaxed);
        seq
    }

    /// The estimator's verdict on probe `seq`, once it has one.
    pub fn probe_verdict(&self, seq: u32) -> Option<ProbeVerdict> {
        let v = self.probe_verdict.load(Relaxed);
        if (v >> 2) as u32 != seq {
            return None;
        }
        match v & 3 {
            1 => Some(ProbeVerdict::Carried),
            2 => Some(ProbeVerdict::NotCarried),
            _ => None,
        }
    }

    /// The worker stopped sending the probe (verdict or not).
    pub fn end_probe(&self) {
        self.probe_bps.store(0, Relaxed);
    }

    fn probe(&self) -> Option<(u32, u64)> {
        let bps = self.probe_bps.load(Relaxed);
        (bps > 0).then(|| (self.probe_seq.load(Relaxed), bps))
    }

    pub(crate) fn give_verdict(&self, seq: u32, verdict: ProbeVerdict) {
        let (bits, counter) = match verdict {
            ProbeVerdict::Carried => (1, &self.probes_ok),
            ProbeVerdict::NotCarried => (2, &self.probes_failed),
        };
        counter.fetch_add(1, Relaxed);
        self.probe_verdict
            .store(u64::from(seq) << 2 | bits, Relaxed);
    }

    /// The estimate the layer choice uses, bits per second (None: no limit).
    pub fn estimate(&self) -> Option<u64> {
        if self.twcc.load(Relaxed) {
            let limit = self.limit_bps.load(Relaxed);
            return (limit > 0).then_some(limit);
        }
        let remb = self.remb_bps.load(Relaxed);
        (remb > 0).then_some(remb)
    }

    /// The player's REMB (a receiver estimate) arrived.
    pub fn on_remb(&self, bps: f64) {
        self.remb_bps.store(bps.max(0.0) as u64, Relaxed);
    }

    /// A round trip time measured from the player's receiver reports.
    pub fn on_rtt(&self, rtt: Duration) {
        self.rtt_us
            .store(rtt.as_micros().min(u32::MAX as u128) as u32, Relaxed);
    }
}

/// How long a limit is kept after the last congestion: [`MEMORY_MIN`], doubled by each relapse
/// up to [`MEMORY_MAX`], back to the minimum after a long quiet stretch.
#[derive(Debug, Clone)]
struct Memory {
    length: Duration,
    /// When the last limit was lifted.
    lifted_at: Option<Instant>,
}

/// The estimator of one player's link (see the module doc).
pub struct LinkEstimator {
    stats: Arc<LinkStats>,
    /// Arrived packets of the rate window: (arrival on the player's clock, bytes).
    arrivals: VecDeque<(Duration, usize)>,
    window_bytes: usize,
    /// Reported packets of the rate window by departure: (departure, bytes), arrived or not.
    departures: VecDeque<(Instant, usize)>,
    sent_bytes: usize,
    /// Smallest one-way delay seen (arrival − departure, offset by the unknown clock difference)
    /// in the current and the previous half of [`BASE_WINDOW`].
    base: [Option<f64>; 2],
    base_started: Option<Instant>,
    /// Where departure times are measured from.
    epoch: Option<Instant>,
    queue_ms: f64,
    /// Reported packets of the loss window, by departure: (departure, lost).
    losses: VecDeque<(Instant, bool)>,
    lost_in_window: usize,
    loss: f64,
    /// The current limit, bits per second (None: no limit).
    limit: Option<f64>,
    /// Congestion seen continuously since then, not yet for [`CONGESTION_HOLD`].
    congested_since: Option<Instant>,
    last_congestion: Option<Instant>,
    /// The probe being judged.
    probe: Option<ProbeTrack>,
    last_update: Option<Instant>,
    memory: Memory,
    backoffs: u64,
}

impl LinkEstimator {
    pub fn new(stats: Arc<LinkStats>) -> Self {
        Self {
            stats,
            arrivals: VecDeque::new(),
            window_bytes: 0,
            departures: VecDeque::new(),
            sent_bytes: 0,
            base: [None, None],
            base_started: None,
            epoch: None,
            queue_ms: 0.0,
            losses: VecDeque::new(),
            lost_in_window: 0,
            loss: 0.0,
            limit: None,
            congested_since: None,
            last_congestion: None,
            probe: None,
            last_update: None,
            memory: Memory {
                length: MEMORY_MIN,
                lifted_at: None,
            },
            backoffs: 0,
        }
    }

    /// Bits per second delivered over the rate window (None until it spans enough time).
    fn delivered(&self) -> Option<f64> {
        let (first, _) = self.arrivals.front()?;
        let (last, _) = self.arrivals.back()?;
        rate(last.saturating_sub(*first), self.window_bytes)
    }

    /// Bits per second sent over the rate window, of the packets reported on.
    fn sent(&self) -> Option<f64> {
        let (first, _) = self.departures.front()?;
        let (last, _) = self.departures.back()?;
        rate(last.saturating_duration_since(*first), self.sent_bytes)
    }

    fn base_delay(&self) -> Option<f64> {
        match self.base {
            [Some(a), Some(b)] => Some(a.min(b)),
            [a, b] => a.or(b),
        }
    }

    fn publish(&self, delivered: Option<f64>) {
        let s = &self.stats;
        s.twcc.store(true, Relaxed);
        s.limit_bps
            .store(self.limit.map_or(0, |l| l.max(1.0) as u64), Relaxed);
        if let Some(d) = delivered {
            s.delivered_bps.store(d as u64, Relaxed);
        }
        s.loss_ppm.store((self.loss * 1e6) as u32, Relaxed);
        s.queue_us.store((self.queue_ms * 1e3) as u32, Relaxed);
        s.backoffs.store(self.backoffs, Relaxed);
    }
}

/// What the estimator has seen of one probe: the packets that left after it started.
#[derive(Debug, Clone)]
struct ProbeTrack {
    seq: u32,
    bps: f64,
    since: Instant,
    /// Queueing delay and loss when it started.
    queue_before: f64,
    /// The smallest queueing delay among its packets in the latest report: a queue even the
    /// least delayed of them saw is standing, not one late packet, so a probe the link does not
    /// carry is stopped a few reports sooner than the smoothed delay would show it.
    queue_now: f64,
    loss_before: f64,
    sent_bytes: usize,
    first_departure: Option<Instant>,
    last_departure: Option<Instant>,
    arrived_bytes: usize,
    first_arrival: Option<Duration>,
    last_arrival: Option<Duration>,
    packets: usize,
    lost: usize,
    done: bool,
}

impl ProbeTrack {
    fn on_report(&mut self, r: &PacketReport) {
        if r.departure < self.since {
            return;
        }
        self.packets += 1;
        self.sent_bytes += r.size;
        self.first_departure.get_or_insert(r.departure);
        self.last_departure = Some(r.departure);
        match r.arrival.filter(|_| r.arrived) {
            Some(a) => {
                self.arrived_bytes += r.size;
                self.first_arrival = Some(self.first_arrival.map_or(a, |f| f.min(a)));
                self.last_arrival = Some(self.last_arrival.map_or(a, |l| l.max(a)));
            }
            None => self.lost += 1,
        }
    }

    /// The verdict so far, and the rate the link was seen to carry.
    fn judge(&self, queue_ms: f64) -> Option<(ProbeVerdict, f64)> {
        let grown = queue_ms.max(self.queue_now) - self.queue_before;
        let loss = if self.packets >= 20 {
            self.lost as f64 / self.packets as f64
        } else {
            0.0
        };
        if grown > PROBE_QUEUE_FAIL_MS || loss > self.loss_before + PROBE_LOSS_FAIL {
            return Some((ProbeVerdict::NotCarried, 0.0));
        }
        let span = self
            .last_departure?
            .saturating_duration_since(self.first_departure?);
        if span < PROBE_PROVE {
            return None;
        }
        let sent = self.sent_bytes as f64 * 8.0 / span.as_secs_f64();
        let arrival_span = self.last_arrival?.saturating_sub(self.first_arrival?);
        let arrived = self.arrived_bytes as f64 * 8.0 / arrival_span.as_secs_f64().max(1e-3);
        // Sent what it meant to, and the player took it as fast as it left.
        if sent >= 0.8 * self.bps && arrived >= 0.95 * sent && grown <= PROBE_QUEUE_OK_MS {
            return Some((ProbeVerdict::Carried, arrived.min(sent)));
        }
        if span >= PROBE_PROVE * 2 {
            // Not proven in twice the time: the link does not clearly carry it.
            return Some((ProbeVerdict::NotCarried, 0.0));
        }
        None
    }
}

/// Bits per second of `bytes` over `span`, once the span is a third of the rate window.
fn rate(span: Duration, bytes: usize) -> Option<f64> {
    (span >= RATE_WINDOW / 3).then(|| bytes as f64 * 8.0 / span.as_secs_f64())
}

impl BandwidthEstimator for LinkEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        let epoch = *self.epoch.get_or_insert(reports[0].departure);
        // The base delay: the smallest one-way delay over the last 5–10 s.
        if self
            .base_started
            .is_none_or(|t| now.saturating_duration_since(t) >= BASE_WINDOW / 2)
        {
            self.base = [None, self.base[0]];
            self.base_started = Some(now);
        }
        // A probe the worker started: judged on the packets that leave from now on.
        match (self.stats.probe(), &self.probe) {
            (Some((seq, _)), Some(p)) if p.seq == seq => {}
            (Some((seq, bps)), _) => {
                self.probe = Some(ProbeTrack {
                    seq,
                    bps: bps as f64,
                    since: now,
                    queue_before: self.queue_ms,
                    queue_now: 0.0,
                    loss_before: self.loss,
                    sent_bytes: 0,
                    first_departure: None,
                    last_departure: None,
                    arrived_bytes: 0,
                    first_arrival: None,
                    last_arrival: None,
                    packets: 0,
                    lost: 0,
                    done: false,
                })
            }
            (None, _) => self.probe = None,
        }
        let mut latest_queue = None;
        let mut probe_min_delay: Option<f64> = None;
        for r in reports {
            self.departures.push_back((r.departure, r.size));
            self.sent_bytes += r.size;
            if let Some(p) = &mut self.probe {
                p.on_report(r);
            }
            let arrived = r.arrived && r.arrival.is_some();
            self.losses.push_back((r.departure, !arrived));
            self.lost_in_window += usize::from(!arrived);
            let Some(arrival) = r.arrival.filter(|_| r.arrived) else {
                continue;
            };
            self.arrivals.push_back((arrival, r.size));
            self.window_bytes += r.size;
            let departure = r.departure.saturating_duration_since(epoch).as_secs_f64() * 1e3;
            let delay = arrival.as_secs_f64() * 1e3 - departure;
            self.base[0] = Some(self.base[0].map_or(delay, |b| b.min(delay)));
            latest_queue = Some(delay);
            if self.probe.as_ref().is_some_and(|p| r.departure >= p.since) {
                probe_min_delay = Some(probe_min_delay.map_or(delay, |m| m.min(delay)));
            }
        }
        if let Some((newest, _)) = self.arrivals.back().copied() {
            while let Some(&(t, bytes)) = self.arrivals.front() {
                if newest.saturating_sub(t) <= RATE_WINDOW {
                    break;
                }
                self.arrivals.pop_front();
                self.window_bytes -= bytes;
            }
        }
        if let Some(&(newest, _)) = self.departures.back() {
            while let Some(&(t, bytes)) = self.departures.front() {
                if newest.saturating_duration_since(t) <= RATE_WINDOW {
                    break;
                }
                self.departures.pop_front();
                self.sent_bytes -= bytes;
            }
        }
        if let (Some(delay), Some(base)) = (latest_queue, self.base_delay()) {
            // Smoothed over a few reports: one late packet is jitter, not a queue.
            self.queue_ms = 0.7 * self.queue_ms + 0.3 * (delay - base).max(0.0);
            if let (Some(p), Some(d)) = (&mut self.probe, probe_min_delay) {
                p.queue_now = (d - base).max(0.0);
            }
        }
        // Loss over the last LOSS_WINDOW, and at least LOSS_MIN_PACKETS.
        if let Some(&(newest, _)) = self.losses.back() {
            while self.losses.len() > LOSS_MIN_PACKETS {
                let Some(&(t, lost)) = self.losses.front() else {
                    break;
                };
                if newest.saturating_duration_since(t) <= LOSS_WINDOW {
                    break;
                }
                self.losses.pop_front();
                self.lost_in_window -= usize::from(lost);
            }
        }
        self.loss = if self.losses.is_empty() {
            0.0
        } else {
            self.lost_in_window as f64 / self.losses.len() as f64
        };

        let delivered = self.delivered();
        // A standing queue is congestion only while the link delivers less than is sent: a
        // busy receiver that timestamps late still takes everything.
        let falling_behind = match (delivered, self.sent()) {
            (Some(d), Some(s)) => d < s * BEHIND,
            _ => false,
        };
        let congested_now = (self.queue_ms > QUEUE_OVERUSE.as_secs_f64() * 1e3 && falling_behind)
            || (self.loss > LOSS_HIGH && self.losses.len() >= LOSS_MIN_PACKETS / 4);
        // Only congestion that lasts counts.
        let congested = match (congested_now, self.congested_since) {
            (false, _) => {
                self.congested_since = None;
                false
            }
            (true, None) => {
                self.congested_since = Some(now);
                false
            }
            (true, Some(since)) => now.saturating_duration_since(since) >= CONGESTION_HOLD,
        };
        if let Some(p) = &mut self.probe
            && !p.done
            && let Some((verdict, carried)) = p.judge(self.queue_ms)
        {
            p.done = true;
            if verdict == ProbeVerdict::Carried {
                self.limit = self.limit.map(|l| l.max(carried));
            }
            tracing::debug!(
                ?verdict,
                probe_kbps = p.bps / 1e3,
                carried_kbps = carried / 1e3,
                queue_ms = self.queue_ms,
                "player link probed"
            );
            self.stats.give_verdict(p.seq, verdict);
        }
        let dt = self.last_update.map_or(0.0, |t| {
            now.saturating_duration_since(t).as_secs_f64().min(1.0)
        });
        self.last_update = Some(now);
        if congested {
            if let Some(delivered) = delivered {
                let backed = (delivered * BACKOFF).max(MIN_BITRATE);
                if self.limit.is_none_or(|l| backed < l) {
                    // A relapse soon after a limit was lifted: remember longer.
                    if self.limit.is_none()
                        && self
                            .memory
                            .lifted_at
                            .is_some_and(|t| now.saturating_duration_since(t) < RELAPSE)
                    {
                        self.memory.length = (self.memory.length * 2).min(MEMORY_MAX);
                    }
                    self.backoffs += 1;
                    if let Some(m) = self.stats.metrics.get() {
                        m.link_backoffs.fetch_add(1, Relaxed);
                    }
                    tracing::debug!(
                        loss = self.loss,
                        queue_ms = self.queue_ms,
                        delivered_kbps = delivered / 1e3,
                        sent_kbps = self.sent().map(|s| s / 1e3),
                        limit_kbps = backed / 1e3,
                        "player link congested"
                    );
                    self.limit = Some(backed);
                }
                self.last_congestion = Some(now);
            }
            // This congestion has been acted on. Lowering the estimate again takes congestion
            // seen afresh, after the lower rate had its chance: the losses counted so far (up to
            // seconds of them on a slow layer) are not counted twice, or a player moved to its
            // lowest layer would be pushed lower and lower by what happened before the move.
            self.losses.clear();
            self.lost_in_window = 0;
            self.loss = 0.0;
            self.congested_since = None;
        } else if let Some(limit) = self.limit {
            let quiet = self
                .last_congestion
                .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            if quiet >= self.memory.length && !self.stats.can_probe.load(Relaxed) {
                // No congestion for long enough: the limit no longer says anything.
                self.limit = None;
                self.memory.lifted_at = Some(now);
            } else if self.loss <= LOSS_LOW && !self.stats.can_probe.load(Relaxed) {
                // A player that can be probed goes up only on a carried probe: growing with what
                // a probe delivered would creep past the next layer's rate untested.
                let cap = delivered.map_or(limit, |d| (d * GROWTH_CAP).max(limit));
                self.limit = Some((limit * GROWTH_PER_SEC.powf(dt)).min(cap));
            }
        } else if self
            .memory
            .lifted_at
            .is_some_and(|t| now.saturating_duration_since(t) > MEMORY_MAX)
        {
            self.memory.length = MEMORY_MIN;
        }
        self.publish(delivered);
    }

    fn target_bitrate(&self) -> f64 {
        self.limit.unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    /// A simulated link: packets of `size` bytes sent at `send_bps`, through a bottleneck of
    /// `capacity_bps` with a queue of `queue_bytes` (a token bucket filter), plus random loss.
    struct Link {
        t0: Instant,
        now: Duration,
        id: u64,
        /// When the bottleneck is next free, relative to t0.
        free_at: Duration,
        capacity_bps: f64,
        queue_bytes: usize,
        loss: f64,
        rng: u64,
        /// The longest a packet has queued, ms.
        peak_queue_ms: f64,
    }

    impl Link {
        fn new(capacity_bps: f64) -> Self {
            Self {
                t0: Instant::now(),
                now: Duration::ZERO,
                id: 0,
                free_at: Duration::ZERO,
                capacity_bps,
                queue_bytes: 30_000,
                loss: 0.0,
                rng: 0x9e37_79b9_7f4a_7c15,
                peak_queue_ms: 0.0,
            }
        }

        fn random(&mut self) -> f64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            (self.rng >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Sends at `send_bps` for `ms`, reporting every 50 ms; returns the estimates seen
        /// after each report.
        fn run(&mut self, est: &mut LinkEstimator, send_bps: f64, ms: u64) -> Vec<Option<u64>> {
            let size = 1200usize;
            let gap = Duration::from_secs_f64(size as f64 * 8.0 / send_bps);
            let end = self.now + Duration::from_millis(ms);
            let mut pending = Vec::new();
            let mut next_report = self.now + Duration::from_millis(50);
            let mut seen = Vec::new();
            while self.now < end {
                let departure = self.now;
                let service = Duration::from_secs_f64(size as f64 * 8.0 / self.capacity_bps);
                let start = self.free_at.max(departure);
                let backlog = (start - departure).as_secs_f64() * self.capacity_bps / 8.0;
                let dropped = backlog as usize > self.queue_bytes || self.random() < self.loss;
                if !dropped {
                    let queued = (start - departure).as_secs_f64() * 1e3;
                    self.peak_queue_ms = self.peak_queue_ms.max(queued);
                }
                let arrival = if dropped {
                    None
                } else {
                    self.free_at = start + service;
                    // 10 ms of propagation, and an arbitrary clock offset.
                    Some(self.free_at + Duration::from_millis(10) + Duration::from_secs(100))
                };
                pending.push(PacketReport {
                    ssrc: 1,
                    id: self.id,
                    rtp_sequence_number: self.id as u16,
                    is_twcc: true,
                    twcc_sequence_number: self.id as u16,
                    size,
                    arrived: arrival.is_some(),
                    departure: self.t0 + departure,
                    arrival,
                    ecn: Ecn::NotEct,
                });
                self.id += 1;
                self.now += gap;
                if self.now >= next_report {
                    est.on_reports(self.t0 + self.now, &pending);
                    pending.clear();
                    seen.push(est.stats.estimate());
                    next_report += Duration::from_millis(50);
                }
            }
            seen
        }
    }

    impl Link {
        /// Probes at `bps` (sending at that rate) until the estimator's verdict, for at most
        /// `max_ms`; returns the verdict and when it came, in ms.
        fn probe(
            &mut self,
            est: &mut LinkEstimator,
            bps: u64,
            max_ms: u64,
        ) -> Option<(ProbeVerdict, u64)> {
            let seq = est.stats.start_probe(bps);
            let mut verdict = None;
            for step in 0..max_ms / 50 {
                self.run(est, bps as f64, 50);
                if let Some(v) = est.stats.probe_verdict(seq) {
                    verdict = Some((v, step * 50));
                    break;
                }
            }
            est.stats.end_probe();
            verdict
        }
    }

    fn estimator() -> LinkEstimator {
        LinkEstimator::new(Arc::new(LinkStats::default()))
    }

    #[test]
    fn a_link_with_room_has_no_limit() {
        let mut est = estimator();
        let mut link = Link::new(10_000_000.0);
        let seen = link.run(&mut est, 2_500_000.0, 5_000);
        assert!(seen.iter().all(Option::is_none), "{seen:?}");
        let s = est.stats.snapshot();
        assert_eq!(s.feedback, "transport-cc");
        assert!(
            (2_200_000..2_800_000).contains(&s.delivered_bps),
            "delivered {}",
            s.delivered_bps
        );
        assert!(s.loss < 0.001 && s.queue_ms < 5.0, "{s:?}");
    }

    #[test]
    fn a_step_down_in_capacity_is_found_within_two_seconds_and_held() {
        let mut est = estimator();
        let mut link = Link::new(10_000_000.0);
        link.run(&mut est, 2_500_000.0, 3_000);
        // The link narrows to 600 kbit/s while the node still sends 2.5 Mbit/s.
        link.capacity_bps = 600_000.0;
        let seen = link.run(&mut est, 2_500_000.0, 2_000);
        let at = seen
            .iter()
            .position(Option::is_some)
            .expect("a limit is found");
        assert!(at * 50 <= 1_000, "limit found after {} ms", at * 50);
        let limit = seen.last().copied().flatten().unwrap();
        assert!(
            (300_000..=600_000).contains(&limit),
            "limit {limit} for a 600 kbit/s link"
        );
        // Sending what fits (a 150 kbit/s layer) for 6 s keeps a limit below the next layer
        // (about 600 kbit/s with headroom): the link is not tried again at once.
        // Nor is it pushed lower by the losses that came before the move: the player keeps
        // an estimate near what the link carries, not one that starves its lowest layer.
        let seen = link.run(&mut est, 150_000.0, 6_000);
        assert!(
            seen.iter()
                .all(|e| e.is_some_and(|l| (300_000..700_000).contains(&l))),
            "held: {:?}",
            seen.iter().rev().take(5).collect::<Vec<_>>()
        );
    }

    #[test]
    fn loss_bursts_limit_and_quiet_lifts_with_growing_memory() {
        let mut est = estimator();
        let mut link = Link::new(5_000_000.0);
        link.run(&mut est, 1_000_000.0, 2_000);
        assert_eq!(est.stats.estimate(), None);
        // Two seconds of 30% loss: a limit.
        link.loss = 0.3;
        link.run(&mut est, 1_000_000.0, 2_000);
        let limit = est.stats.estimate().expect("loss sets a limit");
        assert!(limit < 1_000_000, "limit {limit}");
        // The loss ends: the limit stays, and (a player that cannot be probed) is lifted after
        // the memory.
        link.loss = 0.0;
        let seen = link.run(&mut est, 500_000.0, 12_000);
        let lifted = seen.iter().position(Option::is_none).expect("lifted") * 50;
        assert!(
            (7_000..=11_000).contains(&lifted),
            "first lift after {lifted} ms"
        );
        // A relapse right after the lift doubles the memory.
        link.loss = 0.3;
        link.run(&mut est, 1_000_000.0, 2_000);
        assert!(est.stats.estimate().is_some());
        link.loss = 0.0;
        let seen = link.run(&mut est, 500_000.0, 24_000);
        let lifted = seen.iter().position(Option::is_none).expect("lifted") * 50;
        assert!(
            (15_000..=19_000).contains(&lifted),
            "second lift after {lifted} ms"
        );
        assert!(est.stats.snapshot().backoffs >= 2);
    }

    #[test]
    fn congestion_shorter_than_the_hold_sets_no_limit() {
        let mut est = estimator();
        let mut link = Link::new(3_000_000.0);
        // A deep queue: a narrowing shows as delay, not loss.
        link.queue_bytes = 400_000;
        link.run(&mut est, 2_000_000.0, 3_000);
        // The link halves for 250 ms now and then (a radio's moment): the queue stands for less
        // than the hold each time.
        for _ in 0..3 {
            link.capacity_bps = 1_000_000.0;
            let mut seen = link.run(&mut est, 2_000_000.0, 250);
            link.capacity_bps = 3_000_000.0;
            seen.extend(link.run(&mut est, 2_000_000.0, 3_000));
            assert!(
                seen.iter().all(Option::is_none),
                "a moment's queue set a limit"
            );
        }
        // Halved for good: a limit, once the queue has stood for the hold.
        link.capacity_bps = 1_000_000.0;
        let seen = link.run(&mut est, 2_000_000.0, 3_000);
        let at = seen.iter().position(Option::is_some).expect("a limit") * 50;
        assert!(
            (CONGESTION_HOLD.as_millis() as usize..=2_000).contains(&at),
            "limit after {at} ms"
        );
    }

    /// A link limited at 600 kbit/s (a player on the lowest layer) that then widens: probes at
    /// the next layer's rate fail without raising the limit while it is narrow, and raise it
    /// once it is wide; the limit of a player that can be probed is never lifted on time alone.
    #[test]
    fn probes_raise_the_limit_only_when_the_link_carries_them() {
        let mut est = estimator();
        est.stats.set_can_probe(true);
        let mut link = Link::new(10_000_000.0);
        link.queue_bytes = 12_000;
        link.run(&mut est, 2_500_000.0, 2_000);
        link.capacity_bps = 600_000.0;
        link.run(&mut est, 2_500_000.0, 2_000);
        let limit = est.stats.estimate().expect("a limit");
        assert!(limit <= 600_000, "limit {limit}");
        // On the lowest layer, quiet, longer than any memory: still limited.
        let seen = link.run(&mut est, 250_000.0, 20_000);
        assert!(seen.iter().all(Option::is_some), "lifted without a probe");
        // A probe at 750 kbit/s on the 600 kbit/s link: not carried, within a second, and the
        // limit stays.
        for _ in 0..3 {
            link.peak_queue_ms = 0.0;
            let (v, at) = link.probe(&mut est, 750_000, 1_500).expect("a verdict");
            assert_eq!(v, ProbeVerdict::NotCarried);
            assert!(at <= 1_000, "verdict after {at} ms");
            // Stopped on the least delayed packet of a report, not the smoothed delay: the
            // player's packets queued at most 50 ms behind it (61 ms on the smoothed delay).
            let peak = link.peak_queue_ms;
            assert!(peak <= 50.0, "queued {peak:.0} ms");
            assert!(est.stats.estimate().is_some_and(|l| l <= 600_000));
            link.run(&mut est, 250_000.0, 3_000);
        }
        // The link widens: the next probe is carried and the limit rises to its rate.
        link.capacity_bps = 10_000_000.0;
        link.run(&mut est, 250_000.0, 1_000);
        let (v, at) = link.probe(&mut est, 750_000, 2_000).expect("a verdict");
        assert_eq!(v, ProbeVerdict::Carried, "after {at} ms");
        let limit = est.stats.estimate().expect("still a limit");
        assert!((650_000..=800_000).contains(&limit), "limit {limit}");
        let snap = est.stats.snapshot();
        assert_eq!((snap.probes_ok, snap.probes_failed), (1, 3));
    }

    #[test]
    fn light_random_loss_sets_no_limit() {
        let mut est = estimator();
        let mut link = Link::new(10_000_000.0);
        link.loss = 0.01;
        let seen = link.run(&mut est, 2_000_000.0, 10_000);
        assert!(seen.iter().all(Option::is_none));
    }

    #[test]
    fn remb_is_used_without_transport_cc() {
        let stats = LinkStats::default();
        assert_eq!(stats.estimate(), None);
        stats.on_remb(800_000.0);
        assert_eq!(stats.estimate(), Some(800_000));
        assert_eq!(stats.snapshot().feedback, "remb");
    }
}
