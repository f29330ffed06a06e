//! Tests of the DNS server: the answer rules on a fixed zone, the packet entry point (opcodes,
//! malformed packets, EDNS, truncation, fuzzing) and the server over real loopback sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::dns::forward::{ForwardConfig, Forwarder};
use crate::dns::zone::{RecordData, Records, Zone};

const WEB: &str = "web.default.svc.shoal.home.arpa";
const NODE1: &str = "n1.nodes.shoal.home.arpa";
const LAN: &str = "192.168.1.50";
const POD: &str = "10.88.0.7";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn zone() -> Zone {
    let mut zone = Zone::empty("shoal.home.arpa", 5);
    zone.serial = 7;
    zone.ns_addresses = vec![ip("192.168.1.10"), ip("fd00::10")];
    let mut lan = Records::new();
    lan.insert(
        WEB.into(),
        vec![
            RecordData::Address(ip("192.168.1.10")),
            RecordData::Address(ip("192.168.1.11")),
            RecordData::Address(ip("fd00::11")),
            RecordData::Srv {
                priority: 0,
                weight: 10,
                port: 8080,
                target: NODE1.into(),
            },
        ],
    );
    lan.insert(
        NODE1.into(),
        vec![
            RecordData::Address(ip("192.168.1.10")),
            RecordData::Address(ip("fd00::10")),
        ],
    );
    lan.insert("idle.default.svc.shoal.home.arpa".into(), vec![]);
    let mut pods = Records::new();
    pods.insert(WEB.into(), vec![RecordData::Address(ip("10.88.0.1"))]);
    zone.lan = lan;
    zone.pods = pods;
    zone.pod_networks = vec![(ip("10.88.0.0"), 16)];
    zone
}

fn request(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

fn ask(name: &str, qtype: RecordType, from: &str) -> Message {
    answer(&zone(), ip(from), &request(name, qtype))
}

fn addresses(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn soa_of(records: &[Record]) -> &SOA {
    match records {
        [r] => match &r.data {
            RData::SOA(soa) => soa,
            other => panic!("not a SOA: {other:?}"),
        },
        other => panic!("not one record: {other:?}"),
    }
}

#[test]
fn a_records_from_the_lan_view() {
    let r = ask(&format!("{WEB}."), RecordType::A, LAN);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(r.metadata.message_type, MessageType::Response);
    assert_eq!(r.metadata.id, 0xbeef);
    assert!(r.metadata.recursion_desired);
    assert_eq!(
        r.queries,
        request(&format!("{WEB}."), RecordType::A).queries
    );
    assert_eq!(
        addresses(&r.answers),
        set(&["192.168.1.10", "192.168.1.11"])
    );
    assert!(r.answers.iter().all(|a| a.ttl == 5));
    assert!(r.authorities.is_empty() && r.additionals.is_empty());
}

#[test]
fn aaaa_records() {
    let r = ask(&format!("{WEB}."), RecordType::AAAA, LAN);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&r.answers), set(&["fd00::11"]));
    assert!(
        r.answers
            .iter()
            .all(|a| a.record_type() == RecordType::AAAA)
    );
}

#[test]
fn srv_records_with_target_addresses_in_additional() {
    let r = ask(&format!("{WEB}."), RecordType::SRV, LAN);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let [srv] = r.answers.as_slice() else {
        panic!("{:?}", r.answers)
    };
    let RData::SRV(srv) = &srv.data else {
        panic!("{srv:?}")
    };
    assert_eq!((srv.priority, srv.weight, srv.port), (0, 10, 8080));
    assert_eq!(srv.target, Name::from_ascii(format!("{NODE1}.")).unwrap());
    assert_eq!(
        addresses(&r.additionals),
        set(&["192.168.1.10", "fd00::10"])
    );
    assert!(
        r.additionals
            .iter()
            .all(|a| a.name == Name::from_ascii(format!("{NODE1}.")).unwrap())
    );
}

