//! Unit tests of the pure helpers, and end-to-end orders against Pebble with localocean's API
//! and DNS in process (tests named `pebble_*` need /usr/bin/pebble).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use localocean::api::{self as lo_api, ApiConfig, App};
use localocean::faults::FaultSpec;
use localocean::hypervisor::{Hypervisor, MachineInfo, MachineSpec, Power, VolumeSpec};
use localocean::spaces::{Grant, IssuedKey, SpacesBackend};
use rcgen::{CertificateParams, KeyPair};
use time::OffsetDateTime;
use url::Url;

use super::*;
use crate::do_api::Timings;
use crate::remote::Output;

#[path = "../../tests/common/pebble.rs"]
mod pebble;
use pebble::Pebble;

// ---- pure helpers ---------------------------------------------------------------------------

fn cert(names: &[&str], not_after: OffsetDateTime) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.not_before = not_after - time::Duration::days(90);
    p.not_after = not_after;
    p.self_signed(&key).unwrap().pem()
}

#[test]
fn renewal_not_needed_outside_the_window() {
    let now = OffsetDateTime::now_utc();
    let pem = cert(&["registry.example.com"], now + time::Duration::days(60));
    assert_eq!(needs_renewal(&pem, "registry.example.com", 30, now), None);
    // Trailing dot and case do not matter.
    assert_eq!(needs_renewal(&pem, "Registry.Example.com.", 30, now), None);
}

#[test]
fn renewal_needed_within_the_window() {
    let now = OffsetDateTime::now_utc();
    let pem = cert(&["registry.example.com"], now + time::Duration::days(20));
    let why = needs_renewal(&pem, "registry.example.com", 30, now).unwrap();
    assert!(why.contains("renew_before_days = 30"), "{why}");
    // A smaller window: not yet.
    assert_eq!(needs_renewal(&pem, "registry.example.com", 10, now), None);
}

#[test]
fn renewal_needed_when_expired_wrong_name_or_garbage() {
    let now = OffsetDateTime::now_utc();
    let expired = cert(&["registry.example.com"], now - time::Duration::days(1));
    let why = needs_renewal(&expired, "registry.example.com", 0, now).unwrap();
    assert!(why.contains("expired"), "{why}");

    let other = cert(&["other.example.com"], now + time::Duration::days(80));
    let why = needs_renewal(&other, "registry.example.com", 30, now).unwrap();
    assert!(why.contains("other.example.com"), "{why}");

    let wildcard = cert(&["*.example.com"], now + time::Duration::days(80));
    assert_eq!(
        needs_renewal(&wildcard, "registry.example.com", 30, now),
        None
    );

    let why = needs_renewal("not a certificate", "registry.example.com", 30, now).unwrap();
    assert!(why.contains("unreadable"), "{why}");
}

#[test]
fn challenge_names_are_relative_to_the_domain() {
    assert_eq!(
        challenge_record_name("registry.example.com", "example.com").unwrap(),
        "_acme-challenge.registry"
    );
    assert_eq!(
        challenge_record_name("a.b.example.com.", "EXAMPLE.com").unwrap(),
        "_acme-challenge.a.b"
    );
    assert_eq!(
        challenge_record_name("example.com", "example.com").unwrap(),
        "_acme-challenge"
    );
    assert!(matches!(
        challenge_record_name("registry.example.org", "example.com"),
        Err(AcmeError::OutsideDomain { .. })
    ));
    // A suffix that is not a label boundary is not inside the domain.
    assert!(challenge_record_name("registryexample.com", "example.com").is_err());
}

