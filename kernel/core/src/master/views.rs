//! Rendering the master's state in the shapes clients parse: Mesos' JSON endpoints, the
//! v1 operator API, metrics. Pure functions of the state.

use super::{Agent, AgentStatus, Framework, Master, Task};
use crate::time::Timestamp;
use basalt_api::operator::{self, TimeInfo};
use basalt_api::scheduler::{self, Attribute, Text};
use basalt_api::state::{
    FrameworkView, LeaderInfo, MasterState, OfferView, ResourcesView, SlaveView, StatusView,
    TaskView,
};
use basalt_api::{AgentId, FrameworkId, OfferId, Resources, RoleResources, TaskState};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// `/master/state` and the endpoints cut from it.
    State,
    Metrics,
    /// The v1 `GET_STATE` (also the `SUBSCRIBED` snapshot).
    Operator,
}

// One per read, moved straight to the HTTP shell.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Snapshot {
    State(MasterState),
    Metrics(BTreeMap<String, f64>),
    Operator(operator::GetState),
}

pub(crate) fn task_view(t: &Task) -> TaskView {
    let latest = t.latest();
    TaskView {
        id: t.info.task_id.to_string(),
        name: t.info.name.clone(),
        framework_id: t.framework.to_string(),
        executor_id: String::new(),
        slave_id: t.agent.to_string(),
        state: t.state.as_str().to_owned(),
        resources: ResourcesView::from(&t.resources.total()),
        role: t.role.clone(),
        statuses: t
            .statuses
            .iter()
            .map(|s| StatusView {
                state: s.state.as_str().to_owned(),
                timestamp: s.timestamp,
                healthy: s.healthy,
                container_status: s.container_status.as_ref().and_then(|c| serde_json::to_value(c).ok()),
            })
            .collect(),
        healthy: latest.and_then(|s| s.healthy),
        labels: t.info.labels.as_ref().map(|l| {
            l.labels
                .iter()
                .map(|l| serde_json::json!({"key": l.key, "value": l.value.clone().unwrap_or_default()}))
                .collect()
        }),
        discovery: t.info.discovery.clone(),
        container: t.info.container.clone(),
        message: latest.and_then(|s| s.message.clone()),
        reason: latest.and_then(|s| s.reason.clone()),
        exit_code: latest.and_then(|s| s.exit_code),
    }
}

pub(crate) fn task_v1(t: &Task) -> operator::Task {
    operator::Task {
        name: t.info.name.clone(),
        task_id: t.info.task_id.clone(),
        framework_id: t.framework.clone(),
        agent_id: t.agent.clone(),
        state: t.state,
        resources: t.resources.to_wire(),
        statuses: t.statuses.clone(),
        labels: t.info.labels.clone(),
        discovery: t.info.discovery.clone(),
        container: t.info.container.clone(),
        health_check: t.info.health_check.clone(),
        kill_policy_grace: t.info.kill_policy.and_then(|k| k.grace_period),
        role: t.role.clone(),
    }
}

pub(crate) fn task_added(t: &Task) -> operator::Event {
    operator::Event {
        task_added: Some(operator::TaskAdded { task: task_v1(t) }),
        ..operator::Event::bare(operator::EventType::TaskAdded)
    }
}

pub(crate) fn task_updated(fw: &FrameworkId, status: &basalt_api::TaskStatus) -> operator::Event {
    operator::Event {
        task_updated: Some(operator::TaskUpdated {
            framework_id: fw.clone(),
            status: status.clone(),
            state: status.state,
        }),
        ..operator::Event::bare(operator::EventType::TaskUpdated)
    }
}

fn attributes(a: &Agent) -> Vec<Attribute> {
    a.info
        .attributes
        .iter()
        .map(|(k, v)| Attribute {
            name: k.clone(),
            kind: "TEXT".into(),
            text: Text { value: v.clone() },
        })
        .collect()
}

fn agent_pid(a: &Agent) -> String {
    let hostport = a
        .info
        .url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    format!("slave(1)@{hostport}")
}

