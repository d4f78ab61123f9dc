//! Token authentication: the ES256 key nginx's token endpoint signs with, the certificate the
//! registry trusts it by, and the njs handler. One bcrypt per docker operation, not per request.

use p256::ecdsa::signature::Signer;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

use super::RenderError;
use crate::secret::Secret;

/// The token endpoint's path on the registry's host; docker learns it from the registry's
/// `WWW-Authenticate: Bearer realm=...` challenge.
pub const TOKEN_PATH: &str = "/token";

/// The njs handler nginx runs at `TOKEN_PATH` (static: everything per registry comes from
/// nginx variables set in the site).
pub const TOKEN_JS: &str = include_str!("token.js");

/// Key material for token authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenKey {
    /// PKCS#8 PEM of the P-256 signing key: nginx workers read it per token request.
    pub private_key_pem: Secret,
    /// A self-signed certificate of the public key: the registry's `rootcertbundle`. The
    /// registry trusts the key it holds, not the certificate's signature or dates.
    pub certificate_pem: String,
    /// The key's libtrust key id, which distribution 2.8 looks the key up by (JWT header `kid`).
    pub kid: String,
}

/// Derives the token signing key from the registry's http secret, so it needs no place of its
/// own in state: it is as stable as that secret and changes with it. Deterministic, and the
/// certificate's signature is too (RFC 6979), so the rendered files keep their digests.
pub fn token_key(http_secret: &Secret) -> Result<TokenKey, RenderError> {
    let secret_key = derive_secret_key(http_secret);
    let private_key_pem = secret_key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| RenderError::TokenKey(e.to_string()))?;
    let spki = secret_key
        .public_key()
        .to_public_key_der()
        .map_err(|e| RenderError::TokenKey(e.to_string()))?;
    let kid = libtrust_key_id(spki.as_bytes());
    let certificate_pem = certificate(&secret_key)?;
    Ok(TokenKey {
        private_key_pem: Secret::new(private_key_pem.as_str()),
        certificate_pem,
        kid,
    })
}

fn derive_secret_key(http_secret: &Secret) -> p256::SecretKey {
    // A 32-byte hash is a valid P-256 scalar unless it is zero or >= the group order (odds
    // about 2^-32); the counter moves on to the next candidate then.
    (0u8..=u8::MAX)
        .find_map(|counter| {
            let mut h = Sha256::new();
            h.update(b"terraform-provider-docker registry token signing key v1\0");
            h.update(http_secret.expose().as_bytes());
            h.update([counter]);
            p256::SecretKey::from_bytes(&h.finalize()).ok()
        })
        .expect("one of 256 candidates is a valid scalar")
}

/// libtrust's key id: the first 240 bits of the SHA-256 of the DER SubjectPublicKeyInfo, in
/// base32 without padding, in groups of four separated by ':' (docker/libtrust util.go).
fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let b32 = base32(&digest[..30]);
    let groups: Vec<&str> = b32
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("base32 is ASCII"))
        .collect();
    groups.join(":")
}

/// RFC 4648 base32 of a whole number of 5-byte groups (30 bytes here), so no padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5);
    for group in bytes.chunks(5) {
        let mut buf = [0u8; 8];
        buf[3..3 + group.len()].copy_from_slice(group);
        let n = u64::from_be_bytes(buf);
        for i in (0..8).rev() {
            out.push(ALPHABET[((n >> (i * 5)) & 31) as usize] as char);
        }
    }
    out
}

/// rcgen signs through this, with p256's deterministic ECDSA instead of ring's random nonces.
struct DeterministicP256 {
    key: p256::ecdsa::SigningKey,
    public: Vec<u8>,
}

impl rcgen::RemoteKeyPair for DeterministicP256 {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        Ok(sig.to_der().as_bytes().to_vec())
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

fn certificate(secret_key: &p256::SecretKey) -> Result<String, RenderError> {
    let key = p256::ecdsa::SigningKey::from(secret_key);
    let public = key
        .verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let pair = rcgen::KeyPair::from_remote(Box::new(DeterministicP256 { key, public }))
        .map_err(|e| RenderError::TokenKey(e.to_string()))?;
    // rcgen's defaults are fixed (validity 1975 to 4096, serial from the public key), which
    // keeps the certificate the same on every render.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| RenderError::TokenKey(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "docker_registry token signing key",
    );
    let cert = params
        .self_signed(&pair)
        .map_err(|e| RenderError::TokenKey(e.to_string()))?;
    Ok(cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    fn key() -> TokenKey {
        token_key(&Secret::new("http-secret-0123456789")).unwrap()
    }

    #[test]
    fn derivation_is_deterministic_and_secret_dependent() {
        assert_eq!(key(), key());
        let other = token_key(&Secret::new("another-http-secret")).unwrap();
        assert_ne!(other.kid, key().kid);
        assert_ne!(other.certificate_pem, key().certificate_pem);
    }

    #[test]
    fn kid_matches_libtrust() {
        // Computed independently from this key's public key:
        // openssl pkey -pubout -outform DER | python3 (sha256, first 30 bytes, base32, groups).
        assert_eq!(key().kid, KID_OF_FIXTURE);
        let k = key();
        assert_eq!(k.kid.len(), 12 * 4 + 11);
        assert!(k.kid.split(':').all(|g| g.len() == 4));
    }

    const KID_OF_FIXTURE: &str = "36EA:NWWX:NVWI:V3KN:HCWB:MWHE:PXIA:KW2K:N4QV:MVB2:4OTC:3MWX";

    #[test]
    fn certificate_holds_the_signing_key() {
        let k = key();
        let pem = k.certificate_pem.clone();
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = der.parse_x509().unwrap();
        let secret_key = from_pkcs8(&k);
        let public = secret_key.public_key().to_encoded_point(false);
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            public.as_bytes()
        );
        assert!(k
            .private_key_pem
            .expose()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    fn from_pkcs8(k: &TokenKey) -> p256::SecretKey {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_pem(k.private_key_pem.expose()).unwrap()
    }

    #[test]
    fn debug_hides_the_private_key() {
        let k = key();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("PRIVATE KEY"));
    }

    #[test]
    fn base32_is_rfc4648() {
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(b"foobarbaz!"), "MZXW6YTBOJRGC6RB");
    }
}