#[test]
fn soa_at_the_apex() {
    let r = ask("shoal.home.arpa.", RecordType::SOA, LAN);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    let soa = soa_of(&r.answers);
    assert_eq!(soa.mname, Name::from_ascii("ns.shoal.home.arpa.").unwrap());
    assert_eq!(
        soa.rname,
        Name::from_ascii("hostmaster.shoal.home.arpa.").unwrap()
    );
    assert_eq!(soa.serial, 7);
    assert_eq!(soa.minimum, 5);
    assert!(soa.refresh > 0 && soa.retry > 0 && soa.expire > soa.refresh);
}

#[test]
fn ns_at_the_apex_with_glue_and_the_ns_name_answers() {
    let r = ask("shoal.home.arpa.", RecordType::NS, LAN);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let [ns] = r.answers.as_slice() else {
        panic!("{:?}", r.answers)
    };
    assert_eq!(
        ns.data,
        RData::NS(hickory_proto::rr::rdata::NS(
            Name::from_ascii("ns.shoal.home.arpa.").unwrap()
        ))
    );
    assert_eq!(
        addresses(&r.additionals),
        set(&["192.168.1.10", "fd00::10"])
    );

    let r = ask("ns.shoal.home.arpa.", RecordType::A, LAN);
    assert_eq!(addresses(&r.answers), set(&["192.168.1.10"]));
    let r = ask("ns.shoal.home.arpa.", RecordType::AAAA, POD);
    assert_eq!(addresses(&r.answers), set(&["fd00::10"]));
}

#[test]
fn any_returns_every_record() {
    let r = ask(&format!("{WEB}."), RecordType::ANY, LAN);
    assert_eq!(r.answers.len(), 4);
    let r = ask("shoal.home.arpa.", RecordType::ANY, LAN);
    let types: BTreeSet<RecordType> = r.answers.iter().map(|a| a.record_type()).collect();
    assert_eq!(types, [RecordType::SOA, RecordType::NS].into());
}

#[test]
fn nodata_for_names_that_exist_without_that_type() {
    for (name, qtype) in [
        (format!("{WEB}."), RecordType::TXT),
        // An empty non-terminal.
        ("default.svc.shoal.home.arpa.".to_string(), RecordType::A),
        ("svc.shoal.home.arpa.".to_string(), RecordType::A),
        // A name with an empty record list.
        (
            "idle.default.svc.shoal.home.arpa.".to_string(),
            RecordType::A,
        ),
        // The apex.
        ("shoal.home.arpa.".to_string(), RecordType::A),
        (format!("{NODE1}."), RecordType::SRV),
    ] {
        let r = ask(&name, qtype, LAN);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(r.metadata.authoritative, "{name}");
        assert!(r.answers.is_empty(), "{name}");
        assert_eq!(soa_of(&r.authorities).serial, 7, "{name}");
        assert_eq!(
            r.authorities[0].name,
            Name::from_ascii("shoal.home.arpa.").unwrap()
        );
    }
}

#[test]
fn nxdomain_for_names_that_do_not_exist() {
    for name in [
        "nope.default.svc.shoal.home.arpa.",
        "x.web.default.svc.shoal.home.arpa.",
        "fault.svc.shoal.home.arpa.",
        "a\\.b.shoal.home.arpa.",
    ] {
        let r = ask(name, RecordType::A, LAN);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(r.metadata.authoritative);
        assert!(r.answers.is_empty());
        assert_eq!(soa_of(&r.authorities).minimum, 5);
    }
}

#[test]
fn names_are_case_insensitive_and_the_question_is_echoed() {
    let name = "WEB.Default.SVC.Shoal.Home.ARPA.";
    let r = ask(name, RecordType::A, LAN);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        addresses(&r.answers),
        set(&["192.168.1.10", "192.168.1.11"])
    );
    assert_eq!(r.queries[0].name().to_ascii(), name);
    assert_eq!(r.answers[0].name.to_ascii(), name);
    let r = ask("SHOAL.home.arpa.", RecordType::SOA, LAN);
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn pods_get_the_pod_view() {
    let r = ask(&format!("{WEB}."), RecordType::A, POD);
    assert_eq!(addresses(&r.answers), set(&["10.88.0.1"]));
    // Names only in the LAN view do not exist for pods.
    let r = ask(&format!("{NODE1}."), RecordType::A, POD);
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // An IPv4-mapped source is a pod too (a dual-stack socket).
    let mapped: IpAddr = "::ffff:10.88.0.7".parse().unwrap();
    let r = answer(
        &zone(),
        mapped.to_canonical(),
        &request(&format!("{WEB}."), RecordType::A),
    );
    assert_eq!(addresses(&r.answers), set(&["10.88.0.1"]));
}

