//! When a certificate is due: a moment in the CA's ACME Renewal Information window (RFC 9773)
//! when its directory offers one, else `renew_before_days` before expiry. The droplet's
//! driver (render/renew.py) applies the same rule, with the same arithmetic.

use base64::Engine;
use sha2::Digest;
use time::OffsetDateTime;
use x509_parser::extensions::ParsedExtension;

use super::{http, AcmeConfig, AcmeError};
use crate::tls;

/// Where a renewal time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The CA's suggested window.
    Ari,
    /// `renew_before_days` before expiry.
    Days,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Ari => "ari",
            Rule::Days => "renew_before_days",
        }
    }
}

/// What the CA suggests (RFC 9773 4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

/// The certificate's ARI id: base64url(AKI keyIdentifier) "." base64url(serial, the DER
/// INTEGER's content octets, leading zero included).
pub fn certificate_id(cert_pem: &str) -> Result<String, AcmeError> {
    let bad = |what: &str| AcmeError::Certificate(what.to_owned());
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|_| bad("the certificate is not PEM"))?;
    let cert = pem
        .parse_x509()
        .map_err(|_| bad("the certificate does not parse"))?;
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })
        .ok_or_else(|| bad("the certificate has no authority key identifier"))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(format!(
        "{}.{}",
        b64.encode(aki),
        b64.encode(cert.tbs_certificate.raw_serial())
    ))
}

/// The moment to renew in `window`: the window clamped to the certificate's life (a window
/// past expiry means nothing; Pebble's are two days wide whatever the validity), then a point
/// chosen by the certificate id, spread like the random choice RFC 9773 asks for, yet the
/// same on the droplet and in the plan. Whole seconds, integer arithmetic.
pub fn point_in_window(
    window: Window,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    cert_id: &str,
) -> OffsetDateTime {
    let s = window
        .start
        .unix_timestamp()
        .max(not_before.unix_timestamp());
    let e = window.end.unix_timestamp().min(not_after.unix_timestamp());
    let at = if e <= s {
        e.min(window.start.unix_timestamp())
    } else {
        let digest = sha2::Sha256::digest(cert_id.as_bytes());
        let frac = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) as i128;
        s + (((e - s) as i128 * frac) >> 32) as i64
    };
    OffsetDateTime::from_unix_timestamp(at).unwrap_or(window.start)
}

/// `renew_before_days` before expiry.
pub fn due_by_days(not_after: OffsetDateTime, renew_before_days: u32) -> OffsetDateTime {
    not_after - time::Duration::days(i64::from(renew_before_days))
}

/// The CA's window for `cert_pem`, or `None` when its directory has no `renewalInfo`.
pub async fn fetch_window(cfg: &AcmeConfig, cert_pem: &str) -> Result<Option<Window>, AcmeError> {
    let id = certificate_id(cert_pem)?;
    let client = http::reqwest_client(cfg)?;
    let step = |what: &str, e: String| AcmeError::Ca {
        step: what.to_owned(),
        directory: cfg.directory_url.to_string(),
        detail: e,
    };
    let dir: serde_json::Value = client
        .get(cfg.directory_url.clone())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| step("reading the directory", e.without_url().to_string()))?
        .json()
        .await
        .map_err(|e| step("reading the directory", e.without_url().to_string()))?;
    let Some(base) = dir.get("renewalInfo").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let url = format!("{}/{id}", base.trim_end_matches('/'));
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "suggestedWindow")]
        suggested_window: Raw,
    }
    #[derive(serde::Deserialize)]
    struct Raw {
        start: String,
        end: String,
    }
    let info: Info = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| {
            step(
                "asking for renewal information",
                e.without_url().to_string(),
            )
        })?
        .json()
        .await
        .map_err(|e| step("reading renewal information", e.without_url().to_string()))?;
    let parse = |t: &str| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(|_| {
            step(
                "reading renewal information",
                format!("not an RFC 3339 time: {t}"),
            )
        })
    };
    Ok(Some(Window {
        start: parse(&info.suggested_window.start)?,
        end: parse(&info.suggested_window.end)?,
    }))
}

