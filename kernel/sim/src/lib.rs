//! Simulated clusters for benchmarks: thousands of agents and frameworks driven straight
//! into the master's deterministic core, no sockets, so a run measures our code and not
//! the network.
//!
//! Owns: the cluster shapes the benchmarks share (Mesos' `DeclineOffers` agent profile)
//! and the small statistics they print.
//! Never: ships in the `basalt` binary or is used by a test to assert a timing.

use basalt_api::{AgentId, FrameworkId, Ranges, Resources, RoleResources};

/// Mesos `HierarchicalAllocator_BENCHMARK_Test.DeclineOffers` agent:
/// `cpus:24;mem:4096;disk:4096;ports:[31000-32000]`.
pub fn decline_offers_agent() -> RoleResources {
    let ports = Ranges::from_pairs([(31000, 32000)]).unwrap_or_default();
    RoleResources::unreserved(
        Resources::new(24.0, 4096.0)
            .with_disk(4096.0)
            .with_ports(ports),
    )
}

/// What one framework already uses on each agent in that benchmark: 16 cpus and 16
/// single ports (Mesos uses 16 port ranges; single ports keep the range list as long).
pub fn decline_offers_used() -> RoleResources {
    let ports =
        Ranges::from_pairs((0..16).map(|i| (31000 + i * 2, 31000 + i * 2))).unwrap_or_default();
    RoleResources::unreserved(Resources::new(16.0, 0.0).with_ports(ports))
}

pub fn agent_id(i: usize) -> AgentId {
    AgentId::new(format!("agent-{i}"))
}

pub fn framework_id(i: usize) -> FrameworkId {
    FrameworkId::new(format!("framework-{i}"))
}

/// Median of a sample (the upper median for even sizes); `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Resident set size of this process in bytes, from `/proc/self/status`.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_picks_the_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn profile_matches_mesos_decline_offers() {
        let a = decline_offers_agent().total();
        assert_eq!(a.cpus.as_f64(), 24.0);
        assert_eq!(a.ports.count(), 1001);
        assert!(a.contains(&decline_offers_used().total()));
    }

    #[test]
    fn rss_is_readable_here() {
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }
}