#[test]
fn refused_outside_the_zone_other_classes_and_transfers() {
    let r = ask("example.com.", RecordType::A, LAN);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!r.metadata.authoritative);
    let mut chaos = request(&format!("{WEB}."), RecordType::A);
    chaos.queries[0].set_query_class(DNSClass::CH);
    let r = answer(&zone(), ip(LAN), &chaos);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let r = ask("shoal.home.arpa.", RecordType::AXFR, LAN);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let mut two = request(&format!("{WEB}."), RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("shoal.home.arpa.").unwrap(),
        RecordType::SOA,
    ));
    let r = answer(&zone(), ip(LAN), &two);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
}

// ---- The packet entry point ----

fn handler_for(zone: Zone, upstreams: Vec<SocketAddr>) -> (Handler, watch::Sender<Arc<Zone>>) {
    let (tx, rx) = watch::channel(Arc::new(zone));
    let forwarder = Arc::new(Forwarder::new(ForwardConfig::new(upstreams)));
    (Handler::new(rx, forwarder), tx)
}

fn from(s: &str) -> SocketAddr {
    SocketAddr::new(ip(s), 40000)
}

async fn exchange(handler: &Handler, m: &Message, transport: Transport) -> Message {
    let bytes = handler
        .handle_packet(&m.to_vec().unwrap(), from(LAN), transport)
        .await
        .expect("an answer");
    Message::from_vec(&bytes).unwrap()
}

#[tokio::test]
async fn packets_other_opcodes_malformed_and_responses() {
    let (h, _tx) = handler_for(zone(), vec![]);
    let mut update = request(&format!("{WEB}."), RecordType::A);
    update.metadata.op_code = OpCode::Update;
    let r = exchange(&h, &update, Transport::Udp).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(r.metadata.id, 0xbeef);

    let mut two = request(&format!("{WEB}."), RecordType::A);
    two.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
    let r = exchange(&h, &two, Transport::Udp).await;
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);

    // A header that promises a question that is not there.
    let mut bytes = request(&format!("{WEB}."), RecordType::A).to_vec().unwrap();
    bytes.truncate(20);
    let r = h
        .handle_packet(&bytes, from(LAN), Transport::Udp)
        .await
        .unwrap();
    let r = Message::from_vec(&r).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(r.metadata.id, 0xbeef);

    // Too short for a header, or a response: nothing is sent.
    assert!(
        h.handle_packet(&bytes[..11], from(LAN), Transport::Udp)
            .await
            .is_none()
    );
    let mut response = request(&format!("{WEB}."), RecordType::A);
    response.metadata.message_type = MessageType::Response;
    let bytes = response.to_vec().unwrap();
    assert!(
        h.handle_packet(&bytes, from(LAN), Transport::Udp)
            .await
            .is_none()
    );

    // Outside the zone without upstreams: REFUSED at once.
    let r = exchange(&h, &request("example.com.", RecordType::A), Transport::Udp).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    // The zone's answers say whether recursion is available.
    let r = exchange(
        &h,
        &request(&format!("{WEB}."), RecordType::A),
        Transport::Udp,
    )
    .await;
    assert!(!r.metadata.recursion_available);
    assert!(r.metadata.authoritative);
}

#[tokio::test]
async fn edns_is_answered_and_unknown_versions_get_badvers() {
    let (h, _tx) = handler_for(zone(), vec![]);
    let mut m = request(&format!("{WEB}."), RecordType::A);
    let r = exchange(&h, &m, Transport::Udp).await;
    assert!(
        r.edns.is_none(),
        "no EDNS in the request: none in the response"
    );
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    m.set_edns(edns.clone());
    let r = exchange(&h, &m, Transport::Udp).await;
    assert_eq!(r.edns.as_ref().map(|e| e.version()), Some(0));
    assert_eq!(r.answers.len(), 2);

    edns.set_version(1);
    m.set_edns(edns);
    let r = exchange(&h, &m, Transport::Udp).await;
    // BADVERS is 16 (shared with BADSIG, which hickory decodes it as).
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert!(r.edns.is_some());
}

