//! What the agent keeps on disk so a restarted agent (even after SIGKILL) can re-adopt its
//! tasks: the agent id, one record per task, the supervisors' exit files. Sandboxes follow
//! the Mesos layout `<work_dir>/slaves/<agent>/frameworks/<fw>/executors/<task>/runs/<run>`.
//!
//! Creating an inode is the dearest thing a launch does to the file system (tens of
//! microseconds on ext4, more when deletions churn its allocator), so a task's record is
//! one file per task, `meta/records/<fw>/<task>`, that new versions are appended to as JSON
//! lines rather than replaced through a temporary file, and exit files sit flat in
//! `meta/exits/<run>`. Agents before this layout kept `meta/tasks/<fw>/<task>/task.json`
//! with the exit file beside it; recovery moves such records over.

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

    pub(crate) fn records_dir(&self) -> PathBuf {
        self.meta().join("records")
    }

    pub(crate) fn record_file(&self, fw: &FrameworkId, task: &TaskId) -> PathBuf {
        self.records_dir().join(fw.as_str()).join(task.as_str())
    }

    pub(crate) fn exits_dir(&self) -> PathBuf {
        self.meta().join("exits")
    }

    /// Run ids are the agent's own UUIDs: unique, so one flat directory holds them all.
    pub(crate) fn exit_file(&self, run: &str) -> PathBuf {
        self.exits_dir().join(run)
    }

    /// Where agents before the records layout kept a task's record and exit file.
    fn legacy_tasks_dir(&self) -> PathBuf {
        self.meta().join("tasks")
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
    /// Where the supervisor writes the wait status: set when the record is made, because a
    /// supervisor started by an older agent keeps writing where that agent told it to.
    #[serde(default)]
    pub(crate) exit_file: Option<PathBuf>,
}

impl TaskRecord {
    /// The exit file's path; records from before the field name the old layout's.
    pub(crate) fn exit_path(&self, layout: &Layout) -> PathBuf {
        self.exit_file.clone().unwrap_or_else(|| {
            layout
                .legacy_tasks_dir()
                .join(self.launch.framework_id.as_str())
                .join(self.launch.task.task_id.as_str())
                .join(format!("{}.exit", self.run_id))
        })
    }
}

/// A record file past this size is rewritten with only its latest version.
const COMPACT_AT: u64 = 64 * 1024;

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old
/// or the new contents, never a mix. With `durable`, the file and its directory are synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    write_atomic_via(path, Path::new(&tmp), bytes, durable)
}

/// [`write_atomic`] through a temporary file of the caller's choosing (on the same file
/// system).
fn write_atomic_via(path: &Path, tmp: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a checkpoint path has a parent",
        )
    })?;
    std::fs::create_dir_all(dir)?;
    {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_data()?;
        }
    }
    std::fs::rename(tmp, path)?;
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

/// Temporary files of record rewrites live outside the records tree, where no task id can
/// name them.
const REWRITE_PREFIX: &str = ".rewrite-";

/// One version of a record as the record file holds it.
fn record_line(r: &TaskRecord) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// Replaces a record file with one version, `line`.
fn rewrite_record(layout: &Layout, path: &Path, line: &[u8], durable: bool) -> io::Result<()> {
    let tmp = layout
        .meta()
        .join(format!("{REWRITE_PREFIX}{}", uuid::Uuid::new_v4()));
    write_atomic_via(path, &tmp, line, durable)
}

