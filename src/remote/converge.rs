//! The converge step: one idempotent shell script, run over one `exec`, that installs packages,
//! writes every managed file atomically, reloads only what changed, and proves the result.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;

use super::{sha256_hex, shell_quote, status_text, RemoteError, Transport};
use crate::render::{self, paths, RegistrySpec, RenderError};
use crate::secret::Secret;

/// What a changed file requires of the services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Read per request (the htpasswd files): nothing to do.
    None,
    /// nginx.conf and the certificate: `nginx -t`, then `systemctl reload nginx`.
    ReloadNginx,
    /// The registry's config: restart docker-registry (it drains in-flight requests).
    RestartRegistry,
    /// A systemd drop-in: `daemon-reload`, then restart docker-registry.
    ReloadUnits,
}

impl Effect {
    fn script_tag(self) -> &'static str {
        match self {
            Effect::None => "none",
            Effect::ReloadNginx => "nginx",
            Effect::RestartRegistry => "registry",
            Effect::ReloadUnits => "units",
        }
    }
}

/// One file the provider owns on the droplet. `Debug` shows the digest, never the contents
/// (the TLS key, the registry config and the htpasswd files are secret).
#[derive(Clone, PartialEq, Eq)]
pub struct ManagedFile {
    /// Absolute path on the droplet.
    pub path: String,
    pub contents: Secret,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub effect: Effect,
}

impl ManagedFile {
    pub fn new(
        path: &str,
        contents: impl Into<Secret>,
        mode: u32,
        owner: &str,
        group: &str,
        effect: Effect,
    ) -> Self {
        Self {
            path: path.to_owned(),
            contents: contents.into(),
            mode,
            owner: owner.to_owned(),
            group: group.to_owned(),
            effect,
        }
    }

    /// sha256 hex of the contents, as `managed_file_digests` reads it back from the droplet.
    pub fn digest(&self) -> String {
        sha256_hex(self.contents.expose().as_bytes())
    }
}

impl fmt::Debug for ManagedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("owner", &format_args!("{}:{}", self.owner, self.group))
            .field("effect", &self.effect)
            .field("sha256", &self.digest())
            .finish()
    }
}

/// The certificate nginx serves. With HTTP-01, the first converge needs a placeholder (e.g.
/// self-signed) pair, since nginx cannot listen with TLS without one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    /// Leaf first, then intermediates.
    pub cert_chain_pem: String,
    pub private_key_pem: Secret,
}

/// Every file the provider manages for `spec`, rendered, with its mode, owner and effect.
pub fn desired_files(
    spec: &RegistrySpec,
    tls: &TlsMaterial,
) -> Result<Vec<ManagedFile>, RenderError> {
    Ok(vec![
        ManagedFile::new(
            paths::NGINX_SITE,
            render::nginx_site(spec)?,
            0o644,
            "root",
            "root",
            Effect::ReloadNginx,
        ),
        // Readable by nginx workers (www-data) only: they verify passwords per request.
        ManagedFile::new(
            paths::HTPASSWD,
            render::htpasswd(&spec.users)?,
            0o640,
            "root",
            "www-data",
            Effect::None,
        ),
        ManagedFile::new(
            paths::HTPASSWD_PUSH,
            render::htpasswd_push(&spec.users)?,
            0o640,
            "root",
            "www-data",
            Effect::None,
        ),
        ManagedFile::new(
            &spec.tls.cert_chain,
            tls.cert_chain_pem.as_str(),
            0o644,
            "root",
            "root",
            Effect::ReloadNginx,
        ),
        // The nginx master reads it as root before dropping privileges; workers never need it.
        ManagedFile::new(
            &spec.tls.private_key,
            tls.private_key_pem.clone(),
            0o600,
            "root",
            "root",
            Effect::ReloadNginx,
        ),
        ManagedFile::new(
            paths::REGISTRY_CONFIG,
            render::registry_config(spec)?,
            0o640,
            "root",
            "docker-registry",
            Effect::RestartRegistry,
        ),
        ManagedFile::new(
            paths::REGISTRY_DROPIN,
            render::registry_dropin(spec)?,
            0o644,
            "root",
            "root",
            Effect::ReloadUnits,
        ),
    ])
}

