use super::*;
use basalt_api::scheduler::{Attribute, Text};
use basalt_api::{AgentId, FrameworkId, OfferId};

fn app(json: &str) -> AppDefinition {
    serde_json::from_str(json).expect("app parses")
}

fn offer(agent: &str, host: &str, cpus: f64, rack: &str) -> Offer {
    let res = RoleResources::parse(&format!(
        "cpus:{cpus};mem:4096;disk:1000;ports:[31000-31099]"
    ))
    .expect("resources");
    Offer {
        id: OfferId::new(format!("o-{agent}")),
        framework_id: FrameworkId::new("fw"),
        agent_id: AgentId::new(agent),
        hostname: host.into(),
        resources: res.to_wire(),
        attributes: vec![Attribute {
            name: "rack".into(),
            kind: "TEXT".into(),
            text: Text { value: rack.into() },
        }],
        executor_ids: vec![],
    }
}

fn status(id: &str, state: TaskState) -> TaskStatus {
    TaskStatus::new(TaskId::new(id), state, 1.0)
}

fn run_all(s: &mut State, ids: &[String], now: u64) {
    for id in ids {
        let mut fx = Effects::default();
        s.on_status(&status(id, TaskState::Running), now, &mut fx);
    }
}

fn launch(s: &mut State, o: &Offer, now: u64) -> Vec<String> {
    let mut fx = Effects::default();
    s.match_offer(o, now, &mut fx)
        .into_iter()
        .map(|t| t.task_id.to_string())
        .collect()
}

#[test]
fn invalid_apps_are_refused_with_marathon_details_and_nothing_stored() {
    let mut s = State::default();
    let mut fx = Effects::default();
    let r = s
        .put_app(
            app(r#"{"id":"/Bad Id","cmd":"x","instances":-1}"#),
            1,
            true,
            false,
            &mut fx,
        )
        .expect_err("invalid");
    assert_eq!(r.status, 422);
    assert_eq!(r.body["message"], "Object is not valid");
    assert!(r.body["details"].as_array().is_some_and(|d| d.len() >= 2));
    assert!(s.apps.is_empty() && fx.writes.is_empty());
}

#[test]
fn service_ports_are_allocated_unique_and_clashes_refused() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/a","cmd":"x","portDefinitions":[{"port":0},{"port":0}]}"#),
        1,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    s.put_app(
        app(r#"{"id":"/b","cmd":"x","portDefinitions":[{"port":0}]}"#),
        2,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    assert_eq!(s.apps["/a"].service_ports, vec![10000, 10001]);
    assert_eq!(s.apps["/b"].service_ports, vec![10002]);
    let r = s
        .put_app(
            app(r#"{"id":"/c","cmd":"x","portDefinitions":[{"port":10001}]}"#),
            3,
            true,
            false,
            &mut fx,
        )
        .expect_err("clash");
    assert_eq!(r.status, 422);
    let r = s
        .put_app(app(r#"{"id":"/a","cmd":"y"}"#), 4, true, false, &mut fx)
        .expect_err("exists");
    assert_eq!(r.status, 409);
}

#[test]
fn instances_launch_within_offers_and_unique_hostname_spreads_them() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"serve","cpus":0.5,"mem":64,"instances":3,
               "portDefinitions":[{"port":0,"name":"http"}],"constraints":[["hostname","UNIQUE"]]}"#),
        1, true, false, &mut fx,
    )
    .expect("created");
    let first = launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 2);
    assert_eq!(first.len(), 1, "UNIQUE hostname: one per host");
    assert!(first[0].starts_with("web."));
    assert!(launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 3).is_empty());
    let more = [
        launch(&mut s, &offer("a2", "h2", 4.0, "r1"), 4),
        launch(&mut s, &offer("a3", "h3", 4.0, "r2"), 5),
    ]
    .concat();
    assert_eq!(more.len(), 2);
    assert!(
        launch(&mut s, &offer("a4", "h4", 4.0, "r2"), 6).is_empty(),
        "three is enough"
    );
    let t = &s.tasks[&first[0]];
    assert_eq!(t.ports.len(), 1);
    assert!(!s.needs_offers(7));
}

