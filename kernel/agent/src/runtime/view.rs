//! `/state` and `/metrics/snapshot`, built from a snapshot of the task table.

use super::{Agent, now_secs};
use crate::checkpoint::TaskRecord;
use basalt_api::state::{
    AgentExecutorView, AgentFrameworkView, AgentStateView, ResourcesView, StatusView, TaskView,
};
use basalt_api::task::TaskStatus;
use basalt_api::{RoleResources, TaskState};
use std::collections::BTreeMap;

fn task_view(rec: &TaskRecord, state: TaskState, statuses: &[TaskStatus]) -> TaskView {
    let t = &rec.launch.task;
    let resources = RoleResources::from_wire(&t.resources)
        .map(|r| r.total())
        .unwrap_or_default();
    let last = statuses.last();
    TaskView {
        id: t.task_id.to_string(),
        name: t.name.clone(),
        framework_id: rec.launch.framework_id.to_string(),
        executor_id: t.task_id.to_string(),
        slave_id: rec.agent_id.to_string(),
        state: state.as_str().to_owned(),
        resources: ResourcesView::from(&resources),
        role: rec.launch.role.clone(),
        statuses: statuses
            .iter()
            .map(|s| StatusView {
                state: s.state.as_str().to_owned(),
                timestamp: s.timestamp,
                healthy: s.healthy,
                container_status: s
                    .container_status
                    .as_ref()
                    .and_then(|c| serde_json::to_value(c).ok()),
            })
            .collect(),
        healthy: last.and_then(|s| s.healthy),
        labels: t.labels.as_ref().map(|l| {
            l.labels
                .iter()
                .filter_map(|x| serde_json::to_value(x).ok())
                .collect()
        }),
        discovery: t.discovery.clone(),
        container: t.container.clone(),
        message: last.and_then(|s| s.message.clone()),
        reason: last.and_then(|s| s.reason.clone()),
        exit_code: last.and_then(|s| s.exit_code),
    }
}

fn executor_view(rec: &TaskRecord, task: TaskView, completed: bool) -> AgentExecutorView {
    AgentExecutorView {
        id: task.id.clone(),
        name: format!("Command Executor (Task: {})", task.id),
        source: task.id.clone(),
        directory: rec.sandbox.display().to_string(),
        resources: task.resources.clone(),
        tasks: if completed {
            Vec::new()
        } else {
            vec![task.clone()]
        },
        completed_tasks: if completed { vec![task] } else { Vec::new() },
    }
}

pub(crate) fn state_view(agent: &Agent) -> AgentStateView {
    let mut fws: BTreeMap<String, AgentFrameworkView> = BTreeMap::new();
    {
        let t = agent.table();
        let mut add = |rec: &TaskRecord, state: TaskState, statuses: &[TaskStatus]| {
            let fw = fws
                .entry(rec.launch.framework_id.to_string())
                .or_insert_with(|| AgentFrameworkView {
                    id: rec.launch.framework_id.to_string(),
                    name: rec.launch.framework_name.clone(),
                    role: rec.launch.role.clone(),
                    executors: Vec::new(),
                    completed_executors: Vec::new(),
                });
            let done = state.is_terminal();
            let ex = executor_view(rec, task_view(rec, state, statuses), done);
            if done {
                fw.completed_executors.push(ex);
            } else {
                fw.executors.push(ex);
            }
        };
        for e in t.live.values() {
            add(&e.record, e.state, &e.statuses);
        }
        for d in &t.completed {
            add(&d.record, d.state, &d.statuses);
        }
    }
    let (frameworks, completed_frameworks) =
        fws.into_values().partition(|f| !f.executors.is_empty());
    let total = agent.resources.total();
    AgentStateView {
        id: agent.agent_id().map(|i| i.to_string()).unwrap_or_default(),
        pid: format!("slave(1)@{}:{}", agent.config.advertise_ip, agent.port),
        hostname: agent.config.hostname.clone(),
        version: basalt_api::VERSION.to_owned(),
        master_hostname: agent.master.base_url().to_owned(),
        resources: ResourcesView::from(&total),
        reserved_resources: agent
            .resources
            .0
            .iter()
            .filter(|(role, _)| role.as_str() != basalt_api::resources::UNRESERVED)
            .map(|(role, r)| (role.clone(), ResourcesView::from(r)))
            .collect(),
        attributes: agent.config.attributes.clone(),
        flags: BTreeMap::from([
            (
                "work_dir".to_owned(),
                agent.config.work_dir.display().to_string(),
            ),
            ("hostname".to_owned(), agent.config.hostname.clone()),
            ("cgroup_name".to_owned(), agent.config.cgroup_name.clone()),
            ("isolation".to_owned(), agent.isolation.describe()),
        ]),
        isolation: agent.isolation.describe(),
        frameworks,
        completed_frameworks,
    }
}

pub(crate) fn metrics(agent: &Agent) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: f64| {
        m.insert(k.to_owned(), v.into());
    };
    let total = agent.resources.total();
    let (mut used, mut by_state) = (
        basalt_api::Resources::default(),
        BTreeMap::<TaskState, u64>::new(),
    );
    let (terminal, launched) = {
        let t = agent.table();
        for e in t.live.values() {
            *by_state.entry(e.state).or_default() += 1;
            if !e.state.is_terminal()
                && let Ok(r) = RoleResources::from_wire(&e.record.launch.task.resources)
            {
                used = used.add(&r.total());
            }
        }
        (t.terminal_counts.clone(), t.launched)
    };
    for s in [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
    ] {
        put(
            &format!("slave/tasks_{}", s.metric_name().to_lowercase()),
            *by_state.get(&s).unwrap_or(&0) as f64,
        );
    }
    for s in [
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
        TaskState::Error,
    ] {
        put(
            &format!("slave/tasks_{}", s.metric_name().to_lowercase()),
            *terminal.get(&s).unwrap_or(&0) as f64,
        );
    }
    put("slave/tasks_launched", launched as f64);
    put("slave/cpus_total", total.cpus.as_f64());
    put("slave/mem_total", total.mem.as_f64());
    put("slave/disk_total", total.disk.as_f64());
    put("slave/cpus_used", used.cpus.as_f64());
    put("slave/mem_used", used.mem.as_f64());
    put("slave/disk_used", used.disk.as_f64());
    put(
        "slave/cpus_percent",
        ratio(used.cpus.as_f64(), total.cpus.as_f64()),
    );
    put(
        "slave/mem_percent",
        ratio(used.mem.as_f64(), total.mem.as_f64()),
    );
    put(
        "slave/registered",
        if agent.registration.borrow().id.is_some() {
            1.0
        } else {
            0.0
        },
    );
    put("slave/uptime_secs", now_secs() - agent.started_at);
    put(
        "slave/executors_running",
        by_state
            .iter()
            .filter(|(s, _)| !s.is_terminal())
            .map(|(_, n)| *n)
            .sum::<u64>() as f64,
    );
    put(
        "slave/valid_status_updates",
        agent
            .metrics
            .acked
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    put(
        "slave/status_update_retries",
        agent
            .metrics
            .retried
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    put(
        "slave/status_updates_pending",
        agent.queues.pending() as f64,
    );
    m
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}