/// When `cert_pem` is due, and by which rule: ARI when the CA offers and answers it, else the
/// days. Never fails: a CA that cannot be asked leaves the days rule.
pub async fn renew_at(
    cfg: &AcmeConfig,
    cert_pem: &str,
    renew_before_days: u32,
) -> Result<(OffsetDateTime, Rule), AcmeError> {
    let info = tls::leaf_info(cert_pem).map_err(|e| AcmeError::Certificate(e.to_string()))?;
    match fetch_window(cfg, cert_pem).await {
        Ok(Some(w)) => {
            let id = certificate_id(cert_pem)?;
            let not_before = not_before(cert_pem).unwrap_or(w.start);
            Ok((
                point_in_window(w, not_before, info.not_after, &id),
                Rule::Ari,
            ))
        }
        Ok(None) => Ok((due_by_days(info.not_after, renew_before_days), Rule::Days)),
        Err(e) => {
            tracing::info!("renewal information unavailable ({e}); using renew_before_days");
            Ok((due_by_days(info.not_after, renew_before_days), Rule::Days))
        }
    }
}

/// Whether the leaf of `chain` was signed by the issuer of `current`'s leaf (the next
/// certificate of `current`), and that issuer is valid `now`: a renewal from the same CA,
/// not a certificate that merely names it.
pub fn issued_by_same_ca(
    chain: &str,
    current: &str,
    now: OffsetDateTime,
) -> Result<bool, AcmeError> {
    let bad = |what: &str| AcmeError::Certificate(what.to_owned());
    let leaf_pem = pems(chain)
        .into_iter()
        .next()
        .ok_or_else(|| bad("the droplet's chain holds no certificate"))?;
    let current_pems = pems(current);
    let Some(issuer_pem) = current_pems.get(1) else {
        return Err(bad(
            "the certificate in state has no issuer in its chain to compare with",
        ));
    };
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_pem.contents)
        .map_err(|_| bad("the droplet's certificate does not parse"))?;
    let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_pem.contents)
        .map_err(|_| bad("the issuer in state does not parse"))?;
    if leaf.issuer() != issuer.subject() || !issuer.validity().is_valid_at(now.into()) {
        return Ok(false);
    }
    Ok(leaf.verify_signature(Some(issuer.public_key())).is_ok())
}

fn pems(text: &str) -> Vec<x509_parser::pem::Pem> {
    x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
        .filter_map(|p| p.ok())
        .collect()
}

