//! The master's HTTP surface: Mesos read endpoints, the v1 scheduler and operator APIs,
//! the agent protocol, Prometheus metrics.

use crate::actor::{ConnTx, Handle, framework_queue};
use crate::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_api::agent::{RegisterAgent, StatusAck, StatusUpdateMessage};
use basalt_api::client::STREAM_ID_HEADER;
use basalt_api::operator;
use basalt_api::scheduler::{Call, CallType};
use basalt_api::state::MasterState;
use basalt_api::{AgentId, FrameworkId, Resources, recordio};
use basalt_kernel_core::master::{ConnId, Input, OperatorInput, ReadKind, Reply, Snapshot};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

#[derive(Clone)]
struct App {
    handle: Handle,
    max_body: usize,
}

pub(crate) fn router(handle: Handle, max_body: usize) -> Router {
    let app = App { handle, max_body };
    Router::new()
        .route("/master/state", get(state))
        .route("/master/state.json", get(state))
        .route("/state", get(state))
        .route("/state.json", get(state))
        .route("/master/state-summary", get(state_summary))
        .route("/master/slaves", get(slaves))
        .route("/master/frameworks", get(frameworks))
        .route("/master/tasks", get(tasks))
        .route("/master/tasks.json", get(tasks))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/metrics", get(prometheus))
        .route("/health", get(health))
        .route("/master/health", get(health))
        .route("/version", get(version))
        .route("/master/redirect", get(redirect))
        .route("/master/teardown", post(teardown))
        .route("/api/v1", post(operator_api))
        .route("/api/v1/scheduler", post(scheduler_api))
        .route("/internal/agents/register", post(register_agent))
        .route("/internal/agents/{id}/heartbeat", post(agent_heartbeat))
        .route("/internal/agents/{id}/status", post(agent_status))
        .fallback(not_found)
        .with_state(app)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// JSON body with our error shape for malformed or oversized input.
struct JsonBody<T>(T);

impl<T: DeserializeOwned> FromRequest<App> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, app.max_body).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

async fn read_body(req: Request, max: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), max)
        .await
        .map_err(|_| ApiError::TooLarge(max))
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn json_response<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn master_state(app: &App) -> Result<MasterState, ApiError> {
    match app.handle.read(ReadKind::State).await? {
        Snapshot::State(s) => Ok(s),
        _ => Err(ApiError::Unavailable),
    }
}

async fn state(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(json_response(&master_state(&app).await?))
}

fn task_counts<'a>(
    tasks: impl Iterator<Item = &'a basalt_api::state::TaskView>,
) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = basalt_api::TaskState::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for t in tasks {
        *m.entry(t.state.clone()).or_default() += 1;
    }
    m
}

async fn state_summary(State(app): State<App>) -> Result<Response, ApiError> {
    let s = master_state(&app).await?;
    let slaves: Vec<Value> = s
        .slaves
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            let tasks = s.all_tasks().filter(|t| t.slave_id == a.id);
            if let Value::Object(m) = &mut v {
                for (k, n) in task_counts(tasks) {
                    m.insert(k, n.into());
                }
                let fws: Vec<&str> = s
                    .frameworks
                    .iter()
                    .filter(|f| f.tasks.iter().any(|t| t.slave_id == a.id))
                    .map(|f| f.id.as_str())
                    .collect();
                m.insert("framework_ids".into(), json!(fws));
            }
            v
        })
        .collect();
    let frameworks: Vec<Value> = s
        .frameworks
        .iter()
        .map(|f| {
            let mut slave_ids: Vec<&str> = f.tasks.iter().map(|t| t.slave_id.as_str()).collect();
            slave_ids.sort_unstable();
            slave_ids.dedup();
            let mut v = json!({
                "id": f.id, "name": f.name, "pid": f.pid, "hostname": f.hostname,
                "used_resources": f.used_resources, "offered_resources": f.offered_resources,
                "capabilities": f.capabilities, "active": f.active, "connected": f.connected,
                "recovered": f.recovered, "role": f.role, "webui_url": f.webui_url, "slave_ids": slave_ids,
            });
            if let Value::Object(m) = &mut v {
                let all = f.tasks.iter().chain(&f.unreachable_tasks).chain(&f.completed_tasks);
                for (k, n) in task_counts(all) {
                    m.insert(k, n.into());
                }
            }
            v
        })
        .collect();
    Ok(json_response(&json!({
        "hostname": s.hostname, "cluster": s.cluster, "slaves": slaves, "frameworks": frameworks,
    })))
}

