//! The Mesos v1 operator API (`POST /api/v1`): `SUBSCRIBE` and its event stream, and the
//! read-only calls (`GET_STATE`, `GET_AGENTS`, `GET_FRAMEWORKS`, `GET_TASKS`, `GET_HEALTH`,
//! `GET_VERSION`). DNS, the load balancer and the router consume only this stream.

use crate::ids::{AgentId, FrameworkId, TaskId};
use crate::resources::Resource;
use crate::scheduler::{Attribute, FrameworkInfo};
use crate::task::{DurationInfo, Labels, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallType {
    Subscribe,
    GetState,
    GetAgents,
    GetFrameworks,
    GetTasks,
    GetHealth,
    GetVersion,
    GetMetrics,
    GetMaster,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    #[serde(rename = "type")]
    pub kind: CallType,
}

/// A time as the v1 API writes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeInfo {
    pub nanoseconds: i64,
}

impl TimeInfo {
    pub fn from_millis(ms: u64) -> Self {
        Self {
            nanoseconds: (ms as i64).saturating_mul(1_000_000),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub name: String,
    pub task_id: TaskId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub state: TaskState,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub statuses: Vec<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy_grace: Option<DurationInfo>,
    #[serde(default)]
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfoV1 {
    pub id: AgentId,
    pub hostname: String,
    pub port: u16,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub agent_info: AgentInfoV1,
    pub active: bool,
    pub pid: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_time: Option<TimeInfo>,
    #[serde(default)]
    pub total_resources: Vec<Resource>,
    #[serde(default)]
    pub allocated_resources: Vec<Resource>,
    #[serde(default)]
    pub offered_resources: Vec<Resource>,
}

impl Agent {
    /// The address tasks on this agent are reached at: the hostname when it is an IP
    /// literal, otherwise the IP in the agent's pid (`slave(1)@10.0.0.1:5051`).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        agent_ip(&self.agent_info.hostname, &self.pid)
    }
}

/// An agent's address from its hostname when that is an IP literal, otherwise from its pid
/// (`slave(1)@10.0.0.1:5051`): what the operator stream and `/master/slaves` both carry.
pub fn agent_ip(hostname: &str, pid: &str) -> Option<std::net::IpAddr> {
    hostname.parse().ok().or_else(|| {
        let hostport = pid.rsplit('@').next()?;
        let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
        host.trim_matches(|c| c == '[' || c == ']').parse().ok()
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Framework {
    pub framework_info: FrameworkInfo,
    pub active: bool,
    pub connected: bool,
    pub recovered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_time: Option<TimeInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GetTasks {
    #[serde(default)]
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub unreachable_tasks: Vec<Task>,
    #[serde(default)]
    pub completed_tasks: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GetAgents {
    #[serde(default)]
    pub agents: Vec<Agent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GetFrameworks {
    #[serde(default)]
    pub frameworks: Vec<Framework>,
    #[serde(default)]
    pub completed_frameworks: Vec<Framework>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GetState {
    #[serde(default)]
    pub get_tasks: GetTasks,
    #[serde(default)]
    pub get_agents: GetAgents,
    #[serde(default)]
    pub get_frameworks: GetFrameworks,
    #[serde(default)]
    pub get_executors: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Subscribed,
    TaskAdded,
    TaskUpdated,
    AgentAdded,
    AgentRemoved,
    FrameworkAdded,
    FrameworkUpdated,
    FrameworkRemoved,
    Heartbeat,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed: Option<Subscribed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_added: Option<TaskAdded>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_updated: Option<TaskUpdated>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_added: Option<AgentAdded>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_removed: Option<AgentRemoved>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_added: Option<FrameworkEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_updated: Option<FrameworkEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_removed: Option<FrameworkRemoved>,
}

impl Event {
    pub fn bare(kind: EventType) -> Self {
        Self {
            kind,
            subscribed: None,
            task_added: None,
            task_updated: None,
            agent_added: None,
            agent_removed: None,
            framework_added: None,
            framework_updated: None,
            framework_removed: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribed {
    pub get_state: GetState,
    pub heartbeat_interval_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAdded {
    pub task: Task,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdated {
    pub framework_id: FrameworkId,
    pub status: TaskStatus,
    pub state: TaskState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentAdded {
    pub agent: Agent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRemoved {
    pub agent_id: AgentId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkEvent {
    pub framework: Framework,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkRemoved {
    pub framework_info: FrameworkInfo,
}
