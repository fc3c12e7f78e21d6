//! The fast path: answers encoded once per record set, spliced behind the client's own
//! question at query time. Covers what nearly all traffic is (one IN question for a name
//! in our domain, with or without an EDNS0 OPT); everything else, and anything that does
//! not fit, falls back to the general path in `answer`.

use crate::config::Config;
use crate::records::RecordSet;
use std::collections::HashMap;
use std::net::IpAddr;

const T_A: u16 = 1;
const T_SOA: u16 = 6;
const T_PTR: u16 = 12;
const T_AAAA: u16 = 28;
const T_SRV: u16 = 33;
const T_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// What we advertise in our OPT record.
const OUR_PAYLOAD: u16 = 1232;

/// One answer set, its records kept apart so they can be rotated per query.
#[derive(Debug, Default)]
pub struct Encoded {
    /// Answer records, owner name as a pointer to the question (offset 12).
    answers: Vec<Vec<u8>>,
    additionals: Vec<Vec<u8>>,
}

/// Pre-encoded answers for a record set.
#[derive(Debug, Default)]
pub struct FastTable {
    /// Name → answers by type; keyed by name alone so a lookup borrows the query's name.
    map: HashMap<String, Vec<(u16, Encoded)>>,
    /// The SOA for negative answers' authority section.
    soa: Vec<u8>,
    apex: String,
    suffix: String,
    recurse: bool,
    truncate_bit: bool,
}

impl FastTable {
    fn get(&self, name: &str, qtype: u16) -> Option<&Encoded> {
        self.map
            .get(name)?
            .iter()
            .find_map(|(t, e)| (*t == qtype).then_some(e))
    }

    fn entry(&mut self, name: &str, qtype: u16) -> &mut Encoded {
        let v = self.map.entry(name.to_owned()).or_default();
        let i = match v.iter().position(|(t, _)| *t == qtype) {
            Some(i) => i,
            None => {
                v.push((qtype, Encoded::default()));
                v.len() - 1
            }
        };
        &mut v[i].1
    }
}

fn put_name(out: &mut Vec<u8>, dotted: &str) -> bool {
    for label in dotted.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return false;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    true
}

/// A record whose owner is the question name (pointer 0xC00C).
fn rr(rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + rdata.len());
    v.extend_from_slice(&[0xC0, 0x0C]);
    v.extend_from_slice(&rtype.to_be_bytes());
    v.extend_from_slice(&CLASS_IN.to_be_bytes());
    v.extend_from_slice(&ttl.to_be_bytes());
    v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    v.extend_from_slice(rdata);
    v
}

fn named_rr(owner: &str, rtype: u16, ttl: u32, rdata: &[u8]) -> Option<Vec<u8>> {
    let mut v = Vec::with_capacity(owner.len() + 12 + rdata.len());
    if !put_name(&mut v, owner) {
        return None;
    }
    v.extend_from_slice(&rtype.to_be_bytes());
    v.extend_from_slice(&CLASS_IN.to_be_bytes());
    v.extend_from_slice(&ttl.to_be_bytes());
    v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    v.extend_from_slice(rdata);
    Some(v)
}

fn ip_rdata(ip: &IpAddr) -> (u16, Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => (T_A, v4.octets().to_vec()),
        IpAddr::V6(v6) => (T_AAAA, v6.octets().to_vec()),
    }
}

/// Encodes every A, AAAA, SRV and PTR answer of `rs`.
pub fn encode(rs: &RecordSet, cfg: &Config) -> FastTable {
    let ttl = cfg.ttl;
    let apex = format!("{}.", cfg.domain);
    let mut t = FastTable {
        map: HashMap::with_capacity(rs.a.len() * 2 + rs.srv.len()),
        soa: Vec::new(),
        suffix: format!(".{apex}"),
        apex,
        recurse: cfg.recurse_on,
        truncate_bit: cfg.set_truncate_bit,
    };
    let mut soa = Vec::new();
    let soa_ok = put_name(&mut soa, &cfg.soa_mname) && put_name(&mut soa, &cfg.soa_rname);
    if soa_ok {
        for v in [
            rs.serial,
            cfg.soa_refresh,
            cfg.soa_retry,
            cfg.soa_expire,
            cfg.soa_minttl,
        ] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        t.soa = named_rr(&t.apex, T_SOA, ttl, &soa).unwrap_or_default();
    }
    for (name, ips) in &rs.a {
        for ip in ips {
            let (ty, data) = ip_rdata(ip);
            t.entry(name, ty).answers.push(rr(ty, ttl, &data));
        }
    }
    for (name, srvs) in &rs.srv {
        if srvs.is_empty() {
            continue;
        }
        let mut e = Encoded::default();
        let mut seen_additional = std::collections::HashSet::new();
        for s in srvs {
            let mut data = Vec::with_capacity(6 + s.target.len() + 2);
            data.extend_from_slice(&0u16.to_be_bytes());
            data.extend_from_slice(&cfg.srv_weight.to_be_bytes());
            data.extend_from_slice(&s.port.to_be_bytes());
            if !put_name(&mut data, &s.target) {
                continue;
            }
            e.answers.push(rr(T_SRV, ttl, &data));
            for ip in rs.a.get(&s.target).into_iter().flatten() {
                let (ty, d) = ip_rdata(ip);
                if let Some(r) = named_rr(&s.target, ty, ttl, &d)
                    && seen_additional.insert(r.clone())
                {
                    e.additionals.push(r);
                }
            }
        }
        *t.entry(name, T_SRV) = e;
    }
    for (name, targets) in &rs.ptr {
        let mut e = Encoded::default();
        for target in targets {
            let mut data = Vec::new();
            if put_name(&mut data, target) {
                e.answers.push(rr(T_PTR, ttl, &data));
            }
        }
        *t.entry(name, T_PTR) = e;
    }
    t
}

