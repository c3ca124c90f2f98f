//! Counting and summarising: per-stream RTP loss from sequence numbers, and percentiles of
//! latency samples.
//!
//! Loss is counted the way RTCP receiver reports count it (RFC 3550 §6.4.1): the packets expected
//! are the extended highest sequence number minus the first one, plus one; the packets lost are
//! those expected and never received. The node keeps upstream gaps as gaps and never renumbers a
//! packet it drops, so every packet lost anywhere between the publisher and the player shows.

use serde::Serialize;

/// One received RTP stream (one SSRC), counted from clear headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqCounter {
    ssrc: Option<u32>,
    first: u64,
    highest: u64,
    received: u64,
    /// Expected and received packets of SSRCs this counter saw before the current one.
    retired: Counts,
}

/// Expected and received packets, summed over streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub expected: u64,
    pub received: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.expected += other.expected;
        self.received += other.received;
    }

    /// What happened between an earlier reading and this one.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            expected: self.expected.saturating_sub(earlier.expected),
            received: self.received.saturating_sub(earlier.received),
        }
    }

    /// The fraction of expected packets that never arrived (0 when nothing was expected).
    pub fn loss_ratio(self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        self.expected.saturating_sub(self.received) as f64 / self.expected as f64
    }
}

impl SeqCounter {
    /// Counts one packet.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16) {
        if self.ssrc != Some(ssrc) {
            if self.ssrc.is_some() {
                self.retired.add(self.current());
            }
            self.ssrc = Some(ssrc);
            self.first = u64::from(seq) + (1 << 16);
            self.highest = self.first;
            self.received = 1;
            return;
        }
        let step = seq.wrapping_sub(self.highest as u16) as i16;
        if step > 0 {
            self.highest += step as u64;
        } else {
            // A packet older than the first one seen (reordered at the very start): move the
            // base back. (`first` starts one cycle up, so this cannot go below zero.)
            let at = self.highest.saturating_sub(u64::from(step.unsigned_abs()));
            if at < self.first {
                self.first = at;
            }
        }
        self.received += 1;
    }

    fn current(&self) -> Counts {
        match self.ssrc {
            Some(_) => Counts {
                expected: self.highest - self.first + 1,
                received: self.received,
            },
            None => Counts::default(),
        }
    }

    /// Everything counted so far, over every SSRC.
    pub fn counts(&self) -> Counts {
        let mut c = self.retired;
        c.add(self.current());
        c
    }
}

/// Percentiles of a set of samples, in the samples' unit.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Summarises `samples` (sorted in place), scaled by `scale` (e.g. 0.001 for µs → ms).
pub fn percentiles(samples: &mut [u64], scale: f64) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    // Nearest rank (the smallest sample with at least p% of the samples at or below it).
    let rank = |p: f64| -> f64 {
        let n = samples.len();
        let i = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1;
        samples[i] as f64 * scale
    };
    Percentiles {
        samples: samples.len(),
        p50: rank(50.0),
        p95: rank(95.0),
        p99: rank(99.0),
        max: samples[samples.len() - 1] as f64 * scale,
    }
}

/// Samples kept up to a cap; past it, every other new sample replaces a random old one
/// (reservoir sampling), so percentiles stay unbiased however long a run is.
#[derive(Debug, Default)]
pub struct Reservoir {
    samples: Vec<u64>,
    seen: u64,
    cap: usize,
    rng: u64,
}

impl Reservoir {
    pub fn with_cap(cap: usize) -> Self {
        Self {
            samples: Vec::new(),
            seen: 0,
            cap: cap.max(1),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub fn push(&mut self, v: u64) {
        self.seen += 1;
        if self.samples.len() < self.cap {
            self.samples.push(v);
            return;
        }
        // xorshift64: cheap and good enough to pick a slot.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let j = self.rng % self.seen;
        if (j as usize) < self.cap {
            self.samples[j as usize] = v;
        }
    }

    pub fn take(&mut self) -> Vec<u64> {
        self.seen = 0;
        std::mem::take(&mut self.samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_gaps_across_the_sequence_wrap() {
        let mut c = SeqCounter::default();
        for seq in [65530u16, 65531, 65533, 65535, 0, 1, 3] {
            c.on_packet(7, seq);
        }
        let counts = c.counts();
        assert_eq!(counts.expected, 10, "65530..=3 is ten packets");
        assert_eq!(counts.received, 7);
        assert!((counts.loss_ratio() - 0.3).abs() < 1e-9);
    }

    #[test]
    fn a_reordered_packet_is_not_a_loss_and_a_new_ssrc_starts_afresh() {
        let mut c = SeqCounter::default();
        for seq in [10u16, 12, 11, 13] {
            c.on_packet(1, seq);
        }
        assert_eq!(
            c.counts(),
            Counts {
                expected: 4,
                received: 4
            }
        );
        c.on_packet(2, 500);
        c.on_packet(2, 502);
        assert_eq!(
            c.counts(),
            Counts {
                expected: 7,
                received: 6
            }
        );
    }

    #[test]
    fn windows_subtract() {
        let a = Counts {
            expected: 100,
            received: 99,
        };
        let b = Counts {
            expected: 300,
            received: 297,
        };
        let w = b.since(a);
        assert_eq!(
            w,
            Counts {
                expected: 200,
                received: 198
            }
        );
        assert!((w.loss_ratio() - 0.01).abs() < 1e-9);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let p = percentiles(&mut v, 1.0);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(percentiles(&mut [], 1.0).samples, 0);
        let p = percentiles(&mut [7], 0.5);
        assert_eq!((p.p50, p.p99), (3.5, 3.5));
    }

    #[test]
    fn the_reservoir_stays_at_its_cap() {
        let mut r = Reservoir::with_cap(100);
        for v in 0..10_000 {
            r.push(v);
        }
        let mut v = r.take();
        assert_eq!(v.len(), 100);
        let p = percentiles(&mut v, 1.0);
        assert!(p.p50 > 2_000.0 && p.p50 < 8_000.0, "{p:?}");
        assert!(r.take().is_empty());
    }
}
