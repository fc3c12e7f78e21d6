//! Real `basalt` processes on 127.0.0.1 with port 0, temp data dirs and ready files.

#![allow(dead_code)]

use basalt_api::scheduler::{
    Accept, Acknowledge, Call, CallType, EventType, Filters, FrameworkInfo, Operation, SchedulerApi,
};
use basalt_api::task::CommandInfo;
use basalt_api::{Client, FrameworkId, Resources, RoleResources, TaskId, TaskInfo, TaskState};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_basalt")
}

/// Scales every deadline on slow machines. Tests are part of the shell, so they may
/// read the environment.
#[allow(clippy::disallowed_methods)]
pub(crate) fn patience() -> f64 {
    std::env::var("BASALT_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs_f64(n as f64 * patience())
}

/// Polls `probe` with backoff until it says yes; past `deadline` fails naming what it
/// awaited and the probe's last answer.
pub(crate) async fn eventually<F, Fut, T>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut delay = Duration::from_millis(50);
    loop {
        let last = match probe().await {
            Ok(Some(v)) => return v,
            Ok(None) => "not yet".to_owned(),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}; last answer: {last}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("basalt-it-{name}-{}", uuid_like()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{t}", std::process::id())
}

pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) args: Vec<String>,
    pub(crate) ready: PathBuf,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(args: &[String], ready: &Path, log: &Path) -> Proc {
        let _ = std::fs::remove_file(ready);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(bin())
            .args(args)
            .env("BASALT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("spawn basalt");
        Proc {
            child,
            args: args.to_vec(),
            ready: ready.to_owned(),
            log: log.to_owned(),
        }
    }

    pub(crate) async fn ready(&self, key: &str) -> String {
        let path = self.ready.clone();
        let key = key.to_owned();
        let log = self.log.clone();
        eventually(&format!("ready file {}", path.display()), secs(30), || {
            let path = path.clone();
            let key = key.clone();
            let log = log.clone();
            async move {
                match std::fs::read(&path) {
                    Ok(b) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&b).map_err(|e| e.to_string())?;
                        Ok(v.get(&key).and_then(|u| u.as_str()).map(str::to_owned))
                    }
                    Err(_) => Err(std::fs::read_to_string(&log)
                        .unwrap_or_default()
                        .chars()
                        .rev()
                        .take(800)
                        .collect::<String>()
                        .chars()
                        .rev()
                        .collect()),
                }
            }
        })
        .await
    }

    pub(crate) fn signal(&mut self, sig: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn respawn(&mut self) {
        let (args, ready, log) = (self.args.clone(), self.ready.clone(), self.log.clone());
        *self = Proc::spawn(&args, &ready, &log);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host ports per agent in a test cluster.
const AGENT_PORTS: u16 = 300;
/// Agents one port block serves.
const BLOCK_AGENTS: u16 = 4;
/// Blocks between 20000 and 30800: below Linux's ephemeral range (32768-60999, where client
/// sockets would collide) and above the service ports (10000-20000).
const BLOCKS: u16 = 9;
const FIRST_PORT: u16 = 20000;

/// A block of host ports for one cluster's agents, held through a lock file naming this
/// process until the cluster is dropped. Tests run in parallel processes and their tasks
/// bind real ports: two clusters must never offer the same ones.
pub(crate) struct PortBlock {
    pub(crate) base: u16,
    file: PathBuf,
}

impl PortBlock {
    pub(crate) async fn claim() -> PortBlock {
        let dir = std::env::temp_dir().join("basalt-it-ports");
        std::fs::create_dir_all(&dir).expect("port lock dir");
        let me = std::process::id();
        eventually("a free block of agent ports", secs(300), || {
            let dir = dir.clone();
            async move {
                for k in 0..BLOCKS {
                    let file = dir.join(format!("block-{k}"));
                    match std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&file)
                    {
                        Ok(mut f) => {
                            use std::io::Write as _;
                            let _ = write!(f, "{me}");
                            return Ok(Some(PortBlock {
                                base: FIRST_PORT + k * AGENT_PORTS * BLOCK_AGENTS,
                                file,
                            }));
                        }
                        Err(_) => {
                            // A holder that died without dropping its block frees it.
                            let owner = std::fs::read_to_string(&file).unwrap_or_default();
                            let alive = owner
                                .trim()
                                .parse::<u32>()
                                .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
                            if !alive && !owner.trim().is_empty() {
                                let _ = std::fs::remove_file(&file);
                            }
                        }
                    }
                }
                Ok(None)
            }
        })
        .await
    }
}

impl Drop for PortBlock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

pub(crate) struct Cluster {
    pub(crate) ports: PortBlock,
    pub(crate) dir: PathBuf,
    pub(crate) master: Proc,
    pub(crate) master_url: String,
    pub(crate) agents: Vec<Proc>,
    pub(crate) agent_urls: Vec<String>,
}

pub(crate) const MASTER_FLAGS: &[&str] = &[
    "--agent-timeout",
    "3s",
    "--heartbeat-interval",
    "500ms",
    "--allocation-interval",
    "50ms",
    "--agent-reregister-timeout",
    "20s",
];

impl Cluster {
    pub(crate) async fn start(name: &str, agents: usize) -> Cluster {
        let dir = temp_dir(name);
        let mut args: Vec<String> = vec!["master".into(), "--port".into(), "0".into()];
        args.extend([
            "--data-dir".into(),
            dir.join("master").display().to_string(),
        ]);
        args.extend([
            "--ready-file".into(),
            dir.join("master.ready").display().to_string(),
        ]);
        args.extend(MASTER_FLAGS.iter().map(|s| s.to_string()));
        let master = Proc::spawn(&args, &dir.join("master.ready"), &dir.join("master.log"));
        let master_url = master.ready("master").await;
        // Later restarts must come back on the same port: agents know this URL.
        let port = master_url.rsplit(':').next().unwrap_or("0").to_owned();
        let mut m = master;
        m.args[2] = port;
        assert!(
            agents <= BLOCK_AGENTS as usize,
            "a port block serves {BLOCK_AGENTS} agents"
        );
        let mut c = Cluster {
            ports: PortBlock::claim().await,
            dir,
            master: m,
            master_url,
            agents: Vec::new(),
            agent_urls: Vec::new(),
        };
        for i in 0..agents {
            c.add_agent(i).await;
        }
        let want = agents;
        let client = c.client();
        eventually("all agents registered", secs(30), || {
            let client = client.clone();
            async move {
                let s = client.slaves().await.map_err(|e| e.to_string())?;
                Ok((s.slaves.iter().filter(|a| a.active).count() == want).then_some(()))
            }
        })
        .await;
        c
    }

    async fn add_agent(&mut self, i: usize) {
        let d = self.dir.join(format!("agent{i}"));
        let args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            self.master_url.clone(),
            "--port".into(),
            "0".into(),
            "--hostname".into(),
            format!("agent-{i}.test"),
            "--data-dir".into(),
            d.display().to_string(),
            "--resources".into(),
            // Agents share this machine's ports, so each gets its own range.
            format!(
                "cpus:4;mem:4096;disk:1000;ports:[{}-{}]",
                usize::from(self.ports.base) + i * usize::from(AGENT_PORTS),
                usize::from(self.ports.base)
                    + i * usize::from(AGENT_PORTS)
                    + usize::from(AGENT_PORTS)
                    - 1
            ),
            "--attributes".into(),
            format!("rack:r{}", i % 2),
            "--kill-grace-period".into(),
            "1s".into(),
            "--ready-file".into(),
            self.dir
                .join(format!("agent{i}.ready"))
                .display()
                .to_string(),
        ];
        let p = Proc::spawn(
            &args,
            &self.dir.join(format!("agent{i}.ready")),
            &self.dir.join(format!("agent{i}.log")),
        );
        let url = p.ready("agent").await;
        // A restarted agent must keep its port so the master's record of it stays true.
        let mut p = p;
        p.args[4] = url.rsplit(':').next().unwrap_or("0").to_owned();
        self.agents.push(p);
        self.agent_urls.push(url);
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.master_url)
    }

    pub(crate) async fn restart_master(&mut self) {
        self.master.kill9();
        self.master.respawn();
        let url = self.master.ready("master").await;
        assert_eq!(url, self.master_url, "master came back on its port");
    }

    pub(crate) async fn restart_agent(&mut self, i: usize) {
        self.agents[i].kill9();
        self.agents[i].respawn();
        self.agents[i].ready("agent").await;
    }

    pub(crate) async fn task_states(&self) -> HashMap<String, (String, String)> {
        match self.client().master_state().await {
            Ok(s) => s
                .all_tasks()
                .map(|t| (t.id.clone(), (t.state.clone(), t.slave_id.clone())))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Tasks run in their own sessions and outlive agents by design: clean them up.
        for a in &mut self.agents {
            a.kill9();
        }
        kill_processes_under(&self.dir);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A minimal framework over the HTTP scheduler API that launches shell tasks and records
/// the states it is told.
pub(crate) struct TestFramework {
    pub(crate) client: Client,
    pub(crate) id: FrameworkId,
    pub(crate) stream: String,
    pub(crate) states: Arc<Mutex<HashMap<String, basalt_api::TaskStatus>>>,
    queue: Arc<Mutex<Vec<(String, String, Resources)>>>,
    pub(crate) per_offer: usize,
    task: tokio::task::JoinHandle<()>,
    /// While set, updates are recorded but not acknowledged (`release_acks` sends them).
    hold: Arc<Mutex<Option<Vec<Acknowledge>>>>,
}

impl TestFramework {
    pub(crate) async fn start(
        client: Client,
        name: &str,
        id: Option<FrameworkId>,
        per_offer: usize,
    ) -> TestFramework {
        let info = FrameworkInfo {
            name: name.into(),
            id,
            failover_timeout: 600.0,
            checkpoint: true,
            ..Default::default()
        };
        let sub = client.subscribe(info).await.expect("subscribe");
        let states: Arc<Mutex<HashMap<String, basalt_api::TaskStatus>>> = Arc::default();
        let queue: Arc<Mutex<Vec<(String, String, Resources)>>> = Arc::default();
        let (id, stream) = (sub.framework_id.clone(), sub.stream_id.clone());
        let hold: Arc<Mutex<Option<Vec<Acknowledge>>>> = Arc::default();
        let task = tokio::spawn(run_framework(
            client.clone(),
            sub,
            states.clone(),
            queue.clone(),
            per_offer,
            hold.clone(),
        ));
        TestFramework {
            client,
            id,
            stream,
            states,
            queue,
            per_offer,
            task,
            hold,
        }
    }

    /// Stops acknowledging updates until `release_acks`.
    pub(crate) fn hold_acks(&self) {
        *self.hold.lock().expect("hold") = Some(Vec::new());
    }

    /// Acknowledges what was held back, and everything from now on.
    pub(crate) async fn release_acks(&self) {
        let held = self.hold.lock().expect("hold").take().unwrap_or_default();
        for a in held {
            let mut call = Call::new(Some(self.id.clone()), CallType::Acknowledge);
            call.acknowledge = Some(a);
            let _ = self.client.call(&self.stream, call).await;
        }
    }

    pub(crate) fn launch(&self, id: &str, cmd: &str, cpus: f64, mem: f64) {
        self.queue
            .lock()
            .expect("queue")
            .push((id.into(), cmd.into(), Resources::new(cpus, mem)));
    }

    /// Launches with exact resources (ports included).
    pub(crate) fn launch_res(&self, id: &str, cmd: &str, res: Resources) {
        self.queue
            .lock()
            .expect("queue")
            .push((id.into(), cmd.into(), res));
    }

    pub(crate) fn state(&self, id: &str) -> Option<TaskState> {
        self.states.lock().expect("states").get(id).map(|s| s.state)
    }

    pub(crate) fn status(&self, id: &str) -> Option<basalt_api::TaskStatus> {
        self.states.lock().expect("states").get(id).cloned()
    }

    pub(crate) async fn call(&self, call: Call) {
        self.client
            .call(&self.stream, call)
            .await
            .expect("call accepted");
    }

    pub(crate) fn stop(self) {
        self.task.abort();
    }
}

async fn run_framework(
    client: Client,
    mut sub: basalt_api::scheduler::Subscription,
    states: Arc<Mutex<HashMap<String, basalt_api::TaskStatus>>>,
    queue: Arc<Mutex<Vec<(String, String, Resources)>>>,
    per_offer: usize,
    hold: Arc<Mutex<Option<Vec<Acknowledge>>>>,
) {
    let fw = sub.framework_id.clone();
    while let Some(ev) = sub.events.recv().await {
        match ev.kind {
            EventType::Offers => {
                for o in ev.offers.map(|o| o.offers).unwrap_or_default() {
                    let mut left = RoleResources::from_wire(&o.resources)
                        .map(|r| r.total())
                        .unwrap_or_default();
                    let mut tasks = Vec::new();
                    {
                        let mut q = queue.lock().expect("queue");
                        while tasks.len() < per_offer && !q.is_empty() && left.contains(&q[0].2) {
                            let (id, cmd, res) = q.remove(0);
                            left = left.sub(&res);
                            // Marathon style: `web.1` is an instance of `web`.
                            let name = id.split('.').next().unwrap_or(&id).to_owned();
                            tasks.push(TaskInfo {
                                name,
                                task_id: TaskId::new(id),
                                agent_id: o.agent_id.clone(),
                                resources: res.to_wire("*"),
                                command: Some(CommandInfo {
                                    value: Some(cmd),
                                    shell: true,
                                    ..Default::default()
                                }),
                                container: None,
                                health_check: None,
                                kill_policy: None,
                                labels: None,
                                discovery: None,
                                data: None,
                            });
                        }
                    }
                    let mut call = Call::new(Some(fw.clone()), CallType::Accept);
                    call.accept = Some(Accept {
                        offer_ids: vec![o.id.clone()],
                        operations: if tasks.is_empty() {
                            vec![]
                        } else {
                            vec![Operation::launch(tasks)]
                        },
                        filters: Some(Filters {
                            refuse_seconds: Some(0.2),
                        }),
                    });
                    let _ = client.call(&sub.stream_id, call).await;
                }
            }
            EventType::Update => {
                if let Some(u) = ev.update {
                    let st = u.status;
                    if let (Some(uuid), Some(agent)) = (st.uuid.clone(), st.agent_id.clone()) {
                        let a = Acknowledge {
                            agent_id: agent,
                            task_id: st.task_id.clone(),
                            uuid,
                        };
                        let held = match hold.lock().expect("hold").as_mut() {
                            Some(h) => {
                                h.push(a.clone());
                                true
                            }
                            None => false,
                        };
                        if !held {
                            let mut call = Call::new(Some(fw.clone()), CallType::Acknowledge);
                            call.acknowledge = Some(a);
                            let _ = client.call(&sub.stream_id, call).await;
                        }
                    }
                    states
                        .lock()
                        .expect("states")
                        .insert(st.task_id.to_string(), st);
                }
            }
            _ => {}
        }
    }
}

/// Kills every process whose working directory is under `dir` (tasks run in sandboxes
/// there, in their own sessions).
pub(crate) fn kill_processes_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(e.path().join("cwd"))
            && cwd.starts_with(dir)
        {
            // SAFETY: plain kill(2) on a pid we just looked up.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// A JSON request; the status and the JSON body (null when there is none).
pub(crate) async fn send(
    method: reqwest::Method,
    url: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// GET `url` as JSON (the test fails on any error).
pub(crate) async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .expect("GET")
        .json()
        .await
        .expect("json")
}

/// The real dcos CLI's venv, made by scripts/test.sh.
#[allow(clippy::disallowed_methods)]
pub(crate) fn dcos_cli() -> String {
    let p = std::env::var("BASALT_DCOS_CLI").unwrap_or_else(|_| {
        format!(
            "{}/.cache/basalt/venv-dcoscli/bin/dcos",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        std::path::Path::new(&p).exists(),
        "the dcos CLI is not installed at {p}: run `bash scripts/test.sh` (it makes the venv)"
    );
    p
}

/// A TCP port nobody listens on right now, for a server a test starts itself.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}
