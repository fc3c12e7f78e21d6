//! Marathon's `/v2` REST API over init's state, with Marathon's shapes and status codes.

use crate::app::AppDefinition;
use crate::state::{self, AppRecord, Refusal, State, TaskRecord};
use crate::{Shared, now_ms};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use basalt_api::TaskState;
use basalt_api::scheduler::{Call, CallType};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type Ctx = AxState<Arc<Shared>>;
type Params = Query<HashMap<String, String>>;

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route(
            "/v2/apps",
            get(list_apps)
                .post(create_app)
                .put(bulk_update)
                .patch(bulk_update),
        )
        .route("/v2/apps/{*rest}", any(app_path))
        .route("/v2/groups", any(groups))
        .route("/v2/groups/", any(groups))
        .route("/v2/groups/{*rest}", any(group_path))
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route(
            "/v2/deployments/{id}",
            get(get_deployment).delete(delete_deployment),
        )
        .route("/v2/queue", get(queue))
        .route("/v2/events", get(events))
        .route("/v2/info", get(info))
        .route("/v2/leader", get(leader))
        .route("/ping", get(|| async { "pong" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { refuse(Refusal::new(404, "no such endpoint")) })
        .with_state(shared)
}

fn refuse(r: Refusal) -> Response {
    let code = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    (code, Json(r.body)).into_response()
}

fn internal(e: String) -> Response {
    refuse(Refusal::new(
        503,
        format!("init could not store the change: {e}"),
    ))
}

/// `?force`, `?force=true`, `?force=True` (Python's requests writes booleans so).
fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v.is_empty() || v == "1" || v.eq_ignore_ascii_case("true"))
}

fn task_json(t: &TaskRecord) -> Value {
    let state = if t.killing && !t.state.is_terminal() {
        "TASK_KILLING"
    } else {
        t.state.as_str()
    };
    let mut v = json!({
        "id": t.id,
        "appId": t.app,
        "host": t.host,
        "ports": t.ports,
        "servicePorts": t.service_ports,
        "slaveId": t.agent_id,
        "stagedAt": t.staged_at,
        "startedAt": t.started_at,
        "version": t.version,
        "state": state,
        "healthCheckResults": [],
        "localVolumes": [],
        "ipAddresses": [],
    });
    if let Some(h) = t.healthy {
        v["healthCheckResults"] = json!([{"alive": h, "taskId": t.id}]);
    }
    v
}

fn app_json(st: &State, a: &AppRecord, embed_tasks: bool) -> Value {
    let mut v = serde_json::to_value(&a.def).unwrap_or_else(|_| json!({}));
    // Clients index these without defaults (dcos CLI `app list`): present even when unset.
    for k in ["cmd", "args", "container", "user"] {
        if v.get(k).is_none() {
            v[k] = Value::Null;
        }
    }
    let tasks: Vec<&TaskRecord> = st
        .app_tasks(&a.def.id)
        .filter(|t| !t.state.is_terminal())
        .collect();
    let running = tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .count();
    let healthy = tasks.iter().filter(|t| t.healthy == Some(true)).count();
    let unhealthy = tasks.iter().filter(|t| t.healthy == Some(false)).count();
    let defs: Vec<Value> = a
        .def
        .port_defs()
        .iter()
        .zip(&a.service_ports)
        .map(|(d, p)| {
            let mut d = serde_json::to_value(d).unwrap_or_else(|_| json!({}));
            d["port"] = json!(p);
            d
        })
        .collect();
    v["portDefinitions"] = json!(defs);
    v["ports"] = json!(a.service_ports);
    v["versionInfo"] =
        json!({"lastScalingAt": a.last_scaling_at, "lastConfigChangeAt": a.config_version});
    v["tasksRunning"] = json!(running);
    v["tasksStaged"] = json!(tasks.len() - running);
    v["tasksHealthy"] = json!(healthy);
    v["tasksUnhealthy"] = json!(unhealthy);
    v["deployments"] = json!(
        st.deployments
            .values()
            .filter(|d| d.app == a.def.id)
            .map(|d| json!({"id": d.id}))
            .collect::<Vec<_>>()
    );
    if let Some(f) = &a.last_failure {
        v["lastTaskFailure"] = f.clone();
    }
    if embed_tasks {
        v["tasks"] = json!(tasks.iter().map(|t| task_json(t)).collect::<Vec<_>>());
    }
    v
}

