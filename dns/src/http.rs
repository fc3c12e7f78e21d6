//! The Mesos-DNS HTTP API (`/v1/...`, same JSON shapes) plus `/v1/watch`, a blocking
//! query so tools follow changes instead of polling.

use crate::records::RecordSet;
use crate::server::Shared;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: watch::Receiver<u64>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "message": message.into() }))).into_response()
}

pub(crate) fn router(ctx: Ctx) -> axum::Router {
    axum::Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(config))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/services/{service}", get(services))
        .route("/v1/enumerate", get(enumerate))
        .route("/v1/axfr", get(axfr))
        .route("/v1/watch", get(watch_changes))
        .route("/metrics/snapshot", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(ctx)
}

fn fq(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if n.ends_with('.') { n } else { format!("{n}.") }
}

async fn version() -> Json<Value> {
    Json(json!({
        "Service": "Mesos-DNS",
        "Version": format!("basalt-{}", basalt_api::VERSION),
        "URL": "https://github.com/basalt-dcos/basalt",
    }))
}

async fn config(State(c): State<Ctx>) -> Json<Value> {
    Json(serde_json::to_value(&c.shared.cfg).unwrap_or(Value::Null))
}

async fn hosts(State(c): State<Ctx>, Path(host): Path<String>) -> Json<Value> {
    let rs = c.shared.records.load();
    let name = fq(&host);
    let list: Vec<Value> =
        rs.a.get(&name)
            .map(|ips| {
                ips.iter()
                    .map(|ip| json!({"host": name, "ip": ip.to_string()}))
                    .collect()
            })
            .unwrap_or_default();
    if list.is_empty() {
        // Mesos-DNS answers an unknown host with one empty entry, not a 404.
        return Json(json!([{"host": "", "ip": ""}]));
    }
    Json(Value::Array(list))
}

async fn services(State(c): State<Ctx>, Path(service): Path<String>) -> Json<Value> {
    let rs = c.shared.records.load();
    let name = fq(&service);
    let mut list = Vec::new();
    for s in rs.srv.get(&name).into_iter().flatten() {
        for ip in rs.a.get(&s.target).into_iter().flatten() {
            list.push(json!({
                "service": name,
                "host": s.target,
                "ip": ip.to_string(),
                "port": s.port.to_string(),
            }));
        }
    }
    if list.is_empty() {
        return Json(json!([{"service": "", "host": "", "ip": "", "port": ""}]));
    }
    Json(Value::Array(list))
}

async fn enumerate(State(c): State<Ctx>) -> Response {
    if !c.shared.cfg.enumeration_on {
        return error(
            StatusCode::NOT_FOUND,
            "enumeration is off (EnumerationOn: false)",
        );
    }
    let rs = c.shared.records.load();
    Json(json!({ "frameworks": rs.enumerate })).into_response()
}

fn axfr_doc(rs: &RecordSet, c: &Ctx) -> Value {
    let cfg = &c.shared.cfg;
    let mut a: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut aaaa: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, ips) in &rs.a {
        for ip in ips {
            let m = if ip.is_ipv4() { &mut a } else { &mut aaaa };
            m.entry(name).or_default().push(ip.to_string());
        }
    }
    let srv: BTreeMap<&str, Vec<String>> = rs
        .srv
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| {
            (
                n.as_str(),
                v.iter()
                    .map(|s| format!("{}:{}", s.target, s.port))
                    .collect(),
            )
        })
        .collect();
    let ptr: BTreeMap<&str, &Vec<String>> = rs.ptr.iter().map(|(k, v)| (k.as_str(), v)).collect();
    json!({
        "TTL": cfg.ttl,
        "Serial": rs.serial,
        "RefreshSeconds": 0,
        "Mname": cfg.soa_mname,
        "Rname": cfg.soa_rname,
        "Domain": cfg.domain,
        "Index": rs.index,
        "Records": { "As": a, "AAAAs": aaaa, "SRVs": srv, "PTRs": ptr },
    })
}

async fn axfr(State(c): State<Ctx>) -> Response {
    if !c.shared.cfg.enumeration_on {
        return error(
            StatusCode::NOT_FOUND,
            "enumeration is off (EnumerationOn: false)",
        );
    }
    let rs = c.shared.records.load();
    Json(axfr_doc(&rs, &c)).into_response()
}

#[derive(serde::Deserialize)]
struct WatchQuery {
    #[serde(default)]
    index: u64,
    /// How long to hold the request open, e.g. `30s` (default 60 s, at most 10 min).
    wait: Option<String>,
}

/// Blocking query: answers at once when the records are newer than `index`, else when
/// they change or `wait` passes. The body is the `/v1/axfr` document with its `Index`.
async fn watch_changes(
    State(c): State<Ctx>,
    q: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "index must be a non-negative integer",
        );
    };
    let wait = match q.wait.as_deref().map(parse_wait) {
        None => Duration::from_secs(60),
        Some(Some(d)) => d.min(Duration::from_secs(600)),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "wait must look like 30s, 500ms or 2m",
            );
        }
    };
    let mut rx = c.index.clone();
    let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i > q.index)).await;
    let rs = c.shared.records.load();
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&rs.index.to_string()) {
        headers.insert("X-Basalt-Index", v);
    }
    (headers, Json(axfr_doc(&rs, &c))).into_response()
}

fn parse_wait(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

async fn metrics(State(c): State<Ctx>) -> Json<Value> {
    let s = &c.shared.stats;
    let rs = c.shared.records.load();
    Json(json!({
        "dns/queries": s.queries.load(Ordering::Relaxed),
        "dns/forwarded": s.forwarded.load(Ordering::Relaxed),
        "dns/forward_failures": s.forward_failures.load(Ordering::Relaxed),
        "dns/records_a": rs.a.len(),
        "dns/records_srv": rs.srv.len(),
        "dns/index": rs.index,
    }))
}

#[cfg(test)]
mod tests {
    use super::parse_wait;
    use std::time::Duration;

    #[test]
    fn waits_parse() {
        assert_eq!(parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_wait("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_wait("soon"), None);
        assert_eq!(parse_wait("5h"), None);
    }
}
