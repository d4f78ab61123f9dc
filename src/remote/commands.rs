//! The droplet's small jobs outside the converge: what runs and how much it stores, stopping
//! and starting the registry around a volume move, and root's authorized_keys.

use super::{shell_quote, status_text, RemoteError, Transport};
use crate::render::paths;
use crate::storage::volume;

/// Root's SSH keys on the droplet.
pub const AUTHORIZED_KEYS: &str = "/root/.ssh/authorized_keys";

/// What [`probe`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// The registry's version without the `v` (`2.8.2+ds1`); empty when it does not run.
    pub registry_version: String,
    /// `du -sb` of the storage root; 0 when there is none (Spaces) or it cannot be read.
    pub storage_used_bytes: u64,
}

/// The registry's version and the bytes under `storage_root`, in one round trip.
pub async fn probe(
    transport: &dyn Transport,
    storage_root: Option<&str>,
) -> Result<Probe, RemoteError> {
    let root = storage_root
        .map(|r| transport.rooted(r))
        .unwrap_or_else(|| "/nonexistent".to_owned());
    let cmd = format!(
        "docker-registry --version 2>/dev/null | awk '{{print $NF}}'; du -sb {} 2>/dev/null | cut -f1",
        shell_quote(&root)
    );
    let out = transport.exec(&cmd, b"").await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    Ok(Probe {
        registry_version: lines
            .next()
            .unwrap_or("")
            .trim()
            .trim_start_matches('v')
            .to_owned(),
        storage_used_bytes: lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0),
    })
}

/// Stops the registry and flushes its writes: one file system, one writer, before a volume
/// moves to another droplet.
pub async fn stop_registry(transport: &dyn Transport) -> Result<(), RemoteError> {
    run(
        transport,
        "systemctl stop docker-registry; sync",
        "stopping docker-registry",
    )
    .await
}

/// Stops the registry and unmounts its volume, so that the volume can move to another
/// droplet: one writer at a time, and no file system detached while mounted. Also unmounts
/// the volume where DigitalOcean mounted it by itself (a droplet created with it).
pub async fn release_volume(
    transport: &dyn Transport,
    volume_name: &str,
) -> Result<(), RemoteError> {
    let ours = shell_quote(&transport.rooted(&volume::mount_path(volume_name)));
    let automount =
        shell_quote(&transport.rooted(&format!("/mnt/{}", volume_name.replace('-', "_"))));
    let cmd = format!(
        "set -e; systemctl stop docker-registry; sync; \
         for m in {ours} {automount}; do if mountpoint -q \"$m\"; then umount \"$m\"; fi; done"
    );
    run(
        transport,
        &cmd,
        "stopping docker-registry and unmounting its volume",
    )
    .await
}

/// Starts the registry again (after a volume came back).
pub async fn start_registry(transport: &dyn Transport) -> Result<(), RemoteError> {
    run(
        transport,
        "systemctl start docker-registry",
        "starting docker-registry",
    )
    .await
}

/// Holds writes as a collection on this droplet would (nginx answers pushes and deletes 503
/// with Retry-After; pulls go on), while another droplet of the same bucket collects.
pub async fn hold_writes_for_collection(transport: &dyn Transport) -> Result<(), RemoteError> {
    let flag = shell_quote(&transport.rooted(crate::render::gc::gc_paths::RUNNING));
    let cmd =
        format!("set -e; umask 022; mkdir -p \"$(dirname {flag})\"; touch {flag}; sync {flag}");
    run(transport, &cmd, "holding writes for a collection").await
}

/// After another droplet's collection: the registry restarted (it forgets the blob
/// descriptors it cached, some of which the collection deleted), then writes let through.
pub async fn restart_registry_and_release_writes(
    transport: &dyn Transport,
) -> Result<(), RemoteError> {
    let flag = shell_quote(&transport.rooted(crate::render::gc::gc_paths::RUNNING));
    let cmd = format!("set -e; systemctl restart docker-registry; rm -f {flag}");
    run(
        transport,
        &cmd,
        "restarting docker-registry after a collection",
    )
    .await
}

