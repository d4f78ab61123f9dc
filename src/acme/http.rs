//! instant-acme's `HttpClient` over reqwest (rustls, ring), so the directory can be trusted
//! through the provider's extra roots (`acme_ca_certificates`) on top of the system's.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use super::{AcmeConfig, AcmeError};

/// Each exchange with the CA; polling loops have their own overall bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Tries to connect to the CA before an exchange fails (1 s, then 2 s apart).
const CONNECT_ATTEMPTS: u32 = 3;

struct Reqwest(reqwest::Client);

pub(super) fn client(cfg: &AcmeConfig) -> Result<Box<dyn HttpClient>, AcmeError> {
    Ok(Box::new(Reqwest(reqwest_client(cfg)?)))
}

/// The reqwest client behind [`client`], for plain requests (renewal information).
pub(super) fn reqwest_client(cfg: &AcmeConfig) -> Result<reqwest::Client, AcmeError> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(20))
        .user_agent(concat!(
            "terraform-provider-docker/",
            env!("CARGO_PKG_VERSION")
        ));
    if let Some(pem) = cfg
        .extra_roots_pem
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            AcmeError::Setup(format!("acme_ca_certificates is not a PEM bundle: {e}"))
        })?;
        if certs.is_empty() {
            return Err(AcmeError::Setup(
                "acme_ca_certificates holds no PEM certificate".into(),
            ));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| AcmeError::Setup(format!("building the HTTP client: {e}")))
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> instant_acme::Error {
    instant_acme::Error::Other(Box::new(e))
}

impl HttpClient for Reqwest {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .unwrap_or_else(|never| match never {})
                .to_bytes();
            // A connection the CA never accepted carried nothing (its nonce unspent): tried
            // again after a pause, a few times. Seen: Pebble on a loaded machine refusing one
            // connection, failing a whole create; Let's Encrypt's front ends do the same now and
            // then. Errors after the request was sent are not retried here (a POST may have
            // been acted on).
            let mut attempt = 1;
            let rsp = loop {
                let sent = client
                    .request(parts.method.clone(), parts.uri.to_string())
                    .headers(parts.headers.clone())
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Err(e) if e.is_connect() && attempt < CONNECT_ATTEMPTS => {
                        tracing::debug!(
                            attempt,
                            "connecting to the CA failed: {}; again",
                            e.without_url()
                        );
                        tokio::time::sleep(Duration::from_secs(attempt as u64)).await;
                        attempt += 1;
                    }
                    other_result => break other_result.map_err(|e| other(e.without_url()))?,
                }
            };
            let mut out = http::Response::builder()
                .status(rsp.status())
                .version(rsp.version());
            if let Some(h) = out.headers_mut() {
                *h = rsp.headers().clone();
            }
            let bytes = rsp.bytes().await.map_err(|e| other(e.without_url()))?;
            let (parts, ()) = out.body(())?.into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(bytes),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A CA that refuses the first connections (not listening yet) is reached on a later
    /// attempt; the request is the same one.
    #[tokio::test]
    async fn a_refused_connection_is_tried_again() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1200));
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .unwrap();
            request
        });
        let cfg = AcmeConfig::new(format!("http://127.0.0.1:{port}/dir").parse().unwrap());
        let req = http::Request::get(format!("http://127.0.0.1:{port}/dir"))
            .body(BodyWrapper::from(Vec::new()))
            .unwrap();
        let rsp = client(&cfg).unwrap().request(req).await.unwrap();
        assert_eq!(rsp.parts.status, 200);
        assert!(server.join().unwrap().starts_with("GET /dir "));
    }
}
