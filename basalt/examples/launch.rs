//! Launch throughput: N short tasks (`/bin/sh -c true`) through a running cluster until
//! all are `TASK_FINISHED`, printed beside this machine's raw fork+exec rate for the same
//! command measured in the same run (the physical limit).
//!
//! `bench/launch.sh` starts `basalt up` and runs this; by hand:
//! `cargo run --release -p basalt --example launch -- http://127.0.0.1:5050 1000`
#![allow(clippy::disallowed_types, clippy::print_stdout)]

use anyhow::{Context, Result, anyhow, bail};
use basalt_api::scheduler::{
    Accept, Acknowledge, Call, CallType, EventType, Filters, FrameworkInfo, Operation, SchedulerApi,
};
use basalt_api::task::CommandInfo;
use basalt_api::{Client, Resources, RoleResources, TaskId, TaskInfo, TaskState};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// What each task asks for: small enough that one offer carries a few hundred.
const CPUS: f64 = 0.001;
const MEM: f64 = 8.0;

fn raw_rate(n: usize) -> Result<f64> {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let t = Instant::now();
    let per = n.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<()> {
                for _ in 0..per {
                    std::process::Command::new("/bin/sh")
                        .args(["-c", "true"])
                        .status()?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow!("spawner panicked"))??;
    }
    Ok((per * threads) as f64 / t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:5050".into());
    let n: usize = args.get(1).map_or(Ok(1000), |s| s.parse())?;

    let raw = tokio::task::spawn_blocking(move || raw_rate(n)).await??;

    let client = Client::with_timeout(url, Duration::from_secs(30));
    let info = FrameworkInfo {
        name: "launch-bench".into(),
        failover_timeout: 0.0,
        ..Default::default()
    };
    let mut sub = client
        .subscribe(info)
        .await
        .map_err(|e| anyhow!("subscribe: {e}"))?;
    let fw = sub.framework_id.clone();
    let stream = sub.stream_id.clone();
    let want = Resources::new(CPUS, MEM);
    let mut launched = 0usize;
    let mut finished = HashSet::new();
    let mut failed = 0usize;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while finished.len() + failed < n {
        let ev = tokio::time::timeout_at(deadline, sub.events.recv())
            .await
            .context("timed out waiting for the cluster")?
            .ok_or_else(|| anyhow!("the master closed the subscription"))?;
        match ev.kind {
            EventType::Offers => {
                for o in ev.offers.map(|o| o.offers).unwrap_or_default() {
                    let mut have = RoleResources::from_wire(&o.resources)
                        .map(|r| r.total())
                        .unwrap_or_default();
                    let mut tasks = Vec::new();
                    while launched + tasks.len() < n && have.contains(&want) {
                        have = have.sub(&want);
                        tasks.push(TaskInfo::command(
                            "noop",
                            TaskId::new(format!("noop-{}", launched + tasks.len())),
                            o.agent_id.clone(),
                            RoleResources::unreserved(want.clone()).to_wire(),
                            CommandInfo {
                                value: Some("true".into()),
                                shell: true,
                                ..Default::default()
                            },
                        ));
                    }
                    launched += tasks.len();
                    let mut call = Call::new(Some(fw.clone()), CallType::Accept);
                    call.accept = Some(Accept {
                        offer_ids: vec![o.id.clone()],
                        operations: if tasks.is_empty() {
                            vec![]
                        } else {
                            vec![Operation::launch(tasks)]
                        },
                        filters: Some(Filters {
                            refuse_seconds: Some(0.0),
                        }),
                    });
                    client
                        .call(&stream, call)
                        .await
                        .map_err(|e| anyhow!("accept: {e}"))?;
                }
            }
            EventType::Update => {
                let Some(u) = ev.update else { continue };
                let st = u.status;
                if let (Some(uuid), Some(agent)) = (st.uuid.clone(), st.agent_id.clone()) {
                    let mut call = Call::new(Some(fw.clone()), CallType::Acknowledge);
                    call.acknowledge = Some(Acknowledge {
                        agent_id: agent,
                        task_id: st.task_id.clone(),
                        uuid,
                    });
                    client
                        .call(&stream, call)
                        .await
                        .map_err(|e| anyhow!("ack: {e}"))?;
                }
                match st.state {
                    TaskState::Finished => {
                        finished.insert(st.task_id);
                    }
                    s if s.is_terminal() => {
                        failed += 1;
                        eprintln!("{} ended {s}: {:?}", st.task_id, st.message);
                    }
                    _ => {}
                }
            }
            EventType::Error => bail!("subscription ended: {:?}", ev.error),
            _ => {}
        }
    }
    let took = start.elapsed().as_secs_f64();
    let _ = client
        .call(&stream, Call::new(Some(fw), CallType::Teardown))
        .await;
    let rate = finished.len() as f64 / took;
    println!(
        "raw fork+exec of /bin/sh -c true: {raw:.0} /s (the limit); basalt: {} tasks TASK_FINISHED \
         in {took:.2} s = {rate:.0} tasks/s ({:.0}% of the limit); {failed} failed",
        finished.len(),
        100.0 * rate / raw
    );
    if failed > 0 {
        bail!("{failed} tasks did not finish");
    }
    Ok(())
}
