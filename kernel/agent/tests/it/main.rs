//! Component tests: `serve()` on port 0 against a recording master double.

mod master_double;

use basalt_api::agent::{KillTask, LaunchTasks};
use basalt_api::task::{CommandInfo, DurationInfo, KillPolicy, TaskLaunch};
use basalt_api::{AgentId, Client, FrameworkId, RoleResources, TaskId, TaskInfo, TaskState};
use basalt_kernel_agent::{Config, Deps};
use master_double::MasterDouble;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `probe` with backoff until it answers `Some`, or fails naming what it awaited.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("basalt-agent-it-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

struct Node {
    url: String,
    client: Client,
    token: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), basalt_kernel_agent::Error>>,
}

impl Node {
    async fn start(work_dir: &Path, master: &MasterDouble) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let token = CancellationToken::new();
        let config = Config {
            work_dir: work_dir.to_owned(),
            hostname: "test-host".into(),
            resources: Some("cpus:4;mem:4096;disk:1000;ports:[31000-31100]".into()),
            kill_grace_period: Duration::from_secs(2),
            registration_backoff_max: Duration::from_millis(200),
            cgroup_name: "basalt-it".into(),
            ..Default::default()
        };
        let deps = Deps {
            http: listener,
            master: Client::new(master.url.clone()),
            shutdown: token.clone(),
        };
        let handle = tokio::spawn(basalt_kernel_agent::serve(config, deps));
        let node = Node {
            client: Client::new(url.clone()),
            url,
            token,
            handle,
        };
        eventually("the agent registered", || async {
            let m = node
                .client
                .get_json::<serde_json::Value>("/metrics/snapshot")
                .await
                .ok()?;
            (m["slave/registered"].as_f64() == Some(1.0)).then_some(())
        })
        .await;
        node
    }

    async fn stop(self) {
        self.token.cancel();
        let r = tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("agent stops in time");
        r.expect("agent task joined").expect("agent ended cleanly");
    }

    async fn launch(&self, tasks: Vec<TaskLaunch>) {
        self.client
            .launch(&LaunchTasks {
                master_id: "m".into(),
                tasks,
            })
            .await
            .expect("launch accepted");
    }

    /// The sandbox of a task, from `/state`.
    async fn sandbox(&self, task: &str) -> String {
        eventually("the task appears in /state", || async {
            let s = self.client.agent_state().await.ok()?;
            s.frameworks
                .iter()
                .chain(&s.completed_frameworks)
                .flat_map(|f| f.executors.iter().chain(&f.completed_executors))
                .find(|e| e.id == task)
                .map(|e| e.directory.clone())
        })
        .await
    }

    async fn read_file(&self, path: &str) -> String {
        self.client
            .files_read(path, 0, 1 << 20)
            .await
            .map(|c| c.data)
            .unwrap_or_default()
    }
}

