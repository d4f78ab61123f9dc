//! S3 bucket versioning on top of Garage (which has none), in the forwarders: versioning
//! state and version records kept here ([`versions`]), noncurrent versions' bytes in a hidden
//! Garage bucket per versioned bucket, and the few requests Garage cannot answer served here.
//!
//! Everything else still goes to Garage unchanged; writes to a versioned bucket first set the
//! current object aside (a copy with localocean's own key) and are recorded once Garage
//! accepted them. The requests answered here are authenticated (SigV4) and authorized (the
//! key's grant on the bucket) here, since Garage never sees them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::grants::Grants;
use super::sigv4;
use super::versions::{self, BucketVersions, Lifecycle, ListQuery, Status, Version, NULL_ID};
use crate::spaces::IssuedKey;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// How long a key's secret is trusted before Garage is asked again (a deleted key stops
/// working here within this time, as a revoked grant does within a converge).
const SECRET_TTL: Duration = Duration::from_secs(10);
/// The largest XML body (versioning, lifecycle, DeleteObjects) read here.
const MAX_XML_BODY: usize = 2 << 20;
/// How often lifecycle rules on versions are applied.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Hidden buckets' names: adjacent dots make them invalid as S3 (and Spaces) bucket names,
/// so no user bucket can take one, and the forwarders refuse any request naming one.
const HIDDEN_PREFIX: &str = "v..";

/// The hidden bucket that holds `bucket`'s noncurrent versions.
pub(super) fn hidden_bucket(bucket: &str) -> String {
    format!(
        "{HIDDEN_PREFIX}{}",
        &hex::encode(Sha256::digest(bucket.as_bytes()))[..40]
    )
}

pub(super) fn is_hidden(bucket: &str) -> bool {
    bucket.starts_with(HIDDEN_PREFIX)
}

/// What a request needs of the key's grant on the bucket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
    /// Deleting the bucket itself (Garage asks the same of a DeleteBucket).
    Owner,
}

/// Garage's side of one client connection: requests go over it one at a time.
pub(super) struct Upstream(
    pub(super) tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Body>>,
);

impl Upstream {
    async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, hyper::Error> {
        let mut sender = self.0.lock().await;
        sender.ready().await?;
        sender.send_request(req).await
    }
}

/// One lock per (bucket, key) that writes to it take in turn.
type KeyLocks = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

pub(super) struct Versioning {
    buckets: Mutex<BTreeMap<String, BucketVersions>>,
    file: PathBuf,
    grants: Weak<Grants>,
    garage_s3: SocketAddr,
    endpoint: url::Url,
    region: String,
    /// localocean's version-store key, which every copy and delete here is signed with.
    store_key: IssuedKey,
    secrets: Mutex<HashMap<String, (String, Instant)>>,
    key_locks: Mutex<KeyLocks>,
}

/// An object's metadata as Garage gives it.
struct Meta {
    etag: String,
    size: u64,
    last_modified: i64,
}

