//! Integration tests of localocean's DNS server (real UDP/TCP queries on loopback) and of
//! Spaces on a real Garage child process (real S3 requests signed with the issued keys).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::caa::{Property, Value};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use localocean::garage::{Garage, GarageOptions};
use localocean::model::{DomainRecord, Zone, ZoneSource};
use localocean::spaces::{Grant, IssuedKey, SpacesBackend};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------- DNS

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

// ---------------------------------------------------------------- Spaces

const REGION: &str = "us-east-1";

struct S3 {
    http: reqwest::Client,
    endpoint: url::Url,
}

impl S3 {
    fn new(addr: SocketAddr) -> Self {
        S3 {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            endpoint: format!("http://{addr}").parse().unwrap(),
        }
    }

    fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            name.to_string(),
            REGION,
        )
        .unwrap()
    }

    async fn create_bucket(&self, key: &IssuedKey, name: &str) -> u16 {
        let b = self.bucket(name);
        let url = b.create_bucket(&creds(key)).sign(Duration::from_secs(60));
        let resp = self.http.put(url).send().await.unwrap();
        let status = resp.status().as_u16();
        if status != 200 {
            eprintln!(
                "CreateBucket {name}: {status} {}",
                resp.text().await.unwrap()
            );
        }
        status
    }

    async fn put(&self, key: &IssuedKey, bucket: &str, object: &str, body: &str) -> u16 {
        let b = self.bucket(bucket);
        let c = creds(key);
        let url = b.put_object(Some(&c), object).sign(Duration::from_secs(60));
        let body = body.to_string();
        self.http
            .put(url)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn get(&self, key: &IssuedKey, bucket: &str, object: &str) -> (u16, String) {
        let b = self.bucket(bucket);
        let c = creds(key);
        let url = b.get_object(Some(&c), object).sign(Duration::from_secs(60));
        let resp = self.http.get(url).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn list(&self, key: &IssuedKey, bucket: &str) -> u16 {
        let b = self.bucket(bucket);
        let c = creds(key);
        let url = b.list_objects_v2(Some(&c)).sign(Duration::from_secs(60));
        self.http.get(url).send().await.unwrap().status().as_u16()
    }
}

fn creds(key: &IssuedKey) -> Credentials {
    Credentials::new(key.access_key.clone(), key.secret_key.clone())
}

fn grant(bucket: &str, permission: &str) -> Grant {
    Grant {
        bucket: bucket.into(),
        permission: permission.into(),
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[tokio::test]
async fn spaces_keys_grant_real_s3_access_on_garage() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(dir.path(), &GarageOptions::default())
        .await
        .expect("garage starts (run scripts/setup if it is missing)");
    let pid = garage.pid();
    assert!(alive(pid));
    let pid_file = localocean::garage::pid_file(dir.path());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );

    let s3 = S3::new(garage.s3_endpoint());
    let admin = garage.admin_s3_key().await.unwrap();
    // Asking again returns the same credentials, not a new key.
    assert_eq!(
        garage.admin_s3_key().await.unwrap().access_key,
        admin.access_key
    );
    assert_eq!(s3.create_bucket(&admin, "bucket-one").await, 200);
    assert_eq!(s3.create_bucket(&admin, "bucket-two").await, 200);
    assert_eq!(
        s3.put(&admin, "bucket-two", "secret.txt", "b2 data").await,
        200
    );

    let r = garage
        .create_key("reader", &[grant("bucket-one", "read")])
        .await
        .unwrap();
    let rw = garage
        .create_key("writer", &[grant("bucket-one", "readwrite")])
        .await
        .unwrap();

    // readwrite: PUT and GET in b1.
    assert_eq!(s3.put(&rw, "bucket-one", "hello.txt", "hello").await, 200);
    assert_eq!(
        s3.get(&rw, "bucket-one", "hello.txt").await,
        (200, "hello".to_string())
    );
    // read: GET and LIST, but no PUT.
    assert_eq!(
        s3.get(&r, "bucket-one", "hello.txt").await,
        (200, "hello".to_string())
    );
    assert_eq!(s3.list(&r, "bucket-one").await, 200);
    assert_eq!(s3.put(&r, "bucket-one", "nope.txt", "x").await, 403);
    // Neither reaches b2, nor can they create buckets.
    for k in [&r, &rw] {
        assert_eq!(s3.get(k, "bucket-two", "secret.txt").await.0, 403);
        assert_eq!(s3.put(k, "bucket-two", "x.txt", "x").await, 403);
        assert_eq!(s3.list(k, "bucket-two").await, 403);
        assert_eq!(s3.create_bucket(k, "bucket-by-scoped").await, 403);
    }
    // The admin key reaches buckets it did not create... after they exist.
    assert_eq!(s3.get(&admin, "bucket-one", "hello.txt").await.0, 200);

    // update_key replaces grants: the reader now writes b2 and loses b1.
    garage
        .update_key(&r.access_key, "reader", &[grant("bucket-two", "readwrite")])
        .await
        .unwrap();
    assert_eq!(s3.put(&r, "bucket-two", "r.txt", "from r").await, 200);
    assert_eq!(s3.get(&r, "bucket-one", "hello.txt").await.0, 403);

    // A grant on a bucket that does not exist yet takes effect once the bucket appears.
    let later = garage
        .create_key("later", &[grant("bucket-three", "read")])
        .await
        .unwrap();
    assert_eq!(s3.create_bucket(&admin, "bucket-three").await, 200);
    assert_eq!(s3.put(&admin, "bucket-three", "o.txt", "three").await, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = s3.get(&later, "bucket-three", "o.txt").await;
        if status == 200 {
            assert_eq!(body, "three");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grant on b3 never applied (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s3.put(&later, "bucket-three", "no.txt", "x").await, 403);

    // delete_key revokes; deleting again is fine.
    garage.delete_key(&rw.access_key).await.unwrap();
    assert_eq!(s3.get(&rw, "bucket-one", "hello.txt").await.0, 403);
    garage.delete_key(&rw.access_key).await.unwrap();

    // The forwarder exposes the same S3 API on another address.
    let exposed = garage.expose("127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert_ne!(exposed, garage.s3_endpoint());
    let via = S3::new(exposed);
    assert_eq!(
        via.get(&admin, "bucket-one", "hello.txt").await,
        (200, "hello".to_string())
    );

    garage.stop().await;
    assert!(!alive(pid), "garage ({pid}) still running after stop");
    assert!(!pid_file.exists());

    // A restart over the same directory keeps objects, keys and grants.
    let garage = Garage::start(dir.path(), &GarageOptions::default())
        .await
        .unwrap();
    let s3 = S3::new(garage.s3_endpoint());
    assert_eq!(
        garage.admin_s3_key().await.unwrap().access_key,
        admin.access_key
    );
    assert_eq!(
        s3.get(&admin, "bucket-one", "hello.txt").await,
        (200, "hello".to_string())
    );
    assert_eq!(
        s3.get(&r, "bucket-two", "r.txt").await,
        (200, "from r".to_string())
    );
    assert_eq!(s3.get(&r, "bucket-one", "hello.txt").await.0, 403);
    let pid = garage.pid();
    garage.stop().await;
    assert!(!alive(pid));
}

#[tokio::test]
async fn kill_stale_never_signals_a_process_that_is_not_our_garage() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = other.id().unwrap();
    // As if the pid of a crashed Garage had been recycled by an unrelated process.
    std::fs::write(localocean::garage::pid_file(dir.path()), format!("{pid}\n")).unwrap();
    let killed = localocean::garage::kill_stale(dir.path()).await.unwrap();
    assert!(!killed);
    assert!(alive(pid), "an unrelated process was killed");
    assert!(!localocean::garage::pid_file(dir.path()).exists());
    other.kill().await.unwrap();
}

#[tokio::test]
async fn start_stops_a_garage_left_running_by_a_crashed_run() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = Garage::start(dir.path(), &GarageOptions::default())
        .await
        .unwrap();
    let old_pid = crashed.pid();
    // A crash: no stop, no drop, the process and its pid file stay behind.
    std::mem::forget(crashed);
    assert!(alive_not_zombie(old_pid));

    let garage = Garage::start(dir.path(), &GarageOptions::default())
        .await
        .unwrap();
    assert!(
        !alive_not_zombie(old_pid),
        "the stale garage ({old_pid}) survived"
    );
    assert_ne!(garage.pid(), old_pid);
    let pid = garage.pid();
    garage.stop().await;
    assert!(!alive(pid));
}

/// The forgotten child of this test process stays a zombie once killed (nobody reaps it).
fn alive_not_zombie(pid: u32) -> bool {
    alive(pid)
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
            .unwrap_or(true)
}
