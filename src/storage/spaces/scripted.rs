//! A scripted S3 bucket with versioning, serving pages of two, so that the versioned path
//! of `empty_bucket`, every pagination loop and the destroy guard run against something.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::xml::parse_xml;

#[derive(Default)]
pub struct Bucket {
    /// (key, version id, delete marker, size), newest last per key.
    pub versions: Vec<(String, String, bool, u64)>,
    pub uploads: Vec<(String, String)>,
    pub requests: Vec<String>,
    /// The access key id each request was signed with.
    pub access_keys: Vec<String>,
    /// Answer this many requests with `503 SlowDown` first.
    pub fail_next: u32,
    /// The `Retry-After` (seconds) of those answers, if any.
    pub retry_after: Option<u64>,
    /// No such bucket (HEAD answers 404) until a CreateBucket makes it.
    pub absent: bool,
    /// What each current object holds, by key (objects put through PutObject).
    pub contents: HashMap<String, String>,
    /// The versioning status PutBucketVersioning set (`Enabled`, `Suspended`).
    pub versioning: Option<String>,
    /// The lifecycle configuration PutBucketLifecycleConfiguration stored, as sent.
    pub lifecycle: Option<String>,
    /// The Content-MD5 of each request that carried one.
    pub content_md5: Vec<String>,
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
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let mut b = st.lock().unwrap();
    // Presigned (`X-Amz-Credential=<key id>/<date>/...`) or signed in the header
    // (`AWS4-HMAC-SHA256 Credential=<key id>/...`).
    let credential = q.get("X-Amz-Credential").cloned().or_else(|| {
        let auth = headers.get("authorization")?.to_str().ok()?;
        Some(auth.split("Credential=").nth(1)?.to_owned())
    });
    if let Some(id) = credential.as_deref().and_then(|c| c.split('/').next()) {
        b.access_keys.push(id.to_owned());
    }
    if b.fail_next > 0 {
        b.fail_next -= 1;
        b.requests.push("503".into());
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
        )
            .into_response();
        if let Some(s) = b.retry_after {
            resp.headers_mut().insert("retry-after", s.into());
        }
        return resp;
    }
    let path = uri.path().trim_start_matches('/');
    let (_bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if let Some(md5) = headers.get("content-md5").and_then(|v| v.to_str().ok()) {
        b.content_md5.push(md5.to_owned());
    }
    let op = match (&method, key.is_empty()) {
        (&Method::PUT, true) if q.contains_key("versioning") => "put-versioning",
        (&Method::GET, true) if q.contains_key("versioning") => "get-versioning",
        (&Method::PUT, true) if q.contains_key("lifecycle") => "put-lifecycle",
        (&Method::GET, true) if q.contains_key("lifecycle") => "get-lifecycle",
        (&Method::GET, true) if q.contains_key("versions") => "versions",
        (&Method::GET, true) if q.contains_key("uploads") => "uploads",
        (&Method::GET, true) if q.get("list-type").map(String::as_str) == Some("2") => "list",
        (&Method::POST, true) if q.contains_key("delete") => "delete",
        (&Method::DELETE, false) if q.contains_key("uploadId") => "abort",
        (&Method::DELETE, true) => "delete-bucket",
        (&Method::HEAD, true) => "head",
        (&Method::PUT, true) => "create-bucket",
        (&Method::PUT, false) => "put-object",
        (&Method::GET, false) => "get-object",
        (&Method::DELETE, false) => "delete-object",
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
        "delete-bucket" => {
            b.absent = true;
            StatusCode::NO_CONTENT.into_response()
        }
        "put-object" => {
            let version = format!("v{}", b.versions.len() + 100);
            let text = String::from_utf8_lossy(&body).into_owned();
            b.versions
                .push((key.to_owned(), version.clone(), false, text.len() as u64));
            b.contents.insert(key.to_owned(), text);
            let mut r = StatusCode::OK.into_response();
            r.headers_mut()
                .insert("x-amz-version-id", version.parse().unwrap());
            r
        }
        "get-object" => match current(&b).iter().any(|(k, _)| k == key) {
            true => {
                let version = b
                    .versions
                    .iter()
                    .rev()
                    .find(|v| v.0 == key)
                    .map(|v| v.1.clone())
                    .unwrap_or_default();
                let mut r = (
                    StatusCode::OK,
                    b.contents.get(key).cloned().unwrap_or_default(),
                )
                    .into_response();
                r.headers_mut()
                    .insert("x-amz-version-id", version.parse().unwrap());
                r
            }
            false => (
                StatusCode::NOT_FOUND,
                "<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>",
            )
                .into_response(),
        },
        // With `versionId`, that version goes for good; without, a delete marker is added,
        // as in a bucket that keeps versions.
        "delete-object" => {
            match q.get("versionId") {
                Some(v) => b.versions.retain(|x| !(x.0 == key && &x.1 == v)),
                None => {
                    let id = format!("dm{}", b.versions.len());
                    b.versions.push((key.to_owned(), id, true, 0));
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        "put-versioning" => {
            let text = String::from_utf8_lossy(&body);
            let status = ["Enabled", "Suspended"]
                .into_iter()
                .find(|s| text.contains(&format!("<Status>{s}</Status>")));
            match status {
                Some(s) => {
                    b.versioning = Some(s.to_owned());
                    StatusCode::OK.into_response()
                }
                None => (
                    StatusCode::BAD_REQUEST,
                    "<Error><Code>MalformedXML</Code><Message>no status</Message></Error>",
                )
                    .into_response(),
            }
        }
        "get-versioning" => xml(match &b.versioning {
            Some(s) => {
                format!("<VersioningConfiguration><Status>{s}</Status></VersioningConfiguration>")
            }
            None => "<VersioningConfiguration/>".into(),
        }),
        "put-lifecycle" => {
            b.lifecycle = Some(String::from_utf8_lossy(&body).into_owned());
            StatusCode::OK.into_response()
        }
        "get-lifecycle" => match &b.lifecycle {
            Some(l) => xml(l.clone()),
            None => (
                StatusCode::NOT_FOUND,
                "<Error><Code>NoSuchLifecycleConfiguration</Code><Message>none</Message></Error>",
            )
                .into_response(),
        },
        "head" if b.absent => StatusCode::NOT_FOUND.into_response(),
        "head" => StatusCode::OK.into_response(),
        "create-bucket" => {
            b.absent = false;
            StatusCode::OK.into_response()
        }
        _ => StatusCode::NOT_IMPLEMENTED.into_response(),
    }
}

/// Serves `state` on a loopback port; the server stops when the task is aborted.
pub async fn serve(state: Shared) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, server)
}
