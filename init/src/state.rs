//! init's state and its decisions: which apps need tasks, which offers fit them (resources,
//! ports, constraints), which tasks to kill (scale-down, rolling replacement), back-off
//! after failures, and when a deployment is done. No I/O here: the shell persists the
//! `Write`s returned and sends the calls.

use crate::app::AppDefinition;
use basalt_api::discovery;
use basalt_api::scheduler::Offer;
use basalt_api::task::{CommandInfo, Environment, Label, Labels, Variable};
use basalt_api::{Ranges, Resources, RoleResources, TaskId, TaskInfo, TaskState, TaskStatus};
use basalt_kernel_store::Write;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Service ports handed out for port 0 (Marathon's `--local_port_min/max`).
pub const SERVICE_PORTS: std::ops::RangeInclusive<u16> = 10000..=20000;

pub(crate) const KEY_FRAMEWORK: &str = "init/framework-id";
pub(crate) const KEY_APPS: &str = "init/apps/";
pub(crate) const KEY_VERSIONS: &str = "init/versions/";
pub(crate) const KEY_TASKS: &str = "init/tasks/";
pub(crate) const KEY_DEPLOYMENTS: &str = "init/deployments/";

/// What we remember of an app besides its definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    pub def: AppDefinition,
    /// Version of the last change that needed new tasks; tasks of older config versions
    /// are replaced.
    pub config_version: String,
    pub service_ports: Vec<u16>,
    pub last_scaling_at: String,
    #[serde(default)]
    pub last_failure: Option<Value>,
    /// Back-off: the delay the next failure adds, and no launch before `delay_until` (ms).
    #[serde(default)]
    pub delay_secs: f64,
    #[serde(default)]
    pub delay_until: u64,
    /// Being deleted: kill everything, then forget the app.
    #[serde(default)]
    pub deleting: bool,
    /// Every stored version, so they go with the app.
    #[serde(default)]
    pub versions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub app: String,
    pub version: String,
    pub config_version: String,
    pub agent_id: String,
    pub host: String,
    pub attributes: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    pub service_ports: Vec<u16>,
    pub staged_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    pub state: TaskState,
    #[serde(default)]
    pub healthy: Option<bool>,
    /// We asked for it to be killed.
    #[serde(default)]
    pub killing: bool,
    pub staged_ms: u64,
    #[serde(default)]
    pub started_ms: Option<u64>,
    /// The app's readiness check passed (checked by init, as Marathon does, until it does).
    #[serde(default)]
    pub ready: bool,
    /// The last readiness answer, for `/v2/deployments` (not stored).
    #[serde(default, skip)]
    pub readiness_last: Option<Value>,
    /// Since when the master reports it unreachable (`unreachableStrategy` counts from here).
    #[serde(default)]
    pub unreachable_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub app: String,
    pub action: String,
}

impl Deployment {
    pub fn to_json(&self) -> Value {
        let action = json!({"action": self.action, "app": self.app, "readinessCheckResults": []});
        json!({
            "id": self.id,
            "version": self.version,
            "affectedApps": [self.app],
            "affectedPods": [],
            "steps": [{"actions": [{"action": self.action, "app": self.app}]}],
            "currentActions": [action],
            "currentStep": 1,
            "totalSteps": 1,
        })
    }
}

/// The Marathon API's error: status and body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: Value,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Refusal {
            status,
            body: json!({"message": message.into()}),
        }
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub apps: BTreeMap<String, AppRecord>,
    pub tasks: BTreeMap<String, TaskRecord>,
    pub deployments: BTreeMap<String, Deployment>,
    pub framework_id: Option<String>,
    /// Events for `/v2/events` subscribers, drained by the shell.
    pub events: Vec<Value>,
    /// Task ids by app, so per-app questions do not scan every task.
    by_app: HashMap<String, BTreeSet<String>>,
    /// The deployment holding each app (at most one).
    dep_by_app: HashMap<String, String>,
    /// When a kill was last asked for, per task: kills are repeated until the task ends
    /// (the master may have been away, or init restarted in between).
    kill_sent: HashMap<String, u64>,
    /// Why offers went unused, per waiting app (Marathon's `processedOffersSummary`).
    pub offer_stats: HashMap<String, OfferStats>,
    /// The time of the latest input, for questions asked without one (`active`).
    now_ms: u64,
}

/// What offers did for an app that wants tasks: how many it saw, how many it could not use,
/// and why not.
#[derive(Debug, Clone, Default)]
pub struct OfferStats {
    pub processed: u64,
    pub unused: u64,
    pub last_unused_ms: Option<u64>,
    pub rejects: BTreeMap<&'static str, u64>,
    /// The latest offers it could not use (`embed=lastUnusedOffers`), newest last.
    pub last_unused: std::collections::VecDeque<Value>,
}

/// Unused offers kept per app for `/v2/queue?embed=lastUnusedOffers`.
const LAST_UNUSED_OFFERS: usize = 10;

impl OfferStats {
    /// `/v2/queue`'s `processedOffersSummary`.
    pub fn to_json(&self) -> Value {
        json!({
            "processedOffersCount": self.processed,
            "unusedOffersCount": self.unused,
            "lastUnusedOfferAt": self.last_unused_ms.map(iso),
            "rejectSummaryLastOffers": self.rejects.iter().map(|(reason, n)| {
                json!({"reason": reason, "declined": n, "processed": self.processed})
            }).collect::<Vec<_>>(),
        })
    }
}

/// How long a task must keep running before its app's back-off starts over.
const BACKOFF_RESET_MS: u64 = 60_000;
/// How often an unanswered kill is repeated.
const KILL_RETRY_MS: u64 = 5_000;

/// Whether a task counts as serving: running, healthy when the app has health checks, and,
/// for tasks of the app's current version, ready when it has readiness checks (older tasks
/// were never asked the new check: Marathon counts them by health alone).
fn ready_for(a: &AppRecord, t: &TaskRecord) -> bool {
    t.state == TaskState::Running
        && !t.killing
        && if a.def.health_checks.is_empty() {
            t.healthy != Some(false)
        } else {
            t.healthy == Some(true)
        }
        && (a.def.readiness_checks.is_empty() || t.ready || t.config_version != a.config_version)
}