pub(crate) fn agent_v1(
    a: &Agent,
    used: &RoleResources,
    offered: &RoleResources,
) -> operator::Agent {
    operator::Agent {
        agent_info: operator::AgentInfoV1 {
            id: a.id.clone(),
            hostname: a.info.hostname.clone(),
            port: a.info.port,
            resources: a.info.resources.clone(),
            attributes: attributes(a),
        },
        active: a.status == AgentStatus::Reachable,
        pid: agent_pid(a),
        version: a.info.version.clone(),
        registered_time: Some(TimeInfo::from_millis(a.registered.millis())),
        total_resources: a.total().to_wire(),
        allocated_resources: used.to_wire(),
        offered_resources: offered.to_wire(),
    }
}

pub(crate) fn agent_added(a: &Agent) -> operator::Event {
    operator::Event {
        agent_added: Some(operator::AgentAdded {
            agent: agent_v1(a, &RoleResources::default(), &RoleResources::default()),
        }),
        ..operator::Event::bare(operator::EventType::AgentAdded)
    }
}

pub(crate) fn agent_removed(id: &AgentId) -> operator::Event {
    operator::Event {
        agent_removed: Some(operator::AgentRemoved {
            agent_id: id.clone(),
        }),
        ..operator::Event::bare(operator::EventType::AgentRemoved)
    }
}

pub(crate) fn framework_v1(f: &Framework) -> operator::Framework {
    operator::Framework {
        framework_info: f.info.clone(),
        active: f.active(),
        connected: f.active(),
        recovered: f.recovered,
        registered_time: Some(TimeInfo::from_millis(f.registered.millis())),
    }
}

pub(crate) fn framework_event(
    kind: operator::EventType,
    f: &Framework,
    _now: Timestamp,
) -> operator::Event {
    let ev = operator::FrameworkEvent {
        framework: framework_v1(f),
    };
    let mut e = operator::Event::bare(kind);
    if kind == operator::EventType::FrameworkAdded {
        e.framework_added = Some(ev);
    } else {
        e.framework_updated = Some(ev);
    }
    e
}

pub(crate) fn offer_wire(
    id: &OfferId,
    fw: &FrameworkId,
    a: &Agent,
    r: &RoleResources,
) -> scheduler::Offer {
    scheduler::Offer {
        id: id.clone(),
        framework_id: fw.clone(),
        agent_id: a.id.clone(),
        hostname: a.info.hostname.clone(),
        resources: r.to_wire(),
        attributes: attributes(a),
        executor_ids: Vec::new(),
    }
}

impl Master {
    /// Per agent: (used by live tasks, offered).
    fn agent_usage(&self) -> BTreeMap<&AgentId, (RoleResources, RoleResources)> {
        let mut m: BTreeMap<&AgentId, (RoleResources, RoleResources)> = BTreeMap::new();
        for t in self.tasks.values() {
            if !t.state.is_terminal() {
                let e = m.entry(&t.agent).or_default();
                e.0 = e.0.add(&t.resources);
            }
        }
        for o in self.offers.values() {
            let e = m.entry(&o.agent).or_default();
            e.1 = e.1.add(&o.resources);
        }
        m
    }

    pub(crate) fn snapshot(&self, now: Timestamp, what: ReadKind) -> Snapshot {
        match what {
            ReadKind::State => Snapshot::State(self.master_state(now)),
            ReadKind::Metrics => Snapshot::Metrics(self.metrics(now)),
            ReadKind::Operator => Snapshot::Operator(self.operator_state()),
        }
    }

