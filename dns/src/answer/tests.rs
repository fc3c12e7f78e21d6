use super::*;
use crate::records::{build, tests::cluster_with_web};
use hickory_proto::op::Query;
use proptest::prelude::*;

fn cfg() -> Config {
    Config::default().validate().expect("valid")
}

fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encodes")
}

fn reply(o: Outcome) -> Message {
    match o {
        Outcome::Reply(b) => Message::from_vec(&b).expect("reply parses"),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn a_and_srv_answers_are_authoritative() {
    let rs = build(&cluster_with_web(), &cfg(), 7, 1);
    let r = reply(answer(
        &query("Web.Marathon.Mesos.", RecordType::A, None),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert_eq!(r.metadata.id, 4242);
    assert!(r.metadata.authoritative);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 2);
    let r = reply(answer(
        &query("_web._tcp.marathon.mesos.", RecordType::SRV, None),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert_eq!(r.answers.len(), 3);
    assert!(
        !r.additionals.is_empty(),
        "SRV targets' addresses ride along"
    );
}

#[test]
fn nxdomain_and_nodata_carry_the_soa() {
    let rs = build(&cluster_with_web(), &cfg(), 7, 1);
    let r = reply(answer(
        &query("nope.marathon.mesos.", RecordType::A, None),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(r.authorities[0].data, RData::SOA(ref s) if s.serial == 7));
    let r = reply(answer(
        &query("web.marathon.mesos.", RecordType::AAAA, None),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.len(), 1);
    let r = reply(answer(
        &query("marathon.mesos.", RecordType::A, None),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NoError,
        "empty non-terminal"
    );
    let r = reply(answer(
        &query("mesos.", RecordType::SOA, None),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert_eq!(r.answers.len(), 1);
    let r = reply(answer(
        &query("mesos.", RecordType::NS, None),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn ptr_answers_for_agents() {
    let rs = build(&cluster_with_web(), &cfg(), 7, 1);
    let r = reply(answer(
        &query("11.0.0.10.in-addr.arpa.", RecordType::PTR, None),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert_eq!(r.answers.len(), 1);
    assert!(matches!(
        answer(
            &query("99.0.0.10.in-addr.arpa.", RecordType::PTR, None),
            &rs,
            &cfg(),
            true,
            0
        ),
        Outcome::Forward { .. }
    ));
}

#[test]
fn other_names_are_forwarded_by_zone() {
    let mut c = cfg();
    c.zone_resolvers
        .insert("corp.example".into(), vec!["10.1.1.1".into()]);
    let rs = RecordSet::default();
    match answer(
        &query("a.b.corp.example.", RecordType::A, None),
        &rs,
        &c,
        true,
        0,
    ) {
        Outcome::Forward { zone } => assert_eq!(zone.as_deref(), Some("corp.example")),
        o => panic!("{o:?}"),
    }
    assert!(matches!(
        answer(
            &query("example.org.", RecordType::A, None),
            &rs,
            &c,
            true,
            0
        ),
        Outcome::Forward { zone: None }
    ));
}

#[test]
fn big_answers_truncate_over_udp_and_not_over_tcp() {
    let mut rs = RecordSet::default();
    let ips: Vec<IpAddr> = (0..200u32)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    rs.a.insert("big.marathon.mesos.".into(), ips);
    let r = reply(answer(
        &query("big.marathon.mesos.", RecordType::A, None),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert!(r.metadata.truncation);
    assert!(r.to_vec().expect("encodes").len() <= 512);
    let r = reply(answer(
        &query("big.marathon.mesos.", RecordType::A, Some(1232)),
        &rs,
        &cfg(),
        true,
        0,
    ));
    assert!(r.metadata.truncation && r.answers.len() > 20);
    let r = reply(answer(
        &query("big.marathon.mesos.", RecordType::A, None),
        &rs,
        &cfg(),
        false,
        0,
    ));
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 200);
}

#[test]
fn answers_rotate() {
    let rs = build(&cluster_with_web(), &cfg(), 7, 1);
    let first = |k| {
        reply(answer(
            &query("web.marathon.mesos.", RecordType::A, None),
            &rs,
            &cfg(),
            true,
            k,
        ))
        .answers[0]
            .clone()
    };
    assert_ne!(first(0), first(1));
}

#[test]
fn bad_packets_get_rfc_errors() {
    let rs = RecordSet::default();
    // Garbage with a header: FORMERR echoing the id.
    let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xff; 7]);
    match answer(&junk, &rs, &cfg(), true, 0) {
        Outcome::Reply(b) => {
            assert_eq!(&b[..2], &[0x12, 0x34]);
            assert_eq!(b[3] & 0x0f, 1, "FORMERR");
        }
        o => panic!("{o:?}"),
    }
    assert!(matches!(
        answer(&[1, 2, 3], &rs, &cfg(), true, 0),
        Outcome::Drop
    ));
    // Another class inside our domain: REFUSED.
    let mut m =
        Message::from_vec(&query("web.marathon.mesos.", RecordType::A, None)).expect("parses");
    m.queries[0].set_query_class(DNSClass::CH);
    let r = reply(answer(&m.to_vec().expect("encodes"), &rs, &cfg(), true, 0));
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    // Non-query opcode: NOTIMP.
    let mut m =
        Message::from_vec(&query("web.marathon.mesos.", RecordType::A, None)).expect("parses");
    m.metadata.op_code = OpCode::Update;
    let r = reply(answer(&m.to_vec().expect("encodes"), &rs, &cfg(), true, 0));
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    // EDNS version 1: BADVERS.
    let mut m = Message::from_vec(&query("web.marathon.mesos.", RecordType::A, Some(1232)))
        .expect("parses");
    if let Some(e) = m.edns.as_mut() {
        e.set_version(1);
    }
    let r = reply(answer(&m.to_vec().expect("encodes"), &rs, &cfg(), true, 0));
    assert_eq!(u16::from(r.metadata.response_code), 16, "BADVERS");
}

proptest! {
    /// Whatever arrives, the answerer returns without panicking, and every reply it makes
    /// parses and carries the request's id.
    #[test]
    fn any_packet_gets_a_parseable_reply_or_nothing(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let rs = build(&cluster_with_web(), &cfg(), 1, 1);
        if let Outcome::Reply(b) = answer(&bytes, &rs, &cfg(), true, 3) {
            prop_assert!(b.len() >= 12);
            prop_assert_eq!(&b[..2], &bytes[..2]);
        }
    }

    #[test]
    fn any_task_name_builds_valid_records(name in ".{0,120}", fw in ".{0,80}") {
        let mut c = cluster_with_web();
        c.apply(&crate::records::tests::framework_added("fwx", &fw));
        c.apply(&crate::records::tests::task_added("fwx", "t.1", &name, "m-S0", "TASK_RUNNING", &[(31000, 31000)]));
        let rs = build(&c, &cfg(), 1, 1);
        for n in rs.a.keys().chain(rs.srv.keys()) {
            prop_assert!(Name::from_ascii(n).is_ok(), "{n}");
            prop_assert!(n.split('.').all(|l| l.len() <= 63), "{n}");
        }
    }
}
