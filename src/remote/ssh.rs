//! The SSH transport (ssh2/libssh2, blocking, run on tokio's blocking pool): accepts only the
//! host keys its policy names, logs in as root with the management key, and runs commands.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ssh2::Session;

use super::keys::HostKeyPolicy;
use super::{Output, RemoteError, Transport};
use crate::secret::Secret;

/// A converge that installs packages on a slow droplet can take minutes.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Bounds each blocking libssh2 call (handshake, auth, a write) on a half-dead connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A booting droplet may present the image's own host key for a moment before cloud-init
/// installs ours; a mismatch is retried this often (never authenticated to) before failing.
const HOST_KEY_MISMATCH_RETRIES: u32 = 3;

/// An authenticated SSH session to one droplet.
pub struct SshTransport {
    addr: String,
    session: Arc<Mutex<Session>>,
    command_timeout: Duration,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Why one connection attempt failed, and whether another attempt may help.
enum Attempt {
    Retry(String),
    Mismatch(RemoteError),
    Fatal(RemoteError),
}

impl SshTransport {
    /// Connects to `addr` (`ip` or `ip:port`, port 22 by default) as `user`, accepting only
    /// the host key `expected_host_key` (an OpenSSH public key line). A machine that is still
    /// booting (refused, reset, no banner yet) is retried until `deadline`.
    pub async fn connect(
        addr: &str,
        user: &str,
        private_key: &Secret,
        expected_host_key: &str,
        deadline: Instant,
    ) -> Result<Self, RemoteError> {
        let policy = HostKeyPolicy::only(expected_host_key);
        Self::connect_with(addr, user, private_key, &policy, deadline).await
    }

    /// [`SshTransport::connect`] accepting the host keys of `policy`.
    pub async fn connect_with(
        addr: &str,
        user: &str,
        private_key: &Secret,
        policy: &HostKeyPolicy,
        deadline: Instant,
    ) -> Result<Self, RemoteError> {
        let addr = addr.to_owned();
        let user = user.to_owned();
        let private_key = private_key.clone();
        // A policy naming a key that does not parse fails here, before any connection.
        for line in &policy.accepted {
            super::keys::public_key_blob(line)?;
        }
        let policy = policy.clone();
        let task_addr = addr.clone();
        let session = tokio::task::spawn_blocking(move || {
            connect_blocking(&task_addr, &user, &private_key, &policy, deadline)
        })
        .await
        .map_err(|e| RemoteError::Connect {
            addr: addr.clone(),
            message: format!("connect task failed: {e}"),
        })??;
        Ok(Self {
            addr,
            session: Arc::new(Mutex::new(session)),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        })
    }

    /// Overrides how long one `exec` may run.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, RemoteError> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 22));
    }
    let candidate = if addr.contains(':') {
        addr.to_owned()
    } else {
        format!("{addr}:22")
    };
    candidate
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| RemoteError::Connect {
            addr: addr.to_owned(),
            message: "not an address".into(),
        })
}

