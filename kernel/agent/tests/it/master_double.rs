//! A recording master double: answers the agent protocol like the master does and records
//! every registration and status update it accepted.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use basalt_api::agent::{RegisterAgent, RegisterAgentReply, StatusAck, StatusUpdateMessage};
use basalt_api::task::TaskStatus;
use basalt_api::{AgentId, ErrorBody, TaskState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Recorded {
    registrations: Vec<RegisterAgent>,
    statuses: Vec<StatusUpdateMessage>,
}

#[derive(Clone, Default)]
struct Shared {
    recorded: Arc<Mutex<Recorded>>,
    refuse: Arc<AtomicBool>,
}

pub(crate) struct MasterDouble {
    pub(crate) url: String,
    shared: Shared,
}

async fn register(State(s): State<Shared>, Json(req): Json<RegisterAgent>) -> Response {
    let id = req
        .agent_id
        .clone()
        .unwrap_or_else(|| AgentId::new(format!("m-S{}", uuid::Uuid::new_v4())));
    s.recorded.lock().expect("lock").registrations.push(req);
    Json(RegisterAgentReply {
        agent_id: id,
        master_id: "m".into(),
        heartbeat_interval_secs: 0.2,
        kill: Vec::new(),
    })
    .into_response()
}

async fn heartbeat() -> Response {
    Json(serde_json::json!({})).into_response()
}

async fn status(
    State(s): State<Shared>,
    Path(_id): Path<String>,
    Json(msg): Json<StatusUpdateMessage>,
) -> Response {
    if s.refuse.load(Ordering::SeqCst) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(ErrorBody::new("refusing for the test")),
        )
            .into_response();
    }
    let uuid = msg.status.uuid.clone().unwrap_or_default();
    s.recorded.lock().expect("lock").statuses.push(msg);
    Json(StatusAck {
        uuid,
        pending: false,
    })
    .into_response()
}

impl MasterDouble {
    pub(crate) async fn start() -> MasterDouble {
        let shared = Shared::default();
        let app = Router::new()
            .route("/internal/agents/register", post(register))
            .route("/internal/agents/{id}/heartbeat", post(heartbeat))
            .route("/internal/agents/{id}/status", post(status))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        MasterDouble { url, shared }
    }

    pub(crate) fn refuse_statuses(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    fn statuses_of(&self, task: &str) -> Vec<TaskStatus> {
        self.shared
            .recorded
            .lock()
            .expect("lock")
            .statuses
            .iter()
            .filter(|m| m.status.task_id.as_str() == task)
            .map(|m| m.status.clone())
            .collect()
    }

    pub(crate) fn last_status(&self, task: &str) -> Option<TaskStatus> {
        self.statuses_of(task).pop()
    }

    pub(crate) fn executor_pid(&self, task: &str) -> Option<u32> {
        self.statuses_of(task)
            .iter()
            .find(|s| s.state == TaskState::Running)
            .and_then(|s| s.container_status.as_ref()?.executor_pid)
    }

    pub(crate) fn status_uuids(&self) -> Vec<String> {
        let r = self.shared.recorded.lock().expect("lock");
        r.statuses
            .iter()
            .filter_map(|m| m.status.uuid.clone())
            .collect()
    }

    pub(crate) fn registrations(&self) -> usize {
        self.shared
            .recorded
            .lock()
            .expect("lock")
            .registrations
            .len()
    }

    pub(crate) fn last_registration(&self) -> Option<RegisterAgent> {
        self.shared
            .recorded
            .lock()
            .expect("lock")
            .registrations
            .last()
            .cloned()
    }

    pub(crate) async fn wait_for_state(&self, task: &str, state: TaskState) {
        crate::eventually(&format!("{task} reaches {state}"), || async {
            self.statuses_of(task)
                .iter()
                .any(|s| s.state == state)
                .then_some(())
        })
        .await
    }

    /// The states the master heard for `task`, once the last one is terminal.
    pub(crate) async fn wait_for_terminal(&self, task: &str) -> Vec<TaskState> {
        crate::eventually(&format!("{task} reaches a terminal state"), || async {
            let states: Vec<TaskState> = self.statuses_of(task).iter().map(|s| s.state).collect();
            states
                .last()
                .is_some_and(|s| s.is_terminal())
                .then_some(states)
        })
        .await
    }
}
