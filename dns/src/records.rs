//! The cluster as DNS sees it (kept current from the master's event stream) and the
//! immutable record set built from it.

use crate::config::Config;
use crate::names::{self, Rules};
use basalt_api::operator::{self, EventType};
use basalt_api::{AgentId, FrameworkId, RoleResources, TaskId, TaskState};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

#[derive(Debug, Clone)]
struct AgentEntry {
    hostname: String,
    ip: Option<IpAddr>,
    port: u16,
}

#[derive(Debug, Clone)]
struct TaskEntry {
    name: String,
    agent: AgentId,
    state: TaskState,
    healthy: Option<bool>,
    ports: Vec<u16>,
    discovery: Option<Value>,
    /// IPs from the latest `TASK_RUNNING` status' `network_infos` (the `netinfo` source).
    netinfo: Vec<IpAddr>,
}

/// What the event stream has told us.
#[derive(Debug, Default, Clone)]
pub struct Cluster {
    agents: HashMap<AgentId, AgentEntry>,
    frameworks: HashMap<FrameworkId, (String, Option<IpAddr>)>,
    tasks: HashMap<(FrameworkId, TaskId), TaskEntry>,
    /// The master we follow (`leader`), as `ip:port`.
    pub leader: Option<(IpAddr, u16)>,
}

