//! Master memory at scale: 10,000 simulated agents register with 10 running tasks each
//! (100,000 tasks across 100 frameworks, the shape of a master failover) straight into
//! the master's core. Prints the process RSS, the registration rate and how long a full
//! `/master/state` snapshot plus its JSON take.
//!
//! `cargo bench -p basalt-kernel-sim --bench master_memory [-- AGENTS TASKS_PER_AGENT]`
//! Goal: under 1 GiB (Mesos and Marathon users report several GiB at this scale).
#![allow(clippy::disallowed_types, clippy::print_stdout)]

use basalt_api::agent::{AgentInfo, AgentTask, RegisterAgent};
use basalt_api::task::{CommandInfo, TaskLaunch};
use basalt_api::{RoleResources, TaskId, TaskInfo, TaskState, TaskStatus};
use basalt_kernel_core::master::ReadKind;
use basalt_kernel_core::{Config, Input, Master, Reply, Timestamp};
use basalt_kernel_sim::*;
use std::time::Instant;

const FRAMEWORKS: usize = 100;

fn main() {
    let nums: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let agents = nums.first().copied().unwrap_or(10_000);
    let per_agent = nums.get(1).copied().unwrap_or(10);
    let before = rss_bytes().unwrap_or(0);

    let now = Timestamp(1_700_000_000_000);
    let mut m = Master::new(Config::default(), "bench".into(), 1, now, Vec::new());
    let total = decline_offers_agent().to_wire();
    let task_res = RoleResources::parse("cpus:0.1;mem:32;ports:[31000-31000]")
        .unwrap_or_default()
        .to_wire();
    let t = Instant::now();
    let mut token = 0u64;
    for a in 0..agents {
        let host = format!("10.0.{}.{}", a / 250, a % 250);
        let tasks = (0..per_agent)
            .map(|i| {
                let f = (a * per_agent + i) % FRAMEWORKS;
                let id = TaskId::new(format!(
                    "app-{f}.{a}-{i}-0b2d6c5e-8f1a-11ef-9a33-0242ac110002"
                ));
                AgentTask {
                    launch: TaskLaunch {
                        framework_id: framework_id(f),
                        framework_name: format!("marathon-{f}"),
                        role: "*".into(),
                        task: TaskInfo::command(
                            format!("app-{f}"),
                            id.clone(),
                            agent_id(a),
                            task_res.clone(),
                            CommandInfo {
                                value: Some("./server --port $PORT0".into()),
                                shell: true,
                                ..Default::default()
                            },
                        ),
                    },
                    status: TaskStatus::new(id, TaskState::Running, now.as_secs_f64()),
                }
            })
            .collect();
        token += 1;
        let out = m.handle(
            now,
            Input::RegisterAgent {
                req: RegisterAgent {
                    agent_id: None,
                    info: AgentInfo {
                        hostname: host.clone(),
                        port: 5051,
                        url: format!("http://{host}:5051"),
                        resources: total.clone(),
                        attributes: [("rack".to_owned(), format!("r{}", a % 40))].into(),
                        version: "bench".into(),
                        isolation: "cgroups-v1".into(),
                    },
                    tasks,
                },
                reply: token,
            },
        );
        drop(out);
    }
    let register = t.elapsed().as_secs_f64();
    let after = rss_bytes().unwrap_or(0);

    token += 1;
    let t = Instant::now();
    let out = m.handle(
        now,
        Input::Read {
            what: ReadKind::State,
            reply: token,
        },
    );
    let mut state_bytes = 0usize;
    for a in out {
        if let basalt_kernel_core::Action::Reply {
            result: Ok(Reply::State(snapshot)),
            ..
        } = a
            && let basalt_kernel_core::master::Snapshot::State(s) = *snapshot
        {
            state_bytes = serde_json::to_vec(&s).map(|v| v.len()).unwrap_or(0);
        }
    }
    let state = t.elapsed().as_secs_f64();
    let peak = rss_bytes().unwrap_or(0);

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "registered {agents} agents with {} tasks in {:.2} s ({:.0} agents/s)",
        agents * per_agent,
        register,
        agents as f64 / register
    );
    println!(
        "master RSS with that state: {:.0} MiB (process before: {:.0} MiB; goal < 1024 MiB; \
         Mesos/Marathon users report several GiB)",
        mib(after),
        mib(before)
    );
    println!(
        "full /master/state snapshot + JSON: {:.0} ms, {:.1} MiB of JSON, peak RSS {:.0} MiB \
         (Mesos 1.7: ~3 s for a large cluster)",
        state * 1e3,
        mib(state_bytes as u64),
        mib(peak)
    );
}
