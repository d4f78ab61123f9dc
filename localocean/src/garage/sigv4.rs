//! AWS Signature Version 4 as S3 checks it, for the requests localocean answers itself
//! (Garage checks the ones it is sent): the `Authorization` header form and presigned URLs.
//!
//! The canonical request uses the path exactly as sent (S3 neither normalises nor
//! double-encodes it) and the query decoded, re-encoded and sorted, as AWS specifies.

use hyper::{HeaderMap, Method, Uri};
use sha2::{Digest as _, Sha256};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a header-signed request's date may be from now (S3's `RequestTimeTooSkewed`).
const MAX_SKEW_SECS: i64 = 15 * 60;
/// The longest a presigned URL may live (S3's limit, seven days).
const MAX_EXPIRES_SECS: i64 = 7 * 24 * 3600;

/// Why a request's signature was refused; each maps to S3's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request carries no AWS Signature Version 4")]
    Missing,
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("the request signature does not match")]
    Mismatch,
    #[error("request has expired")]
    Expired,
    #[error("the difference between the request time and the current time is too large")]
    Skewed,
    #[error("the provided x-amz-content-sha256 does not match what was computed")]
    PayloadMismatch,
}

impl AuthError {
    /// S3's error code and HTTP status for this refusal.
    pub fn s3_code(&self) -> (u16, &'static str) {
        match self {
            AuthError::Missing => (403, "AccessDenied"),
            AuthError::Malformed(_) => (400, "AuthorizationQueryParametersError"),
            AuthError::Mismatch => (403, "SignatureDoesNotMatch"),
            AuthError::Expired => (403, "AccessDenied"),
            AuthError::Skewed => (403, "RequestTimeTooSkewed"),
            AuthError::PayloadMismatch => (400, "XAmzContentSHA256Mismatch"),
        }
    }
}

/// What a request's signature claims, read from its header or its query.
#[derive(Debug, Clone)]
pub struct Claim {
    pub access_key: String,
    /// `<yyyymmdd>/<region>/<service>/aws4_request`.
    scope: String,
    amz_date: String,
    signed_headers: Vec<String>,
    signature: String,
    /// The payload hash that was signed (`UNSIGNED-PAYLOAD` for presigned URLs).
    pub payload_hash: String,
    /// Seconds a presigned URL stays valid; `None` for the header form.
    expires: Option<i64>,
}

/// Reads the signature a request claims, without checking it.
pub fn claim(uri: &Uri, headers: &HeaderMap) -> Result<Claim, AuthError> {
    if let Some(auth) = headers.get(hyper::header::AUTHORIZATION) {
        let auth = auth
            .to_str()
            .map_err(|_| AuthError::Malformed("Authorization header is not text".into()))?;
        return claim_from_header(auth, headers);
    }
    let query = query_pairs(uri.query().unwrap_or(""));
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let Some(algorithm) = get("X-Amz-Algorithm") else {
        return Err(AuthError::Missing);
    };
    if algorithm != ALGORITHM {
        return Err(AuthError::Malformed(format!(
            "unsupported algorithm {algorithm}"
        )));
    }
    let need = |name: &str| get(name).ok_or_else(|| AuthError::Malformed(format!("no {name}")));
    let (access_key, scope) = split_credential(&need("X-Amz-Credential")?)?;
    let expires: i64 = need("X-Amz-Expires")?
        .parse()
        .map_err(|_| AuthError::Malformed("X-Amz-Expires is not a number".into()))?;
    if !(1..=MAX_EXPIRES_SECS).contains(&expires) {
        return Err(AuthError::Malformed(
            "X-Amz-Expires must be between 1 second and 7 days".into(),
        ));
    }
    Ok(Claim {
        access_key,
        scope,
        amz_date: need("X-Amz-Date")?,
        signed_headers: need("X-Amz-SignedHeaders")?
            .split(';')
            .map(String::from)
            .collect(),
        signature: need("X-Amz-Signature")?,
        payload_hash: get("X-Amz-Content-Sha256").unwrap_or_else(|| "UNSIGNED-PAYLOAD".into()),
        expires: Some(expires),
    })
}

fn claim_from_header(auth: &str, headers: &HeaderMap) -> Result<Claim, AuthError> {
    let rest = auth
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| AuthError::Malformed("unsupported Authorization scheme".into()))?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |what: &str| AuthError::Malformed(format!("Authorization has no {what}"));
    let (access_key, scope) = split_credential(credential.ok_or_else(|| missing("Credential"))?)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .ok_or_else(|| AuthError::Malformed(format!("no {name} header")))
    };
    Ok(Claim {
        access_key,
        scope,
        amz_date: header("x-amz-date")?,
        signed_headers: signed
            .ok_or_else(|| missing("SignedHeaders"))?
            .split(';')
            .map(String::from)
            .collect(),
        signature: signature.ok_or_else(|| missing("Signature"))?.to_string(),
        payload_hash: header("x-amz-content-sha256")?,
        expires: None,
    })
}