/// The paths `desired_files` writes, for `managed_file_digests` at read time.
pub fn managed_paths(spec: &RegistrySpec) -> Vec<String> {
    vec![
        paths::NGINX_SITE.to_owned(),
        paths::HTPASSWD.to_owned(),
        paths::HTPASSWD_PUSH.to_owned(),
        spec.tls.cert_chain.clone(),
        spec.tls.private_key.clone(),
        paths::REGISTRY_CONFIG.to_owned(),
        paths::REGISTRY_DROPIN.to_owned(),
    ]
}

/// What one converge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvergeReport {
    /// Packages apt installed (empty when all were present).
    pub installed: Vec<String>,
    /// Files whose content was (re)written.
    pub changed: Vec<String>,
    /// Files whose content was right but mode or owner had drifted, now fixed.
    pub repaired: Vec<String>,
    /// Files removed (Debian's default site).
    pub removed: Vec<String>,
    /// Units enabled at boot by this run.
    pub enabled: Vec<String>,
    pub nginx_reloaded: bool,
    /// nginx was not running and was started (first converge, or after a crash).
    pub nginx_started: bool,
    pub registry_restarted: bool,
    pub units_reloaded: bool,
    /// The status `https://<fqdn>/v2/` answered on the droplet (401, or 200 with anonymous pull).
    pub verified_status: Option<u16>,
    /// Things that work but deserve a look (e.g. a volume path that is not a mount point).
    pub warnings: Vec<String>,
    /// sha256 of every managed file as written: what `read` will compare against.
    pub digests: BTreeMap<String, String>,
}

/// Packages the droplet needs. curl and openssl are for the self-check at the end.
const PACKAGES: &str = "nginx docker-registry curl openssl";

/// Runs the converge script on the droplet and reports what it did. Idempotent: a second run
/// with the same inputs changes nothing and reloads nothing.
pub async fn converge(
    transport: &dyn Transport,
    spec: &RegistrySpec,
    files: &[ManagedFile],
) -> Result<ConvergeReport, RemoteError> {
    converge_at(transport, spec, files, "").await
}

/// `converge` with every managed path under `root` (tests use a temp dir; production "").
pub(crate) async fn converge_at(
    transport: &dyn Transport,
    spec: &RegistrySpec,
    files: &[ManagedFile],
    root: &str,
) -> Result<ConvergeReport, RemoteError> {
    let script = converge_script(spec, files, root)?;
    // The script holds secrets (TLS key, htpasswd, S3 key), so it travels on stdin and waits
    // in a 0600 file on tmpfs (/run), never in a command line other users could read in /proc.
    let cmd = "umask 077; f=$(mktemp -p /run tf-converge.XXXXXX 2>/dev/null || mktemp) || exit 1; \
               cat > \"$f\" && bash \"$f\" </dev/null; rc=$?; rm -f \"$f\"; exit $rc";
    let out = transport.exec(cmd, script.as_bytes()).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.success() {
        return Err(RemoteError::Command {
            what: format!("converging {}", transport.describe()),
            status: status_text(out.status),
            stderr: out.stderr_tail(),
        });
    }
    let mut report = parse_report(&stdout);
    report.digests = files.iter().map(|f| (f.path.clone(), f.digest())).collect();
    Ok(report)
}

fn parse_report(stdout: &str) -> ConvergeReport {
    let mut r = ConvergeReport::default();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("@@") else {
            continue;
        };
        let (kind, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let arg = arg.trim().to_owned();
        match kind {
            "INSTALLED" => r.installed = arg.split_whitespace().map(str::to_owned).collect(),
            "CHANGED" => r.changed.push(arg),
            "REPAIRED" => r.repaired.push(arg),
            "REMOVED" => r.removed.push(arg),
            "ENABLED" => r.enabled.push(arg),
            "RELOADED" if arg == "nginx" => r.nginx_reloaded = true,
            "STARTED" if arg == "nginx" => r.nginx_started = true,
            "RESTARTED" if arg == "docker-registry" => r.registry_restarted = true,
            "DAEMON-RELOADED" => r.units_reloaded = true,
            "VERIFIED" => r.verified_status = arg.parse().ok(),
            "WARN" => r.warnings.push(arg),
            _ => {}
        }
    }
    r
}

