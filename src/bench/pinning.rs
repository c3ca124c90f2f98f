//! Where a `bench --cascade` run puts its processes: the origin on a core of its own, so its CPU
//! is its alone; the edges on their own cores too when there are enough; redis-server, the
//! publisher and the players (this tool) on what is left.
//!
//! | CPUs the tool may use | origin | edge 1 | edge 2 | redis, tool |
//! |---|---|---|---|---|
//! | 1 | not pinned | | | |
//! | 2: `x`, `y` | `y` | `x` | `x` | `x` |
//! | 3: `x`, `y`, `z` | `x` | `y` | `y` | `z` |
//! | 4 or more | 1st | 2nd | 3rd | the rest |
//!
//! Pinning is a best effort: a CPU list the kernel refuses is reported, never fatal.

use super::procfs;
use tracing::warn;

/// Which CPUs each part of a run gets (`None`: left alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub origin: Option<Vec<usize>>,
    pub edges: [Option<Vec<usize>>; 2],
    /// redis-server and this tool (the publisher and every player).
    pub rest: Option<Vec<usize>>,
}

impl Plan {
    /// The plan for the CPUs this process may use.
    pub fn for_cpus(cpus: &[usize]) -> Plan {
        let one = |i: usize| Some(vec![cpus[i]]);
        match cpus.len() {
            0 | 1 => Plan {
                origin: None,
                edges: [None, None],
                rest: None,
            },
            2 => Plan {
                origin: one(1),
                edges: [one(0), one(0)],
                rest: one(0),
            },
            3 => Plan {
                origin: one(0),
                edges: [one(1), one(1)],
                rest: one(2),
            },
            _ => Plan {
                origin: one(0),
                edges: [one(1), one(2)],
                rest: Some(cpus[3..].to_vec()),
            },
        }
    }

    /// Pins this tool, before it starts anything: redis-server and the nodes inherit its CPUs
    /// until [`Plan::pin_nodes`] moves them. Returns what went wrong, if anything.
    pub fn pin_self(&self) -> Option<String> {
        let cpus = self.rest.as_ref()?;
        procfs::pin(None, cpus)
            .err()
            .map(|e| format!("this tool not pinned to {}: {e}", list(cpus)))
    }

    /// Pins the origin and the edges (by pid), once the origin is known.
    pub fn pin_nodes(&self, origin: Option<u32>, edges: [Option<u32>; 2]) -> Vec<String> {
        let mut problems = Vec::new();
        let parts = [(origin, &self.origin, "origin")].into_iter().chain([
            (edges[0], &self.edges[0], "edge"),
            (edges[1], &self.edges[1], "edge"),
        ]);
        for (pid, cpus, what) in parts {
            let (Some(pid), Some(cpus)) = (pid, cpus) else {
                continue;
            };
            if let Err(e) = procfs::pin(Some(pid), cpus) {
                problems.push(format!(
                    "{what} (pid {pid}) not pinned to {}: {e}",
                    list(cpus)
                ));
            }
        }
        problems
    }

    /// The plan in words, with any problems applying it.
    pub fn describe(&self, names: (&str, [&str; 2]), problems: &[String]) -> String {
        let mut text = match (&self.origin, &self.edges, &self.rest) {
            (Some(o), [Some(e1), Some(e2)], Some(rest)) if e1 == e2 && e1 == rest => format!(
                "pinned: origin {} alone on CPU {}; edges {} and {}, redis-server and this tool on CPU {}",
                names.0,
                list(o),
                names.1[0],
                names.1[1],
                list(rest)
            ),
            (Some(o), [Some(e1), Some(e2)], Some(rest)) => format!(
                "pinned: origin {} on CPU {}, edge {} on CPU {}, edge {} on CPU {}, redis-server and this tool on CPU {}",
                names.0,
                list(o),
                names.1[0],
                list(e1),
                names.1[1],
                list(e2),
                list(rest)
            ),
            _ => "not pinned: this tool may use one CPU only".to_owned(),
        };
        for p in problems {
            warn!("{p}");
            text.push_str("; ");
            text.push_str(p);
        }
        text
    }
}

fn list(cpus: &[usize]) -> String {
    let v: Vec<String> = cpus.iter().map(usize::to_string).collect();
    v.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_gets_a_core_of_its_own_when_there_are_two() {
        let p = Plan::for_cpus(&[0, 1]);
        assert_eq!(p.origin, Some(vec![1]));
        assert_eq!(p.edges, [Some(vec![0]), Some(vec![0])]);
        assert_eq!(p.rest, Some(vec![0]));
        assert_eq!(
            p.describe(("a", ["b", "c"]), &[]),
            "pinned: origin a alone on CPU 1; edges b and c, redis-server and this tool on CPU 0"
        );
    }

    #[test]
    fn every_node_gets_its_own_core_from_four() {
        let p = Plan::for_cpus(&[2, 3, 5, 6, 7]);
        assert_eq!(p.origin, Some(vec![2]));
        assert_eq!(p.edges, [Some(vec![3]), Some(vec![5])]);
        assert_eq!(p.rest, Some(vec![6, 7]));
        let three = Plan::for_cpus(&[0, 1, 2]);
        assert_eq!((three.origin, three.rest), (Some(vec![0]), Some(vec![2])));
    }

    #[test]
    fn one_cpu_pins_nothing_and_says_so() {
        let p = Plan::for_cpus(&[0]);
        assert_eq!(p.origin, None);
        assert_eq!(p.pin_self(), None);
        assert!(p.pin_nodes(Some(1), [Some(2), Some(3)]).is_empty());
        assert!(p.describe(("a", ["b", "c"]), &[]).starts_with("not pinned"));
    }
}
