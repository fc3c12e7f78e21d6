use super::*;
use basalt_api::Ranges;
use proptest::prelude::*;

fn agent(n: usize) -> AgentId {
    AgentId::new(format!("a{n}"))
}
fn fw(n: usize) -> FrameworkId {
    FrameworkId::new(format!("f{n}"))
}
fn res(cpus: f64, mem: f64) -> Resources {
    Resources::new(cpus, mem)
}
fn t(ms: u64) -> Timestamp {
    Timestamp(ms)
}

/// Every agent's available plus everything held equals its total, and nothing is
/// negative: the allocator never double-offers or over-commits.
fn assert_conserved(al: &Allocator) {
    for a in al.agents.iter().flatten() {
        let held = a
            .held
            .values()
            .fold(RoleResources::default(), |acc, r| acc.add(r));
        let sum = a.available.add(&held);
        for (role, r) in &a.total.0 {
            let s = sum.get(role);
            assert_eq!(
                (s.cpus, s.mem, s.disk),
                (r.cpus, r.mem, r.disk),
                "agent {} role {role}: available + held != total",
                a.id
            );
            assert!(
                s.ports == r.ports,
                "agent {} role {role}: ports not conserved",
                a.id
            );
        }
        for r in a
            .available
            .0
            .values()
            .chain(a.held.values().flat_map(|h| h.0.values()))
        {
            assert!(r.cpus.0 >= 0 && r.mem.0 >= 0 && r.disk.0 >= 0);
        }
    }
}

#[test]
fn one_framework_gets_every_agent_once_per_round() {
    let mut al = Allocator::new();
    al.add_framework(fw(0), "web".into(), true);
    for i in 0..3 {
        al.add_agent(
            agent(i),
            RoleResources::unreserved(res(4.0, 1024.0)),
            vec![],
        );
    }
    let g = al.allocate(t(0), 1);
    assert_eq!(g.len(), 3);
    assert!(g.iter().all(|g| g.resources.total().cpus == Milli(4000)));
    assert!(
        al.allocate(t(1), 2).is_empty(),
        "all held: nothing left to offer"
    );
    assert_eq!(al.role_allocation("web").cpus, Milli(12_000));
    assert_conserved(&al);
}

#[test]
fn declined_agents_are_filtered_until_the_filter_expires_or_revive() {
    let mut al = Allocator::new();
    al.add_framework(fw(0), "r".into(), true);
    al.add_agent(agent(0), RoleResources::unreserved(res(1.0, 128.0)), vec![]);
    let g = al.allocate(t(0), 0);
    al.recover(&g[0].agent, &g[0].framework, &g[0].resources);
    al.add_filter(&fw(0), &agent(0), t(5_000));
    assert!(al.allocate(t(1_000), 0).is_empty());
    assert_eq!(al.allocate(t(5_000), 0).len(), 1, "expired filter");
    let g = al.allocate(t(5_001), 0);
    assert!(g.is_empty());
    al.recover(
        &agent(0),
        &fw(0),
        &RoleResources::unreserved(res(1.0, 128.0)),
    );
    al.add_filter(&fw(0), &agent(0), Timestamp::NEVER);
    assert!(al.allocate(t(6_000), 0).is_empty());
    al.revive(&fw(0));
    assert_eq!(al.allocate(t(6_001), 0).len(), 1, "revive clears filters");
}

#[test]
fn suppressed_and_inactive_frameworks_and_agents_get_nothing() {
    let mut al = Allocator::new();
    al.add_framework(fw(0), "r".into(), true);
    al.add_framework(fw(1), "r".into(), false);
    al.add_agent(agent(0), RoleResources::unreserved(res(1.0, 128.0)), vec![]);
    al.suppress(&fw(0));
    assert!(al.allocate(t(0), 0).is_empty());
    al.activate_framework(&fw(1), true);
    let g = al.allocate(t(0), 0);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].framework, fw(1));
    al.recover(&agent(0), &fw(1), &g[0].resources);
    al.activate_agent(&agent(0), false);
    assert!(al.allocate(t(0), 0).is_empty());
}