/// `label=key==value`, `key!=value` or `key` selectors, comma-separated.
fn label_matches(sel: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
    sel.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|s| {
            if let Some((k, v)) = s.split_once("==") {
                labels.get(k.trim()).is_some_and(|x| x == v.trim())
            } else if let Some((k, v)) = s.split_once("!=") {
                labels.get(k.trim()).is_none_or(|x| x != v.trim())
            } else {
                labels.contains_key(s)
            }
        })
}

async fn list_apps(AxState(s): Ctx, Query(q): Params) -> Json<Value> {
    let st = s.lock();
    let embed = q.get("embed").map(String::as_str).unwrap_or_default();
    let embed_tasks = embed.contains("apps.tasks");
    let apps: Vec<Value> = st
        .apps
        .values()
        .filter(|a| !a.deleting)
        .filter(|a| q.get("id").is_none_or(|id| a.def.id.contains(id.as_str())))
        .filter(|a| {
            q.get("cmd")
                .is_none_or(|c| a.def.cmd.as_deref().is_some_and(|x| x.contains(c.as_str())))
        })
        .filter(|a| {
            q.get("label")
                .is_none_or(|l| label_matches(l, &a.def.labels))
        })
        .map(|a| app_json(&st, a, embed_tasks))
        .collect();
    Json(json!({ "apps": apps }))
}

fn parse_app(body: &[u8]) -> Result<AppDefinition, Refusal> {
    serde_json::from_slice::<AppDefinition>(body).map_err(|e| Refusal {
        status: 422,
        body: json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [e.to_string()]}]}),
    })
}

/// `PUT`/`PATCH /v2/apps` with a list of apps: each created or updated (fields left out
/// keep their values), all or none.
async fn bulk_update(AxState(s): Ctx, Query(q): Params, body: Bytes) -> Response {
    let list: Vec<Value> = match serde_json::from_slice(&body) {
        Ok(Value::Array(a)) => a,
        Ok(_) => return refuse(Refusal::new(422, "expected a JSON list of apps")),
        Err(e) => return refuse(Refusal::new(422, format!("Invalid JSON: {e}"))),
    };
    let mut defs = Vec::new();
    {
        let st = s.lock();
        for (i, patch) in list.into_iter().enumerate() {
            let Some(id) = patch.get("id").and_then(Value::as_str) else {
                return refuse(Refusal::new(422, format!("app {i} has no id")));
            };
            let id = crate::app::normalize_id(id).unwrap_or_else(|_| id.to_owned());
            let merged = match st.apps.get(&id).filter(|a| !a.deleting) {
                Some(a) => {
                    let mut m = serde_json::to_value(&a.def).unwrap_or_else(|_| json!({}));
                    if let (Some(m), Some(p)) = (m.as_object_mut(), patch.as_object()) {
                        for (k, v) in p {
                            m.insert(k.clone(), v.clone());
                        }
                    }
                    m
                }
                None => patch,
            };
            match serde_json::from_value::<AppDefinition>(merged) {
                Ok(d) => defs.push(d),
                Err(e) => return refuse(Refusal::new(422, format!("Invalid app {i}: {e}"))),
            }
        }
    }
    put_apps(&s, defs, false, flag(&q, "force")).await
}

/// Creates (`create_only`) or updates every app of `defs`, all or none, and answers with
/// the last deployment (201 for creations).
async fn put_apps(
    s: &Arc<Shared>,
    defs: Vec<AppDefinition>,
    create_only: bool,
    force: bool,
) -> Response {
    let now = now_ms();
    let r = s.mutate_all(|st, fx| {
        let mut last = (state::iso(now), String::new());
        for d in defs {
            last = st.put_app(d, now, create_only, force, fx)?;
        }
        Ok::<_, Refusal>(last)
    });
    match r {
        Err(e) => internal(e),
        Ok((Err(r), _)) => refuse(r),
        Ok((Ok((v, d)), _)) => {
            revive_if_needed(s).await;
            let mut resp = deployment_result(v, d);
            if create_only {
                *resp.status_mut() = StatusCode::CREATED;
            }
            resp
        }
    }
}