fn not_before(cert_pem: &str) -> Option<OffsetDateTime> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_before.to_datetime())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_point_is_inside_the_clamped_window_and_stable() {
        let w = Window {
            start: datetime!(2026-01-10 00:00 UTC),
            end: datetime!(2026-01-12 00:00 UTC),
        };
        let nb = datetime!(2026-01-01 00:00 UTC);
        let na = datetime!(2026-01-31 00:00 UTC);
        let a = point_in_window(w, nb, na, "abc.def");
        assert!(a >= w.start && a < w.end, "{a}");
        assert_eq!(a, point_in_window(w, nb, na, "abc.def"));
        assert_ne!(a, point_in_window(w, nb, na, "abc.deg"));
        // A window wider than the certificate's life is cut to it.
        let wide = Window {
            start: datetime!(2025-12-01 00:00 UTC),
            end: datetime!(2026-03-01 00:00 UTC),
        };
        let b = point_in_window(wide, nb, na, "abc.def");
        assert!(b >= nb && b < na, "{b}");
        // A window that ended before the certificate began: due at once.
        let past = Window {
            start: datetime!(2025-12-01 00:00 UTC),
            end: datetime!(2025-12-01 00:30 UTC),
        };
        assert_eq!(
            point_in_window(past, nb, na, "x.y"),
            datetime!(2025-12-01 00:00 UTC)
        );
    }

    /// The droplet's driver (Python) and the provider compute the same id and the same moment.
    #[test]
    fn the_droplet_driver_agrees_with_the_provider() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for serial in [vec![0x7f, 1, 2], vec![0x80, 1, 2, 3, 4, 5, 6, 7]] {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec!["r.example.com".to_owned()]).unwrap();
            p.use_authority_key_identifier_extension = true;
            p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
            p.not_before = datetime!(2026-01-01 00:00 UTC);
            p.not_after = datetime!(2026-03-01 00:00 UTC);
            let pem = p.signed_by(&key, &ca, &ca_key).unwrap().pem();
            let path = dir.path().join("cert.pem");
            std::fs::write(&path, &pem).unwrap();
            let window = Window {
                start: datetime!(2026-02-01 00:00 UTC),
                end: datetime!(2026-02-03 12:00 UTC),
            };
            let id = certificate_id(&pem).unwrap();
            let at = point_in_window(
                window,
                datetime!(2026-01-01 00:00 UTC),
                datetime!(2026-03-01 00:00 UTC),
                &id,
            );
            let out = std::process::Command::new("python3")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/src/render/renew.py"))
                .args(["due", path.to_str().unwrap()])
                .args(["2026-02-01T00:00:00Z", "2026-02-03T12:00:00Z"])
                .output()
                .expect("python3 runs the driver");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(py["id"], id.as_str());
            assert_eq!(py["renew_at"], crate::tls::rfc3339(at).as_str());
        }
    }

    /// Debian 12's certbot crashes on any ACME error ("can't set attribute", certbot#9539);
    /// the driver reports the CA's answer from certbot's log instead, and tells a badNonce
    /// (retried once) from the rest.
    #[test]
    fn the_driver_names_the_cas_answer_when_certbot_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let log = dir.path().join("letsencrypt.log");
        let cause = |output: &str, log_text: &str| -> serde_json::Value {
            std::fs::write(&out, output).unwrap();
            std::fs::write(&log, log_text).unwrap();
            let run = std::process::Command::new("python3")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/src/render/renew.py"))
                .arg("crash-cause")
                .args([&out, &log])
                .output()
                .expect("python3 runs the driver");
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            serde_json::from_slice(&run.stdout).unwrap()
        };
        let crashed = "An unexpected error occurred:\nAttributeError: can't set attribute\n";
        let log_text = r#"2026-12-02 09:46:20,001:DEBUG:acme.client:Received response:
HTTP 400
Content-Type: application/problem+json

{
   "type": "urn:ietf:params:acme:error:malformed",
   "detail": "an earlier problem",
   "status": 400
}
2026-12-02 09:46:21,002:DEBUG:acme.client:Received response:
HTTP 400

{
   "type": "urn:ietf:params:acme:error:badNonce",
   "detail": "JWS has an invalid anti-replay nonce: \"abc\"",
   "status": 400
}
2026-12-02 09:46:21,010:ERROR:certbot._internal.log:An unexpected error occurred:
"#;
        assert_eq!(
            cause(crashed, log_text),
            serde_json::json!([
                "badNonce",
                "the CA answered badNonce: JWS has an invalid anti-replay nonce: \"abc\""
            ])
        );
        // A run that did not crash keeps certbot's own words; a log without a problem
        // document gives nothing to report instead.
        assert_eq!(
            cause("Some challenges have failed.", log_text),
            serde_json::Value::Null
        );
        assert_eq!(
            cause(crashed, "no answer from the CA\n"),
            serde_json::Value::Null
        );
    }

    #[test]
    fn days_before_expiry() {
        assert_eq!(
            due_by_days(datetime!(2026-01-31 00:00 UTC), 30),
            datetime!(2026-01-01 00:00 UTC)
        );
    }
}
