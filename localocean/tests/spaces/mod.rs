//! Spaces on a real Garage child process (needs the Garage that scripts/setup installs): keys
//! with DigitalOcean's grants, checked with real S3 requests signed with the issued keys;
//! Garage's pid file, stop, restart, recovery from a crashed run, and `spaces` faults; S3
//! bucket versioning as the forwarders add it (versions, delete markers, lifecycle expiry).

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

/// One S3 request to the forwarder, presigned with rusty-s3, with an optional body.
async fn send(
    s3: &S3,
    method: reqwest::Method,
    url: url::Url,
    body: Option<String>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = s3.http.request(method, url);
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// A bucket subresource request (`?versioning`, `?versions`, `?lifecycle`): GET and DELETE
/// signed as their bucket-level actions, PUT as a CreateBucket, each with the subresource.
fn bucket_sub_url(s3: &S3, key: &IssuedKey, bucket: &str, method: &str, sub: &str) -> url::Url {
    let b = s3.bucket(bucket);
    let c = creds(key);
    let ttl = Duration::from_secs(60);
    match method {
        "PUT" => {
            let mut a = b.create_bucket(&c);
            a.query_mut().insert(sub.to_string(), "");
            a.sign(ttl)
        }
        "DELETE" => {
            let mut a = b.delete_bucket(&c);
            a.query_mut().insert(sub.to_string(), "");
            a.sign(ttl)
        }
        _ => {
            let mut a = b.list_objects_v2(Some(&c));
            a.query_mut().remove("list-type");
            a.query_mut().remove("encoding-type");
            a.query_mut().insert(sub.to_string(), "");
            a.sign(ttl)
        }
    }
}

fn version_url(
    s3: &S3,
    key: &IssuedKey,
    bucket: &str,
    object: &str,
    method: &str,
    id: &str,
) -> url::Url {
    let b = s3.bucket(bucket);
    let c = creds(key);
    let ttl = Duration::from_secs(60);
    if method == "DELETE" {
        let mut a = b.delete_object(Some(&c), object);
        a.query_mut().insert("versionId", id.to_string());
        a.sign(ttl)
    } else {
        let mut a = b.get_object(Some(&c), object);
        a.query_mut().insert("versionId", id.to_string());
        a.sign(ttl)
    }
}

/// The (key, version id, is latest, is delete marker) entries of a ListVersionsResult.
fn versions_of(xml: &str) -> Vec<(String, String, bool, bool)> {
    let text = |s: &str, tag: &str| {
        let open = format!("<{tag}>");
        let start = s.find(&open).unwrap() + open.len();
        let end = s[start..].find(&format!("</{tag}>")).unwrap() + start;
        s[start..end].to_string()
    };
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(['<']).and_then(|_| {
        let v = rest.find("<Version>");
        let m = rest.find("<DeleteMarker>");
        match (v, m) {
            (Some(v), Some(m)) => Some(v.min(m)),
            (a, b) => a.or(b),
        }
    }) {
        rest = &rest[i..];
        let marker = rest.starts_with("<DeleteMarker>");
        let end_tag = if marker {
            "</DeleteMarker>"
        } else {
            "</Version>"
        };
        let end = rest.find(end_tag).unwrap();
        let entry = &rest[..end];
        out.push((
            text(entry, "Key"),
            text(entry, "VersionId"),
            text(entry, "IsLatest") == "true",
            marker,
        ));
        rest = &rest[end..];
    }
    out
}

const ENABLE: &str = "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>Enabled</Status></VersioningConfiguration>";
const NONCURRENT_RULE: &str = "<LifecycleConfiguration><Rule><ID>old-versions</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status><NoncurrentVersionExpiration><NoncurrentDays>7</NoncurrentDays></NoncurrentVersionExpiration></Rule></LifecycleConfiguration>";

#[tokio::test]
async fn spaces_versioning_on_garage() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(dir.path(), &GarageOptions::default())
        .await
        .expect("garage starts (run scripts/setup if it is missing)");
    let s3 = S3::new(garage.s3_endpoint());
    let admin = garage.admin_s3_key().await.unwrap();
    let bucket = "versioned-bucket";
    assert_eq!(s3.create_bucket(&admin, bucket).await, 200);
    let rw = garage
        .create_key("ver-rw", &[grant(bucket, "readwrite")])
        .await
        .unwrap();
    let stranger = garage
        .create_key("ver-other", &[grant("another-bucket", "readwrite")])
        .await
        .unwrap();
    // Written before versioning: its null version.
    assert_eq!(s3.put(&rw, bucket, "pre.txt", "before").await, 200);

    let url = bucket_sub_url(&s3, &rw, bucket, "GET", "versioning");
    let (status, _, body) = send(&s3, Method::GET, url, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("<Status>"), "never set: {body}");
    let url = bucket_sub_url(&s3, &rw, bucket, "PUT", "versioning");
    let (status, _, body) = send(&s3, Method::PUT, url, Some(ENABLE.into())).await;
    assert_eq!(status, 200, "{body}");
    assert!(garage.version_store_exists(bucket).await.unwrap());
    let url = bucket_sub_url(&s3, &rw, bucket, "GET", "versioning");
    let (_, _, body) = send(&s3, Method::GET, url, None).await;
    assert!(body.contains("<Status>Enabled</Status>"), "{body}");

    assert_eq!(s3.put(&rw, bucket, "k.txt", "a").await, 200);
    assert_eq!(s3.put(&rw, bucket, "k.txt", "b").await, 200);
    let url = s3
        .bucket(bucket)
        .delete_object(Some(&creds(&rw)), "k.txt")
        .sign(Duration::from_secs(60));
    let (status, headers, _) = send(&s3, Method::DELETE, url, None).await;
    assert_eq!(status, 204);
    assert_eq!(headers["x-amz-delete-marker"], "true");
    assert_eq!(s3.get(&rw, bucket, "k.txt").await.0, 404);

    let url = bucket_sub_url(&s3, &rw, bucket, "GET", "versions");
    let (status, _, body) = send(&s3, Method::GET, url, None).await;
    assert_eq!(status, 200, "{body}");
    let listed = versions_of(&body);
    let k: Vec<_> = listed.iter().filter(|v| v.0 == "k.txt").collect();
    assert_eq!(k.len(), 3, "{body}");
    assert!(k[0].2 && k[0].3, "the latest is a delete marker: {body}");
    assert!(!k[1].3 && !k[2].3 && !k[1].2);
    let (marker, second, first) = (k[0].1.clone(), k[1].1.clone(), k[2].1.clone());
    assert!(
        listed.contains(&("pre.txt".into(), "null".into(), true, false)),
        "{body}"
    );

    // Old versions by id; a delete marker answers 405.
    let url = version_url(&s3, &rw, bucket, "k.txt", "GET", &first);
    let (status, headers, body) = send(&s3, Method::GET, url, None).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    assert_eq!(headers["x-amz-version-id"], first.as_str());
    let url = version_url(&s3, &rw, bucket, "k.txt", "GET", &marker);
    let (status, headers, _) = send(&s3, Method::GET, url, None).await;
    assert_eq!(status, 405);
    assert_eq!(headers["x-amz-delete-marker"], "true");
    // HEAD answers the same, without a body.
    let (vb, rw_creds) = (s3.bucket(bucket), creds(&rw));
    let head = |id: &str| {
        let mut a = vb.head_object(Some(&rw_creds), "k.txt");
        a.query_mut().insert("versionId", id.to_string());
        a.sign(Duration::from_secs(60))
    };
    let (status, headers, _) = send(&s3, Method::HEAD, head(&first), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], "1");
    assert_eq!(headers["x-amz-version-id"], first.as_str());
    let (status, headers, _) = send(&s3, Method::HEAD, head(&marker), None).await;
    assert_eq!(status, 405);
    assert_eq!(headers["x-amz-delete-marker"], "true");
    let url = version_url(&s3, &rw, bucket, "k.txt", "GET", "no-such-version");
    let (status, _, body) = send(&s3, Method::GET, url, None).await;
    assert_eq!(status, 404);
    assert!(body.contains("<Code>NoSuchVersion</Code>"), "{body}");

    // A key without a grant on the bucket reaches none of it.
    let url = bucket_sub_url(&s3, &stranger, bucket, "GET", "versions");
    assert_eq!(send(&s3, Method::GET, url, None).await.0, 403);
    let url = version_url(&s3, &stranger, bucket, "k.txt", "GET", &first);
    assert_eq!(send(&s3, Method::GET, url, None).await.0, 403);
    // A tampered signature is refused.
    let mut url = version_url(&s3, &rw, bucket, "k.txt", "GET", &first);
    let tampered = url.as_str().replace(&first, &second);
    url = tampered.parse().unwrap();
    let (status, _, body) = send(&s3, Method::GET, url, None).await;
    assert_eq!(status, 403);
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    // Removing the delete marker brings back the version under it.
    let url = version_url(&s3, &rw, bucket, "k.txt", "DELETE", &marker);
    let (status, headers, _) = send(&s3, Method::DELETE, url, None).await;
    assert_eq!(status, 204);
    assert_eq!(headers["x-amz-delete-marker"], "true");
    assert_eq!(s3.get(&rw, bucket, "k.txt").await, (200, "b".to_string()));

    // The header form of SigV4 works as well as presigned URLs.
    let (status, body) = header_signed_get(&s3, &rw, &format!("/{bucket}?versions")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(versions_of(&body).len(), 3, "{body}");
    // ListBuckets never shows a version store, not even to the full-access key.
    let (status, body) = header_signed_get(&s3, &admin, "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(bucket) && !body.contains("v.."), "{body}");

    // A lifecycle rule on noncurrent versions is kept and read back.
    let url = bucket_sub_url(&s3, &rw, bucket, "PUT", "lifecycle");
    let (status, _, body) = send(&s3, Method::PUT, url, Some(NONCURRENT_RULE.into())).await;
    assert_eq!(status, 200, "{body}");
    let url = bucket_sub_url(&s3, &rw, bucket, "GET", "lifecycle");
    let (status, _, body) = send(&s3, Method::GET, url, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<NoncurrentDays>7</NoncurrentDays>"),
        "{body}"
    );

    // State and versions survive a restart.
    garage.stop().await;
    let garage = Garage::start(dir.path(), &GarageOptions::default())
        .await
        .unwrap();
    let s3 = S3::new(garage.s3_endpoint());
    let url = bucket_sub_url(&s3, &rw, bucket, "GET", "versioning");
    let (_, _, body) = send(&s3, Method::GET, url, None).await;
    assert!(body.contains("<Status>Enabled</Status>"), "{body}");
    let url = version_url(&s3, &rw, bucket, "k.txt", "GET", &first);
    assert_eq!(send(&s3, Method::GET, url, None).await.2, "a");

    // Noncurrent versions go once they are old enough; current ones stay.
    let week = Duration::from_secs(6 * 86_400);
    assert_eq!(
        garage
            .sweep_versions(std::time::SystemTime::now() + week)
            .await
            .unwrap(),
        0
    );
    let later = std::time::SystemTime::now() + Duration::from_secs(30 * 86_400);
    assert_eq!(garage.sweep_versions(later).await.unwrap(), 1);
    let url = bucket_sub_url(&s3, &rw, bucket, "GET", "versions");
    let (_, _, body) = send(&s3, Method::GET, url, None).await;
    let left = versions_of(&body);
    assert_eq!(
        left.iter()
            .map(|v| (v.0.as_str(), v.1.as_str()))
            .collect::<Vec<_>>(),
        [("k.txt", second.as_str()), ("pre.txt", "null")],
        "{body}"
    );
    assert_eq!(s3.get(&rw, bucket, "k.txt").await, (200, "b".to_string()));

    // The bucket cannot go while versions remain; once each is deleted by id, it can.
    let url = s3
        .bucket(bucket)
        .delete_bucket(&creds(&admin))
        .sign(Duration::from_secs(60));
    let (status, _, body) = send(&s3, Method::DELETE, url, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("<Code>BucketNotEmpty</Code>"), "{body}");
    for (key, id, _, _) in left {
        let url = version_url(&s3, &rw, bucket, &key, "DELETE", &id);
        assert_eq!(send(&s3, Method::DELETE, url, None).await.0, 204);
    }
    let url = bucket_sub_url(&s3, &rw, bucket, "GET", "versions");
    let (_, _, body) = send(&s3, Method::GET, url, None).await;
    assert!(versions_of(&body).is_empty(), "{body}");
    let url = s3
        .bucket(bucket)
        .delete_bucket(&creds(&admin))
        .sign(Duration::from_secs(60));
    let (status, _, body) = send(&s3, Method::DELETE, url, None).await;
    assert_eq!(status, 204, "{body}");
    assert!(!garage.version_store_exists(bucket).await.unwrap());

    // An unversioned bucket is Garage's as before.
    assert_eq!(s3.create_bucket(&admin, "plain-bucket").await, 200);
    assert_eq!(s3.put(&admin, "plain-bucket", "p.txt", "p").await, 200);
    let url = s3
        .bucket("plain-bucket")
        .get_object(Some(&creds(&admin)), "p.txt")
        .sign(Duration::from_secs(60));
    let (status, headers, _) = send(&s3, Method::GET, url, None).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-amz-version-id"));
    garage.stop().await;
}

/// A GET signed in the `Authorization` header form (as AWS SDKs sign).
async fn header_signed_get(s3: &S3, key: &IssuedKey, path_and_query: &str) -> (u16, String) {
    use sha2::Digest as _;
    let host = s3.endpoint.authority().to_string();
    let uri: hyper::Uri = path_and_query.parse().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let mut headers = hyper::HeaderMap::new();
    headers.insert("host", host.parse().unwrap());
    headers.insert("x-amz-date", amz_date.parse().unwrap());
    headers.insert(
        "x-amz-content-sha256",
        hex::encode(sha2::Sha256::digest(b"")).parse().unwrap(),
    );
    let auth = localocean::garage::sigv4::authorization(
        &hyper::Method::GET,
        &uri,
        &headers,
        &key.access_key,
        &key.secret_key,
        REGION,
    )
    .unwrap();
    let mut req = s3
        .http
        .get(format!(
            "{}{}",
            s3.endpoint.as_str().trim_end_matches('/'),
            path_and_query
        ))
        .header("authorization", auth);
    for (k, v) in &headers {
        if k != "host" {
            req = req.header(k.as_str(), v.to_str().unwrap());
        }
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn put_versioned(s3: &S3, key: &IssuedKey, bucket: &str, object: &str, body: &str) -> String {
    let url = s3
        .bucket(bucket)
        .put_object(Some(&creds(key)), object)
        .sign(Duration::from_secs(60));
    let (status, headers, text) = send(s3, reqwest::Method::PUT, url, Some(body.into())).await;
    assert_eq!(status, 200, "{text}");
    headers["x-amz-version-id"].to_str().unwrap().to_string()
}

async fn delete_objects(
    s3: &S3,
    key: &IssuedKey,
    bucket: &str,
    objects: &[(&str, Option<&str>)],
) -> String {
    let c = creds(key);
    let b = s3.bucket(bucket);
    let ids: Vec<_> = objects
        .iter()
        .map(|(k, v)| rusty_s3::actions::ObjectIdentifier {
            key: k.to_string(),
            version_id: v.map(String::from),
        })
        .collect();
    let action = b.delete_objects(Some(&c), ids.iter());
    let url = action.sign(Duration::from_secs(60));
    let (body, md5) = action.body_with_md5();
    let resp = s3
        .http
        .post(url)
        .header("content-md5", md5)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}

async fn set_versioning(s3: &S3, key: &IssuedKey, bucket: &str, status: &str) {
    let url = bucket_sub_url(s3, key, bucket, "PUT", "versioning");
    let body =
        format!("<VersioningConfiguration><Status>{status}</Status></VersioningConfiguration>");
    let (code, _, text) = send(s3, reqwest::Method::PUT, url, Some(body)).await;
    assert_eq!(code, 200, "{text}");
}

async fn list_versions(
    s3: &S3,
    key: &IssuedKey,
    bucket: &str,
) -> Vec<(String, String, bool, bool)> {
    let url = bucket_sub_url(s3, key, bucket, "GET", "versions");
    let (status, _, body) = send(s3, reqwest::Method::GET, url, None).await;
    assert_eq!(status, 200, "{body}");
    versions_of(&body)
}

#[tokio::test]
async fn spaces_versioning_suspended_multipart_and_batch_deletes() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(dir.path(), &GarageOptions::default())
        .await
        .expect("garage starts (run scripts/setup if it is missing)");
    let s3 = S3::new(garage.s3_endpoint());
    let admin = garage.admin_s3_key().await.unwrap();
    let bucket = "batch-bucket";
    assert_eq!(s3.create_bucket(&admin, bucket).await, 200);
    set_versioning(&s3, &admin, bucket, "Enabled").await;
    let id1 = put_versioned(&s3, &admin, bucket, "x", "1").await;
    let id2 = put_versioned(&s3, &admin, bucket, "x", "2").await;
    assert_ne!(id1, id2);

    // Suspended: writes are the `null` version, each replacing the last.
    set_versioning(&s3, &admin, bucket, "Suspended").await;
    let url = bucket_sub_url(&s3, &admin, bucket, "GET", "versioning");
    assert!(send(&s3, Method::GET, url, None)
        .await
        .2
        .contains("<Status>Suspended</Status>"));
    assert_eq!(put_versioned(&s3, &admin, bucket, "x", "3").await, "null");
    assert_eq!(put_versioned(&s3, &admin, bucket, "x", "4").await, "null");
    let ids: Vec<String> = list_versions(&s3, &admin, bucket)
        .await
        .into_iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(ids, ["null".to_string(), id2.clone(), id1.clone()]);
    assert_eq!(s3.get(&admin, bucket, "x").await, (200, "4".to_string()));

    // DeleteObjects: without a version id a (null) delete marker, with one a permanent delete.
    let body = delete_objects(&s3, &admin, bucket, &[("x", None)]).await;
    assert!(body.contains("<DeleteMarker>true</DeleteMarker>"), "{body}");
    let body = delete_objects(&s3, &admin, bucket, &[("x", Some(&id1))]).await;
    assert!(
        body.contains(&format!("<VersionId>{id1}</VersionId>")),
        "{body}"
    );
    let listed = list_versions(&s3, &admin, bucket).await;
    assert_eq!(
        listed,
        [
            ("x".to_string(), "null".to_string(), true, true),
            ("x".to_string(), id2.clone(), false, false)
        ]
    );
    assert_eq!(s3.get(&admin, bucket, "x").await.0, 404);
    let url = version_url(&s3, &admin, bucket, "x", "GET", &id2);
    assert_eq!(send(&s3, Method::GET, url, None).await.2, "2");

    // A multipart upload completed on an enabled bucket is a new version.
    set_versioning(&s3, &admin, bucket, "Enabled").await;
    let b = s3.bucket(bucket);
    let c = creds(&admin);
    let url = b
        .create_multipart_upload(Some(&c), "x")
        .sign(Duration::from_secs(60));
    let (_, _, text) = send(&s3, Method::POST, url, None).await;
    let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&text).unwrap();
    let upload_id = created.upload_id().to_string();
    let url = b
        .upload_part(Some(&c), "x", 1, &upload_id)
        .sign(Duration::from_secs(60));
    let (status, headers, _) = send(&s3, Method::PUT, url, Some("multi".into())).await;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_string();
    let complete =
        b.complete_multipart_upload(Some(&c), "x", &upload_id, std::iter::once(etag.as_str()));
    let url = complete.sign(Duration::from_secs(60));
    let (status, headers, text) = send(&s3, Method::POST, url, Some(complete.body())).await;
    assert_eq!(status, 200, "{text}");
    let id3 = headers["x-amz-version-id"].to_str().unwrap().to_string();
    assert_ne!(id3, "null");
    let ids: Vec<String> = list_versions(&s3, &admin, bucket)
        .await
        .into_iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(ids, [id3, "null".to_string(), id2]);
    assert_eq!(
        s3.get(&admin, bucket, "x").await,
        (200, "multi".to_string())
    );

    // An unknown key and an expired URL are refused.
    let nobody = IssuedKey {
        access_key: "GK0123456789abcdef01234567".into(),
        secret_key: "0".repeat(64),
    };
    let url = bucket_sub_url(&s3, &nobody, bucket, "GET", "versions");
    let (status, _, body) = send(&s3, Method::GET, url, None).await;
    assert_eq!(status, 403);
    assert!(body.contains("InvalidAccessKeyId"), "{body}");
    // (rusty-s3 adds `encoding-type=url`, which ListObjectVersions accepts too.)
    let mut a = b.list_objects_v2(Some(&c));
    a.query_mut().remove("list-type");
    a.query_mut().insert("versions", "");
    let url = a.sign(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _, body) = send(&s3, Method::GET, url, None).await;
    assert_eq!(status, 403);
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    garage.stop().await;
}
