//! cgroup isolation for the process containerizer, v2 (unified) and v1 (per-controller
//! hierarchies). Each task gets `<root>/<cgroup_name>/<container-id>` under every
//! controller it is limited by.

use crate::config::CgroupsMode;
use basalt_api::Resources;
use std::io;
use std::path::{Path, PathBuf};

/// CFS period we give every task, in microseconds.
const CFS_PERIOD_US: u64 = 100_000;

/// What this agent can enforce, decided once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Isolation {
    V1 { root: PathBuf, parent: String },
    V2 { root: PathBuf, parent: String },
    None(String),
}

/// The limits a task's cgroup gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) mem_bytes: Option<u64>,
    /// Thousandths of a CPU.
    pub(crate) cpu_millis: Option<u64>,
    /// Hard CPU caps (CFS quota) besides the proportional weight. Off by default, as
    /// Mesos' `--cgroups_enable_cfs`: writing a quota costs an IPI to every CPU, which
    /// made up a third of a task launch's CPU time here.
    pub(crate) cfs: bool,
}

impl Limits {
    pub(crate) fn of(r: &Resources) -> Limits {
        Limits {
            mem_bytes: (r.mem.0 > 0).then(|| (r.mem.0 as u64 * 1024 * 1024).div_ceil(1000)),
            cpu_millis: (r.cpus.0 > 0).then_some(r.cpus.0 as u64),
            cfs: false,
        }
    }
}

/// One file to write when creating a container: (controller, file, value). The controller
/// is empty for v2.
pub(crate) type Setting = (&'static str, &'static str, String);

/// v1: `memory.limit_in_bytes`, best-effort `memory.memsw.limit_in_bytes` (a host without
/// swap accounting has no such file), and CFS shares and quota under `cpu`.
pub(crate) fn v1_settings(l: Limits) -> (Vec<Setting>, Vec<Setting>) {
    let mut required = Vec::new();
    let mut optional = Vec::new();
    if let Some(m) = l.mem_bytes {
        required.push(("memory", "memory.limit_in_bytes", m.to_string()));
        optional.push(("memory", "memory.memsw.limit_in_bytes", m.to_string()));
    }
    if let Some(c) = l.cpu_millis {
        required.push(("cpu", "cpu.shares", (c * 1024 / 1000).max(2).to_string()));
        if l.cfs {
            required.push(("cpu", "cpu.cfs_period_us", CFS_PERIOD_US.to_string()));
            required.push(("cpu", "cpu.cfs_quota_us", quota_us(c).to_string()));
        }
    }
    (required, optional)
}

/// v2: `memory.max`, no swap beyond it (best effort), `cpu.max` and a weight.
pub(crate) fn v2_settings(l: Limits) -> (Vec<Setting>, Vec<Setting>) {
    let mut required = Vec::new();
    let mut optional = Vec::new();
    if let Some(m) = l.mem_bytes {
        required.push(("", "memory.max", m.to_string()));
        optional.push(("", "memory.swap.max", "0".to_owned()));
    }
    if let Some(c) = l.cpu_millis {
        if l.cfs {
            required.push(("", "cpu.max", format!("{} {CFS_PERIOD_US}", quota_us(c))));
        }
        // cpu.weight spans 1..=10000 with 100 for one share of 1024.
        optional.push((
            "",
            "cpu.weight",
            (c * 100 / 1000).clamp(1, 10000).to_string(),
        ));
    }
    (required, optional)
}

fn quota_us(cpu_millis: u64) -> u64 {
    (cpu_millis * CFS_PERIOD_US / 1000).max(1000)
}

/// v1 controllers a task joins.
const V1_CONTROLLERS: [&str; 2] = ["memory", "cpu"];

