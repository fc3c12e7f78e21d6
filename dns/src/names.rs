//! Mesos-DNS names: the label sanitizer (`records/labels`), the canonical task name
//! `{task}-{h5}-{slaveTail}`, and reverse names for PTR records.

use sha1::{Digest, Sha1};
use std::net::IpAddr;

/// Which hostname rules labels follow (Mesos-DNS `EnforceRFC952`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// RFC 1123: up to 63 characters, no leading or trailing `-`.
    Rfc1123,
    /// RFC 952: up to 24 characters, no leading `-` or digits, no trailing `-`.
    Rfc952,
}

/// One label: lowercase `a-z0-9`, `-` `.` `_` become `-`, everything else dropped, then
/// trimmed and cut to the rule's length. May be empty.
pub fn label(s: &str, rules: Rules) -> String {
    let mapped: String = s
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            'a'..='z' | '0'..='9' => Some(c),
            '-' | '.' | '_' => Some('-'),
            _ => None,
        })
        .collect();
    let (max, trim_digits) = match rules {
        Rules::Rfc1123 => (63, false),
        Rules::Rfc952 => (24, true),
    };
    let start =
        mapped.trim_start_matches(|c: char| c == '-' || (trim_digits && c.is_ascii_digit()));
    let mut out: String = start.chars().take(max).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// A dotted name (framework names, hostnames): each part sanitized, empty parts dropped.
pub fn domain_frag(s: &str, rules: Rules) -> String {
    s.split('.')
        .map(|p| label(p, rules))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// First five z-base-32 characters of SHA-1(task id): Mesos-DNS' `h5`.
pub fn h5(task_id: &str) -> String {
    let digest = Sha1::digest(task_id.as_bytes());
    // 25 bits from the first 4 bytes, 5 bits per character, most significant first.
    let bits = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (0..5)
        .map(|i| ZBASE32[((bits >> (27 - 5 * i)) & 0x1f) as usize] as char)
        .collect()
}

/// The last `-`-separated part of an agent id, lowercased (`...-S1` → `s1`).
pub fn slave_tail(agent_id: &str) -> String {
    agent_id
        .rsplit('-')
        .next()
        .unwrap_or(agent_id)
        .to_ascii_lowercase()
}

/// `4.3.2.1.in-addr.arpa.` / nibble form under `ip6.arpa.`.
pub fn reverse(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(73);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sanitizes_like_mesos_dns() {
        assert_eq!(
            label("apiserver.myservice", Rules::Rfc1123),
            "apiserver-myservice"
        );
        assert_eq!(
            domain_frag("marathon.prod", Rules::Rfc1123),
            "marathon.prod"
        );
        assert_eq!(label("-My_App!-", Rules::Rfc1123), "my-app");
        assert_eq!(label("123-web", Rules::Rfc952), "web");
        assert_eq!(label(&"a".repeat(80), Rules::Rfc1123).len(), 63);
        assert_eq!(label(&"a".repeat(80), Rules::Rfc952).len(), 24);
        assert_eq!(domain_frag("..Weird..Host.", Rules::Rfc1123), "weird.host");
    }

    #[test]
    fn canonical_parts() {
        assert_eq!(slave_tail("20160107-001256-134875658-5050-27524-S3"), "s3");
        let h = h5("nginx.0d6c0d3e-8f1a-11ef-9a33-0242ac110002");
        assert_eq!(h.len(), 5);
        assert!(h.bytes().all(|b| ZBASE32.contains(&b)));
        assert_eq!(h, h5("nginx.0d6c0d3e-8f1a-11ef-9a33-0242ac110002"));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse("10.0.1.2".parse().expect("ip")),
            "2.1.0.10.in-addr.arpa."
        );
        let r = reverse("2001:db8::1".parse().expect("ip"));
        assert!(r.starts_with("1.0.0.0.") && r.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa."));
    }

    proptest! {
        #[test]
        fn labels_are_always_valid_dns_labels(s in ".{0,200}", rfc952 in any::<bool>()) {
            let rules = if rfc952 { Rules::Rfc952 } else { Rules::Rfc1123 };
            let l = label(&s, rules);
            let max = if rfc952 { 24 } else { 63 };
            prop_assert!(l.len() <= max);
            prop_assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            prop_assert!(!l.starts_with('-') && !l.ends_with('-'));
            if rfc952 {
                prop_assert!(!l.starts_with(|c: char| c.is_ascii_digit()));
            }
            prop_assert_eq!(label(&l, rules), l.clone(), "idempotent");
        }

        #[test]
        fn domain_frags_parse_as_dns_names(s in "[a-zA-Z0-9._ -]{0,300}") {
            let d = domain_frag(&s, Rules::Rfc1123);
            prop_assert!(d.split('.').all(|p| !p.is_empty() || d.is_empty()));
            if !d.is_empty() {
                prop_assert!(hickory_proto::rr::Name::from_ascii(&d).is_ok() || d.len() > 253);
            }
        }
    }
}
