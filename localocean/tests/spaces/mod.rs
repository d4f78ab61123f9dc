//! Spaces on a real Garage child process (needs the Garage that scripts/setup installs): keys
//! with DigitalOcean's grants, checked with real S3 requests signed with the issued keys;
//! Garage's pid file, stop, restart, recovery from a crashed run, and `spaces` faults.

use std::net::SocketAddr;
use std::time::Duration;

use localocean::faults::{FaultSpec, Faults};
use localocean::garage::{Garage, GarageOptions};
use localocean::process::alive;
use localocean::spaces::{Grant, IssuedKey, SpacesBackend};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

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

#[tokio::test]
async fn spaces_keys_grant_real_s3_access_on_garage() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(dir.path(), &GarageOptions::default())
        .await
        .expect("garage starts (run scripts/setup if it is missing)");
    let pid = garage.pid();
    assert!(alive(pid as i32));
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

    // A grant on a bucket that does not exist yet applies once the bucket appears: at once,
    // as on Spaces (the bucket's name is global and its grants set before CreateBucket
    // answers; converged later, a DeleteBucket in between removed only a name).
    let later = garage
        .create_key("later", &[grant("bucket-three", "read")])
        .await
        .unwrap();
    assert_eq!(s3.create_bucket(&admin, "bucket-three").await, 200);
    assert_eq!(s3.put(&admin, "bucket-three", "o.txt", "three").await, 200);
    assert_eq!(
        s3.get(&later, "bucket-three", "o.txt").await,
        (200, "three".to_string()),
        "the grant on a new bucket applies with its creation"
    );
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
    // A large upload that asks for `100 Continue` first (as the registry's S3 client does
    // above 2 MB) goes through the forwarder and its answer comes back.
    let big = "x".repeat(3 << 20);
    let url = via
        .bucket("bucket-one")
        .put_object(Some(&creds(&admin)), "big.bin")
        .sign(Duration::from_secs(60));
    let resp = via
        .http
        .put(url)
        .header("expect", "100-continue")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    let (status, got) = via.get(&admin, "bucket-one", "big.bin").await;
    assert_eq!((status, got.len()), (200, big.len()));

    // Spaces faults answer on every forwarder, on connections already open too: S3's XML
    // error for `count` requests, or for a share of them; then Garage answers again.
    let faults = std::sync::Arc::new(Faults::new());
    garage.set_faults(faults.clone());
    faults
        .arm(FaultSpec::Spaces {
            method: Some("GET".into()),
            path_prefix: "/bucket-one/".into(),
            count: 2,
            status: 503,
            share: None,
            retry_after: Some(2),
        })
        .unwrap();
    for _ in 0..2 {
        let b = via.bucket("bucket-one");
        let url = b
            .get_object(Some(&creds(&admin)), "hello.txt")
            .sign(Duration::from_secs(60));
        let resp = via.http.get(url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers()["retry-after"], "2");
        let body = resp.text().await.unwrap();
        assert!(
            body.contains(
                "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
            ),
            "{body}"
        );
    }
    assert_eq!(
        via.get(&admin, "bucket-one", "hello.txt").await,
        (200, "hello".to_string())
    );
    faults
        .arm(FaultSpec::Spaces {
            method: None,
            path_prefix: "/".into(),
            count: 100,
            status: 500,
            share: Some(0.5),
            retry_after: None,
        })
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(s3.put(&admin, "bucket-one", "busy.txt", "busy").await);
    }
    assert_eq!(seen, [200, 500, 200, 500]);
    let (status, body) = via.get(&admin, "bucket-one", "busy.txt").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        via.get(&admin, "bucket-one", "busy.txt").await.0,
        500,
        "the share goes on"
    );
    let fired: u32 = faults.list().iter().map(|f| f.fired).sum();
    assert_eq!(fired, 2 + 3);
    faults.clear();

    garage.stop().await;
    assert!(
        !alive(pid as i32),
        "garage ({pid}) still running after stop"
    );
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
    assert!(!alive(pid as i32));
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
    assert!(alive(pid as i32), "an unrelated process was killed");
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
    assert!(alive(old_pid as i32));

    let garage = Garage::start(dir.path(), &GarageOptions::default())
        .await
        .unwrap();
    assert!(
        !alive(old_pid as i32),
        "the stale garage ({old_pid}) survived"
    );
    assert_ne!(garage.pid(), old_pid);
    let pid = garage.pid();
    garage.stop().await;
    assert!(!alive(pid as i32));
}
