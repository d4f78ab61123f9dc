//! A registry's bucket: created with the provider's credentials, measured, emptied (every
//! version and unfinished upload) and deleted; what it holds decides whether destroy may go.

use reqwest::StatusCode;
use rusty_s3::actions::ObjectIdentifier;
use rusty_s3::S3Action;

use super::client::{status_error, PAGE, S3, SIGN_FOR};
use super::xml::{parse_reply, parse_xml, percent_decode};
use crate::storage::Error;

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
    pub fn describe(&self) -> String {
        format!(
            "{} objects ({} bytes) and {} unfinished uploads",
            self.objects, self.bytes, self.uploads
        )
    }
}

/// The object that names the registry whose create made the bucket, from right after the
/// bucket is made until that create finishes: a create killed in between leaves a bucket no
/// state knows, and the next create of the same registry takes it back by this marker
/// instead of adopting it (an adopted bucket is never emptied nor deleted).
pub const CREATING_MARKER: &str = "docker-registry-creating";

/// The marker as stored: its text, and its version (deleted by version, so that a bucket
/// that keeps versions is left with nothing of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub text: String,
    pub version_id: Option<String>,
}

/// The ID of the lifecycle rule `storage.keep_deleted_days` puts on a bucket.
pub const KEEP_DELETED_RULE: &str = "docker-registry-keep-deleted";

/// One rule of a bucket's lifecycle configuration, as far as the provider reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleRule {
    pub id: String,
    /// `NoncurrentVersionExpiration/NoncurrentDays`, if the rule has it.
    pub noncurrent_days: Option<u32>,
}

/// What [`destroy_bucket`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketDestroyed {
    Deleted,
    /// There was no such bucket: nothing to do.
    AlreadyGone,
}

impl S3 {
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
            tracing::info!(bucket, endpoint = %self.endpoint(), "bucket created");
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

    /// Writes the [`CREATING_MARKER`] naming the registry.
    pub async fn put_marker(&self, bucket: &str, text: &str) -> Result<Marker, Error> {
        const OP: &str = "PutObject";
        let b = self.bucket(bucket)?;
        let creds = self.credentials();
        let url = b.put_object(Some(&creds), CREATING_MARKER).sign(SIGN_FOR);
        let body = (
            text.to_owned(),
            vec![("content-type", "text/plain".to_owned())],
        );
        let r = self
            .send(OP, bucket, reqwest::Method::PUT, url, Some(body))
            .await?;
        if !r.status.is_success() {
            return Err(status_error(OP, bucket, &r));
        }
        Ok(Marker {
            text: text.to_owned(),
            version_id: r.version_id,
        })
    }