#[test]
fn caa_issuer_per_directory() {
    let u = |s: &str| Url::parse(s).unwrap();
    assert_eq!(
        caa_issuer(&u("https://acme-v02.api.letsencrypt.org/directory")),
        "letsencrypt.org"
    );
    assert_eq!(
        caa_issuer(&u("https://acme-staging-v02.api.letsencrypt.org/directory")),
        "letsencrypt.org"
    );
    assert_eq!(
        caa_issuer(&u("https://acme.zerossl.com/v2/DV90")),
        "sectigo.com"
    );
    assert_eq!(
        caa_issuer(&u("https://acme.example.net/dir")),
        "example.net"
    );
    assert_eq!(caa_issuer(&u("https://127.0.0.1:14000/dir")), "127.0.0.1");
    assert_eq!(caa_issuer(&u("https://localhost:14000/dir")), "localhost");

    let r = caa_record(
        "registry.example.com",
        "example.com",
        &u("https://acme-v02.api.letsencrypt.org/directory"),
    )
    .unwrap();
    assert_eq!(
        (r.kind.as_str(), r.name.as_str(), r.data.as_str()),
        ("CAA", "registry", "letsencrypt.org")
    );
    assert_eq!((r.flags, r.tag.as_deref()), (Some(0), Some("issue")));
    let apex = caa_record("example.com", "example.com", &u("https://x.example.org/d")).unwrap();
    assert_eq!(apex.name, "@");
}

#[test]
fn rate_limit_reset_time_is_read_from_the_detail() {
    let d = "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2025-01-01 00:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/";
    assert_eq!(
        retry_after_from_detail(d).as_deref(),
        Some("2025-01-01 00:00:00 UTC")
    );
    assert_eq!(
        retry_after_from_detail("too many new orders recently"),
        None
    );
    let cfg = AcmeConfig::new(Url::parse("https://acme.invalid/dir").unwrap());
    let p: Problem = serde_json::from_value(serde_json::json!({
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": d,
        "status": 429
    }))
    .unwrap();
    let msg = problem_error(&cfg, &p, Some("r.example.com"))
        .unwrap()
        .to_string();
    assert!(
        msg.contains("try again after 2025-01-01 00:00:00 UTC"),
        "{msg}"
    );
}

#[test]
fn caa_problem_says_which_record_to_add() {
    let cfg =
        AcmeConfig::new(Url::parse("https://acme-v02.api.letsencrypt.org/directory").unwrap());
    let p: Problem = serde_json::from_value(serde_json::json!({
        "type": "urn:ietf:params:acme:error:caa",
        "detail": "CAA record for registry.example.com prevents issuance",
        "status": 403
    }))
    .unwrap();
    let msg = problem_error(&cfg, &p, Some("registry.example.com"))
        .unwrap()
        .to_string();
    assert!(
        msg.contains("CAA records for registry.example.com"),
        "{msg}"
    );
    assert!(msg.contains("0 issue \"letsencrypt.org\""), "{msg}");
}

#[test]
fn key_types_parse_and_print() {
    for s in KeyType::ALL {
        assert_eq!(s.parse::<KeyType>().unwrap().as_str(), s);
    }
    assert!("rsa-1024".parse::<KeyType>().is_err());
}

#[tokio::test]
async fn ecdsa_and_rsa_keys_make_csrs() {
    let ec = generate_key(KeyType::EcdsaP256).await.unwrap();
    assert!(ec.serialize_pem().contains("BEGIN PRIVATE KEY"));
    csr("registry.example.com", &ec).unwrap();
    let rsa = generate_key(KeyType::Rsa2048).await.unwrap();
    assert!(rsa.is_compatible(&PKCS_RSA_SHA256));
    let der = csr("registry.example.com", &rsa).unwrap();
    use x509_parser::prelude::FromDer;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .expect("the CSR parses");
    assert_eq!(
        req.certification_request_info
            .subject_pki
            .algorithm
            .algorithm
            .to_id_string(),
        "1.2.840.113549.1.1.1"
    );
}

// ---- localocean in process ------------------------------------------------------------------

const TOKEN: &str = "acme-test-token-0123456789";
const DOMAIN: &str = "example.test";
const FQDN: &str = "registry.example.test";

struct NoHv;

