//! What a process costs, from `/proc`: CPU time (user + system, every thread) and resident
//! memory. Two CPU readings make a rate in cores; one core fully busy is 1.0.

use std::time::Instant;

/// A process's CPU time at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    pub at: Instant,
    /// Time on a CPU of every thread, in nanoseconds.
    pub nanos: u64,
}

impl CpuReading {
    /// Cores used between `earlier` and this reading.
    pub fn cores_since(&self, earlier: &CpuReading) -> f64 {
        let secs = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        self.nanos.saturating_sub(earlier.nanos) as f64 / 1e9 / secs
    }
}

/// `pid`'s CPU time (`None`: our own process): the sum of its threads' run time in
/// `/proc/PID/task/*/schedstat`, in nanoseconds, so that a small process measured over a few
/// seconds does not read as 0 (`/proc/PID/stat` counts in 10 ms ticks). Falls back to the
/// ticks of `/proc/PID/stat` where schedstat is missing.
pub fn cpu(pid: Option<u32>) -> Option<CpuReading> {
    let tasks = std::fs::read_dir(stat_path(pid, "task")).ok();
    let mut nanos = 0u64;
    let mut any = false;
    for entry in tasks.into_iter().flatten().flatten() {
        let path = entry.path().join("schedstat");
        if let Some(ns) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        {
            nanos += ns;
            any = true;
        }
    }
    if any {
        return Some(CpuReading {
            at: Instant::now(),
            nanos,
        });
    }
    let text = std::fs::read_to_string(stat_path(pid, "stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(CpuReading {
        at: Instant::now(),
        nanos: ((utime + stime) as f64 / clock_ticks_per_sec() * 1e9) as u64,
    })
}

/// The whole machine's busy and stolen CPU time at one instant (`/proc/stat`).
#[derive(Debug, Clone, Copy)]
pub struct MachineReading {
    pub at: Instant,
    /// user + nice + system + irq + softirq (+ guest, inside user), in clock ticks.
    pub busy: u64,
    /// Time the hypervisor ran something else while we wanted a CPU.
    pub steal: u64,
}

impl MachineReading {
    /// Busy and stolen cores between `earlier` and this reading.
    pub fn since(&self, earlier: &MachineReading) -> (f64, f64) {
        let secs = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        let cores = |a: u64, b: u64| a.saturating_sub(b) as f64 / clock_ticks_per_sec() / secs;
        (
            cores(self.busy, earlier.busy),
            cores(self.steal, earlier.steal),
        )
    }
}

pub fn machine() -> Option<MachineReading> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    Some(MachineReading {
        at: Instant::now(),
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        steal: at(7),
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

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpu_list() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        return Vec::new();
    }
    // SAFETY: `set` was filled by the kernel above; CPU_ISSET reads it within CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins every thread of `pid` (`None`: this process) to `cpus`, as `taskset -a -p` does.
/// Threads they start later inherit it.
pub fn pin(pid: Option<u32>, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it for c < CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // Twice: a thread started while the first pass ran inherited the old mask.
    for _ in 0..2 {
        for entry in std::fs::read_dir(stat_path(pid, "task"))? {
            let Some(tid) = entry?
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            // SAFETY: `set` is initialised and its size is passed; the tid may have exited, which
            // is an error we tell from the others below.
            let r = unsafe {
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
            };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
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
        // Spin until the kernel has charged us a few ticks (a busy machine may make us wait).
        let a = cpu(None).expect("/proc/self/stat");
        let t = Instant::now();
        let mut x = 0u64;
        let mut b = a;
        while b.nanos < a.nanos + 30_000_000 && t.elapsed().as_secs() < 10 {
            for _ in 0..100_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            b = cpu(None).expect("/proc/self/stat");
        }
        std::hint::black_box(x);
        assert!(
            b.nanos >= a.nanos + 30_000_000,
            "no CPU time charged in 10 s"
        );
        let cores = b.cores_since(&a);
        assert!(cores > 0.0 && cores < 4.0, "{cores}");
        let m = memory(None).expect("/proc/self/status");
        assert!(m.rss > 1 << 20 && m.peak_rss >= m.rss);
        assert!(allowed_cpus() >= 1);
        let m0 = machine().expect("/proc/stat");
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (busy, steal) = machine().expect("/proc/stat").since(&m0);
        assert!(busy >= 0.0 && steal >= 0.0);
    }

    #[test]
    fn pinning_to_the_cpus_we_have_changes_nothing_and_works() {
        let cpus = allowed_cpu_list();
        assert_eq!(cpus.len(), allowed_cpus(), "{cpus:?}");
        pin(None, &cpus).expect("pin to our own mask");
        assert_eq!(allowed_cpu_list(), cpus);
    }
}
