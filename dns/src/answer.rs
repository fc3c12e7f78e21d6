//! One query in, one decision out: an answer from the record set, or "forward this".
//! Pure and synchronous so the UDP loop never awaits on the hot path.

use crate::config::Config;
use crate::records::RecordSet;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::net::IpAddr;

/// What to do with a packet.
#[derive(Debug)]
pub enum Outcome {
    Reply(Vec<u8>),
    /// Not ours: ask the upstreams for `zone` (`None` = the default ones).
    Forward {
        zone: Option<String>,
    },
    /// Not worth an answer (a response, or too short to carry an id).
    Drop,
}

/// Largest UDP answer we send even when a client offers more (the DNS flag day value).
const MAX_UDP: usize = 1232;
/// Names longer than this are refused before any lookup.
const MAX_NAME: usize = 255;

fn error_reply(req: &[u8], code: ResponseCode) -> Outcome {
    if req.len() < 12 {
        return Outcome::Drop;
    }
    // Header only: id and opcode copied, QR set, counts zero. Works for packets that do
    // not parse at all.
    let mut h = [0u8; 12];
    h[0] = req[0];
    h[1] = req[1];
    h[2] = 0x80 | (req[2] & 0x78) | (req[2] & 0x01);
    h[3] = u16::from(code) as u8 & 0x0f;
    Outcome::Reply(h.to_vec())
}

fn fqdn(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok().map(|mut n| {
        n.set_fqdn(true);
        n
    })
}

/// Decides the answer for the raw packet `req`. `udp` limits the size (with TC);
/// `shuffle` rotates multi-record answers.
pub fn answer(req: &[u8], rs: &RecordSet, cfg: &Config, udp: bool, shuffle: u64) -> Outcome {
    if let Some(bytes) = crate::fast::answer(req, rs, udp, shuffle) {
        return Outcome::Reply(bytes);
    }
    general(req, rs, cfg, udp, shuffle)
}

/// Every query the fast path leaves: parses and encodes with hickory-proto.
pub fn general(req: &[u8], rs: &RecordSet, cfg: &Config, udp: bool, shuffle: u64) -> Outcome {
    let msg = match Message::from_vec(req) {
        Ok(m) => m,
        Err(_) => return error_reply(req, ResponseCode::FormErr),
    };
    if msg.metadata.message_type != MessageType::Query {
        return Outcome::Drop;
    }
    let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.checking_disabled = msg.metadata.checking_disabled;
    let limit = match &msg.edns {
        Some(e) => (e.max_payload() as usize).clamp(512, MAX_UDP),
        None => 512,
    };
    if let Some(e) = &msg.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP as u16);
        if e.version() > 0 {
            ours.set_rcode_high(ResponseCode::BADVERS.high());
            resp.metadata.response_code = ResponseCode::BADVERS;
            resp.set_edns(ours);
            return encode(resp, udp, limit, cfg);
        }
        resp.set_edns(ours);
    }
    if msg.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return encode(resp, udp, limit, cfg);
    }
    if msg.queries.len() != 1 {
        resp.metadata.response_code = ResponseCode::FormErr;
        return encode(resp, udp, limit, cfg);
    }
    let q = msg.queries[0].clone();
    resp.add_query(q.clone());
    let name = q.name().to_lowercase().to_ascii();
    let name = if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    };
    if name.len() > MAX_NAME {
        resp.metadata.response_code = ResponseCode::FormErr;
        return encode(resp, udp, limit, cfg);
    }
    let apex = format!("{}.", cfg.domain);
    let in_domain = name == apex || name.ends_with(&format!(".{apex}"));
    let is_ptr = rs.ptr.contains_key(&name);
    if !in_domain && !is_ptr {
        if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
            resp.metadata.response_code = ResponseCode::Refused;
            return encode(resp, udp, limit, cfg);
        }
        let zone = cfg
            .zone_resolvers
            .keys()
            .filter(|z| name == format!("{z}.") || name.ends_with(&format!(".{z}.")))
            .max_by_key(|z| z.len())
            .cloned();
        return Outcome::Forward { zone };
    }
    resp.metadata.authoritative = true;
    resp.metadata.recursion_available = cfg.recurse_on;
    if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
        resp.metadata.response_code = ResponseCode::Refused;
        resp.metadata.authoritative = false;
        return encode(resp, udp, limit, cfg);
    }
    if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
        // Zone transfers are served as JSON on /v1/axfr, not over DNS.
        resp.metadata.response_code = ResponseCode::Refused;
        return encode(resp, udp, limit, cfg);
    }
    let ttl = cfg.ttl;
    let qname = q.name().clone();
    let qt = q.query_type();
    let mut answers: Vec<Record> = Vec::new();
    let mut additionals: Vec<Record> = Vec::new();
    let want = |t: RecordType| qt == t || qt == RecordType::ANY;
    if let Some(ips) = rs.a.get(&name) {
        for ip in ips {
            match ip {
                IpAddr::V4(v4) if want(RecordType::A) => {
                    answers.push(Record::from_rdata(qname.clone(), ttl, RData::A(A(*v4))))
                }
                IpAddr::V6(v6) if want(RecordType::AAAA) => answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::AAAA(AAAA(*v6)),
                )),
                _ => {}
            }
        }
    }
    if want(RecordType::SRV)
        && let Some(srvs) = rs.srv.get(&name)
    {
        for s in srvs {
            let Some(target) = fqdn(&s.target) else {
                continue;
            };
            answers.push(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::SRV(SRV::new(0, cfg.srv_weight, s.port, target.clone())),
            ));
            if let Some(ips) = rs.a.get(&s.target) {
                for ip in ips {
                    let rd = match ip {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    let r = Record::from_rdata(target.clone(), ttl, rd);
                    if !additionals.contains(&r) {
                        additionals.push(r);
                    }
                }
            }
        }
    }
    if want(RecordType::PTR)
        && let Some(targets) = rs.ptr.get(&name)
    {
        for t in targets {
            if let Some(t) = fqdn(t) {
                answers.push(Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(t))));
            }
        }
    }
    if name == apex {
        if want(RecordType::SOA) {
            answers.push(soa(rs, cfg));
        }
        if want(RecordType::NS)
            && let Some(ns) = fqdn(&cfg.soa_mname)
        {
            answers.push(Record::from_rdata(qname.clone(), ttl, RData::NS(NS(ns))));
        }
    }
    if answers.len() > 1 {
        let k = (shuffle % answers.len() as u64) as usize;
        answers.rotate_left(k);
    }
    let exists = name == apex || rs.exists(&name);
    if answers.is_empty() {
        resp.metadata.response_code = if exists {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        if in_domain {
            resp.add_authority(soa(rs, cfg));
        }
    }
    resp.add_answers(answers);
    resp.add_additionals(additionals);
    encode(resp, udp, limit, cfg)
}