#[async_trait]
impl Hypervisor for NoHv {
    async fn create(&self, _spec: MachineSpec) -> anyhow::Result<MachineInfo> {
        Ok(MachineInfo {
            ipv4: Ipv4Addr::new(198, 18, 0, 2),
            gateway: Ipv4Addr::new(198, 18, 0, 1),
            netmask: Ipv4Addr::new(255, 254, 0, 0),
        })
    }
    async fn delete(&self, _: u64) -> anyhow::Result<()> {
        Ok(())
    }
    async fn power(&self, _: u64, _: Power) -> anyhow::Result<()> {
        Ok(())
    }
    async fn resize(&self, _: u64, _: u32, _: u32) -> anyhow::Result<()> {
        Ok(())
    }
    async fn create_volume(&self, _: &VolumeSpec) -> anyhow::Result<()> {
        Ok(())
    }
    async fn resize_volume(&self, _: &VolumeSpec) -> anyhow::Result<()> {
        Ok(())
    }
    async fn delete_volume(&self, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
    async fn attach_volume(&self, _: u64, _: &VolumeSpec) -> anyhow::Result<()> {
        Ok(())
    }
    async fn detach_volume(&self, _: u64, _: &VolumeSpec) -> anyhow::Result<()> {
        Ok(())
    }
}

struct NoSpaces;

#[async_trait]
impl SpacesBackend for NoSpaces {
    async fn create_key(&self, _: &str, _: &[Grant]) -> anyhow::Result<IssuedKey> {
        anyhow::bail!("no spaces in these tests")
    }
    async fn update_key(&self, _: &str, _: &str, _: &[Grant]) -> anyhow::Result<()> {
        anyhow::bail!("no spaces in these tests")
    }
    async fn delete_key(&self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!("no spaces in these tests")
    }
}

/// localocean's API and DNS on loopback, holding `example.test` with
/// `registry.example.test A 127.0.0.1`; plus Pebble resolving through that DNS.
struct World {
    app: Arc<App>,
    client: do_api::Client,
    dns: SocketAddr,
    pebble: Pebble,
    _dns_server: localocean::dns::DnsServer,
    _api: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(http_port: u16) -> World {
        World::start_with(http_port, pebble::PebbleOptions::default()).await
    }

