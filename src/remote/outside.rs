//! The registry proven from outside, as a client sees it, trusting only the certificate the
//! provider installed on every connection: `/v2/` answers 401 with a Bearer challenge to the
//! token endpoint; the token endpoint refuses a request without credentials (or grants pull to
//! it with anonymous pull); a push user gets a token that holds push and opens `/v2/`; and the
//! registry can write, read and delete in its storage (an upload started, read back, cancelled,
//! with a push token the provider signs itself), since `/v2/` never touches storage.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::RemoteError;
use crate::error_chain::display_chain;
use crate::render::TOKEN_PATH;
use crate::secret::Secret;

/// What the droplet must show.
#[derive(Clone, Debug)]
pub struct Expectation {
    pub fqdn: String,
    pub ip: IpAddr,
    /// The leaf certificate the provider installed (DER).
    pub certificate_der: Vec<u8>,
    /// With `tls.renew = "droplet"`: its issuer (DER), whose later certificates for the fqdn
    /// are accepted too (see [`pinned_client`]).
    pub renewed_by: Option<Vec<u8>>,
    pub anonymous_pull: bool,
    /// A push user and password, when one has a plaintext password.
    pub push_user: Option<(String, Secret)>,
    /// The storage to prove through the registry, when asked.
    pub storage: Option<StorageProbe>,
}

/// What the storage round trip needs: what to call the storage in messages, and the token
/// signing key (the provider holds the registry's http secret it is derived from).
#[derive(Clone, Debug)]
pub struct StorageProbe {
    /// "Spaces bucket b at https://nyc3.digitaloceanspaces.com", "volume v at /mnt/v"...
    pub storage: String,
    /// What to check when the registry cannot use it.
    pub advice: String,
    /// PKCS#8 PEM of the token signing key (`render::token_key`).
    pub token_key_pem: Secret,
    pub kid: String,
}

/// The repository the storage round trip uses. The upload is cancelled, so it leaves no file
/// and no object behind (an empty directory at most, on a file system).
pub const STORAGE_CHECK_REPOSITORY: &str = "terraform-provider-docker/storage-check";

impl Expectation {
    pub fn url(&self) -> String {
        format!("https://{}/v2/", self.fqdn)
    }
}

#[async_trait]
pub trait OutsideCheck: Send + Sync {
    async fn verify(&self, expect: &Expectation) -> Result<(), RemoteError>;
}

/// HTTPS from the provider's machine, resolving the fqdn to the droplet's address (the DNS
/// record may not have reached every resolver yet).
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpsCheck;

#[async_trait]
impl OutsideCheck for HttpsCheck {
    async fn verify(&self, e: &Expectation) -> Result<(), RemoteError> {
        let v2 = e.url();
        let fail = |detail: String| RemoteError::Outside {
            url: v2.clone(),
            ip: e.ip,
            detail,
        };
        let http = pinned_client(
            &e.fqdn,
            e.ip,
            e.certificate_der.clone(),
            e.renewed_by.clone(),
        )
        .map_err(|err| fail(display_chain(&err)))?;
        let resp = http
            .get(&v2)
            .send()
            .await
            .map_err(|err| fail(display_chain(&err.without_url())))?;
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let token_url = format!("https://{}{TOKEN_PATH}", e.fqdn);
        let realm = format!("Bearer realm=\"{token_url}\"");
        if resp.status().as_u16() != 401 || !challenge.starts_with(&realm) {
            return Err(fail(format!(
                "without a token answered {} with challenge {challenge:?}, want 401 and {realm}",
                resp.status()
            )));
        }

        let resp = http
            .get(&token_url)
            .query(&[("service", e.fqdn.as_str())])
            .send()
            .await
            .map_err(|err| {
                fail(format!(
                    "GET {token_url}: {}",
                    display_chain(&err.without_url())
                ))
            })?;
        let want = if e.anonymous_pull { 200 } else { 401 };
        if resp.status().as_u16() != want {
            return Err(fail(format!(
                "GET {token_url} without credentials answered {}, want {want}",
                resp.status()
            )));
        }
        if e.anonymous_pull {
            let token = token_of(resp).await.map_err(fail)?;
            expect_v2(&http, &v2, &token, "an anonymous token")
                .await
                .map_err(fail)?;
        }

        if let Some((user, pw)) = &e.push_user {
            // Any repository name will do: the grant depends on the user, not on the name.
            let scope = "repository:terraform-provider-docker/verify:pull,push";
            let resp = http
                .get(&token_url)
                .query(&[("service", e.fqdn.as_str()), ("scope", scope)])
                .basic_auth(user, Some(pw.expose()))
                .send()
                .await
                .map_err(|err| {
                    fail(format!(
                        "GET {token_url} as {user}: {}",
                        display_chain(&err.without_url())
                    ))
                })?;
            if resp.status().as_u16() != 200 {
                return Err(fail(format!(
                    "GET {token_url} as push user {user:?} answered {}, want 200",
                    resp.status()
                )));
            }
            let token = token_of(resp).await.map_err(fail)?;
            let actions = granted_actions(&token).map_err(fail)?;
            if !actions.iter().any(|a| a == "push") {
                return Err(fail(format!(
                    "the token endpoint granted push user {user:?} only {actions:?} on {scope}"
                )));
            }
            expect_v2(&http, &v2, &token, &format!("push user {user:?}'s token"))
                .await
                .map_err(fail)?;
        }
        if let Some(probe) = &e.storage {
            storage_round_trip(&http, &e.fqdn, probe)
                .await
                .map_err(|detail| RemoteError::Storage {
                    storage: probe.storage.clone(),
                    detail,
                    advice: probe.advice.clone(),
                })?;
        }
        Ok(())
    }
}

