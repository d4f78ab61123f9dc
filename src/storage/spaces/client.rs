//! The S3 client for Spaces: SigV4 presigned requests (rusty-s3) sent with reqwest, retried
//! on what is transient, and their failures as `storage::Error` without URL or signature.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use rusty_s3::{Bucket, Credentials, Map, UrlStyle};
use url::Url;

use super::xml::parse_xml;
use crate::config::Settings;
use crate::do_api;
use crate::secret::Secret;
use crate::storage::Error;

/// The region requests are signed for; see the module notes.
pub const DEFAULT_SIGNING_REGION: &str = "us-east-1";
/// How long a presigned request stays valid: it is sent at once, the margin is for clock skew.
pub(super) const SIGN_FOR: Duration = Duration::from_secs(300);
/// S3's page size, and the most keys one DeleteObjects may name.
pub(super) const PAGE: usize = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Retries of a request that met a 5xx or a transport failure; backoff doubles from
/// `S3_BACKOFF` up to `MAX_BACKOFF` (about 16 s in all: a `503 SlowDown` storm passes, a
/// Spaces that is down fails the apply soon), and a `Retry-After` longer than
/// `MAX_RETRY_AFTER` is cut short.
pub(super) const S3_RETRIES: u32 = 6;
// Unit tests wait for real (a `Retry-After` is honoured as it is), but not for the backoff.
const S3_BACKOFF: Duration = Duration::from_millis(if cfg!(test) { 5 } else { 250 });
const MAX_BACKOFF: Duration = Duration::from_millis(if cfg!(test) { 160 } else { 8_000 });
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// `template` with `{region}` replaced, as a URL without a trailing path: the registry's
/// `regionendpoint` and the base of every request here.
pub fn resolve_endpoint(template: &str, bucket_region: &str) -> Result<Url, Error> {
    let raw = template.replace("{region}", bucket_region);
    let bad = |reason: String| Error::Endpoint {
        endpoint: raw.clone(),
        reason,
    };
    let url = Url::parse(&raw).map_err(|e| bad(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http or https URL with a host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not carry a query or fragment".into()));
    }
    Ok(url)
}

/// An S3 client for one Spaces region with one set of credentials.
pub struct S3 {
    endpoint: Url,
    signing_region: String,
    access: Secret,
    secret: Secret,
    pub(super) http: reqwest::Client,
}

impl fmt::Debug for S3 {
    // By hand: the credentials must never be formatted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3")
            .field("endpoint", &self.endpoint.as_str())
            .field("signing_region", &self.signing_region)
            .field("credentials", &"***")
            .finish()
    }
}

/// An S3 response: status and body, and how many tries it took.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
    /// 1 unless transient failures were retried.
    pub(super) tries: u32,
    /// From the first try to this answer.
    pub(super) took: Duration,
    /// `x-amz-version-id`: the version an object write made or a read returned.
    pub(super) version_id: Option<String>,
}

impl S3 {
    /// `endpoint_template` may hold `{region}`, replaced by `bucket_region`; requests are
    /// signed for `signing_region` (normally [`DEFAULT_SIGNING_REGION`]).
    pub fn new(
        endpoint_template: &str,
        bucket_region: &str,
        signing_region: &str,
        access: Secret,
        secret: Secret,
    ) -> Result<S3, Error> {
        let endpoint = resolve_endpoint(endpoint_template, bucket_region)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(REQUEST_TIMEOUT)
            .user_agent(do_api::USER_AGENT_VALUE)
            .build()
            .map_err(|e| Error::Endpoint {
                endpoint: endpoint.to_string(),
                reason: format!("building the HTTP client: {e}"),
            })?;
        Ok(S3 {
            endpoint,
            signing_region: signing_region.to_owned(),
            access,
            secret,
            http,
        })
    }

