//! The S3 side of Spaces: create, measure, empty and delete the registry's bucket (SigV4
//! presigned requests built by rusty-s3, sent with reqwest), and the registry's own key.
//!
//! Signing region: real Spaces accepts both the bucket's region and "us-east-1"; localocean's
//! Garage accepts exactly one, "us-east-1". So requests are signed for
//! [`DEFAULT_SIGNING_REGION`] unless told otherwise, while the endpoint carries the bucket's
//! region (`https://{region}.digitaloceanspaces.com`). Requests are path-style
//! (`<endpoint>/<bucket>/<key>`), which both accept.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use rusty_s3::actions::ObjectIdentifier;
use rusty_s3::{Bucket, Credentials, Map, S3Action, UrlStyle};
use url::Url;

use super::Error;
use crate::config::Settings;
use crate::do_api::{self, Grant, SpacesKeyCreateRequest};
use crate::secret::Secret;

/// The region requests are signed for; see the module notes.
pub const DEFAULT_SIGNING_REGION: &str = "us-east-1";
/// How long a presigned request stays valid: it is sent at once, the margin is for clock skew.
const SIGN_FOR: Duration = Duration::from_secs(300);
/// S3's page size, and the most keys one DeleteObjects may name.
const PAGE: usize = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Retries of a request that met a 5xx or a transport failure; backoff doubles from
/// `S3_BACKOFF`, and a `Retry-After` longer than `MAX_RETRY_AFTER` is cut short.
const S3_RETRIES: u32 = 4;
const S3_BACKOFF: Duration = Duration::from_millis(250);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Whether [`S3::ensure_bucket`] made the bucket (`true`) or found it (`false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Created(pub bool);

/// What a bucket holds: current objects and their bytes, and unfinished multipart uploads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub objects: u64,
    pub bytes: u64,
    pub uploads: u64,
}

impl Usage {
    fn describe(&self) -> String {
        format!(
            "{} objects ({} bytes) and {} unfinished uploads",
            self.objects, self.bytes, self.uploads
        )
    }
}

/// What [`destroy_bucket`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketDestroyed {
    Deleted,
    /// There was no such bucket: nothing to do.
    AlreadyGone,
}

/// The registry's own Spaces key: readwrite on its bucket only. The secret is returned by
/// DigitalOcean once, at create: keep it in state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryKey {
    pub access_key: String,
    pub secret_key: Secret,
}

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
    http: reqwest::Client,
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

/// An S3 response: status and body.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
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

    /// The endpoint requests go to, e.g. `https://nyc3.digitaloceanspaces.com/`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub fn signing_region(&self) -> &str {
        &self.signing_region
    }

    fn bucket(&self, name: &str) -> Result<Bucket, Error> {
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

    fn credentials(&self) -> Credentials {
        Credentials::new(self.access.expose(), self.secret.expose())
    }

    /// Signs a request on the bucket itself (`<endpoint>/<bucket>/?<query>`), for the calls
    /// rusty-s3 has no action for (ListObjectVersions, ListMultipartUploads).
    fn presign_bucket(
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
    async fn send(
        &self,
        op: &'static str,
        bucket: &str,
        method: reqwest::Method,
        url: Url,
        body: Option<(String, Vec<(&'static str, String)>)>,
    ) -> Result<Reply, Error> {
        let mut attempt = 0u32;
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
                let body = resp.bytes().await.map_err(transport)?.to_vec();
                Ok::<_, Error>((Reply { status, body }, wait))
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
            let delay = hint
                .unwrap_or(S3_BACKOFF * 2u32.pow(attempt))
                .min(MAX_RETRY_AFTER);
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

    /// `true` when the bucket exists and these credentials reach it, `false` when there is
    /// no such bucket. A 403 (someone else's bucket, or no grant) is an error.
    pub async fn head_bucket(&self, bucket: &str) -> Result<bool, Error> {
        let b = self.bucket(bucket)?;
        let creds = self.credentials();
        let url = b.head_bucket(Some(&creds)).sign(SIGN_FOR);
        let r = self
            .send("HeadBucket", bucket, reqwest::Method::HEAD, url, None)
            .await?;
        match r.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error("HeadBucket", bucket, &r)),
        }
    }

    /// Creates the bucket unless it exists and is ours. A name held by another account is
    /// [`Error::BucketTaken`].
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<Created, Error> {
        match self.head_bucket(bucket).await {
            Ok(true) => return Ok(Created(false)),
            Ok(false) => {}
            Err(Error::S3Status { status: 403, .. }) => return Err(self.forbidden(bucket).await),
            Err(e) => return Err(e),
        }
        let b = self.bucket(bucket)?;
        let creds = self.credentials();
        let url = b.create_bucket(&creds).sign(SIGN_FOR);
        let r = self
            .send("CreateBucket", bucket, reqwest::Method::PUT, url, None)
            .await?;
        if r.status.is_success() {
            tracing::info!(bucket, endpoint = %self.endpoint, "bucket created");
            return Ok(Created(true));
        }
        let err = status_error("CreateBucket", bucket, &r);
        match &err {
            Error::S3Status { code, .. } if code == "BucketAlreadyOwnedByYou" => Ok(Created(false)),
            // Made by a concurrent run (ours), or held by someone else: HEAD tells which.
            Error::S3Status { status: 409, .. } => match self.head_bucket(bucket).await {
                Ok(true) => Ok(Created(false)),
                _ => Err(Error::BucketTaken {
                    bucket: bucket.to_owned(),
                    status: 409,
                }),
            },
            Error::S3Status { status: 403, .. } => Err(self.forbidden(bucket).await),
            _ => Err(err),
        }
    }

    /// Why a bucket answered 403: a HEAD has no body, so a listing asks again. Bad
    /// credentials are reported as such; anything else means the name is not ours to use.
    async fn forbidden(&self, bucket: &str) -> Error {
        match self.list_objects_page(bucket, 1, None).await {
            Err(e @ Error::S3Status { .. }) if is_credentials_error(&e) => e,
            Err(e @ Error::S3Transport { .. }) => e,
            _ => Error::BucketTaken {
                bucket: bucket.to_owned(),
                status: 403,
            },
        }
    }

    /// One page of ListObjectsV2: (key, size) of current objects, and the continuation token.
    async fn list_objects_page(
        &self,
        bucket: &str,
        max_keys: usize,
        token: Option<&str>,
    ) -> Result<(Vec<(String, u64)>, Option<String>), Error> {
        const OP: &str = "ListObjectsV2";
        let b = self.bucket(bucket)?;
        let creds = self.credentials();
        let mut action = b.list_objects_v2(Some(&creds));
        // Raw keys in the XML: with `encoding-type=url` servers differ on how a space is
        // written (`+` or `%20`), which would make keys ambiguous.
        action.query_mut().remove("encoding-type");
        action.with_max_keys(max_keys);
        if let Some(t) = token {
            action.with_continuation_token(t.to_owned());
        }
        let url = action.sign(SIGN_FOR);
        let r = self
            .send(OP, bucket, reqwest::Method::GET, url, None)
            .await?;
        if !r.status.is_success() {
            return Err(status_error(OP, bucket, &r));
        }
        let doc = parse_reply(OP, bucket, &r, "ListBucketResult")?;
        let url_encoded = doc.field("EncodingType") == Some("url");
        let mut objects = Vec::new();
        for rec in doc.records("Contents") {
            let mut key = rec.get("Key").cloned().unwrap_or_default();
            if url_encoded {
                key = percent_decode(&key);
            }
            let size = rec
                .get("Size")
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            objects.push((key, size));
        }
        let next = if doc.flag("IsTruncated") {
            doc.field("NextContinuationToken")
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        } else {
            None
        };
        Ok((objects, next))
    }

    /// One page of ListObjectVersions from the start: (key, version id) of every version
    /// and delete marker. `None` when the server does not implement it (no versioning).
    async fn list_versions_page(
        &self,
        bucket: &str,
        max_keys: usize,
    ) -> Result<Option<Vec<ObjectIdentifier>>, Error> {
        const OP: &str = "ListObjectVersions";
        let b = self.bucket(bucket)?;
        let max = max_keys.to_string();
        let url = self.presign_bucket(
            &b,
            rusty_s3::Method::Get,
            &[("versions", ""), ("max-keys", &max)],
        );
        let r = self
            .send(OP, bucket, reqwest::Method::GET, url, None)
            .await?;
        if !r.status.is_success() {
            let err = status_error(OP, bucket, &r);
            return match &err {
                Error::S3Status { status, code, .. }
                    if *status == 501
                        || code == "NotImplemented"
                        || (*status == 400 && code == "InvalidRequest") =>
                {
                    Ok(None)
                }
                _ => Err(err),
            };
        }
        let doc = parse_xml(&r.body).map_err(|detail| Error::S3Payload {
            op: OP,
            bucket: bucket.to_owned(),
            detail,
        })?;
        // A server that ignores `?versions` answers a plain listing: treat it as unsupported.
        if doc.root != "ListVersionsResult" {
            return Ok(None);
        }
        let mut out = Vec::new();
        for (name, rec) in &doc.records {
            if name != "Version" && name != "DeleteMarker" {
                continue;
            }
            let key = rec.get("Key").cloned().unwrap_or_default();
            let version = rec
                .get("VersionId")
                .filter(|v| !v.is_empty() && *v != "null")
                .cloned();
            out.push(ObjectIdentifier {
                key,
                version_id: version,
            });
        }
        Ok(Some(out))
    }

    /// One page of ListMultipartUploads from the start: (key, upload id).
    async fn list_uploads_page(
        &self,
        bucket: &str,
        max: usize,
    ) -> Result<Vec<(String, String)>, Error> {
        const OP: &str = "ListMultipartUploads";
        let b = self.bucket(bucket)?;
        let max = max.to_string();
        let url = self.presign_bucket(
            &b,
            rusty_s3::Method::Get,
            &[("uploads", ""), ("max-uploads", &max)],
        );
        let r = self
            .send(OP, bucket, reqwest::Method::GET, url, None)
            .await?;
        if !r.status.is_success() {
            return Err(status_error(OP, bucket, &r));
        }
        let doc = parse_reply(OP, bucket, &r, "ListMultipartUploadsResult")?;
        Ok(doc
            .records("Upload")
            .map(|rec| {
                (
                    rec.get("Key").cloned().unwrap_or_default(),
                    rec.get("UploadId").cloned().unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Every unfinished upload, following the key/upload-id markers.
    async fn count_uploads(&self, bucket: &str) -> Result<u64, Error> {
        const OP: &str = "ListMultipartUploads";
        let b = self.bucket(bucket)?;
        let mut markers: Option<(String, String)> = None;
        let mut count = 0u64;
        loop {
            let max = PAGE.to_string();
            let mut q: Vec<(&str, &str)> = vec![("uploads", ""), ("max-uploads", &max)];
            if let Some((k, u)) = &markers {
                q.push(("key-marker", k));
                q.push(("upload-id-marker", u));
            }
            let url = self.presign_bucket(&b, rusty_s3::Method::Get, &q);
            let r = self
                .send(OP, bucket, reqwest::Method::GET, url, None)
                .await?;
            if !r.status.is_success() {
                return Err(status_error(OP, bucket, &r));
            }
            let doc = parse_reply(OP, bucket, &r, "ListMultipartUploadsResult")?;
            count += doc.records("Upload").count() as u64;
            let next = (
                doc.field("NextKeyMarker").unwrap_or_default().to_owned(),
                doc.field("NextUploadIdMarker")
                    .unwrap_or_default()
                    .to_owned(),
            );
            if !doc.flag("IsTruncated") || next.0.is_empty() || markers.as_ref() == Some(&next) {
                return Ok(count);
            }
            markers = Some(next);
        }
    }

    /// Current objects (count and bytes) and unfinished uploads: `storage_used_bytes`.
    pub async fn usage(&self, bucket: &str) -> Result<Usage, Error> {
        let mut usage = Usage::default();
        let mut token: Option<String> = None;
        loop {
            let (objects, next) = self
                .list_objects_page(bucket, PAGE, token.as_deref())
                .await?;
            usage.objects += objects.len() as u64;
            usage.bytes += objects.iter().map(|(_, s)| s).sum::<u64>();
            match next {
                Some(n) if token.as_deref() != Some(n.as_str()) => token = Some(n),
                _ => break,
            }
        }
        usage.uploads = self.count_uploads(bucket).await?;
        Ok(usage)
    }

    /// True when the bucket holds nothing at all: no object, no old version or delete
    /// marker, no unfinished upload (any of them is data a destroy would lose).
    pub async fn is_empty(&self, bucket: &str) -> Result<bool, Error> {
        let (objects, _) = self.list_objects_page(bucket, 1, None).await?;
        if !objects.is_empty() {
            return Ok(false);
        }
        if let Some(versions) = self.list_versions_page(bucket, 1).await? {
            if !versions.is_empty() {
                return Ok(false);
            }
        }
        Ok(self.list_uploads_page(bucket, 1).await?.is_empty())
    }

    /// Deletes one batch of objects (with their version ids, if any) in one DeleteObjects.
    async fn delete_batch(&self, bucket: &str, ids: &[ObjectIdentifier]) -> Result<(), Error> {
        const OP: &str = "DeleteObjects";
        let b = self.bucket(bucket)?;
        let creds = self.credentials();
        let mut action = b.delete_objects(Some(&creds), ids.iter());
        action.set_quiet(true);
        let url = action.sign(SIGN_FOR);
        let (body, md5) = action.body_with_md5();
        let r = self
            .send(
                OP,
                bucket,
                reqwest::Method::POST,
                url,
                Some((body, vec![("content-md5", md5)])),
            )
            .await?;
        if !r.status.is_success() {
            return Err(status_error(OP, bucket, &r));
        }
        let doc = parse_reply(OP, bucket, &r, "DeleteResult")?;
        let failed: Vec<String> = doc
            .records("Error")
            .map(|e| {
                format!(
                    "{} ({}: {})",
                    e.get("Key").map(String::as_str).unwrap_or("?"),
                    e.get("Code").map(String::as_str).unwrap_or("?"),
                    e.get("Message").map(String::as_str).unwrap_or("")
                )
            })
            .collect();
        if let Some(first) = failed.first() {
            return Err(Error::S3Payload {
                op: OP,
                bucket: bucket.to_owned(),
                detail: format!(
                    "{} objects could not be deleted, first: {first}",
                    failed.len()
                ),
            });
        }
        Ok(())
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), Error> {
        const OP: &str = "AbortMultipartUpload";
        let b = self.bucket(bucket)?;
        let creds = self.credentials();
        let url = b
            .abort_multipart_upload(Some(&creds), key, upload_id)
            .sign(SIGN_FOR);
        let r = self
            .send(OP, bucket, reqwest::Method::DELETE, url, None)
            .await?;
        // 404 NoSuchUpload: finished or aborted meanwhile, which is what we wanted.
        if r.status.is_success() || r.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_error(OP, bucket, &r))
        }
    }

    /// Deletes every object, every version and delete marker (when the server keeps
    /// versions), and aborts every unfinished upload. Each round lists from the start and
    /// deletes what it saw, so no pagination marker can go stale under the deletes.
    pub async fn empty_bucket(&self, bucket: &str) -> Result<(), Error> {
        let mut versioned = true;
        let mut previous: Option<(String, Option<String>)> = None;
        loop {
            let ids: Vec<ObjectIdentifier> = match versioned {
                true => match self.list_versions_page(bucket, PAGE).await? {
                    Some(v) => v,
                    None => {
                        versioned = false;
                        continue;
                    }
                },
                false => self
                    .list_objects_page(bucket, PAGE, None)
                    .await?
                    .0
                    .into_iter()
                    .map(|(key, _)| ObjectIdentifier::new(key))
                    .collect(),
            };
            let uploads = self.list_uploads_page(bucket, PAGE).await?;
            if ids.is_empty() && uploads.is_empty() {
                tracing::info!(bucket, "bucket emptied");
                return Ok(());
            }
            let head = ids
                .first()
                .map(|i| (i.key.clone(), i.version_id.clone()))
                .or_else(|| uploads.first().map(|(k, u)| (k.clone(), Some(u.clone()))));
            if head.is_some() && head == previous {
                return Err(Error::S3Payload {
                    op: "DeleteObjects",
                    bucket: bucket.to_owned(),
                    detail: format!(
                        "{:?} is still listed after it was deleted",
                        head.map(|h| h.0).unwrap_or_default()
                    ),
                });
            }
            previous = head;
            if !ids.is_empty() {
                self.delete_batch(bucket, &ids).await?;
            }
            for (key, upload_id) in &uploads {
                self.abort_upload(bucket, key, upload_id).await?;
            }
        }
    }

    /// Deletes an empty bucket; a bucket already gone is success.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), Error> {
        const OP: &str = "DeleteBucket";
        let b = self.bucket(bucket)?;
        let creds = self.credentials();
        let url = b.delete_bucket(&creds).sign(SIGN_FOR);
        let r = self
            .send(OP, bucket, reqwest::Method::DELETE, url, None)
            .await?;
        if r.status.is_success() || r.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_error(OP, bucket, &r))
        }
    }
}

/// Destroy for `backend = "spaces"`: a bucket holding data is kept (and the error says how
/// to proceed) unless `force`; with `force` it is emptied first. Gone already is success.
pub async fn destroy_bucket(
    s3: &S3,
    bucket: &str,
    bucket_region: &str,
    force: bool,
) -> Result<BucketDestroyed, Error> {
    if !s3.head_bucket(bucket).await? {
        return Ok(BucketDestroyed::AlreadyGone);
    }
    if force {
        s3.empty_bucket(bucket).await?;
    } else if !s3.is_empty(bucket).await? {
        let usage = s3.usage(bucket).await?;
        let detail = if usage.objects == 0 && usage.uploads == 0 {
            "old object versions".to_owned()
        } else {
            usage.describe()
        };
        return Err(Error::HoldsData {
            kind: "bucket",
            name: bucket.to_owned(),
            id: bucket_region.to_owned(),
            detail,
        });
    }
    s3.delete_bucket(bucket).await?;
    Ok(BucketDestroyed::Deleted)
}

/// Mints the registry's own Spaces key, readwrite on `bucket` only, so the droplet never
/// holds the provider's broad credentials. `name` shows in DigitalOcean's key list.
pub async fn mint_registry_key(
    client: &do_api::Client,
    name: &str,
    bucket: &str,
) -> Result<RegistryKey, Error> {
    let created = client
        .create_spaces_key(&SpacesKeyCreateRequest {
            name: name.to_owned(),
            grants: vec![Grant {
                bucket: bucket.to_owned(),
                permission: "readwrite".into(),
            }],
        })
        .await?;
    Ok(RegistryKey {
        access_key: created.key.access_key,
        secret_key: created.secret_key,
    })
}

/// Revokes the registry's key; a key already gone is success.
pub async fn delete_registry_key(client: &do_api::Client, access_key: &str) -> Result<(), Error> {
    client.delete_spaces_key(access_key).await?;
    Ok(())
}

/// The registry's S3 driver settings: the same endpoint the provider uses (so in localocean
/// it must be one the droplets reach too, the bridge address rather than loopback), the
/// signing region as `region` (distribution skips its AWS region check when an endpoint is
/// set), and the registry's own key, never the provider's.
pub fn registry_storage(
    s3: &S3,
    bucket: &str,
    key: &RegistryKey,
    redirect: bool,
) -> crate::render::Storage {
    crate::render::Storage::Spaces {
        bucket: bucket.to_owned(),
        region: s3.signing_region().to_owned(),
        endpoint: s3.endpoint().as_str().trim_end_matches('/').to_owned(),
        access_key: key.access_key.clone(),
        secret_key: key.secret_key.clone(),
        redirect,
    }
}

/// S3's codes for bad credentials; Garage says `AccessDenied` with "Invalid signature" or
/// an unknown key in the message instead.
fn is_credentials_error(e: &Error) -> bool {
    let Error::S3Status { code, message, .. } = e else {
        return false;
    };
    let message = message.to_ascii_lowercase();
    matches!(
        code.as_str(),
        "SignatureDoesNotMatch"
            | "InvalidAccessKeyId"
            | "InvalidToken"
            | "ExpiredToken"
            | "AuthorizationHeaderMalformed"
            | "InvalidSignature"
    ) || (code == "AccessDenied"
        && (message.contains("signature") || message.contains("access key")))
}

/// `%XX` sequences decoded; anything else kept as is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn transport_message(e: reqwest::Error) -> String {
    // Without the URL: a presigned URL carries the access key id and a signature.
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// An error status as [`Error::S3Status`], with S3's `Code` and `Message` when the body is
/// S3's XML error (HEAD answers have no body: the status reason stands in).
fn status_error(op: &'static str, bucket: &str, r: &Reply) -> Error {
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
    Error::S3Status {
        op,
        bucket: bucket.to_owned(),
        status: r.status.as_u16(),
        code,
        message,
    }
}

fn parse_reply(op: &'static str, bucket: &str, r: &Reply, root: &str) -> Result<XmlDoc, Error> {
    let doc = parse_xml(&r.body).map_err(|detail| Error::S3Payload {
        op,
        bucket: bucket.to_owned(),
        detail,
    })?;
    if doc.root != root {
        return Err(Error::S3Payload {
            op,
            bucket: bucket.to_owned(),
            detail: format!("expected <{root}>, got <{}>", doc.root),
        });
    }
    Ok(doc)
}

/// The two levels of an S3 XML answer that matter: the root's text children (`IsTruncated`,
/// `NextKeyMarker`) and its element children with their text children (`Contents/Key`).
#[derive(Debug, Default)]
struct XmlDoc {
    root: String,
    fields: HashMap<String, String>,
    records: Vec<(String, HashMap<String, String>)>,
}

impl XmlDoc {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        self.field(name).is_some_and(|v| v.trim() == "true")
    }

    fn records<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a HashMap<String, String>> + 'a {
        self.records
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, r)| r)
    }
}