    async fn start_with(http_port: u16, opts: pebble::PebbleOptions) -> World {
        let dir = tempfile::tempdir().unwrap();
        let app = App::load(
            ApiConfig::new(dir.path().to_path_buf(), vec![TOKEN.into()]),
            Arc::new(NoHv),
            Arc::new(NoSpaces),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = lo_api::router(app.clone());
        let api = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let dns_server = localocean::dns::serve(
            vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            lo_api::zones(&app),
        )
        .await
        .unwrap();
        let dns = dns_server.local_addrs()[0];

        let settings = Settings {
            token: Secret::new(TOKEN),
            api_endpoint: Url::parse(&base).unwrap(),
            spaces_access_id: None,
            spaces_secret_key: None,
            spaces_endpoint: String::new(),
            http_retry_max: 2,
            requests_per_second: 0,
            acme_directory_url: Url::parse("https://acme.invalid/dir").unwrap(),
            acme_ca_certificates: None,
            acme_dns_servers: Vec::new(),
            terraform_version: "1.8.0".into(),
        };
        let timings = Timings {
            backoff_start: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            poll_start: Duration::from_millis(50),
            poll_max: Duration::from_millis(200),
            not_found_grace: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        };
        let client = do_api::Client::with_timings(&settings, timings).unwrap();
        let r = reqwest::Client::new()
            .post(format!("{base}/v2/domains"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "name": DOMAIN }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        client
            .create_record(
                DOMAIN,
                &DomainRecordRequest {
                    kind: "A".into(),
                    name: "registry".into(),
                    data: "127.0.0.1".into(),
                    priority: None,
                    port: None,
                    ttl: Some(30),
                    weight: None,
                    flags: None,
                    tag: None,
                },
            )
            .await
            .unwrap();
        let pebble = Pebble::start_with(dns, http_port, opts);
        World {
            app,
            client,
            dns,
            pebble,
            _dns_server: dns_server,
            _api: api,
            _dir: dir,
        }
    }

    fn config(&self) -> AcmeConfig {
        AcmeConfig {
            extra_roots_pem: Some(self.pebble.listener_ca_pem().to_owned()),
            dns_servers: vec![self.dns],
            propagation_timeout: Duration::from_secs(30),
            order_timeout: Duration::from_secs(60),
            ..AcmeConfig::new(Url::parse(&self.pebble.directory_url()).unwrap())
        }
    }

    fn dns01(&self) -> Challenge {
        Challenge::Dns01 {
            client: self.client.clone(),
            domain: DOMAIN.into(),
        }
    }

    async fn challenge_records(&self) -> Vec<String> {
        self.client
            .list_records(DOMAIN, None, Some("TXT"))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.name.contains("_acme-challenge"))
            .map(|r| format!("{} {}", r.name, r.data))
            .collect()
    }
}

/// The chain's leaf verifies up to Pebble's root (openssl does the path building).
async fn assert_chains_to_pebble_root(pebble: &Pebble, chain: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    let chain_path = dir.path().join("chain.pem");
    std::fs::write(&root, pebble.issuing_root_pem().await).unwrap();
    std::fs::write(&chain_path, chain).unwrap();
    let out = tokio::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&root)
        .arg("-untrusted")
        .arg(&chain_path)
        .arg(&chain_path)
        .output()
        .await
        .expect("running openssl verify");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn pebble_dns01_issues_ecdsa_and_revokes() {
    let w = World::start(pebble_unused_port()).await;
    let cfg = w.config();
    let got = issue(
        &cfg,
        None,
        Some("ops@example.test"),
        FQDN,
        KeyType::EcdsaP256,
        w.dns01(),
    )
    .await
    .unwrap_or_else(|e| panic!("issue: {e}\npebble log:\n{}", w.pebble.log()));
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    let info = tls::leaf_info(&got.issued.cert_chain_pem).unwrap();
    assert_eq!(info.dns_names, vec![FQDN.to_owned()]);
    assert_eq!(info.not_after, got.issued.not_after);
    assert!(got.issued.ca_certificate_pem.is_none());
    let key = KeyPair::from_pem(got.issued.private_key_pem.expose()).unwrap();
    assert_eq!(
        key.public_key_der(),
        info.spki_der,
        "the key matches the leaf"
    );
    assert!(key.is_compatible(&PKCS_ECDSA_P256_SHA256));
    assert_chains_to_pebble_root(&w.pebble, &got.issued.cert_chain_pem).await;
    assert!(
        w.challenge_records().await.is_empty(),
        "challenge records left behind: {:?}",
        w.challenge_records().await
    );
    assert!(
        got.timings.challenge_ready <= got.timings.validated
            && got.timings.validated <= got.timings.issued
    );

    // The stored account is reused: same credentials back, and a second order works.
    let again = issue(
        &cfg,
        Some(&got.account),
        None,
        FQDN,
        KeyType::EcdsaP256,
        w.dns01(),
    )
    .await
    .unwrap();
    assert_eq!(again.account, got.account);

    // Revoke, and revoking twice is fine.
    assert!(!w.pebble.is_revoked(&got.issued.cert_chain_pem).await);
    revoke(&cfg, &got.account, &got.issued.cert_chain_pem)
        .await
        .unwrap();
    assert!(w.pebble.is_revoked(&got.issued.cert_chain_pem).await);
    revoke(&cfg, &got.account, &got.issued.cert_chain_pem)
        .await
        .unwrap();
    assert!(!w.pebble.is_revoked(&again.issued.cert_chain_pem).await);
}

#[tokio::test]
async fn pebble_short_lived_certificate_is_due_for_renewal() {
    let w = World::start_with(
        pebble_unused_port(),
        pebble::PebbleOptions {
            validity_seconds: Some(6 * 3600),
            ..Default::default()
        },
    )
    .await;
    let got = issue(&w.config(), None, None, FQDN, KeyType::EcdsaP256, w.dns01())
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(got.issued.not_after < now + time::Duration::hours(7));
    let pem = &got.issued.cert_chain_pem;
    let why = needs_renewal(pem, FQDN, 1, now).expect("due within a day");
    assert!(why.contains("renew_before_days = 1"), "{why}");
    assert_eq!(needs_renewal(pem, FQDN, 0, now), None);
}

#[tokio::test]
async fn pebble_account_unknown_to_the_ca_is_replaced() {
    use base64::Engine;
    let w = World::start(pebble_unused_port()).await;
    let dir = w.pebble.directory_url();
    let key = KeyPair::generate().unwrap();
    let unknown = Secret::new(
        serde_json::json!({
            "id": dir.replace("/dir", "/my-account/424242"),
            "key_pkcs8": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.serialize_der()),
            "directory": dir,
        })
        .to_string(),
    );
    let got = issue(
        &w.config(),
        Some(&unknown),
        None,
        FQDN,
        KeyType::EcdsaP256,
        w.dns01(),
    )
    .await
    .unwrap_or_else(|e| panic!("issue: {e}"));
    assert_ne!(got.account, unknown);
    assert!(w.challenge_records().await.is_empty());
    // The same unknown account cannot revoke: a clear error, not a panic.
    let err = revoke(&w.config(), &unknown, &got.issued.cert_chain_pem)
        .await
        .unwrap_err();
    assert!(matches!(err, AcmeError::AccountUnknown { .. }), "{err}");
}

#[tokio::test]
async fn pebble_account_of_another_directory_is_replaced() {
    let w = World::start(pebble_unused_port()).await;
    let cfg = w.config();
    let foreign = Secret::new(
        serde_json::json!({"id": "https://elsewhere.invalid/acct/1", "key_pkcs8": "AAAA", "directory": "https://elsewhere.invalid/dir"})
            .to_string(),
    );
    let got = issue(
        &cfg,
        Some(&foreign),
        None,
        FQDN,
        KeyType::EcdsaP256,
        w.dns01(),
    )
    .await
    .unwrap();
    assert_ne!(got.account, foreign);
    assert!(got.account.expose().contains(&w.pebble.directory_url()));
    let garbage = Secret::new("{not json");
    let got = issue(
        &cfg,
        Some(&garbage),
        None,
        FQDN,
        KeyType::EcdsaP256,
        w.dns01(),
    )
    .await
    .unwrap();
    assert!(got.account.expose().contains(&w.pebble.directory_url()));
    let err = revoke(&cfg, &garbage, &got.issued.cert_chain_pem)
        .await
        .unwrap_err();
    assert!(matches!(err, AcmeError::Credentials(_)), "{err}");
    assert!(!err.to_string().contains("not json"), "{err}");
}

#[tokio::test]
async fn pebble_dns01_record_api_failure_names_the_record_and_leaves_nothing() {
    let w = World::start(pebble_unused_port()).await;
    w.app
        .faults()
        .arm(FaultSpec::Http {
            method: Some("POST".into()),
            path_prefix: format!("/v2/domains/{DOMAIN}/records"),
            count: 1000,
            status: 500,
            retry_after: None,
        })
        .unwrap();
    let err = issue(&w.config(), None, None, FQDN, KeyType::EcdsaP256, w.dns01())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, AcmeError::CreateRecord { .. }),
        "unexpected error: {msg}"
    );
    assert!(
        msg.contains("_acme-challenge.registry.example.test"),
        "{msg}"
    );
    w.app.faults().clear();
    assert!(w.challenge_records().await.is_empty());
}

