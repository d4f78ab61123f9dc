//! Builds the Debian 12 root file system that every droplet boots from (debootstrap), once,
//! into a cache outside the repository; per-droplet changes live in an overlayfs upper dir.

use std::path::{Path, PathBuf};

use crate::machines::sys::{self, io_err, SysError, SysResult};

/// Bump when the recipe below changes: a cached image with another version is rebuilt.
pub const IMAGE_VERSION: &str = "localocean-debian-12-x64-v4";
pub const DEFAULT_SLUG: &str = "debian-12-x64";
const MARKER: &str = ".localocean-image";
const MIRROR: &str = "http://deb.debian.org/debian";

const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "openssh-sftp-server",
    "cloud-init",
    // debootstrap's resolver skips virtual packages; python3-cryptography (for cloud-init)
    // needs the provider of python3-cffi-backend-api-* named explicitly.
    "python3-cffi-backend",
    "ca-certificates",
    "curl",
    "iproute2",
    "procps",
    "less",
    // cloud-init's locale module runs update-locale, as on DigitalOcean's image.
    "locales",
    "gnupg",
];

/// Cloud-init as on DigitalOcean's images: root may log in with keys; the seed is NoCloud;
/// the network is configured from the host before boot, so cloud-init must not touch it.
/// `ssh_pwauth` stays unset: setting it makes cloud-init restart sshd after boot, and a
/// client connecting in that moment is refused (password login is off in SSHD_CFG).
const CLOUD_CFG: &str = "\
disable_root: false
preserve_hostname: false
datasource_list: [ NoCloud, None ]
network:
  config: disabled
";

/// sshd must not start before cloud-init has installed the host keys from user data (the
/// provider pins them). Host keys are made only when the machine has none at all (user data
/// without any): `ssh-keygen -A` fills in every missing type, and making RSA and ECDSA keys
/// beside the user data's Ed25519 key at every first boot cost 45 CPU seconds over the suite.
const SSH_DROPIN: &str = "\
[Unit]
After=cloud-init.service
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || exec /usr/bin/ssh-keygen -A'
ExecStartPre=/usr/sbin/sshd -t
";

const SSHD_CFG: &str = "\
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
";

const SOURCES: &str = "\
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
";

/// Where images are cached: `$LOCALOCEAN_CACHE/images`, default
/// `~/.cache/tf-docker-registry/images`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOCALOCEAN_CACHE") {
        return PathBuf::from(dir).join("images");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/tf-docker-registry/images")
}

pub fn image_dir(slug: &str) -> PathBuf {
    cache_root().join(slug)
}

/// The image's root directory if it is fully built with the current recipe.
pub fn ready_image(slug: &str) -> Option<PathBuf> {
    let dir = image_dir(slug);
    let marker = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    (marker.trim() == IMAGE_VERSION).then_some(dir)
}

/// Builds the image unless a current one is cached; returns its root directory. Only
/// `debian-12-x64` exists (every other slug is an error the API reports).
pub async fn ensure_image(slug: &str) -> SysResult<PathBuf> {
    if slug != DEFAULT_SLUG {
        return Err(SysError::Other(format!(
            "image {slug:?} is not available in localocean (only {DEFAULT_SLUG})"
        )));
    }
    if let Some(dir) = ready_image(slug) {
        return Ok(dir);
    }
    let root = cache_root();
    std::fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
    // Two builders (tests, serve) must not race on the same cache.
    let lock_path = root.join(format!(".{slug}.lock"));
    let lock = std::fs::File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
    let lock = tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own for the duration of the build.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        (rc, lock)
    })
    .await
    .map_err(|e| SysError::Other(format!("image lock task: {e}")))?;
    if lock.0 != 0 {
        return Err(SysError::Other(format!(
            "cannot lock {}",
            lock_path.display()
        )));
    }
    if let Some(dir) = ready_image(slug) {
        return Ok(dir);
    }
    let result = build(slug, &root).await;
    drop(lock.1);
    result
}

