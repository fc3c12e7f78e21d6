//! DRF allocator, in the shape of Mesos' `HierarchicalAllocator`: the master tells it what
//! exists and what is held; `allocate` decides who is offered what. Deterministic: no
//! clock, no RNG (a seed comes in), no I/O.
//!
//! Contract with the master:
//! - Resources are `api::RoleResources`: per reservation role, `*` = unreserved.
//! - "allocated" = offered or used by tasks. The master reports every change.
//! - Every method is cheap (O(1) or O(log n) amortised) except `allocate`; `allocate` is
//!   one batch round: it returns at most one grant per (framework, agent) and records the
//!   grants as allocated to those frameworks before returning.
//!
//! Why it is fast: agents and frameworks are interned to dense indices, the DRF order is
//! rebuilt once per round (O(F log F), never per agent) and then kept by re-keying only
//! the framework and role that just received a grant. Filters live on the agent, so the
//! check while scanning candidates is one small hash lookup.

use crate::time::Timestamp;
use basalt_api::resources::UNRESERVED;
use basalt_api::{AgentId, FrameworkId, Milli, Resources, RoleResources};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One offer's worth: `resources` of `agent` go to `framework`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub resources: RoleResources,
}

/// Mesos' default `--min_allocatable_resources=cpus:0.01|mem:32`.
const MIN_CPUS: Milli = Milli(10);
const MIN_MEM: Milli = Milli(32_000);

fn allocatable(r: &Resources) -> bool {
    r.cpus >= MIN_CPUS || r.mem >= MIN_MEM
}

/// cpus, mem, disk: the resources a dominant share is computed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scalars([i64; 3]);

impl Scalars {
    fn of(r: &Resources) -> Self {
        Scalars([r.cpus.0, r.mem.0, r.disk.0])
    }
    fn of_all(r: &RoleResources) -> Self {
        r.0.values()
            .fold(Scalars::default(), |a, r| a.plus(Scalars::of(r)))
    }
    fn plus(self, o: Scalars) -> Self {
        Scalars([self.0[0] + o.0[0], self.0[1] + o.0[1], self.0[2] + o.0[2]])
    }
    fn minus(self, o: Scalars) -> Self {
        Scalars([self.0[0] - o.0[0], self.0[1] - o.0[1], self.0[2] - o.0[2]])
    }
    fn floor0(self) -> Self {
        Scalars(self.0.map(|v| v.max(0)))
    }
}

#[derive(Debug)]
pub(crate) struct AgentSlot {
    id: AgentId,
    total: RoleResources,
    available: RoleResources,
    active: bool,
    /// What each framework holds here (offered or in use).
    held: HashMap<u32, RoleResources>,
    /// Framework index → hidden until.
    pub(crate) filters: HashMap<u32, Timestamp>,
}

#[derive(Debug)]
pub(crate) struct FrameworkSlot {
    id: FrameworkId,
    role: String,
    active: bool,
    suppressed: bool,
    held: Scalars,
    /// Agents carrying a filter for this framework, so `revive` can clear them.
    filtered: HashSet<u32>,
}

#[derive(Debug, Clone)]
struct Quota {
    guarantee: Resources,
    limit: Option<Resources>,
}

#[derive(Debug)]
struct RoleSlot {
    weight: f64,
    quota: Option<Quota>,
    held: Scalars,
    frameworks: BTreeSet<u32>,
}

impl Default for RoleSlot {
    fn default() -> Self {
        RoleSlot {
            weight: 1.0,
            quota: None,
            held: Scalars::default(),
            frameworks: BTreeSet::new(),
        }
    }
}

impl RoleSlot {
    /// Per scalar: how much more the role may hold before its limit.
    fn limit_room(&self) -> Option<Scalars> {
        let l = self.quota.as_ref()?.limit.as_ref()?;
        Some(Scalars::of(l).minus(self.held).floor0())
    }

    /// Per scalar: what the role is still owed under its guarantee.
    fn deficit(&self) -> Scalars {
        match &self.quota {
            Some(q) => Scalars::of(&q.guarantee).minus(self.held).floor0(),
            None => Scalars::default(),
        }
    }
}

/// Sort key for a dominant share: non-negative `f64` bits order like the floats.
type ShareKey = u64;

