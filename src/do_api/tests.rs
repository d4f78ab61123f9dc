//! Client behaviour against a tiny HTTP/1.1 server on 127.0.0.1:0 whose answers each test
//! scripts: retries, pagination, rate limit, create recovery, waits, and secrets kept out.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

use super::*;
use crate::secret::Secret;

const TOKEN: &str = "dop_v1_TESTTOKEN_must_never_print_0123456789";

#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn query_param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

struct Resp {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn resp(status: u16, body: Value) -> Resp {
    Resp {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.to_string(),
    }
}

fn do_error(status: u16, id: &str, message: &str) -> Resp {
    resp(
        status,
        json!({"id": id, "message": message, "request_id": "req-42"}),
    )
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

struct Server {
    url: Url,
    seen: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    seen.lock().unwrap().push(req.clone());
                    let r = handler(&req);
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        r.status,
                        r.body.len()
                    );
                    for (k, v) in &r.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&r.body);
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Server {
            url: Url::parse(&format!("http://{addr}")).unwrap(),
            seen,
            task,
        }
    }

    fn requests(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target, String::new()),
    };
    Some(Req {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn settings(url: &Url, retry_max: u32, rps: u32) -> Settings {
    Settings {
        token: Secret::new(TOKEN),
        api_endpoint: url.clone(),
        spaces_access_id: None,
        spaces_secret_key: None,
        spaces_endpoint: String::new(),
        http_retry_max: retry_max,
        requests_per_second: rps,
        acme_directory_url: Url::parse("https://acme.invalid/directory").unwrap(),
        acme_ca_certificates: None,
        acme_dns_servers: Vec::new(),
        terraform_version: "1.8.0".into(),
    }
}

fn fast() -> Timings {
    Timings {
        backoff_start: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        poll_start: Duration::from_millis(50),
        poll_max: Duration::from_millis(200),
        not_found_grace: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
    }
}

fn client(server: &Server, retry_max: u32) -> Client {
    Client::with_timings(&settings(&server.url, retry_max, 0), fast()).unwrap()
}

fn account() -> Value {
    json!({"account": {"droplet_limit": 25, "floating_ip_limit": 5, "email": "sammy@example.com",
        "uuid": "b6fr89", "email_verified": true, "status": "active", "status_message": " "}})
}

fn droplet_json(id: u64, name: &str, status: &str, tags: &[&str]) -> Value {
    json!({"id": id, "name": name, "memory": 1024, "vcpus": 1, "disk": 25, "locked": false,
        "status": status, "created_at": "2020-07-21T18:37:44Z", "features": [], "backup_ids": [],
        "next_backup_window": null, "snapshot_ids": [], "image": {"id": 7, "slug": "debian-12-x64"},
        "volume_ids": [], "size": {"slug": "s-1vcpu-1gb"}, "size_slug": "s-1vcpu-1gb",
        "networks": {"v4": [{"ip_address": "198.18.0.5", "netmask": "255.255.0.0", "gateway": "198.18.0.1", "type": "public"}],
                     "v6": []},
        "region": {"name": "New York 3", "slug": "nyc3", "features": [], "available": true, "sizes": []},
        "tags": tags, "vpc_uuid": "760e09ef"})
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(!text.contains("TESTTOKEN"), "token leaked: {text}");
}

#[tokio::test]
async fn sends_token_only_in_authorization_and_a_user_agent() {
    let server = Server::start(|_| resp(200, account())).await;
    let c = client(&server, 0);
    let acct = c.account().await.unwrap();
    assert_eq!(acct.email, "sammy@example.com");
    assert_eq!(acct.droplet_limit, 25);
    let r = &server.requests()[0];
    assert_eq!(r.path, "/v2/account");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let ua = r.header("user-agent").unwrap();
    assert!(
        ua.starts_with(&format!(
            "terraform-provider-docker/{}",
            env!("CARGO_PKG_VERSION")
        )),
        "{ua}"
    );
    assert_no_secret(&format!("{c:?}"));
}

#[tokio::test]
async fn retries_429_after_the_time_retry_after_asks() {
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let server = Server::start(move |_| {
        if calls2.fetch_add(1, Ordering::SeqCst) == 0 {
            let mut r = do_error(429, "too_many_requests", "API Rate limit exceeded.");
            r.headers.push(("retry-after", "1".into()));
            r
        } else {
            resp(200, account())
        }
    })
    .await;
    let c = client(&server, 3);
    let started = Instant::now();
    c.account().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The fast test backoff is at most 100 ms; only Retry-After explains a second.
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
}

#[tokio::test]
async fn retries_503_with_an_html_body_then_succeeds() {
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let server = Server::start(move |_| {
        if calls2.fetch_add(1, Ordering::SeqCst) < 2 {
            Resp {
                status: 503,
                headers: vec![("content-type", "text/html".into())],
                body: "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>".into(),
            }
        } else {
            resp(200, json!({"regions": [{"name": "New York 3", "slug": "nyc3", "features": ["storage", "ipv6"], "available": true, "sizes": ["s-1vcpu-1gb"]}], "links": {}, "meta": {"total": 1}}))
        }
    })
    .await;
    let regions = client(&server, 4).list_regions().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(regions.len(), 1);
    assert!(regions[0].available && regions[0].has_feature("storage"));
}

#[tokio::test]
async fn html_5xx_that_persists_is_an_api_error_quoting_the_page() {
    let server = Server::start(|_| Resp {
        status: 502,
        headers: vec![("content-type", "text/html".into())],
        body: "<html>\n<head><title>502 Bad Gateway</title></head></html>".into(),
    })
    .await;
    let err = client(&server, 1).account().await.unwrap_err();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(err.status(), Some(502));
    assert_eq!(err.api_id(), Some("bad_gateway"));
    let text = err.to_string();
    assert!(text.contains("<title>502 Bad Gateway</title>"), "{text}");
}

#[tokio::test]
async fn does_not_retry_501_or_other_4xx() {
    let server = Server::start(|r| {
        if r.path == "/v2/account" {
            do_error(501, "not_implemented", "nope")
        } else {
            do_error(422, "unprocessable_entity", "Name is invalid")
        }
    })
    .await;
    let c = client(&server, 4);
    let err = c.account().await.unwrap_err();
    assert_eq!(err.status(), Some(501));
    assert_eq!(server.requests().len(), 1);
    let err = c.list_sizes().await.unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn exhausting_retries_returns_do_id_and_message() {
    let server =
        Server::start(|_| do_error(500, "server_error", "Unexpected server-side error")).await;
    let err = client(&server, 2).get_droplet(77).await.unwrap_err();
    assert_eq!(server.requests().len(), 3, "one try and two retries");
    match &err {
        Error::Context { source, .. } => match source.as_ref() {
            Error::Api {
                status,
                id,
                message,
                request_id,
                ..
            } => {
                assert_eq!(*status, 500);
                assert_eq!(id, "server_error");
                assert_eq!(message, "Unexpected server-side error");
                assert_eq!(request_id.as_deref(), Some("req-42"));
            }
            other => panic!("not an API error: {other:?}"),
        },
        other => panic!("no context: {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "reading droplet (77): GET /v2/droplets/77: DigitalOcean API error 500 (server_error): \
         Unexpected server-side error (request id req-42)"
    );
}

#[tokio::test]
async fn post_is_not_retried_on_5xx_but_is_on_429() {
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let server = Server::start(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/v2/firewalls") => do_error(502, "bad_gateway", "upstream"),
        ("POST", "/v2/account/keys") => {
            if calls2.fetch_add(1, Ordering::SeqCst) == 0 {
                do_error(429, "too_many_requests", "slow down")
            } else {
                resp(201, json!({"ssh_key": {"id": 5, "fingerprint": "aa:bb", "public_key": "ssh-ed25519 AAAA x", "name": "k"}}))
            }
        }
        _ => do_error(404, "not_found", "?"),
    })
    .await;
    let c = client(&server, 4);
    let fw = FirewallRequest {
        name: "tf-acc-test-fw".into(),
        ..Default::default()
    };
    let err = c.create_firewall(&fw).await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(server.count("POST", "/v2/firewalls"), 1);
    let key = c
        .create_ssh_key(&SshKeyCreateRequest {
            name: "k".into(),
            public_key: "ssh-ed25519 AAAA x".into(),
        })
        .await
        .unwrap();
    assert_eq!(key.id, 5);
    assert_eq!(server.count("POST", "/v2/account/keys"), 2);
}

#[tokio::test]
async fn not_found_means_none_on_read_and_success_on_delete() {
    let server = Server::start(|_| {
        do_error(
            404,
            "not_found",
            "The resource you were accessing could not be found.",
        )
    })
    .await;
    let c = client(&server, 4);
    assert_eq!(c.get_droplet(1).await.unwrap(), None);
    assert_eq!(c.get_volume("v-1").await.unwrap(), None);
    assert_eq!(c.get_domain("example.com").await.unwrap(), None);
    assert_eq!(c.get_ssh_key("3b:16:bf").await.unwrap(), None);
    c.delete_droplet(1).await.unwrap();
    c.delete_record("example.com", 9).await.unwrap();
    c.delete_firewall("fw").await.unwrap();
    c.delete_spaces_key("DOKEY").await.unwrap();
    assert_eq!(server.requests().len(), 8, "404 is never retried");
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.contains(&"/v2/account/keys/3b:16:bf".to_string()),
        "{paths:?}"
    );
}

#[tokio::test]
async fn pagination_follows_next_links_across_three_pages() {
    let server = Server::start(|r| {
        let page: u64 = r.query_param("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        assert_eq!(r.query_param("tag_name").as_deref(), Some("tf-acc-test-x"));
        let ids = [page * 10 + 1, page * 10 + 2];
        let droplets: Vec<Value> = ids.iter().map(|i| droplet_json(*i, "d", "active", &["tf-acc-test-x"])).collect();
        // DigitalOcean writes its public host into links; the client must stay on its endpoint.
        let links = if page < 3 {
            json!({"pages": {"next": format!("https://api.digitalocean.com/v2/droplets?page={}&per_page=2&tag_name=tf-acc-test-x", page + 1),
                             "last": "https://api.digitalocean.com/v2/droplets?page=3&per_page=2&tag_name=tf-acc-test-x"}})
        } else {
            json!({"pages": {"first": "https://api.digitalocean.com/v2/droplets?page=1&per_page=2&tag_name=tf-acc-test-x"}})
        };
        resp(200, json!({"droplets": droplets, "links": links, "meta": {"total": 6}}))
    })
    .await;
    let list = client(&server, 0)
        .list_droplets_by_tag("tf-acc-test-x")
        .await
        .unwrap();
    let ids: Vec<u64> = list.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![11, 12, 21, 22, 31, 32]);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].query_param("per_page").as_deref(), Some("200"));
    assert_eq!(list[0].public_ipv4(), Some("198.18.0.5"));
    assert_eq!(list[0].region_slug(), Some("nyc3"));
}

