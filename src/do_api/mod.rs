//! Typed client for the part of DigitalOcean API v2 the `docker_registry` resource uses
//! (shapes from shared/do-openapi.yaml): retries, rate limit, pagination, waits, redaction.

mod error;
mod resources;
mod types;
mod wait;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use crate::config::Settings;

pub use error::{human_duration, Error, ResultExt};
pub use types::*;

/// User-Agent sent on every request.
pub const USER_AGENT_VALUE: &str = concat!("terraform-provider-docker/", env!("CARGO_PKG_VERSION"));

/// Page size asked for on list calls: DigitalOcean's maximum, so most lists take one request.
const PER_PAGE: &str = "200";
/// A server that keeps handing out `next` links is broken; stop rather than loop forever.
const MAX_PAGES: usize = 1000;
/// A `Retry-After` longer than this is cut short: a plan should fail visibly, not hang an hour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How a request may be repeated when it fails.
///
/// Retry policy, and why:
/// - 429 is retried for every method: DigitalOcean rejects before acting. `Retry-After`
///   (seconds or an HTTP date) is honoured, else `ratelimit-reset`, else backoff.
/// - 5xx except 501 is retried for GET/PUT/DELETE, which are idempotent. A POST is *not*
///   retried on a 5xx by the generic path: the create may have happened (DigitalOcean has no
///   idempotency key). Creates that can find their own result (droplet by a unique tag, volume
///   by name and region, DNS record by name/type/data) look it up after an ambiguous failure
///   and retry only when it does not exist; see `create_with_recovery`.
/// - Transport errors are retried for idempotent methods; for POST only when the connection
///   was never made (nothing was sent).
/// - Other 4xx are never retried. Backoff: 500 ms doubling to 30 s, with jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// GET/PUT/DELETE: 429, 5xx (but 501) and transport errors.
    Idempotent,
    /// POST that may have acted: 429 and connect failures only (nothing reached DO).
    RateLimitOnly,
}

/// Backoff and poll timings; tests shrink them, production uses the defaults.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub backoff_start: Duration,
    pub backoff_max: Duration,
    pub poll_start: Duration,
    pub poll_max: Duration,
    /// How long a freshly created droplet may answer 404 while we wait for it.
    pub not_found_grace: Duration,
    /// Per-request timeout (connect + whole exchange).
    pub request_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            backoff_start: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            poll_start: Duration::from_secs(1),
            poll_max: Duration::from_secs(5),
            not_found_grace: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// A DigitalOcean API client. Cheap to clone; clones share the rate limiter.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    retry_max: u32,
    limiter: Option<RateLimiter>,
    timings: Timings,
}

impl fmt::Debug for Client {
    // Deliberately by hand: the Authorization header must never be formatted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api_endpoint", &self.inner.base.as_str())
            .field("http_retry_max", &self.inner.retry_max)
            .field("rate_limited", &self.inner.limiter.is_some())
            .field("token", &"***")
            .finish()
    }
}

