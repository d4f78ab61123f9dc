//! Certificates that need no CA outside: a private CA and server certificate (`self_signed`),
//! and checks of a certificate the user provides (`provided`).

use std::net::IpAddr;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use time::{Duration, OffsetDateTime};

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate: {0}")]
    Generate(String),
    #[error("{0}")]
    Invalid(String),
}

/// What nginx serves and what state keeps.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_chain_pem: String,
    pub private_key_pem: Secret,
    pub ca_certificate_pem: Option<String>,
    pub ca_private_key_pem: Option<Secret>,
    pub not_after: OffsetDateTime,
}

fn gen(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// A private CA (10 years) and a server certificate (about 2 years) for `fqdn` and `ips`.
/// An existing CA is reused, so clients that trust it keep trusting renewed certificates.
pub fn self_signed(
    fqdn: &str,
    ips: &[IpAddr],
    existing_ca: Option<(&str, &Secret)>,
) -> Result<Issued, TlsError> {
    let now = OffsetDateTime::now_utc();
    let (ca_cert_pem, ca_key_pem, ca_params, ca_key) = match existing_ca {
        Some((cert_pem, key_pem)) => {
            let key = KeyPair::from_pem(key_pem.expose()).map_err(gen)?;
            let params = CertificateParams::from_ca_cert_pem(cert_pem).map_err(gen)?;
            (cert_pem.to_owned(), key_pem.clone(), params, key)
        }
        None => {
            let key = KeyPair::generate().map_err(gen)?;
            let mut params = CertificateParams::default();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("docker_registry CA for {fqdn}"));
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = now - Duration::hours(1);
            params.not_after = now + Duration::days(3650);
            let cert = params.clone().self_signed(&key).map_err(gen)?;
            let pem = cert.pem();
            (pem, Secret::new(key.serialize_pem()), params, key)
        }
    };
    // rcgen signs with an issuer Certificate; rebuilt from the same params and key it has
    // the same name and key as the CA clients trust.
    let issuer = ca_params.self_signed(&ca_key).map_err(gen)?;
    let leaf_key = KeyPair::generate().map_err(gen)?;
    let mut params = CertificateParams::new(vec![fqdn.to_owned()]).map_err(gen)?;
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.distinguished_name.push(DnType::CommonName, fqdn);
    params.not_before = now - Duration::hours(1);
    let not_after = now + Duration::days(825);
    params.not_after = not_after;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = params.signed_by(&leaf_key, &issuer, &ca_key).map_err(gen)?;
    Ok(Issued {
        cert_chain_pem: format!("{}{}", leaf.pem(), ca_cert_pem),
        private_key_pem: Secret::new(leaf_key.serialize_pem()),
        ca_certificate_pem: Some(ca_cert_pem),
        ca_private_key_pem: Some(ca_key_pem),
        not_after: OffsetDateTime::from_unix_timestamp(not_after.unix_timestamp())
            .unwrap_or(not_after),
    })
}

/// Facts about the first certificate of a PEM chain.
#[derive(Clone, Debug)]
pub struct LeafInfo {
    pub dns_names: Vec<String>,
    /// The addresses it names (IP SANs).
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub not_after: OffsetDateTime,
    pub spki_der: Vec<u8>,
    pub der: Vec<u8>,
}

