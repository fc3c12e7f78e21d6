//! From a `TaskLaunch` to a process ready to fork: validation, environment, sandbox,
//! cgroups and the checkpoint that must exist before the task does.

use super::Agent;
use crate::cgroups::{self, Limits};
use crate::checkpoint::{self, TaskRecord};
use crate::supervisor::{Prepared, Spec};
use basalt_api::RoleResources;
use basalt_api::task::TaskLaunch;
use std::path::Path;

/// PATH tasks get unless they set their own.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A validated launch.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    shell: bool,
    value: String,
    arguments: Vec<String>,
    limits: Limits,
    /// The task's ports, in the order its resources list them.
    ports: Vec<u64>,
    /// What the fetcher puts into the sandbox before the task starts.
    pub(crate) uris: Vec<crate::fetcher::FetchUri>,
}

impl Plan {
    /// Checks what the agent can run; the error becomes TASK_ERROR's message.
    pub(crate) fn of(l: &TaskLaunch) -> Result<Plan, String> {
        let cmd = l
            .task
            .command
            .as_ref()
            .ok_or("the task has no command (this agent runs command tasks only)")?;
        let value = cmd.value.clone().unwrap_or_default();
        if value.trim().is_empty() {
            return Err("the task's command has no value".into());
        }
        let is_docker = l
            .task
            .container
            .as_ref()
            .and_then(|c| c.get("type"))
            .and_then(|t| t.as_str())
            .is_some_and(|t| t.eq_ignore_ascii_case("DOCKER"));
        if is_docker {
            return Err("Docker containers are not supported by this agent's containerizer".into());
        }
        let resources = RoleResources::from_wire(&l.task.resources)
            .map_err(|e| format!("invalid resources: {e}"))?;
        let ports = l
            .task
            .resources
            .iter()
            .filter(|r| r.name == "ports")
            .filter_map(|r| r.ranges.as_ref())
            .flat_map(|r| r.range.iter().flat_map(|w| w.begin..=w.end))
            .take(65536)
            .collect();
        Ok(Plan {
            shell: cmd.shell,
            value,
            arguments: cmd.arguments.clone(),
            limits: Limits::of(&resources.total()),
            ports,
            uris: crate::fetcher::parse(&cmd.uris)?,
        })
    }
}

/// Where the task is and who runs it, for its environment.
pub(crate) struct EnvContext<'a> {
    pub(crate) sandbox: &'a Path,
    pub(crate) hostname: &'a str,
    /// `ip:port` of the agent.
    pub(crate) agent_endpoint: &'a str,
}

