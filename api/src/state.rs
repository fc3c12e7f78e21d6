//! Views in the shapes of Mesos' JSON read endpoints (`/master/state`, `/master/slaves`,
//! `/master/frameworks`, `/master/tasks`, `/master/state-summary`, agent `/state`).
//! Ids are plain strings here, as Mesos writes them.

use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `{"cpus":1,"mem":128,"disk":0,"gpus":0,"ports":"[31000-31001]"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResourcesView {
    #[serde(default)]
    pub cpus: f64,
    #[serde(default)]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default)]
    pub gpus: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
}

impl From<&Resources> for ResourcesView {
    fn from(r: &Resources) -> Self {
        Self {
            cpus: r.cpus.as_f64(),
            mem: r.mem.as_f64(),
            disk: r.disk.as_f64(),
            gpus: 0.0,
            ports: (!r.ports.is_empty()).then(|| r.ports.to_mesos_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusView {
    pub state: String,
    pub timestamp: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub framework_id: String,
    #[serde(default)]
    pub executor_id: String,
    pub slave_id: String,
    pub state: String,
    #[serde(default)]
    pub resources: ResourcesView,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub statuses: Vec<StatusView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<serde_json::Value>,
    /// Basalt extension: the last status' message and reason, so `task list` can say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct OfferView {
    pub id: String,
    pub framework_id: String,
    pub slave_id: String,
    pub resources: ResourcesView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SlaveView {
    pub id: String,
    pub pid: String,
    pub hostname: String,
    pub port: u16,
    pub resources: ResourcesView,
    pub used_resources: ResourcesView,
    pub offered_resources: ResourcesView,
    #[serde(default)]
    pub reserved_resources: BTreeMap<String, ResourcesView>,
    pub unreserved_resources: ResourcesView,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub active: bool,
    pub version: String,
    pub registered_time: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reregistered_time: Option<f64>,
    /// Basalt extension: `reachable`, `unreachable` or `gone`.
    #[serde(default)]
    pub status: String,
    /// Basalt extension: the agent's isolation (`cgroups-v1`, ...).
    #[serde(default)]
    pub isolation: String,
    /// Basalt extension: where the agent's HTTP API is.
    #[serde(default)]
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub pid: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub user: String,
    pub role: String,
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub webui_url: String,
    pub active: bool,
    pub connected: bool,
    pub recovered: bool,
    pub failover_timeout: f64,
    pub checkpoint: bool,
    pub registered_time: f64,
    #[serde(default)]
    pub unregistered_time: f64,
    #[serde(default)]
    pub resources: ResourcesView,
    #[serde(default)]
    pub used_resources: ResourcesView,
    #[serde(default)]
    pub offered_resources: ResourcesView,
    #[serde(default)]
    pub capabilities: Vec<serde_json::Value>,
    #[serde(default)]
    pub tasks: Vec<TaskView>,
    #[serde(default)]
    pub unreachable_tasks: Vec<TaskView>,
    #[serde(default)]
    pub completed_tasks: Vec<TaskView>,
    #[serde(default)]
    pub offers: Vec<OfferView>,
    #[serde(default)]
    pub executors: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LeaderInfo {
    pub id: String,
    pub pid: String,
    pub port: u16,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MasterState {
    pub version: String,
    #[serde(default)]
    pub git_sha: String,
    #[serde(default)]
    pub build_time: f64,
    pub start_time: f64,
    #[serde(default)]
    pub elected_time: f64,
    pub id: String,
    pub pid: String,
    pub hostname: String,
    pub activated_slaves: u64,
    pub deactivated_slaves: u64,
    #[serde(default)]
    pub unreachable_slaves: u64,
    #[serde(default)]
    pub cluster: String,
    pub leader: String,
    #[serde(default)]
    pub leader_info: LeaderInfo,
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
    pub slaves: Vec<SlaveView>,
    pub frameworks: Vec<FrameworkView>,
    #[serde(default)]
    pub completed_frameworks: Vec<FrameworkView>,
    #[serde(default)]
    pub orphan_tasks: Vec<TaskView>,
    #[serde(default)]
    pub unregistered_frameworks: Vec<String>,
}

impl MasterState {
    /// Every task the master knows, live and unreachable and completed, with its framework.
    pub fn all_tasks(&self) -> impl Iterator<Item = &TaskView> {
        self.frameworks
            .iter()
            .chain(self.completed_frameworks.iter())
            .flat_map(|f| {
                f.tasks
                    .iter()
                    .chain(&f.unreachable_tasks)
                    .chain(&f.completed_tasks)
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SlavesView {
    pub slaves: Vec<SlaveView>,
    #[serde(default)]
    pub recovered_slaves: Vec<SlaveView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FrameworksView {
    pub frameworks: Vec<FrameworkView>,
    #[serde(default)]
    pub completed_frameworks: Vec<FrameworkView>,
    #[serde(default)]
    pub unregistered_frameworks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TasksView {
    pub tasks: Vec<TaskView>,
}

/// An agent's `/state` (the part tools read), and where each task's sandbox is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AgentStateView {
    pub id: String,
    pub pid: String,
    pub hostname: String,
    pub version: String,
    #[serde(default)]
    pub master_hostname: String,
    pub resources: ResourcesView,
    #[serde(default)]
    pub reserved_resources: BTreeMap<String, ResourcesView>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
    /// Basalt extension: what isolation this agent enforces and, if none, why.
    #[serde(default)]
    pub isolation: String,
    pub frameworks: Vec<AgentFrameworkView>,
    #[serde(default)]
    pub completed_frameworks: Vec<AgentFrameworkView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AgentFrameworkView {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub role: String,
    pub executors: Vec<AgentExecutorView>,
    #[serde(default)]
    pub completed_executors: Vec<AgentExecutorView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AgentExecutorView {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub source: String,
    /// The sandbox path, for `/files/read?path=...`.
    pub directory: String,
    pub resources: ResourcesView,
    pub tasks: Vec<TaskView>,
    #[serde(default)]
    pub completed_tasks: Vec<TaskView>,
}

/// `/files/browse` entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileEntry {
    pub path: String,
    pub nlink: u64,
    pub size: u64,
    pub mtime: f64,
    pub mode: String,
    pub uid: String,
    pub gid: String,
}

/// `/files/read` answer: `data` from `offset`; `offset=-1` asks only for the size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileChunk {
    pub data: String,
    pub offset: u64,
}
