//! The localocean API against DigitalOcean's OpenAPI spec: every operation's responses are
//! validated against the spec, plus pagination, auth, rate limits, bad input, faults, restart.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use localocean::api::{self, ApiConfig, App};
use localocean::faults::SshFaults;
use localocean::hypervisor::{Hypervisor, MachineInfo, MachineSpec, Power, VolumeSpec};
use localocean::spaces::{Grant, IssuedKey, SpacesBackend};
use serde_json::{json, Map, Value};

const TOKEN: &str = "test-token-0123456789";
const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK9ZIqFJ5TSlh+4+w+bZjE3Ytk9yb329dinxzRr/iySA test@localocean";
/// `ssh-keygen -l -E md5` of ED25519.
const ED25519_MD5: &str = "1c:d6:69:ae:8d:9b:e7:55:db:ab:55:19:94:f2:80:91";
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC4IfJfqhKeE7UJnuCdVxCfxrSUa7ye3TCMExPqL6ABVwGYlBUg8bYU8p+mZwldyza9maXc7FiITTmTtNVr4vN8g0qkw35VOKgRDDlZkt26nzuChsU+6VGaZLnWbtRRsNhvGrfdVDCc5T7OvAUeteVgJCk1KkVupaurYSXI0dSP6xXKmAm7crQy0Z39vChbCvROz+LZEs6bX/Jo9UQ31YzZTv/zEvYU6RknmDph7yUB+3oftKjQuCMwft+5FVy/BuIL8ZePeB7AnVUSn5bO55RWcnFAJhcd+HAdPpOgNEAD4aETESi0ekH7uLB5tw3BuP0j4FLkqxrIQr6A6vuLZ7xj rsa@localocean";
const RSA_MD5: &str = "1d:98:9c:53:24:ad:97:8f:e0:b4:70:5e:e2:df:1e:b9";

// ---------------------------------------------------------------- fakes

/// Boots instantly with addresses from 198.18.0.0/15; records every call.
#[derive(Default)]
struct FakeHv {
    calls: Mutex<Vec<String>>,
    next_ip: AtomicU32,
}

impl FakeHv {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn count(&self, prefix: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }
}

#[async_trait]
impl Hypervisor for FakeHv {
    async fn create(&self, spec: MachineSpec) -> anyhow::Result<MachineInfo> {
        let n = self.next_ip.fetch_add(1, Ordering::SeqCst) + 2;
        self.log(format!(
            "create {} {} keys={} volumes={}",
            spec.droplet_id,
            spec.name,
            spec.ssh_public_keys.len(),
            spec.volumes.len()
        ));
        Ok(MachineInfo {
            ipv4: Ipv4Addr::new(198, 18, (n / 250) as u8, (n % 250) as u8),
            gateway: Ipv4Addr::new(198, 18, 0, 1),
            netmask: Ipv4Addr::new(255, 254, 0, 0),
        })
    }
    async fn delete(&self, droplet_id: u64) -> anyhow::Result<()> {
        self.log(format!("delete {droplet_id}"));
        Ok(())
    }
    async fn power(&self, droplet_id: u64, action: Power) -> anyhow::Result<()> {
        self.log(format!("power {droplet_id} {action:?}"));
        Ok(())
    }
    async fn resize(&self, droplet_id: u64, memory_mib: u32, vcpus: u32) -> anyhow::Result<()> {
        self.log(format!("resize {droplet_id} {memory_mib} {vcpus}"));
        Ok(())
    }
    async fn create_volume(&self, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("create_volume {} {}", v.name, v.size_gib));
        Ok(())
    }
    async fn resize_volume(&self, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("resize_volume {} {}", v.name, v.size_gib));
        Ok(())
    }
    async fn delete_volume(&self, id: &str) -> anyhow::Result<()> {
        self.log(format!("delete_volume {id}"));
        Ok(())
    }
    async fn attach_volume(&self, droplet_id: u64, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("attach_volume {droplet_id} {}", v.name));
        Ok(())
    }
    async fn detach_volume(&self, droplet_id: u64, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("detach_volume {droplet_id} {}", v.name));
        Ok(())
    }
}

