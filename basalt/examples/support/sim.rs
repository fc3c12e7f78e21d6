//! What the LB benchmarks share: a task as init would launch it for an app behind the load
//! balancer, for a simulated agent to report.

use anyhow::{Result, anyhow};
use basalt_api::agent::{AgentInfo, AgentTask, RegisterAgent};
use basalt_api::task::{CommandInfo, Label, Labels};
use basalt_api::{AgentId, Client, RoleResources, TaskId, TaskInfo};
use serde_json::json;

/// A task of app `app` (vhost `vhost`, group external) listening on `port`, with an HTTP
/// health check so that it gets traffic only once reported healthy.
pub(crate) fn lb_task(id: &TaskId, app: &str, vhost: &str, port: u16) -> Result<TaskInfo> {
    let res = RoleResources::parse(&format!("cpus:0.1;mem:32;ports:[{port}-{port}]"))?.to_wire();
    let name = app.trim_start_matches('/');
    let mut t = TaskInfo::command(
        name,
        id.clone(),
        AgentId::new("pending"),
        res,
        CommandInfo {
            value: Some("true".into()),
            shell: true,
            ..Default::default()
        },
    );
    t.labels = Some(Labels {
        labels: [("HAPROXY_GROUP", "external"), ("HAPROXY_0_VHOST", vhost)]
            .iter()
            .map(|(k, v)| Label {
                key: (*k).into(),
                value: Some((*v).into()),
            })
            .collect(),
    });
    t.health_check = Some(json!({"type": "HTTP", "http": {"port": port, "path": "/"}}));
    t.discovery = Some(
        json!({"visibility": "FRAMEWORK", "name": name, "version": "1",
        "labels": {"labels": [{"key": "MARATHON_APP_ID", "value": app}]},
        "ports": {"ports": [{"number": port, "protocol": "tcp"}]}}),
    );
    Ok(t)
}

/// Status updates from an agent carry a unique id (the master acknowledges by it).
pub(crate) fn uuid_seq() -> u128 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    (u128::from(std::process::id()) << 64)
        | u128::from(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Registers a simulated agent on 127.0.0.1 that already runs `tasks`; returns its id.
pub(crate) async fn register_agent(client: &Client, tasks: Vec<AgentTask>) -> Result<AgentId> {
    let reply = client
        .register_agent(&RegisterAgent {
            agent_id: None,
            info: AgentInfo {
                hostname: "127.0.0.1".into(),
                port: 5051,
                url: "http://127.0.0.1:5051".into(),
                resources: RoleResources::parse("cpus:64;mem:65536;ports:[1024-65535]")?.to_wire(),
                attributes: Default::default(),
                version: "bench".into(),
                isolation: "none: simulated".into(),
            },
            tasks,
        })
        .await
        .map_err(|e| anyhow!("register: {e}"))?;
    Ok(reply.agent_id)
}
