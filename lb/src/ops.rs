//! Operator endpoints on 9090: health, per-backend stats, the routing table, Prometheus,
//! and marathon-lb's `/_haproxy_*` paths that its users' scripts call.

use crate::Shared;
use crate::now_ms;
use crate::table::Pool;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/_haproxy_health_check", get(health))
        .route("/stats", get(stats))
        .route("/routes", get(routes))
        .route("/_haproxy_getvhostmap", get(vhost_map))
        .route("/_haproxy_getappmap", get(app_map))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn health() -> &'static str {
    "OK\n"
}

fn pool_name(p: &Pool) -> String {
    // marathon-lb names backends `<app id with / as _>_<service port>`.
    let id = p.app_id.trim_start_matches('/').replace('/', "_");
    match p.service_port {
        Some(sp) => format!("{id}_{sp}"),
        None => format!("{id}_port{}", p.spec.index),
    }
}

fn pool_json(p: &Pool, now: u64) -> Value {
    let backends: Vec<Value> = p
        .backends
        .iter()
        .map(|b| {
            let st = &b.state;
            let requests = st.requests.load(Ordering::Relaxed);
            let lat = st.latency_us_total.load(Ordering::Relaxed);
            json!({
                "task_id": b.task_id,
                "address": b.addr.to_string(),
                "state": st.state_name(now),
                "requests": requests,
                "errors": st.errors.load(Ordering::Relaxed),
                "active": st.active.load(Ordering::Relaxed),
                "mean_latency_us": lat.checked_div(requests).unwrap_or(0),
            })
        })
        .collect();
    json!({
        "name": pool_name(p),
        "app_id": p.app_id,
        "port_index": p.spec.index,
        "service_port": p.service_port,
        "mode": p.spec.mode,
        "vhosts": p.spec.vhosts,
        "path": p.spec.path,
        "balance": p.spec.balance,
        "sticky": p.spec.sticky,
        "redirect_to_https": p.spec.redirect_to_https,
        "backends": backends,
    })
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<Value> {
    let t = s.table.load();
    let now = now_ms();
    let errors = s
        .listener_errors
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    Json(json!({
        "generation": t.generation,
        "updates": s.updates.load(Ordering::Relaxed),
        "apps": t.apps,
        "pools": t.pools().iter().map(|p| pool_json(p, now)).collect::<Vec<_>>(),
        "listener_errors": errors,
    }))
}

async fn routes(State(s): State<Arc<Shared>>) -> Json<Value> {
    let t = s.table.load();
    let mut vhosts = serde_json::Map::new();
    let mut hosts: Vec<&String> = t.vhosts.keys().collect();
    hosts.sort();
    for h in hosts {
        let rs: Vec<Value> = t.vhosts[h]
            .iter()
            .map(|p| json!({"path": p.spec.path, "backend": pool_name(p)}))
            .collect();
        vhosts.insert(h.clone(), Value::Array(rs));
    }
    let mut app_ids: Vec<(&String, String)> = t
        .by_app_id
        .iter()
        .map(|(id, p)| (id, pool_name(p)))
        .collect();
    app_ids.sort();
    Json(json!({
        "generation": t.generation,
        "vhosts": vhosts,
        "paths": t.paths.iter().map(|p| json!({"path": p.spec.path, "backend": pool_name(p)})).collect::<Vec<_>>(),
        "app_ids": app_ids.into_iter().map(|(id, b)| json!({"app_id": id, "backend": b})).collect::<Vec<_>>(),
        "service_ports": t.service_ports.iter().map(|(sp, p)| json!({"port": sp, "mode": p.spec.mode, "backend": pool_name(p),
            "servers": p.backends.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
    }))
}

async fn vhost_map(State(s): State<Arc<Shared>>) -> String {
    let t = s.table.load();
    let mut lines: Vec<String> = t
        .vhosts
        .iter()
        .flat_map(|(h, ps)| ps.iter().map(move |p| format!("{h}\t{}\n", pool_name(p))))
        .collect();
    lines.sort();
    lines.concat()
}

async fn app_map(State(s): State<Arc<Shared>>) -> String {
    let t = s.table.load();
    let mut lines: Vec<String> = t
        .by_app_id
        .iter()
        .map(|(id, p)| format!("{id}\t{}\n", pool_name(p)))
        .collect();
    lines.sort();
    lines.concat()
}

type Counter = fn(&crate::table::BackendState) -> u64;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let t = s.table.load();
    let now = now_ms();
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE basalt_lb_routing_updates_total counter");
    let _ = writeln!(
        out,
        "basalt_lb_routing_updates_total {}",
        s.updates.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE basalt_lb_apps gauge\nbasalt_lb_apps {}",
        t.apps.len()
    );
    let bad: usize = t.apps.iter().map(|a| a.problems.len()).sum();
    let _ = writeln!(
        out,
        "# TYPE basalt_lb_label_problems gauge\nbasalt_lb_label_problems {bad}"
    );
    let series: [(&str, &str, Counter); 4] = [
        ("basalt_lb_backend_requests_total", "counter", |st| {
            st.requests.load(Ordering::Relaxed)
        }),
        ("basalt_lb_backend_errors_total", "counter", |st| {
            st.errors.load(Ordering::Relaxed)
        }),
        ("basalt_lb_backend_active", "gauge", |st| {
            st.active.load(Ordering::Relaxed)
        }),
        ("basalt_lb_backend_latency_seconds_total", "counter", |st| {
            st.latency_us_total.load(Ordering::Relaxed)
        }),
    ];
    let ps = t.pools();
    for (name, kind, get) in series {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for p in &ps {
            for b in &p.backends {
                let v = get(&b.state);
                let labels = format!(
                    "backend=\"{}\",app=\"{}\",server=\"{}\",task=\"{}\"",
                    esc(&pool_name(p)),
                    esc(&p.app_id),
                    b.addr,
                    esc(&b.task_id)
                );
                if name.ends_with("_seconds_total") {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", v as f64 / 1e6);
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
    }
    let _ = writeln!(out, "# TYPE basalt_lb_backend_up gauge");
    for p in &ps {
        for b in &p.backends {
            let _ = writeln!(
                out,
                "basalt_lb_backend_up{{backend=\"{}\",server=\"{}\"}} {}",
                esc(&pool_name(p)),
                b.addr,
                u8::from(b.state.usable(now))
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
