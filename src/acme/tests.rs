//! Unit tests of the pure helpers. Orders against Pebble are in the `suite` binary
//! (`tests/services/acme.rs`): they need a CA running.

use rcgen::{CertificateParams, KeyPair};
use time::OffsetDateTime;
use url::Url;

use super::*;

// ---- pure helpers ---------------------------------------------------------------------------

fn cert(names: &[&str], not_after: OffsetDateTime) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.not_before = not_after - time::Duration::days(90);
    p.not_after = not_after;
    p.self_signed(&key).unwrap().pem()
}

#[test]
fn renewal_not_needed_outside_the_window() {
    let now = OffsetDateTime::now_utc();
    let pem = cert(&["registry.example.com"], now + time::Duration::days(60));
    assert_eq!(needs_renewal(&pem, "registry.example.com", 30, now), None);
    // Trailing dot and case do not matter.
    assert_eq!(needs_renewal(&pem, "Registry.Example.com.", 30, now), None);
}

#[test]
fn renewal_needed_within_the_window() {
    let now = OffsetDateTime::now_utc();
    let pem = cert(&["registry.example.com"], now + time::Duration::days(20));
    let why = needs_renewal(&pem, "registry.example.com", 30, now).unwrap();
    assert!(why.contains("renew_before_days = 30"), "{why}");
    // A smaller window: not yet.
    assert_eq!(needs_renewal(&pem, "registry.example.com", 10, now), None);
}

#[test]
fn renewal_needed_when_expired_wrong_name_or_garbage() {
    let now = OffsetDateTime::now_utc();
    let expired = cert(&["registry.example.com"], now - time::Duration::days(1));
    let why = needs_renewal(&expired, "registry.example.com", 0, now).unwrap();
    assert!(why.contains("expired"), "{why}");

    let other = cert(&["other.example.com"], now + time::Duration::days(80));
    let why = needs_renewal(&other, "registry.example.com", 30, now).unwrap();
    assert!(why.contains("other.example.com"), "{why}");

    let wildcard = cert(&["*.example.com"], now + time::Duration::days(80));
    assert_eq!(
        needs_renewal(&wildcard, "registry.example.com", 30, now),
        None
    );

    let why = needs_renewal("not a certificate", "registry.example.com", 30, now).unwrap();
    assert!(why.contains("unreadable"), "{why}");
}

#[test]
fn challenge_names_are_relative_to_the_domain() {
    assert_eq!(
        challenge_record_name("registry.example.com", "example.com").unwrap(),
        "_acme-challenge.registry"
    );
    assert_eq!(
        challenge_record_name("a.b.example.com.", "EXAMPLE.com").unwrap(),
        "_acme-challenge.a.b"
    );
    assert_eq!(
        challenge_record_name("example.com", "example.com").unwrap(),
        "_acme-challenge"
    );
    assert!(matches!(
        challenge_record_name("registry.example.org", "example.com"),
        Err(AcmeError::OutsideDomain { .. })
    ));
    // A suffix that is not a label boundary is not inside the domain.
    assert!(challenge_record_name("registryexample.com", "example.com").is_err());
}

#[test]
fn caa_issuer_per_directory() {
    let u = |s: &str| Url::parse(s).unwrap();
    assert_eq!(
        caa_issuer(&u("https://acme-v02.api.letsencrypt.org/directory")),
        "letsencrypt.org"
    );
    assert_eq!(
        caa_issuer(&u("https://acme-staging-v02.api.letsencrypt.org/directory")),
        "letsencrypt.org"
    );
    assert_eq!(
        caa_issuer(&u("https://acme.zerossl.com/v2/DV90")),
        "sectigo.com"
    );
    assert_eq!(
        caa_issuer(&u("https://acme.example.net/dir")),
        "example.net"
    );
    assert_eq!(caa_issuer(&u("https://127.0.0.1:14000/dir")), "127.0.0.1");
    assert_eq!(caa_issuer(&u("https://localhost:14000/dir")), "localhost");

    let r = caa_record(
        "registry.example.com",
        "example.com",
        &u("https://acme-v02.api.letsencrypt.org/directory"),
    )
    .unwrap();
    assert_eq!(
        (r.kind.as_str(), r.name.as_str(), r.data.as_str()),
        ("CAA", "registry", "letsencrypt.org")
    );
    assert_eq!((r.flags, r.tag.as_deref()), (Some(0), Some("issue")));
    let apex = caa_record("example.com", "example.com", &u("https://x.example.org/d")).unwrap();
    assert_eq!(apex.name, "@");
}

#[test]
fn rate_limit_reset_time_is_read_from_the_detail() {
    let d = "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2025-01-01 00:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/";
    assert_eq!(
        retry_after_from_detail(d).as_deref(),
        Some("2025-01-01 00:00:00 UTC")
    );
    assert_eq!(
        retry_after_from_detail("too many new orders recently"),
        None
    );
    let cfg = AcmeConfig::new(Url::parse("https://acme.invalid/dir").unwrap());
    let p: Problem = serde_json::from_value(serde_json::json!({
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": d,
        "status": 429
    }))
    .unwrap();
    let msg = problem_error(&cfg, &p, Some("r.example.com"))
        .unwrap()
        .to_string();
    assert!(
        msg.contains("try again after 2025-01-01 00:00:00 UTC"),
        "{msg}"
    );
}

#[test]
fn caa_problem_says_which_record_to_add() {
    let cfg =
        AcmeConfig::new(Url::parse("https://acme-v02.api.letsencrypt.org/directory").unwrap());
    let p: Problem = serde_json::from_value(serde_json::json!({
        "type": "urn:ietf:params:acme:error:caa",
        "detail": "CAA record for registry.example.com prevents issuance",
        "status": 403
    }))
    .unwrap();
    let msg = problem_error(&cfg, &p, Some("registry.example.com"))
        .unwrap()
        .to_string();
    assert!(
        msg.contains("CAA records for registry.example.com"),
        "{msg}"
    );
    assert!(msg.contains("0 issue \"letsencrypt.org\""), "{msg}");
}

#[test]
fn key_types_parse_and_print() {
    for s in KeyType::ALL {
        assert_eq!(s.parse::<KeyType>().unwrap().as_str(), s);
    }
    assert!("rsa-1024".parse::<KeyType>().is_err());
}

#[tokio::test]
async fn ecdsa_and_rsa_keys_make_csrs() {
    let ec = generate_key(KeyType::EcdsaP256).await.unwrap();
    assert!(ec.serialize_pem().contains("BEGIN PRIVATE KEY"));
    csr("registry.example.com", &ec).unwrap();
    let rsa = generate_key(KeyType::Rsa2048).await.unwrap();
    assert!(rsa.is_compatible(&PKCS_RSA_SHA256));
    let der = csr("registry.example.com", &rsa).unwrap();
    use x509_parser::prelude::FromDer;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .expect("the CSR parses");
    assert_eq!(
        req.certification_request_info
            .subject_pki
            .algorithm
            .algorithm
            .to_id_string(),
        "1.2.840.113549.1.1.1"
    );
}