#[test]
fn resources_and_like_constraints_limit_launches() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(app(r#"{"id":"/big","cmd":"x","cpus":2,"mem":64,"instances":5,"constraints":[["rack","LIKE","r[12]"]]}"#), 1, true, false, &mut fx)
        .expect("created");
    assert_eq!(
        launch(&mut s, &offer("a1", "h1", 5.0, "r1"), 2).len(),
        2,
        "5 cpus hold two"
    );
    assert!(
        launch(&mut s, &offer("a9", "h9", 8.0, "r9"), 3).is_empty(),
        "rack r9 is not LIKE r[12]"
    );
}

#[test]
fn failures_are_replaced_after_a_growing_back_off() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(app(r#"{"id":"/crashy","cmd":"x","cpus":0.1,"mem":16,"backoffSeconds":2,"backoffFactor":2}"#), 0, true, false, &mut fx)
        .expect("created");
    let t = launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 0);
    let mut fx = Effects::default();
    s.on_status(&status(&t[0], TaskState::Failed), 1000, &mut fx);
    assert!(s.tasks.is_empty());
    assert!(s.apps["/crashy"].last_failure.is_some());
    assert!(
        launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 2000).is_empty(),
        "backing off 2 s"
    );
    let t = launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 3000);
    assert_eq!(t.len(), 1);
    let mut fx = Effects::default();
    s.on_status(&status(&t[0], TaskState::Failed), 3500, &mut fx);
    assert!(
        launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 6000).is_empty(),
        "now 4 s"
    );
    assert_eq!(launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 7600).len(), 1);
}

#[test]
fn scale_down_kills_the_youngest_and_the_deployment_finishes() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"x","cpus":0.1,"mem":16,"instances":3}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let mut ids = Vec::new();
    for (i, now) in [10u64, 20, 30].iter().enumerate() {
        ids.extend(launch(
            &mut s,
            &offer(&format!("a{i}"), &format!("h{i}"), 0.1, "r"),
            *now,
        ));
    }
    run_all(&mut s, &ids, 40);
    assert!(
        s.deployments.is_empty(),
        "start deployment done once all run"
    );
    let mut def = s.apps["/web"].def.clone();
    def.instances = 1;
    let mut fx = Effects::default();
    s.put_app(def, 50, false, false, &mut fx).expect("scaled");
    assert_eq!(
        s.locked("/web").map(|d| d.action.as_str()),
        Some("ScaleApplication")
    );
    let mut fx = Effects::default();
    s.reconcile_app("/web", 60, &mut fx);
    let killed: Vec<&String> = fx.kills.iter().map(|(t, _)| t).collect();
    assert_eq!(killed, vec![&ids[2], &ids[1]], "youngest first");
    for id in &ids[1..] {
        let mut fx = Effects::default();
        s.on_status(&status(id, TaskState::Killed), 70, &mut fx);
    }
    assert!(s.deployments.is_empty());
    assert_eq!(s.tasks.len(), 1);
}

#[test]
fn rolling_restart_keeps_every_instance_serving() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"v1","cpus":0.1,"mem":16,"instances":2}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let old = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1);
    run_all(&mut s, &old, 2);
    let mut def = s.apps["/web"].def.clone();
    def.cmd = Some("v2".into());
    let mut fx = Effects::default();
    s.put_app(def, 10, false, false, &mut fx).expect("updated");
    assert_eq!(
        s.locked("/web").map(|d| d.action.as_str()),
        Some("RestartApplication")
    );
    let mut fx = Effects::default();
    s.reconcile_app("/web", 11, &mut fx);
    assert!(
        fx.kills.is_empty(),
        "nothing killed before replacements run"
    );
    let new = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 12);
    assert_eq!(new.len(), 2, "over-capacity 1: both replacements at once");
    let mut fx = Effects::default();
    s.on_status(&status(&new[0], TaskState::Running), 13, &mut fx);
    assert_eq!(fx.kills.len(), 1, "one new running: one old may go");
    let running = s
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Running && !t.killing)
        .count();
    assert!(running >= 2);
    let mut fx = Effects::default();
    s.on_status(&status(&new[1], TaskState::Running), 14, &mut fx);
    for id in &old {
        let mut fx = Effects::default();
        s.on_status(&status(id, TaskState::Killed), 15, &mut fx);
    }
    assert!(s.deployments.is_empty(), "restart done");
    assert!(
        s.tasks
            .values()
            .all(|t| t.config_version == s.apps["/web"].config_version)
    );
}

