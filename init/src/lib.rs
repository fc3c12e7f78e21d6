//! init: the Marathon-compatible service manager. A framework (registered as `marathon`)
//! that keeps the declared instances of every app running, replaces what fails with
//! back-off, scales and replaces tasks in rolling deployments, and serves Marathon's
//! `/v2` API so the `marathon` Python client, `dcos marathon` and curl scripts work.
//!
//! Owns: app definitions and their versions, its tasks' bookkeeping, deployments, and its
//! framework id (all in its own store, so a restart re-subscribes as the same framework
//! and adopts running tasks instead of restarting them).
//! Never: talks to agents or reads the master's state directly; everything goes through
//! the scheduler API in `basalt-api`.

pub mod app;
mod http;
pub mod state;

use basalt_api::Client;
use basalt_api::scheduler::{
    Accept, Acknowledge, Call, CallType, Decline, EventType, Filters, FrameworkInfo, Kill,
    Operation, Reconcile, ReconcileTask, SchedulerApi,
};
use basalt_api::{AgentId, FrameworkId, TaskId};
use basalt_kernel_store::{Store, Write};
use serde_json::Value;
use state::{Effects, State};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot listen on {addr} for init: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot read init's store: {0}")]
    Store(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ip: String,
    pub port: u16,
    /// The name init registers under (`marathon`, so `{task}.marathon.mesos` resolves).
    pub framework_name: String,
    /// How long the master keeps our tasks while init is away.
    pub failover_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ip: "127.0.0.1".into(),
            port: 8080,
            framework_name: "marathon".into(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

pub struct Deps {
    pub master: Client,
    pub store: Arc<dyn Store>,
    pub shutdown: CancellationToken,
}

pub struct Running {
    pub addr: SocketAddr,
    pub tasks: TaskTracker,
}

/// The framework's live subscription.
#[derive(Clone)]
struct Conn {
    framework_id: FrameworkId,
    stream_id: String,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    store: Arc<dyn Store>,
    master: Client,
    conn: Mutex<Option<Conn>>,
    wake: Notify,
    events: broadcast::Sender<Value>,
    cfg: Config,
    leader: String,
}

/// Tasks to kill: (task id, agent id).
pub(crate) type Kills = Vec<(String, Option<String>)>;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the API down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state and makes its writes durable before returning, all under the
    /// lock so writes reach the store in the order the state changed.
    pub(crate) fn mutate<T>(
        &self,
        f: impl FnOnce(&mut State, &mut Effects) -> T,
    ) -> Result<(T, Kills), String> {
        match self.mutate_all(|st, fx| Ok::<T, std::convert::Infallible>(f(st, fx)))? {
            (Ok(out), kills) => Ok((out, kills)),
            (Err(never), _) => match never {},
        }
    }

    /// `mutate` for changes that must land whole or not at all: when `f` fails halfway,
    /// nothing it wrote is stored and the state goes back to what the store holds.
    pub(crate) fn mutate_all<T, E>(
        &self,
        f: impl FnOnce(&mut State, &mut Effects) -> Result<T, E>,
    ) -> Result<(Result<T, E>, Kills), String> {
        tokio::task::block_in_place(|| {
            let mut st = self.lock();
            let mut fx = Effects::default();
            match f(&mut st, &mut fx) {
                Err(e) => {
                    if !fx.writes.is_empty() {
                        self.reload(&mut st);
                    }
                    st.events.clear();
                    Ok((Err(e), Vec::new()))
                }
                Ok(out) => {
                    if !fx.writes.is_empty()
                        && let Err(e) = self.store.apply(&fx.writes)
                    {
                        self.reload(&mut st);
                        return Err(e.to_string());
                    }
                    for ev in st.events.drain(..) {
                        let _ = self.events.send(ev);
                    }
                    Ok((Ok(out), fx.kills))
                }
            }
        })
    }

    fn reload(&self, st: &mut State) {
        match self.store.list("init/") {
            Ok(records) => *st = State::load(records),
            Err(e) => tracing::error!(error = %e, "cannot reread init's store"),
        }
    }

    async fn call(&self, call: Call) -> bool {
        let Some(c) = self.conn.lock().ok().and_then(|c| c.clone()) else {
            return false;
        };
        let mut call = call;
        call.framework_id = Some(c.framework_id.clone());
        match self.master.call(&c.stream_id, call).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "call to the master failed");
                false
            }
        }
    }

    pub(crate) async fn kill(&self, kills: Kills) {
        for (task, agent) in kills {
            let mut c = Call::new(None, CallType::Kill);
            c.kill = Some(Kill {
                task_id: TaskId::new(task),
                agent_id: agent.map(AgentId::new),
                kill_policy: None,
            });
            self.call(c).await;
        }
    }
}