fn parse_xml(bytes: &[u8]) -> Result<XmlDoc, String> {
    use quick_xml::events::Event;
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut doc = XmlDoc::default();
    let mut stack: Vec<String> = Vec::new();
    let mut value = String::new();
    let bad = |e: &dyn fmt::Display| format!("not XML: {e}");
    loop {
        match reader.read_event().map_err(|e| bad(&e))? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match stack.len() {
                    0 => doc.root = name.clone(),
                    1 => doc.records.push((name.clone(), HashMap::new())),
                    _ => {}
                }
                stack.push(name);
                value.clear();
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match stack.len() {
                    0 => doc.root = name,
                    1 => {
                        doc.fields.insert(name.clone(), String::new());
                        doc.records.push((name, HashMap::new()));
                    }
                    2 => {
                        if let Some((_, rec)) = doc.records.last_mut() {
                            rec.insert(name, String::new());
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => value.push_str(&t.decode().map_err(|e| bad(&e))?),
            Event::CData(c) => value.push_str(&String::from_utf8_lossy(&c)),
            Event::GeneralRef(r) => match r.resolve_char_ref().map_err(|e| bad(&e))? {
                Some(ch) => value.push(ch),
                None => match r.decode().map_err(|e| bad(&e))?.as_ref() {
                    "amp" => value.push('&'),
                    "lt" => value.push('<'),
                    "gt" => value.push('>'),
                    "quot" => value.push('"'),
                    "apos" => value.push('\''),
                    other => return Err(format!("unknown entity &{other};")),
                },
            },
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                match stack.len() {
                    1 => {
                        doc.fields.insert(name, std::mem::take(&mut value));
                    }
                    2 => {
                        if let Some((_, rec)) = doc.records.last_mut() {
                            rec.insert(name, std::mem::take(&mut value));
                        }
                    }
                    _ => {}
                }
                value.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if doc.root.is_empty() {
        return Err("empty document".into());
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use localocean::garage::{Garage, GarageOptions};
    use localocean::spaces::IssuedKey;

    use super::*;
    use crate::storage::testkit::{settings, Api};

    #[test]
    fn xml_answers_parse_with_namespaces_and_entities() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><IsTruncated>true</IsTruncated>
  <NextContinuationToken>tok&amp;1</NextContinuationToken>
  <Contents><Key>a &lt;b&gt; &#233;.txt</Key><Size>12</Size>
    <Owner><ID>x</ID></Owner></Contents>
  <Contents><Key><![CDATA[c&d]]></Key><Size>3</Size></Contents>
  <EncodingType/>
</ListBucketResult>"#;
        let doc = parse_xml(body).unwrap();
        assert_eq!(doc.root, "ListBucketResult");
        assert!(doc.flag("IsTruncated"));
        assert_eq!(doc.field("NextContinuationToken"), Some("tok&1"));
        let keys: Vec<_> = doc
            .records("Contents")
            .map(|r| (r["Key"].clone(), r["Size"].clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("a <b> é.txt".to_string(), "12".to_string()),
                ("c&d".to_string(), "3".to_string())
            ]
        );
        assert_eq!(percent_decode("a%20b%2Bc%zz%4"), "a b+c%zz%4");
        assert!(parse_xml(b"").is_err());
        assert!(parse_xml(b"<a><b></a>").is_err());
    }

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

    async fn start_garage(dir: &std::path::Path) -> Garage {
        Garage::start(dir, &GarageOptions::default())
            .await
            .expect("garage starts (run scripts/setup if it is missing)")
    }

    fn endpoint(g: &Garage) -> String {
        format!("http://{}", g.s3_endpoint())
    }

    fn s3_for(g: &Garage, access: &str, secret: &str) -> S3 {
        S3::new(
            &endpoint(g),
            "nyc3",
            DEFAULT_SIGNING_REGION,
            Secret::new(access),
            Secret::new(secret),
        )
        .unwrap()
    }

    fn admin(g: &Garage, key: &IssuedKey) -> S3 {
        s3_for(g, &key.access_key, &key.secret_key)
    }

    /// Signs and sends object requests the way any S3 client would (the registry's driver).
    struct Objects<'a> {
        s3: &'a S3,
    }

    impl Objects<'_> {
        fn parts(&self, bucket: &str) -> (Bucket, Credentials) {
            (self.s3.bucket(bucket).unwrap(), self.s3.credentials())
        }
        async fn put(&self, bucket: &str, key: &str, body: &[u8]) -> u16 {
            let (b, c) = self.parts(bucket);
            let url = b.put_object(Some(&c), key).sign(SIGN_FOR);
            let r = self.s3.http.put(url).body(body.to_vec()).send().await;
            r.unwrap().status().as_u16()
        }
        async fn get(&self, bucket: &str, key: &str) -> (u16, Vec<u8>) {
            let (b, c) = self.parts(bucket);
            let url = b.get_object(Some(&c), key).sign(SIGN_FOR);
            let r = self.s3.http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
        async fn start_upload(&self, bucket: &str, key: &str) -> String {
            let (b, c) = self.parts(bucket);
            let url = b.create_multipart_upload(Some(&c), key).sign(SIGN_FOR);
            let r = self.s3.http.post(url).send().await.unwrap();
            assert!(
                r.status().is_success(),
                "CreateMultipartUpload: {}",
                r.status()
            );
            let text = r.text().await.unwrap();
            let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&text).unwrap();
            let id = created.upload_id().to_owned();
            let url = b.upload_part(Some(&c), key, 1, &id).sign(SIGN_FOR);
            let r = self.s3.http.put(url).body(vec![1u8; 1024]).send().await;
            assert!(r.unwrap().status().is_success(), "UploadPart");
            id
        }
    }

    #[tokio::test]
    async fn garage_bucket_lifecycle_and_destroy_guard() {
        let dir = tempfile::tempdir().unwrap();
        let g = start_garage(dir.path()).await;
        let key = g.admin_s3_key().await.unwrap();
        let s3 = admin(&g, &key);
        let objects = Objects { s3: &s3 };
        let bucket = "tf-acc-registry";

        // Idempotent create.
        assert_eq!(s3.ensure_bucket(bucket).await.unwrap(), Created(true));
        assert_eq!(s3.ensure_bucket(bucket).await.unwrap(), Created(false));
        assert!(s3.head_bucket(bucket).await.unwrap());
        assert!(!s3.head_bucket("tf-acc-absent").await.unwrap());
        assert!(s3.is_empty(bucket).await.unwrap());
        assert_eq!(s3.usage(bucket).await.unwrap(), Usage::default());

        // Objects (one with characters that need escaping) and an unfinished upload.
        let names = ["docker/registry/v2/blobs/a", "b & c <d>.json", "é/x y"];
        for (i, n) in names.iter().enumerate() {
            assert_eq!(
                objects.put(bucket, n, &vec![b'x'; 100 * (i + 1)]).await,
                200
            );
        }
        assert_eq!(objects.get(bucket, names[1]).await.0, 200);
        objects
            .start_upload(bucket, "docker/registry/v2/uploads/big")
            .await;
        let u = s3.usage(bucket).await.unwrap();
        assert_eq!(
            u,
            Usage {
                objects: 3,
                bytes: 600,
                uploads: 1
            }
        );
        assert!(!s3.is_empty(bucket).await.unwrap());
        // Garage keeps no versions: what follows covers the ListObjectsV2 fallback (the
        // versioned path is covered against a scripted server below).
        assert!(s3.list_versions_page(bucket, 10).await.unwrap().is_none());

        // Unforced destroy keeps it and says why and what to do.
        let e = destroy_bucket(&s3, bucket, "nyc3", false)
            .await
            .unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::HoldsData { .. }), "{m}");
        assert!(
            m.contains(bucket) && m.contains("3 objects (600 bytes)"),
            "{m}"
        );
        assert!(m.contains("1 unfinished uploads") && m.contains("force_destroy = true"));
        assert!(s3.head_bucket(bucket).await.unwrap());

        // An unfinished upload alone is data too.
        s3.empty_bucket(bucket).await.unwrap();
        assert!(s3.is_empty(bucket).await.unwrap());
        assert_eq!(s3.usage(bucket).await.unwrap(), Usage::default());
        objects.start_upload(bucket, "only-an-upload").await;
        assert!(!s3.is_empty(bucket).await.unwrap());

        // Forced destroy empties (objects, uploads) and deletes; again is "already gone".
        for i in 0..5 {
            assert_eq!(objects.put(bucket, &format!("k{i}"), b"v").await, 200);
        }
        let done = destroy_bucket(&s3, bucket, "nyc3", true).await.unwrap();
        assert_eq!(done, BucketDestroyed::Deleted);
        assert!(!s3.head_bucket(bucket).await.unwrap());
        s3.delete_bucket(bucket).await.unwrap();
        assert_eq!(
            destroy_bucket(&s3, bucket, "nyc3", true).await.unwrap(),
            BucketDestroyed::AlreadyGone
        );

        // An empty bucket goes without force.
        s3.ensure_bucket("tf-acc-empty").await.unwrap();
        assert_eq!(
            destroy_bucket(&s3, "tf-acc-empty", "nyc3", false)
                .await
                .unwrap(),
            BucketDestroyed::Deleted
        );

        // Bad credentials fail with a message that holds neither the secret nor a signature.
        let bad = s3_for(&g, &key.access_key, "wrong-secret-wrong-secret");
        let e = bad.ensure_bucket("tf-acc-other").await.unwrap_err();
        let m = format!("{e} {e:?}");
        assert!(m.contains("tf-acc-other"), "{m}");
        assert!(
            !matches!(e, Error::BucketTaken { .. }),
            "bad credentials are not a taken name: {m}"
        );
        assert!(
            !m.contains("wrong-secret") && !m.contains(&key.secret_key),
            "{m}"
        );
        assert!(!m.contains("X-Amz-Signature"), "{m}");
        g.stop().await;
    }

    #[tokio::test]
    async fn garage_registry_key_is_scoped_to_its_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let g = Arc::new(start_garage(dir.path()).await);
        let api = Api::start(g.clone()).await;
        let key = g.admin_s3_key().await.unwrap();
        let ep = endpoint(&g);
        let provider = S3::from_settings(&settings(&api.base, Some((&ep, &key))), "nyc3").unwrap();
        assert_eq!(provider.signing_region(), DEFAULT_SIGNING_REGION);
        provider.ensure_bucket("tf-acc-reg").await.unwrap();
        provider.ensure_bucket("tf-acc-other").await.unwrap();
        let as_provider = Objects { s3: &provider };
        assert_eq!(as_provider.put("tf-acc-other", "secret", b"no").await, 200);

        let minted = mint_registry_key(&api.client, "registry-tf-acc", "tf-acc-reg")
            .await
            .unwrap();
        assert!(!minted.secret_key.is_empty());
        assert_eq!(format!("{:?}", minted.secret_key), "***");
        let listed = api
            .client
            .get_spaces_key(&minted.access_key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            listed.grants,
            vec![Grant {
                bucket: "tf-acc-reg".into(),
                permission: "readwrite".into()
            }]
        );

        let reg = s3_for(&g, &minted.access_key, minted.secret_key.expose());
        let as_registry = Objects { s3: &reg };
        assert_eq!(as_registry.put("tf-acc-reg", "blob", b"layer").await, 200);
        assert_eq!(
            as_registry.get("tf-acc-reg", "blob").await,
            (200, b"layer".to_vec())
        );
        assert_eq!(reg.usage("tf-acc-reg").await.unwrap().objects, 1);
        // Nothing outside its bucket: no read, no write, no new bucket.
        assert_eq!(as_registry.get("tf-acc-other", "secret").await.0, 403);
        assert_eq!(as_registry.put("tf-acc-other", "x", b"x").await, 403);
        assert!(reg.usage("tf-acc-other").await.is_err());
        let e = reg.ensure_bucket("tf-acc-by-registry").await.unwrap_err();
        assert!(matches!(e, Error::BucketTaken { .. }), "{e}");
        assert!(!provider.head_bucket("tf-acc-by-registry").await.unwrap());

        // Deleted on destroy: the key stops working; deleting again is fine.
        delete_registry_key(&api.client, &minted.access_key)
            .await
            .unwrap();
        assert!(api
            .client
            .get_spaces_key(&minted.access_key)
            .await
            .unwrap()
            .is_none());
        assert_eq!(as_registry.get("tf-acc-reg", "blob").await.0, 403);
        delete_registry_key(&api.client, &minted.access_key)
            .await
            .unwrap();
        api.stop();
        g.shutdown().await;
    }
    /// A scripted S3 bucket with versioning, serving pages of two, so that the versioned
    /// path of `empty_bucket`, and every pagination loop, run against something.
    mod scripted {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};

        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{Method, StatusCode, Uri};
        use axum::response::{IntoResponse, Response};

        use super::super::parse_xml;

        #[derive(Default)]
        pub struct Bucket {
            /// (key, version id, delete marker, size), newest last per key.
            pub versions: Vec<(String, String, bool, u64)>,
            pub uploads: Vec<(String, String)>,
            pub requests: Vec<String>,
            /// Answer this many requests with `503 SlowDown` first.
            pub fail_next: u32,
        }

        pub type Shared = Arc<Mutex<Bucket>>;

        fn esc(s: &str) -> String {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        }

        fn xml(body: String) -> Response {
            (StatusCode::OK, body).into_response()
        }

        fn current(b: &Bucket) -> Vec<(String, u64)> {
            let mut latest: HashMap<&str, (bool, u64)> = HashMap::new();
            let mut order = Vec::new();
            for (k, _, dm, size) in &b.versions {
                if !latest.contains_key(k.as_str()) {
                    order.push(k.as_str());
                }
                latest.insert(k, (*dm, *size));
            }
            order
                .into_iter()
                .filter(|k| !latest[k].0)
                .map(|k| (k.to_owned(), latest[k].1))
                .collect()
        }

        pub async fn handle(
            State(st): State<Shared>,
            method: Method,
            uri: Uri,
            body: Bytes,
        ) -> Response {
            let q: HashMap<String, String> =
                url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let mut b = st.lock().unwrap();
            if b.fail_next > 0 {
                b.fail_next -= 1;
                b.requests.push("503".into());
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                )
                    .into_response();
            }
            let path = uri.path().trim_start_matches('/');
            let (_bucket, key) = path.split_once('/').unwrap_or((path, ""));
            let op = match (&method, key.is_empty()) {
                (&Method::GET, true) if q.contains_key("versions") => "versions",
                (&Method::GET, true) if q.contains_key("uploads") => "uploads",
                (&Method::GET, true) if q.get("list-type").map(String::as_str) == Some("2") => {
                    "list"
                }
                (&Method::POST, true) if q.contains_key("delete") => "delete",
                (&Method::DELETE, false) if q.contains_key("uploadId") => "abort",
                (&Method::DELETE, true) => "delete-bucket",
                (&Method::HEAD, true) => "head",
                _ => "unknown",
            };
            b.requests.push(op.to_owned());
            match op {
                "versions" => {
                    let mut out = String::from(
                        "<ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
                    );
                    for (k, v, dm, size) in b.versions.iter().take(2) {
                        let tag = if *dm { "DeleteMarker" } else { "Version" };
                        out.push_str(&format!(
                            "<{tag}><Key>{}</Key><VersionId>{v}</VersionId><Size>{size}</Size></{tag}>",
                            esc(k)
                        ));
                    }
                    let more = b.versions.len() > 2;
                    out.push_str(&format!(
                        "<IsTruncated>{more}</IsTruncated></ListVersionsResult>"
                    ));
                    xml(out)
                }
                "uploads" => {
                    let start = b
                        .uploads
                        .iter()
                        .position(|(k, u)| {
                            Some(k) == q.get("key-marker") && Some(u) == q.get("upload-id-marker")
                        })
                        .map_or(0, |i| i + 1);
                    let page: Vec<_> = b.uploads.iter().skip(start).take(2).collect();
                    let more = start + page.len() < b.uploads.len();
                    let mut out = String::from("<ListMultipartUploadsResult>");
                    for (k, u) in &page {
                        out.push_str(&format!(
                            "<Upload><Key>{}</Key><UploadId>{u}</UploadId></Upload>",
                            esc(k)
                        ));
                    }
                    if let (true, Some((k, u))) = (more, page.last()) {
                        out.push_str(&format!(
                            "<NextKeyMarker>{}</NextKeyMarker><NextUploadIdMarker>{u}</NextUploadIdMarker>",
                            esc(k)
                        ));
                    }
                    out.push_str(&format!(
                        "<IsTruncated>{more}</IsTruncated></ListMultipartUploadsResult>"
                    ));
                    xml(out)
                }
                "list" => {
                    let all = current(&b);
                    let start: usize = q
                        .get("continuation-token")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    let page: Vec<_> = all.iter().skip(start).take(2).collect();
                    let more = start + page.len() < all.len();
                    let mut out = String::from("<ListBucketResult>");
                    for (k, size) in &page {
                        out.push_str(&format!(
                            "<Contents><Key>{}</Key><Size>{size}</Size></Contents>",
                            esc(k)
                        ));
                    }
                    if more {
                        out.push_str(&format!(
                            "<NextContinuationToken>{}</NextContinuationToken>",
                            start + page.len()
                        ));
                    }
                    out.push_str(&format!(
                        "<IsTruncated>{more}</IsTruncated></ListBucketResult>"
                    ));
                    xml(out)
                }
                "delete" => {
                    let doc = parse_xml(&body).unwrap();
                    for o in doc.records("Object") {
                        let key = &o["Key"];
                        match o.get("VersionId") {
                            Some(v) => b.versions.retain(|(k, id, _, _)| !(k == key && id == v)),
                            // Unversioned delete on a versioned bucket adds a delete marker.
                            None => {
                                let id = format!("dm-{}", b.versions.len());
                                b.versions.push((key.clone(), id, true, 0));
                            }
                        }
                    }
                    xml("<DeleteResult></DeleteResult>".into())
                }
                "abort" => {
                    let id = q["uploadId"].clone();
                    b.uploads.retain(|(_, u)| *u != id);
                    StatusCode::NO_CONTENT.into_response()
                }
                "delete-bucket" if !b.versions.is_empty() || !b.uploads.is_empty() => (
                    StatusCode::CONFLICT,
                    "<Error><Code>BucketNotEmpty</Code><Message>not empty</Message></Error>",
                )
                    .into_response(),
                "delete-bucket" => StatusCode::NO_CONTENT.into_response(),
                "head" => StatusCode::OK.into_response(),
                _ => StatusCode::NOT_IMPLEMENTED.into_response(),
            }
        }
    }

    #[tokio::test]
    async fn versioned_bucket_is_emptied_version_by_version() {
        let state: scripted::Shared = Default::default();
        {
            let mut b = state.lock().unwrap();
            for (i, k) in ["a", "b & c", "a", "d", "e"].iter().enumerate() {
                b.versions.push((k.to_string(), format!("v{i}"), false, 10));
            }
            b.versions.push(("gone".into(), "v9".into(), false, 10));
            b.versions.push(("gone".into(), "dm-x".into(), true, 0));
            for i in 0..3 {
                b.uploads.push((format!("up{i}"), format!("u{i}")));
            }
        }
        let app = axum::Router::new()
            .fallback(scripted::handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let s3 = S3::new(
            &format!("http://{addr}"),
            "nyc3",
            DEFAULT_SIGNING_REGION,
            Secret::new("AK"),
            Secret::new("SK"),
        )
        .unwrap();

        // Pages of two: usage follows continuation tokens and upload markers, through
        // two SlowDown answers.
        state.lock().unwrap().fail_next = 2;
        let u = s3.usage("bkt").await.unwrap();
        assert_eq!(
            state.lock().unwrap().requests[..3],
            ["503".to_string(), "503".to_string(), "list".to_string()]
        );
        assert_eq!(
            u,
            Usage {
                objects: 4,
                bytes: 40,
                uploads: 3
            }
        );
        assert!(!s3.is_empty("bkt").await.unwrap());
        let e = destroy_bucket(&s3, "bkt", "nyc3", false).await.unwrap_err();
        assert!(e.is_holds_data(), "{e}");

        destroy_bucket(&s3, "bkt", "nyc3", true).await.unwrap();
        {
            let b = state.lock().unwrap();
            assert!(b.versions.is_empty(), "left: {:?}", b.versions);
            assert!(b.uploads.is_empty());
            assert!(b.requests.iter().any(|r| r == "delete-bucket"));
        }

        // A server that stays busy: the error says so after the retries.
        state.lock().unwrap().fail_next = 100;
        let e = s3.head_bucket("bkt").await.unwrap_err();
        assert!(matches!(e, Error::S3Status { status: 503, .. }), "{e}");
        assert_eq!(100 - state.lock().unwrap().fail_next, S3_RETRIES + 1);
        server.abort();
    }
}