/// The script's fixed part. Placeholders `__NAME__` are filled by `converge_script`; every
/// value put there is shell-quoted.
const SCRIPT_HEAD: &str = r#"#!/bin/bash
# Generated by terraform-provider-docker: the converge step. Safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
umask 022
R=__ROOT__
FQDN=__FQDN__
EXPECT_STATUS=__EXPECT_STATUS__
CERT=__CERT__
say() { printf '@@%s\n' "$*"; }
fail() { printf 'converge: %s\n' "$*" >&2; exit 1; }

# First boot: cloud-init may still be running (and holding apt) when sshd already answers.
if command -v cloud-init >/dev/null 2>&1; then
  timeout 600 cloud-init status --wait >/dev/null 2>&1 || true
fi

missing=""
for pkg in __PACKAGES__; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)" != installed ]; then
    missing="$missing $pkg"
  fi
done
if [ -n "$missing" ]; then
  # Keep the packages' postinst from starting services with Debian's defaults (the registry
  # on :5000 on every interface, nginx's stock site): they start below with our files.
  policy="$R/usr/sbin/policy-rc.d"
  own_policy=""
  if [ ! -e "$policy" ]; then
    mkdir -p "$(dirname "$policy")"
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt_log=$(mktemp)
  ok=""
  for attempt in 1 2 3 4 5; do
    # Lock::Timeout waits out unattended-upgrades; the loop covers mirror hiccups.
    if apt-get -q -o DPkg::Lock::Timeout=300 update >>"$apt_log" 2>&1 &&
       apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends \
         -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
         install $missing >>"$apt_log" 2>&1; then
      ok=1
      break
    fi
    # A converge killed mid-install leaves dpkg half-configured; apt refuses until this runs.
    dpkg --configure -a >>"$apt_log" 2>&1 || true
    sleep $((attempt * 5))
  done
  if [ -n "$own_policy" ]; then
    rm -f "$policy"
    trap - EXIT
  fi
  if [ -z "$ok" ]; then
    tail -n 25 "$apt_log" >&2
    rm -f "$apt_log"
    fail "apt-get could not install$missing"
  fi
  rm -f "$apt_log"
  say "INSTALLED$missing"
fi

changed_nginx=""
changed_registry=""
changed_units=""
# put PATH MODE OWNER GROUP SHA256 EFFECT, base64 content on stdin. Writes a temp file in the
# target's directory, fsyncs it, renames it over the target and fsyncs the directory, so a
# reader (nginx checking a password) sees the old file or the new one, never half of one.
put() {
  local rel="$1" mode="$2" owner="$3" group="$4" want="$5" effect="$6"
  local path="$R$rel" dir have tmp
  dir=$(dirname "$path")
  have=absent
  if [ -f "$path" ]; then
    have=$(sha256sum < "$path" | cut -d' ' -f1)
  fi
  if [ "$have" = "$want" ]; then
    cat > /dev/null
    if [ "$(stat -c '%a %U %G' "$path")" != "$mode $owner $group" ]; then
      chown "$owner:$group" "$path"
      chmod "$mode" "$path"
      say "REPAIRED $rel"
    fi
    return 0
  fi
  mkdir -p "$dir"
  tmp=$(mktemp "$dir/.tf-converge.XXXXXX")
  if ! base64 -d > "$tmp" || [ "$(sha256sum < "$tmp" | cut -d' ' -f1)" != "$want" ]; then
    rm -f "$tmp"
    fail "content of $rel arrived damaged"
  fi
  chown "$owner:$group" "$tmp"
  chmod "$mode" "$tmp"
  sync "$tmp"
  mv -f "$tmp" "$path"
  sync "$dir"
  say "CHANGED $rel"
  case "$effect" in
    nginx) changed_nginx=1 ;;
    registry) changed_registry=1 ;;
    units) changed_units=1; changed_registry=1 ;;
  esac
}
"#;

const SCRIPT_TAIL: &str = r#"
if [ -e "$R/etc/nginx/sites-enabled/default" ] || [ -L "$R/etc/nginx/sites-enabled/default" ]; then
  rm -f "$R/etc/nginx/sites-enabled/default"
  say "REMOVED /etc/nginx/sites-enabled/default"
  changed_nginx=1
