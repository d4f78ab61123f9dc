//! The converge step: one idempotent shell script, run over one `exec`, that installs packages,
//! writes every managed file atomically, reloads only what changed, and proves the result.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;

use super::{sha256_hex, shell_quote, status_text, RemoteError, Transport};
use crate::render::{self, paths, RegistrySpec, RenderError};
use crate::secret::Secret;
use crate::storage::volume;

/// What a changed file requires of the services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Read per request (the htpasswd files, the token key): nothing to do.
    None,
    /// nginx.conf, the token handler and the certificate: `nginx -t`, then
    /// `systemctl reload nginx`.
    ReloadNginx,
    /// The registry's config and token certificate: restart docker-registry (it drains
    /// in-flight requests).
    RestartRegistry,
    /// A systemd drop-in: `daemon-reload`, then restart docker-registry.
    ReloadUnits,
    /// The droplet's firewall rules or their unit: `daemon-reload`, then load the rules again.
    ReloadFirewall,
    /// The renewal timer or its service: `daemon-reload`, then (re)start the timer.
    RenewalTimer,
    /// named's configuration or drop-in (DNS-01 renewal): `daemon-reload`, restart named.
    RestartNamed,
    /// The garbage collection's timer or service: `daemon-reload`, then (re)start the timer.
    GcTimer,
}