async fn revive_if_needed(s: &Arc<Shared>) {
    let needs = s.lock().needs_offers(now_ms());
    if needs {
        // Clears decline filters, so a new app does not wait them out.
        let c = Call::new(None, CallType::Revive);
        s.call(c).await;
    }
    s.wake.notify_one();
}

async fn create_app(AxState(s): Ctx, Query(q): Params, body: Bytes) -> Response {
    let def = match parse_app(&body) {
        Ok(d) => d,
        Err(r) => return refuse(r),
    };
    let force = flag(&q, "force");
    let now = now_ms();
    let r = s.mutate(|st, fx| {
        st.put_app(def, now, true, force, fx).map(|(_, dep)| {
            let id = st
                .deployments
                .get(&dep)
                .map(|d| d.app.clone())
                .unwrap_or_default();
            let app = st
                .apps
                .get(&id)
                .map(|a| app_json(st, a, false))
                .unwrap_or(Value::Null);
            (id, dep, app)
        })
    });
    match r {
        Err(e) => internal(e),
        Ok((Err(r), _)) => refuse(r),
        Ok((Ok((id, dep, app)), _)) => {
            revive_if_needed(&s).await;
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&format!("/v2/apps{id}")) {
                h.insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&dep) {
                h.insert("Marathon-Deployment-Id", v);
            }
            (StatusCode::CREATED, h, Json(app)).into_response()
        }
    }
}

fn deployment_result(version: String, dep: String) -> Response {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&dep) {
        h.insert("Marathon-Deployment-Id", v);
    }
    (
        StatusCode::OK,
        h,
        Json(json!({"version": version, "deploymentId": dep})),
    )
        .into_response()
}