/// One readiness probe init should make: `GET http://<agent's address>:port/path`, ready on
/// one of `codes`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadinessProbe {
    pub task_id: String,
    pub agent_id: String,
    /// The agent's hostname, used when the master does not tell its address.
    pub host: String,
    pub port: u16,
    pub path: String,
    /// `protocol: HTTPS` (the certificate is not verified, as in Marathon).
    pub tls: bool,
    pub codes: Vec<u16>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

/// ISO 8601 UTC with milliseconds, as Marathon writes versions.
pub fn iso(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `dep` (absolute, or relative with `..`) resolved against the group path `parent`.
fn resolve_path(parent: &str, dep: &str) -> String {
    let mut parts: Vec<&str> = if dep.starts_with('/') {
        Vec::new()
    } else {
        parent.split('/').filter(|p| !p.is_empty()).collect()
    };
    for seg in dep.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if seg == ".." {
            parts.pop();
        } else {
            parts.push(seg);
        }
    }
    format!("/{}", parts.join("/"))
}

fn live(t: &TaskRecord) -> bool {
    !t.state.is_terminal()
}

/// `/group/app` → `app.group` (Marathon's task name), `group_app` (task id prefix).
pub fn task_name(app: &str) -> String {
    app.trim_start_matches('/')
        .split('/')
        .rev()
        .collect::<Vec<_>>()
        .join(".")
}

pub fn task_id_prefix(app: &str) -> String {
    app.trim_start_matches('/').replace('/', "_")
}

