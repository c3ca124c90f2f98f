//! Probing a player's link before its picture goes up a layer.
//!
//! A player the link estimate holds below the layer its view calls for (`Selector::probe_target`)
//! is probed now and then: for up to [`PROBE_MAX`], the worker sends, beside the player's video,
//! RTX duplicates of the video packets it sent last, so that the player receives the rate the next
//! layer needs in all. The player discards the duplicates; its transport-cc feedback says whether
//! the link carried them, and the estimator (`estimate.rs`) gives the verdict. Carried: the limit
//! rises and the player goes up, onto a link known to carry it. Not carried: the probe stops as
//! soon as the queue grows, the picture never changed, and the next probe waits longer.
//!
//! One probe goes at most [`PROBE_STEP`] times the estimate, so a link is climbed in steps, each
//! proven, rather than tried at a top layer's rate at once.
//!
//! A probe the link did not carry queued what it sent beyond the link's rate until it was
//! stopped, and the player's own packets waited behind it. So the next probe does not repeat
//! that rate: it aims halfway between the estimate and the rate that failed, but at least
//! [`PROBE_RETRY_STEP`] times the estimate, and each probe that fails lowers the next one's aim
//! the same way. A player held on a narrow link is then probed just above what it carries, not
//! at twice its estimate every few seconds; a probe carried at or above the failed rate (the link
//! widened) lifts that ceiling, and the steps are [`PROBE_STEP`] again.
//!
//! Sans-IO: time is an input; the worker sends the bytes [`Prober::take`] grants.

use super::estimate::{LinkStats, ProbeVerdict};
use std::time::{Duration, Instant};

/// The first probe waits this long after the link was congested.
pub const PROBE_AFTER_CONGESTION: Duration = Duration::from_secs(2);
/// The shortest wait between probes; it doubles after each probe the link did not carry...
pub const PROBE_GAP_MIN: Duration = Duration::from_secs(2);
/// ...up to this, so a link that widens again is found within a few seconds.
pub const PROBE_GAP_MAX: Duration = Duration::from_secs(3);
/// After a probe the link carried, the next step may follow this soon.
pub const PROBE_GAP_AFTER_SUCCESS: Duration = Duration::from_millis(500);
/// The longest a probe runs without a verdict; then it counts as not carried.
pub const PROBE_MAX: Duration = Duration::from_millis(1600);
/// A probe sends at most this many times the current estimate.
pub const PROBE_STEP: f64 = 2.0;
/// A probe aims this far above the estimate the next layer needs: the estimator takes as
/// carried what the probe actually sent, which may be 20% short of its aim (`estimate.rs`), and
/// a probe carried at just under the target would leave the player where it was, to wait for
/// the next one.
pub const PROBE_OVERSHOOT: f64 = 1.25;
/// After a probe that was not carried, the next aims at least this many times the estimate
/// (see the module doc).
pub const PROBE_RETRY_STEP: f64 = 1.25;
/// Probe bytes are granted at least this share of the probe's rate, so a probe always adds
/// something to what the player receives.
const MIN_EXTRA: f64 = 0.2;

#[derive(Debug, Clone)]
struct Active {
    seq: u32,
    /// The rate it aims at, bits per second.
    bps: f64,
    started: Instant,
    /// Bytes per second of duplicates on top of the player's media.
    extra: f64,
    credit: f64,
    last: Instant,
}

/// One player's probes (see the module doc).
#[derive(Debug, Clone)]
pub struct Prober {
    active: Option<Active>,
    next_at: Option<Instant>,
    gap: Duration,
    backoffs_seen: u64,
    /// The rate of the last probe the link did not carry, until one is carried at or above it.
    failed_bps: Option<f64>,
    /// Which of the last sent packets the next duplicate repeats.
    pub cursor: u16,
}

impl Default for Prober {
    fn default() -> Self {
        Self {
            active: None,
            next_at: None,
            gap: PROBE_GAP_MIN,
            backoffs_seen: 0,
            failed_bps: None,
            cursor: 0,
        }
    }
}

impl Prober {
    pub fn active(&self) -> bool {
        self.active.is_some()
    }