#[tokio::test]
async fn records_list_filters_by_name_and_type() {
    let server = Server::start(|r| {
        assert_eq!(r.path, "/v2/domains/example.com/records");
        assert_eq!(r.query_param("name").as_deref(), Some("registry.example.com"));
        assert_eq!(r.query_param("type").as_deref(), Some("A"));
        resp(200, json!({"domain_records": [{"id": 3, "type": "A", "name": "registry", "data": "198.18.0.5",
            "priority": null, "port": null, "ttl": 1800, "weight": null, "flags": null, "tag": null}],
            "links": {}, "meta": {"total": 1}}))
    })
    .await;
    let records = client(&server, 0)
        .list_records("example.com", Some("registry.example.com"), Some("A"))
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].data, "198.18.0.5");
    assert_eq!(records[0].ttl, Some(1800));
}

#[tokio::test]
async fn rate_limit_spaces_requests() {
    let server = Server::start(|_| resp(200, account())).await;
    let c = Client::with_timings(&settings(&server.url, 0, 5), fast()).unwrap();
    let started = Instant::now();
    // Clones share the limiter, so splitting the work across them does not go faster.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let c = if i % 2 == 0 {
            c.clone()
        } else {
            c.clone().clone()
        };
        tasks.push(tokio::spawn(async move { c.account().await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1750),
        "10 requests at 5 rps took {took:?}"
    );
    assert_eq!(server.requests().len(), 10);
}