#[test]
fn delete_kills_everything_then_forgets_the_app() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"x","cpus":0.1,"mem":16,"instances":2}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let ids = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1);
    run_all(&mut s, &ids, 2);
    let mut fx = Effects::default();
    s.delete_app("/web", 3, false, &mut fx).expect("deleting");
    assert_eq!(fx.kills.len(), 2);
    assert!(launch(&mut s, &offer("a1", "h1", 4.0, "r"), 4).is_empty());
    for id in &ids {
        let mut fx = Effects::default();
        s.on_status(&status(id, TaskState::Killed), 5, &mut fx);
    }
    assert!(s.apps.is_empty() && s.deployments.is_empty());
}

#[test]
fn state_survives_a_reload_from_its_writes() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"x","cpus":0.1,"mem":16}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let ids: Vec<String> = s
        .match_offer(&offer("a1", "h1", 4.0, "r"), 1, &mut fx)
        .into_iter()
        .map(|t| t.task_id.to_string())
        .collect();
    for id in &ids {
        s.on_status(&status(id, TaskState::Running), 3, &mut fx);
    }
    let mut kv: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for w in fx.writes {
        match w {
            Write::Put(k, v) => {
                kv.insert(k, v);
            }
            Write::Delete(k) => {
                kv.remove(&k);
            }
        }
    }
    let loaded = State::load(kv.into_iter().collect());
    assert_eq!(loaded.apps.len(), 1);
    assert_eq!(loaded.tasks.len(), 1);
    assert_eq!(loaded.tasks[&ids[0]].state, TaskState::Running);
    assert!(
        loaded.deployments.is_empty(),
        "the start deployment finished"
    );
}

#[test]
fn iso_dates() {
    assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso(1_733_340_000_123), "2024-12-04T19:20:00.123Z");
}

#[test]
fn a_single_instance_with_full_health_capacity_still_rolls() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(
            r#"{"id":"/one","cmd":"v1","cpus":0.1,"mem":16,"instances":1,
               "upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":0.5}}"#,
        ),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let old = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1);
    run_all(&mut s, &old, 2);
    let mut def = s.apps["/one"].def.clone();
    def.cmd = Some("v2".into());
    s.put_app(def, 10, false, false, &mut fx).expect("updated");
    let new = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 11);
    assert_eq!(new.len(), 1, "one extra instance is allowed");
    let mut fx = Effects::default();
    s.on_status(&status(&new[0], TaskState::Running), 12, &mut fx);
    assert_eq!(fx.kills.len(), 1, "then the old one goes");
    s.on_status(&status(&old[0], TaskState::Killed), 13, &mut fx);
    assert!(s.deployments.is_empty());
}

#[test]
fn kills_are_repeated_until_the_task_ends() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/k","cmd":"x","cpus":0.1,"mem":16}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let ids = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1);
    run_all(&mut s, &ids, 2);
    s.kill_task(&ids[0], false, 3, &mut fx).expect("killing");
    let mut fx = Effects::default();
    s.kill_retries(1000, &mut fx);
    assert!(fx.kills.is_empty(), "not yet");
    s.kill_retries(10_000, &mut fx);
    assert_eq!(fx.kills.len(), 1, "asked again");
    s.on_status(&status(&ids[0], TaskState::Killed), 10_001, &mut fx);
    let mut fx = Effects::default();
    s.kill_retries(100_000, &mut fx);
    assert!(fx.kills.is_empty(), "ended: no more kills");
}