/// Lets writes through again without a restart (a collection that did not run).
pub async fn release_writes(transport: &dyn Transport) -> Result<(), RemoteError> {
    let flag = shell_quote(&transport.rooted(crate::render::gc::gc_paths::RUNNING));
    run(
        transport,
        &format!("rm -f {flag}"),
        "letting writes through again",
    )
    .await
}

/// Makes nginx refuse every write with 503 and the reason (see `render::nginx`), so that
/// what destroy measures next is all there will be. An upload already under way shows in
/// the measure (its `_uploads` entry exists from its first request on) and cannot finish: its
/// next request is refused. The converge removes the file again.
pub async fn stop_writes(transport: &dyn Transport) -> Result<(), RemoteError> {
    let flag = shell_quote(&transport.rooted(paths::WRITES_STOPPED));
    let cmd = format!(
        "set -e; umask 022; mkdir -p \"$(dirname {flag})\"; \
         echo 'writes stopped by terraform-provider-docker (destroy)' > {flag}; sync {flag}"
    );
    run(transport, &cmd, "stopping writes").await
}

/// Lets writes through again (a destroy that stopped, keeping the registry).
pub async fn resume_writes(transport: &dyn Transport) -> Result<(), RemoteError> {
    let flag = shell_quote(&transport.rooted(paths::WRITES_STOPPED));
    run(transport, &format!("rm -f {flag}"), "resuming writes").await
}

/// Replaces root's authorized_keys with `lines` (the management key first): DigitalOcean
/// only adds account keys at create, so later changes are written here.
pub async fn set_authorized_keys(
    transport: &dyn Transport,
    lines: &[String],
) -> Result<(), RemoteError> {
    let body = format!("{}\n", lines.join("\n"));
    transport
        .upload(AUTHORIZED_KEYS, body.as_bytes(), 0o600)
        .await
}

/// What the droplet's last garbage collection did: its status file (see `render::gc`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct GcStatus {
    /// `ok`, `failed` (nothing collected, or the collector stopped) or `broken` (collected, but
    /// a tag lost a blob: the message names the first).
    pub result: String,
    /// RFC 3339, UTC.
    pub finished_at: String,
    pub finished_unix: i64,
    /// Null with Spaces (the bucket is not measured) and when the run failed.
    pub freed_bytes: Option<i64>,
    pub blobs_deleted: Option<i64>,
    /// Tags checked after the run (their manifest and blobs stored), and those that were not.
    #[serde(default)]
    pub tags_checked: Option<i64>,
    #[serde(default)]
    pub tags_broken: Option<i64>,
    #[serde(default)]
    pub message: String,
}

impl GcStatus {
    /// None for anything but a whole status file (absent, half written by hand...).
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text.trim()).ok()
    }
}

/// Runs one garbage collection now (the unit the timer runs; joins one already running) and
/// returns its status. A run that failed is an error with the collector's reason; pushes are
/// accepted again either way (the collector removes its flag whatever happens).
pub async fn collect_garbage(transport: &dyn Transport) -> Result<GcStatus, RemoteError> {
    use crate::render::gc::gc_paths as gp;
    let what = format!("garbage collection on {}", transport.describe());
    let cmd = format!(
        "date +%s; systemctl start {} >/dev/null 2>&1 || true; echo @@STATUS; cat {} 2>/dev/null || true",
        gp::SERVICE_UNIT,
        shell_quote(&transport.rooted(gp::STATUS)),
    );
    let out = transport.exec(&cmd, b"").await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (before, status) = text.split_once("@@STATUS\n").unwrap_or((&text, ""));
    let before: i64 = before.trim().parse().unwrap_or(i64::MAX);
    let Some(st) = GcStatus::parse(status) else {
        return Err(RemoteError::Protocol {
            what,
            detail:
                "the collector wrote no status (journalctl -u registry-gc on the droplet says why)"
                    .into(),
        });
    };
    if st.finished_unix < before {
        return Err(RemoteError::Protocol {
            what,
            detail: format!(
                "the collector did not run: its last status is from {}",
                st.finished_at
            ),
        });
    }
    if st.result != "ok" {
        return Err(RemoteError::Command {
            what,
            status: st.result.clone(),
            stderr: st.message.clone(),
        });
    }
    Ok(st)
}

