//! The agent's HTTP surface (axum): the master's launch/kill/teardown calls, `/state`,
//! `/files`, health, version and metrics.

use crate::files::{self, FilesError};
use crate::runtime::{self, Agent, KillError};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_api::ErrorBody;
use basalt_api::agent::{KillTask, LaunchTasks, TeardownFramework};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Largest request body, in bytes.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest task list in one launch call.
const MAX_TASKS_PER_LAUNCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // Mesos answers a body it cannot parse with 400; axum's 422 would surprise
        // clients written against it. A missing content type stays 415.
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        ApiError::Rejected {
            status,
            message: r.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Rejected { status, .. } => *status,
            ApiError::BadRequest(_) | ApiError::Files(FilesError::BadRequest(_)) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) | ApiError::Files(FilesError::NotFound(_)) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Files(FilesError::Forbidden(_)) => StatusCode::FORBIDDEN,
            ApiError::Files(e @ FilesError::Io { .. }) => {
                tracing::warn!(error = %e, "file request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(ErrorBody::new(self.to_string()))).into_response()
    }
}

type App = State<Arc<Agent>>;

pub(crate) fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/internal/launch", post(launch))
        .route("/internal/kill", post(kill))
        .route("/internal/teardown", post(teardown))
        .route("/internal/ack", post(ack))
        .route("/state", get(state))
        .route("/state.json", get(state))
        .route("/slave(1)/state", get(state))
        .route("/slave(1)/state.json", get(state))
        .route("/files/browse", get(browse))
        .route("/files/browse.json", get(browse))
        .route("/files/read", get(read))
        .route("/files/read.json", get(read))
        .route("/files/download", get(download))
        .route("/files/download.json", get(download))
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics/snapshot", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(agent)
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

/// A framework's acknowledgement of one of our status updates, relayed by the master.
async fn ack(
    State(agent): App,
    body: Result<Json<basalt_api::agent::AckRelays>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    for a in req.acks {
        agent.relayed.ack(a.uuid);
    }
    Ok(accepted())
}

async fn launch(
    State(agent): App,
    body: Result<Json<LaunchTasks>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    if req.tasks.len() > MAX_TASKS_PER_LAUNCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_TASKS_PER_LAUNCH} tasks per launch"
        )));
    }
    for t in req.tasks {
        tracing::debug!(task_id = %t.task.task_id, framework_id = %t.framework_id, "launch requested");
        runtime::launch(&agent, t);
    }
    Ok(accepted())
}

async fn kill(
    State(agent): App,
    body: Result<Json<KillTask>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    if req
        .grace_period_secs
        .is_some_and(|g| !g.is_finite() || g < 0.0)
    {
        return Err(ApiError::BadRequest(
            "grace_period_secs must be a non-negative number".into(),
        ));
    }
    let key = (req.framework_id.clone(), req.task_id.clone());
    match runtime::kill(&agent, &key, req.grace_period_secs).await {
        Ok(()) => Ok(accepted()),
        Err(KillError::Unknown) => Err(ApiError::NotFound(format!(
            "task {} of framework {} is not on this agent",
            req.task_id, req.framework_id
        ))),
    }
}

async fn teardown(
    State(agent): App,
    body: Result<Json<TeardownFramework>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let n = runtime::teardown(&agent, &req.framework_id).await;
    tracing::info!(framework_id = %req.framework_id, tasks = n, "framework torn down");
    Ok(accepted())
}

async fn state(State(agent): App) -> Response {
    Json(runtime::state_view(&agent)).into_response()
}

async fn metrics(State(agent): App) -> Response {
    Json(runtime::metrics(&agent)).into_response()
}

async fn health() -> Response {
    (StatusCode::OK, Json(json!({"healthy": true}))).into_response()
}

async fn version() -> Response {
    Json(json!({
        "version": basalt_api::VERSION,
        "mesos_version": basalt_api::MESOS_COMPAT_VERSION,
        "build_version": basalt_api::VERSION,
    }))
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint on the agent".into())
}

#[derive(Deserialize)]
struct PathQuery {
    path: String,
}

#[derive(Deserialize)]
struct ReadQuery {
    path: String,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    length: Option<i64>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

async fn browse(
    State(agent): App,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let root = agent.layout.sandboxes();
    let entries = blocking(move || files::browse(&root, &q.path)).await?;
    Ok(Json(entries).into_response())
}

async fn read(
    State(agent): App,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let root = agent.layout.sandboxes();
    let chunk =
        blocking(move || files::read(&root, &q.path, q.offset.unwrap_or(0), q.length)).await?;
    Ok(Json(chunk).into_response())
}

async fn download(
    State(agent): App,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let root = agent.layout.sandboxes();
    let requested = q.path.clone();
    let path = blocking(move || files::resolve(&root, &requested)).await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| FilesError::Io {
            path: q.path.clone(),
            source: e,
        })?;
    let is_dir = file.metadata().await.map(|m| m.is_dir()).unwrap_or(false);
    if is_dir {
        return Err(FilesError::BadRequest(format!("{} is a directory", q.path)).into());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().replace('"', ""))
        .unwrap_or_else(|| "file".into());
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