fn task(id: &str, cmd: &str, resources: &str) -> TaskLaunch {
    TaskLaunch {
        framework_id: FrameworkId::new("fw-1"),
        framework_name: "test".into(),
        role: "*".into(),
        task: TaskInfo {
            name: id.into(),
            task_id: TaskId::new(id),
            agent_id: AgentId::new("m-S0"),
            resources: RoleResources::parse(resources)
                .expect("valid resources")
                .to_wire(),
            command: Some(CommandInfo {
                value: Some(cmd.into()),
                shell: true,
                ..Default::default()
            }),
            container: None,
            health_check: None,
            kill_policy: None,
            labels: None,
            discovery: None,
            data: None,
        },
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with(['R', 'S', 'D']))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_command_reports_exit_code_and_its_output_is_readable() {
    let master = MasterDouble::start().await;
    let dir = temp_dir("fail");
    let node = Node::start(&dir, &master).await;
    node.launch(vec![task("t-fail", "echo hi; exit 3", "cpus:0.1;mem:32")])
        .await;

    let states = master.wait_for_terminal("t-fail").await;
    assert_eq!(states, vec![TaskState::Running, TaskState::Failed]);
    let last = master.last_status("t-fail").expect("a status");
    assert_eq!(last.exit_code, Some(3));
    assert_eq!(
        last.message.as_deref(),
        Some("Command exited with status 3")
    );

    let sandbox = node.sandbox("t-fail").await;
    assert_eq!(node.read_file(&format!("{sandbox}/stdout")).await, "hi\n");
    let size = node
        .client
        .get_json::<serde_json::Value>(&format!("/files/read?path={sandbox}/stdout&offset=-1"))
        .await;
    assert_eq!(size.expect("size")["offset"], 3);
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_see_their_ports_and_sandbox_in_the_environment() {
    let master = MasterDouble::start().await;
    let dir = temp_dir("env");
    let node = Node::start(&dir, &master).await;
    node.launch(vec![task(
        "t-env",
        r#"echo "$PORT0|$PORT1|$PORTS|$PORT|$MESOS_SANDBOX|$HOST|$MESOS_TASK_ID|$(pwd)" > env.txt"#,
        "cpus:0.1;mem:32;ports:[31010-31011]",
    )])
    .await;
    assert_eq!(
        master.wait_for_terminal("t-env").await,
        vec![TaskState::Running, TaskState::Finished]
    );
    let sandbox = node.sandbox("t-env").await;
    let env = node.read_file(&format!("{sandbox}/env.txt")).await;
    assert_eq!(
        env.trim(),
        format!("31010|31011|31010,31011|31010|{sandbox}|test-host|t-env|{sandbox}")
    );
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_tasks_go_killing_then_killed_within_the_grace_period() {
    let master = MasterDouble::start().await;
    let dir = temp_dir("kill");
    let node = Node::start(&dir, &master).await;
    let mut stubborn = task(
        "t-stubborn",
        "trap '' TERM; while true; do sleep 0.1; done",
        "cpus:0.1;mem:32",
    );
    stubborn.task.kill_policy = Some(KillPolicy {
        grace_period: Some(DurationInfo {
            nanoseconds: 500_000_000,
        }),
    });
    node.launch(vec![
        task("t-sleep", "sleep 1000", "cpus:0.1;mem:32"),
        stubborn,
    ])
    .await;
    // A duplicate launch of a running task changes nothing.
    node.launch(vec![task("t-sleep", "sleep 1000", "cpus:0.1;mem:32")])
        .await;
    master.wait_for_state("t-sleep", TaskState::Running).await;
    master
        .wait_for_state("t-stubborn", TaskState::Running)
        .await;

    let started = tokio::time::Instant::now();
    for t in ["t-sleep", "t-stubborn"] {
        node.client
            .kill(&KillTask {
                framework_id: FrameworkId::new("fw-1"),
                task_id: TaskId::new(t),
                grace_period_secs: Some(1.0),
            })
            .await
            .expect("kill accepted");
    }
    for t in ["t-sleep", "t-stubborn"] {
        let states = master.wait_for_terminal(t).await;
        assert_eq!(
            states,
            vec![TaskState::Running, TaskState::Killing, TaskState::Killed],
            "{t}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "kills took {:?}",
        started.elapsed()
    );

    let unknown = node
        .client
        .kill(&KillTask {
            framework_id: FrameworkId::new("fw-1"),
            task_id: TaskId::new("nope"),
            grace_period_secs: None,
        })
        .await
        .expect_err("an unknown task cannot be killed");
    assert_eq!(unknown.status(), Some(404));
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_agent_readopts_running_tasks_and_reports_ones_that_ended_meanwhile() {
    let master = MasterDouble::start().await;
    let dir = temp_dir("recover");
    let first = Node::start(&dir, &master).await;
    first
        .launch(vec![
            task("t-long", "sleep 1000", "cpus:0.1;mem:32"),
            task(
                "t-ends",
                "while [ ! -f go ]; do sleep 0.05; done; exit 7",
                "cpus:0.1;mem:32",
            ),
        ])
        .await;
    master.wait_for_state("t-long", TaskState::Running).await;
    master.wait_for_state("t-ends", TaskState::Running).await;
    let long_pid = master
        .executor_pid("t-long")
        .expect("RUNNING carries the supervisor pid");
    let ends_pid = master
        .executor_pid("t-ends")
        .expect("RUNNING carries the supervisor pid");
    let ends_sandbox = first.sandbox("t-ends").await;
    first.stop().await;

    assert!(
        pid_alive(long_pid),
        "stopping the agent must not kill tasks"
    );
    std::fs::write(Path::new(&ends_sandbox).join("go"), "").expect("signal the task");
    eventually("t-ends ended while no agent ran", || async {
        (!pid_alive(ends_pid)).then_some(())
    })
    .await;

    let registrations_before = master.registrations();
    let second = Node::start(&dir, &master).await;
    let reg = eventually("a second registration", || async {
        let r = master.registrations();
        (r > registrations_before).then(|| master.last_registration())
    })
    .await
    .expect("a registration");
    let reported = reg
        .tasks
        .iter()
        .find(|t| t.launch.task.task_id.as_str() == "t-long")
        .expect("the running task is reported on re-registration");
    assert_eq!(reported.status.state, TaskState::Running);

    let states = master.wait_for_terminal("t-ends").await;
    assert_eq!(states, vec![TaskState::Running, TaskState::Failed]);
    assert_eq!(
        master.last_status("t-ends").and_then(|s| s.exit_code),
        Some(7)
    );

    assert!(pid_alive(long_pid), "the re-adopted task keeps running");
    let state = second.client.agent_state().await.expect("state");
    let long = state
        .frameworks
        .iter()
        .flat_map(|f| &f.executors)
        .flat_map(|e| &e.tasks)
        .find(|t| t.id == "t-long")
        .expect("t-long in /state");
    assert_eq!(long.state, "TASK_RUNNING");

    // The new agent controls the adopted task.
    second
        .client
        .kill(&KillTask {
            framework_id: FrameworkId::new("fw-1"),
            task_id: TaskId::new("t-long"),
            grace_period_secs: Some(1.0),
        })
        .await
        .expect("kill accepted");
    assert_eq!(
        master.wait_for_terminal("t-long").await.last(),
        Some(&TaskState::Killed)
    );
    eventually("the adopted task is gone", || async {
        (!pid_alive(long_pid)).then_some(())
    })
    .await;
    second.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_updates_are_retried_while_the_master_refuses_them_and_none_are_lost() {
    let master = MasterDouble::start().await;
    let dir = temp_dir("retry");
    let node = Node::start(&dir, &master).await;
    master.refuse_statuses(true);
    let ids: Vec<String> = (0..8).map(|i| format!("t-retry-{i}")).collect();
    node.launch(
        ids.iter()
            .map(|id| task(id, "exit 0", "cpus:0.01;mem:8"))
            .collect(),
    )
    .await;
    eventually("the agent retried refused updates", || async {
        let m = node
            .client
            .get_json::<serde_json::Value>("/metrics/snapshot")
            .await
            .ok()?;
        (m["slave/status_update_retries"].as_f64()? >= 8.0).then_some(())
    })
    .await;
    master.refuse_statuses(false);
    for id in &ids {
        assert_eq!(
            master.wait_for_terminal(id).await,
            vec![TaskState::Running, TaskState::Finished],
            "{id}"
        );
    }
    let uuids = master.status_uuids();
    let mut unique = uuids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(uuids.len(), unique.len(), "no update is delivered twice");
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exceeding_the_memory_limit_fails_the_task_with_container_limitation_memory() {
    let master = MasterDouble::start().await;
    let dir = temp_dir("oom");
    let node = Node::start(&dir, &master).await;
    let isolation = node.client.agent_state().await.expect("state").isolation;
    if isolation.starts_with("none") {
        eprintln!("skipping: this host has no usable cgroups ({isolation})");
        node.stop().await;
        return;
    }
    node.launch(vec![task(
        "t-oom",
        "dd if=/dev/zero of=/dev/null bs=200M count=1",
        "cpus:0.5;mem:32",
    )])
    .await;
    let states = master.wait_for_terminal("t-oom").await;
    assert_eq!(states.last(), Some(&TaskState::Failed));
    let last = master.last_status("t-oom").expect("a status");
    assert_eq!(
        last.reason.as_deref(),
        Some("REASON_CONTAINER_LIMITATION_MEMORY"),
        "{last:?}"
    );

    // The task's cgroups are removed once it ended.
    let sandbox = node.sandbox("t-oom").await;
    let run_id = Path::new(&sandbox)
        .file_name()
        .expect("run id")
        .to_string_lossy()
        .into_owned();
    if isolation == "cgroups-v1" {
        let cg = PathBuf::from("/sys/fs/cgroup/memory/basalt-it").join(&run_id);
        eventually("the task's cgroup is removed", || async {
            (!cg.exists()).then_some(())
        })
        .await;
    }
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One raw HTTP/1.1 exchange, so malformed bodies can be sent; returns (status, body).
async fn raw(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("receive");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_json_4xx_and_changes_nothing() {
    let master = MasterDouble::start().await;
    let dir = temp_dir("bad");
    let node = Node::start(&dir, &master).await;
    let outside = dir.join("meta").display().to_string();
    let cases = [
        ("POST", "/internal/launch".to_owned(), "not json"),
        (
            "POST",
            "/internal/launch".to_owned(),
            r#"{"master_id":"m","tasks":"x"}"#,
        ),
        ("POST", "/internal/kill".to_owned(), "{}"),
        (
            "POST",
            "/internal/kill".to_owned(),
            r#"{"framework_id":"f","task_id":"nope"}"#,
        ),
        (
            "POST",
            "/internal/kill".to_owned(),
            r#"{"framework_id":"f","task_id":"t","grace_period_secs":-1}"#,
        ),
        (
            "POST",
            "/internal/teardown".to_owned(),
            r#"{"framework_id":""}"#,
        ),
        ("GET", "/files/read".to_owned(), ""),
        ("GET", "/files/read?path=/etc/passwd".to_owned(), ""),
        ("GET", format!("/files/read?path={outside}"), ""),
        ("GET", "/files/read?path=../meta".to_owned(), ""),
        ("GET", "/files/read?path=/x&offset=-5".to_owned(), ""),
        ("GET", "/files/read?path=/x&offset=abc".to_owned(), ""),
        ("GET", "/files/browse?path=/nonexistent".to_owned(), ""),
        ("GET", "/files/download?path=/etc/passwd".to_owned(), ""),
        ("GET", "/no/such/endpoint".to_owned(), ""),
    ];
    for (method, path, body) in &cases {
        let (status, text) = raw(&node.url, method, path, body).await;
        assert!(
            (400..500).contains(&status),
            "{method} {path} {body}: got {status} {text}"
        );
        let parsed: basalt_api::ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: body {text:?} is not an error body: {e}"));
        assert!(!parsed.message.is_empty());
    }
    let state = node.client.agent_state().await.expect("state");
    assert!(state.frameworks.is_empty() && state.completed_frameworks.is_empty());

    // A well-formed launch of a task the agent cannot run is TASK_ERROR, not a crash.
    let mut invalid = task("t-invalid", "true", "cpus:0.1");
    invalid.task.command = None;
    node.launch(vec![invalid]).await;
    assert_eq!(
        master.wait_for_terminal("t-invalid").await,
        vec![TaskState::Error]
    );
    assert_eq!(
        master.last_status("t-invalid").and_then(|s| s.reason),
        Some("REASON_TASK_INVALID".to_owned())
    );
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
