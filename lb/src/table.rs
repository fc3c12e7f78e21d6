//! The cluster as the load balancer sees it (kept current from the master's event stream)
//! and the immutable routing table built from it at each change.
//!
//! Backend counters live in `BackendState`s that outlive tables: a rebuild keeps the
//! state of every backend that is still there, so stats, in-flight counts (leastconn) and
//! ejections are not reset by an unrelated app's deploy.

use crate::labels::{self, Balance, Filter, Mode, PortDecision, PortSpec};
use basalt_api::discovery::Discovery;
use basalt_api::operator::{self, EventType};
use basalt_api::{AgentId, FrameworkId, TaskId, TaskState};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Clone)]
struct TaskView {
    agent: AgentId,
    state: TaskState,
    healthy: Option<bool>,
    health_check: Option<String>,
    /// The HTTP health check's port and path: the LB checks the same URL itself.
    http_check: Option<(u16, String)>,
    labels: BTreeMap<String, String>,
    discovery: Discovery,
    name: String,
}

impl TaskView {
    fn app_id(&self) -> String {
        self.discovery
            .app_id
            .clone()
            .or_else(|| self.discovery.name.clone())
            .unwrap_or_else(|| self.name.clone())
    }

    /// Gets traffic: running (not killing, not starting) and, when it has a health
    /// check, reported healthy by the agent.
    fn routable(&self) -> bool {
        self.state == TaskState::Running
            && (self.health_check.is_none() || self.healthy == Some(true))
    }
}

fn task_view(t: &operator::Task) -> TaskView {
    let mut v = TaskView {
        agent: t.agent_id.clone(),
        state: t.state,
        healthy: None,
        health_check: t.health_check.as_ref().map(|h| {
            h.get("type")
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_owned()
        }),
        http_check: t.health_check.as_ref().and_then(|h| {
            let http = h.get("http")?;
            // The LB checks in plain HTTP; a task checked over HTTPS gets a TCP check.
            if http.get("scheme").and_then(|s| s.as_str()) == Some("https") {
                return None;
            }
            let port = u16::try_from(http.get("port")?.as_u64()?).ok()?;
            let path = http.get("path").and_then(|p| p.as_str()).unwrap_or("/");
            Some((port, path.to_owned()))
        }),
        labels: t
            .labels
            .iter()
            .flat_map(|l| l.labels.iter())
            .map(|l| (l.key.clone(), l.value.clone().unwrap_or_default()))
            .collect(),
        discovery: t
            .discovery
            .as_ref()
            .map(Discovery::parse)
            .unwrap_or_default(),
        name: t.name.clone(),
    };
    for s in &t.statuses {
        if s.healthy.is_some() {
            v.healthy = s.healthy;
        }
    }
    v
}

/// What the event stream has told us.
#[derive(Debug, Default)]
pub struct View {
    agents: HashMap<AgentId, Option<IpAddr>>,
    tasks: HashMap<(FrameworkId, TaskId), TaskView>,
}

impl View {
    /// Applies one operator event; true when routing may have changed.
    pub fn apply(&mut self, ev: &operator::Event) -> bool {
        match ev.kind {
            EventType::Subscribed => {
                let Some(s) = &ev.subscribed else {
                    return false;
                };
                *self = View::default();
                let st = &s.get_state;
                for a in &st.get_agents.agents {
                    self.agents.insert(a.agent_info.id.clone(), a.ip());
                }
                for t in &st.get_tasks.tasks {
                    self.tasks
                        .insert((t.framework_id.clone(), t.task_id.clone()), task_view(t));
                }
                true
            }
            EventType::TaskAdded => {
                let Some(t) = &ev.task_added else {
                    return false;
                };
                // Not routable yet, but the app's report (instances) changes.
                self.tasks.insert(
                    (t.task.framework_id.clone(), t.task.task_id.clone()),
                    task_view(&t.task),
                );
                true
            }
            EventType::TaskUpdated => {
                let Some(u) = &ev.task_updated else {
                    return false;
                };
                let key = (u.framework_id.clone(), u.status.task_id.clone());
                if u.state.is_terminal() {
                    return self.tasks.remove(&key).is_some_and(|t| t.routable());
                }
                match self.tasks.get_mut(&key) {
                    Some(t) => {
                        let before = t.routable();
                        t.state = u.state;
                        if u.status.healthy.is_some() {
                            t.healthy = u.status.healthy;
                        }
                        before != t.routable()
                    }
                    None => false,
                }
            }
            EventType::AgentAdded => {
                let Some(a) = &ev.agent_added else {
                    return false;
                };
                self.agents
                    .insert(a.agent.agent_info.id.clone(), a.agent.ip());
                true
            }
            EventType::AgentRemoved => {
                let Some(a) = &ev.agent_removed else {
                    return false;
                };
                self.agents.remove(&a.agent_id).is_some()
            }
            _ => false,
        }
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }
}

