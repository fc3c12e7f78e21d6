//! DNS propagation: how long from the master publishing a task as running until DNS
//! answers for it. Each of N tasks arrives on a simulated agent (the master and DNS are
//! real); the clock starts when the task's `TASK_ADDED` reaches our own subscription to
//! the master's event stream (DNS gets the same event) and stops at the first DNS answer
//! that has it. Prints p50 and p99 beside Mesos-DNS' 30-60 s polling.
//!
//! `bench/dns_propagation.sh` runs it; by hand:
//! `cargo run --release -p basalt --example dns_propagation -- MASTER_URL DNS_IP:PORT [N]`
#![allow(clippy::disallowed_types, clippy::print_stdout)]

use anyhow::{Context, Result, anyhow};
use basalt_api::agent::{AgentInfo, AgentTask, RegisterAgent};
use basalt_api::operator::EventType;
use basalt_api::task::{CommandInfo, TaskLaunch};
use basalt_api::{
    AgentId, Client, FrameworkId, RoleResources, TaskId, TaskInfo, TaskState, TaskStatus,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A plain A query for `name`, id `id`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let master = args.first().context("MASTER_URL")?.clone();
    let dns: SocketAddr = args.get(1).context("DNS_IP:PORT")?.parse()?;
    let n: usize = args.get(2).map_or(Ok(200), |s| s.parse())?;
    let client = Client::with_timeout(&master, Duration::from_secs(30));

    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut stream = client
        .subscribe_events()
        .await
        .map_err(|e| anyhow!("subscribe: {e}"))?;
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(ev)) = stream.next().await {
            if ev.kind == EventType::TaskAdded
                && let Some(t) = ev.task_added
            {
                s2.lock()
                    .map(|mut m| m.insert(t.task.task_id.to_string(), Instant::now()))
                    .ok();
            }
        }
    });

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(dns).await?;
    let res = RoleResources::parse("cpus:0.1;mem:32;ports:[31000-31000]")?.to_wire();
    let total = RoleResources::parse("cpus:8;mem:8192;ports:[31000-32000]")?.to_wire();
    let run = std::process::id();
    let mut lat = Vec::with_capacity(n);
    let mut buf = [0u8; 1500];
    for i in 0..n {
        let name = format!("prop-{run}-{i}");
        let id = TaskId::new(format!("{name}.0"));
        let host = format!("10.200.{}.{}", i / 250, i % 250 + 1);
        let req = RegisterAgent {
            agent_id: None,
            info: AgentInfo {
                hostname: host.clone(),
                port: 5051,
                url: format!("http://{host}:5051"),
                resources: total.clone(),
                attributes: Default::default(),
                version: "bench".into(),
                isolation: "none: simulated".into(),
            },
            tasks: vec![AgentTask {
                launch: TaskLaunch {
                    framework_id: FrameworkId::new("propagation-bench"),
                    framework_name: "bench".into(),
                    role: "*".into(),
                    task: TaskInfo::command(
                        name.clone(),
                        id.clone(),
                        AgentId::new("pending"),
                        res.clone(),
                        CommandInfo {
                            value: Some("sleep 3600".into()),
                            shell: true,
                            ..Default::default()
                        },
                    ),
                },
                status: TaskStatus::new(id.clone(), TaskState::Running, 1.0),
            }],
        };
        let q = query(&format!("{name}.bench.mesos."), (i % 65536) as u16);
        client
            .register_agent(&req)
            .await
            .map_err(|e| anyhow!("register: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let answered = loop {
            sock.send(&q).await?;
            if let Ok(Ok(len)) =
                tokio::time::timeout(Duration::from_millis(50), sock.recv(&mut buf)).await
                && len >= 12
                && buf[..2] == q[..2]
                && u16::from_be_bytes([buf[6], buf[7]]) > 0
            {
                break Instant::now();
            }
            if Instant::now() > deadline {
                anyhow::bail!("{name} never appeared in DNS");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        // Our own copy of the event may still be in flight; wait for it.
        let start = loop {
            if let Some(t) = seen.lock().ok().and_then(|m| m.get(id.as_str()).copied()) {
                break t;
            }
            if Instant::now() > deadline {
                anyhow::bail!("no TASK_ADDED for {name}");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        lat.push(answered.saturating_duration_since(start).as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "DNS propagation over {n} tasks: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         (Mesos-DNS: 30-60 s refresh, plus TTL)",
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