#[tokio::test]
async fn large_udp_answers_are_truncated_and_tcp_carries_them_whole() {
    let mut big = zone();
    let many: Vec<RecordData> = (0..60u8)
        .map(|i| RecordData::Address(IpAddr::from([10, 1, 0, i])))
        .collect();
    big.lan.insert(WEB.into(), many);
    let (h, _tx) = handler_for(big, vec![]);
    let m = request(&format!("{WEB}."), RecordType::A);
    let bytes = h
        .handle_packet(&m.to_vec().unwrap(), from(LAN), Transport::Udp)
        .await
        .unwrap();
    assert!(bytes.len() <= 512);
    let r = Message::from_vec(&bytes).unwrap();
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    assert_eq!(r.queries, m.queries);

    let r = exchange(&h, &m, Transport::Tcp).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 60);

    // A client that offers 4096 bytes gets all 60 (under 3 KB) over UDP.
    let mut m = m;
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    m.set_edns(edns);
    let r = exchange(&h, &m, Transport::Udp).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 60);
}

#[tokio::test]
async fn the_handler_reads_the_latest_zone() {
    let (h, tx) = handler_for(zone(), vec![]);
    let name = "new.default.svc.shoal.home.arpa.";
    let r = exchange(&h, &request(name, RecordType::A), Transport::Udp).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let mut z = zone();
    z.serial = 8;
    z.lan.insert(
        name.trim_end_matches('.').into(),
        vec![RecordData::Address(ip("192.168.1.12"))],
    );
    tx.send(Arc::new(z)).unwrap();
    let r = exchange(&h, &request(name, RecordType::A), Transport::Udp).await;
    assert_eq!(addresses(&r.answers), set(&["192.168.1.12"]));
}

#[tokio::test]
async fn a_repeated_query_is_answered_alike_but_for_its_id_and_per_view() {
    let (h, _tx) = handler_for(zone(), vec![]);
    let mut m = request(&format!("{WEB}."), RecordType::A);
    let ask = |m: &Message, source: &str| {
        let h = h.clone();
        let bytes = m.to_vec().unwrap();
        let source = from(source);
        async move {
            h.handle_packet(&bytes, source, Transport::Udp)
                .await
                .unwrap()
        }
    };
    let first = ask(&m, LAN).await;
    m.metadata.id = 0x1234;
    let second = ask(&m, LAN).await;
    // The same bytes but the id (the second comes from the cache).
    assert_eq!(second[..2], [0x12, 0x34]);
    assert_eq!(first[..2], [0xbe, 0xef]);
    assert_eq!(first[2..], second[2..]);
    let parsed = Message::from_vec(&second).unwrap();
    assert_eq!(parsed.metadata.id, 0x1234);
    assert_eq!(
        addresses(&parsed.answers),
        set(&["192.168.1.10", "192.168.1.11"])
    );
    // The same query from a pod gets the pods' view, cached apart.
    for _ in 0..2 {
        let pod = Message::from_vec(&ask(&m, "10.88.0.5").await).unwrap();
        assert_eq!(addresses(&pod.answers), set(&["10.88.0.1"]));
    }
    // The question's case is echoed as asked, also when answered from the cache.
    let upper = request(&format!("{}.", WEB.to_ascii_uppercase()), RecordType::A);
    for _ in 0..2 {
        let r = Message::from_vec(&ask(&upper, LAN).await).unwrap();
        assert_eq!(
            r.queries[0].name().to_ascii(),
            format!("{}.", WEB.to_ascii_uppercase())
        );
        assert_eq!(r.answers.len(), 2);
    }
}