/// Spaces requests one interval apart: a token bucket of capacity one, like the rate limiter
/// DigitalOcean's own provider uses, so `n` requests take at least `(n-1)/rps` seconds.
struct RateLimiter {
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl RateLimiter {
    fn new(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            interval: Duration::from_secs_f64(1.0 / f64::from(per_second)),
            next_slot: Mutex::new(Instant::now()),
        })
    }

    async fn acquire(&self) {
        let slot = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// A successful exchange: status and raw body.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

impl Client {
    /// Builds a client for the provider's settings.
    pub fn new(settings: &Settings) -> Result<Client, Error> {
        Self::with_timings(settings, Timings::default())
    }

    /// As [`Client::new`], with other backoff and poll timings (tests, or impatient callers).
    pub fn with_timings(settings: &Settings, timings: Timings) -> Result<Client, Error> {
        // The error of from_str is not formatted: it could only ever describe the token.
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", settings.token.expose()))
            .map_err(|_| {
                Error::Config("the API token holds characters not allowed in an HTTP header".into())
            })?;
        auth.set_sensitive(true);
        let mut ua = USER_AGENT_VALUE.to_owned();
        if !settings.terraform_version.is_empty() {
            ua.push_str(&format!(" Terraform/{}", settings.terraform_version));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_str(&ua).unwrap_or(HeaderValue::from_static(USER_AGENT_VALUE)),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(15))
            .timeout(timings.request_timeout)
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base: settings.api_endpoint.clone(),
                auth,
                retry_max: settings.http_retry_max,
                limiter: RateLimiter::new(settings.requests_per_second),
                timings,
            }),
        })
    }

    pub(crate) fn timings(&self) -> &Timings {
        &self.inner.timings
    }

    /// The URL of `segments` under the endpoint, each segment percent-encoded (domain names,
    /// fingerprints and slugs come from users).
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base.clone();
        {
            // Unwrap is safe: Settings only holds http(s) URLs, which can have paths.
            let mut path = url.path_segments_mut().expect("http URL has a path");
            path.pop_if_empty();
            path.extend(segments);
        }
        if query.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(query);
        }
        url
    }

    /// Only the path and query, for messages and logs: the host is always the endpoint.
    fn display_path(url: &Url) -> String {
        match url.query() {
            Some(q) => format!("{}?{}", url.path(), q),
            None => url.path().to_owned(),
        }
    }

    /// One logical request: rate limit, retries, logging. Any non-2xx ends as `Error::Api`.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Reply, Error> {
        let path = Self::display_path(&url);
        let body_bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        // Field values are only computed when trace is on, so redaction costs nothing otherwise.
        if let Some(b) = body {
            tracing::trace!(method = %method, path = %path, body = %redacted_json(b), "DigitalOcean request body");
        }
        let mut attempt: u32 = 0;
        loop {
            if let Some(limiter) = &self.inner.limiter {
                limiter.acquire().await;
            }
            let mut req = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, self.inner.auth.clone());
            if let Some(b) = &body_bytes {
                req = req.header(CONTENT_TYPE, "application/json").body(b.clone());
            }
            let started = Instant::now();
            let outcome = req.send().await;
            let retries_left = attempt < self.inner.retry_max;
            match outcome {
                Err(source) => {
                    tracing::debug!(
                        method = %method, path = %path, error = %source,
                        duration_ms = started.elapsed().as_millis() as u64, retry = attempt,
                        "DigitalOcean request failed"
                    );
                    let may_retry = match retry {
                        Retry::Idempotent => true,
                        Retry::RateLimitOnly => source.is_connect(),
                    };
                    if may_retry && retries_left {
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(Error::Transport {
                        method: method.to_string(),
                        path,
                        source,
                    });
                }
                Ok(resp) => {
                    let status = resp.status();
                    let wait_hint = retry_after(resp.headers());
                    let request_id = resp
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let bytes = match resp.bytes().await {
                        Ok(b) => b.to_vec(),
                        Err(source) => {
                            if retry == Retry::Idempotent && retries_left {
                                tokio::time::sleep(self.backoff(attempt)).await;
                                attempt += 1;
                                continue;
                            }
                            return Err(Error::Transport {
                                method: method.to_string(),
                                path,
                                source,
                            });
                        }
                    };
                    tracing::debug!(
                        method = %method, path = %path, status = status.as_u16(),
                        duration_ms = started.elapsed().as_millis() as u64, retry = attempt,
                        "DigitalOcean request"
                    );
                    tracing::trace!(method = %method, path = %path, body = %snippet(&bytes, 4096), "DigitalOcean response body");
                    if status.is_success() {
                        return Ok(Reply {
                            status,
                            body: bytes,
                        });
                    }
                    let transient = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
                    let may_retry = transient
                        && match retry {
                            Retry::Idempotent => true,
                            Retry::RateLimitOnly => status == StatusCode::TOO_MANY_REQUESTS,
                        };
                    if may_retry && retries_left {
                        let delay = wait_hint
                            .map(|d| d.min(MAX_RETRY_AFTER))
                            .unwrap_or_else(|| self.backoff(attempt));
                        tracing::debug!(
                            method = %method, path = %path, status = status.as_u16(),
                            delay_ms = delay.as_millis() as u64, retry = attempt + 1,
                            "retrying DigitalOcean request"
                        );
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(api_error(&method, path, status, &bytes, request_id));
                }
            }
        }
    }

    /// Exponential backoff with jitter: half the step fixed, half random, so clients that
    /// failed together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        let t = &self.inner.timings;
        let step = t
            .backoff_start
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(t.backoff_max);
        let half = step / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        retry: Retry,
        key: &str,
    ) -> Result<T, Error> {
        let path = Self::display_path(&url);
        let reply = self.send(method.clone(), url, body, retry).await?;
        parse_field(&method, &path, &reply, key)
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, url: Url, key: &str) -> Result<T, Error> {
        self.call(Method::GET, url, None, Retry::Idempotent, key)
            .await
    }

    /// GET where 404 means "absent", the read path's answer.
    pub(crate) async fn get_opt<T: DeserializeOwned>(
        &self,
        url: Url,
        key: &str,
    ) -> Result<Option<T>, Error> {
        match self.get(url, key).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        url: Url,
        body: &impl Serialize,
        key: &str,
    ) -> Result<T, Error> {
        let body = to_value(body)?;
        self.call(Method::POST, url, Some(&body), Retry::RateLimitOnly, key)
            .await
    }

    /// POST whose repetition is harmless (adding droplets to a firewall): retried like a PUT.
    pub(crate) async fn post_idempotent_empty(
        &self,
        url: Url,
        body: &impl Serialize,
    ) -> Result<(), Error> {
        let body = to_value(body)?;
        self.send(Method::POST, url, Some(&body), Retry::Idempotent)
            .await
            .map(drop)
    }

    pub(crate) async fn put<T: DeserializeOwned>(
        &self,
        url: Url,
        body: &impl Serialize,
        key: &str,
    ) -> Result<T, Error> {
        let body = to_value(body)?;
        self.call(Method::PUT, url, Some(&body), Retry::Idempotent, key)
            .await
    }

    /// DELETE where 404 is success: deleting what is gone is what delete wants.
    pub(crate) async fn delete(&self, url: Url, body: Option<&Value>) -> Result<(), Error> {
        match self
            .send(Method::DELETE, url, body, Retry::Idempotent)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every item of a paginated list: asks for 200 a page and follows `links.pages.next`.
    pub(crate) async fn list_all<T: DeserializeOwned>(
        &self,
        mut url: Url,
        key: &str,
    ) -> Result<Vec<T>, Error> {
        if !url.query_pairs().any(|(k, _)| k == "per_page") {
            url.query_pairs_mut().append_pair("per_page", PER_PAGE);
        }
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            let path = Self::display_path(&url);
            seen.insert(url.to_string());
            let reply = self
                .send(Method::GET, url.clone(), None, Retry::Idempotent)
                .await?;
            let page: Vec<T> = parse_field(&Method::GET, &path, &reply, key)?;
            let empty = page.is_empty();
            out.extend(page);
            let next = next_link(&reply.body);
            match next.and_then(|n| self.rebase_link(&n)) {
                Some(n) if !empty && !seen.contains(n.as_str()) => url = n,
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// `next` links carry the server's idea of its own host. The token goes only to the
    /// configured endpoint, so the link's path and query are re-based onto it (keeping a
    /// path prefix of the endpoint, for an API served under one).
    fn rebase_link(&self, link: &str) -> Option<Url> {
        let base = &self.inner.base;
        let parsed = Url::parse(link).or_else(|_| base.join(link)).ok()?;
        if parsed.origin() == base.origin() {
            return Some(parsed);
        }
        let prefix = base.path().trim_end_matches('/');
        let mut url = base.clone();
        if parsed.path().starts_with(&format!("{prefix}/")) {
            url.set_path(parsed.path());
        } else {
            url.set_path(&format!("{prefix}{}", parsed.path()));
        }
        url.set_query(parsed.query());
        Some(url)
    }

    /// A create that cannot be repeated blindly. After an ambiguous failure (5xx, reset after
    /// sending) it asks `find` whether the object exists; if so that is the result, else the
    /// create is retried, up to `http_retry_max` times.
    pub(crate) async fn create_with_recovery<T, F, Fut>(
        &self,
        url: Url,
        body: &impl Serialize,
        key: &str,
        find: F,
    ) -> Result<T, Error>
    where
        T: DeserializeOwned,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<T>, Error>>,
    {
        let body = to_value(body)?;
        let mut attempt = 0u32;
        loop {
            let err = match self
                .call(
                    Method::POST,
                    url.clone(),
                    Some(&body),
                    Retry::RateLimitOnly,
                    key,
                )
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) if e.is_ambiguous() => e,
                Err(e) => return Err(e),
            };
            // Give DigitalOcean time to make a half-done create visible before looking for it.
            tokio::time::sleep(self.backoff(attempt)).await;
            match find().await {
                Ok(Some(found)) => {
                    tracing::warn!(path = %url.path(), error = %err, "create failed ambiguously but the object exists; using it");
                    return Ok(found);
                }
                Ok(None) => {}
                Err(lookup) => {
                    tracing::debug!(error = %lookup, "lookup after ambiguous create failed");
                    return Err(err);
                }
            }
            if attempt >= self.inner.retry_max {
                return Err(err);
            }
            attempt += 1;
            tracing::debug!(path = %url.path(), retry = attempt, "object not created; retrying create");
        }
    }
}

