//! The user CLI: tables for people, `--json` for scripts, one `error:` line on failure.

use anyhow::{Context, Result, anyhow, bail};
use basalt_api::scheduler::{
    Accept, Acknowledge, Call, CallType, Decline, EventType, Filters, FrameworkInfo, Kill,
    Operation, SchedulerApi,
};
use basalt_api::state::{MasterState, TaskView};
use basalt_api::task::{CommandInfo, Environment, Variable};
use basalt_api::{Client, Resources, RoleResources, TaskId, TaskInfo, TaskState};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::NOTHING};
use std::io::{IsTerminal, Write};
use std::time::Duration;

#[derive(Args, Clone)]
pub(crate) struct GlobalArgs {
    /// The cluster's master URL.
    #[arg(
        long,
        global = true,
        env = "BASALT_URL",
        default_value = "http://127.0.0.1:5050"
    )]
    url: String,
    /// Print the API's JSON and nothing else.
    #[arg(long, global = true)]
    json: bool,
    /// Give up waiting after this long.
    #[arg(long, global = true, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl GlobalArgs {
    fn client(&self) -> Client {
        Client::new(&self.url)
    }
}

#[derive(Subcommand)]
pub(crate) enum NodeCmd {
    /// List agents with their resources and state.
    List {
        #[command(flatten)]
        g: GlobalArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum TaskCmd {
    /// List tasks (running, staging, unreachable; `--all` adds completed ones).
    List {
        #[command(flatten)]
        g: GlobalArgs,
        #[arg(long)]
        all: bool,
    },
    /// Print a task's stdout (or `--stderr`) from its sandbox.
    Log {
        #[command(flatten)]
        g: GlobalArgs,
        /// Task id (or a unique prefix).
        task: String,
        /// Keep printing as the task writes, until it ends.
        #[arg(long, short)]
        follow: bool,
        #[arg(long)]
        stderr: bool,
    },
}

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    g: GlobalArgs,
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory in MB.
    #[arg(long, default_value_t = 64.0)]
    mem: f64,
    /// Disk in MB.
    #[arg(long, default_value_t = 0.0)]
    disk: f64,
    /// Environment variable for the task, NAME=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Task name.
    #[arg(long)]
    name: Option<String>,
    /// Role to run as.
    #[arg(long, default_value = "*")]
    role: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    t
}

fn spinner(g: &GlobalArgs, msg: &str) -> Option<indicatif::ProgressBar> {
    if g.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.enable_steady_tick(Duration::from_millis(100));
    pb.set_message(msg.to_owned());
    Some(pb)
}

fn api_err(e: basalt_api::ClientError) -> anyhow::Error {
    anyhow!(e.message())
}

pub(crate) async fn node(cmd: NodeCmd) -> Result<()> {
    let NodeCmd::List { g } = cmd;
    let c = g.client();
    if g.json {
        let v: serde_json::Value = c.get_json("/master/slaves").await.map_err(api_err)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let s = c.master_state().await.map_err(api_err)?;
    let mut t = table(&[
        "ID",
        "HOSTNAME",
        "STATUS",
        "CPUS",
        "MEM (MB)",
        "TASKS",
        "ATTRIBUTES",
        "ISOLATION",
    ]);
    for a in &s.slaves {
        let tasks = s
            .all_tasks()
            .filter(|x| x.slave_id == a.id && !state_terminal(&x.state))
            .count();
        let attrs: Vec<String> = a
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        t.add_row(vec![
            a.id.clone(),
            a.hostname.clone(),
            a.status.clone(),
            format!("{}/{}", a.used_resources.cpus, a.resources.cpus),
            format!("{}/{}", a.used_resources.mem, a.resources.mem),
            tasks.to_string(),
            attrs.join(";"),
            a.isolation.clone(),
        ]);
    }
    println!("{t}");
    Ok(())
}

fn state_terminal(s: &str) -> bool {
    serde_json::from_value::<TaskState>(serde_json::Value::String(s.to_owned()))
        .is_ok_and(|s| s.is_terminal())
}

fn framework_names(s: &MasterState) -> std::collections::BTreeMap<String, String> {
    s.frameworks
        .iter()
        .chain(&s.completed_frameworks)
        .map(|f| (f.id.clone(), f.name.clone()))
        .collect()
}

pub(crate) async fn task(cmd: TaskCmd) -> Result<()> {
    match cmd {
        TaskCmd::List { g, all } => {
            let s = g.client().master_state().await.map_err(api_err)?;
            let tasks: Vec<&TaskView> = s
                .all_tasks()
                .filter(|t| all || !state_terminal(&t.state))
                .collect();
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "tasks": tasks }))?
                );
                return Ok(());
            }
            let names = framework_names(&s);
            let hosts: std::collections::BTreeMap<&str, &str> = s
                .slaves
                .iter()
                .map(|a| (a.id.as_str(), a.hostname.as_str()))
                .collect();
            let mut t = table(&[
                "ID",
                "NAME",
                "STATE",
                "HOST",
                "FRAMEWORK",
                "CPUS",
                "MEM",
                "MESSAGE",
            ]);
            for x in tasks {
                t.add_row(vec![
                    x.id.clone(),
                    x.name.clone(),
                    x.state.clone(),
                    hosts
                        .get(x.slave_id.as_str())
                        .copied()
                        .unwrap_or("?")
                        .to_owned(),
                    names.get(&x.framework_id).cloned().unwrap_or_default(),
                    x.resources.cpus.to_string(),
                    x.resources.mem.to_string(),
                    x.message.clone().unwrap_or_default(),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        TaskCmd::Log {
            g,
            task,
            follow,
            stderr,
        } => log(g, task, follow, stderr).await,
    }
}

async fn log(g: GlobalArgs, task: String, follow: bool, stderr: bool) -> Result<()> {
    let c = g.client();
    let s = c.master_state().await.map_err(api_err)?;
    let matches: Vec<&TaskView> = s
        .all_tasks()
        .filter(|t| t.id == task || t.id.starts_with(&task))
        .collect();
    let t = match matches.as_slice() {
        [] => bail!("no task '{task}'"),
        [one] => *one,
        many => match many.iter().find(|t| t.id == task) {
            Some(exact) => *exact,
            None => bail!("'{task}' matches {} tasks; give more of the id", many.len()),
        },
    };
    let agent = s
        .slaves
        .iter()
        .find(|a| a.id == t.slave_id)
        .ok_or_else(|| anyhow!("the agent of task {} is no longer known", t.id))?;
    let ac = Client::new(&agent.url);
    let astate = ac.agent_state().await.map_err(api_err)?;
    let dir = astate
        .frameworks
        .iter()
        .chain(&astate.completed_frameworks)
        .flat_map(|f| f.executors.iter().chain(&f.completed_executors))
        .find(|e| {
            e.id == t.id
                || e.tasks
                    .iter()
                    .chain(&e.completed_tasks)
                    .any(|x| x.id == t.id)
        })
        .map(|e| e.directory.clone())
        .ok_or_else(|| anyhow!("the agent has no sandbox for task {}", t.id))?;
    let path = format!("{dir}/{}", if stderr { "stderr" } else { "stdout" });
    let mut offset = 0u64;
    let mut out = std::io::stdout();
    loop {
        let chunk = ac
            .files_read(&path, offset, 1 << 20)
            .await
            .map_err(api_err)?;
        if !chunk.data.is_empty() {
            out.write_all(chunk.data.as_bytes())?;
            out.flush()?;
            offset = chunk.offset + chunk.data.len() as u64;
            continue;
        }
        if !follow {
            return Ok(());
        }
        let st = c.master_state().await.map_err(api_err)?;
        let ended = st
            .all_tasks()
            .find(|x| x.id == t.id)
            .is_none_or(|x| state_terminal(&x.state));
        if ended {
            // One last read for what was written just before the end.
            let chunk = ac
                .files_read(&path, offset, 1 << 20)
                .await
                .map_err(api_err)?;
            out.write_all(chunk.data.as_bytes())?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `basalt run`: subscribe as a framework, take one offer, launch, follow to the end.
pub(crate) async fn run(a: RunArgs) -> Result<i32> {
    let want = Resources::new(a.cpus, a.mem).with_disk(a.disk);
    basalt_api::Milli::from_f64("cpus", a.cpus).context("--cpus")?;
    basalt_api::Milli::from_f64("mem", a.mem).context("--mem")?;
    basalt_api::Milli::from_f64("disk", a.disk).context("--disk")?;
    let mut vars = Vec::new();
    for e in &a.env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| anyhow!("--env '{e}' is not NAME=VALUE"))?;
        vars.push(Variable {
            name: k.to_owned(),
            value: v.to_owned(),
        });
    }
    let value = a
        .command
        .iter()
        .map(|s| shell_quote(s))
        .collect::<Vec<_>>()
        .join(" ");
    let short = uuid::Uuid::new_v4().simple().to_string();
    let name = a.name.clone().unwrap_or_else(|| "basalt-run".into());
    let task_id = TaskId::new(format!("{name}.{}", &short[..12]));
    let client = a.g.client();
    let info = FrameworkInfo {
        user: String::new(),
        name: "basalt-run".into(),
        role: Some(a.role.clone()),
        failover_timeout: 0.0,
        ..Default::default()
    };
    let mut sub = client.subscribe(info).await.map_err(|e| anyhow!("{e}"))?;
    let fw = sub.framework_id.clone();
    let stream = sub.stream_id.clone();
    let pb = spinner(&a.g, "waiting for an offer");
    let deadline = tokio::time::Instant::now() + a.g.timeout;
    let mut launched = false;
    let mut killing = false;
    let code;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let say = |pb: &Option<indicatif::ProgressBar>, msg: String| match pb {
        Some(p) => p.set_message(msg),
        None => {
            if !a.g.json {
                eprintln!("{msg}");
            }
        }
    };
    loop {
        let ev = tokio::select! {
            ev = sub.events.recv() => ev,
            _ = tokio::time::sleep_until(deadline) => {
                if let Some(p) = &pb { p.finish_and_clear(); }
                bail!("timed out after {} waiting for task {task_id}", humantime::format_duration(a.g.timeout));
            }
            _ = &mut ctrl_c, if launched && !killing => {
                killing = true;
                say(&pb, format!("killing {task_id}"));
                let mut call = Call::new(Some(fw.clone()), CallType::Kill);
                call.kill = Some(Kill { task_id: task_id.clone(), agent_id: None, kill_policy: None });
                client.call(&stream, call).await.map_err(|e| anyhow!("{e}"))?;
                continue;
            }
        };
        let Some(ev) = ev else {
            bail!("the master closed the connection")
        };
        match ev.kind {
            EventType::Offers if !launched => {
                let offers = ev.offers.map(|o| o.offers).unwrap_or_default();
                let mut chosen = None;
                for o in &offers {
                    let have = RoleResources::from_wire(&o.resources)
                        .map(|r| r.total())
                        .unwrap_or_default();
                    if chosen.is_none() && have.contains(&want) {
                        chosen = Some(o.clone());
                    }
                }
                let others: Vec<_> = offers
                    .iter()
                    .filter(|o| chosen.as_ref().is_none_or(|c| c.id != o.id))
                    .map(|o| o.id.clone())
                    .collect();
                if !others.is_empty() {
                    let mut call = Call::new(Some(fw.clone()), CallType::Decline);
                    call.decline = Some(Decline {
                        offer_ids: others,
                        filters: Some(Filters {
                            refuse_seconds: Some(1.0),
                        }),
                    });
                    client
                        .call(&stream, call)
                        .await
                        .map_err(|e| anyhow!("{e}"))?;
                }
                let Some(o) = chosen else {
                    say(&pb, format!("waiting for an offer with {want}"));
                    continue;
                };
                let mut res = RoleResources::default();
                res.add_to(if a.role == "*" { "*" } else { &a.role }, &want);
                // Ask for unreserved resources; the master tops up from the role's reservation.
                let res = RoleResources::unreserved(res.total());
                let task = TaskInfo::command(
                    name.clone(),
                    task_id.clone(),
                    o.agent_id.clone(),
                    res.to_wire(),
                    CommandInfo {
                        value: Some(value.clone()),
                        shell: true,
                        environment: (!vars.is_empty()).then(|| Environment {
                            variables: vars.clone(),
                        }),
                        ..Default::default()
                    },
                );
                let mut call = Call::new(Some(fw.clone()), CallType::Accept);
                call.accept = Some(Accept {
                    offer_ids: vec![o.id.clone()],
                    operations: vec![Operation::launch(vec![task])],
                    filters: Some(Filters {
                        refuse_seconds: Some(3600.0),
                    }),
                });
                client
                    .call(&stream, call)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                launched = true;
                say(&pb, format!("{task_id}: launched on {}", o.hostname));
                let mut call = Call::new(Some(fw.clone()), CallType::Suppress);
                call.suppress = Some(Default::default());
                let _ = client.call(&stream, call).await;
            }
            EventType::Offers => {}
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
                    let _ = client.call(&stream, call).await;
                }
                if st.task_id != task_id {
                    continue;
                }
                if a.g.json {
                    println!("{}", serde_json::to_string(&st)?);
                } else {
                    let extra = st
                        .message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default();
                    say(&pb, format!("{task_id}: {}{extra}", st.state));
                }
                if st.state.is_terminal() {
                    if let Some(p) = &pb {
                        p.finish_and_clear();
                    }
                    code = match st.state {
                        TaskState::Finished => 0,
                        TaskState::Killed if killing => 130,
                        _ => st.exit_code.filter(|c| *c != 0).unwrap_or(1),
                    };
                    if !a.g.json {
                        let extra = st
                            .message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default();
                        eprintln!("{task_id} {}{extra}", st.state);
                    }
                    break;
                }
            }
            EventType::Error => {
                let msg = ev.error.map(|e| e.message).unwrap_or_default();
                bail!("the master ended the subscription: {msg}");
            }
            _ => {}
        }
    }
    let _ = client
        .call(&stream, Call::new(Some(fw), CallType::Teardown))
        .await;
    Ok(code)
}