#[derive(Debug, Default)]
pub struct Allocator {
    pub(crate) agents: Vec<Option<AgentSlot>>,
    agent_index: HashMap<AgentId, u32>,
    free_agents: Vec<u32>,
    pub(crate) frameworks: Vec<Option<FrameworkSlot>>,
    framework_index: HashMap<FrameworkId, u32>,
    free_frameworks: Vec<u32>,
    roles: BTreeMap<String, RoleSlot>,
    /// Sum of every registered agent's total: the DRF denominator.
    cluster: Scalars,
}

/// The round's DRF order: roles by weighted share, frameworks within a role by share.
struct Order {
    roles: BTreeSet<(ShareKey, String)>,
    role_key: HashMap<String, ShareKey>,
    frameworks: HashMap<String, BTreeSet<(ShareKey, u32)>>,
    framework_key: HashMap<u32, ShareKey>,
}

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    fn role_mut(&mut self, role: &str) -> &mut RoleSlot {
        self.roles.entry(role.to_owned()).or_default()
    }

    /// Role weight (default 1.0); a role with weight 2 is entitled to twice the share.
    pub fn set_weight(&mut self, role: &str, weight: f64) {
        let w = if weight.is_finite() && weight > 0.0 {
            weight
        } else {
            1.0
        };
        self.role_mut(role).weight = w;
    }

    /// Quota: `guarantee` is allocated to the role first and held back from others as
    /// headroom; `limit` is never exceeded by what the role holds. Empty guarantee and
    /// `None` limit remove the quota.
    pub fn set_quota(&mut self, role: &str, guarantee: Resources, limit: Option<Resources>) {
        let quota = if guarantee.is_empty() && limit.is_none() {
            None
        } else {
            Some(Quota { guarantee, limit })
        };
        self.role_mut(role).quota = quota;
    }

    fn agent_ix(&self, agent: &AgentId) -> Option<u32> {
        self.agent_index.get(agent).copied()
    }

    fn framework_ix(&self, framework: &FrameworkId) -> Option<u32> {
        self.framework_index.get(framework).copied()
    }

    /// A new or re-registered agent with its total resources and what its known tasks
    /// already hold (`used`, per framework). Frameworks in `used` were added before.
    pub fn add_agent(
        &mut self,
        agent: AgentId,
        total: RoleResources,
        used: Vec<(FrameworkId, RoleResources)>,
    ) {
        if self.agent_index.contains_key(&agent) {
            self.remove_agent(&agent);
        }
        self.cluster = self.cluster.plus(Scalars::of_all(&total));
        let slot = AgentSlot {
            id: agent.clone(),
            available: total.clone(),
            total,
            active: true,
            held: HashMap::new(),
            filters: HashMap::new(),
        };
        let ix = place(&mut self.agents, &mut self.free_agents, slot);
        self.agent_index.insert(agent, ix);
        for (fw, r) in used {
            if let Some(f) = self.framework_ix(&fw) {
                self.hold(ix, f, &r);
            }
        }
    }

    /// Replaces an agent's total (dynamic reservations change the role split).
    pub fn update_agent_total(&mut self, agent: &AgentId, total: RoleResources) {
        let Some(ix) = self.agent_ix(agent) else {
            return;
        };
        let Some(a) = self.agents[ix as usize].as_mut() else {
            return;
        };
        let held = a
            .held
            .values()
            .fold(RoleResources::default(), |acc, r| acc.add(r));
        self.cluster = self
            .cluster
            .minus(Scalars::of_all(&a.total))
            .plus(Scalars::of_all(&total));
        a.available = total.sub(&held);
        a.total = total;
    }

    /// Forgets the agent and every allocation on it.
    pub fn remove_agent(&mut self, agent: &AgentId) {
        let Some(ix) = self.agent_index.remove(agent) else {
            return;
        };
        let Some(a) = self.agents[ix as usize].take() else {
            return;
        };
        self.free_agents.push(ix);
        self.cluster = self.cluster.minus(Scalars::of_all(&a.total));
        for (f, r) in &a.held {
            self.unaccount(*f, r);
        }
        for f in a.filters.keys() {
            if let Some(fw) = self.frameworks[*f as usize].as_mut() {
                fw.filtered.remove(&ix);
            }
        }
    }

    /// Inactive agents (unreachable) are never offered; allocations on them stay counted.
    pub fn activate_agent(&mut self, agent: &AgentId, active: bool) {
        if let Some(a) = self
            .agent_ix(agent)
            .and_then(|ix| self.agents[ix as usize].as_mut())
        {
            a.active = active;
        }
    }

    /// A framework in `role`; inactive frameworks (disconnected, failing over) get no offers
    /// but their allocations count toward shares.
    pub fn add_framework(&mut self, framework: FrameworkId, role: String, active: bool) {
        if let Some(ix) = self.framework_ix(&framework) {
            if let Some(f) = self.frameworks[ix as usize].as_mut() {
                f.active = active;
            }
            return;
        }
        let slot = FrameworkSlot {
            id: framework.clone(),
            role: role.clone(),
            active,
            suppressed: false,
            held: Scalars::default(),
            filtered: HashSet::new(),
        };
        let ix = place(&mut self.frameworks, &mut self.free_frameworks, slot);
        self.framework_index.insert(framework, ix);
        self.role_mut(&role).frameworks.insert(ix);
    }

    pub fn activate_framework(&mut self, framework: &FrameworkId, active: bool) {
        if let Some(f) = self
            .framework_ix(framework)
            .and_then(|ix| self.frameworks[ix as usize].as_mut())
        {
            f.active = active;
        }
    }

    /// Forgets the framework; whatever it still held is returned to the agents.
    pub fn remove_framework(&mut self, framework: &FrameworkId) {
        let Some(ix) = self.framework_index.remove(framework) else {
            return;
        };
        self.clear_filters(ix);
        // Holdings are found through the agents: a framework does not index them, which
        // keeps every grant O(1); removal is rare and may scan.
        for a in self.agents.iter_mut().flatten() {
            if let Some(r) = a.held.remove(&ix) {
                a.available = a.available.add(&r);
                let s = Scalars::of_all(&r);
                if let Some(f) = self.frameworks[ix as usize].as_ref()
                    && let Some(role) = self.roles.get_mut(&f.role)
                {
                    role.held = role.held.minus(s);
                }
            }
        }
        if let Some(f) = self.frameworks[ix as usize].take() {
            let remove_role = match self.roles.get_mut(&f.role) {
                Some(role) => {
                    role.frameworks.remove(&ix);
                    role.frameworks.is_empty()
                        && role.quota.is_none()
                        && role.weight == 1.0
                        && role.held == Scalars::default()
                }
                None => false,
            };
            if remove_role {
                self.roles.remove(&f.role);
            }
        }
        self.free_frameworks.push(ix);
    }

    /// Returns resources a framework held (declined or rescinded offer, unused part of an
    /// accepted offer, ended task) to the agent.
    pub fn recover(&mut self, agent: &AgentId, framework: &FrameworkId, resources: &RoleResources) {
        let (Some(a), Some(f)) = (self.agent_ix(agent), self.framework_ix(framework)) else {
            return;
        };
        let Some(slot) = self.agents[a as usize].as_mut() else {
            return;
        };
        let Some(held) = slot.held.get_mut(&f) else {
            return;
        };
        // Never return more than was held: a confused caller must not mint resources.
        let mut back = RoleResources::default();
        for (role, r) in &resources.0 {
            let h = held.get(role);
            let take = Resources {
                cpus: r.cpus.min(h.cpus),
                mem: r.mem.min(h.mem),
                disk: r.disk.min(h.disk),
                ports: r.ports.difference(&r.ports.difference(&h.ports)),
            };
            if !take.is_empty() {
                back.add_to(role, &take);
            }
        }
        *held = held.sub(&back);
        if held.is_empty() {
            slot.held.remove(&f);
        }
        slot.available = slot.available.add(&back);
        self.unaccount(f, &back);
    }

    /// A held allocation changed shape (RESERVE/UNRESERVE on offered resources).
    pub fn update_allocation(
        &mut self,
        agent: &AgentId,
        framework: &FrameworkId,
        from: &RoleResources,
        to: &RoleResources,
    ) {
        let (Some(a), Some(f)) = (self.agent_ix(agent), self.framework_ix(framework)) else {
            return;
        };
        let Some(slot) = self.agents[a as usize].as_mut() else {
            return;
        };
        let Some(held) = slot.held.get_mut(&f) else {
            return;
        };
        *held = held.sub(from).add(to);
        self.unaccount(f, from);
        self.account(f, to);
    }

    /// Hides `agent` from `framework` until `until` (decline with `refuse_seconds`).
    pub fn add_filter(&mut self, framework: &FrameworkId, agent: &AgentId, until: Timestamp) {
        let (Some(a), Some(f)) = (self.agent_ix(agent), self.framework_ix(framework)) else {
            return;
        };
        if let Some(slot) = self.agents[a as usize].as_mut() {
            let e = slot.filters.entry(f).or_insert(until);
            *e = (*e).max(until);
        }
        if let Some(fw) = self.frameworks[f as usize].as_mut() {
            fw.filtered.insert(a);
        }
    }

    pub fn suppress(&mut self, framework: &FrameworkId) {
        if let Some(f) = self
            .framework_ix(framework)
            .and_then(|ix| self.frameworks[ix as usize].as_mut())
        {
            f.suppressed = true;
        }
    }

    /// Clears the framework's filters and suppression.
    pub fn revive(&mut self, framework: &FrameworkId) {
        let Some(ix) = self.framework_ix(framework) else {
            return;
        };
        self.clear_filters(ix);
        if let Some(f) = self.frameworks[ix as usize].as_mut() {
            f.suppressed = false;
        }
    }

    fn clear_filters(&mut self, f: u32) {
        let Some(fw) = self.frameworks[f as usize].as_mut() else {
            return;
        };
        for a in std::mem::take(&mut fw.filtered) {
            if let Some(slot) = self.agents[a as usize].as_mut() {
                slot.filters.remove(&f);
            }
        }
    }

    /// What the agent has neither offered nor in use.
    pub fn available(&self, agent: &AgentId) -> RoleResources {
        self.agent_ix(agent)
            .and_then(|ix| self.agents[ix as usize].as_ref())
            .map(|a| a.available.clone())
            .unwrap_or_default()
    }

    /// What frameworks of `role` hold, summed over agents (scalars only).
    pub fn role_allocation(&self, role: &str) -> Resources {
        let s = self.roles.get(role).map(|r| r.held).unwrap_or_default();
        Resources {
            cpus: Milli(s.0[0]),
            mem: Milli(s.0[1]),
            disk: Milli(s.0[2]),
            ..Default::default()
        }
    }

    /// Records `r` on agent `a` as held by framework `f`.
    fn hold(&mut self, a: u32, f: u32, r: &RoleResources) {
        let Some(slot) = self.agents[a as usize].as_mut() else {
            return;
        };
        // In place: a round does this once per grant, and copies of every agent's
        // resources were most of its cost.
        let e = slot.held.entry(f).or_default();
        for (role, res) in &r.0 {
            slot.available.sub_from(role, res);
            e.add_to(role, res);
        }
        self.account(f, r);
    }

    fn account(&mut self, f: u32, r: &RoleResources) {
        let s = Scalars::of_all(r);
        if let Some(fw) = self.frameworks[f as usize].as_mut() {
            fw.held = fw.held.plus(s);
            if let Some(role) = self.roles.get_mut(&fw.role) {
                role.held = role.held.plus(s);
            }
        }
    }

    fn unaccount(&mut self, f: u32, r: &RoleResources) {
        let s = Scalars::of_all(r);
        if let Some(fw) = self.frameworks[f as usize].as_mut() {
            fw.held = fw.held.minus(s);
            if let Some(role) = self.roles.get_mut(&fw.role) {
                role.held = role.held.minus(s);
            }
        }
    }

    fn share(&self, held: Scalars) -> f64 {
        let mut s = 0.0f64;
        for i in 0..3 {
            if self.cluster.0[i] > 0 {
                s = s.max(held.0[i].max(0) as f64 / self.cluster.0[i] as f64);
            }
        }
        s
    }

    fn role_key(&self, role: &RoleSlot) -> ShareKey {
        (self.share(role.held) / role.weight).to_bits()
    }

    fn order(&self) -> Order {
        let mut o = Order {
            roles: BTreeSet::new(),
            role_key: HashMap::new(),
            frameworks: HashMap::new(),
            framework_key: HashMap::new(),
        };
        for (name, role) in &self.roles {
            let mut set = BTreeSet::new();
            for &f in &role.frameworks {
                if let Some(fw) = self.frameworks[f as usize].as_ref()
                    && fw.active
                    && !fw.suppressed
                {
                    let k = self.share(fw.held).to_bits();
                    set.insert((k, f));
                    o.framework_key.insert(f, k);
                }
            }
            if set.is_empty() {
                continue;
            }
            let k = self.role_key(role);
            o.roles.insert((k, name.clone()));
            o.role_key.insert(name.clone(), k);
            o.frameworks.insert(name.clone(), set);
        }
        o
    }

    /// After a grant: moves the framework and its role to their new places in the order.
    fn rekey(&self, o: &mut Order, role: &str, f: u32) {
        if let (Some(old), Some(fw)) = (
            o.framework_key.get(&f).copied(),
            &self.frameworks[f as usize],
        ) && let Some(set) = o.frameworks.get_mut(role)
        {
            let k = self.share(fw.held).to_bits();
            set.remove(&(old, f));
            set.insert((k, f));
            o.framework_key.insert(f, k);
        }
        if let (Some(old), Some(slot)) = (o.role_key.get(role).copied(), self.roles.get(role)) {
            let k = self.role_key(slot);
            o.roles.remove(&(old, role.to_owned()));
            o.roles.insert((k, role.to_owned()));
            o.role_key.insert(role.to_owned(), k);
        }
    }

    /// One batch round at `now`; `seed` orders agents (Mesos shuffles them each round).
    /// Grants come back in the order they were made.
    pub fn allocate(&mut self, now: Timestamp, seed: u64) -> Vec<Grant> {
        let mut order = self.order();
        if order.roles.is_empty() {
            return Vec::new();
        }
        let mut agents: Vec<u32> = self
            .agents
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().filter(|a| a.active).map(|_| i as u32))
            .collect();
        shuffle(&mut agents, seed);

        // Unreserved resources still free on active agents, less what quota roles are owed:
        // what non-quota allocation may take without eating into guarantees.
        let mut free = Scalars::default();
        for &a in &agents {
            if let Some(r) = self.agents[a as usize]
                .as_ref()
                .and_then(|slot| slot.available.0.get(UNRESERVED))
            {
                free = free.plus(Scalars::of(r));
            }
        }

        let mut grants: Vec<Grant> = Vec::new();
        let mut grant_at: HashMap<(u32, u32), usize> = HashMap::new();
        let quota_roles: Vec<String> = self
            .roles
            .iter()
            .filter(|(_, r)| r.deficit() != Scalars::default())
            .map(|(n, _)| n.clone())
            .collect();

        // Stage 1: roles still owed their guarantee, up to it. Stage 2: everyone, in DRF
        // order, without touching the headroom guarantees still need.
        for stage in [1, 2] {
            if stage == 1 && quota_roles.is_empty() {
                continue;
            }
            for &a in &agents {
                self.allocate_agent(
                    now,
                    a,
                    stage,
                    &mut order,
                    &mut free,
                    &mut grants,
                    &mut grant_at,
                );
            }
        }
        grants
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate_agent(
        &mut self,
        now: Timestamp,
        a: u32,
        stage: u8,
        order: &mut Order,
        free: &mut Scalars,
        grants: &mut Vec<Grant>,
        grant_at: &mut HashMap<(u32, u32), usize>,
    ) {
        loop {
            let Some(slot) = self.agents[a as usize].as_ref() else {
                return;
            };
            if !slot.available.0.values().any(allocatable) {
                return;
            }
            let headroom = self
                .roles
                .values()
                .fold(Scalars::default(), |h, r| h.plus(r.deficit()));
            let mut expired = Vec::new();
            let mut pick: Option<(u32, String, RoleResources)> = None;
            'roles: for (_, role_name) in &order.roles {
                let Some(role) = self.roles.get(role_name) else {
                    continue;
                };
                let deficit = role.deficit();
                if stage == 1 && deficit == Scalars::default() {
                    continue;
                }
                let offer = self.offerable(slot, role_name, role, stage, deficit, headroom, *free);
                if !allocatable(&offer.total()) {
                    continue;
                }
                let Some(set) = order.frameworks.get(role_name) else {
                    continue;
                };
                for &(_, f) in set {
                    match slot.filters.get(&f) {
                        Some(until) if *until > now => continue,
                        Some(_) => expired.push(f),
                        None => {}
                    }
                    pick = Some((f, role_name.clone(), offer));
                    break 'roles;
                }
            }
            for f in expired {
                if let Some(s) = self.agents[a as usize].as_mut() {
                    s.filters.remove(&f);
                }
                if let Some(fw) = self.frameworks[f as usize].as_mut() {
                    fw.filtered.remove(&a);
                }
            }
            let Some((f, role, offer)) = pick else {
                return;
            };
            *free = free.minus(Scalars::of(&offer.get(UNRESERVED)));
            self.hold(a, f, &offer);
            self.rekey(order, &role, f);
            match grant_at.get(&(f, a)) {
                Some(&i) => {
                    grants[i].resources = grants[i].resources.add(&offer);
                }
                None => {
                    let (Some(fw), Some(slot)) =
                        (&self.frameworks[f as usize], &self.agents[a as usize])
                    else {
                        return;
                    };
                    grant_at.insert((f, a), grants.len());
                    grants.push(Grant {
                        framework: fw.id.clone(),
                        agent: slot.id.clone(),
                        resources: offer,
                    });
                }
            }
            // Stage 2 hands the whole remainder to one framework, as Mesos does; stage 1
            // may leave some for the next owed role.
            if stage == 2 {
                return;
            }
        }
    }

    /// What `role` could take from `slot` now: its own reservations plus unreserved
    /// resources, bounded by its limit, (stage 1) its deficit, and (stage 2, for roles
    /// not owed anything) the headroom other roles' guarantees need.
    #[allow(clippy::too_many_arguments)]
    fn offerable(
        &self,
        slot: &AgentSlot,
        role_name: &str,
        role: &RoleSlot,
        stage: u8,
        deficit: Scalars,
        headroom: Scalars,
        free: Scalars,
    ) -> RoleResources {
        let mut out = RoleResources::default();
        let mut room = role.limit_room();
        if role_name != UNRESERVED
            && let Some(own) = slot.available.0.get(role_name)
        {
            let own = cap(own, room);
            if let Some(r) = room.as_mut() {
                *r = r.minus(Scalars::of(&own)).floor0();
            }
            if !own.is_empty() {
                out.0.insert(role_name.to_owned(), own);
            }
        }
        let empty = Resources::default();
        let unreserved = slot.available.0.get(UNRESERVED).unwrap_or(&empty);
        let mut bound = room;
        if stage == 1 {
            // Guaranteed scalars up to what is owed; the others only as a side dish.
            let g = role
                .quota
                .as_ref()
                .map(|q| Scalars::of(&q.guarantee))
                .unwrap_or_default();
            let mut b = bound.unwrap_or(Scalars([i64::MAX; 3]));
            for i in 0..3 {
                if g.0[i] > 0 {
                    b.0[i] = b.0[i].min(deficit.0[i]);
                }
            }
            bound = Some(b);
        } else {
            // Others may take only what exceeds everyone's outstanding guarantees.
            let mine = deficit;
            let spare = free.minus(headroom.minus(mine)).floor0();
            let b = bound.unwrap_or(Scalars([i64::MAX; 3]));
            bound = Some(Scalars([
                b.0[0].min(spare.0[0]),
                b.0[1].min(spare.0[1]),
                b.0[2].min(spare.0[2]),
            ]));
        }
        let u = cap(unreserved, bound);
        if !u.is_empty() {
            out.0.insert(UNRESERVED.to_owned(), u);
        }
        out
    }
}

/// Puts `slot` in a freed index if there is one, else at the end; returns its index.
fn place<T>(slots: &mut Vec<Option<T>>, free: &mut Vec<u32>, slot: T) -> u32 {
    match free.pop() {
        Some(ix) => {
            slots[ix as usize] = Some(slot);
            ix
        }
        None => {
            slots.push(Some(slot));
            (slots.len() - 1) as u32
        }
    }
}

/// `r` with its scalars cut to `bound`.
fn cap(r: &Resources, bound: Option<Scalars>) -> Resources {
    let Some(b) = bound else {
        return r.clone();
    };
    Resources {
        cpus: Milli(r.cpus.0.min(b.0[0])),
        mem: Milli(r.mem.0.min(b.0[1])),
        disk: Milli(r.disk.0.min(b.0[2])),
        ports: r.ports.clone(),
    }
}

/// Fisher–Yates with splitmix64: deterministic for a seed, different each round.
fn shuffle(v: &mut [u32], seed: u64) {
    let mut s = seed;
    for i in (1..v.len()).rev() {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let j = (z % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests;
