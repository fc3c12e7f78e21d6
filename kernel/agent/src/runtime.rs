//! The agent's shared state and the life of each task: launch under a supervisor, watch
//! for its end, kill, recover after a restart.

mod launch;
mod view;

pub(crate) use launch::Plan;
pub(crate) use view::{metrics, state_view};

use crate::cgroups::{self, Isolation};
use crate::checkpoint::{self, Layout, Proc, TaskRecord};
use crate::config::{CgroupsMode, Config};
use crate::error::Error;
use crate::supervisor::{self, Exit};
use crate::updates::{self, Journal, Queues};
use crate::{Deps, http, master};
use basalt_api::task::{
    ContainerStatus, IpAddress, NetworkInfo, TaskLaunch, TaskStatus, reason, source,
};
use basalt_api::{AgentId, ExecutorId, FrameworkId, RoleResources, TaskId, TaskState};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) type TaskKey = (FrameworkId, TaskId);

/// Completed tasks kept for `/state`.
const COMPLETED_KEPT: usize = 1000;
/// Statuses kept per task for `/state`.
const STATUSES_KEPT: usize = 16;
/// Concurrent status update requests to the master.
const MAX_CONCURRENT_SENDS: usize = 256;
/// How often a supervisor is polled when pidfds are unavailable.
const POLL_EXIT: Duration = Duration::from_millis(250);
/// Root of the cgroup hierarchies.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Who the master knows us as right now; `epoch` counts registrations.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registration {
    pub(crate) id: Option<AgentId>,
    pub(crate) epoch: u64,
}

#[derive(Default)]
pub(crate) struct Metrics {
    acked: AtomicU64,
    retried: AtomicU64,
}

impl Metrics {
    pub(crate) fn acked(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Agent {
    pub(crate) config: Config,
    pub(crate) layout: Layout,
    pub(crate) isolation: Isolation,
    pub(crate) resources: RoleResources,
    pub(crate) master: basalt_api::Client,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) port: u16,
    pub(crate) registration: watch::Sender<Registration>,
    /// The id we last had (checkpointed), offered when registering again.
    pub(crate) last_id: Mutex<Option<AgentId>>,
    pub(crate) journal: Journal,
    pub(crate) queues: Queues,
    pub(crate) sends: tokio::sync::Semaphore,
    /// Frameworks' acknowledgements the master relayed, not yet taken by their sender.
    pub(crate) relayed: crate::updates::Relayed,
    /// Launches being prepared and forked at once. Each fork copies the agent's page
    /// tables; hundreds at once thrash the machine and make every one slow, so a
    /// burst goes through a few at a time (each still takes under a millisecond).
    pub(crate) launching: tokio::sync::Semaphore,
    /// The small process that forks supervisors, when there is one.
    pub(crate) launcher: Option<crate::launcher::Launcher>,
    pub(crate) metrics: Metrics,
    pub(crate) started_at: f64,
    table: Mutex<Table>,
}

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) live: BTreeMap<TaskKey, Entry>,
    pub(crate) completed: VecDeque<Done>,
    pub(crate) terminal_counts: HashMap<TaskState, u64>,
    pub(crate) launched: u64,
}

/// A task the agent runs or whose terminal status the master has not acknowledged yet.
pub(crate) struct Entry {
    pub(crate) record: TaskRecord,
    pub(crate) state: TaskState,
    pub(crate) statuses: Vec<TaskStatus>,
    /// Its launch is well-formed (so it can be reported when registering).
    pub(crate) valid: bool,
    /// It has a record on disk.
    pub(crate) checkpointed: bool,
    kill_started: bool,
    pub(crate) exited: watch::Sender<bool>,
    record_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A task whose end the master acknowledged, kept for `/state`.
pub(crate) struct Done {
    pub(crate) record: TaskRecord,
    pub(crate) state: TaskState,
    pub(crate) statuses: Vec<TaskStatus>,
}

pub(crate) fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Agent {
    pub(crate) fn table(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding the lock; if something did, the data is still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}:{}", self.config.advertise_ip, self.port)
    }

