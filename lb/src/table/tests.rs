use super::*;
use basalt_api::operator::{Event, TaskAdded, TaskUpdated};
use basalt_api::task::{Label, Labels};
use basalt_api::{TaskStatus, ids::AgentId};
use serde_json::json;

fn filter() -> Filter {
    Filter {
        groups: vec!["external".into()],
        strict: false,
    }
}

fn task(
    id: &str,
    app: &str,
    version: &str,
    labels: &[(&str, &str)],
    ports: &[(u16, u16)],
    state: TaskState,
    health_check: bool,
) -> operator::Task {
    let ports: Vec<_> = ports
        .iter()
        .map(|(host, service)| {
            json!({"number": host, "protocol": "tcp",
            "labels": {"labels": [{"key": "servicePort", "value": service.to_string()}]}})
        })
        .collect();
    serde_json::from_value(json!({
        "name": app.trim_start_matches('/'),
        "task_id": {"value": id},
        "framework_id": {"value": "fw"},
        "agent_id": {"value": "a1"},
        "state": state,
        "discovery": {"name": "x", "version": version,
            "labels": {"labels": [{"key": "MARATHON_APP_ID", "value": app}]},
            "ports": {"ports": ports}},
        "labels": Labels { labels: labels.iter().map(|(k, v)| Label { key: (*k).into(), value: Some((*v).into()) }).collect() },
        "health_check": if health_check { json!({"type": "HTTP"}) } else { serde_json::Value::Null },
    }))
    .expect("task json")
}

fn subscribed(tasks: Vec<operator::Task>) -> Event {
    serde_json::from_value(json!({
        "type": "SUBSCRIBED",
        "subscribed": {"heartbeat_interval_seconds": 15.0, "get_state": {
            "get_tasks": {"tasks": tasks},
            "get_agents": {"agents": [{"agent_info": {"id": {"value": "a1"}, "hostname": "127.0.0.1", "port": 5051},
                "active": true, "pid": "slave(1)@127.0.0.1:5051", "version": "1"}]},
            "get_frameworks": {"frameworks": []},
            "get_executors": {"executors": []}}}
    }))
    .expect("subscribed json")
}

fn update(id: &str, state: TaskState, healthy: Option<bool>) -> Event {
    let mut status = TaskStatus::new(TaskId::new(id), state, 1.0);
    status.healthy = healthy;
    status.agent_id = Some(AgentId::new("a1"));
    let mut ev = Event::bare(EventType::TaskUpdated);
    ev.task_updated = Some(TaskUpdated {
        framework_id: FrameworkId::new("fw"),
        state,
        status,
    });
    ev
}

const WEB: &[(&str, &str)] = &[
    ("HAPROXY_GROUP", "external"),
    ("HAPROXY_0_VHOST", "web.example.com"),
];

#[test]
fn routes_running_healthy_tasks_only() {
    let mut view = View::default();
    view.apply(&subscribed(vec![
        task(
            "w1",
            "/web",
            "v1",
            WEB,
            &[(31000, 10000)],
            TaskState::Running,
            true,
        ),
        task(
            "w2",
            "/web",
            "v1",
            WEB,
            &[(31001, 10000)],
            TaskState::Running,
            true,
        ),
        task(
            "w3",
            "/web",
            "v1",
            WEB,
            &[(31002, 10000)],
            TaskState::Staging,
            true,
        ),
    ]));
    let mut b = Builder::new(filter());
    let t = b.build(&view);
    assert!(
        t.route_vhost("web.example.com", "/")
            .is_some_and(|p| p.backends.is_empty()),
        "health-checked tasks wait for their first healthy status"
    );
    assert!(view.apply(&update("w1", TaskState::Running, Some(true))));
    assert!(view.apply(&update("w2", TaskState::Running, Some(true))));
    let t = b.build(&view);
    let pool = t
        .route_vhost("web.example.com", "/any")
        .expect("vhost route");
    assert_eq!(pool.backends.len(), 2);
    assert_eq!(pool.service_port, Some(10000));
    assert!(t.service_ports.contains_key(&10000));
    assert!(t.by_app_id.contains_key("/web"));
    // Counters survive a rebuild; TASK_KILLING leaves the pool at once.
    pool.backends[0]
        .state
        .requests
        .fetch_add(7, Ordering::Relaxed);
    assert!(view.apply(&update("w2", TaskState::Killing, None)));
    let t = b.build(&view);
    let pool = t.route_vhost("web.example.com", "/").expect("vhost route");
    assert_eq!(pool.backends.len(), 1);
    assert_eq!(pool.backends[0].task_id, "w1");
    assert_eq!(pool.backends[0].state.requests.load(Ordering::Relaxed), 7);
    assert!(
        !view.apply(&update("w3", TaskState::Failed, None)),
        "w3 never had traffic"
    );
}

