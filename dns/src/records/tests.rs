use super::*;
use serde_json::json;

pub(crate) fn ev(v: Value) -> operator::Event {
    serde_json::from_value(v).expect("event parses")
}

pub(crate) fn agent_added(id: &str, host: &str, ip: &str) -> operator::Event {
    ev(json!({"type": "AGENT_ADDED", "agent_added": {"agent": {
        "agent_info": {"id": {"value": id}, "hostname": host, "port": 5051, "resources": [], "attributes": []},
        "active": true, "pid": format!("slave(1)@{ip}:5051"), "version": "1"
    }}}))
}

pub(crate) fn framework_added(id: &str, name: &str) -> operator::Event {
    ev(
        json!({"type": "FRAMEWORK_ADDED", "framework_added": {"framework": {
            "framework_info": {"user": "", "name": name, "id": {"value": id}},
            "active": true, "connected": true, "recovered": false
        }}}),
    )
}

pub(crate) fn task_added(
    fw: &str,
    id: &str,
    name: &str,
    agent: &str,
    state: &str,
    ports: &[(u64, u64)],
) -> operator::Event {
    let ranges: Vec<Value> = ports
        .iter()
        .map(|(b, e)| json!({"begin": b, "end": e}))
        .collect();
    ev(json!({"type": "TASK_ADDED", "task_added": {"task": {
        "name": name, "task_id": {"value": id}, "framework_id": {"value": fw},
        "agent_id": {"value": agent}, "state": state,
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                      {"name": "ports", "type": "RANGES", "ranges": {"range": ranges}}],
        "statuses": [], "role": "*"
    }}}))
}

pub(crate) fn task_updated(
    fw: &str,
    id: &str,
    state: &str,
    healthy: Option<bool>,
) -> operator::Event {
    let mut status = json!({"task_id": {"value": id}, "state": state, "timestamp": 1.0});
    if let Some(h) = healthy {
        status["healthy"] = json!(h);
    }
    ev(json!({"type": "TASK_UPDATED", "task_updated": {
        "framework_id": {"value": fw}, "status": status, "state": state
    }}))
}

pub(crate) fn cluster_with_web() -> Cluster {
    let mut c = Cluster::with_leader(Some(("10.0.0.1".parse().expect("ip"), 5050)));
    for e in [
        agent_added("m-S0", "node-a.example", "10.0.0.11"),
        agent_added("m-S1", "10.0.0.12", "10.0.0.12"),
        framework_added("fw1", "Marathon"),
        task_added(
            "fw1",
            "web.1",
            "web",
            "m-S0",
            "TASK_RUNNING",
            &[(31000, 31001)],
        ),
        task_added(
            "fw1",
            "web.2",
            "web",
            "m-S1",
            "TASK_RUNNING",
            &[(31005, 31005)],
        ),
        task_added("fw1", "db.1", "db.primary", "m-S1", "TASK_STAGING", &[]),
    ] {
        c.apply(&e);
    }
    c
}

fn cfg() -> Config {
    Config::default().validate().expect("valid")
}

fn ips(rs: &RecordSet, name: &str) -> Vec<String> {
    let mut v: Vec<String> =
        rs.a.get(name)
            .into_iter()
            .flatten()
            .map(|i| i.to_string())
            .collect();
    v.sort();
    v
}

#[test]
fn tasks_get_mesos_dns_names() {
    let c = cluster_with_web();
    let rs = build(&c, &cfg(), 1, 1);
    assert_eq!(
        ips(&rs, "web.marathon.mesos."),
        vec!["10.0.0.11", "10.0.0.12"]
    );
    assert_eq!(
        ips(&rs, "web.marathon.slave.mesos."),
        vec!["10.0.0.11", "10.0.0.12"]
    );
    let canonical = format!("web-{}-s0.marathon.mesos.", names::h5("web.1"));
    assert_eq!(ips(&rs, &canonical), vec!["10.0.0.11"]);
    let srv = &rs.srv["_web._tcp.marathon.mesos."];
    assert_eq!(
        srv.len(),
        3,
        "two ports on one task, one on the other: {srv:?}"
    );
    assert!(
        srv.iter()
            .any(|s| s.port == 31005 && s.target.ends_with("-s1.marathon.slave.mesos."))
    );
    assert!(rs.srv.contains_key("_web._udp.marathon.slave.mesos."));
    assert!(
        !rs.a.contains_key("db-primary.marathon.mesos."),
        "only running tasks"
    );
}

