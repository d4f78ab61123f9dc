//! ACME orders against Pebble, with localocean's API (records) and DNS in process: DNS-01 and
//! HTTP-01 issue, renew, revoke, and clean up their challenge answers whatever happens.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use localocean::api::App;
use localocean::faults::FaultSpec;
use localocean::testkit::{ApiServer, NoSpaces, NullHypervisor};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};
use terraform_provider_docker::acme::{
    issue, needs_renewal, revoke, AcmeConfig, AcmeError, Challenge, KeyType,
};
use terraform_provider_docker::do_api::{self, DomainRecordRequest};
use terraform_provider_docker::render::paths;
use terraform_provider_docker::secret::Secret;
use terraform_provider_docker::testkit::LocalTransport;
use terraform_provider_docker::tls;
use time::OffsetDateTime;
use url::Url;

use super::{fast, settings, TOKEN};
use crate::support::pebble::{Pebble, PebbleOptions};

const DOMAIN: &str = "example.test";
const FQDN: &str = "registry.example.test";

/// localocean's API and DNS on loopback, holding `example.test` with
/// `registry.example.test A 127.0.0.1`; plus Pebble resolving through that DNS.
struct World {
    app: Arc<App>,
    client: do_api::Client,
    dns: SocketAddr,
    pebble: Pebble,
    _dns_server: localocean::dns::DnsServer,
    _api: ApiServer,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(http_port: u16) -> World {
        World::start_with(http_port, PebbleOptions::default()).await
    }

    async fn start_with(http_port: u16, opts: PebbleOptions) -> World {
        let dir = tempfile::tempdir().unwrap();
        let api = ApiServer::start(
            dir.path(),
            TOKEN,
            Arc::new(NullHypervisor::default()),
            Arc::new(NoSpaces),
        )
        .await
        .unwrap();
        let app = api.app.clone();
        let base = api.base.clone();
        let dns_server = localocean::dns::serve(
            vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            localocean::api::zones(&app),
        )
        .await
        .unwrap();
        let dns = dns_server.local_addrs()[0];

        let client = do_api::Client::with_timings(&settings(&base, None), fast()).unwrap();
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
        PebbleOptions {
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
    // Pebble rejects nothing by itself here; a proxy in front of it rejects every third signed
    // request as badNonce. One rejection in three (six times Pebble's documented default
    // rate), on a fixed pattern, so every order meets several: without retries each fails.
    let w = World::start_with(
        pebble_unused_port(),
        PebbleOptions {
            nonce_reject_percent: Some(0),
            ..Default::default()
        },
    )
    .await;
    let proxy = NonceProxy::start(&w.pebble).await;
    let cfg = AcmeConfig {
        extra_roots_pem: Some(proxy.ca_pem.clone()),
        ..w.config()
    };
    let cfg = AcmeConfig {
        directory_url: Url::parse(&proxy.directory_url()).unwrap(),
        ..cfg
    };
    for _ in 0..2 {
        issue(&cfg, None, None, FQDN, KeyType::EcdsaP256, w.dns01())
            .await
            .unwrap_or_else(|e| panic!("issue: {e}"));
    }
    let rejected = proxy.rejected.load(Ordering::SeqCst);
    let signed = proxy.posts.load(Ordering::SeqCst);
    eprintln!("the proxy rejected {rejected} of {signed} signed requests");
    // Each order signs at least 8 requests (account, order, authorization, challenge, polls,
    // finalize, certificate): at least 2 rejected per order, retried each time.
    assert!(
        rejected >= 4 && rejected * 3 >= signed - 2,
        "{rejected} of {signed} signed requests rejected"
    );
}

/// A TLS proxy in front of Pebble that answers every third signed POST with badNonce itself
/// and forwards everything else. It keeps the client's `Host`, so Pebble builds every URL
/// (and checks every signed one) with the proxy's address: the client talks only to it.
struct NonceProxy {
    addr: SocketAddr,
    ca_pem: String,
    posts: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    posts: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
}

impl NonceProxy {
    async fn start(pebble: &Pebble) -> NonceProxy {
        let (ca_pem, cert_der, key_der) = proxy_certificate();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(cert_der)],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
        )
        .unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        };
        // Pebble's directory URL is https://<listen>/dir.
        let upstream = pebble.directory_url().trim_end_matches("/dir").to_owned();
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(pebble.listener_ca_pem().as_bytes()).unwrap(),
            )
            // HTTP/1.1, so Pebble reads the forwarded `Host` header as the request's host.
            .http1_only()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let posts = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(ProxyState {
            upstream,
            client,
            posts: posts.clone(),
            rejected: rejected.clone(),
        });
        let app = axum::Router::new().fallback(proxy).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        NonceProxy {
            addr,
            ca_pem,
            posts,
            rejected,
            task,
        }
    }

    fn directory_url(&self) -> String {
        format!("https://{}/dir", self.addr)
    }
}

