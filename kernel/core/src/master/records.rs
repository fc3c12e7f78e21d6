//! What the master persists: the registry of agents and frameworks (tasks are not
//! persisted: agents report them on re-registration, as in Mesos). Values are JSON.

use super::{Agent, Framework};
use basalt_api::agent::AgentInfo;
use basalt_api::resources::Resource;
use basalt_api::scheduler::FrameworkInfo;
use basalt_api::{AgentId, FrameworkId, Resources, RoleResources};
use serde::{Deserialize, Serialize};

pub const AGENT_PREFIX: &str = "master/agents/";
pub const FRAMEWORK_PREFIX: &str = "master/frameworks/";
pub const REMOVED_FRAMEWORK_PREFIX: &str = "master/removed-frameworks/";

/// One write to the store; a `Persist` action's ops are applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    Put(String, Vec<u8>),
    Delete(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRecord {
    pub info: AgentInfo,
    pub registered_ms: u64,
    #[serde(default)]
    pub unreachable_since_ms: Option<u64>,
    /// Dynamic reservations, each as resources reserved for their role.
    #[serde(default)]
    pub dynamic: Vec<Vec<Resource>>,
}

impl AgentRecord {
    pub(crate) fn dynamic_resources(&self) -> Vec<(String, Resources)> {
        self.dynamic
            .iter()
            .filter_map(|w| RoleResources::from_wire(w).ok())
            .flat_map(|rr| rr.0.into_iter())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameworkRecord {
    pub info: FrameworkInfo,
    pub registered_ms: u64,
}

pub(crate) fn agent_key(id: &AgentId) -> String {
    format!("{AGENT_PREFIX}{id}")
}

pub(crate) fn framework_key(id: &FrameworkId) -> String {
    format!("{FRAMEWORK_PREFIX}{id}")
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("registry records are plain data and always serialize")
}

pub(crate) fn put_agent(a: &Agent) -> StoreOp {
    let rec = AgentRecord {
        info: a.info.clone(),
        registered_ms: a.registered.millis(),
        unreachable_since_ms: a.unreachable_since.map(|t| t.millis()),
        dynamic: a.dynamic.iter().map(|(role, r)| r.to_wire(role)).collect(),
    };
    StoreOp::Put(agent_key(&a.id), json(&rec))
}

pub(crate) fn put_framework(f: &Framework) -> StoreOp {
    let rec = FrameworkRecord {
        info: f.info.clone(),
        registered_ms: f.registered.millis(),
    };
    StoreOp::Put(framework_key(&f.id), json(&rec))
}

pub(crate) fn put_removed_framework(id: &FrameworkId) -> StoreOp {
    StoreOp::Put(format!("{REMOVED_FRAMEWORK_PREFIX}{id}"), b"{}".to_vec())
}