/// Whether a task launched now on an agent with `host`/`attrs` keeps `constraints`.
fn constraints_ok(
    constraints: &[Vec<String>],
    host: &str,
    attrs: &BTreeMap<String, String>,
    siblings: &[&TaskRecord],
) -> bool {
    let value_of = |field: &str, h: &str, a: &BTreeMap<String, String>| -> Option<String> {
        if field == "hostname" {
            Some(h.to_owned())
        } else {
            a.get(field).cloned()
        }
    };
    for c in constraints {
        let (field, op) = (c[0].as_str(), c[1].as_str());
        let arg = c.get(2).map(String::as_str);
        let mine = value_of(field, host, attrs);
        let theirs: Vec<Option<String>> = siblings
            .iter()
            .map(|t| value_of(field, &t.host, &t.attributes))
            .collect();
        let ok = match op {
            "UNIQUE" => mine.is_some() && !theirs.contains(&mine),
            "CLUSTER" => match arg {
                Some(v) if !v.is_empty() => mine.as_deref() == Some(v),
                _ => theirs.first().is_none_or(|t| *t == mine),
            },
            "IS" => mine.as_deref() == arg,
            "LIKE" | "UNLIKE" => {
                let re = regex_lite::Regex::new(&format!("^(?:{})$", arg.unwrap_or("")));
                let matched = match (&re, &mine) {
                    (Ok(re), Some(v)) => re.is_match(v),
                    _ => false,
                };
                if op == "LIKE" { matched } else { !matched }
            }
            "MAX_PER" => {
                let max: usize = arg.and_then(|s| s.parse().ok()).unwrap_or(0);
                theirs.iter().filter(|t| **t == mine).count() < max
            }
            "GROUP_BY" => {
                // Spread evenly over the values seen so far: never add to a group that
                // already has more than the smallest one.
                let mut counts: BTreeMap<Option<String>, usize> = BTreeMap::new();
                for t in &theirs {
                    *counts.entry(t.clone()).or_default() += 1;
                }
                let here = counts.get(&mine).copied().unwrap_or(0);
                let min = counts.values().copied().min().unwrap_or(0);
                let groups: Option<usize> = arg.and_then(|s| s.parse().ok());
                let fewer_groups_than_wanted = groups.is_some_and(|g| counts.len() < g);
                here == 0 && fewer_groups_than_wanted || here <= min
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// What the shell must do after a decision.
#[derive(Debug, Default)]
pub struct Effects {
    pub writes: Vec<Write>,
    pub kills: Vec<(String, Option<String>)>,
}

fn put<T: Serialize>(key: String, v: &T) -> Write {
    Write::Put(key, serde_json::to_vec(v).unwrap_or_default())
}

impl State {
    /// Rebuilds from the store.
    pub fn load(records: Vec<(String, Vec<u8>)>) -> State {
        let mut s = State::default();
        for (k, v) in records {
            if k == KEY_FRAMEWORK {
                s.framework_id = String::from_utf8(v).ok();
            } else if let Some(id) = k.strip_prefix(KEY_APPS) {
                if let Ok(a) = serde_json::from_slice::<AppRecord>(&v) {
                    s.apps.insert(id.to_owned(), a);
                }
            } else if k.starts_with(KEY_TASKS) {
                if let Ok(t) = serde_json::from_slice::<TaskRecord>(&v) {
                    s.insert_task(t);
                }
            } else if let Some(id) = k.strip_prefix(KEY_DEPLOYMENTS)
                && let Ok(d) = serde_json::from_slice::<Deployment>(&v)
            {
                s.dep_by_app.insert(d.app.clone(), id.to_owned());
                s.deployments.insert(id.to_owned(), d);
            }
        }
        s
    }

    fn used_service_ports(&self, except: &str) -> BTreeSet<u16> {
        self.apps
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .flat_map(|(_, a)| a.service_ports.iter().copied())
            .collect()
    }

    /// Service ports for `def`: explicit ones checked for clashes, 0s allocated.
    fn assign_service_ports(
        &self,
        def: &AppDefinition,
        previous: Option<&[u16]>,
    ) -> Result<Vec<u16>, Refusal> {
        let used = self.used_service_ports(&def.id);
        let mut taken: BTreeSet<u16> = BTreeSet::new();
        let mut out = Vec::new();
        for (i, p) in def.port_defs().iter().enumerate() {
            if p.port != 0 {
                let port = p.port as u16;
                if used.contains(&port) {
                    return Err(Refusal {
                        status: 422,
                        body: json!({"message": "Object is not valid", "details": [{
                            "path": format!("/portDefinitions({i})/port"),
                            "errors": [format!("Requested service port {port} is used by another app")]}]}),
                    });
                }
                taken.insert(port);
                out.push(port);
            } else {
                out.push(0);
            }
        }
        for (i, slot) in out.iter_mut().enumerate() {
            if *slot != 0 {
                continue;
            }
            // Keep what this app had, so an update does not move its service ports.
            let keep = previous
                .and_then(|p| p.get(i))
                .copied()
                .filter(|p| *p != 0 && !used.contains(p) && !taken.contains(p));
            let port = keep.or_else(|| {
                SERVICE_PORTS
                    .clone()
                    .find(|p| !used.contains(p) && !taken.contains(p))
            });
            let Some(port) = port else {
                return Err(Refusal::new(422, "no service port left in 10000-20000"));
            };
            taken.insert(port);
            *slot = port;
        }
        Ok(out)
    }

    fn deployment_for(
        &mut self,
        app: &str,
        action: &str,
        version: &str,
        fx: &mut Effects,
    ) -> String {
        // A new deployment for an app replaces the one in flight, which failed.
        if let Some(old) = self.dep_by_app.get(app).cloned() {
            self.abandon_deployment(&old, version, fx);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let d = Deployment {
            id: id.clone(),
            version: version.to_owned(),
            app: app.to_owned(),
            action: action.to_owned(),
        };
        fx.writes.push(put(format!("{KEY_DEPLOYMENTS}{id}"), &d));
        self.events.push(json!({"eventType": "deployment_info", "timestamp": version,
            "plan": {"id": id, "version": version}, "currentStep": {"actions": [{"action": action, "app": app}]}}));
        self.dep_by_app.insert(app.to_owned(), id.clone());
        self.deployments.insert(id.clone(), d);
        id
    }

    /// Forgets a deployment (finished, replaced, or dropped with `?force`).
    pub fn remove_deployment(&mut self, id: &str, fx: &mut Effects) -> Option<Deployment> {
        let d = self.deployments.remove(id)?;
        if self.dep_by_app.get(&d.app).is_some_and(|x| x == id) {
            self.dep_by_app.remove(&d.app);
        }
        fx.writes
            .push(Write::Delete(format!("{KEY_DEPLOYMENTS}{id}")));
        Some(d)
    }

    /// Forgets a deployment that did not finish (replaced, rolled back, or dropped with
    /// `?force`): Marathon reports those as `deployment_failed`.
    pub fn abandon_deployment(&mut self, id: &str, timestamp: &str, fx: &mut Effects) {
        if let Some(d) = self.remove_deployment(id, fx) {
            // Marathon reports the step that was running, then the plan.
            self.events.push(
                json!({"eventType": "deployment_step_failure", "timestamp": timestamp,
                "plan": {"id": d.id, "version": d.version},
                "currentStep": {"actions": [{"action": d.action, "app": d.app}]}}),
            );
            self.events.push(
                json!({"eventType": "deployment_failed", "timestamp": timestamp,
                "id": d.id, "plan": {"id": d.id, "version": d.version}}),
            );
        }
    }

    /// The app `id` unless it is gone or being deleted (404).
    fn live_app_mut(&mut self, id: &str) -> Result<&mut AppRecord, Refusal> {
        self.apps
            .get_mut(id)
            .filter(|a| !a.deleting)
            .ok_or_else(|| Refusal::new(404, format!("App '{id}' does not exist")))
    }

    /// 409 while a deployment holds `app`, unless `force` (which the new one replaces).
    fn unlocked(&self, app: &str, force: bool) -> Result<(), Refusal> {
        match self.locked(app) {
            Some(d) if !force => Err(Refusal {
                status: 409,
                body: json!({"message": "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
                             "deployments": [{"id": d.id}]}),
            }),
            _ => Ok(()),
        }
    }

    /// A deployment as `/v2/deployments` shows it, with the readiness of the new version's
    /// tasks in its current action.
    pub fn deployment_json(&self, d: &Deployment) -> Value {
        let mut v = d.to_json();
        let Some(a) = self.apps.get(&d.app) else {
            return v;
        };
        let Some(rc) = a.def.readiness_checks.first() else {
            return v;
        };
        let name = rc
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("readinessCheck");
        let preserve = rc
            .get("preserveLastResponse")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let results: Vec<Value> = self
            .app_tasks(&d.app)
            .filter(|t| live(t) && t.config_version == a.config_version)
            .map(|t| {
                let mut r = json!({"name": name, "taskId": t.id, "ready": t.ready});
                // Marathon shows the answer only when the check asks to keep it.
                if preserve {
                    r["lastResponse"] = t.readiness_last.clone().unwrap_or(Value::Null);
                }
                r
            })
            .collect();
        v["currentActions"][0]["readinessCheckResults"] = Value::Array(results);
        v
    }

    /// Running tasks of apps with readiness checks that have not passed yet.
    pub fn readiness_probes(&self) -> Vec<ReadinessProbe> {
        let mut out = Vec::new();
        // Asked five times a second: with no app that checks readiness, touch no task.
        if self
            .apps
            .values()
            .all(|a| a.def.readiness_checks.is_empty())
        {
            return out;
        }
        for t in self.tasks.values() {
            if t.ready || t.killing || t.state != TaskState::Running {
                continue;
            }
            let Some(a) = self.apps.get(&t.app) else {
                continue;
            };
            if a.deleting || t.config_version != a.config_version {
                continue;
            }
            let Some(rc) = a.def.readiness_checks.first() else {
                continue;
            };
            let index = rc
                .get("portName")
                .and_then(Value::as_str)
                .and_then(|n| {
                    a.def
                        .port_defs()
                        .iter()
                        .position(|d| d.name.as_deref() == Some(n))
                })
                .unwrap_or(0);
            let Some(port) = t.ports.get(index) else {
                continue;
            };
            let path = rc.get("path").and_then(Value::as_str).unwrap_or("/");
            let secs = |k: &str, d: f64| {
                (rc.get(k).and_then(Value::as_f64).unwrap_or(d).max(0.1) * 1000.0) as u64
            };
            out.push(ReadinessProbe {
                task_id: t.id.clone(),
                agent_id: t.agent_id.clone(),
                host: t.host.clone(),
                port: *port,
                path: format!("/{}", path.trim_start_matches('/')),
                tls: rc.get("protocol").and_then(Value::as_str) == Some("HTTPS"),
                codes: rc
                    .get("httpStatusCodesForReady")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_u64()?.try_into().ok())
                            .collect()
                    })
                    .filter(|c: &Vec<u16>| !c.is_empty())
                    .unwrap_or_else(|| vec![200]),
                interval_ms: secs("intervalSeconds", 30.0),
                timeout_ms: secs("timeoutSeconds", 10.0),
            });
        }
        out
    }

    /// A readiness answer. A task that passes stays ready (Marathon stops checking it);
    /// the app's deployment can then move on.
    pub fn on_readiness(
        &mut self,
        task_id: &str,
        ready: bool,
        last: Value,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        t.readiness_last = Some(last);
        if !ready || t.ready {
            return;
        }
        t.ready = true;
        let rec = t.clone();
        let app = rec.app.clone();
        fx.writes.push(put(format!("{KEY_TASKS}{task_id}"), &rec));
        self.reconcile_app(&app, now_ms, fx);
    }

    pub fn locked(&self, app: &str) -> Option<&Deployment> {
        self.dep_by_app
            .get(app)
            .and_then(|id| self.deployments.get(id))
    }

    /// Creates or replaces an app (POST, PUT). Returns (version, deployment id).
    pub fn put_app(
        &mut self,
        mut def: AppDefinition,
        now_ms: u64,
        create_only: bool,
        force: bool,
        fx: &mut Effects,
    ) -> Result<(String, String), Refusal> {
        if let Err(details) = def.validate() {
            return Err(Refusal {
                status: 422,
                body: json!({"message": "Object is not valid", "details": details}),
            });
        }
        let existing = self.apps.get(&def.id).filter(|a| !a.deleting);
        if create_only && existing.is_some() {
            return Err(Refusal::new(
                409,
                format!("An app with id [{}] already exists.", def.id),
            ));
        }
        self.unlocked(&def.id, force)?;
        let version = iso(now_ms);
        def.version = Some(version.clone());
        let previous = existing.map(|a| a.service_ports.clone());
        let service_ports = self.assign_service_ports(&def, previous.as_deref())?;
        let (config_version, action) = match existing {
            Some(a) if !a.def.needs_restart(&def) => (a.config_version.clone(), "ScaleApplication"),
            Some(_) => (version.clone(), "RestartApplication"),
            None => (version.clone(), "StartApplication"),
        };
        let rec = AppRecord {
            def: def.clone(),
            config_version,
            service_ports,
            last_scaling_at: version.clone(),
            last_failure: existing.and_then(|a| a.last_failure.clone()),
            delay_secs: def.backoff_seconds,
            delay_until: 0,
            deleting: false,
            versions: existing
                .map(|a| a.versions.clone())
                .unwrap_or_default()
                .into_iter()
                .chain(std::iter::once(version.clone()))
                .collect(),
        };
        fx.writes.push(put(format!("{KEY_APPS}{}", def.id), &rec));
        fx.writes
            .push(put(format!("{KEY_VERSIONS}{}/{version}", def.id), &def));
        self.apps.insert(def.id.clone(), rec);
        self.events.push(
            json!({"eventType": "api_post_event", "timestamp": version, "appDefinition": def}),
        );
        let dep = self.deployment_for(&def.id, action, &version, fx);
        Ok((version, dep))
    }

    /// Starts deleting an app: its tasks are killed, then it is forgotten.
    pub fn delete_app(
        &mut self,
        id: &str,
        now_ms: u64,
        force: bool,
        fx: &mut Effects,
    ) -> Result<(String, String), Refusal> {
        self.unlocked(id, force)?;
        let a = self.live_app_mut(id)?;
        a.deleting = true;
        let rec = a.clone();
        fx.writes.push(put(format!("{KEY_APPS}{id}"), &rec));
        let version = iso(now_ms);
        let dep = self.deployment_for(id, "StopApplication", &version, fx);
        self.reconcile_app(id, now_ms, fx);
        Ok((version, dep))
    }

    /// Restart: a new config version, so every task is replaced by a rolling deployment.
    pub fn restart_app(
        &mut self,
        id: &str,
        now_ms: u64,
        force: bool,
        fx: &mut Effects,
    ) -> Result<(String, String), Refusal> {
        self.unlocked(id, force)?;
        let a = self.live_app_mut(id)?;
        let version = iso(now_ms);
        a.config_version = version.clone();
        a.def.version = Some(version.clone());
        let rec = a.clone();
        fx.writes.push(put(format!("{KEY_APPS}{id}"), &rec));
        let dep = self.deployment_for(id, "RestartApplication", &version, fx);
        Ok((version, dep))
    }

    /// Kills one task (DELETE /v2/apps/{id}/tasks/{task}); `scale` lowers `instances`.
    pub fn kill_task(
        &mut self,
        task: &str,
        scale: bool,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<TaskRecord, Refusal> {
        let Some(t) = self.tasks.get_mut(task).filter(|t| live(t)) else {
            return Err(Refusal::new(404, format!("Task '{task}' does not exist")));
        };
        t.killing = true;
        let rec = t.clone();
        fx.writes.push(put(format!("{KEY_TASKS}{task}"), &rec));
        self.kill_sent.insert(rec.id.clone(), now_ms);
        fx.kills.push((rec.id.clone(), Some(rec.agent_id.clone())));
        if scale && let Some(a) = self.apps.get_mut(&rec.app) {
            a.def.instances = (a.def.instances - 1).max(0);
            a.last_scaling_at = iso(now_ms);
            let arec = a.clone();
            fx.writes.push(put(format!("{KEY_APPS}{}", rec.app), &arec));
        }
        Ok(rec)
    }

    /// Tasks of `app` that count: alive and not being killed.
    fn insert_task(&mut self, t: TaskRecord) {
        self.by_app
            .entry(t.app.clone())
            .or_default()
            .insert(t.id.clone());
        self.tasks.insert(t.id.clone(), t);
    }

    fn remove_task(&mut self, id: &str) -> Option<TaskRecord> {
        let t = self.tasks.remove(id)?;
        if let Some(ids) = self.by_app.get_mut(&t.app) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_app.remove(&t.app);
            }
        }
        Some(t)
    }

    /// Every task of `app`, live or not yet forgotten.
    pub fn app_tasks<'a>(&'a self, app: &str) -> impl Iterator<Item = &'a TaskRecord> + 'a {
        self.by_app
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Tasks that count as the app's instances: live, not being killed, and not unreachable
    /// for longer than the app's `unreachableStrategy.inactiveAfterSeconds` (those get a
    /// replacement; if they come back, scaling down takes the surplus).
    fn active<'a>(&'a self, app: &str) -> Vec<&'a TaskRecord> {
        let inactive_after = self
            .apps
            .get(app)
            .and_then(|a| a.def.unreachable_after_ms())
            .map(|(inactive, _)| inactive);
        let now = self.now_ms;
        self.app_tasks(app)
            .filter(|t| live(t) && !t.killing)
            .filter(|t| match (t.unreachable_ms, inactive_after) {
                (Some(since), Some(after)) => now.saturating_sub(since) < after,
                _ => true,
            })
            .collect()
    }

    /// How many new tasks `app` wants now (0 while backing off).
    /// Marathon orders a deployment's steps by `dependencies`: while this app deploys, it
    /// starts nothing until every app it depends on (or every app under a group it names)
    /// serves all its instances. Paths are relative to the app's group; a dependency that
    /// names nothing is not waited for.
    pub fn unmet_dependencies(&self, a: &AppRecord) -> Vec<String> {
        if a.def.dependencies.is_empty() || self.locked(&a.def.id).is_none() {
            return Vec::new();
        }
        let parent = a.def.id.rsplit_once('/').map_or("", |(p, _)| p);
        a.def
            .dependencies
            .iter()
            .map(|d| resolve_path(parent, d))
            .filter(|dep| {
                let under = format!("{dep}/");
                let apps: Vec<&AppRecord> = self
                    .apps
                    .values()
                    .filter(|o| o.def.id == *dep || o.def.id.starts_with(&under))
                    .collect();
                apps.iter().any(|o| {
                    let serving = self
                        .app_tasks(&o.def.id)
                        .filter(|t| t.config_version == o.config_version && ready_for(o, t))
                        .count();
                    serving < o.def.instances.max(0) as usize
                })
            })
            .collect()
    }

    pub fn wanted(&self, app: &str, now_ms: u64) -> usize {
        let Some(a) = self.apps.get(app) else {
            return 0;
        };
        if a.deleting || now_ms < a.delay_until || !self.unmet_dependencies(a).is_empty() {
            return 0;
        }
        let active = self.active(app);
        let instances = a.def.instances.max(0) as usize;
        let current = active
            .iter()
            .filter(|t| t.config_version == a.config_version)
            .count();
        // During a rolling replacement the total may exceed `instances` by the over-capacity.
        let mut over =
            (instances as f64 * a.def.upgrade_strategy.maximum_over_capacity).floor() as usize;
        let min_healthy =
            (instances as f64 * a.def.upgrade_strategy.minimum_health_capacity).ceil() as usize;
        if over == 0 && min_healthy >= instances && instances > 0 {
            // Nothing old may go before something new serves: allow one extra, as Marathon.
            over = 1;
        }
        let room = (instances + over).saturating_sub(active.len());
        instances.saturating_sub(current).min(room)
    }

    /// Forgets tasks unreachable for longer than `unreachableStrategy.expungeAfterSeconds`,
    /// and asks for them to be killed should they ever come back.
    fn expunge_unreachable(&mut self, app: &str, now_ms: u64, fx: &mut Effects) {
        let Some((_, expunge)) = self
            .apps
            .get(app)
            .and_then(|a| a.def.unreachable_after_ms())
        else {
            return;
        };
        let gone: Vec<TaskRecord> = self
            .app_tasks(app)
            .filter(|t| {
                t.unreachable_ms
                    .is_some_and(|since| now_ms.saturating_sub(since) >= expunge)
            })
            .cloned()
            .collect();
        for t in gone {
            self.remove_task(&t.id);
            self.kill_sent.remove(&t.id);
            fx.writes
                .push(Write::Delete(format!("{KEY_TASKS}{}", t.id)));
            fx.kills.push((t.id.clone(), Some(t.agent_id.clone())));
            self.events
                .push(json!({"eventType": "instance_changed_event",
                "timestamp": iso(now_ms), "instanceId": t.id, "condition": "Gone",
                "runSpecId": t.app, "agentId": t.agent_id, "host": t.host,
                "runSpecVersion": t.version}));
        }
    }

    /// Kills that scale-down, rolling replacement and deletion call for.
    pub fn reconcile_app(&mut self, app: &str, now_ms: u64, fx: &mut Effects) {
        self.now_ms = self.now_ms.max(now_ms);
        self.expunge_unreachable(app, now_ms, fx);
        // A task that has kept running a while ends the app's back-off.
        let settled = self.app_tasks(app).any(|t| {
            live(t)
                && t.state == TaskState::Running
                && t.started_ms
                    .is_some_and(|s| now_ms.saturating_sub(s) >= BACKOFF_RESET_MS)
        });
        if settled
            && let Some(a) = self.apps.get_mut(app)
            && a.delay_secs > a.def.backoff_seconds
        {
            a.delay_secs = a.def.backoff_seconds;
            let rec = a.clone();
            fx.writes.push(put(format!("{KEY_APPS}{app}"), &rec));
        }
        let Some(a) = self.apps.get(app).cloned() else {
            return;
        };
        let active: Vec<TaskRecord> = self.active(app).into_iter().cloned().collect();
        let mut kill: Vec<String> = Vec::new();
        if a.deleting {
            kill.extend(active.iter().map(|t| t.id.clone()));
        } else {
            let instances = a.def.instances.max(0) as usize;
            let (mut current, old): (Vec<&TaskRecord>, Vec<&TaskRecord>) = active
                .iter()
                .partition(|t| t.config_version == a.config_version);
            // Old tasks go once enough current ones run to keep the minimum healthy.
            let ready = |t: &TaskRecord| ready_for(&a, t);
            let min_healthy =
                (instances as f64 * a.def.upgrade_strategy.minimum_health_capacity).ceil() as usize;
            let mut running_total = current.iter().filter(|t| ready(t)).count()
                + old.iter().filter(|t| ready(t)).count();
            let mut old_sorted = old.clone();
            // Not-yet-running old tasks first: they serve nobody.
            old_sorted.sort_by_key(|t| (ready(t), std::cmp::Reverse(t.staged_ms)));
            let current_ready = current.iter().filter(|t| ready(t)).count();
            for t in old_sorted {
                let is_ready = ready(t);
                if !is_ready || running_total > min_healthy || current_ready >= instances {
                    kill.push(t.id.clone());
                    if is_ready {
                        running_total -= 1;
                    }
                }
            }
            // Scale down: too many current tasks.
            if current.len() > instances {
                match a.def.kill_selection.as_str() {
                    "OLDEST_FIRST" => current.sort_by_key(|t| t.staged_ms),
                    _ => current.sort_by_key(|t| std::cmp::Reverse(t.staged_ms)),
                }
                // Unstarted ones go before running ones either way.
                current.sort_by_key(|t| t.state == TaskState::Running);
                kill.extend(
                    current
                        .iter()
                        .take(current.len() - instances)
                        .map(|t| t.id.clone()),
                );
            }
        }
        for id in kill {
            if let Some(t) = self.tasks.get_mut(&id) {
                t.killing = true;
                let rec = t.clone();
                fx.writes.push(put(format!("{KEY_TASKS}{id}"), &rec));
                self.kill_sent.insert(id.clone(), now_ms);
                fx.kills.push((id, Some(rec.agent_id)));
            }
        }
        self.finish_deployments(app, now_ms, fx);
    }

    /// Ends the app's deployment once it has converged.
    fn finish_deployments(&mut self, app: &str, now_ms: u64, fx: &mut Effects) {
        let deleting = self.apps.get(app).is_some_and(|a| a.deleting);
        if deleting && !self.app_tasks(app).any(live) && self.locked(app).is_none() {
            // Its deployment was dropped with ?force: still forget the app.
            self.forget_app(app, now_ms, fx);
            return;
        }
        let Some(d) = self.locked(app).cloned() else {
            return;
        };
        let done = match self.apps.get(app) {
            None => true,
            Some(a) if a.deleting => !self.app_tasks(app).any(live),
            Some(a) => {
                let instances = a.def.instances.max(0) as usize;
                let tasks: Vec<&TaskRecord> = self.app_tasks(app).filter(|t| live(t)).collect();
                let running_current = tasks
                    .iter()
                    .filter(|t| t.config_version == a.config_version && ready_for(a, t))
                    .count();
                running_current == instances && tasks.len() == instances
            }
        };
        if !done {
            return;
        }
        self.remove_deployment(&d.id, fx);
        self.events.push(
            json!({"eventType": "deployment_step_success", "timestamp": iso(now_ms),
            "plan": {"id": d.id, "version": d.version},
            "currentStep": {"actions": [{"action": d.action, "app": d.app}]}}),
        );
        self.events.push(
            json!({"eventType": "deployment_success", "timestamp": iso(now_ms), "id": d.id,
            "plan": {"id": d.id, "version": d.version}}),
        );
        if self.apps.get(app).is_some_and(|a| a.deleting) {
            self.forget_app(app, now_ms, fx);
        }
    }

    /// Removes a deleted app and its stored versions.
    fn forget_app(&mut self, app: &str, now_ms: u64, fx: &mut Effects) {
        if let Some(a) = self.apps.remove(app) {
            for v in &a.versions {
                fx.writes
                    .push(Write::Delete(format!("{KEY_VERSIONS}{app}/{v}")));
            }
        }
        fx.writes.push(Write::Delete(format!("{KEY_APPS}{app}")));
        self.events.push(
            json!({"eventType": "app_terminated_event", "appId": app, "timestamp": iso(now_ms)}),
        );
    }

    /// Kills asked for earlier whose tasks still live: ask again (the first request may
    /// have been lost with the master or with a restart of init).
    pub fn kill_retries(&mut self, now_ms: u64, fx: &mut Effects) {
        let due: Vec<(String, String)> = self
            .tasks
            .values()
            .filter(|t| t.killing && live(t))
            .filter(|t| {
                self.kill_sent
                    .get(&t.id)
                    .is_none_or(|at| now_ms.saturating_sub(*at) >= KILL_RETRY_MS)
            })
            .map(|t| (t.id.clone(), t.agent_id.clone()))
            .collect();
        for (id, agent) in due {
            self.kill_sent.insert(id.clone(), now_ms);
            fx.kills.push((id, Some(agent)));
        }
    }

    /// Applies a batch of status updates, then settles each affected app once.
    pub fn on_statuses(&mut self, sts: &[TaskStatus], now_ms: u64, fx: &mut Effects) {
        let mut apps = BTreeSet::new();
        for st in sts {
            if let Some(app) = self.apply_status(st, now_ms, fx) {
                apps.insert(app);
            }
        }
        for app in apps {
            self.reconcile_app(&app, now_ms, fx);
        }
    }

    /// A status update from the master. Returns whether the task was ours.
    pub fn on_status(&mut self, st: &TaskStatus, now_ms: u64, fx: &mut Effects) -> bool {
        match self.apply_status(st, now_ms, fx) {
            Some(app) => {
                self.reconcile_app(&app, now_ms, fx);
                true
            }
            None => false,
        }
    }

    /// Records one status; returns the task's app if the task was ours.
    fn apply_status(&mut self, st: &TaskStatus, now_ms: u64, fx: &mut Effects) -> Option<String> {
        let id = st.task_id.to_string();
        self.now_ms = self.now_ms.max(now_ms);
        let t = self.tasks.get_mut(&id)?;
        let was_killing = t.killing;
        t.state = st.state;
        t.unreachable_ms = match st.state {
            TaskState::Unreachable => t.unreachable_ms.or(Some(now_ms)),
            _ => None,
        };
        let health_changed = st.healthy.is_some() && st.healthy != t.healthy;
        if st.healthy.is_some() {
            t.healthy = st.healthy;
        }
        if health_changed {
            let alive = st.healthy == Some(true);
            self.events.push(json!({"eventType": "health_status_changed_event", "timestamp": iso(now_ms),
                "appId": t.app, "taskId": id, "instanceId": id, "version": t.version, "alive": alive}));
            if !alive {
                self.events.push(
                    json!({"eventType": "failed_health_check_event", "timestamp": iso(now_ms),
                    "appId": t.app, "taskId": id, "instanceId": id, "healthCheck": {}}),
                );
            }
        }
        if st.state == TaskState::Running && t.started_at.is_none() {
            t.started_at = Some(iso(now_ms));
            t.started_ms = Some(now_ms);
        }
        let rec = t.clone();
        self.events.push(json!({"eventType": "status_update_event", "timestamp": iso(now_ms),
            "slaveId": rec.agent_id, "taskId": id, "taskStatus": st.state.as_str(), "message": st.message.clone().unwrap_or_default(),
            "appId": rec.app, "host": rec.host, "ports": rec.ports, "version": rec.version}));
        if st.state.is_terminal()
            && st.reason.as_deref()
                == Some(basalt_api::task::reason::TASK_HEALTH_CHECK_STATUS_UPDATED)
        {
            // The agent killed it for failing its health checks (Mesos-native checks).
            self.events
                .push(json!({"eventType": "unhealthy_instance_kill_event",
                "timestamp": iso(now_ms), "appId": rec.app, "taskId": id, "instanceId": id,
                "version": rec.version, "reason": st.message.clone().unwrap_or_default(),
                "host": rec.host, "slaveId": rec.agent_id}));
        }
        let condition = match st.state {
            TaskState::Running => "Running",
            TaskState::Staging => "Staging",
            TaskState::Starting => "Starting",
            TaskState::Killing => "Killing",
            TaskState::Finished => "Finished",
            TaskState::Failed => "Failed",
            TaskState::Killed => "Killed",
            TaskState::Unreachable => "Unreachable",
            TaskState::Gone => "Gone",
            TaskState::Dropped => "Dropped",
            TaskState::Error => "Error",
            _ => "Unknown",
        };
        self.events.push(
            json!({"eventType": "instance_changed_event", "timestamp": iso(now_ms),
            "instanceId": id, "condition": condition, "runSpecId": rec.app, "agentId": rec.agent_id,
            "host": rec.host, "runSpecVersion": rec.version}),
        );
        if st.state.is_terminal() {
            self.remove_task(&id);
            fx.writes.push(Write::Delete(format!("{KEY_TASKS}{id}")));
            let failed = !was_killing && st.state != TaskState::Finished;
            if let Some(a) = self.apps.get_mut(&rec.app) {
                if !was_killing {
                    // Back-off: each unasked-for end delays the next launch further.
                    a.delay_until = now_ms + (a.delay_secs * 1000.0) as u64;
                    a.delay_secs = (a.delay_secs * a.def.backoff_factor)
                        .min(a.def.max_launch_delay_seconds)
                        .max(a.def.backoff_seconds);
                }
                if failed {
                    a.last_failure = Some(
                        json!({"appId": rec.app, "host": rec.host, "message": st.message.clone().unwrap_or_default(),
                        "state": st.state.as_str(), "taskId": id, "timestamp": iso(now_ms), "version": rec.version, "slaveId": rec.agent_id}),
                    );
                }
                let arec = a.clone();
                fx.writes.push(put(format!("{KEY_APPS}{}", rec.app), &arec));
            }
        } else {
            fx.writes.push(put(format!("{KEY_TASKS}{id}"), &rec));
        }
        if st.state.is_terminal() {
            self.kill_sent.remove(&id);
        }
        Some(rec.app)
    }

    /// Task launches that fit `offer`, recorded as staged. Empty when nothing fits.
    pub fn match_offer(&mut self, offer: &Offer, now_ms: u64, fx: &mut Effects) -> Vec<TaskInfo> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut left = match RoleResources::from_wire(&offer.resources) {
            Ok(r) => r.total(),
            Err(_) => return Vec::new(),
        };
        let attrs: BTreeMap<String, String> = offer
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.text.value.clone()))
            .collect();
        let mut out = Vec::new();
        let apps: Vec<String> = self.apps.keys().cloned().collect();
        for app in apps {
            let mut want = self.wanted(&app, now_ms);
            if want == 0 {
                self.offer_stats.remove(&app);
                continue;
            }
            let mut launched = 0usize;
            let mut rejected: Option<&'static str> = None;
            while want > 0 {
                let Some(a) = self.apps.get(&app) else { break };
                if a.def.container.is_some() {
                    // Docker apps wait for the Docker containerizer (a later issue).
                    rejected = Some("NoDockerContainerizer");
                    break;
                }
                let defs = a.def.port_defs();
                let need = Resources::new(a.def.cpus, a.def.mem).with_disk(a.def.disk);
                if !left.contains(&need) {
                    rejected = Some(if left.cpus < need.cpus {
                        "InsufficientCpus"
                    } else if left.mem < need.mem {
                        "InsufficientMemory"
                    } else {
                        "InsufficientDisk"
                    });
                    break;
                }
                let host_ports: Option<Vec<u64>> = if a.def.require_ports {
                    let ps: Vec<u64> = a.service_ports.iter().map(|p| u64::from(*p)).collect();
                    ps.iter()
                        .all(|p| left.ports.contains_port(*p))
                        .then_some(ps)
                } else {
                    left.ports
                        .take(defs.len() as u64)
                        .map(|r| r.iter_ports().collect())
                };
                let Some(host_ports) = host_ports.filter(|p| p.len() == defs.len()) else {
                    rejected = Some("InsufficientPorts");
                    break;
                };
                let siblings: Vec<&TaskRecord> = self.active(&app);
                if !constraints_ok(&a.def.constraints, &offer.hostname, &attrs, &siblings) {
                    rejected = Some("UnfulfilledConstraint");
                    break;
                }
                let ports =
                    Ranges::from_pairs(host_ports.iter().map(|p| (*p, *p))).unwrap_or_default();
                let take = need.clone().with_ports(ports);
                left = left.sub(&take);
                let id = format!("{}.{}", task_id_prefix(&app), uuid::Uuid::new_v4());
                let version = a.def.version.clone().unwrap_or_default();
                let info = task_info(a, &id, offer, &take, &host_ports);
                let rec = TaskRecord {
                    id: id.clone(),
                    app: app.clone(),
                    version,
                    config_version: a.config_version.clone(),
                    agent_id: offer.agent_id.to_string(),
                    host: offer.hostname.clone(),
                    attributes: attrs.clone(),
                    ports: host_ports.iter().map(|p| *p as u16).collect(),
                    service_ports: a.service_ports.clone(),
                    staged_at: iso(now_ms),
                    started_at: None,
                    state: TaskState::Staging,
                    healthy: None,
                    ready: false,
                    readiness_last: None,
                    unreachable_ms: None,
                    killing: false,
                    staged_ms: now_ms,
                    started_ms: None,
                };
                // Persisted before the launch goes out: a restart must know every task.
                fx.writes.push(put(format!("{KEY_TASKS}{id}"), &rec));
                self.insert_task(rec);
                out.push(info);
                want -= 1;
                launched += 1;
            }
            let stats = self.offer_stats.entry(app).or_default();
            stats.processed += 1;
            if launched == 0 {
                stats.unused += 1;
                stats.last_unused_ms = Some(now_ms);
                if let Some(r) = rejected {
                    *stats.rejects.entry(r).or_default() += 1;
                }
                if stats.last_unused.len() >= LAST_UNUSED_OFFERS {
                    stats.last_unused.pop_front();
                }
                stats.last_unused.push_back(json!({
                    "offer": {"id": offer.id, "agentId": offer.agent_id, "hostname": offer.hostname,
                              "resources": offer.resources, "attributes": offer.attributes},
                    "timestamp": iso(now_ms),
                    "reason": rejected.map(|r| vec![r]).unwrap_or_default(),
                }));
            }
        }
        out
    }

    /// Whether any app is waiting for offers (revive) or none is (suppress).
    pub fn needs_offers(&self, now_ms: u64) -> bool {
        self.apps.keys().any(|a| self.wanted(a, now_ms) > 0)
    }

    /// The earliest back-off expiry still ahead, for the shell's timer.
    pub fn next_delay_end(&self, now_ms: u64) -> Option<u64> {
        self.apps
            .values()
            .map(|a| a.delay_until)
            .filter(|d| *d > now_ms)
            .min()
    }
}