#[test]
fn reserved_resources_go_only_to_their_role() {
    let mut al = Allocator::new();
    al.add_framework(fw(0), "other".into(), true);
    let mut total = RoleResources::unreserved(res(1.0, 256.0));
    total.add_to("db", &res(3.0, 1024.0));
    al.add_agent(agent(0), total, vec![]);
    let g = al.allocate(t(0), 0);
    assert_eq!(g.len(), 1);
    assert!(!g[0].resources.0.contains_key("db"));
    al.add_framework(fw(1), "db".into(), true);
    let g = al.allocate(t(1), 0);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].framework, fw(1));
    assert_eq!(g[0].resources.get("db").cpus, Milli(3000));
    assert_conserved(&al);
}

#[test]
fn lower_share_role_is_served_first_and_weights_count() {
    let mut al = Allocator::new();
    for i in 0..4 {
        al.add_agent(agent(i), RoleResources::unreserved(res(1.0, 100.0)), vec![]);
    }
    al.add_framework(fw(0), "a".into(), true);
    al.add_framework(fw(1), "b".into(), true);
    al.set_weight("b", 3.0);
    let g = al.allocate(t(0), 7);
    let b = g.iter().filter(|g| g.framework == fw(1)).count();
    assert_eq!(b, 3, "weight 3 role gets 3 of 4 agents: {g:?}");
}

#[test]
fn quota_limit_is_never_exceeded() {
    let mut al = Allocator::new();
    al.set_quota("capped", Resources::default(), Some(res(2.5, 10_000.0)));
    al.add_framework(fw(0), "capped".into(), true);
    for i in 0..4 {
        al.add_agent(agent(i), RoleResources::unreserved(res(1.0, 100.0)), vec![]);
    }
    al.allocate(t(0), 0);
    assert_eq!(al.role_allocation("capped").cpus, Milli(2500));
    assert!(al.allocate(t(1), 0).is_empty());
}

#[test]
fn quota_guarantee_is_held_back_from_other_roles() {
    let mut al = Allocator::new();
    for i in 0..4 {
        al.add_agent(agent(i), RoleResources::unreserved(res(1.0, 100.0)), vec![]);
    }
    al.set_quota("gold", res(2.0, 200.0), None);
    al.add_framework(fw(0), "greedy".into(), true);
    al.allocate(t(0), 0);
    assert_eq!(
        al.role_allocation("greedy").cpus,
        Milli(2000),
        "two agents' worth stays free for gold's guarantee"
    );
    al.add_framework(fw(1), "gold".into(), true);
    al.allocate(t(1), 0);
    assert_eq!(al.role_allocation("gold").cpus, Milli(2000));
    assert_conserved(&al);
}

#[test]
fn existing_tasks_count_on_add_agent_and_removal_returns_them() {
    let mut al = Allocator::new();
    al.add_framework(fw(0), "r".into(), true);
    al.add_agent(
        agent(0),
        RoleResources::unreserved(res(4.0, 1024.0)),
        vec![(fw(0), RoleResources::unreserved(res(3.0, 512.0)))],
    );
    assert_eq!(al.available(&agent(0)).total().cpus, Milli(1000));
    assert_eq!(al.role_allocation("r").cpus, Milli(3000));
    al.remove_framework(&fw(0));
    assert_eq!(al.available(&agent(0)).total().cpus, Milli(4000));
    al.remove_agent(&agent(0));
    assert_eq!(al.cluster, Scalars::default());
}

#[test]
fn recover_never_returns_more_than_was_held() {
    let mut al = Allocator::new();
    al.add_framework(fw(0), "r".into(), true);
    al.add_agent(agent(0), RoleResources::unreserved(res(1.0, 128.0)), vec![]);
    al.allocate(t(0), 0);
    al.recover(
        &agent(0),
        &fw(0),
        &RoleResources::unreserved(res(5.0, 5000.0)),
    );
    assert_eq!(al.available(&agent(0)).total().cpus, Milli(1000));
    assert_conserved(&al);
}

#[test]
fn ports_are_offered_and_returned_exactly() {
    let mut al = Allocator::new();
    al.add_framework(fw(0), "r".into(), true);
    let ports = Ranges::from_pairs([(31000, 31009)]).expect("ranges");
    al.add_agent(
        agent(0),
        RoleResources::unreserved(res(1.0, 128.0).with_ports(ports.clone())),
        vec![],
    );
    let g = al.allocate(t(0), 0);
    assert_eq!(g[0].resources.get("*").ports, ports);
    let mut part = RoleResources::unreserved(res(0.5, 64.0));
    part.0.get_mut("*").expect("star").ports = Ranges::single(31003);
    al.recover(&agent(0), &fw(0), &part);
    assert_eq!(
        al.available(&agent(0)).get("*").ports,
        Ranges::single(31003)
    );
    assert_conserved(&al);
}