async fn slaves(State(app): State<App>) -> Result<Response, ApiError> {
    let s = master_state(&app).await?;
    Ok(json_response(
        &json!({ "slaves": s.slaves, "recovered_slaves": [] }),
    ))
}

async fn frameworks(State(app): State<App>) -> Result<Response, ApiError> {
    let s = master_state(&app).await?;
    Ok(json_response(&json!({
        "frameworks": s.frameworks, "completed_frameworks": s.completed_frameworks, "unregistered_frameworks": [],
    })))
}

#[derive(serde::Deserialize)]
struct TasksQuery {
    limit: Option<String>,
    offset: Option<String>,
    order: Option<String>,
}

async fn tasks(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = TasksQuery {
        limit: q.get("limit").cloned(),
        offset: q.get("offset").cloned(),
        order: q.get("order").cloned(),
    };
    let num = |v: &Option<String>, name: &str, default: usize| -> Result<usize, ApiError> {
        match v {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| {
                ApiError::BadRequest(format!("'{name}' must be a non-negative integer"))
            }),
        }
    };
    // Mesos defaults to 100; we default higher so small clusters show everything.
    let limit = num(&q.limit, "limit", 10_000)?;
    let offset = num(&q.offset, "offset", 0)?;
    let desc = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            return Err(ApiError::BadRequest(format!(
                "'order' must be asc or desc, not '{o}'"
            )));
        }
    };
    let s = master_state(&app).await?;
    let mut all: Vec<_> = s.all_tasks().cloned().collect();
    all.sort_by(|a, b| {
        let ta = a.statuses.first().map(|s| s.timestamp).unwrap_or(0.0);
        let tb = b.statuses.first().map(|s| s.timestamp).unwrap_or(0.0);
        ta.total_cmp(&tb).then_with(|| a.id.cmp(&b.id))
    });
    if desc {
        all.reverse();
    }
    let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    Ok(json_response(&json!({ "tasks": page })))
}

async fn metrics(app: &App) -> Result<BTreeMap<String, f64>, ApiError> {
    match app.handle.read(ReadKind::Metrics).await? {
        Snapshot::Metrics(m) => Ok(m),
        _ => Err(ApiError::Unavailable),
    }
}

async fn metrics_snapshot(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(json_response(&metrics(&app).await?))
}

async fn prometheus(State(app): State<App>) -> Result<Response, ApiError> {
    let m = metrics(&app).await?;
    let mut out = String::new();
    for (k, v) in m {
        let name: String = format!("basalt_{k}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        out.push_str(&format!("# TYPE {name} gauge\n{name} {v}\n"));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn version() -> Response {
    json_response(&json!({
        "version": basalt_api::MESOS_COMPAT_VERSION,
        "basalt_version": basalt_api::VERSION,
        "build_date": "", "build_time": 0, "build_user": "", "git_sha": "",
    }))
}

async fn redirect(State(app): State<App>) -> Result<Response, ApiError> {
    let s = master_state(&app).await?;
    let loc = format!("//{}:{}", s.leader_info.hostname, s.leader_info.port);
    Ok((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, loc)]).into_response())
}

fn ok_or_rejected(r: Reply) -> Result<(), ApiError> {
    match r {
        Reply::Ok => Ok(()),
        _ => Err(ApiError::Unavailable),
    }
}

