//! localocean's DNS server, served in-process: real UDP and TCP queries on loopback against
//! zones that change under it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::caa::{Property, Value};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use localocean::model::{DomainRecord, Zone, ZoneSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct FakeZones(Mutex<Vec<Zone>>);

impl ZoneSource for FakeZones {
    fn zones(&self) -> Vec<Zone> {
        self.0.lock().unwrap().clone()
    }
}

fn record(id: u64, t: &str, name: &str, data: &str) -> DomainRecord {
    DomainRecord {
        id,
        record_type: t.into(),
        name: name.into(),
        data: data.into(),
        priority: None,
        port: None,
        ttl: 60,
        weight: None,
        flags: None,
        tag: None,
    }
}

fn caa(id: u64, tag: &str, data: &str) -> DomainRecord {
    DomainRecord {
        flags: Some(0),
        tag: Some(tag.into()),
        ..record(id, "CAA", "@", data)
    }
}

fn request(name: &str, t: RecordType) -> Vec<u8> {
    let mut msg = Message::new();
    msg.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    msg.to_bytes().unwrap()
}

/// Returns the decoded answer and its raw bytes (to check the exact wire encoding).
async fn query_udp(server: SocketAddr, name: &str, t: RecordType) -> (Message, Vec<u8>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&request(name, t), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("DNS answer over UDP within 5s")
        .unwrap();
    buf.truncate(n);
    (Message::from_bytes(&buf).unwrap(), buf)
}

async fn query_tcp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let req = request(name, t);
    stream.write_u16(req.len() as u16).await.unwrap();
    stream.write_all(&req).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .expect("DNS answer over TCP within 5s")
        .unwrap();
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_bytes(&buf).unwrap()
}

