//! localocean for the tests: one instance per test binary, shared by every test that does not
//! interfere with others (each test its own domain and names), and instances of their own for
//! the tests that arm faults. Each is removed by its own ids, even when this binary is killed.
//!
//! Every instance is started with `--exit-with <this process>`: when the test binary exits,
//! however it exits, localocean removes every machine, namespace, mount and process it made
//! (a Rust static is never dropped, so the shared instance has no other way down). An own
//! instance also goes `down` when dropped. `LOCALOCEAN_TEST_STATE_DIR` names the shared
//! instance's state dir, so that scripts/test can run `localocean down` on it whatever
//! happens; without it a temp dir is used. A failed test keeps a copy of the log.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

/// Where scripts/test puts the shared instance (it runs `localocean down` on it at the end).
pub const STATE_DIR_ENV: &str = "LOCALOCEAN_TEST_STATE_DIR";

pub struct LocalOcean {
    pub bin: PathBuf,
    /// The state dir; `localocean down` removes it.
    pub state: PathBuf,
    pub api_url: String,
    pub token: String,
    pub dns: SocketAddr,
    /// The recursive resolver: follows NS delegations from the zones (to droplets' own DNS).
    pub resolver: SocketAddr,
    pub s3_url: String,
    http: reqwest::blocking::Client,
    /// Own instances go down when dropped; the shared one when the binary exits.
    own: bool,
}

