//! Load-balancer propagation: how long from an agent reporting an instance healthy until
//! the LB sends it its first request, and from the agent reporting it `TASK_KILLING` until
//! the LB sends it its last new request.
//!
//! The master and the LB are real processes; the agent is simulated here so the clock can
//! start at the exact moment the status update leaves for the master. The backends are
//! HTTP servers in this process that timestamp every request; a load of 4 keep-alive
//! clients runs through the LB for the whole measurement.
//!
//! `bench/lb_propagation.sh` runs it; by hand:
//! `cargo run --release -p basalt --example lb_propagation -- MASTER_URL LB_HTTP_URL [ROUNDS]`
#![allow(clippy::disallowed_types, clippy::print_stdout)]

#[path = "support/sim.rs"]
mod sim;

use anyhow::{Context, Result, anyhow};
use basalt_api::agent::{AgentTask, StatusUpdateMessage};
use basalt_api::task::TaskLaunch;
use basalt_api::{Client, FrameworkId, TaskId, TaskState, TaskStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Request times seen by one backend.
#[derive(Default)]
struct Seen(Mutex<Vec<Instant>>);

impl Seen {
    fn first_after(&self, t: Instant) -> Option<Instant> {
        self.0.lock().ok()?.iter().copied().find(|x| *x >= t)
    }
    fn last(&self) -> Option<Instant> {
        self.0.lock().ok()?.last().copied()
    }
}

/// A minimal keep-alive HTTP/1.1 server that timestamps each request.
async fn backend(seen: Arc<Seen>) -> Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        if let Ok(mut v) = seen.0.lock() {
                            v.push(Instant::now());
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if have == buf.len() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let master = args.first().context("MASTER_URL")?.clone();
    let lb = args.get(1).context("LB_HTTP_URL")?.clone();
    let rounds: usize = args.get(2).map_or(Ok(100), |s| s.parse())?;
    let client = Client::with_timeout(&master, Duration::from_secs(30));
    let fw = FrameworkId::new("lb-propagation-bench");

    // One always-healthy instance keeps the app up; each round brings one more in and out.
    let mut seens = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..=rounds {
        let seen = Arc::new(Seen::default());
        let port = backend(seen.clone()).await?;
        let id = TaskId::new(format!("prop.{}.{i}", std::process::id()));
        let mut status = TaskStatus::new(id.clone(), TaskState::Running, 1.0);
        status.healthy = Some(i == 0);
        tasks.push(AgentTask {
            launch: TaskLaunch {
                framework_id: fw.clone(),
                framework_name: "bench".into(),
                role: "*".into(),
                task: sim::lb_task(&id, "/prop", "prop.bench", port)?,
            },
            status,
        });
        seens.push((id, seen));
    }
    let agent = sim::register_agent(&client, tasks).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), format!("{lb}/"));
        load.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                if c.get(&url)
                    .header("Host", "prop.bench")
                    .send()
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    // Wait until the always-healthy instance gets traffic through the LB.
    let t = Instant::now();
    while seens[0].1.last().is_none() {
        if t.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("the LB never routed to the first instance");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let send = |id: &TaskId, state: TaskState, healthy: Option<bool>| {
        let mut s = TaskStatus::new(id.clone(), state, 1.0);
        s.healthy = healthy;
        s.agent_id = Some(agent.clone());
        s.uuid = Some(format!("{:032x}", sim::uuid_seq()));
        StatusUpdateMessage {
            framework_id: fw.clone(),
            status: s,
        }
    };
    let mut up = Vec::new();
    let mut down = Vec::new();
    for (id, seen) in seens.iter().skip(1) {
        let msg = send(id, TaskState::Running, Some(true));
        let t0 = Instant::now();
        client
            .send_status(&agent, &msg)
            .await
            .map_err(|e| anyhow!("status: {e}"))?;
        let first = loop {
            if let Some(f) = seen.first_after(t0) {
                break f;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("{id} never got traffic");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        up.push(first.saturating_duration_since(t0).as_secs_f64() * 1e3);

        let msg = send(id, TaskState::Killing, None);
        let t0 = Instant::now();
        client
            .send_status(&agent, &msg)
            .await
            .map_err(|e| anyhow!("status: {e}"))?;
        // Anything the LB sends later than this would be a bug: watch a while.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let last = seen.last().unwrap_or(t0);
        down.push(last.saturating_duration_since(t0).as_secs_f64() * 1e3);
    }
    stop.store(true, Ordering::Relaxed);
    for h in load {
        let _ = h.await;
    }
    println!(
        "healthy -> first proxied request over {rounds} instances: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&mut up, 0.5),
        pct(&mut up, 0.99),
        pct(&mut up, 1.0)
    );
    println!(
        "TASK_KILLING -> last new request over {rounds} instances: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         (marathon-lb: an SSE event, a full /v2/apps fetch, a config render and an HAProxy reload: seconds)",
        pct(&mut down, 0.5),
        pct(&mut down, 0.99),
        pct(&mut down, 1.0)
    );
    Ok(())
}
