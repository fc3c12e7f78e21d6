//! The Mesos v1 scheduler API (`POST /api/v1/scheduler`), JSON flavour, and the
//! `SchedulerApi` trait that in-process frameworks and the HTTP transport both implement.

use crate::ids::{AgentId, FrameworkId, OfferId, TaskId};
use crate::resources::Resource;
use crate::task::{KillPolicy, TaskInfo, TaskStatus};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FrameworkInfo {
    #[serde(default)]
    pub user: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<FrameworkId>,
    /// Seconds the master keeps a disconnected framework's tasks before tearing it down.
    #[serde(default)]
    pub failover_timeout: f64,
    #[serde(default)]
    pub checkpoint: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webui_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<serde_json::Value>,
}

impl FrameworkInfo {
    /// The framework's one role (`role`, else the first of `roles`, else `*`).
    pub fn effective_role(&self) -> String {
        self.role
            .clone()
            .or_else(|| self.roles.first().cloned())
            .unwrap_or_else(|| "*".to_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallType {
    Subscribe,
    Teardown,
    Accept,
    Decline,
    Revive,
    Suppress,
    Kill,
    Shutdown,
    Acknowledge,
    Reconcile,
    Message,
    Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<FrameworkId>,
    #[serde(rename = "type")]
    pub kind: CallType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<Accept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline: Option<Decline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revive: Option<Roles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Roles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge: Option<Acknowledge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
}

impl Call {
    pub fn new(framework_id: Option<FrameworkId>, kind: CallType) -> Self {
        Self {
            framework_id,
            kind,
            subscribe: None,
            accept: None,
            decline: None,
            revive: None,
            suppress: None,
            kill: None,
            acknowledge: None,
            reconcile: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    pub framework_info: FrameworkInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Filters {
    /// Seconds the declined agent is hidden from this framework (Mesos default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accept {
    pub offer_ids: Vec<OfferId>,
    #[serde(default)]
    pub operations: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decline {
    pub offer_ids: Vec<OfferId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Roles {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    pub task_id: TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<KillPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledge {
    pub agent_id: AgentId,
    pub task_id: TaskId,
    pub uuid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Reconcile {
    /// Empty: implicit reconciliation (the master sends the state of every known task).
    #[serde(default)]
    pub tasks: Vec<ReconcileTask>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileTask {
    pub task_id: TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    Launch,
    Reserve,
    Unreserve,
    #[serde(other)]
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    #[serde(rename = "type")]
    pub kind: OperationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<ResourcesOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreserve: Option<ResourcesOp>,
}

impl Operation {
    pub fn launch(tasks: Vec<TaskInfo>) -> Self {
        Self {
            kind: OperationType::Launch,
            launch: Some(Launch { task_infos: tasks }),
            reserve: None,
            unreserve: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub task_infos: Vec<TaskInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourcesOp {
    pub resources: Vec<Resource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub hostname: String,
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    #[serde(default)]
    pub executor_ids: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Subscribed,
    Offers,
    Rescind,
    Update,
    Message,
    Failure,
    Error,
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
    pub offers: Option<Offers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescind: Option<Rescind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorEvent>,
}

impl Event {
    fn bare(kind: EventType) -> Self {
        Self {
            kind,
            subscribed: None,
            offers: None,
            rescind: None,
            update: None,
            failure: None,
            error: None,
        }
    }

    pub fn heartbeat() -> Self {
        Self::bare(EventType::Heartbeat)
    }

    pub fn subscribed(framework_id: FrameworkId, heartbeat_interval_seconds: f64) -> Self {
        let mut e = Self::bare(EventType::Subscribed);
        e.subscribed = Some(Subscribed {
            framework_id,
            heartbeat_interval_seconds,
        });
        e
    }

    pub fn offers(offers: Vec<Offer>) -> Self {
        let mut e = Self::bare(EventType::Offers);
        e.offers = Some(Offers { offers });
        e
    }

    pub fn rescind(offer_id: OfferId) -> Self {
        let mut e = Self::bare(EventType::Rescind);
        e.rescind = Some(Rescind { offer_id });
        e
    }

    pub fn update(status: TaskStatus) -> Self {
        let mut e = Self::bare(EventType::Update);
        e.update = Some(Update { status });
        e
    }

    pub fn failure(agent_id: AgentId) -> Self {
        let mut e = Self::bare(EventType::Failure);
        e.failure = Some(Failure {
            agent_id: Some(agent_id),
        });
        e
    }

    pub fn error(message: impl Into<String>) -> Self {
        let mut e = Self::bare(EventType::Error);
        e.error = Some(ErrorEvent {
            message: message.into(),
        });
        e
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribed {
    pub framework_id: FrameworkId,
    pub heartbeat_interval_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offers {
    pub offers: Vec<Offer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rescind {
    pub offer_id: OfferId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub status: TaskStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    pub message: String,
}

/// An open subscription: the framework's id, the stream id to send calls with, and its
/// events in order. The stream ends when the master drops the subscription.
pub struct Subscription {
    pub framework_id: FrameworkId,
    pub stream_id: String,
    pub events: tokio::sync::mpsc::Receiver<Event>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The master refused the call; the message says why (a 4xx on HTTP).
    #[error("{0}")]
    Rejected(String),
    #[error("the master is unavailable: {0}")]
    Unavailable(String),
}

/// What a framework can do, the same whether it runs inside the master's process (init,
/// cron) or talks HTTP (`api::Client`, pymesos).
#[async_trait::async_trait]
pub trait SchedulerApi: Send + Sync {
    async fn subscribe(&self, info: FrameworkInfo) -> Result<Subscription, SchedulerError>;
    /// Sends one non-SUBSCRIBE call on behalf of the subscription's framework.
    async fn call(&self, stream_id: &str, call: Call) -> Result<(), SchedulerError>;
}