pub fn localocean_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_terraform-provider-docker"))
        .parent()
        .unwrap();
    let bin = dir.join("localocean");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --workspace --bins` (make test does)",
        bin.display()
    );
    bin
}

/// A test's localocean: the binary's shared instance, or one of its own. When the test
/// fails, the instance's log is copied out first (the shared one's whole log: its lines name
/// droplet ids, which the test's output names too).
pub enum Ocean {
    /// The shared instance, seen through a token of the test's own.
    Shared(LocalOcean),
    Own(LocalOcean),
}

/// The shared instance's droplet limit (see [`LocalOcean::start`]).
const SHARED_DROPLET_LIMIT: u32 = 100;

impl Ocean {
    /// The binary's shared instance, started on first use, with an API token of this test's
    /// own: DigitalOcean limits each token to 250 requests a minute, and a dozen tests on one
    /// token (each polling actions) ran into it, as a dozen people on one token would.
    pub fn shared() -> Ocean {
        static SHARED: OnceLock<LocalOcean> = OnceLock::new();
        let shared = SHARED.get_or_init(|| {
            let state = match std::env::var_os(STATE_DIR_ENV) {
                Some(dir) => PathBuf::from(dir),
                None => tempfile::Builder::new()
                    .prefix("tf-acc-test-lo-shared-")
                    .tempdir()
                    .unwrap()
                    // The instance removes its state dir itself (`--exit-with`).
                    .keep(),
            };
            LocalOcean::start(state, false)
        });
        Ocean::Shared(shared.with_new_token())
    }

    /// An instance of this test's own, for a test that arms faults (they act on whatever
    /// request or droplet comes next, which on a shared instance may be another test's).
    pub fn own() -> Ocean {
        let state = tempfile::Builder::new()
            .prefix("tf-acc-test-lo-")
            .tempdir()
            .unwrap()
            .keep();
        Ocean::Own(LocalOcean::start(state, true))
    }
}

impl Ocean {
    /// The image a test's registries boot from: on the shared instance, its snapshot with
    /// the registry's packages installed (made on first use, see `support::baked`); on an
    /// instance of the test's own, `None`: the stock image.
    pub fn baked_image(&self) -> Option<String> {
        match self {
            Ocean::Shared(lo) => Some(super::baked::image(lo)),
            Ocean::Own(_) => None,
        }
    }
}

impl Deref for Ocean {
    type Target = LocalOcean;
    fn deref(&self) -> &LocalOcean {
        match self {
            Ocean::Shared(lo) => lo,
            Ocean::Own(lo) => lo,
        }
    }
}

impl Drop for Ocean {
    fn drop(&mut self) {
        // An own instance keeps its log in its own Drop, before `down`.
        if let Ocean::Shared(lo) = self {
            if std::thread::panicking() {
                lo.keep_log();
            }
        }
    }
}

impl LocalOcean {
    fn start(state: PathBuf, own: bool) -> LocalOcean {
        let bin = localocean_bin();
        let up = || {
            let mut cmd = Command::new(&bin);
            cmd.args(["up", "--json", "--state-dir"])
                .arg(&state)
                .arg("--exit-with")
                .arg(std::process::id().to_string());
            if !own {
                // One account for every test at once: up to about 50 droplets live together
                // (the replicas tests hold three each at times), as an account whose limit
                // DigitalOcean raised would. An instance of a test's own keeps the default 25.
                cmd.args(["--droplet-limit", &SHARED_DROPLET_LIMIT.to_string()]);
            }
            cmd.output().expect("running localocean up")
        };
        // What a failed start made (its slot, bridge, state dir) is removed by its own state
        // dir, as after any instance.
        let down = || {
            let _ = Command::new(&bin)
                .args(["down", "--state-dir"])
                .arg(&state)
                .output();
        };
        let said = |out: &std::process::Output| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let mut out = up();
        if !out.status.success() {
            // Started once more, from nothing: one CI run's shared instance found its slot's
            // S3 port held by another process for a moment (a port taken at bind time gets a
            // free one at the next start). A second failure fails the test with both reasons.
            let first = said(&out);
            eprintln!("localocean up failed, trying once more: {first}");
            down();
            std::thread::sleep(Duration::from_secs(2));
            out = up();
            if !out.status.success() {
                down();
                panic!("localocean up failed twice: {first}\nthen: {}", said(&out));
            }
        }
        let info: Value = serde_json::from_slice(&out.stdout).expect("localocean up --json");
        LocalOcean {
            bin,
            api_url: info["api_url"].as_str().unwrap().to_owned(),
            token: info["token"].as_str().unwrap().to_owned(),
            dns: info["dns"].as_str().unwrap().parse().unwrap(),
            resolver: info["resolver"].as_str().unwrap().parse().unwrap(),
            s3_url: info["s3_url"].as_str().unwrap().to_owned(),
            state,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            own,
        }
    }

    /// The same instance under a new token of the same account (`POST /_localocean/tokens`).
    fn with_new_token(&self) -> LocalOcean {
        let url = format!("{}/_localocean/tokens", self.api_url);
        let resp = self.http.post(&url).send().unwrap();
        assert_eq!(resp.status().as_u16(), 201, "minting a token");
        let body: Value = resp.json().unwrap();
        LocalOcean {
            bin: self.bin.clone(),
            state: self.state.clone(),
            api_url: self.api_url.clone(),
            token: body["token"].as_str().unwrap().to_owned(),
            dns: self.dns,
            resolver: self.resolver,
            s3_url: self.s3_url.clone(),
            http: self.http.clone(),
            own: false,
        }
    }

    /// The host side of this instance's bridge, where its DNS answers on port 53.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        let inst: Value =
            serde_json::from_slice(&std::fs::read(self.state.join("instance.json")).unwrap())
                .unwrap();
        let slot = inst["slot"].as_u64().unwrap() as u8;
        Ipv4Addr::new(198, 18, slot, 1)
    }

    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.api_url, path);
        let mut req = self
            .http
            .request(method.parse().unwrap(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn create_domain(&self, name: &str) {
        let (status, body) = self.api("POST", "/v2/domains", Some(json!({ "name": name })));
        assert_eq!(status, 201, "creating domain {name}: {body}");
    }

    /// Arms a fault; only on an instance of the test's own (see [`Ocean::own`]).
    pub fn arm_fault(&self, spec: Value) -> Value {
        assert!(
            self.own,
            "faults are armed on an instance of the test's own"
        );
        let url = format!("{}/_localocean/faults", self.api_url);
        let resp = self.http.post(&url).json(&spec).send().unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().unwrap_or(Value::Null);
        assert_eq!(status, 201, "arming {spec}: {body}");
        body
    }

    /// Every object of a kind in the account (`droplets`, `firewalls`, `volumes`).
    fn list(&self, kind: &str) -> Vec<Value> {
        let (status, body) = self.api("GET", &format!("/v2/{kind}?per_page=200"), None);
        assert_eq!(status, 200, "listing {kind}: {body}");
        body[kind].as_array().cloned().unwrap_or_default()
    }

    /// Objects of a kind whose name is `name` or starts with `name-`: what one registry named
    /// `name` made (its droplet, `<name>-registry` firewall, `<name>-registry-data` volume).
    fn list_of(&self, kind: &str, name: &str) -> Vec<Value> {
        let prefix = format!("{name}-");
        self.list(kind)
            .into_iter()
            .filter(|o| {
                let n = o["name"].as_str().unwrap_or_default();
                n == name || n.starts_with(&prefix)
            })
            .collect()
    }

    /// The droplets of the registry named `name`.
    pub fn droplets_of(&self, name: &str) -> Vec<Value> {
        self.list_of("droplets", name)
    }

    pub fn firewalls_of(&self, name: &str) -> Vec<Value> {
        self.list_of("firewalls", name)
    }

    pub fn volumes_of(&self, name: &str) -> Vec<Value> {
        self.list_of("volumes", name)
    }

    pub fn records(&self, domain: &str) -> Vec<Value> {
        self.api(
            "GET",
            &format!("/v2/domains/{domain}/records?per_page=200"),
            None,
        )
        .1["domain_records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.state.join("localocean.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Copies the log next to the state dir, which `down` removes.
    fn keep_log(&self) {
        let keep = self.state.with_file_name(format!(
            "{}-{}.log",
            self.state.file_name().unwrap().to_string_lossy(),
            std::thread::current()
                .name()
                .unwrap_or("test")
                .replace("::", "-")
        ));
        let _ = std::fs::copy(self.state.join("localocean.log"), &keep);
        eprintln!("localocean log kept at {}", keep.display());
    }
}

impl Drop for LocalOcean {
    fn drop(&mut self) {
        if !self.own {
            return;
        }
        if std::thread::panicking() {
            self.keep_log();
        }
        let out = Command::new(&self.bin)
            .args(["down", "--state-dir"])
            .arg(&self.state)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "localocean down failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("localocean down failed: {e}"),
        }
    }
}

/// A name no other test uses: `tf-acc-test-<8 hex>`, a valid droplet name and DNS label.
pub fn unique_label() -> String {
    use rand::Rng;
    format!("tf-acc-test-{:08x}", rand::thread_rng().gen::<u32>())
}