    /// The id to put in sandboxes and statuses: the current one, else the last one known.
    pub(crate) fn agent_id(&self) -> Option<AgentId> {
        self.registration
            .borrow()
            .id
            .clone()
            .or_else(|| self.last_id.lock().ok().and_then(|l| l.clone()))
    }

    /// A sender saw the master forget us during registration `epoch`.
    pub(crate) fn need_reregistration(&self, epoch: u64) {
        self.registration.send_if_modified(|r| {
            if r.epoch == epoch && r.id.is_some() {
                r.id = None;
                true
            } else {
                false
            }
        });
    }

    fn status(&self, record: &TaskRecord, state: TaskState) -> TaskStatus {
        let mut s = TaskStatus::new(record.launch.task.task_id.clone(), state, now_secs())
            .with_source(source::EXECUTOR);
        s.agent_id = Some(record.agent_id.clone());
        s.executor_id = Some(ExecutorId::new(record.launch.task.task_id.as_str()));
        s
    }
}

/// Records `status` as the task's latest and queues it for the master.
async fn submit(agent: &Arc<Agent>, key: &TaskKey, status: TaskStatus) {
    {
        let mut t = agent.table();
        let t = &mut *t;
        if let Some(e) = t.live.get_mut(key) {
            e.state = status.state;
            e.statuses.push(status.clone());
            if e.statuses.len() > STATUSES_KEPT {
                e.statuses.remove(0);
            }
        }
        if status.state.is_terminal() {
            *t.terminal_counts.entry(status.state).or_default() += 1;
        }
    }
    tracing::info!(task_id = %key.1, framework_id = %key.0, state = %status.state, message = status.message.as_deref().unwrap_or(""), "task status");
    updates::submit(agent, key.clone(), status).await;
}

/// Writes a task's record as it is now; records of one task are written in order.
async fn persist(agent: &Arc<Agent>, key: &TaskKey, durable: bool) {
    let Some(lock) = agent.table().live.get(key).map(|e| e.record_lock.clone()) else {
        return;
    };
    let _g = lock.lock().await;
    let Some(rec) = agent
        .table()
        .live
        .get(key)
        .filter(|e| e.checkpointed)
        .map(|e| e.record.clone())
    else {
        return;
    };
    let layout = agent.layout.clone();
    let written =
        tokio::task::spawn_blocking(move || checkpoint::write_record(&layout, &rec, durable)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(task_id = %key.1, framework_id = %key.0, error = %e, "cannot checkpoint task")
        }
        Err(e) => tracing::error!(task_id = %key.1, error = %e, "checkpoint writer failed"),
    }
}

/// The master acknowledged `status`: remember it, and forget a finished task.
pub(crate) async fn acknowledged(agent: &Arc<Agent>, key: &TaskKey, status: &TaskStatus) {
    let (terminal, lock, checkpointed) = {
        let mut t = agent.table();
        let Some(e) = t.live.get_mut(key) else { return };
        e.record.acked = Some(status.clone());
        (
            status.state.is_terminal() && e.state.is_terminal(),
            e.record_lock.clone(),
            e.checkpointed,
        )
    };
    if !terminal {
        persist(agent, key, false).await;
        return;
    }
    let _g = lock.lock().await;
    let mut exit = None;
    {
        let mut t = agent.table();
        if let Some(e) = t.live.remove(key) {
            exit = Some(e.record.exit_path(&agent.layout));
            t.completed.push_back(Done {
                record: e.record,
                state: e.state,
                statuses: e.statuses,
            });
            while t.completed.len() > COMPLETED_KEPT {
                t.completed.pop_front();
            }
        }
    }
    if checkpointed && let Some(exit) = exit {
        let layout = agent.layout.clone();
        let (fw, task) = key.clone();
        let _ = tokio::task::spawn_blocking(move || {
            checkpoint::remove_task(&layout, &fw, &task, &exit)
        })
        .await;
    }
}

// ------------------------------------------------------------------------ serve