fi
mkdir -p "$R$ACME_DIR"

if [ -n "$STORAGE_ROOT" ]; then
  if [ -n "$STORAGE_IS_VOLUME" ] && ! mountpoint -q "$R$STORAGE_ROOT"; then
    say "WARN $STORAGE_ROOT is not a mount point: images are stored on the droplet's disk"
  fi
  mkdir -p "$R$STORAGE_ROOT"
  if [ "$(stat -c '%U:%G' "$R$STORAGE_ROOT")" != docker-registry:docker-registry ]; then
    chown docker-registry:docker-registry "$R$STORAGE_ROOT"
  fi
fi

if [ -n "$changed_units" ]; then
  systemctl daemon-reload
  say "DAEMON-RELOADED"
fi
for unit in nginx docker-registry; do
  if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then
    systemctl enable --quiet "$unit"
    say "ENABLED $unit"
  fi
done
if [ -n "$changed_registry" ] || ! systemctl is-active --quiet docker-registry; then
  systemctl restart docker-registry
  say "RESTARTED docker-registry"
fi
if ! nginx_test=$(nginx -t 2>&1); then
  printf '%s\n' "$nginx_test" >&2
  fail "nginx -t rejected the configuration; nginx keeps serving the previous one"
fi
if ! systemctl is-active --quiet nginx; then
  systemctl start nginx
  say "STARTED nginx"
elif [ -n "$changed_nginx" ]; then
  # A reload starts new workers and lets the old ones finish: no connection is dropped.
  systemctl reload nginx
  say "RELOADED nginx"
fi

# Prove it: the registry answers on loopback, and nginx answers for the fqdn with our
# certificate, the expected status and the headers clients depend on.
up=""
for i in $(seq 1 60); do
  if curl -s -o /dev/null --max-time 3 http://127.0.0.1:5000/v2/; then
    up=1
    break
  fi
  sleep 1
done
if [ -z "$up" ]; then
  journalctl -u docker-registry -n 15 --no-pager 2>/dev/null | grep -vi secret >&2 || true
  fail "docker-registry does not answer on 127.0.0.1:5000"
fi
hdrs=$(mktemp)
status=""
for i in $(seq 1 30); do
  status=$(curl -sk -o /dev/null -D "$hdrs" -w '%{http_code}' --max-time 5 \
    --resolve "$FQDN:443:127.0.0.1" "https://$FQDN/v2/" || true)
  if [ "$status" = "$EXPECT_STATUS" ]; then
    break
  fi
  sleep 1
done
if [ "$status" != "$EXPECT_STATUS" ]; then
  rm -f "$hdrs"
  fail "https://$FQDN/v2/ answered ${status:-nothing} on the droplet, expected $EXPECT_STATUS"
fi
if ! grep -qi '^docker-distribution-api-version: *registry/2.0' "$hdrs"; then
  rm -f "$hdrs"
  fail "https://$FQDN/v2/ lacks the Docker-Distribution-Api-Version header"
fi
if [ "$EXPECT_STATUS" = 401 ] && ! grep -qi '^www-authenticate: *basic realm=' "$hdrs"; then
  rm -f "$hdrs"
  fail "https://$FQDN/v2/ answered 401 without a Basic challenge"
fi
rm -f "$hdrs"
wanted=$(openssl x509 -in "$R$CERT" -noout -fingerprint -sha256)
# Right after a reload, an old worker may still take a connection with the old certificate.
for i in $(seq 1 10); do
  served=$(openssl s_client -connect 127.0.0.1:443 -servername "$FQDN" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null || true)
  if [ "$served" = "$wanted" ]; then
    break
  fi
  sleep 1
done
if [ "$served" != "$wanted" ]; then
  fail "nginx serves a certificate other than $CERT for $FQDN"
fi
say "VERIFIED $status"
"#;

