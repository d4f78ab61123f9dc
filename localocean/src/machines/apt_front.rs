//! The droplets' apt proxy as a mirror answers: with `Last-Modified` on the archive's index
//! files, and `304 Not Modified` when the droplet's copy is current.
//!
//! Debian's mirrors (and DigitalOcean's) send `Last-Modified`, so `apt-get update` on a droplet
//! whose lists are current hears `304` for every `InRelease`, reports "Hit", and keeps its
//! package cache. The upstream this machine reaches sends no `Last-Modified`, and apt-cacher-ng
//! passes on what it got: every `apt-get update` then downloaded every `InRelease` again, took
//! it as new, and rebuilt apt's two 40 MB caches (1.5 CPU seconds per droplet, measured, and
//! the droplet image's lists were never of use). This front stands where apt-cacher-ng stood
//! (the droplets' proxy address) and forwards everything to it unchanged, except that an
//! `InRelease` or `Release` answer without `Last-Modified` gets one: the `Date:` field of the
//! file itself, the time the archive published it (a mirror's file is written just after).
//! A request whose `If-Modified-Since` is that date or later gets `304`, as from a mirror.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, IF_MODIFIED_SINCE, LAST_MODIFIED};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An index file larger than this is passed on as it is (Debian's `InRelease` is ~150 KB).
const MAX_INDEX: usize = 8 << 20;

/// Serves the proxy on `listener`, each client connection over a connection of its own to
/// `upstream` (apt-cacher-ng). Aborting the returned task closes them all.
pub fn spawn(listener: tokio::net::TcpListener, upstream: SocketAddr) -> JoinHandle<()> {
    crate::net::spawn_accept_loop(listener, "apt proxy", move |inbound| {
        serve(inbound, upstream)
    })
}

async fn serve(inbound: tokio::net::TcpStream, upstream: SocketAddr) -> anyhow::Result<()> {
    let outbound = tokio::net::TcpStream::connect(upstream).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(outbound)).await?;
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let index = req.method() == Method::GET && is_index(req.uri().path());
            let since = req
                .headers()
                .get(IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok());
            let resp = {
                let mut sender = sender.lock().await;
                sender.ready().await?;
                sender.send_request(req).await?
            };
            if !index
                || resp.status() != StatusCode::OK
                || resp.headers().contains_key(LAST_MODIFIED)
            {
                return Ok::<_, hyper::Error>(resp.map(|b| b.map_err(Into::into).boxed()));
            }
            let (parts, body) = resp.into_parts();
            let bytes = match Limited::new(body, MAX_INDEX).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    tracing::warn!(error = %e, "apt proxy: reading an index from apt-cacher-ng");
                    return Ok(status_only(StatusCode::BAD_GATEWAY));
                }
            };
            Ok(answer_index(parts, bytes, since))
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(inbound), service);
    tokio::select! {
        r = served => r?,
        r = conn => r?,
    }
    Ok(())
}

/// The archive's signed index files, whose `Date:` says when they were published.
fn is_index(path: &str) -> bool {
    path.ends_with("/InRelease") || path.ends_with("/Release")
}

/// A whole index answer from upstream, with `Last-Modified` from its `Date:` field, or `304`
/// when the client's copy is at least that recent.
fn answer_index(
    mut parts: hyper::http::response::Parts,
    bytes: Bytes,
    since: Option<SystemTime>,
) -> Response<Body> {
    let Some(date) = release_date(&bytes) else {
        return Response::from_parts(parts, full(bytes));
    };
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(date)) {
        parts.headers.insert(LAST_MODIFIED, v);
    }
    if since.is_some_and(|since| since >= date) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(CONTENT_LENGTH);
        return Response::from_parts(parts, empty());
    }
    Response::from_parts(parts, full(bytes))
}

/// The `Date:` field of a Debian `Release` / `InRelease` file ("Sat, 06 Sep 2025 09:08:43 UTC").
fn release_date(body: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(body.get(..body.len().min(16 << 10))?).ok()?;
    let value = text
        .lines()
        .take(100)
        .find_map(|l| l.strip_prefix("Date: "))?;
    let value = value.trim();
    let value = value
        .strip_suffix(" UTC")
        .or_else(|| value.strip_suffix(" +0000"))
        .map_or_else(|| value.to_string(), |v| format!("{v} GMT"));
    httpdate::parse_http_date(&value).ok()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|e| match e {}).boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