    /// Starts a probe if the player wants a higher layer than its link estimate allows
    /// (`target`: the estimate that layer needs) and it is time; `sending` is the most the
    /// player's media may be sending (its layer's peak rate and audio). Returns whether one
    /// started.
    pub fn maybe_start(
        &mut self,
        link: &LinkStats,
        target: Option<u64>,
        sending: u64,
        now: Instant,
    ) -> bool {
        if self.active.is_some() {
            return false;
        }
        // Called per batch for every player: a few relaxed loads, no snapshot, until a probe
        // starts.
        let backoffs = link.backoffs();
        if backoffs != self.backoffs_seen {
            // Fresh congestion: let the link settle before asking more of it.
            self.backoffs_seen = backoffs;
            self.next_at = Some(now + PROBE_AFTER_CONGESTION);
        }
        let (Some(target), Some(estimate)) = (target, link.estimate()) else {
            return false;
        };
        if !link.limited_by_transport_cc() || self.next_at.is_some_and(|t| now < t) {
            return false;
        }
        let estimate = estimate as f64;
        let mut rate = (target as f64 * PROBE_OVERSHOOT).min(estimate * PROBE_STEP);
        if let Some(failed) = self.failed_bps {
            rate = rate.min(((estimate + failed) / 2.0).max(estimate * PROBE_RETRY_STEP));
        }
        if rate <= estimate {
            return false;
        }
        // The duplicates make up what the media leaves short of the aim. What the link
        // delivered lately may still count the previous probe's duplicates (the next step
        // follows a carried one within PROBE_GAP_AFTER_SUCCESS): a probe topped up from that
        // would send too little to prove anything.
        let media = (link.snapshot().delivered_bps as f64).min(sending as f64);
        let extra = (rate - media).max(rate * MIN_EXTRA) / 8.0;
        let seq = link.start_probe(rate as u64);
        self.active = Some(Active {
            seq,
            bps: rate,
            started: now,
            extra,
            credit: 0.0,
            last: now,
        });
        true
    }

    /// Bytes of duplicates to send now. Ends the probe (and returns 0) on the estimator's verdict
    /// or after [`PROBE_MAX`].
    pub fn take(&mut self, link: &LinkStats, now: Instant) -> usize {
        let Some(a) = &mut self.active else {
            return 0;
        };
        let verdict = link.probe_verdict(a.seq).or_else(|| {
            (now.saturating_duration_since(a.started) >= PROBE_MAX)
                .then_some(ProbeVerdict::NotCarried)
        });
        if let Some(v) = verdict {
            let bps = a.bps;
            link.end_probe();
            self.active = None;
            match v {
                ProbeVerdict::Carried => {
                    if self.failed_bps.is_some_and(|f| bps >= f) {
                        self.failed_bps = None;
                    }
                    self.gap = PROBE_GAP_MIN;
                    self.next_at = Some(now + PROBE_GAP_AFTER_SUCCESS);
                }
                ProbeVerdict::NotCarried => {
                    self.failed_bps = Some(bps);
                    self.next_at = Some(now + self.gap);
                    self.gap = (self.gap * 2).min(PROBE_GAP_MAX);
                }
            }
            return 0;
        }
        let dt = now
            .saturating_duration_since(a.last)
            .as_secs_f64()
            .min(0.05);
        a.last = now;
        a.credit += a.extra * dt;
        let bytes = a.credit.max(0.0) as usize;
        a.credit -= bytes as f64;
        bytes
    }

    /// Bytes sent beyond what [`Prober::take`] granted (a packet is sent whole) are owed.
    pub fn owe(&mut self, bytes: usize) {
        if let Some(a) = &mut self.active {
            a.credit -= bytes as f64;
        }
    }