fn task_info(
    a: &AppRecord,
    id: &str,
    offer: &Offer,
    res: &Resources,
    host_ports: &[u64],
) -> TaskInfo {
    let def = &a.def;
    let service_ports = &a.service_ports;
    let mut vars: Vec<Variable> = def
        .env
        .iter()
        .filter_map(|(k, v)| {
            v.as_str().map(|s| Variable {
                name: k.clone(),
                value: s.to_owned(),
            })
        })
        .collect();
    let defs = def.port_defs();
    for (i, p) in host_ports.iter().enumerate() {
        if let Some(name) = defs.get(i).and_then(|d| d.name.as_ref()) {
            vars.push(Variable {
                name: format!("PORT_{}", name.to_ascii_uppercase().replace('-', "_")),
                value: p.to_string(),
            });
        }
    }
    for (k, v) in [
        ("MARATHON_APP_ID", def.id.clone()),
        (
            "MARATHON_APP_VERSION",
            def.version.clone().unwrap_or_default(),
        ),
        ("MARATHON_APP_RESOURCE_CPUS", def.cpus.to_string()),
        ("MARATHON_APP_RESOURCE_MEM", def.mem.to_string()),
        ("MARATHON_APP_RESOURCE_DISK", def.disk.to_string()),
        ("MESOS_TASK_ID", id.to_owned()),
    ] {
        vars.push(Variable {
            name: k.into(),
            value: v,
        });
    }
    let labels: Vec<Label> = def
        .labels
        .iter()
        .map(|(k, v)| Label {
            key: k.clone(),
            value: Some(v.clone()),
        })
        .collect();
    // Marathon's `fetch` and legacy `uris`, as the Mesos CommandInfo.URI the agent's fetcher
    // reads.
    let uris: Vec<Value> = def
        .fetch
        .iter()
        .map(|f| {
            let mut u = json!({
                "value": f.get("uri").cloned().unwrap_or(Value::Null),
                "executable": f.get("executable").and_then(Value::as_bool).unwrap_or(false),
                "extract": f.get("extract").and_then(Value::as_bool).unwrap_or(true),
                "cache": f.get("cache").and_then(Value::as_bool).unwrap_or(false),
            });
            if let Some(o) = f.get("outputFile") {
                u["output_file"] = o.clone();
            }
            u
        })
        .chain(
            def.uris
                .iter()
                .map(|u| json!({"value": u, "executable": false, "extract": true})),
        )
        .collect();
    let command = match (&def.cmd, &def.args) {
        (Some(cmd), _) => CommandInfo {
            value: Some(cmd.clone()),
            shell: true,
            environment: Some(Environment { variables: vars }),
            user: def.user.clone(),
            uris,
            ..Default::default()
        },
        (None, Some(args)) => CommandInfo {
            value: args.first().cloned(),
            shell: false,
            arguments: args.clone(),
            environment: Some(Environment { variables: vars }),
            user: def.user.clone(),
            uris,
        },
        (None, None) => CommandInfo::default(),
    };
    let discovery_ports: Vec<Value> = defs
        .iter()
        .zip(host_ports)
        .enumerate()
        .map(|(i, (d, p))| {
            let mut v =
                json!({"number": p, "protocol": d.protocol.split(',').next().unwrap_or("tcp")});
            if let Some(n) = &d.name {
                v["name"] = json!(n);
            }
            if let Some(sp) = service_ports.get(i) {
                v["labels"] = json!({"labels": [
                    {"key": discovery::SERVICE_PORT_LABEL, "value": sp.to_string()}]});
            }
            v
        })
        .collect();
    TaskInfo {
        name: task_name(&def.id),
        task_id: TaskId::new(id),
        agent_id: offer.agent_id.clone(),
        resources: RoleResources::unreserved(res.clone()).to_wire(),
        command: Some(command),
        container: None,
        health_check: def.mesos_health_check(host_ports),
        kill_policy: None,
        labels: (!labels.is_empty()).then_some(Labels { labels }),
        discovery: Some(
            json!({"visibility": "FRAMEWORK", "name": task_name(&def.id),
                   "version": def.version,
                   "labels": {"labels": discovery_labels(def, &defs, host_ports)},
                   "ports": {"ports": discovery_ports}}),
        ),
        data: None,
    }
}