pub(crate) async fn serve(config: Config, deps: Deps) -> Result<(), Error> {
    config.validate()?;
    let resources = config.total_resources()?;
    let layout = Layout {
        work_dir: config.work_dir.clone(),
    };
    for d in [layout.meta(), layout.exits_dir(), layout.sandboxes()] {
        tokio::fs::create_dir_all(&d).await.map_err(Error::io(&d))?;
    }
    let port = deps.http.local_addr().map_err(Error::Http)?.port();
    let stop = deps.shutdown.child_token();

    let (mode, name) = (config.cgroups, config.cgroup_name.clone());
    let isolation =
        tokio::task::spawn_blocking(move || Isolation::detect(mode, Path::new(CGROUP_ROOT), &name))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
    if let Isolation::None(why) = &isolation
        && mode == CgroupsMode::Auto
    {
        tracing::warn!(reason = %why, "tasks run without cgroup isolation");
    }

    let l = layout.clone();
    let (last_id, pending, records) = tokio::task::spawn_blocking(move || {
        let id = checkpoint::read_agent_id(&l).map_err(Error::io(l.agent_id_file()))?;
        let pending = updates::replay(&l.journal()).map_err(Error::io(l.journal()))?;
        let records = checkpoint::read_records(&l).map_err(Error::io(l.records_dir()))?;
        Ok::<_, Error>((id, pending, records))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;

    let tracker = TaskTracker::new();
    let journal_path = layout.journal();
    let journal = Journal::open(journal_path.clone(), &pending, &tracker, stop.clone())
        .map_err(Error::io(journal_path))?;
    let launcher = config.launcher.as_ref().and_then(|exe| {
        crate::launcher::Launcher::start(exe)
            .map_err(
                |e| tracing::warn!(error = %e, "no task launcher; the agent forks tasks itself"),
            )
            .ok()
    });
    let agent = Arc::new(Agent {
        launcher,
        isolation,
        resources,
        master: deps.master,
        tracker: tracker.clone(),
        shutdown: stop.clone(),
        port,
        registration: watch::Sender::new(Registration::default()),
        last_id: Mutex::new(last_id.clone()),
        journal,
        queues: Queues::default(),
        sends: tokio::sync::Semaphore::new(MAX_CONCURRENT_SENDS),
        relayed: Default::default(),
        launching: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
        ),
        metrics: Metrics::default(),
        started_at: now_secs(),
        table: Mutex::new(Table::default()),
        layout,
        config,
    });
    tracing::info!(agent_id = ?last_id, isolation = %agent.isolation.describe(), tasks = records.len(), pending_updates = pending.len(), "agent starting");

    recover(&agent, records, &pending).await;
    updates::requeue(&agent, pending);

    tracker.spawn(master::run(agent.clone()));
    let app = http::router(agent.clone());
    let served = axum::serve(deps.http, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await;
    // However the server ended, everything else stops with it.
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("agent stopped; tasks left running");
    served.map_err(Error::Http)
}

// ----------------------------------------------------------------------- launch

/// Accepts one task from the master; the work happens in the background.
pub(crate) fn launch(agent: &Arc<Agent>, launch: TaskLaunch) {
    let key: TaskKey = (launch.framework_id.clone(), launch.task.task_id.clone());
    let plan = Plan::of(&launch);
    let agent_id = agent
        .agent_id()
        .unwrap_or_else(|| AgentId::new("unregistered"));
    let run_id = uuid::Uuid::new_v4().to_string();
    let exit_file = agent.layout.exit_file(&run_id);
    let ids_safe =
        checkpoint::safe_component(key.0.as_str()) && checkpoint::safe_component(key.1.as_str());
    let sandbox = if ids_safe && plan.is_ok() {
        agent
            .layout
            .runs_dir(&agent_id, &key.0, &key.1)
            .join(&run_id)
    } else {
        Default::default()
    };
    let record = TaskRecord {
        launch,
        agent_id,
        run_id,
        sandbox,
        cgroups: Vec::new(),
        started_at: now_secs(),
        supervisor: None,
        task: None,
        killing: false,
        kill_grace_secs: None,
        acked: None,
        exit_file: Some(exit_file),
    };
    let plan = match plan {
        Ok(p) if ids_safe => Ok(p),
        Ok(_) => Err("framework and task ids must not be '.' or '..'".to_owned()),
        Err(e) => Err(e),
    };
    {
        let mut t = agent.table();
        if let Some(existing) = t.live.get(&key) {
            tracing::debug!(task_id = %key.1, framework_id = %key.0, state = %existing.state, "duplicate launch ignored");
            return;
        }
        t.launched += 1;
        t.live.insert(
            key.clone(),
            Entry {
                record,
                state: TaskState::Staging,
                statuses: Vec::new(),
                valid: plan.is_ok(),
                checkpointed: false,
                kill_started: false,
                exited: watch::Sender::new(false),
                record_lock: Arc::new(tokio::sync::Mutex::new(())),
            },
        );
    }
    let a = agent.clone();
    agent.tracker.spawn(async move {
        match plan {
            Ok(plan) => run_new(a, key, plan).await,
            Err(why) => {
                let rec = a.table().live.get(&key).map(|e| e.record.clone());
                if let Some(rec) = rec {
                    let st = a
                        .status(&rec, TaskState::Error)
                        .with_reason(reason::TASK_INVALID)
                        .with_message(why)
                        .with_source(source::AGENT);
                    submit(&a, &key, st).await;
                }
            }
        }
    });
}

/// A launch that ends before its command starts: what was prepared is released, the
/// cgroups go, and the agent reports `st`.
async fn abandon_launch(
    agent: &Arc<Agent>,
    key: &TaskKey,
    rec: &TaskRecord,
    prepared: Option<supervisor::Prepared>,
    st: TaskStatus,
) {
    let dirs = rec.cgroups.clone();
    let _ = tokio::task::spawn_blocking(move || {
        drop(prepared);
        cgroups::destroy(&dirs)
    })
    .await;
    submit(agent, key, st.with_source(source::AGENT)).await;
}

/// Prepares, starts and watches a freshly launched task.
async fn run_new(agent: Arc<Agent>, key: TaskKey, plan: Plan) {
    let permit = tokio::select! {
        p = agent.launching.acquire() => p.ok(),
        _ = agent.shutdown.cancelled() => return,
    };
    let Some(mut rec) = agent.table().live.get(&key).map(|e| e.record.clone()) else {
        return;
    };
    let a = agent.clone();
    let uris = plan.uris.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let r = launch::prepare(&a, &mut rec, &plan);
        (rec, r)
    })
    .await;
    let (rec, prepared) = match prepared {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(task_id = %key.1, error = %e, "task preparation failed");
            return;
        }
    };
    let mut killed_early = false;
    {
        let mut t = agent.table();
        if let Some(e) = t.live.get_mut(&key) {
            e.record.cgroups = rec.cgroups.clone();
            // prepare() writes the record last, so success means it is on disk.
            e.checkpointed = prepared.is_ok();
            killed_early = e.record.killing;
        }
    }
    let prepared = match prepared {
        Ok(p) => p,
        Err(why) => {
            let st = agent
                .status(&rec, TaskState::Failed)
                .with_reason(reason::CONTAINER_LAUNCH_FAILED)
                .with_message(why);
            abandon_launch(&agent, &key, &rec, None, st).await;
            return;
        }
    };
    if killed_early {
        let st = agent
            .status(&rec, TaskState::Killed)
            .with_reason(reason::TASK_KILLED_DURING_LAUNCH)
            .with_message("Killed before it started");
        abandon_launch(&agent, &key, &rec, Some(prepared), st).await;
        return;
    }
    let permit = if uris.is_empty() {
        permit
    } else {
        // Downloads can be slow: other launches go on meanwhile. A kill or the agent's
        // shutdown ends the fetch (dropping it stops the download and any extractor).
        drop(permit);
        let killed = {
            let agent = agent.clone();
            let key = key.clone();
            async move {
                loop {
                    let k = agent
                        .table()
                        .live
                        .get(&key)
                        .is_none_or(|e| e.record.killing);
                    if k {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
        let fetched = tokio::select! {
            biased;
            _ = agent.shutdown.cancelled() => return,
            _ = killed => Err(None),
            r = crate::fetcher::fetch_all(&uris, &rec.sandbox, crate::fetcher::http()) => {
                r.map_err(Some)
            }
        };
        let permit = match fetched {
            Ok(()) => tokio::select! {
                biased;
                _ = agent.shutdown.cancelled() => return,
                p = agent.launching.acquire() => p.ok(),
            },
            Err(why) => {
                let st = match why {
                    Some(why) => agent
                        .status(&rec, TaskState::Failed)
                        .with_reason(reason::CONTAINER_LAUNCH_FAILED)
                        .with_message(why),
                    None => agent
                        .status(&rec, TaskState::Killed)
                        .with_reason(reason::TASK_KILLED_DURING_LAUNCH)
                        .with_message("Killed while its URIs were being fetched"),
                };
                abandon_launch(&agent, &key, &rec, Some(prepared), st).await;
                return;
            }
        };
        // A kill that came in after the fetch still keeps the command from starting.
        if agent
            .table()
            .live
            .get(&key)
            .is_none_or(|e| e.record.killing)
        {
            let st = agent
                .status(&rec, TaskState::Killed)
                .with_reason(reason::TASK_KILLED_DURING_LAUNCH)
                .with_message("Killed before it started");
            abandon_launch(&agent, &key, &rec, Some(prepared), st).await;
            return;
        }
        permit
    };
    let a2 = agent.clone();
    let spawned = tokio::task::spawn_blocking(move || {
        let (r, ours) = match a2.launcher.as_ref().map(|l| l.spawn(&prepared)) {
            Some(Ok(Some(s))) => (Ok(s), false),
            Some(Err(e)) => (Err(e), false),
            // No launcher, or it is gone: fork here.
            _ => (supervisor::spawn(&prepared), true),
        };
        let procs = r
            .as_ref()
            .ok()
            .map(|s| (Proc::of(s.supervisor), Proc::of(s.task)));
        (r, procs, ours)
    })
    .await;
    let (spawned, procs, own_child) = match spawned {
        Ok((Ok(s), procs, ours)) => (s, procs.unwrap_or((None, None)), ours),
        Ok((Err(e), _, _)) => {
            let st = agent
                .status(&rec, TaskState::Failed)
                .with_reason(reason::CONTAINER_LAUNCH_FAILED)
                .with_message(format!("Failed to launch the task: {e}"));
            abandon_launch(&agent, &key, &rec, None, st).await;
            return;
        }
        Err(e) => {
            tracing::error!(task_id = %key.1, error = %e, "task spawn failed");
            return;
        }
    };
    // Started: the next launch may fork.
    drop(permit);
    // Our own child is at least a zombie until we reap it, so its stat is readable.
    let sup = procs.0.unwrap_or(Proc {
        pid: spawned.supervisor,
        start_ticks: 0,
    });
    let (kill_now, killing) = {
        let mut t = agent.table();
        match t.live.get_mut(&key) {
            Some(e) => {
                e.record.supervisor = Some(sup);
                e.record.task = procs.1.or(Some(Proc {
                    pid: spawned.task,
                    start_ticks: 0,
                }));
                let k = e.record.killing && !e.kill_started;
                if k {
                    e.kill_started = true;
                }
                (k, e.record.killing)
            }
            None => (false, false),
        }
    };
    persist(&agent, &key, false).await;

    if spawned.exec_errno != 0 {
        if !wait_exit(sup, own_child, &agent.shutdown).await {
            return;
        }
        let err = std::io::Error::from_raw_os_error(spawned.exec_errno);
        finish(
            &agent,
            &key,
            Some(format!("Failed to execute the command: {err}")),
        )
        .await;
        return;
    }

    let mut running = agent.status(&rec, TaskState::Running);
    running.container_status = Some(ContainerStatus {
        network_infos: vec![NetworkInfo {
            ip_addresses: vec![IpAddress {
                protocol: Some("IPv4".into()),
                ip_address: agent.config.advertise_ip.clone(),
            }],
        }],
        executor_pid: u32::try_from(spawned.supervisor).ok(),
    });
    // Already being killed: KILLING went out, RUNNING after it would read as a revival.
    if !killing {
        submit(&agent, &key, running).await;
        start_health_checks(&agent, &key);
    }
    if kill_now {
        start_kill(&agent, &key);
    }
    if wait_exit(sup, own_child, &agent.shutdown).await {
        finish(&agent, &key, None).await;
    }
}

/// The supervisor is gone: read how the task ended, clean up, report it.
async fn finish(agent: &Arc<Agent>, key: &TaskKey, launch_error: Option<String>) {
    let Some(rec) = agent.table().live.get(key).map(|e| e.record.clone()) else {
        return;
    };
    let exit_path = rec.exit_path(&agent.layout);
    let dirs = rec.cgroups.clone();
    let task = rec.task;
    let read = tokio::task::spawn_blocking(move || {
        let exit = checkpoint::read_exit(&exit_path);
        let oom = cgroups::oom_killed(&dirs)
            || (matches!(exit, Some(Exit::Signal(libc::SIGKILL)))
                && cgroups::hit_memory_limit(&dirs));
        if exit.is_none() {
            // The supervisor died without recording anything: the task may still run.
            // Only a verified start time proves the pid is still the task's.
            if let Some(t) = task.filter(|t| t.start_ticks != 0 && t.alive()) {
                // SAFETY: signalling the task's own process group.
                unsafe { libc::kill(-t.pid, libc::SIGKILL) };
            }
        }
        cgroups::destroy(&dirs);
        (exit, oom)
    })
    .await;
    let (exit, oom) = read.unwrap_or((None, false));
    if let Some(e) = agent.table().live.get(key) {
        e.exited.send_replace(true);
    }
    let mut st = match (launch_error, exit) {
        (Some(msg), _) => agent
            .status(&rec, TaskState::Failed)
            .with_reason(reason::CONTAINER_LAUNCH_FAILED)
            .with_message(msg)
            .with_source(source::AGENT),
        (None, _) if rec.killing => {
            let mut s = agent.status(&rec, TaskState::Killed).with_message("Command killed");
            if let Some(e) = exit {
                s.message = Some(format!("Command killed: {}", e.message()));
            }
            s
        }
        (None, Some(e)) if oom => agent
            .status(&rec, TaskState::Failed)
            .with_reason(reason::CONTAINER_LIMITATION_MEMORY)
            .with_message(format!("Memory limit exceeded: {}", e.message())),
        (None, None) if oom => agent
            .status(&rec, TaskState::Failed)
            .with_reason(reason::CONTAINER_LIMITATION_MEMORY)
            .with_message("Memory limit exceeded"),
        (None, Some(Exit::Code(0))) => agent.status(&rec, TaskState::Finished).with_message("Command exited with status 0"),
        (None, Some(e)) => agent
            .status(&rec, TaskState::Failed)
            .with_reason(reason::COMMAND_EXECUTOR_FAILED)
            .with_message(e.message()),
        (None, None) => agent
            .status(&rec, TaskState::Failed)
            .with_reason(reason::EXECUTOR_TERMINATED)
            .with_message("Abnormal executor termination: the task's supervisor ended without recording its exit")
            .with_source(source::AGENT),
    };
    st.exit_code = exit.map(Exit::code);
    submit(agent, key, st).await;
}

// ------------------------------------------------------------------------- health

/// Starts the task's health checks, if it has any. A malformed check is logged and
/// ignored: the task itself is fine.
fn start_health_checks(agent: &Arc<Agent>, key: &TaskKey) {
    let spec = agent
        .table()
        .live
        .get(key)
        .and_then(|e| e.record.launch.task.health_check.clone());
    let Some(spec) = spec else { return };
    match crate::health::Spec::parse(&spec) {
        Ok(spec) => crate::health::watch(agent, key.clone(), spec),
        Err(e) => tracing::warn!(task_id = %key.1, error = %e, "ignoring the task's health check"),
    }
}

/// Sends a health change as a `TASK_RUNNING` update; false once the task is no longer
/// running (or is being killed), which ends its checks.
pub(crate) async fn report_health(agent: &Arc<Agent>, key: &TaskKey, healthy: bool) -> bool {
    let rec = {
        let t = agent.table();
        match t.live.get(key) {
            Some(e) if e.state == TaskState::Running && !e.record.killing => e.record.clone(),
            _ => return false,
        }
    };
    let mut st = agent
        .status(&rec, TaskState::Running)
        .with_reason(reason::TASK_HEALTH_CHECK_STATUS_UPDATED);
    st.healthy = Some(healthy);
    submit(agent, key, st).await;
    true
}

/// Kills a task whose health checks failed too often in a row (Mesos does the same).
pub(crate) async fn kill_unhealthy(agent: &Arc<Agent>, key: &TaskKey) {
    let _ = kill(agent, key, None).await;
}

// ------------------------------------------------------------------------- kill

#[derive(Debug)]
pub(crate) enum KillError {
    Unknown,
}

/// Starts killing a task: TASK_KILLING now, SIGTERM, SIGKILL after the grace period,
/// TASK_KILLED when it is gone.
pub(crate) async fn kill(
    agent: &Arc<Agent>,
    key: &TaskKey,
    grace_secs: Option<f64>,
) -> Result<(), KillError> {
    let (start, rec) = {
        let mut t = agent.table();
        let e = t.live.get_mut(key).ok_or(KillError::Unknown)?;
        if e.state.is_terminal() || e.record.killing {
            return Ok(());
        }
        e.record.killing = true;
        e.record.kill_grace_secs = grace_secs;
        let start = e.record.task.is_some() && !e.kill_started;
        if start {
            e.kill_started = true;
        }
        (start, e.record.clone())
    };
    tracing::info!(task_id = %key.1, framework_id = %key.0, "killing task");
    persist(agent, key, false).await;
    submit(agent, key, agent.status(&rec, TaskState::Killing)).await;
    if start {
        start_kill(agent, key);
    }
    Ok(())
}

/// Kill grace: the task's kill policy, else the request's, else the configured default.
fn grace(agent: &Agent, rec: &TaskRecord) -> Duration {
    let policy = rec
        .launch
        .task
        .kill_policy
        .and_then(|k| k.grace_period)
        .map(|g| Duration::from_nanos(g.nanoseconds.max(0) as u64));
    let requested = rec
        .kill_grace_secs
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)));
    policy
        .or(requested)
        .unwrap_or(agent.config.kill_grace_period)
}

