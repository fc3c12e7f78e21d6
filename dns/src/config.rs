//! Configuration with Mesos-DNS' `config.json` keys, so an existing file loads unchanged.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(alias = "Domain")]
    pub domain: String,
    #[serde(alias = "TTL", alias = "Ttl")]
    pub ttl: u32,
    /// DNS port (UDP and TCP).
    #[serde(alias = "Port")]
    pub port: u16,
    #[serde(rename = "httpport", alias = "HttpPort", alias = "httpPort")]
    pub http_port: u16,
    #[serde(alias = "Listener")]
    pub listener: String,
    #[serde(rename = "HTTPListener", alias = "httpListener")]
    pub http_listener: String,
    /// Masters as `ip:port`, in `masterN` order; the first reachable one feeds us.
    #[serde(alias = "Masters")]
    pub masters: Vec<String>,
    /// Upstreams for names outside `domain` (`IP` or `IP:port`); empty = `/etc/resolv.conf`.
    #[serde(alias = "Resolvers")]
    pub resolvers: Vec<String>,
    #[serde(rename = "zoneResolvers", alias = "ZoneResolvers")]
    pub zone_resolvers: BTreeMap<String, Vec<String>>,
    /// Seconds an upstream has to answer before we say SERVFAIL.
    #[serde(alias = "Timeout")]
    pub timeout: f64,
    #[serde(rename = "SOAMname", alias = "soaMname")]
    pub soa_mname: String,
    #[serde(rename = "SOARname", alias = "soaRname")]
    pub soa_rname: String,
    #[serde(rename = "SOARefresh")]
    pub soa_refresh: u32,
    #[serde(rename = "SOARetry")]
    pub soa_retry: u32,
    #[serde(rename = "SOAExpire")]
    pub soa_expire: u32,
    #[serde(rename = "SOAMinttl")]
    pub soa_minttl: u32,
    #[serde(rename = "srvRecordDefaultWeight")]
    pub srv_weight: u16,
    #[serde(rename = "IPSources", alias = "ipSources")]
    pub ip_sources: Vec<String>,
    #[serde(rename = "EnforceRFC952", alias = "enforceRFC952")]
    pub enforce_rfc952: bool,
    #[serde(rename = "SetTruncateBit", alias = "setTruncateBit")]
    pub set_truncate_bit: bool,
    #[serde(rename = "EnumerationOn", alias = "enumerationOn")]
    pub enumeration_on: bool,
    #[serde(rename = "externalon", alias = "ExternalOn")]
    pub external_on: bool,
    #[serde(rename = "recurseon", alias = "RecurseOn")]
    pub recurse_on: bool,
    /// Ours: leave out tasks whose health checks fail or that are `TASK_KILLING`.
    /// `false` answers for them as Mesos-DNS did.
    #[serde(rename = "healthAware")]
    pub health_aware: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "mesos".into(),
            ttl: 60,
            port: 53,
            http_port: 8123,
            listener: "0.0.0.0".into(),
            http_listener: "0.0.0.0".into(),
            masters: Vec::new(),
            resolvers: Vec::new(),
            zone_resolvers: BTreeMap::new(),
            timeout: 2.0,
            soa_mname: "ns1.mesos".into(),
            soa_rname: "root.ns1.mesos".into(),
            soa_refresh: 60,
            soa_retry: 600,
            soa_expire: 86400,
            soa_minttl: 60,
            srv_weight: 1,
            ip_sources: vec!["netinfo".into(), "mesos".into(), "host".into()],
            enforce_rfc952: false,
            set_truncate_bit: true,
            enumeration_on: true,
            external_on: true,
            recurse_on: true,
            health_aware: true,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("domain '{0}' is not a valid DNS name")]
    Domain(String),
    #[error("resolver '{0}' is not IP or IP:port")]
    Resolver(String),
    #[error("IPSources entry '{0}' is unknown (known: host, netinfo, mesos, docker)")]
    IpSource(String),
    #[error("timeout must be a positive number of seconds")]
    Timeout,
}

/// `IP` or `IP:port` (port 53 when absent; IPv6 as `[::1]:53` or bare).
pub fn parse_resolver(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| ConfigError::Resolver(s.to_owned()))
}

impl Config {
    /// Normalises (lowercase domain) and checks what a typo would break.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        self.domain = self.domain.trim_end_matches('.').to_ascii_lowercase();
        if self.domain.is_empty()
            || hickory_proto::rr::Name::from_ascii(&self.domain).is_err()
            || self.domain.split('.').any(|l| l.is_empty() || l.len() > 63)
        {
            return Err(ConfigError::Domain(self.domain));
        }
        for r in self
            .resolvers
            .iter()
            .chain(self.zone_resolvers.values().flatten())
        {
            parse_resolver(r)?;
        }
        for s in &self.ip_sources {
            if !matches!(s.as_str(), "host" | "netinfo" | "mesos" | "docker") {
                return Err(ConfigError::IpSource(s.clone()));
            }
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(ConfigError::Timeout);
        }
        self.zone_resolvers = self
            .zone_resolvers
            .into_iter()
            .map(|(z, r)| (z.trim_end_matches('.').to_ascii_lowercase(), r))
            .collect();
        Ok(self)
    }
}

/// Nameservers from a resolv.conf text (`nameserver IP` lines), port 53.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some("nameserver"))
                .then(|| it.next())
                .flatten()
                .and_then(|ip| parse_resolver(ip.split('%').next().unwrap_or(ip)).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_mesos_dns_config_file() {
        let c: Config = serde_json::from_str(
            r#"{"zk":"zk://10.0.0.1:2181/mesos","masters":["10.0.0.1:5050"],"refreshSeconds":60,
                "ttl":30,"domain":"Mesos.","port":53,"resolvers":["8.8.8.8","10.0.0.2:5353"],
                "timeout":5,"httpon":true,"dnson":true,"httpport":8123,"externalon":true,
                "listener":"10.0.0.1","SOAMname":"ns1.mesos","SOARname":"root.ns1.mesos",
                "SOARefresh":60,"SOARetry":600,"SOAExpire":86400,"SOAMinttl":60,
                "IPSources":["netinfo","mesos","host"],"zoneResolvers":{"Weave":["172.17.0.1"]}}"#,
        )
        .expect("parses");
        let c = c.validate().expect("valid");
        assert_eq!(c.domain, "mesos");
        assert_eq!(c.ttl, 30);
        assert_eq!(c.zone_resolvers["weave"], vec!["172.17.0.1".to_owned()]);
    }

    #[test]
    fn bad_configs_say_why() {
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().err()
        };
        assert!(matches!(
            bad(|c| c.domain = "a..b".into()),
            Some(ConfigError::Domain(_))
        ));
        assert!(matches!(
            bad(|c| c.resolvers = vec!["dns.google".into()]),
            Some(ConfigError::Resolver(_))
        ));
        assert!(matches!(
            bad(|c| c.ip_sources = vec!["magic".into()]),
            Some(ConfigError::IpSource(_))
        ));
        assert_eq!(bad(|c| c.timeout = 0.0), Some(ConfigError::Timeout));
    }

    #[test]
    fn resolv_conf() {
        let s =
            resolv_conf_servers("# x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch a\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0], "10.0.0.2:53".parse().expect("addr"));
    }
}