fn create_request(name: &str) -> DropletCreateRequest {
    DropletCreateRequest {
        name: name.into(),
        region: "nyc3".into(),
        size: "s-1vcpu-1gb".into(),
        image: "debian-12-x64".into(),
        ssh_keys: vec![
            SshKeyRef::Id(512189),
            SshKeyRef::Fingerprint("3b:16:bf".into()),
        ],
        user_data: Some(Secret::new(
            "#cloud-config\nssh_keys:\n  ed25519_private: USERDATA-SECRET\n",
        )),
        tags: vec!["registry".into()],
        volumes: vec![],
        ipv6: true,
        monitoring: false,
        vpc_uuid: None,
        backups: false,
        backup_policy: None,
    }
}

/// A fake droplet API: POSTs store droplets; `fail_posts` answers the first N POSTs with a
/// 500 *after* storing the droplet when `created_anyway`, before it otherwise.
fn droplet_api(
    fail_posts: usize,
    created_anyway: bool,
) -> impl Fn(&Req) -> Resp + Send + Sync + 'static {
    let store: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let posts = AtomicUsize::new(0);
    move |r: &Req| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/v2/droplets") => {
            let body = r.json();
            let n = posts.fetch_add(1, Ordering::SeqCst);
            let tags: Vec<&str> = body["tags"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|t| t.as_str())
                .collect();
            let d = droplet_json(
                1000 + n as u64,
                body["name"].as_str().unwrap(),
                "new",
                &tags,
            );
            if n < fail_posts {
                if created_anyway {
                    store.lock().unwrap().push(d);
                }
                return Resp {
                    status: 500,
                    headers: vec![],
                    body: "<html>Internal Server Error</html>".into(),
                };
            }
            store.lock().unwrap().push(d.clone());
            resp(
                202,
                json!({"droplet": d, "links": {"actions": [{"id": 1, "rel": "create", "href": "x"}]}}),
            )
        }
        ("GET", "/v2/droplets") => {
            let tag = r.query_param("tag_name").unwrap_or_default();
            let found: Vec<Value> = store
                .lock()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["tags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|t| t == &json!(tag))
                })
                .cloned()
                .collect();
            resp(
                200,
                json!({"droplets": found, "links": {}, "meta": {"total": found.len()}}),
            )
        }
        _ => do_error(404, "not_found", "?"),
    }
}