/// The load balancer's own knowledge of one backend, kept across table rebuilds.
#[derive(Debug, Default)]
pub struct BackendState {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Requests or connections in flight (leastconn).
    pub active: AtomicU64,
    pub latency_us_total: AtomicU64,
    /// Consecutive proxy failures (connect refused, reset before a response).
    pub failures_in_row: AtomicU32,
    /// Passively ejected until this many ms on the process clock.
    pub ejected_until_ms: AtomicU64,
    /// The LB's own active check says down.
    pub check_down: AtomicBool,
    /// The app's readiness check has passed once (Marathon semantics: ready stays ready).
    pub ready: AtomicBool,
    pub check_failures_in_row: AtomicU32,
}

/// Consecutive failures that eject a backend, and for how long.
pub const EJECT_AFTER: u32 = 3;
pub const EJECT_FOR_MS: u64 = 5_000;

impl BackendState {
    pub fn usable(&self, now_ms: u64) -> bool {
        !self.check_down.load(Ordering::Relaxed)
            && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// A request or connection to this backend failed before the backend answered.
    pub fn failed(&self, now_ms: u64, addr: SocketAddr) {
        let n = self.failures_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= EJECT_AFTER {
            self.ejected_until_ms
                .store(now_ms + EJECT_FOR_MS, Ordering::Relaxed);
            self.failures_in_row.store(0, Ordering::Relaxed);
            tracing::warn!(
                backend = %addr,
                failures = n,
                seconds = EJECT_FOR_MS / 1000,
                "backend failed in a row; ejected"
            );
        }
    }

    pub fn succeeded(&self) {
        if self.failures_in_row.load(Ordering::Relaxed) != 0 {
            self.failures_in_row.store(0, Ordering::Relaxed);
        }
    }

    pub fn state_name(&self, now_ms: u64) -> &'static str {
        if !self.ready.load(Ordering::Relaxed) {
            "unready"
        } else if self.check_down.load(Ordering::Relaxed) {
            "down"
        } else if self.ejected_until_ms.load(Ordering::Relaxed) > now_ms {
            "ejected"
        } else {
            "up"
        }
    }
}

#[derive(Debug)]
pub struct Backend {
    pub task_id: String,
    pub addr: SocketAddr,
    /// Sticky-session cookie value.
    pub cookie: String,
    /// Path of the app's HTTP health check on this port, which the LB's own check uses
    /// (marathon-lb's `option httpchk`); a TCP connect otherwise.
    pub check_path: Option<String>,
    /// The app's readiness check: no traffic until it has passed.
    pub readiness: Option<basalt_api::discovery::Readiness>,
    pub state: Arc<BackendState>,
}

impl Backend {
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Relaxed)
    }
}

/// One exposed app port and where its traffic goes.
#[derive(Debug)]
pub struct Pool {
    pub app_id: String,
    pub spec: PortSpec,
    pub service_port: Option<u16>,
    pub backends: Vec<Arc<Backend>>,
    rr: AtomicUsize,
}

/// Cookie marathon-lb's sticky backends set (`cookie mesosphere_server_id insert`).
pub const STICKY_COOKIE: &str = "mesosphere_server_id";

