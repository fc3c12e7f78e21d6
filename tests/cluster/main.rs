//! Whole-cluster tests: real `basalt master` and `basalt agent` processes on 127.0.0.1,
//! driven through the public HTTP APIs and the `basalt` CLI.

mod dns;
mod harness;
mod init;
mod lb;
mod universe;

use basalt_api::TaskState;
use basalt_api::scheduler::{Call, CallType, Reconcile};
use harness::*;
use std::process::Command;

fn running(states: &std::collections::HashMap<String, (String, String)>) -> usize {
    states.values().filter(|(s, _)| s == "TASK_RUNNING").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tasks_run_across_three_agents() {
    let c = Cluster::start("hundred", 3).await;
    let fw = TestFramework::start(c.client(), "hundred", None, 34).await;
    for i in 0..100 {
        fw.launch(&format!("sleeper-{i}"), "exec sleep 300", 0.01, 8.0);
    }
    let states = eventually("100 tasks running", secs(90), || async {
        let s = c.task_states().await;
        Ok((running(&s) == 100).then_some(s))
    })
    .await;
    let agents: std::collections::BTreeSet<_> = states.values().map(|(_, a)| a.clone()).collect();
    assert_eq!(
        agents.len(),
        3,
        "tasks spread over the three agents: {agents:?}"
    );
    let m = c.client().metrics_snapshot().await.expect("metrics");
    assert_eq!(
        m.get("master/tasks_running").and_then(|v| v.as_f64()),
        Some(100.0)
    );
    assert_eq!(
        m.get("master/slaves_active").and_then(|v| v.as_f64()),
        Some(3.0)
    );
    fw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_tasks_become_unreachable_within_the_timeout() {
    let mut c = Cluster::start("unreachable", 3).await;
    let fw = TestFramework::start(c.client(), "unreach", None, 2).await;
    for i in 0..6 {
        fw.launch(&format!("s{i}"), "exec sleep 300", 0.1, 16.0);
    }
    let states = eventually("6 running", secs(60), || async {
        let s = c.task_states().await;
        Ok((running(&s) == 6).then_some(s))
    })
    .await;
    let slaves = c.client().slaves().await.expect("slaves");
    let victim_host = "agent-1.test";
    let victim = slaves
        .slaves
        .iter()
        .find(|a| a.hostname == victim_host)
        .expect("agent 1")
        .id
        .clone();
    let on_victim: Vec<String> = states
        .iter()
        .filter(|(_, (_, a))| *a == victim)
        .map(|(t, _)| t.clone())
        .collect();
    c.agents[1].kill9();
    let client = c.client();
    eventually("agent 1's tasks TASK_UNREACHABLE", secs(20), || async {
        let s = client.master_state().await.map_err(|e| e.to_string())?;
        let unreachable: Vec<_> = s
            .frameworks
            .iter()
            .flat_map(|f| f.unreachable_tasks.iter())
            .map(|t| t.id.clone())
            .collect();
        Ok(on_victim
            .iter()
            .all(|t| unreachable.contains(t))
            .then_some(()))
    })
    .await;
    for t in &on_victim {
        assert_eq!(
            fw.state(t),
            Some(TaskState::Unreachable),
            "framework told about {t}"
        );
    }
    let s = c.task_states().await;
    assert_eq!(
        running(&s),
        6 - on_victim.len(),
        "tasks elsewhere keep running"
    );
    fw.stop();
}

fn read_pid(c: &Cluster, task: &str) -> Option<i32> {
    let out = Command::new(bin())
        .args(["task", "log", task, "--url", &c.master_url])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_recovers_running_tasks_without_restarting_them() {
    let mut c = Cluster::start("agent-restart", 1).await;
    let fw = TestFramework::start(c.client(), "recover", None, 10).await;
    fw.launch("long", "echo $$; exec sleep 300", 0.1, 16.0);
    fw.launch("short", "sleep 4; exit 7", 0.1, 16.0);
    eventually("both running", secs(30), || async {
        Ok((fw.state("long") == Some(TaskState::Running)
            && fw.state("short") == Some(TaskState::Running))
        .then_some(()))
    })
    .await;
    let pid = eventually("long task printed its pid", secs(10), || async {
        Ok(read_pid(&c, "long"))
    })
    .await;
    c.agents[0].kill9();
    // The short task ends while its agent is down.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "task survived its agent's death"
    );
    c.restart_agent(0).await;
    eventually(
        "short task reported failed with its exit status",
        secs(30),
        || async {
            Ok(fw
                .status("short")
                .filter(|s| s.state == TaskState::Failed)
                .map(|s| s.exit_code))
        },
    )
    .await
    .map(|code| assert_eq!(code, 7))
    .unwrap_or_else(|| panic!("no exit code"));
    let s = c.task_states().await;
    assert_eq!(s.get("long").map(|x| x.0.as_str()), Some("TASK_RUNNING"));
    assert_eq!(
        read_pid(&c, "long"),
        Some(pid),
        "same process, not restarted"
    );
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    fw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_master_forgets_nothing() {
    let mut c = Cluster::start("master-restart", 2).await;
    let fw = TestFramework::start(c.client(), "survivor", None, 2).await;
    for i in 0..4 {
        fw.launch(&format!("m{i}"), "exec sleep 300", 0.1, 16.0);
    }
    eventually("4 running", secs(60), || async {
        Ok((running(&c.task_states().await) == 4).then_some(()))
    })
    .await;
    let before = c.client().slaves().await.expect("slaves");
    let mut before_ids: Vec<_> = before.slaves.iter().map(|a| a.id.clone()).collect();
    before_ids.sort();
    let fw_id = fw.id.clone();
    fw.stop();
    c.restart_master().await;
    let client = c.client();
    eventually("agents re-registered with their ids", secs(30), || async {
        let s = client.slaves().await.map_err(|e| e.to_string())?;
        let mut ids: Vec<_> = s
            .slaves
            .iter()
            .filter(|a| a.active)
            .map(|a| a.id.clone())
            .collect();
        ids.sort();
        Ok((ids == before_ids).then_some(()))
    })
    .await;
    eventually("4 tasks running again", secs(30), || async {
        Ok((running(&c.task_states().await) == 4).then_some(()))
    })
    .await;
    // The framework fails over with the same id and reconciles.
    let fw2 = TestFramework::start(c.client(), "survivor", Some(fw_id.clone()), 2).await;
    assert_eq!(fw2.id, fw_id);
    let mut call = Call::new(Some(fw_id), CallType::Reconcile);
    call.reconcile = Some(Reconcile::default());
    fw2.call(call).await;
    eventually("reconciliation reports all 4 running", secs(20), || async {
        Ok((0..4)
            .all(|i| fw2.state(&format!("m{i}")) == Some(TaskState::Running))
            .then_some(()))
    })
    .await;
    fw2.stop();
}

fn cgroups_writable() -> bool {
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && (v1.is_dir() || v2.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_stopped_at_its_limit() {
    let c = Cluster::start("oom", 1).await;
    let slaves = c.client().slaves().await.expect("slaves");
    let isolation = slaves.slaves[0].isolation.clone();
    if !cgroups_writable() {
        assert!(
            isolation.starts_with("none"),
            "agent says it has no isolation: {isolation}"
        );
        return;
    }
    assert!(
        isolation.starts_with("cgroups"),
        "agent isolates with cgroups: {isolation}"
    );
    let out = Command::new(bin())
        .args([
            "run",
            "--url",
            &c.master_url,
            "--mem",
            "32",
            "--json",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=256M",
            "count=1",
        ])
        .output()
        .expect("basalt run");
    assert_ne!(out.status.code(), Some(0));
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let st: basalt_api::TaskStatus = serde_json::from_str(&last).expect("last status line");
    assert_eq!(st.state, TaskState::Failed, "{last}");
    assert_eq!(
        st.reason.as_deref(),
        Some("REASON_CONTAINER_LIMITATION_MEMORY"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basalt_run_exits_with_the_task_code_and_its_log_is_readable() {
    let c = Cluster::start("run", 2).await;
    let out = Command::new(bin())
        .args([
            "run",
            "--url",
            &c.master_url,
            "--name",
            "hello",
            "--env",
            "GREETING=hello-basalt",
            "--",
            "sh",
            "-c",
            "echo $GREETING on $HOST; exit 3",
        ])
        .output()
        .expect("basalt run");
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = Command::new(bin())
        .args(["task", "list", "--all", "--json", "--url", &c.master_url])
        .output()
        .expect("list");
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let t = v["tasks"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "hello"))
        .expect("task listed")
        .clone();
    assert_eq!(t["state"], "TASK_FAILED");
    let id = t["id"].as_str().expect("id");
    let log = Command::new(bin())
        .args(["task", "log", id, "--url", &c.master_url])
        .output()
        .expect("log");
    let text = String::from_utf8_lossy(&log.stdout);
    assert!(text.contains("hello-basalt on agent-"), "log: {text}");
    let nodes = Command::new(bin())
        .args(["node", "list", "--url", &c.master_url])
        .output()
        .expect("nodes");
    let text = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        text.contains("agent-0.test") && text.contains("agent-1.test"),
        "{text}"
    );
    let bad = Command::new(bin())
        .args(["node", "list", "--url", "http://127.0.0.1:1"])
        .output()
        .expect("nodes");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_event_stream_starts_with_a_snapshot_and_follows_changes() {
    let c = Cluster::start("events", 2).await;
    let mut events = c.client().subscribe_events().await.expect("subscribe");
    let first = events.next().await.expect("stream").expect("first event");
    let snap = first.subscribed.expect("SUBSCRIBED first");
    assert_eq!(snap.get_state.get_agents.agents.len(), 2);
    let url = c.master_url.clone();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(bin())
            .args(["run", "--url", &url, "--", "true"])
            .status()
    });
    let mut seen = Vec::new();
    while !seen.contains(&"TASK_FINISHED".to_owned()) {
        let ev = tokio::time::timeout(secs(30), events.next())
            .await
            .expect("event in time")
            .expect("ok")
            .expect("open");
        match ev.kind {
            basalt_api::operator::EventType::TaskAdded => seen.push("TASK_ADDED".into()),
            basalt_api::operator::EventType::TaskUpdated => {
                seen.push(ev.task_updated.expect("body").state.as_str().to_owned())
            }
            _ => {}
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("TASK_ADDED"));
    assert!(seen.contains(&"TASK_RUNNING".to_owned()), "{seen:?}");
    assert_eq!(run.await.expect("join").expect("status").code(), Some(0));
}

async fn raw(
    method: &str,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut r = client
        .request(method.parse().expect("method"), url)
        .body(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_4xx_and_changes_nothing() {
    let c = Cluster::start("badinput", 1).await;
    let before = c.client().master_state().await.expect("state");
    let m = &c.master_url;
    let a = &c.agent_urls[0];
    let agent_id = before.slaves[0].id.clone();
    let big = vec![b' '; 9 * 1024 * 1024];
    // (method, url, body, headers, expected status)
    type Case<'a> = (&'a str, String, Vec<u8>, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        ("POST", format!("{m}/api/v1/scheduler"), b"{not json".to_vec(), vec![], 400),
        ("POST", format!("{m}/api/v1/scheduler"), br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":""}}}"#.to_vec(), vec![], 400),
        ("POST", format!("{m}/api/v1/scheduler"), br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"x","failover_timeout":-1}}}"#.to_vec(), vec![], 400),
        ("POST", format!("{m}/api/v1/scheduler"), br#"{"type":"REVIVE"}"#.to_vec(), vec![], 400),
        ("POST", format!("{m}/api/v1/scheduler"), br#"{"type":"REVIVE"}"#.to_vec(), vec![("Mesos-Stream-Id", "nope")], 400),
        ("POST", format!("{m}/api/v1/scheduler"), big.clone(), vec![], 413),
        ("POST", format!("{m}/api/v1"), br#"{"type":"FLY"}"#.to_vec(), vec![], 400),
        ("POST", format!("{m}/api/v1"), br#"{"type":"TEARDOWN","teardown":{"framework_id":{"value":"ghost"}}}"#.to_vec(), vec![], 404),
        ("POST", format!("{m}/api/v1"), br#"{"type":"UPDATE_WEIGHTS","update_weights":{"weight_infos":[{"role":"a","weight":-2}]}}"#.to_vec(), vec![], 400),
        ("POST", format!("{m}/master/teardown"), b"".to_vec(), vec![], 400),
        ("POST", format!("{m}/master/teardown"), b"frameworkId=ghost".to_vec(), vec![], 404),
        ("POST", format!("{m}/internal/agents/register"), br#"{"info":{"hostname":"h","port":1,"url":"http://h:1","resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":-4}}]}}"#.to_vec(), vec![], 400),
        ("POST", format!("{m}/internal/agents/register"), br#"{"info":{"hostname":"h","port":1,"url":"http://h:1","resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":"NaN"}}]}}"#.to_vec(), vec![], 400),
        ("POST", format!("{m}/internal/agents/register"), format!(r#"{{"agent_id":"{agent_id}","info":{{"hostname":"imposter","port":1,"url":"http://10.9.9.9:1","resources":[{{"name":"cpus","type":"SCALAR","scalar":{{"value":4}}}},{{"name":"mem","type":"SCALAR","scalar":{{"value":64}}}}]}}}}"#).into_bytes(), vec![], 409),
        ("POST", format!("{m}/internal/agents/ghost/heartbeat"), b"{}".to_vec(), vec![], 404),
        ("POST", format!("{m}/internal/agents/ghost/status"), br#"{"framework_id":"f","status":{"task_id":"t","state":"TASK_RUNNING","uuid":"u"}}"#.to_vec(), vec![], 404),
        ("GET", format!("{m}/master/tasks?limit=abc"), vec![], vec![], 400),
        ("GET", format!("{m}/no/such/thing"), vec![], vec![], 404),
        ("POST", format!("{a}/internal/launch"), b"[]".to_vec(), vec![("Content-Type", "application/json")], 400),
        ("POST", format!("{a}/internal/kill"), br#"{"framework_id":"f","task_id":"ghost"}"#.to_vec(), vec![("Content-Type", "application/json")], 404),
        ("POST", format!("{a}/internal/launch"), b"[]".to_vec(), vec![], 415),
        ("GET", format!("{a}/files/read?path=/etc/passwd&offset=0"), vec![], vec![], 403),
    ];
    for (method, url, body, headers, want) in cases {
        let (status, body) = raw(method, &url, body, &headers).await;
        assert_eq!(status, want, "{method} {url}: {body}");
        assert!(
            body.get("message")
                .and_then(|m| m.as_str())
                .is_some_and(|m| !m.is_empty()),
            "{method} {url} answers with a JSON message: {body}"
        );
    }
    // ACCEPT of an offer the framework does not hold.
    let fw = TestFramework::start(c.client(), "bad", None, 0).await;
    let mut call = Call::new(Some(fw.id.clone()), CallType::Accept);
    call.accept = Some(basalt_api::scheduler::Accept {
        offer_ids: vec!["not-an-offer".into()],
        operations: vec![],
        filters: None,
    });
    let body = serde_json::to_vec(&call).expect("json");
    let (status, msg) = raw(
        "POST",
        &format!("{m}/api/v1/scheduler"),
        body,
        &[("Mesos-Stream-Id", &fw.stream)],
    )
    .await;
    assert_eq!(status, 400, "{msg}");
    fw.stop();
    let after = c.client().master_state().await.expect("state");
    assert_eq!(after.slaves.len(), before.slaves.len());
    assert_eq!(after.slaves[0].hostname, before.slaves[0].hostname);
    assert!(after.all_tasks().next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basalt_up_serves_a_cluster_and_recovers_it_on_the_same_data_dir() {
    let dir = temp_dir("up");
    let ready = dir.join("up.ready");
    let args: Vec<String> = vec![
        "up".into(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--master-port".into(),
        "0".into(),
        "--agent-port".into(),
        "0".into(),
        "--ready-file".into(),
        ready.display().to_string(),
        "--resources".into(),
        "cpus:2;mem:1024;disk:100;ports:[32100-32110]".into(),
        "--dns-port".into(),
        "0".into(),
        "--dns-http-port".into(),
        "0".into(),
        "--init-port".into(),
        "0".into(),
        "--universe-port".into(),
        "0".into(),
        "--lb-http-port".into(),
        "0".into(),
        "--lb-stats-port".into(),
        "0".into(),
        "--lb-app-id-port".into(),
        "0".into(),
    ];
    let mut p = Proc::spawn(&args, &ready, &dir.join("up.log"));
    let url = p.ready("master").await;
    let lb_stats = p.ready("lb_stats").await;
    let health = reqwest::get(format!("{lb_stats}/_haproxy_health_check"))
        .await
        .expect("lb health");
    assert_eq!(
        health.status().as_u16(),
        200,
        "the load balancer is one of up's roles"
    );
    let out = Command::new(bin())
        .args(["run", "--url", &url, "--", "echo", "hi"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = basalt_api::Client::new(&url)
        .slaves()
        .await
        .expect("slaves")
        .slaves[0]
        .id
        .clone();
    p.signal(libc::SIGINT);
    let status = tokio::task::spawn_blocking(move || {
        let s = p.child.wait();
        (s, p)
    });
    let (s, mut p) = tokio::time::timeout(secs(20), status)
        .await
        .expect("stops on Ctrl-C")
        .expect("join");
    assert!(s.expect("wait").success(), "clean exit on Ctrl-C");
    // The agent's port was random: let it take a new one; its id must survive.
    p.respawn();
    let url = p.ready("master").await;
    let client = basalt_api::Client::new(&url);
    eventually("agent back with its id", secs(30), || async {
        let s = client.slaves().await.map_err(|e| e.to_string())?;
        Ok(s.slaves
            .iter()
            .any(|a| a.id == id && a.active)
            .then_some(()))
    })
    .await;
    p.signal(libc::SIGINT);
    kill_processes_under(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_each_update_until_its_framework_acknowledges_it() {
    let c = Cluster::start("ack-relay", 1).await;
    let fw = TestFramework::start(c.client(), "ackless", None, 1).await;
    fw.hold_acks();
    fw.launch("held", "exec sleep 300", 0.01, 8.0);
    let pending = |agent: String| async move {
        let m = get_json(&format!("{agent}/metrics/snapshot")).await;
        m["slave/status_updates_pending"].as_f64().unwrap_or(-1.0)
    };
    eventually("TASK_RUNNING reaches the framework", secs(30), || async {
        Ok((fw.state("held") == Some(TaskState::Running)).then_some(()))
    })
    .await;
    assert_eq!(
        pending(c.agent_urls[0].clone()).await,
        1.0,
        "unacknowledged by the framework: the agent still holds it"
    );
    // Killed while RUNNING is unacknowledged: TASK_KILLED waits behind it on the agent.
    let agent_id = c.client().slaves().await.expect("slaves").slaves[0]
        .id
        .clone();
    let mut kill = Call::new(Some(fw.id.clone()), CallType::Kill);
    kill.kill = Some(basalt_api::scheduler::Kill {
        task_id: basalt_api::TaskId::new("held"),
        agent_id: Some(basalt_api::AgentId::new(agent_id)),
        kill_policy: None,
    });
    fw.call(kill).await;
    eventually("the kill's updates held on the agent", secs(30), || {
        let a = c.agent_urls[0].clone();
        async move {
            // TASK_KILLING and TASK_KILLED queue up behind the unacknowledged RUNNING.
            match pending(a).await {
                n if n >= 2.0 => Ok(Some(())),
                n => Err(format!("{n} pending")),
            }
        }
    })
    .await;
    assert_eq!(
        fw.state("held"),
        Some(TaskState::Running),
        "the kill is not reported before the framework acknowledged RUNNING"
    );
    fw.release_acks().await;
    eventually("TASK_KILLED delivered and acknowledged", secs(30), || {
        let a = c.agent_urls[0].clone();
        let st = fw.state("held");
        async move { Ok((st == Some(TaskState::Killed) && pending(a).await == 0.0).then_some(())) }
    })
    .await;
    fw.stop();
}
