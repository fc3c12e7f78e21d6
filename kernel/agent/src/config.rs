use crate::error::Error;
use basalt_api::{Milli, Ranges, Resources, RoleResources};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `[agent]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where sandboxes and checkpoints live; must survive agent restarts for recovery
    /// (default `/var/lib/basalt/agent`).
    pub work_dir: PathBuf,
    /// Hostname advertised to the master and given to tasks as `HOST`; overriding it lets
    /// several agents on one machine look like several hosts (default `localhost`).
    pub hostname: String,
    /// IP address the master and tasks' peers reach this agent at (default `127.0.0.1`).
    pub advertise_ip: String,
    /// Resources to offer, Mesos flag syntax (`cpus:4;mem:1024;ports:[31000-32000]`);
    /// unset means detect from the host: all CPUs, memory minus 1 GiB (or half when small),
    /// 90% of the work dir's free disk, ports 31000-32000 (default unset).
    pub resources: Option<String>,
    /// Attributes advertised to the master, `name -> value` (default none).
    pub attributes: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when a kill names no grace period of its own
    /// (default `3s`).
    #[serde(deserialize_with = "duration")]
    pub kill_grace_period: Duration,
    /// Upper bound of the exponential backoff between registration attempts and status
    /// update retries (default `10s`).
    #[serde(deserialize_with = "duration")]
    pub registration_backoff_max: Duration,
    /// Whether to isolate tasks with cgroups when the host allows it (default `auto`).
    pub cgroups: CgroupsMode,
    /// This agent's sub-tree under each cgroup controller:
    /// `<root>/<cgroup_name>/<container-id>` (default `basalt`).
    pub cgroup_name: String,
    /// Hard CPU limits (CFS quota) on top of CPU weights, as Mesos'
    /// `--cgroups_enable_cfs`.
    #[serde(default)]
    pub cgroups_enable_cfs: bool,
    /// A binary that becomes the task launcher when given `LAUNCHER_ARG` (the `basalt`
    /// binary itself). Without one the agent forks supervisors itself.
    #[serde(skip)]
    pub launcher: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupsMode {
    /// Use cgroups v2 or v1, whichever the host has, if they are writable.
    #[default]
    Auto,
    /// Never create cgroups; tasks run without limits.
    Off,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            work_dir: PathBuf::from("/var/lib/basalt/agent"),
            hostname: "localhost".to_owned(),
            advertise_ip: "127.0.0.1".to_owned(),
            resources: None,
            attributes: BTreeMap::new(),
            kill_grace_period: Duration::from_secs(3),
            registration_backoff_max: Duration::from_secs(10),
            cgroups: CgroupsMode::Auto,
            cgroup_name: "basalt".to_owned(),
            cgroups_enable_cfs: false,
            launcher: None,
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.hostname.trim().is_empty() {
            return Err(Error::Config("hostname must not be empty".into()));
        }
        if self.advertise_ip.trim().is_empty() {
            return Err(Error::Config("advertise_ip must not be empty".into()));
        }
        let name_ok = !self.cgroup_name.is_empty()
            && self.cgroup_name != "."
            && self.cgroup_name != ".."
            && !self.cgroup_name.contains('/');
        if !name_ok {
            return Err(Error::Config(format!(
                "cgroup_name '{}' must be one path component",
                self.cgroup_name
            )));
        }
        if self.registration_backoff_max.is_zero() {
            return Err(Error::Config(
                "registration_backoff_max must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The resources to advertise: the configured ones, or what the host has.
    pub(crate) fn total_resources(&self) -> Result<RoleResources, Error> {
        match &self.resources {
            Some(s) => {
                RoleResources::parse(s).map_err(|e| Error::Config(format!("resources: {e}")))
            }
            None => Ok(detect_resources(&self.work_dir)),
        }
    }
}

/// What the host offers when the operator did not say.
fn detect_resources(work_dir: &Path) -> RoleResources {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let mem_total_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_total_kb(&m))
        .map(|kb| kb / 1024)
        .unwrap_or(1024);
    let disk_free_mb = free_disk_mb(work_dir).unwrap_or(0);
    let ports = Ranges::from_pairs([(31000, 32000)]).expect("a constant, valid port range");
    RoleResources::unreserved(Resources {
        cpus: Milli(cpus as i64 * 1000),
        mem: Milli(usable_mem_mb(mem_total_mb) as i64 * 1000),
        disk: Milli((disk_free_mb - disk_free_mb / 10) as i64 * 1000),
        ports,
    })
}

fn mem_total_kb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Leaves the host 1 GiB, or half of a small host's memory.
fn usable_mem_mb(total_mb: u64) -> u64 {
    if total_mb >= 2048 {
        total_mb - 1024
    } else {
        total_mb / 2
    }
}

fn free_disk_mb(path: &Path) -> Option<u64> {
    // The work dir may not exist yet; its nearest existing ancestor is on the same disk
    // in every layout we care about.
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64 / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_durations_as_strings_and_rejects_unknown_fields() {
        let c: Config = serde_json::from_value(serde_json::json!({
            "kill_grace_period": "5s", "cgroups": "off", "hostname": "h1"
        }))
        .expect("valid config");
        assert_eq!(c.kill_grace_period, Duration::from_secs(5));
        assert_eq!(c.cgroups, CgroupsMode::Off);
        assert_eq!(c.cgroup_name, "basalt");
        assert!(serde_json::from_value::<Config>(serde_json::json!({"bogus": 1})).is_err());
    }

    #[test]
    fn detected_memory_leaves_the_host_some() {
        assert_eq!(usable_mem_mb(8192), 7168);
        assert_eq!(usable_mem_mb(1024), 512);
        assert_eq!(
            mem_total_kb("MemTotal:       24684084 kB\nMemFree: 1 kB"),
            Some(24684084)
        );
    }

    #[test]
    fn detection_offers_standard_ports_and_positive_cpus() {
        let r = detect_resources(Path::new("/")).total();
        assert!(r.cpus.0 >= 1000);
        assert_eq!(r.ports.count(), 1001);
    }
}