/// Opens a record file for appending, creating it (and its framework's directory) if need
/// be; says whether it was created. `remove_task` of the framework's last other task removes
/// that directory when it empties, possibly between our steps, so a vanished directory is
/// made again.
fn open_record(layout: &Layout, path: &Path, durable: bool) -> io::Result<(std::fs::File, bool)> {
    let mut open = std::fs::OpenOptions::new();
    open.append(true);
    for _ in 0..3 {
        match open.open(path) {
            Ok(f) => return Ok((f, false)),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        match open.clone().create_new(true).open(path) {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                if durable {
                    std::fs::File::open(layout.records_dir())?.sync_all()?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{} kept vanishing while it was being created",
        path.display()
    )))
}

/// Appends `r` as the newest version of its task's record. With `durable`, it is on disk
/// when this returns (and so is the file's directory entry, when this call created it: the
/// first write of a record is the durable one made before the task starts).
pub(crate) fn write_record(layout: &Layout, r: &TaskRecord, durable: bool) -> io::Result<()> {
    let path = layout.record_file(&r.launch.framework_id, &r.launch.task.task_id);
    let line = record_line(r)?;
    let (mut f, created) = open_record(layout, &path, durable)?;
    if f.metadata()?.len() + line.len() as u64 > COMPACT_AT {
        drop(f);
        return rewrite_record(layout, &path, &line, durable);
    }
    f.write_all(&line)?;
    if durable {
        f.sync_data()?;
        if created && let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// The newest complete version in a record file's bytes, and whether the file ends in a
/// torn line (a crash or power loss mid-append) that the next append must not extend.
fn latest_version(bytes: &[u8]) -> (Option<TaskRecord>, bool) {
    let torn = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let mut parsed = None;
    let mut last_line_bad = false;
    for (i, line) in bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .rev()
        .enumerate()
    {
        match serde_json::from_slice::<TaskRecord>(line) {
            Ok(r) => {
                parsed = Some(r);
                break;
            }
            Err(_) if i == 0 => last_line_bad = true,
            Err(_) => {}
        }
    }
    (parsed, torn || last_line_bad)
}

/// Every task record on disk; unreadable ones are logged and skipped (they mean corruption
/// the operator must look at). Records in the old layout are moved to the new one first.
pub(crate) fn read_records(layout: &Layout) -> io::Result<Vec<TaskRecord>> {
    // Rewrites a crash interrupted: the record file they were to replace is still whole.
    if let Ok(entries) = std::fs::read_dir(layout.meta()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(REWRITE_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    migrate_legacy(layout)?;
    let mut out = Vec::new();
    let fws = match std::fs::read_dir(layout.records_dir()) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for fw in fws {
        for task in std::fs::read_dir(fw?.path())? {
            let path = task?.path();
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable task checkpoint");
                    continue;
                }
            };
            match latest_version(&bytes) {
                (Some(r), torn) => {
                    if torn {
                        tracing::warn!(path = %path.display(), "task checkpoint ends in a torn write; keeping its last complete version");
                        rewrite_record(layout, &path, &record_line(&r)?, true)?;
                    }
                    out.push(r);
                }
                // The first write never completed, and it completes before the task is
                // started: there is no task to recover.
                (None, _) if !bytes.contains(&b'\n') => {
                    tracing::warn!(path = %path.display(), "removing a task checkpoint whose first write was cut off");
                    let _ = std::fs::remove_file(&path);
                }
                (None, _) => {
                    tracing::error!(path = %path.display(), "task checkpoint holds no complete record")
                }
            }
        }
    }
    Ok(out)
}

/// Moves each `meta/tasks/<fw>/<task>/task.json` of an older agent to its record file. The
/// old directory stays while it holds an exit file or a supervisor may still write one.
fn migrate_legacy(layout: &Layout) -> io::Result<()> {
    let fws = match std::fs::read_dir(layout.legacy_tasks_dir()) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for fw in fws {
        for task in std::fs::read_dir(fw?.path())? {
            let old = task?.path().join("task.json");
            let rec = match std::fs::read(&old) {
                Ok(b) => serde_json::from_slice::<TaskRecord>(&b),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::error!(path = %old.display(), error = %e, "unreadable task checkpoint");
                    continue;
                }
            };
            match rec {
                Ok(mut r) => {
                    r.exit_file = Some(r.exit_path(layout));
                    let path = layout.record_file(&r.launch.framework_id, &r.launch.task.task_id);
                    rewrite_record(layout, &path, &record_line(&r)?, true)?;
                    std::fs::remove_file(&old)?;
                }
                Err(e) => {
                    tracing::error!(path = %old.display(), error = %e, "unreadable task checkpoint")
                }
            }
        }
    }
    Ok(())
}

/// The supervisor's record of the task's wait status, if it has written one.
pub(crate) fn read_exit(path: &Path) -> Option<crate::supervisor::Exit> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| crate::supervisor::Exit::parse(&t))
}