fn task_entry(t: &operator::Task) -> TaskEntry {
    let ports = RoleResources::from_wire(&t.resources)
        .map(|r| {
            r.total()
                .ports
                .iter_ports()
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default();
    let mut e = TaskEntry {
        name: t.name.clone(),
        agent: t.agent_id.clone(),
        state: t.state,
        healthy: None,
        ports,
        discovery: t.discovery.clone(),
        netinfo: Vec::new(),
    };
    for s in &t.statuses {
        apply_status(&mut e, s);
    }
    e.state = t.state;
    e
}

fn apply_status(e: &mut TaskEntry, s: &basalt_api::TaskStatus) {
    e.state = s.state;
    if s.healthy.is_some() {
        e.healthy = s.healthy;
    }
    if s.state == TaskState::Running
        && let Some(cs) = &s.container_status
    {
        let ips: Vec<IpAddr> = cs
            .network_infos
            .iter()
            .flat_map(|n| n.ip_addresses.iter())
            .filter_map(|a| a.ip_address.parse().ok())
            .collect();
        if !ips.is_empty() {
            e.netinfo = ips;
        }
    }
}

impl Cluster {
    /// An empty cluster led by the master at `leader`.
    pub fn with_leader(leader: Option<(IpAddr, u16)>) -> Self {
        Cluster {
            leader,
            ..Default::default()
        }
    }

    /// Applies one operator event; true when DNS may have changed.
    pub fn apply(&mut self, ev: &operator::Event) -> bool {
        match ev.kind {
            EventType::Subscribed => {
                let Some(s) = &ev.subscribed else {
                    return false;
                };
                let leader = self.leader;
                *self = Cluster::default();
                self.leader = leader;
                let st = &s.get_state;
                for a in &st.get_agents.agents {
                    self.add_agent(a);
                }
                for f in &st.get_frameworks.frameworks {
                    self.add_framework(f);
                }
                for t in &st.get_tasks.tasks {
                    self.tasks
                        .insert((t.framework_id.clone(), t.task_id.clone()), task_entry(t));
                }
                true
            }
            EventType::TaskAdded => {
                let Some(t) = &ev.task_added else {
                    return false;
                };
                self.tasks.insert(
                    (t.task.framework_id.clone(), t.task.task_id.clone()),
                    task_entry(&t.task),
                );
                true
            }
            EventType::TaskUpdated => {
                let Some(u) = &ev.task_updated else {
                    return false;
                };
                let key = (u.framework_id.clone(), u.status.task_id.clone());
                if u.state.is_terminal() {
                    return self.tasks.remove(&key).is_some();
                }
                match self.tasks.get_mut(&key) {
                    Some(e) => {
                        apply_status(e, &u.status);
                        e.state = u.state;
                        true
                    }
                    None => false,
                }
            }
            EventType::AgentAdded => {
                let Some(a) = &ev.agent_added else {
                    return false;
                };
                self.add_agent(&a.agent);
                true
            }
            EventType::AgentRemoved => {
                let Some(a) = &ev.agent_removed else {
                    return false;
                };
                self.agents.remove(&a.agent_id).is_some()
            }
            EventType::FrameworkAdded | EventType::FrameworkUpdated => {
                let f = ev
                    .framework_added
                    .as_ref()
                    .or(ev.framework_updated.as_ref());
                let Some(f) = f else { return false };
                self.add_framework(&f.framework);
                true
            }
            EventType::FrameworkRemoved => {
                let Some(f) = &ev.framework_removed else {
                    return false;
                };
                match &f.framework_info.id {
                    Some(id) => self.frameworks.remove(id).is_some(),
                    None => false,
                }
            }
            _ => false,
        }
    }

    fn add_agent(&mut self, a: &operator::Agent) {
        let info = &a.agent_info;
        let ip = a.ip();
        self.agents.insert(
            info.id.clone(),
            AgentEntry {
                hostname: info.hostname.clone(),
                ip,
                port: info.port,
            },
        );
    }

    fn add_framework(&mut self, f: &operator::Framework) {
        let Some(id) = f.framework_info.id.clone() else {
            return;
        };
        let ip = f
            .framework_info
            .hostname
            .as_deref()
            .and_then(|h| h.parse().ok());
        self.frameworks
            .insert(id, (f.framework_info.name.clone(), ip));
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }
}

/// An SRV answer: `target:port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    pub target: String,
    pub port: u16,
}

/// A record as `/v1/enumerate` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EnumRecord {
    pub name: String,
    pub host: String,
    pub rtype: &'static str,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EnumTask {
    pub name: String,
    pub id: String,
    pub records: Vec<EnumRecord>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EnumFramework {
    pub name: String,
    pub tasks: Vec<EnumTask>,
}

/// Every answer the server can give for its domain, built at once and never mutated:
/// queries read it without locks while the next one is being built.
#[derive(Debug, Default)]
pub struct RecordSet {
    /// Fully qualified, lowercase, with the trailing dot.
    pub a: HashMap<String, Vec<IpAddr>>,
    pub srv: HashMap<String, Vec<Srv>>,
    pub ptr: HashMap<String, Vec<String>>,
    pub enumerate: Vec<EnumFramework>,
    /// The same answers, encoded for the fast path.
    pub fast: crate::fast::FastTable,
    pub serial: u32,
    /// Bumped on every rebuild: the `/v1/watch` index.
    pub index: u64,
}

impl RecordSet {
    /// Whether `name` exists with any record (for NODATA versus NXDOMAIN).
    pub fn exists(&self, name: &str) -> bool {
        self.a.contains_key(name) || self.srv.contains_key(name) || self.ptr.contains_key(name)
    }
}

struct Builder {
    rs: RecordSet,
    /// Names that exist only as parents (`marathon.mesos.` when `web.marathon.mesos.` exists)
    /// answer NODATA, not NXDOMAIN (RFC 8020).
    parents: Vec<String>,
}

impl Builder {
    fn a(&mut self, name: String, ips: &[IpAddr]) {
        if ips.is_empty() {
            return;
        }
        let e = self.rs.a.entry(name).or_default();
        for ip in ips {
            if !e.contains(ip) {
                e.push(*ip);
            }
        }
    }

    fn srv(&mut self, name: String, target: String, port: u16) {
        let e = self.rs.srv.entry(name).or_default();
        let s = Srv { target, port };
        if !e.contains(&s) {
            e.push(s);
        }
    }

    fn ptr(&mut self, ip: IpAddr, name: String) {
        let e = self.rs.ptr.entry(names::reverse(ip)).or_default();
        if !e.contains(&name) {
            e.push(name);
        }
    }
}

fn discovery_ports(d: &Value) -> Vec<(u16, Option<String>, String)> {
    d.pointer("/ports/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let n = u16::try_from(p.get("number")?.as_u64()?).ok()?;
                    let name = p.get("name").and_then(Value::as_str).map(str::to_owned);
                    let proto = p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("tcp")
                        .to_ascii_lowercase();
                    Some((n, name, proto))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the record set for `cluster`; `serial` is the SOA serial (seconds).
pub fn build(cluster: &Cluster, cfg: &Config, serial: u32, index: u64) -> RecordSet {
    let rules = if cfg.enforce_rfc952 {
        Rules::Rfc952
    } else {
        Rules::Rfc1123
    };
    let d = &cfg.domain;
    let mut b = Builder {
        rs: RecordSet {
            serial,
            index,
            ..Default::default()
        },
        parents: Vec::new(),
    };

    // Masters: `masters` in order, then the leader if it is not listed.
    let mut masters: Vec<(IpAddr, u16)> = cfg
        .masters
        .iter()
        .filter_map(|m| crate::config::parse_resolver(m).ok())
        .map(|a| (a.ip(), a.port()))
        .collect();
    if let Some(l) = cluster.leader {
        if !masters.iter().any(|m| m.0 == l.0) {
            masters.push(l);
        }
        b.a(format!("leader.{d}."), &[l.0]);
        for proto in ["tcp", "udp"] {
            b.srv(
                format!("_leader._{proto}.{d}."),
                format!("leader.{d}."),
                l.1,
            );
        }
    }
    for (i, (ip, _)) in masters.iter().enumerate() {
        b.a(format!("master.{d}."), &[*ip]);
        b.a(format!("master{i}.{d}."), &[*ip]);
    }
    if let Ok(ip) = cfg.listener.parse::<IpAddr>()
        && !ip.is_unspecified()
    {
        let ns = format!(
            "{}.",
            cfg.soa_mname.trim_end_matches('.').to_ascii_lowercase()
        );
        b.a(ns, &[ip]);
    }

    // Agents.
    let mut agent_ids: Vec<&AgentId> = cluster.agents.keys().collect();
    agent_ids.sort();
    for id in &agent_ids {
        let a = &cluster.agents[*id];
        if let Some(ip) = a.ip {
            b.a(format!("slave.{d}."), &[ip]);
            b.a(format!("agent.{d}."), &[ip]);
            b.srv(format!("_slave._tcp.{d}."), format!("slave.{d}."), a.port);
            let host = names::domain_frag(&a.hostname, rules);
            if !host.is_empty() && a.hostname.parse::<IpAddr>().is_err() {
                b.ptr(ip, format!("{host}."));
            } else {
                b.ptr(ip, format!("slave.{d}."));
            }
        }
    }

    // Frameworks.
    let mut fw_names: HashMap<&FrameworkId, String> = HashMap::new();
    for (id, (name, ip)) in &cluster.frameworks {
        let fw = names::domain_frag(name, rules);
        if fw.is_empty() {
            continue;
        }
        if let Some(ip) = ip {
            b.a(format!("{fw}.{d}."), &[*ip]);
        }
        fw_names.insert(id, fw);
    }

    // Tasks, in a stable order so answers and enumerate do not jump around.
    let mut keys: Vec<&(FrameworkId, TaskId)> = cluster.tasks.keys().collect();
    keys.sort();
    let mut enumerate: BTreeMap<String, Vec<EnumTask>> = BTreeMap::new();
    for key in keys {
        let t = &cluster.tasks[key];
        if t.state != TaskState::Running && t.state != TaskState::Killing {
            continue;
        }
        if cfg.health_aware && (t.state == TaskState::Killing || t.healthy == Some(false)) {
            continue;
        }
        let Some(fw) = fw_names.get(&key.0) else {
            continue;
        };
        let Some(agent) = cluster.agents.get(&t.agent) else {
            continue;
        };
        let dname = t
            .discovery
            .as_ref()
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .unwrap_or(&t.name);
        let tname = names::label(dname, rules);
        if tname.is_empty() {
            continue;
        }
        let canonical = format!(
            "{tname}-{}-{}",
            names::h5(key.1.as_str()),
            names::slave_tail(t.agent.as_str())
        );
        let agent_ips: Vec<IpAddr> = agent.ip.into_iter().collect();
        let mut ips = Vec::new();
        for src in &cfg.ip_sources {
            ips = match src.as_str() {
                "host" => agent_ips.clone(),
                "netinfo" => t.netinfo.clone(),
                _ => Vec::new(),
            };
            if !ips.is_empty() {
                break;
            }
        }
        let mut recs = Vec::new();
        let mut add_a = |b: &mut Builder, name: String, ips: &[IpAddr]| {
            for ip in ips {
                recs.push(EnumRecord {
                    name: name.clone(),
                    host: ip.to_string(),
                    rtype: if ip.is_ipv4() { "A" } else { "AAAA" },
                });
            }
            b.a(name, ips);
        };
        add_a(&mut b, format!("{tname}.{fw}.{d}."), &ips);
        add_a(&mut b, format!("{canonical}.{fw}.{d}."), &ips);
        add_a(&mut b, format!("{tname}.{fw}.slave.{d}."), &agent_ips);
        add_a(&mut b, format!("{canonical}.{fw}.slave.{d}."), &agent_ips);
        for ip in &t.netinfo {
            if !agent_ips.contains(ip) {
                b.ptr(*ip, format!("{canonical}.{fw}.{d}."));
            }
        }
        let slave_target = format!("{canonical}.{fw}.slave.{d}.");
        let disc = t
            .discovery
            .as_ref()
            .map(discovery_ports)
            .unwrap_or_default();
        for port in &t.ports {
            for proto in ["tcp", "udp"] {
                let mut names = vec![format!("_{tname}._{proto}.{fw}.slave.{d}.")];
                if disc.is_empty() {
                    names.push(format!("_{tname}._{proto}.{fw}.{d}."));
                }
                for n in names {
                    recs.push(EnumRecord {
                        name: n.clone(),
                        host: format!("{slave_target}:{port}"),
                        rtype: "SRV",
                    });
                    b.srv(n, slave_target.clone(), *port);
                }
            }
        }
        let target = format!("{canonical}.{fw}.{d}.");
        for (port, pname, proto) in &disc {
            let proto = names::label(proto, rules);
            let mut names = vec![format!("_{tname}._{proto}.{fw}.{d}.")];
            if let Some(p) = pname {
                let p = names::label(p, rules);
                if !p.is_empty() {
                    names.push(format!("_{p}._{tname}._{proto}.{fw}.{d}."));
                }
            }
            for n in names {
                recs.push(EnumRecord {
                    name: n.clone(),
                    host: format!("{target}:{port}"),
                    rtype: "SRV",
                });
                b.srv(n, target.clone(), *port);
            }
        }
        enumerate.entry(fw.clone()).or_default().push(EnumTask {
            name: t.name.clone(),
            id: key.1.to_string(),
            records: recs,
        });
    }
    b.rs.enumerate = enumerate
        .into_iter()
        .map(|(name, tasks)| EnumFramework { name, tasks })
        .collect();

    // Every parent of an existing name inside the domain exists too (empty non-terminal).
    let domain_dot = format!("{d}.");
    for name in b.rs.a.keys().chain(b.rs.srv.keys()) {
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if parent.len() <= domain_dot.len() || !parent.ends_with(&domain_dot) {
                break;
            }
            b.parents.push(parent.to_owned());
            rest = parent;
        }
    }
    let parents = std::mem::take(&mut b.parents);
    let mut rs = b.rs;
    for p in parents {
        if !rs.exists(&p) {
            rs.srv.entry(p).or_default();
        }
    }
    rs.fast = crate::fast::encode(&rs, cfg);
    rs
}

#[cfg(test)]
pub(crate) mod tests;