/// A token for the storage check's repository only, signed as the token endpoint signs (ES256
/// with the registry's key, the same issuer and audience), valid for two minutes. It holds
/// `delete` too: distribution authorizes cancelling an upload as a delete (seen on Debian's
/// registry: 401 with `"Action":"delete"` for a pull and push token).
pub fn storage_check_token(fqdn: &str, probe: &StorageProbe) -> Result<Secret, String> {
    management_token(
        fqdn,
        &probe.token_key_pem,
        &probe.kid,
        serde_json::json!([{
            "type": "repository",
            "name": STORAGE_CHECK_REPOSITORY,
            "actions": ["pull", "push", "delete"],
        }]),
    )
}

/// A token granting `access` (the claims' `access` array), signed as the token endpoint signs
/// (ES256 with the registry's key, the same issuer and audience), valid for two minutes: the
/// provider's own credential for the registry, which no user's password stands behind.
pub fn management_token(
    fqdn: &str,
    token_key_pem: &Secret,
    kid: &str,
    access: serde_json::Value,
) -> Result<Secret, String> {
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::DecodePrivateKey;
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(token_key_pem.expose())
        .map_err(|e| format!("the token signing key does not load: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "kid": kid });
    let claims = serde_json::json!({
        "iss": crate::render::nginx::token_issuer(fqdn),
        "sub": "terraform-provider-docker",
        "aud": fqdn,
        "exp": now + 120,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": jti(),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    Ok(Secret::new(format!("{input}.{}", b64(&sig.to_bytes()))))
}

fn jti() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Starts an upload (the registry writes its start time to storage), reads its status (the
/// registry reads that back) and cancels it (the registry deletes it): every storage
/// operation a push needs, and nothing left behind. `Err` says which step failed and how.
async fn storage_round_trip(
    http: &reqwest::Client,
    fqdn: &str,
    probe: &StorageProbe,
) -> Result<(), String> {
    let token = storage_check_token(fqdn, probe)?;
    let token = &token;
    let start = format!("https://{fqdn}/v2/{STORAGE_CHECK_REPOSITORY}/blobs/uploads/");
    let send = |req: reqwest::RequestBuilder, what: String| async move {
        let resp = req
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| format!("{what}: {}", display_chain(&e.without_url())))?;
        Ok::<_, String>((what, resp))
    };
    let refused = |what: &str, want: u16, status: reqwest::StatusCode, body: String| {
        let body: String = body.chars().take(600).collect();
        format!("{what} answered {status}, want {want}: {}", body.trim())
    };
    let (what, resp) = send(
        http.post(&start),
        format!("starting an upload (POST {start})"),
    )
    .await?;
    if resp.status().as_u16() != 202 {
        let status = resp.status();
        return Err(refused(
            &what,
            202,
            status,
            resp.text().await.unwrap_or_default(),
        ));
    }
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("{what} answered 202 without a Location"))?;
    let upload = reqwest::Url::parse(&start)
        .and_then(|base| base.join(location))
        .map_err(|e| format!("{what}: the Location {location:?} is no URL: {e}"))?;
    let (what, resp) = send(
        http.get(upload.clone()),
        "reading the upload back (GET its Location)".to_owned(),
    )
    .await?;
    if resp.status().as_u16() != 204 {
        let status = resp.status();
        return Err(refused(
            &what,
            204,
            status,
            resp.text().await.unwrap_or_default(),
        ));
    }
    let (what, resp) = send(
        http.delete(upload),
        "cancelling the upload (DELETE its Location)".to_owned(),
    )
    .await?;
    if resp.status().as_u16() != 204 {
        let status = resp.status();
        return Err(refused(
            &what,
            204,
            status,
            resp.text().await.unwrap_or_default(),
        ));
    }
    Ok(())
}

/// A client that reaches `fqdn` at `ip` and accepts exactly the certificate `der` (and a
/// handshake signed by its key) on every connection it opens. A CA (Pebble's, a private one)
/// need not be trusted: the provider knows the very certificate it installed. With
/// `renewed_by` (the droplet renews its own certificate), a renewal of `der` by that issuer
/// is accepted too: the droplet's timer may replace the certificate at any moment, and an
/// apply that changes nothing about it must not fail on that ([`crate::tls::is_renewal_of`]).
pub fn pinned_client(
    fqdn: &str,
    ip: IpAddr,
    der: Vec<u8>,
    renewed_by: Option<Vec<u8>>,
) -> Result<reqwest::Client, PinError> {
    Ok(pinned_builder(fqdn, ip, der, renewed_by)?.build()?)
}

/// [`pinned_client`] that hands redirects back instead of following them (a redirect to
/// Spaces is served under Spaces' certificate, which the pin would refuse).
pub fn pinned_client_no_redirect(
    fqdn: &str,
    ip: IpAddr,
    der: Vec<u8>,
    renewed_by: Option<Vec<u8>>,
) -> Result<reqwest::Client, PinError> {
    Ok(pinned_builder(fqdn, ip, der, renewed_by)?
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

fn pinned_builder(
    fqdn: &str,
    ip: IpAddr,
    der: Vec<u8>,
    renewed_by: Option<Vec<u8>>,
) -> Result<reqwest::ClientBuilder, PinError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            der,
            renewed_by,
            fqdn: fqdn.to_owned(),
            provider,
        }))
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .resolve(fqdn, SocketAddr::new(ip, 443))
        .timeout(Duration::from_secs(20)))
}