/// Binds the API, loads the store, and starts the framework.
pub async fn start(cfg: Config, deps: Deps) -> Result<Running, InitError> {
    let bind = format!("{}:{}", cfg.ip, cfg.port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|source| InitError::Bind {
            addr: bind.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| InitError::Bind {
        addr: bind.clone(),
        source,
    })?;
    let records = deps
        .store
        .list("init/")
        .map_err(|e| InitError::Store(e.to_string()))?;
    let state = State::load(records);
    tracing::info!(apps = state.apps.len(), tasks = state.tasks.len(), %addr, "init listening");
    let (events, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        store: deps.store,
        master: deps.master,
        conn: Mutex::new(None),
        wake: Notify::new(),
        events,
        leader: addr.to_string(),
        cfg,
    });
    let tasks = TaskTracker::new();
    let app = http::router(shared.clone());
    let sd = deps.shutdown.clone();
    tasks.spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "init http server failed");
        }
    });
    tasks.spawn(readiness_loop(shared.clone(), deps.shutdown.clone()));
    tasks.spawn(framework_loop(shared, deps.shutdown));
    tasks.close();
    Ok(Running { addr, tasks })
}

async fn framework_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    loop {
        let id = shared.lock().framework_id.clone();
        let info = FrameworkInfo {
            name: shared.cfg.framework_name.clone(),
            id: id.map(FrameworkId::new),
            failover_timeout: shared.cfg.failover_timeout.as_secs_f64(),
            checkpoint: true,
            role: Some("*".into()),
            hostname: Some(shared.cfg.ip.clone()),
            webui_url: Some(format!("http://{}", shared.leader)),
            ..Default::default()
        };
        let sub = tokio::select! {
            s = shared.master.subscribe(info) => s,
            _ = shutdown.cancelled() => return,
        };
        match sub {
            Ok(sub) => {
                delay = Duration::from_millis(200);
                run_subscription(&shared, sub, &shutdown).await;
                if let Ok(mut c) = shared.conn.lock() {
                    *c = None;
                }
                if shutdown.is_cancelled() {
                    return;
                }
                tracing::warn!("lost the master; re-subscribing");
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to the master; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn run_subscription(
    shared: &Arc<Shared>,
    mut sub: basalt_api::scheduler::Subscription,
    shutdown: &CancellationToken,
) {
    let fid = sub.framework_id.to_string();
    let r = shared.mutate(|st, fx| {
        if st.framework_id.as_deref() != Some(&fid) {
            st.framework_id = Some(fid.clone());
            fx.writes.push(Write::Put(
                state::KEY_FRAMEWORK.into(),
                fid.clone().into_bytes(),
            ));
        }
        st.tasks
            .values()
            .map(|t| ReconcileTask {
                task_id: TaskId::new(t.id.clone()),
                agent_id: Some(AgentId::new(t.agent_id.clone())),
            })
            .collect::<Vec<_>>()
    });
    let known = match r {
        Ok((k, _)) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot record the framework id");
            return;
        }
    };
    if let Ok(mut c) = shared.conn.lock() {
        *c = Some(Conn {
            framework_id: sub.framework_id.clone(),
            stream_id: sub.stream_id.clone(),
        });
    }
    tracing::info!(framework_id = %fid, tasks = known.len(), "init subscribed");
    // What the master knows of every task we launched: running ones are adopted, ones it
    // lost come back terminal and are replaced.
    let mut c = Call::new(None, CallType::Reconcile);
    c.reconcile = Some(Reconcile { tasks: known });
    shared.call(c).await;
    let mut suppressed = false;
    let mut pending: Option<basalt_api::scheduler::Event> = None;
    loop {
        let ev = if let Some(p) = pending.take() {
            Some(p)
        } else {
            tokio::select! {
            ev = sub.events.recv() => ev,
            _ = shared.wake.notified() => {
                suppressed = evaluate(shared, suppressed).await;
                continue;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                suppressed = evaluate(shared, suppressed).await;
                continue;
            }
            _ = shutdown.cancelled() => return,
            }
        };
        let Some(ev) = ev else { return };
        match ev.kind {
            EventType::Offers => {
                let offers = ev.offers.map(|o| o.offers).unwrap_or_default();
                for o in offers {
                    let now = now_ms();
                    let launched = shared.mutate(|st, fx| st.match_offer(&o, now, fx));
                    let tasks = match launched {
                        Ok((t, _)) => t,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot persist launches; declining");
                            Vec::new()
                        }
                    };
                    if tasks.is_empty() {
                        let mut c = Call::new(None, CallType::Decline);
                        c.decline = Some(Decline {
                            offer_ids: vec![o.id.clone()],
                            filters: Some(Filters {
                                refuse_seconds: Some(5.0),
                            }),
                        });
                        shared.call(c).await;
                    } else {
                        let mut c = Call::new(None, CallType::Accept);
                        c.accept = Some(Accept {
                            offer_ids: vec![o.id.clone()],
                            operations: vec![Operation::launch(tasks)],
                            filters: Some(Filters {
                                refuse_seconds: Some(1.0),
                            }),
                        });
                        shared.call(c).await;
                    }
                }
            }
            EventType::Update => {
                // Updates come in bursts (a deployment of hundreds of tasks): take every one
                // already waiting and make them durable with one store commit.
                let mut statuses: Vec<basalt_api::TaskStatus> =
                    ev.update.into_iter().map(|u| u.status).collect();
                let mut held_back = None;
                while statuses.len() < 512 {
                    match sub.events.try_recv() {
                        Ok(next) if next.kind == EventType::Update => {
                            statuses.extend(next.update.map(|u| u.status));
                        }
                        Ok(other) => {
                            held_back = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let now = now_ms();
                let r = shared.mutate(|s, fx| s.on_statuses(&statuses, now, fx));
                let kills = match r {
                    Ok((_, k)) => k,
                    Err(e) => {
                        // Not acknowledged: the master resends them.
                        tracing::error!(error = %e, "cannot persist status updates");
                        pending = held_back;
                        continue;
                    }
                };
                for st in &statuses {
                    if let (Some(uuid), Some(agent)) = (st.uuid.clone(), st.agent_id.clone()) {
                        let mut c = Call::new(None, CallType::Acknowledge);
                        c.acknowledge = Some(Acknowledge {
                            agent_id: agent,
                            task_id: st.task_id.clone(),
                            uuid,
                        });
                        shared.call(c).await;
                    }
                }
                shared.kill(kills).await;
                suppressed = evaluate(shared, suppressed).await;
                if let Some(other) = held_back {
                    // Offers and the rest go round the loop again, in order.
                    pending = Some(other);
                }
            }
            EventType::Error => {
                tracing::error!(error = ?ev.error, "the master ended init's subscription");
                return;
            }
            _ => {}
        }
    }
}

/// Kills that are due, and revive or suppress offers; returns whether we are suppressed.
async fn evaluate(shared: &Arc<Shared>, suppressed: bool) -> bool {
    let now = now_ms();
    let r = shared.mutate(|st, fx| {
        let apps: Vec<String> = st.apps.keys().cloned().collect();
        for a in apps {
            st.reconcile_app(&a, now, fx);
        }
        st.kill_retries(now, fx);
        st.needs_offers(now)
    });
    let Ok((needs, kills)) = r else {
        return suppressed;
    };
    shared.kill(kills).await;
    if needs && suppressed {
        if shared.call(Call::new(None, CallType::Revive)).await {
            return false;
        }
    } else if !needs && !suppressed {
        let mut c = Call::new(None, CallType::Suppress);
        c.suppress = Some(Default::default());
        if shared.call(c).await {
            return true;
        }
    }
    suppressed
}

/// Readiness checks run here, as in Marathon (health checks run on the agents): every running
/// task of an app with a readiness check is asked at the check's interval until it answers
/// ready; deployments wait for that before they retire old tasks.
async fn readiness_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut asked: std::collections::HashMap<String, tokio::time::Instant> = Default::default();
    // Agent id -> the address its tasks are reached at (agents may advertise hostnames that
    // do not resolve, as several agents on one machine do).
    let mut addrs: std::collections::HashMap<String, String> = Default::default();
    let mut addrs_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.cancelled() => return,
        }
        let probes = shared.lock().readiness_probes();
        let now = tokio::time::Instant::now();
        asked.retain(|id, _| probes.iter().any(|p| &p.task_id == id));
        let due: Vec<state::ReadinessProbe> = probes
            .into_iter()
            .filter(|p| {
                asked
                    .get(&p.task_id)
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_millis(p.interval_ms))
            })
            .collect();
        if due.is_empty() {
            continue;
        }
        for p in &due {
            asked.insert(p.task_id.clone(), now);
        }
        let unknown = due.iter().any(|p| !addrs.contains_key(&p.agent_id));
        if unknown && addrs_at.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(2)) {
            addrs_at = Some(now);
            if let Ok(v) = shared.master.slaves().await {
                for s in v.slaves {
                    addrs.insert(
                        s.id.clone(),
                        basalt_api::operator::agent_ip(&s.hostname, &s.pid)
                            .map_or_else(|| s.hostname.clone(), |ip| ip.to_string()),
                    );
                }
            }
        }
        let hosts: Vec<String> = due
            .iter()
            .map(|p| addrs.get(&p.agent_id).unwrap_or(&p.host).clone())
            .collect();
        let answers =
            futures_util::future::join_all(due.iter().zip(&hosts).map(|(p, h)| ask(p, h))).await;
        let now = now_ms();
        let r = shared.mutate(|st, fx| {
            for (p, (ready, last)) in due.iter().zip(answers) {
                st.on_readiness(&p.task_id, ready, last, now, fx);
            }
        });
        match r {
            Ok(((), kills)) => {
                if !kills.is_empty() {
                    shared.kill(kills).await;
                    shared.wake.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot record readiness"),
        }
    }
}

/// One readiness check: ready on one of the app's status codes; the answer as Marathon's
/// `lastResponse` shows it. The whole exchange is under the check's timeout and at most
/// 1 KiB of the body is read: a server that stalls or streams holds up no other check.
async fn ask(p: &state::ReadinessProbe, host: &str) -> (bool, serde_json::Value) {
    let got = tokio::time::timeout(
        Duration::from_millis(p.timeout_ms),
        basalt_api::probe::get(host, p.port, &p.path, p.tls, 1024),
    )
    .await;
    match got {
        Ok(Ok(a)) => (
            p.codes.contains(&a.status),
            serde_json::json!({"status": a.status, "contentType": a.content_type,
                               "body": String::from_utf8_lossy(&a.body)}),
        ),
        Ok(Err(e)) => (
            false,
            serde_json::json!({"status": 0, "contentType": "", "body": e.to_string()}),
        ),
        Err(_) => (
            false,
            serde_json::json!({"status": 0, "contentType": "",
                               "body": format!("no answer within {} ms", p.timeout_ms)}),
        ),
    }
}