#[tokio::test]
async fn pebble_dns01_propagation_timeout_names_record_and_servers_and_cleans_up() {
    let w = World::start(pebble_unused_port()).await;
    // A UDP port where nobody answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let cfg = AcmeConfig {
        dns_servers: vec![silent_addr],
        propagation_timeout: Duration::from_secs(5),
        ..w.config()
    };
    let err = issue(&cfg, None, None, FQDN, KeyType::EcdsaP256, w.dns01())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AcmeError::Propagation { .. }), "{msg}");
    assert!(
        msg.contains("_acme-challenge.registry.example.test"),
        "{msg}"
    );
    assert!(msg.contains(&silent_addr.to_string()), "{msg}");
    assert!(w.challenge_records().await.is_empty());
    drop(silent);
}

#[tokio::test]
async fn pebble_cancelled_order_still_removes_its_record() {
    let w = World::start(pebble_unused_port()).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = AcmeConfig {
        dns_servers: vec![silent.local_addr().unwrap()],
        propagation_timeout: Duration::from_secs(120),
        ..w.config()
    };
    let challenge = w.dns01();
    let task =
        tokio::spawn(
            async move { issue(&cfg, None, None, FQDN, KeyType::EcdsaP256, challenge).await },
        );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while w.challenge_records().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no challenge record appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !w.challenge_records().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled order left {:?}",
            w.challenge_records().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn pebble_survives_a_bad_nonce_storm() {
    // Four times Pebble's documented default rate: without retries most orders would fail.
    let w = World::start_with(
        pebble_unused_port(),
        pebble::PebbleOptions {
            nonce_reject_percent: Some(20),
            ..Default::default()
        },
    )
    .await;
    let before = http::BAD_NONCES.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..2 {
        issue(&w.config(), None, None, FQDN, KeyType::EcdsaP256, w.dns01())
            .await
            .unwrap_or_else(|e| panic!("issue: {e}"));
    }
    let rejected = http::BAD_NONCES.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        rejected > 0,
        "Pebble rejected no nonce; the test proves nothing"
    );
}

