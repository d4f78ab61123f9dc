//! Moving a droplet off the host key it was born with: the registry's own key is written over
//! a session pinned to the old one, and sshd reloaded so new connections get the new key.

use super::keys::GeneratedKey;
use super::{status_text, RemoteError, Transport};

/// Debian's sshd reads its Ed25519 host key here (no `HostKey` line names another).
pub const SSH_HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";
pub const SSH_HOST_KEY_PUB: &str = "/etc/ssh/ssh_host_ed25519_key.pub";

/// Makes `key` the droplet's host key for every connection from now on. The session `t` runs
/// on stays open (sshd reloads on SIGHUP; sessions keep their processes). Idempotent: run again
/// with the same key, it writes the same files and reloads again.
pub async fn install(t: &dyn Transport, key: &GeneratedKey) -> Result<(), RemoteError> {
    // The public half first: a reader that sees the new private key also sees its public one.
    t.upload(
        SSH_HOST_KEY_PUB,
        format!("{}\n", key.public_openssh.trim()).as_bytes(),
        0o644,
    )
    .await?;
    t.upload(SSH_HOST_KEY, key.private_openssh.expose().as_bytes(), 0o600)
        .await?;
    // Debian names the unit `ssh` (`sshd` is its alias); Debian's ExecReload runs `sshd -t`
    // first, so a key sshd cannot load fails here and sshd keeps serving the old one.
    let out = t
        .exec(
            "if systemctl is-active --quiet ssh; then systemctl reload ssh; \
             elif systemctl is-active --quiet sshd; then systemctl reload sshd; fi",
            b"",
        )
        .await?;
    if !out.success() {
        return Err(RemoteError::Command {
            what: format!("reloading sshd with the new host key on {}", t.describe()),
            status: status_text(out.status),
            stderr: out.stderr_tail(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::generate_ed25519;
    use crate::testkit::LocalTransport;

    #[tokio::test]
    async fn install_writes_both_halves_privately_and_reloads_sshd() {
        let t = LocalTransport::new();
        t.exec("systemctl start ssh", b"").await.unwrap();
        let key = generate_ed25519("host").unwrap();
        install(&t, &key).await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        let private = t.path(SSH_HOST_KEY);
        assert_eq!(
            std::fs::read_to_string(&private).unwrap(),
            key.private_openssh.expose()
        );
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_to_string(t.path(SSH_HOST_KEY_PUB)).unwrap(),
            format!("{}\n", key.public_openssh)
        );
        assert!(t.log().contains("systemctl reload ssh"), "{}", t.log());
        // The private key never travels as a command line.
        assert!(t.commands().iter().all(|c| !c.contains("PRIVATE KEY")));
    }
}