impl Effect {
    fn script_tag(self) -> &'static str {
        match self {
            Effect::None => "none",
            Effect::ReloadNginx => "nginx",
            Effect::RestartRegistry => "registry",
            Effect::ReloadUnits => "units",
            Effect::ReloadFirewall => "firewall",
            Effect::RenewalTimer => "timer",
            Effect::RestartNamed => "named",
            Effect::GcTimer => "gctimer",
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
    let token = render::token_key(&spec.http_secret)?;
    let mut files = vec![
        ManagedFile::new(
            paths::NGINX_SITE,
            render::nginx_site(spec, &token)?,
            0o644,
            "root",
            "root",
            Effect::ReloadNginx,
        ),
        // njs compiles it when nginx loads its configuration.
        ManagedFile::new(
            paths::TOKEN_JS,
            render::TOKEN_JS,
            0o644,
            "root",
            "root",
            Effect::ReloadNginx,
        ),
        // Whoever reads it can mint any token: nginx workers (www-data) only, which sign with
        // it per token request (so a new key needs no reload; the site's kid changes with it).
        ManagedFile::new(
            paths::TOKEN_KEY,
            token.private_key_pem.clone(),
            0o640,
            "root",
            "www-data",
            Effect::None,
        ),
        // Public; the registry reads it at start.
        ManagedFile::new(
            paths::TOKEN_CERT,
            token.certificate_pem.as_str(),
            0o644,
            "root",
            "root",
            Effect::RestartRegistry,
        ),
        // Readable by nginx workers (www-data) only: they verify passwords per token request.
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
        // The metadata service (which serves the droplet's user data) for root only.
        ManagedFile::new(
            paths::FIREWALL_RULES,
            render::firewall::nftables_rules(),
            0o644,
            "root",
            "root",
            Effect::ReloadFirewall,
        ),
        ManagedFile::new(
            paths::FIREWALL_UNIT,
            render::firewall::firewall_unit(),
            0o644,
            "root",
            "root",
            Effect::ReloadFirewall,
        ),
    ];
    if spec.ui {
        // Public, read by nginx per request: a new page needs no reload.
        files.extend(
            render::ui::FILES
                .iter()
                .map(|f| ManagedFile::new(f.path, f.contents, 0o644, "root", "root", Effect::None)),
        );
    }
    files.extend(renewal_files(spec)?);
    files.extend(gc_files(spec)?);
    Ok(files)
}

/// Garbage collection (`garbage_collection`): the collector (read at each run), its service,
/// and the timer when there is a schedule.
fn gc_files(spec: &RegistrySpec) -> Result<Vec<ManagedFile>, RenderError> {
    use render::gc::{self, gc_paths as gp};
    let Some(g) = &spec.gc else {
        return Ok(Vec::new());
    };
    let mut files = vec![
        ManagedFile::new(
            gp::SCRIPT,
            gc::collect_script(spec.storage_root())?,
            0o755,
            "root",
            "root",
            Effect::None,
        ),
        ManagedFile::new(
            gp::SERVICE,
            gc::gc_service(g),
            0o644,
            "root",
            "root",
            Effect::GcTimer,
        ),
    ];
    if let Some(schedule) = &g.schedule {
        files.push(ManagedFile::new(
            gp::TIMER,
            gc::gc_timer(schedule)?,
            0o644,
            "root",
            "root",
            Effect::GcTimer,
        ));
    }
    Ok(files)
}

/// Every path the garbage collection may write: what the converge removes when it is no
/// longer wanted (or its schedule is gone).
fn gc_paths_all() -> [&'static str; 3] {
    use render::gc::gc_paths as gp;
    [gp::SCRIPT, gp::SERVICE, gp::TIMER]
}

/// The droplet's own renewal (`tls.renew = "droplet"`): the driver, read at each run (no
/// effect), the units, the registry's ACME account (root only), and named for DNS-01.
fn renewal_files(spec: &RegistrySpec) -> Result<Vec<ManagedFile>, RenderError> {
    use render::renewal::{self as r, renewal_paths as rp, RenewChallenge};
    let Some(renewal) = &spec.renewal else {
        return Ok(Vec::new());
    };
    let mut files = vec![
        ManagedFile::new(rp::DRIVER, r::DRIVER, 0o755, "root", "root", Effect::None),
        ManagedFile::new(
            rp::CONFIG,
            r::renewal_config(
                &spec.fqdn,
                renewal,
                &spec.tls.cert_chain,
                &spec.tls.private_key,
                &spec.acme_http01_dir,
            )?,
            0o644,
            "root",
            "root",
            Effect::None,
        ),
        // Whoever reads it can order (and revoke) this registry's certificates: root only.
        ManagedFile::new(
            rp::ACCOUNT,
            renewal.account_json.clone(),
            0o600,
            "root",
            "root",
            Effect::None,
        ),
    ];
    if let Some(ca) = &renewal.ca_certificates_pem {
        files.push(ManagedFile::new(
            rp::CA_BUNDLE,
            ca.as_str(),
            0o644,
            "root",
            "root",
            Effect::None,
        ));
    }
    files.push(ManagedFile::new(
        rp::SERVICE,
        r::renewal_service(),
        0o644,
        "root",
        "root",
        Effect::RenewalTimer,
    ));
    files.push(ManagedFile::new(
        rp::TIMER,
        r::renewal_timer(renewal.interval),
        0o644,
        "root",
        "root",
        Effect::RenewalTimer,
    ));
    if renewal.challenge == RenewChallenge::Dns01 {
        files.push(ManagedFile::new(
            rp::NAMED_CONF,
            r::named_conf(&spec.fqdn)?,
            0o644,
            "root",
            "bind",
            Effect::RestartNamed,
        ));
        files.push(ManagedFile::new(
            rp::NAMED_DROPIN,
            r::named_dropin(),
            0o644,
            "root",
            "root",
            Effect::RestartNamed,
        ));
    }
    Ok(files)
}

/// Every path the renewal may write, whether this spec has it or not: what the converge
/// removes when the renewal (or its DNS server, or the extra roots) is no longer wanted.
fn renewal_paths_all() -> [&'static str; 8] {
    use render::renewal::renewal_paths as rp;
    [
        rp::DRIVER,
        rp::CONFIG,
        rp::ACCOUNT,
        rp::CA_BUNDLE,
        rp::SERVICE,
        rp::TIMER,
        rp::NAMED_CONF,
        rp::NAMED_DROPIN,
    ]
}

/// The paths `desired_files` writes, for `managed_file_digests` at read time.
pub fn managed_paths(spec: &RegistrySpec) -> Vec<String> {
    let mut all = vec![
        paths::NGINX_SITE.to_owned(),
        paths::TOKEN_JS.to_owned(),
        paths::TOKEN_KEY.to_owned(),
        paths::TOKEN_CERT.to_owned(),
        paths::HTPASSWD.to_owned(),
        paths::HTPASSWD_PUSH.to_owned(),
        spec.tls.cert_chain.clone(),
        spec.tls.private_key.clone(),
        paths::REGISTRY_CONFIG.to_owned(),
        paths::REGISTRY_DROPIN.to_owned(),
        paths::FIREWALL_RULES.to_owned(),
        paths::FIREWALL_UNIT.to_owned(),
    ];
    if spec.ui {
        all.extend(render::ui::FILES.iter().map(|f| f.path.to_owned()));
    }
    // Rendering cannot fail here when it did for the converge; an fqdn it refuses has no
    // renewal files to read either.
    if let Ok(files) = renewal_files(spec) {
        all.extend(files.into_iter().map(|f| f.path));
    }
    if let Ok(files) = gc_files(spec) {
        all.extend(files.into_iter().map(|f| f.path));
    }
    all
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
    /// The firewall rules were (re)loaded: first converge, a changed rule, or a unit found
    /// inactive.
    pub firewall_loaded: bool,
    /// The status `https://<fqdn>/v2/` answered on the droplet without a token (always 401,
    /// with a Bearer challenge).
    pub verified_status: Option<u16>,
    /// Things that work but deserve a look.
    pub warnings: Vec<String>,
    /// The volume was blank and got a file system (its name).
    pub formatted: Option<String>,
    /// The volume was mounted by this run ("<name> <path>").
    pub mounted: Option<String>,
    /// Writes a destroy had stopped were let through again.
    pub writes_resumed: bool,
    /// sha256 of every managed file as written: what `read` will compare against.
    pub digests: BTreeMap<String, String>,
    /// Files whose contents were sent: those the droplet did not already hold.
    pub uploaded: Vec<String>,
    /// The droplet's renewal timer was stopped for this converge (it installs a certificate):
    /// the caller starts it again with [`resume_renewal`] once it has checked from outside.
    pub renewal_held: bool,
    /// Seconds the converge waited for a renewal already running on the droplet to end.
    pub renewal_waited: Option<u64>,
}

/// Whether the droplet held `f` as desired when the converge began (`held`: digests by path).
fn is_held(held: &BTreeMap<String, String>, f: &ManagedFile) -> bool {
    held.get(&f.path) == Some(&f.digest())
}

/// Packages the droplet needs. njs runs the token endpoint; curl and openssl are for the
/// self-check at the end; nftables loads the droplet's firewall. An image that has them
/// already (a snapshot of a droplet that installed them) boots with nothing to install.
pub const PACKAGES: &str = "nginx libnginx-mod-http-js docker-registry curl openssl nftables";
/// The droplet's own renewal: Debian's certbot (its cryptography and josepy serve the driver).
pub const RENEWAL_PACKAGES: &str = "certbot";
/// DNS-01 renewal: named answers the delegated challenge name; nsupdate writes the answer.
pub const NAMED_PACKAGES: &str = "bind9 bind9-dnsutils";

fn packages(spec: &RegistrySpec) -> String {
    let mut p = PACKAGES.to_owned();
    if let Some(r) = &spec.renewal {
        p.push(' ');
        p.push_str(RENEWAL_PACKAGES);
        if r.challenge == render::renewal::RenewChallenge::Dns01 {
            p.push(' ');
            p.push_str(NAMED_PACKAGES);
        }
    }
    p
}

/// Runs the converge script on the droplet and reports what it did. Idempotent: a second run
/// with the same inputs changes nothing and reloads nothing.
pub async fn converge(
    transport: &dyn Transport,
    spec: &RegistrySpec,
    files: &[ManagedFile],
) -> Result<ConvergeReport, RemoteError> {
    converge_at(transport, spec, files, transport.fs_root()).await
}

/// The converge script's first part alone: cloud-init done, the packages installed (services
/// held back until their files exist). A create runs it while passwords are still being
/// hashed; the converge that follows finds the packages there. Returns what was installed.
pub async fn install_packages(transport: &dyn Transport) -> Result<Vec<String>, RemoteError> {
    let head = SCRIPT_HEAD
        .split_once("\nchanged_nginx=\"\"")
        .map_or(SCRIPT_HEAD, |(head, _)| head);
    let script = head
        .replace("__ROOT__", &shell_quote(transport.fs_root()))
        .replace("__PACKAGES__", PACKAGES);
    let out = transport.exec(RUN_SCRIPT, script.as_bytes()).await?;
    if !out.success() {
        return Err(RemoteError::Command {
            what: format!("installing packages on {}", transport.describe()),
            status: status_text(out.status),
            stderr: out.stderr_tail(),
        });
    }
    Ok(parse_report(&String::from_utf8_lossy(&out.stdout)).installed)
}

/// Runs the script on stdin. It may hold secrets (TLS key, htpasswd, S3 key), so it waits in a
/// 0600 file on tmpfs (/run), never in a command line other users could read in /proc.
const RUN_SCRIPT: &str =
    "umask 077; f=$(mktemp -p /run tf-converge.XXXXXX 2>/dev/null || mktemp) || exit 1; \
                          cat > \"$f\" && bash \"$f\" </dev/null; rc=$?; rm -f \"$f\"; exit $rc";

/// `converge` with every managed path under `root` (a test machine's dir; a droplet's "").
pub(crate) async fn converge_at(
    transport: &dyn Transport,
    spec: &RegistrySpec,
    files: &[ManagedFile],
    root: &str,
) -> Result<ConvergeReport, RemoteError> {
    // A file the droplet already holds is not sent again: a user change sends the htpasswd
    // files and nothing else. One round trip reads what is there; the script checks it again.
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let held = super::managed_file_digests(transport, &paths).await?;
    let script = converge_script(spec, files, root, &held)?;
    let out = transport.exec(RUN_SCRIPT, script.as_bytes()).await?;
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
    report.uploaded = files
        .iter()
        .filter(|f| !is_held(&held, f))
        .map(|f| f.path.clone())
        .collect();
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
            "FIREWALL" => r.firewall_loaded = true,
            "VERIFIED" => r.verified_status = arg.parse().ok(),
            "WARN" => r.warnings.push(arg),
            "FORMATTED" => r.formatted = Some(arg),
            "MOUNTED" => r.mounted = Some(arg),
            "RESUMED" => r.writes_resumed = true,
            "HELD" => r.renewal_held = true,
            "WAITED" => r.renewal_waited = arg.parse().ok(),
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
EXPECT_STATUS=401
TOKEN_EXPECT_STATUS=__TOKEN_EXPECT_STATUS__
CERT=__CERT__
say() { printf '@@%s\n' "$*"; }
fail() { printf 'converge: %s\n' "$*" >&2; exit 1; }

# First boot: cloud-init may still be running (and holding apt) when sshd already answers.
# Once its last stage is done for this boot (a unit that stays active), asking cloud-init
# itself costs seconds of Python start-up on every converge: ask systemd instead.
if command -v cloud-init >/dev/null 2>&1 && ! systemctl is-active --quiet cloud-final.service; then
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
changed_firewall=""
changed_timer=""
changed_named=""
changed_gc=""
# What the managed files are now, read in one go (one sha256sum, one stat for all of them):
# a converge checks every file, and a process per file and question was most of its cost.
# `inventory PATH...` fills HAVE_SUM[path] (regular files only) and HAVE_META[path]
# ("mode owner group"); a path in neither is absent.
declare -A HAVE_SUM=() HAVE_META=()
inventory() {
  local sum path mode owner group
  [ "$#" -gt 0 ] || return 0
  local files=()
  for path in "$@"; do
    if [ -f "$path" ]; then files+=("$path"); fi
  done
  [ "${#files[@]}" -gt 0 ] || return 0
  while read -r sum path; do
    HAVE_SUM["$path"]=$sum
  done < <(sha256sum -- "${files[@]}" 2>/dev/null)
  while read -r mode owner group path; do
    HAVE_META["$path"]="$mode $owner $group"
  done < <(stat -c '%a %U %G %n' -- "${files[@]}" 2>/dev/null)
}
# put PATH MODE OWNER GROUP SHA256 EFFECT, base64 content on stdin (after `inventory`). Writes
# a temp file in the target's directory, fsyncs it, renames it over the target and fsyncs the
# directory, so a reader (nginx checking a password) sees the old file or the new one, never
# half of one.
put() {
  local rel="$1" mode="$2" owner="$3" group="$4" want="$5" effect="$6"
  local path="$R$rel" dir have tmp got=""
  dir=${path%/*}
  dir=${dir:-/}
  have=${HAVE_SUM["$path"]:-absent}
  if [ "$have" = "$want" ]; then
    if [ "${HAVE_META["$path"]:-}" != "$mode $owner $group" ]; then
      chown "$owner:$group" "$path"
      chmod "$mode" "$path"
      say "REPAIRED $rel"
    fi
    return 0
  fi
  [ -d "$dir" ] || mkdir -p "$dir"
  tmp=$(mktemp "$dir/.tf-converge.XXXXXX")
  if base64 -d > "$tmp"; then
    read -r got _ < <(sha256sum < "$tmp")
  fi
  if [ "$got" != "$want" ]; then
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
    firewall) changed_firewall=1 ;;
    timer) changed_units=1; changed_timer=1 ;;
    named) changed_units=1; changed_named=1 ;;
    gctimer) changed_units=1; changed_gc=1 ;;
  esac
}
"#;

/// Removes a file the provider wrote once and no longer manages (the web page after `ui` is
/// turned off), so the droplet holds exactly the managed files.
const SCRIPT_GONE: &str = r#"
gone() {
  if [ -e "$R$1" ] || [ -L "$R$1" ]; then
    rm -f "$R$1"
    say "REMOVED $1"
    case "$1" in
      *.service|*.timer|*.service.d/*) changed_units=1 ;;
    esac
  fi
}
"#;

/// `keep PATH MODE OWNER GROUP SHA256`: a file the droplet held as desired a moment ago, sent
/// without its contents. Still the same: only mode and owner are put right. Changed since (a
/// hand edit during the apply): stop before anything else changes; the next apply sends it.
const SCRIPT_KEEP: &str = r#"
keep() {
  local rel="$1" mode="$2" owner="$3" group="$4" want="$5"
  local path="$R$rel" have
  have=${HAVE_SUM["$path"]:-absent}
  if [ "$have" != "$want" ]; then
    fail "$rel changed on the droplet during the apply; apply again"
  fi
  if [ "${HAVE_META["$path"]:-}" != "$mode $owner $group" ]; then
    chown "$owner:$group" "$path"
    chmod "$mode" "$path"
    say "REPAIRED $rel"
  fi
}
"#;

/// How long a converge that installs a certificate waits for a renewal already running on the
/// droplet to end. One run is a certbot order with its hooks (seconds with a healthy CA; its
/// DNS updates give up after a minute each).
pub const RENEWAL_WAIT_SECS: u64 = 300;
/// A hold whose provider never came back (killed between the converge and its check) ends by
/// itself after this long: systemd starts the timer again.
pub const RENEWAL_HOLD_MAX: &str = "30min";
/// The transient timer that ends a forgotten hold.
pub const RESUME_UNIT: &str = "registry-renew-resume";

/// Holds the droplet's renewal while the converge installs a certificate: otherwise a renewal
/// in flight (the droplet's own, retrying while the provider renews in its place) could replace
/// the provider's certificate after it is written and before it is checked from outside. Taken
/// when the certificate changes, or when an earlier hold was never released (its resume timer
/// still waits: a provider killed mid-apply), so that this converge's check ends it.
const SCRIPT_HOLD: &str = r#"
HELD=""
release_renewal() {
  systemctl stop "$RESUME_UNIT.timer" >/dev/null 2>&1 || true
  if systemctl is-enabled --quiet registry-renew.timer 2>/dev/null; then
    systemctl start registry-renew.timer || true
  fi
}
hold_renewal() {
  local state i started=$SECONDS waited=""
  # A unit file written by a converge that died before daemon-reload is not loaded yet:
  # nothing runs it then, and the script goes on.
  systemctl stop registry-renew.timer 2>/dev/null || true
  HELD=1
  # Whatever stops the script from here puts the timer back.
  trap 'rc=$?; if [ "$rc" != 0 ]; then release_renewal; fi' EXIT
  systemctl stop "$RESUME_UNIT.timer" >/dev/null 2>&1 || true
  if ! systemd-run --quiet --unit="$RESUME_UNIT" --on-active="$HOLD_MAX" \
      --timer-property=RemainAfterElapse=no \
      systemctl start registry-renew.timer >/dev/null 2>&1; then
    say "WARN could not schedule the renewal timer's restart ($RESUME_UNIT.timer); the provider starts it after its check"
  fi
  say "HELD registry-renew.timer"
  # A oneshot service is "activating" while it runs.
  for i in $(seq 1 "$RENEW_WAIT"); do
    state=$(systemctl is-active registry-renew.service 2>/dev/null || true)
    case "$state" in
      activating|deactivating|reloading|refreshing) ;;
      *) break ;;
    esac
    if [ "$i" = "$RENEW_WAIT" ]; then
      fail "registry-renew.service (the droplet's own certificate renewal) is still running after $RENEW_WAIT s; nothing was changed. See journalctl -u registry-renew.service on the droplet, and apply again once it has ended"
    fi
    sleep 1
    waited=1
  done
  if [ -n "$waited" ]; then
    say "WAITED $((SECONDS - started))"
  fi
}
if [ -e "$R$RENEW_TIMER_FILE" ] &&
   { [ -n "$CERT_CHANGES" ] || systemctl is-active --quiet "$RESUME_UNIT.timer"; }; then
  hold_renewal
fi
"#;

/// Ends a hold the converge took (`ConvergeReport::renewal_held`): the droplet's renewal timer
/// runs again, unless the renewal was turned off meanwhile.
const RELEASE_COMMAND: &str =
    "systemctl stop registry-renew-resume.timer >/dev/null 2>&1 || true; \
     if systemctl is-enabled --quiet registry-renew.timer 2>/dev/null; then \
     systemctl start registry-renew.timer; fi";

/// Starts the droplet's renewal timer again after a converge that held it, once the provider
/// has checked its certificate from outside (or failed to): never left stopped.
pub async fn resume_renewal(transport: &dyn Transport) -> Result<(), RemoteError> {
    let out = transport.exec(RELEASE_COMMAND, b"").await?;
    if !out.success() {
        return Err(RemoteError::Command {
            what: format!(
                "starting registry-renew.timer again on {}",
                transport.describe()
            ),
            status: status_text(out.status),
            stderr: out.stderr_tail(),
        });
    }
    Ok(())
}

const SCRIPT_TAIL: &str = r#"
if [ -e "$R/etc/nginx/sites-enabled/default" ] || [ -L "$R/etc/nginx/sites-enabled/default" ]; then
  rm -f "$R/etc/nginx/sites-enabled/default"
  say "REMOVED /etc/nginx/sites-enabled/default"
  changed_nginx=1
fi
mkdir -p "$R$ACME_DIR"

# A destroy that stopped writes and then kept the registry may not have let them through.
if [ -e "$R$WRITES_STOPPED" ]; then
  rm -f "$R$WRITES_STOPPED"
  say "RESUMED writes"
fi

# The registry's volume, found by its device and mounted at its data directory. DigitalOcean
# mounts a volume by itself only when it was formatted and attached at the droplet's creation,
# at a path of its own, and never after the volume moved to another droplet; so the mount is
# ours, in fstab (nofail: a droplet without its volume still boots, and the registry, which
# requires the mount, stays down instead of filling the root disk).
mount_volume() {
  local dev="$R$VOLUME_DEVICE" dir="$R$STORAGE_ROOT" fs rc where line i
  # After a hot attach the device appears once udev has seen it.
  for i in $(seq 1 60); do
    [ -e "$dev" ] && break
    sleep 1
  done
  [ -e "$dev" ] || fail "volume $VOLUME_NAME is not attached to this droplet: $VOLUME_DEVICE does not exist"
  rc=0
  fs=$(blkid -p -o value -s TYPE "$dev" 2>/dev/null) || rc=$?
  if [ "$rc" = 2 ]; then
    # Nothing at all on it (blkid -p found no signature): a volume never formatted. This is
    # the only case in which a file system is made.
    mkfs.ext4 -q "$dev" >&2
    say "FORMATTED $VOLUME_NAME"
    fs=ext4
  elif [ "$rc" != 0 ]; then
    fail "cannot read volume $VOLUME_NAME ($VOLUME_DEVICE): blkid exited with $rc"
  elif [ -z "$fs" ]; then
    fail "volume $VOLUME_NAME ($VOLUME_DEVICE) is not blank but holds no file system (a partition table?): refusing to format or mount it"
  fi
  line="$VOLUME_DEVICE $STORAGE_ROOT $fs defaults,nofail,discard,noatime 0 2"
  touch "$R/etc/fstab"
  if ! grep -qxF "$line" "$R/etc/fstab"; then
    awk -v m="$STORAGE_ROOT" '$2 != m' "$R/etc/fstab" > "$R/etc/fstab.tf-converge"
    printf '%s\n' "$line" >> "$R/etc/fstab.tf-converge"
    mv -f "$R/etc/fstab.tf-converge" "$R/etc/fstab"
    systemctl daemon-reload
    say "CHANGED /etc/fstab"
  fi
  mkdir -p "$dir"
  if ! mountpoint -q "$dir"; then
    if [ -n "$(find "$dir" -mindepth 1 -maxdepth 1 2>/dev/null | head -n 1)" ]; then
      fail "$STORAGE_ROOT holds files on the droplet's own disk, which volume $VOLUME_NAME would hide: move them away, then apply again"
    fi
    mount -t "$fs" -o defaults,discard,noatime "$dev" "$dir"
    say "MOUNTED $VOLUME_NAME $STORAGE_ROOT"
  fi
  where=$(on_device "$dir" "$dev")
  if [ "$where" != ok ]; then
    fail "the registry's data directory $STORAGE_ROOT is not on volume $VOLUME_NAME ($VOLUME_DEVICE): $where"
  fi
}
if [ -n "$VOLUME_NAME" ]; then
  mount_volume
fi

if [ -n "$STORAGE_ROOT" ]; then
  mkdir -p "$R$STORAGE_ROOT"
  if [ "$(stat -c '%U:%G' "$R$STORAGE_ROOT")" != docker-registry:docker-registry ]; then
    chown docker-registry:docker-registry "$R$STORAGE_ROOT"
  fi
fi

if [ -n "$changed_units" ] || [ -n "$changed_firewall" ]; then
  systemctl daemon-reload
  say "DAEMON-RELOADED"
fi
# The firewall first: the services below start with the metadata service already closed.
if [ -n "$changed_firewall" ] || ! systemctl is-active --quiet "$FIREWALL_UNIT"; then
  if ! systemctl is-enabled --quiet "$FIREWALL_UNIT" 2>/dev/null; then
    systemctl enable --quiet "$FIREWALL_UNIT"
  fi
  if ! fw_out=$(systemctl restart "$FIREWALL_UNIT" 2>&1); then
    printf '%s\n' "$fw_out" >&2
    journalctl -u "$FIREWALL_UNIT" -n 10 --no-pager >&2 2>/dev/null || true
    fail "the firewall rules ($FIREWALL_RULES) did not load"
  fi
  say "FIREWALL"
fi
# The droplet's own renewal. Debian's certbot.timer would renew by certbot's own rule: masked.
if [ -n "$RENEWAL" ]; then
  if [ "$(systemctl is-enabled certbot.timer 2>/dev/null || true)" != masked ]; then
    systemctl mask --now certbot.timer >/dev/null 2>&1 || true
    say "MASKED certbot.timer"
  fi
  if [ -n "$RENEWAL_DNS" ]; then
    if [ ! -e "$R$ZONE" ]; then
      # bind9's package made the directory (root:bind, group-writable for the journal).
      mkdir -p "$(dirname "$R$ZONE")"
      printf '%s' "$ZONE_SEED" > "$R$ZONE"
      chown bind:bind "$R$ZONE"
      chmod 0644 "$R$ZONE"
      changed_named=1
    fi
    if ! systemctl is-enabled --quiet named 2>/dev/null; then
      systemctl enable --quiet named
      say "ENABLED named"
    fi
    if [ -n "$changed_named" ] || ! systemctl is-active --quiet named; then
      systemctl restart named
      say "RESTARTED named"
    fi
  elif systemctl is-enabled --quiet named 2>/dev/null; then
    systemctl disable --now --quiet named
    say "DISABLED named"
  fi
  if ! systemctl is-enabled --quiet registry-renew.timer 2>/dev/null; then
    systemctl enable --quiet registry-renew.timer
    say "ENABLED registry-renew.timer"
  fi
  # Held: the provider starts it once it has checked the new certificate from outside.
  if [ -z "$HELD" ] &&
     { [ -n "$changed_timer" ] || ! systemctl is-active --quiet registry-renew.timer; }; then
    systemctl restart registry-renew.timer
    say "RESTARTED registry-renew.timer"
  fi
elif [ -n "$RENEWAL_WAS" ]; then
  systemctl stop "$RESUME_UNIT.timer" >/dev/null 2>&1 || true
  systemctl disable --now --quiet registry-renew.timer 2>/dev/null || true
  systemctl disable --now --quiet named 2>/dev/null || true
  say "DISABLED registry-renew.timer"
fi
# Garbage collection: the timer runs only with a schedule. A flag a killed collector left
# behind would refuse pushes for good: gone unless a collection is running.
if [ -n "$GC_TIMER" ]; then
  if ! systemctl is-enabled --quiet registry-gc.timer 2>/dev/null; then
    systemctl enable --quiet registry-gc.timer
    say "ENABLED registry-gc.timer"
  fi
  if [ -n "$changed_gc" ] || ! systemctl is-active --quiet registry-gc.timer; then
    systemctl restart registry-gc.timer
    say "RESTARTED registry-gc.timer"
  fi
elif [ -n "$GC_TIMER_WAS" ]; then
  systemctl disable --now --quiet registry-gc.timer 2>/dev/null || true
  say "DISABLED registry-gc.timer"
fi
# A oneshot unit is "activating" while it runs (is-active says no then).
gc_running() {
  [ "$(systemctl show -p ActiveState --value registry-gc.service 2>/dev/null || true)" = activating ]
}
if [ -e "$R$GC_RUNNING" ] && ! gc_running; then
  rm -f "$R$GC_RUNNING"
  say "GC-RESUMED pushes after an interrupted garbage collection"
fi
for unit in nginx docker-registry; do
  if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then
    systemctl enable --quiet "$unit"
    say "ENABLED $unit"
  fi
done
# A collection in progress restarts the registry itself at its end, under its standby: a
# restart now would drop its pulls. Wait for it (bounded; the collector bounds its own steps).
if [ -n "$changed_registry" ]; then
  for i in $(seq 1 600); do
    gc_running || break
    sleep 1
  done
fi
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
if ! grep -qi "^www-authenticate: *Bearer realm=\"https://$FQDN/token\"" "$hdrs"; then
  rm -f "$hdrs"
  fail "https://$FQDN/v2/ answered 401 without a Bearer challenge to https://$FQDN/token"
fi
rm -f "$hdrs"
# The token endpoint (njs): without credentials, a token only when anonymous pull is on.
# `systemctl reload` returns before the old workers stop taking connections: an
# anonymous_pull change may answer with the previous setting for a moment.
for i in $(seq 1 10); do
  token_status=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 \
    --resolve "$FQDN:443:127.0.0.1" "https://$FQDN/token?service=$FQDN" || true)
  if [ "$token_status" = "$TOKEN_EXPECT_STATUS" ]; then
    break
  fi
  sleep 1
done
if [ "$token_status" != "$TOKEN_EXPECT_STATUS" ]; then
  fail "https://$FQDN/token answered ${token_status:-nothing} without credentials on the droplet, expected $TOKEN_EXPECT_STATUS"
fi
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

/// The renewal's part of the script: files it no longer wants removed (the whole renewal with
/// `renew = "plan"`), and the variables the tail acts on.
fn renewal_script(spec: &RegistrySpec) -> Result<String, RemoteError> {
    use render::renewal::{self as r, renewal_paths as rp, RenewChallenge};
    let wanted: Vec<String> = renewal_files(spec)?.into_iter().map(|f| f.path).collect();
    let mut s = String::new();
    if spec.ui {
        // `gone` is defined with the web page's removal otherwise.
        s.push_str(SCRIPT_GONE);
    }
    // Whether this droplet had the renewal before: the timer's unit file is there.
    s.push_str(&format!(
        "RENEWAL_WAS=\n[ -e \"$R\"{} ] && RENEWAL_WAS=1\n",
        shell_quote(rp::TIMER)
    ));
    for p in renewal_paths_all() {
        if !wanted.iter().any(|w| w == p) {
            s.push_str(&format!("gone {}\n", shell_quote(p)));
        }
    }
    let dns = spec
        .renewal
        .as_ref()
        .is_some_and(|r| r.challenge == RenewChallenge::Dns01);
    s.push_str(&format!(
        "RENEWAL={}\nRENEWAL_DNS={}\nZONE={}\nZONE_SEED={}\n",
        if spec.renewal.is_some() { "1" } else { "" },
        if dns { "1" } else { "" },
        shell_quote(rp::ZONE),
        shell_quote(&r::zone_seed(&spec.fqdn)?),
    ));
    Ok(s)
}

/// The garbage collection's part of the script: files it no longer wants removed, and the
/// variables the tail acts on. Must come after `renewal_script` (which defines `gone`).
fn gc_script(spec: &RegistrySpec) -> Result<String, RemoteError> {
    use render::gc::gc_paths as gp;
    let wanted: Vec<String> = gc_files(spec)?.into_iter().map(|f| f.path).collect();
    let mut s = format!(
        "GC_TIMER_WAS=\n[ -e \"$R\"{} ] && GC_TIMER_WAS=1\n",
        shell_quote(gp::TIMER)
    );
    for p in gc_paths_all() {
        if !wanted.iter().any(|w| w == p) {
            s.push_str(&format!("gone {}\n", shell_quote(p)));
        }
    }
    let timer = spec.gc.as_ref().is_some_and(|g| g.schedule.is_some());
    s.push_str(&format!(
        "GC_TIMER={}\nGC_RUNNING={}\n",
        if timer { "1" } else { "" },
        shell_quote(gp::RUNNING)
    ));
    Ok(s)
}

/// `inventory` of the files' paths (prefixed with `root`, as `put` and `keep` look them up).
fn inventory_line(root: &str, files: &[&ManagedFile]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let mut line = String::from("inventory");
    for f in files {
        line.push(' ');
        line.push_str(&shell_quote(&format!("{root}{}", f.path)));
    }
    line.push('\n');
    line
}

/// The full script for `spec` and `files`, every managed path prefixed with `root`.
pub(crate) fn converge_script(
    spec: &RegistrySpec,
    files: &[ManagedFile],
    root: &str,
    held: &BTreeMap<String, String>,
) -> Result<String, RemoteError> {
    render::check_plain("fqdn", &spec.fqdn)?;
    let token_expect = if spec.anonymous_pull { "200" } else { "401" };
    let mut s = SCRIPT_HEAD
        .replace("__ROOT__", &shell_quote(root))
        .replace("__FQDN__", &shell_quote(&spec.fqdn))
        .replace("__TOKEN_EXPECT_STATUS__", token_expect)
        .replace("__CERT__", &shell_quote(&spec.tls.cert_chain))
        .replace("__PACKAGES__", &packages(spec));
    s.push_str(SCRIPT_KEEP);
    s.push('\n');
    // Checks first: a file changed since it was read stops the script before any write.
    let (kept, sent): (Vec<&ManagedFile>, Vec<&ManagedFile>) =
        files.iter().partition(|f| is_held(held, f));
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
    }
    s.push_str(&inventory_line(root, &kept));
    for f in kept {
        s.push_str(&format!(
            "keep {} {:o} {} {} {}\n",
            shell_quote(&f.path),
            f.mode,
            shell_quote(&f.owner),
            shell_quote(&f.group),
            f.digest(),
        ));
    }
    let cert_changes = sent
        .iter()
        .any(|f| f.path == spec.tls.cert_chain || f.path == spec.tls.private_key);
    s.push_str(&format!(
        "RENEW_TIMER_FILE={}\nRESUME_UNIT={}\nHOLD_MAX={}\nRENEW_WAIT={}\nCERT_CHANGES={}\n",
        shell_quote(render::renewal::renewal_paths::TIMER),
        shell_quote(RESUME_UNIT),
        shell_quote(RENEWAL_HOLD_MAX),
        RENEWAL_WAIT_SECS,
        if cert_changes { "1" } else { "" },
    ));
    s.push_str(SCRIPT_HOLD);
    // Read after the hold: a renewal it waited for may have changed the certificate's files.
    s.push_str(&inventory_line(root, &sent));
    for f in sent {
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
    if !spec.ui {
        s.push_str(SCRIPT_GONE);
        for f in render::ui::FILES {
            s.push_str(&format!("gone {}\n", shell_quote(f.path)));
        }
        s.push_str(&format!(
            "rmdir \"$R\"{} 2>/dev/null || true\n",
            shell_quote(paths::UI_DIR)
        ));
    }
    s.push_str(&renewal_script(spec)?);
    s.push_str(&gc_script(spec)?);
    let volume_name = match &spec.storage {
        // The mount point is named after the volume (`storage::volume::mount_path`).
        render::Storage::Volume { mount_path } => {
            volume::name_of_mount(mount_path).ok_or_else(|| RemoteError::Protocol {
                what: "preparing the converge script".into(),
                detail: format!("volume mount path {mount_path:?} is not /mnt/<volume name>"),
            })?
        }
        _ => "",
    };
    if !volume_name.is_empty() {
        render::check_plain("volume name", volume_name)?;
    }
    let volume_device = if volume_name.is_empty() {
        String::new()
    } else {
        volume::device_path(volume_name)
    };
    s.push_str(&format!(
        "ACME_DIR={}\nSTORAGE_ROOT={}\nVOLUME_NAME={}\nVOLUME_DEVICE={}\nWRITES_STOPPED={}\nFIREWALL_UNIT={}\nFIREWALL_RULES={}\n",
        shell_quote(&spec.acme_http01_dir),
        shell_quote(spec.storage_root().unwrap_or("")),
        shell_quote(volume_name),
        shell_quote(&volume_device),
        shell_quote(paths::WRITES_STOPPED),
        shell_quote(render::firewall::UNIT),
        shell_quote(paths::FIREWALL_RULES),
    ));
    s.push_str(volume::ON_DEVICE_FN);
    s.push_str(SCRIPT_TAIL);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::managed_file_digests;
    use crate::render::{fixtures, Access, Storage, User};
    use crate::testkit::LocalTransport;

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
            [
                "nginx",
                "libnginx-mod-http-js",
                "docker-registry",
                "curl",
                "openssl",
                "nftables"
            ],
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
        // The firewall is loaded before the services start, and enabled for every boot.
        assert!(r.firewall_loaded, "{r:?}");
        let fw = log
            .find("systemctl restart terraform-provider-firewall.service")
            .expect("firewall loaded");
        assert!(log.contains("systemctl enable --quiet terraform-provider-firewall.service"));
        assert!(
            fw < log.find("systemctl restart docker-registry").unwrap(),
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
    async fn packages_alone_first_then_the_converge_finds_them() {
        let t = LocalTransport::new();
        let installed = install_packages(&t).await.unwrap();
        assert_eq!(
            installed,
            [
                "nginx",
                "libnginx-mod-http-js",
                "docker-registry",
                "curl",
                "openssl",
                "nftables"
            ]
        );
        let spec = fixtures::spec(Storage::Droplet);
        assert!(
            !t.path(paths::HTPASSWD).exists(),
            "a file written before its converge"
        );
        for started in ["systemctl start", "systemctl restart", "systemctl enable"] {
            assert!(!t.log().contains(started), "{}", t.log());
        }
        assert!(install_packages(&t).await.unwrap().is_empty());
        let r = run(&t, &spec, &tls()).await;
        assert!(r.installed.is_empty(), "{r:?}");
        assert_eq!(r.changed, all_paths(&spec));
    }

    #[tokio::test]
    async fn unchanged_inputs_change_and_reload_nothing() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        t.clear_log();
        let r = run(&t, &spec, &tls()).await;
        assert!(r.changed.is_empty(), "{r:?}");
        assert!(r.uploaded.is_empty(), "{r:?}");
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
        // Only what changed travels; the certificate, key and configs are checked in place.
        assert_eq!(r.uploaded, [paths::HTPASSWD, paths::HTPASSWD_PUSH]);
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
        // Anonymous pull changes what the token endpoint grants, not /v2/'s challenge.
        t.set_token_status(200);
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.changed, [paths::NGINX_SITE]);
        assert!(r.nginx_reloaded && !r.registry_restarted, "{r:?}");
        assert_eq!(r.verified_status, Some(401));
        let log = t.log();
        assert!(
            log.contains("https://registry.example.com/token?service=registry.example.com"),
            "{log}"
        );
        let log = t.log();
        let test_at = log.find("nginx -t").expect("nginx -t ran");
        let reload_at = log.find("systemctl reload nginx").expect("reloaded");
        assert!(test_at < reload_at, "{log}");
    }

    #[tokio::test]
    async fn the_web_page_is_written_served_and_removed_with_ui() {
        let t = LocalTransport::new();
        let mut spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        assert!(!t.path(paths::UI_DIR).exists());
        spec.ui = true;
        let on = run(&t, &spec, &tls()).await;
        let mut changed = vec![paths::NGINX_SITE];
        changed.extend(render::ui::FILES.iter().map(|f| f.path));
        assert_eq!(on.changed, changed);
        // The page's files are read per request: only the site's new locations reload nginx.
        assert!(on.nginx_reloaded && !on.registry_restarted, "{on:?}");
        for f in render::ui::FILES {
            let written = std::fs::read_to_string(t.path(f.path)).unwrap();
            assert_eq!(written, f.contents, "{}", f.path);
            assert_eq!(on.digests[f.path], sha256_hex(f.contents.as_bytes()));
        }
        let site = std::fs::read_to_string(t.path(paths::NGINX_SITE)).unwrap();
        assert!(site.contains("Content-Security-Policy"));
        // Converging again with the page changes nothing.
        t.clear_log();
        let again = run(&t, &spec, &tls()).await;
        assert!(
            again.changed.is_empty() && again.removed.is_empty(),
            "{again:?}"
        );
        assert!(!t.log().contains("systemctl reload"));
        // Off again: the files go, and the directory with them.
        spec.ui = false;
        let off = run(&t, &spec, &tls()).await;
        assert_eq!(off.changed, [paths::NGINX_SITE]);
        let removed: Vec<&str> = render::ui::FILES.iter().map(|f| f.path).collect();
        assert_eq!(off.removed, removed);
        assert!(off.nginx_reloaded);
        assert!(!t.path(paths::UI_DIR).exists());
        let site = std::fs::read_to_string(t.path(paths::NGINX_SITE)).unwrap();
        assert!(!site.contains("registry-ui"));
    }

    #[test]
    fn the_web_page_files_are_public_and_listed() {
        let mut spec = fixtures::spec(Storage::Droplet);
        spec.ui = true;
        let files = desired_files(&spec, &tls()).unwrap();
        for f in render::ui::FILES {
            let m = files.iter().find(|m| m.path == f.path).unwrap();
            assert_eq!(
                (m.mode, m.owner.as_str(), m.group.as_str()),
                (0o644, "root", "root")
            );
            assert_eq!(m.effect, Effect::None);
        }
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, managed_paths(&spec));
        spec.ui = false;
        assert_eq!(desired_files(&spec, &tls()).unwrap().len(), files.len() - 3);
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
        let mut spec = fixtures::spec(fixtures::spaces());
        run(&t, &spec, &tls()).await;
        if let Storage::Spaces { redirect, .. } = &mut spec.storage {
            *redirect = true;
        }
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.changed, [paths::REGISTRY_CONFIG]);
        assert!(r.registry_restarted && !r.nginx_reloaded && !r.units_reloaded);
    }

    #[tokio::test]
    async fn a_new_http_secret_rotates_the_token_key() {
        let t = LocalTransport::new();
        let mut spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        spec.http_secret = Secret::new("rotated-http-secret");
        let r = run(&t, &spec, &tls()).await;
        // The site names the new key's id; the registry trusts the new certificate.
        assert_eq!(
            r.changed,
            [
                paths::NGINX_SITE,
                paths::TOKEN_KEY,
                paths::TOKEN_CERT,
                paths::REGISTRY_CONFIG
            ]
        );
        assert!(r.registry_restarted && r.nginx_reloaded && !r.units_reloaded);
    }

    #[tokio::test]
    async fn hand_edits_are_reverted_and_digests_match() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Droplet);
        let r = run(&t, &spec, &tls()).await;
        std::fs::write(t.path(paths::HTPASSWD), "mallory:$2y$05$x\n").unwrap();
        // The digests are read with droplet paths; the test machine maps them to its dir.
        let local = managed_paths(&spec);
        let refs: Vec<&str> = local.iter().map(String::as_str).collect();
        let drifted = managed_file_digests(&t, &refs).await.unwrap();
        let htpasswd_at = managed_paths(&spec)
            .iter()
            .position(|p| p == paths::HTPASSWD)
            .unwrap();
        assert_ne!(drifted[&local[htpasswd_at]], r.digests[paths::HTPASSWD]);
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
        assert_eq!(r.installed.len(), 6);
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

    const VOLUME: &str = "reg-registry-data";

    fn volume_spec() -> RegistrySpec {
        fixtures::spec(Storage::Volume {
            mount_path: volume::mount_path(VOLUME),
        })
    }

    async fn converge_err(t: &LocalTransport, spec: &RegistrySpec) -> String {
        let files = desired_files(spec, &tls()).unwrap();
        converge_at(t, spec, &files, &t.root_str())
            .await
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn a_blank_volume_is_formatted_once_and_mounted_by_its_device() {
        let t = LocalTransport::new();
        t.attach_volume(VOLUME);
        let spec = volume_spec();
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.formatted.as_deref(), Some(VOLUME), "{r:?}");
        assert_eq!(
            r.mounted.as_deref(),
            Some("reg-registry-data /mnt/reg-registry-data")
        );
        let dev = format!("{}{}", t.root_str(), volume::device_path(VOLUME));
        let log = t.log();
        assert!(log.contains(&format!("mkfs.ext4 -q {dev}")), "{log}");
        assert!(
            log.contains(&format!(
                "mount -t ext4 -o defaults,discard,noatime {dev} {}/mnt/reg-registry-data",
                t.root_str()
            )),
            "{log}"
        );
        // Found by its device at every boot, and a droplet without it still boots.
        let fstab = std::fs::read_to_string(t.path("/etc/fstab")).unwrap();
        assert_eq!(
            fstab,
            "/dev/disk/by-id/scsi-0DO_Volume_reg-registry-data /mnt/reg-registry-data ext4 defaults,nofail,discard,noatime 0 2\n"
        );
        assert!(r.changed.contains(&"/etc/fstab".to_owned()), "{r:?}");
        assert!(log.contains("systemctl daemon-reload"), "{log}");

        // Again: nothing formatted, nothing mounted, fstab as it was.
        t.clear_log();
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.formatted, None);
        assert_eq!(r.mounted, None);
        let log = t.log();
        assert!(!log.contains("mkfs"), "{log}");
        assert!(!log.contains("mount -t"), "{log}");
        assert_eq!(
            std::fs::read_to_string(t.path("/etc/fstab")).unwrap(),
            fstab
        );
    }

    #[tokio::test]
    async fn a_volume_holding_a_file_system_is_never_formatted() {
        let t = LocalTransport::new();
        t.attach_volume(VOLUME);
        t.set_volume_content(Some("xfs"));
        // Another entry of the same mount point is replaced; the others stay.
        t.touch("/etc/fstab");
        std::fs::write(
            t.path("/etc/fstab"),
            "UUID=abc / ext4 defaults 0 1\n/dev/sdz /mnt/reg-registry-data ext4 defaults 0 2\n",
        )
        .unwrap();
        let r = run(&t, &volume_spec(), &tls()).await;
        assert_eq!(r.formatted, None);
        assert!(!t.log().contains("mkfs"), "{}", t.log());
        assert!(t.log().contains("mount -t xfs"), "{}", t.log());
        assert_eq!(
            std::fs::read_to_string(t.path("/etc/fstab")).unwrap(),
            "UUID=abc / ext4 defaults 0 1\n/dev/disk/by-id/scsi-0DO_Volume_reg-registry-data /mnt/reg-registry-data xfs defaults,nofail,discard,noatime 0 2\n"
        );
    }

    #[tokio::test]
    async fn a_volume_that_is_neither_blank_nor_a_file_system_is_left_alone() {
        let t = LocalTransport::new();
        t.attach_volume(VOLUME);
        t.set_volume_content(Some(""));
        let err = converge_err(&t, &volume_spec()).await;
        assert!(
            err.contains(VOLUME) && err.contains("refusing to format"),
            "{err}"
        );
        let log = t.log();
        assert!(!log.contains("mkfs") && !log.contains("mount -t"), "{log}");
        assert!(!log.contains("systemctl restart docker-registry"), "{log}");
    }

    #[tokio::test]
    async fn the_converge_fails_naming_the_volume_when_the_data_is_not_on_it() {
        // Not attached: the registry would write to the droplet's disk.
        let t = LocalTransport::new();
        let err = converge_err(&t, &volume_spec()).await;
        assert!(
            err.contains(&format!("volume {VOLUME} is not attached")),
            "{err}"
        );
        assert!(!t.log().contains("systemctl restart docker-registry"));

        // Something else is mounted at the data directory.
        let t = LocalTransport::new();
        t.attach_volume(VOLUME);
        t.set_volume_content(Some("ext4"));
        t.set_mounted(true);
        t.set_mount_device("253:1");
        let err = converge_err(&t, &volume_spec()).await;
        assert!(
            err.contains(&format!("/mnt/{VOLUME} is not on volume {VOLUME}"))
                && err.contains("253:1"),
            "{err}"
        );
        assert!(!t.log().contains("systemctl restart docker-registry"));

        // Files on the droplet's disk where the volume goes: never hidden under it.
        let t = LocalTransport::new();
        t.attach_volume(VOLUME);
        t.set_volume_content(Some("ext4"));
        t.touch("/mnt/reg-registry-data/docker/registry/v2/blobs/x");
        let err = converge_err(&t, &volume_spec()).await;
        assert!(err.contains("would hide") && err.contains(VOLUME), "{err}");
        assert!(!t.log().contains("mount -t"));
    }

    #[tokio::test]
    async fn the_converge_lets_stopped_writes_through_again() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        crate::remote::commands::stop_writes(&t).await.unwrap();
        assert!(t.path(paths::WRITES_STOPPED).exists());
        let r = run(&t, &spec, &tls()).await;
        assert!(r.writes_resumed);
        assert!(!t.path(paths::WRITES_STOPPED).exists());
        // Nothing else happens for it: nginx reads the file per request.
        assert!(!r.nginx_reloaded && r.changed.is_empty(), "{r:?}");
    }

    #[tokio::test]
    async fn a_token_endpoint_that_misbehaves_fails_the_converge() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Droplet);
        // A private registry's token endpoint must refuse a request without credentials.
        t.set_token_status(200);
        let files = desired_files(&spec, &tls()).unwrap();
        let err = converge_at(&t, &spec, &files, &t.root_str())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("/token answered 200"), "{err}");
        assert!(err.contains("expected 401"), "{err}");
    }

    #[tokio::test]
    async fn a_hand_edited_firewall_is_put_back_and_reloaded_alone() {
        let t = LocalTransport::new();
        let spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        t.clear_log();
        std::fs::write(t.path(paths::FIREWALL_RULES), "table inet filter {}\n").unwrap();
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.changed, [paths::FIREWALL_RULES]);
        assert!(r.firewall_loaded && r.units_reloaded, "{r:?}");
        assert!(!r.nginx_reloaded && !r.registry_restarted, "{r:?}");
        assert_eq!(
            std::fs::read_to_string(t.path(paths::FIREWALL_RULES)).unwrap(),
            render::firewall::nftables_rules()
        );
        // A unit found stopped (someone ran `systemctl stop`) is started again, nothing else.
        t.exec(
            "rm -f \"$SHIM_STATE/active-terraform-provider-firewall.service\"",
            b"",
        )
        .await
        .unwrap();
        let r = run(&t, &spec, &tls()).await;
        assert!(r.changed.is_empty() && r.firewall_loaded, "{r:?}");
    }

    fn with_renewal(challenge: render::renewal::RenewChallenge) -> RegistrySpec {
        let mut spec = fixtures::spec(Storage::Droplet);
        spec.renewal = Some(render::renewal::RenewalSpec {
            directory_url: "https://acme.example.net/dir".into(),
            challenge,
            key_type: "ecdsa-p256".into(),
            renew_before_days: 30,
            interval: std::time::Duration::from_secs(43200),
            account_json: Secret::new("{\"key_pkcs8\":\"ACCOUNT-KEY-SECRET\"}"),
            ca_certificates_pem: None,
        });
        spec
    }

    #[tokio::test]
    async fn the_droplet_renewal_is_installed_started_and_removed_with_renew() {
        use render::renewal::{renewal_paths as rp, RenewChallenge};
        let t = LocalTransport::new();
        let plain = fixtures::spec(Storage::Droplet);
        run(&t, &plain, &tls()).await;
        t.clear_log();
        // DNS-01: certbot and named, our named configuration, the challenge zone seeded.
        let spec = with_renewal(RenewChallenge::Dns01);
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.installed, ["certbot", "bind9", "bind9-dnsutils"], "{r:?}");
        for p in [
            rp::DRIVER,
            rp::CONFIG,
            rp::ACCOUNT,
            rp::SERVICE,
            rp::TIMER,
            rp::NAMED_CONF,
            rp::NAMED_DROPIN,
        ] {
            assert!(r.changed.iter().any(|c| c == p), "{p} not written: {r:?}");
        }
        assert!(!r.changed.iter().any(|c| c == rp::CA_BUNDLE));
        assert!(t.path(rp::ZONE).exists());
        let log = t.log();
        for call in [
            "systemctl mask --now certbot.timer",
            "systemctl enable --quiet registry-renew.timer",
            "systemctl restart registry-renew.timer",
            "systemctl restart named",
        ] {
            assert!(log.contains(call), "{call} missing:\n{log}");
        }
        // Nothing to do the second time.
        t.clear_log();
        let again = run(&t, &spec, &tls()).await;
        assert!(again.changed.is_empty(), "{again:?}");
        assert!(!t.log().contains("systemctl restart"), "{}", t.log());
        // HTTP-01: named and its files go.
        let http = with_renewal(RenewChallenge::Http01);
        let r = run(&t, &http, &tls()).await;
        assert_eq!(r.removed, [rp::NAMED_CONF, rp::NAMED_DROPIN]);
        assert!(t.log().contains("systemctl disable --now --quiet named"));
        // renew = "plan": the whole renewal goes, the timer stops.
        t.clear_log();
        let r = run(&t, &plain, &tls()).await;
        assert_eq!(
            r.removed,
            [rp::DRIVER, rp::CONFIG, rp::ACCOUNT, rp::SERVICE, rp::TIMER]
        );
        assert!(t
            .log()
            .contains("systemctl disable --now --quiet registry-renew.timer"));
        assert!(r.units_reloaded);
    }

    /// Another certificate than `tls()`: what the provider installs when it renews.
    fn renewed_tls() -> TlsMaterial {
        TlsMaterial {
            cert_chain_pem: "-----BEGIN CERTIFICATE-----\nRENEWED\n-----END CERTIFICATE-----\n"
                .into(),
            ..tls()
        }
    }

    async fn converge_failure(
        t: &LocalTransport,
        spec: &RegistrySpec,
        tls: &TlsMaterial,
    ) -> String {
        let files = desired_files(spec, tls).unwrap();
        converge_at(t, spec, &files, &t.root_str())
            .await
            .expect_err("the converge succeeded")
            .to_string()
    }

    const TIMER: &str = "registry-renew.timer";
    const RESUME_TIMER: &str = "registry-renew-resume.timer";

    #[tokio::test]
    async fn a_new_certificate_waits_for_a_running_renewal_and_holds_the_timer_until_resumed() {
        use render::renewal::RenewChallenge;
        let t = LocalTransport::new();
        let spec = with_renewal(RenewChallenge::Http01);
        let first = run(&t, &spec, &tls()).await;
        assert!(!first.renewal_held, "no timer to hold yet: {first:?}");
        assert!(t.is_active(TIMER));
        // Nothing changes: nothing held.
        t.clear_log();
        let same = run(&t, &spec, &tls()).await;
        assert!(!same.renewal_held, "{same:?}");
        assert!(!t.log().contains("systemctl stop"), "{}", t.log());

        // A renewal is running on the droplet; it ends after its third poll. Each wait
        // records which certificate the droplet holds meanwhile.
        t.set_activating("registry-renew.service", true);
        let cert = t.path(&spec.tls.cert_chain).display().to_string();
        t.shim(
            "sleep",
            &format!(
                r#"n=$(cat "$SHIM_STATE/sleeps" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$SHIM_STATE/sleeps"
echo "waiting with $(grep -c RENEWED {cert}) renewed" >> "$SHIM_LOG"
if [ $n -ge 3 ]; then rm -f "$SHIM_STATE/activating-registry-renew.service"; fi"#
            ),
        );
        t.clear_log();
        let r = run(&t, &spec, &renewed_tls()).await;
        let log = t.log();
        assert!(r.renewal_held, "{r:?}");
        assert!(r.renewal_waited.is_some(), "{r:?}");
        assert!(r.changed.contains(&spec.tls.cert_chain), "{r:?}");
        let at = |needle: &str| {
            log.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing:\n{log}"))
        };
        // The timer stops first, a restart is scheduled in case the provider never comes
        // back, and the certificate is written only once the running renewal has ended.
        assert!(at("systemctl stop registry-renew.timer") < at("systemd-run"));
        assert!(at("systemd-run --quiet --unit=registry-renew-resume --on-active=30min --timer-property=RemainAfterElapse=no systemctl start registry-renew.timer") < at("waiting with"));
        assert_eq!(log.matches("waiting with 0 renewed").count(), 3, "{log}");
        assert!(!log.contains("waiting with 1 renewed"), "{log}");
        assert!(std::fs::read_to_string(&cert).unwrap().contains("RENEWED"));
        // The converge leaves the timer stopped: the provider checks from outside first.
        assert!(!log.contains("restart registry-renew.timer"), "{log}");
        assert!(!t.is_active(TIMER) && t.is_active(RESUME_TIMER));
        t.clear_log();
        resume_renewal(&t).await.unwrap();
        assert!(t.is_active(TIMER) && !t.is_active(RESUME_TIMER));
        assert!(t.log().contains("systemctl start registry-renew.timer"));
    }

    #[tokio::test]
    async fn a_hold_is_never_left_behind() {
        use render::renewal::RenewChallenge;
        let t = LocalTransport::new();
        let spec = with_renewal(RenewChallenge::Dns01);
        run(&t, &spec, &tls()).await;
        // A provider killed after the converge, before its check: the timer stays stopped
        // (until the droplet's resume timer fires). The next converge, even one that
        // changes nothing, takes the hold over, and its check ends it.
        let held = run(&t, &spec, &renewed_tls()).await;
        assert!(held.renewal_held && !t.is_active(TIMER));
        let next = run(&t, &spec, &renewed_tls()).await;
        assert!(next.changed.is_empty(), "{next:?}");
        assert!(
            next.renewal_held,
            "the forgotten hold was not taken over: {next:?}"
        );
        resume_renewal(&t).await.unwrap();
        assert!(t.is_active(TIMER) && !t.is_active(RESUME_TIMER));
        let after = run(&t, &spec, &renewed_tls()).await;
        assert!(!after.renewal_held, "{after:?}");

        // A converge that fails after taking the hold puts the timer back itself.
        t.set_nginx_test_fails(true);
        let err = converge_failure(&t, &spec, &tls()).await;
        assert!(err.contains("nginx -t rejected"), "{err}");
        assert!(
            t.is_active(TIMER) && !t.is_active(RESUME_TIMER),
            "{}",
            t.log()
        );
        t.set_nginx_test_fails(false);

        // A renewal that does not end within the bound: a clear error naming the unit, the
        // certificate untouched, the timer running again.
        t.set_activating("registry-renew.service", true);
        let before = std::fs::read_to_string(t.path(&spec.tls.cert_chain)).unwrap();
        let err = converge_failure(&t, &spec, &renewed_tls()).await;
        assert!(
            err.contains("registry-renew.service (the droplet's own certificate renewal) is still running after 300 s"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(t.path(&spec.tls.cert_chain)).unwrap(),
            before
        );
        assert!(
            t.is_active(TIMER) && !t.is_active(RESUME_TIMER),
            "{}",
            t.log()
        );
    }

    #[tokio::test]
    async fn turning_the_renewal_off_during_a_hold_leaves_no_timer_to_resume() {
        use render::renewal::RenewChallenge;
        let t = LocalTransport::new();
        let spec = with_renewal(RenewChallenge::Http01);
        run(&t, &spec, &tls()).await;
        let plain = fixtures::spec(Storage::Droplet);
        let r = run(&t, &plain, &renewed_tls()).await;
        assert!(r.renewal_held, "{r:?}");
        assert!(!t.is_active(RESUME_TIMER), "{}", t.log());
        t.clear_log();
        resume_renewal(&t).await.unwrap();
        assert!(
            !t.log().contains("systemctl start registry-renew.timer"),
            "{}",
            t.log()
        );
    }

    #[tokio::test]
    async fn garbage_collection_units_come_and_go_with_the_block_and_its_schedule() {
        use render::gc::{gc_paths as gp, GcSpec};
        let t = LocalTransport::new();
        let plain = fixtures::spec(Storage::Droplet);
        run(&t, &plain, &tls()).await;
        t.clear_log();
        let mut spec = fixtures::spec(Storage::Droplet);
        spec.gc = Some(GcSpec {
            schedule: Some("Sun 03:00".into()),
            delete_untagged: true,
        });
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.changed, [gp::SCRIPT, gp::SERVICE, gp::TIMER], "{r:?}");
        assert!(r.units_reloaded && !r.registry_restarted, "{r:?}");
        let log = t.log();
        for call in [
            "systemctl enable --quiet registry-gc.timer",
            "systemctl restart registry-gc.timer",
        ] {
            assert!(log.contains(call), "{call} missing:\n{log}");
        }
        let files = desired_files(&spec, &tls()).unwrap();
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, managed_paths(&spec));
        let script = files.iter().find(|f| f.path == gp::SCRIPT).unwrap();
        assert_eq!((script.mode, script.effect), (0o755, Effect::None));
        // Nothing to do the second time; a flag left by a killed collector is removed (the
        // shim's collector is not running).
        t.touch(gp::RUNNING);
        t.clear_log();
        let again = run(&t, &spec, &tls()).await;
        assert!(again.changed.is_empty(), "{again:?}");
        assert!(!t.path(gp::RUNNING).exists());
        assert!(!t.log().contains("systemctl restart"), "{}", t.log());
        // No schedule: the timer goes, the collector stays for runs asked for by the plan.
        spec.gc = Some(GcSpec {
            schedule: None,
            delete_untagged: false,
        });
        t.clear_log();
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.removed, [gp::TIMER], "{r:?}");
        assert_eq!(r.changed, [gp::SERVICE], "{r:?}");
        assert!(t
            .log()
            .contains("systemctl disable --now --quiet registry-gc.timer"));
        // No block: everything goes.
        let r = run(&t, &plain, &tls()).await;
        assert_eq!(r.removed, [gp::SCRIPT, gp::SERVICE], "{r:?}");
    }

    #[test]
    fn the_renewal_files_hold_the_account_for_root_only() {
        use render::renewal::{renewal_paths as rp, RenewChallenge};
        let spec = with_renewal(RenewChallenge::Dns01);
        let files = desired_files(&spec, &tls()).unwrap();
        let file = |p: &str| files.iter().find(|f| f.path == p).unwrap().clone();
        let account = file(rp::ACCOUNT);
        assert_eq!((account.mode, account.owner.as_str()), (0o600, "root"));
        assert_eq!(file(rp::TIMER).effect, Effect::RenewalTimer);
        assert_eq!(file(rp::NAMED_CONF).effect, Effect::RestartNamed);
        assert_eq!(file(rp::DRIVER).mode, 0o755);
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, managed_paths(&spec));
        let script = converge_script(&spec, &files, "", &BTreeMap::new()).unwrap();
        assert!(!script.contains("ACCOUNT-KEY-SECRET"));
    }

    #[test]
    fn token_files_have_their_owners_and_effects() {
        let spec = fixtures::spec(Storage::Droplet);
        let files = desired_files(&spec, &tls()).unwrap();
        let file = |p: &str| files.iter().find(|f| f.path == p).unwrap().clone();
        let key = file(paths::TOKEN_KEY);
        assert_eq!(
            (key.mode, key.owner.as_str(), key.group.as_str()),
            (0o640, "root", "www-data")
        );
        assert_eq!(key.effect, Effect::None);
        assert!(key
            .contents
            .expose()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        let cert = file(paths::TOKEN_CERT);
        assert_eq!(cert.effect, Effect::RestartRegistry);
        assert!(cert
            .contents
            .expose()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(file(paths::TOKEN_JS).effect, Effect::ReloadNginx);
        // The same inputs give the same files: no restart on an unchanged apply.
        assert_eq!(files, desired_files(&spec, &tls()).unwrap());
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, managed_paths(&spec));
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

    #[tokio::test]
    async fn a_file_changed_after_its_digest_was_read_stops_the_converge() {
        let t = LocalTransport::new();
        let mut spec = fixtures::spec(Storage::Droplet);
        run(&t, &spec, &tls()).await;
        let files = desired_files(&spec, &tls()).unwrap();
        // The digests as read a moment ago; then a hand edit lands before the script runs.
        let held: BTreeMap<String, String> =
            files.iter().map(|f| (f.path.clone(), f.digest())).collect();
        std::fs::write(t.path(paths::NGINX_SITE), "# edited\n").unwrap();
        spec.users.pop();
        let files = desired_files(&spec, &tls()).unwrap();
        let script = converge_script(&spec, &files, &t.root_str(), &held).unwrap();
        let out = t.exec("bash -s", script.as_bytes()).await.unwrap();
        assert!(!out.success(), "the converge went on over a changed file");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(
                "/etc/nginx/conf.d/docker-registry.conf changed on the droplet during the apply"
            ),
            "{err}"
        );
        // Nothing was written: the htpasswd file still holds the user the spec dropped.
        assert_eq!(
            std::fs::read_to_string(t.path(paths::HTPASSWD))
                .unwrap()
                .lines()
                .count(),
            2
        );
        // The next converge reads the digests again and puts the site back.
        let r = run(&t, &spec, &tls()).await;
        assert_eq!(r.changed, [paths::NGINX_SITE, paths::HTPASSWD]);
    }

    #[test]
    fn script_embeds_no_plaintext_secrets() {
        // Contents travel base64-encoded inside heredocs; a secret never appears as a shell
        // word (where `set -x` or an error could print it).
        let spec = fixtures::spec(fixtures::spaces());
        let files = desired_files(&spec, &tls()).unwrap();
        let script = converge_script(&spec, &files, "", &BTreeMap::new()).unwrap();
        assert!(!script.contains("TLS-KEY-SECRET"));
        assert!(!script.contains("spaces-secret-key-value"));
        assert!(!script.contains("set -x"));
    }
}