fn status_only(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN_RELEASE: &str = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nLabel: Debian\nSuite: stable\nCodename: bookworm\nDate: Sat, 06 Sep 2025 09:08:43 UTC\nAcquire-By-Hash: yes\n";

    fn date(s: &str) -> SystemTime {
        httpdate::parse_http_date(s).unwrap()
    }

    #[test]
    fn the_release_date_is_read_from_the_file() {
        assert_eq!(
            release_date(IN_RELEASE.as_bytes()),
            Some(date("Sat, 06 Sep 2025 09:08:43 GMT"))
        );
        assert_eq!(release_date(b"Origin: Debian\n"), None);
        assert_eq!(release_date(b"Date: yesterday\n"), None);
    }

    fn ok_parts() -> hyper::http::response::Parts {
        let (mut parts, ()) = Response::new(()).into_parts();
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(IN_RELEASE.len()));
        parts
    }

    #[test]
    fn a_current_copy_hears_not_modified_and_an_older_one_the_file() {
        let body = Bytes::from_static(IN_RELEASE.as_bytes());
        let current = answer_index(
            ok_parts(),
            body.clone(),
            Some(date("Tue, 01 Dec 2026 16:01:44 GMT")),
        );
        assert_eq!(current.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            current.headers()[LAST_MODIFIED],
            "Sat, 06 Sep 2025 09:08:43 GMT"
        );
        assert!(!current.headers().contains_key(CONTENT_LENGTH));

        let older = answer_index(
            ok_parts(),
            body.clone(),
            Some(date("Fri, 05 Sep 2025 09:08:43 GMT")),
        );
        assert_eq!(older.status(), StatusCode::OK);
        assert_eq!(
            older.headers()[LAST_MODIFIED],
            "Sat, 06 Sep 2025 09:08:43 GMT"
        );

        let none = answer_index(ok_parts(), body, None);
        assert_eq!(none.status(), StatusCode::OK);
        assert!(none.headers().contains_key(LAST_MODIFIED));

        let undated = answer_index(ok_parts(), Bytes::from_static(b"Origin: x\n"), None);
        assert_eq!(undated.status(), StatusCode::OK);
        assert!(!undated.headers().contains_key(LAST_MODIFIED));
    }

    #[test]
    fn only_index_files_are_dated() {
        assert!(is_index("/debian/dists/bookworm/InRelease"));
        assert!(is_index("/debian/dists/bookworm/Release"));
        assert!(!is_index("/debian/dists/bookworm/Release.gpg"));
        assert!(!is_index(
            "/debian/pool/main/n/nginx/nginx_1.22.1-9_amd64.deb"
        ));
    }

    /// Through a real connection: an upstream that, like this machine's, sends no
    /// `Last-Modified`; the front answers a conditional GET of an `InRelease` with 304, and
    /// passes anything else through unchanged.
    #[tokio::test]
    async fn through_the_front_a_current_index_is_not_modified() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = upstream.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let body = if req.uri().path().ends_with("/InRelease") {
                            IN_RELEASE.to_string()
                        } else {
                            format!("other {}", req.uri())
                        };
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let task = spawn(front, up_addr);

        let proxy = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(format!("http://{front_addr}")).unwrap())
            .build()
            .unwrap();
        let url = "http://deb.debian.org/debian/dists/bookworm/InRelease";
        let first = proxy.get(url).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let last_modified = first.headers()[LAST_MODIFIED].to_str().unwrap().to_owned();
        assert_eq!(last_modified, "Sat, 06 Sep 2025 09:08:43 GMT");
        assert_eq!(first.text().await.unwrap(), IN_RELEASE);

        let again = proxy
            .get(url)
            .header(IF_MODIFIED_SINCE, "Wed, 02 Dec 2026 16:01:44 GMT")
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);

        let other = proxy
            .get("http://deb.debian.org/debian/pool/main/a.deb")
            .header(IF_MODIFIED_SINCE, "Wed, 02 Dec 2026 16:01:44 GMT")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 200);
        assert!(!other.headers().contains_key(LAST_MODIFIED));
        assert_eq!(
            other.text().await.unwrap(),
            "other http://deb.debian.org/debian/pool/main/a.deb"
        );
        task.abort();
    }
}
