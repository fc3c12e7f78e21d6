//! Marathon app definitions: the JSON clients send, its defaults, and Marathon's
//! validation with its error shape (`{"message", "details": [{"path", "errors"}]}`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

fn one() -> f64 {
    1.0
}
fn mem_default() -> f64 {
    128.0
}
fn instances_default() -> i64 {
    1
}
fn backoff_default() -> f64 {
    1.0
}
fn backoff_factor_default() -> f64 {
    1.15
}
fn max_delay_default() -> f64 {
    300.0
}
fn tcp() -> String {
    "tcp".into()
}
fn kill_selection_default() -> String {
    "YOUNGEST_FIRST".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: i64,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        Self {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// What clients send and what we store, one version of one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default = "one")]
    pub cpus: f64,
    #[serde(default = "mem_default")]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default)]
    pub gpus: f64,
    #[serde(default = "instances_default")]
    pub instances: i64,
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Legacy form of `portDefinitions`: service ports only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    #[serde(default)]
    pub require_ports: bool,
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default)]
    pub health_checks: Vec<Value>,
    #[serde(default)]
    pub readiness_checks: Vec<Value>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default = "backoff_default")]
    pub backoff_seconds: f64,
    #[serde(default = "backoff_factor_default")]
    pub backoff_factor: f64,
    #[serde(default = "max_delay_default")]
    pub max_launch_delay_seconds: f64,
    #[serde(default = "kill_selection_default")]
    pub kill_selection: String,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    pub fetch: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_strategy: Option<Value>,
    /// Set by us: when this version was created (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One validation failure, as Marathon reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub path: String,
    pub errors: Vec<String>,
}

fn violation(path: &str, msg: impl Into<String>) -> Violation {
    Violation {
        path: path.to_owned(),
        errors: vec![msg.into()],
    }
}

/// Marathon's path rules: absolute, `/`-separated segments of lowercase letters, digits,
/// dashes and dots, not starting or ending with a dash or dot, no `.`/`..` segments.
pub fn normalize_id(id: &str) -> Result<String, String> {
    let trimmed = id.trim();
    if trimmed.is_empty() {
        return Err("id must not be empty".into());
    }
    let abs = if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    };
    let abs = abs.trim_end_matches('/').to_owned();
    if abs.is_empty() {
        return Err("id must not be the root group".into());
    }
    for seg in abs[1..].split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !seg.starts_with(['-', '.'])
            && !seg.ends_with(['-', '.']);
        if !ok {
            return Err(format!(
                "path contains invalid segment '{seg}': must be lowercase letters, digits, \
                 dashes or dots, not starting or ending with a dash or dot"
            ));
        }
    }
    Ok(abs)
}

const OPERATORS: &[&str] = &[
    "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS",
];

impl AppDefinition {
    /// Port definitions whichever form the client used.
    pub fn port_defs(&self) -> Vec<PortDefinition> {
        if let Some(p) = &self.port_definitions {
            return p.clone();
        }
        if let Some(p) = &self.ports {
            return p
                .iter()
                .map(|port| PortDefinition {
                    port: *port,
                    protocol: tcp(),
                    name: None,
                    labels: BTreeMap::new(),
                })
                .collect();
        }
        Vec::new()
    }

    /// Checks everything Marathon checks before storing; normalises the id.
    /// Marathon's `unreachableStrategy`: after how long an unreachable instance is replaced
    /// and after how long it is forgotten (defaults 300 s and 600 s); `None` when
    /// `"disabled"`: unreachable instances are waited for.
    pub fn unreachable_after_ms(&self) -> Option<(u64, u64)> {
        let secs = |k: &str, d: f64| -> u64 {
            let v = self
                .unreachable_strategy
                .as_ref()
                .and_then(|u| u.get(k))
                .and_then(Value::as_f64)
                .unwrap_or(d);
            (v.max(0.0) * 1000.0) as u64
        };
        match &self.unreachable_strategy {
            Some(Value::String(s)) if s == "disabled" => None,
            _ => Some((
                secs("inactiveAfterSeconds", 300.0),
                secs("expungeAfterSeconds", 600.0),
            )),
        }
    }

