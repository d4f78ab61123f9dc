//! The localocean API served in-process (a null hypervisor, Spaces recorded in memory; no
//! machines, no Garage): every response is validated against DigitalOcean's OpenAPI spec,
//! plus pagination, auth, rate limits, bad input, faults and a restart.

mod conformance;
mod spec;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use localocean::api::{self, ApiConfig, App};
use localocean::faults::SshFaults;
use localocean::hypervisor::MachineInfo;
use localocean::testkit::{ApiServer, NullHypervisor, RecordingSpaces};
use serde_json::{json, Value};

use spec::conforms;

const TOKEN: &str = "test-token-0123456789";
const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK9ZIqFJ5TSlh+4+w+bZjE3Ytk9yb329dinxzRr/iySA test@localocean";
/// `ssh-keygen -l -E md5` of ED25519.
const ED25519_MD5: &str = "1c:d6:69:ae:8d:9b:e7:55:db:ab:55:19:94:f2:80:91";
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC4IfJfqhKeE7UJnuCdVxCfxrSUa7ye3TCMExPqL6ABVwGYlBUg8bYU8p+mZwldyza9maXc7FiITTmTtNVr4vN8g0qkw35VOKgRDDlZkt26nzuChsU+6VGaZLnWbtRRsNhvGrfdVDCc5T7OvAUeteVgJCk1KkVupaurYSXI0dSP6xXKmAm7crQy0Z39vChbCvROz+LZEs6bX/Jo9UQ31YzZTv/zEvYU6RknmDph7yUB+3oftKjQuCMwft+5FVy/BuIL8ZePeB7AnVUSn5bO55RWcnFAJhcd+HAdPpOgNEAD4aETESi0ekH7uLB5tw3BuP0j4FLkqxrIQr6A6vuLZ7xj rsa@localocean";
const RSA_MD5: &str = "1d:98:9c:53:24:ad:97:8f:e0:b4:70:5e:e2:df:1e:b9";

// ---------------------------------------------------------------- fakes

#[derive(Default)]
struct FakeSsh {
    refused: Mutex<Vec<(u64, u64)>>,
}

#[async_trait]
impl SshFaults for FakeSsh {
    async fn refuse_ssh(&self, droplet_id: u64, seconds: u64) -> anyhow::Result<()> {
        self.refused.lock().unwrap().push((droplet_id, seconds));
        Ok(())
    }
}

// ---------------------------------------------------------------- harness

struct Harness {
    api: ApiServer,
    client: reqwest::Client,
    hv: Arc<NullHypervisor>,
    spaces: Arc<RecordingSpaces>,
    dir: tempfile::TempDir,
    ops: Mutex<BTreeSet<String>>,
    responses: AtomicUsize,
}

struct Resp {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
    text: String,
}

async fn start_with(limit: u32, dir: Option<tempfile::TempDir>) -> Harness {
    start_configured(dir, |c| c.rate_limit_per_minute = limit).await
}

/// An instance whose `ApiConfig` `configure` changed.
async fn start_configured(
    dir: Option<tempfile::TempDir>,
    configure: impl FnOnce(&mut ApiConfig),
) -> Harness {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let hv = Arc::new(NullHypervisor::default());
    let spaces = Arc::new(RecordingSpaces::default());
    let mut config = ApiConfig::new(dir.path().to_path_buf(), vec![TOKEN.to_string()]);
    configure(&mut config);
    let app = App::load(config, hv.clone(), spaces.clone()).unwrap();
    Harness {
        api: ApiServer::serve(app, TOKEN).await.unwrap(),
        client: reqwest::Client::new(),
        hv,
        spaces,
        dir,
        ops: Mutex::new(BTreeSet::new()),
        responses: AtomicUsize::new(0),
    }
}

async fn start() -> Harness {
    start_with(10_000, None).await
}