    fn framework_view(
        &self,
        f: &Framework,
        tasks: &BTreeMap<&FrameworkId, Vec<&Task>>,
    ) -> FrameworkView {
        let mut used = Resources::default();
        let mut live = Vec::new();
        let mut unreachable = Vec::new();
        for t in tasks.get(&f.id).into_iter().flatten() {
            if t.state == TaskState::Unreachable {
                unreachable.push(task_view(t));
            } else if t.state.is_terminal() {
                continue;
            } else {
                used = used.add(&t.resources.total());
                live.push(task_view(t));
            }
        }
        let mut offered = Resources::default();
        let offers: Vec<OfferView> = f
            .offers
            .iter()
            .filter_map(|o| self.offers.get(o))
            .map(|o| {
                offered = offered.add(&o.resources.total());
                OfferView {
                    id: o.id.to_string(),
                    framework_id: o.framework.to_string(),
                    slave_id: o.agent.to_string(),
                    resources: ResourcesView::from(&o.resources.total()),
                }
            })
            .collect();
        let mut completed: Vec<TaskView> = f.completed.iter().map(task_view).collect();
        // Terminal but not yet acknowledged tasks are still completed from a reader's view.
        completed.extend(
            tasks
                .get(&f.id)
                .into_iter()
                .flatten()
                .filter(|t| t.state.is_terminal())
                .map(|t| task_view(t)),
        );
        FrameworkView {
            id: f.id.to_string(),
            name: f.info.name.clone(),
            pid: String::new(),
            hostname: f.info.hostname.clone().unwrap_or_default(),
            user: f.info.user.clone(),
            role: f.role.clone(),
            principal: f.info.principal.clone(),
            webui_url: f.info.webui_url.clone().unwrap_or_default(),
            active: f.active(),
            connected: f.active(),
            recovered: f.recovered,
            failover_timeout: f.info.failover_timeout,
            checkpoint: f.info.checkpoint,
            registered_time: f.registered.as_secs_f64(),
            unregistered_time: f.unregistered.map(|t| t.as_secs_f64()).unwrap_or(0.0),
            resources: ResourcesView::from(&used.add(&offered)),
            used_resources: ResourcesView::from(&used),
            offered_resources: ResourcesView::from(&offered),
            capabilities: f.info.capabilities.clone(),
            tasks: live,
            unreachable_tasks: unreachable,
            completed_tasks: completed,
            offers,
            executors: Vec::new(),
        }
    }