#[derive(Default)]
struct FakeSpaces {
    keys: Mutex<Vec<(String, String, Vec<Grant>)>>,
}

#[async_trait]
impl SpacesBackend for FakeSpaces {
    async fn create_key(&self, name: &str, grants: &[Grant]) -> anyhow::Result<IssuedKey> {
        let mut keys = self.keys.lock().unwrap();
        let access_key = format!("DO00TEST{:012}", keys.len());
        keys.push((access_key.clone(), name.to_string(), grants.to_vec()));
        Ok(IssuedKey {
            access_key,
            secret_key: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0".into(),
        })
    }
    async fn update_key(
        &self,
        access_key: &str,
        name: &str,
        grants: &[Grant],
    ) -> anyhow::Result<()> {
        let mut keys = self.keys.lock().unwrap();
        let k = keys
            .iter_mut()
            .find(|k| k.0 == access_key)
            .ok_or_else(|| anyhow::anyhow!("no such key"))?;
        k.1 = name.to_string();
        k.2 = grants.to_vec();
        Ok(())
    }
    async fn delete_key(&self, access_key: &str) -> anyhow::Result<()> {
        self.keys.lock().unwrap().retain(|k| k.0 != access_key);
        Ok(())
    }
}

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

// ---------------------------------------------------------------- the spec

struct Spec {
    doc: Value,
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/do-openapi.yaml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&widen_huge_integers(&text)).expect("do-openapi.yaml parses");
        Spec {
            doc: yaml_to_json(yaml),
        }
    })
}

/// serde_yaml cannot hold integers beyond u64 (the spec has 18446744073709552000 as a
/// bound); writing such literals as floats keeps their meaning as bounds.
fn widen_huge_integers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let mut prev = ' ';
    let flush = |digits: &mut String, out: &mut String, next: char| {
        out.push_str(digits);
        if digits.len() >= 20 && next != '.' {
            out.push_str(".0");
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit()
            && (!digits.is_empty() || !prev.is_ascii_alphanumeric() && prev != '.')
        {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                flush(&mut digits, &mut out, c);
            }
            out.push(c);
        }
        prev = c;
    }
    flush(&mut digits, &mut out, ' ');
    out
}

/// Converts by hand because a few limits in the spec (e.g. 2^64) do not fit serde_json's
/// integers; those become floats, which is all a bound needs.
fn yaml_to_json(v: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64().unwrap_or(f64::MAX))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(a) => Value::Array(a.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

/// Keywords of OpenAPI that are annotations or not JSON Schema; dropped before validation.
const NOT_SCHEMA: &[&str] = &[
    "example",
    "examples",
    "readOnly",
    "writeOnly",
    "discriminator",
    "xml",
    "deprecated",
    "externalDocs",
    "nullable",
    "description",
    "title",
];

impl Spec {
    fn resolve(&self, reference: &str) -> &Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local refs are expected, got {reference}"));
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"))
    }

    /// Inlines `$ref`s (recursive schemas are cut at a depth where any value is allowed)
    /// and turns OpenAPI 3.0 `nullable: true` into "this schema, or null".
    fn inline(&self, v: &Value, depth: usize) -> Value {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    if depth > 40 {
                        return json!({});
                    }
                    return self.inline(self.resolve(r), depth + 1);
                }
                let mut out = Map::new();
                for (k, x) in m {
                    if NOT_SCHEMA.contains(&k.as_str()) || k.starts_with("x-") {
                        continue;
                    }
                    let x = if k == "properties" || k == "patternProperties" {
                        // Property names are data, not keywords: keep every one.
                        Value::Object(
                            x.as_object()
                                .map(|props| {
                                    props
                                        .iter()
                                        .map(|(name, s)| (name.clone(), self.inline(s, depth)))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        )
                    } else {
                        self.inline(x, depth)
                    };
                    out.insert(k.clone(), x);
                }
                if m.get("nullable") == Some(&Value::Bool(true)) {
                    json!({ "anyOf": [Value::Object(out), {"type": "null"}] })
                } else {
                    Value::Object(out)
                }
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.inline(x, depth)).collect()),
            other => other.clone(),
        }
    }

    /// The JSON schema of a response, or None when the spec gives the status no body.
    /// Statuses the operation does not list fall back to its `default` response.
    fn response_schema(&self, path: &str, method: &str, status: u16) -> Option<Value> {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "the spec has no operation {method} {path}");
        let responses = &op["responses"];
        let resp = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| panic!("{method} {path}: the spec allows no status {status}"));
        let resp = match resp.get("$ref").and_then(Value::as_str) {
            Some(r) => self.resolve(r),
            None => resp,
        };
        resp.pointer("/content/application~1json/schema")
            .map(|s| self.inline(s, 0))
    }
}

