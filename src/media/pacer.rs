//! A player's egress, paced to what its link carries.
//!
//! A keyframe of the top layer is a few dozen packets sent at once; a link that carries
//! 600 kbit/s takes them at that rate, and a shallow queue on the way (a mobile cell, a rate
//! limiter) drops what does not fit. So a player whose link has a known limit (`estimate.rs`)
//! gets its video through a token bucket filled at [`PACING_FACTOR`] times that limit, a few
//! packets deep. What the bucket cannot take yet waits in the player's queue, in order, and
//! goes out at the worker's next pacing round ([`PACE_TICK`]), with the rest of the worker's
//! batch: there is one timer per worker, not one per packet or per player.
//!
//! Audio and retransmissions are not held: audio goes first, and a retransmission is late
//! already. They take tokens all the same, so the video after them waits its turn.
//!
//! A player without a known limit is not paced: nothing is known to pace it to.
//!
//! Sans-IO: time is an input.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The bucket fills at this many times the link's estimate, so a queue drains.
pub const PACING_FACTOR: f64 = 1.25;
/// How often a worker sends what its players' buckets let through.
pub const PACE_TICK: Duration = Duration::from_millis(5);
/// The bucket holds at least this many bytes (four full packets)...
const MIN_BURST_BYTES: f64 = 4.0 * 1200.0;
/// ...or this long at the pacing rate, whichever is more.
const BURST: Duration = Duration::from_millis(10);
/// What goes out whatever the bucket says (audio, repairs, probes) may put it this far in debt at
/// most, at the pacing rate: a burst of repairs after heavy loss must not hold the player's
/// video back for seconds. Repairs and probes wait while the bucket is this far in debt.
const MAX_DEBT: Duration = Duration::from_millis(100);
/// A queue longer than this at the pacing rate is not worth sending: its oldest packets are
/// dropped (the player asks for what it misses again, and a keyframe if need be).
const MAX_QUEUE: Duration = Duration::from_millis(800);

/// One packet waiting to be sent.
pub struct Paced<T> {
    pub item: T,
    pub bytes: usize,
}

/// One player's token bucket and queue.
pub struct Pacer<T> {
    /// Bytes per second, or None: not paced.
    rate: Option<f64>,
    tokens: f64,
    last: Option<Instant>,
    queue: VecDeque<Paced<T>>,
    queued_bytes: usize,
    /// The worker lists this player for its pacing round.
    pub listed: bool,
    /// Packets dropped because the queue was over [`MAX_QUEUE`].
    pub dropped: u64,
}

impl<T> Default for Pacer<T> {
    fn default() -> Self {
        Self {
            rate: None,
            tokens: 0.0,
            last: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            listed: false,
            dropped: 0,
        }
    }
}

impl<T> Pacer<T> {
    /// Paces to a link estimate of `bps` bits per second, or not at all (None).
    pub fn set_rate(&mut self, bps: Option<u64>, now: Instant) {
        let was_paced = self.rate.is_some();
        self.refill(now);
        self.rate = bps.map(|b| b as f64 * PACING_FACTOR / 8.0);
        if self.rate.is_none() {
            self.tokens = 0.0;
        } else if !was_paced {
            // Pacing starts with a full bucket.
            self.tokens = self.depth();
        }
    }

    pub fn is_paced(&self) -> bool {
        self.rate.is_some()
    }

    fn depth(&self) -> f64 {
        self.rate
            .map_or(0.0, |r| (r * BURST.as_secs_f64()).max(MIN_BURST_BYTES))
    }