async fn build(slug: &str, root: &Path) -> SysResult<PathBuf> {
    let final_dir = root.join(slug);
    let tmp = root.join(format!(".{slug}.build-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err("removing", &tmp))?;
    }
    tracing::info!("building image {slug} with debootstrap (about a minute)");
    let include = format!("--include={}", PACKAGES.join(","));
    // Keep downloaded packages: a recipe change then rebuilds without downloading again.
    let debs = root.join(".debs");
    std::fs::create_dir_all(&debs).map_err(io_err("creating", &debs))?;
    let cache_arg = format!("--cache-dir={}", debs.display());
    let tmp_s = tmp.to_string_lossy().into_owned();
    let res = async {
        sys::run_for(
            "debootstrap",
            &[
                "--variant=minbase",
                cache_arg.as_str(),
                include.as_str(),
                "bookworm",
                tmp_s.as_str(),
                MIRROR,
            ],
            std::time::Duration::from_secs(1800),
        )
        .await
        .map_err(|e| {
            // debootstrap reports on stdout and in its own log, not on stderr.
            let log = std::fs::read_to_string(tmp.join("debootstrap/debootstrap.log"))
                .unwrap_or_default();
            let start = log.len().saturating_sub(1500);
            let start = (start..log.len())
                .find(|i| log.is_char_boundary(*i))
                .unwrap_or(log.len());
            SysError::Other(format!("{e}\ndebootstrap.log tail:\n{}", &log[start..]))
        })?;
        configure(&tmp).await
    }
    .await;
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    sys::write_atomic(&tmp.join(MARKER), IMAGE_VERSION.as_bytes(), 0o644)?;
    if final_dir.exists() {
        let old = root.join(format!(".{slug}.old-{}", std::process::id()));
        std::fs::rename(&final_dir, &old).map_err(io_err("moving aside", &final_dir))?;
        // A running machine may still use the old lower dir; removal failure is harmless.
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(&tmp, &final_dir).map_err(io_err("renaming into", &final_dir))?;
    tracing::info!("image {slug} ready at {}", final_dir.display());
    Ok(final_dir)
}

async fn configure(rootfs: &Path) -> SysResult<()> {
    let w = |rel: &str, body: &str| sys::write_atomic(&rootfs.join(rel), body.as_bytes(), 0o644);
    w("etc/cloud/cloud.cfg.d/99_localocean.cfg", CLOUD_CFG)?;
    w(
        "etc/systemd/system/ssh.service.d/10-localocean.conf",
        SSH_DROPIN,
    )?;
    w("etc/apt/sources.list", SOURCES)?;
    w("etc/ssh/sshd_config.d/50-localocean.conf", SSHD_CFG)?;
    // Each machine gets its own machine id at first boot and its own host keys.
    w("etc/machine-id", "")?;
    let _ = std::fs::remove_file(rootfs.join("var/lib/dbus/machine-id"));
    for entry in std::fs::read_dir(rootfs.join("etc/ssh")).map_err(io_err("reading", rootfs))? {
        let entry = entry.map_err(io_err("reading", rootfs))?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    // Background apt runs would hold the dpkg lock while the provider converges; the
    // console getty only spins on nspawn's read-only console.
    for unit in [
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "console-getty.service",
        "systemd-networkd-wait-online.service",
    ] {
        let link = rootfs.join("etc/systemd/system").join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).map_err(io_err("masking", &link))?;
    }
    w("etc/locale.gen", "en_US.UTF-8 UTF-8\n")?;
    w("etc/default/locale", "LANG=en_US.UTF-8\n")?;
    let rootfs_s = rootfs.to_string_lossy().into_owned();
    sys::run("chroot", &[rootfs_s.as_str(), "locale-gen"]).await?;
    // Downloaded packages go; the package lists of every source and apt's cache of them
    // stay, as of the build: a droplet's `apt-get update` then finds them current and skips
    // fetching, unpacking and parsing them again (apt's share of the suite's CPU was about a
    // seventh). Best effort: without them a droplet's apt does all that, as before.
    if !sys::run_quiet("chroot", &[rootfs_s.as_str(), "apt-get", "-q", "update"]).await {
        tracing::warn!("apt-get update in the image failed; droplets will fetch their lists");
    }
    let archives = rootfs.join("var/cache/apt/archives");
    if let Ok(entries) = std::fs::read_dir(&archives) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".deb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}