    pub(crate) fn master_state(&self, now: Timestamp) -> MasterState {
        let usage = self.agent_usage();
        let empty = (RoleResources::default(), RoleResources::default());
        let slaves: Vec<SlaveView> = self
            .agents
            .values()
            .map(|a| {
                let (used, offered) = usage.get(&a.id).unwrap_or(&empty);
                let total = a.total();
                SlaveView {
                    id: a.id.to_string(),
                    pid: agent_pid(a),
                    hostname: a.info.hostname.clone(),
                    port: a.info.port,
                    resources: ResourcesView::from(&total.total()),
                    used_resources: ResourcesView::from(&used.total()),
                    offered_resources: ResourcesView::from(&offered.total()),
                    reserved_resources: total
                        .0
                        .iter()
                        .filter(|(r, _)| r.as_str() != basalt_api::resources::UNRESERVED)
                        .map(|(r, res)| (r.clone(), ResourcesView::from(res)))
                        .collect(),
                    unreserved_resources: ResourcesView::from(
                        &total.get(basalt_api::resources::UNRESERVED),
                    ),
                    attributes: a.info.attributes.clone(),
                    active: a.status == AgentStatus::Reachable,
                    version: a.info.version.clone(),
                    registered_time: a.registered.as_secs_f64(),
                    reregistered_time: a.reregistered.map(|t| t.as_secs_f64()),
                    status: match a.status {
                        AgentStatus::Reachable => "reachable",
                        AgentStatus::Recovered => "recovering",
                        AgentStatus::Unreachable => "unreachable",
                    }
                    .to_owned(),
                    isolation: a.info.isolation.clone(),
                    url: a.info.url.clone(),
                }
            })
            .collect();
        let mut by_fw: BTreeMap<&FrameworkId, Vec<&Task>> = BTreeMap::new();
        for t in self.tasks.values() {
            by_fw.entry(&t.framework).or_default().push(t);
        }
        for v in by_fw.values_mut() {
            v.sort_by(|a, b| a.info.task_id.cmp(&b.info.task_id));
        }
        let frameworks = self
            .frameworks
            .values()
            .map(|f| self.framework_view(f, &by_fw))
            .collect();
        let completed_frameworks = self
            .completed_frameworks
            .iter()
            .map(|f| self.framework_view(f, &BTreeMap::new()))
            .collect();
        let pid = format!("master@{}:{}", self.cfg.hostname, self.cfg.port);
        let active = self
            .agents
            .values()
            .filter(|a| a.status == AgentStatus::Reachable)
            .count() as u64;
        let unreachable = self
            .agents
            .values()
            .filter(|a| a.status == AgentStatus::Unreachable)
            .count() as u64;
        let mut flags = BTreeMap::new();
        flags.insert(
            "agent_ping_timeout".into(),
            format!("{}secs", self.cfg.agent_timeout.as_secs()),
        );
        flags.insert(
            "allocation_interval".into(),
            format!("{}ms", self.cfg.allocation_interval.as_millis()),
        );
        flags.insert("port".into(), self.cfg.port.to_string());
        flags.insert("hostname".into(), self.cfg.hostname.clone());
        flags.insert("cluster".into(), self.cfg.cluster.clone());
        let _ = now;
        MasterState {
            version: basalt_api::MESOS_COMPAT_VERSION.into(),
            git_sha: String::new(),
            build_time: 0.0,
            start_time: self.started.as_secs_f64(),
            elected_time: self.elected.as_secs_f64(),
            id: self.id.clone(),
            pid: pid.clone(),
            hostname: self.cfg.hostname.clone(),
            activated_slaves: active,
            deactivated_slaves: self.agents.len() as u64 - active - unreachable,
            unreachable_slaves: unreachable,
            cluster: self.cfg.cluster.clone(),
            leader: pid.clone(),
            leader_info: LeaderInfo {
                id: self.id.clone(),
                pid,
                port: self.cfg.port,
                hostname: self.cfg.hostname.clone(),
            },
            flags,
            slaves,
            frameworks,
            completed_frameworks,
            orphan_tasks: Vec::new(),
            unregistered_frameworks: Vec::new(),
        }
    }

    pub(crate) fn operator_state(&self) -> operator::GetState {
        let usage = self.agent_usage();
        let empty = (RoleResources::default(), RoleResources::default());
        let mut tasks = operator::GetTasks::default();
        let mut live: Vec<&Task> = self.tasks.values().collect();
        live.sort_by(|a, b| (&a.framework, &a.info.task_id).cmp(&(&b.framework, &b.info.task_id)));
        for t in live {
            if t.state == TaskState::Unreachable {
                tasks.unreachable_tasks.push(task_v1(t));
            } else if t.state.is_terminal() {
                tasks.completed_tasks.push(task_v1(t));
            } else {
                tasks.tasks.push(task_v1(t));
            }
        }
        for f in self.frameworks.values() {
            tasks
                .completed_tasks
                .extend(f.completed.iter().map(task_v1));
        }
        operator::GetState {
            get_tasks: tasks,
            get_agents: operator::GetAgents {
                agents: self
                    .agents
                    .values()
                    .map(|a| {
                        let (u, o) = usage.get(&a.id).unwrap_or(&empty);
                        agent_v1(a, u, o)
                    })
                    .collect(),
            },
            get_frameworks: operator::GetFrameworks {
                frameworks: self.frameworks.values().map(framework_v1).collect(),
                completed_frameworks: self.completed_frameworks.iter().map(framework_v1).collect(),
            },
            get_executors: serde_json::json!({}),
        }
    }