#[test]
fn checked_apps_deploy_only_once_healthy_and_forced_deletes_still_finish() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(
            r#"{"id":"/h","cmd":"x","cpus":0.1,"mem":16,"portDefinitions":[{"port":0}],
               "healthChecks":[{"protocol":"MESOS_HTTP","portIndex":0}]}"#,
        ),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let ids = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1);
    run_all(&mut s, &ids, 2);
    assert!(!s.deployments.is_empty(), "running is not enough");
    let mut st = status(&ids[0], TaskState::Running);
    st.healthy = Some(true);
    s.on_status(&st, 3, &mut fx);
    assert!(s.deployments.is_empty(), "healthy is");
    let (_, dep) = s.delete_app("/h", 4, false, &mut fx).expect("deleting");
    s.remove_deployment(&dep, &mut fx);
    s.on_status(&status(&ids[0], TaskState::Killed), 5, &mut fx);
    assert!(s.apps.is_empty(), "forgotten without its deployment");
}

#[test]
fn replaced_deployments_fail_and_health_kills_are_reported() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"x","cpus":0.1,"mem":16,"instances":2}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let first = s.dep_by_app["/web"].clone();
    s.events.clear();
    // A forced update replaces the deployment in flight: Marathon calls that one failed.
    s.put_app(
        app(r#"{"id":"/web","cmd":"y","cpus":0.1,"mem":16,"instances":2}"#),
        10,
        false,
        true,
        &mut fx,
    )
    .expect("updated");
    let failed: Vec<&Value> = s
        .events
        .iter()
        .filter(|e| e["eventType"] == "deployment_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", s.events);
    assert_eq!(failed[0]["id"], json!(first));
    let kinds: Vec<&str> = s
        .events
        .iter()
        .filter_map(|e| e["eventType"].as_str())
        .collect();
    let step = kinds.iter().position(|k| *k == "deployment_step_failure");
    let plan = kinds.iter().position(|k| *k == "deployment_failed");
    assert!(
        step.is_some() && step < plan,
        "the step fails first: {kinds:?}"
    );
    assert!(s.dep_by_app["/web"] != first);

    let t = launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 20);
    run_all(&mut s, &t, 30);
    s.events.clear();
    let mut st = status(&t[0], TaskState::Killed);
    st.reason = Some(basalt_api::task::reason::TASK_HEALTH_CHECK_STATUS_UPDATED.into());
    s.on_status(&st, 40, &mut fx);
    let kill = s
        .events
        .iter()
        .find(|e| e["eventType"] == "unhealthy_instance_kill_event")
        .expect("an unhealthy kill event");
    assert_eq!(kill["appId"], "/web");
    assert_eq!(kill["taskId"], json!(t[0]));
    s.events.clear();
    s.on_status(&status(&t[1], TaskState::Killed), 50, &mut fx);
    assert!(
        !s.events
            .iter()
            .any(|e| e["eventType"] == "unhealthy_instance_kill_event"),
        "a plain kill is not a health kill"
    );
}

