//! init's memory with 10,000 apps and 50,000 running tasks in its state (every app
//! created through `put_app`, every task placed by `match_offer` and marked running by a
//! status update, as in a live cluster). Prints the process RSS.
//! `cargo bench -p basalt-init --bench memory [-- APPS TASKS_PER_APP]`
//! Goal: under 512 MiB (Marathon needs a multi-GiB JVM heap here).
#![allow(clippy::disallowed_types, clippy::print_stdout)]

use basalt_api::scheduler::Offer;
use basalt_api::{AgentId, FrameworkId, OfferId, RoleResources, TaskState, TaskStatus};
use basalt_init::app::AppDefinition;
use basalt_init::state::{Effects, State};
use std::time::Instant;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let nums: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let apps = nums.first().copied().unwrap_or(10_000);
    let per_app = nums.get(1).copied().unwrap_or(5);
    let before = rss_mib();
    let t = Instant::now();
    let mut s = State::default();
    for i in 0..apps {
        let def: AppDefinition = serde_json::from_value(serde_json::json!({
            "id": format!("/team-{}/service-{i}", i % 50),
            "cmd": "./server --port $PORT0 --threads 4",
            "cpus": 0.1, "mem": 64, "instances": per_app,
            "env": {"LOG_LEVEL": "info", "REGION": "eu-west"},
            "labels": {"HAPROXY_GROUP": "external", "owner": format!("team-{}", i % 50)},
            "portDefinitions": [{"port": 0, "name": "http"}],
            "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}],
        }))
        .unwrap_or_else(|e| panic!("app json: {e}"));
        let mut fx = Effects::default();
        if let Err(e) = s.put_app(def, 1_700_000_000_000 + i as u64, true, false, &mut fx) {
            panic!("put_app: {:?}", e.body);
        }
    }
    // Agents big enough that each offer takes many tasks.
    let res = RoleResources::parse("cpus:1000;mem:1000000;disk:100000;ports:[31000-40000]")
        .unwrap_or_default()
        .to_wire();
    let mut placed = 0usize;
    let mut agent = 0usize;
    while placed < apps * per_app {
        let offer = Offer {
            id: OfferId::new(format!("o{agent}")),
            framework_id: FrameworkId::new("fw"),
            agent_id: AgentId::new(format!("agent-{agent}")),
            hostname: format!("10.0.{}.{}", agent / 250, agent % 250),
            resources: res.clone(),
            attributes: vec![],
            executor_ids: vec![],
        };
        let mut fx = Effects::default();
        let tasks = s.match_offer(&offer, 1_700_000_100_000, &mut fx);
        if tasks.is_empty() {
            break;
        }
        for ti in &tasks {
            let mut st = TaskStatus::new(ti.task_id.clone(), TaskState::Running, 1.0);
            st.healthy = Some(true);
            let mut fx = Effects::default();
            s.on_status(&st, 1_700_000_200_000, &mut fx);
        }
        placed += tasks.len();
        agent += 1;
    }
    let took = t.elapsed().as_secs_f64();
    println!(
        "init state: {} apps, {} running tasks on {agent} agents, built in {took:.1} s; \
         RSS {:.0} MiB (process before: {before:.0} MiB; goal < 512 MiB, Marathon: multi-GiB heap)",
        s.apps.len(),
        s.tasks.len(),
        rss_mib()
    );
}