impl Versioning {
    /// The records saved in `file` by a previous run (none on a first start).
    pub(super) fn load(
        file: PathBuf,
        grants: Weak<Grants>,
        garage_s3: SocketAddr,
        region: &str,
        store_key: IssuedKey,
    ) -> anyhow::Result<Versioning> {
        let buckets = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", file.display()))?,
            Err(_) => BTreeMap::new(),
        };
        Ok(Versioning {
            buckets: Mutex::new(buckets),
            file,
            grants,
            garage_s3,
            endpoint: format!("http://{garage_s3}").parse()?,
            region: region.to_string(),
            store_key,
            secrets: Mutex::new(HashMap::new()),
            key_locks: Mutex::new(HashMap::new()),
        })
    }

    fn persist(&self, buckets: &BTreeMap<String, BucketVersions>) -> anyhow::Result<()> {
        super::write_private(&self.file, &serde_json::to_vec(buckets)?)
            .with_context(|| format!("saving bucket versions to {}", self.file.display()))
    }

    /// Applies `change` to the bucket's records (creating them) and saves them.
    fn update<T>(
        &self,
        bucket: &str,
        change: impl FnOnce(&mut BucketVersions) -> T,
    ) -> anyhow::Result<T> {
        let mut buckets = self.buckets.lock().expect("poisoned");
        let entry = buckets
            .entry(bucket.to_string())
            .or_insert_with(|| BucketVersions::new(Status::Unversioned));
        let out = change(entry);
        self.persist(&buckets)?;
        Ok(out)
    }

    fn snapshot(&self, bucket: &str) -> Option<BucketVersions> {
        self.buckets.lock().expect("poisoned").get(bucket).cloned()
    }

    fn status(&self, bucket: &str) -> Status {
        self.snapshot_status(bucket).unwrap_or(Status::Unversioned)
    }

    fn snapshot_status(&self, bucket: &str) -> Option<Status> {
        self.buckets
            .lock()
            .expect("poisoned")
            .get(bucket)
            .map(|b| b.status)
    }

    /// The lock that serialises writes to one key, so that no two interleave.
    fn key_lock(&self, bucket: &str, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.key_locks.lock().expect("poisoned");
        let lock = locks
            .entry((bucket.to_string(), key.to_string()))
            .or_default();
        Arc::clone(lock)
    }

    /// [`Versioning::route`] as an owned, boxed future (the forwarders' service needs it
    /// `'static` and `Send`).
    pub(super) fn route_owned(
        self: Arc<Self>,
        req: Request<Body>,
        upstream: Arc<Upstream>,
    ) -> futures::future::BoxFuture<'static, Result<Response<Body>, hyper::Error>> {
        Box::pin(async move { self.route(req, upstream.as_ref()).await })
    }

    /// Answers `req` here when it is one of the requests versioning changes; otherwise sends
    /// it on to Garage, recording around the forward the writes that make versions.
    pub(super) async fn route(
        self: &Arc<Self>,
        req: Request<Body>,
        upstream: &Upstream,
    ) -> Result<Response<Body>, hyper::Error> {
        let target = Target::of(&req);
        let Some(bucket) = target.bucket.clone() else {
            return pass(upstream, req).await;
        };
        if is_hidden(&bucket) {
            return Ok(s3_error(&req, 403, "AccessDenied", "Access Denied", &[]));
        }
        let status = self.status(&bucket);
        let versioned = status != Status::Unversioned;
        let m = req.method().clone();
        match (&m, target.key.as_deref(), target.op.as_deref()) {
            (_, None, Some("versioning")) => self.versioning(req, &bucket).await,
            (_, None, Some("lifecycle")) => self.lifecycle(req, &bucket, upstream).await,
            (&Method::GET, None, Some("versions")) if versioned => {
                self.list_versions(req, &bucket).await
            }
            (&Method::POST, None, Some("delete")) if versioned => {
                self.delete_objects(req, &bucket).await
            }
            (&Method::DELETE, None, None) if self.snapshot(&bucket).is_some() => {
                self.delete_bucket(req, &bucket, upstream).await
            }
            (&Method::GET | &Method::HEAD, Some(key), None) if versioned => {
                match target.version_id.clone() {
                    Some(v) => self.get_version(req, &bucket, key, &v).await,
                    None => self.read_current(req, &bucket, key, upstream).await,
                }
            }
            (&Method::DELETE, Some(key), None) if versioned => match target.version_id.clone() {
                Some(v) => self.delete_version_request(req, &bucket, key, &v).await,
                None => {
                    let key = key.to_string();
                    self.write_through(&bucket, &key, true, upstream, req).await
                }
            },
            (&Method::PUT, Some(key), None) | (&Method::POST, Some(key), Some("uploadId"))
                if versioned =>
            {
                let key = key.to_string();
                self.write_through(&bucket, &key, false, upstream, req)
                    .await
            }
            _ => pass(upstream, req).await,
        }
    }

    /// Checks the request's signature and the key's grant on `bucket`; the error answer if
    /// either fails.
    async fn authorize(
        &self,
        req: &Request<Body>,
        bucket: &str,
        need: Need,
    ) -> Result<sigv4::Claim, Response<Body>> {
        let claim = sigv4::claim(req.uri(), req.headers()).map_err(|e| auth_error(req, &e))?;
        let Some(secret) = self.secret(&claim.access_key).await else {
            return Err(s3_error(
                req,
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                &[],
            ));
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        sigv4::verify(&claim, req.method(), req.uri(), req.headers(), &secret, now)
            .map_err(|e| auth_error(req, &e))?;
        let perms = self
            .grants
            .upgrade()
            .map(|g| g.perms_of(&claim.access_key, bucket))
            .unwrap_or_default();
        let allowed = match need {
            Need::Read => perms.can_read(),
            Need::Write => perms.can_write(),
            Need::Owner => perms.is_owner(),
        };
        if !allowed {
            return Err(s3_error(req, 403, "AccessDenied", "Access Denied", &[]));
        }
        Ok(claim)
    }

    /// The key's secret, from Garage (cached for [`SECRET_TTL`]); `None` for an unknown key.
    async fn secret(&self, access_key: &str) -> Option<String> {
        if let Some((s, at)) = self.secrets.lock().expect("poisoned").get(access_key) {
            if at.elapsed() < SECRET_TTL {
                return Some(s.clone());
            }
        }
        let grants = self.grants.upgrade()?;
        let info: super::admin::KeyInfo = match grants
            .admin
            .get(
                "GetKeyInfo",
                &[("id", access_key), ("showSecretKey", "true")],
            )
            .await
        {
            Ok(i) => i,
            Err(e) => {
                if !e.is_not_found() {
                    tracing::warn!(error = %e, "reading a Spaces key for a versioning request");
                }
                return None;
            }
        };
        let secret = info.secret_access_key?;
        self.secrets
            .lock()
            .expect("poisoned")
            .insert(access_key.to_string(), (secret.clone(), Instant::now()));
        Some(secret)
    }

    /// Reads a small XML body in full and checks it against the signed payload hash.
    async fn read_body(
        req: Request<Body>,
        claim: &sigv4::Claim,
    ) -> Result<(hyper::http::request::Parts, Bytes), Response<Body>> {
        let (parts, body) = req.into_parts();
        let bytes = match read_limited(body).await {
            Some(b) => b,
            None => {
                let r = Request::from_parts(parts, ());
                return Err(s3_error(
                    &r,
                    400,
                    "MalformedXML",
                    "The XML body could not be read",
                    &[],
                ));
            }
        };
        if let Err(e) = sigv4::verify_payload(claim, &bytes) {
            let r = Request::from_parts(parts, ());
            return Err(auth_error(&r, &e));
        }
        if let Some(md5) = parts.headers.get("content-md5") {
            use base64::Engine as _;
            use md5::Digest as _;
            let want = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&bytes));
            if md5.as_bytes() != want.as_bytes() {
                let r = Request::from_parts(parts, ());
                return Err(s3_error(
                    &r,
                    400,
                    "BadDigest",
                    "The Content-MD5 you specified did not match what we received.",
                    &[],
                ));
            }
        }
        Ok((parts, bytes))
    }

    async fn versioning(
        &self,
        req: Request<Body>,
        bucket: &str,
    ) -> Result<Response<Body>, hyper::Error> {
        let need = if req.method() == Method::GET {
            Need::Read
        } else {
            Need::Write
        };
        let claim = match self.authorize(&req, bucket, need).await {
            Ok(c) => c,
            Err(resp) => return Ok(resp),
        };
        if !self.bucket_exists(bucket).await {
            return Ok(s3_error(
                &req,
                404,
                "NoSuchBucket",
                "The specified bucket does not exist",
                &[],
            ));
        }
        match *req.method() {
            Method::GET => {
                let status = self
                    .snapshot_status(bucket)
                    .filter(|s| *s != Status::Unversioned);
                Ok(xml_response(200, versions::versioning_xml(status)))
            }
            Method::PUT => {
                let (parts, body) = match Self::read_body(req, &claim).await {
                    Ok(x) => x,
                    Err(resp) => return Ok(resp),
                };
                let r = Request::from_parts(parts, ());
                let Some(status) = versions::parse_versioning(&String::from_utf8_lossy(&body))
                else {
                    return Ok(s3_error(&r, 400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema", &[]));
                };
                // Suspended too: a bucket once enabled keeps its noncurrent versions there.
                if let Err(e) = self.ensure_hidden_bucket(bucket).await {
                    return Ok(internal(&r, &e));
                }
                // As on S3, a never-versioned bucket may be set to Suspended as well; there
                // is no way back to unversioned.
                let result = self.update(bucket, |b| b.status = status);
                Ok(match result {
                    Ok(()) => empty_response(200),
                    Err(e) => internal(&r, &e),
                })
            }
            _ => Ok(s3_error(
                &req,
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                &[],
            )),
        }
    }

    async fn lifecycle(
        &self,
        req: Request<Body>,
        bucket: &str,
        upstream: &Upstream,
    ) -> Result<Response<Body>, hyper::Error> {
        let stored = self.snapshot(bucket).and_then(|b| b.lifecycle);
        match *req.method() {
            Method::GET if stored.is_some() => {
                if let Err(resp) = self.authorize(&req, bucket, Need::Read).await {
                    return Ok(resp);
                }
                Ok(xml_response(200, stored.map(|l| l.xml).unwrap_or_default()))
            }
            Method::PUT => {
                let claim = match self.authorize(&req, bucket, Need::Write).await {
                    Ok(c) => c,
                    Err(resp) => return Ok(resp),
                };
                let (parts, body) = match Self::read_body(req, &claim).await {
                    Ok(x) => x,
                    Err(resp) => return Ok(resp),
                };
                let xml = String::from_utf8_lossy(&body).into_owned();
                let rules = versions::parse_lifecycle(&xml);
                if rules.is_empty() {
                    // Nothing about versions: Garage keeps it, as before; one stored here goes.
                    let req =
                        Request::from_parts(parts, Full::new(body).map_err(|e| match e {}).boxed());
                    let resp = pass(upstream, req).await?;
                    if resp.status().is_success() && stored.is_some() {
                        self.update(bucket, |b| b.lifecycle = None).ok();
                    }
                    return Ok(resp);
                }
                let r = Request::from_parts(parts, ());
                if !self.bucket_exists(bucket).await {
                    return Ok(s3_error(
                        &r,
                        404,
                        "NoSuchBucket",
                        "The specified bucket does not exist",
                        &[],
                    ));
                }
                // A PUT replaces the whole configuration: one Garage held goes.
                if let Err(e) = self.delete_garage_lifecycle(bucket).await {
                    return Ok(internal(&r, &e));
                }
                Ok(
                    match self.update(bucket, |b| b.lifecycle = Some(Lifecycle { xml, rules })) {
                        Ok(()) => empty_response(200),
                        Err(e) => internal(&r, &e),
                    },
                )
            }
            Method::DELETE if stored.is_some() => {
                if let Err(resp) = self.authorize(&req, bucket, Need::Write).await {
                    return Ok(resp);
                }
                let resp = pass(upstream, req).await?;
                if resp.status().is_success() {
                    self.update(bucket, |b| b.lifecycle = None).ok();
                }
                Ok(resp)
            }
            _ => pass(upstream, req).await,
        }
    }

    async fn list_versions(
        &self,
        req: Request<Body>,
        bucket: &str,
    ) -> Result<Response<Body>, hyper::Error> {
        if let Err(resp) = self.authorize(&req, bucket, Need::Read).await {
            return Ok(resp);
        }
        let params = sigv4::query_pairs(req.uri().query().unwrap_or(""));
        let get = |n: &str| {
            params
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let q = ListQuery {
            prefix: get("prefix"),
            key_marker: get("key-marker"),
            version_id_marker: get("version-id-marker"),
            max_keys: get("max-keys").parse().unwrap_or(1000).min(1000),
        };
        let unrecorded = match self.unrecorded(bucket, &q.prefix).await {
            Ok(u) => u,
            Err(e) => return Ok(internal(&req, &e)),
        };
        let Some(records) = self.snapshot(bucket) else {
            return Ok(s3_error(
                &req,
                404,
                "NoSuchBucket",
                "The specified bucket does not exist",
                &[],
            ));
        };
        let page = records.list(&q, &unrecorded);
        Ok(xml_response(200, versions::list_xml(bucket, &q, &page)))
    }

    /// Current objects under `prefix` that the records do not know (written before
    /// versioning): each is its `null` version.
    async fn unrecorded(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> anyhow::Result<Vec<(String, Version)>> {
        let known = self.snapshot(bucket).map(|b| b.keys).unwrap_or_default();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let b = self.s3_bucket(bucket)?;
            let creds = self.creds();
            let mut action = b.list_objects_v2(Some(&creds));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(Duration::from_secs(300));
            let resp = self.call(Method::GET, &url, &[], Bytes::new()).await?;
            let (status, body) = collect(resp).await?;
            anyhow::ensure!(
                status.is_success(),
                "listing bucket ({bucket}) answered {status}"
            );
            let page =
                rusty_s3::actions::ListObjectsV2::parse_response(&String::from_utf8_lossy(&body))
                    .with_context(|| format!("reading the listing of bucket ({bucket})"))?;
            for c in page.contents {
                if known.contains_key(&c.key) {
                    continue;
                }
                let last_modified = c
                    .last_modified
                    .as_deref()
                    .and_then(|t| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .unwrap_or_default();
                out.push((
                    c.key,
                    Version {
                        id: NULL_ID.into(),
                        last_modified,
                        etag: c.etag.unwrap_or_default(),
                        size: c.size.unwrap_or_default(),
                        delete_marker: false,
                        noncurrent_since: None,
                    },
                ));
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// GET or HEAD of a version: its bytes and headers, from wherever they are kept.
    async fn get_version(
        &self,
        req: Request<Body>,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<Response<Body>, hyper::Error> {
        if let Err(resp) = self.authorize(&req, bucket, Need::Read).await {
            return Ok(resp);
        }
        let records = self
            .snapshot(bucket)
            .unwrap_or_else(|| BucketVersions::new(Status::Unversioned));
        let latest = records.latest(key).map(|v| v.id.clone());
        let version = match records.find(key, id) {
            Some(v) => Some(v.clone()),
            // A current object written before versioning is the `null` version.
            None if id == NULL_ID && latest.is_none() => self
                .head(bucket, key)
                .await
                .ok()
                .flatten()
                .map(|m| null_version(&m)),
            None => None,
        };
        let Some(version) = version else {
            return Ok(s3_error(
                &req,
                404,
                "NoSuchVersion",
                "The specified version does not exist.",
                &[],
            ));
        };
        let vid = ("x-amz-version-id", version.id.clone());
        if version.delete_marker {
            return Ok(s3_error(
                &req,
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                &[
                    ("x-amz-delete-marker", "true".into()),
                    vid,
                    ("last-modified", http_date(version.last_modified)),
                ],
            ));
        }
        let is_current = latest.as_deref().is_none_or(|l| l == version.id);
        let (from_bucket, from_key) = if is_current {
            (bucket.to_string(), key.to_string())
        } else {
            (
                hidden_bucket(bucket),
                versions::hidden_key(&version.id, key),
            )
        };
        let head = req.method() == Method::HEAD;
        let passed: Vec<(&str, String)> = [
            "range",
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
        ]
        .iter()
        .filter_map(|h| {
            req.headers()
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(|v| (*h, v.to_string()))
        })
        .collect();
        let result = async {
            let b = self.s3_bucket(&from_bucket)?;
            let creds = self.creds();
            let url = if head {
                b.head_object(Some(&creds), &from_key)
                    .sign(Duration::from_secs(300))
            } else {
                b.get_object(Some(&creds), &from_key)
                    .sign(Duration::from_secs(300))
            };
            let method = if head { Method::HEAD } else { Method::GET };
            self.call(method, &url, &passed, Bytes::new()).await
        }
        .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => return Ok(internal(&req, &e)),
        };
        let (mut parts, body) = resp.into_parts();
        if parts.status == StatusCode::NOT_FOUND {
            tracing::warn!(%bucket, version = %version.id, "a recorded version's bytes are missing");
        }
        parts
            .headers
            .insert("x-amz-version-id", header_value(&version.id));
        parts.headers.insert(
            "last-modified",
            header_value(&http_date(version.last_modified)),
        );
        Ok(Response::from_parts(parts, body.map_err(box_err).boxed()))
    }

    /// GET or HEAD of the current object: Garage answers, and the version id is added.
    async fn read_current(
        &self,
        req: Request<Body>,
        bucket: &str,
        key: &str,
        upstream: &Upstream,
    ) -> Result<Response<Body>, hyper::Error> {
        let id = self
            .snapshot(bucket)
            .and_then(|b| b.latest(key).map(|v| v.id.clone()))
            .unwrap_or_else(|| NULL_ID.to_string());
        let marker = self
            .snapshot(bucket)
            .and_then(|b| b.latest(key).map(|v| v.delete_marker))
            .unwrap_or(false);
        let mut resp = pass(upstream, req).await?;
        if resp.status().is_success() {
            resp.headers_mut()
                .insert("x-amz-version-id", header_value(&id));
        } else if resp.status() == StatusCode::NOT_FOUND && marker {
            // As S3 says of a key whose latest version is a delete marker.
            resp.headers_mut()
                .insert("x-amz-version-id", header_value(&id));
            resp.headers_mut()
                .insert("x-amz-delete-marker", header_value("true"));
        }
        Ok(resp)
    }

    async fn delete_version_request(
        &self,
        req: Request<Body>,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<Response<Body>, hyper::Error> {
        if let Err(resp) = self.authorize(&req, bucket, Need::Write).await {
            return Ok(resp);
        }
        match self.delete_version(bucket, key, id).await {
            Ok(was_marker) => {
                let mut resp = empty_response(204);
                resp.headers_mut()
                    .insert("x-amz-version-id", header_value(id));
                if was_marker {
                    resp.headers_mut()
                        .insert("x-amz-delete-marker", header_value("true"));
                }
                Ok(resp)
            }
            Err(e) => Ok(internal(&req, &e)),
        }
    }

    /// Removes one version for good; when it was the latest, the newest remaining one becomes
    /// current. Returns whether it was a delete marker (false also when there was none).
    async fn delete_version(&self, bucket: &str, key: &str, id: &str) -> anyhow::Result<bool> {
        let _guard = self.key_lock(bucket, key).lock_owned().await;
        let mut records = self.snapshot(bucket).context("bucket is not versioned")?;
        if records.find(key, id).is_none() && id == NULL_ID && records.latest(key).is_none() {
            // The current object from before versioning: its only version.
            self.delete_object(bucket, key).await?;
            return Ok(false);
        }
        let Some(removed) = records.remove(key, id) else {
            return Ok(false);
        };
        let hidden = hidden_bucket(bucket);
        if !removed.version.delete_marker {
            if removed.was_latest {
                self.delete_object(bucket, key).await?;
            } else {
                self.delete_object(&hidden, &versions::hidden_key(id, key))
                    .await?;
            }
        }
        if let Some(p) = &removed.promoted {
            let from = versions::hidden_key(&p.id, key);
            self.copy(&hidden, &from, bucket, key).await?;
            self.delete_object(&hidden, &from).await?;
        }
        self.update(bucket, |b| b.keys = records.keys)?;
        Ok(removed.version.delete_marker)
    }

    /// A write Garage makes (PutObject, CopyObject, CompleteMultipartUpload, DeleteObject):
    /// the current object is set aside first, and the new version recorded once it succeeded.
    async fn write_through(
        &self,
        bucket: &str,
        key: &str,
        is_delete: bool,
        upstream: &Upstream,
        req: Request<Body>,
    ) -> Result<Response<Body>, hyper::Error> {
        let _guard = self.key_lock(bucket, key).lock_owned().await;
        let aside = match self.set_aside(bucket, key).await {
            Ok(a) => a,
            Err(e) => {
                return Ok(internal(
                    &req,
                    &e.context("setting the current version aside"),
                ))
            }
        };
        let mut resp = pass(upstream, req).await?;
        if !resp.status().is_success() {
            if let Some(id) = aside {
                self.delete_object(&hidden_bucket(bucket), &versions::hidden_key(&id, key))
                    .await
                    .ok();
            }
            return Ok(resp);
        }
        match self.record_write(bucket, key, is_delete).await {
            Ok(v) => {
                resp.headers_mut()
                    .insert("x-amz-version-id", header_value(&v.id));
                if is_delete {
                    resp.headers_mut()
                        .insert("x-amz-delete-marker", header_value("true"));
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), %bucket, "recording a new version")
            }
        }
        Ok(resp)
    }

    /// Copies the current object into the hidden bucket, under its version id, when a write
    /// is about to replace it; returns that id.
    async fn set_aside(&self, bucket: &str, key: &str) -> anyhow::Result<Option<String>> {
        let records = self.snapshot(bucket).context("bucket is not versioned")?;
        if records.latest(key).is_none() {
            // An object from before versioning becomes its `null` version.
            if let Some(meta) = self.head(bucket, key).await? {
                self.update(bucket, |b| b.push(key, null_version(&meta)))?;
            }
        }
        let records = self.snapshot(bucket).context("bucket is not versioned")?;
        let Some(id) = records.aside_id(key) else {
            return Ok(None);
        };
        self.copy(
            bucket,
            key,
            &hidden_bucket(bucket),
            &versions::hidden_key(&id, key),
        )
        .await?;
        Ok(Some(id))
    }

    async fn record_write(
        &self,
        bucket: &str,
        key: &str,
        is_delete: bool,
    ) -> anyhow::Result<Version> {
        let status = self.status(bucket);
        let id = if status == Status::Suspended {
            NULL_ID.to_string()
        } else {
            new_version_id()
        };
        let version = if is_delete {
            Version {
                id,
                last_modified: now_ms(),
                etag: String::new(),
                size: 0,
                delete_marker: true,
                noncurrent_since: None,
            }
        } else {
            let meta = self
                .head(bucket, key)
                .await?
                .with_context(|| format!("object ({key}) is gone right after its write"))?;
            Version {
                id,
                ..null_version(&meta)
            }
        };
        let gone = self.update(bucket, |b| b.push(key, version.clone()))?;
        let hidden = hidden_bucket(bucket);
        for k in gone {
            self.delete_object(&hidden, &k).await.ok();
        }
        Ok(version)
    }

    /// DeleteObjects on a versioned bucket, answered here: entries with a version id are
    /// permanent deletes, the others leave delete markers.
    async fn delete_objects(
        &self,
        req: Request<Body>,
        bucket: &str,
    ) -> Result<Response<Body>, hyper::Error> {
        let claim = match self.authorize(&req, bucket, Need::Write).await {
            Ok(c) => c,
            Err(resp) => return Ok(resp),
        };
        let (_, body) = match Self::read_body(req, &claim).await {
            Ok(x) => x,
            Err(resp) => return Ok(resp),
        };
        let (objects, quiet) = versions::parse_delete_objects(&String::from_utf8_lossy(&body));
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        for (key, version_id) in objects {
            let k = versions::escape(&key);
            let result = match &version_id {
                Some(v) => self.delete_version(bucket, &key, v).await.map(|marker| {
                    let m = if marker {
                        format!("<DeleteMarker>true</DeleteMarker><DeleteMarkerVersionId>{}</DeleteMarkerVersionId>", versions::escape(v))
                    } else {
                        String::new()
                    };
                    format!("<Deleted><Key>{k}</Key><VersionId>{}</VersionId>{m}</Deleted>", versions::escape(v))
                }),
                None => self.delete_current(bucket, &key).await.map(|v| {
                    format!("<Deleted><Key>{k}</Key><DeleteMarker>true</DeleteMarker><DeleteMarkerVersionId>{}</DeleteMarkerVersionId></Deleted>", versions::escape(&v.id))
                }),
            };
            match result {
                Ok(entry) if !quiet => out.push_str(&entry),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), %bucket, "DeleteObjects entry failed");
                    out.push_str(&format!("<Error><Key>{k}</Key><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>"));
                }
            }
        }
        out.push_str("</DeleteResult>");
        Ok(xml_response(200, out))
    }

    /// A delete without a version id, made here: aside, delete in Garage, record a marker.
    async fn delete_current(&self, bucket: &str, key: &str) -> anyhow::Result<Version> {
        let _guard = self.key_lock(bucket, key).lock_owned().await;
        let aside = self.set_aside(bucket, key).await?;
        if let Err(e) = self.delete_object(bucket, key).await {
            if let Some(id) = aside {
                self.delete_object(&hidden_bucket(bucket), &versions::hidden_key(&id, key))
                    .await
                    .ok();
            }
            return Err(e);
        }
        self.record_write(bucket, key, true).await
    }

    /// DeleteBucket of a bucket with records: refused while any version is left (as S3),
    /// else Garage deletes it and the version store goes with it.
    async fn delete_bucket(
        &self,
        req: Request<Body>,
        bucket: &str,
        upstream: &Upstream,
    ) -> Result<Response<Body>, hyper::Error> {
        let records = self
            .snapshot(bucket)
            .unwrap_or_else(|| BucketVersions::new(Status::Unversioned));
        if !records.is_empty() {
            if let Err(resp) = self.authorize(&req, bucket, Need::Owner).await {
                return Ok(resp);
            }
            return Ok(s3_error(&req, 409, "BucketNotEmpty", "The bucket you tried to delete is not empty. You must delete all versions in the bucket.", &[]));
        }
        let resp = pass(upstream, req).await?;
        if resp.status().is_success() {
            if records.status != Status::Unversioned {
                if let Err(e) = self.remove_hidden_bucket(bucket).await {
                    tracing::warn!(error = %format!("{e:#}"), %bucket, "removing a deleted bucket's version store");
                }
            }
            let mut buckets = self.buckets.lock().expect("poisoned");
            buckets.remove(bucket);
            if let Err(e) = self.persist(&buckets) {
                tracing::warn!(error = %format!("{e:#}"), "saving bucket versions");
            }
        }
        Ok(resp)
    }

    /// Applies every bucket's lifecycle rules on versions at `now` (Unix milliseconds).
    pub(super) async fn sweep(&self, now: i64) -> anyhow::Result<usize> {
        let due: Vec<(String, String, String)> = self
            .buckets
            .lock()
            .expect("poisoned")
            .iter()
            .flat_map(|(b, v)| {
                v.expired(now)
                    .into_iter()
                    .map(move |(k, id)| (b.clone(), k, id))
            })
            .collect();
        for (bucket, key, id) in &due {
            self.delete_version(bucket, key, id)
                .await
                .with_context(|| {
                    format!("expiring version ({id}) of ({key}) in bucket ({bucket})")
                })?;
        }
        Ok(due.len())
    }

    async fn delete_garage_lifecycle(&self, bucket: &str) -> anyhow::Result<()> {
        let b = self.s3_bucket(bucket)?;
        let creds = self.creds();
        let mut action = b.delete_bucket(&creds);
        action.query_mut().insert("lifecycle", "");
        let url = action.sign(Duration::from_secs(300));
        let resp = self.call(Method::DELETE, &url, &[], Bytes::new()).await?;
        let (status, _) = collect(resp).await?;
        anyhow::ensure!(
            status.is_success() || status == StatusCode::NOT_FOUND,
            "deleting Garage's lifecycle configuration of bucket ({bucket}) answered {status}"
        );
        Ok(())
    }

    async fn bucket_exists(&self, bucket: &str) -> bool {
        let Some(grants) = self.grants.upgrade() else {
            return false;
        };
        grants
            .admin
            .get::<serde_json::Value>("GetBucketInfo", &[("globalAlias", bucket)])
            .await
            .is_ok()
    }

    /// The hidden bucket, made with Garage's admin API and reachable by localocean's key only.
    async fn ensure_hidden_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let grants = self.grants.upgrade().context("Spaces is stopping")?;
        let name = hidden_bucket(bucket);
        let id = match grants
            .admin
            .get::<super::admin::BucketInfo>("GetBucketInfo", &[("globalAlias", &name)])
            .await
        {
            Ok(info) => info.id,
            Err(e) if e.is_not_found() => {
                let created: super::admin::BucketInfo = grants
                    .admin
                    .post("CreateBucket", &[], &json!({ "globalAlias": name }))
                    .await
                    .with_context(|| format!("creating the version store of bucket ({bucket})"))?;
                created.id
            }
            Err(e) => return Err(e.into()),
        };
        let body = json!({
            "bucketId": id,
            "accessKeyId": self.store_key.access_key,
            "permissions": { "read": true, "write": true, "owner": true },
        });
        grants
            .admin
            .post::<serde_json::Value>("AllowBucketKey", &[], &body)
            .await
            .with_context(|| {
                format!("granting localocean the version store of bucket ({bucket})")
            })?;
        Ok(())
    }

    async fn remove_hidden_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let grants = self.grants.upgrade().context("Spaces is stopping")?;
        let name = hidden_bucket(bucket);
        let info: super::admin::BucketInfo = match grants
            .admin
            .get("GetBucketInfo", &[("globalAlias", &name)])
            .await
        {
            Ok(i) => i,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        grants
            .admin
            .post::<serde_json::Value>("DeleteBucket", &[("id", &info.id)], &json!({}))
            .await
            .with_context(|| format!("deleting the version store of bucket ({bucket})"))?;
        Ok(())
    }

    fn creds(&self) -> Credentials {
        Credentials::new(
            self.store_key.access_key.clone(),
            self.store_key.secret_key.clone(),
        )
    }

    fn s3_bucket(&self, name: &str) -> anyhow::Result<Bucket> {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            name.to_string(),
            self.region.clone(),
        )
        .with_context(|| format!("addressing bucket ({name})"))
    }

    /// One request to Garage, signed with localocean's key, on a connection of its own.
    async fn call(
        &self,
        method: Method,
        url: &url::Url,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> anyhow::Result<Response<Incoming>> {
        let stream = tokio::net::TcpStream::connect(self.garage_s3)
            .await
            .context("connecting to garage")?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&url[url::Position::BeforePath..])
            .header("host", self.garage_s3.to_string());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = sender
            .send_request(req.body(Full::new(body))?)
            .await
            .with_context(|| format!("garage {method} {}", url.path()))?;
        Ok(resp)
    }

    /// An object's metadata; `None` when there is none.
    async fn head(&self, bucket: &str, key: &str) -> anyhow::Result<Option<Meta>> {
        let url = self
            .s3_bucket(bucket)?
            .head_object(Some(&self.creds()), key)
            .sign(Duration::from_secs(300));
        let resp = self.call(Method::HEAD, &url, &[], Bytes::new()).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let h = resp.headers();
                let text = |n: &str| {
                    h.get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                Ok(Some(Meta {
                    etag: text("etag"),
                    size: text("content-length").parse().unwrap_or_default(),
                    last_modified: httpdate::parse_http_date(&text("last-modified"))
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or_else(now_ms),
                }))
            }
            s => anyhow::bail!("garage HEAD of an object in bucket ({bucket}) answered {s}"),
        }
    }

    /// Copies an object (bytes and metadata) within Garage.
    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> anyhow::Result<()> {
        let source = format!("/{from_bucket}/{}", encode_path(from_key));
        let b = self.s3_bucket(to_bucket)?;
        let creds = self.creds();
        let mut action = b.put_object(Some(&creds), to_key);
        action
            .headers_mut()
            .insert("x-amz-copy-source", source.clone());
        let url = action.sign(Duration::from_secs(300));
        let resp = self
            .call(
                Method::PUT,
                &url,
                &[("x-amz-copy-source", source)],
                Bytes::new(),
            )
            .await?;
        let (status, body) = collect(resp).await?;
        anyhow::ensure!(
            status.is_success(),
            "copying an object from bucket ({from_bucket}) to ({to_bucket}) answered {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        );
        Ok(())
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> anyhow::Result<()> {
        let url = self
            .s3_bucket(bucket)?
            .delete_object(Some(&self.creds()), key)
            .sign(Duration::from_secs(300));
        let resp = self.call(Method::DELETE, &url, &[], Bytes::new()).await?;
        let (status, _) = collect(resp).await?;
        anyhow::ensure!(
            status.is_success() || status == StatusCode::NOT_FOUND,
            "deleting an object in bucket ({bucket}) answered {status}"
        );
        Ok(())
    }
}

/// A request's bucket, object key (percent-decoded) and the subresource it names, path-style.
struct Target {
    bucket: Option<String>,
    key: Option<String>,
    /// The first query parameter that is not part of a signature (`versioning`, `uploadId`...).
    op: Option<String>,
    version_id: Option<String>,
}

impl Target {
    fn of<B>(req: &Request<B>) -> Target {
        let path = req.uri().path().trim_start_matches('/');
        let (bucket, key) = match path.split_once('/') {
            Some((b, k)) if !k.is_empty() => (b, Some(sigv4::percent_decode(k))),
            Some((b, _)) => (b, None),
            None => (path, None),
        };
        let params = sigv4::query_pairs(req.uri().query().unwrap_or(""));
        let version_id = params
            .iter()
            .find(|(k, _)| k == "versionId")
            .map(|(_, v)| v.clone());
        // Parameters of the operation itself, not of its signature nor its version.
        let named: Vec<&str> = params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !k.to_ascii_lowercase().starts_with("x-amz-") && *k != "versionId")
            .collect();
        let has = |n: &str| named.contains(&n);
        let op = ["versioning", "lifecycle", "versions", "delete"]
            .into_iter()
            .find(|n| has(n))
            .or_else(|| (has("uploadId") && !has("partNumber")).then_some("uploadId"))
            .or_else(|| named.first().map(|_| "other"))
            .map(String::from);
        Target {
            bucket: (!bucket.is_empty()).then(|| bucket.to_string()),
            key,
            op,
            version_id,
        }
    }
}

async fn pass(upstream: &Upstream, req: Request<Body>) -> Result<Response<Body>, hyper::Error> {
    Ok(upstream
        .send(req)
        .await?
        .map(|b| b.map_err(box_err).boxed()))
}

async fn collect(resp: Response<Incoming>) -> anyhow::Result<(StatusCode, Bytes)> {
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A body of at most [`MAX_XML_BODY`] bytes, in full; `None` if it is longer or breaks off.
async fn read_limited(mut body: Body) -> Option<Bytes> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if buf.len() + data.len() > MAX_XML_BODY {
                return None;
            }
            buf.extend_from_slice(&data);
        }
    }
    Some(Bytes::from(buf))
}

