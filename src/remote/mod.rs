//! Talking to the droplet: a small `Transport` trait (SSH in production, a local shell in
//! tests), atomic uploads, one-round-trip file digests, and the converge step built on them.
//! Every command the provider runs on a droplet is built here, and so is the outside check.

pub mod commands;
pub mod connect;
pub mod converge;
pub mod host_key;
pub mod keys;
pub mod outside;
pub mod registry_api;
pub mod ssh;

use std::collections::BTreeMap;

use async_trait::async_trait;

pub use connect::{Connector, Machine, SshConnector};
pub use converge::{
    converge, desired_files, install_packages, managed_paths, resume_renewal, ConvergeReport,
    Effect, ManagedFile, TlsMaterial,
};
pub use keys::{
    derived_host_key, fingerprint_sha256, generate_ed25519, GeneratedKey, HostKeyPolicy,
};
pub use outside::{Expectation, HttpsCheck, OutsideCheck, StorageProbe};
pub use registry_api::{HttpsRegistry, RegistryApi, RegistryTarget};
pub use ssh::SshTransport;

/// What a remote command left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The exit status; `None` when the command died without one (killed by a signal).
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The last lines of stderr, for an error message. Scripts must not echo secrets to stderr.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr, 20)
    }
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("host key of {addr} does not match the one the provider installed (expected {expected}, the server offered {offered}). Refusing to connect: nothing was sent. Another machine may be answering at this address, or someone changed the droplet's key by hand: put the key back (the state's `host_private_key`), or replace the droplet (`droplet_generation`; images on the droplet's own disk go with it)")]
    HostKeyMismatch {
        addr: String,
        expected: String,
        offered: String,
    },
    #[error("droplet {addr} presents the SSH host key from its user data ({offered}), which any process on the droplet can read from the metadata service; the provider replaced that key and accepts only {expected}. Refusing to connect: nothing was sent. Someone put the old key back, or another machine answers for the droplet")]
    UserDataHostKey {
        addr: String,
        expected: String,
        offered: String,
    },
    #[error("authenticating as {user} on {addr}: {message}")]
    Auth {
        addr: String,
        user: String,
        message: String,
    },
    #[error("SSH session to {addr}: {message}")]
    Session { addr: String, message: String },
    #[error("{what} on {addr} timed out after {seconds} s")]
    Timeout {
        addr: String,
        what: String,
        seconds: u64,
    },
    #[error("{what} failed (exit status {status}): {stderr}")]
    Command {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: unexpected output from the droplet: {detail}")]
    Protocol { what: String, detail: String },
    #[error("invalid key: {0}")]
    Key(String),
    /// The check from outside (`https://<fqdn>/v2/` at the droplet's address) failed.
    #[error("{url} at {ip}: {detail}")]
    Outside {
        url: String,
        ip: std::net::IpAddr,
        detail: String,
    },
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// The registry could not use its storage: names the storage, says what to check.
    #[error("the registry cannot use its storage, {storage}: {detail}. {advice}")]
    Storage {
        storage: String,
        detail: String,
        advice: String,
    },
}

/// The one thing the converge logic needs from a machine: run a command with some stdin.
/// Uploads and digests are built on `exec`, so every transport gets the same atomic behaviour.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Runs `cmd` with `sh -c` semantics (the login shell of root), feeding it `stdin`.
    async fn exec(&self, cmd: &str, stdin: &[u8]) -> Result<Output, RemoteError>;

    /// Names the machine in error messages.
    fn describe(&self) -> String;

    /// Where the machine's `/` is for the paths the commands here name: `""` on a droplet;
    /// a test machine keeps its files under a directory of its own.
    fn fs_root(&self) -> &str {
        ""
    }

    /// `path` (absolute, as on a droplet) where this machine holds it.
    fn rooted(&self, path: &str) -> String {
        format!("{}{path}", self.fs_root())
    }

    /// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync'd, renamed
    /// over the target, then the directory fsync'd. A reader sees the old or the new file,
    /// never a half-written one.
    async fn upload(&self, path: &str, bytes: &[u8], mode: u32) -> Result<(), RemoteError> {
        let cmd = atomic_write_command(&self.rooted(path), mode);
        let out = self.exec(&cmd, bytes).await?;
        if !out.success() {
            return Err(RemoteError::Command {
                what: format!("writing {path} on {}", self.describe()),
                status: status_text(out.status),
                stderr: out.stderr_tail(),
            });
        }
        Ok(())
    }
}

