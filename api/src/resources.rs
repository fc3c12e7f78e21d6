//! Resources: `cpus`, `mem` (MB), `disk` (MB) and `ports` ranges, optionally reserved for a
//! role. Scalars are fixed-point thousandths (as Mesos rounds them) so that sums and
//! differences are exact and allocator invariants can be checked with `==`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The role of unreserved resources.
pub const UNRESERVED: &str = "*";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error("resource {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("unknown resource '{0}' (known: cpus, mem, disk, ports)")]
    Unknown(String),
    #[error("cannot parse resources '{0}': expected name(role):value pairs separated by ';'")]
    Syntax(String),
}

fn invalid(name: &str, reason: impl Into<String>) -> ResourceError {
    ResourceError::Invalid {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// A non-negative scalar in thousandths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Milli(pub i64);

impl Milli {
    pub const ZERO: Milli = Milli(0);

    /// From a wire float; rejects NaN, infinities, negatives and absurd sizes.
    pub fn from_f64(name: &str, v: f64) -> Result<Self, ResourceError> {
        if !v.is_finite() {
            return Err(invalid(name, "must be a finite number"));
        }
        if v < 0.0 {
            return Err(invalid(name, "must not be negative"));
        }
        if v > 1e15 {
            return Err(invalid(name, "is too large"));
        }
        Ok(Milli((v * 1000.0).round() as i64))
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn saturating_sub(self, o: Milli) -> Milli {
        Milli((self.0 - o.0).max(0))
    }
}

impl std::ops::Add for Milli {
    type Output = Milli;
    fn add(self, o: Milli) -> Milli {
        Milli(self.0 + o.0)
    }
}

impl std::ops::Sub for Milli {
    type Output = Milli;
    fn sub(self, o: Milli) -> Milli {
        Milli(self.0 - o.0)
    }
}

impl fmt::Display for Milli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

/// A set of inclusive `u64` ranges, kept sorted and coalesced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Result<Self, ResourceError> {
        let mut v = Vec::new();
        for (b, e) in pairs {
            if b > e {
                return Err(invalid(
                    "ports",
                    format!("range {b}-{e} ends before it begins"),
                ));
            }
            if e > 65535 {
                return Err(invalid("ports", format!("port {e} is above 65535")));
            }
            v.push((b, e));
        }
        v.sort_unstable();
        Ok(Ranges(coalesce(v.into_iter())))
    }

    pub fn single(p: u64) -> Self {
        Self(vec![(p, p)])
    }

    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    /// Both sorted and coalesced, so one merge pass does it (the allocator unions ranges
    /// on every grant).
    pub fn union(&self, o: &Ranges) -> Ranges {
        if o.0.is_empty() {
            return self.clone();
        }
        if self.0.is_empty() {
            return o.clone();
        }
        let (mut i, mut j) = (0, 0);
        let merged = std::iter::from_fn(|| {
            let next = match (self.0.get(i), o.0.get(j)) {
                (Some(a), Some(b)) if a <= b => {
                    i += 1;
                    *a
                }
                (Some(_), Some(b)) => {
                    j += 1;
                    *b
                }
                (Some(a), None) => {
                    i += 1;
                    *a
                }
                (None, Some(b)) => {
                    j += 1;
                    *b
                }
                (None, None) => return None,
            };
            Some(next)
        });
        Ranges(coalesce(merged))
    }

    pub fn contains(&self, o: &Ranges) -> bool {
        o.0.iter()
            .all(|&(b, e)| self.0.iter().any(|&(sb, se)| sb <= b && e <= se))
    }

    pub fn contains_port(&self, p: u64) -> bool {
        self.0.iter().any(|&(b, e)| b <= p && p <= e)
    }

    /// `self` minus `o` (ports of `o` not in `self` are ignored).
    pub fn difference(&self, o: &Ranges) -> Ranges {
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            let mut cur = b;
            for &(ob, oe) in &o.0 {
                if oe < cur || ob > e {
                    continue;
                }
                if ob > cur {
                    out.push((cur, ob - 1));
                }
                cur = oe.saturating_add(1);
                if cur > e {
                    break;
                }
            }
            if cur <= e {
                out.push((cur, e));
            }
        }
        Ranges(out)
    }

    /// The lowest `n` ports, or `None` if there are fewer.
    pub fn take(&self, n: u64) -> Option<Ranges> {
        let mut left = n;
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            if left == 0 {
                break;
            }
            let len = e - b + 1;
            let t = len.min(left);
            out.push((b, b + t - 1));
            left -= t;
        }
        (left == 0).then_some(Ranges(out))
    }

    pub fn iter_ports(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(b, e)| b..=e)
    }

    /// Mesos' text form: `[31000-31005, 31010-31010]`.
    pub fn to_mesos_string(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(b, e)| format!("{b}-{e}")).collect();
        format!("[{}]", parts.join(", "))
    }

    /// Parses `[31000-32000, 33000-33010]` or `31000-32000`.
    pub fn parse(s: &str) -> Result<Ranges, ResourceError> {
        let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
        let mut pairs = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (b, e) = part.split_once('-').unwrap_or((part, part));
            let b: u64 = b
                .trim()
                .parse()
                .map_err(|_| invalid("ports", format!("'{part}' is not a port range")))?;
            let e: u64 = e
                .trim()
                .parse()
                .map_err(|_| invalid("ports", format!("'{part}' is not a port range")))?;
            pairs.push((b, e));
        }
        Ranges::from_pairs(pairs)
    }
}

