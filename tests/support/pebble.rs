//! A Pebble ACME test CA on loopback for the tests: free ports, its own listener certificate,
//! a DNS server of our choosing; killed on drop, logs kept in its temp dir when a test fails.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// Pebble as Debian installs it.
pub const PEBBLE_BIN: &str = "/usr/bin/pebble";

/// Knobs a test may turn.
#[derive(Clone, Debug, Default)]
pub struct PebbleOptions {
    /// Seconds a certificate is valid (`certificateValidityPeriod`, Pebble >= 2.3); `None`: Pebble's
    /// default (about 5 years in 2.4).
    pub validity_seconds: Option<u64>,
    /// `PEBBLE_WFE_NONCEREJECT`: percentage of good nonces rejected as badNonce. `None` keeps
    /// Pebble's default (5%), so clients' nonce retries are exercised.
    pub nonce_reject_percent: Option<u8>,
    /// `PEBBLE_AUTHZREUSE`; tests want fresh challenges, so the default here is 0.
    pub authz_reuse_percent: Option<u8>,
    /// Where the directory listens; loopback by default. A droplet that renews its own
    /// certificate reaches Pebble on localocean's bridge address.
    pub listen_ip: Option<IpAddr>,
}

pub struct Pebble {
    child: Child,
    dir: Option<tempfile::TempDir>,
    listen: SocketAddr,
    mgmt: SocketAddr,
    http_port: u16,
    listener_ca_pem: String,
}

fn free_port() -> u16 {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn free_port_on(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("picking a free loopback port")
}

impl Pebble {
    /// Starts Pebble resolving names through `dns_server` and validating HTTP-01 on `http_port`.
    pub fn start(dns_server: SocketAddr, http_port: u16) -> Pebble {
        Pebble::start_with(dns_server, http_port, PebbleOptions::default())
    }

    pub fn start_with(dns_server: SocketAddr, http_port: u16, opts: PebbleOptions) -> Pebble {
        // A port picked free may be taken by another test before Pebble binds it, and
        // Pebble then exits at once: started again, on other ports, twice at most.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(dns_server, http_port, &opts) {
                Ok(p) => return p,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "pebble did not start in three tries:\n{}",
            failures.join("\n---\n")
        );
    }

    fn try_start(
        dns_server: SocketAddr,
        http_port: u16,
        opts: &PebbleOptions,
    ) -> Result<Pebble, String> {
        assert!(
            Path::new(PEBBLE_BIN).exists(),
            "pebble not found at {PEBBLE_BIN}: run scripts/setup (it installs the Debian package `pebble`)"
        );
        let dir = tempfile::Builder::new()
            .prefix("pebble-")
            .tempdir()
            .expect("pebble temp dir");
        let ip = opts.listen_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (ca_pem, cert_pem, key_pem) = listener_certificates(ip);
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, &cert_pem).unwrap();
        std::fs::write(&key_path, &key_pem).unwrap();
        std::fs::write(dir.path().join("listener-ca.pem"), &ca_pem).unwrap();

        let listen = SocketAddr::new(ip, free_port_on(ip));
        let mgmt = SocketAddr::new(ip, free_port_on(ip));
        let mut pebble = serde_json::json!({
            "listenAddress": listen.to_string(),
            "managementListenAddress": mgmt.to_string(),
            "certificate": cert_path,
            "privateKey": key_path,
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(v) = opts.validity_seconds {
            pebble["certificateValidityPeriod"] = v.into();
        }
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&serde_json::json!({ "pebble": pebble })).unwrap(),
        )
        .unwrap();

        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let mut cmd = Command::new(PEBBLE_BIN);
        // Killed on drop; and with the test's thread, should the test binary be killed.
        localocean::process::end_with_parent(&mut cmd);
        cmd.arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(dns_server.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env(
                "PEBBLE_AUTHZREUSE",
                opts.authz_reuse_percent.unwrap_or(0).to_string(),
            )
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(p) = opts.nonce_reject_percent {
            cmd.env("PEBBLE_WFE_NONCEREJECT", p.to_string());
        }
        let child = cmd.spawn().expect("starting pebble");
        let mut me = Pebble {
            child,
            dir: Some(dir),
            listen,
            mgmt,
            http_port,
            listener_ca_pem: ca_pem,
        };
        me.wait_listening()?;
        Ok(me)
    }

    /// Both listeners accept connections (Pebble opens them once its CA is generated: seen
    /// taking over 30 s while two dozen acceptance tests shared two cores).
    /// Err when Pebble exited before listening (its log); a Pebble that never listens within
    /// 90 s fails the test.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "pebble exited with {status} before listening; log:\n{}",
                    self.log()
                ));
            }
            let up = TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok()
                && TcpStream::connect_timeout(&self.mgmt, Duration::from_millis(200)).is_ok();
            if up {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not listen on {} within 90 s; log:\n{}",
                self.listen,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// The CA of Pebble's own HTTPS listeners: what `acme_ca_certificates` must hold.
    pub fn listener_ca_pem(&self) -> &str {
        &self.listener_ca_pem
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("pebble dir").path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("pebble.log")).unwrap_or_default()
    }

    /// Keeps the temp dir (config, logs) after the test; returns where it is.
    pub fn keep(&mut self) -> PathBuf {
        self.dir.take().map(|d| d.keep()).unwrap_or_default()
    }

    fn mgmt_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.listener_ca_pem.as_bytes()).unwrap(),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    async fn mgmt_get(&self, path: &str) -> reqwest::Response {
        let url = format!("https://{}{path}", self.mgmt);
        self.mgmt_client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// The root that issued certificates chain to (regenerated on every Pebble start).
    pub async fn issuing_root_pem(&self) -> String {
        let r = self.mgmt_get("/roots/0").await;
        assert!(r.status().is_success(), "GET /roots/0: {}", r.status());
        r.text().await.unwrap()
    }

    /// The intermediate Pebble signs leaves with.
    pub async fn intermediate_pem(&self) -> String {
        let r = self.mgmt_get("/intermediates/0").await;
        assert!(
            r.status().is_success(),
            "GET /intermediates/0: {}",
            r.status()
        );
        r.text().await.unwrap()
    }

    /// Pebble's view of the first certificate of `cert_pem`: "Valid" or "Revoked".
    pub async fn cert_status(&self, cert_pem: &str) -> String {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).expect("PEM");
        let cert = pem.parse_x509().expect("certificate");
        let serial = hex::encode(cert.raw_serial());
        let r = self
            .mgmt_get(&format!("/cert-status-by-serial/{serial}"))
            .await;
        assert!(
            r.status().is_success(),
            "GET /cert-status-by-serial/{serial}: {}",
            r.status()
        );
        let v: serde_json::Value = r.json().await.unwrap();
        v["Status"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn is_revoked(&self, cert_pem: &str) -> bool {
        self.cert_status(cert_pem).await == "Revoked"
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let kept = self.keep();
            eprintln!("pebble: config and log kept in {}", kept.display());
        }
    }
}

/// A throwaway CA and a listener certificate for localhost, 127.0.0.1 and `ip`, signed by it.
fn listener_certificates(ip: IpAddr) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "pebble listener test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    if !ip.is_loopback() {
        leaf.subject_alt_names.push(SanType::IpAddress(ip));
    }
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}