#[test]
fn deployments_wait_for_readiness_before_retiring_old_tasks() {
    let mut s = State::default();
    let mut fx = Effects::default();
    let def = r#"{"id":"/web","cmd":"v1","cpus":0.1,"mem":16,"instances":1,
        "portDefinitions":[{"port":0,"name":"http"}],
        "upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":1},
        "readinessChecks":[{"name":"warm","path":"/ready","portName":"http",
                            "intervalSeconds":1,"httpStatusCodesForReady":[200,204]}]}"#;
    s.put_app(app(def), 0, true, false, &mut fx)
        .expect("created");
    let old = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1);
    run_all(&mut s, &old, 2);
    // Running is not enough: the first deployment waits for the readiness check too.
    assert!(s.locked("/web").is_some());
    let probes = s.readiness_probes();
    assert_eq!(probes.len(), 1);
    assert_eq!(
        (probes[0].host.as_str(), probes[0].path.as_str()),
        ("h1", "/ready")
    );
    assert!((31000..31100).contains(&probes[0].port), "{:?}", probes[0]);
    assert_eq!(
        (probes[0].codes.clone(), probes[0].interval_ms),
        (vec![200, 204], 1000)
    );
    let mut fx = Effects::default();
    s.on_readiness(&old[0], true, json!({"status": 200}), 3, &mut fx);
    assert!(s.locked("/web").is_none(), "ready: the deployment finished");
    assert!(
        s.readiness_probes().is_empty(),
        "a ready task is not asked again"
    );

    let mut def = s.apps["/web"].def.clone();
    def.cmd = Some("v2".into());
    let mut fx = Effects::default();
    s.put_app(def, 10, false, false, &mut fx).expect("updated");
    let new = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 11);
    assert_eq!(new.len(), 1);
    let mut fx = Effects::default();
    s.on_status(&status(&new[0], TaskState::Running), 12, &mut fx);
    assert!(
        fx.kills.is_empty(),
        "the new task runs but is not ready: the old one stays"
    );
    let d = s.locked("/web").cloned().expect("deploying");
    let shown = s.deployment_json(&d);
    let results = &shown["currentActions"][0]["readinessCheckResults"];
    assert_eq!(results[0]["taskId"], new[0]);
    assert_eq!(results[0]["ready"], false);
    assert_eq!(results[0]["name"], "warm");
    let mut fx = Effects::default();
    s.on_readiness(&new[0], false, json!({"status": 503}), 13, &mut fx);
    assert!(fx.kills.is_empty());
    let mut fx = Effects::default();
    s.on_readiness(&new[0], true, json!({"status": 204}), 14, &mut fx);
    assert_eq!(fx.kills.len(), 1, "ready: the old task goes");
    assert_eq!(fx.kills[0].0, old[0]);
    let mut fx = Effects::default();
    s.on_status(&status(&old[0], TaskState::Killed), 15, &mut fx);
    assert!(s.deployments.is_empty());
    // Readiness is durable: a reload keeps the task ready.
    assert!(s.tasks[&new[0]].ready);
}

#[test]
fn readiness_checks_are_validated() {
    let mut s = State::default();
    for (def, path) in [
        (
            r#"{"id":"/a","cmd":"x","portDefinitions":[{"port":0,"name":"http"}],
               "readinessChecks":[{"portName":"nope"}]}"#,
            "/readinessChecks(0)/portName",
        ),
        (
            r#"{"id":"/a","cmd":"x","portDefinitions":[{"port":0}],
               "readinessChecks":[{"protocol":"GOPHER"}]}"#,
            "/readinessChecks(0)/protocol",
        ),
        (
            r#"{"id":"/a","cmd":"x","portDefinitions":[{"port":0}],
               "readinessChecks":[{"httpStatusCodesForReady":[]}]}"#,
            "/readinessChecks(0)/httpStatusCodesForReady",
        ),
        (
            r#"{"id":"/a","cmd":"x","portDefinitions":[],"readinessChecks":[{}]}"#,
            "/readinessChecks(0)",
        ),
    ] {
        let mut fx = Effects::default();
        let err = s
            .put_app(app(def), 0, true, false, &mut fx)
            .expect_err("invalid");
        let body = err.body.to_string();
        assert!(body.contains(path), "{path}: {body}");
        assert!(fx.writes.is_empty());
    }
}

#[test]
fn a_finished_deployment_reports_its_step_then_the_plan() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"x","cpus":0.1,"mem":16,"instances":1}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let t = launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 1);
    s.events.clear();
    run_all(&mut s, &t, 2);
    let kinds: Vec<&str> = s
        .events
        .iter()
        .filter_map(|e| e["eventType"].as_str())
        .filter(|k| k.starts_with("deployment"))
        .collect();
    assert_eq!(kinds, ["deployment_step_success", "deployment_success"]);
    let step = s
        .events
        .iter()
        .find(|e| e["eventType"] == "deployment_step_success")
        .expect("step");
    assert_eq!(step["currentStep"]["actions"][0]["app"], "/web");
}