/// Sorted ranges in, overlapping and adjacent ones merged.
fn coalesce(sorted: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (b, e) in sorted {
        match out.last_mut() {
            Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((b, e)),
        }
    }
    out
}

/// One bundle of the four resource kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Resources {
    pub cpus: Milli,
    pub mem: Milli,
    pub disk: Milli,
    pub ports: Ranges,
}

impl Resources {
    pub fn new(cpus: f64, mem: f64) -> Self {
        Self {
            cpus: Milli((cpus * 1000.0).round() as i64),
            mem: Milli((mem * 1000.0).round() as i64),
            ..Default::default()
        }
    }

    pub fn with_disk(mut self, disk: f64) -> Self {
        self.disk = Milli((disk * 1000.0).round() as i64);
        self
    }

    pub fn with_ports(mut self, ports: Ranges) -> Self {
        self.ports = ports;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.cpus.0 <= 0 && self.mem.0 <= 0 && self.disk.0 <= 0 && self.ports.is_empty()
    }

    /// Whether `o` fits inside `self`.
    pub fn contains(&self, o: &Resources) -> bool {
        self.cpus >= o.cpus
            && self.mem >= o.mem
            && self.disk >= o.disk
            && self.ports.contains(&o.ports)
    }

    pub fn add(&self, o: &Resources) -> Resources {
        Resources {
            cpus: self.cpus + o.cpus,
            mem: self.mem + o.mem,
            disk: self.disk + o.disk,
            ports: self.ports.union(&o.ports),
        }
    }