/// A random cluster and a random script of master calls.
#[derive(Debug, Clone)]
enum Op {
    Allocate(u64),
    RecoverAll(usize),
    Filter(usize, usize, u64),
    Suppress(usize),
    Revive(usize),
    Deactivate(usize),
    RemoveAgent(usize),
    AddAgent(usize, u32, u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u64>().prop_map(Op::Allocate),
        2 => (0..6usize).prop_map(Op::RecoverAll),
        1 => (0..6usize, 0..8usize, 0..3u64).prop_map(|(f, a, s)| Op::Filter(f, a, s)),
        1 => (0..6usize).prop_map(Op::Suppress),
        1 => (0..6usize).prop_map(Op::Revive),
        1 => (0..8usize).prop_map(Op::Deactivate),
        1 => (0..8usize).prop_map(Op::RemoveAgent),
        1 => (0..8usize, 1..16u32, 64..4096u32).prop_map(|(a, c, m)| Op::AddAgent(a, c, m)),
    ]
}

struct World {
    al: Allocator,
    roles: Vec<String>,
    limits: BTreeMap<String, Resources>,
    /// What the test believes each framework holds per agent.
    held: BTreeMap<(usize, usize), RoleResources>,
    now: u64,
}

fn world(agents: &[(u32, u32, bool)], roles: usize, quota: Option<(f64, f64)>) -> World {
    let mut al = Allocator::new();
    let roles: Vec<String> = (0..roles).map(|r| format!("role{r}")).collect();
    let mut limits = BTreeMap::new();
    if let Some((c, m)) = quota {
        al.set_quota(&roles[0], Resources::default(), Some(res(c, m)));
        limits.insert(roles[0].clone(), res(c, m));
    }
    for f in 0..6 {
        al.add_framework(fw(f), roles[f % roles.len()].clone(), true);
    }
    for (i, (c, m, reserved)) in agents.iter().enumerate() {
        let mut total = RoleResources::unreserved(res(f64::from(*c), f64::from(*m)));
        if *reserved {
            total.add_to(&roles[i % roles.len()], &res(1.0, 64.0));
        }
        al.add_agent(agent(i), total, vec![]);
    }
    World {
        al,
        roles,
        limits,
        held: BTreeMap::new(),
        now: 0,
    }
}

fn role_of(w: &World, f: usize) -> &str {
    &w.roles[f % w.roles.len()]
}

fn apply(w: &mut World, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Allocate(seed) => {
            w.now += 1000;
            let avail_before: BTreeMap<usize, RoleResources> =
                (0..8).map(|a| (a, w.al.available(&agent(a)))).collect();
            let grants = w.al.allocate(Timestamp(w.now), *seed);
            let mut seen = BTreeSet::new();
            for g in &grants {
                let a: usize = g.agent.as_str()[1..]
                    .parse()
                    .map_err(|_| TestCaseError::fail("id"))?;
                let f: usize = g.framework.as_str()[1..]
                    .parse()
                    .map_err(|_| TestCaseError::fail("id"))?;
                prop_assert!(
                    seen.insert((f, a)),
                    "two grants for one framework and agent"
                );
                prop_assert!(
                    avail_before[&a].contains(&g.resources),
                    "granted more than was free"
                );
                for role in g.resources.0.keys() {
                    prop_assert!(
                        role == UNRESERVED || role == role_of(w, f),
                        "reservation for {role} offered to a framework of {}",
                        role_of(w, f)
                    );
                }
                prop_assert!(allocatable(&g.resources.total()));
                let e = w.held.entry((f, a)).or_default();
                *e = e.add(&g.resources);
            }
        }
        Op::RecoverAll(f) => {
            let keys: Vec<_> = w.held.keys().filter(|(ff, _)| ff == f).copied().collect();
            for k in keys {
                if let Some(r) = w.held.remove(&k) {
                    w.al.recover(&agent(k.1), &fw(k.0), &r);
                }
            }
        }
        Op::Filter(f, a, secs) => {
            w.al.add_filter(&fw(*f), &agent(*a), Timestamp(w.now + secs * 1000));
        }
        Op::Suppress(f) => w.al.suppress(&fw(*f)),
        Op::Revive(f) => w.al.revive(&fw(*f)),
        Op::Deactivate(a) => w.al.activate_agent(&agent(*a), false),
        Op::RemoveAgent(a) => {
            w.al.remove_agent(&agent(*a));
            w.held.retain(|k, _| k.1 != *a);
        }
        Op::AddAgent(a, c, m) => {
            w.al.remove_agent(&agent(*a));
            w.held.retain(|k, _| k.1 != *a);
            w.al.add_agent(
                agent(*a),
                RoleResources::unreserved(res(f64::from(*c), f64::from(*m))),
                vec![],
            );
        }
    }
    assert_conserved(&w.al);
    for (role, limit) in &w.limits {
        let held = w.al.role_allocation(role);
        prop_assert!(
            held.cpus <= limit.cpus && held.mem <= limit.mem,
            "{role} holds {held} over its limit {limit}"
        );
    }
    Ok(())
}