#[tokio::test]
async fn create_droplet_after_a_5xx_that_created_it_does_not_create_another() {
    let server = Server::start(droplet_api(1, true)).await;
    let d = client(&server, 3)
        .create_droplet(&create_request("tf-acc-test-a"), "tf-acc-test-a-7f3c")
        .await
        .unwrap();
    assert_eq!(server.count("POST", "/v2/droplets"), 1);
    assert_eq!(d.id, 1000);
    assert!(d.tags.contains(&"tf-acc-test-a-7f3c".to_string()));
    let sent = server.requests()[0].json();
    assert_eq!(sent["tags"], json!(["registry", "tf-acc-test-a-7f3c"]));
    assert_eq!(sent["image"], json!("debian-12-x64"));
    assert_eq!(sent["ssh_keys"], json!([512189, "3b:16:bf"]));
    assert_eq!(sent["ipv6"], json!(true));
    assert!(sent["user_data"]
        .as_str()
        .unwrap()
        .contains("USERDATA-SECRET"));
}

#[tokio::test]
async fn create_droplet_after_a_5xx_that_did_not_create_it_retries() {
    let server = Server::start(droplet_api(1, false)).await;
    let d = client(&server, 3)
        .create_droplet(&create_request("tf-acc-test-b"), "tf-acc-test-b-1")
        .await
        .unwrap();
    assert_eq!(server.count("POST", "/v2/droplets"), 2);
    assert_eq!(server.count("GET", "/v2/droplets"), 1);
    assert_eq!(d.id, 1001);
}

#[tokio::test]
async fn create_droplet_gives_up_after_retry_max_and_names_the_droplet() {
    let server = Server::start(droplet_api(100, false)).await;
    let err = client(&server, 2)
        .create_droplet(&create_request("tf-acc-test-c"), "tf-acc-test-c-1")
        .await
        .unwrap_err();
    assert_eq!(server.count("POST", "/v2/droplets"), 3);
    assert_eq!(err.status(), Some(500));
    assert!(
        err.to_string()
            .starts_with("creating droplet (tf-acc-test-c): POST /v2/droplets"),
        "{err}"
    );
}

#[tokio::test]
async fn wait_times_out_naming_the_droplet_and_its_state() {
    let server =
        Server::start(|_| resp(200, json!({"droplet": droplet_json(1234, "d", "new", &[])}))).await;
    let started = Instant::now();
    let err = client(&server, 0)
        .wait_for_droplet_active(1234, Duration::from_millis(700))
        .await
        .unwrap_err();
    // Ended by the timeout (the droplet stays "new" forever); the bound is generous for a
    // loaded machine, where this test shares two cores with the acceptance tests.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(err.is_timeout());
    let text = err.to_string();
    assert!(
        text.starts_with("waiting for droplet (1234) to become active: still new after"),
        "{text}"
    );
    assert!(
        server.requests().len() >= 3,
        "polled only {}",
        server.requests().len()
    );
}