    /// The rate the player's egress should be paced to while a probe runs.
    pub fn pacing_floor(&self, link: &LinkStats) -> Option<u64> {
        self.active.as_ref()?;
        link.snapshot().probing_bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn probes_start_only_when_held_back_and_back_off_when_not_carried() {
        let link = LinkStats::default();
        let mut p = Prober::default();
        let t0 = Instant::now();
        // No estimate, or nothing wanted: no probe.
        assert!(!p.maybe_start(&link, Some(600_000), u64::MAX, t0));
        link.set_for_test(500_000, 250_000, 1);
        assert!(!p.maybe_start(&link, None, u64::MAX, t0));
        // Just congested: the link settles first.
        assert!(!p.maybe_start(&link, Some(600_000), u64::MAX, t0));
        assert!(!p.maybe_start(&link, Some(600_000), u64::MAX, t0 + ms(1_900)));
        let t = t0 + PROBE_AFTER_CONGESTION;
        assert!(p.maybe_start(&link, Some(600_000), u64::MAX, t));
        // Aimed PROBE_OVERSHOOT above the 600 kbit/s wanted.
        assert_eq!(link.snapshot().probing_bps, Some(750_000));
        assert!(
            !p.maybe_start(&link, Some(600_000), u64::MAX, t),
            "one at a time"
        );
        // Duplicates on top of the 250 kbit/s the player gets: 500 kbit/s, 62.5 kB/s.
        let granted: usize = (1..=20).map(|i| p.take(&link, t + ms(10 * i))).sum();
        assert!(
            (12_000..=13_000).contains(&granted),
            "granted {granted} B in 200 ms"
        );
        // Not carried: stopped, and the next waits PROBE_GAP_MIN, then twice that, up to the max.
        let mut t = t + ms(300);
        let mut gaps = Vec::new();
        for _ in 0..4 {
            link.give_verdict(
                link.probe_seq.load(std::sync::atomic::Ordering::Relaxed),
                ProbeVerdict::NotCarried,
            );
            assert_eq!(p.take(&link, t), 0);
            assert!(!p.active());
            assert_eq!(link.snapshot().probing_bps, None);
            let ended = t;
            while !p.maybe_start(&link, Some(600_000), u64::MAX, t) {
                t += ms(100);
            }
            gaps.push(t.duration_since(ended));
        }
        assert_eq!(gaps, [ms(2_000), ms(3_000), ms(3_000), ms(3_000)]);
        // Carried: the next step may follow soon, and the gap starts over.
        link.give_verdict(
            link.probe_seq.load(std::sync::atomic::Ordering::Relaxed),
            ProbeVerdict::Carried,
        );
        p.take(&link, t);
        assert!(!p.maybe_start(&link, Some(1_500_000), u64::MAX, t + ms(400)));
        assert!(p.maybe_start(
            &link,
            Some(1_500_000),
            u64::MAX,
            t + PROBE_GAP_AFTER_SUCCESS
        ));
        // A probe never goes past twice the estimate.
        assert_eq!(link.snapshot().probing_bps, Some(1_000_000));
        // Without a verdict it ends after PROBE_MAX, as not carried.
        let t = t + PROBE_GAP_AFTER_SUCCESS + PROBE_MAX;
        assert_eq!(p.take(&link, t), 0);
        assert!(!p.active());
    }

    #[test]
    fn a_probe_tops_up_the_media_not_what_the_last_probe_delivered() {
        let link = LinkStats::default();
        let mut p = Prober::default();
        let t0 = Instant::now();
        // What the link delivered lately (900 kbit/s) is mostly the previous probe's
        // duplicates; the player's media sends at most 250 kbit/s.
        link.set_for_test(500_000, 900_000, 0);
        assert!(p.maybe_start(&link, Some(800_000), 250_000, t0));
        assert_eq!(link.snapshot().probing_bps, Some(1_000_000));
        // 750 kbit/s of duplicates, 93.75 kB/s: about 18.75 kB in 200 ms, not the 5 kB that
        // topping up 900 kbit/s would give.
        let granted: usize = (1..=20).map(|i| p.take(&link, t0 + ms(10 * i))).sum();
        assert!(
            (18_000..=19_500).contains(&granted),
            "granted {granted} B in 200 ms"
        );
    }

    /// A player on a 600 kbit/s link, estimated at 443 kbit/s, wanting a layer that needs
    /// 755 kbit/s: after the first probe fails at twice the estimate, the next ones close in on
    /// the link from below rather than repeat that rate; once the link widens they climb again.
    #[test]
    fn after_a_probe_fails_the_next_aims_lower() {
        let link = LinkStats::default();
        let mut p = Prober::default();
        let mut t = Instant::now();
        link.set_for_test(443_000, 200_000, 0);
        let probe = |p: &mut Prober, verdict: ProbeVerdict, t: &mut Instant| {
            while !p.maybe_start(&link, Some(755_000), 250_000, *t) {
                *t += ms(100);
            }
            let bps = link.snapshot().probing_bps.expect("probing");
            link.give_verdict(
                link.probe_seq.load(std::sync::atomic::Ordering::Relaxed),
                verdict,
            );
            assert_eq!(p.take(&link, *t), 0);
            bps
        };
        assert_eq!(probe(&mut p, ProbeVerdict::NotCarried, &mut t), 886_000);
        // Halfway between the estimate and the failed rate.
        assert_eq!(probe(&mut p, ProbeVerdict::NotCarried, &mut t), 664_500);
        // Halfway again would be under PROBE_RETRY_STEP times the estimate.
        assert_eq!(probe(&mut p, ProbeVerdict::Carried, &mut t), 553_750);
        // Carried below the failed rate: the estimate rose, the ceiling stays.
        link.set_for_test(553_750, 250_000, 0);
        assert_eq!(probe(&mut p, ProbeVerdict::NotCarried, &mut t), 692_187);
        assert_eq!(probe(&mut p, ProbeVerdict::Carried, &mut t), 692_187);
        // Carried at the failed rate: the link widened, and the steps are whole again.
        link.set_for_test(692_187, 250_000, 0);
        assert_eq!(probe(&mut p, ProbeVerdict::Carried, &mut t), 943_750);
    }
}
