//! marathon-lb's app labels, read into what the load balancer exposes per service port.
//!
//! A bad value is reported for its port and that port alone is left out: one app's typo must
//! never stop the others from being updated (marathon-lb #234).

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// How a service port is proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Http,
    Tcp,
}

/// `HAPROXY_{n}_BALANCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    Roundrobin,
    Leastconn,
    /// Hash of the client address, as HAProxy's `balance source`.
    Source,
}

/// One exposed port of an app, as its labels describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortSpec {
    pub index: usize,
    pub service_port: Option<u16>,
    pub mode: Mode,
    pub vhosts: Vec<String>,
    pub path: Option<String>,
    pub balance: Balance,
    pub sticky: bool,
    pub redirect_to_https: bool,
    pub bind_addr: Option<IpAddr>,
}

/// What the load balancer was told about one port: exposed, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortDecision {
    Exposed(PortSpec),
    /// Filtered out on purpose (group, `ENABLED=false`, strict mode): not a problem.
    Skipped,
    /// A label could not be read; the message names the label and the value.
    Invalid(String),
}

/// Settings that decide which ports are exposed at all.
#[derive(Debug, Clone)]
pub struct Filter {
    /// `--group`: the groups this load balancer serves; `*` serves every group.
    pub groups: Vec<String>,
    /// `--strict-mode`: only ports with `HAPROXY_{n}_ENABLED=true`.
    pub strict: bool,
}

fn bool_label(labels: &BTreeMap<String, String>, key: &str) -> Result<Option<bool>, String> {
    match labels.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v == "true" || v == "1" || v == "yes" => Ok(Some(true)),
        Some(v) if v == "false" || v == "0" || v == "no" || v.is_empty() => Ok(Some(false)),
        Some(v) => Err(format!("{key}={v:?}: expected true or false")),
    }
}

fn valid_host(h: &str) -> bool {
    let h = h.strip_prefix("*.").unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn groups_of(v: &str) -> Vec<String> {
    v.split(',')
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty())
        .collect()
}

/// Reads port `index` of an app from its labels. `http_health_check` is whether the app
/// has an HTTP health check, which (as in marathon-lb) makes HTTP the default mode.
pub fn port_spec(
    labels: &BTreeMap<String, String>,
    index: usize,
    filter: &Filter,
    http_health_check: bool,
) -> PortDecision {
    let key = |name: &str| format!("HAPROXY_{index}_{name}");
    let groups = labels
        .get(&key("GROUP"))
        .or_else(|| labels.get("HAPROXY_GROUP"))
        .map(|v| groups_of(v))
        .unwrap_or_default();
    let serves_all = filter.groups.iter().any(|g| g == "*");
    if !serves_all && !groups.iter().any(|g| g == "*" || filter.groups.contains(g)) {
        return PortDecision::Skipped;
    }
    match bool_label(labels, &key("ENABLED")) {
        Err(e) => return PortDecision::Invalid(e),
        Ok(Some(false)) => return PortDecision::Skipped,
        Ok(None) if filter.strict => return PortDecision::Skipped,
        Ok(_) => {}
    }
    match read_spec(labels, index, http_health_check) {
        Ok(s) => PortDecision::Exposed(s),
        Err(e) => PortDecision::Invalid(e),
    }
}

