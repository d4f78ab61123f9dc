//! Ed25519 keys for the droplet: the provider's management key and the host key it pins.
//! Public keys are OpenSSH one-liners; fingerprints read as `ssh-keygen -l` prints them.

use base64::Engine;
use sha2::Digest;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use super::RemoteError;
use crate::secret::Secret;

/// A fresh key pair.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    /// OpenSSH private key format (`-----BEGIN OPENSSH PRIVATE KEY-----`), unencrypted.
    pub private_openssh: Secret,
    /// `ssh-ed25519 AAAA... <comment>`
    pub public_openssh: String,
    /// `SHA256:<base64 without padding>`
    pub fingerprint_sha256: String,
}

/// A new Ed25519 key pair from the OS random source. `comment` ends up in the public line
/// (e.g. `terraform-provider-docker`), so it must not be secret.
pub fn generate_ed25519(comment: &str) -> Result<GeneratedKey, RemoteError> {
    let mut key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)
        .map_err(|e| RemoteError::Key(format!("generating an Ed25519 key: {e}")))?;
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| RemoteError::Key(format!("encoding the private key: {e}")))?;
    let public = key.public_key();
    let public_openssh = public
        .to_openssh()
        .map_err(|e| RemoteError::Key(format!("encoding the public key: {e}")))?;
    Ok(GeneratedKey {
        private_openssh: Secret::new(private.as_str()),
        public_openssh,
        fingerprint_sha256: public.fingerprint(HashAlg::Sha256).to_string(),
    })
}

/// The SSH wire-format blob of an OpenSSH public key line: what the server sends as its host
/// key, so comparing blobs compares keys exactly.
pub fn public_key_blob(public_openssh: &str) -> Result<Vec<u8>, RemoteError> {
    let key = PublicKey::from_openssh(public_openssh.trim())
        .map_err(|e| RemoteError::Key(format!("parsing public key: {e}")))?;
    key.to_bytes()
        .map_err(|e| RemoteError::Key(format!("encoding public key: {e}")))
}

/// `SHA256:<base64 without padding>` of a wire-format key blob.
pub fn fingerprint_of_blob(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(blob))
    )
}

/// The fingerprint of an OpenSSH public key line.
pub fn fingerprint_sha256(public_openssh: &str) -> Result<String, RemoteError> {
    public_key_blob(public_openssh).map(|b| fingerprint_of_blob(&b))
}

/// The public line of an OpenSSH private key, e.g. to recover it from state.
pub fn public_from_private(private_openssh: &Secret) -> Result<String, RemoteError> {
    // The parse error may quote the input; it is replaced by a fixed message.
    let key = PrivateKey::from_openssh(private_openssh.expose())
        .map_err(|_| RemoteError::Key("the private key is not a valid OpenSSH key".into()))?;
    key.public_key()
        .to_openssh()
        .map_err(|e| RemoteError::Key(format!("encoding public key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip() {
        let k = generate_ed25519("terraform-provider-docker").unwrap();
        assert!(k
            .private_openssh
            .expose()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(k
            .public_openssh
            .starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));
        assert!(k.public_openssh.ends_with(" terraform-provider-docker"));
        assert!(k.fingerprint_sha256.starts_with("SHA256:"));
        assert_eq!(k.fingerprint_sha256.len(), "SHA256:".len() + 43);
        assert_eq!(
            fingerprint_sha256(&k.public_openssh).unwrap(),
            k.fingerprint_sha256
        );
        assert_eq!(
            public_from_private(&k.private_openssh).unwrap(),
            k.public_openssh
        );
        // Debug never shows the private key.
        assert!(!format!("{k:?}").contains("PRIVATE"));
        let other = generate_ed25519("x").unwrap();
        assert_ne!(other.public_openssh, k.public_openssh);
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        // `ssh-keygen -lf` on this key prints this fingerprint (computed independently with
        // ssh-keygen when the test was written).
        let line =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKWbmdS8Qmyal4gru0+QPB8Gwi6MwydJv+U89xT2PUra test";
        let blob = public_key_blob(line).unwrap();
        assert_eq!(blob.len(), 4 + 11 + 4 + 32);
        assert_eq!(fingerprint_sha256(line).unwrap(), EXPECTED_FINGERPRINT);
    }

    const EXPECTED_FINGERPRINT: &str = "SHA256:vkYbkL8ZjRCqQkjdSMI6X46oFM4RV/OJrH/s2AF27Wk";

    #[test]
    fn garbage_is_refused_without_echo() {
        let err = public_from_private(&Secret::new("not a key s3cr3t")).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
        assert!(public_key_blob("ssh-ed25519 !!!").is_err());
    }
}