/// The question of a plain query, read straight off the wire.
struct Question {
    /// Lowercase dotted name with the trailing dot.
    name: String,
    qtype: u16,
    /// End of the question in the request (copied verbatim into the reply).
    end: usize,
    /// The client's EDNS payload size, if it sent an OPT.
    edns: Option<u16>,
}

fn read_question(req: &[u8]) -> Option<Question> {
    if req.len() < 17 {
        return None;
    }
    let flags = u16::from_be_bytes([req[2], req[3]]);
    // QR=0, OPCODE=0, TC=0; one question, no answers or authority; at most an OPT.
    if flags & 0xFA00 != 0 || req[4..10] != [0, 1, 0, 0, 0, 0] || req[10] != 0 || req[11] > 1 {
        return None;
    }
    let mut name = String::with_capacity(64);
    let mut i = 12;
    loop {
        let len = *req.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 || name.len() + len + 1 > 254 {
            return None;
        }
        for &b in req.get(i..i + len)? {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => name.push(b as char),
                b'A'..=b'Z' => name.push(b.to_ascii_lowercase() as char),
                _ => return None,
            }
        }
        name.push('.');
        i += len;
    }
    if name.is_empty() {
        return None;
    }
    let qtype = u16::from_be_bytes([*req.get(i)?, *req.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*req.get(i + 2)?, *req.get(i + 3)?]);
    if qclass != CLASS_IN {
        return None;
    }
    let end = i + 4;
    let mut edns = None;
    if req[11] == 1 {
        // Root owner, type OPT, class = payload, version 0, then options we ignore.
        let opt = req.get(end..end + 11)?;
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != T_OPT || opt[6] != 0 {
            return None;
        }
        let rdlen = u16::from_be_bytes([opt[9], opt[10]]) as usize;
        if end + 11 + rdlen != req.len() {
            return None;
        }
        edns = Some(u16::from_be_bytes([opt[3], opt[4]]));
    } else if end != req.len() {
        return None;
    }
    Some(Question {
        name,
        qtype,
        end,
        edns,
    })
}

/// The reply for `req` if the fast path can give it, else `None`.
pub fn answer(req: &[u8], rs: &RecordSet, udp: bool, shuffle: u64) -> Option<Vec<u8>> {
    let t = &rs.fast;
    if t.apex.is_empty() || t.soa.is_empty() {
        return None;
    }
    let q = read_question(req)?;
    if q.name != t.apex && !q.name.ends_with(&t.suffix) {
        // Outside the domain only our own reverse names are ours, and only positively.
        if q.qtype != T_PTR || t.get(&q.name, T_PTR).is_none() {
            return None;
        }
    }
    let (rcode, found) = match t.get(&q.name, q.qtype) {
        Some(e) if !e.answers.is_empty() => (0u8, Some(e)),
        // The apex has SOA and NS, and ANY wants everything: the general path knows.
        _ if q.name == t.apex || matches!(q.qtype, 251 | 252 | 255) => return None,
        _ if rs.exists(&q.name) => (0, None),
        _ => (3, None),
    };
    let limit = match q.edns {
        Some(p) => (p as usize).clamp(512, OUR_PAYLOAD as usize),
        None => 512,
    };
    let out = reply(req, t, &q, rcode, found, shuffle, usize::MAX)?;
    if !udp || out.len() <= limit {
        return Some(out);
    }
    // Additional records may be left out without TC (RFC 2181 9); when the answers
    // themselves do not fit, as many as fit go out with TC set.
    reply(req, t, &q, rcode, found, shuffle, limit)
}