/// Forgets a task whose terminal status the master acknowledged: its record and its exit
/// file (`TaskRecord::exit_path`). The sandbox stays.
pub(crate) fn remove_task(layout: &Layout, fw: &FrameworkId, task: &TaskId, exit: &Path) {
    for path in [layout.record_file(fw, task).as_path(), exit] {
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(framework_id = %fw, task_id = %task, path = %path.display(), error = %e, "cannot remove a task checkpoint");
        }
    }
    // Empty directories would pile up otherwise; a non-empty one stays.
    let _ = std::fs::remove_dir(layout.records_dir().join(fw.as_str()));
    if let Some(dir) = exit.parent().filter(|d| *d != layout.exits_dir()) {
        let _ = std::fs::remove_dir(dir);
        if let Some(fw_dir) = dir.parent() {
            let _ = std::fs::remove_dir(fw_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_api::TaskInfo;

    /// A fresh work dir and its layout.
    fn scratch() -> (PathBuf, Layout) {
        let d = std::env::temp_dir().join(format!("basalt-ckpt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("temp dir");
        let layout = Layout {
            work_dir: d.clone(),
        };
        (d, layout)
    }

    fn fw() -> FrameworkId {
        FrameworkId::new("fw-1")
    }

    /// Appends `n` versions of `r`, each with its own start time from `first`.
    fn append_versions(layout: &Layout, r: &mut TaskRecord, first: f64, n: u32) {
        for i in 0..n {
            r.started_at = first + f64::from(i);
            write_record(layout, r, false).expect("written");
        }
    }

    fn launch(task: &str) -> TaskLaunch {
        TaskLaunch {
            framework_id: fw(),
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
        let (dir, layout) = scratch();
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
            exit_file: Some(layout.exit_file("run-1")),
        };
        write_record(&layout, &r, true).expect("written");
        write_agent_id(&layout, &AgentId::new("m-S3")).expect("id written");
        assert_eq!(read_records(&layout).expect("read"), vec![r.clone()]);
        assert_eq!(
            read_agent_id(&layout).expect("read"),
            Some(AgentId::new("m-S3"))
        );
        std::fs::create_dir_all(layout.exits_dir()).expect("exits dir");
        std::fs::write(r.exit_path(&layout), "0\n").expect("exit file");
        remove_task(
            &layout,
            &fw(),
            &r.launch.task.task_id,
            &r.exit_path(&layout),
        );
        assert!(read_records(&layout).expect("read").is_empty());
        assert!(!r.exit_path(&layout).exists());
        assert!(!layout.records_dir().join("fw-1").exists());
        // The framework's next task makes its directory again.
        let next = record(&layout, "web.5");
        write_record(&layout, &next, true).expect("written after its directory went");
        assert_eq!(read_records(&layout).expect("read"), vec![next]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn record(layout: &Layout, task: &str) -> TaskRecord {
        TaskRecord {
            launch: launch(task),
            agent_id: AgentId::new("a-S0"),
            run_id: format!("run-{task}"),
            sandbox: PathBuf::from("/sb"),
            cgroups: Vec::new(),
            started_at: 1.0,
            supervisor: None,
            task: None,
            killing: false,
            kill_grace_secs: None,
            acked: None,
            exit_file: Some(layout.exit_file(&format!("run-{task}"))),
        }
    }

    #[test]
    fn the_newest_version_wins_and_a_torn_tail_is_cut_before_the_next_append() {
        let (dir, layout) = scratch();
        let mut r = record(&layout, "web.2");
        write_record(&layout, &r, true).expect("first");
        r.killing = true;
        write_record(&layout, &r, false).expect("second");
        let path = layout.record_file(&r.launch.framework_id, &r.launch.task.task_id);
        let text = std::fs::read_to_string(&path).expect("record file");
        assert_eq!(text.lines().count(), 2, "versions are appended");
        assert_eq!(read_records(&layout).expect("read"), vec![r.clone()]);

        // A crash mid-append: half a line at the end.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"launch\":{\"framework_").expect("torn");
        drop(f);
        assert_eq!(read_records(&layout).expect("read"), vec![r.clone()]);
        // Recovery rewrote the file, so the next version is not glued to the fragment.
        r.kill_grace_secs = Some(3.0);
        write_record(&layout, &r, false).expect("third");
        assert_eq!(read_records(&layout).expect("read"), vec![r.clone()]);

        // A first write cut off before its newline: that task never started.
        let cut = layout.record_file(&r.launch.framework_id, &TaskId::new("web.never"));
        std::fs::write(&cut, b"{\"launch\":").expect("cut record");
        assert_eq!(read_records(&layout).expect("read"), vec![r.clone()]);
        assert!(!cut.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn big_records_are_compacted_and_stale_temporaries_are_dropped() {
        let (dir, layout) = scratch();
        let mut r = record(&layout, "web.3");
        let path = layout.record_file(&r.launch.framework_id, &r.launch.task.task_id);
        append_versions(&layout, &mut r, 0.0, 400);
        let size = std::fs::metadata(&path).expect("record file").len();
        assert!(size <= COMPACT_AT, "{size} bytes");
        assert_eq!(read_records(&layout).expect("read"), vec![r.clone()]);

        // A task whose id ends in .tmp is a task, and another's compaction cannot touch it.
        let other = record(&layout, "web.3.tmp");
        write_record(&layout, &other, true).expect("written");
        append_versions(&layout, &mut r, 0.5, 400);
        // The temporary file of an interrupted rewrite is dropped.
        let stale = layout.meta().join(format!("{REWRITE_PREFIX}x"));
        std::fs::copy(&path, &stale).expect("copy");
        let mut got = read_records(&layout).expect("read");
        got.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        assert_eq!(got, vec![r, other]);
        assert!(!stale.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_of_an_older_agent_move_and_keep_their_exit_file() {
        let (dir, layout) = scratch();
        let mut old = record(&layout, "web.4");
        old.exit_file = None;
        let old_dir = dir.join("meta/tasks/fw-1/web.4");
        std::fs::create_dir_all(&old_dir).expect("old dir");
        std::fs::write(
            old_dir.join("task.json"),
            serde_json::to_vec(&old).expect("json"),
        )
        .expect("old record");
        std::fs::write(old_dir.join("run-web.4.exit"), "0\n").expect("old exit file");

        let got = read_records(&layout).expect("read");
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].exit_file.as_deref(),
            Some(old_dir.join("run-web.4.exit").as_path())
        );
        assert!(!old_dir.join("task.json").exists());
        assert_eq!(read_records(&layout).expect("read again"), got);
        remove_task(
            &layout,
            &fw(),
            &got[0].launch.task.task_id,
            &got[0].exit_path(&layout),
        );
        assert!(
            !old_dir.exists(),
            "the old directory goes with its last file"
        );
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
