//! What the agent keeps on disk so a restarted agent (even after SIGKILL) can re-adopt its
//! tasks: the agent id, one record per task, the supervisors' exit files. Sandboxes follow
//! the Mesos layout `<work_dir>/slaves/<agent>/frameworks/<fw>/executors/<task>/runs/<run>`.

use basalt_api::task::{TaskLaunch, TaskStatus};
use basalt_api::{AgentId, FrameworkId, TaskId};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where everything lives under the work dir.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) work_dir: PathBuf,
}

impl Layout {
    pub(crate) fn meta(&self) -> PathBuf {
        self.work_dir.join("meta")
    }

    pub(crate) fn agent_id_file(&self) -> PathBuf {
        self.meta().join("slaves").join("latest")
    }

    pub(crate) fn journal(&self) -> PathBuf {
        self.meta().join("updates.log")
    }

    pub(crate) fn tasks_dir(&self) -> PathBuf {
        self.meta().join("tasks")
    }

    pub(crate) fn task_dir(&self, fw: &FrameworkId, task: &TaskId) -> PathBuf {
        self.tasks_dir().join(fw.as_str()).join(task.as_str())
    }

    pub(crate) fn exit_file(&self, fw: &FrameworkId, task: &TaskId, run: &str) -> PathBuf {
        self.task_dir(fw, task).join(format!("{run}.exit"))
    }

    /// Root of every sandbox: the only tree `/files` serves.
    pub(crate) fn sandboxes(&self) -> PathBuf {
        self.work_dir.join("slaves")
    }

    pub(crate) fn runs_dir(&self, agent: &AgentId, fw: &FrameworkId, task: &TaskId) -> PathBuf {
        self.sandboxes()
            .join(agent.as_str())
            .join("frameworks")
            .join(fw.as_str())
            .join("executors")
            .join(task.as_str())
            .join("runs")
    }
}

/// Whether an id can be used as one path component: the wire types already forbid `/` and
/// control characters, but `.` and `..` would still climb.
pub(crate) fn safe_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// A process, with its start time (clock ticks since boot) to tell it from a later process
/// that reuses the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Proc {
    pub(crate) pid: i32,
    pub(crate) start_ticks: u64,
}

impl Proc {
    pub(crate) fn of(pid: i32) -> Option<Proc> {
        let start_ticks = stat_field(pid)?.1;
        Some(Proc { pid, start_ticks })
    }

    /// This very process, exited and waiting for its parent, which is us.
    pub(crate) fn is_own_zombie(&self) -> bool {
        let ours = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|t| {
                let rest = &t[t.rfind(')')? + 1..];
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            })
            .is_some_and(|ppid| ppid == std::process::id());
        ours && matches!(stat_field(self.pid), Some(('Z', ticks)) if ticks == self.start_ticks)
    }

    /// Still this very process, and not yet a zombie.
    pub(crate) fn alive(&self) -> bool {
        matches!(stat_field(self.pid), Some((state, ticks)) if ticks == self.start_ticks && state != 'Z' && state != 'X')
    }
}

