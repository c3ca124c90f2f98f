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
//! - **Loss:** the share of reported packets that never arrived, smoothed over reports.
//!
//! Congestion (a standing queue over [`QUEUE_OVERUSE`] while the link delivers less than is
//! sent, or loss over [`LOSS_HIGH`]) sets the
//! estimate to [`BACKOFF`] of what was delivered. A link that has shown congestion is held to
//! what it has been seen to carry: the estimate may climb while the link is quiet, but only to
//! [`GROWTH_CAP`] times the delivered rate. A link that has never shown congestion, or not for
//! [`Memory`]'s time, has no limit: the node does not guess a ceiling it has no evidence of, and
//! a player on a good link gets the top layer from its first frame. Each time a limit is lifted
//! and congestion comes back within a short while, the memory doubles, so a link that really is
//! narrow is not tried again and again.
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
pub const QUEUE_OVERUSE: Duration = Duration::from_millis(100);
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
/// peer connection, read by the worker that owns both: relaxed atomics, no lock.
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
    /// The table's counters, once the session is set up.
    pub metrics: std::sync::OnceLock<Arc<crate::metrics::TableMetrics>>,
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
}

impl LinkStats {
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
        }
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
    loss: f64,
    /// The current limit, bits per second (None: no limit).
    limit: Option<f64>,
    last_congestion: Option<Instant>,
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
            loss: 0.0,
            limit: None,
            last_congestion: None,
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
        let mut lost = 0usize;
        let mut latest_queue = None;
        for r in reports {
            self.departures.push_back((r.departure, r.size));
            self.sent_bytes += r.size;
            let Some(arrival) = r.arrival.filter(|_| r.arrived) else {
                lost += 1;
                continue;
            };
            self.arrivals.push_back((arrival, r.size));
            self.window_bytes += r.size;
            let departure = r.departure.saturating_duration_since(epoch).as_secs_f64() * 1e3;
            let delay = arrival.as_secs_f64() * 1e3 - departure;
            self.base[0] = Some(self.base[0].map_or(delay, |b| b.min(delay)));
            latest_queue = Some(delay);
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
        }
        let fraction = lost as f64 / reports.len() as f64;
        self.loss = 0.8 * self.loss + 0.2 * fraction;

        let delivered = self.delivered();
        // A standing queue is congestion only while the link delivers less than is sent: a
        // busy receiver that timestamps late still takes everything.
        let falling_behind = match (delivered, self.sent()) {
            (Some(d), Some(s)) => d < s * BEHIND,
            _ => false,
        };
        let congested = (self.queue_ms > QUEUE_OVERUSE.as_secs_f64() * 1e3 && falling_behind)
            || self.loss > LOSS_HIGH;
        let dt = self.last_update.map_or(0.0, |t| {
            now.saturating_duration_since(t).as_secs_f64().min(1.0)
        });
        self.last_update = Some(now);
        if congested {
            if let Some(delivered) = delivered {
                let backed = (delivered * BACKOFF).max(MIN_BITRATE);
                // One backoff per congestion episode, from what the link delivered then; a
                // report while still congested lowers it further only if delivery fell.
                let fresh = self
                    .last_congestion
                    .is_none_or(|t| now.saturating_duration_since(t) > Duration::from_millis(500));
                if self.limit.is_none_or(|l| backed < l) {
                    if self.limit.is_none() {
                        // A relapse soon after a limit was lifted: remember longer.
                        if self
                            .memory
                            .lifted_at
                            .is_some_and(|t| now.saturating_duration_since(t) < RELAPSE)
                        {
                            self.memory.length = (self.memory.length * 2).min(MEMORY_MAX);
                        }
                    }
                    if fresh || self.limit.is_none() {
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
                    }
                    self.limit = Some(backed);
                }
                self.last_congestion = Some(now);
            }
        } else if let Some(limit) = self.limit {
            let quiet = self
                .last_congestion
                .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            if quiet >= self.memory.length {
                // No congestion for long enough: the limit no longer says anything.
                self.limit = None;
                self.memory.lifted_at = Some(now);
            } else if self.loss <= LOSS_LOW {
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
        let seen = link.run(&mut est, 150_000.0, 6_000);
        assert!(
            seen.iter().all(|e| e.is_some_and(|l| l < 700_000)),
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
        // A burst of 30% loss: a limit.
        link.loss = 0.3;
        link.run(&mut est, 1_000_000.0, 1_000);
        let limit = est.stats.estimate().expect("loss sets a limit");
        assert!(limit < 1_000_000, "limit {limit}");
        // The loss ends: the limit stays, and is lifted after the memory.
        link.loss = 0.0;
        let seen = link.run(&mut est, 500_000.0, 10_000);
        let lifted = seen.iter().position(Option::is_none).expect("lifted") * 50;
        assert!(
            (7_000..=9_000).contains(&lifted),
            "first lift after {lifted} ms"
        );
        // A relapse right after the lift doubles the memory.
        link.loss = 0.3;
        link.run(&mut est, 1_000_000.0, 500);
        assert!(est.stats.estimate().is_some());
        link.loss = 0.0;
        let seen = link.run(&mut est, 500_000.0, 20_000);
        let lifted = seen.iter().position(Option::is_none).expect("lifted") * 50;
        assert!(
            (15_000..=17_000).contains(&lifted),
            "second lift after {lifted} ms"
        );
        assert!(est.stats.snapshot().backoffs >= 2);
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