#[test]
fn adding_a_readiness_check_to_a_running_app_keeps_the_old_tasks_serving() {
    let mut s = State::default();
    let mut fx = Effects::default();
    let v1 = r#"{"id":"/web","cmd":"v1","cpus":0.1,"mem":16,"instances":2,
        "portDefinitions":[{"port":0,"name":"http"}],
        "upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":0.5}}"#;
    s.put_app(app(v1), 0, true, false, &mut fx)
        .expect("created");
    let old = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1);
    run_all(&mut s, &old, 2);
    assert!(s.locked("/web").is_none());
    let mut def = s.apps["/web"].def.clone();
    def.readiness_checks = vec![json!({"path": "/ready", "portName": "http"})];
    let mut fx = Effects::default();
    s.put_app(def, 10, false, false, &mut fx).expect("updated");
    let mut fx = Effects::default();
    s.reconcile_app("/web", 11, &mut fx);
    assert!(
        fx.kills.is_empty(),
        "old tasks were never asked the new check: they stay"
    );
    assert!(
        s.readiness_probes().is_empty(),
        "and they are not asked it now"
    );
    let new = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 12);
    assert_eq!(
        new.len(),
        1,
        "over-capacity 0.5 of 2: one replacement at a time"
    );
    let mut fx = Effects::default();
    s.on_status(&status(&new[0], TaskState::Running), 13, &mut fx);
    assert!(fx.kills.is_empty(), "not ready yet: nothing goes");
    assert_eq!(s.readiness_probes().len(), 1);
    let mut fx = Effects::default();
    s.on_readiness(&new[0], true, json!({"status": 200}), 14, &mut fx);
    assert_eq!(fx.kills.len(), 1, "one new ready: one old goes");
}

#[test]
fn a_deploying_app_waits_for_its_dependencies_to_serve() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/shop/db","cmd":"db","cpus":0.1,"mem":16,"instances":1}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("db");
    s.put_app(
        app(
            r#"{"id":"/shop/web","cmd":"web","cpus":0.1,"mem":16,"instances":2,
               "dependencies":["db", "/nothing/here"]}"#,
        ),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("web");
    assert_eq!(s.unmet_dependencies(&s.apps["/shop/web"]), ["/shop/db"]);
    assert_eq!(s.wanted("/shop/web", 1), 0, "web waits for db");
    let first = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1);
    assert_eq!(first.len(), 1, "only db launches: {first:?}");
    run_all(&mut s, &first, 2);
    assert!(s.unmet_dependencies(&s.apps["/shop/web"]).is_empty());
    assert_eq!(s.wanted("/shop/web", 3), 2);
    let web = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 3);
    assert_eq!(web.len(), 2);
    assert_eq!(resolve_path("/a/b", "../c/d"), "/a/c/d");
    assert_eq!(resolve_path("/a", "/x"), "/x");
}

#[test]
fn unused_offers_are_summarized_with_their_reasons() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/big","cmd":"x","cpus":8,"mem":16,"instances":1}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("big");
    s.put_app(
        app(
            r#"{"id":"/picky","cmd":"x","cpus":0.1,"mem":16,"instances":1,
               "constraints":[["rack","LIKE","r9"]]}"#,
        ),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("picky");
    assert!(launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 5).is_empty());
    let big = s.offer_stats["/big"].to_json();
    assert_eq!(big["processedOffersCount"], 1);
    assert_eq!(big["unusedOffersCount"], 1);
    assert_eq!(
        big["rejectSummaryLastOffers"][0]["reason"],
        "InsufficientCpus"
    );
    assert_eq!(
        s.offer_stats["/picky"].to_json()["rejectSummaryLastOffers"][0]["reason"],
        "UnfulfilledConstraint"
    );
    // Once an app wants nothing, its summary goes.
    let mut def = s.apps["/big"].def.clone();
    def.instances = 0;
    let mut fx = Effects::default();
    s.put_app(def, 10, false, true, &mut fx)
        .expect("scaled to 0");
    launch(&mut s, &offer("a1", "h1", 4.0, "r1"), 11);
    assert!(!s.offer_stats.contains_key("/big"));
}