fn agents_strategy() -> impl Strategy<Value = Vec<(u32, u32, bool)>> {
    prop::collection::vec((1..16u32, 64..8192u32, any::<bool>()), 1..8)
}

proptest! {
    #[test]
    fn random_scripts_never_overcommit_and_honour_reservations_and_limits(
        agents in agents_strategy(),
        roles in 1..4usize,
        quota in prop::option::of((1..8u32, 128..4096u32)),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut w = world(&agents, roles, quota.map(|(c, m)| (f64::from(c), f64::from(m))));
        for op in &ops {
            apply(&mut w, op)?;
        }
    }

    /// DRF: walking one round's grants in the order they were made, the role that got
    /// each grant had the lowest weighted dominant share among the roles that were
    /// waiting and could use that agent.
    #[test]
    fn no_role_gains_while_a_lower_share_role_waits(
        agents in prop::collection::vec((1..16u32, 64..8192u32), 1..24),
        weights in prop::collection::vec(1..4u32, 2..5),
        seed in any::<u64>(),
        prior in prop::collection::vec((0..5usize, 0..24usize), 0..6),
    ) {
        let mut al = Allocator::new();
        let roles: Vec<String> = (0..weights.len()).map(|r| format!("r{r}")).collect();
        for (r, w) in roles.iter().zip(&weights) {
            al.set_weight(r, f64::from(*w));
        }
        for (f, r) in roles.iter().enumerate() {
            al.add_framework(fw(f), r.clone(), true);
        }
        for (i, (c, m)) in agents.iter().enumerate() {
            // Earlier tasks give roles different starting shares.
            let used: Vec<_> = prior
                .iter()
                .filter(|(f, a)| *a == i && *f < roles.len())
                .map(|(f, _)| (fw(*f), RoleResources::unreserved(res(0.5, 32.0))))
                .take(1)
                .collect();
            al.add_agent(agent(i), RoleResources::unreserved(res(f64::from(*c), f64::from(*m))), used);
        }
        let total = al.cluster;
        let mut held: BTreeMap<String, Scalars> =
            roles.iter().map(|r| (r.clone(), al.roles[r].held)).collect();
        let share = |h: Scalars, w: f64| -> f64 {
            (0..3)
                .filter(|i| total.0[*i] > 0)
                .map(|i| h.0[i] as f64 / total.0[i] as f64)
                .fold(0.0, f64::max)
                / w
        };
        let grants = al.allocate(Timestamp(0), seed);
        for g in &grants {
            let f: usize = g.framework.as_str()[1..].parse().map_err(|_| TestCaseError::fail("id"))?;
            let mine = share(held[&roles[f]], f64::from(weights[f]));
            for (o, r) in roles.iter().enumerate() {
                let theirs = share(held[r], f64::from(weights[o]));
                prop_assert!(
                    mine <= theirs + 1e-12,
                    "{} (share {mine}) was served while {r} (share {theirs}) waited",
                    roles[f]
                );
            }
            let e = held.get_mut(&roles[f]).ok_or_else(|| TestCaseError::fail("role"))?;
            *e = e.plus(Scalars::of_all(&g.resources));
        }
        assert_conserved(&al);
    }
}