/// The task's environment: a minimal base, the Mesos variables, then the task's own
/// variables, which win.
pub(crate) fn task_env(
    l: &TaskLaunch,
    ports: &[u64],
    ctx: &EnvContext<'_>,
) -> Vec<(String, String)> {
    let sandbox = ctx.sandbox.display().to_string();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        // The sandbox is the one directory the task surely owns.
        ("HOME".into(), sandbox.clone()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    for (i, p) in ports.iter().enumerate() {
        env.push((format!("PORT{i}"), p.to_string()));
    }
    if let Some(p) = ports.first() {
        env.push(("PORT".into(), p.to_string()));
    }
    if !ports.is_empty() {
        let all: Vec<String> = ports.iter().map(u64::to_string).collect();
        env.push(("PORTS".into(), all.join(",")));
    }
    env.extend([
        ("HOST".into(), ctx.hostname.to_owned()),
        ("MESOS_TASK_ID".into(), l.task.task_id.to_string()),
        ("MESOS_EXECUTOR_ID".into(), l.task.task_id.to_string()),
        ("MESOS_FRAMEWORK_ID".into(), l.framework_id.to_string()),
        ("MESOS_SANDBOX".into(), sandbox.clone()),
        ("MESOS_DIRECTORY".into(), sandbox),
        ("MESOS_AGENT_ENDPOINT".into(), ctx.agent_endpoint.to_owned()),
        ("MESOS_SLAVE_ENDPOINT".into(), ctx.agent_endpoint.to_owned()),
    ]);
    let own = l
        .task
        .command
        .as_ref()
        .and_then(|c| c.environment.as_ref())
        .map(|e| e.variables.as_slice())
        .unwrap_or_default();
    for v in own {
        match env.iter_mut().find(|(k, _)| *k == v.name) {
            Some(slot) => slot.1 = v.value.clone(),
            None => env.push((v.name.clone(), v.value.clone())),
        }
    }
    env
}

/// Finds `name` on `path` the way execvp would; done before the fork because the search
/// allocates.
fn resolve_program(name: &str, path: &str) -> Option<String> {
    if name.contains('/') {
        return Some(name.to_owned());
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|d| {
        let p = Path::new(d).join(name);
        let meta = std::fs::metadata(&p).ok()?;
        use std::os::unix::fs::PermissionsExt;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then(|| p.display().to_string())
    })
}

/// Creates the sandbox and cgroups, checkpoints the record (durably: the task must not
/// exist before its record does) and builds everything the fork needs. Blocking. On error,
/// `rec.cgroups` lists what must be cleaned up.
pub(crate) fn prepare(
    agent: &Agent,
    rec: &mut TaskRecord,
    plan: &Plan,
) -> Result<Prepared, String> {
    let sandbox = rec.sandbox.clone();
    std::fs::create_dir_all(&sandbox)
        .map_err(|e| format!("cannot create the sandbox {}: {e}", sandbox.display()))?;
    if let Some(runs) = sandbox.parent() {
        // `latest` points at the newest run; an older one is replaced atomically.
        let latest = runs.join("latest");
        let linked = match std::os::unix::fs::symlink(&rec.run_id, &latest) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let tmp = runs.join(format!(".latest-{}", rec.run_id));
                std::os::unix::fs::symlink(&rec.run_id, &tmp)
                    .and_then(|()| std::fs::rename(&tmp, &latest))
            }
            other => other,
        };
        if let Err(e) = linked {
            tracing::warn!(task_id = %rec.launch.task.task_id, error = %e, "cannot update the sandbox's latest link");
        }
    }
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sandbox.join(name))
            .map_err(|e| format!("cannot create {name} in the sandbox: {e}"))
    };
    let stdout = open("stdout")?;
    let stderr = open("stderr")?;

    let endpoint = format!("{}:{}", agent.config.advertise_ip, agent.port);
    let env = task_env(
        &rec.launch,
        &plan.ports,
        &EnvContext {
            sandbox: &sandbox,
            hostname: &agent.config.hostname,
            agent_endpoint: &endpoint,
        },
    );
    let (program, argv) = if plan.shell {
        (
            "/bin/sh".to_owned(),
            vec!["sh".to_owned(), "-c".to_owned(), plan.value.clone()],
        )
    } else {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(DEFAULT_PATH);
        let program = resolve_program(&plan.value, path)
            .ok_or_else(|| format!("Failed to execute '{}': not found on PATH", plan.value))?;
        let argv = if plan.arguments.is_empty() {
            vec![plan.value.clone()]
        } else {
            plan.arguments.clone()
        };
        (program, argv)
    };

    rec.cgroups = agent
        .isolation
        .create(
            &rec.run_id,
            cgroups::Limits {
                cfs: agent.config.cgroups_enable_cfs,
                ..plan.limits
            },
        )
        .map_err(|e| format!("cannot create the task's cgroups: {e}"))?;
    let procs = cgroups::procs_files(&rec.cgroups)
        .iter()
        .map(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map(Into::into)
                .map_err(|e| format!("cannot open {}: {e}", p.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prepared = Prepared::new(Spec {
        program,
        argv,
        env,
        cwd: sandbox.clone(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        cgroup_procs: procs,
        exit_path: rec.exit_path(&agent.layout),
    })
    .map_err(|e| format!("cannot prepare the command: {e}"))?;
    checkpoint::write_record(&agent.layout, rec, true)
        .map_err(|e| format!("cannot checkpoint the task: {e}"))?;
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_api::task::{CommandInfo, Environment, Variable};
    use basalt_api::{AgentId, FrameworkId, TaskId, TaskInfo};

    fn launch(cmd: Option<CommandInfo>, resources: &str) -> TaskLaunch {
        TaskLaunch {
            framework_id: FrameworkId::new("fw-1"),
            framework_name: "marathon".into(),
            role: "*".into(),
            task: TaskInfo {
                name: "web".into(),
                task_id: TaskId::new("web.1"),
                agent_id: AgentId::new("a-S0"),
                resources: RoleResources::parse(resources).expect("valid").to_wire(),
                command: cmd,
                container: None,
                health_check: None,
                kill_policy: None,
                labels: None,
                discovery: None,
                data: None,
            },
        }
    }

    fn shell(v: &str) -> Option<CommandInfo> {
        Some(CommandInfo {
            value: Some(v.into()),
            shell: true,
            ..Default::default()
        })
    }

    #[test]
    fn env_carries_ports_and_mesos_names_and_task_variables_win() {
        let mut cmd = shell("true").expect("a command");
        cmd.environment = Some(Environment {
            variables: vec![
                Variable {
                    name: "HOST".into(),
                    value: "overridden".into(),
                },
                Variable {
                    name: "MINE".into(),
                    value: "1".into(),
                },
            ],
        });
        let l = launch(Some(cmd), "cpus:1;mem:64;ports:[31000-31001,31005-31005]");
        let plan = Plan::of(&l).expect("valid");
        let env = task_env(
            &l,
            &plan.ports,
            &EnvContext {
                sandbox: Path::new("/w/sb"),
                hostname: "h1",
                agent_endpoint: "10.0.0.1:5051",
            },
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PORT0"), Some("31000"));
        assert_eq!(get("PORT2"), Some("31005"));
        assert_eq!(get("PORT"), Some("31000"));
        assert_eq!(get("PORTS"), Some("31000,31001,31005"));
        assert_eq!(get("MESOS_SANDBOX"), Some("/w/sb"));
        assert_eq!(get("MESOS_TASK_ID"), Some("web.1"));
        assert_eq!(get("MESOS_FRAMEWORK_ID"), Some("fw-1"));
        assert_eq!(get("MESOS_AGENT_ENDPOINT"), Some("10.0.0.1:5051"));
        assert_eq!(get("HOST"), Some("overridden"));
        assert_eq!(get("MINE"), Some("1"));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOST").count(), 1);
    }

    #[test]
    fn launches_without_a_runnable_command_are_invalid() {
        assert!(Plan::of(&launch(None, "cpus:1")).is_err());
        assert!(Plan::of(&launch(shell("  "), "cpus:1")).is_err());
        let mut l = launch(shell("true"), "cpus:1");
        l.task.container = Some(serde_json::json!({"type": "DOCKER"}));
        assert!(Plan::of(&l).is_err());
        let plan = Plan::of(&launch(shell("true"), "cpus:0.5;mem:32")).expect("valid");
        assert_eq!(plan.limits.mem_bytes, Some(32 * 1024 * 1024));
        assert_eq!(plan.limits.cpu_millis, Some(500));
    }

    #[test]
    fn programs_resolve_on_path_like_execvp() {
        assert_eq!(
            resolve_program("sh", DEFAULT_PATH).map(|p| p.ends_with("/sh")),
            Some(true)
        );
        assert_eq!(resolve_program("./x", "").as_deref(), Some("./x"));
        assert_eq!(
            resolve_program("no-such-program-basalt", DEFAULT_PATH),
            None
        );
    }
}
