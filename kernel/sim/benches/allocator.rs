//! Port of Mesos' `HierarchicalAllocator_BENCHMARK_Test.DeclineOffers`: every agent is
//! `cpus:24;mem:4096;disk:4096;ports:[31000-32000]` with 16 cpus and 16 ports used by one
//! framework (round-robin); frameworks decline every offer with an infinite filter; each
//! round times one batch `allocate()`.
//!
//! `cargo bench -p basalt-kernel-sim --bench allocator [-- AGENTS FRAMEWORKS ROUNDS]`
//! (default 10000 1000 20). Mesos 1.7.1 at 10,000 x 1,000: 1.06 s per round, 1.61 s to
//! add the agents (commit 86653356d).
#![allow(clippy::disallowed_types, clippy::print_stdout)]

use basalt_kernel_core::{Allocator, Timestamp};
use basalt_kernel_sim::*;
use std::time::Instant;

const ROLES: usize = 10;
const MESOS_ROUND_S: f64 = 1.06;
const MESOS_ADD_AGENTS_S: f64 = 1.61;

fn main() {
    // cargo passes `--bench`; numbers are ours.
    let nums: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let agents = nums.first().copied().unwrap_or(10_000);
    let frameworks = nums.get(1).copied().unwrap_or(1_000);
    let rounds = nums.get(2).copied().unwrap_or(20);

    let mut al = Allocator::new();
    let t = Instant::now();
    for f in 0..frameworks {
        al.add_framework(framework_id(f), format!("role{}", f % ROLES), true);
    }
    let add_fw = t.elapsed().as_secs_f64();

    let total = decline_offers_agent();
    let used = decline_offers_used();
    let t = Instant::now();
    for a in 0..agents {
        al.add_agent(
            agent_id(a),
            total.clone(),
            vec![(framework_id(a % frameworks), used.clone())],
        );
    }
    let add_agents = t.elapsed().as_secs_f64();
    println!("added {frameworks} frameworks in {:.1} ms", add_fw * 1e3);
    println!(
        "added {agents} agents in {:.1} ms (Mesos 1.7.1: {:.0} ms, ratio {:.1}x)",
        add_agents * 1e3,
        MESOS_ADD_AGENTS_S * 1e3,
        MESOS_ADD_AGENTS_S / add_agents
    );

    let mut times = Vec::new();
    let mut now = Timestamp(1_000_000);
    for round in 0..rounds {
        now = now.plus(std::time::Duration::from_secs(1));
        let t = Instant::now();
        let grants = al.allocate(now, round as u64);
        let took = t.elapsed().as_secs_f64();
        times.push(took);
        println!(
            "round {round} allocate() took {:.1} ms to make {} offers",
            took * 1e3,
            grants.len()
        );
        for g in grants {
            al.recover(&g.agent, &g.framework, &g.resources);
            al.add_filter(&g.framework, &g.agent, Timestamp::NEVER);
        }
    }
    if let Some(m) = median(&times) {
        println!(
            "median round: {:.1} ms for {agents} agents x {frameworks} frameworks \
             (Mesos 1.7.1 at 10000 x 1000: {:.0} ms, ratio {:.1}x)",
            m * 1e3,
            MESOS_ROUND_S * 1e3,
            MESOS_ROUND_S / m
        );
    }
}