// ---- HTTP-01 ----------------------------------------------------------------------------------

/// A droplet stand-in: commands run with the local bash, with the HTTP-01 directory mapped
/// into a temp dir that a small HTTP server serves.
struct DirTransport {
    root: PathBuf,
}

#[async_trait]
impl Transport for DirTransport {
    async fn exec(&self, cmd: &str, stdin: &[u8]) -> Result<Output, RemoteError> {
        use tokio::io::AsyncWriteExt;
        let cmd = cmd.replace(paths::ACME_HTTP01_DIR, &self.root.to_string_lossy());
        assert!(
            !cmd.contains("/var/www"),
            "command escapes the test dir: {cmd}"
        );
        let mut child = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).await.unwrap();
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        Ok(Output {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    fn describe(&self) -> String {
        "test dir".into()
    }
}

async fn serve_challenges(listener: tokio::net::TcpListener, root: PathBuf) {
    use axum::extract::Path as UrlPath;
    let app = axum::Router::new().route(
        "/.well-known/acme-challenge/{token}",
        axum::routing::get(move |UrlPath(token): UrlPath<String>| {
            let root = root.clone();
            async move {
                match std::fs::read(root.join(&token)) {
                    Ok(body) => (axum::http::StatusCode::OK, body),
                    Err(_) => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
                }
            }
        }),
    );
    axum::serve(listener, app).await.unwrap();
}

#[tokio::test]
async fn pebble_http01_issues_through_the_transport_and_removes_the_file() {
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = web.local_addr().unwrap().port();
    let root = tempfile::tempdir().unwrap();
    tokio::spawn(serve_challenges(web, root.path().to_path_buf()));
    let w = World::start(port).await;
    let transport = Arc::new(DirTransport {
        root: root.path().to_path_buf(),
    });
    let got = issue(
        &w.config(),
        None,
        None,
        FQDN,
        KeyType::Rsa2048,
        Challenge::Http01 {
            transport: transport.clone(),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("issue: {e}\npebble log:\n{}", w.pebble.log()));
    assert_chains_to_pebble_root(&w.pebble, &got.issued.cert_chain_pem).await;
    let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert!(left.is_empty(), "challenge files left behind: {left:?}");
    // An RSA key from the `rsa` crate, loaded into rcgen: it must be the leaf's key.
    let info = tls::leaf_info(&got.issued.cert_chain_pem).unwrap();
    let key = KeyPair::from_pem(got.issued.private_key_pem.expose()).unwrap();
    assert!(key.is_compatible(&PKCS_RSA_SHA256));
    assert_eq!(key.public_key_der(), info.spki_der);
}

#[tokio::test]
async fn pebble_http01_failure_names_the_url() {
    // Nothing listens on the HTTP-01 port.
    let w = World::start(pebble_unused_port()).await;
    let root = tempfile::tempdir().unwrap();
    let err = issue(
        &w.config(),
        None,
        None,
        FQDN,
        KeyType::EcdsaP256,
        Challenge::Http01 {
            transport: Arc::new(DirTransport {
                root: root.path().to_path_buf(),
            }),
        },
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AcmeError::Http01Failed { .. }), "{msg}");
    assert!(
        msg.contains("http://registry.example.test/.well-known/acme-challenge/"),
        "{msg}"
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

fn pebble_unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
