//! A test-side tfplugin6 client: starts the provider binary the way OpenTofu does (magic
//! cookie, client certificate, the `1|6|tcp|addr|grpc|cert` handshake line) and talks gRPC
//! over mTLS to it. Lets protocol tests run without OpenTofu.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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

fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
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

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(der_to_pem(&hs.server_cert_der)))
        .identity(Identity::from_pem(cert.pem(), key.serialize_pem()))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", hs.address))
        .unwrap()
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("connecting to the provider over mTLS");
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
