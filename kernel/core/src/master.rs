//! The master state machine. `handle(now, input)` applies one input and returns the
//! effects in the order the shell must perform them; `Persist` comes before anything that
//! makes its change visible.

mod accept;
mod records;
mod views;

#[cfg(test)]
mod tests;

pub use records::{
    AGENT_PREFIX, AgentRecord, FRAMEWORK_PREFIX, FrameworkRecord, REMOVED_FRAMEWORK_PREFIX, StoreOp,
};
pub use views::{ReadKind, Snapshot};

use crate::allocator::Allocator;
use crate::time::Timestamp;
use basalt_api::agent::{
    AckRelay, AgentInfo, AgentTask, KillTask, LaunchTasks, RegisterAgent, RegisterAgentReply,
    StatusUpdateMessage, TeardownFramework,
};
use basalt_api::operator;
use basalt_api::scheduler::{self, Call, CallType, FrameworkInfo};
use basalt_api::task::{TaskLaunch, reason, source};
use basalt_api::{
    AgentId, FrameworkId, OfferId, Resources, RoleResources, TaskId, TaskInfo, TaskState,
    TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

/// What the master does with tasks of an agent that stays unreachable past the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreachablePolicy {
    /// `TASK_LOST` (what pre-partition-aware frameworks expect).
    Lost,
    /// `TASK_GONE`.
    Gone,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// How often agents heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which an agent is unreachable and its tasks `TASK_UNREACHABLE`.
    pub agent_timeout: Duration,
    /// Time an unreachable agent has to come back before it is removed and its tasks end
    /// per `unreachable_policy`.
    pub unreachable_timeout: Duration,
    pub unreachable_policy: UnreachablePolicy,
    /// After a master restart, time agents have to re-register before they are unreachable.
    pub agent_reregister_timeout: Duration,
    /// Batch allocation interval.
    pub allocation_interval: Duration,
    /// Outstanding offers are rescinded after this.
    pub offer_timeout: Duration,
    /// Filter for declines and unused resources without `refuse_seconds`.
    pub default_refuse: Duration,
    /// Unacknowledged status updates are re-sent to the framework after this.
    pub status_retry_interval: Duration,
    /// Heartbeat interval announced to framework and operator subscribers.
    pub subscriber_heartbeat: Duration,
    /// Completed tasks kept per framework (Mesos `max_completed_tasks_per_framework`).
    pub max_completed_tasks: usize,
    pub max_completed_frameworks: usize,
    /// Role weights (`--weights`).
    pub weights: BTreeMap<String, f64>,
    /// Role quotas: (guarantee, limit).
    pub quotas: BTreeMap<String, (Resources, Option<Resources>)>,
    /// Allowed roles; empty allows any.
    pub roles: BTreeSet<String>,
    pub hostname: String,
    pub port: u16,
    pub cluster: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            agent_timeout: Duration::from_secs(30),
            unreachable_timeout: Duration::from_secs(600),
            unreachable_policy: UnreachablePolicy::Lost,
            agent_reregister_timeout: Duration::from_secs(60),
            allocation_interval: Duration::from_millis(100),
            offer_timeout: Duration::from_secs(60),
            default_refuse: Duration::from_secs(5),
            status_retry_interval: Duration::from_secs(10),
            subscriber_heartbeat: Duration::from_secs(15),
            max_completed_tasks: 1000,
            max_completed_frameworks: 50,
            weights: BTreeMap::new(),
            quotas: BTreeMap::new(),
            roles: BTreeSet::new(),
            hostname: "localhost".into(),
            port: 5050,
            cluster: "basalt".into(),
        }
    }
}

/// A token the shell uses to route a `Reply` back to the waiting request.
pub type ReplyTo = u64;
/// A framework's live event connection, minted by the shell.
pub type ConnId = u64;

#[derive(Debug)]
pub enum OperatorInput {
    TeardownFramework(FrameworkId),
    SetWeight {
        role: String,
        weight: f64,
    },
    SetQuota {
        role: String,
        guarantee: Resources,
        limit: Option<Resources>,
    },
    /// Operator says the agent is gone for good: its tasks become `TASK_GONE_BY_OPERATOR`.
    MarkAgentGone(AgentId),
}

#[derive(Debug)]
pub enum Input {
    RegisterAgent {
        req: RegisterAgent,
        reply: ReplyTo,
    },
    AgentHeartbeat {
        agent: AgentId,
        reply: ReplyTo,
    },
    StatusUpdate {
        agent: AgentId,
        msg: StatusUpdateMessage,
        reply: ReplyTo,
    },
    /// The shell could not deliver a launch to the agent.
    LaunchUndeliverable {
        agent: AgentId,
        framework: FrameworkId,
        tasks: Vec<TaskId>,
    },
    Subscribe {
        info: FrameworkInfo,
        conn: ConnId,
        reply: ReplyTo,
    },
    Call {
        stream_id: String,
        call: Box<Call>,
        reply: ReplyTo,
    },
    /// A framework's event connection closed.
    Disconnected {
        conn: ConnId,
    },
    Operator {
        op: OperatorInput,
        reply: ReplyTo,
    },
    /// The shell wants a view for an HTTP read or an operator SUBSCRIBE.
    Read {
        what: ReadKind,
        reply: ReplyTo,
    },
    /// `next_deadline()` has passed.
    Tick,
}

#[derive(Debug)]
pub enum Reply {
    Ok,
    AgentRegistered(RegisterAgentReply),
    /// `pending`: the framework's acknowledgement will be relayed to the agent.
    StatusAck {
        uuid: String,
        pending: bool,
    },
    Subscribed {
        framework_id: FrameworkId,
        stream_id: String,
        conn: ConnId,
    },
    State(Box<Snapshot>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    BadRequest,
    NotFound,
    Conflict,
    Forbidden,
}

/// A refusal the caller can fix; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

impl Rejection {
    fn bad(m: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::BadRequest,
            message: m.into(),
        }
    }
    fn not_found(m: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::NotFound,
            message: m.into(),
        }
    }
    fn conflict(m: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::Conflict,
            message: m.into(),
        }
    }
    fn forbidden(m: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::Forbidden,
            message: m.into(),
        }
    }
}

#[derive(Debug)]
// Actions live for one batch and are moved, never stored; boxing would only add
// allocations on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Action {
    /// Write to the store; durable before any action after it.
    Persist(Vec<StoreOp>),
    Reply {
        to: ReplyTo,
        result: Result<Reply, Rejection>,
    },
    /// Deliver a scheduler event on a framework's connection.
    SendFramework {
        conn: ConnId,
        event: scheduler::Event,
    },
    /// Close a framework's connection (failover or teardown), optionally with a last event.
    CloseFramework {
        conn: ConnId,
        last: Option<scheduler::Event>,
    },
    Launch {
        agent: AgentId,
        url: String,
        msg: LaunchTasks,
    },
    Kill {
        agent: AgentId,
        url: String,
        msg: KillTask,
    },
    Teardown {
        url: String,
        msg: TeardownFramework,
    },
    /// Relay a framework's acknowledgement to the agent that sent the update.
    AckAgent {
        url: String,
        msg: AckRelay,
    },
    Publish(operator::Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentStatus {
    Reachable,
    /// Loaded from the store after a master restart, not re-registered yet.
    Recovered,
    Unreachable,
}

#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub(crate) id: AgentId,
    pub(crate) info: AgentInfo,
    /// What the agent advertises, by role.
    pub(crate) static_total: RoleResources,
    /// Dynamic reservations made through RESERVE: (role, resources) moved out of `*`.
    pub(crate) dynamic: Vec<(String, Resources)>,
    pub(crate) status: AgentStatus,
    pub(crate) registered: Timestamp,
    pub(crate) reregistered: Option<Timestamp>,
    pub(crate) last_seen: Timestamp,
    pub(crate) unreachable_since: Option<Timestamp>,
    pub(crate) tasks: BTreeSet<(FrameworkId, TaskId)>,
    pub(crate) offers: BTreeSet<OfferId>,
}

