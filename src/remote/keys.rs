//! Ed25519 keys for the droplet: the provider's management key, the host keys it pins (the
//! throwaway one a droplet is born with, the registry's own one derived from the management
//! key) and which host keys a connection accepts. Fingerprints read as `ssh-keygen -l` prints.

use base64::Engine;
use sha2::Digest;
use ssh_key::private::{Ed25519Keypair, KeypairData};
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

/// The comment of the registry's host key: the same on every droplet of the registry.
pub const HOST_KEY_COMMENT: &str = "terraform-provider-docker host key";

/// The registry's SSH host key, derived from the management key (which never leaves state),
/// so it is the same for every droplet of the registry and can always be found again: a
/// rotation interrupted after the droplet got this key but before state recorded it still
/// ends in a connection, never in a lock-out. Deterministic to the byte.
pub fn derived_host_key(management_private: &Secret) -> Result<GeneratedKey, RemoteError> {
    // The parse error may quote the input; it is replaced by a fixed message.
    let mgmt = PrivateKey::from_openssh(management_private.expose())
        .map_err(|_| RemoteError::Key("the management key is not a valid OpenSSH key".into()))?;
    let seed = mgmt
        .key_data()
        .ed25519()
        .ok_or_else(|| RemoteError::Key("the management key is not an Ed25519 key".into()))?
        .private
        .to_bytes();
    let mut h = sha2::Sha256::new();
    h.update(b"terraform-provider-docker ssh host key v1\0");
    h.update(seed);
    let derived: [u8; 32] = h.finalize().into();
    let key = PrivateKey::new(
        KeypairData::Ed25519(Ed25519Keypair::from_seed(&derived)),
        HOST_KEY_COMMENT,
    )
    .map_err(|e| RemoteError::Key(format!("making the host key: {e}")))?;
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| RemoteError::Key(format!("encoding the host key: {e}")))?;
    let public = key.public_key();
    Ok(GeneratedKey {
        private_openssh: Secret::new(private.as_str()),
        public_openssh: public
            .to_openssh()
            .map_err(|e| RemoteError::Key(format!("encoding the host key: {e}")))?,
        fingerprint_sha256: public.fingerprint(HashAlg::Sha256).to_string(),
    })
}

/// Which host keys a connection accepts. Checked before authenticating, so a machine that
/// shows any other key is never offered the management key nor sent anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKeyPolicy {
    /// OpenSSH public key lines.
    pub accepted: Vec<String>,
    /// Fingerprint of the host key in the droplet's user data, once the droplet was moved off
    /// it: every process on the droplet can read that key from the metadata service, so a
    /// machine showing it is refused with a message that says so.
    pub user_data_fingerprint: Option<String>,
}

impl HostKeyPolicy {
    /// Exactly one key.
    pub fn only(public_openssh: &str) -> HostKeyPolicy {
        HostKeyPolicy {
            accepted: vec![public_openssh.to_owned()],
            user_data_fingerprint: None,
        }
    }

    /// Ok when `offered` (a wire-format blob) is an accepted key; the refusal names the
    /// address, the expected fingerprints and the offered one.
    pub fn check(&self, addr: &str, offered: &[u8]) -> Result<(), RemoteError> {
        let mut expected = Vec::new();
        for line in &self.accepted {
            let blob = public_key_blob(line)?;
            if blob == offered {
                return Ok(());
            }
            expected.push(fingerprint_of_blob(&blob));
        }
        let offered = fingerprint_of_blob(offered);
        if self.user_data_fingerprint.as_deref() == Some(offered.as_str()) {
            return Err(RemoteError::UserDataHostKey {
                addr: addr.to_owned(),
                expected: expected.join(" or "),
                offered,
            });
        }
        Err(RemoteError::HostKeyMismatch {
            addr: addr.to_owned(),
            expected: expected.join(" or "),
            offered,
        })
    }
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
    fn the_derived_host_key_is_stable_and_the_management_keys_own() {
        let mgmt = generate_ed25519("terraform-provider-docker").unwrap();
        let a = derived_host_key(&mgmt.private_openssh).unwrap();
        let b = derived_host_key(&mgmt.private_openssh).unwrap();
        // Byte for byte: state compares the strings.
        assert_eq!(a.private_openssh, b.private_openssh);
        assert_eq!(a.public_openssh, b.public_openssh);
        assert!(a.public_openssh.ends_with(HOST_KEY_COMMENT));
        assert_eq!(
            public_from_private(&a.private_openssh).unwrap(),
            a.public_openssh
        );
        assert_eq!(
            fingerprint_sha256(&a.public_openssh).unwrap(),
            a.fingerprint_sha256
        );
        // Not the management key itself, and another management key gives another host key.
        assert_ne!(
            public_key_blob(&a.public_openssh).unwrap(),
            public_key_blob(&mgmt.public_openssh).unwrap()
        );
        let other = generate_ed25519("terraform-provider-docker").unwrap();
        assert_ne!(
            derived_host_key(&other.private_openssh)
                .unwrap()
                .public_openssh,
            a.public_openssh
        );
        let err = derived_host_key(&Secret::new("garbage s3cr3t")).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn a_policy_refuses_other_keys_and_names_the_user_data_key() {
        let kept = generate_ed25519("kept").unwrap();
        let birth = generate_ed25519("birth").unwrap();
        let stranger = generate_ed25519("stranger").unwrap();
        let blob = |k: &GeneratedKey| public_key_blob(&k.public_openssh).unwrap();
        let policy = HostKeyPolicy {
            accepted: vec![kept.public_openssh.clone()],
            user_data_fingerprint: Some(birth.fingerprint_sha256.clone()),
        };
        policy.check("198.18.0.2", &blob(&kept)).unwrap();
        let err = policy.check("198.18.0.2", &blob(&birth)).unwrap_err();
        assert!(matches!(err, RemoteError::UserDataHostKey { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("user data") && msg.contains(&birth.fingerprint_sha256),
            "{msg}"
        );
        assert!(msg.contains(&kept.fingerprint_sha256), "{msg}");
        let err = policy.check("198.18.0.2", &blob(&stranger)).unwrap_err();
        assert!(matches!(err, RemoteError::HostKeyMismatch { .. }), "{err}");
        // While the birth key is accepted (before the rotation), it opens.
        let both = HostKeyPolicy {
            accepted: vec![birth.public_openssh.clone(), kept.public_openssh.clone()],
            user_data_fingerprint: None,
        };
        both.check("a", &blob(&birth)).unwrap();
        both.check("a", &blob(&kept)).unwrap();
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