/// `AKID/20130524/us-east-1/s3/aws4_request` into the key and the scope.
fn split_credential(credential: &str) -> Result<(String, String), AuthError> {
    let (key, scope) = credential
        .split_once('/')
        .ok_or_else(|| AuthError::Malformed("credential has no scope".into()))?;
    if scope.split('/').count() != 4 || !scope.ends_with("/aws4_request") {
        return Err(AuthError::Malformed("credential scope is malformed".into()));
    }
    Ok((key.to_string(), scope.to_string()))
}

/// Checks `claim` against the request with the key's `secret`, at `now` (Unix seconds).
pub fn verify(
    claim: &Claim,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    secret: &str,
    now: i64,
) -> Result<(), AuthError> {
    let expected = signature(claim, method, uri, headers, secret)?;
    if !constant_time_eq(expected.as_bytes(), claim.signature.as_bytes()) {
        return Err(AuthError::Mismatch);
    }
    let signed_at = parse_amz_date(&claim.amz_date)?;
    match claim.expires {
        Some(expires) if now > signed_at + expires => Err(AuthError::Expired),
        Some(_) if signed_at > now + MAX_SKEW_SECS => Err(AuthError::Expired),
        None if (now - signed_at).abs() > MAX_SKEW_SECS => Err(AuthError::Skewed),
        _ => Ok(()),
    }
}

/// Checks a body read in full against the payload hash that was signed.
pub fn verify_payload(claim: &Claim, body: &[u8]) -> Result<(), AuthError> {
    match claim.payload_hash.as_str() {
        "UNSIGNED-PAYLOAD" => Ok(()),
        h if h.len() == 64 && h.eq_ignore_ascii_case(&hex::encode(Sha256::digest(body))) => Ok(()),
        h if h.starts_with("STREAMING-") => Err(AuthError::Malformed(
            "chunked (streaming) payloads are not accepted here".into(),
        )),
        _ => Err(AuthError::PayloadMismatch),
    }
}

/// The hex signature the claim should carry, computed with `secret`.
fn signature(
    claim: &Claim,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    secret: &str,
) -> Result<String, AuthError> {
    let canonical = canonical_request(claim, method, uri, headers)?;
    let to_sign = format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        claim.amz_date,
        claim.scope,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut parts = claim.scope.split('/');
    let (date, region, service) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    Ok(hex::encode(hmac_sha256(&k_signing, to_sign.as_bytes())))
}