#[test]
fn cluster_names_and_ptr() {
    let rs = build(&cluster_with_web(), &cfg(), 1, 1);
    assert_eq!(ips(&rs, "leader.mesos."), vec!["10.0.0.1"]);
    assert_eq!(ips(&rs, "master0.mesos."), vec!["10.0.0.1"]);
    assert_eq!(ips(&rs, "slave.mesos."), vec!["10.0.0.11", "10.0.0.12"]);
    assert_eq!(ips(&rs, "agent.mesos."), vec!["10.0.0.11", "10.0.0.12"]);
    assert_eq!(rs.srv["_leader._tcp.mesos."][0].port, 5050);
    assert_eq!(rs.srv["_slave._tcp.mesos."][0].port, 5051);
    assert_eq!(
        rs.ptr["11.0.0.10.in-addr.arpa."],
        vec!["node-a.example.".to_owned()]
    );
    assert_eq!(
        rs.ptr["12.0.0.10.in-addr.arpa."],
        vec!["slave.mesos.".to_owned()]
    );
    assert!(
        rs.exists("marathon.mesos."),
        "parents of names exist (NODATA, not NXDOMAIN)"
    );
}

#[test]
fn unhealthy_killing_and_ended_tasks_leave_the_answers() {
    let mut c = cluster_with_web();
    c.apply(&task_updated("fw1", "web.1", "TASK_RUNNING", Some(false)));
    let rs = build(&c, &cfg(), 1, 2);
    assert_eq!(ips(&rs, "web.marathon.mesos."), vec!["10.0.0.12"]);
    let mut mesos_dns = cfg();
    mesos_dns.health_aware = false;
    assert_eq!(
        ips(&build(&c, &mesos_dns, 1, 2), "web.marathon.mesos.").len(),
        2
    );

    c.apply(&task_updated("fw1", "web.1", "TASK_RUNNING", Some(true)));
    c.apply(&task_updated("fw1", "web.2", "TASK_KILLING", None));
    let rs = build(&c, &cfg(), 1, 3);
    assert_eq!(ips(&rs, "web.marathon.mesos."), vec!["10.0.0.11"]);

    c.apply(&task_updated("fw1", "web.1", "TASK_FINISHED", None));
    c.apply(&task_updated("fw1", "web.2", "TASK_KILLED", None));
    let rs = build(&c, &cfg(), 1, 4);
    assert!(!rs.a.contains_key("web.marathon.mesos."));
    assert_eq!(c.task_count(), 1);
}

#[test]
fn discovery_info_names_and_ports() {
    let mut c = cluster_with_web();
    let mut e = task_added(
        "fw1",
        "api.1",
        "api",
        "m-S0",
        "TASK_RUNNING",
        &[(31010, 31010)],
    );
    if let Some(t) = e.task_added.as_mut() {
        t.task.discovery = Some(json!({"visibility": "FRAMEWORK", "name": "Api.Server",
            "ports": {"ports": [{"number": 8080, "name": "http", "protocol": "tcp"}]}}));
    }
    c.apply(&e);
    let rs = build(&c, &cfg(), 1, 1);
    assert!(rs.a.contains_key("api-server.marathon.mesos."));
    let bare = &rs.srv["_api-server._tcp.marathon.mesos."];
    assert_eq!(bare.len(), 1);
    assert_eq!(bare[0].port, 8080);
    assert_eq!(
        rs.srv["_http._api-server._tcp.marathon.mesos."][0].port,
        8080
    );
    assert_eq!(
        rs.srv["_api-server._tcp.marathon.slave.mesos."][0].port,
        31010
    );
}

#[test]
fn agent_removal_and_resubscribe_reset() {
    let mut c = cluster_with_web();
    c.apply(&ev(
        json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": "m-S0"}}}),
    ));
    let rs = build(&c, &cfg(), 1, 1);
    assert_eq!(ips(&rs, "slave.mesos."), vec!["10.0.0.12"]);
    assert_eq!(ips(&rs, "web.marathon.mesos."), vec!["10.0.0.12"]);
    c.apply(&ev(
        json!({"type": "SUBSCRIBED", "subscribed": {"get_state": {
        "get_tasks": {}, "get_agents": {}, "get_frameworks": {}, "get_executors": {}
    }, "heartbeat_interval_seconds": 15.0}}),
    ));
    assert_eq!(c.task_count(), 0);
    assert!(c.leader.is_some(), "the leader is ours, not the stream's");
}