    /// `/metrics/snapshot`, with Mesos' names.
    pub(crate) fn metrics(&self, now: Timestamp) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: f64| {
            m.insert(k.to_owned(), v);
        };
        put("master/elected", 1.0);
        put("master/uptime_secs", now.since(self.started).as_secs_f64());
        let count = |s: AgentStatus| self.agents.values().filter(|a| a.status == s).count() as f64;
        let reachable = count(AgentStatus::Reachable);
        put("master/slaves_active", reachable);
        put("master/slaves_connected", reachable);
        put(
            "master/slaves_disconnected",
            count(AgentStatus::Unreachable) + count(AgentStatus::Recovered),
        );
        put(
            "master/slaves_inactive",
            count(AgentStatus::Unreachable) + count(AgentStatus::Recovered),
        );
        put("master/slaves_unreachable", count(AgentStatus::Unreachable));
        put(
            "master/slave_registrations",
            self.counters.agent_registrations as f64,
        );
        put(
            "master/slave_reregistrations",
            self.counters.agent_reregistrations as f64,
        );
        put("master/slave_removals", self.counters.agent_removals as f64);
        put(
            "master/slave_unreachable_completed",
            self.counters.agents_unreachable_marked as f64,
        );
        let active_fw = self.frameworks.values().filter(|f| f.active()).count() as f64;
        put("master/frameworks_active", active_fw);
        put("master/frameworks_connected", active_fw);
        put(
            "master/frameworks_disconnected",
            self.frameworks.len() as f64 - active_fw,
        );
        put(
            "master/frameworks_inactive",
            self.frameworks.len() as f64 - active_fw,
        );
        put("master/outstanding_offers", self.offers.len() as f64);
        put(
            "master/valid_status_updates",
            self.counters.valid_status_updates as f64,
        );
        put(
            "master/invalid_status_updates",
            self.counters.invalid_status_updates as f64,
        );
        put(
            "master/messages_launch_tasks",
            self.counters.tasks_launched as f64,
        );
        put(
            "master/messages_decline_offers",
            self.counters.offers_declined as f64,
        );
        put(
            "master/messages_accept_offers",
            self.counters.offers_accepted as f64,
        );
        put("master/offers_made", self.counters.offers_made as f64);
        put(
            "master/offers_rescinded",
            self.counters.offers_rescinded as f64,
        );
        put(
            "master/framework_calls",
            self.counters.framework_calls as f64,
        );
        put(
            "allocator/allocation_runs",
            self.counters.allocation_runs as f64,
        );
        let mut live: BTreeMap<TaskState, f64> = BTreeMap::new();
        for t in self.tasks.values() {
            if !t.state.is_terminal() {
                *live.entry(t.state).or_default() += 1.0;
            }
        }
        for s in [
            TaskState::Staging,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Killing,
            TaskState::Unreachable,
        ] {
            put(
                &format!("master/tasks_{}", s.metric_name().to_lowercase()),
                live.get(&s).copied().unwrap_or(0.0),
            );
        }
        for s in TaskState::ALL.iter().filter(|s| s.is_terminal()) {
            put(
                &format!("master/tasks_{}", s.metric_name().to_lowercase()),
                self.counters.terminal.get(s).copied().unwrap_or(0) as f64,
            );
        }
        let mut total = Resources::default();
        for a in self
            .agents
            .values()
            .filter(|a| a.status == AgentStatus::Reachable)
        {
            total = total.add(&a.total().total());
        }
        let mut used = Resources::default();
        for t in self.tasks.values().filter(|t| !t.state.is_terminal()) {
            used = used.add(&t.resources.total());
        }
        let mut offered = Resources::default();
        for o in self.offers.values() {
            offered = offered.add(&o.resources.total());
        }
        for (name, t, u, o) in [
            ("cpus", total.cpus, used.cpus, offered.cpus),
            ("mem", total.mem, used.mem, offered.mem),
            ("disk", total.disk, used.disk, offered.disk),
        ] {
            put(&format!("master/{name}_total"), t.as_f64());
            put(&format!("master/{name}_used"), u.as_f64());
            put(&format!("master/{name}_offered"), o.as_f64());
            put(
                &format!("master/{name}_percent"),
                if t.0 > 0 {
                    u.as_f64() / t.as_f64()
                } else {
                    0.0
                },
            );
        }
        put("master/gpus_total", 0.0);
        put("master/gpus_used", 0.0);
        m
    }
}