impl Harness {
    async fn raw(&self, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(m, format!("{}{}", self.api.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Resp {
            status,
            body,
            headers,
            text,
        }
    }

    /// Calls the API and validates the answer against the spec's response for `template`
    /// (the spec's path) and `method`; panics if the body does not conform.
    async fn call(&self, method: &str, template: &str, path: &str, body: Option<Value>) -> Resp {
        let text = body.map(|b| b.to_string());
        let r = self.raw(method, path, text.as_deref(), Some(TOKEN)).await;
        let m = method.to_ascii_lowercase();
        assert!(
            r.status < 500,
            "{method} {path} answered {}: {}",
            r.status,
            r.text
        );
        for h in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
            assert!(r.headers.contains_key(h), "{method} {path}: no {h} header");
        }
        conforms(method, template, path, &r);
        self.ops.lock().unwrap().insert(format!("{m} {template}"));
        self.responses.fetch_add(1, Ordering::SeqCst);
        r
    }

    async fn wait_action(&self, id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .call(
                    "GET",
                    "/v2/actions/{action_id}",
                    &format!("/v2/actions/{id}"),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            if r.body["action"]["status"] != "in-progress" {
                return r.body["action"].clone();
            }
            assert!(Instant::now() < deadline, "action {id} never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn arm(&self, fault: Value) -> Resp {
        let r = self
            .raw(
                "POST",
                "/_localocean/faults",
                Some(&fault.to_string()),
                None,
            )
            .await;
        assert_eq!(r.status, 201, "arming {fault}: {}", r.text);
        r
    }

    async fn faults(&self) -> Vec<Value> {
        let r = self.raw("GET", "/_localocean/faults", None, None).await;
        assert_eq!(r.status, 200);
        r.body["faults"].as_array().unwrap().clone()
    }

    /// Creates a droplet and waits for its create action; returns the droplet id.
    async fn droplet(&self, name: &str, tags: &[&str]) -> u64 {
        let r = self
            .call(
                "POST",
                "/v2/droplets",
                "/v2/droplets",
                Some(
                    json!({"name": name, "region": "nyc3", "size": "s-1vcpu-1gb",
                            "image": "debian-12-x64", "tags": tags}),
                ),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let action = r.body["links"]["actions"][0]["id"].as_u64().unwrap();
        assert_eq!(self.wait_action(action).await["status"], "completed");
        r.body["droplet"]["id"].as_u64().unwrap()
    }
}

impl Harness {
    /// Waits until the null hypervisor has been asked for `call` (the load balancers' sync
    /// runs in the background); panics after 10 s with every call made.
    async fn wait_call(&self, call: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.hv.calls().iter().any(|c| c == call) {
            assert!(
                Instant::now() < deadline,
                "never called {call:?}; calls: {:#?}",
                self.hv.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the load balancer until it is no longer `new`; returns it.
    async fn wait_lb(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .call(
                    "GET",
                    "/v2/load_balancers/{lb_id}",
                    &format!("/v2/load_balancers/{id}"),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            if r.body["load_balancer"]["status"] != "new" {
                return r.body["load_balancer"].clone();
            }
            assert!(Instant::now() < deadline, "load balancer {id} stayed new");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn assert_error(r: &Resp, status: u16, id: &str) {
    assert_eq!(r.status, status, "expected {status} {id}, got {}", r.text);
    assert_eq!(r.body["id"], id, "{}", r.text);
    assert!(r.body["message"].is_string(), "{}", r.text);
}

// ---------------------------------------------------------------- behaviour

#[tokio::test]
async fn pagination_links_and_tag_filter() {
    let h = start().await;
    for i in 0..5 {
        let tags: &[&str] = if i % 2 == 0 { &["even"] } else { &["odd"] };
        h.droplet(&format!("page-{i}"), tags).await;
    }
    let r = h
        .call("GET", "/v2/droplets", "/v2/droplets?per_page=2", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 5);
    assert_eq!(r.body["droplets"].as_array().unwrap().len(), 2);
    let pages = &r.body["links"]["pages"];
    assert!(pages.get("first").is_none() && pages.get("prev").is_none());
    assert!(pages["next"].as_str().unwrap().contains("page=2"));
    assert!(pages["last"].as_str().unwrap().contains("page=3"));

    let r = h
        .call(
            "GET",
            "/v2/droplets",
            "/v2/droplets?per_page=2&page=2",
            None,
        )
        .await;
    let pages = &r.body["links"]["pages"];
    for k in ["first", "prev", "next", "last"] {
        assert!(pages[k].is_string(), "page 2 lacks {k}: {pages}");
    }
    assert_eq!(r.body["droplets"][0]["name"], "page-2");

    let r = h
        .call(
            "GET",
            "/v2/droplets",
            "/v2/droplets?per_page=2&page=3",
            None,
        )
        .await;
    assert_eq!(r.body["droplets"].as_array().unwrap().len(), 1);
    let pages = &r.body["links"]["pages"];
    assert!(pages.get("next").is_none() && pages["prev"].as_str().unwrap().contains("page=2"));

    let r = h
        .call(
            "GET",
            "/v2/droplets",
            "/v2/droplets?tag_name=even&per_page=1",
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 3);
    assert!(r.body["links"]["pages"]["next"]
        .as_str()
        .unwrap()
        .contains("tag_name=even"));
    let r = h
        .call("DELETE", "/v2/droplets", "/v2/droplets?tag_name=odd", None)
        .await;
    assert_eq!(r.status, 204);
    let r = h.call("GET", "/v2/droplets", "/v2/droplets", None).await;
    assert_eq!(r.body["meta"]["total"], 3);
    assert!(
        r.body["links"].get("pages").is_none(),
        "{}",
        r.body["links"]
    );
    assert_eq!(h.hv.count("delete "), 2);
}

#[tokio::test]
async fn auth_is_required() {
    let h = start().await;
    for token in [None, Some("wrong-token")] {
        let r = h.raw("GET", "/v2/account", None, token).await;
        assert_error(&r, 401, "unauthorized");
        conforms("GET", "/v2/account", "/v2/account", &r);
        assert!(r.headers.contains_key("ratelimit-remaining"));
        let r = h
            .raw("POST", "/v2/droplets", Some(r#"{"name":"x"}"#), token)
            .await;
        assert_eq!(r.status, 401);
    }
    let r = h.raw("GET", "/v2/account", None, Some(TOKEN)).await;
    assert_eq!(r.status, 200);
    // Health needs no token: it is what readiness checks poll.
    let r = h.raw("GET", "/_localocean/health", None, None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_droplet_limit_is_the_accounts_and_refuses_one_droplet_more() {
    let h = start_configured(None, |c| c.droplet_limit = 2).await;
    let r = h.call("GET", "/v2/account", "/v2/account", None).await;
    assert_eq!(r.body["account"]["droplet_limit"], 2, "{}", r.text);
    h.droplet("one", &[]).await;
    h.droplet("two", &[]).await;
    let r = h
        .call(
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(
                json!({"name": "three", "region": "nyc3", "size": "s-1vcpu-1gb",
                        "image": "debian-12-x64"}),
            ),
        )
        .await;
    assert_error(&r, 422, "unprocessable_entity");
    assert!(r.text.contains("droplet limit"), "{}", r.text);
}

#[tokio::test]
async fn rate_limit_answers_429_after_the_limit() {
    let h = start_with(5, None).await;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = h.raw("GET", "/v2/account", None, Some(TOKEN)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["ratelimit-limit"], "5");
        remaining.push(
            r.headers["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    let r = h.raw("GET", "/v2/account", None, Some(TOKEN)).await;
    assert_error(&r, 429, "too_many_requests");
    conforms("GET", "/v2/account", "/v2/account", &r);
    let reset: u64 = r.headers["ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(reset > now && reset <= now + 60, "reset {reset} now {now}");
    assert!(r.headers.contains_key("retry-after"));

    // A second token of the account has a limit of its own; the first stays limited.
    let minted = h.raw("POST", "/_localocean/tokens", None, None).await;
    assert_eq!(minted.status, 201, "{}", minted.text);
    let second = minted.body["token"].as_str().unwrap().to_owned();
    assert_ne!(second, TOKEN);
    let r = h.raw("GET", "/v2/account", None, Some(&second)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["ratelimit-remaining"], "4");
    let r = h.raw("GET", "/v2/account", None, Some(TOKEN)).await;
    assert_error(&r, 429, "too_many_requests");
    let r = h
        .raw("GET", "/v2/account", None, Some("dop_v1_not-a-token"))
        .await;
    assert_error(&r, 401, "unauthorized");
}

/// Method, spec path, request path, body, expected status, expected error id.
type BadCase = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_input_gets_do_error_bodies_never_500() {
    let h = start().await;
    let cases: Vec<BadCase> = vec![
        (
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some("{not json"),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(r#"{"region":"nyc3"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(r#"{"name":"a_b","size":"s-1vcpu-1gb","image":"debian-12-x64"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(r#"{"name":"ab","region":"mars1","size":"s-1vcpu-1gb","image":"debian-12-x64"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(r#"{"name":"ab","size":"huge","image":"debian-12-x64"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(r#"{"name":"ab","size":"s-1vcpu-1gb","image":"windows"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(r#"{"name":"ab","size":"s-1vcpu-1gb","image":"debian-12-x64","ssh_keys":[12]}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(r#"{"name":"ab","size":5,"image":"debian-12-x64"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "GET",
            "/v2/droplets/{droplet_id}",
            "/v2/droplets/123",
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/v2/droplets/{droplet_id}",
            "/v2/droplets/abc",
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            "/v2/account/keys",
            "/v2/account/keys",
            Some(r#"{"name":"k","public_key":"ssh-rsa !!!"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/account/keys",
            "/v2/account/keys",
            Some(r#"{"name":"k","public_key":"hello"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/domains",
            "/v2/domains",
            Some(r#"{"name":"not a domain"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/volumes",
            "/v2/volumes",
            Some(r#"{"name":"v","size_gigabytes":0,"region":"nyc3"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/volumes",
            "/v2/volumes",
            Some(r#"{"name":"Bad_Name","size_gigabytes":1,"region":"nyc3"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/volumes",
            "/v2/volumes",
            Some(r#"{"name":"v","size_gigabytes":1,"region":"nyc3","filesystem_label":"l"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/volumes",
            "/v2/volumes",
            Some(
                r#"{"name":"v","size_gigabytes":1,"region":"nyc3","filesystem_type":"xfs","filesystem_label":"thirteen-char"}"#,
            ),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/firewalls",
            "/v2/firewalls",
            Some(r#"{"name":"fw","inbound_rules":[{"protocol":"sctp","ports":"1","sources":{}}]}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "POST",
            "/v2/spaces/keys",
            "/v2/spaces/keys",
            Some(r#"{"name":"k","grants":[{"bucket":"b1x","permission":"write"}]}"#),
            422,
            "unprocessable_entity",
        ),
        (
            "GET",
            "/v2/spaces/keys/{access_key}",
            "/v2/spaces/keys/NOPE",
            None,
            404,
            "not_found",
        ),
    ];
    for (method, template, path, body, status, id) in cases {
        let parsed = body.map(serde_json::from_str::<Value>);
        let r = match parsed {
            // Malformed JSON must reach the server as sent.
            Some(Err(_)) => h.raw(method, path, body, Some(TOKEN)).await,
            Some(Ok(v)) => h.call(method, template, path, Some(v)).await,
            None => h.call(method, template, path, None).await,
        };
        assert_error(&r, status, id);
    }
    // Rejections axum makes itself (here: a body over its size limit) still get DO's shape.
    let huge = format!("{{\"name\":\"{}\"}}", "a".repeat(3 << 20));
    let r = h.raw("POST", "/v2/domains", Some(&huge), Some(TOKEN)).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(
        r.body["id"].is_string() && r.body["message"].is_string(),
        "{}",
        r.text
    );
    let r = h.raw("GET", "/v2/domains/%FF%FE", None, Some(TOKEN)).await;
    assert_error(&r, 400, "bad_request");
    let r = h.raw("GET", "/v2/nothing-here", None, Some(TOKEN)).await;
    assert_error(&r, 404, "not_found");
    let r = h
        .raw("PATCH", "/v2/droplets", Some("{}"), Some(TOKEN))
        .await;
    assert_eq!(r.status, 405);
    assert!(r.body["id"].is_string());

    // Records are checked as DO checks them.
    let r = h
        .call(
            "POST",
            "/v2/domains",
            "/v2/domains",
            Some(json!({"name": "bad.test"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let rl = "/v2/domains/{domain_name}/records";
    for rec in [
        json!({"type": "A", "name": "x", "data": "2001:db8::1"}),
        json!({"type": "AAAA", "name": "x", "data": "10.0.0.1"}),
        json!({"type": "CAA", "name": "@", "data": "letsencrypt.org", "flags": 0}),
        json!({"type": "CAA", "name": "@", "data": "letsencrypt.org", "flags": 0, "tag": "other"}),
        json!({"type": "MX", "name": "@", "data": "mail.bad.test."}),
        json!({"type": "SRV", "name": "_sip._tcp", "data": "sip.bad.test.", "priority": 1, "port": 5060}),
        json!({"type": "CNAME", "name": "@", "data": "other.test."}),
        json!({"type": "PTR", "name": "x", "data": "y.test."}),
        json!({"type": "A", "name": "bad name", "data": "10.0.0.1"}),
        json!({"type": "A", "name": "x"}),
        json!({"type": "TXT", "name": "x", "data": "v", "ttl": 5}),
    ] {
        let r = h
            .call(
                "POST",
                rl,
                "/v2/domains/bad.test/records",
                Some(rec.clone()),
            )
            .await;
        assert_error(&r, 422, "unprocessable_entity");
    }
    let r = h
        .call(
            "POST",
            "/v2/domains",
            "/v2/domains",
            Some(json!({"name": "bad.test"})),
        )
        .await;
    assert_error(&r, 422, "unprocessable_entity");
}

#[tokio::test]
async fn faults_fire_as_armed_then_clear() {
    let h = start().await;

    // HTTP 429 storm: the next 2 GETs under /v2/droplets.
    h.arm(
        json!({"kind": "http", "method": "GET", "path_prefix": "/v2/droplets",
                 "count": 2, "status": 429, "retry_after": 1}),
    )
    .await;
    let r = h.raw("GET", "/v2/account", None, Some(TOKEN)).await;
    assert_eq!(r.status, 200, "a fault on another prefix fired");
    for _ in 0..2 {
        let r = h.raw("GET", "/v2/droplets", None, Some(TOKEN)).await;
        assert_error(&r, 429, "too_many_requests");
        conforms("GET", "/v2/droplets", "/v2/droplets", &r);
        assert_eq!(r.headers["retry-after"], "1");
        assert!(r.headers.contains_key("ratelimit-reset"));
    }
    let r = h.raw("GET", "/v2/droplets", None, Some(TOKEN)).await;
    assert_eq!(r.status, 200);
    let f = h.faults().await;
    assert_eq!(f[0]["fired"], 2);
    assert_eq!(f[0]["fired_at"].as_array().unwrap().len(), 2);
    assert_eq!(f[0]["active"], false);

    // 5xx answers with an HTML body, as DO's edge does.
    for status in [500, 502, 503, 504] {
        h.arm(json!({"kind": "http", "path_prefix": "/v2/", "status": status}))
            .await;
        let r = h.raw("POST", "/v2/droplets", Some("{}"), Some(TOKEN)).await;
        assert_eq!(r.status, status);
        let ct = r.headers["content-type"].to_str().unwrap();
        assert!(ct.starts_with("text/html"), "{ct}");
        assert!(r.text.contains("<html>"));
    }

    // The next droplet 404s for a while after its create.
    h.arm(json!({"kind": "droplet_404", "seconds": 1})).await;
    let id = h.droplet("hidden", &[]).await;
    let r = h
        .raw("GET", &format!("/v2/droplets/{id}"), None, Some(TOKEN))
        .await;
    assert_error(&r, 404, "not_found");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = h
        .raw("GET", &format!("/v2/droplets/{id}"), None, Some(TOKEN))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let f = h.faults().await;
    let d404 = f.iter().find(|f| f["kind"] == "droplet_404").unwrap();
    assert_eq!(d404["droplet_id"], id);
    assert!(d404["fired"].as_u64().unwrap() >= 1);
    assert_eq!(d404["active"], false);
    // Only the next droplet: a second one is visible at once.
    let id2 = h.droplet("visible", &[]).await;
    let r = h
        .raw("GET", &format!("/v2/droplets/{id2}"), None, Some(TOKEN))
        .await;
    assert_eq!(r.status, 200);

    // A delayed boot: the create action stays in progress for the delay.
    h.arm(json!({"kind": "boot_delay", "seconds": 1})).await;
    let started = Instant::now();
    let id3 = h.droplet("slow", &[]).await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    let r = h
        .raw("GET", &format!("/v2/droplets/{id3}"), None, Some(TOKEN))
        .await;
    assert_eq!(r.body["droplet"]["status"], "active");

    // A failed boot: action errored, droplet stays new, no machine.
    h.arm(json!({"kind": "boot_error"})).await;
    let creates_before = h.hv.count("create ");
    let r = h
        .call(
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(json!({"name": "broken", "size": "s-1vcpu-1gb", "image": "debian-12-x64"})),
        )
        .await;
    let action = r.body["links"]["actions"][0]["id"].as_u64().unwrap();
    assert_eq!(h.wait_action(action).await["status"], "errored");
    let id4 = r.body["droplet"]["id"].as_u64().unwrap();
    let r = h
        .raw("GET", &format!("/v2/droplets/{id4}"), None, Some(TOKEN))
        .await;
    assert_eq!(r.body["droplet"]["status"], "new");
    assert_eq!(h.hv.count("create "), creates_before);
    // Consumed: the next create boots.
    h.droplet("fine", &[]).await;

    // SSH refused goes to the machines layer; without it, arming is refused.
    let r = h
        .raw(
            "POST",
            "/_localocean/faults",
            Some(r#"{"kind":"ssh_refused","droplet_id":1,"seconds":5}"#),
            None,
        )
        .await;
    assert_eq!(r.status, 422);
    let ssh = Arc::new(FakeSsh::default());
    h.api.app.set_ssh_faults(ssh.clone());
    let r = h
        .arm(json!({"kind": "ssh_refused", "droplet_id": id2, "seconds": 5}))
        .await;
    assert_eq!(r.body["fault"]["fired"], 1);
    assert_eq!(*ssh.refused.lock().unwrap(), vec![(id2, 5)]);

    let f = h.faults().await;
    for kind in [
        "http",
        "droplet_404",
        "boot_delay",
        "boot_error",
        "ssh_refused",
    ] {
        let fault = f.iter().find(|x| x["kind"] == kind).unwrap();
        assert!(
            fault["fired"].as_u64().unwrap() >= 1,
            "{kind} never fired: {fault}"
        );
        assert!(fault["fired_at"][0].is_string());
    }
    let r = h
        .raw(
            "POST",
            "/_localocean/faults",
            Some(r#"{"kind":"http","status":418}"#),
            None,
        )
        .await;
    assert_eq!(r.status, 422);
    let r = h.raw("DELETE", "/_localocean/faults", None, None).await;
    assert_eq!(r.status, 204);
    assert!(h.faults().await.is_empty());
}

#[tokio::test]
async fn state_survives_a_reload() {
    let h = start().await;
    let d = h.droplet("keep-me", &["persist"]).await;
    let r = h
        .call(
            "POST",
            "/v2/account/keys",
            "/v2/account/keys",
            Some(json!({"name": "ed", "public_key": ED25519})),
        )
        .await;
    assert_eq!(r.status, 201);
    h.call(
        "POST",
        "/v2/domains",
        "/v2/domains",
        Some(json!({"name": "persist.test"})),
    )
    .await;
    let r = h
        .call(
            "POST",
            "/v2/domains/{domain_name}/records",
            "/v2/domains/persist.test/records",
            Some(json!({"type": "A", "name": "www", "data": "198.18.0.5"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = h
        .call(
            "POST",
            "/v2/volumes",
            "/v2/volumes",
            Some(json!({"name": "keep-vol", "size_gigabytes": 5, "region": "nyc3"})),
        )
        .await;
    let vol = r.body["volume"]["id"].as_str().unwrap().to_string();
    h.call(
        "POST",
        "/v2/spaces/keys",
        "/v2/spaces/keys",
        Some(json!({"name": "k", "grants": [{"bucket": "", "permission": "fullaccess"}]})),
    )
    .await;
    let meta = std::fs::metadata(h.dir.path().join("api.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077,
        0,
        "api.json readable by others"
    );
    let state = std::fs::read_to_string(h.dir.path().join("api.json")).unwrap();
    assert!(
        !state.contains("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"),
        "Spaces secret persisted"
    );

    // Stop everything and load a new App from the same directory.
    let dir = h.dir;
    drop(h.api);
    let h2 = start_with(10_000, Some(dir)).await;
    assert_eq!(h2.api.app.droplet_ids(), vec![d]);
    let machines = h2.api.app.active_machines();
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].name, "keep-me");
    let r = h2
        .call(
            "GET",
            "/v2/droplets/{droplet_id}",
            &format!("/v2/droplets/{d}"),
            None,
        )
        .await;
    assert_eq!(r.body["droplet"]["status"], "active");
    assert!(r.body["droplet"]["networks"]["v4"][0]["ip_address"].is_string());
    // The lifecycle code boots it again and may get another address.
    h2.api
        .app
        .record_machine(
            d,
            &MachineInfo {
                ipv4: Ipv4Addr::new(198, 19, 7, 7),
                gateway: Ipv4Addr::new(198, 18, 0, 1),
                netmask: Ipv4Addr::new(255, 254, 0, 0),
            },
        )
        .unwrap();
    let r = h2
        .call(
            "GET",
            "/v2/droplets/{droplet_id}",
            &format!("/v2/droplets/{d}"),
            None,
        )
        .await;
    assert_eq!(
        r.body["droplet"]["networks"]["v4"][0]["ip_address"],
        "198.19.7.7"
    );
    let r = h2
        .call("GET", "/v2/account/keys", "/v2/account/keys", None)
        .await;
    assert_eq!(r.body["ssh_keys"][0]["fingerprint"], ED25519_MD5);
    let r = h2
        .call(
            "GET",
            "/v2/domains/{domain_name}/records",
            "/v2/domains/persist.test/records?type=A",
            None,
        )
        .await;
    assert_eq!(r.body["domain_records"][0]["data"], "198.18.0.5");
    let r = h2
        .call(
            "GET",
            "/v2/volumes/{volume_id}",
            &format!("/v2/volumes/{vol}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = h2
        .call("GET", "/v2/spaces/keys", "/v2/spaces/keys", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 1);
    // New ids never reuse old ones after a restart.
    let d2 = h2.droplet("after-restart", &[]).await;
    assert!(d2 > d);
    let zones = api::zones(&h2.api.app).zones();
    assert!(zones
        .iter()
        .any(|z| z.name == "persist.test" && z.records.iter().any(|r| r.name == "www")));
}

/// DigitalOcean mounts a volume only when it formatted it at creation and the volume's first
/// attachment is a droplet's creation: the machine spec carries that decision.
#[tokio::test]
async fn automount_only_for_formatted_volumes_first_attached_at_droplet_creation() {
    let h = start().await;
    let volume = |name: &'static str, fs: Option<&'static str>| {
        let h = &h;
        async move {
            let mut body = json!({"name": name, "size_gigabytes": 1, "region": "nyc3"});
            if let Some(fs) = fs {
                body["filesystem_type"] = json!(fs);
            }
            let r = h
                .call("POST", "/v2/volumes", "/v2/volumes", Some(body))
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["volume"]["id"].as_str().unwrap().to_string()
        }
    };
    let create_with = |name: &'static str, volumes: Vec<String>| {
        let h = &h;
        async move {
            let r = h
                .call(
                    "POST",
                    "/v2/droplets",
                    "/v2/droplets",
                    Some(
                        json!({"name": name, "region": "nyc3", "size": "s-1vcpu-1gb",
                                "image": "debian-12-x64", "volumes": volumes}),
                    ),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.text);
            let action = r.body["links"]["actions"][0]["id"].as_u64().unwrap();
            assert_eq!(h.wait_action(action).await["status"], "completed");
            r.body["droplet"]["id"].as_u64().unwrap()
        }
    };
    let automounts = |droplet: u64| -> Vec<(String, bool)> {
        h.api
            .app
            .machine_spec(droplet)
            .unwrap()
            .volumes
            .iter()
            .map(|v| (v.name.clone(), v.automount))
            .collect()
    };
    let volume_action = |vid: String, body: Value| {
        let h = &h;
        async move {
            let r = h
                .call(
                    "POST",
                    "/v2/volumes/{volume_id}/actions",
                    &format!("/v2/volumes/{vid}/actions"),
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.text);
            let action = r.body["action"]["id"].as_u64().unwrap();
            assert_eq!(h.wait_action(action).await["status"], "completed");
        }
    };

    let formatted = volume("auto-ext4", Some("ext4")).await;
    let blank = volume("auto-blank", None).await;
    let d1 = create_with("auto-1", vec![formatted.clone(), blank.clone()]).await;
    assert_eq!(
        automounts(d1),
        [
            ("auto-ext4".to_string(), true),
            ("auto-blank".to_string(), false)
        ]
    );

    // Attached later: a disk only, even when formatted and never attached before.
    let later = volume("auto-later", Some("xfs")).await;
    volume_action(later.clone(), json!({"type": "attach", "droplet_id": d1})).await;
    assert!(automounts(d1).contains(&("auto-later".to_string(), false)));

    // Moved to a new droplet at its creation: attached before, so not mounted there.
    volume_action(
        formatted.clone(),
        json!({"type": "detach", "droplet_id": d1}),
    )
    .await;
    let d2 = create_with("auto-2", vec![formatted]).await;
    assert_eq!(automounts(d2), [("auto-ext4".to_string(), false)]);
    // The first droplet keeps its decision (the unit its first boot wrote stays).
    assert_eq!(automounts(d1).len(), 2);
}