#[tokio::test]
async fn wait_tolerates_a_new_droplets_404_then_sees_it_active() {
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let server = Server::start(move |_| match calls2.fetch_add(1, Ordering::SeqCst) {
        0 | 1 => do_error(
            404,
            "not_found",
            "The resource you were accessing could not be found.",
        ),
        2 => resp(200, json!({"droplet": droplet_json(9, "d", "new", &[])})),
        _ => resp(200, json!({"droplet": droplet_json(9, "d", "active", &[])})),
    })
    .await;
    let d = client(&server, 0)
        .wait_for_droplet_active(9, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(d.status, "active");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn wait_stops_tolerating_404_after_the_grace() {
    let server = Server::start(|_| do_error(404, "not_found", "gone")).await;
    let err = client(&server, 0)
        .wait_for_droplet_active(5, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(!err.is_timeout());
    assert!(
        err.to_string().starts_with(
            "waiting for droplet (5) to become active: unexpected state \"not found\""
        ),
        "{err}"
    );
}

#[tokio::test]
async fn create_droplet_watched_reads_the_linked_create_action() {
    let server = Server::start(droplet_api(0, false)).await;
    let created = client(&server, 3)
        .create_droplet_watched(&create_request("tf-acc-test-w"), "tf-acc-test-w-1")
        .await
        .unwrap();
    assert_eq!(created.droplet.id, 1000);
    assert_eq!(created.create_action, Some(1));
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());
}

#[tokio::test]
async fn create_droplet_found_after_a_5xx_finds_its_create_action_in_its_actions() {
    let api = droplet_api(1, true);
    let server = Server::start(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/v2/droplets/1000/actions") => resp(
            200,
            json!({"actions": [
                {"id": 77, "status": "completed", "type": "rename", "resource_id": 1000, "resource_type": "droplet"},
                {"id": 76, "status": "in-progress", "type": "create", "resource_id": 1000, "resource_type": "droplet"}
            ], "links": {}, "meta": {"total": 2}}),
        ),
        _ => api(r),
    })
    .await;
    let created = client(&server, 3)
        .create_droplet_watched(&create_request("tf-acc-test-x"), "tf-acc-test-x-1")
        .await
        .unwrap();
    assert_eq!(server.count("POST", "/v2/droplets"), 1);
    assert_eq!(created.droplet.id, 1000);
    assert_eq!(created.create_action, Some(76));
}