    fn refill(&mut self, now: Instant) {
        if let (Some(rate), Some(last)) = (self.rate, self.last) {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + rate * dt).min(self.depth());
        }
        self.last = Some(now);
    }

    /// Whether a packet of `bytes` may go now: always when not paced; when paced, if nothing
    /// waits before it and the bucket has room. Takes its tokens when it may.
    pub fn admit(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate.is_none() {
            return true;
        }
        self.refill(now);
        if self.queue.is_empty() && self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            return true;
        }
        false
    }

    /// A packet that goes now whatever the bucket says (audio, a retransmission, a probe). The
    /// debt it leaves is capped at [`MAX_DEBT`].
    pub fn charge(&mut self, bytes: usize, now: Instant) {
        if let Some(rate) = self.rate {
            self.refill(now);
            self.tokens = (self.tokens - bytes as f64).max(-rate * MAX_DEBT.as_secs_f64());
        }
    }

    /// Whether a repair should wait: the bucket is half [`MAX_DEBT`] in debt already (the player
    /// asks again).
    pub fn in_debt(&mut self, now: Instant) -> bool {
        let Some(rate) = self.rate else {
            return false;
        };
        self.refill(now);
        self.tokens <= -rate * MAX_DEBT.as_secs_f64() * 0.5
    }

    /// Whether a probe should wait: the bucket is in debt, or video waits in the queue (video
    /// goes first).
    pub fn saturated(&mut self, now: Instant) -> bool {
        self.in_debt(now) || !self.queue.is_empty()
    }

    /// Queues a packet [`Self::admit`] refused. Returns how many old ones were dropped to
    /// keep the queue under [`MAX_QUEUE`].
    pub fn push(&mut self, item: T, bytes: usize) -> usize {
        self.queue.push_back(Paced { item, bytes });
        self.queued_bytes += bytes;
        let cap = self
            .rate
            .map_or(usize::MAX, |r| (r * MAX_QUEUE.as_secs_f64()) as usize);
        let mut dropped = 0;
        while self.queued_bytes > cap && self.queue.len() > 1 {
            if let Some(p) = self.queue.pop_front() {
                self.queued_bytes -= p.bytes;
                dropped += 1;
            }
        }
        self.dropped += dropped as u64;
        dropped
    }

    /// The next queued packet the bucket lets through now.
    pub fn pop_ready(&mut self, now: Instant) -> Option<T> {
        let bytes = self.queue.front()?.bytes;
        if self.rate.is_some() {
            self.refill(now);
            if self.tokens < bytes as f64 {
                return None;
            }
            self.tokens -= bytes as f64;
        }
        self.queued_bytes -= bytes;
        self.queue.pop_front().map(|p| p.item)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unpaced_player_sends_everything_at_once() {
        let mut p: Pacer<u32> = Pacer::default();
        let now = Instant::now();
        assert!((0..100).all(|_| p.admit(1200, now)));
        assert!(p.is_empty());
    }

    /// A 24-packet keyframe to a player on a 600 kbit/s link goes out over about 300 ms, a
    /// few packets at a time, in order.
    #[test]
    fn a_keyframe_burst_is_spread_at_the_link_rate() {
        let mut p: Pacer<u32> = Pacer::default();
        let t0 = Instant::now();
        p.set_rate(Some(600_000), t0);
        let mut sent = Vec::new();
        for i in 0..24u32 {
            if p.admit(1200, t0) {
                sent.push((i, Duration::ZERO));
            } else {
                p.push(i, 1200);
            }
        }
        assert_eq!(sent.len(), 4, "the bucket's depth goes at once");
        let mut t = t0;
        while !p.is_empty() {
            t += PACE_TICK;
            while let Some(i) = p.pop_ready(t) {
                sent.push((i, t - t0));
            }
        }
        let order: Vec<u32> = sent.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..24).collect::<Vec<_>>());
        let last = sent.last().unwrap().1;
        // 20 packets × 1200 B at 750 kbit/s (the factor) is 256 ms.
        assert!(
            (Duration::from_millis(240)..Duration::from_millis(280)).contains(&last),
            "{last:?}"
        );
        // Never more than the burst in one round.
        let mut per_round = std::collections::HashMap::new();
        for (_, at) in &sent[4..] {
            *per_round.entry(*at).or_insert(0) += 1;
        }
        assert!(per_round.values().all(|&n| n <= 1), "{per_round:?}");
    }

    #[test]
    fn audio_goes_first_and_its_bytes_are_charged() {
        let mut p: Pacer<&str> = Pacer::default();
        let t0 = Instant::now();
        p.set_rate(Some(600_000), t0);
        for _ in 0..4 {
            assert!(p.admit(1200, t0));
        }
        assert!(!p.admit(1200, t0));
        p.push("video", 1200);
        // Audio is sent at once; the video waits longer for it.
        p.charge(160, t0);
        assert_eq!(p.pop_ready(t0 + Duration::from_millis(12)), None);
        assert_eq!(p.pop_ready(t0 + Duration::from_millis(15)), Some("video"));
    }

    #[test]
    fn a_burst_of_repairs_holds_video_back_at_most_the_debt_limit_and_repairs_then_wait() {
        let mut p: Pacer<&str> = Pacer::default();
        let t0 = Instant::now();
        // 600 kbit/s paced at 750 kbit/s: 93.75 kB/s.
        p.set_rate(Some(600_000), t0);
        // A megabyte of repairs after heavy loss (800 packets).
        for _ in 0..800 {
            p.charge(1260, t0);
        }
        assert!(p.in_debt(t0), "repairs wait now");
        assert!(p.saturated(t0), "and so do probes");
        assert!(!p.admit(1200, t0));
        p.push("video", 1200);
        // The debt is 100 ms of the rate, not ten seconds of it.
        assert_eq!(p.pop_ready(t0 + Duration::from_millis(100)), None);
        assert_eq!(p.pop_ready(t0 + Duration::from_millis(115)), Some("video"));
        assert!(!p.in_debt(t0 + Duration::from_millis(115)));
    }

    #[test]
    fn a_queue_that_cannot_drain_is_bounded() {
        let mut p: Pacer<u32> = Pacer::default();
        let t0 = Instant::now();
        p.set_rate(Some(100_000), t0);
        let mut dropped = 0;
        for i in 0..1000 {
            if !p.admit(1200, t0) {
                dropped += p.push(i, 1200);
            }
        }
        // 800 ms at 125 kbit/s is 12.5 kB: ten packets.
        assert!(p.queued_bytes() <= 12_500, "{}", p.queued_bytes());
        assert_eq!(dropped as u64, p.dropped);
        assert!(dropped > 900);
    }
}