/// SplitMix64: a seeded generator, so that a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Valid queries to mutate: names in and out of the zone, many types, with and without EDNS.
fn seeds() -> Vec<Vec<u8>> {
    let names = [
        format!("{WEB}."),
        format!("{NODE1}."),
        "shoal.home.arpa.".to_string(),
        "ns.shoal.home.arpa.".to_string(),
        "default.svc.shoal.home.arpa.".to_string(),
        "nope.shoal.home.arpa.".to_string(),
        "WEB.default.svc.SHOAL.home.arpa.".to_string(),
        "example.com.".to_string(),
        ".".to_string(),
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::SOA,
        RecordType::NS,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::AXFR,
    ];
    let mut out = Vec::new();
    for name in &names {
        for qtype in types {
            let mut m = request(name, qtype);
            out.push(m.to_vec().unwrap());
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.set_dnssec_ok(true);
            m.set_edns(edns);
            out.push(m.to_vec().unwrap());
        }
    }
    out
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut p = seed.to_vec();
    match rng.below(7) {
        0 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(p.len());
                p[i] ^= 1 << rng.below(8);
            }
        }
        1 => p.truncate(rng.below(p.len() + 1)),
        2 => {
            for _ in 0..=rng.below(64) {
                p.push(rng.byte());
            }
        }
        3 => {
            // Random header counts: compression pointers and counts are where parsers break.
            let i = 4 + 2 * rng.below(4);
            p[i] = rng.byte();
            p[i + 1] = rng.byte();
        }
        4 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(p.len());
                p[i] = rng.byte();
            }
        }
        5 => {
            // A compression pointer to anywhere, in place of the name.
            if p.len() > 13 {
                p[12] = 0xC0 | (rng.byte() & 0x3F);
                p[13] = rng.byte();
            }
        }
        _ => {
            let len = rng.below(600);
            p = (0..len).map(|_| rng.byte()).collect();
        }
    }
    p
}

#[tokio::test]
async fn fuzz_the_packet_entry_point() {
    let (h, _tx) = handler_for(zone(), vec![]);
    let seeds = seeds();
    let mut rng = Rng(0x05ee_0a11);
    let (mut answered, mut dropped) = (0, 0);
    for i in 0..20_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let packet = mutate(&mut rng, seed);
        for transport in [Transport::Udp, Transport::Tcp] {
            match h.handle_packet(&packet, from(LAN), transport).await {
                Some(answer) => {
                    answered += 1;
                    let parsed = Message::from_vec(&answer);
                    assert!(
                        parsed.is_ok(),
                        "case {i}: the answer to {packet:02x?} does not parse: {parsed:?}"
                    );
                    let parsed = parsed.unwrap();
                    assert_eq!(parsed.metadata.message_type, MessageType::Response);
                    assert_eq!(&answer[..2], &packet[..2], "case {i}: the id is echoed");
                    if transport == Transport::Udp {
                        assert!(answer.len() <= 4096, "case {i}");
                    }
                }
                None => dropped += 1,
            }
        }
    }
    // The mutations reach both outcomes, so the test exercises parsing and answering.
    assert!(answered > 10_000 && dropped > 100, "{answered} {dropped}");
}

// ---- Over real sockets ----

/// A fake upstream on 127.0.0.1 that answers every A query with 192.0.2.1 and counts queries.
async fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            seen.fetch_add(1, Ordering::SeqCst);
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.queries = q.queries.clone();
            r.metadata.recursion_available = true;
            r.answers.push(Record::from_rdata(
                q.queries[0].name().clone(),
                120,
                RData::A(A::new(192, 0, 2, 1)),
            ));
            socket.send_to(&r.to_vec().unwrap(), peer).await.unwrap();
        }
    });
    (addr, count)
}