/// Mesos' `POST /master/teardown` with `frameworkId=<id>` (form) or `{"frameworkId": ..}`.
async fn teardown(State(app): State<App>, req: Request) -> Result<StatusCode, ApiError> {
    let bytes = read_body(req, app.max_body).await?;
    let text = String::from_utf8_lossy(&bytes);
    let id = if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        v.get("frameworkId")
            .or_else(|| v.get("framework_id"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    } else {
        text.split('&')
            .find_map(|kv| kv.strip_prefix("frameworkId="))
            .map(str::to_owned)
    };
    let id = id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing 'frameworkId'".into()))?;
    let fw = FrameworkId::new(id);
    ok_or_rejected(
        app.handle
            .request(move |reply| Input::Operator {
                op: OperatorInput::TeardownFramework(fw),
                reply,
            })
            .await?,
    )?;
    Ok(StatusCode::OK)
}

// ------------------------------------------------------------------- agents

async fn register_agent(
    State(app): State<App>,
    JsonBody(req): JsonBody<RegisterAgent>,
) -> Result<Response, ApiError> {
    match app
        .handle
        .request(move |reply| Input::RegisterAgent { req, reply })
        .await?
    {
        Reply::AgentRegistered(r) => Ok(json_response(&r)),
        _ => Err(ApiError::Unavailable),
    }
}

fn agent_id(raw: String) -> Result<AgentId, ApiError> {
    serde_json::from_value(Value::String(raw)).map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn agent_heartbeat(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let agent = agent_id(id)?;
    ok_or_rejected(
        app.handle
            .request(move |reply| Input::AgentHeartbeat { agent, reply })
            .await?,
    )?;
    Ok(json_response(&json!({})))
}

async fn agent_status(
    State(app): State<App>,
    Path(id): Path<String>,
    JsonBody(msg): JsonBody<StatusUpdateMessage>,
) -> Result<Response, ApiError> {
    let agent = agent_id(id)?;
    match app
        .handle
        .request(move |reply| Input::StatusUpdate { agent, msg, reply })
        .await?
    {
        Reply::StatusAck { uuid, pending } => Ok(json_response(&StatusAck { uuid, pending })),
        _ => Err(ApiError::Unavailable),
    }
}

// ------------------------------------------------------------------- streams

/// A RecordIO body fed by a channel, with heartbeats; tells the master when it is dropped.
struct Guard {
    handle: Handle,
    conn: Option<ConnId>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.conn {
            self.handle.disconnected(c);
        }
    }
}

fn heartbeat_frame<T: serde::Serialize>(ev: &T) -> Bytes {
    recordio::encode(&serde_json::to_vec(ev).unwrap_or_default())
}

fn stream_response(
    first: Option<Bytes>,
    rx: impl futures_util::Stream<Item = Option<Bytes>> + Send + 'static,
    heartbeat: Bytes,
    guard: Guard,
    stream_id: Option<String>,
) -> Response {
    let every = Duration::from_secs(15);
    // Items: `Some(Some(frame))` to send, `Some(None)` to end the stream, `None` for a
    // heartbeat tick.
    let ticks = futures_util::stream::unfold((), move |()| async move {
        tokio::time::sleep(every).await;
        Some((None::<Option<Bytes>>, ()))
    });
    let events = rx.map(Some);
    let merged = futures_util::stream::select(events, ticks)
        .take_while(|item| std::future::ready(!matches!(item, Some(None))))
        .map(move |item| {
            let _keep = &guard;
            let bytes = match item {
                Some(Some(b)) => b,
                _ => heartbeat.clone(),
            };
            Ok::<Bytes, std::convert::Infallible>(bytes)
        });
    let body = match first {
        Some(f) => {
            Body::from_stream(futures_util::stream::once(async move { Ok(f) }).chain(merged))
        }
        None => Body::from_stream(merged),
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = stream_id.and_then(|s| HeaderValue::from_str(&s).ok()) {
        resp.headers_mut().insert(STREAM_ID_HEADER, id);
    }
    resp
}

async fn scheduler_api(
    State(app): State<App>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let bytes = read_body(req, app.max_body).await?;
    let call: Call = parse_json(&bytes)?;
    if call.kind == CallType::Subscribe {
        let sub = call
            .subscribe
            .ok_or_else(|| ApiError::BadRequest("SUBSCRIBE needs 'subscribe'".into()))?;
        let mut info = sub.framework_info;
        if let (Some(a), Some(b)) = (&call.framework_id, &info.id)
            && a != b
        {
            return Err(ApiError::BadRequest(
                "framework_id and framework_info.id differ".into(),
            ));
        }
        if info.id.is_none() {
            info.id = call.framework_id.clone();
        }
        let (tx, rx) = mpsc::channel::<Bytes>(framework_queue());
        let reply = app
            .handle
            .subscribe_framework(info, ConnTx::Http(tx))
            .await?;
        let Reply::Subscribed {
            stream_id, conn, ..
        } = reply
        else {
            return Err(ApiError::Unavailable);
        };
        let guard = Guard {
            handle: app.handle.clone(),
            conn: Some(conn),
        };
        let rx = tokio_stream_from(rx)
            .map(Some)
            .chain(futures_util::stream::once(async { None }));
        let hb = heartbeat_frame(&basalt_api::scheduler::Event::heartbeat());
        return Ok(stream_response(None, rx, hb, guard, Some(stream_id)));
    }
    let stream_id = headers
        .get(STREAM_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "missing {STREAM_ID_HEADER} header: subscribe first"
            ))
        })?;
    let call = Box::new(call);
    ok_or_rejected(
        app.handle
            .request(move |reply| Input::Call {
                stream_id,
                call,
                reply,
            })
            .await?,
    )?;
    Ok(StatusCode::ACCEPTED.into_response())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn broadcast_stream(
    rx: broadcast::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Option<Bytes>> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(b) => Some((Some(b), rx)),
            // A subscriber that fell behind is cut off rather than shown a gap: it must
            // re-subscribe and get a fresh snapshot.
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "operator subscriber fell behind; closing its stream"
                );
                Some((None, rx))
            }
            Err(broadcast::error::RecvError::Closed) => Some((None, rx)),
        }
    })
}

