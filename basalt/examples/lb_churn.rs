//! Backend churn driver for `bench/lb_churn.sh`: changes which backends serve an app at a
//! fixed rate, either through the master (Basalt's LB follows the event stream) or the way
//! marathon-lb drove HAProxy (rewrite haproxy.cfg, then ask the master-worker to reload).
//!
//! Of the given backend ports, half serve at any time; each change takes the oldest out and
//! puts a resting one in, so every change both adds and removes a backend.
//!
//! `basalt MASTER_URL PORTS CHANGES_PER_MIN SECONDS`
//! `haproxy CFG_PATH MASTER_PID LISTEN_PORT PORTS CHANGES_PER_MIN SECONDS`
//! `haproxy-cfg CFG_PATH LISTEN_PORT PORTS` (writes the starting configuration)
#![allow(clippy::disallowed_types, clippy::print_stdout)]

#[path = "support/sim.rs"]
mod sim;

use anyhow::{Context, Result, anyhow};
use basalt_api::agent::{AgentTask, StatusUpdateMessage};
use basalt_api::task::TaskLaunch;
use basalt_api::{Client, FrameworkId, TaskId, TaskState, TaskStatus};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

fn ports(s: &str) -> Result<Vec<u16>> {
    s.split(',')
        .map(|p| p.trim().parse().context("a port"))
        .collect()
}

/// Half the ports serve; on a fixed beat until the end, the oldest serving one rests and
/// the longest-resting one serves.
struct Churn {
    serving: VecDeque<u16>,
    resting: VecDeque<u16>,
    every: Duration,
    next: Instant,
    end: Instant,
    changes: u64,
}

impl Churn {
    fn new(ports: &[u16], per_min: u32, secs: u64) -> Churn {
        let every = Duration::from_secs_f64(60.0 / f64::from(per_min.max(1)));
        let now = Instant::now();
        Churn {
            serving: ports[..ports.len() / 2].iter().copied().collect(),
            resting: ports[ports.len() / 2..].iter().copied().collect(),
            every,
            next: now + every,
            end: now + Duration::from_secs(secs),
            changes: 0,
        }
    }

    /// Waits for the next beat and makes the change: (port out, port in); None at the end.
    async fn next_change(&mut self) -> Option<(u16, u16)> {
        if self.next > self.end {
            return None;
        }
        tokio::time::sleep_until(self.next.into()).await;
        self.next += self.every;
        let (out, inn) = (self.serving.pop_front()?, self.resting.pop_front()?);
        self.serving.push_back(inn);
        self.resting.push_back(out);
        self.changes += 1;
        Some((out, inn))
    }
}

/// marathon-lb's HAProxy setup: master-worker, listeners handed over the stats socket.
fn haproxy_cfg(sock: &std::path::Path, listen: u16, serving: &VecDeque<u16>) -> String {
    let mut cfg = format!(
        "global\n  nbthread 1\n  maxconn 4096\n  stats socket {} mode 600 expose-fd listeners level admin\n\
         defaults\n  mode http\n  option forwardfor\n  http-reuse always\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         frontend f\n  bind 127.0.0.1:{listen}\n  default_backend b\nbackend b\n  balance roundrobin\n",
        sock.display()
    );
    for p in serving {
        cfg.push_str(&format!("  server s{p} 127.0.0.1:{p}\n"));
    }
    cfg
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().context("basalt|haproxy")?.as_str();
    if mode == "haproxy-cfg" {
        // `haproxy-cfg CFG_PATH LISTEN_PORT PORTS`: the starting configuration.
        let cfg = std::path::PathBuf::from(args.get(1).context("CFG_PATH")?);
        let ps = ports(args.get(3).context("PORTS")?)?;
        let serving: VecDeque<u16> = ps[..ps.len() / 2].iter().copied().collect();
        std::fs::write(
            &cfg,
            haproxy_cfg(&cfg.with_extension("sock"), args[2].parse()?, &serving),
        )?;
        return Ok(());
    }
    let (ports, per_min, secs) = match mode {
        "basalt" => (
            ports(&args[2])?,
            args[3].parse::<u32>()?,
            args[4].parse::<u64>()?,
        ),
        "haproxy" => (
            ports(&args[4])?,
            args[5].parse::<u32>()?,
            args[6].parse::<u64>()?,
        ),
        other => anyhow::bail!("unknown mode {other}"),
    };
    let mut churn = Churn::new(&ports, per_min, secs);
    match mode {
        "basalt" => {
            let client = Client::with_timeout(&args[1], Duration::from_secs(30));
            let fw = FrameworkId::new("lb-churn-bench");
            let run = std::process::id();
            let id = |p: u16| TaskId::new(format!("churn.{run}.{p}"));
            let mut tasks = Vec::new();
            for &p in &ports {
                let mut st = TaskStatus::new(id(p), TaskState::Running, 1.0);
                st.healthy = Some(churn.serving.contains(&p));
                tasks.push(AgentTask {
                    launch: TaskLaunch {
                        framework_id: fw.clone(),
                        framework_name: "bench".into(),
                        role: "*".into(),
                        task: sim::lb_task(&id(p), "/churn", "bench.local", p)?,
                    },
                    status: st,
                });
            }
            let agent = sim::register_agent(&client, tasks).await?;
            let health = |p: u16, healthy: bool| {
                let mut s = TaskStatus::new(id(p), TaskState::Running, 1.0);
                s.healthy = Some(healthy);
                s.agent_id = Some(agent.clone());
                s.uuid = Some(format!("{:032x}", sim::uuid_seq()));
                StatusUpdateMessage {
                    framework_id: fw.clone(),
                    status: s,
                }
            };
            while let Some((out, inn)) = churn.next_change().await {
                client
                    .send_status(&agent, &health(inn, true))
                    .await
                    .map_err(|e| anyhow!("status: {e}"))?;
                client
                    .send_status(&agent, &health(out, false))
                    .await
                    .map_err(|e| anyhow!("status: {e}"))?;
            }
        }
        _ => {
            let cfg = std::path::PathBuf::from(&args[1]);
            let pid: i32 = args[2].parse()?;
            let listen: u16 = args[3].parse()?;
            while churn.next_change().await.is_some() {
                let tmp = cfg.with_extension("tmp");
                std::fs::write(
                    &tmp,
                    haproxy_cfg(&cfg.with_extension("sock"), listen, &churn.serving),
                )?;
                std::fs::rename(&tmp, &cfg)?;
                // SAFETY: kill(2) asking HAProxy's master process to reload (SIGUSR2).
                unsafe {
                    libc::kill(pid, libc::SIGUSR2);
                }
            }
        }
    }
    println!("{mode}: {} backend changes in {secs} s", churn.changes);
    Ok(())
}