pub fn leaf_info(chain_pem: &str) -> Result<LeafInfo, TlsError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| TlsError::Invalid(format!("the certificate is not PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| TlsError::Invalid(format!("the certificate does not parse: {e}")))?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    dns_names.push(d.to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(raw) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*raw) {
                        ip_addresses.push(std::net::IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*raw) {
                        ip_addresses.push(std::net::IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(LeafInfo {
        dns_names,
        ip_addresses,
        not_after: cert.validity().not_after.to_datetime(),
        spki_der: cert.public_key().raw.to_vec(),
        der: pem.contents.clone(),
    })
}

/// The DER of the second certificate of a PEM chain: the leaf's issuer, as an ACME CA sends it.
pub fn issuer_der(chain_pem: &str) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
        .filter_map(|p| p.ok())
        .nth(1)
        .map(|p| p.contents)
}

/// Whether `leaf` (DER) is a renewal of `installed` (DER): signed by `issuer` (DER) under its
/// name, valid at `now` (seconds since the epoch), for `fqdn`, and ending later than
/// `installed` does. What the droplet's own renewal serves once it has replaced the
/// certificate the provider installed.
pub fn is_renewal_of(leaf: &[u8], installed: &[u8], issuer: &[u8], fqdn: &str, now: i64) -> bool {
    use x509_parser::prelude::{parse_x509_certificate, ASN1Time};
    let (Ok((_, leaf)), Ok((_, installed)), Ok((_, issuer)), Ok(now)) = (
        parse_x509_certificate(leaf),
        parse_x509_certificate(installed),
        parse_x509_certificate(issuer),
        ASN1Time::from_timestamp(now),
    ) else {
        return false;
    };
    let names_fqdn = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value.general_names.iter().any(|n| {
                matches!(n, x509_parser::extensions::GeneralName::DNSName(d)
                if name_matches(&d.to_ascii_lowercase(), &fqdn.to_ascii_lowercase()))
            })
        });
    leaf.issuer() == issuer.subject()
        && leaf.verify_signature(Some(issuer.public_key())).is_ok()
        && leaf.validity().is_valid_at(now)
        && leaf.validity().not_after > installed.validity().not_after
        && names_fqdn
}

pub fn name_matches(pattern: &str, fqdn: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("*.") {
        fqdn.split_once('.')
            .is_some_and(|(_, parent)| parent == rest)
    } else {
        pattern == fqdn
    }
}

/// Checks a provided certificate: it parses, its key matches, it covers `fqdn`, it has not expired.
pub fn check_provided(chain_pem: &str, key_pem: &Secret, fqdn: &str) -> Result<LeafInfo, TlsError> {
    let info = leaf_info(chain_pem)?;
    let key = KeyPair::from_pem(key_pem.expose()).map_err(|_| {
        TlsError::Invalid(
            "the private key is not a PEM private key this provider can read (PKCS#8, EC or RSA)"
                .into(),
        )
    })?;
    if key.public_key_der() != info.spki_der {
        return Err(TlsError::Invalid(
            "the private key does not belong to the certificate".into(),
        ));
    }
    if !info.dns_names.iter().any(|n| name_matches(n, fqdn)) {
        return Err(TlsError::Invalid(format!(
            "the certificate is for {:?}, not {fqdn:?}",
            info.dns_names
        )));
    }
    if info.not_after <= OffsetDateTime::now_utc() {
        return Err(TlsError::Invalid(format!(
            "the certificate expired on {}",
            rfc3339(info.not_after)
        )));
    }
    Ok(info)
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_covers_name_and_ip_and_reuses_the_ca() {
        let ip: IpAddr = "198.18.0.10".parse().unwrap();
        let a = self_signed("registry.example.com", &[ip], None).unwrap();
        let info = leaf_info(&a.cert_chain_pem).unwrap();
        assert_eq!(info.dns_names, vec!["registry.example.com"]);
        check_provided(
            &a.cert_chain_pem,
            &a.private_key_pem,
            "registry.example.com",
        )
        .unwrap();
        let ca = a.ca_certificate_pem.clone().unwrap();
        let b = self_signed(
            "registry.example.com",
            &[ip],
            Some((&ca, a.ca_private_key_pem.as_ref().unwrap())),
        )
        .unwrap();
        assert_eq!(b.ca_certificate_pem.as_deref(), Some(ca.as_str()));
        assert_ne!(leaf_info(&b.cert_chain_pem).unwrap().der, info.der);
        assert!(format!("{:?}", a).contains("***"));
    }

    #[test]
    fn provided_checks_name_and_key() {
        let a = self_signed("registry.example.com", &[], None).unwrap();
        let b = self_signed("other.example.com", &[], None).unwrap();
        let e =
            check_provided(&a.cert_chain_pem, &a.private_key_pem, "other.example.com").unwrap_err();
        assert!(e.to_string().contains("not \"other.example.com\""), "{e}");
        let e = check_provided(
            &a.cert_chain_pem,
            &b.private_key_pem,
            "registry.example.com",
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
        assert!(check_provided("garbage", &a.private_key_pem, "x").is_err());
        assert!(name_matches("*.example.com", "registry.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
    }
}
