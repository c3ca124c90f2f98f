//! This process's CPU use between two heartbeats, from `/proc/self/stat`.
//!
//! [`CpuMeter::observe`] is sans-IO (time and tick counts in, cores out);
//! [`CpuMeter::measure`] reads the file and the clock around it.

use std::time::Instant;
use tracing::debug;

/// Process CPU in cores (1.0 = one core busy) over the time since the last reading.
#[derive(Debug)]
pub struct CpuMeter {
    ticks_per_sec: f64,
    last: Option<(Instant, u64)>,
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuMeter {
    /// A meter with the kernel's clock tick rate (`sysconf(_SC_CLK_TCK)`, 100 if unknown).
    pub fn new() -> Self {
        // SAFETY: sysconf reads a constant of the system; it has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self::with_tick_rate(if ticks > 0 { ticks as f64 } else { 100.0 })
    }

    pub fn with_tick_rate(ticks_per_sec: f64) -> Self {
        Self {
            ticks_per_sec,
            last: None,
        }
    }

    /// Reads `/proc/self/stat` now: the cores used since the last call (0.0 on the first call,
    /// or when the file cannot be read or parsed).
    pub fn measure(&mut self) -> f64 {
        let now = Instant::now();
        match std::fs::read_to_string("/proc/self/stat") {
            Ok(stat) => match cpu_ticks(&stat) {
                Some(ticks) => self.observe(now, ticks),
                None => {
                    debug!("/proc/self/stat has no utime and stime; CPU reported as 0");
                    0.0
                }
            },
            Err(error) => {
                debug!(%error, "cannot read /proc/self/stat; CPU reported as 0");
                0.0
            }
        }
    }

    /// The process had used `ticks` (utime + stime) at `now`: cores used since the last
    /// observation; 0.0 for the first one, or if time or the ticks went backwards.
    pub fn observe(&mut self, now: Instant, ticks: u64) -> f64 {
        let cores = match self.last {
            Some((then, before)) if now > then && ticks >= before => {
                let secs = now.duration_since(then).as_secs_f64();
                (ticks - before) as f64 / self.ticks_per_sec / secs
            }
            _ => 0.0,
        };
        self.last = Some((now, ticks));
        cores
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so field n is index n - 3.
    let mut fields = after_comm.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ticks_are_counted_after_a_name_with_spaces_and_parentheses() {
        let line = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 2301 0 0 0 150 35 0 0 20 0 9 0 1234 0 0";
        assert_eq!(cpu_ticks(line), Some(185));
        assert_eq!(cpu_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_stat_parses() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_ticks(&stat).is_some(), "{stat}");
    }

    #[test]
    fn cores_are_ticks_over_elapsed_time() {
        let t0 = Instant::now();
        let mut meter = CpuMeter::with_tick_rate(100.0);
        assert_eq!(meter.observe(t0, 1000), 0.0);
        // 150 ticks = 1.5 s of CPU in 1 s: one and a half cores.
        let cores = meter.observe(t0 + Duration::from_secs(1), 1150);
        assert!((cores - 1.5).abs() < 1e-9, "{cores}");
        assert_eq!(meter.observe(t0 + Duration::from_secs(2), 10), 0.0);
    }
}