#[tokio::test]
async fn a_create_action_that_errors_ends_the_wait_at_once_naming_the_droplet() {
    let action_reads = Arc::new(AtomicUsize::new(0));
    let reads = action_reads.clone();
    let server = Server::start(move |r| match r.path.as_str() {
        "/v2/droplets/42" => resp(200, json!({"droplet": droplet_json(42, "d", "new", &[])})),
        "/v2/actions/7" => {
            let status = match reads.fetch_add(1, Ordering::SeqCst) {
                0 => "in-progress",
                _ => "errored",
            };
            resp(
                200,
                json!({"action": {"id": 7, "status": status, "type": "create", "resource_id": 42, "resource_type": "droplet"}}),
            )
        }
        _ => do_error(404, "not_found", "?"),
    })
    .await;
    let started = Instant::now();
    let err = client(&server, 0)
        .wait_for_new_droplet(42, Some(7), Duration::from_secs(60))
        .await
        .unwrap_err();
    // Long before the 60 s limit (generous for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(!err.is_timeout());
    assert_eq!(
        err.to_string(),
        "waiting for droplet (42) to become active: action 7 (create) errored"
    );
    assert_eq!(action_reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_completed_create_action_waits_for_the_droplet_to_turn_active() {
    let droplet_reads = Arc::new(AtomicUsize::new(0));
    let reads = droplet_reads.clone();
    let server = Server::start(move |r| match r.path.as_str() {
        "/v2/droplets/42" => {
            let status = match reads.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => "new",
                _ => "active",
            };
            resp(200, json!({"droplet": droplet_json(42, "d", status, &[])}))
        }
        // An action that cannot be read does not end the wait either.
        "/v2/actions/7" => do_error(500, "server_error", "?"),
        "/v2/actions/8" => resp(
            200,
            json!({"action": {"id": 8, "status": "completed", "type": "create", "resource_id": 42, "resource_type": "droplet"}}),
        ),
        _ => do_error(404, "not_found", "?"),
    })
    .await;
    let c = client(&server, 0);
    let d = c
        .wait_for_new_droplet(42, Some(8), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(d.status, "active");
    droplet_reads.store(0, Ordering::SeqCst);
    let d = c
        .wait_for_new_droplet(42, Some(7), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(d.status, "active");
    assert_eq!(server.count("GET", "/v2/actions/7"), 2);
}

#[tokio::test]
async fn actions_complete_or_fail_by_status() {
    let server = Server::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/v2/droplets/9/actions") => {
            assert_eq!(r.json(), json!({"type": "resize", "size": "s-2vcpu-2gb", "disk": false}));
            resp(201, json!({"action": {"id": 36804636, "status": "in-progress", "type": "resize", "resource_id": 9, "resource_type": "droplet", "region_slug": "nyc3"}}))
        }
        ("GET", "/v2/actions/36804636") => resp(200, json!({"action": {"id": 36804636, "status": "completed", "type": "resize", "resource_id": 9, "resource_type": "droplet"}})),
        ("GET", "/v2/actions/5") => resp(200, json!({"action": {"id": 5, "status": "errored", "type": "power_on", "resource_id": 9, "resource_type": "droplet"}})),
        _ => do_error(404, "not_found", "?"),
    })
    .await;
    let c = client(&server, 0);
    let started = c.resize(9, "s-2vcpu-2gb").await.unwrap();
    assert_eq!(started.status, "in-progress");
    let done = c
        .wait_for_action(started.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(done.status, "completed");
    let err = c
        .wait_for_action(5, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "waiting for action (5) to complete: action 5 (power_on) errored"
    );
}

#[tokio::test]
async fn volume_and_firewall_calls_use_documented_shapes() {
    let server = Server::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/v2/volumes/vol-1/actions") => {
            assert_eq!(r.json(), json!({"type": "attach", "droplet_id": 9, "region": "nyc3"}));
            resp(202, json!({"action": {"id": 7, "status": "in-progress", "type": "attach_volume", "resource_id": null}}))
        }
        ("GET", "/v2/volumes/vol-1/actions/7") => resp(200, json!({"action": {"id": 7, "status": "completed", "type": "attach_volume"}})),
        ("GET", "/v2/volumes") => {
            assert_eq!(r.query_param("name").as_deref(), Some("data"));
            assert_eq!(r.query_param("region").as_deref(), Some("nyc3"));
            resp(200, json!({"volumes": [{"id": "vol-1", "droplet_ids": null, "name": "data", "size_gigabytes": 10,
                "region": {"slug": "nyc3", "name": "New York 3", "features": [], "available": true, "sizes": []},
                "filesystem_type": "ext4"}], "links": {}, "meta": {"total": 1}}))
        }
        ("POST", "/v2/firewalls/fw-1/droplets") | ("DELETE", "/v2/firewalls/fw-1/droplets") => {
            assert_eq!(r.json(), json!({"droplet_ids": [9]}));
            Resp { status: 204, headers: vec![], body: String::new() }
        }
        ("PUT", "/v2/firewalls/fw-1") => {
            let b = r.json();
            assert_eq!(b["inbound_rules"][0]["sources"], json!({"addresses": ["0.0.0.0/0", "::/0"]}));
            resp(200, json!({"firewall": {"id": "fw-1", "status": "succeeded", "name": b["name"], "droplet_ids": [9],
                "inbound_rules": b["inbound_rules"], "outbound_rules": [], "pending_changes": [], "tags": []}}))
        }
        _ => do_error(404, "not_found", "?"),
    })
    .await;
    let c = client(&server, 0);
    let vols = c.list_volumes("data", "nyc3").await.unwrap();
    assert_eq!(vols[0].droplet_ids, Vec::<u64>::new());
    let a = c
        .volume_action(
            "vol-1",
            &VolumeAction::Attach {
                droplet_id: 9,
                region: Some("nyc3".into()),
            },
        )
        .await
        .unwrap();
    c.wait_for_volume_action("vol-1", a.id, Duration::from_secs(5))
        .await
        .unwrap();
    c.add_firewall_droplets("fw-1", &[9]).await.unwrap();
    c.remove_firewall_droplets("fw-1", &[9]).await.unwrap();
    let fw = c
        .update_firewall(
            "fw-1",
            &FirewallRequest {
                name: "tf-acc-test-fw".into(),
                droplet_ids: vec![9],
                tags: vec![],
                inbound_rules: vec![InboundRule {
                    protocol: "tcp".into(),
                    ports: "443".into(),
                    sources: FirewallTarget {
                        addresses: vec!["0.0.0.0/0".into(), "::/0".into()],
                        ..Default::default()
                    },
                }],
                outbound_rules: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(fw.inbound_rules[0].ports, "443");
}

#[tokio::test]
async fn secrets_stay_out_of_errors_and_payload_snippets() {
    let server = Server::start(|r| match r.path.as_str() {
        // The right shape but a wrong type: parsing fails on a body holding a secret.
        "/v2/spaces/keys" => resp(201, json!({"key": {"name": "k", "access_key": 12, "secret_key": "S3CR3T-SPACES-KEY", "grants": []}})),
        _ => resp(200, json!({"droplet": "not an object"})),
    })
    .await;
    let c = client(&server, 0);
    let err = c
        .create_spaces_key(&SpacesKeyCreateRequest {
            name: "k".into(),
            grants: vec![Grant {
                bucket: "b".into(),
                permission: "readwrite".into(),
            }],
        })
        .await
        .unwrap_err();
    let shown = format!("{err} / {err:?}");
    assert!(
        matches!(&err, Error::Context { source, .. } if matches!(**source, Error::InvalidPayload { .. })),
        "{shown}"
    );
    assert!(!shown.contains("S3CR3T-SPACES-KEY"), "{shown}");
    // The snippet still shows the shape, so the error is useful.
    assert!(shown.contains(r#"\"secret_key\":\"***\""#), "{shown}");
    assert_no_secret(&shown);

    let err = c.get_droplet(1).await.unwrap_err();
    assert_no_secret(&format!("{err} / {err:?}"));

    // A refused connection: the transport error names the path, never the token.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = Client::with_timings(
        &settings(&Url::parse(&format!("http://{dead}")).unwrap(), 1, 0),
        fast(),
    )
    .unwrap();
    let err = c.account().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    let text = format!("{err} / {err:?}");
    assert!(text.contains("/v2/account"), "{text}");
    assert_no_secret(&text);
}

#[test]
fn spaces_key_created_parses_and_hides_its_secret() {
    let k: SpacesKeyCreated = serde_json::from_value(
        json!({"name": "k", "access_key": "DOACCESS", "secret_key": "DOSECRET",
        "grants": [{"bucket": "b", "permission": "read"}], "created_at": "2018-07-19T15:04:16Z"}),
    )
    .unwrap();
    assert_eq!(k.key.access_key, "DOACCESS");
    assert_eq!(k.secret_key.expose(), "DOSECRET");
    assert!(!format!("{k:?}").contains("DOSECRET"));
    let req = create_request("x");
    assert!(!format!("{req:?}").contains("USERDATA-SECRET"));
}

#[test]
fn redaction_reaches_nested_keys() {
    let mut v = json!({"droplet": {"user_data": "x", "name": "n"}, "keys": [{"secret_key": "s", "password": "p"}]});
    redact(&mut v);
    assert_eq!(
        v,
        json!({"droplet": {"user_data": "***", "name": "n"}, "keys": [{"secret_key": "***", "password": "***"}]})
    );
}

/// A `tracing` writer into a shared buffer, to read what the client logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn trace_logs_show_requests_but_no_token_or_user_data() {
    // tracing-core caches per-callsite interest; with exactly one scoped subscriber alive it
    // asks only the registering thread's default, so a callsite first hit by another test's
    // thread would be cached as disabled. A second live dispatch makes it ask all of them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = Server::start(droplet_api(1, true)).await;
    client(&server, 2)
        .create_droplet(&create_request("tf-acc-test-log"), "tf-acc-test-log-1")
        .await
        .unwrap();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("POST") && text.contains("/v2/droplets") && text.contains("status=500"),
        "{text}"
    );
    assert!(
        text.contains("tf-acc-test-log"),
        "bodies are logged at trace: {text}"
    );
    assert!(
        !text.contains("USERDATA-SECRET"),
        "user_data leaked: {text}"
    );
    assert_no_secret(&text);
}

