//! The table's deadlines, quinn-proto style: a fixed array of optional deadlines, one per
//! [`Timer`], and [`TimerTable::next_timeout`] for the caller's single sleep.

use crate::protocol::ServerTime;

/// Everything the table may be waiting for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Timer {
    /// Betting closes at the round's `closes_at`.
    CloseBetting,
    /// Pending totals may go out (the coalescing interval has passed).
    FlushTotals,
    /// The next round opens by itself (auto-open).
    AutoOpen,
}

impl Timer {
    /// In order of precedence when two fall due at the same millisecond: totals flush before
    /// betting closes, so the final totals are never preceded by a stale one.
    const VALUES: [Timer; 3] = [Timer::FlushTotals, Timer::CloseBetting, Timer::AutoOpen];

    const fn slot(self) -> usize {
        match self {
            Timer::CloseBetting => 0,
            Timer::FlushTotals => 1,
            Timer::AutoOpen => 2,
        }
    }
}

/// One optional deadline per timer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerTable {
    data: [Option<ServerTime>; 3],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, time: ServerTime) {
        self.data[timer.slot()] = Some(time);
    }

    pub fn get(&self, timer: Timer) -> Option<ServerTime> {
        self.data[timer.slot()]
    }

    pub fn stop(&mut self, timer: Timer) {
        self.data[timer.slot()] = None;
    }

    /// The earliest deadline, if any timer is armed.
    pub fn next_timeout(&self) -> Option<ServerTime> {
        self.data.iter().flatten().min().copied()
    }

    /// The earliest timer due at or before `now`, with its deadline; ties go by precedence.
    pub fn next_expired(&self, now: ServerTime) -> Option<(Timer, ServerTime)> {
        Timer::VALUES
            .iter()
            .filter_map(|&t| self.get(t).filter(|&at| at <= now).map(|at| (t, at)))
            .min_by_key(|&(t, at)| (at, Timer::VALUES.iter().position(|&v| v == t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_timeout_is_the_earliest_armed_deadline() {
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::AutoOpen, ServerTime(300));
        t.set(Timer::CloseBetting, ServerTime(100));
        assert_eq!(t.next_timeout(), Some(ServerTime(100)));
        t.stop(Timer::CloseBetting);
        assert_eq!(t.next_timeout(), Some(ServerTime(300)));
    }

    #[test]
    fn expired_timers_come_out_earliest_first_and_flush_before_close_on_a_tie() {
        let mut t = TimerTable::default();
        t.set(Timer::CloseBetting, ServerTime(100));
        t.set(Timer::FlushTotals, ServerTime(100));
        t.set(Timer::AutoOpen, ServerTime(50));
        assert_eq!(t.next_expired(ServerTime(49)), None);
        assert_eq!(
            t.next_expired(ServerTime(500)),
            Some((Timer::AutoOpen, ServerTime(50)))
        );
        t.stop(Timer::AutoOpen);
        assert_eq!(
            t.next_expired(ServerTime(100)),
            Some((Timer::FlushTotals, ServerTime(100)))
        );
    }
}
