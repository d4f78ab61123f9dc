//! The one test `Transport`: runs commands with the local bash, a temp dir standing in for
//! the droplet's `/`, with shims for apt-get, systemctl, nginx, curl... that record each call.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use crate::remote::{Output, RemoteError, Transport};

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
  is-active)
    if [ -e "$SHIM_STATE/activating-$unit" ]; then echo activating; exit 3; fi
    [ -e "$SHIM_STATE/active-$unit" ] ;;
  start|restart) touch "$SHIM_STATE/active-$unit" ;;
  stop) rm -f "$SHIM_STATE/active-$unit" ;;
  disable)
    rm -f "$SHIM_STATE/enabled-$unit"
    case " $* " in *" --now "*) rm -f "$SHIM_STATE/active-$unit" ;; esac ;;
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
url=""
for a in "$@"; do
  if [ "$prev" = "-D" ]; then hdr="$a"; fi
  prev="$a"
  case "$a" in http://127.0.0.1:5000/*) exit 0 ;; https://*) url="$a" ;; esac
done
case "$url" in
  */token*) status=$(cat "$SHIM_STATE/token-status" 2>/dev/null || echo 401) ;;
  *) status=$(cat "$SHIM_STATE/http-status" 2>/dev/null || echo 401) ;;
esac
host=${url#https://}
host=${host%%/*}
if [ -n "$hdr" ]; then
  printf 'HTTP/2 %s\r\ndocker-distribution-api-version: registry/2.0\r\nwww-authenticate: Bearer realm="https://%s/token",service="%s"\r\n\r\n' "$status" "$host" "$host" > "$hdr"
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
    // A transient timer (`--unit=NAME`) is active until stopped.
    (
        "systemd-run",
        r#"echo "systemd-run $*" >> "$SHIM_LOG"
for a in "$@"; do case "$a" in --unit=*) touch "$SHIM_STATE/active-${a#--unit=}.timer" ;; esac; done"#,
    ),
    ("chown", r#"echo "chown $*" >> "$SHIM_LOG""#),
    ("dpkg", r#"echo "dpkg $*" >> "$SHIM_LOG""#),
    ("cloud-init", "exit 0"),
    // A volume's file system is mounted once `mount` ran (or `set_mounted`); `-d` prints its
    // device number, the device's own (below) unless another one was set.
    (
        "mountpoint",
        r#"[ -e "$SHIM_STATE/mounted" ] || exit 1
if [ "$1" = -d ]; then cat "$SHIM_STATE/mount-device" 2>/dev/null || echo 8:16; fi"#,
    ),
    (
        "umount",
        r#"echo "umount $*" >> "$SHIM_LOG"
rm -f "$SHIM_STATE/mounted""#,
    ),
    (
        "mount",
        r#"echo "mount $*" >> "$SHIM_LOG"
touch "$SHIM_STATE/mounted""#,
    ),
    // The volume's device node stands for major 8, minor 16 (hex 8:10, as stat prints it).
    (
        "stat",
        r#"if [ "$1 $2 $3" = "-L -c %t:%T" ]; then echo 8:10; exit 0; fi
exec /usr/bin/stat "$@""#,
    ),
    // What is on the volume's device: nothing (exit 2, as blkid -p says of a blank device)
    // until a file system is made or `set_volume_content` says otherwise.
    (
        "blkid",
        r#"echo "blkid $*" >> "$SHIM_LOG"
[ -e "$SHIM_STATE/volume-content" ] || exit 2
cat "$SHIM_STATE/volume-content""#,
    ),
    (
        "mkfs.ext4",
        r#"echo "mkfs.ext4 $*" >> "$SHIM_LOG"
echo ext4 > "$SHIM_STATE/volume-content""#,
    ),
    ("journalctl", "exit 0"),
    // Debian's registry prints its module path and version.
    (
        "docker-registry",
        r#"echo "docker-registry github.com/docker/distribution v2.8.2+ds1""#,
    ),
    // A volume is never the host's own disk: no real device reaches resize2fs.
    (
        "findmnt",
        r#"case "$*" in *SOURCE*) echo /dev/disk/by-id/scsi-0DO_Volume_test ;; *FSTYPE*) cat "$SHIM_STATE/volume-content" 2>/dev/null || echo ext4 ;; esac"#,
    ),
    ("resize2fs", r#"echo "resize2fs $*" >> "$SHIM_LOG""#),
    ("xfs_growfs", r#"echo "xfs_growfs $*" >> "$SHIM_LOG""#),
    // The script's retry loops sleep between attempts; tests need not wait.
    ("sleep", "exit 0"),
];

/// A machine in a temp dir (removed on drop): paths the provider names (`/etc/nginx/...`)
/// live under [`LocalTransport::root`], and the commands built in `remote` are told so through
/// [`Transport::fs_root`].
pub struct LocalTransport {
    dir: tempfile::TempDir,
    root: String,
    execs: AtomicUsize,
    commands: Mutex<Vec<String>>,
    /// The next command holding this text (or given it on stdin) runs, then its connection
    /// "drops" (see `drop_once`).
    drop_once: Mutex<Option<String>>,
    dropped: AtomicUsize,
}

impl Default for LocalTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalTransport {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["root", "bin", "state"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create dir");
        }
        let root = dir
            .path()
            .join("root")
            .to_str()
            .expect("utf-8 temp dir")
            .to_owned();
        let me = Self {
            dir,
            root,
            execs: AtomicUsize::new(0),
            commands: Mutex::new(Vec::new()),
            drop_once: Mutex::new(None),
            dropped: AtomicUsize::new(0),
        };
        for (name, body) in SHIMS {
            me.shim(name, body);
        }
        std::fs::write(me.dir.path().join("log"), "").expect("create log");
        me
    }

    /// Adds or replaces the shim `name` (a bash script body) on the machine's PATH.
    pub fn shim(&self, name: &str, body: &str) {
        let path = self.dir.path().join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).expect("write shim");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod shim");
    }

    /// The directory standing in for the droplet's `/`.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(&self.root)
    }

    pub fn root_str(&self) -> String {
        self.root.clone()
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

    /// The status the fake token endpoint answers a request without credentials (401 unless set).
    pub fn set_token_status(&self, status: u16) {
        std::fs::write(self.state("token-status"), status.to_string()).expect("set status");
    }

    /// The fingerprint of the certificate the fake nginx serves (the written one is AB:CD).
    pub fn set_served_fingerprint(&self, fingerprint: &str) {
        std::fs::write(self.state("served-fingerprint"), fingerprint).expect("set fingerprint");
    }

    /// `unit` is starting (a oneshot service running): `systemctl is-active` says
    /// `activating` until this is undone.
    pub fn set_activating(&self, unit: &str, activating: bool) {
        let p = self.state(&format!("activating-{unit}"));
        if activating {
            std::fs::write(p, "").expect("set");
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Whether the fake systemd holds `unit` active.
    pub fn is_active(&self, unit: &str) -> bool {
        self.state(&format!("active-{unit}")).exists()
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

    /// `mountpoint` says yes (a volume is mounted) or no.
    pub fn set_mounted(&self, mounted: bool) {
        let p = self.state("mounted");
        if mounted {
            std::fs::write(p, "").expect("set");
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Volume `name` is attached: its device node exists (blank until formatted).
    pub fn attach_volume(&self, name: &str) {
        self.touch(&crate::storage::volume::device_path(name));
    }

    /// What `blkid` finds on the volume's device: `Some("ext4")`, `Some("")` (something that is
    /// no file system, such as a partition table), or `None` (blank).
    pub fn set_volume_content(&self, content: Option<&str>) {
        let p = self.state("volume-content");
        match content {
            Some(c) => std::fs::write(p, format!("{c}\n")).expect("set"),
            None => {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// The device number of what is mounted on the volume's path (another device than the
    /// volume's own, 8:16).
    pub fn set_mount_device(&self, majmin: &str) {
        std::fs::write(self.state("mount-device"), format!("{majmin}\n")).expect("set");
    }

    /// The next command that holds `needle` (or is given it on stdin) runs to its end, but the caller gets a dropped
    /// connection instead of its output: the worst case of SSH lost under a command.
    pub fn drop_once(&self, needle: &str) {
        *self.drop_once.lock().expect("drop lock") = Some(needle.to_owned());
    }

    /// How many connections `drop_once` dropped.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    pub fn exec_count(&self) -> usize {
        self.execs.load(Ordering::SeqCst)
    }

    /// Every command run so far, oldest first.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().expect("commands lock").clone()
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
        let drop_this = {
            let mut d = self.drop_once.lock().expect("drop lock");
            let hit = d
                .as_deref()
                .is_some_and(|n| cmd.contains(n) || String::from_utf8_lossy(stdin).contains(n));
            if hit {
                *d = None;
            }
            hit
        };
        if drop_this {
            let _ = Box::pin(self.exec(cmd, stdin)).await;
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return Err(RemoteError::Session {
                addr: "local".into(),
                message: "connection reset by peer".into(),
            });
        }
        self.commands
            .lock()
            .expect("commands lock")
            .push(cmd.to_owned());
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

    fn fs_root(&self) -> &str {
        &self.root
    }
}