// ---------------------------------------------------------------- harness

struct Harness {
    base: String,
    client: reqwest::Client,
    app: Arc<App>,
    hv: Arc<FakeHv>,
    spaces: Arc<FakeSpaces>,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
    ops: Mutex<BTreeSet<String>>,
    responses: AtomicUsize,
}

struct Resp {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
    text: String,
}

async fn serve(app: Arc<App>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api::router(app);
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}"), server)
}

async fn start_with(limit: u32, dir: Option<tempfile::TempDir>) -> Harness {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let hv = Arc::new(FakeHv::default());
    let spaces = Arc::new(FakeSpaces::default());
    let mut config = ApiConfig::new(dir.path().to_path_buf(), vec![TOKEN.to_string()]);
    config.rate_limit_per_minute = limit;
    let app = App::load(config, hv.clone(), spaces.clone()).unwrap();
    let (base, server) = serve(app.clone()).await;
    Harness {
        base,
        client: reqwest::Client::new(),
        app,
        hv,
        spaces,
        dir,
        server,
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
        let mut req = self.client.request(m, format!("{}{}", self.base, path));
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

/// Panics unless the response body is what the spec says for `template` and `method` at
/// this status (no body where the spec has none).
fn conforms(method: &str, template: &str, path: &str, r: &Resp) {
    let m = method.to_ascii_lowercase();
    match spec().response_schema(template, &m, r.status) {
        Some(schema) => {
            assert!(
                !r.body.is_null(),
                "{method} {path} answered {} without a JSON body: {:?}",
                r.status,
                r.text
            );
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft4)
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("schema of {method} {template} {}: {e}", r.status));
            let errors: Vec<String> = validator
                .iter_errors(&r.body)
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {path} ({}) does not match the spec:\n{}\nbody: {}",
                r.status,
                errors.join("\n"),
                r.body
            );
        }
        None => assert!(
            r.text.is_empty(),
            "{method} {path} ({}) should have no body, got {:?}",
            r.status,
            r.text
        ),
    }
}

fn assert_error(r: &Resp, status: u16, id: &str) {
    assert_eq!(r.status, status, "expected {status} {id}, got {}", r.text);
    assert_eq!(r.body["id"], id, "{}", r.text);
    assert!(r.body["message"].is_string(), "{}", r.text);
}

// ---------------------------------------------------------------- conformance