impl Isolation {
    /// Decides what the host allows. Creates the agent's parent cgroups so that a
    /// read-only or unprivileged host is found out now, not at the first launch.
    pub(crate) fn detect(mode: CgroupsMode, root: &Path, parent: &str) -> Isolation {
        if mode == CgroupsMode::Off {
            return Isolation::None("cgroups turned off in the configuration".into());
        }
        if root.join("cgroup.controllers").exists() {
            match prepare_v2(root, parent) {
                Ok(()) => Isolation::V2 {
                    root: root.to_owned(),
                    parent: parent.to_owned(),
                },
                Err(e) => Isolation::None(format!(
                    "cgroups v2 at {} are not usable: {e}",
                    root.display()
                )),
            }
        } else if V1_CONTROLLERS
            .iter()
            .all(|c| root.join(c).join("cgroup.procs").exists())
        {
            let made = V1_CONTROLLERS
                .iter()
                .try_for_each(|c| std::fs::create_dir_all(root.join(c).join(parent)));
            match made {
                Ok(()) => Isolation::V1 {
                    root: root.to_owned(),
                    parent: parent.to_owned(),
                },
                Err(e) => Isolation::None(format!(
                    "cgroups v1 at {} are not writable: {e}",
                    root.display()
                )),
            }
        } else {
            Isolation::None(format!(
                "no cgroup v1 memory and cpu or v2 hierarchy at {}",
                root.display()
            ))
        }
    }

    /// `cgroups-v1`, `cgroups-v2` or `none: <why>`, as AgentInfo and /state say it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Isolation::V1 { .. } => "cgroups-v1".into(),
            Isolation::V2 { .. } => "cgroups-v2".into(),
            Isolation::None(why) => format!("none: {why}"),
        }
    }

    /// Creates a task's cgroups with `limits`; returns their directories. Blocking.
    pub(crate) fn create(&self, container: &str, limits: Limits) -> io::Result<Vec<PathBuf>> {
        let (named, (required, optional)) = match self {
            Isolation::None(_) => return Ok(Vec::new()),
            Isolation::V1 { root, parent } => (
                V1_CONTROLLERS
                    .iter()
                    .map(|c| (*c, root.join(c).join(parent).join(container)))
                    .collect::<Vec<_>>(),
                v1_settings(limits),
            ),
            Isolation::V2 { root, parent } => (
                vec![("", root.join(parent).join(container))],
                v2_settings(limits),
            ),
        };
        let dirs: Vec<PathBuf> = named.iter().map(|(_, d)| d.clone()).collect();
        let dir_for = |controller: &str| -> &Path {
            named
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, d)| d.as_path())
                .unwrap_or(dirs[0].as_path())
        };
        let result = (|| {
            for d in &dirs {
                match std::fs::create_dir(d) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
            }
            for (controller, file, value) in &required {
                let path = dir_for(controller).join(file);
                std::fs::write(&path, value)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            }
            for (controller, file, value) in &optional {
                let _ = std::fs::write(dir_for(controller).join(file), value);
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(dirs),
            Err(e) => {
                destroy(&dirs);
                Err(e)
            }
        }
    }
}

fn prepare_v2(root: &Path, parent: &str) -> io::Result<()> {
    let dir = root.join(parent);
    std::fs::create_dir_all(&dir)?;
    // Controllers must be enabled on every level above a cgroup that uses them.
    for d in [root, dir.as_path()] {
        let available = std::fs::read_to_string(d.join("cgroup.controllers"))?;
        for c in ["memory", "cpu"] {
            if !available.split_whitespace().any(|a| a == c) {
                return Err(io::Error::other(format!(
                    "controller {c} is not available in {}",
                    d.display()
                )));
            }
        }
        std::fs::write(d.join("cgroup.subtree_control"), "+memory +cpu")?;
    }
    Ok(())
}

/// Files a task writes itself into: one `cgroup.procs` per directory.
pub(crate) fn procs_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter().map(|d| d.join("cgroup.procs")).collect()
}

/// Whether the kernel's OOM killer acted in the task's memory cgroup.
pub(crate) fn oom_killed(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| {
        let events = std::fs::read_to_string(d.join("memory.events")).ok();
        let oom_control = std::fs::read_to_string(d.join("memory.oom_control")).ok();
        let text = events.or(oom_control).unwrap_or_default();
        counter(&text, "oom_kill").is_some_and(|n| n > 0)
    })
}