fn start_kill(agent: &Arc<Agent>, key: &TaskKey) {
    let Some((rec, mut exited)) = agent
        .table()
        .live
        .get(key)
        .map(|e| (e.record.clone(), e.exited.subscribe()))
    else {
        return;
    };
    let Some(task) = rec.task else { return };
    let grace = grace(agent, &rec);
    let shutdown = agent.shutdown.clone();
    let key = key.clone();
    agent.tracker.spawn(async move {
        if *exited.borrow() {
            return;
        }
        // SAFETY: signalling the task's own process group (it leads it).
        unsafe { libc::kill(-task.pid, libc::SIGTERM) };
        tokio::select! {
            _ = exited.wait_for(|e| *e) => return,
            _ = tokio::time::sleep(grace) => {}
            // A restarted agent resumes the kill from its checkpoint.
            _ = shutdown.cancelled() => return,
        }
        tracing::info!(task_id = %key.1, "grace period over; sending SIGKILL");
        // SAFETY: as above.
        unsafe { libc::kill(-task.pid, libc::SIGKILL) };
    });
}

/// Kills every task of a framework.
pub(crate) async fn teardown(agent: &Arc<Agent>, fw: &FrameworkId) -> usize {
    let keys: Vec<TaskKey> = agent
        .table()
        .live
        .keys()
        .filter(|k| &k.0 == fw)
        .cloned()
        .collect();
    for k in &keys {
        let _ = kill(agent, k, None).await;
    }
    keys.len()
}