#[derive(serde::Deserialize)]
struct OperatorCall {
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

async fn operator_api(State(app): State<App>, req: Request) -> Result<Response, ApiError> {
    let bytes = read_body(req, app.max_body).await?;
    let call: OperatorCall = parse_json(&bytes)?;
    let get_state = |s: Snapshot| match s {
        Snapshot::Operator(s) => Ok(s),
        _ => Err(ApiError::Unavailable),
    };
    match call.kind.as_str() {
        "SUBSCRIBE" => {
            let (snapshot, rx) = app.handle.subscribe_events().await?;
            let ev = operator::Event {
                subscribed: Some(operator::Subscribed {
                    get_state: snapshot,
                    heartbeat_interval_seconds: 15.0,
                }),
                ..operator::Event::bare(operator::EventType::Subscribed)
            };
            let first = heartbeat_frame(&ev);
            let hb = heartbeat_frame(&operator::Event::bare(operator::EventType::Heartbeat));
            let guard = Guard {
                handle: app.handle.clone(),
                conn: None,
            };
            Ok(stream_response(
                Some(first),
                broadcast_stream(rx),
                hb,
                guard,
                None,
            ))
        }
        "GET_STATE" => {
            let s = get_state(app.handle.read(ReadKind::Operator).await?)?;
            Ok(json_response(&json!({"type": "GET_STATE", "get_state": s})))
        }
        "GET_AGENTS" => {
            let s = get_state(app.handle.read(ReadKind::Operator).await?)?;
            Ok(json_response(
                &json!({"type": "GET_AGENTS", "get_agents": s.get_agents}),
            ))
        }
        "GET_FRAMEWORKS" => {
            let s = get_state(app.handle.read(ReadKind::Operator).await?)?;
            Ok(json_response(
                &json!({"type": "GET_FRAMEWORKS", "get_frameworks": s.get_frameworks}),
            ))
        }
        "GET_TASKS" => {
            let s = get_state(app.handle.read(ReadKind::Operator).await?)?;
            Ok(json_response(
                &json!({"type": "GET_TASKS", "get_tasks": s.get_tasks}),
            ))
        }
        "GET_HEALTH" => Ok(json_response(
            &json!({"type": "GET_HEALTH", "get_health": {"healthy": true}}),
        )),
        "GET_VERSION" => Ok(json_response(
            &json!({"type": "GET_VERSION", "get_version": {"version_info": {
            "version": basalt_api::MESOS_COMPAT_VERSION, "build_user": "basalt"}}}),
        )),
        "GET_METRICS" => {
            let m = metrics(&app).await?;
            let list: Vec<Value> = m
                .into_iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            Ok(json_response(
                &json!({"type": "GET_METRICS", "get_metrics": {"metrics": list}}),
            ))
        }
        "TEARDOWN" => {
            let id: FrameworkId = field(&call.rest, "teardown", "framework_id")?;
            ok_or_rejected(
                app.handle
                    .request(move |reply| Input::Operator {
                        op: OperatorInput::TeardownFramework(id),
                        reply,
                    })
                    .await?,
            )?;
            Ok(StatusCode::OK.into_response())
        }
        "MARK_AGENT_GONE" => {
            let id: AgentId = field(&call.rest, "mark_agent_gone", "agent_id")?;
            ok_or_rejected(
                app.handle
                    .request(move |reply| Input::Operator {
                        op: OperatorInput::MarkAgentGone(id),
                        reply,
                    })
                    .await?,
            )?;
            Ok(StatusCode::OK.into_response())
        }
        "UPDATE_WEIGHTS" => {
            #[derive(serde::Deserialize)]
            struct W {
                role: String,
                weight: f64,
            }
            let infos: Vec<W> = field(&call.rest, "update_weights", "weight_infos")?;
            for w in infos {
                let op = OperatorInput::SetWeight {
                    role: w.role,
                    weight: w.weight,
                };
                ok_or_rejected(
                    app.handle
                        .request(move |reply| Input::Operator { op, reply })
                        .await?,
                )?;
            }
            Ok(StatusCode::OK.into_response())
        }
        "UPDATE_QUOTA" => {
            let configs: Vec<Value> = field(&call.rest, "update_quota", "quota_configs")?;
            for c in configs {
                let role = c
                    .get("role")
                    .and_then(|r| r.as_str())
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| ApiError::BadRequest("quota config needs a 'role'".into()))?
                    .to_owned();
                let guarantee = quota_map(c.get("guarantees"))?.unwrap_or_default();
                let limit = quota_map(c.get("limits"))?;
                let op = OperatorInput::SetQuota {
                    role,
                    guarantee,
                    limit,
                };
                ok_or_rejected(
                    app.handle
                        .request(move |reply| Input::Operator { op, reply })
                        .await?,
                )?;
            }
            Ok(StatusCode::OK.into_response())
        }
        other => Err(ApiError::BadRequest(format!(
            "operator call '{other}' is not supported"
        ))),
    }
}