#[test]
fn retry_after_reads_seconds_dates_and_rate_limit_reset() {
    let mut h = HeaderMap::new();
    h.insert("retry-after", HeaderValue::from_static("7"));
    assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
    let date = soon
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap();
    h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
    let d = retry_after(&h).unwrap();
    assert!(
        d >= Duration::from_secs(28) && d <= Duration::from_secs(30),
        "{d:?}"
    );
    let mut h = HeaderMap::new();
    let reset = (time::OffsetDateTime::now_utc().unix_timestamp() + 20).to_string();
    h.insert("ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
    h.insert("ratelimit-remaining", HeaderValue::from_static("3"));
    assert_eq!(retry_after(&h), None, "quota left: plain backoff");
    h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
    let d = retry_after(&h).unwrap();
    assert!(
        d >= Duration::from_secs(19) && d <= Duration::from_secs(20),
        "{d:?}"
    );
}

#[test]
fn urls_encode_segments_and_links_stay_on_the_endpoint() {
    let c = Client::new(&settings(
        &Url::parse("http://127.0.0.1:9/api/").unwrap(),
        0,
        0,
    ))
    .unwrap();
    let u = c.url(&["v2", "domains", "a/b?c", "records"], &[("name", "x y")]);
    assert_eq!(
        u.as_str(),
        "http://127.0.0.1:9/api/v2/domains/a%2Fb%3Fc/records?name=x+y"
    );
    let next = c
        .rebase_link("https://api.digitalocean.com/v2/volumes?page=2&per_page=200")
        .unwrap();
    assert_eq!(
        next.as_str(),
        "http://127.0.0.1:9/api/v2/volumes?page=2&per_page=200"
    );
    let next = c
        .rebase_link("http://127.0.0.1:9/api/v2/volumes?page=3")
        .unwrap();
    assert_eq!(next.as_str(), "http://127.0.0.1:9/api/v2/volumes?page=3");
    let bad = Client::new(&Settings {
        token: Secret::new("line\nbreak-TESTTOKEN"),
        ..settings(&Url::parse("http://127.0.0.1:9").unwrap(), 0, 0)
    })
    .unwrap_err();
    assert_no_secret(&format!("{bad} {bad:?}"));
}

/// Uptime checks and alerts against localocean's API (which validates them as DigitalOcean's
/// spec does): created, found in the paged list, updated, and deleted with their alerts.
#[tokio::test]
async fn uptime_checks_and_alerts_round_trip() {
    use crate::testkit::api::Api;
    use localocean::testkit::NoSpaces;
    let api = Api::start(std::sync::Arc::new(NoSpaces)).await;
    let c = &api.client;
    let mut req = UptimeCheck {
        name: "registry-uptime".into(),
        check_type: "https".into(),
        target: "https://registry.example.com".into(),
        regions: vec!["us_east".into(), "eu_west".into()],
        enabled: true,
        ..Default::default()
    };
    let check = c.create_uptime_check(&req).await.unwrap();
    assert!(!check.id.is_empty());
    assert_eq!(check.target, req.target);
    let all = c.list_uptime_checks().await.unwrap();
    assert_eq!(all.iter().filter(|x| x.id == check.id).count(), 1);
    req.name = "registry-uptime-2".into();
    let updated = c.update_uptime_check(&check.id, &req).await.unwrap();
    assert_eq!(updated.name, "registry-uptime-2");
    let alert = UptimeAlert {
        name: "certificate".into(),
        alert_type: "ssl_expiry".into(),
        threshold: Some(14),
        comparison: Some("less_than".into()),
        notifications: UptimeNotifications {
            email: vec!["localocean@localhost".into()],
            slack: vec![],
        },
        period: "2m".into(),
        ..Default::default()
    };
    let made = c.create_uptime_alert(&check.id, &alert).await.unwrap();
    assert_eq!(made.threshold, Some(14));
    let again = UptimeAlert {
        threshold: Some(7),
        ..alert.clone()
    };
    let changed = c
        .update_uptime_alert(&check.id, &made.id, &again)
        .await
        .unwrap();
    assert_eq!(changed.threshold, Some(7));
    let alerts = c.list_uptime_alerts(&check.id).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].notifications.email, ["localocean@localhost"]);
    // An unverified address is refused, naming it.
    let bad = UptimeAlert {
        notifications: UptimeNotifications {
            email: vec!["nobody@example.com".into()],
            slack: vec![],
        },
        ..alert
    };
    let err = c.create_uptime_alert(&check.id, &bad).await.unwrap_err();
    assert!(err.to_string().contains("nobody@example.com"), "{err}");
    c.delete_uptime_alert(&check.id, &made.id).await.unwrap();
    c.delete_uptime_check(&check.id).await.unwrap();
    assert!(c.get_uptime_check(&check.id).await.unwrap().is_none());
    // Gone already: deleted.
    c.delete_uptime_check(&check.id).await.unwrap();
}

