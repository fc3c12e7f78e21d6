//! DRF allocator, in the shape of Mesos' `HierarchicalAllocator`: the master tells it what
//! exists and what is held; `allocate` decides who is offered what. Deterministic: no
//! clock, no RNG (a seed comes in), no I/O.
//!
//! INTERFACE CONTRACT (the master depends on exactly these signatures):
//! - Resources are `api::RoleResources`: per reservation role, `*` = unreserved.
//! - "allocated" = offered or used by tasks. The master reports every change.
//! - Every method is cheap (O(1) or O(log n) amortised) except `allocate`; `allocate` is
//!   one batch round: it returns at most one grant per (framework, agent) and records the
//!   grants as allocated to those frameworks before returning.

use crate::time::Timestamp;
use basalt_api::{AgentId, FrameworkId, Resources, RoleResources};

/// One offer's worth: `resources` of `agent` go to `framework`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub resources: RoleResources,
}

/// Placeholder body: the real DRF implementation replaces this struct's insides while
/// keeping every public signature.
#[derive(Debug, Default)]
pub struct Allocator {}

#[allow(unused_variables, clippy::new_without_default)]
impl Allocator {
    pub fn new() -> Self {
        todo!("allocator")
    }
    /// Role weight (default 1.0); a role with weight 2 is entitled to twice the share.
    pub fn set_weight(&mut self, role: &str, weight: f64) {
        todo!()
    }
    /// Quota: `guarantee` is allocated to the role first and held back from others as
    /// headroom; `limit` is never exceeded by what the role holds. Empty guarantee and
    /// `None` limit remove the quota.
    pub fn set_quota(&mut self, role: &str, guarantee: Resources, limit: Option<Resources>) {
        todo!()
    }
    /// A new or re-registered agent with its total resources and what its known tasks
    /// already hold (`used`, per framework). Frameworks in `used` were added before.
    pub fn add_agent(
        &mut self,
        agent: AgentId,
        total: RoleResources,
        used: Vec<(FrameworkId, RoleResources)>,
    ) {
        todo!()
    }
    /// Replaces an agent's total (dynamic reservations change the role split).
    pub fn update_agent_total(&mut self, agent: &AgentId, total: RoleResources) {
        todo!()
    }
    /// Forgets the agent and every allocation on it.
    pub fn remove_agent(&mut self, agent: &AgentId) {
        todo!()
    }
    /// Inactive agents (unreachable) are never offered; allocations on them stay counted.
    pub fn activate_agent(&mut self, agent: &AgentId, active: bool) {
        todo!()
    }
    /// A framework in `role`; inactive frameworks (disconnected, failing over) get no offers
    /// but their allocations count toward shares.
    pub fn add_framework(&mut self, framework: FrameworkId, role: String, active: bool) {
        todo!()
    }
    pub fn activate_framework(&mut self, framework: &FrameworkId, active: bool) {
        todo!()
    }
    /// Forgets the framework; whatever it still held is returned to the agents.
    pub fn remove_framework(&mut self, framework: &FrameworkId) {
        todo!()
    }
    /// Returns resources a framework held (declined or rescinded offer, unused part of an
    /// accepted offer, ended task) to the agent.
    pub fn recover(&mut self, agent: &AgentId, framework: &FrameworkId, resources: &RoleResources) {
        todo!()
    }
    /// A held allocation changed shape (RESERVE/UNRESERVE on offered resources).
    pub fn update_allocation(
        &mut self,
        agent: &AgentId,
        framework: &FrameworkId,
        from: &RoleResources,
        to: &RoleResources,
    ) {
        todo!()
    }
    /// Hides `agent` from `framework` until `until` (decline with `refuse_seconds`).
    pub fn add_filter(&mut self, framework: &FrameworkId, agent: &AgentId, until: Timestamp) {
        todo!()
    }
    pub fn suppress(&mut self, framework: &FrameworkId) {
        todo!()
    }
    /// Clears the framework's filters and suppression.
    pub fn revive(&mut self, framework: &FrameworkId) {
        todo!()
    }
    /// One batch round at `now`; `seed` orders agents (Mesos shuffles them each round).
    pub fn allocate(&mut self, now: Timestamp, seed: u64) -> Vec<Grant> {
        todo!()
    }
    /// What the agent has neither offered nor in use.
    pub fn available(&self, agent: &AgentId) -> RoleResources {
        todo!()
    }
    /// What frameworks of `role` hold, summed over agents.
    pub fn role_allocation(&self, role: &str) -> Resources {
        todo!()
    }
}