/// The app id, and the first readiness check resolved to this task's port, for consumers
/// of the event stream (the load balancer sends traffic only to ready instances).
fn discovery_labels(
    def: &AppDefinition,
    defs: &[crate::app::PortDefinition],
    host_ports: &[u64],
) -> Vec<Value> {
    let mut labels = vec![json!({"key": discovery::APP_ID_LABEL, "value": def.id})];
    if let Some(rc) = def.readiness_checks.first() {
        let index = rc
            .get("portName")
            .and_then(Value::as_str)
            .and_then(|n| defs.iter().position(|d| d.name.as_deref() == Some(n)))
            .unwrap_or(0);
        let codes: Vec<u16> = rc
            .get("httpStatusCodesForReady")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_u64()?.try_into().ok())
                    .collect()
            })
            .filter(|c: &Vec<u16>| !c.is_empty())
            .unwrap_or_else(|| vec![200]);
        if let Some(port) = host_ports.get(index).and_then(|p| u16::try_from(*p).ok()) {
            let r = discovery::Readiness {
                port,
                path: rc
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_owned(),
                ready_codes: codes,
            };
            if let Ok(v) = serde_json::to_string(&r) {
                labels.push(json!({"key": discovery::READINESS_LABEL, "value": v}));
            }
        }
    }
    labels
}

#[cfg(test)]
mod tests;