#[tokio::test]
async fn conformance_every_operation() {
    let h = start().await;

    // Catalogue and account.
    let r = h.call("GET", "/v2/account", "/v2/account", None).await;
    assert_eq!(r.status, 200);
    let r = h.call("GET", "/v2/regions", "/v2/regions", None).await;
    let slugs: Vec<&str> = r.body["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["slug"].as_str().unwrap())
        .collect();
    for want in [
        "ams3", "nyc3", "sfo3", "fra1", "sgp1", "lon1", "tor1", "blr1", "syd1",
    ] {
        assert!(slugs.contains(&want), "region {want} missing");
    }
    let r = h.call("GET", "/v2/sizes", "/v2/sizes", None).await;
    let one_gb = r.body["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slug"] == "s-1vcpu-1gb")
        .cloned()
        .unwrap();
    assert_eq!(one_gb["memory"], 1024);
    assert_eq!(one_gb["price_monthly"], 6.0);
    let r = h
        .call("GET", "/v2/images", "/v2/images?type=distribution", None)
        .await;
    assert!(r.body["images"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["slug"] == "debian-12-x64" && i["distribution"] == "Debian"));
    h.call(
        "GET",
        "/v2/images/{image_id}",
        "/v2/images/debian-12-x64",
        None,
    )
    .await;

    // SSH keys.
    let r = h
        .call(
            "POST",
            "/v2/account/keys",
            "/v2/account/keys",
            Some(json!({"name": "ed", "public_key": ED25519})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["ssh_key"]["fingerprint"], ED25519_MD5);
    let ed_id = r.body["ssh_key"]["id"].as_u64().unwrap();
    let r = h
        .call(
            "POST",
            "/v2/account/keys",
            "/v2/account/keys",
            Some(json!({"name": "rsa", "public_key": RSA})),
        )
        .await;
    assert_eq!(r.body["ssh_key"]["fingerprint"], RSA_MD5);
    let k = "/v2/account/keys/{ssh_key_identifier}";
    let r = h
        .call("GET", k, &format!("/v2/account/keys/{ed_id}"), None)
        .await;
    assert_eq!(r.body["ssh_key"]["name"], "ed");
    let r = h
        .call("GET", k, &format!("/v2/account/keys/{RSA_MD5}"), None)
        .await;
    assert_eq!(r.body["ssh_key"]["name"], "rsa");
    let r = h
        .call(
            "PUT",
            k,
            &format!("/v2/account/keys/{ed_id}"),
            Some(json!({"name": "ed2"})),
        )
        .await;
    assert_eq!(r.body["ssh_key"]["name"], "ed2");
    let r = h
        .call("GET", "/v2/account/keys", "/v2/account/keys", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 2);

    // Volumes (one made before the droplet, attached at create).
    let r = h
        .call(
            "POST",
            "/v2/volumes",
            "/v2/volumes",
            Some(json!({"name": "data-1", "size_gigabytes": 10, "region": "nyc3",
                        "filesystem_type": "ext4", "description": "registry data", "tags": ["reg"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let vol1 = r.body["volume"]["id"].as_str().unwrap().to_string();

    // Droplets.
    let r = h
        .call(
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(json!({
                "name": "reg-1.example.com", "region": "nyc3", "size": "s-1vcpu-1gb",
                "image": "debian-12-x64", "ssh_keys": [ed_id, RSA_MD5],
                "user_data": "#cloud-config\n", "tags": ["registry", "env:test"],
                "volumes": [vol1], "monitoring": true, "ipv6": true
            })),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["droplet"]["status"], "new");
    let d1 = r.body["droplet"]["id"].as_u64().unwrap();
    let create_action = r.body["links"]["actions"][0]["id"].as_u64().unwrap();
    assert_eq!(r.body["links"]["actions"][0]["rel"], "create");
    let a = h.wait_action(create_action).await;
    assert_eq!(a["status"], "completed");
    assert_eq!(a["type"], "create");
    assert!(h
        .hv
        .calls()
        .contains(&format!("create {d1} reg-1.example.com keys=2 volumes=1")));
    let dp = "/v2/droplets/{droplet_id}";
    let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
    assert_eq!(r.body["droplet"]["status"], "active");
    let v4 = &r.body["droplet"]["networks"]["v4"][0];
    assert!(v4["ip_address"].as_str().unwrap().starts_with("198.18."));
    assert_eq!(v4["type"], "public");
    assert_eq!(r.body["droplet"]["volume_ids"][0], vol1.as_str());

    let r = h
        .call(
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(json!({"names": ["multi-1", "multi-2"], "region": "nyc3",
                        "size": "s-1vcpu-512mb-10gb", "image": "debian-12-x64", "tags": ["multi"]})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["droplets"].as_array().unwrap().len(), 2);
    for l in r.body["links"]["actions"].as_array().unwrap() {
        h.wait_action(l["id"].as_u64().unwrap()).await;
    }
    let r = h
        .call("GET", "/v2/droplets", "/v2/droplets?per_page=2", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 3);

    // Droplet actions.
    let da = "/v2/droplets/{droplet_id}/actions";
    let path = format!("/v2/droplets/{d1}/actions");
    for (t, status) in [
        ("reboot", "active"),
        ("shutdown", "off"),
        ("power_on", "active"),
        ("power_off", "off"),
    ] {
        let r = h.call("POST", da, &path, Some(json!({"type": t}))).await;
        assert_eq!(r.status, 201, "{t}: {}", r.text);
        let a = h
            .wait_action(r.body["action"]["id"].as_u64().unwrap())
            .await;
        assert_eq!(a["status"], "completed", "{t}");
        let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
        assert_eq!(r.body["droplet"]["status"], status, "after {t}");
    }
    let r = h
        .call(
            "POST",
            da,
            &path,
            Some(json!({"type": "resize", "size": "s-2vcpu-4gb", "disk": true})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let resize_action = r.body["action"]["id"].as_u64().unwrap();
    h.wait_action(resize_action).await;
    let r = h
        .call(
            "POST",
            da,
            &path,
            Some(json!({"type": "rename", "name": "reg-1b"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
    assert_eq!(r.body["droplet"]["size_slug"], "s-2vcpu-4gb");
    assert_eq!(r.body["droplet"]["memory"], 4096);
    assert_eq!(r.body["droplet"]["disk"], 80);
    assert_eq!(r.body["droplet"]["name"], "reg-1b");
    assert!(h.hv.calls().contains(&format!("resize {d1} 4096 2")));
    let r = h.call("GET", da, &path, None).await;
    assert!(r.body["meta"]["total"].as_u64().unwrap() >= 7);
    let r = h
        .call(
            "GET",
            "/v2/droplets/{droplet_id}/actions/{action_id}",
            &format!("/v2/droplets/{d1}/actions/{resize_action}"),
            None,
        )
        .await;
    assert_eq!(r.body["action"]["type"], "resize");
    let r = h.call("GET", "/v2/actions", "/v2/actions", None).await;
    assert_eq!(r.status, 200);

    // Volumes.
    let r = h
        .call(
            "GET",
            "/v2/volumes",
            "/v2/volumes?name=data-1&region=nyc3",
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 1);
    let vp = "/v2/volumes/{volume_id}";
    let r = h
        .call("GET", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_eq!(r.body["volume"]["droplet_ids"][0], d1);
    let r = h
        .call("DELETE", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_error(&r, 409, "conflict");
    let va = "/v2/volumes/{volume_id}/actions";
    let vpath = format!("/v2/volumes/{vol1}/actions");
    let r = h
        .call(
            "POST",
            va,
            &vpath,
            Some(json!({"type": "detach", "droplet_id": d1, "region": "nyc3"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        h.wait_action(r.body["action"]["id"].as_u64().unwrap())
            .await["status"],
        "completed"
    );
    let r = h
        .call(
            "POST",
            va,
            &vpath,
            Some(json!({"type": "resize", "size_gigabytes": 20, "region": "nyc3"})),
        )
        .await;
    let resize_vol = r.body["action"]["id"].as_u64().unwrap();
    h.wait_action(resize_vol).await;
    let r = h
        .call(
            "POST",
            "/v2/volumes/actions",
            "/v2/volumes/actions",
            Some(json!({"type": "attach", "volume_name": "data-1", "region": "nyc3", "droplet_id": d1})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    h.wait_action(r.body["action"]["id"].as_u64().unwrap())
        .await;
    let r = h
        .call("GET", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_eq!(r.body["volume"]["size_gigabytes"], 20);
    assert_eq!(r.body["volume"]["droplet_ids"][0], d1);
    let r = h.call("GET", va, &vpath, None).await;
    assert_eq!(r.body["meta"]["total"], 3);
    let r = h
        .call(
            "GET",
            "/v2/volumes/{volume_id}/actions/{action_id}",
            &format!("/v2/volumes/{vol1}/actions/{resize_vol}"),
            None,
        )
        .await;
    assert_eq!(r.body["action"]["type"], "resize_volume");
    assert!(h
        .hv
        .calls()
        .contains(&"resize_volume data-1 20".to_string()));

    // Domains and records.
    let r = h
        .call(
            "POST",
            "/v2/domains",
            "/v2/domains",
            Some(json!({"name": "example.com", "ip_address": "198.18.0.10"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    h.call("GET", "/v2/domains", "/v2/domains", None).await;
    let r = h
        .call(
            "GET",
            "/v2/domains/{domain_name}",
            "/v2/domains/example.com",
            None,
        )
        .await;
    assert!(r.body["domain"]["zone_file"]
        .as_str()
        .unwrap()
        .contains("ns1.digitalocean.com."));
    let rl = "/v2/domains/{domain_name}/records";
    let r = h
        .call("GET", rl, "/v2/domains/example.com/records", None)
        .await;
    let types: Vec<&str> = r.body["domain_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SOA", "NS", "NS", "NS", "A"]);
    let mut ids = Vec::new();
    for rec in [
        json!({"type": "A", "name": "registry", "data": "198.18.0.10", "ttl": 60}),
        json!({"type": "AAAA", "name": "registry", "data": "2001:db8::1"}),
        json!({"type": "CNAME", "name": "www", "data": "registry.example.com."}),
        json!({"type": "TXT", "name": "_acme-challenge.registry", "data": "token-value"}),
        json!({"type": "CAA", "name": "@", "data": "letsencrypt.org", "flags": 0, "tag": "issue"}),
        json!({"type": "NS", "name": "sub", "data": "ns1.example.net."}),
        json!({"type": "MX", "name": "@", "data": "mail.example.com.", "priority": 10}),
        json!({"type": "SRV", "name": "_sip._tcp", "data": "sip.example.com.", "priority": 1, "port": 5060, "weight": 5}),
    ] {
        let r = h
            .call(
                "POST",
                rl,
                "/v2/domains/example.com/records",
                Some(rec.clone()),
            )
            .await;
        assert_eq!(r.status, 201, "{rec}: {}", r.text);
        ids.push(r.body["domain_record"]["id"].as_u64().unwrap());
    }
    let r = h
        .call(
            "GET",
            rl,
            "/v2/domains/example.com/records?name=registry.example.com&type=A",
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 1);
    assert_eq!(r.body["domain_records"][0]["data"], "198.18.0.10");
    let rp = "/v2/domains/{domain_name}/records/{domain_record_id}";
    let one = format!("/v2/domains/example.com/records/{}", ids[0]);
    let r = h.call("GET", rp, &one, None).await;
    assert_eq!(r.body["domain_record"]["ttl"], 60);
    let r = h
        .call(
            "PUT",
            rp,
            &one,
            Some(json!({"type": "A", "name": "registry", "data": "198.18.0.11"})),
        )
        .await;
    assert_eq!(r.body["domain_record"]["data"], "198.18.0.11");
    let r = h.call("PATCH", rp, &one, Some(json!({"ttl": 120}))).await;
    assert_eq!(r.body["domain_record"]["ttl"], 120);
    assert_eq!(r.body["domain_record"]["data"], "198.18.0.11");
    let zones = api::zones(&h.app).zones();
    let zone = zones.iter().find(|z| z.name == "example.com").unwrap();
    assert!(zone
        .records
        .iter()
        .any(|r| r.name == "registry" && r.data == "198.18.0.11"));
    assert!(!zone.records.iter().any(|r| r.record_type == "SOA"));
    let r = h.call("DELETE", rp, &one, None).await;
    assert_eq!(r.status, 204);
    let r = h.call("GET", rp, &one, None).await;
    assert_error(&r, 404, "not_found");

    // Firewalls.
    let fw_body = json!({
        "name": "registry-fw",
        "droplet_ids": [d1],
        "tags": ["registry"],
        "inbound_rules": [
            {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["0.0.0.0/0", "::/0"]}},
            {"protocol": "tcp", "ports": "443", "sources": {"addresses": ["0.0.0.0/0"]}},
            {"protocol": "icmp", "sources": {"addresses": ["0.0.0.0/0"]}}
        ],
        "outbound_rules": [
            {"protocol": "tcp", "ports": "all", "destinations": {"addresses": ["0.0.0.0/0"]}}
        ]
    });
    let r = h
        .call(
            "POST",
            "/v2/firewalls",
            "/v2/firewalls",
            Some(fw_body.clone()),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let fw = r.body["firewall"]["id"].as_str().unwrap().to_string();
    let fp = "/v2/firewalls/{firewall_id}";
    h.call("GET", fp, &format!("/v2/firewalls/{fw}"), None)
        .await;
    h.call("GET", "/v2/firewalls", "/v2/firewalls", None).await;
    let mut upd = fw_body.clone();
    upd["name"] = json!("registry-fw-2");
    upd["droplet_ids"] = json!([]);
    let r = h
        .call("PUT", fp, &format!("/v2/firewalls/{fw}"), Some(upd))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["firewall"]["name"], "registry-fw-2");
    // Tags: create one, put it on a droplet and take it off again.
    let r = h
        .call(
            "POST",
            "/v2/tags",
            "/v2/tags",
            Some(json!({"name": "team:registry"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["tag"]["name"], "team:registry");
    let tr = "/v2/tags/{tag_id}/resources";
    let res = json!({"resources": [{"resource_id": d1.to_string(), "resource_type": "droplet"}]});
    let r = h
        .call(
            "POST",
            tr,
            "/v2/tags/team:registry/resources",
            Some(res.clone()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = h
        .call(
            "GET",
            "/v2/droplets/{droplet_id}",
            &format!("/v2/droplets/{d1}"),
            None,
        )
        .await;
    assert!(
        r.body["droplet"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("team:registry")),
        "{}",
        r.text
    );
    let r = h
        .call("DELETE", tr, "/v2/tags/team:registry/resources", Some(res))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = h
        .call(
            "GET",
            "/v2/droplets/{droplet_id}",
            &format!("/v2/droplets/{d1}"),
            None,
        )
        .await;
    assert!(
        !r.body["droplet"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("team:registry")),
        "{}",
        r.text
    );

    let fd = "/v2/firewalls/{firewall_id}/droplets";
    let r = h
        .call(
            "POST",
            fd,
            &format!("/v2/firewalls/{fw}/droplets"),
            Some(json!({"droplet_ids": [d1]})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call("GET", fp, &format!("/v2/firewalls/{fw}"), None)
        .await;
    assert_eq!(r.body["firewall"]["droplet_ids"], json!([d1]));
    let r = h
        .call(
            "DELETE",
            fd,
            &format!("/v2/firewalls/{fw}/droplets"),
            Some(json!({"droplet_ids": [d1]})),
        )
        .await;
    assert_eq!(r.status, 204);

    // Spaces keys.
    let r = h
        .call(
            "POST",
            "/v2/spaces/keys",
            "/v2/spaces/keys",
            Some(json!({"name": "registry", "grants": [{"bucket": "registry-data", "permission": "readwrite"}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ak = r.body["key"]["access_key"].as_str().unwrap().to_string();
    assert!(r.body["key"]["secret_key"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let sk = "/v2/spaces/keys/{access_key}";
    let r = h
        .call("GET", sk, &format!("/v2/spaces/keys/{ak}"), None)
        .await;
    assert_eq!(r.body["key"]["name"], "registry");
    assert!(
        r.body["key"].get("secret_key").is_none(),
        "secret shown after create"
    );
    let r = h
        .call("GET", "/v2/spaces/keys", "/v2/spaces/keys", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 1);
    let r = h
        .call(
            "PUT",
            sk,
            &format!("/v2/spaces/keys/{ak}"),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(r.body["key"]["name"], "renamed");
    let r = h
        .call(
            "PATCH",
            sk,
            &format!("/v2/spaces/keys/{ak}"),
            Some(json!({"grants": [{"bucket": "registry-data", "permission": "read"}]})),
        )
        .await;
    assert_eq!(r.body["key"]["grants"][0]["permission"], "read");
    assert_eq!(h.spaces.keys.lock().unwrap()[0].2[0].permission, "read");
    let r = h
        .call("DELETE", sk, &format!("/v2/spaces/keys/{ak}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(h.spaces.keys.lock().unwrap().is_empty());

    // Deletes.
    let r = h
        .call("DELETE", fp, &format!("/v2/firewalls/{fw}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call(
            "DELETE",
            "/v2/domains/{domain_name}",
            "/v2/domains/example.com",
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call(
            "DELETE",
            "/v2/droplets",
            "/v2/droplets?tag_name=multi",
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call("DELETE", dp, &format!("/v2/droplets/{d1}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(h.hv.calls().contains(&format!("delete {d1}")));
    let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
    assert_error(&r, 404, "not_found");
    // Deleting the droplet detached its volume, which stays.
    let r = h
        .call("GET", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_eq!(r.body["volume"]["droplet_ids"], json!([]));
    let r = h
        .call("DELETE", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = h.call("GET", "/v2/droplets", "/v2/droplets", None).await;
    assert_eq!(r.body["meta"]["total"], 0);
    let r = h
        .call("DELETE", k, &format!("/v2/account/keys/{RSA_MD5}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call("DELETE", k, &format!("/v2/account/keys/{ed_id}"), None)
        .await;
    assert_eq!(r.status, 204);

    let ops = h.ops.lock().unwrap().len();
    println!(
        "conformance: checked {ops} operations, {} responses",
        h.responses.load(Ordering::SeqCst)
    );
    assert!(ops >= 45, "only {ops} operations exercised");
    h.server.abort();
}

/// The schema check must catch a broken body, or the conformance test proves nothing.
#[test]
fn schema_check_rejects_a_broken_droplet() {
    let schema = spec()
        .response_schema("/v2/droplets/{droplet_id}", "get", 200)
        .unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let size = json!({"slug": "s-1vcpu-1gb", "memory": 1024, "vcpus": 1, "disk": 25,
        "transfer": 1.0, "price_monthly": 6.0, "price_hourly": 0.00893,
        "regions": ["nyc3"], "available": true, "description": "Basic"});
    let region = json!({"name": "New York 3", "slug": "nyc3", "features": [],
        "available": true, "sizes": []});
    let good = json!({"droplet": {
        "id": 1, "name": "a", "memory": 1024, "vcpus": 1, "disk": 25, "locked": false,
        "status": "active", "kernel": null, "created_at": "2024-01-01T00:00:00Z",
        "features": [], "backup_ids": [], "next_backup_window": null, "snapshot_ids": [],
        "image": {}, "volume_ids": [], "size": size, "size_slug": "s-1vcpu-1gb",
        "networks": {"v4": [{"ip_address": "198.18.0.2", "netmask": "255.254.0.0",
            "gateway": "198.18.0.1", "type": "public"}], "v6": []},
        "region": region, "tags": []}});
    assert!(
        validator.is_valid(&good),
        "{:?}",
        validator.validate(&good).err()
    );
    for (field, bad) in [
        ("status", json!("running")),
        ("id", json!("1")),
        (
            "networks",
            json!({"v4": [{"ip_address": "not-an-ip", "type": "public"}]}),
        ),
        ("kernel", json!(5)),
    ] {
        let mut broken = good.clone();
        broken["droplet"][field] = bad;
        assert!(
            !validator.is_valid(&broken),
            "broken {field} passed validation"
        );
    }
    let mut missing = good.clone();
    missing["droplet"]
        .as_object_mut()
        .unwrap()
        .remove("size_slug");
    assert!(
        !validator.is_valid(&missing),
        "a missing required field passed"
    );
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
    h.app.set_ssh_faults(ssh.clone());
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
    h.server.abort();
    let dir = h.dir;
    drop(h.app);
    let h2 = start_with(10_000, Some(dir)).await;
    assert_eq!(h2.app.droplet_ids(), vec![d]);
    let machines = h2.app.active_machines();
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
    h2.app
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
    let zones = api::zones(&h2.app).zones();
    assert!(zones
        .iter()
        .any(|z| z.name == "persist.test" && z.records.iter().any(|r| r.name == "www")));
    h2.server.abort();
}