    pub fn validate(&mut self) -> Result<(), Vec<Violation>> {
        let mut v = Vec::new();
        match normalize_id(&self.id) {
            Ok(id) => self.id = id,
            Err(e) => v.push(violation("/id", e)),
        }
        let has_cmd = self.cmd.as_deref().is_some_and(|c| !c.trim().is_empty());
        let has_args = self.args.as_ref().is_some_and(|a| !a.is_empty());
        if has_cmd && has_args {
            v.push(violation(
                "/",
                "AppDefinition must either contain one of 'cmd' or 'args', not both",
            ));
        }
        if !has_cmd && !has_args && self.container.is_none() {
            v.push(violation(
                "/",
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'",
            ));
        }
        for (name, val) in [
            ("cpus", self.cpus),
            ("mem", self.mem),
            ("disk", self.disk),
            ("gpus", self.gpus),
        ] {
            if !val.is_finite() || val < 0.0 {
                v.push(violation(
                    &format!("/{name}"),
                    "got a negative or non-finite value, expected 0 or more",
                ));
            }
        }
        if self.instances < 0 {
            v.push(violation(
                "/instances",
                format!("got {}, expected 0 or more", self.instances),
            ));
        }
        match &self.unreachable_strategy {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "disabled" => {}
            Some(Value::Object(u)) => {
                let num = |k: &str| {
                    u.get(k)
                        .map(|x| x.as_f64().filter(|f| f.is_finite() && *f >= 0.0))
                };
                let inactive = num("inactiveAfterSeconds");
                let expunge = num("expungeAfterSeconds");
                for (k, val) in [
                    ("inactiveAfterSeconds", inactive),
                    ("expungeAfterSeconds", expunge),
                ] {
                    if val == Some(None) {
                        v.push(violation(
                            &format!("/unreachableStrategy/{k}"),
                            "expected a number of seconds, 0 or more",
                        ));
                    }
                }
                if let (Some(Some(i)), Some(Some(e))) = (inactive, expunge)
                    && e < i
                {
                    v.push(violation(
                        "/unreachableStrategy/expungeAfterSeconds",
                        "must be at least inactiveAfterSeconds",
                    ));
                }
            }
            Some(_) => v.push(violation(
                "/unreachableStrategy",
                "expected \"disabled\" or {\"inactiveAfterSeconds\", \"expungeAfterSeconds\"}",
            )),
        }
        for (i, f) in self.fetch.iter().enumerate() {
            let uri = f.get("uri").and_then(Value::as_str).unwrap_or("");
            if uri.trim().is_empty() {
                v.push(violation(
                    &format!("/fetch({i})/uri"),
                    "a fetch entry needs a non-empty \"uri\"",
                ));
            } else if !(uri.starts_with("http://")
                || uri.starts_with("file://")
                || uri.starts_with('/'))
            {
                v.push(violation(
                    &format!("/fetch({i})/uri"),
                    "the agents fetch http:// and file:// URIs and absolute paths \
                     (https:// is not supported yet: mirror it over http://)",
                ));
            }
            for flag in ["executable", "extract", "cache"] {
                if f.get(flag).is_some_and(|x| !x.is_boolean()) {
                    v.push(violation(
                        &format!("/fetch({i})/{flag}"),
                        "expected a boolean",
                    ));
                }
            }
            if f.get("outputFile").is_some_and(|x| {
                !x.as_str().is_some_and(|o| {
                    !o.is_empty()
                        && !o.contains('/')
                        && ![".", "..", "stdout", "stderr"].contains(&o)
                })
            }) {
                v.push(violation(
                    &format!("/fetch({i})/outputFile"),
                    "expected a file name (no '/')",
                ));
            }
        }
        if self.ports.is_some() && self.port_definitions.is_some() {
            v.push(violation(
                "/",
                "You cannot specify both ports and port definitions",
            ));
        }
        let defs = self.port_defs();
        for (i, p) in defs.iter().enumerate() {
            if !(0..=65535).contains(&p.port) {
                v.push(violation(
                    &format!("/portDefinitions({i})/port"),
                    "got a port outside 0-65535",
                ));
            }
            if !matches!(p.protocol.as_str(), "tcp" | "udp" | "udp,tcp" | "tcp,udp") {
                v.push(violation(
                    &format!("/portDefinitions({i})/protocol"),
                    "is not one of (tcp,udp,udp,tcp)",
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in defs.iter().filter(|p| p.port != 0) {
            if !seen.insert(p.port) {
                v.push(violation(
                    "/portDefinitions",
                    format!("port {} is listed twice", p.port),
                ));
            }
        }
        for (i, c) in self.constraints.iter().enumerate() {
            let path = format!("/constraints({i})");
            if c.len() < 2 || c.len() > 3 {
                v.push(violation(
                    &path,
                    "each constraint must have a field and an operator, and may have a value",
                ));
                continue;
            }
            if !OPERATORS.contains(&c[1].as_str()) {
                v.push(violation(
                    &path,
                    format!(
                        "unknown operator '{}' (known: {})",
                        c[1],
                        OPERATORS.join(", ")
                    ),
                ));
                continue;
            }
            let needs_value = matches!(
                c[1].as_str(),
                "LIKE" | "UNLIKE" | "MAX_PER" | "IS" | "CLUSTER"
            );
            if needs_value && c.len() != 3 && c[1] != "CLUSTER" {
                v.push(violation(&path, format!("{} needs a value", c[1])));
            }
            if c[1] == "MAX_PER" && c.get(2).and_then(|s| s.parse::<u32>().ok()).is_none() {
                v.push(violation(&path, "MAX_PER needs a whole number"));
            }
            if matches!(c[1].as_str(), "LIKE" | "UNLIKE")
                && let Some(re) = c.get(2)
                && regex_lite::Regex::new(re).is_err()
            {
                v.push(violation(
                    &path,
                    format!("'{re}' is not a valid regular expression"),
                ));
            }
        }
        if self.readiness_checks.len() > 1 {
            v.push(violation(
                "/readinessChecks",
                "only one readiness check is supported",
            ));
        }
        for (i, rc) in self.readiness_checks.iter().enumerate() {
            let path = format!("/readinessChecks({i})");
            match rc.get("protocol").and_then(Value::as_str).unwrap_or("HTTP") {
                "HTTP" | "HTTPS" => {}
                other => v.push(violation(
                    &format!("{path}/protocol"),
                    format!("unknown protocol '{other}'"),
                )),
            }
            if defs.is_empty() {
                v.push(violation(
                    &path,
                    "a readiness check needs a port: the app has none",
                ));
            }
            if let Some(name) = rc.get("portName")
                && !name
                    .as_str()
                    .is_some_and(|n| defs.iter().any(|d| d.name.as_deref() == Some(n)))
            {
                v.push(violation(
                    &format!("{path}/portName"),
                    format!("no port definition is named {name}"),
                ));
            }
            for k in ["intervalSeconds", "timeoutSeconds"] {
                if rc
                    .get(k)
                    .is_some_and(|x| !x.as_f64().is_some_and(|f| f.is_finite() && f > 0.0))
                {
                    v.push(violation(
                        &format!("{path}/{k}"),
                        "expected a positive number",
                    ));
                }
            }
            if let Some(codes) = rc.get("httpStatusCodesForReady")
                && !codes.as_array().is_some_and(|a| {
                    !a.is_empty()
                        && a.iter()
                            .all(|c| c.as_u64().is_some_and(|c| (100..600).contains(&c)))
                })
            {
                v.push(violation(
                    &format!("{path}/httpStatusCodesForReady"),
                    "expected a non-empty list of HTTP status codes",
                ));
            }
        }
        for (i, hc) in self.health_checks.iter().enumerate() {
            let path = format!("/healthChecks({i})");
            match hc.get("protocol").and_then(Value::as_str).unwrap_or("HTTP") {
                "HTTP" | "MESOS_HTTP" | "HTTPS" | "MESOS_HTTPS" | "TCP" | "MESOS_TCP" => {
                    if defs.is_empty() && hc.get("port").is_none() {
                        v.push(violation(&path, "a health check needs a port: the app has no ports and the check names none"));
                    }
                }
                "COMMAND" => {
                    if hc
                        .pointer("/command/value")
                        .and_then(Value::as_str)
                        .is_none_or(|c| c.trim().is_empty())
                    {
                        v.push(violation(
                            &path,
                            "a COMMAND health check needs command.value",
                        ));
                    }
                }

                other => v.push(violation(&path, format!("unknown protocol '{other}'"))),
            }
            if let Some(idx) = hc.get("portIndex").and_then(Value::as_u64)
                && idx as usize >= defs.len()
            {
                v.push(violation(
                    &format!("/healthChecks({i})"),
                    format!(
                        "Health check port index {idx} must point to one of the {} ports",
                        defs.len()
                    ),
                ));
            }
        }
        let us = &self.upgrade_strategy;
        if !(0.0..=1.0).contains(&us.minimum_health_capacity) {
            v.push(violation(
                "/upgradeStrategy/minimumHealthCapacity",
                "is not between 0 and 1",
            ));
        }
        if !(0.0..=1.0).contains(&us.maximum_over_capacity) {
            v.push(violation(
                "/upgradeStrategy/maximumOverCapacity",
                "is not between 0 and 1",
            ));
        }
        if us.minimum_health_capacity >= 1.0 && us.maximum_over_capacity <= 0.0 {
            v.push(violation(
                "/upgradeStrategy",
                "minimumHealthCapacity 1 with maximumOverCapacity 0 leaves no way to replace a task",
            ));
        }
        if !matches!(
            self.kill_selection.as_str(),
            "YOUNGEST_FIRST" | "OLDEST_FIRST"
        ) {
            v.push(violation(
                "/killSelection",
                "is not one of (YOUNGEST_FIRST, OLDEST_FIRST)",
            ));
        }
        let at_least = |x: f64, min: f64| x.is_finite() && x >= min;
        let backoff_ok = at_least(self.backoff_seconds, 0.0)
            && at_least(self.backoff_factor, 1.0)
            && at_least(self.max_launch_delay_seconds, 0.0);
        if !backoff_ok {
            v.push(violation(
                "/backoffSeconds",
                "back-off needs seconds >= 0, a factor >= 1 and a max delay >= 0",
            ));
        }
        if v.is_empty() { Ok(()) } else { Err(v) }
    }

    /// The Mesos `HealthCheck` for a task whose ports are `host_ports`: the first of the
    /// app's checks (Mesos runs one per task), with Marathon's defaults.
    pub fn mesos_health_check(&self, host_ports: &[u64]) -> Option<Value> {
        let hc = self.health_checks.first()?;
        let num = |k: &str, d: f64| hc.get(k).and_then(Value::as_f64).unwrap_or(d);
        let port = hc.get("port").and_then(Value::as_u64).or_else(|| {
            let idx = hc.get("portIndex").and_then(Value::as_u64).unwrap_or(0) as usize;
            host_ports.get(idx).copied()
        });
        let mut out = serde_json::json!({
            "delay_seconds": num("delaySeconds", 15.0),
            "interval_seconds": num("intervalSeconds", 60.0),
            "timeout_seconds": num("timeoutSeconds", 20.0),
            "consecutive_failures": num("maxConsecutiveFailures", 3.0) as u64,
            "grace_period_seconds": num("gracePeriodSeconds", 300.0),
        });
        match hc.get("protocol").and_then(Value::as_str).unwrap_or("HTTP") {
            proto @ ("HTTP" | "MESOS_HTTP" | "HTTPS" | "MESOS_HTTPS") => {
                let scheme = if proto.ends_with('S') {
                    "https"
                } else {
                    "http"
                };
                out["type"] = "HTTP".into();
                out["http"] = serde_json::json!({"port": port?, "path": hc.get("path").and_then(Value::as_str).unwrap_or("/"), "scheme": scheme});
            }
            "TCP" | "MESOS_TCP" => {
                out["type"] = "TCP".into();
                out["tcp"] = serde_json::json!({"port": port?});
            }
            "COMMAND" => {
                out["type"] = "COMMAND".into();
                out["command"] = serde_json::json!({"value": hc.pointer("/command/value")?});
            }
            _ => return None,
        }
        Some(out)
    }

    /// Whether `other` differs in anything that needs new tasks (not only `instances`).
    pub fn needs_restart(&self, other: &AppDefinition) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.instances = 0;
        b.instances = 0;
        a.version = None;
        b.version = None;
        a != b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(json: &str) -> AppDefinition {
        serde_json::from_str(json).expect("parses")
    }

    #[test]
    fn marathon_defaults() {
        let a = app(r#"{"id":"web","cmd":"python3 -m http.server $PORT0"}"#);
        assert_eq!((a.cpus, a.mem, a.instances), (1.0, 128.0, 1));
        assert_eq!(a.upgrade_strategy, UpgradeStrategy::default());
        assert_eq!(a.kill_selection, "YOUNGEST_FIRST");
    }

    #[test]
    fn ids_follow_marathon_path_rules() {
        assert_eq!(normalize_id("web").as_deref(), Ok("/web"));
        assert_eq!(
            normalize_id("/prod/db.primary/").as_deref(),
            Ok("/prod/db.primary")
        );
        for bad in ["", "/", "/Web", "/a/../b", "/-a", "/a_b", "/a/b-"] {
            assert!(normalize_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_apps_name_every_problem() {
        let mut a = app(
            r#"{"id":"/Bad","cpus":-1,"instances":-2,"constraints":[["hostname","NEAR"]],
                "portDefinitions":[{"port":80},{"port":80}],"healthChecks":[{"portIndex":5}]}"#,
        );
        let errs = a.validate().expect_err("invalid");
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "/id",
            "/",
            "/cpus",
            "/instances",
            "/constraints(0)",
            "/portDefinitions",
            "/healthChecks(0)",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn restarts_only_for_real_changes() {
        let a = app(r#"{"id":"/web","cmd":"x","instances":1}"#);
        let mut b = a.clone();
        b.instances = 5;
        assert!(!a.needs_restart(&b));
        b.cmd = Some("y".into());
        assert!(a.needs_restart(&b));
    }
}