/// Kills tasks the master says must not run, whatever their framework.
pub(crate) async fn kill_by_task_id(agent: &Arc<Agent>, ids: &[TaskId]) {
    let keys: Vec<TaskKey> = agent
        .table()
        .live
        .keys()
        .filter(|k| ids.contains(&k.1))
        .cloned()
        .collect();
    for k in &keys {
        let _ = kill(agent, k, None).await;
    }
}

// ---------------------------------------------------------------------- watching

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reaps our own child without blocking; true once it is gone.
fn reaped(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on a pid; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    r == pid || (r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// Waits until the supervisor exits (true) or the agent stops (false). `child`: it is our
/// own child and must be reaped; otherwise it was adopted from a previous agent.
async fn wait_exit(sup: Proc, child: bool, shutdown: &CancellationToken) -> bool {
    let exited = wait_exit_inner(sup, child, shutdown).await;
    if exited && !child && sup.is_own_zombie() {
        // An earlier agent in this same process (a restarted role) forked it.
        reaped(sup.pid);
    }
    exited
}

async fn wait_exit_inner(sup: Proc, child: bool, shutdown: &CancellationToken) -> bool {
    if let Some(fd) = pidfd_open(sup.pid) {
        // The pid may have been reused before the pidfd pinned it.
        if !child && !sup.alive() {
            return true;
        }
        // SAFETY: the OwnedFd moves into the AsyncFd and stays open, unchanged, until it is
        // dropped with it.
        if let Ok(afd) = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            tokio::select! {
                r = afd.readable() => { drop(r); }
                _ = shutdown.cancelled() => return false,
            }
            if child {
                while !reaped(sup.pid) {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                        _ = shutdown.cancelled() => return false,
                    }
                }
            }
            return true;
        }
    }
    loop {
        let gone = if child { reaped(sup.pid) } else { !sup.alive() };
        if gone {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EXIT) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

// ---------------------------------------------------------------------- recovery

/// Re-adopts checkpointed tasks: still running ones are watched again, ones that ended
/// while no agent was looking are reported with how they ended.
async fn recover(
    agent: &Arc<Agent>,
    records: Vec<TaskRecord>,
    pending: &[basalt_api::agent::StatusUpdateMessage],
) {
    let mut pending_by_task: HashMap<TaskKey, Vec<TaskStatus>> = HashMap::new();
    for m in pending {
        pending_by_task
            .entry((m.framework_id.clone(), m.status.task_id.clone()))
            .or_default()
            .push(m.status.clone());
    }
    for rec in records {
        let key: TaskKey = (
            rec.launch.framework_id.clone(),
            rec.launch.task.task_id.clone(),
        );
        let mut statuses: Vec<TaskStatus> = rec.acked.iter().cloned().collect();
        statuses.extend(pending_by_task.remove(&key).unwrap_or_default());
        let latest = statuses
            .last()
            .map(|s| s.state)
            .unwrap_or(TaskState::Staging);
        let acked_terminal = rec.acked.as_ref().is_some_and(|s| s.state.is_terminal());
        if acked_terminal {
            let (l, fw, task) = (agent.layout.clone(), key.0.clone(), key.1.clone());
            let exit = rec.exit_path(&l);
            let _ =
                tokio::task::spawn_blocking(move || checkpoint::remove_task(&l, &fw, &task, &exit))
                    .await;
            continue;
        }
        let alive = rec.supervisor.is_some_and(|s| s.alive());
        let kill_again = alive && rec.killing && !latest.is_terminal();
        let sup = rec.supervisor;
        tracing::info!(task_id = %key.1, framework_id = %key.0, alive, state = %latest, "recovering task");
        {
            let mut t = agent.table();
            t.live.insert(
                key.clone(),
                Entry {
                    valid: RoleResources::from_wire(&rec.launch.task.resources).is_ok(),
                    record: rec,
                    state: latest,
                    statuses,
                    checkpointed: true,
                    kill_started: kill_again,
                    exited: watch::Sender::new(false),
                    record_lock: Arc::new(tokio::sync::Mutex::new(())),
                },
            );
        }
        if latest.is_terminal() {
            // Its end is already journaled and on its way to the master.
            continue;
        }
        let a = agent.clone();
        match sup {
            Some(sup) if alive => {
                if !matches!(latest, TaskState::Running | TaskState::Killing) {
                    let rec = a.table().live.get(&key).map(|e| e.record.clone());
                    if let Some(rec) = rec {
                        let mut st = a.status(&rec, TaskState::Running);
                        st.container_status = Some(ContainerStatus {
                            network_infos: Vec::new(),
                            executor_pid: u32::try_from(sup.pid).ok(),
                        });
                        submit(&a, &key, st).await;
                    }
                }
                if kill_again {
                    start_kill(&a, &key);
                } else {
                    start_health_checks(&a, &key);
                }
                agent.tracker.spawn(async move {
                    if wait_exit(sup, false, &a.shutdown).await {
                        finish(&a, &key, None).await;
                    }
                });
            }
            _ => {
                agent
                    .tracker
                    .spawn(async move { finish(&a, &key, None).await });
            }
        }
    }
}