fn reply(
    req: &[u8],
    t: &FastTable,
    q: &Question,
    rcode: u8,
    found: Option<&Encoded>,
    shuffle: u64,
    limit: usize,
) -> Option<Vec<u8>> {
    // Unlimited (TCP, or a first try) carries the additionals; a size-limited retry not.
    let with_additionals = limit == usize::MAX;
    let opt_len = if q.edns.is_some() { 11 } else { 0 };
    let fixed = q.end + opt_len + if found.is_none() { t.soa.len() } else { 0 };
    // How many rotated answers fit under `limit`.
    let k = found.map_or(0, |e| (shuffle % e.answers.len().max(1) as u64) as usize);
    let mut an = 0;
    let mut size = fixed;
    if let Some(e) = found {
        for r in e.answers[k..].iter().chain(&e.answers[..k]) {
            if size + r.len() > limit {
                break;
            }
            size += r.len();
            an += 1;
        }
    }
    let truncated = found.is_some_and(|e| an < e.answers.len());
    let mut out = Vec::with_capacity(size.min(4096) + 64);
    out.extend_from_slice(&req[..2]);
    let tc = if truncated && t.truncate_bit { 0x02 } else { 0 };
    out.push(0x80 | 0x04 | tc | (req[2] & 0x01));
    out.push(if t.recurse { 0x80 } else { 0 } | (req[3] & 0x10) | rcode);
    let ad = match found {
        Some(e) if with_additionals && !truncated => e.additionals.len(),
        _ => 0,
    };
    let ns = usize::from(found.is_none());
    let ar = ad + usize::from(q.edns.is_some());
    for n in [1, an, ns, ar] {
        out.extend_from_slice(&u16::try_from(n).ok()?.to_be_bytes());
    }
    out.extend_from_slice(&req[12..q.end]);
    if let Some(e) = found {
        for r in e.answers[k..].iter().chain(&e.answers[..k]).take(an) {
            out.extend_from_slice(r);
        }
        if ad > 0 {
            for r in &e.additionals {
                out.extend_from_slice(r);
            }
        }
    } else {
        out.extend_from_slice(&t.soa);
    }
    if q.edns.is_some() {
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&OUR_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{Outcome, general};
    use crate::records::{build, tests::cluster_with_web};
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use proptest::prelude::*;

    fn cfg() -> Config {
        Config::default().validate().expect("valid")
    }

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 77;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        m.to_vec().expect("encodes")
    }

    /// The fast path says exactly what the general path says (same records, same codes).
    fn same(name: &str, t: RecordType, edns: bool) {
        let rs = build(&cluster_with_web(), &cfg(), 9, 1);
        let req = query(name, t, edns);
        let fast = answer(&req, &rs, true, 0).expect("fast path takes it");
        let Outcome::Reply(slow) = general(&req, &rs, &cfg(), true, 0) else {
            panic!("general path replies")
        };
        let (f, s) = (
            Message::from_vec(&fast).expect("fast parses"),
            Message::from_vec(&slow).expect("slow parses"),
        );
        assert_eq!(f.metadata, s.metadata, "{name} {t}");
        assert_eq!(f.queries, s.queries);
        assert_eq!(f.answers, s.answers, "{name} {t}");
        assert_eq!(f.authorities, s.authorities);
        assert_eq!(f.additionals, s.additionals);
        assert_eq!(f.edns.is_some(), s.edns.is_some());
    }

    #[test]
    fn fast_and_general_agree() {
        same("web.marathon.mesos.", RecordType::A, false);
        same("WEB.marathon.mesos.", RecordType::A, true);
        same("_web._tcp.marathon.mesos.", RecordType::SRV, true);
        same("nope.marathon.mesos.", RecordType::A, false);
        same("web.marathon.mesos.", RecordType::AAAA, true);
        same("11.0.0.10.in-addr.arpa.", RecordType::PTR, false);
    }

    #[test]
    fn big_answers_truncate_with_tc_on_the_fast_path() {
        let mut rs = RecordSet::default();
        let ips: Vec<IpAddr> = (0..200u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        rs.a.insert("big.marathon.mesos.".into(), ips);
        rs.serial = 1;
        rs.fast = encode(&rs, &cfg());
        let out = answer(
            &query("big.marathon.mesos.", RecordType::A, false),
            &rs,
            true,
            5,
        )
        .expect("fast path");
        assert!(out.len() <= 512);
        let m = Message::from_vec(&out).expect("parses");
        assert!(m.metadata.truncation);
        assert!(m.answers.len() > 20);
        let tcp = answer(
            &query("big.marathon.mesos.", RecordType::A, false),
            &rs,
            false,
            5,
        )
        .expect("fast path");
        assert_eq!(Message::from_vec(&tcp).expect("parses").answers.len(), 200);
    }

    #[test]
    fn leaves_the_rest_to_the_general_path() {
        let rs = build(&cluster_with_web(), &cfg(), 9, 1);
        assert!(answer(&query("mesos.", RecordType::SOA, false), &rs, true, 0).is_none());
        assert!(answer(&query("example.org.", RecordType::A, false), &rs, true, 0).is_none());
        assert!(
            answer(
                &query("web.marathon.mesos.", RecordType::ANY, false),
                &rs,
                true,
                0
            )
            .is_none()
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_the_id(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let rs = build(&cluster_with_web(), &cfg(), 9, 1);
            if let Some(out) = answer(&bytes, &rs, true, 1) {
                prop_assert_eq!(&out[..2], &bytes[..2]);
                prop_assert!(Message::from_vec(&out).is_ok());
            }
        }
    }
}
