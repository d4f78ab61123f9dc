//! A test `Transport`: runs commands with the local bash under a temp dir that stands in for
//! the droplet's `/`, with shims for apt-get, systemctl, nginx, curl... that record each call.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{Output, RemoteError, Transport};

/// Each shim appends `<name> <args>` to $SHIM_LOG and keeps what it simulates (installed
/// packages, enabled and active units) as marker files in $SHIM_STATE.
const SHIMS: &[(&str, &str)] = &[
    (
        "apt-get",
        r#"echo "apt-get $*" >> "$SHIM_LOG"
if [ -e "$SHIM_ROOT/usr/sbin/policy-rc.d" ]; then echo "policy-rc.d present during install" >> "$SHIM_LOG"; fi
if [ -e "$SHIM_STATE/apt-fails-once" ]; then rm -f "$SHIM_STATE/apt-fails-once"; echo "E: Could not get lock" >&2; exit 100; fi
install=""
for a in "$@"; do
  if [ "$a" = install ]; then install=1; continue; fi
  if [ -n "$install" ] && [ "${a#-}" = "$a" ]; then touch "$SHIM_STATE/installed-$a"; fi
done"#,
    ),
    (
        "dpkg-query",
        r#"pkg="${@: -1}"
[ -e "$SHIM_STATE/installed-$pkg" ] || exit 1
printf installed"#,
    ),
    (
        "systemctl",
        r#"echo "systemctl $*" >> "$SHIM_LOG"
args=()
for a in "$@"; do case "$a" in --*) ;; *) args+=("$a") ;; esac; done
unit="${args[1]:-}"
case "${args[0]}" in
  is-enabled) [ -e "$SHIM_STATE/enabled-$unit" ] ;;
  enable) touch "$SHIM_STATE/enabled-$unit" ;;
  is-active) [ -e "$SHIM_STATE/active-$unit" ] ;;
  start|restart) touch "$SHIM_STATE/active-$unit" ;;
  reload) [ -e "$SHIM_STATE/active-$unit" ] ;;
  *) ;;
esac"#,
    ),
    (
        "nginx",
        r#"echo "nginx $*" >> "$SHIM_LOG"
if [ -e "$SHIM_STATE/nginx-test-fails" ]; then echo "nginx: [emerg] unexpected end of file" >&2; exit 1; fi"#,
    ),
    (
        "curl",
        r#"echo "curl $*" >> "$SHIM_LOG"
hdr=""
prev=""
for a in "$@"; do
  if [ "$prev" = "-D" ]; then hdr="$a"; fi
  prev="$a"
  case "$a" in http://127.0.0.1:5000/*) exit 0 ;; esac
done
status=$(cat "$SHIM_STATE/http-status" 2>/dev/null || echo 401)
if [ -n "$hdr" ]; then
  printf 'HTTP/2 %s\r\ndocker-distribution-api-version: registry/2.0\r\nwww-authenticate: Basic realm="Registry"\r\n\r\n' "$status" > "$hdr"
fi
printf '%s' "$status""#,
    ),
    (
        "openssl",
        r#"echo "openssl $*" >> "$SHIM_LOG"
if [ "$1" = x509 ]; then
  case " $* " in
    *" -in "*) echo "sha256 Fingerprint=AB:CD" ;;
    *) echo "sha256 Fingerprint=$(cat "$SHIM_STATE/served-fingerprint" 2>/dev/null || echo AB:CD)" ;;
  esac
fi"#,
    ),
    ("chown", r#"echo "chown $*" >> "$SHIM_LOG""#),
    ("dpkg", r#"echo "dpkg $*" >> "$SHIM_LOG""#),
    ("cloud-init", "exit 0"),
    ("mountpoint", r#"[ -e "$SHIM_STATE/mounted" ]"#),
    ("journalctl", "exit 0"),
    // The script's retry loops sleep between attempts; tests need not wait.
    ("sleep", "exit 0"),
];

pub struct LocalTransport {
    dir: tempfile::TempDir,
    execs: AtomicUsize,
}

impl LocalTransport {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["root", "bin", "state"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create dir");
        }
        for (name, body) in SHIMS {
            let path = dir.path().join("bin").join(name);
            std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).expect("write shim");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod shim");
        }
        std::fs::write(dir.path().join("log"), "").expect("create log");
        Self {
            dir,
            execs: AtomicUsize::new(0),
        }
    }

    /// The directory standing in for the droplet's `/`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn root_str(&self) -> String {
        self.root().to_str().expect("utf-8 temp dir").to_owned()
    }

    /// Where a droplet path lives locally.
    pub fn path(&self, droplet_path: &str) -> PathBuf {
        self.root().join(droplet_path.trim_start_matches('/'))
    }

    pub fn touch(&self, droplet_path: &str) {
        let p = self.path(droplet_path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, "").expect("touch");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn clear_log(&self) {
        std::fs::write(self.dir.path().join("log"), "").expect("clear log");
    }

    /// What the fake nginx answers for `https://<fqdn>/v2/`.
    pub fn set_http_status(&self, status: u16) {
        std::fs::write(self.state("http-status"), status.to_string()).expect("set status");
    }

    /// The fingerprint of the certificate the fake nginx serves (the written one is AB:CD).
    pub fn set_served_fingerprint(&self, fingerprint: &str) {
        std::fs::write(self.state("served-fingerprint"), fingerprint).expect("set fingerprint");
    }

    /// The next apt-get call fails as if another apt held the lock.
    pub fn fail_apt_once(&self) {
        std::fs::write(self.state("apt-fails-once"), "").expect("set");
    }

    pub fn set_nginx_test_fails(&self, fails: bool) {
        let p = self.state("nginx-test-fails");
        if fails {
            std::fs::write(p, "").expect("set");
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    pub fn exec_count(&self) -> usize {
        self.execs.load(Ordering::SeqCst)
    }

    /// Temp files the atomic writes may have left (there should be none).
    pub fn temp_files_left(&self) -> Vec<String> {
        let mut left = Vec::new();
        walk(&self.root(), &mut left);
        left
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join("state").join(name)
    }
}

fn walk(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            walk(&path, out);
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tf-converge.") || name.starts_with(".upload.") {
            out.push(path.display().to_string());
        }
    }
}

#[async_trait]
impl Transport for LocalTransport {
    async fn exec(&self, cmd: &str, stdin: &[u8]) -> Result<Output, RemoteError> {
        self.execs.fetch_add(1, Ordering::SeqCst);
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(cmd)
            .env("PATH", path)
            .env("SHIM_LOG", self.dir.path().join("log"))
            .env("SHIM_STATE", self.dir.path().join("state"))
            .env("SHIM_ROOT", self.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bash");
        let mut input = child.stdin.take().expect("stdin");
        let bytes = stdin.to_vec();
        let writer = tokio::spawn(async move {
            let _ = input.write_all(&bytes).await;
        });
        let out = child.wait_with_output().await.expect("wait for bash");
        let _ = writer.await;
        Ok(Output {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    fn describe(&self) -> String {
        "local test machine".into()
    }
}