fn a_addrs(msg: &Message) -> Vec<String> {
    msg.answers()
        .iter()
        .filter_map(|r| match r.data() {
            Some(RData::A(a)) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn dns_serves_zones_from_the_source_live() {
    let long_txt = "k".repeat(300);
    let zones = Arc::new(FakeZones(Mutex::new(vec![Zone {
        name: "example.com".into(),
        ttl: 1800,
        records: vec![
            record(1, "A", "registry", "198.18.0.10"),
            record(2, "TXT", "_acme-challenge.registry", &long_txt),
            caa(3, "issue", "letsencrypt.org"),
            caa(4, "iodef", "mailto:security@example.com"),
            record(5, "CNAME", "www", "registry.example.com."),
        ],
    }])));
    let server = localocean::dns::serve(vec!["127.0.0.1:0".parse().unwrap()], zones.clone())
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    assert_ne!(addr.port(), 0);

    // A, authoritative, over UDP and TCP.
    let (a, _) = query_udp(addr, "registry.example.com.", RecordType::A).await;
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert!(a.authoritative(), "AA flag must be set");
    assert_eq!(a_addrs(&a), vec!["198.18.0.10"]);
    let a_tcp = query_tcp(addr, "REGISTRY.example.com.", RecordType::A).await;
    assert_eq!(a_addrs(&a_tcp), vec!["198.18.0.10"]);

    // CNAME inside the zone is followed.
    let (www, _) = query_udp(addr, "www.example.com.", RecordType::A).await;
    assert_eq!(www.answers()[0].record_type(), RecordType::CNAME);
    assert_eq!(a_addrs(&www), vec!["198.18.0.10"]);

    // TXT longer than 255 bytes comes as several strings that join back to the value.
    let (txt, _) = query_udp(
        addr,
        "_acme-challenge.registry.example.com.",
        RecordType::TXT,
    )
    .await;
    let Some(RData::TXT(t)) = txt.answers()[0].data() else {
        panic!("expected TXT, got {:?}", txt.answers());
    };
    let chunks: Vec<&[u8]> = t.txt_data().iter().map(|c| &c[..]).collect();
    assert_eq!(
        chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
        vec![255, 45]
    );
    assert_eq!(chunks.concat(), long_txt.as_bytes());

    // CAA: issue and iodef, issuer written exactly (no trailing dot) as a CA compares it.
    let (c, raw) = query_udp(addr, "example.com.", RecordType::CAA).await;
    assert_eq!(c.answers().len(), 2);
    assert!(contains(&raw, b"\x00\x05issueletsencrypt.org"));
    assert!(
        !contains(&raw, b"letsencrypt.org."),
        "issuer must not end in a dot"
    );
    let mut saw_issue = false;
    let mut saw_iodef = false;
    for r in c.answers() {
        let Some(RData::CAA(caa)) = r.data() else {
            panic!("expected CAA, got {r:?}");
        };
        match (caa.tag(), caa.value()) {
            (Property::Issue, Value::Issuer(Some(name), kv)) => {
                assert_eq!(name.to_ascii().trim_end_matches('.'), "letsencrypt.org");
                assert!(kv.is_empty());
                saw_issue = true;
            }
            (Property::Iodef, Value::Url(url)) => {
                assert_eq!(url.as_str(), "mailto:security@example.com");
                saw_iodef = true;
            }
            other => panic!("unexpected CAA {other:?}"),
        }
    }
    assert!(saw_issue && saw_iodef);

    // SOA and NS at the apex are synthesised.
    let (soa, _) = query_udp(addr, "example.com.", RecordType::SOA).await;
    let Some(RData::SOA(s)) = soa.answers()[0].data() else {
        panic!("expected SOA, got {:?}", soa.answers());
    };
    assert_eq!(s.mname().to_ascii(), "ns1.digitalocean.com.");
    assert_eq!(soa.answers()[0].ttl(), 1800);
    let (ns, _) = query_udp(addr, "example.com.", RecordType::NS).await;
    let mut names: Vec<String> = ns
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            Some(RData::NS(n)) => Some(n.0.to_ascii()),
            _ => None,
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "ns1.digitalocean.com.",
            "ns2.digitalocean.com.",
            "ns3.digitalocean.com."
        ]
    );

    // Unknown name inside the zone: NXDOMAIN with the SOA in authority.
    let (nx, _) = query_udp(addr, "missing.example.com.", RecordType::A).await;
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert!(nx.authoritative());
    assert!(nx.answers().is_empty());
    assert_eq!(nx.name_servers()[0].record_type(), RecordType::SOA);

    // Existing name, other type: NODATA (NOERROR, no answer, SOA in authority).
    let (nodata, _) = query_udp(addr, "registry.example.com.", RecordType::AAAA).await;
    assert_eq!(nodata.response_code(), ResponseCode::NoError);
    assert!(nodata.answers().is_empty());
    assert_eq!(nodata.name_servers()[0].record_type(), RecordType::SOA);

    // Outside every zone: REFUSED, not authoritative.
    let (refused, _) = query_udp(addr, "example.org.", RecordType::A).await;
    assert_eq!(refused.response_code(), ResponseCode::Refused);
    assert!(!refused.authoritative());

    // A change in the source is visible on the very next query.
    {
        let mut z = zones.0.lock().unwrap();
        z[0].records[0].data = "198.18.0.99".into();
        z[0].records.push(record(6, "A", "new", "198.18.0.7"));
    }
    let (a2, _) = query_udp(addr, "registry.example.com.", RecordType::A).await;
    assert_eq!(a_addrs(&a2), vec!["198.18.0.99"]);
    let (n2, _) = query_udp(addr, "new.example.com.", RecordType::A).await;
    assert_eq!(a_addrs(&n2), vec!["198.18.0.7"]);
    zones.0.lock().unwrap().clear();
    let (gone, _) = query_udp(addr, "registry.example.com.", RecordType::A).await;
    assert_eq!(gone.response_code(), ResponseCode::Refused);

    server.shutdown().await.unwrap();
}

/// The resolver follows an NS delegation out of the API's zones to the server it names (a
/// droplet's own DNS, here a second server on loopback), as Pebble's resolver must for a
/// challenge name delegated to the registry's droplet.
#[tokio::test]
async fn the_resolver_follows_a_delegation_to_the_delegated_server() {
    let zones = Arc::new(FakeZones(Mutex::new(vec![Zone {
        name: "example.com".into(),
        ttl: 1800,
        records: vec![
            record(1, "A", "registry", "127.0.0.1"),
            record(2, "NS", "_acme-challenge.registry", "registry.example.com."),
            // Hidden by the delegation.
            record(3, "TXT", "_acme-challenge.registry", "from-the-parent"),
            record(4, "CNAME", "alias", "_acme-challenge.registry.example.com."),
        ],
    }])));
    let droplet_zone = Arc::new(FakeZones(Mutex::new(vec![Zone {
        name: "_acme-challenge.registry.example.com".into(),
        ttl: 30,
        records: vec![record(1, "TXT", "@", "from-the-droplet")],
    }])));
    let droplet = localocean::dns::serve(vec!["127.0.0.1:0".parse().unwrap()], droplet_zone)
        .await
        .unwrap();
    let port = droplet.local_addrs()[0].port();
    let authoritative = localocean::dns::serve(vec!["127.0.0.1:0".parse().unwrap()], zones.clone())
        .await
        .unwrap();
    let resolver = localocean::resolver::serve(
        vec!["127.0.0.1:0".parse().unwrap()],
        zones.clone(),
        localocean::resolver::Upstream { port },
    )
    .await
    .unwrap();
    let addr = resolver.local_addrs()[0];
    let txt_of = |m: &Message| -> Vec<String> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                Some(RData::TXT(t)) => Some(t.to_string()),
                _ => None,
            })
            .collect()
    };

    // The parent refers; it does not answer for the delegated name.
    let (referral, _) = query_udp(
        authoritative.local_addrs()[0],
        "_acme-challenge.registry.example.com.",
        RecordType::TXT,
    )
    .await;
    assert!(referral.answers().is_empty(), "{referral:?}");
    assert!(!referral.authoritative());
    assert_eq!(referral.name_servers()[0].record_type(), RecordType::NS);

    // The resolver follows it, over UDP and TCP, and through a CNAME into it.
    let (m, _) = query_udp(
        addr,
        "_acme-challenge.registry.example.com.",
        RecordType::TXT,
    )
    .await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.recursion_available());
    assert_eq!(txt_of(&m), ["from-the-droplet"]);
    let m = query_tcp(
        addr,
        "_acme-challenge.registry.example.com.",
        RecordType::TXT,
    )
    .await;
    assert_eq!(txt_of(&m), ["from-the-droplet"]);
    let (m, _) = query_udp(addr, "alias.example.com.", RecordType::TXT).await;
    assert_eq!(m.answers()[0].record_type(), RecordType::CNAME);
    assert_eq!(txt_of(&m), ["from-the-droplet"]);
    // Names of the zones themselves, and names outside every zone.
    let (m, _) = query_udp(addr, "registry.example.com.", RecordType::A).await;
    assert_eq!(a_addrs(&m), ["127.0.0.1"]);
    let (m, _) = query_udp(addr, "nowhere.example.com.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let (m, _) = query_udp(addr, "example.org.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::Refused);

    // The delegated server gone: a failure, never the parent's hidden record.
    droplet.shutdown().await.unwrap();
    let (m, _) = query_udp(
        addr,
        "_acme-challenge.registry.example.com.",
        RecordType::TXT,
    )
    .await;
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert!(txt_of(&m).is_empty());
}