fn field<T: DeserializeOwned>(
    rest: &BTreeMap<String, Value>,
    outer: &str,
    inner: &str,
) -> Result<T, ApiError> {
    let v = rest
        .get(outer)
        .and_then(|o| o.get(inner))
        .ok_or_else(|| ApiError::BadRequest(format!("missing '{outer}.{inner}'")))?;
    serde_json::from_value(v.clone())
        .map_err(|e| ApiError::BadRequest(format!("'{outer}.{inner}': {e}")))
}

/// `{"cpus": {"value": 2}, "mem": {"value": 1024}}` (Mesos 1.9 quota configs).
fn quota_map(v: Option<&Value>) -> Result<Option<Resources>, ApiError> {
    let Some(Value::Object(m)) = v else {
        return Ok(None);
    };
    let mut r = Resources::default();
    for (name, val) in m {
        let x = val
            .get("value")
            .and_then(|x| x.as_f64())
            .or_else(|| val.as_f64())
            .ok_or_else(|| ApiError::BadRequest(format!("quota '{name}' needs a numeric value")))?;
        let milli = basalt_api::Milli::from_f64(name, x)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        match name.as_str() {
            "cpus" => r.cpus = milli,
            "mem" => r.mem = milli,
            "disk" => r.disk = milli,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "quota on '{other}' is not supported"
                )));
            }
        }
    }
    Ok(Some(r))
}