impl Drop for NonceProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(
    axum::extract::State(p): axum::extract::State<Arc<ProxyState>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::{header, Method, StatusCode};
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    if parts.method == Method::POST {
        let n = p.posts.fetch_add(1, Ordering::SeqCst) + 1;
        if n % 3 == 2 {
            // No Replay-Nonce: the client fetches a fresh one, as after any badNonce.
            p.rejected.fetch_add(1, Ordering::SeqCst);
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/problem+json")],
                r#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"rejected by the test proxy","status":400}"#,
            )
                .into_response();
        }
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let resp = p
        .client
        .request(parts.method, format!("{}{path}", p.upstream))
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("forwarding to pebble: {e}"));
    let status = resp.status();
    let mut headers = resp.headers().clone();
    for h in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        headers.remove(h);
    }
    let bytes = resp.bytes().await.unwrap();
    let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// Accepts TCP connections and completes the TLS handshake for axum.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A throwaway CA (PEM) and a certificate for 127.0.0.1 signed by it (DER, with its key).
fn proxy_certificate() -> (String, Vec<u8>, Vec<u8>) {
    use rcgen::{BasicConstraints, DnType, IsCa, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "nonce proxy test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.der().to_vec(), key.serialize_der())
}

// ---- HTTP-01 ----------------------------------------------------------------------------------

/// No command a test machine ran reached the real `/var/www`: only its own copy.
fn assert_stays_in(t: &LocalTransport) {
    let own = format!("{}{}", t.root_str(), "/var/www");
    for cmd in t.commands() {
        assert!(
            !cmd.replace(&own, "").contains("/var/www"),
            "command escapes the test dir: {cmd}"
        );
    }
}

async fn serve_challenges(listener: tokio::net::TcpListener, root: std::path::PathBuf) {
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
    let transport = Arc::new(LocalTransport::new());
    let answers = transport.path(paths::ACME_HTTP01_DIR);
    tokio::spawn(serve_challenges(web, answers.clone()));
    let w = World::start(port).await;
    let got = issue(
        &w.config(),
        None,
        None,
        FQDN,
        KeyType::Rsa2048,
        Challenge::Http01 {
            transports: vec![transport.clone()],
        },
    )
    .await
    .unwrap_or_else(|e| panic!("issue: {e}\npebble log:\n{}", w.pebble.log()));
    assert_chains_to_pebble_root(&w.pebble, &got.issued.cert_chain_pem).await;
    let left: Vec<_> = std::fs::read_dir(&answers).unwrap().collect();
    assert!(left.is_empty(), "challenge files left behind: {left:?}");
    assert_stays_in(&transport);
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
    let transport = Arc::new(LocalTransport::new());
    let err = issue(
        &w.config(),
        None,
        None,
        FQDN,
        KeyType::EcdsaP256,
        Challenge::Http01 {
            transports: vec![transport.clone()],
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
    assert_eq!(
        std::fs::read_dir(transport.path(paths::ACME_HTTP01_DIR))
            .unwrap()
            .count(),
        0
    );
    assert_stays_in(&transport);
}

fn pebble_unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