/// A body error as the boxed error the forwarders' bodies carry.
pub(super) fn box_err(e: hyper::Error) -> BoxError {
    Box::new(e)
}

fn null_version(meta: &Meta) -> Version {
    Version {
        id: NULL_ID.into(),
        last_modified: meta.last_modified,
        etag: meta.etag.clone(),
        size: meta.size,
        delete_marker: false,
        noncurrent_since: None,
    }
}

fn new_version_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn http_date(ms: i64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// An object key in a path, each segment URI-encoded.
fn encode_path(key: &str) -> String {
    key.split('/')
        .map(sigv4::uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

fn header_value(s: &str) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_str(s)
        .unwrap_or_else(|_| hyper::header::HeaderValue::from_static(""))
}

fn full(body: String) -> Body {
    Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed()
}

fn empty_response(status: u16) -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp
}

fn xml_response(status: u16, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert("content-type", header_value("application/xml"));
    resp
}

fn auth_error<B>(req: &Request<B>, e: &sigv4::AuthError) -> Response<Body> {
    let (status, code) = e.s3_code();
    s3_error(req, status, code, &e.to_string(), &[])
}

fn internal<B>(req: &Request<B>, e: &anyhow::Error) -> Response<Body> {
    tracing::warn!(error = %format!("{e:#}"), path = %req.uri().path(), "Spaces versioning request failed");
    s3_error(
        req,
        500,
        "InternalError",
        "We encountered an internal error. Please try again.",
        &[],
    )
}

/// S3's error answer: an XML `Error` (none for HEAD) with a request id.
pub(super) fn s3_error<B>(
    req: &Request<B>,
    status: u16,
    code: &str,
    message: &str,
    headers: &[(&str, String)],
) -> Response<Body> {
    let request_id = format!("tx{:016x}-localocean", rand::random::<u64>());
    let body = if req.method() == Method::HEAD {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{request_id}</RequestId></Error>",
            versions::escape(message),
            versions::escape(req.uri().path())
        )
    };
    let mut resp = xml_response(status, body);
    resp.headers_mut()
        .insert("x-amz-request-id", header_value(&request_id));
    for (k, v) in headers {
        if let Ok(name) = hyper::header::HeaderName::from_bytes(k.as_bytes()) {
            resp.headers_mut().insert(name, header_value(v));
        }
    }
    resp
}