/// Whether v1 accounting shows the task hit its limit (kernels without `oom_kill` in
/// `memory.oom_control`).
pub(crate) fn hit_memory_limit(dirs: &[PathBuf]) -> bool {
    let read = |d: &Path, f: &str| -> Option<u64> {
        std::fs::read_to_string(d.join(f)).ok()?.trim().parse().ok()
    };
    dirs.iter().any(|d| {
        let fail = read(d, "memory.failcnt").unwrap_or(0);
        match (
            read(d, "memory.max_usage_in_bytes"),
            read(d, "memory.limit_in_bytes"),
        ) {
            (Some(max), Some(limit)) => fail > 0 && max >= limit,
            _ => false,
        }
    })
}

fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Kills whatever is left in the cgroups and removes them, retrying briefly while the
/// kernel finishes tearing processes down. Blocking.
pub(crate) fn destroy(dirs: &[PathBuf]) {
    for d in dirs {
        for attempt in 0..50 {
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: signalling a pid read from our own cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if attempt == 49 => {
                    tracing::warn!(cgroup = %d.display(), error = %e, "cannot remove a task's cgroup");
                }
                Err(_) => blocking_pause(),
            }
        }
    }
}

/// A 20 ms pause on a blocking thread, without `std::thread::sleep`.
fn blocking_pause() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 20_000_000,
    };
    // SAFETY: nanosleep only reads `ts`.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cpus: f64, mem: f64) -> Limits {
        Limits {
            cfs: true,
            ..Limits::of(&Resources::new(cpus, mem))
        }
    }

    #[test]
    fn v1_settings_follow_mesos() {
        let (req, opt) = v1_settings(limits(0.5, 32.0));
        assert!(req.contains(&("memory", "memory.limit_in_bytes", "33554432".into())));
        assert!(req.contains(&("cpu", "cpu.shares", "512".into())));
        assert!(req.contains(&("cpu", "cpu.cfs_period_us", "100000".into())));
        assert!(req.contains(&("cpu", "cpu.cfs_quota_us", "50000".into())));
        assert_eq!(
            opt,
            vec![("memory", "memory.memsw.limit_in_bytes", "33554432".into())]
        );
    }

    #[test]
    fn without_cfs_cpu_is_a_weight_only() {
        let l = Limits::of(&Resources::new(0.5, 32.0));
        let (req, _) = v1_settings(l);
        assert!(req.contains(&("cpu", "cpu.shares", "512".into())));
        assert!(!req.iter().any(|s| s.1.starts_with("cpu.cfs")));
        let (req, opt) = v2_settings(l);
        assert!(!req.iter().any(|s| s.1 == "cpu.max"));
        assert!(opt.iter().any(|s| s.1 == "cpu.weight"));
    }

    #[test]
    fn v2_settings_use_unified_files() {
        let (req, _) = v2_settings(limits(2.0, 128.0));
        assert!(req.contains(&("", "memory.max", "134217728".into())));
        assert!(req.contains(&("", "cpu.max", "200000 100000".into())));
        let (req, _) = v2_settings(limits(0.001, 0.0));
        assert_eq!(req, vec![("", "cpu.max", "1000 100000".into())]);
    }

    #[test]
    fn oom_counters_parse_from_both_versions() {
        assert_eq!(
            counter("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            Some(2)
        );
        assert_eq!(
            counter("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(counter("oom_kill_disable 0\n", "oom_kill"), None);
    }

    #[test]
    fn turned_off_or_missing_hierarchies_mean_no_isolation() {
        let off = Isolation::detect(CgroupsMode::Off, Path::new("/sys/fs/cgroup"), "basalt");
        assert!(off.describe().starts_with("none: "));
        let missing = Isolation::detect(
            CgroupsMode::Auto,
            Path::new("/nonexistent-cgroup-root"),
            "basalt",
        );
        assert!(missing.describe().starts_with("none: no cgroup"));
    }
}
