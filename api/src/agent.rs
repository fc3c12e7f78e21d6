//! The master<->agent protocol (JSON over HTTP, Basalt's own: Mesos used libprocess).
//!
//! Agent -> master: `POST /internal/agents/register`, `POST /internal/agents/{id}/heartbeat`,
//! `POST /internal/agents/{id}/status`. Master -> agent: `POST /internal/launch`,
//! `POST /internal/kill`, `POST /internal/teardown`.

use crate::ids::{AgentId, FrameworkId, TaskId};
use crate::resources::Resource;
use crate::task::{TaskLaunch, TaskStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub hostname: String,
    /// The port the agent's HTTP API listens on (Mesos `port`, default 5051).
    pub port: u16,
    /// Where the master reaches this agent, e.g. `http://127.0.0.1:5051`.
    pub url: String,
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub version: String,
    /// What isolation the agent has: `cgroups-v2`, `cgroups-v1` or `none: <why>`.
    #[serde(default)]
    pub isolation: String,
}

/// A task an agent runs, with its latest status; sent on (re-)registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTask {
    pub launch: TaskLaunch,
    pub status: TaskStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterAgent {
    /// Set when the agent has registered before (its checkpointed id).
    #[serde(default)]
    pub agent_id: Option<AgentId>,
    pub info: AgentInfo,
    #[serde(default)]
    pub tasks: Vec<AgentTask>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterAgentReply {
    pub agent_id: AgentId,
    pub master_id: String,
    pub heartbeat_interval_secs: f64,
    /// Tasks the master knows on this agent that the agent did not report: the agent must
    /// not run them (they were killed or ended elsewhere in the meantime).
    #[serde(default)]
    pub kill: Vec<TaskId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdateMessage {
    pub framework_id: FrameworkId,
    pub status: TaskStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusAck {
    pub uuid: String,
    /// The master has forwarded the update to its framework and will relay the framework's
    /// acknowledgement (`/internal/ack`): until then the agent keeps the update and resends
    /// it now and then, as Mesos' status update manager does. `false`: done already.
    #[serde(default)]
    pub pending: bool,
}

/// A framework's acknowledgement of an agent's status update, relayed by the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckRelay {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub uuid: String,
}

/// Relayed acknowledgements, batched (a burst of updates is acknowledged in bursts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckRelays {
    pub acks: Vec<AckRelay>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchTasks {
    pub master_id: String,
    pub tasks: Vec<TaskLaunch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillTask {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    /// Seconds between SIGTERM and SIGKILL; the agent's default when absent.
    #[serde(default)]
    pub grace_period_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeardownFramework {
    pub framework_id: FrameworkId,
}