/// The shell command behind `Transport::upload`; stdin is the file's content. mktemp creates
/// the temp file 0600 whatever the umask, so the bytes are private until `chmod`; the umask is
/// for directories it creates, which readers such as nginx workers must be able to enter.
pub fn atomic_write_command(path: &str, mode: u32) -> String {
    let p = shell_quote(path);
    format!(
        "set -e; umask 022; d=$(dirname {p}); mkdir -p \"$d\"; \
         t=$(mktemp \"$d/.upload.XXXXXX\"); trap 'rm -f \"$t\"' EXIT; \
         cat > \"$t\"; chmod {mode:o} \"$t\"; sync \"$t\"; mv -f \"$t\" {p}; trap - EXIT; sync \"$d\""
    )
}

pub(crate) fn status_text(status: Option<i32>) -> String {
    status.map_or_else(|| "none (killed by a signal)".to_owned(), |s| s.to_string())
}

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The value `managed_file_digests` reports for a missing file.
pub const ABSENT: &str = "absent";

/// sha256 (hex) of each path, or `"absent"`, in one round trip: what `read` compares with the
/// digests of the rendered files to spot hand edits.
pub async fn managed_file_digests(
    transport: &dyn Transport,
    paths: &[&str],
) -> Result<BTreeMap<String, String>, RemoteError> {
    Ok(managed_file_digests_and(transport, paths, None).await?.0)
}

/// [`managed_file_digests`], and in the same round trip the output of `extra` (a shell
/// command list), printed after the digests.
pub async fn managed_file_digests_and(
    transport: &dyn Transport,
    paths: &[&str],
    extra: Option<&str>,
) -> Result<(BTreeMap<String, String>, String), RemoteError> {
    if paths.is_empty() && extra.is_none() {
        return Ok((BTreeMap::new(), String::new()));
    }
    // Under the droplet's renewal lock (shared) when it has one: a renewal swaps the
    // certificate and its key under it, so that what is read here is one renewal's files.
    let lock = transport.rooted(crate::render::renewal::renewal_paths::INSTALL_LOCK);
    let lock_dir = lock.rsplit_once('/').map_or("/", |(d, _)| d).to_owned();
    let mut cmd = format!(
        "if [ -d {dir} ] && command -v flock >/dev/null 2>&1; then exec 9>>{lock}; flock -s -w 60 9 || true; fi; set --; for p in",
        dir = shell_quote(&lock_dir),
        lock = shell_quote(&lock),
    );
    for p in paths {
        cmd.push(' ');
        cmd.push_str(&shell_quote(&transport.rooted(p)));
    }
    // One line per path, in order: "present" or "absent"; then one sha256sum over the present
    // ones (a process per file was most of a refresh's cost on the droplet), a line each in
    // that order; a name it had to escape starts its line with a backslash.
    cmd.push_str(
        "; do if [ -f \"$p\" ]; then set -- \"$@\" \"$p\"; echo present; else echo absent; fi; \
         done; echo @@SUMS; if [ $# -gt 0 ]; then sha256sum -- \"$@\" || echo unreadable; fi",
    );
    if let Some(extra) = extra {
        cmd.push_str("; echo @@DIGESTS-END; ");
        cmd.push_str(extra);
    }
    let what = format!("reading file digests on {}", transport.describe());
    let out = transport.exec(&cmd, b"").await?;
    if !out.success() {
        return Err(RemoteError::Command {
            what,
            status: status_text(out.status),
            stderr: out.stderr_tail(),
        });
    }
    let all = String::from_utf8_lossy(&out.stdout);
    let (text, rest) = match extra {
        Some(_) => all
            .split_once("@@DIGESTS-END\n")
            .map(|(d, r)| (d.to_owned(), r.to_owned()))
            .unwrap_or((all.to_string(), String::new())),
        None => (all.to_string(), String::new()),
    };
    let digests =
        parse_digests(paths, &text).map_err(|detail| RemoteError::Protocol { what, detail })?;
    Ok((digests, rest))
}