fn read_spec(
    labels: &BTreeMap<String, String>,
    index: usize,
    http_health_check: bool,
) -> Result<PortSpec, String> {
    let key = |name: &str| format!("HAPROXY_{index}_{name}");
    let vhosts: Vec<String> = match labels.get(&key("VHOST")) {
        None => Vec::new(),
        Some(v) => {
            let hs: Vec<String> = v
                .split(',')
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect();
            if let Some(bad) = hs.iter().find(|h| !valid_host(h)) {
                return Err(format!(
                    "{}={v:?}: {bad:?} is not a host name",
                    key("VHOST")
                ));
            }
            hs
        }
    };
    let path = match labels.get(&key("PATH")).map(|p| p.trim()) {
        None | Some("") => None,
        Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => Some(p.to_owned()),
        Some(p) => {
            return Err(format!(
                "{}={p:?}: a path prefix starts with / and has no spaces",
                key("PATH")
            ));
        }
    };
    let mode = match labels
        .get(&key("MODE"))
        .map(|m| m.trim().to_ascii_lowercase())
    {
        Some(m) if m == "http" => Mode::Http,
        Some(m) if m == "tcp" => Mode::Tcp,
        Some(m) => return Err(format!("{}={m:?}: expected http or tcp", key("MODE"))),
        None if !vhosts.is_empty() || path.is_some() || http_health_check => Mode::Http,
        None => Mode::Tcp,
    };
    if mode == Mode::Tcp && (!vhosts.is_empty() || path.is_some()) {
        return Err(format!(
            "{}=tcp cannot route by {}",
            key("MODE"),
            if vhosts.is_empty() {
                "path"
            } else {
                "virtual host"
            }
        ));
    }
    let balance = match labels
        .get(&key("BALANCE"))
        .map(|b| b.trim().to_ascii_lowercase())
    {
        None => Balance::Roundrobin,
        Some(b) if b == "roundrobin" || b.is_empty() => Balance::Roundrobin,
        Some(b) if b == "leastconn" => Balance::Leastconn,
        Some(b) if b == "source" => Balance::Source,
        Some(b) => {
            return Err(format!(
                "{}={b:?}: expected roundrobin, leastconn or source",
                key("BALANCE")
            ));
        }
    };
    let service_port = match labels.get(&key("PORT")) {
        None => None,
        Some(p) => match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("{}={p:?}: expected a port number", key("PORT"))),
        },
    };
    let bind_addr = match labels.get(&key("BIND_ADDR")) {
        None => None,
        Some(a) => match a.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                return Err(format!(
                    "{}={a:?}: expected an IP address",
                    key("BIND_ADDR")
                ));
            }
        },
    };
    Ok(PortSpec {
        index,
        service_port,
        mode,
        vhosts,
        path,
        balance,
        sticky: bool_label(labels, &key("STICKY"))?.unwrap_or(false),
        redirect_to_https: bool_label(labels, &key("REDIRECT_TO_HTTPS"))?.unwrap_or(false),
        bind_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn external() -> Filter {
        Filter {
            groups: vec!["external".into()],
            strict: false,
        }
    }

    #[test]
    fn group_filter_follows_marathon_lb() {
        let f = external();
        assert_eq!(port_spec(&labels(&[]), 0, &f, false), PortDecision::Skipped);
        let l = labels(&[("HAPROXY_GROUP", "internal,external")]);
        assert!(matches!(
            port_spec(&l, 0, &f, false),
            PortDecision::Exposed(_)
        ));
        // The per-port group wins over the app's.
        let l = labels(&[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_1_GROUP", "internal"),
        ]);
        assert!(matches!(
            port_spec(&l, 0, &f, false),
            PortDecision::Exposed(_)
        ));
        assert_eq!(port_spec(&l, 1, &f, false), PortDecision::Skipped);
        let all = Filter {
            groups: vec!["*".into()],
            strict: false,
        };
        assert!(matches!(
            port_spec(&labels(&[]), 0, &all, false),
            PortDecision::Exposed(_)
        ));
        let star = labels(&[("HAPROXY_GROUP", "*")]);
        assert!(matches!(
            port_spec(&star, 0, &f, false),
            PortDecision::Exposed(_)
        ));
    }

    #[test]
    fn strict_mode_needs_enabled() {
        let strict = Filter {
            groups: vec!["external".into()],
            strict: true,
        };
        let l = labels(&[("HAPROXY_GROUP", "external")]);
        assert_eq!(port_spec(&l, 0, &strict, false), PortDecision::Skipped);
        let l = labels(&[("HAPROXY_GROUP", "external"), ("HAPROXY_0_ENABLED", "true")]);
        assert!(matches!(
            port_spec(&l, 0, &strict, false),
            PortDecision::Exposed(_)
        ));
        let l = labels(&[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_ENABLED", "false"),
        ]);
        assert_eq!(port_spec(&l, 0, &external(), false), PortDecision::Skipped);
    }

    #[test]
    fn reads_vhost_path_mode_and_options() {
        let l = labels(&[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_VHOST", "Web.Example.com, www.example.com."),
            ("HAPROXY_0_PATH", "/api"),
            ("HAPROXY_0_BALANCE", "leastconn"),
            ("HAPROXY_0_STICKY", "true"),
            ("HAPROXY_0_REDIRECT_TO_HTTPS", "true"),
            ("HAPROXY_0_PORT", "10500"),
        ]);
        let PortDecision::Exposed(s) = port_spec(&l, 0, &external(), false) else {
            panic!("not exposed");
        };
        assert_eq!(s.vhosts, vec!["web.example.com", "www.example.com"]);
        assert_eq!(s.path.as_deref(), Some("/api"));
        assert_eq!(s.mode, Mode::Http, "a vhost makes the port HTTP");
        assert_eq!(s.balance, Balance::Leastconn);
        assert!(s.sticky && s.redirect_to_https);
        assert_eq!(s.service_port, Some(10500));
        let plain = labels(&[("HAPROXY_GROUP", "external")]);
        let PortDecision::Exposed(s) = port_spec(&plain, 0, &external(), false) else {
            panic!("not exposed");
        };
        assert_eq!(
            s.mode,
            Mode::Tcp,
            "marathon-lb's default without vhost or HTTP check"
        );
        let PortDecision::Exposed(s) = port_spec(&plain, 0, &external(), true) else {
            panic!("not exposed");
        };
        assert_eq!(s.mode, Mode::Http);
    }

    #[test]
    fn bad_values_name_the_label() {
        for (k, v, needle) in [
            ("HAPROXY_0_MODE", "udp", "HAPROXY_0_MODE"),
            ("HAPROXY_0_BALANCE", "random", "HAPROXY_0_BALANCE"),
            ("HAPROXY_0_VHOST", "bad host!", "HAPROXY_0_VHOST"),
            ("HAPROXY_0_PATH", "api", "HAPROXY_0_PATH"),
            ("HAPROXY_0_STICKY", "maybe", "HAPROXY_0_STICKY"),
            ("HAPROXY_0_PORT", "99999", "HAPROXY_0_PORT"),
            ("HAPROXY_0_ENABLED", "perhaps", "HAPROXY_0_ENABLED"),
            ("HAPROXY_0_BIND_ADDR", "here", "HAPROXY_0_BIND_ADDR"),
        ] {
            let l = labels(&[("HAPROXY_GROUP", "external"), (k, v)]);
            match port_spec(&l, 0, &external(), false) {
                PortDecision::Invalid(m) => assert!(m.contains(needle), "{m}"),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        let l = labels(&[
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_0_MODE", "tcp"),
            ("HAPROXY_0_VHOST", "a.example"),
        ]);
        assert!(matches!(
            port_spec(&l, 0, &external(), false),
            PortDecision::Invalid(_)
        ));
    }
}
