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
            let rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| other(e.without_url()))?;
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