#[test]
fn vhost_path_and_bad_labels() {
    let mut view = View::default();
    let api = &[
        ("HAPROXY_GROUP", "external"),
        ("HAPROXY_0_VHOST", "web.example.com"),
        ("HAPROXY_0_PATH", "/api"),
    ];
    let bad = &[("HAPROXY_GROUP", "external"), ("HAPROXY_0_MODE", "quic")];
    let internal = &[("HAPROXY_GROUP", "internal")];
    let mut added = Event::bare(EventType::TaskAdded);
    added.task_added = Some(TaskAdded {
        task: task(
            "s1",
            "/static",
            "v1",
            &[("HAPROXY_GROUP", "external"), ("HAPROXY_0_PATH", "/static")],
            &[(31010, 10010)],
            TaskState::Running,
            false,
        ),
    });
    view.apply(&subscribed(vec![
        task(
            "w1",
            "/web",
            "v1",
            WEB,
            &[(31000, 10000)],
            TaskState::Running,
            false,
        ),
        task(
            "a1",
            "/api",
            "v1",
            api,
            &[(31001, 10001)],
            TaskState::Running,
            false,
        ),
        task(
            "b1",
            "/bad",
            "v1",
            bad,
            &[(31002, 10002)],
            TaskState::Running,
            false,
        ),
        task(
            "i1",
            "/internal",
            "v1",
            internal,
            &[(31003, 10003)],
            TaskState::Running,
            false,
        ),
    ]));
    assert!(view.apply(&added));
    let t = Builder::new(filter()).build(&view);
    let app = |h: &str, p: &str| t.route_vhost(h, p).map(|p| p.app_id.clone());
    assert_eq!(app("web.example.com", "/api/v1").as_deref(), Some("/api"));
    assert_eq!(
        app("web.example.com", "/apix").as_deref(),
        Some("/api"),
        "prefix, as path_beg"
    );
    assert_eq!(app("web.example.com", "/").as_deref(), Some("/web"));
    assert_eq!(
        app("other.example.com", "/static/a.css").as_deref(),
        Some("/static")
    );
    assert_eq!(app("other.example.com", "/"), None);
    assert!(!t.service_ports.contains_key(&10003), "other group");
    assert!(!t.service_ports.contains_key(&10002), "bad label");
    let bad = t
        .apps
        .iter()
        .find(|a| a.id == "/bad")
        .expect("bad app reported");
    assert!(
        bad.problems[0].contains("HAPROXY_0_MODE"),
        "{:?}",
        bad.problems
    );
    assert_eq!(t.service_ports.len(), 3, "every other app keeps working");
}

#[test]
fn newest_version_labels_win() {
    let mut view = View::default();
    let v2 = &[
        ("HAPROXY_GROUP", "external"),
        ("HAPROXY_0_VHOST", "new.example.com"),
    ];
    view.apply(&subscribed(vec![
        task(
            "o1",
            "/web",
            "2026-01-01",
            WEB,
            &[(31000, 10000)],
            TaskState::Running,
            false,
        ),
        task(
            "n1",
            "/web",
            "2026-02-01",
            v2,
            &[(31001, 10000)],
            TaskState::Running,
            false,
        ),
    ]));
    let t = Builder::new(filter()).build(&view);
    assert!(t.route_vhost("web.example.com", "/").is_none());
    let p = t.route_vhost("new.example.com", "/").expect("new vhost");
    assert_eq!(
        p.backends.len(),
        2,
        "old and new instances both serve during a deploy"
    );
}

#[test]
fn selection_skips_tried_and_ejected() {
    let mut view = View::default();
    let lc = &[
        ("HAPROXY_GROUP", "external"),
        ("HAPROXY_0_BALANCE", "leastconn"),
    ];
    view.apply(&subscribed(vec![
        task(
            "t1",
            "/lc",
            "v",
            lc,
            &[(31000, 10000)],
            TaskState::Running,
            false,
        ),
        task(
            "t2",
            "/lc",
            "v",
            lc,
            &[(31001, 10000)],
            TaskState::Running,
            false,
        ),
        task(
            "t3",
            "/lc",
            "v",
            lc,
            &[(31002, 10000)],
            TaskState::Running,
            false,
        ),
    ]));
    let t = Builder::new(filter()).build(&view);
    let pool = t.service_ports.get(&10000).expect("pool");
    pool.backends[0].state.active.store(5, Ordering::Relaxed);
    pool.backends[1].state.active.store(1, Ordering::Relaxed);
    let pick = pool.select(&[], None, None, 0).expect("pick");
    assert_eq!(pick.task_id, "t3", "least connections");
    let pick = pool
        .select(&[pool.backends[2].addr], None, None, 0)
        .expect("pick");
    assert_eq!(
        pick.task_id, "t2",
        "a retry never returns to a tried backend"
    );
    for _ in 0..EJECT_AFTER {
        pool.backends[1].state.failed(100, pool.backends[1].addr);
    }
    let pick = pool
        .select(&[pool.backends[2].addr], None, None, 100)
        .expect("pick");
    assert_eq!(pick.task_id, "t1", "ejected backends are skipped");
    let all: Vec<SocketAddr> = pool.backends.iter().map(|b| b.addr).collect();
    assert!(pool.select(&all, None, None, 100).is_none());
    let pick = pool
        .select(
            &[pool.backends[0].addr, pool.backends[2].addr],
            None,
            None,
            100,
        )
        .expect("an ejected backend beats none");
    assert_eq!(pick.task_id, "t2");
    assert!(pool.backends[1].state.usable(100 + EJECT_FOR_MS));
}
