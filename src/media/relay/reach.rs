//! Whether this node reaches a table's origin, as its pulls of the table's cameras find: a pull
//! that has not been connected for [`UNREACHABLE_AFTER`] marks the origin unreachable from here
//! ([`super::RelayInfo::unreachable`]); a pull that connects clears the mark at once. `/readyz`,
//! the node's heartbeat and `join` read the marks ([`super::Cascade::unreachable`]).

use super::RelayInfo;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a pull of a camera may go unconnected before this node says it cannot reach the
/// table's origin. A working hop opens the relay session and connects ICE and DTLS in well under
/// a second (a few round trips); a lost DTLS flight is resent after 1 s, so 3 s rides out one or
/// two losses, while a player sent here meanwhile would watch a black picture. Short, so that
/// `join` stops sending players here before many of them arrive.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);
/// This node cannot pull a table's camera from its origin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unreachable {
    /// The origin's base URL.
    pub origin: String,
    /// Server time (ms since the Unix epoch) since when no pull has been connected.
    pub since_ms: u64,
    /// What the last attempt ran into.
    pub error: String,
}

/// Whether the pulls of one camera reach its origin, from their outcomes: a sans-IO record
/// driven with the time as input by the pull's supervisor (`Cascade::supervise`).
///
/// ```text
///   connected ──no pull connected──▶ failing ──UNREACHABLE_AFTER──▶ unreachable (marked)
///       ▲                              │                                 │
///       └───────── a pull connects ────┴─────────────────────────────────┘
///   (the origin changes: back to the start, for the new origin)
/// ```
#[derive(Debug, Default)]
pub(super) struct Reach {
    origin: Option<String>,
    /// Since when no pull has been connected: monotonic, and as server time.
    failing_since: Option<(Instant, u64)>,
    last_error: Option<String>,
}

impl Reach {
    /// A pull attempt of `origin` ended with `error`.
    pub(super) fn failed(&mut self, origin: &str, error: String) {
        self.follow(origin);
        self.last_error = Some(error);
    }

    /// The mark to show at `now` (`now_ms` as server time), given whether a pull of `origin` is
    /// connected.
    pub(super) fn observe(
        &mut self,
        now: Instant,
        now_ms: u64,
        origin: &str,
        connected: bool,
    ) -> Option<Unreachable> {
        self.follow(origin);
        if connected {
            self.failing_since = None;
            self.last_error = None;
            return None;
        }
        let (since, since_ms) = *self.failing_since.get_or_insert((now, now_ms));
        if now.saturating_duration_since(since) < UNREACHABLE_AFTER {
            return None;
        }
        let error = self.last_error.clone().unwrap_or_else(|| {
            format!(
                "the relay session has not connected for {} s (ICE/DTLS)",
                now.saturating_duration_since(since).as_secs()
            )
        });
        Some(Unreachable {
            origin: origin.to_owned(),
            since_ms,
            error,
        })
    }

    /// Starts afresh when the table's origin moved to another node.
    fn follow(&mut self, origin: &str) {
        if self.origin.as_deref() != Some(origin) {
            *self = Reach {
                origin: Some(origin.to_owned()),
                ..Reach::default()
            };
        }
    }
}

/// Updates the camera's unreachable mark from whether its pull of `origin` is connected now.
pub(super) fn observe(reach: &mut Reach, info: &Mutex<RelayInfo>, origin: &str) {
    let connected = info.lock().unwrap_or_else(|e| e.into_inner()).connected;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    mark(
        info,
        reach.observe(Instant::now(), now_ms, origin, connected),
    );
}

/// Sets the camera's unreachable mark, logging when it appears or goes.
pub(super) fn mark(info: &Mutex<RelayInfo>, unreachable: Option<Unreachable>) {
    let mut i = info.lock().unwrap_or_else(|e| e.into_inner());
    match (&i.unreachable, &unreachable) {
        (None, Some(u)) => warn!(
            origin = %u.origin,
            error = %u.error,
            "cannot reach the table's origin: players here get no video; /readyz says degraded and join sends players to other nodes until a pull works (check that this node reaches the origin's media ports over UDP)"
        ),
        (Some(u), None) => info!(origin = %u.origin, "the table's origin is reachable again"),
        _ => {}
    }
    i.unreachable = unreachable;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_marked_after_a_while_unconnected_and_cleared_when_a_pull_connects() {
        let mut reach = Reach::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let limit = UNREACHABLE_AFTER.as_millis() as u64;
        assert_eq!(reach.observe(at(0), 1_000, "http://a", true), None);
        // Lost: not yet marked, then marked with the last error and the start of the failure.
        assert_eq!(reach.observe(at(100), 1_100, "http://a", false), None);
        reach.failed("http://a", "refused".into());
        assert_eq!(
            reach.observe(at(100 + limit - 1), 9_999, "http://a", false),
            None
        );
        let mark = reach.observe(at(100 + limit), 9_999, "http://a", false);
        assert_eq!(
            mark,
            Some(Unreachable {
                origin: "http://a".into(),
                since_ms: 1_100,
                error: "refused".into()
            })
        );
        // A pull connects: cleared at once, and a new failure starts its own clock.
        assert_eq!(reach.observe(at(limit * 2), 0, "http://a", true), None);
        assert_eq!(reach.observe(at(limit * 2 + 1), 5, "http://a", false), None);
        assert_eq!(reach.observe(at(limit * 3), 6, "http://a", false), None);
        let mark = reach
            .observe(at(limit * 3 + 1), 7, "http://a", false)
            .unwrap();
        assert_eq!(mark.since_ms, 5);
        assert!(mark.error.contains("has not connected"), "{}", mark.error);
        // The table moved to another origin: that one gets its own time.
        assert_eq!(reach.observe(at(limit * 4), 8, "http://b", false), None);
    }
}