/// `(state, starttime)` from `/proc/<pid>/stat`.
fn stat_field(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // starttime is field 22; `state` was field 3.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

/// One task as checkpointed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub(crate) launch: TaskLaunch,
    pub(crate) agent_id: AgentId,
    pub(crate) run_id: String,
    pub(crate) sandbox: PathBuf,
    #[serde(default)]
    pub(crate) cgroups: Vec<PathBuf>,
    /// Seconds since the Unix epoch.
    pub(crate) started_at: f64,
    #[serde(default)]
    pub(crate) supervisor: Option<Proc>,
    #[serde(default)]
    pub(crate) task: Option<Proc>,
    /// A kill was asked for: the task ends TASK_KILLED, and recovery resumes the kill.
    #[serde(default)]
    pub(crate) killing: bool,
    #[serde(default)]
    pub(crate) kill_grace_secs: Option<f64>,
    /// The latest status the master acknowledged.
    #[serde(default)]
    pub(crate) acked: Option<TaskStatus>,
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old
/// or the new contents, never a mix. With `durable`, the file and its directory are synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a checkpoint path has a parent",
        )
    })?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_data()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub(crate) fn read_agent_id(layout: &Layout) -> io::Result<Option<AgentId>> {
    match std::fs::read_to_string(layout.agent_id_file()) {
        Ok(s) if safe_component(s.trim()) => Ok(Some(AgentId::new(s.trim()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn write_agent_id(layout: &Layout, id: &AgentId) -> io::Result<()> {
    write_atomic(&layout.agent_id_file(), id.as_str().as_bytes(), true)
}

pub(crate) fn write_record(layout: &Layout, r: &TaskRecord, durable: bool) -> io::Result<()> {
    let path = layout
        .task_dir(&r.launch.framework_id, &r.launch.task.task_id)
        .join("task.json");
    let bytes = serde_json::to_vec(r).map_err(io::Error::other)?;
    write_atomic(&path, &bytes, durable)
}

/// Every task record on disk; unreadable ones are logged and skipped (a half-written
/// record cannot exist, so they mean corruption the operator must look at).
pub(crate) fn read_records(layout: &Layout) -> io::Result<Vec<TaskRecord>> {
    let mut out = Vec::new();
    let root = layout.tasks_dir();
    let fws = match std::fs::read_dir(&root) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for fw in fws {
        let fw = fw?;
        for task in std::fs::read_dir(fw.path())? {
            let path = task?.path().join("task.json");
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<TaskRecord>(&bytes) {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "unreadable task checkpoint")
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable task checkpoint")
                }
            }
        }
    }
    Ok(out)
}

/// The supervisor's record of the task's wait status, if it has written one.
pub(crate) fn read_exit(path: &Path) -> Option<crate::supervisor::Exit> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| crate::supervisor::Exit::parse(&t))
}

/// Forgets a task whose terminal status the master acknowledged. The sandbox stays.
pub(crate) fn remove_task(layout: &Layout, fw: &FrameworkId, task: &TaskId) {
    let dir = layout.task_dir(fw, task);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(framework_id = %fw, task_id = %task, error = %e, "cannot remove a task checkpoint");
    }
    // Empty framework directories would pile up otherwise; a non-empty one stays.
    let _ = std::fs::remove_dir(layout.tasks_dir().join(fw.as_str()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_api::TaskInfo;

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("basalt-ckpt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn launch(task: &str) -> TaskLaunch {
        TaskLaunch {
            framework_id: FrameworkId::new("fw-1"),
            framework_name: "marathon".into(),
            role: "*".into(),
            task: TaskInfo {
                name: "web".into(),
                task_id: TaskId::new(task),
                agent_id: AgentId::new("a-S0"),
                resources: Vec::new(),
                command: None,
                container: None,
                health_check: None,
                kill_policy: None,
                labels: None,
                discovery: None,
                data: None,
            },
        }
    }

    #[test]
    fn task_records_round_trip_through_disk() {
        let dir = temp();
        let layout = Layout {
            work_dir: dir.clone(),
        };
        let r = TaskRecord {
            launch: launch("web.1"),
            agent_id: AgentId::new("a-S0"),
            run_id: "run-1".into(),
            sandbox: dir.join("sb"),
            cgroups: vec![PathBuf::from("/sys/fs/cgroup/memory/basalt/run-1")],
            started_at: 12.5,
            supervisor: Some(Proc {
                pid: 10,
                start_ticks: 99,
            }),
            task: None,
            killing: true,
            kill_grace_secs: Some(2.0),
            acked: None,
        };
        write_record(&layout, &r, true).expect("written");
        write_agent_id(&layout, &AgentId::new("m-S3")).expect("id written");
        assert_eq!(read_records(&layout).expect("read"), vec![r]);
        assert_eq!(
            read_agent_id(&layout).expect("read"),
            Some(AgentId::new("m-S3"))
        );
        remove_task(&layout, &FrameworkId::new("fw-1"), &TaskId::new("web.1"));
        assert!(read_records(&layout).expect("read").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dot_ids_are_not_path_components() {
        assert!(!safe_component(".."));
        assert!(!safe_component("."));
        assert!(!safe_component(""));
        assert!(safe_component("web.1"));
    }

    #[test]
    fn proc_stat_start_time_survives_odd_command_names() {
        let line =
            "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 777)));
        let me = Proc::of(std::process::id() as i32).expect("our own stat");
        assert!(me.alive());
        assert!(
            !Proc {
                pid: me.pid,
                start_ticks: me.start_ticks + 1
            }
            .alive()
        );
    }
}
