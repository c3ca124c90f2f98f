//! What a process costs, from `/proc`: CPU time (user + system, every thread) and resident
//! memory. Two CPU readings make a rate in cores; one core fully busy is 1.0.

use std::time::Instant;

/// A process's CPU time at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    pub at: Instant,
    /// User + system time of every thread, in clock ticks.
    pub ticks: u64,
}

impl CpuReading {
    /// Cores used between `earlier` and this reading.
    pub fn cores_since(&self, earlier: &CpuReading) -> f64 {
        let secs = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        self.ticks.saturating_sub(earlier.ticks) as f64 / clock_ticks_per_sec() / secs
    }
}

/// `pid`'s CPU time (`None`: our own process).
pub fn cpu(pid: Option<u32>) -> Option<CpuReading> {
    let text = std::fs::read_to_string(stat_path(pid, "stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(CpuReading {
        at: Instant::now(),
        ticks: utime + stime,
    })
}

/// Resident and peak resident memory of `pid` (`None`: our own), in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub peak_rss: u64,
}

pub fn memory(pid: Option<u32>) -> Option<Memory> {
    let text = std::fs::read_to_string(stat_path(pid, "status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some(Memory {
        rss: kb("VmRSS:")? * 1024,
        peak_rss: kb("VmHWM:").unwrap_or(0) * 1024,
    })
}

/// How many CPUs this process may run on (its affinity mask), for "is the load tool saturated".
pub fn allowed_cpus() -> usize {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        return std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    // SAFETY: `set` was filled by the kernel above.
    (unsafe { libc::CPU_COUNT(&set) } as usize).max(1)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn stat_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_uses_cpu_and_memory() {
        let a = cpu(None).expect("/proc/self/stat");
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 60 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = cpu(None).expect("/proc/self/stat");
        let cores = b.cores_since(&a);
        assert!(cores > 0.2 && cores < 4.0, "{cores}");
        let m = memory(None).expect("/proc/self/status");
        assert!(m.rss > 1 << 20 && m.peak_rss >= m.rss);
        assert!(allowed_cpus() >= 1);
    }
}