/// The digest command's answer: a "present"/"absent" line per path, `@@SUMS`, then sha256sum's
/// line for each present path in order.
fn parse_digests(paths: &[&str], text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut lines = text.lines();
    let flags: Vec<&str> = lines.by_ref().take(paths.len()).collect();
    if flags.len() != paths.len() || lines.next() != Some("@@SUMS") {
        return Err(format!("{} lines for {} paths", flags.len(), paths.len()));
    }
    let mut digests = BTreeMap::new();
    for (path, flag) in paths.iter().zip(flags) {
        let digest = match flag {
            "absent" => ABSENT.to_owned(),
            "present" => {
                let line = lines.next().unwrap_or_default();
                let hex = line
                    .trim_start_matches('\\')
                    .split(' ')
                    .next()
                    .unwrap_or_default();
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("digest of {path} is {line:?}"));
                }
                hex.to_owned()
            }
            other => return Err(format!("{path}: {other:?}")),
        };
        digests.insert((*path).to_owned(), digest);
    }
    if let Some(extra) = lines.next() {
        return Err(format!("more digests than files: {extra:?}"));
    }
    Ok(digests)
}

/// sha256 hex of `bytes`, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::LocalTransport;

    #[test]
    fn digests_are_matched_to_their_paths_in_order() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let text = format!("present\nabsent\npresent\n@@SUMS\n{a}  /x\n\\{b}  /z\\nq\n");
        let d = parse_digests(&["/x", "/y", "/z"], &text).unwrap();
        assert_eq!(d["/x"], a);
        assert_eq!(d["/y"], ABSENT);
        assert_eq!(d["/z"], b);
        // A file that vanished or could not be read leaves fewer sums: an error, not a shift.
        let short = format!("present\npresent\n@@SUMS\n{a}  /x\nunreadable\n");
        assert!(parse_digests(&["/x", "/y"], &short).is_err());
        assert!(parse_digests(&["/x"], "present\n@@SUMS\n").is_err());
        assert!(parse_digests(&["/x"], "absent\n").is_err());
        assert!(parse_digests(&["/x"], &format!("absent\n@@SUMS\n{a}  /x\n")).is_err());
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[tokio::test]
    async fn upload_is_atomic_and_sets_mode() {
        let t = LocalTransport::new();
        let path = "/etc/x/file.conf";
        t.upload(path, b"one\n", 0o640).await.unwrap();
        t.upload(path, b"two\n", 0o640).await.unwrap();
        assert_eq!(std::fs::read(t.path(path)).unwrap(), b"two\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.path(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640);
        // New directories stay enterable by other users (nginx workers serving ACME tokens).
        let dir_mode = std::fs::metadata(t.root().join("etc/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o755);
        // No temp file left beside it.
        let dir = std::fs::read_dir(t.root().join("etc/x")).unwrap();
        let names: Vec<_> = dir.map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["file.conf"]);
        // The command itself writes a temp file and renames it: never `cat > target`.
        let cmd = atomic_write_command(path, 0o640);
        assert!(cmd.contains("mktemp"));
        assert!(cmd.contains("mv -f \"$t\""));
        assert!(cmd.contains("sync \"$t\""));
    }

    #[tokio::test]
    async fn digests_in_one_round_trip() {
        let t = LocalTransport::new();
        std::fs::write(t.path("/a"), b"hello\n").unwrap();
        std::fs::write(t.path("/it's b"), b"").unwrap();
        let paths = ["/a", "/it's b", "/missing"];
        let before = t.exec_count();
        let d = managed_file_digests(&t, &paths).await.unwrap();
        assert_eq!(t.exec_count() - before, 1);
        assert_eq!(d[paths[0]], sha256_hex(b"hello\n"));
        assert_eq!(d[paths[1]], sha256_hex(b""));
        assert_eq!(d[paths[2]], ABSENT);
    }
}