#[test]
fn an_image_of_digits_is_sent_as_an_id_and_anything_else_as_a_slug() {
    let sent = |s: &str| serde_json::to_value(ImageRef::from(s)).unwrap();
    assert_eq!(sent("debian-12-x64"), json!("debian-12-x64"));
    assert_eq!(sent("148174574"), json!(148174574));
    // Not a number DigitalOcean would give: kept as the user wrote it.
    assert_eq!(sent("0123"), json!("0123"));
    assert_eq!(sent("ubuntu-24-04-x64"), json!("ubuntu-24-04-x64"));
}

#[tokio::test]
async fn a_droplet_action_refused_for_a_pending_event_is_asked_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let server = Server::start(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/v2/droplets/9/actions") if calls2.fetch_add(1, Ordering::SeqCst) == 0 => {
            do_error(422, "unprocessable_entity", "Droplet already has a pending event.")
        }
        ("POST", "/v2/droplets/9/actions") => resp(
            201,
            json!({"action": {"id": 11, "status": "in-progress", "type": "power_off", "resource_id": 9, "resource_type": "droplet"}}),
        ),
        ("POST", "/v2/droplets/10/actions") => {
            do_error(422, "unprocessable_entity", "Droplet is not in a state to be resized.")
        }
        _ => resp(404, json!({"id": "not_found", "message": "no"})),
    })
    .await;
    let c = client(&server, 0);
    let a = c.power_off(9).await.unwrap();
    assert_eq!(a.id, 11);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "asked again once");
    // Any other 422 fails at once, with DigitalOcean's words.
    let started = Instant::now();
    let e = c.power_off(10).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(e.status(), Some(422));
    assert!(e.to_string().contains("not in a state"), "{e}");
}