async fn udp_query(server: SocketAddr, m: &Message) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn tcp_query(stream: &mut TcpStream, m: &Message) -> Message {
    let bytes = m.to_vec().unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

#[tokio::test]
async fn serves_over_udp_and_tcp_on_loopback() {
    let (upstream, count) = fake_upstream().await;
    let config = DnsConfig::new("127.0.0.1:0".parse().unwrap(), vec![upstream]);
    let server = DnsServer::bind(config).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let (_tx, rx) = watch::channel(Arc::new(zone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(rx, shutdown.clone()));

    let r = udp_query(addr, &request(&format!("{WEB}."), RecordType::A)).await;
    assert_eq!(r.metadata.id, 0xbeef);
    assert!(r.metadata.authoritative);
    assert!(r.metadata.recursion_available);
    assert_eq!(
        addresses(&r.answers),
        set(&["192.168.1.10", "192.168.1.11"])
    );

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let r = tcp_query(&mut stream, &request(&format!("{WEB}."), RecordType::SRV)).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(
        addresses(&r.additionals),
        set(&["192.168.1.10", "fd00::10"])
    );
    // A second query on the same connection.
    let r = tcp_query(
        &mut stream,
        &request("nope.shoal.home.arpa.", RecordType::A),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);

    // Other names go upstream, then come from the cache.
    let r = udp_query(addr, &request("www.example.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&r.answers), set(&["192.0.2.1"]));
    assert!(!r.metadata.authoritative);
    let r = tcp_query(&mut stream, &request("www.example.", RecordType::A)).await;
    assert_eq!(addresses(&r.answers), set(&["192.0.2.1"]));
    assert_eq!(count.load(Ordering::SeqCst), 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test]
async fn serve_reports_an_address_it_cannot_bind() {
    let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let (_tx, rx) = watch::channel(Arc::new(zone()));
    let err = serve(DnsConfig::new(addr, vec![]), rx, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&addr.to_string()) && err.contains("--dns-listen"),
        "{err}"
    );
}

/// A port free for both UDP and TCP on `ip` (bound, then released).
async fn free_port(ip: &str) -> u16 {
    loop {
        let udp = UdpSocket::bind((self::ip(ip), 0)).await.unwrap();
        let port = udp.local_addr().unwrap().port();
        if tokio::net::TcpListener::bind((self::ip(ip), port))
            .await
            .is_ok()
        {
            return port;
        }
    }
}

/// A query over TCP to `addr`, or `None` when nothing answers there.
async fn tcp_ask(addr: SocketAddr, name: &str) -> Option<Message> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let m = request(name, RecordType::A);
    tokio::time::timeout(Duration::from_secs(2), tcp_query(&mut stream, &m))
        .await
        .ok()
}

/// Polls `f` until it holds, for up to ten seconds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_pods_listener_follows_the_pod_networks_gateway() {
    // Loopback stands in for the pod network: its clients get the pods view.
    let mut z = zone();
    z.pod_networks = vec![(ip("127.0.0.0"), 8)];
    let (_zone_tx, zone_rx) = watch::channel(Arc::new(z));
    let port = free_port("127.0.0.3").await;
    let mut config = DnsConfig::new("127.0.0.1:0".parse().unwrap(), vec![]);
    config.pod_port = port;
    let forwarder = Arc::new(Forwarder::new(config.forward.clone()));
    let (network_tx, network_rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_pods(
        config,
        zone_rx,
        network_rx,
        forwarder,
        shutdown.clone(),
    ));
    let network = |gateway: &str| crate::runtime::PodNetwork {
        gateway: ip(gateway),
        subnet: crate::runtime::Subnet::parse("127.0.0.0/8").unwrap(),
        ip_range: None,
    };
    let first = SocketAddr::new(ip("127.0.0.3"), port);
    let second = SocketAddr::new(ip("127.0.0.4"), port);
    let web = format!("{WEB}.");
    // No network yet: nothing listens.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tcp_ask(first, &web).await.is_none());

    // The gateway appears: the pods view is answered there, over TCP and UDP.
    network_tx.send_replace(Some(network("127.0.0.3")));
    eventually("the gateway answers", || async {
        tcp_ask(first, &web)
            .await
            .is_some_and(|r| addresses(&r.answers) == set(&["10.88.0.1"]))
    })
    .await;
    let r = udp_query(first, &request(&web, RecordType::A)).await;
    assert_eq!(addresses(&r.answers), set(&["10.88.0.1"]));

    // The gateway moves to an address another socket holds: the old listener closes, the
    // new one is bound as soon as the address is free.
    let blocker = UdpSocket::bind(second).await.unwrap();
    network_tx.send_replace(Some(network("127.0.0.4")));
    eventually("the old gateway closes", || async {
        tcp_ask(first, &web).await.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tcp_ask(second, &web).await.is_none());
    drop(blocker);
    eventually("the new gateway answers after a retry", || async {
        tcp_ask(second, &web).await.is_some()
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve_pods stops")
        .unwrap();
}

/// Two nodes whose upstreams are each other: a name outside the cluster is refused at once
/// (the query comes back carrying the first node's tag) rather than passed around until the
/// deadline. A chain that does not loop (a node forwarding to a node forwarding to a real
/// resolver) still answers.
#[tokio::test]
async fn a_forwarding_loop_between_two_nodes_is_refused() {
    let ports = (free_port("127.0.0.1").await, free_port("127.0.0.1").await);
    let a: SocketAddr = format!("127.0.0.1:{}", ports.0).parse().unwrap();
    let b: SocketAddr = format!("127.0.0.1:{}", ports.1).parse().unwrap();
    let shutdown = CancellationToken::new();
    let (_tx, rx) = watch::channel(Arc::new(zone()));
    for (listen, upstream) in [(a, b), (b, a)] {
        let server = DnsServer::bind(DnsConfig::new(listen, vec![upstream]))
            .await
            .unwrap();
        tokio::spawn(server.run(rx.clone(), shutdown.clone()));
    }
    let r = udp_query(a, &request("www.example.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{r:?}");

    let (upstream, count) = fake_upstream().await;
    let c_port = free_port("127.0.0.1").await;
    let c: SocketAddr = format!("127.0.0.1:{c_port}").parse().unwrap();
    let d_port = free_port("127.0.0.1").await;
    let d: SocketAddr = format!("127.0.0.1:{d_port}").parse().unwrap();
    for (listen, up) in [(c, upstream), (d, c)] {
        let server = DnsServer::bind(DnsConfig::new(listen, vec![up]))
            .await
            .unwrap();
        tokio::spawn(server.run(rx.clone(), shutdown.clone()));
    }
    let r = udp_query(d, &request("www.example.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r:?}");
    assert_eq!(addresses(&r.answers), set(&["192.0.2.1"]));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    shutdown.cancel();
}

#[test]
fn the_via_option_lists_the_forwarders_and_marks_loops() {
    use crate::dns::forward::{MAX_VIA, VIA_OPTION, loops, via_of};
    use hickory_proto::rr::rdata::opt::EdnsOption;
    let mut m = request("www.example.", RecordType::A);
    assert!(via_of(&m).is_empty());
    let mut edns = Edns::new();
    edns.options_mut().insert(EdnsOption::Unknown(
        VIA_OPTION,
        vec![0, 0, 0, 7, 0, 0, 0, 9, 1],
    ));
    m.set_edns(edns);
    assert_eq!(via_of(&m), vec![7, 9]);
    assert!(loops(&[7, 9], 9));
    assert!(!loops(&[7, 9], 3));
    assert!(loops(&[1; MAX_VIA], 3));
}

/// The server answers only the networks it serves: a source outside them gets REFUSED, one
/// inside gets its answer.
#[tokio::test]
async fn sources_outside_the_served_networks_are_refused() {
    use crate::dns::guard::{Guard, parse_network};
    let (handler, _tx) = handler_for(zone(), vec![]);
    let handler = handler.with_guard(Guard::new(vec![parse_network("192.168.1.0/24").unwrap()]));
    let q = request(&format!("{WEB}."), RecordType::A);
    let bytes = q.to_vec().unwrap();
    let inside = handler
        .handle_packet(&bytes, from("192.168.1.50"), Transport::Udp)
        .await
        .unwrap();
    let inside = Message::from_vec(&inside).unwrap();
    assert_eq!(inside.metadata.response_code, ResponseCode::NoError);
    assert!(!inside.answers.is_empty());
    let outside = handler
        .handle_packet(&bytes, from("203.0.113.9"), Transport::Udp)
        .await
        .unwrap();
    let outside = Message::from_vec(&outside).unwrap();
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    assert!(outside.answers.is_empty());
}