    /// A client with the provider's own Spaces credentials (the ones allowed to create
    /// buckets), for a bucket in `bucket_region`.
    pub fn from_settings(settings: &Settings, bucket_region: &str) -> Result<S3, Error> {
        let (Some(access), Some(secret)) = (
            settings.spaces_access_id.clone(),
            settings.spaces_secret_key.clone(),
        ) else {
            return Err(Error::NoSpacesCredentials);
        };
        S3::new(
            &settings.spaces_endpoint,
            bucket_region,
            DEFAULT_SIGNING_REGION,
            access,
            secret,
        )
    }

    /// A client with the given keys (a registry's own `storage` keys) at the provider's Spaces
    /// endpoint, for a bucket in `bucket_region`.
    pub fn with_keys(
        settings: &Settings,
        bucket_region: &str,
        access: Secret,
        secret: Secret,
    ) -> Result<S3, Error> {
        S3::new(
            &settings.spaces_endpoint,
            bucket_region,
            DEFAULT_SIGNING_REGION,
            access,
            secret,
        )
    }

    /// The endpoint requests go to, e.g. `https://nyc3.digitaloceanspaces.com/`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub fn signing_region(&self) -> &str {
        &self.signing_region
    }

    pub(super) fn bucket(&self, name: &str) -> Result<Bucket, Error> {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            name.to_owned(),
            self.signing_region.clone(),
        )
        .map_err(|e| Error::Endpoint {
            endpoint: self.endpoint.to_string(),
            reason: format!("bucket {name}: {e}"),
        })
    }

    pub(super) fn credentials(&self) -> Credentials {
        Credentials::new(self.access.expose(), self.secret.expose())
    }

    /// Signs a request on the bucket itself (`<endpoint>/<bucket>/?<query>`), for the calls
    /// rusty-s3 has no action for (ListObjectVersions, ListMultipartUploads).
    pub(super) fn presign_bucket(
        &self,
        bucket: &Bucket,
        method: rusty_s3::Method,
        query: &[(&str, &str)],
    ) -> Url {
        let mut q = Map::new();
        for (k, v) in query {
            q.insert(*k, *v);
        }
        let headers = Map::new();
        rusty_s3::signing::sign(
            &Timestamp::now(),
            method,
            bucket.base_url().clone(),
            self.access.expose(),
            self.secret.expose(),
            None,
            &self.signing_region,
            SIGN_FOR.as_secs(),
            q.iter(),
            headers.iter(),
        )
    }

    /// Sends a presigned request. Only transport failures are errors here; the status is the
    /// caller's to judge. The URL is never put in a message: it carries a signature.
    ///
    /// Every call made here is idempotent (a repeated create finds its bucket, a repeated
    /// delete finds nothing), so 500/502/503/504 (Spaces says `503 SlowDown` when busy) and
    /// transport failures are retried with backoff, honouring `Retry-After`; the presigned
    /// URL stays valid for the retries.
    pub(super) async fn send(
        &self,
        op: &'static str,
        bucket: &str,
        method: reqwest::Method,
        url: Url,
        body: Option<(String, Vec<(&'static str, String)>)>,
    ) -> Result<Reply, Error> {
        let mut attempt = 0u32;
        let started = std::time::Instant::now();
        loop {
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some((body, headers)) = &body {
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                req = req.body(body.clone());
            }
            let transport = |e: reqwest::Error| Error::S3Transport {
                op,
                bucket: bucket.to_owned(),
                message: transport_message(e),
            };
            let result = async {
                let resp = req.send().await.map_err(transport)?;
                let status = resp.status();
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let version_id = resp
                    .headers()
                    .get("x-amz-version-id")
                    .and_then(|v| v.to_str().ok())
                    // Unversioned buckets may say "null": no version to name.
                    .filter(|v| !v.is_empty() && *v != "null")
                    .map(str::to_owned);
                let body = resp.bytes().await.map_err(transport)?.to_vec();
                let reply = Reply {
                    status,
                    body,
                    tries: attempt + 1,
                    took: started.elapsed(),
                    version_id,
                };
                Ok::<_, Error>((reply, wait))
            }
            .await;
            let transient = match &result {
                Ok((r, _)) => matches!(r.status.as_u16(), 500 | 502 | 503 | 504),
                Err(_) => true,
            };
            if !transient || attempt >= S3_RETRIES {
                let (reply, _) = result?;
                tracing::debug!(
                    op,
                    bucket,
                    status = reply.status.as_u16(),
                    bytes = reply.body.len(),
                    retries = attempt,
                    "Spaces request"
                );
                return Ok(reply);
            }
            let hint = result.as_ref().ok().and_then(|(_, w)| *w);
            let delay = match hint {
                Some(asked) => asked.min(MAX_RETRY_AFTER),
                None => (S3_BACKOFF * 2u32.pow(attempt)).min(MAX_BACKOFF),
            };
            tracing::debug!(
                op,
                bucket,
                retry = attempt + 1,
                delay_ms = delay.as_millis() as u64,
                "retrying Spaces request"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

fn transport_message(e: reqwest::Error) -> String {
    // Without the URL: a presigned URL carries the access key id and a signature.
    crate::error_chain::display_chain(&e.without_url())
}

/// An error status as [`Error::S3Status`], with S3's `Code` and `Message` when the body is
/// S3's XML error (HEAD answers have no body: the status reason stands in).
pub(super) fn status_error(op: &'static str, bucket: &str, r: &Reply) -> Error {
    let (mut code, mut message) = (String::new(), String::new());
    if let Ok(doc) = parse_xml(&r.body) {
        if doc.root == "Error" {
            code = doc.field("Code").unwrap_or_default().to_owned();
            message = doc.field("Message").unwrap_or_default().to_owned();
        }
    }
    if code.is_empty() {
        code = r
            .status
            .canonical_reason()
            .unwrap_or("error")
            .replace(' ', "");
    }
    if message.is_empty() {
        let text = String::from_utf8_lossy(&r.body);
        message = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if message.chars().count() > 200 {
            message = message.chars().take(200).collect::<String>() + "…";
        }
    }
    if r.tries > 1 {
        // Retried to the end: say that waiting did not help, and what is left to do.
        message = format!(
            "{message} (the same after {} tries over {}: Spaces is busy or failing; run `apply` again later)",
            r.tries,
            do_api::human_duration(r.took)
        );
    }
    Error::S3Status {
        op,
        bucket: bucket.to_owned(),
        status: r.status.as_u16(),
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::spaces::{registry_storage, RegistryKey};

    #[test]
    fn endpoints_resolve_the_region_template() {
        let u = resolve_endpoint("https://{region}.digitaloceanspaces.com", "ams3").unwrap();
        assert_eq!(u.as_str(), "https://ams3.digitaloceanspaces.com/");
        let u = resolve_endpoint("http://127.0.0.1:9000", "nyc3").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:9000/");
        assert!(resolve_endpoint("ftp://{region}.example", "nyc3").is_err());
        assert!(resolve_endpoint("not a url", "nyc3").is_err());
        let s = S3::new(
            "https://{region}.digitaloceanspaces.com",
            "fra1",
            DEFAULT_SIGNING_REGION,
            Secret::new("AKIDTESTTESTTEST"),
            Secret::new("very-secret-key-value"),
        )
        .unwrap();
        assert_eq!(s.signing_region(), "us-east-1");
        let key = RegistryKey {
            access_key: "DO00REGISTRY".into(),
            secret_key: Secret::new("registry-secret"),
        };
        assert_eq!(
            registry_storage(&s, "acme-registry", &key, true),
            crate::render::Storage::Spaces {
                bucket: "acme-registry".into(),
                region: "us-east-1".into(),
                endpoint: "https://fra1.digitaloceanspaces.com".into(),
                access_key: "DO00REGISTRY".into(),
                secret_key: Secret::new("registry-secret"),
                redirect: true,
            }
        );
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("very-secret") && !dbg.contains("AKIDTEST"),
            "{dbg}"
        );
    }
}