fn soa(rs: &RecordSet, cfg: &Config) -> Record {
    let apex = fqdn(&cfg.domain).unwrap_or_else(Name::root);
    let m = fqdn(&cfg.soa_mname).unwrap_or_else(Name::root);
    let r = fqdn(&cfg.soa_rname).unwrap_or_else(Name::root);
    Record::from_rdata(
        apex,
        cfg.ttl,
        RData::SOA(SOA::new(
            m,
            r,
            rs.serial,
            cfg.soa_refresh as i32,
            cfg.soa_retry as i32,
            cfg.soa_expire as i32,
            cfg.soa_minttl,
        )),
    )
}

/// Encodes, fitting UDP answers into `limit`: additionals go first, then answers from the
/// end, and TC tells the client to ask again over TCP for the rest.
fn encode(mut resp: Message, udp: bool, limit: usize, cfg: &Config) -> Outcome {
    let Ok(mut bytes) = resp.to_vec() else {
        return Outcome::Drop;
    };
    if !udp || bytes.len() <= limit {
        return Outcome::Reply(bytes);
    }
    // Additional records go first, and without TC (RFC 2181 9).
    resp.additionals.clear();
    if let Ok(b) = resp.to_vec()
        && b.len() <= limit
    {
        return Outcome::Reply(b);
    }
    resp.metadata.truncation = cfg.set_truncate_bit;
    while let Ok(b) = resp.to_vec() {
        bytes = b;
        if bytes.len() <= limit || resp.answers.is_empty() {
            break;
        }
        // Drop a quarter at a time: O(log n) encodes for thousands of records.
        let keep = resp.answers.len() - resp.answers.len().div_ceil(4);
        resp.answers.truncate(keep);
    }
    Outcome::Reply(bytes)
}

/// A reply saying the upstreams failed (`SERVFAIL`), for a request that did parse.
pub fn servfail(req: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(req).ok()?;
    let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = ResponseCode::ServFail;
    resp.add_queries(msg.queries);
    resp.to_vec().ok()
}

/// A reply refusing the request (no upstream configured).
pub fn refused(req: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(req).ok()?;
    let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.response_code = ResponseCode::Refused;
    resp.add_queries(msg.queries);
    resp.to_vec().ok()
}

#[cfg(test)]
mod tests;
