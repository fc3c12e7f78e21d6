//! The agent's side of the master protocol: register (again), heartbeat, and notice when
//! the master has forgotten us.

use crate::checkpoint;
use crate::runtime::{self, Agent, Registration};
use basalt_api::TaskState;
use basalt_api::agent::{AgentInfo, AgentTask, RegisterAgent};
use basalt_api::task::TaskStatus;
use std::sync::Arc;
use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

fn request(agent: &Agent) -> RegisterAgent {
    let tasks = agent
        .table()
        .live
        .values()
        .filter(|e| e.valid && e.checkpointed)
        .map(|e| {
            let status = e.statuses.last().cloned().unwrap_or_else(|| {
                let mut s = TaskStatus::new(
                    e.record.launch.task.task_id.clone(),
                    TaskState::Staging,
                    e.record.started_at,
                );
                s.agent_id = Some(e.record.agent_id.clone());
                s
            });
            AgentTask {
                launch: e.record.launch.clone(),
                status,
            }
        })
        .collect();
    RegisterAgent {
        agent_id: agent.agent_id(),
        info: AgentInfo {
            hostname: agent.config.hostname.clone(),
            port: agent.port,
            url: agent.url(),
            resources: agent.resources.to_wire(),
            attributes: agent.config.attributes.clone(),
            version: basalt_api::VERSION.to_owned(),
            isolation: agent.isolation.describe(),
        },
        tasks,
    }
}

/// Registers, heartbeats, and registers again whenever the master forgets us, until the
/// agent stops.
pub(crate) async fn run(agent: Arc<Agent>) {
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u32;
    loop {
        let req = request(&agent);
        let result = tokio::select! {
            r = agent.master.register_agent(&req) => r,
            _ = agent.shutdown.cancelled() => return,
        };
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                // Log the first failure and then every tenth, not every retry.
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(master = agent.master.base_url(), error = %e, attempts = failures, "cannot register with the master; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = agent.shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(agent.config.registration_backoff_max);
                continue;
            }
        };
        failures = 0;
        backoff = FIRST_BACKOFF;
        let (layout, id) = (agent.layout.clone(), reply.agent_id.clone());
        match tokio::task::spawn_blocking(move || checkpoint::write_agent_id(&layout, &id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(agent_id = %reply.agent_id, error = %e, "cannot checkpoint the agent id")
            }
            Err(e) => tracing::error!(error = %e, "agent id writer failed"),
        }
        if let Ok(mut l) = agent.last_id.lock() {
            *l = Some(reply.agent_id.clone());
        }
        let epoch = {
            let mut epoch = 0;
            agent.registration.send_modify(|r| {
                *r = Registration {
                    id: Some(reply.agent_id.clone()),
                    epoch: r.epoch + 1,
                };
                epoch = r.epoch;
            });
            epoch
        };
        tracing::info!(agent_id = %reply.agent_id, master_id = %reply.master_id, tasks = req.tasks.len(), "registered with the master");
        if !reply.kill.is_empty() {
            runtime::kill_by_task_id(&agent, &reply.kill).await;
        }

        let interval = Duration::from_secs_f64(reply.heartbeat_interval_secs.clamp(0.05, 60.0));
        let mut reg = agent.registration.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                // A status sender found the master does not know us.
                _ = reg.wait_for(|r| r.epoch != epoch || r.id.is_none()) => break,
                _ = agent.shutdown.cancelled() => return,
            }
            let beat = tokio::select! {
                r = agent.master.agent_heartbeat(&reply.agent_id) => r,
                _ = agent.shutdown.cancelled() => return,
            };
            match beat {
                Ok(()) => {}
                Err(e) if e.status() == Some(404) => {
                    tracing::info!(agent_id = %reply.agent_id, error = %e, "master forgot this agent; re-registering");
                    break;
                }
                Err(e) => {
                    tracing::debug!(agent_id = %reply.agent_id, error = %e, "heartbeat failed")
                }
            }
        }
        agent.registration.send_modify(|r| r.id = None);
    }
}