#[test]
fn unreachable_instances_are_replaced_then_expunged_as_the_strategy_says() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"x","cpus":0.1,"mem":16,"instances":1,
               "unreachableStrategy":{"inactiveAfterSeconds":60,"expungeAfterSeconds":120}}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let t = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1_000);
    run_all(&mut s, &t, 2_000);
    let mut fx = Effects::default();
    s.on_status(&status(&t[0], TaskState::Unreachable), 10_000, &mut fx);
    assert_eq!(
        s.wanted("/web", 69_000),
        0,
        "not replaced before inactiveAfterSeconds"
    );
    let mut fx = Effects::default();
    s.reconcile_app("/web", 71_000, &mut fx);
    assert_eq!(
        s.wanted("/web", 71_000),
        1,
        "inactive: a replacement is wanted"
    );
    let r = launch(&mut s, &offer("a2", "h2", 4.0, "r"), 71_000);
    assert_eq!(r.len(), 1);
    run_all(&mut s, &r, 72_000);
    let mut fx = Effects::default();
    s.reconcile_app("/web", 131_000, &mut fx);
    assert!(
        !s.tasks.contains_key(&t[0]),
        "expunged after expungeAfterSeconds"
    );
    assert_eq!(fx.kills.len(), 1, "and killed should it come back");
    assert_eq!(fx.kills[0].0, t[0]);
}

#[test]
fn a_returning_unreachable_instance_makes_the_surplus_go() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"x","cpus":0.1,"mem":16,"instances":1,
               "unreachableStrategy":{"inactiveAfterSeconds":0,"expungeAfterSeconds":600}}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let t = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1_000);
    run_all(&mut s, &t, 2_000);
    let mut fx = Effects::default();
    s.on_status(&status(&t[0], TaskState::Unreachable), 3_000, &mut fx);
    let r = launch(&mut s, &offer("a2", "h2", 4.0, "r"), 4_000);
    assert_eq!(r.len(), 1, "inactive at once: replaced at once");
    run_all(&mut s, &r, 5_000);
    let mut fx = Effects::default();
    s.on_status(&status(&t[0], TaskState::Running), 6_000, &mut fx);
    assert_eq!(
        fx.kills.len(),
        1,
        "back: one of the two goes (the youngest)"
    );
    assert_eq!(fx.kills[0].0, r[0]);
}

#[test]
fn disabled_means_unreachable_instances_are_waited_for_and_bad_strategies_refused() {
    let mut s = State::default();
    let mut fx = Effects::default();
    s.put_app(
        app(r#"{"id":"/web","cmd":"x","cpus":0.1,"mem":16,"instances":1,
               "unreachableStrategy":"disabled"}"#),
        0,
        true,
        false,
        &mut fx,
    )
    .expect("created");
    let t = launch(&mut s, &offer("a1", "h1", 4.0, "r"), 1_000);
    run_all(&mut s, &t, 2_000);
    let mut fx = Effects::default();
    s.on_status(&status(&t[0], TaskState::Unreachable), 3_000, &mut fx);
    s.reconcile_app("/web", 10_000_000, &mut fx);
    assert_eq!(s.wanted("/web", 10_000_000), 0);
    assert!(s.tasks.contains_key(&t[0]));
    for bad in [
        r#""sometimes""#,
        r#"{"inactiveAfterSeconds":-1}"#,
        r#"{"inactiveAfterSeconds":100,"expungeAfterSeconds":10}"#,
    ] {
        let mut fx = Effects::default();
        let def = format!(r#"{{"id":"/bad","cmd":"x","unreachableStrategy":{bad}}}"#);
        let err = s
            .put_app(app(&def), 0, true, false, &mut fx)
            .expect_err(bad);
        assert!(
            err.body.to_string().contains("unreachableStrategy"),
            "{bad}"
        );
    }
}