fn to_value(body: &impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(body)
        .map_err(|e| Error::Config(format!("request body does not serialize: {e}")))
}

/// `body[key]` as `T`; an empty key means the whole body.
fn parse_field<T: DeserializeOwned>(
    method: &Method,
    path: &str,
    reply: &Reply,
    key: &str,
) -> Result<T, Error> {
    let invalid = |reason: String| Error::InvalidPayload {
        method: method.to_string(),
        path: path.to_owned(),
        status: reply.status.as_u16(),
        reason,
        snippet: snippet(&reply.body, 200),
    };
    let mut value: Value =
        serde_json::from_slice(&reply.body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let field = if key.is_empty() {
        value
    } else {
        match value.get_mut(key) {
            Some(v) => v.take(),
            None => return Err(invalid(format!("no `{key}` field"))),
        }
    };
    serde_json::from_value(field)
        .map_err(|e| invalid(format!("`{key}` does not match the API's schema: {e}")))
}

fn next_link(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/links/pages/next")?.as_str().map(str::to_owned)
}

fn api_error(
    method: &Method,
    path: String,
    status: StatusCode,
    body: &[u8],
    header_request_id: Option<String>,
) -> Error {
    #[derive(serde::Deserialize)]
    struct DoError {
        id: Option<String>,
        message: Option<String>,
        request_id: Option<String>,
    }
    let fallback_id = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    let (id, message, request_id) = match serde_json::from_slice::<DoError>(body) {
        Ok(e) if e.id.is_some() || e.message.is_some() => (
            e.id.unwrap_or(fallback_id),
            e.message.unwrap_or_default(),
            e.request_id.or(header_request_id),
        ),
        _ => (
            fallback_id,
            format!("non-JSON body: {}", snippet(body, 200)),
            header_request_id,
        ),
    };
    Error::Api {
        method: method.to_string(),
        path,
        status: status.as_u16(),
        id,
        message,
        request_id,
    }
}

/// How long the server asked us to wait: `Retry-After` in seconds or as an HTTP date, else
/// DigitalOcean's `ratelimit-reset` (a Unix time) when the quota is spent.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(raw) = headers.get("retry-after").and_then(|v| v.to_str().ok()) {
        let raw = raw.trim();
        if let Ok(secs) = raw.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) =
            time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc2822)
        {
            let secs = (at - time::OffsetDateTime::now_utc())
                .whole_seconds()
                .max(0);
            return Some(Duration::from_secs(secs as u64));
        }
    }
    let remaining = headers
        .get("ratelimit-remaining")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    if remaining > 0 {
        return None;
    }
    let reset = headers
        .get("ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()?;
    let secs = reset - time::OffsetDateTime::now_utc().unix_timestamp();
    Some(Duration::from_secs(secs.max(1) as u64))
}

/// Replaces secret values at any depth: fields by what their names say, strings by their
/// shape (see `secret::redact_json`).
pub fn redact(value: &mut Value) {
    crate::secret::redact_json(value);
}

fn redacted_json(value: &Value) -> String {
    let mut v = value.clone();
    redact(&mut v);
    v.to_string()
}

/// The start of a body, safe to show: JSON is redacted first, anything else (an HTML error
/// page) is cut to `max` characters with whitespace squeezed.
fn snippet(body: &[u8], max: usize) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(v) => redacted_json(&v),
        Err(_) => {
            let mut raw = String::from_utf8_lossy(body).into_owned();
            // Broken JSON can still hold a secret: show nothing from the first word that
            // names one.
            let at = crate::secret::first_secret_word(&raw);
            if let Some(at) = at {
                raw.truncate(at);
                raw.push_str("[redacted]");
            }
            let raw = crate::secret::scrub(&raw).into_owned();
            raw.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    };
    if text.chars().count() > max {
        let mut cut: String = text.chars().take(max).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}