async fn run(transport: &dyn Transport, cmd: &str, what: &str) -> Result<(), RemoteError> {
    let out = transport.exec(cmd, b"").await?;
    if !out.success() {
        return Err(RemoteError::Command {
            what: format!("{what} on {}", transport.describe()),
            status: status_text(out.status),
            stderr: out.stderr_tail(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::LocalTransport;

    #[tokio::test]
    async fn probe_reads_version_and_usage() {
        let t = LocalTransport::new();
        let data = t.path("/var/lib/docker-registry/docker/blob");
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        std::fs::write(&data, vec![1u8; 3000]).unwrap();
        let p = probe(&t, Some("/var/lib/docker-registry")).await.unwrap();
        assert_eq!(p.registry_version, "2.8.2+ds1");
        assert!(p.storage_used_bytes >= 3000, "{p:?}");
        let p = probe(&t, None).await.unwrap();
        assert_eq!(p.storage_used_bytes, 0);
    }

    #[test]
    fn gc_status_parses_what_the_collector_writes() {
        let ok = r#"{"result":"ok","started_at":"2026-12-02T06:00:00Z","finished_at":"2026-12-02T06:00:09Z","finished_unix":1796191209,"seconds":9,"freed_bytes":5242880,"blobs_deleted":3,"delete_untagged":false,"message":""}"#;
        let st = GcStatus::parse(ok).unwrap();
        assert_eq!(st.freed_bytes, Some(5242880));
        assert_eq!(st.finished_at, "2026-12-02T06:00:09Z");
        let failed = r#"{"result":"failed","started_at":"x","finished_at":"y","finished_unix":1,"seconds":300,"freed_bytes":null,"blobs_deleted":null,"delete_untagged":true,"message":"uploads were still running"}"#;
        let st = GcStatus::parse(failed).unwrap();
        assert_eq!((st.result.as_str(), st.freed_bytes), ("failed", None));
        assert!(GcStatus::parse("{\"result\":").is_none());
        assert!(GcStatus::parse("").is_none());
    }

    #[tokio::test]
    async fn collecting_garbage_reports_the_run_or_why_not() {
        let t = LocalTransport::new();
        // The shim's systemctl runs nothing: an old status (or none) means the run did not happen.
        let err = collect_garbage(&t).await.unwrap_err().to_string();
        assert!(err.contains("wrote no status"), "{err}");
        let status = t.path(crate::render::gc::gc_paths::STATUS);
        std::fs::create_dir_all(status.parent().unwrap()).unwrap();
        std::fs::write(&status, r#"{"result":"ok","finished_at":"2020-01-01T00:00:00Z","finished_unix":1577836800,"freed_bytes":1,"blobs_deleted":1}"#).unwrap();
        let err = collect_garbage(&t).await.unwrap_err().to_string();
        assert!(err.contains("did not run"), "{err}");
        assert!(
            t.log().contains("systemctl start registry-gc.service"),
            "{}",
            t.log()
        );
    }

    #[tokio::test]
    async fn services_and_keys() {
        let t = LocalTransport::new();
        stop_registry(&t).await.unwrap();
        start_registry(&t).await.unwrap();
        let log = t.log();
        let stop = log.find("systemctl stop docker-registry").expect("stopped");
        let start = log
            .find("systemctl start docker-registry")
            .expect("started");
        assert!(stop < start, "{log}");
        set_authorized_keys(
            &t,
            &["ssh-ed25519 AAAA mgmt".into(), "ssh-rsa BBBB bob".into()],
        )
        .await
        .unwrap();
        let keys = std::fs::read_to_string(t.path(AUTHORIZED_KEYS)).unwrap();
        assert_eq!(keys, "ssh-ed25519 AAAA mgmt\nssh-rsa BBBB bob\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.path(AUTHORIZED_KEYS))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
