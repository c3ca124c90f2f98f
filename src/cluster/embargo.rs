//! The claim embargo after a Redis outage, as a sans-IO state machine.
//!
//! The cluster's rule: when Redis comes back (after it failed, or after it restarted and may
//! have lost every lease), the owners reassert their leases before anyone else may claim a
//! table. An owner renews four times per lease, so two leases are enough for every live owner
//! to have reasserted.
//!
//! Driving contract: report what this node sees of Redis with [`Embargo::failed`] (any
//! unreachable error) and [`Embargo::saw_run_id`] (the server's `run_id`, read with each
//! heartbeat and before each claim); ask [`Embargo::blocks_claims`] before claiming. Time is
//! an input; nothing here reads a clock.
//!
//! ```text
//!            failed(now) / run_id changed(now)
//!   Open ──────────────────────────────────────▶ Embargoed{until = now + 2 × lease}
//!    ▲                                              │  │ failed / run_id changed again:
//!    └──────────── now >= until ────────────────────┘  └─▶ until moves to now + 2 × lease
//! ```

use std::time::{Duration, Instant};

/// Whether this node may claim tables now, from what it has seen of Redis.
#[derive(Debug)]
pub struct Embargo {
    length: Duration,
    until: Option<Instant>,
    run_id: Option<String>,
}

impl Embargo {
    /// An embargo of `2 × lease` after each outage.
    pub fn new(lease: Duration) -> Self {
        Self {
            length: lease.saturating_mul(2),
            until: None,
            run_id: None,
        }
    }

    /// Redis failed (unreachable, timed out, still loading its data) at `now`. Returns whether
    /// this starts a new embargo (claims were open until now), for logging once per outage.
    pub fn failed(&mut self, now: Instant) -> bool {
        let new = !self.blocks_claims(now);
        self.until = Some(now + self.length);
        new
    }

    /// Redis answered with this `run_id` at `now`, having run for `uptime`. A different id
    /// from the last one seen means the server restarted, maybe without its data: an outage even
    /// if no command failed. Returns whether it restarted.
    ///
    /// The first id this node sees cannot tell it whether Redis just restarted, but the uptime
    /// can: a server up for less than the embargo's length started an outage's aftermath that
    /// the other nodes wait out, so a node starting now waits out the rest of it too.
    ///
    /// Redis counts `uptime_in_seconds` as the difference of two whole-second clocks, so a
    /// reported `N` may mean just over `N - 1` seconds: the rest is counted from that.
    pub fn saw_run_id(&mut self, now: Instant, run_id: &str, uptime: Option<Duration>) -> bool {
        let restarted = self.run_id.as_deref().is_some_and(|last| last != run_id);
        let up_at_least = uptime.map(|up| up.saturating_sub(Duration::from_secs(1)));
        if restarted {
            self.failed(now);
        } else if self.run_id.is_none()
            && let Some(rest) = up_at_least.and_then(|up| self.length.checked_sub(up))
            && !rest.is_zero()
        {
            let until = now + rest;
            self.until = Some(self.until.map_or(until, |u| u.max(until)));
        }
        if self.run_id.as_deref() != Some(run_id) {
            self.run_id = Some(run_id.to_owned());
        }
        restarted
    }

    /// Whether claims must wait at `now`.
    pub fn blocks_claims(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(500);

    #[test]
    fn a_node_that_first_sees_a_freshly_started_redis_waits_out_the_rest_of_the_embargo() {
        let t0 = Instant::now();
        let mut fresh = Embargo::new(Duration::from_secs(2));
        // Reported up 2 s: maybe only just over 1 s, so 3 s of the 4 s embargo are left.
        assert!(!fresh.saw_run_id(t0, "aaa", Some(Duration::from_secs(2))));
        assert!(fresh.blocks_claims(t0 + Duration::from_millis(2999)));
        assert!(!fresh.blocks_claims(t0 + Duration::from_secs(3)));
        // A reported 1 s may be a millisecond: the whole embargo is left.
        let mut just = Embargo::new(Duration::from_secs(2));
        just.saw_run_id(t0, "aaa", Some(Duration::from_secs(1)));
        assert!(just.blocks_claims(t0 + Duration::from_millis(3999)));
        assert!(!just.blocks_claims(t0 + Duration::from_secs(4)));
        // Up for longer than the embargo, or uptime unknown: nothing to wait out.
        for uptime in [Some(Duration::from_secs(5)), None] {
            let mut e = Embargo::new(Duration::from_secs(2));
            e.saw_run_id(t0, "aaa", uptime);
            assert!(!e.blocks_claims(t0));
        }
    }

    #[test]
    fn a_failure_blocks_claims_for_two_leases() {
        let t0 = Instant::now();
        let mut e = Embargo::new(LEASE);
        assert!(!e.blocks_claims(t0));
        assert!(e.failed(t0));
        assert!(e.blocks_claims(t0 + Duration::from_millis(999)));
        assert!(!e.blocks_claims(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn each_failure_starts_the_embargo_again() {
        let t0 = Instant::now();
        let mut e = Embargo::new(LEASE);
        assert!(e.failed(t0));
        assert!(
            !e.failed(t0 + Duration::from_millis(800)),
            "the same outage"
        );
        assert!(e.blocks_claims(t0 + Duration::from_millis(1500)));
        assert!(!e.blocks_claims(t0 + Duration::from_millis(1800)));
    }

    #[test]
    fn a_new_run_id_is_a_restart_but_the_first_one_is_not() {
        let t0 = Instant::now();
        let mut e = Embargo::new(LEASE);
        let long = Some(Duration::from_secs(3600));
        assert!(!e.saw_run_id(t0, "aaa", long));
        assert!(!e.saw_run_id(t0, "aaa", long));
        assert!(!e.blocks_claims(t0));
        let t1 = t0 + Duration::from_secs(10);
        assert!(e.saw_run_id(t1, "bbb", Some(Duration::ZERO)));
        assert!(e.blocks_claims(t1 + Duration::from_millis(999)));
        assert!(!e.saw_run_id(t1, "bbb", long));
        assert!(!e.blocks_claims(t1 + Duration::from_millis(1000)));
    }
}