impl Pool {
    /// Picks a backend not in `tried`. Backends that are ejected or down are used only
    /// when nothing else is left: trying a doubtful backend beats a certain 503.
    pub fn select(
        &self,
        tried: &[SocketAddr],
        sticky: Option<&str>,
        client: Option<IpAddr>,
        now_ms: u64,
    ) -> Option<Arc<Backend>> {
        // Unready instances never get traffic, not even as a last resort.
        let open = |b: &&Arc<Backend>| !tried.contains(&b.addr) && b.is_ready();
        if let Some(c) = sticky
            && let Some(b) = self
                .backends
                .iter()
                .filter(open)
                .find(|b| b.cookie == c && b.state.usable(now_ms))
        {
            return Some(b.clone());
        }
        let mut usable: Vec<&Arc<Backend>> = self
            .backends
            .iter()
            .filter(open)
            .filter(|b| b.state.usable(now_ms))
            .collect();
        if usable.is_empty() {
            usable = self.backends.iter().filter(open).collect();
        }
        if usable.is_empty() {
            return None;
        }
        let pick = match (self.spec.balance, client) {
            (Balance::Leastconn, _) => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                let n = usable.len();
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|&i| usable[i].state.active.load(Ordering::Relaxed))
                    .unwrap_or(0)
            }
            (Balance::Source, Some(ip)) => {
                let h = match ip {
                    IpAddr::V4(v4) => u64::from(u32::from(v4)),
                    IpAddr::V6(v6) => (u128::from(v6) as u64) ^ ((u128::from(v6) >> 64) as u64),
                };
                (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % usable.len()
            }
            _ => self.rr.fetch_add(1, Ordering::Relaxed) % usable.len(),
        };
        usable.get(pick).map(|b| (*b).clone())
    }
}

/// An app and what became of its labels: reported on the operator endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct AppReport {
    pub id: String,
    pub instances: usize,
    pub routable: usize,
    pub problems: Vec<String>,
}

/// One routing table: replaced whole at each change, read lock-free by every request.
#[derive(Debug, Default)]
pub struct Table {
    pub generation: u64,
    /// Service port -> pool (HTTP or TCP mode).
    pub service_ports: BTreeMap<u16, Arc<Pool>>,
    /// Host -> pools on the vhost port, longest path prefix first, path-less last.
    pub vhosts: HashMap<String, Vec<Arc<Pool>>>,
    /// Pools with a path prefix and no vhost: any host on the vhost port.
    pub paths: Vec<Arc<Pool>>,
    /// App id -> its first HTTP port (`X-Marathon-App-Id` routing).
    pub by_app_id: HashMap<String, Arc<Pool>>,
    pub apps: Vec<AppReport>,
}

fn path_matches(prefix: &Option<String>, path: &str) -> bool {
    match prefix {
        None => true,
        Some(p) => path.starts_with(p.as_str()),
    }
}

impl Table {
    /// The HTTP pool for a request on the vhost port.
    /// Every pool once, ordered by app and port index.
    pub fn pools(&self) -> Vec<&Arc<Pool>> {
        let mut out: Vec<&Arc<Pool>> = Vec::new();
        let all = self
            .service_ports
            .values()
            .chain(self.by_app_id.values())
            .chain(self.paths.iter())
            .chain(self.vhosts.values().flatten());
        for p in all {
            if !out.iter().any(|q| Arc::ptr_eq(q, p)) {
                out.push(p);
            }
        }
        out.sort_by(|a, b| (&a.app_id, a.spec.index).cmp(&(&b.app_id, b.spec.index)));
        out
    }

    /// Every backend address once (the checks probe each address once).
    pub fn backends(&self) -> Vec<Arc<Backend>> {
        let mut seen = std::collections::HashSet::new();
        self.pools()
            .into_iter()
            .flat_map(|p| p.backends.iter())
            .filter(|b| seen.insert(b.addr))
            .cloned()
            .collect()
    }

    /// Whether any instance may get traffic now.
    pub fn any_ready(pool: &Pool) -> bool {
        pool.backends.iter().any(|b| b.is_ready())
    }

    pub fn route_vhost(&self, host: &str, path: &str) -> Option<&Arc<Pool>> {
        let host = host.trim_end_matches('.');
        let by_host = self.vhosts.get(host).or_else(|| {
            // `*.example.com` vhosts match one more label on the left.
            let (_, parent) = host.split_once('.')?;
            self.vhosts.get(&format!("*.{parent}"))
        });
        by_host
            .and_then(|ps| ps.iter().find(|p| path_matches(&p.spec.path, path)))
            .or_else(|| self.paths.iter().find(|p| path_matches(&p.spec.path, path)))
    }
}

/// Builds tables from the view, keeping backend state between builds.
#[derive(Debug)]
pub struct Builder {
    filter: Filter,
    states: HashMap<(String, usize), Arc<BackendState>>,
    generation: u64,
}

