//! init against a real master and three agents: real HTTP servers as app instances.

use crate::harness::*;
use serde_json::{Value, json};

/// Tasks of `/web` once `n` of them run and no deployment is in flight.
async fn settled(init: &str, n: usize) -> Vec<Value> {
    eventually(&format!("/web settles at {n} running"), secs(60), || {
        let url = format!("{init}/v2/apps/web");
        async move {
            let v = reqwest::get(&url).await.map_err(|e| e.to_string())?;
            let v: Value = v.json().await.map_err(|e| e.to_string())?;
            let app = &v["app"];
            let ok = app["tasksRunning"] == json!(n)
                && app["tasksHealthy"] == json!(n)
                && app["tasksStaged"] == json!(0)
                && app["deployments"].as_array().is_some_and(|d| d.is_empty());
            Ok(ok.then(|| app["tasks"].as_array().cloned().unwrap_or_default()))
        }
    })
    .await
}

/// `basalt init` against the cluster's master on a free port, its data under the cluster's
/// dir; returns the process and its URL.
async fn start_init(c: &Cluster) -> (Proc, String) {
    let ready = c.dir.join("init.ready");
    let args: Vec<String> = [
        "init",
        "--master",
        &c.master_url,
        "--port",
        "0",
        "--data-dir",
        &c.dir.join("init").display().to_string(),
        "--ready-file",
        &ready.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = Proc::spawn(&args, &ready, &c.dir.join("init.log"));
    let init = p.ready("init").await;
    (p, init)
}

/// Waits until `path` of init answers 404.
async fn gone(init: &str, path: &str, what: &str) {
    let url = format!("{init}{path}");
    eventually(what, secs(30), || {
        let url = url.clone();
        async move {
            let r = reqwest::get(&url).await.map_err(|e| e.to_string())?;
            Ok((r.status().as_u16() == 404).then_some(()))
        }
    })
    .await;
}

/// The pid of the process whose command line has `needle`.
fn pid_with(needle: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains(needle) && cmd.contains("http.server")).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_keeps_apps_running_replaces_failures_and_survives_restart() {
    let c = Cluster::start("init", 3).await;
    let (mut p, init) = start_init(&c).await;
    // Restarts come back on the same port.
    p.args[4] = init.rsplit(':').next().unwrap_or("0").to_owned();

    // Bad input: Marathon's 422 with details, nothing stored.
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{init}/v2/apps"),
        json!({"id": "/Bad", "cmd": "x", "instances": -1, "constraints": [["hostname", "NEAR"]]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["details"].as_array().is_some_and(|d| d.len() >= 3),
        "{body}"
    );
    assert_eq!(
        get_json(&format!("{init}/v2/apps")).await["apps"],
        json!([])
    );

    let app = json!({
        "id": "/web",
        "cmd": "exec python3 -m http.server $PORT0 --bind 127.0.0.1",
        "cpus": 0.1, "mem": 64, "instances": 3,
        "portDefinitions": [{"port": 0, "name": "http"}],
        "constraints": [["hostname", "UNIQUE"]],
        "backoffSeconds": 0.5,
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0, "delaySeconds": 0,
                          "gracePeriodSeconds": 10, "intervalSeconds": 1, "timeoutSeconds": 2,
                          "maxConsecutiveFailures": 3}],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}
    });
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{init}/v2/apps"),
        app.clone(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["ports"],
        json!([10000]),
        "a service port from 10000-20000"
    );
    let (status, _) = send(reqwest::Method::POST, &format!("{init}/v2/apps"), app).await;
    assert_eq!(status, 409, "an app id is unique");

    let tasks = settled(&init, 3).await;
    let hosts: std::collections::BTreeSet<&str> =
        tasks.iter().filter_map(|t| t["host"].as_str()).collect();
    assert_eq!(hosts.len(), 3, "UNIQUE hostname spreads them: {tasks:?}");
    for t in &tasks {
        let port = t["ports"][0].as_u64().expect("port");
        let served = eventually("the instance serves HTTP", secs(20), || async move {
            Ok(reqwest::get(format!("http://127.0.0.1:{port}/"))
                .await
                .ok()
                .map(|r| r.status().as_u16()))
        })
        .await;
        assert_eq!(served, 200);
    }

    // A server that dies is replaced.
    let victim = tasks[0].clone();
    let port = victim["ports"][0].as_u64().expect("port");
    let pid = pid_with(&port.to_string()).expect("the server process");
    // SAFETY: plain kill(2) on a pid we just read.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let replaced = eventually("a replacement runs", secs(60), || {
        let (init, victim) = (init.clone(), victim["id"].clone());
        async move {
            let v: Value = reqwest::get(format!("{init}/v2/apps/web"))
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let tasks = v["app"]["tasks"].as_array().cloned().unwrap_or_default();
            let ok =
                v["app"]["tasksRunning"] == json!(3) && !tasks.iter().any(|t| t["id"] == victim);
            Ok(ok.then_some(v))
        }
    })
    .await;
    assert!(
        replaced["app"]["lastTaskFailure"]["taskId"] == victim["id"],
        "{replaced}"
    );

    // Restarting init adopts the running tasks: same ids, not restarted.
    let before: Vec<Value> = settled(&init, 3)
        .await
        .iter()
        .map(|t| json!([t["id"], t["startedAt"]]))
        .collect();
    p.kill9();
    p.respawn();
    assert_eq!(p.ready("init").await, init);
    let after: Vec<Value> = settled(&init, 3)
        .await
        .iter()
        .map(|t| json!([t["id"], t["startedAt"]]))
        .collect();
    assert_eq!(before, after, "task ids unchanged across an init restart");
    let fw = c.client().frameworks().await.expect("frameworks");
    assert_eq!(
        fw.frameworks
            .iter()
            .filter(|f| f.name == "marathon")
            .count(),
        1,
        "same framework id"
    );

    // A new version rolls out without the healthy count dropping below
    // minimumHealthCapacity (0.5 of 3 = 2), sampled every 100 ms.
    let health = |cmd: &str, path: &str, instances: u64| {
        json!({"id": "/web", "cmd": cmd, "cpus": 0.1, "mem": 64, "instances": instances,
               "portDefinitions": [{"port": 0, "name": "http"}], "constraints": [["hostname", "UNIQUE"]],
               "healthChecks": [{"protocol": "MESOS_HTTP", "path": path, "portIndex": 0, "delaySeconds": 0,
                                 "gracePeriodSeconds": 3, "intervalSeconds": 1, "timeoutSeconds": 2,
                                 "maxConsecutiveFailures": 3}],
               "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}})
    };
    let v2 = "exec python3 -m http.server $PORT0 --bind 127.0.0.1 --directory /tmp";
    let (status, body) = send(
        reqwest::Method::PUT,
        &format!("{init}/v2/apps/web"),
        health(v2, "/", 3),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut lowest = u64::MAX;
    let deadline = tokio::time::Instant::now() + secs(90);
    loop {
        let app = get_json(&format!("{init}/v2/apps/web")).await["app"].clone();
        lowest = lowest.min(app["tasksHealthy"].as_u64().unwrap_or(0));
        let done = app["deployments"].as_array().is_some_and(|d| d.is_empty());
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rolling upgrade did not finish: {app}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        lowest >= 2,
        "healthy instances dropped to {lowest} during the upgrade"
    );
    let tasks = settled(&init, 3).await;
    let version = get_json(&format!("{init}/v2/apps/web")).await["app"]["version"].clone();
    assert!(
        tasks.iter().all(|t| t["version"] == version),
        "all on the new version: {tasks:?}"
    );

    // A version that never becomes healthy is rolled back.
    let (status, body) = send(
        reqwest::Method::PUT,
        &format!("{init}/v2/apps/web"),
        health(v2, "/no-such-page", 3),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stuck = body["deploymentId"]
        .as_str()
        .expect("deployment")
        .to_owned();
    tokio::time::sleep(secs(3)).await;
    let deps = get_json(&format!("{init}/v2/deployments")).await;
    assert!(
        deps.as_array()
            .is_some_and(|d| d.iter().any(|d| d["id"] == json!(stuck))),
        "still deploying: {deps}"
    );
    let (status, body) = send(
        reqwest::Method::DELETE,
        &format!("{init}/v2/deployments/{stuck}"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "rollback: {body}");
    let tasks = settled(&init, 3).await;
    let app = get_json(&format!("{init}/v2/apps/web")).await["app"].clone();
    assert_eq!(
        app["healthChecks"][0]["path"],
        json!("/"),
        "back on the healthy version"
    );
    assert!(tasks.iter().all(|t| t["version"] == app["version"]));

    // Scaling down kills the extra ones.
    let (status, _) = send(
        reqwest::Method::PUT,
        &format!("{init}/v2/apps/web"),
        json!({"instances": 2}),
    )
    .await;
    assert_eq!(status, 200);
    settled(&init, 2).await;
    let versions = get_json(&format!("{init}/v2/apps/web/versions")).await;
    assert!(
        versions["versions"]
            .as_array()
            .is_some_and(|v| v.len() >= 4),
        "{versions}"
    );

    // Delete: every task goes, then the app.
    let (status, _) = send(
        reqwest::Method::DELETE,
        &format!("{init}/v2/apps/web"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    gone(&init, "/v2/apps/web", "the app is gone").await;
    eventually("its tasks are gone", secs(30), || {
        let init = init.clone();
        async move {
            let v: Value = reqwest::get(format!("{init}/v2/tasks"))
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            Ok((v["tasks"] == json!([])).then_some(()))
        }
    })
    .await;
    assert_eq!(get_json(&format!("{init}/v2/deployments")).await, json!([]));
    kill_processes_under(&c.dir);
}

/// The Python client's venv, made by scripts/test.sh.
#[allow(clippy::disallowed_methods)]
fn marathon_python() -> String {
    let p = std::env::var("BASALT_MARATHON_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/basalt/venv-marathon/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        std::path::Path::new(&p).exists(),
        "the marathon Python client is not installed at {p}: run `bash scripts/test.sh` (it makes the venv)"
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marathon_python_client_works_against_init() {
    let python = marathon_python();
    let c = Cluster::start("pyclient", 1).await;
    let (_init_proc, init) = start_init(&c).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/clients/marathon_client.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args([script, &init])
            .output()
    })
    .await
    .expect("join")
    .expect("python runs");
    assert!(
        out.status.success(),
        "marathon client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    kill_processes_under(&c.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basalt_app_commands_wait_for_deployments_and_explain_errors() {
    let c = Cluster::start("appcli", 1).await;
    let (_init_proc, init) = start_init(&c).await;
    let good = c.dir.join("app.json");
    std::fs::write(
        &good,
        r#"{"id": "/cli", "cmd": "sleep 600", "cpus": 0.05, "mem": 16, "instances": 2}"#,
    )
    .expect("write");
    let bad = c.dir.join("bad.json");
    std::fs::write(&bad, r#"{"id": "/Nope", "cmd": "x", "cpus": -1}"#).expect("write");
    let basalt = |args: Vec<String>| {
        let init = init.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(bin())
                    .args(&args)
                    .args(["--init-url", &init, "--timeout", "60s"])
                    .output()
            })
            .await
            .expect("join")
            .expect("basalt runs")
        }
    };
    let s = |x: &str| x.to_owned();
    let out = basalt(vec![s("app"), s("add"), good.display().to_string()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = get_json(&format!("{init}/v2/apps/cli")).await;
    assert_eq!(
        app["app"]["tasksRunning"],
        json!(2),
        "add waited for the deployment: {app}"
    );

    let out = basalt(vec![s("app"), s("list")]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("/cli") && table.contains("RUNNING"),
        "{table}"
    );

    let out = basalt(vec![s("app"), s("scale"), s("cli"), s("1")]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        get_json(&format!("{init}/v2/apps/cli")).await["app"]["tasksRunning"],
        json!(1)
    );

    let out = basalt(vec![s("app"), s("add"), bad.display().to_string()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one readable line: {err}");
    assert!(
        err.contains("Object is not valid") && err.contains("/cpus"),
        "{err}"
    );

    // Groups: nested ids, a tree, and deleting a whole group.
    let mut sse = reqwest::Client::new()
        .get(format!("{init}/v2/events?event_type=group_change_success"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .expect("event stream");
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{init}/v2/groups"),
        json!({"id": "/prod", "apps": [{"id": "web", "cmd": "sleep 600", "cpus": 0.05, "mem": 16}],
               "groups": [{"id": "db", "apps": [{"id": "pg", "cmd": "sleep 600", "cpus": 0.05, "mem": 16}]}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut seen = String::new();
    tokio::time::timeout(secs(10), async {
        while !seen.contains("\"groupId\":\"/prod\"") {
            match sse.chunk().await {
                Ok(Some(c)) => seen.push_str(&String::from_utf8_lossy(&c)),
                _ => break,
            }
        }
    })
    .await
    .expect("a group_change_success event");
    assert!(seen.contains("event: group_change_success"), "{seen}");
    drop(sse);
    let tree = get_json(&format!("{init}/v2/groups/prod")).await;
    assert_eq!(tree["apps"][0]["id"], json!("/prod/web"), "{tree}");
    assert_eq!(tree["groups"][0]["id"], json!("/prod/db"));
    assert_eq!(tree["groups"][0]["apps"][0]["id"], json!("/prod/db/pg"));
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{init}/v2/groups"),
        json!({"id": "/bad", "apps": [{"id": "ok", "cmd": "x"}, {"id": "Nope", "cmd": "x"}]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        get_json(&format!("{init}/v2/groups/bad")).await["message"],
        json!("Group '/bad' does not exist"),
        "all or nothing"
    );
    let (status, _) = send(
        reqwest::Method::DELETE,
        &format!("{init}/v2/groups/prod?force=true"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    gone(&init, "/v2/groups/prod", "the group is gone").await;

    // Bulk update: a list of partial apps.
    let (status, body) = send(
        reqwest::Method::PUT,
        &format!("{init}/v2/apps"),
        json!([{"id": "/cli", "instances": 2}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let out = basalt(vec![
        s("deployment"),
        s("watch"),
        body["deploymentId"].as_str().unwrap_or_default().to_owned(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        get_json(&format!("{init}/v2/apps/cli")).await["app"]["tasksRunning"],
        json!(2)
    );

    let out = basalt(vec![s("app"), s("remove"), s("cli")]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        get_json(&format!("{init}/v2/apps")).await["apps"],
        json!([])
    );
    kill_processes_under(&c.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_fetch_their_uris_into_the_sandbox_before_starting() {
    let c = Cluster::start("fetch", 1).await;
    let (_init_proc, init) = start_init(&c).await;
    // An archive and a script, served over HTTP by a real server and read from a local path.
    let www = c.dir.join("www");
    std::fs::create_dir_all(www.join("site")).expect("dirs");
    std::fs::write(www.join("site/index.html"), "fetched and extracted\n").expect("write");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&www)
        .args(["-czf", "site.tgz", "site"])
        .current_dir(&www)
        .status()
        .expect("tar");
    assert!(st.success());
    let script = c.dir.join("serve.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncd site && exec python3 -m http.server \"$PORT0\" --bind 127.0.0.1\n",
    )
    .expect("script");
    let port = free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&www)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let app = json!({
        "id": "/fetcher", "cpus": 0.05, "mem": 32, "instances": 1,
        "cmd": "./run",
        "fetch": [
            {"uri": format!("http://127.0.0.1:{port}/site.tgz")},
            {"uri": script.display().to_string(), "executable": true, "outputFile": "run"}
        ],
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
                          "delaySeconds": 0, "intervalSeconds": 1, "gracePeriodSeconds": 30}]
    });
    let (status, body) = send(reqwest::Method::POST, &format!("{init}/v2/apps"), app).await;
    assert_eq!(status, 201, "{body}");
    let task = eventually("/fetcher healthy", secs(60), || {
        let url = format!("{init}/v2/apps/fetcher");
        async move {
            let v = get_json(&url).await;
            let app = &v["app"];
            Ok((app["tasksHealthy"] == json!(1)).then(|| app["tasks"][0].clone()))
        }
    })
    .await;
    let page = reqwest::get(format!("http://127.0.0.1:{}/index.html", task["ports"][0]))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert_eq!(page, "fetched and extracted\n");

    // A URI that cannot be fetched: the task fails with the reason, and says which URI.
    let app = json!({
        "id": "/unfetchable", "cpus": 0.05, "mem": 16, "instances": 1, "cmd": "true",
        "fetch": [{"uri": format!("http://127.0.0.1:{port}/missing.tgz")}]
    });
    let (status, _) = send(reqwest::Method::POST, &format!("{init}/v2/apps"), app).await;
    assert_eq!(status, 201);
    let failure = eventually("the fetch failure reported", secs(60), || {
        let url = format!("{init}/v2/apps/unfetchable?embed=apps.lastTaskFailure");
        async move {
            let v = get_json(&url).await;
            let f = &v["app"]["lastTaskFailure"];
            Ok(f["message"].as_str().map(|_| f.clone()))
        }
    })
    .await;
    assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    assert!(
        failure["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing.tgz") && m.contains("404")),
        "{failure}"
    );
    // Bad fetch entries are refused with Marathon's body, nothing stored.
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{init}/v2/apps"),
        json!({"id": "/bad-fetch", "cmd": "true", "fetch": [{"uri": ""}, {"uri": "x", "executable": "yes"}]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"][0]["path"], "/fetch(0)/uri", "{body}");
    // A download that never ends is stopped by a kill: the app can be removed.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stall_port = stall.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = stall.accept().await {
            held.push(sock);
        }
    });
    let app = json!({
        "id": "/stuck", "cpus": 0.05, "mem": 16, "instances": 1, "cmd": "sleep 600",
        "fetch": [{"uri": format!("http://127.0.0.1:{stall_port}/never.tgz")}]
    });
    let (status, _) = send(reqwest::Method::POST, &format!("{init}/v2/apps"), app).await;
    assert_eq!(status, 201);
    eventually("/stuck staged (fetching)", secs(60), || {
        let url = format!("{init}/v2/apps/stuck");
        async move { Ok((get_json(&url).await["app"]["tasksStaged"] == json!(1)).then_some(())) }
    })
    .await;
    let (status, body) = send(
        reqwest::Method::DELETE,
        &format!("{init}/v2/apps/stuck?force=true"),
        json!({}),
    )
    .await;
    assert!(status == 200 || status == 202, "{status} {body}");
    gone(
        &init,
        "/v2/apps/stuck",
        "/stuck removed while its fetch hung",
    )
    .await;
    hold.abort();
    let _ = server.kill();
    let _ = server.wait();

    // A Docker app is accepted and waits in the queue, saying why.
    let app = json!({
        "id": "/dockerized", "cpus": 0.05, "mem": 16, "instances": 1,
        "container": {"type": "DOCKER", "docker": {"image": "busybox"}}
    });
    let (status, body) = send(reqwest::Method::POST, &format!("{init}/v2/apps"), app).await;
    assert_eq!(status, 201, "{body}");
    let item = eventually("the Docker app queued with its reason", secs(30), || {
        let url = format!("{init}/v2/queue?embed=lastUnusedOffers");
        async move {
            let q = get_json(&url).await;
            Ok(q["queue"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["app"]["id"] == "/dockerized"))
                .filter(|i| {
                    i["processedOffersSummary"]["rejectSummaryLastOffers"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x["reason"] == "NoDockerContainerizer"))
                })
                .cloned())
        }
    })
    .await;
    assert!(
        item["processedOffersSummary"]["unusedOffersCount"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{item}"
    );
    assert_eq!(
        item["lastUnusedOffers"][0]["reason"][0], "NoDockerContainerizer",
        "{item}"
    );
    assert_eq!(item["count"], 1, "{item}");
    assert!(
        item["waitingReason"]
            .as_str()
            .is_some_and(|r| r.contains("Docker containerizer")),
        "{item}"
    );
    let app = get_json(&format!("{init}/v2/apps/dockerized")).await;
    assert_eq!(app["app"]["tasksStaged"], 0);
    assert_eq!(app["app"]["tasksRunning"], 0);

    // An app that depends on one that never serves (/unfetchable) waits, and says so.
    let app = json!({"id": "/needs", "cpus": 0.05, "mem": 16, "instances": 1, "cmd": "sleep 600",
                     "dependencies": ["/unfetchable"]});
    let (status, body) = send(reqwest::Method::POST, &format!("{init}/v2/apps"), app).await;
    assert_eq!(status, 201, "{body}");
    let item = eventually("/needs queued behind its dependency", secs(30), || {
        let url = format!("{init}/v2/queue");
        async move {
            let q = get_json(&url).await;
            Ok(q["queue"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["app"]["id"] == "/needs"))
                .cloned())
        }
    })
    .await;
    assert_eq!(
        item["waitingReason"], "waiting for its dependencies: /unfetchable",
        "{item}"
    );
    let app = get_json(&format!("{init}/v2/apps/needs")).await;
    assert_eq!(app["app"]["tasksStaged"], 0);
    assert_eq!(app["app"]["tasksRunning"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_wait_for_readiness_checks() {
    let c = Cluster::start("readiness", 1).await;
    let (_init_proc, init) = start_init(&c).await;
    // Healthy at once, ready (200 on /ready) only WARM seconds after it started.
    let server = c.dir.join("warm.py");
    std::fs::write(
        &server,
        r#"import http.server, os, sys, time
start = time.time()
warm = float(os.environ["WARM"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path != "/ready" or time.time() - start >= warm else 503
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"warming" if code == 503 else b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
    )
    .expect("server");
    let def = |version: &str| {
        json!({
            "id": "/warm", "cpus": 0.05, "mem": 32, "instances": 1,
            "cmd": format!("exec python3 {} $PORT0", server.display()),
            "env": {"WARM": "3", "VERSION": version},
            "portDefinitions": [{"port": 0, "name": "http"}],
            "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
            "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
                              "delaySeconds": 0, "intervalSeconds": 1, "gracePeriodSeconds": 30}],
            "readinessChecks": [{"name": "warm", "path": "/ready", "portName": "http",
                                 "preserveLastResponse": true,
                                 "intervalSeconds": 0.5, "timeoutSeconds": 1}]
        })
    };
    let (status, body) = send(reqwest::Method::POST, &format!("{init}/v2/apps"), def("v1")).await;
    assert_eq!(status, 201, "{body}");
    let no_deployments = |init: String| async move {
        let d = get_json(&format!("{init}/v2/deployments")).await;
        Ok(d.as_array().is_some_and(|a| a.is_empty()).then_some(()))
    };
    eventually("v1 deployed", secs(60), || no_deployments(init.clone())).await;

    let (status, body) = send(
        reqwest::Method::PUT,
        &format!("{init}/v2/apps/warm"),
        def("v2"),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    // While the new task warms up: it runs and is healthy, the deployment shows it not
    // ready (with the answer it got), and the old task is not being killed.
    let seen = eventually(
        "the new task running and healthy but not ready",
        secs(60),
        || {
            let init = init.clone();
            async move {
                let d = get_json(&format!("{init}/v2/deployments")).await;
                let results = &d[0]["currentActions"][0]["readinessCheckResults"];
                let app = get_json(&format!("{init}/v2/apps/warm?embed=apps.tasks")).await;
                let running = app["app"]["tasksRunning"].as_u64().unwrap_or(0);
                let healthy = app["app"]["tasksHealthy"].as_u64().unwrap_or(0);
                let warming = results[0]["ready"] == json!(false)
                    && results[0]["lastResponse"]["status"] == json!(503);
                Ok((running == 2 && healthy == 2 && warming).then_some((d, app)))
            }
        },
    )
    .await;
    let (d, app) = seen;
    assert_eq!(
        d[0]["currentActions"][0]["readinessCheckResults"][0]["name"],
        "warm"
    );
    assert_eq!(
        app["app"]["tasks"].as_array().map(Vec::len),
        Some(2),
        "the old task still serves while the new one warms up: {app}"
    );
    eventually("v2 deployed once ready", secs(60), || {
        no_deployments(init.clone())
    })
    .await;
    let app = get_json(&format!("{init}/v2/apps/warm?embed=apps.tasks")).await;
    let tasks = app["app"]["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 1, "{app}");
    assert_eq!(app["app"]["env"]["VERSION"], "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dcos_cli_drives_init_through_its_marathon_commands() {
    let c = Cluster::start("dcos-marathon", 1).await;
    let (_init_proc, init) = start_init(&c).await;
    let home = c.dir.join("dcos-home");
    std::fs::create_dir_all(&home).expect("home");
    let dcos = |args: &[&str]| -> (bool, String) {
        let o = std::process::Command::new(dcos_cli())
            .args(args)
            .env("HOME", &home)
            .env("DCOS_URL", &init)
            .env("DCOS_MARATHON_URL", &init)
            .output()
            .expect("run dcos");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let def = c.dir.join("sl.json");
    std::fs::write(
        &def,
        r#"{"id": "/sl", "cmd": "sleep 600", "cpus": 0.05, "mem": 16, "instances": 2}"#,
    )
    .expect("app");
    let def = def.display().to_string();
    let (ok, out) = dcos(&["marathon", "app", "add", &def]);
    assert!(ok && out.contains("Created deployment"), "{out}");
    eventually("2/2 in `dcos marathon app list`", secs(60), || {
        let (ok, out) = dcos(&["marathon", "app", "list"]);
        std::future::ready(Ok(
            (ok && out.contains("/sl") && out.contains("2/2")).then_some(())
        ))
    })
    .await;
    let (ok, out) = dcos(&["marathon", "task", "list"]);
    assert!(ok && out.matches("sl.").count() >= 2, "{out}");
    let (ok, out) = dcos(&["marathon", "app", "show", "/sl"]);
    assert!(ok && out.contains("\"instances\": 2"), "{out}");
    let (ok, out) = dcos(&["marathon", "app", "add", &def]);
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = dcos(&["marathon", "app", "update", "/sl", "instances=3"]);
    assert!(ok && out.contains("Created deployment"), "{out}");
    eventually("3 running after the update", secs(60), || {
        let url = format!("{init}/v2/apps/sl");
        async move {
            let v = get_json(&url).await;
            Ok((v["app"]["tasksRunning"] == json!(3)).then_some(()))
        }
    })
    .await;
    let (ok, out) = dcos(&["marathon", "app", "restart", "/sl"]);
    assert!(ok && out.contains("Created deployment"), "{out}");
    let (ok, out) = dcos(&["marathon", "app", "remove", "/sl", "--force"]);
    assert!(ok, "{out}");
    gone(&init, "/v2/apps/sl", "/sl removed by the dcos CLI").await;
}
