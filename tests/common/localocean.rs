//! One localocean instance per test: `localocean up` in a temp state dir, `down` on drop
//! (which removes every machine, namespace, mount and process of that instance, by its ids).
//! On a failed test the instance's log is copied next to the temp dir first.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

pub struct LocalOcean {
    pub bin: PathBuf,
    pub state: tempfile::TempDir,
    pub api_url: String,
    pub token: String,
    pub dns: SocketAddr,
    pub s3_url: String,
    http: reqwest::blocking::Client,
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

impl LocalOcean {
    pub fn up() -> Self {
        let bin = localocean_bin();
        let state = tempfile::Builder::new()
            .prefix("tf-acc-test-lo-")
            .tempdir()
            .unwrap();
        let out = Command::new(&bin)
            .args(["up", "--json", "--state-dir"])
            .arg(state.path())
            .output()
            .expect("running localocean up");
        assert!(
            out.status.success(),
            "localocean up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let info: Value = serde_json::from_slice(&out.stdout).expect("localocean up --json");
        Self {
            bin,
            api_url: info["api_url"].as_str().unwrap().to_owned(),
            token: info["token"].as_str().unwrap().to_owned(),
            dns: info["dns"].as_str().unwrap().parse().unwrap(),
            s3_url: info["s3_url"].as_str().unwrap().to_owned(),
            state,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// The host side of this instance's bridge, where its DNS answers on port 53.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        let inst: Value = serde_json::from_slice(
            &std::fs::read(self.state.path().join("instance.json")).unwrap(),
        )
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

    pub fn arm_fault(&self, spec: Value) -> Value {
        let url = format!("{}/_localocean/faults", self.api_url);
        let resp = self.http.post(&url).json(&spec).send().unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().unwrap_or(Value::Null);
        assert_eq!(status, 201, "arming {spec}: {body}");
        body
    }

    pub fn droplets(&self) -> Vec<Value> {
        self.api("GET", "/v2/droplets?per_page=200", None).1["droplets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn firewalls(&self) -> Vec<Value> {
        self.api("GET", "/v2/firewalls?per_page=200", None).1["firewalls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
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
        let log =
            std::fs::read_to_string(self.state.path().join("localocean.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for LocalOcean {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!(
                "{}.log",
                self.state.path().file_name().unwrap().to_string_lossy()
            ));
            let _ = std::fs::copy(self.state.path().join("localocean.log"), &keep);
            eprintln!("localocean log kept at {}", keep.display());
        }
        let out = Command::new(&self.bin)
            .args(["down", "--state-dir"])
            .arg(self.state.path())
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