fn connect_blocking(
    addr: &str,
    user: &str,
    private_key: &Secret,
    policy: &HostKeyPolicy,
    deadline: Instant,
) -> Result<Session, RemoteError> {
    let sockaddr = resolve(addr)?;
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut mismatches = 0u32;
    let mut backoff = Duration::from_millis(500);
    loop {
        attempts += 1;
        match attempt(addr, sockaddr, user, private_key, policy, deadline) {
            Ok(session) => return Ok(session),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Mismatch(e)) => {
                mismatches += 1;
                if mismatches > HOST_KEY_MISMATCH_RETRIES || Instant::now() + backoff >= deadline {
                    return Err(e);
                }
                tracing::warn!(
                    addr,
                    "host key mismatch; retrying in case the droplet is still booting"
                );
            }
            Err(Attempt::Retry(message)) => {
                if Instant::now() + backoff >= deadline {
                    return Err(RemoteError::Connect {
                        addr: addr.to_owned(),
                        message: format!(
                            "gave up after {attempts} attempts in {} s: {message}",
                            started.elapsed().as_secs()
                        ),
                    });
                }
                tracing::debug!(addr, attempts, %message, "SSH not ready, retrying");
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn attempt(
    addr: &str,
    sockaddr: SocketAddr,
    user: &str,
    private_key: &Secret,
    policy: &HostKeyPolicy,
    deadline: Instant,
) -> Result<Session, Attempt> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let connect_timeout = remaining.clamp(Duration::from_secs(1), Duration::from_secs(10));
    let tcp = TcpStream::connect_timeout(&sockaddr, connect_timeout)
        .map_err(|e| Attempt::Retry(format!("TCP connect: {e}")))?;
    let mut session =
        Session::new().map_err(|e| Attempt::Retry(format!("creating SSH session: {e}")))?;
    session.set_tcp_stream(tcp);
    session.set_timeout(IO_TIMEOUT.as_millis() as u32);
    // Ask for the Ed25519 host key only: were other host keys left on the machine, libssh2
    // could otherwise negotiate an RSA or ECDSA one and report a false mismatch.
    session
        .method_pref(ssh2::MethodType::HostKey, "ssh-ed25519")
        .map_err(|e| {
            Attempt::Fatal(RemoteError::Connect {
                addr: addr.to_owned(),
                message: format!("libssh2 lacks Ed25519 host keys: {e}"),
            })
        })?;
    // Covers "connection reset" and "no banner yet" while sshd starts up.
    session
        .handshake()
        .map_err(|e| Attempt::Retry(format!("SSH handshake: {e}")))?;

    // Checked before authenticating: we never offer our key to a machine that is not ours.
    let (offered, _) = session
        .host_key()
        .ok_or_else(|| Attempt::Retry("server sent no host key".into()))?;
    match policy.check(addr, offered) {
        Ok(()) => {}
        // No booting droplet shows the key it was born with once it was moved off it: that
        // machine is not to be trusted, now or in a moment.
        Err(e @ RemoteError::UserDataHostKey { .. }) => return Err(Attempt::Fatal(e)),
        Err(e) => return Err(Attempt::Mismatch(e)),
    }

    session
        .userauth_pubkey_memory(user, None, private_key.expose(), None)
        .map_err(|e| {
            // libssh2's message names the method, never the key material.
            Attempt::Fatal(RemoteError::Auth {
                addr: addr.to_owned(),
                user: user.to_owned(),
                message: e.message().to_owned(),
            })
        })?;
    if !session.authenticated() {
        return Err(Attempt::Fatal(RemoteError::Auth {
            addr: addr.to_owned(),
            user: user.to_owned(),
            message: "the server did not accept the management key".into(),
        }));
    }
    session.set_keepalive(true, 30);
    Ok(session)
}

#[async_trait]
impl Transport for SshTransport {
    async fn exec(&self, cmd: &str, stdin: &[u8]) -> Result<Output, RemoteError> {
        let session = Arc::clone(&self.session);
        let addr = self.addr.clone();
        let cmd = cmd.to_owned();
        let stdin = stdin.to_vec();
        let timeout = self.command_timeout;
        tokio::task::spawn_blocking(move || {
            let session = session.lock().unwrap_or_else(|p| p.into_inner());
            let result = exec_blocking(&session, &addr, &cmd, &stdin, timeout);
            session.set_blocking(true);
            result
        })
        .await
        .map_err(|e| RemoteError::Session {
            addr: self.addr.clone(),
            message: format!("command task failed: {e}"),
        })?
    }

    fn describe(&self) -> String {
        format!("droplet {}", self.addr)
    }
}

fn exec_blocking(
    session: &Session,
    addr: &str,
    cmd: &str,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Output, RemoteError> {
    let err = |what: &str, e: &dyn std::fmt::Display| RemoteError::Session {
        addr: addr.to_owned(),
        message: format!("{what}: {e}"),
    };
    session.set_blocking(true);
    let mut channel = session
        .channel_session()
        .map_err(|e| err("opening a channel", &e))?;
    channel
        .exec(cmd)
        .map_err(|e| err("starting a command", &e))?;
    channel
        .write_all(stdin)
        .map_err(|e| err("sending stdin", &e))?;
    channel.send_eof().map_err(|e| err("closing stdin", &e))?;

    // Non-blocking from here: stdout and stderr are drained together, so a command that fills
    // one stream while we wait on the other cannot stall the channel's window.
    session.set_blocking(false);
    let started = Instant::now();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 32 * 1024];
    loop {
        let mut progressed = false;
        match channel.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                stdout.extend_from_slice(&buf[..n]);
                progressed = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(err("reading output", &e)),
        }
        match channel.stderr().read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                stderr.extend_from_slice(&buf[..n]);
                progressed = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(err("reading errors", &e)),
        }
        if progressed {
            continue;
        }
        if channel.eof() {
            break;
        }
        if started.elapsed() > timeout {
            let _ = channel.close();
            return Err(RemoteError::Timeout {
                addr: addr.to_owned(),
                what: "a remote command".into(),
                seconds: timeout.as_secs(),
            });
        }
        // libssh2 only sends keepalives when asked; a quiet apt-get must not look like a dead
        // connection to a NAT or firewall on the way.
        let _ = session.keepalive_send();
        std::thread::sleep(Duration::from_millis(15));
    }
    session.set_blocking(true);
    channel
        .wait_close()
        .map_err(|e| err("closing the channel", &e))?;
    let signal = channel
        .exit_signal()
        .ok()
        .and_then(|s| s.exit_signal)
        .filter(|s| !s.is_empty());
    let status = if signal.is_some() {
        None
    } else {
        Some(
            channel
                .exit_status()
                .map_err(|e| err("reading the exit status", &e))?,
        )
    };
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_port_22() {
        assert_eq!(resolve("198.18.0.5").unwrap().to_string(), "198.18.0.5:22");
        assert_eq!(
            resolve("198.18.0.5:2222").unwrap().to_string(),
            "198.18.0.5:2222"
        );
        assert_eq!(resolve("::1").unwrap().to_string(), "[::1]:22");
        assert!(resolve("1.2.3.4:notaport").is_err());
    }

    #[tokio::test]
    async fn refused_connections_retry_until_the_deadline() {
        // A port nobody listens on: bind, learn the port, drop the listener.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let key = crate::remote::generate_ed25519("t").unwrap();
        let started = Instant::now();
        let err = SshTransport::connect(
            &format!("127.0.0.1:{port}"),
            "root",
            &key.private_openssh,
            &key.public_openssh,
            Instant::now() + Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        let msg = err.to_string();
        assert!(msg.contains("gave up after"), "{msg}");
        assert!(!msg.contains("PRIVATE"));
    }

    /// Needs root, an `sshd` binary (`REAL_SSHD=/usr/sbin/sshd`) and `unshare`: runs sshd on
    /// loopback with a host key we generate, in a private mount namespace where an `sshd`
    /// privilege-separation user exists. Run with
    /// `REAL_SSHD=... cargo test -p terraform-provider-docker --lib real_sshd -- --ignored`.
    #[tokio::test]
    #[ignore = "needs root and a real sshd binary (REAL_SSHD)"]
    async fn real_sshd_pins_the_host_key_and_runs_commands() {
        use crate::remote::{managed_file_digests, sha256_hex, Transport};
        let sshd = std::env::var("REAL_SSHD").expect("REAL_SSHD=/path/to/sshd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let host = crate::remote::generate_ed25519("host").unwrap();
        let client = crate::remote::generate_ed25519("provider").unwrap();
        let other_host = crate::remote::generate_ed25519("impostor").unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(d.join("host"), host.private_openssh.expose()).unwrap();
        std::fs::set_permissions(d.join("host"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            d.join("authorized_keys"),
            format!("{}\n", client.public_openssh),
        )
        .unwrap();
        // A second host key listed first, as on an image whose keys were not all removed: the
        // client must still get (and pin) the Ed25519 one.
        let keygen = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
            .arg(d.join("ecdsa"))
            .status()
            .unwrap();
        assert!(keygen.success());
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        std::fs::write(
            d.join("passwd"),
            format!("{passwd}sshd:x:64999:65534::/run/sshd:/usr/sbin/nologin\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/ecdsa\nHostKey {dir}/host\nPidFile {dir}/pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\n",
                dir = d.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        // Killed on drop, so a failed assertion does not leave sshd running.
        struct KillOnDrop(std::process::Child);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _sshd = KillOnDrop(
            std::process::Command::new("unshare")
                .args(["-m", "sh", "-c"])
                .arg(format!(
                "mount --bind {dir}/passwd /etc/passwd && exec {sshd} -D -e -f {dir}/sshd_config",
                dir = d.display()
            ))
                .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(15);

        // The wrong expected host key: refused before authenticating, fingerprints named.
        let err = SshTransport::connect(
            &addr,
            "root",
            &client.private_openssh,
            &other_host.public_openssh,
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RemoteError::HostKeyMismatch { .. }), "{msg}");
        assert!(msg.contains(&host.fingerprint_sha256), "{msg}");
        assert!(msg.contains(&other_host.fingerprint_sha256), "{msg}");

        let t = SshTransport::connect(
            &addr,
            "root",
            &client.private_openssh,
            &host.public_openssh,
            deadline,
        )
        .await
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
            panic!("{e}\nsshd log:\n{log}")
        });
        let out = t
            .exec("cat; echo to-stderr >&2; exit 3", b"from stdin\n")
            .await
            .unwrap();
        assert_eq!(out.stdout, b"from stdin\n");
        assert_eq!(out.stderr, b"to-stderr\n");
        assert_eq!(out.status, Some(3));
        // Output far beyond one channel window, on both streams at once.
        let out = t
            .exec(
                "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2",
                b"",
            )
            .await
            .unwrap();
        assert_eq!((out.stdout.len(), out.stderr.len()), (3_000_000, 3_000_000));

        let target = d.join("sub/file");
        let target = target.to_str().unwrap();
        let big = vec![b'x'; 1_000_000];
        t.upload(target, &big, 0o640).await.unwrap();
        let digests = managed_file_digests(&t, &[target, "/nonexistent"])
            .await
            .unwrap();
        assert_eq!(digests[target], sha256_hex(&big));
        assert_eq!(digests["/nonexistent"], "absent");

        // Wrong management key: a clear authentication error.
        let stranger = crate::remote::generate_ed25519("stranger").unwrap();
        let err = SshTransport::connect(
            &addr,
            "root",
            &stranger.private_openssh,
            &host.public_openssh,
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RemoteError::Auth { .. }), "{err}");
    }
}