impl Agent {
    pub(crate) fn total(&self) -> RoleResources {
        let mut t = self.static_total.clone();
        for (role, r) in &self.dynamic {
            t.sub_from(basalt_api::resources::UNRESERVED, r);
            t.add_to(role, r);
        }
        t
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Framework {
    pub(crate) id: FrameworkId,
    pub(crate) info: FrameworkInfo,
    pub(crate) role: String,
    pub(crate) conn: Option<ConnId>,
    pub(crate) stream_id: Option<String>,
    /// Recovered from agents or the store, not re-subscribed yet.
    pub(crate) recovered: bool,
    pub(crate) registered: Timestamp,
    pub(crate) reregistered: Option<Timestamp>,
    pub(crate) disconnected_at: Option<Timestamp>,
    pub(crate) unregistered: Option<Timestamp>,
    pub(crate) suppressed: bool,
    pub(crate) tasks: BTreeSet<TaskId>,
    pub(crate) completed: VecDeque<Task>,
    pub(crate) offers: BTreeSet<OfferId>,
}

impl Framework {
    pub(crate) fn active(&self) -> bool {
        self.conn.is_some()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) framework: FrameworkId,
    pub(crate) agent: AgentId,
    pub(crate) info: TaskInfo,
    pub(crate) role: String,
    pub(crate) resources: RoleResources,
    pub(crate) state: TaskState,
    pub(crate) statuses: Vec<TaskStatus>,
    /// Latest update not yet acknowledged by the framework, and when it was last sent.
    pub(crate) unacked: Option<(TaskStatus, Timestamp)>,
    /// The uuid of the agent's update that `unacked` is: the framework's acknowledgement of
    /// it goes on to the agent, which keeps the update until then.
    pub(crate) relay: Option<String>,
}

impl Task {
    pub(crate) fn latest(&self) -> Option<&TaskStatus> {
        self.statuses.last()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Offer {
    pub(crate) id: OfferId,
    pub(crate) framework: FrameworkId,
    pub(crate) agent: AgentId,
    pub(crate) resources: RoleResources,
    pub(crate) created: Timestamp,
}

/// Counters since this master started (Mesos `/metrics/snapshot` names).
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub(crate) terminal: BTreeMap<TaskState, u64>,
    pub(crate) agent_registrations: u64,
    pub(crate) agent_reregistrations: u64,
    pub(crate) agent_removals: u64,
    pub(crate) agents_unreachable_marked: u64,
    pub(crate) valid_status_updates: u64,
    pub(crate) invalid_status_updates: u64,
    pub(crate) offers_made: u64,
    pub(crate) offers_declined: u64,
    pub(crate) offers_rescinded: u64,
    pub(crate) offers_accepted: u64,
    pub(crate) tasks_launched: u64,
    pub(crate) allocation_runs: u64,
    pub(crate) framework_calls: u64,
}

pub struct Master {
    pub(crate) cfg: Config,
    pub(crate) id: String,
    pub(crate) started: Timestamp,
    pub(crate) elected: Timestamp,
    pub(crate) agents: BTreeMap<AgentId, Agent>,
    pub(crate) frameworks: BTreeMap<FrameworkId, Framework>,
    pub(crate) completed_frameworks: VecDeque<Framework>,
    pub(crate) removed_frameworks: BTreeSet<FrameworkId>,
    pub(crate) tasks: HashMap<(FrameworkId, TaskId), Task>,
    pub(crate) offers: HashMap<OfferId, Offer>,
    pub(crate) streams: HashMap<String, FrameworkId>,
    pub(crate) allocator: Allocator,
    pub(crate) next_agent: u64,
    pub(crate) next_framework: u64,
    pub(crate) next_offer: u64,
    pub(crate) rng: u64,
    pub(crate) next_allocation: Timestamp,
    pub(crate) next_housekeeping: Timestamp,
    pub(crate) counters: Counters,
}

const HOUSEKEEPING: Duration = Duration::from_millis(500);

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Master {
    /// A master with id `id` (unique per start, minted by the shell), recovering the
    /// registry `records` read from the store.
    pub fn new(
        cfg: Config,
        id: String,
        seed: u64,
        now: Timestamp,
        records: Vec<(String, Vec<u8>)>,
    ) -> Self {
        let mut allocator = Allocator::new();
        for (role, w) in &cfg.weights {
            allocator.set_weight(role, *w);
        }
        for (role, (g, l)) in &cfg.quotas {
            allocator.set_quota(role, g.clone(), l.clone());
        }
        let mut m = Master {
            cfg,
            id,
            started: now,
            elected: now,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            completed_frameworks: VecDeque::new(),
            removed_frameworks: BTreeSet::new(),
            tasks: HashMap::new(),
            offers: HashMap::new(),
            streams: HashMap::new(),
            allocator,
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            rng: seed,
            next_allocation: now,
            next_housekeeping: now,
            counters: Counters::default(),
        };
        m.recover(now, records);
        m
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// When a `Tick` next has work.
    pub fn next_deadline(&self) -> Timestamp {
        self.next_allocation.min(self.next_housekeeping)
    }

    /// Applies one input at `now`; returns what the world must do, in order.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::RegisterAgent { req, reply } => {
                let r = self.register_agent(now, req, &mut out);
                out.push(Action::Reply {
                    to: reply,
                    result: r.map(Reply::AgentRegistered),
                });
            }
            Input::AgentHeartbeat { agent, reply } => {
                let r = self.heartbeat(now, &agent);
                out.push(Action::Reply {
                    to: reply,
                    result: r.map(|()| Reply::Ok),
                });
            }
            Input::StatusUpdate { agent, msg, reply } => {
                let r = self.agent_status(now, &agent, msg, &mut out);
                out.push(Action::Reply {
                    to: reply,
                    result: r.map(|(uuid, pending)| Reply::StatusAck { uuid, pending }),
                });
            }
            Input::LaunchUndeliverable {
                agent,
                framework,
                tasks,
            } => {
                for t in tasks {
                    let status = TaskStatus::new(t, TaskState::Dropped, now.as_secs_f64())
                        .with_reason(reason::AGENT_DISCONNECTED)
                        .with_source(source::MASTER)
                        .with_message("the agent could not be reached to launch the task");
                    self.apply_status(now, &framework, Some(&agent), status, &mut out);
                }
            }
            Input::Subscribe { info, conn, reply } => {
                let r = self.subscribe(now, info, conn, &mut out);
                out.push(Action::Reply {
                    to: reply,
                    result: r,
                });
            }
            Input::Call {
                stream_id,
                call,
                reply,
            } => {
                self.counters.framework_calls += 1;
                let r = self.call(now, &stream_id, *call, &mut out);
                out.push(Action::Reply {
                    to: reply,
                    result: r.map(|()| Reply::Ok),
                });
            }
            Input::Disconnected { conn } => self.disconnected(now, conn, &mut out),
            Input::Operator { op, reply } => {
                let r = self.operator(now, op, &mut out);
                out.push(Action::Reply {
                    to: reply,
                    result: r.map(|()| Reply::Ok),
                });
            }
            Input::Read { what, reply } => {
                out.push(Action::Reply {
                    to: reply,
                    result: Ok(Reply::State(Box::new(self.snapshot(now, what)))),
                });
            }
            Input::Tick => self.tick(now, &mut out),
        }
        out
    }

    // ---------------------------------------------------------------- agents

    fn validate_agent_info(info: &AgentInfo) -> Result<RoleResources, Rejection> {
        if info.hostname.trim().is_empty() {
            return Err(Rejection::bad("agent hostname must not be empty"));
        }
        if !(info.url.starts_with("http://") || info.url.starts_with("https://")) {
            return Err(Rejection::bad(format!(
                "agent url '{}' must be http(s)://host:port",
                info.url
            )));
        }
        let total =
            RoleResources::from_wire(&info.resources).map_err(|e| Rejection::bad(e.to_string()))?;
        if total.total().is_empty() {
            return Err(Rejection::bad("agent advertises no resources"));
        }
        Ok(total)
    }

    fn register_agent(
        &mut self,
        now: Timestamp,
        req: RegisterAgent,
        out: &mut Vec<Action>,
    ) -> Result<RegisterAgentReply, Rejection> {
        let total = Self::validate_agent_info(&req.info)?;
        for t in &req.tasks {
            if t.launch.task.task_id != t.status.task_id {
                return Err(Rejection::bad(
                    "a reported task's status is for another task id",
                ));
            }
            RoleResources::from_wire(&t.launch.task.resources)
                .map_err(|e| Rejection::bad(e.to_string()))?;
        }
        let known = req.agent_id.as_ref().and_then(|id| self.agents.get(id));
        if let Some(a) = known
            && a.status == AgentStatus::Reachable
            && a.info.url != req.info.url
        {
            return Err(Rejection::conflict(format!(
                "agent id {} is in use by the agent at {}",
                a.id, a.info.url
            )));
        }
        let (id, fresh) = match req.agent_id.clone() {
            Some(id) => {
                let fresh = !self.agents.contains_key(&id);
                (id, fresh)
            }
            None => {
                self.next_agent += 1;
                (
                    AgentId::new(format!("{}-S{}", self.id, self.next_agent - 1)),
                    true,
                )
            }
        };
        let removed_before = req.agent_id.is_some() && fresh;
        if fresh {
            self.counters.agent_registrations += 1;
        } else {
            self.counters.agent_reregistrations += 1;
        }

        // Forget the previous incarnation's resources in the allocator; tasks are
        // reconciled below against what the agent reports.
        let previous = self.agents.remove(&id);
        if previous.is_some() {
            self.allocator.remove_agent(&id);
        }
        let mut agent = Agent {
            id: id.clone(),
            info: req.info.clone(),
            static_total: total,
            dynamic: previous
                .as_ref()
                .map(|p| p.dynamic.clone())
                .unwrap_or_default(),
            status: AgentStatus::Reachable,
            registered: previous.as_ref().map(|p| p.registered).unwrap_or(now),
            reregistered: previous.as_ref().map(|_| now),
            last_seen: now,
            unreachable_since: None,
            tasks: BTreeSet::new(),
            offers: BTreeSet::new(),
        };
        // Offers on the old incarnation are void.
        if let Some(p) = &previous {
            for oid in p.offers.clone() {
                self.rescind_offer(&oid, false, out);
            }
        }
        out.push(Action::Persist(vec![records::put_agent(&agent)]));

        let mut kill = Vec::new();
        let reported: BTreeMap<(FrameworkId, TaskId), &AgentTask> = req
            .tasks
            .iter()
            .map(|t| {
                (
                    (t.launch.framework_id.clone(), t.launch.task.task_id.clone()),
                    t,
                )
            })
            .collect();
        let mut used: BTreeMap<FrameworkId, RoleResources> = BTreeMap::new();

        // Tasks the master had on this agent that the agent no longer knows.
        if let Some(p) = &previous {
            for key in &p.tasks {
                if !reported.contains_key(key)
                    && let Some(t) = self.tasks.get(key)
                    && !t.state.is_terminal()
                {
                    let st = TaskStatus::new(key.1.clone(), TaskState::Lost, now.as_secs_f64())
                        .with_reason(reason::AGENT_RESTARTED)
                        .with_source(source::MASTER)
                        .with_message("the re-registered agent does not know this task");
                    self.apply_status_inner(now, key, st, false, out);
                }
            }
        }

        for (key, t) in reported {
            let was_terminal = self.tasks.get(&key).map(|t| t.state.is_terminal());
            let framework_gone = self.removed_frameworks.contains(&key.0);
            if was_terminal == Some(true)
                || framework_gone
                || (removed_before && !self.tasks.contains_key(&key))
            {
                // Reported lost/gone while the agent was away, or its framework is gone.
                kill.push(key.1.clone());
                continue;
            }
            let completed = self
                .frameworks
                .get(&key.0)
                .is_some_and(|f| f.completed.iter().any(|c| c.info.task_id == key.1));
            if t.status.state.is_terminal() && completed {
                // Its end was acknowledged while the agent was away (the relay could not
                // reach it): the agent's resent update is answered as done.
                continue;
            }
            self.ensure_framework(now, &t.launch, out);
            let res = RoleResources::from_wire(&t.launch.task.resources).unwrap_or_default();
            match self.tasks.get_mut(&key) {
                Some(task) => {
                    task.agent = id.clone();
                }
                None => {
                    let task = Task {
                        framework: key.0.clone(),
                        agent: id.clone(),
                        info: t.launch.task.clone(),
                        role: t.launch.role.clone(),
                        resources: res.clone(),
                        // A task that ended while the master was away is known as not yet
                        // ended: its terminal update, which the agent still holds, must go
                        // through to the framework like any other.
                        state: if t.status.state.is_terminal() {
                            TaskState::Staging
                        } else {
                            t.status.state
                        },
                        statuses: if t.status.state.is_terminal() {
                            Vec::new()
                        } else {
                            vec![t.status.clone()]
                        },
                        unacked: None,
                        relay: None,
                    };
                    out.push(Action::Publish(views::task_added(&task)));
                    self.tasks.insert(key.clone(), task);
                    if let Some(f) = self.frameworks.get_mut(&key.0) {
                        f.tasks.insert(key.1.clone());
                    }
                }
            }
            agent.tasks.insert(key.clone());
            let task = self.tasks.get(&key).map(|t| (t.state, t.resources.clone()));
            if let Some((state, res)) = task {
                if !state.is_terminal() {
                    let e = used.entry(key.0.clone()).or_default();
                    *e = e.add(&res);
                }
                // Tasks that went unreachable come back with the agent's view.
                if (state == TaskState::Unreachable || state != t.status.state)
                    && !t.status.state.is_terminal()
                {
                    let mut st = t.status.clone();
                    st.reason = Some(reason::AGENT_REREGISTERED.into());
                    st.uuid = None;
                    st.timestamp = now.as_secs_f64();
                    self.apply_status_inner(now, &key, st, true, out);
                }
            }
        }

        let total = agent.total();
        let info_clone = agent.clone();
        self.agents.insert(id.clone(), agent);
        self.allocator
            .add_agent(id.clone(), total, used.into_iter().collect());
        if previous.is_none() || removed_before {
            out.push(Action::Publish(views::agent_added(&info_clone)));
        }
        tracing::info!(agent_id = %id, hostname = %req.info.hostname, reregistered = !fresh, "agent registered");
        Ok(RegisterAgentReply {
            agent_id: id,
            master_id: self.id.clone(),
            heartbeat_interval_secs: self.cfg.heartbeat_interval.as_secs_f64(),
            kill,
        })
    }

    /// Makes sure a framework named by a re-registering agent's task exists, as a
    /// recovered, inactive one until it re-subscribes.
    fn ensure_framework(&mut self, now: Timestamp, launch: &TaskLaunch, out: &mut Vec<Action>) {
        if self.frameworks.contains_key(&launch.framework_id) {
            return;
        }
        let info = FrameworkInfo {
            name: launch.framework_name.clone(),
            id: Some(launch.framework_id.clone()),
            role: Some(launch.role.clone()),
            ..Default::default()
        };
        let f = Framework {
            id: launch.framework_id.clone(),
            role: launch.role.clone(),
            info,
            conn: None,
            stream_id: None,
            recovered: true,
            registered: now,
            reregistered: None,
            disconnected_at: Some(now),
            unregistered: None,
            suppressed: false,
            tasks: BTreeSet::new(),
            completed: VecDeque::new(),
            offers: BTreeSet::new(),
        };
        self.allocator
            .add_framework(f.id.clone(), f.role.clone(), false);
        out.push(Action::Publish(views::framework_event(
            operator::EventType::FrameworkAdded,
            &f,
            now,
        )));
        self.frameworks.insert(f.id.clone(), f);
    }

    fn heartbeat(&mut self, now: Timestamp, agent: &AgentId) -> Result<(), Rejection> {
        match self.agents.get_mut(agent) {
            Some(a) if a.status == AgentStatus::Reachable => {
                a.last_seen = now;
                Ok(())
            }
            // Unreachable or recovered agents must re-register so their tasks are reconciled.
            Some(_) => Err(Rejection::not_found(format!(
                "agent {agent} must re-register"
            ))),
            None => Err(Rejection::not_found(format!(
                "agent {agent} is not registered"
            ))),
        }
    }

    fn agent_status(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        msg: StatusUpdateMessage,
        out: &mut Vec<Action>,
    ) -> Result<(String, bool), Rejection> {
        let uuid = msg
            .status
            .uuid
            .clone()
            .ok_or_else(|| Rejection::bad("a status update from an agent needs a uuid"))?;
        let a = self
            .agents
            .get_mut(agent)
            .ok_or_else(|| Rejection::not_found(format!("agent {agent} is not registered")))?;
        if a.status != AgentStatus::Reachable {
            return Err(Rejection::not_found(format!(
                "agent {agent} must re-register"
            )));
        }
        a.last_seen = now;
        let url = a.info.url.clone();
        let key = (msg.framework_id.clone(), msg.status.task_id.clone());
        let known = self.tasks.get(&key).map(|t| (t.agent == *agent, t.state));
        match known {
            Some((true, state)) if state.is_terminal() => {
                // The agent sending again the terminal update its framework has not
                // acknowledged yet: still pending.
                if let Some(t) = self.tasks.get_mut(&key)
                    && t.unacked
                        .as_ref()
                        .is_some_and(|(s, _)| s.uuid.as_deref() == Some(uuid.as_str()))
                {
                    t.relay = Some(uuid.clone());
                    return Ok((uuid, true));
                }
                // Duplicate or late update after the master ended the task: acknowledge so
                // the agent stops retrying, and make sure the task is not left running.
                if !msg.status.state.is_terminal() {
                    out.push(Action::Kill {
                        agent: agent.clone(),
                        url,
                        msg: KillTask {
                            framework_id: key.0.clone(),
                            task_id: key.1.clone(),
                            grace_period_secs: None,
                        },
                    });
                }
                self.counters.invalid_status_updates += 1;
            }
            Some((true, _)) => {
                if let Some(t) = self.tasks.get_mut(&key) {
                    // The update still waiting for its framework, sent again: nothing to
                    // apply or forward again (the master's own resend does that).
                    if t.unacked
                        .as_ref()
                        .is_some_and(|(s, _)| s.uuid.as_deref() == Some(uuid.as_str()))
                    {
                        t.relay = Some(uuid.clone());
                        return Ok((uuid, true));
                    }
                    // An update applied before (a replay after the agent lost its ack
                    // record): never apply an older state again.
                    if t.statuses
                        .iter()
                        .any(|s| s.uuid.as_deref() == Some(uuid.as_str()))
                    {
                        return Ok((uuid, false));
                    }
                }
                self.counters.valid_status_updates += 1;
                let mut st = msg.status;
                st.agent_id = Some(agent.clone());
                self.apply_status_inner(now, &key, st, true, out);
                // Forwarded and awaiting the framework: the agent hears of its ack later.
                if let Some(t) = self.tasks.get_mut(&key)
                    && t.unacked
                        .as_ref()
                        .is_some_and(|(s, _)| s.uuid.as_deref() == Some(uuid.as_str()))
                {
                    t.relay = Some(uuid.clone());
                    return Ok((uuid, true));
                }
            }
            _ => {
                // A task we do not know on this agent: it must not run.
                self.counters.invalid_status_updates += 1;
                if !msg.status.state.is_terminal() {
                    out.push(Action::Kill {
                        agent: agent.clone(),
                        url,
                        msg: KillTask {
                            framework_id: key.0.clone(),
                            task_id: key.1.clone(),
                            grace_period_secs: None,
                        },
                    });
                }
            }
        }
        Ok((uuid, false))
    }

    /// Tells the agent that its update `uuid` of task `key` is acknowledged.
    fn relay_ack(
        &self,
        key: &(FrameworkId, TaskId),
        agent: &AgentId,
        uuid: String,
        out: &mut Vec<Action>,
    ) {
        if let Some(a) = self.agents.get(agent)
            && a.status == AgentStatus::Reachable
        {
            out.push(Action::AckAgent {
                url: a.info.url.clone(),
                msg: AckRelay {
                    framework_id: key.0.clone(),
                    task_id: key.1.clone(),
                    uuid,
                },
            });
        }
    }

    /// Applies a status the master itself generates, to a task it knows.
    fn apply_status(
        &mut self,
        now: Timestamp,
        framework: &FrameworkId,
        agent: Option<&AgentId>,
        status: TaskStatus,
        out: &mut Vec<Action>,
    ) {
        let key = (framework.clone(), status.task_id.clone());
        if let Some(t) = self.tasks.get(&key) {
            if agent.is_some_and(|a| *a != t.agent) {
                return;
            }
            self.apply_status_inner(now, &key, status, true, out);
        }
    }

    /// The one place a task changes state: bookkeeping, event, framework update.
    fn apply_status_inner(
        &mut self,
        now: Timestamp,
        key: &(FrameworkId, TaskId),
        mut status: TaskStatus,
        forward: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        if status.agent_id.is_none() {
            status.agent_id = Some(task.agent.clone());
        }
        if status.timestamp == 0.0 {
            status.timestamp = now.as_secs_f64();
        }
        // Health is sticky across updates that don't mention it.
        if status.healthy.is_none() {
            status.healthy = task.latest().and_then(|s| s.healthy);
        }
        let changed = task.state != status.state
            || task.latest().map(|s| s.healthy) != Some(status.healthy)
            || task.latest().map(|s| &s.message) != Some(&status.message);
        task.state = status.state;
        // Keep the status history short: the first of each state, and the latest.
        if task.statuses.last().map(|s| s.state) == Some(status.state) {
            if let Some(l) = task.statuses.last_mut() {
                *l = status.clone();
            }
        } else {
            task.statuses.push(status.clone());
            if task.statuses.len() > 16 {
                task.statuses.remove(1);
            }
        }
        if changed || status.state.is_terminal() {
            out.push(Action::Publish(views::task_updated(&key.0, &status)));
        }
        if forward && let Some(f) = self.frameworks.get(&key.0) {
            if status.uuid.is_some() {
                task.unacked = Some((status.clone(), now));
            }
            if let Some(conn) = f.conn {
                out.push(Action::SendFramework {
                    conn,
                    event: scheduler::Event::update(status.clone()),
                });
            }
        }
        if status.state.is_terminal() {
            let task = task.clone();
            *self.counters.terminal.entry(status.state).or_default() += 1;
            self.allocator.recover(&task.agent, &key.0, &task.resources);
            if let Some(a) = self.agents.get_mut(&task.agent) {
                a.tasks.remove(key);
            }
            // A terminal task leaves the live set once acknowledged (or right away when no
            // acknowledgement is expected); the framework's completed list keeps it.
            if task.unacked.is_none() {
                self.complete_task(key);
            }
        }
    }

    fn complete_task(&mut self, key: &(FrameworkId, TaskId)) {
        let Some(task) = self.tasks.remove(key) else {
            return;
        };
        if let Some(f) = self.frameworks.get_mut(&key.0) {
            f.tasks.remove(&key.1);
            f.completed.push_back(task);
            while f.completed.len() > self.cfg.max_completed_tasks {
                f.completed.pop_front();
            }
        }
    }

    fn mark_unreachable(&mut self, now: Timestamp, id: &AgentId, out: &mut Vec<Action>) {
        let Some(a) = self.agents.get_mut(id) else {
            return;
        };
        if a.status == AgentStatus::Unreachable {
            return;
        }
        a.status = AgentStatus::Unreachable;
        a.unreachable_since = Some(now);
        let tasks: Vec<_> = a.tasks.iter().cloned().collect();
        let offers: Vec<_> = a.offers.iter().cloned().collect();
        let rec = records::put_agent(a);
        self.counters.agents_unreachable_marked += 1;
        tracing::warn!(agent_id = %id, "agent unreachable");
        out.push(Action::Persist(vec![rec]));
        self.allocator.activate_agent(id, false);
        for o in offers {
            self.rescind_offer(&o, true, out);
        }
        for key in tasks {
            let st = TaskStatus::new(key.1.clone(), TaskState::Unreachable, now.as_secs_f64())
                .with_reason(reason::AGENT_REMOVED)
                .with_source(source::MASTER)
                .with_message("the agent is unreachable");
            self.apply_status_inner(now, &key, st, true, out);
        }
        for f in self.frameworks.values() {
            if let Some(conn) = f.conn {
                out.push(Action::SendFramework {
                    conn,
                    event: scheduler::Event::failure(id.clone()),
                });
            }
        }
    }

    fn remove_agent(
        &mut self,
        now: Timestamp,
        id: &AgentId,
        state: TaskState,
        why: &str,
        out: &mut Vec<Action>,
    ) {
        let Some(a) = self.agents.get(id) else { return };
        let tasks: Vec<_> = a.tasks.iter().cloned().collect();
        let offers: Vec<_> = a.offers.iter().cloned().collect();
        out.push(Action::Persist(vec![StoreOp::Delete(records::agent_key(
            id,
        ))]));
        for o in offers {
            self.rescind_offer(&o, true, out);
        }
        for key in tasks {
            let st = TaskStatus::new(key.1.clone(), state, now.as_secs_f64())
                .with_reason(reason::AGENT_REMOVED)
                .with_source(source::MASTER)
                .with_message(why);
            // Unreachable tasks can still end: force the transition from Unreachable.
            self.apply_status_inner(now, &key, st, true, out);
        }
        self.allocator.remove_agent(id);
        self.agents.remove(id);
        self.counters.agent_removals += 1;
        out.push(Action::Publish(views::agent_removed(id)));
        tracing::warn!(agent_id = %id, "agent removed");
    }

    // ---------------------------------------------------------------- frameworks

    fn subscribe(
        &mut self,
        now: Timestamp,
        mut info: FrameworkInfo,
        conn: ConnId,
        out: &mut Vec<Action>,
    ) -> Result<Reply, Rejection> {
        if info.name.trim().is_empty() {
            return Err(Rejection::bad("framework_info.name must not be empty"));
        }
        if !info.failover_timeout.is_finite() || info.failover_timeout < 0.0 {
            return Err(Rejection::bad(
                "framework_info.failover_timeout must be a non-negative number",
            ));
        }
        let role = info.effective_role();
        if role.is_empty()
            || role.contains('/')
            || role.starts_with('.')
            || role.contains(char::is_whitespace)
        {
            return Err(Rejection::bad(format!("'{role}' is not a valid role")));
        }
        if !self.cfg.roles.is_empty() && role != "*" && !self.cfg.roles.contains(&role) {
            return Err(Rejection::forbidden(format!(
                "role '{role}' is not allowed on this cluster"
            )));
        }
        if let Some(id) = &info.id
            && self.removed_frameworks.contains(id)
        {
            return Err(Rejection::forbidden(format!(
                "framework {id} has been torn down"
            )));
        }
        let stream_id = format!("{}-stream-{}", self.id, conn);
        let id = match info.id.clone() {
            Some(id) => id,
            None => {
                self.next_framework += 1;
                FrameworkId::new(format!("{}-{:04}", self.id, self.next_framework - 1))
            }
        };
        info.id = Some(id.clone());
        info.role = Some(role.clone());
        if info.user.is_empty() {
            info.user = "root".into();
        }
        let existing = self.frameworks.get_mut(&id);
        let fw = match existing {
            Some(f) => {
                if f.role != role && !f.tasks.is_empty() {
                    return Err(Rejection::bad(format!(
                        "framework {id} cannot change role from '{}' to '{role}' while it has tasks",
                        f.role
                    )));
                }
                if let Some(old) = f.conn.take() {
                    out.push(Action::CloseFramework {
                        conn: old,
                        last: Some(scheduler::Event::error("Framework failed over")),
                    });
                }
                if let Some(s) = f.stream_id.take() {
                    self.streams.remove(&s);
                }
                f.info = info;
                f.role = role.clone();
                f.conn = Some(conn);
                f.stream_id = Some(stream_id.clone());
                f.recovered = false;
                f.reregistered = Some(now);
                f.disconnected_at = None;
                f.suppressed = false;
                self.allocator.activate_framework(&id, true);
                self.allocator.revive(&id);
                out.push(Action::Persist(vec![records::put_framework(f)]));
                out.push(Action::Publish(views::framework_event(
                    operator::EventType::FrameworkUpdated,
                    f,
                    now,
                )));
                tracing::info!(framework_id = %id, "framework re-subscribed");
                id.clone()
            }
            None => {
                let f = Framework {
                    id: id.clone(),
                    info,
                    role: role.clone(),
                    conn: Some(conn),
                    stream_id: Some(stream_id.clone()),
                    recovered: false,
                    registered: now,
                    reregistered: None,
                    disconnected_at: None,
                    unregistered: None,
                    suppressed: false,
                    tasks: BTreeSet::new(),
                    completed: VecDeque::new(),
                    offers: BTreeSet::new(),
                };
                out.push(Action::Persist(vec![records::put_framework(&f)]));
                out.push(Action::Publish(views::framework_event(
                    operator::EventType::FrameworkAdded,
                    &f,
                    now,
                )));
                self.allocator.add_framework(id.clone(), role.clone(), true);
                tracing::info!(framework_id = %id, name = %f.info.name, role = %role, "framework subscribed");
                self.frameworks.insert(id.clone(), f);
                id.clone()
            }
        };
        self.streams.insert(stream_id.clone(), fw.clone());
        out.push(Action::SendFramework {
            conn,
            event: scheduler::Event::subscribed(
                fw.clone(),
                self.cfg.subscriber_heartbeat.as_secs_f64(),
            ),
        });
        // Updates the framework never acknowledged are sent again on the new connection.
        let pending: Vec<TaskStatus> = self
            .tasks
            .values()
            .filter(|t| t.framework == fw)
            .filter_map(|t| t.unacked.as_ref().map(|(s, _)| s.clone()))
            .collect();
        for s in pending {
            out.push(Action::SendFramework {
                conn,
                event: scheduler::Event::update(s),
            });
        }
        self.next_allocation = self.next_allocation.min(now);
        Ok(Reply::Subscribed {
            framework_id: fw,
            stream_id,
            conn,
        })
    }

    fn disconnected(&mut self, now: Timestamp, conn: ConnId, out: &mut Vec<Action>) {
        let Some(f) = self.frameworks.values_mut().find(|f| f.conn == Some(conn)) else {
            return;
        };
        f.conn = None;
        if let Some(s) = f.stream_id.take() {
            self.streams.remove(&s);
        }
        f.disconnected_at = Some(now);
        let id = f.id.clone();
        let offers: Vec<_> = f.offers.iter().cloned().collect();
        tracing::info!(framework_id = %id, "framework disconnected");
        self.allocator.activate_framework(&id, false);
        for o in offers {
            self.rescind_offer(&o, false, out);
        }
        if let Some(f) = self.frameworks.get(&id) {
            out.push(Action::Publish(views::framework_event(
                operator::EventType::FrameworkUpdated,
                f,
                now,
            )));
            if f.info.failover_timeout <= 0.0 {
                self.teardown(now, &id, out);
            }
        }
    }

    fn teardown(&mut self, now: Timestamp, id: &FrameworkId, out: &mut Vec<Action>) {
        let Some(f) = self.frameworks.get(id) else {
            return;
        };
        let offers: Vec<_> = f.offers.iter().cloned().collect();
        let conn = f.conn;
        if let Some(s) = f.stream_id.clone() {
            self.streams.remove(&s);
        }
        out.push(Action::Persist(vec![
            StoreOp::Delete(records::framework_key(id)),
            records::put_removed_framework(id),
        ]));
        for o in offers {
            self.rescind_offer(&o, false, out);
        }
        // Kill every task on the agents that run them.
        let mut agents: BTreeSet<AgentId> = BTreeSet::new();
        let keys: Vec<_> = self.tasks.keys().filter(|k| k.0 == *id).cloned().collect();
        for key in &keys {
            if let Some(t) = self.tasks.get(key) {
                agents.insert(t.agent.clone());
            }
        }
        for a in agents {
            if let Some(agent) = self.agents.get(&a)
                && agent.status == AgentStatus::Reachable
            {
                out.push(Action::Teardown {
                    url: agent.info.url.clone(),
                    msg: TeardownFramework {
                        framework_id: id.clone(),
                    },
                });
            }
        }
        // Updates the framework will never acknowledge now: the agents may let them go.
        let relays: Vec<_> = keys
            .iter()
            .filter_map(|k| {
                let t = self.tasks.get(k)?;
                Some((k.clone(), t.agent.clone(), t.relay.clone()?))
            })
            .collect();
        for (key, agent, uuid) in relays {
            self.relay_ack(&key, &agent, uuid, out);
        }
        for key in keys {
            let st = TaskStatus::new(key.1.clone(), TaskState::Killed, now.as_secs_f64())
                .with_reason(reason::FRAMEWORK_REMOVED)
                .with_source(source::MASTER)
                .with_message("the framework was torn down");
            self.apply_status_inner(now, &key, st, false, out);
            if let Some(a) = self.tasks.get(&key).map(|t| t.agent.clone())
                && let Some(agent) = self.agents.get_mut(&a)
            {
                agent.tasks.remove(&key);
            }
            self.complete_task(&key);
        }
        if let Some(conn) = conn {
            out.push(Action::CloseFramework {
                conn,
                last: Some(scheduler::Event::error("Framework was torn down")),
            });
        }
        self.allocator.remove_framework(id);
        if let Some(mut f) = self.frameworks.remove(id) {
            f.conn = None;
            f.unregistered = Some(now);
            out.push(Action::Publish(operator::Event {
                framework_removed: Some(operator::FrameworkRemoved {
                    framework_info: f.info.clone(),
                }),
                ..operator::Event::bare(operator::EventType::FrameworkRemoved)
            }));
            self.completed_frameworks.push_back(f);
            while self.completed_frameworks.len() > self.cfg.max_completed_frameworks {
                self.completed_frameworks.pop_front();
            }
        }
        self.removed_frameworks.insert(id.clone());
        tracing::info!(framework_id = %id, "framework torn down");
    }

    fn call(
        &mut self,
        now: Timestamp,
        stream_id: &str,
        call: Call,
        out: &mut Vec<Action>,
    ) -> Result<(), Rejection> {
        let fw =
            self.streams.get(stream_id).cloned().ok_or_else(|| {
                Rejection::bad("unknown or stale Mesos-Stream-Id: subscribe first")
            })?;
        if let Some(id) = &call.framework_id
            && *id != fw
        {
            return Err(Rejection::bad(format!(
                "framework_id {id} does not match the subscription's framework {fw}"
            )));
        }
        match call.kind {
            CallType::Subscribe => Err(Rejection::bad("SUBSCRIBE must open a new connection")),
            CallType::Teardown => {
                self.teardown(now, &fw, out);
                Ok(())
            }
            CallType::Accept => {
                let a = call
                    .accept
                    .ok_or_else(|| Rejection::bad("ACCEPT needs 'accept'"))?;
                self.accept(now, &fw, a, out)
            }
            CallType::Decline => {
                let d = call
                    .decline
                    .ok_or_else(|| Rejection::bad("DECLINE needs 'decline'"))?;
                let refuse = self.refuse(d.filters.as_ref())?;
                self.check_offers(&fw, &d.offer_ids)?;
                for oid in &d.offer_ids {
                    if let Some(o) = self.take_offer(oid) {
                        self.counters.offers_declined += 1;
                        self.allocator.recover(&o.agent, &fw, &o.resources);
                        self.allocator.add_filter(&fw, &o.agent, now.plus(refuse));
                    }
                }
                Ok(())
            }
            CallType::Revive => {
                if let Some(f) = self.frameworks.get_mut(&fw) {
                    f.suppressed = false;
                }
                self.allocator.revive(&fw);
                self.next_allocation = self.next_allocation.min(now);
                Ok(())
            }
            CallType::Suppress => {
                if let Some(f) = self.frameworks.get_mut(&fw) {
                    f.suppressed = true;
                }
                self.allocator.suppress(&fw);
                Ok(())
            }
            CallType::Kill => {
                let k = call
                    .kill
                    .ok_or_else(|| Rejection::bad("KILL needs 'kill'"))?;
                self.kill(now, &fw, k, out)
            }
            CallType::Acknowledge => {
                let a = call
                    .acknowledge
                    .ok_or_else(|| Rejection::bad("ACKNOWLEDGE needs 'acknowledge'"))?;
                let key = (fw.clone(), a.task_id.clone());
                let task = self.tasks.get_mut(&key).ok_or_else(|| {
                    Rejection::not_found(format!("task {} is unknown", a.task_id))
                })?;
                match &task.unacked {
                    Some((s, _)) if s.uuid.as_deref() == Some(a.uuid.as_str()) => {
                        task.unacked = None;
                        let relay = task
                            .relay
                            .take()
                            .filter(|u| *u == a.uuid)
                            .map(|u| (task.agent.clone(), u));
                        let terminal = task.state.is_terminal();
                        if let Some((agent, uuid)) = relay {
                            self.relay_ack(&key, &agent, uuid, out);
                        }
                        if terminal {
                            self.complete_task(&key);
                        }
                        Ok(())
                    }
                    // An old update's ack: harmless.
                    _ => Ok(()),
                }
            }
            CallType::Reconcile => {
                let r = call.reconcile.unwrap_or_default();
                self.reconcile(now, &fw, r, out);
                Ok(())
            }
            CallType::Shutdown | CallType::Message | CallType::Request => Err(Rejection::bad(
                format!("{:?} is not supported by this master", call.kind),
            )),
        }
    }

    fn refuse(&self, f: Option<&scheduler::Filters>) -> Result<Duration, Rejection> {
        match f.and_then(|f| f.refuse_seconds) {
            None => Ok(self.cfg.default_refuse),
            Some(s) if !s.is_finite() || s < 0.0 => Err(Rejection::bad(
                "filters.refuse_seconds must be a non-negative number",
            )),
            // Mesos caps at a year; anything longer is "forever" in practice.
            Some(s) => Ok(Duration::from_secs_f64(s.min(365.0 * 86400.0))),
        }
    }

    fn check_offers(&self, fw: &FrameworkId, ids: &[OfferId]) -> Result<(), Rejection> {
        if ids.is_empty() {
            return Err(Rejection::bad("offer_ids must not be empty"));
        }
        let mut seen = BTreeSet::new();
        for id in ids {
            if !seen.insert(id) {
                return Err(Rejection::bad(format!("offer {id} is listed twice")));
            }
            match self.offers.get(id) {
                Some(o) if o.framework == *fw => {}
                _ => {
                    return Err(Rejection::bad(format!(
                        "offer {id} is not outstanding for framework {fw} (it was never made, or was \
                         already used, declined or rescinded)"
                    )));
                }
            }
        }
        Ok(())
    }

    fn take_offer(&mut self, id: &OfferId) -> Option<Offer> {
        let o = self.offers.remove(id)?;
        if let Some(a) = self.agents.get_mut(&o.agent) {
            a.offers.remove(id);
        }
        if let Some(f) = self.frameworks.get_mut(&o.framework) {
            f.offers.remove(id);
        }
        Some(o)
    }

    fn rescind_offer(&mut self, id: &OfferId, notify: bool, out: &mut Vec<Action>) {
        let Some(o) = self.take_offer(id) else { return };
        self.counters.offers_rescinded += 1;
        self.allocator.recover(&o.agent, &o.framework, &o.resources);
        if notify && let Some(conn) = self.frameworks.get(&o.framework).and_then(|f| f.conn) {
            out.push(Action::SendFramework {
                conn,
                event: scheduler::Event::rescind(id.clone()),
            });
        }
    }

    fn kill(
        &mut self,
        now: Timestamp,
        fw: &FrameworkId,
        k: scheduler::Kill,
        out: &mut Vec<Action>,
    ) -> Result<(), Rejection> {
        let key = (fw.clone(), k.task_id.clone());
        let Some(task) = self.tasks.get(&key) else {
            return Err(Rejection::not_found(format!(
                "task {} of framework {fw} is unknown",
                k.task_id
            )));
        };
        if task.state.is_terminal() {
            return Ok(());
        }
        let agent = task.agent.clone();
        let grace = k
            .kill_policy
            .and_then(|p| p.grace_period)
            .or_else(|| task.info.kill_policy.and_then(|p| p.grace_period))
            .map(|d| d.nanoseconds.max(0) as f64 / 1e9);
        match self.agents.get(&agent) {
            Some(a) if a.status == AgentStatus::Reachable => {
                out.push(Action::Kill {
                    agent: agent.clone(),
                    url: a.info.url.clone(),
                    msg: KillTask {
                        framework_id: fw.clone(),
                        task_id: k.task_id,
                        grace_period_secs: grace,
                    },
                });
            }
            Some(_) => {
                // The agent is away: the kill is re-issued when it re-registers and reports
                // the task (the master then answers with `kill` for terminal tasks); tell
                // the framework the task is unreachable.
                let st = self.tasks.get(&key).and_then(|t| t.latest().cloned());
                if let (Some(mut st), Some(conn)) =
                    (st, self.frameworks.get(fw).and_then(|f| f.conn))
                {
                    st.uuid = None;
                    st.reason = Some(reason::RECONCILIATION.into());
                    out.push(Action::SendFramework {
                        conn,
                        event: scheduler::Event::update(st),
                    });
                }
            }
            None => {
                let st = TaskStatus::new(key.1.clone(), TaskState::Lost, now.as_secs_f64())
                    .with_reason(reason::AGENT_UNKNOWN)
                    .with_source(source::MASTER);
                self.apply_status_inner(now, &key, st, true, out);
            }
        }
        Ok(())
    }

    fn reconcile(
        &mut self,
        now: Timestamp,
        fw: &FrameworkId,
        r: scheduler::Reconcile,
        out: &mut Vec<Action>,
    ) {
        let Some(conn) = self.frameworks.get(fw).and_then(|f| f.conn) else {
            return;
        };
        let ts = now.as_secs_f64();
        let mut send = |mut st: TaskStatus| {
            st.uuid = None;
            st.reason = Some(reason::RECONCILIATION.into());
            st.source = Some(source::MASTER.into());
            st.timestamp = ts;
            out.push(Action::SendFramework {
                conn,
                event: scheduler::Event::update(st),
            });
        };
        if r.tasks.is_empty() {
            let mut statuses: Vec<_> = self
                .tasks
                .values()
                .filter(|t| t.framework == *fw && !t.state.is_terminal())
                .filter_map(|t| t.latest().cloned())
                .collect();
            statuses.sort_by(|a, b| a.task_id.cmp(&b.task_id));
            for st in statuses {
                send(st);
            }
            return;
        }
        for rt in r.tasks {
            let key = (fw.clone(), rt.task_id.clone());
            if let Some(st) = self.tasks.get(&key).and_then(|t| t.latest().cloned()) {
                send(st);
                continue;
            }
            if let Some(st) = self
                .frameworks
                .get(fw)
                .and_then(|f| {
                    f.completed
                        .iter()
                        .rev()
                        .find(|t| t.info.task_id == rt.task_id)
                })
                .and_then(|t| t.latest().cloned())
            {
                send(st);
                continue;
            }
            let state = match rt.agent_id.as_ref().and_then(|a| self.agents.get(a)) {
                Some(a) if a.status == AgentStatus::Unreachable => TaskState::Unreachable,
                Some(a) if a.status == AgentStatus::Recovered => TaskState::Unknown,
                Some(_) => TaskState::Gone,
                None => TaskState::Unknown,
            };
            let mut st = TaskStatus::new(rt.task_id, state, ts);
            st.agent_id = rt.agent_id;
            send(st);
        }
    }

    fn operator(
        &mut self,
        now: Timestamp,
        op: OperatorInput,
        out: &mut Vec<Action>,
    ) -> Result<(), Rejection> {
        match op {
            OperatorInput::TeardownFramework(id) => {
                if !self.frameworks.contains_key(&id) {
                    return Err(Rejection::not_found(format!("framework {id} is unknown")));
                }
                self.teardown(now, &id, out);
            }
            OperatorInput::SetWeight { role, weight } => {
                if !weight.is_finite() || weight <= 0.0 {
                    return Err(Rejection::bad("a role weight must be a positive number"));
                }
                self.cfg.weights.insert(role.clone(), weight);
                self.allocator.set_weight(&role, weight);
            }
            OperatorInput::SetQuota {
                role,
                guarantee,
                limit,
            } => {
                if let Some(l) = &limit
                    && !l.contains(&Resources {
                        ports: Default::default(),
                        ..guarantee.clone()
                    })
                {
                    return Err(Rejection::bad(
                        "a quota's guarantee must not exceed its limit",
                    ));
                }
                self.cfg
                    .quotas
                    .insert(role.clone(), (guarantee.clone(), limit.clone()));
                self.allocator.set_quota(&role, guarantee, limit);
            }
            OperatorInput::MarkAgentGone(id) => {
                if !self.agents.contains_key(&id) {
                    return Err(Rejection::not_found(format!("agent {id} is unknown")));
                }
                self.remove_agent(
                    now,
                    &id,
                    TaskState::GoneByOperator,
                    "the operator marked the agent gone",
                    out,
                );
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- time

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        if now >= self.next_housekeeping {
            self.housekeeping(now, out);
            self.next_housekeeping = now.plus(HOUSEKEEPING);
        }
        if now >= self.next_allocation {
            self.allocate(now, out);
            self.next_allocation = now.plus(self.cfg.allocation_interval);
        }
    }

    fn housekeeping(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let mut unreachable = Vec::new();
        let mut remove = Vec::new();
        for a in self.agents.values() {
            match a.status {
                AgentStatus::Reachable if now.since(a.last_seen) > self.cfg.agent_timeout => {
                    unreachable.push(a.id.clone())
                }
                AgentStatus::Recovered
                    if now.since(self.started) > self.cfg.agent_reregister_timeout =>
                {
                    unreachable.push(a.id.clone())
                }
                AgentStatus::Unreachable
                    if a.unreachable_since
                        .is_some_and(|t| now.since(t) > self.cfg.unreachable_timeout) =>
                {
                    remove.push(a.id.clone())
                }
                _ => {}
            }
        }
        for id in unreachable {
            self.mark_unreachable(now, &id, out);
        }
        let state = match self.cfg.unreachable_policy {
            UnreachablePolicy::Lost => TaskState::Lost,
            UnreachablePolicy::Gone => TaskState::Gone,
        };
        for id in remove {
            self.remove_agent(
                now,
                &id,
                state,
                "the agent stayed unreachable past the timeout",
                out,
            );
        }
        // Outstanding offers past their timeout.
        let stale: Vec<OfferId> = self
            .offers
            .values()
            .filter(|o| now.since(o.created) > self.cfg.offer_timeout)
            .map(|o| o.id.clone())
            .collect();
        for o in stale {
            if let Some(offer) = self.offers.get(&o) {
                let (fw, agent) = (offer.framework.clone(), offer.agent.clone());
                self.allocator
                    .add_filter(&fw, &agent, now.plus(self.cfg.default_refuse));
            }
            self.rescind_offer(&o, true, out);
        }
        // Frameworks past their failover timeout.
        let expired: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_none())
            .filter(|f| {
                f.disconnected_at
                    .is_some_and(|t| now.since(t).as_secs_f64() > f.info.failover_timeout.max(0.0))
                    && !(f.recovered && now.since(self.started) < self.cfg.agent_reregister_timeout)
            })
            .map(|f| f.id.clone())
            .collect();
        for id in expired {
            tracing::info!(framework_id = %id, "framework failover timeout expired");
            self.teardown(now, &id, out);
        }
        // Updates the framework has not acknowledged.
        for t in self.tasks.values_mut() {
            if let Some((st, sent)) = &mut t.unacked
                && now.since(*sent) >= self.cfg.status_retry_interval
            {
                *sent = now;
                if let Some(conn) = self.frameworks.get(&t.framework).and_then(|f| f.conn) {
                    out.push(Action::SendFramework {
                        conn,
                        event: scheduler::Event::update(st.clone()),
                    });
                }
            }
        }
    }

    fn allocate(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        if !self
            .frameworks
            .values()
            .any(|f| f.active() && !f.suppressed)
        {
            return;
        }
        self.counters.allocation_runs += 1;
        let seed = splitmix(&mut self.rng);
        let grants = self.allocator.allocate(now, seed);
        let mut by_fw: BTreeMap<FrameworkId, Vec<scheduler::Offer>> = BTreeMap::new();
        for g in grants {
            let (Some(agent), Some(f)) = (
                self.agents.get_mut(&g.agent),
                self.frameworks.get_mut(&g.framework),
            ) else {
                // The allocator only grants what exists; recover defensively if not.
                self.allocator.recover(&g.agent, &g.framework, &g.resources);
                continue;
            };
            self.next_offer += 1;
            let id = OfferId::new(format!("{}-O{}", self.id, self.next_offer - 1));
            agent.offers.insert(id.clone());
            f.offers.insert(id.clone());
            by_fw
                .entry(g.framework.clone())
                .or_default()
                .push(views::offer_wire(&id, &g.framework, agent, &g.resources));
            self.offers.insert(
                id.clone(),
                Offer {
                    id,
                    framework: g.framework,
                    agent: g.agent,
                    resources: g.resources,
                    created: now,
                },
            );
            self.counters.offers_made += 1;
        }
        for (fw, offers) in by_fw {
            if let Some(conn) = self.frameworks.get(&fw).and_then(|f| f.conn) {
                out.push(Action::SendFramework {
                    conn,
                    event: scheduler::Event::offers(offers),
                });
            }
        }
    }

    // ---------------------------------------------------------------- recovery

    fn recover(&mut self, now: Timestamp, records: Vec<(String, Vec<u8>)>) {
        for (key, value) in records {
            if let Some(rest) = key.strip_prefix(AGENT_PREFIX) {
                match serde_json::from_slice::<AgentRecord>(&value) {
                    Ok(r) => {
                        let Ok(total) = RoleResources::from_wire(&r.info.resources) else {
                            tracing::warn!(key = %key, "skipping agent record with bad resources");
                            continue;
                        };
                        let id = AgentId::new(rest);
                        let dynamic = r.dynamic_resources();
                        let agent = Agent {
                            id: id.clone(),
                            info: r.info,
                            static_total: total,
                            dynamic,
                            status: AgentStatus::Recovered,
                            registered: Timestamp(r.registered_ms),
                            reregistered: None,
                            last_seen: now,
                            unreachable_since: r.unreachable_since_ms.map(Timestamp),
                            tasks: BTreeSet::new(),
                            offers: BTreeSet::new(),
                        };
                        if agent.unreachable_since.is_some() {
                            let mut a = agent;
                            a.status = AgentStatus::Unreachable;
                            self.allocator.add_agent(id.clone(), a.total(), Vec::new());
                            self.allocator.activate_agent(&id, false);
                            self.agents.insert(id, a);
                        } else {
                            self.allocator
                                .add_agent(id.clone(), agent.total(), Vec::new());
                            self.allocator.activate_agent(&id, false);
                            self.agents.insert(id, agent);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "skipping unreadable agent record")
                    }
                }
            } else if let Some(rest) = key.strip_prefix(FRAMEWORK_PREFIX) {
                match serde_json::from_slice::<FrameworkRecord>(&value) {
                    Ok(r) => {
                        let id = FrameworkId::new(rest);
                        let role = r.info.effective_role();
                        self.allocator
                            .add_framework(id.clone(), role.clone(), false);
                        self.frameworks.insert(
                            id.clone(),
                            Framework {
                                id,
                                info: r.info,
                                role,
                                conn: None,
                                stream_id: None,
                                recovered: true,
                                registered: Timestamp(r.registered_ms),
                                reregistered: None,
                                disconnected_at: Some(now),
                                unregistered: None,
                                suppressed: false,
                                tasks: BTreeSet::new(),
                                completed: VecDeque::new(),
                                offers: BTreeSet::new(),
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "skipping unreadable framework record")
                    }
                }
            } else if let Some(rest) = key.strip_prefix(REMOVED_FRAMEWORK_PREFIX) {
                self.removed_frameworks.insert(FrameworkId::new(rest));
            }
        }
        tracing::info!(
            agents = self.agents.len(),
            frameworks = self.frameworks.len(),
            "master recovered its registry"
        );
    }
}