fn cookie_of(task: &str, index: usize) -> String {
    // FNV-1a: short, stable across restarts, and not the task id itself.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in task.bytes().chain(index.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Builder {
    pub fn new(filter: Filter) -> Self {
        Builder {
            filter,
            states: HashMap::new(),
            generation: 0,
        }
    }

    pub fn build(&mut self, view: &View) -> Table {
        self.generation += 1;
        let mut apps: BTreeMap<String, Vec<(&TaskId, &TaskView)>> = BTreeMap::new();
        for ((_, tid), t) in &view.tasks {
            apps.entry(t.app_id()).or_default().push((tid, t));
        }
        let mut table = Table {
            generation: self.generation,
            ..Default::default()
        };
        let mut live = HashMap::new();
        for (app_id, tasks) in apps {
            // The newest version's labels describe the app (a deploy may change them).
            let Some((_, newest)) = tasks.iter().max_by(|(_, a), (_, b)| {
                a.discovery
                    .version
                    .cmp(&b.discovery.version)
                    .then_with(|| a.discovery.ports.len().cmp(&b.discovery.ports.len()))
            }) else {
                continue;
            };
            // marathon-lb's default mode: http behind an HTTP health check, tcp otherwise
            // (an HTTPS-checked task speaks TLS).
            let http_check = newest.http_check.is_some();
            let mut report = AppReport {
                id: app_id.clone(),
                instances: tasks.len(),
                routable: tasks.iter().filter(|(_, t)| t.routable()).count(),
                problems: Vec::new(),
            };
            for (index, port) in newest.discovery.ports.iter().enumerate() {
                let spec = match labels::port_spec(&newest.labels, index, &self.filter, http_check)
                {
                    PortDecision::Exposed(s) => s,
                    PortDecision::Skipped => continue,
                    PortDecision::Invalid(msg) => {
                        report.problems.push(msg);
                        continue;
                    }
                };
                let service_port = spec.service_port.or(port.service_port);
                let mut backends = Vec::new();
                for (tid, t) in tasks.iter().filter(|(_, t)| t.routable()) {
                    let (Some(ip), Some(p)) = (
                        view.agents.get(&t.agent).copied().flatten(),
                        t.discovery.ports.get(index),
                    ) else {
                        continue;
                    };
                    let key = (tid.as_str().to_owned(), index);
                    let state = self.states.get(&key).cloned().unwrap_or_else(|| {
                        Arc::new(BackendState {
                            ready: AtomicBool::new(t.discovery.readiness.is_none()),
                            ..Default::default()
                        })
                    });
                    live.insert(key.clone(), state.clone());
                    backends.push(Arc::new(Backend {
                        cookie: cookie_of(&key.0, index),
                        task_id: key.0,
                        addr: SocketAddr::new(ip, p.number),
                        check_path: t
                            .http_check
                            .as_ref()
                            .filter(|(port, _)| *port == p.number)
                            .map(|(_, path)| path.clone()),
                        readiness: t.discovery.readiness.clone(),
                        state,
                    }));
                }
                backends.sort_by(|a, b| a.task_id.cmp(&b.task_id));
                let pool = Arc::new(Pool {
                    app_id: app_id.clone(),
                    spec,
                    service_port,
                    backends,
                    rr: AtomicUsize::new(0),
                });
                if let Some(sp) = service_port {
                    if let Some(other) = table.service_ports.get(&sp) {
                        report.problems.push(format!(
                            "service port {sp} of port index {index} is already used by {} (port index {})",
                            other.app_id, other.spec.index
                        ));
                    } else {
                        table.service_ports.insert(sp, pool.clone());
                    }
                }
                if pool.spec.mode == Mode::Http {
                    table
                        .by_app_id
                        .entry(app_id.clone())
                        .or_insert_with(|| pool.clone());
                    if pool.spec.vhosts.is_empty() {
                        if pool.spec.path.is_some() {
                            table.paths.push(pool.clone());
                        }
                    } else {
                        for h in &pool.spec.vhosts {
                            table
                                .vhosts
                                .entry(h.clone())
                                .or_default()
                                .push(pool.clone());
                        }
                    }
                }
            }
            if !report.problems.is_empty() {
                tracing::warn!(app = %report.id, problems = ?report.problems, "app labels not applied");
            }
            table.apps.push(report);
        }
        let by_path_len =
            |p: &Arc<Pool>| std::cmp::Reverse(p.spec.path.as_ref().map_or(0, String::len));
        for ps in table.vhosts.values_mut() {
            ps.sort_by_key(by_path_len);
        }
        table.paths.sort_by_key(by_path_len);
        self.states = live;
        table
    }
}

#[cfg(test)]
mod tests;
