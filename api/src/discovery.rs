//! The `DiscoveryInfo` a task carries, read as types.
//!
//! Mesos leaves `DiscoveryInfo` free-form; Marathon fills `name`, `version` and one entry per
//! port. init adds two labels of its own so that consumers of the master's event stream (DNS,
//! the load balancer) can group tasks into apps and find each port's service port without
//! asking init: the app id as a discovery label and the service port as a port label.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Discovery label holding the Marathon app id (`/group/app`).
pub const APP_ID_LABEL: &str = "MARATHON_APP_ID";
/// Port label holding the Marathon service port of that port index.
pub const SERVICE_PORT_LABEL: &str = "servicePort";
/// Discovery label holding the app's first readiness check as JSON (`Readiness`): an
/// instance gets traffic only once that URL has answered one of the ready codes.
pub const READINESS_LABEL: &str = "readinessCheck";

/// Marathon's `readinessChecks[0]`, resolved to this task's host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub port: u16,
    pub path: String,
    #[serde(rename = "httpStatusCodesForReady")]
    pub ready_codes: Vec<u16>,
}

/// One port of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryPort {
    pub number: u16,
    pub protocol: String,
    pub name: Option<String>,
    pub service_port: Option<u16>,
}

/// What a task's `DiscoveryInfo` says, with missing or malformed parts left empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    pub name: Option<String>,
    pub version: Option<String>,
    pub app_id: Option<String>,
    pub ports: Vec<DiscoveryPort>,
    pub readiness: Option<Readiness>,
}

fn label<'a>(labels: Option<&'a Value>, key: &str) -> Option<&'a str> {
    labels?
        .get("labels")?
        .as_array()?
        .iter()
        .find(|l| l.get("key").and_then(Value::as_str) == Some(key))?
        .get("value")?
        .as_str()
}

impl Discovery {
    /// Reads a `DiscoveryInfo` JSON object.
    pub fn parse(v: &Value) -> Discovery {
        let ports = v
            .pointer("/ports/ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| {
                        let number = u16::try_from(p.get("number")?.as_u64()?).ok()?;
                        Some(DiscoveryPort {
                            number,
                            protocol: p
                                .get("protocol")
                                .and_then(Value::as_str)
                                .unwrap_or("tcp")
                                .to_owned(),
                            name: p.get("name").and_then(Value::as_str).map(str::to_owned),
                            service_port: label(p.get("labels"), SERVICE_PORT_LABEL)
                                .and_then(|s| s.parse().ok()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Discovery {
            name: v.get("name").and_then(Value::as_str).map(str::to_owned),
            version: v.get("version").and_then(Value::as_str).map(str::to_owned),
            app_id: label(v.get("labels"), APP_ID_LABEL).map(str::to_owned),
            ports,
            readiness: label(v.get("labels"), READINESS_LABEL)
                .and_then(|r| serde_json::from_str(r).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_init_discovery_info() {
        let v = json!({"visibility": "FRAMEWORK", "name": "web.prod", "version": "2026-01-01T00:00:00.000Z",
            "labels": {"labels": [{"key": "MARATHON_APP_ID", "value": "/prod/web"}]},
            "ports": {"ports": [
                {"number": 31000, "protocol": "tcp", "name": "http",
                 "labels": {"labels": [{"key": "servicePort", "value": "10001"}]}},
                {"number": 31001, "protocol": "udp"},
                {"number": 99999999}]}});
        let d = Discovery::parse(&v);
        assert_eq!(d.app_id.as_deref(), Some("/prod/web"));
        assert_eq!(d.version.as_deref(), Some("2026-01-01T00:00:00.000Z"));
        assert_eq!(d.ports.len(), 2, "out-of-range port numbers are dropped");
        assert_eq!(d.ports[0].service_port, Some(10001));
        assert_eq!(d.ports[0].name.as_deref(), Some("http"));
        assert_eq!(d.ports[1].service_port, None);
        assert_eq!(d.ports[1].protocol, "udp");
        assert_eq!(Discovery::parse(&json!("nonsense")), Discovery::default());
        let r = json!({"labels": {"labels": [{"key": "readinessCheck",
            "value": "{\"port\":31000,\"path\":\"/ready\",\"httpStatusCodesForReady\":[200,204]}"}]}});
        assert_eq!(
            Discovery::parse(&r).readiness,
            Some(Readiness {
                port: 31000,
                path: "/ready".into(),
                ready_codes: vec![200, 204]
            })
        );
    }
}