    /// The [`CREATING_MARKER`], if the bucket holds one.
    pub async fn read_marker(&self, bucket: &str) -> Result<Option<Marker>, Error> {
        const OP: &str = "GetObject";
        let b = self.bucket(bucket)?;
        let creds = self.credentials();
        let url = b.get_object(Some(&creds), CREATING_MARKER).sign(SIGN_FOR);
        let r = self
            .send(OP, bucket, reqwest::Method::GET, url, None)
            .await?;
        match r.status {
            s if s.is_success() => Ok(Some(Marker {
                text: String::from_utf8_lossy(&r.body).into_owned(),
                version_id: r.version_id,
            })),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(OP, bucket, &r)),
        }
    }

    /// Deletes the marker (its version, when it has one); already gone is success.
    pub async fn delete_marker(&self, bucket: &str, marker: &Marker) -> Result<(), Error> {
        const OP: &str = "DeleteObject";
        let b = self.bucket(bucket)?;
        let creds = self.credentials();
        let mut action = b.delete_object(Some(&creds), CREATING_MARKER);
        if let Some(v) = &marker.version_id {
            action.query_mut().insert("versionId", v.clone());
        }
        let url = action.sign(SIGN_FOR);
        let r = self
            .send(OP, bucket, reqwest::Method::DELETE, url, None)
            .await?;
        if r.status.is_success() || r.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_error(OP, bucket, &r))
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

    /// Whether the server keeps object versions (answers ListObjectVersions). Without them,
    /// emptying a bucket lists and deletes current objects only.
    pub async fn keeps_versions(&self, bucket: &str) -> Result<bool, Error> {
        Ok(self.list_versions_page(bucket, 1).await?.is_some())
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
            // `null` is a version like any other (an object from before versioning, or
            // written while it was suspended): deleted without it, a versioned bucket only
            // adds a delete marker, and emptying it would never end.
            let version = rec.get("VersionId").filter(|v| !v.is_empty()).cloned();
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

    /// The bucket's versioning status (`Enabled`, `Suspended`), `None` when it was never set.
    pub async fn versioning(&self, bucket: &str) -> Result<Option<String>, Error> {
        const OP: &str = "GetBucketVersioning";
        let b = self.bucket(bucket)?;
        let url = self.presign_bucket(&b, rusty_s3::Method::Get, &[("versioning", "")]);
        let r = self
            .send(OP, bucket, reqwest::Method::GET, url, None)
            .await?;
        if !r.status.is_success() {
            return Err(status_error(OP, bucket, &r));
        }
        let doc = parse_reply(OP, bucket, &r, "VersioningConfiguration")?;
        Ok(doc
            .field("Status")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    }

    /// Turns versioning on (`Enabled`) or suspends it (S3 cannot turn it off once on: kept
    /// versions stay until deleted or expired).
    pub async fn set_versioning(&self, bucket: &str, enabled: bool) -> Result<(), Error> {
        const OP: &str = "PutBucketVersioning";
        let status = if enabled { "Enabled" } else { "Suspended" };
        let body = format!(
            "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{status}</Status></VersioningConfiguration>"
        );
        self.put_bucket_config(OP, bucket, "versioning", body).await
    }

    /// The bucket's lifecycle rules; none when it has no lifecycle configuration.
    pub async fn lifecycle_rules(&self, bucket: &str) -> Result<Vec<LifecycleRule>, Error> {
        const OP: &str = "GetBucketLifecycleConfiguration";
        let b = self.bucket(bucket)?;
        let url = self.presign_bucket(&b, rusty_s3::Method::Get, &[("lifecycle", "")]);
        let r = self
            .send(OP, bucket, reqwest::Method::GET, url, None)
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            let err = status_error(OP, bucket, &r);
            if matches!(&err, Error::S3Status { code, .. } if code == "NoSuchLifecycleConfiguration")
            {
                return Ok(Vec::new());
            }
            return Err(err);
        }
        if !r.status.is_success() {
            return Err(status_error(OP, bucket, &r));
        }
        parse_lifecycle(&r.body).map_err(|detail| Error::S3Payload {
            op: OP,
            bucket: bucket.to_owned(),
            detail,
        })
    }

    /// Sets the bucket's lifecycle configuration to the one rule of `keep_deleted_days`:
    /// noncurrent versions expire `days` after they became noncurrent, and a delete marker
    /// left with no version goes too. It replaces the whole configuration: the caller checks
    /// first that no other rule is there.
    pub async fn set_keep_deleted_rule(&self, bucket: &str, days: u32) -> Result<(), Error> {
        const OP: &str = "PutBucketLifecycleConfiguration";
        let body = format!(
            "<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Rule><ID>{KEEP_DELETED_RULE}</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status><Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration><NoncurrentVersionExpiration><NoncurrentDays>{days}</NoncurrentDays></NoncurrentVersionExpiration></Rule></LifecycleConfiguration>"
        );
        self.put_bucket_config(OP, bucket, "lifecycle", body).await
    }

    /// A PUT of one of the bucket's own settings (`?versioning`, `?lifecycle`), with the
    /// Content-MD5 S3 requires of some of them.
    async fn put_bucket_config(
        &self,
        op: &'static str,
        bucket: &str,
        subresource: &str,
        body: String,
    ) -> Result<(), Error> {
        use base64::Engine as _;
        use md5::Digest as _;
        let b = self.bucket(bucket)?;
        let url = self.presign_bucket(&b, rusty_s3::Method::Put, &[(subresource, "")]);
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let r = self
            .send(
                op,
                bucket,
                reqwest::Method::PUT,
                url,
                Some((body, vec![("content-md5", md5)])),
            )
            .await?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(status_error(op, bucket, &r))
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

/// What keeps an unforced destroy from deleting the bucket: `None` when it is gone or holds
/// nothing at all, else what it holds (objects, old versions, unfinished uploads).
pub async fn bucket_holds(s3: &S3, bucket: &str) -> Result<Option<String>, Error> {
    if !s3.head_bucket(bucket).await? || s3.is_empty(bucket).await? {
        return Ok(None);
    }
    let usage = s3.usage(bucket).await?;
    Ok(Some(if usage.objects == 0 && usage.uploads == 0 {
        "old object versions".to_owned()
    } else {
        usage.describe()
    }))
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
    } else if let Some(detail) = bucket_holds(s3, bucket).await? {
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

/// What `storage.keep_deleted_days` finds on a bucket: how many days its rule keeps
/// noncurrent versions while versioning is on; `None` when versioning is not on or the rule
/// is not there.
pub async fn keep_deleted_days(s3: &S3, bucket: &str) -> Result<Option<u32>, Error> {
    if s3.versioning(bucket).await?.as_deref() != Some("Enabled") {
        return Ok(None);
    }
    Ok(s3
        .lifecycle_rules(bucket)
        .await?
        .into_iter()
        .find(|r| r.id == KEEP_DELETED_RULE)
        .and_then(|r| r.noncurrent_days))
}

/// Puts `storage.keep_deleted_days` on a bucket. `Some(days)`: the lifecycle rule first (so
/// every version kept from then on expires), then versioning on; refused when the bucket has
/// lifecycle rules of its own. `None` (the setting removed): versioning suspended, the rule
/// kept, so that the versions kept so far still expire.
pub async fn set_keep_deleted_days(s3: &S3, bucket: &str, days: Option<u32>) -> Result<(), Error> {
    let Some(days) = days else {
        return s3.set_versioning(bucket, false).await;
    };
    let others: Vec<String> = s3
        .lifecycle_rules(bucket)
        .await?
        .into_iter()
        .filter(|r| r.id != KEEP_DELETED_RULE)
        .map(|r| {
            if r.id.is_empty() {
                "(no ID)".to_owned()
            } else {
                r.id
            }
        })
        .collect();
    if !others.is_empty() {
        return Err(Error::LifecycleTaken {
            bucket: bucket.to_owned(),
            rules: others,
        });
    }
    s3.set_keep_deleted_rule(bucket, days).await?;
    s3.set_versioning(bucket, true).await
}

/// The rules of a `LifecycleConfiguration` document: each `Rule`'s `ID` and
/// `NoncurrentVersionExpiration/NoncurrentDays` (deeper than [`parse_xml`] reads).
fn parse_lifecycle(body: &[u8]) -> Result<Vec<LifecycleRule>, String> {
    use quick_xml::events::Event;
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut rules = Vec::new();
    let mut value = String::new();
    loop {
        match reader.read_event().map_err(|e| format!("not XML: {e}"))? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.len() == 1 && name == "Rule" {
                    rules.push(LifecycleRule {
                        id: String::new(),
                        noncurrent_days: None,
                    });
                }
                path.push(name);
                value.clear();
            }
            Event::Text(t) => value.push_str(&t.decode().map_err(|e| format!("not XML: {e}"))?),
            Event::End(_) => {
                let here: Vec<&str> = path.iter().map(String::as_str).collect();
                match here.as_slice() {
                    [_, "Rule", "ID"] => {
                        if let Some(r) = rules.last_mut() {
                            r.id = value.trim().to_owned();
                        }
                    }
                    [_, "Rule", "NoncurrentVersionExpiration", "NoncurrentDays"] => {
                        if let Some(r) = rules.last_mut() {
                            r.noncurrent_days = value.trim().parse().ok();
                        }
                    }
                    _ => {}
                }
                path.pop();
                value.clear();
            }
            Event::Eof if path.is_empty() => break,
            Event::Eof => return Err(format!("<{}> is not closed", path.join("><"))),
            _ => {}
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::storage::spaces::client::S3_RETRIES;
    use crate::storage::spaces::{scripted, DEFAULT_SIGNING_REGION};

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
        let (addr, server) = scripted::serve(state.clone()).await;
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
        let text = e.to_string();
        assert!(
            text.contains(&format!("the same after {} tries", S3_RETRIES + 1))
                && text.contains("run `apply` again later"),
            "{text}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn keep_deleted_days_sets_the_rule_then_versioning_and_refuses_foreign_rules() {
        use base64::Engine as _;
        use md5::Digest as _;
        let state: scripted::Shared = Default::default();
        let (addr, server) = scripted::serve(state.clone()).await;
        let s3 = S3::new(
            &format!("http://{addr}"),
            "nyc3",
            DEFAULT_SIGNING_REGION,
            Secret::new("AK"),
            Secret::new("SK"),
        )
        .unwrap();
        assert_eq!(keep_deleted_days(&s3, "bkt").await.unwrap(), None);
        assert_eq!(s3.versioning("bkt").await.unwrap(), None);

        set_keep_deleted_days(&s3, "bkt", Some(30)).await.unwrap();
        {
            let b = state.lock().unwrap();
            let ops: Vec<&str> = b.requests.iter().map(String::as_str).collect();
            let (rule, on) = (
                ops.iter().position(|o| *o == "put-lifecycle").unwrap(),
                ops.iter().position(|o| *o == "put-versioning").unwrap(),
            );
            assert!(rule < on, "the rule before versioning: {ops:?}");
            assert_eq!(b.versioning.as_deref(), Some("Enabled"));
            let lifecycle = b.lifecycle.clone().unwrap();
            // S3 requires Content-MD5 on PutBucketLifecycleConfiguration: the body's.
            let md5 = base64::engine::general_purpose::STANDARD
                .encode(md5::Md5::digest(lifecycle.as_bytes()));
            assert!(b.content_md5.contains(&md5), "{:?}", b.content_md5);
        }
        assert_eq!(keep_deleted_days(&s3, "bkt").await.unwrap(), Some(30));
        set_keep_deleted_days(&s3, "bkt", Some(7)).await.unwrap();
        assert_eq!(keep_deleted_days(&s3, "bkt").await.unwrap(), Some(7));

        // Removed: versioning suspended, the rule kept (kept versions still expire).
        set_keep_deleted_days(&s3, "bkt", None).await.unwrap();
        assert_eq!(
            state.lock().unwrap().versioning.as_deref(),
            Some("Suspended")
        );
        assert_eq!(keep_deleted_days(&s3, "bkt").await.unwrap(), None);
        assert_eq!(
            s3.lifecycle_rules("bkt").await.unwrap(),
            [LifecycleRule {
                id: KEEP_DELETED_RULE.into(),
                noncurrent_days: Some(7)
            }]
        );

        // A bucket with rules of its own is left as it is.
        state.lock().unwrap().lifecycle = Some(
            "<LifecycleConfiguration><Rule><ID>logs</ID><Status>Enabled</Status><Expiration><Days>9</Days></Expiration></Rule></LifecycleConfiguration>".into(),
        );
        let e = set_keep_deleted_days(&s3, "bkt", Some(30))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::LifecycleTaken { rules, .. } if rules == &["logs"]),
            "{e}"
        );
        assert!(e.to_string().contains("keep_deleted_days"), "{e}");
        assert_eq!(
            state.lock().unwrap().versioning.as_deref(),
            Some("Suspended")
        );
        server.abort();
    }

    #[test]
    fn lifecycle_rules_are_read_at_their_depth() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Rule><ID>docker-registry-keep-deleted</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status>
    <NoncurrentVersionExpiration><NoncurrentDays>14</NoncurrentDays></NoncurrentVersionExpiration></Rule>
  <Rule><ID>uploads</ID><Status>Enabled</Status>
    <AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>
</LifecycleConfiguration>"#;
        assert_eq!(
            parse_lifecycle(doc).unwrap(),
            [
                LifecycleRule {
                    id: "docker-registry-keep-deleted".into(),
                    noncurrent_days: Some(14)
                },
                LifecycleRule {
                    id: "uploads".into(),
                    noncurrent_days: None
                }
            ]
        );
        assert!(parse_lifecycle(b"<LifecycleConfiguration><Rule>").is_err());
    }

    #[tokio::test]
    async fn slow_down_waits_as_long_as_retry_after_asks_then_succeeds() {
        let state: scripted::Shared = Default::default();
        {
            let mut b = state.lock().unwrap();
            b.fail_next = 2;
            b.retry_after = Some(1);
        }
        let (addr, server) = scripted::serve(state.clone()).await;
        let s3 = S3::new(
            &format!("http://{addr}"),
            "nyc3",
            DEFAULT_SIGNING_REGION,
            Secret::new("AK"),
            Secret::new("SK"),
        )
        .unwrap();
        let started = std::time::Instant::now();
        s3.head_bucket("bkt").await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_secs(2),
            "two Retry-After: 1 answers passed in {took:?}"
        );
        assert_eq!(state.lock().unwrap().requests, ["503", "503", "head"]);
        server.abort();
    }
}