/// The full script for `spec` and `files`, every managed path prefixed with `root`.
pub(crate) fn converge_script(
    spec: &RegistrySpec,
    files: &[ManagedFile],
    root: &str,
) -> Result<String, RemoteError> {
    render::check_plain("fqdn", &spec.fqdn)?;
    let expect = if spec.anonymous_pull { "200" } else { "401" };
    let mut s = SCRIPT_HEAD
        .replace("__ROOT__", &shell_quote(root))
        .replace("__FQDN__", &shell_quote(&spec.fqdn))
        .replace("__EXPECT_STATUS__", expect)
        .replace("__CERT__", &shell_quote(&spec.tls.cert_chain))
        .replace("__PACKAGES__", PACKAGES);
    s.push('\n');
    for f in files {
        for name in [&f.owner, &f.group] {
            render::check_plain("file owner", name)?;
        }
        if !f.path.starts_with('/') {
            return Err(RemoteError::Protocol {
                what: "preparing the converge script".into(),
                detail: format!("managed path {:?} is not absolute", f.path),
            });
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(f.contents.expose());
        s.push_str(&format!(
            "put {} {:o} {} {} {} {} <<'__TF_EOF__'\n",
            shell_quote(&f.path),
            f.mode,
            shell_quote(&f.owner),
            shell_quote(&f.group),
            f.digest(),
            f.effect.script_tag(),
        ));
        // Lines of 76, like base64(1): `base64 -d` reads any wrapping.
        for chunk in b64.as_bytes().chunks(76) {
            s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            s.push('\n');
        }
        s.push_str("__TF_EOF__\n");
    }
    let (storage_root, is_volume) = match &spec.storage {
        render::Storage::Volume { mount_path } => (mount_path.as_str(), "1"),
        _ => (spec.storage_root().unwrap_or(""), ""),
    };
    s.push_str(&format!(
        "ACME_DIR={}\nSTORAGE_ROOT={}\nSTORAGE_IS_VOLUME={}\n",
        shell_quote(&spec.acme_http01_dir),
        shell_quote(storage_root),
        shell_quote(is_volume),
    ));
    s.push_str(SCRIPT_TAIL);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::local::LocalTransport;
    use crate::remote::managed_file_digests;
    use crate::render::{fixtures, Access, Storage, User};

    fn tls() -> TlsMaterial {
        TlsMaterial {
            cert_chain_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            private_key_pem: Secret::new(
                "-----BEGIN PRIVATE KEY-----\nTLS-KEY-SECRET\n-----END PRIVATE KEY-----\n",
            ),
        }
    }

    async fn run(t: &LocalTransport, spec: &RegistrySpec, tls: &TlsMaterial) -> ConvergeReport {
        let files = desired_files(spec, tls).unwrap();
        converge_at(t, spec, &files, &t.root_str())
            .await
            .unwrap_or_else(|e| panic!("converge failed: {e}\nshim log:\n{}", t.log()))
    }

    fn all_paths(spec: &RegistrySpec) -> Vec<String> {
        managed_paths(spec)
    }

    #[tokio::test]
    async fn first_converge_installs_writes_and_starts() {
        let t = LocalTransport::new();
        t.touch("etc/nginx/sites-enabled/default");
        let spec = fixtures::spec(Storage::Droplet);
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(
            r.installed,
            ["nginx", "docker-registry", "curl", "openssl"],
            "{r:?}"
        );
        assert_eq!(r.changed, all_paths(&spec));
        assert_eq!(r.removed, ["/etc/nginx/sites-enabled/default"]);
        assert!(r.registry_restarted && r.units_reloaded);
        assert!(r.nginx_started, "{r:?}");
        assert_eq!(r.verified_status, Some(401));
        assert_eq!(r.enabled, ["nginx", "docker-registry"]);
        let log = t.log();
        assert!(
            log.contains("apt-get -q -o DPkg::Lock::Timeout=300 update"),
            "{log}"
        );
        assert!(log.contains("nginx -t"));
        // Services were kept from starting during the install, and the guard is gone again.
        assert!(!t.root().join("usr/sbin/policy-rc.d").exists());
        assert!(log.contains("policy-rc.d present during install"), "{log}");
        // Contents, modes and owners as desired; nothing but the files themselves left behind.
        for f in desired_files(&spec, &tls()).unwrap() {
            let local = t.path(&f.path);
            assert_eq!(
                std::fs::read_to_string(&local).unwrap(),
                f.contents.expose()
            );
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&local).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, f.mode, "{}", f.path);
            assert!(log.contains(&format!("chown {}:{} ", f.owner, f.group)));
        }
        assert_eq!(t.temp_files_left(), Vec::<String>::new());
        assert!(t.path(&spec.acme_http01_dir).is_dir());
        assert!(log.contains("chown docker-registry:docker-registry"));
    }

    #[tokio::test]
    async fn unchanged_inputs_change_and_reload_nothing() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        t.clear_log();
        let r = run(&t, &spec, &tls()).await;
        assert!(r.changed.is_empty(), "{r:?}");
        assert!(r.installed.is_empty());
        assert!(!r.nginx_reloaded && !r.nginx_started && !r.registry_restarted);
        assert!(!r.units_reloaded);
        assert_eq!(r.verified_status, Some(401));
        let log = t.log();
        for forbidden in [
            "apt-get",
            "systemctl reload",
            "systemctl restart",
            "daemon-reload",
        ] {
            assert!(!log.contains(forbidden), "{forbidden} ran:\n{log}");
        }
    }

    #[tokio::test]
    async fn user_changes_reload_nothing() {
        let t = LocalTransport::new();
        let mut spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        t.clear_log();
        spec.users[1].access = Access::Push;
        spec.users.push(User {
            name: "bob".into(),
            bcrypt_hash: spec.users[0].bcrypt_hash.clone(),
            access: Access::Pull,
        });
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.changed, [paths::HTPASSWD, paths::HTPASSWD_PUSH]);
        assert!(!r.nginx_reloaded && !r.registry_restarted, "{r:?}");
        let log = t.log();
        assert!(!log.contains("systemctl reload"), "{log}");
        assert!(!log.contains("systemctl restart"), "{log}");
        let push = std::fs::read_to_string(t.path(paths::HTPASSWD_PUSH)).unwrap();
        assert!(push.contains("alice:") && !push.contains("bob:"));
    }

    #[tokio::test]
    async fn files_are_replaced_by_rename_not_rewritten_in_place() {
        let t = LocalTransport::new();
        let mut spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        // A hard link keeps pointing at the old inode when the file is renamed over, but would
        // see the new bytes if the file were truncated and rewritten.
        let live = t.path(paths::HTPASSWD);
        let link = t.root().join("old-htpasswd");
        std::fs::hard_link(&live, &link).unwrap();
        let before = std::fs::read_to_string(&live).unwrap();
        spec.users.pop();
        run(&t, &spec, &tls()).await;
        assert_eq!(std::fs::read_to_string(&link).unwrap(), before);
        assert_ne!(std::fs::read_to_string(&live).unwrap(), before);
        assert_eq!(t.temp_files_left(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn site_change_reloads_nginx_only() {
        let t = LocalTransport::new();
        let mut spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        t.clear_log();
        spec.anonymous_pull = true;
        t.set_http_status(200);
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.changed, [paths::NGINX_SITE]);
        assert!(r.nginx_reloaded && !r.registry_restarted, "{r:?}");
        assert_eq!(r.verified_status, Some(200));
        let log = t.log();
        let test_at = log.find("nginx -t").expect("nginx -t ran");
        let reload_at = log.find("systemctl reload nginx").expect("reloaded");
        assert!(test_at < reload_at, "{log}");
    }

    #[tokio::test]
    async fn certificate_change_reloads_nginx() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        let mut renewed = tls();
        renewed.cert_chain_pem = renewed.cert_chain_pem.replace("MIIB", "MIIC");
        renewed.private_key_pem =
            Secret::new("-----BEGIN PRIVATE KEY-----\nNEW\n-----END PRIVATE KEY-----\n");
        let r = run(&t, &spec, &renewed).await;
        assert_eq!(r.changed, [paths::TLS_CERT_CHAIN, paths::TLS_PRIVATE_KEY]);
        assert!(r.nginx_reloaded && !r.registry_restarted);
    }

    #[tokio::test]
    async fn registry_config_change_restarts_registry_only() {
        let t = LocalTransport::new();
        let mut spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        spec.http_secret = Secret::new("rotated-http-secret");
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.changed, [paths::REGISTRY_CONFIG]);
        assert!(r.registry_restarted && !r.nginx_reloaded && !r.units_reloaded);
    }

    #[tokio::test]
    async fn hand_edits_are_reverted_and_digests_match() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Droplet);
        let r = run(&t, &spec, &tls()).await;
        std::fs::write(t.path(paths::HTPASSWD), "mallory:$2y$05$x\n").unwrap();
        let local: Vec<String> = managed_paths(&spec)
            .iter()
            .map(|p| t.path(p).to_str().unwrap().to_owned())
            .collect();
        let refs: Vec<&str> = local.iter().map(String::as_str).collect();
        let drifted = managed_file_digests(&t, &refs).await.unwrap();
        assert_ne!(drifted[&local[1]], r.digests[paths::HTPASSWD]);
        let again = run(&t, &spec, &tls()).await;
        assert_eq!(again.changed, [paths::HTPASSWD]);
        let digests = managed_file_digests(&t, &refs).await.unwrap();
        for (path, local_path) in managed_paths(&spec).iter().zip(&local) {
            assert_eq!(digests[local_path], again.digests[path], "{path}");
        }
    }

    #[tokio::test]
    async fn a_bad_nginx_config_is_not_reloaded() {
        let t = LocalTransport::new();
        let mut spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        t.clear_log();
        t.set_nginx_test_fails(true);
        spec.anonymous_pull = true;
        let files = desired_files(&spec, &tls()).unwrap();
        let err = converge_at(&t, &spec, &files, &t.root_str())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("nginx -t rejected"), "{err}");
        assert!(!t.log().contains("systemctl reload nginx"));
    }

    #[tokio::test]
    async fn a_failed_self_check_fails_the_converge_without_leaking_secrets() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(fixtures::spaces());
        t.set_http_status(502);
        let files = desired_files(&spec, &tls()).unwrap();
        let err = converge_at(&t, &spec, &files, &t.root_str())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("answered 502"), "{err}");
        assert!(err.contains("expected 401"), "{err}");
        for secret in [
            "TLS-KEY-SECRET",
            "spaces-secret-key-value",
            "http-secret-0123456789",
        ] {
            assert!(!err.contains(secret));
        }
    }

    #[tokio::test]
    async fn apt_failures_are_retried() {
        let t = LocalTransport::new();
        t.fail_apt_once();
        let spec = fixtures::spec(Storage::Droplet);
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.installed.len(), 4);
        let log = t.log();
        assert_eq!(
            log.matches("apt-get -q -o DPkg::Lock::Timeout=300 update")
                .count(),
            2
        );
        assert!(log.contains("dpkg --configure -a"), "{log}");
        assert!(!t.root().join("usr/sbin/policy-rc.d").exists());
    }

    #[tokio::test]
    async fn a_foreign_certificate_fails_the_converge() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Droplet);
        t.set_served_fingerprint("EE:EE");
        let files = desired_files(&spec, &tls()).unwrap();
        let err = converge_at(&t, &spec, &files, &t.root_str())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("serves a certificate other than"), "{err}");
    }

    #[tokio::test]
    async fn volume_storage_is_prepared_and_unmounted_volumes_warn() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Volume {
            mount_path: "/mnt/registry".into(),
        });
        let r = run(&t, &spec, &tls()).await;
        assert!(t.path("/mnt/registry").is_dir());
        assert_eq!(r.warnings.len(), 1, "{r:?}");
        assert!(r.warnings[0].contains("/mnt/registry is not a mount point"));
    }

    #[test]
    fn debug_of_files_hides_contents() {
        let spec = fixtures::spec(fixtures::spaces());
        let files = desired_files(&spec, &tls()).unwrap();
        let dbg = format!("{files:?}");
        assert!(dbg.contains("sha256"));
        for secret in [
            "TLS-KEY-SECRET",
            "spaces-secret-key-value",
            "http-secret-0123456789",
        ] {
            assert!(!dbg.contains(secret), "{secret} in {dbg}");
        }
    }

    #[test]
    fn script_embeds_no_plaintext_secrets() {
        // Contents travel base64-encoded inside heredocs; a secret never appears as a shell
        // word (where `set -x` or an error could print it).
        let spec = fixtures::spec(fixtures::spaces());
        let files = desired_files(&spec, &tls()).unwrap();
        let script = converge_script(&spec, &files, "").unwrap();
        assert!(!script.contains("TLS-KEY-SECRET"));
        assert!(!script.contains("spaces-secret-key-value"));
        assert!(!script.contains("set -x"));
    }
}