/// Everything under `/v2/apps/...`: the app id may have any number of segments, so the
/// suffixes (`/tasks`, `/restart`, `/versions`) are peeled off by hand.
async fn app_path(
    AxState(s): Ctx,
    method: Method,
    Path(rest): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let path = format!("/{}", rest.trim_matches('/'));
    if let Some((id, task)) = path.split_once("/tasks/") {
        return match method {
            Method::GET => one_task(&s, id, task),
            Method::DELETE => kill_one(&s, task, flag(&q, "scale")).await,
            _ => refuse(Refusal::new(405, "use GET or DELETE")),
        };
    }
    if let Some(id) = path.strip_suffix("/tasks") {
        return match method {
            Method::GET => app_tasks(&s, id),
            Method::DELETE => kill_all(&s, id, flag(&q, "scale")).await,
            _ => refuse(Refusal::new(405, "use GET or DELETE")),
        };
    }
    if let Some(id) = path.strip_suffix("/restart") {
        if method != Method::POST {
            return refuse(Refusal::new(405, "use POST"));
        }
        let now = now_ms();
        let force = flag(&q, "force");
        return match s.mutate(|st, fx| st.restart_app(id, now, force, fx)) {
            Err(e) => internal(e),
            Ok((Err(r), _)) => refuse(r),
            Ok((Ok((v, d)), _)) => {
                revive_if_needed(&s).await;
                deployment_result(v, d)
            }
        };
    }
    if let Some(id) = path.strip_suffix("/versions") {
        return versions(&s, id, "");
    }
    if let Some((id, version)) = path.rsplit_once("/versions/")
        && !version.contains('/')
    {
        return versions(&s, id, version);
    }
    let id = path;
    match method {
        Method::GET => {
            let st = s.lock();
            match st.apps.get(&id).filter(|a| !a.deleting) {
                Some(a) => Json(json!({"app": app_json(&st, a, true)})).into_response(),
                None => refuse(Refusal::new(404, format!("App '{id}' does not exist"))),
            }
        }
        Method::PUT | Method::PATCH => {
            // Marathon's PUT is an update: fields left out keep their values (unless
            // `partialUpdate=false`); PATCH always is.
            let current = s
                .lock()
                .apps
                .get(&id)
                .filter(|a| !a.deleting)
                .map(|a| a.def.clone());
            let replace = method == Method::PUT
                && q.get("partialUpdate")
                    .is_some_and(|v| v.eq_ignore_ascii_case("false"));
            let mut def = match current {
                Some(current) if !replace => {
                    let patch: Value = match serde_json::from_slice(&body) {
                        Ok(v) => v,
                        Err(e) => return refuse(Refusal::new(422, format!("Invalid JSON: {e}"))),
                    };
                    let mut merged = serde_json::to_value(current).unwrap_or_else(|_| json!({}));
                    match (merged.as_object_mut(), patch.as_object()) {
                        (Some(m), Some(p)) => {
                            for (k, v) in p {
                                m.insert(k.clone(), v.clone());
                            }
                        }
                        _ => return refuse(Refusal::new(422, "expected a JSON object")),
                    }
                    match serde_json::from_value::<AppDefinition>(merged) {
                        Ok(d) => d,
                        Err(e) => return refuse(Refusal::new(422, format!("Invalid JSON: {e}"))),
                    }
                }
                None if method == Method::PATCH => {
                    return refuse(Refusal::new(404, format!("App '{id}' does not exist")));
                }
                _ => match parse_app(&body) {
                    Ok(d) => d,
                    Err(r) => return refuse(r),
                },
            };
            if def.id.is_empty() {
                def.id = id.clone();
            }
            if state::task_id_prefix(&def.id) != state::task_id_prefix(&id)
                && crate::app::normalize_id(&def.id).ok().as_deref() != Some(id.as_str())
            {
                return refuse(Refusal::new(
                    422,
                    "the app id in the body does not match the path",
                ));
            }
            let now = now_ms();
            let force = flag(&q, "force");
            let existed = s.lock().apps.get(&id).is_some_and(|a| !a.deleting);
            match s.mutate(|st, fx| st.put_app(def, now, false, force, fx)) {
                Err(e) => internal(e),
                Ok((Err(r), _)) => refuse(r),
                Ok((Ok((v, d)), _)) => {
                    revive_if_needed(&s).await;
                    let mut resp = deployment_result(v, d);
                    if !existed {
                        *resp.status_mut() = StatusCode::CREATED;
                    }
                    resp
                }
            }
        }
        Method::DELETE => {
            let now = now_ms();
            let force = flag(&q, "force");
            match s.mutate(|st, fx| st.delete_app(&id, now, force, fx)) {
                Err(e) => internal(e),
                Ok((Err(r), _)) => refuse(r),
                Ok((Ok((v, d)), kills)) => {
                    s.kill(kills).await;
                    s.wake.notify_one();
                    deployment_result(v, d)
                }
            }
        }
        _ => refuse(Refusal::new(405, "use GET, PUT, PATCH or DELETE")),
    }
}

fn app_tasks(s: &Arc<Shared>, id: &str) -> Response {
    let st = s.lock();
    if !st.apps.contains_key(id) {
        return refuse(Refusal::new(404, format!("App '{id}' does not exist")));
    }
    let tasks: Vec<Value> = st
        .app_tasks(id)
        .filter(|t| !t.state.is_terminal())
        .map(task_json)
        .collect();
    Json(json!({ "tasks": tasks })).into_response()
}

fn one_task(s: &Arc<Shared>, id: &str, task: &str) -> Response {
    let st = s.lock();
    match st.tasks.get(task).filter(|t| t.app == id) {
        Some(t) => Json(json!({"task": task_json(t)})).into_response(),
        None => refuse(Refusal::new(404, format!("Task '{task}' does not exist"))),
    }
}

async fn kill_one(s: &Arc<Shared>, task: &str, scale: bool) -> Response {
    let now = now_ms();
    match s.mutate(|st, fx| st.kill_task(task, scale, now, fx)) {
        Err(e) => internal(e),
        Ok((Err(r), _)) => refuse(r),
        Ok((Ok(t), kills)) => {
            s.kill(kills).await;
            s.wake.notify_one();
            Json(json!({"task": task_json(&t)})).into_response()
        }
    }
}