/// Building the pinned client failed.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The `token` of a token response. Kept as a Secret: it is a credential for 5 minutes.
async fn token_of(resp: reqwest::Response) -> Result<Secret, String> {
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("reading a token response: {}", display_chain(&e)))?;
    body["token"]
        .as_str()
        .filter(|t| t.split('.').count() == 3)
        .map(Secret::new)
        .ok_or_else(|| "the token response holds no JWT in \"token\"".to_owned())
}

/// The actions the token grants on its first `access` entry (the claims are not secret, but
/// the caller only shows the actions).
fn granted_actions(token: &Secret) -> Result<Vec<String>, String> {
    let claims = token.expose().split('.').nth(1).unwrap_or_default();
    let claims: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the token's claims are not base64url JSON")?;
    Ok(claims["access"][0]["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// `/v2/` must answer 200 to a request carrying `token`.
async fn expect_v2(
    http: &reqwest::Client,
    v2: &str,
    token: &Secret,
    what: &str,
) -> Result<(), String> {
    let resp = http
        .get(v2)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| format!("with {what}: {}", display_chain(&e.without_url())))?;
    if resp.status().as_u16() != 200 {
        return Err(format!("with {what} answered {}, want 200", resp.status()));
    }
    Ok(())
}

#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    renewed_by: Option<Vec<u8>>,
    fqdn: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let renewed = |issuer: &Vec<u8>| {
            crate::tls::is_renewal_of(
                end_entity.as_ref(),
                &self.der,
                issuer,
                &self.fqdn,
                now.as_secs() as i64,
            )
        };
        if end_entity.as_ref() == self.der.as_slice()
            || self.renewed_by.as_ref().is_some_and(renewed)
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one the provider installed".into(),
            ))
        }
    }

    // The handshake must still be signed by the pinned certificate's key: comparing the
    // certificate alone would accept anyone replaying it.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client pinned to exactly `issued`'s certificate, for registry.example.com at `ip`.
    fn pinned_to(issued: &crate::tls::Issued, ip: IpAddr) -> reqwest::Client {
        pinned_client(
            "registry.example.com",
            ip,
            der_of(&issued.cert_chain_pem),
            None,
        )
        .unwrap()
    }

    fn der_of(pem: &str) -> Vec<u8> {
        crate::tls::leaf_info(pem).unwrap().der
    }

    /// TLS with `issued`'s certificate, for the loopback servers below.
    fn acceptor(issued: &crate::tls::Issued) -> tokio_rustls::TlsAcceptor {
        let certs = vec![CertificateDer::from(der_of(&issued.cert_chain_pem))];
        let key =
            PrivateKeyDer::from_pem_slice(issued.private_key_pem.expose().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A loopback TLS server answering every connection with one HTTP 200.
    async fn server(issued: &crate::tls::Issued) -> std::net::SocketAddr {
        let acceptor = acceptor(issued);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 4096];
                        let _ = tls.read(&mut buf).await;
                        let _ = tls
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn only_the_pinned_certificate_is_trusted() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let ours = crate::tls::self_signed("registry.example.com", &[ip], None).unwrap();
        let other = crate::tls::self_signed("registry.example.com", &[ip], None).unwrap();
        let addr = server(&ours).await;
        let url = format!("https://registry.example.com:{}/v2/", addr.port());
        let get = |der: Vec<u8>| {
            let url = url.clone();
            async move {
                let http = pinned_client("registry.example.com", ip, der, None).unwrap();
                http.get(&url).send().await
            }
        };
        let ok = get(der_of(&ours.cert_chain_pem)).await.unwrap();
        assert_eq!(ok.status().as_u16(), 200);
        // Another certificate for the same name, from another CA: refused.
        let err = get(der_of(&other.cert_chain_pem)).await.unwrap_err();
        let text = display_chain(&err);
        assert!(
            text.contains("not the one the provider installed"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_renewal_by_the_same_issuer_is_trusted_when_the_droplet_renews() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let fqdn = "registry.example.com";
        let installed = crate::tls::self_signed(fqdn, &[ip], None).unwrap();
        let ca = (
            installed.ca_certificate_pem.clone().unwrap(),
            installed.ca_private_key_pem.clone().unwrap(),
        );
        // Validity is in whole seconds: the renewal ends a second or more later.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let renewed = crate::tls::self_signed(fqdn, &[ip], Some((&ca.0, &ca.1))).unwrap();
        let other_ca = crate::tls::self_signed(fqdn, &[ip], None).unwrap();
        let issuer = crate::tls::issuer_der(&installed.cert_chain_pem).unwrap();
        let get = |served: &crate::tls::Issued, pin: Vec<u8>, renewed_by: Option<Vec<u8>>| {
            let served = served.clone();
            async move {
                let addr = server(&served).await;
                let http = pinned_client(fqdn, ip, pin, renewed_by).unwrap();
                http.get(format!("https://{fqdn}:{}/v2/", addr.port()))
                    .send()
                    .await
            }
        };
        let ours = der_of(&installed.cert_chain_pem);
        // The droplet renewed: accepted only when it renews its own certificate.
        assert!(get(&renewed, ours.clone(), Some(issuer.clone()))
            .await
            .is_ok());
        let err = get(&renewed, ours.clone(), None).await.unwrap_err();
        assert!(display_chain(&err).contains("not the one the provider installed"));
        // Another CA's certificate for the name: refused either way.
        assert!(get(&other_ca, ours.clone(), Some(issuer.clone()))
            .await
            .is_err());
        // An older certificate of the same CA than the one installed: refused.
        let newer = der_of(&renewed.cert_chain_pem);
        assert!(get(&installed, newer, Some(issuer.clone())).await.is_err());
        // The issuer's certificate for another name: refused.
        let elsewhere =
            crate::tls::self_signed("other.example.com", &[ip], Some((&ca.0, &ca.1))).unwrap();
        assert!(get(&elsewhere, ours, Some(issuer)).await.is_err());
    }

    /// A loopback HTTPS "registry" answering each request with `answer(method, path)`, and
    /// recording "METHOD path Authorization" per request.
    async fn registry(
        issued: &crate::tls::Issued,
        answer: fn(&str, &str) -> (u16, String, String),
    ) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
        let acceptor = acceptor(issued);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let mut first = head.lines().next().unwrap_or("").split_whitespace();
                    let (method, path) = (
                        first.next().unwrap_or("").to_owned(),
                        first.next().unwrap_or("").to_owned(),
                    );
                    let auth = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("authorization")
                                .then(|| v.trim().to_owned())
                        })
                        .unwrap_or_default();
                    seen.lock().unwrap().push(format!("{method} {path} {auth}"));
                    let (status, headers, body) = answer(&method, &path);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (addr, log)
    }

    fn probe(secret: &str) -> StorageProbe {
        let key = crate::render::token_key(&Secret::new(secret)).unwrap();
        StorageProbe {
            storage: "Spaces bucket b at http://10.0.0.1:9000".into(),
            advice: "Check the provider's `spaces_endpoint`.".into(),
            token_key_pem: key.private_key_pem,
            kid: key.kid,
        }
    }

    const UPLOADS: &str = "/v2/terraform-provider-docker/storage-check/blobs/uploads/";

    #[tokio::test]
    async fn the_storage_round_trip_writes_reads_and_cancels_with_a_token_the_registry_trusts() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let issued = crate::tls::self_signed("registry.example.com", &[ip], None).unwrap();
        let (addr, log) = registry(&issued, |method, path| match (method, path) {
            ("POST", UPLOADS) => (
                202,
                format!("location: {UPLOADS}5a1d?_state=abc\r\n"),
                String::new(),
            ),
            ("GET" | "DELETE", p) if p.starts_with(&format!("{UPLOADS}5a1d")) => {
                (204, String::new(), String::new())
            }
            _ => (404, String::new(), String::new()),
        })
        .await;
        let http = pinned_to(&issued, ip);
        let fqdn = format!("registry.example.com:{}", addr.port());
        let p = probe("http-secret-1");
        storage_round_trip(&http, &fqdn, &p).await.unwrap();
        let log = log.lock().unwrap().clone();
        let steps: Vec<String> = log
            .iter()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            steps,
            [
                format!("POST {UPLOADS}"),
                format!("GET {UPLOADS}5a1d?_state=abc"),
                format!("DELETE {UPLOADS}5a1d?_state=abc"),
            ]
        );
        // The token: ES256 by the registry's key, with its kid, push on the check's repository.
        let jwt = log[0].split_whitespace().nth(3).expect("a bearer token");
        assert!(log[0].contains("Bearer "), "{}", log[0]);
        let parts: Vec<&str> = jwt.split('.').collect();
        let b64 = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap()
        };
        let header: serde_json::Value = serde_json::from_slice(&b64(parts[0])).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], p.kid.as_str());
        let claims: serde_json::Value = serde_json::from_slice(&b64(parts[1])).unwrap();
        assert_eq!(claims["aud"], fqdn.as_str());
        assert_eq!(
            claims["iss"],
            crate::render::nginx::token_issuer(&fqdn).as_str()
        );
        assert_eq!(claims["access"][0]["name"], STORAGE_CHECK_REPOSITORY);
        assert_eq!(
            claims["access"][0]["actions"],
            serde_json::json!(["pull", "push", "delete"])
        );
        use p256::ecdsa::signature::Verifier;
        use p256::pkcs8::DecodePrivateKey;
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(p.token_key_pem.expose()).unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&b64(parts[2])).unwrap();
        key.verifying_key()
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signed with the registry's token key");
    }

    #[tokio::test]
    async fn a_registry_that_cannot_write_its_storage_fails_the_check_naming_it() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let issued = crate::tls::self_signed("registry.example.com", &[ip], None).unwrap();
        let (addr, _) = registry(&issued, |method, _| match method {
            // What distribution 2.8 answers when its S3 endpoint does not answer.
            "POST" => (
                500,
                "content-type: application/json\r\n".into(),
                r#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"DriverName":"s3aws","Enclosed":{"Err":"RequestError: send request failed: dial tcp 10.0.0.1:9000: connect: connection refused"}}}]}"#.into(),
            ),
            _ => (404, String::new(), String::new()),
        })
        .await;
        let http = pinned_to(&issued, ip);
        let fqdn = format!("registry.example.com:{}", addr.port());
        let p = probe("http-secret-2");
        let detail = storage_round_trip(&http, &fqdn, &p).await.unwrap_err();
        assert!(
            detail.contains("starting an upload") && detail.contains("500"),
            "{detail}"
        );
        assert!(detail.contains("connection refused"), "{detail}");
        let e = RemoteError::Storage {
            storage: p.storage.clone(),
            detail,
            advice: p.advice.clone(),
        }
        .to_string();
        assert!(
            e.starts_with(
                "the registry cannot use its storage, Spaces bucket b at http://10.0.0.1:9000: "
            ),
            "{e}"
        );
        assert!(
            e.ends_with("Check the provider's `spaces_endpoint`."),
            "{e}"
        );
    }

    #[test]
    fn granted_actions_read_the_first_access_entry() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"access":[{"type":"repository","name":"a","actions":["pull","push"]}]}"#);
        let token = Secret::new(format!("e30.{claims}.c2ln"));
        assert_eq!(granted_actions(&token).unwrap(), ["pull", "push"]);
        assert!(granted_actions(&Secret::new("a.%%%.b")).is_err());
    }
}