fn canonical_request(
    claim: &Claim,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<String, AuthError> {
    let presigned = claim.expires.is_some();
    let mut query: Vec<(String, String)> = query_pairs(uri.query().unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in &claim.signed_headers {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(AuthError::Malformed(format!(
                "signed header {name} is not in the request"
            )));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let path = if uri.path().is_empty() {
        "/"
    } else {
        uri.path()
    };
    Ok(format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{}\n{}",
        claim.signed_headers.join(";"),
        claim.payload_hash
    ))
}

/// Signs a request in the header form (as AWS SDKs do), for tests and localocean's own
/// clients: returns the `Authorization` value. `headers` must already hold `host`,
/// `x-amz-date` and `x-amz-content-sha256`; all of them are signed.
pub fn authorization(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    access_key: &str,
    secret: &str,
    region: &str,
) -> Result<String, AuthError> {
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AuthError::Malformed("no x-amz-date header".into()))?
        .to_string();
    let mut signed_headers: Vec<String> = headers.keys().map(|k| k.as_str().to_string()).collect();
    signed_headers.sort();
    signed_headers.dedup();
    let claim = Claim {
        access_key: access_key.to_string(),
        scope: format!(
            "{}/{region}/s3/aws4_request",
            &amz_date[..8.min(amz_date.len())]
        ),
        payload_hash: headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("UNSIGNED-PAYLOAD")
            .to_string(),
        amz_date,
        signed_headers,
        signature: String::new(),
        expires: None,
    };
    let sig = signature(&claim, method, uri, headers, secret)?;
    Ok(format!(
        "{ALGORITHM} Credential={access_key}/{},SignedHeaders={},Signature={sig}",
        claim.scope,
        claim.signed_headers.join(";")
    ))
}

/// The query's name/value pairs, percent-decoded (a name without `=` has an empty value).
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// AWS's URI encoding: every byte but the unreserved ones as `%XX`.
pub(crate) fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `20130524T000000Z` as Unix seconds.
fn parse_amz_date(s: &str) -> Result<i64, AuthError> {
    let bad = || AuthError::Malformed(format!("bad x-amz-date {s:?}"));
    if s.len() != 16 || &s[8..9] != "T" || !s.ends_with('Z') {
        return Err(bad());
    }
    let n =
        |r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<u32>().ok()).ok_or_else(bad);
    let month =
        time::Month::try_from(u8::try_from(n(4..6)?).map_err(|_| bad())?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(
        i32::try_from(n(0..4)?).map_err(|_| bad())?,
        month,
        u8::try_from(n(6..8)?).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    let t = time::Time::from_hms(
        u8::try_from(n(9..11)?).map_err(|_| bad())?,
        u8::try_from(n(11..13)?).map_err(|_| bad())?,
        u8::try_from(n(13..15)?).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    Ok(time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp())
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    /// 2013-05-24T00:00:00Z, the date of AWS's examples.
    const EXAMPLE_NOW: i64 = 1_369_353_600;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn aws_header_example(range: &str) -> (Uri, HeaderMap) {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
        let h = headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", range),
            ("x-amz-content-sha256", EMPTY_SHA),
            ("x-amz-date", "20130524T000000Z"),
            ("authorization", auth),
        ]);
        ("/test.txt".parse().unwrap(), h)
    }

    #[test]
    fn aws_header_example_verifies() {
        let (uri, h) = aws_header_example("bytes=0-9");
        let c = claim(&uri, &h).unwrap();
        assert_eq!(c.access_key, KEY);
        verify(&c, &Method::GET, &uri, &h, SECRET, EXAMPLE_NOW + 60).unwrap();
        assert_eq!(
            verify(&c, &Method::GET, &uri, &h, "wrong", EXAMPLE_NOW),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            verify(&c, &Method::GET, &uri, &h, SECRET, EXAMPLE_NOW + 3600),
            Err(AuthError::Skewed)
        );
    }

    #[test]
    fn a_tampered_request_fails() {
        let (uri, h) = aws_header_example("bytes=0-10");
        let c = claim(&uri, &h).unwrap();
        assert_eq!(
            verify(&c, &Method::GET, &uri, &h, SECRET, EXAMPLE_NOW),
            Err(AuthError::Mismatch)
        );
        let (_, h) = aws_header_example("bytes=0-9");
        let other: Uri = "/test.txt?versionId=1".parse().unwrap();
        assert_eq!(
            verify(&c, &Method::GET, &other, &h, SECRET, EXAMPLE_NOW),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            verify(&c, &Method::DELETE, &uri, &h, SECRET, EXAMPLE_NOW),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn aws_presigned_example_verifies_until_it_expires() {
        let uri: Uri = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404".parse().unwrap();
        let h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
        let c = claim(&uri, &h).unwrap();
        assert_eq!(c.payload_hash, "UNSIGNED-PAYLOAD");
        verify(&c, &Method::GET, &uri, &h, SECRET, EXAMPLE_NOW + 3600).unwrap();
        assert_eq!(
            verify(&c, &Method::GET, &uri, &h, SECRET, EXAMPLE_NOW + 86401),
            Err(AuthError::Expired)
        );
        let h = headers(&[("host", "otherbucket.s3.amazonaws.com")]);
        assert_eq!(
            verify(&c, &Method::GET, &uri, &h, SECRET, EXAMPLE_NOW),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn a_rusty_s3_presigned_url_verifies() {
        let bucket = rusty_s3::Bucket::new(
            "http://127.0.0.1:3900".parse().unwrap(),
            rusty_s3::UrlStyle::Path,
            "my-bucket".to_string(),
            "us-east-1",
        )
        .unwrap();
        let creds = rusty_s3::Credentials::new(KEY, SECRET);
        let mut action = bucket.get_object(Some(&creds), "dir/a key+b.txt");
        rusty_s3::S3Action::query_mut(&mut action).insert("versionId", "abc/def");
        let url = rusty_s3::S3Action::sign(&action, std::time::Duration::from_secs(60));
        let uri: Uri = url[url::Position::BeforePath..].parse().unwrap();
        let h = headers(&[("host", "127.0.0.1:3900")]);
        let c = claim(&uri, &h).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        verify(&c, &Method::GET, &uri, &h, SECRET, now).unwrap();
        assert_eq!(
            verify(&c, &Method::HEAD, &uri, &h, SECRET, now),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn our_header_signature_verifies_and_covers_the_body() {
        let uri: Uri = "/b/k?versionId=x".parse().unwrap();
        let body = b"hello";
        let mut h = headers(&[
            ("host", "127.0.0.1:1"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", &hex::encode(Sha256::digest(body))),
        ]);
        let auth = authorization(&Method::PUT, &uri, &h, KEY, SECRET, "us-east-1").unwrap();
        h.insert("authorization", auth.parse().unwrap());
        let c = claim(&uri, &h).unwrap();
        verify(&c, &Method::PUT, &uri, &h, SECRET, EXAMPLE_NOW).unwrap();
        verify_payload(&c, body).unwrap();
        assert_eq!(
            verify_payload(&c, b"other"),
            Err(AuthError::PayloadMismatch)
        );
    }

    #[test]
    fn unsigned_requests_are_missing_a_signature() {
        let uri: Uri = "/b?versions".parse().unwrap();
        assert!(matches!(
            claim(&uri, &HeaderMap::new()),
            Err(AuthError::Missing)
        ));
    }
}