async fn kill_all(s: &Arc<Shared>, id: &str, scale: bool) -> Response {
    let ids: Vec<String> = s
        .lock()
        .app_tasks(id)
        .filter(|t| !t.state.is_terminal() && !t.killing)
        .map(|t| t.id.clone())
        .collect();
    let mut killed = Vec::new();
    let mut all_kills = Vec::new();
    let now = now_ms();
    for t in ids {
        if let Ok((Ok(rec), kills)) = s.mutate(|st, fx| st.kill_task(&t, scale, now, fx)) {
            killed.push(task_json(&rec));
            all_kills.extend(kills);
        }
    }
    s.kill(all_kills).await;
    s.wake.notify_one();
    Json(json!({ "tasks": killed })).into_response()
}

/// The stored versions of exactly `id` (not of apps nested below it): (key, definition).
fn stored_versions(s: &Arc<Shared>, id: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let prefix = format!("{}{id}/", state::KEY_VERSIONS);
    let list = s.store.list(&prefix).map_err(|e| e.to_string())?;
    Ok(list
        .into_iter()
        .filter(|(k, _)| !k[prefix.len()..].contains('/'))
        .collect())
}

fn versions(s: &Arc<Shared>, id: &str, version: &str) -> Response {
    let list = match stored_versions(s, id) {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    if list.is_empty() {
        return refuse(Refusal::new(404, format!("App '{id}' does not exist")));
    }
    if version.is_empty() {
        let mut vs: Vec<String> = list
            .iter()
            .filter_map(|(k, _)| k.rsplit('/').next().map(str::to_owned))
            .collect();
        vs.sort_by(|a, b| b.cmp(a));
        return Json(json!({ "versions": vs })).into_response();
    }
    match list
        .iter()
        .find(|(k, _)| k.ends_with(&format!("/{version}")))
    {
        Some((_, v)) => match serde_json::from_slice::<Value>(v) {
            Ok(def) => Json(def).into_response(),
            Err(e) => internal(e.to_string()),
        },
        None => refuse(Refusal::new(
            404,
            format!("Version '{version}' of app '{id}' does not exist"),
        )),
    }
}

async fn list_tasks(AxState(s): Ctx, Query(q): Params) -> Json<Value> {
    let st = s.lock();
    let want = q.get("status").map(|v| v.to_ascii_lowercase());
    let tasks: Vec<Value> = st
        .tasks
        .values()
        .filter(|t| !t.state.is_terminal())
        .filter(|t| match want.as_deref() {
            Some("running") => t.state == TaskState::Running,
            Some("staging") => t.state == TaskState::Staging || t.state == TaskState::Starting,
            _ => true,
        })
        .map(task_json)
        .collect();
    Json(json!({ "tasks": tasks }))
}

async fn delete_tasks(AxState(s): Ctx, Query(q): Params, body: Bytes) -> Response {
    let ids: Vec<String> = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("ids").and_then(Value::as_array) {
            Some(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            None => return refuse(Refusal::new(422, "expected {\"ids\": [task ids]}")),
        },
        Err(e) => return refuse(Refusal::new(422, format!("Invalid JSON: {e}"))),
    };
    let scale = flag(&q, "scale");
    let now = now_ms();
    let mut all = Vec::new();
    let mut killed = Vec::new();
    for t in ids {
        match s.mutate(|st, fx| st.kill_task(&t, scale, now, fx)) {
            Ok((Ok(rec), kills)) => {
                killed.push(task_json(&rec));
                all.extend(kills);
            }
            Ok((Err(r), _)) => {
                // What was already marked for killing is killed, then the error.
                s.kill(all).await;
                return refuse(r);
            }
            Err(e) => {
                s.kill(all).await;
                return internal(e);
            }
        }
    }
    s.kill(all).await;
    s.wake.notify_one();
    Json(json!({ "tasks": killed })).into_response()
}

async fn list_deployments(AxState(s): Ctx) -> Json<Value> {
    let st = s.lock();
    Json(Value::Array(
        st.deployments
            .values()
            .map(|d| st.deployment_json(d))
            .collect(),
    ))
}

async fn get_deployment(AxState(s): Ctx, Path(id): Path<String>) -> Response {
    let st = s.lock();
    match st.deployments.get(&id) {
        Some(d) => Json(st.deployment_json(d)).into_response(),
        None => refuse(Refusal::new(
            404,
            format!("DeploymentPlan {id} does not exist"),
        )),
    }
}

/// `?force=true` drops the deployment where it stands; without it, the app goes back to
/// the version it had before (a new deployment).
async fn delete_deployment(AxState(s): Ctx, Path(id): Path<String>, Query(q): Params) -> Response {
    let Some(d) = s.lock().deployments.get(&id).cloned() else {
        return refuse(Refusal::new(
            404,
            format!("DeploymentPlan {id} does not exist"),
        ));
    };
    if flag(&q, "force") {
        let r = s.mutate(|st, fx| {
            st.abandon_deployment(&id, &state::iso(now_ms()), fx);
        });
        return match r {
            Ok(_) => StatusCode::ACCEPTED.into_response(),
            Err(e) => internal(e),
        };
    }
    let list = match stored_versions(&s, &d.app) {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    let previous = list
        .iter()
        .filter(|(k, _)| k.rsplit('/').next().is_some_and(|v| v < d.version.as_str()))
        .max_by(|a, b| a.0.cmp(&b.0))
        .and_then(|(_, v)| serde_json::from_slice::<AppDefinition>(v).ok());
    let now = now_ms();
    let r = match previous {
        Some(mut def) => {
            def.version = None;
            s.mutate(|st, fx| st.put_app(def, now, false, true, fx))
        }
        // Rolling back a creation removes the app.
        None => s.mutate(|st, fx| st.delete_app(&d.app, now, true, fx)),
    };
    match r {
        Err(e) => internal(e),
        Ok((Err(r), _)) => refuse(r),
        Ok((Ok((v, dep)), kills)) => {
            s.kill(kills).await;
            revive_if_needed(&s).await;
            deployment_result(v, dep)
        }
    }
}

async fn queue(AxState(s): Ctx, Query(q): Params) -> Json<Value> {
    let unused = q
        .get("embed")
        .is_some_and(|e| e.contains("lastUnusedOffers"));
    let st = s.lock();
    let now = now_ms();
    let queue: Vec<Value> = st
        .apps
        .values()
        .filter_map(|a| {
            let unmet = st.unmet_dependencies(a);
            let count = if unmet.is_empty() {
                st.wanted(&a.def.id, now.max(a.delay_until))
            } else {
                // Held back by its dependencies: what it still needs once they serve.
                let live = st
                    .app_tasks(&a.def.id)
                    .filter(|t| !t.state.is_terminal())
                    .count();
                (a.def.instances.max(0) as usize).saturating_sub(live)
            };
            (count > 0 || a.delay_until > now).then(|| {
                let left = a.delay_until.saturating_sub(now) as f64 / 1000.0;
                let mut item = json!({"app": app_json(&st, a, false), "count": count,
                       "delay": {"timeLeftSeconds": left, "overdue": left <= 0.0}});
                if !unmet.is_empty() {
                    item["waitingReason"] = json!(format!(
                        "waiting for its dependencies: {}",
                        unmet.join(", ")
                    ));
                }
                if let Some(stats) = st.offer_stats.get(&a.def.id) {
                    item["processedOffersSummary"] = stats.to_json();
                    if unused {
                        item["lastUnusedOffers"] =
                            Value::Array(stats.last_unused.iter().cloned().collect());
                    }
                }
                if a.def.container.is_some() && count > 0 {
                    item["waitingReason"] = json!(
                        "DOCKER containers need an agent with the Docker containerizer; \
                         no agent offers one yet"
                    );
                }
                item
            })
        })
        .collect();
    Json(json!({ "queue": queue }))
}

async fn info(AxState(s): Ctx) -> Json<Value> {
    let fid = s.lock().framework_id.clone();
    Json(json!({
        "name": "marathon",
        "version": "1.11.0",
        "buildref": format!("basalt-{}", basalt_api::VERSION),
        "elected": true,
        "leader": s.leader,
        "frameworkId": fid,
        "marathon_config": {"master": s.master.base_url(), "framework_name": s.cfg.framework_name,
                            "failover_timeout": s.cfg.failover_timeout.as_secs(), "local_port_min": 10000, "local_port_max": 20000},
        "http_config": {"http_port": s.cfg.port},
        "event_subscriber": {"type": "http_callback"},
    }))
}

async fn leader(AxState(s): Ctx) -> Json<Value> {
    Json(json!({"leader": s.leader}))
}

async fn metrics(AxState(s): Ctx) -> Json<Value> {
    let st = s.lock();
    let running = st
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Running)
        .count();
    Json(json!({
        "gauges": {
            "marathon.apps.active.gauge": {"value": st.apps.len()},
            "marathon.tasks.running.gauge": {"value": running},
            "marathon.deployments.active.gauge": {"value": st.deployments.len()},
        }
    }))
}

/// Marathon's event bus as server-sent events; `event_type=a&event_type=b` filters.
async fn events(AxState(s): Ctx, uri: axum::http::Uri) -> Response {
    let types: Vec<String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("event_type="))
        .map(str::to_owned)
        .collect();
    let rx = s.events.subscribe();
    let attached = json!({"eventType": "event_stream_attached", "timestamp": state::iso(now_ms()), "remoteAddress": "client"});
    let first = futures_util::stream::once(async move {
        Ok::<Event, std::convert::Infallible>(
            Event::default()
                .event("event_stream_attached")
                .data(attached.to_string()),
        )
    });
    let rest = futures_util::stream::unfold((rx, types), |(mut rx, types)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let kind = ev
                        .get("eventType")
                        .and_then(Value::as_str)
                        .unwrap_or("event")
                        .to_owned();
                    if !types.is_empty() && !types.contains(&kind) {
                        continue;
                    }
                    let e = Event::default().event(kind).data(ev.to_string());
                    return Some((Ok::<Event, std::convert::Infallible>(e), (rx, types)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures_util::StreamExt;
    Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::default())
        .into_response()
}

// ------------------------------------------------------------------------- groups

/// The group tree under `prefix` (an id like `/prod`, or `/` for the root), built from the
/// app ids: Marathon groups are the directories of app paths.
fn group_json(st: &State, prefix: &str, embed_tasks: bool) -> Option<Value> {
    let base = if prefix == "/" {
        String::from("/")
    } else {
        format!("{}/", prefix.trim_end_matches('/'))
    };
    let mut apps = Vec::new();
    let mut children: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut any = false;
    for a in st.apps.values().filter(|a| !a.deleting) {
        let Some(rest) = a.def.id.strip_prefix(&base) else {
            continue;
        };
        any = true;
        match rest.split_once('/') {
            None => apps.push(app_json(st, a, embed_tasks)),
            Some((child, _)) => {
                children.insert(format!("{base}{child}"));
            }
        }
    }
    if !any && prefix != "/" {
        return None;
    }
    let groups: Vec<Value> = children
        .iter()
        .filter_map(|c| group_json(st, c, embed_tasks))
        .collect();
    let version = st
        .apps
        .values()
        .filter(|a| a.def.id.starts_with(&base))
        .filter_map(|a| a.def.version.clone())
        .max()
        .unwrap_or_else(|| state::iso(0));
    Some(json!({
        "id": if prefix == "/" { "/" } else { prefix.trim_end_matches('/') },
        "apps": apps,
        "groups": groups,
        "pods": [],
        "dependencies": [],
        "version": version,
    }))
}

async fn groups(s: Ctx, method: Method, q: Params, body: Bytes) -> Response {
    group_request(s, method, "/".to_owned(), q, body).await
}

async fn group_path(
    s: Ctx,
    method: Method,
    Path(rest): Path<String>,
    q: Params,
    body: Bytes,
) -> Response {
    let id = format!("/{}", rest.trim_matches('/'));
    group_request(s, method, id, q, body).await
}

async fn group_request(
    AxState(s): Ctx,
    method: Method,
    id: String,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let embed_tasks = q.get("embed").is_some_and(|e| e.contains("tasks"));
    match method {
        Method::GET => {
            let st = s.lock();
            match group_json(&st, &id, embed_tasks) {
                Some(g) => Json(g).into_response(),
                None => refuse(Refusal::new(404, format!("Group '{id}' does not exist"))),
            }
        }
        Method::DELETE => {
            let force = flag(&q, "force");
            let base = if id == "/" {
                "/".to_owned()
            } else {
                format!("{id}/")
            };
            let ids: Vec<String> = s
                .lock()
                .apps
                .values()
                .filter(|a| !a.deleting && a.def.id.starts_with(&base))
                .map(|a| a.def.id.clone())
                .collect();
            if ids.is_empty() && id != "/" {
                return refuse(Refusal::new(404, format!("Group '{id}' does not exist")));
            }
            let now = now_ms();
            let r = s.mutate_all(|st, fx| {
                let mut last = (state::iso(now), String::new());
                for app in &ids {
                    last = st.delete_app(app, now, force, fx)?;
                }
                Ok(last)
            });
            match r {
                Err(e) => internal(e),
                Ok((Err(r), _)) => refuse(r),
                Ok((Ok((v, d)), kills)) => {
                    s.kill(kills).await;
                    s.wake.notify_one();
                    group_changed(&s, &id, &v);
                    deployment_result(v, d)
                }
            }
        }
        Method::POST | Method::PUT => {
            // A group document: `{"id", "apps": [...], "groups": [...]}`; apps are created
            // or updated, ids taken relative to the group.
            let doc: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return refuse(Refusal::new(422, format!("Invalid JSON: {e}"))),
            };
            let root = match doc.get("id").and_then(Value::as_str) {
                Some(g) if method == Method::POST && id == "/" => {
                    if g.starts_with('/') {
                        g.to_owned()
                    } else {
                        format!("/{g}")
                    }
                }
                _ => id.clone(),
            };
            let mut defs = Vec::new();
            if let Err(r) = collect_group_apps(&doc, &root, &mut defs) {
                return refuse(r);
            }
            if defs.is_empty() {
                return refuse(Refusal::new(
                    422,
                    "the group has no apps (empty groups are not kept)",
                ));
            }
            // All or nothing: every app is checked before any is stored.
            let mut details = Vec::new();
            for d in &defs {
                if let Err(v) = d.clone().validate() {
                    details.extend(v.into_iter().map(|mut x| {
                        x.path = format!("{}{}", d.id, x.path);
                        x
                    }));
                }
            }
            if !details.is_empty() {
                return refuse(Refusal {
                    status: 422,
                    body: json!({"message": "Object is not valid", "details": details}),
                });
            }
            if method == Method::POST {
                let st = s.lock();
                if let Some(d) = defs.iter().find(|d| {
                    crate::app::normalize_id(&d.id)
                        .is_ok_and(|id| st.apps.get(&id).is_some_and(|a| !a.deleting))
                }) {
                    return refuse(Refusal::new(
                        409,
                        format!("An app with id [{}] already exists.", d.id),
                    ));
                }
            }
            let resp = put_apps(&s, defs, method == Method::POST, flag(&q, "force")).await;
            if resp.status().is_success() {
                group_changed(&s, &root, &state::iso(now_ms()));
            }
            resp
        }
        _ => refuse(Refusal::new(405, "use GET, POST, PUT or DELETE")),
    }
}

/// Marathon's `group_change_success`, after a group's apps were changed or deleted.
fn group_changed(s: &Shared, group: &str, version: &str) {
    let _ = s.events.send(json!({"eventType": "group_change_success",
        "timestamp": state::iso(now_ms()), "groupId": group, "version": version}));
}

/// Apps of a group document and its subgroups, with ids made absolute.
fn collect_group_apps(
    doc: &Value,
    base: &str,
    out: &mut Vec<AppDefinition>,
) -> Result<(), Refusal> {
    let base = base.trim_end_matches('/');
    for app in doc
        .get("apps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut def: AppDefinition = serde_json::from_value(app.clone())
            .map_err(|e| Refusal::new(422, format!("Invalid app in group: {e}")))?;
        if !def.id.starts_with('/') {
            def.id = format!("{base}/{}", def.id);
        }
        out.push(def);
    }
    for g in doc
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let gid = g.get("id").and_then(Value::as_str).unwrap_or_default();
        let gid = if gid.starts_with('/') {
            gid.to_owned()
        } else {
            format!("{base}/{gid}")
        };
        collect_group_apps(g, &gid, out)?;
    }
    Ok(())
}