/// Applies lifecycle rules on versions every [`SWEEP_EVERY`] until Spaces stops.
pub(super) async fn sweep_loop(versioning: Weak<Versioning>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(v) = versioning.upgrade() else {
            return;
        };
        if let Err(e) = v.sweep(now_ms()).await {
            tracing::warn!(error = %format!("{e:#}"), "expiring noncurrent versions failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_buckets_are_not_valid_user_bucket_names() {
        let h = hidden_bucket("my-bucket");
        assert!(is_hidden(&h));
        assert!(h.len() <= 63 && h.contains(".."));
        assert_ne!(h, hidden_bucket("my-bucket2"));
    }

    #[test]
    fn targets_name_bucket_key_and_subresource() {
        let t = Target::of(
            &Request::get("/b/dir/a%20b?versionId=v1&X-Amz-Date=1")
                .body(())
                .unwrap(),
        );
        assert_eq!(t.bucket.as_deref(), Some("b"));
        assert_eq!(t.key.as_deref(), Some("dir/a b"));
        assert_eq!(t.version_id.as_deref(), Some("v1"));
        assert_eq!(t.op, None);
        let t = Target::of(
            &Request::get("/b?X-Amz-Algorithm=x&versions")
                .body(())
                .unwrap(),
        );
        assert_eq!((t.key, t.op.as_deref()), (None, Some("versions")));
        let t = Target::of(
            &Request::get("/b?encoding-type=url&versions&max-keys=2")
                .body(())
                .unwrap(),
        );
        assert_eq!(t.op.as_deref(), Some("versions"));
        let t = Target::of(
            &Request::put("/b/k?partNumber=1&uploadId=u")
                .body(())
                .unwrap(),
        );
        assert_eq!(t.op.as_deref(), Some("other"));
        let t = Target::of(&Request::post("/b/k?uploadId=u").body(()).unwrap());
        assert_eq!(t.op.as_deref(), Some("uploadId"));
        let t = Target::of(&Request::get("/b/").body(()).unwrap());
        assert_eq!(t.key, None);
    }
}