    /// `self - o`, floored at zero per scalar.
    pub fn sub(&self, o: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.saturating_sub(o.cpus),
            mem: self.mem.saturating_sub(o.mem),
            disk: self.disk.saturating_sub(o.disk),
            ports: self.ports.difference(&o.ports),
        }
    }

    /// Mesos: an offer without cpus and mem is useless to a framework.
    pub fn is_offerable(&self) -> bool {
        self.cpus.0 > 0 || self.mem.0 > 0
    }

    /// `{"cpus":1.0,"mem":128.0,"disk":0.0,"gpus":0.0,"ports":"[31000-31001]"}`: the
    /// shape `/master/state` and `/state` use.
    pub fn to_mesos_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("cpus".into(), self.cpus.as_f64().into());
        m.insert("mem".into(), self.mem.as_f64().into());
        m.insert("disk".into(), self.disk.as_f64().into());
        m.insert("gpus".into(), 0.0.into());
        if !self.ports.is_empty() {
            m.insert("ports".into(), self.ports.to_mesos_string().into());
        }
        serde_json::Value::Object(m)
    }

    /// This bundle as v1 `Resource` objects, with an optional reservation role.
    pub fn to_wire(&self, role: &str) -> Vec<Resource> {
        let mut out = Vec::new();
        let reservations = if role == UNRESERVED {
            Vec::new()
        } else {
            vec![Reservation {
                kind: "STATIC".into(),
                role: role.to_owned(),
                principal: None,
            }]
        };
        let scalar = |name: &str, m: Milli| Resource {
            name: name.to_owned(),
            kind: "SCALAR".to_owned(),
            scalar: Some(Scalar { value: m.as_f64() }),
            ranges: None,
            role: None,
            reservations: reservations.clone(),
        };
        if self.cpus.0 > 0 {
            out.push(scalar("cpus", self.cpus));
        }
        if self.mem.0 > 0 {
            out.push(scalar("mem", self.mem));
        }
        if self.disk.0 > 0 {
            out.push(scalar("disk", self.disk));
        }
        if !self.ports.is_empty() {
            out.push(Resource {
                name: "ports".into(),
                kind: "RANGES".into(),
                scalar: None,
                ranges: Some(WireRanges {
                    range: self
                        .ports
                        .pairs()
                        .iter()
                        .map(|&(begin, end)| WireRange { begin, end })
                        .collect(),
                }),
                role: None,
                reservations: reservations.clone(),
            });
        }
        out
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpus:{};mem:{};disk:{}", self.cpus, self.mem, self.disk)?;
        if !self.ports.is_empty() {
            write!(f, ";ports:{}", self.ports.to_mesos_string())?;
        }
        Ok(())
    }
}

/// Resources by reservation role; `*` holds the unreserved part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleResources(pub BTreeMap<String, Resources>);

impl RoleResources {
    pub fn unreserved(r: Resources) -> Self {
        let mut m = BTreeMap::new();
        m.insert(UNRESERVED.to_owned(), r);
        Self(m)
    }

    pub fn total(&self) -> Resources {
        self.0.values().fold(Resources::default(), |a, r| a.add(r))
    }

    pub fn get(&self, role: &str) -> Resources {
        self.0.get(role).cloned().unwrap_or_default()
    }

    pub fn add_to(&mut self, role: &str, r: &Resources) {
        let e = self.0.entry(role.to_owned()).or_default();
        *e = e.add(r);
    }

    pub fn sub_from(&mut self, role: &str, r: &Resources) {
        if let Some(e) = self.0.get_mut(role) {
            *e = e.sub(r);
            if e.is_empty() && role != UNRESERVED {
                self.0.remove(role);
            }
        }
    }

    pub fn add(&self, o: &RoleResources) -> RoleResources {
        let mut out = self.clone();
        for (role, r) in &o.0 {
            out.add_to(role, r);
        }
        out
    }

    pub fn sub(&self, o: &RoleResources) -> RoleResources {
        let mut out = self.clone();
        for (role, r) in &o.0 {
            out.sub_from(role, r);
        }
        out
    }

    pub fn contains(&self, o: &RoleResources) -> bool {
        o.0.iter().all(|(role, r)| self.get(role).contains(r))
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(Resources::is_empty)
    }

