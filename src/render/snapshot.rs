//! A consistent volume snapshot from the droplet's side: the pause (writes refused by nginx
//! with 503 and Retry-After as during a garbage collection, uploads in flight let land, the
//! file system synced and frozen) and the resume, with a timer on the droplet that resumes by
//! itself if the provider never comes back.

use super::{check_plain, paths, RenderError};

/// While it exists nginx answers pushes and deletes 503 with Retry-After; pulls go on.
pub const RUNNING: &str = "/etc/nginx/registry/snapshot-running";
/// What a refused push is told to wait, in seconds: a snapshot holds writes for seconds.
pub const RETRY_AFTER_SECS: u32 = 10;
/// The registry's error shape; no single quote (an nginx string in single quotes).
pub const RUNNING_BODY: &str = r#"{"errors":[{"code":"UNAVAILABLE","message":"a volume snapshot is being taken: pushes and deletes are refused until it is done (see Retry-After); pulls still work","detail":null}]}"#;
/// Longest wait for uploads already under way to go quiet before the snapshot gives up.
pub const UPLOAD_WAIT_SECS: u32 = 120;
/// The transient systemd unit that resumes by itself.
pub const RESUME_UNIT: &str = "registry-snapshot-resume";

/// The pause. Prints one line, how the file system was quiesced: `fsfreeze`, or `sync` when
/// the kernel or the machine refuses a freeze (the reason follows on stderr). Fails, with
/// writes left refused for the resume to lift, when the volume is not mounted from its
/// device or uploads never go quiet.
pub fn pause_script(
    mount_path: &str,
    device_path: &str,
    watchdog_secs: u64,
) -> Result<String, RenderError> {
    check_plain("mount path", mount_path)?;
    check_plain("device path", device_path)?;
    Ok(format!(
        r#"set -euo pipefail
FLAG={flag}
MNT={mount}
DEV={device}
{on_device}
if ! grep -qF "$FLAG" {nginx_site}; then
  echo "this registry's nginx does not know snapshot pauses yet: apply its docker_registry with this provider version first" >&2
  exit 3
fi
# The safety net first: if the provider never comes back, writes resume and the file
# system thaws after {watchdog} s whatever happened.
systemctl stop {unit}.timer {unit}.service >/dev/null 2>&1 || true
systemctl reset-failed {unit}.service >/dev/null 2>&1 || true
systemd-run --quiet --unit={unit} --on-active={watchdog} /bin/sh -c "fsfreeze -u $MNT 2>/dev/null; rm -f $FLAG"
mkdir -p "$(dirname "$FLAG")"
echo 'volume snapshot by terraform-provider-docker' > "$FLAG"
where=$(on_device "$MNT" "$DEV")
if [ "$where" != ok ]; then
  echo "the volume $DEV is not mounted at $MNT ($where)" >&2
  exit 4
fi
# Requests nginx passed on before the flag land; uploads in flight get written out.
sleep 2
t0=$(date +%s)
repos="$MNT/docker/registry/v2/repositories"
while [ -d "$repos" ] && [ -n "$(find "$repos" -path '*/_uploads/*' -type f -mmin -0.1 -print -quit 2>/dev/null)" ]; do
  if [ $(( $(date +%s) - t0 )) -ge {upload_wait} ]; then
    echo "uploads were still running after {upload_wait} s: no snapshot taken, try again later" >&2
    exit 5
  fi
  sleep 1
done
sync -f "$MNT"
if err=$(fsfreeze -f "$MNT" 2>&1); then
  echo fsfreeze
else
  echo "fsfreeze refused ($err): synced only" >&2
  echo sync
fi
"#,
        flag = RUNNING,
        mount = mount_path,
        device = device_path,
        on_device = crate::storage::volume::ON_DEVICE_FN,
        nginx_site = paths::NGINX_SITE,
        watchdog = watchdog_secs,
        unit = RESUME_UNIT,
        upload_wait = UPLOAD_WAIT_SECS,
    ))
}

/// The resume: thaws (a file system not frozen is left as it is), lets writes through, and
/// stops the safety net. Safe to run any number of times.
pub fn resume_script(mount_path: &str) -> Result<String, RenderError> {
    check_plain("mount path", mount_path)?;
    Ok(format!(
        r#"set -u
fsfreeze -u {mount} 2>/dev/null || true
rm -f {flag}
systemctl stop {unit}.timer {unit}.service >/dev/null 2>&1 || true
test ! -e {flag}
"#,
        mount = mount_path,
        flag = RUNNING,
        unit = RESUME_UNIT,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_arms_its_safety_net_before_it_refuses_writes() {
        let s = pause_script("/mnt/r-registry-data", "/dev/disk/by-id/x", 600).unwrap();
        let net = s.find("systemd-run").unwrap();
        let flag = s.find("> \"$FLAG\"").unwrap();
        let freeze = s.find("fsfreeze -f").unwrap();
        assert!(net < flag && flag < freeze, "{s}");
        assert!(s.contains("--on-active=600"));
        assert!(!RUNNING_BODY.contains('\''));
        serde_json::from_str::<serde_json::Value>(RUNNING_BODY).unwrap();
    }

    #[test]
    fn paths_are_checked_against_injection() {
        assert!(pause_script("/mnt/x; rm -rf /", "/dev/x", 1).is_err());
        assert!(resume_script("/mnt/$(id)").is_err());
        let r = resume_script("/mnt/r-registry-data").unwrap();
        assert!(r.contains("fsfreeze -u /mnt/r-registry-data"));
    }
}
