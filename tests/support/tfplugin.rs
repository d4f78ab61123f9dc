//! A test-side tfplugin6 client: starts the provider binary the way OpenTofu does (magic
//! cookie, client certificate, the `1|6|tcp|addr|grpc|cert` handshake line) and talks gRPC
//! over mTLS to it. Lets protocol tests run without OpenTofu.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use tonic::transport::{Channel, Endpoint};

pub mod proto {
    tonic::include_proto!("tfplugin6");
}

pub use proto::provider_client::ProviderClient;

pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

/// A running provider process and a gRPC client connected to it. Dropping it kills the
/// process it started (by its own handle).
pub struct PluginProcess {
    child: Child,
    pub client: ProviderClient<Channel>,
    pub address: String,
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parsed handshake line: `core|app|network|address|protocol|cert`.
#[derive(Debug, PartialEq)]
pub struct Handshake {
    pub core_version: u32,
    pub app_version: u32,
    pub network: String,
    pub address: String,
    pub protocol: String,
    pub server_cert_der: Vec<u8>,
}

pub fn parse_handshake(line: &str) -> Result<Handshake, String> {
    let parts: Vec<&str> = line.trim().split('|').collect();
    if parts.len() != 6 {
        return Err(format!(
            "handshake line has {} fields, want 6: {line:?}",
            parts.len()
        ));
    }
    let der = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(parts[5].trim_end_matches('='))
        .map_err(|e| format!("server certificate is not base64: {e}"))?;
    Ok(Handshake {
        core_version: parts[0].parse().map_err(|e| format!("core version: {e}"))?,
        app_version: parts[1].parse().map_err(|e| format!("app version: {e}"))?,
        network: parts[2].into(),
        address: parts[3].into(),
        protocol: parts[4].into(),
        server_cert_der: der,
    })
}

pub async fn start(binary: &str, extra_env: &[(&str, &str)]) -> PluginProcess {
    let key = rcgen::KeyPair::generate().expect("client key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).expect("client cert");

    let mut cmd = Command::new(binary);
    cmd.env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .env("PLUGIN_CLIENT_CERT", cert.pem())
        .env("PLUGIN_PROTOCOL_VERSIONS", "6")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .expect("provider printed no handshake line within 30 s")
        .unwrap()
        .expect("reading the handshake line");
    let hs = parse_handshake(&line).expect("handshake line");
    assert_eq!(
        (hs.core_version, hs.app_version),
        (1, 6),
        "protocol versions"
    );
    assert_eq!((hs.network.as_str(), hs.protocol.as_str()), ("tcp", "grpc"));

    let channel = connect_pinned(&hs, cert.pem(), key.serialize_pem()).await;
    PluginProcess {
        child,
        client: ProviderClient::new(channel),
        address: hs.address,
    }
}

/// Encodes a JSON object as the msgpack DynamicValue tfplugin6 carries.
pub fn dynamic_value(v: &serde_json::Value) -> proto::DynamicValue {
    proto::DynamicValue {
        msgpack: rmp_serde::to_vec_named(v).expect("msgpack"),
        json: vec![],
    }
}

/// Accepts exactly the certificate the handshake line announced. The provider's certificate
/// is self-signed with CA:true (as go-plugin's are), which webpki refuses as an end entity, so
/// the test pins it byte for byte instead: stricter than chain validation.
#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the certificate of the handshake line".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn connect_pinned(
    hs: &Handshake,
    client_cert_pem: String,
    client_key_pem: String,
) -> Channel {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cert = CertificateDer::from(
        base64::engine::general_purpose::STANDARD
            .decode(
                client_cert_pem
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap(),
    );
    let key = PrivateKeyDer::try_from(
        base64::engine::general_purpose::STANDARD
            .decode(
                client_key_pem
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap(),
    )
    .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Pinned {
            der: hs.server_cert_der.clone(),
            provider,
        }))
        .with_client_auth_cert(vec![cert], key)
        .expect("client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let addr = hs.address.clone();
    Endpoint::from_shared(format!("http://{}", hs.address))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            let addr = addr.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("connecting to the provider over mTLS")
}