    /// Parses Mesos agent flag syntax: `cpus:4;mem:1024;ports:[31000-32000];cpus(prod):2`.
    pub fn parse(s: &str) -> Result<RoleResources, ResourceError> {
        let mut out = RoleResources::default();
        for item in s.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            let (lhs, value) = item
                .split_once(':')
                .ok_or_else(|| ResourceError::Syntax(item.to_owned()))?;
            let (name, role) = match lhs.split_once('(') {
                Some((n, r)) => (n.trim(), r.trim_end_matches(')').trim()),
                None => (lhs.trim(), UNRESERVED),
            };
            if role.is_empty() {
                return Err(ResourceError::Syntax(item.to_owned()));
            }
            let mut r = Resources::default();
            let scalar = |v: &str| -> Result<Milli, ResourceError> {
                let f: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| invalid(name, format!("'{v}' is not a number")))?;
                Milli::from_f64(name, f)
            };
            match name {
                "cpus" => r.cpus = scalar(value)?,
                "mem" => r.mem = scalar(value)?,
                "disk" => r.disk = scalar(value)?,
                "ports" => r.ports = Ranges::parse(value)?,
                "cpu" => return Err(invalid("cpu", "the resource is called 'cpus'")),
                other => return Err(ResourceError::Unknown(other.to_owned())),
            }
            out.add_to(role, &r);
        }
        Ok(out)
    }

    /// v1 wire form.
    pub fn to_wire(&self) -> Vec<Resource> {
        self.0
            .iter()
            .flat_map(|(role, r)| r.to_wire(role))
            .collect()
    }

    /// From v1 `Resource` objects; a reservation's role comes from the last entry in
    /// `reservations` (refinement order) or the legacy `role` field.
    pub fn from_wire(list: &[Resource]) -> Result<RoleResources, ResourceError> {
        let mut out = RoleResources::default();
        for res in list {
            let role = res
                .reservations
                .last()
                .map(|r| r.role.as_str())
                .or(res.role.as_deref())
                .unwrap_or(UNRESERVED);
            let mut r = Resources::default();
            let scalar = || -> Result<Milli, ResourceError> {
                let s = res
                    .scalar
                    .as_ref()
                    .ok_or_else(|| invalid(&res.name, "needs a 'scalar' value"))?;
                Milli::from_f64(&res.name, s.value)
            };
            match res.name.as_str() {
                "cpus" => r.cpus = scalar()?,
                "mem" => r.mem = scalar()?,
                "disk" => r.disk = scalar()?,
                "ports" => {
                    let ranges = res
                        .ranges
                        .as_ref()
                        .ok_or_else(|| invalid("ports", "needs 'ranges'"))?;
                    r.ports = Ranges::from_pairs(ranges.range.iter().map(|w| (w.begin, w.end)))?;
                }
                "gpus" => {
                    if scalar()?.0 > 0 {
                        return Err(invalid("gpus", "this cluster has no GPUs"));
                    }
                }
                other => return Err(ResourceError::Unknown(other.to_owned())),
            }
            out.add_to(role, &r);
        }
        Ok(out)
    }
}

/// A Mesos v1 `Resource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type", default = "scalar_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<WireRanges>,
    /// Pre-reservation-refinement role; read, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<Reservation>,
}

fn scalar_type() -> String {
    "SCALAR".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRanges {
    pub range: Vec<WireRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WireRange {
    pub begin: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    #[serde(rename = "type", default = "dynamic_type")]
    pub kind: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

fn dynamic_type() -> String {
    "DYNAMIC".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_agent_flag_syntax_with_reservations() {
        let r = RoleResources::parse("cpus:4;mem:1024;ports:[31000-32000];cpus(prod):2")
            .expect("parses");
        assert_eq!(r.get("*").cpus, Milli(4000));
        assert_eq!(r.get("prod").cpus, Milli(2000));
        assert_eq!(r.get("*").ports.count(), 1001);
        assert!(RoleResources::parse("cpu:4").is_err());
        assert!(RoleResources::parse("cpus:-1").is_err());
        assert!(RoleResources::parse("cpus:NaN").is_err());
        assert!(RoleResources::parse("ports:[5-1]").is_err());
    }

    #[test]
    fn wire_round_trip_keeps_roles() {
        let r = RoleResources::parse("cpus:4;mem:1024;ports:[31000-31010];mem(prod):512")
            .expect("parses");
        let back = RoleResources::from_wire(&r.to_wire()).expect("round trip");
        assert_eq!(r, back);
    }

    proptest! {
        #[test]
        fn range_difference_then_union_restores(a in 0u64..1000, len in 0u64..100, b in 0u64..1000, blen in 0u64..100) {
            let x = Ranges::from_pairs([(a, a + len)]).expect("valid");
            let y = Ranges::from_pairs([(b, b + blen)]).expect("valid");
            let d = x.difference(&y);
            prop_assert!(x.contains(&d));
            prop_assert!(!d.iter_ports().any(|p| y.contains_port(p)));
            let inter_count = x.iter_ports().filter(|p| y.contains_port(*p)).count() as u64;
            prop_assert_eq!(d.count() + inter_count, x.count());
        }
    }
}
