//! `backend = "volume"`: a DigitalOcean volume in the droplet's region, attached and mounted
//! at `/mnt/<name>`, grown in place (API resize, then the file system over SSH), measured over SSH.
//!
//! Emptiness at destroy: the droplet may already be gone, and a detached volume cannot be
//! looked into. Recommended order for the resource's delete: while the droplet still runs,
//! call [`volume_usage`] over SSH and pass [`VolumeContents::from_usage`] to
//! [`destroy_volume`]; if SSH fails or the droplet is gone, pass
//! [`VolumeContents::from_last_read`] with the state's `storage_used_bytes` (a volume last seen
//! holding files counts as holding data; never seen counts as unknown, which also blocks a
//! destroy without `force_destroy`). Only a volume known to be empty is deleted unforced.

use std::time::{Duration, Instant};

use super::{Error, VOLUME_MAX_GIB, VOLUME_MIN_GIB};
use crate::do_api::{self, Volume, VolumeAction, VolumeCreateRequest};
use crate::remote::{shell_quote, status_text, Transport};

/// Where DigitalOcean's images (and localocean) mount a volume on attach.
pub fn mount_path(volume_name: &str) -> String {
    format!("/mnt/{volume_name}")
}

/// What is wrong with a volume name under DigitalOcean's rules: lowercase letters, digits
/// and `-`, starting with a letter, at most 64 characters.
pub fn volume_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 64 {
        return Some(format!(
            "volume name {name:?} has {} characters; use 1 to 64",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some(format!(
            "volume name {name:?} must start with a lowercase letter"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "volume name {name:?} holds {c:?}; use only lowercase letters, digits and `-`"
        ));
    }
    None
}

/// Plan-time check of a size change: `Err` says why it cannot be applied in place.
pub fn check_resize(current_gib: u64, desired_gib: u64) -> Result<(), String> {
    if !(VOLUME_MIN_GIB..=VOLUME_MAX_GIB).contains(&desired_gib) {
        return Err(format!(
            "{desired_gib} GiB is outside DigitalOcean's volume sizes, {VOLUME_MIN_GIB} to {VOLUME_MAX_GIB} GiB"
        ));
    }
    if desired_gib < current_gib {
        return Err(format!(
            "a volume can only grow: {current_gib} GiB → {desired_gib} GiB would shrink it (DigitalOcean cannot shrink volumes); keep {current_gib} or more"
        ));
    }
    Ok(())
}

/// Finds the volume `name` in `region`, or creates it (ext4, so the droplet mounts it on
/// attach). Idempotent: a second call returns the same volume. The size of a found volume is
/// left alone; growing is [`grow`]'s job.
pub async fn ensure_volume(
    client: &do_api::Client,
    name: &str,
    region: &str,
    size_gib: u64,
    tags: &[String],
) -> Result<Volume, Error> {
    if let Some(found) = client.list_volumes(name, region).await?.into_iter().next() {
        return Ok(found);
    }
    let req = VolumeCreateRequest {
        name: name.to_owned(),
        size_gigabytes: size_gib,
        region: region.to_owned(),
        description: Some("Docker registry storage (terraform-provider-docker)".into()),
        filesystem_type: Some("ext4".into()),
        tags: tags.to_vec(),
        ..Default::default()
    };
    let v = client.create_volume(&req).await?;
    tracing::info!(volume = %v.id, name, region, size_gib, "volume created");
    Ok(v)
}

async fn get_existing(client: &do_api::Client, volume_id: &str) -> Result<Volume, Error> {
    client
        .get_volume(volume_id)
        .await?
        .ok_or_else(|| Error::VolumeGone {
            id: volume_id.to_owned(),
        })
}

/// How long to keep retrying an action DigitalOcean refuses because the droplet or volume
/// is busy with another event ("pending event"), within the caller's timeout.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// Starts a volume action and waits for it, retrying while the API says something else is
/// pending (a droplet just created, a previous attach still settling).
async fn run_action(
    client: &do_api::Client,
    volume_id: &str,
    action: &VolumeAction,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        match client.volume_action(volume_id, action).await {
            Ok(a) => {
                let left = deadline.saturating_duration_since(Instant::now());
                client
                    .wait_for_volume_action(volume_id, a.id, left.max(Duration::from_secs(1)))
                    .await?;
                return Ok(());
            }
            Err(e)
                if e.status() == Some(422)
                    && e.to_string().to_ascii_lowercase().contains("pending")
                    && Instant::now() + BUSY_RETRY < deadline =>
            {
                tracing::debug!(volume = volume_id, error = %e, "volume busy; retrying the action");
                tokio::time::sleep(BUSY_RETRY).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Attaches the volume to `droplet_id` and waits until done. Already attached there is
/// success; attached to another droplet is [`Error::VolumeAttachedElsewhere`] (see
/// [`move_to`] for a droplet replacement).
pub async fn attach(
    client: &do_api::Client,
    volume_id: &str,
    droplet_id: u64,
    region: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let v = get_existing(client, volume_id).await?;
    if v.droplet_ids.contains(&droplet_id) {
        return Ok(());
    }
    if let Some(other) = v.droplet_ids.first() {
        return Err(Error::VolumeAttachedElsewhere {
            name: v.name,
            id: v.id,
            attached_to: *other,
            wanted: droplet_id,
        });
    }
    let action = VolumeAction::Attach {
        droplet_id,
        region: Some(region.to_owned()),
    };
    run_action(client, volume_id, &action, timeout).await?;
    tracing::info!(volume = volume_id, droplet_id, "volume attached");
    Ok(())
}

/// Detaches the volume from `droplet_id`. Not attached there, or the volume gone, is success.
pub async fn detach(
    client: &do_api::Client,
    volume_id: &str,
    droplet_id: u64,
    region: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let Some(v) = client.get_volume(volume_id).await? else {
        return Ok(());
    };
    if !v.droplet_ids.contains(&droplet_id) {
        return Ok(());
    }
    let action = VolumeAction::Detach {
        droplet_id,
        region: Some(region.to_owned()),
    };
    run_action(client, volume_id, &action, timeout).await?;
    tracing::info!(volume = volume_id, droplet_id, "volume detached");
    Ok(())
}

/// For a droplet replacement: detaches the volume from whatever droplet holds it, then
/// attaches it to `droplet_id`. The caller stops the registry on the old droplet first.
pub async fn move_to(
    client: &do_api::Client,
    volume_id: &str,
    droplet_id: u64,
    region: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let v = get_existing(client, volume_id).await?;
    for other in v.droplet_ids.iter().filter(|d| **d != droplet_id) {
        detach(client, volume_id, *other, region, timeout).await?;
    }
    attach(client, volume_id, droplet_id, region, timeout).await
}

/// Resizes the volume to `new_size_gib` through the API and waits. Equal size is a no-op;
/// smaller is [`Error::VolumeShrink`] (plan time should have caught it with [`check_resize`]).
/// The file system must then be grown with [`grow_filesystem`].
pub async fn grow(
    client: &do_api::Client,
    volume_id: &str,
    new_size_gib: u64,
    region: &str,
    timeout: Duration,
) -> Result<Volume, Error> {
    let v = get_existing(client, volume_id).await?;
    if new_size_gib == v.size_gigabytes {
        return Ok(v);
    }
    if new_size_gib < v.size_gigabytes {
        return Err(Error::VolumeShrink {
            name: v.name,
            id: v.id,
            current: v.size_gigabytes,
            desired: new_size_gib,
        });
    }
    let action = VolumeAction::Resize {
        size_gigabytes: new_size_gib,
        region: Some(region.to_owned()),
    };
    run_action(client, volume_id, &action, timeout).await?;
    tracing::info!(
        volume = volume_id,
        size_gib = new_size_gib,
        "volume resized"
    );
    get_existing(client, volume_id).await
}

/// Grows the file system mounted at `mount_path` to fill its (resized) device, and returns
/// its size in bytes as `df` reports it. `resize2fs` is a no-op on a file system already
/// at full size, so this is safe to repeat. Where the block device is not visible (localocean's
/// containers, which grow the file system on the host) the size is only reported.
pub async fn grow_filesystem(transport: &dyn Transport, mount_path: &str) -> Result<u64, Error> {
    let m = shell_quote(mount_path);
    let cmd = format!(
        "set -e; m={m}; \
         if ! mountpoint -q \"$m\"; then echo not-mounted; exit 0; fi; \
         dev=$(findmnt -n -o SOURCE --target \"$m\"); fs=$(findmnt -n -o FSTYPE --target \"$m\"); \
         case \"$fs\" in \
           ext2|ext3|ext4) if [ -b \"$dev\" ]; then resize2fs \"$dev\" >&2; fi ;; \
           xfs) xfs_growfs \"$m\" >&2 ;; \
           *) echo \"cannot grow a $fs file system\" >&2; exit 4 ;; \
         esac; \
         echo \"size $(df -B1 --output=size \"$m\" | tail -n 1 | tr -d ' ')\""
    );
    let host = transport.describe();
    let out = transport.exec(&cmd, b"").await?;
    let fail = |detail: String| Error::GrowFilesystem {
        mount_path: mount_path.to_owned(),
        host: host.clone(),
        detail,
    };
    if !out.success() {
        return Err(fail(format!(
            "exit status {}: {}",
            status_text(out.status),
            out.stderr_tail()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    if text == "not-mounted" {
        return Err(Error::NotMounted {
            mount_path: mount_path.to_owned(),
            host,
        });
    }
    text.strip_prefix("size ")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| fail(format!("unexpected output {text:?}")))
}

/// What the volume's file system holds, measured in one SSH round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeUsage {
    /// `du -sb` of the mount point: `storage_used_bytes`.
    pub bytes: u64,
    /// Regular files, not counting ext4's `lost+found`: zero means no image was ever stored.
    pub files: u64,
}

/// Measures the volume mounted at `mount_path`. A path with no file system mounted on it is
/// [`Error::NotMounted`], never "empty": it would be the droplet's own disk.
pub async fn volume_usage(
    transport: &dyn Transport,
    mount_path: &str,
) -> Result<VolumeUsage, Error> {
    let m = shell_quote(mount_path);
    let cmd = format!(
        "set -e; m={m}; \
         if ! mountpoint -q \"$m\"; then echo not-mounted; exit 0; fi; \
         b=$(du -sbx \"$m\" | cut -f1); \
         f=$(find \"$m\" -xdev -path \"$m/lost+found\" -prune -o -type f -print | wc -l); \
         echo \"$b $f\""
    );
    let host = transport.describe();
    let out = transport.exec(&cmd, b"").await?;
    let what = format!("measuring {mount_path} on {host}");
    if !out.success() {
        return Err(crate::remote::RemoteError::Command {
            what,
            status: status_text(out.status),
            stderr: out.stderr_tail(),
        }
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    if text == "not-mounted" {
        return Err(Error::NotMounted {
            mount_path: mount_path.to_owned(),
            host,
        });
    }
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(bytes)), Some(Ok(files)), None) => Ok(VolumeUsage { bytes, files }),
        _ => Err(crate::remote::RemoteError::Protocol {
            what,
            detail: format!("expected \"<bytes> <files>\", got {text:?}"),
        }
        .into()),
    }
}

/// `du -sb` of the volume: `storage_used_bytes` on read.
pub async fn volume_used_bytes(transport: &dyn Transport, mount_path: &str) -> Result<u64, Error> {
    Ok(volume_usage(transport, mount_path).await?.bytes)
}

/// What destroy knows about a volume's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeContents {
    Empty,
    HoldsData {
        detail: String,
    },
    /// Could not be measured (droplet gone, SSH down, never read): treated as holding data
    /// unless `force_destroy`.
    Unknown {
        reason: String,
    },
}

impl VolumeContents {
    /// From a fresh measurement.
    pub fn from_usage(u: &VolumeUsage) -> VolumeContents {
        if u.files == 0 {
            VolumeContents::Empty
        } else {
            VolumeContents::HoldsData {
                detail: format!("{} files ({} bytes)", u.files, u.bytes),
            }
        }
    }

    /// From the last `storage_used_bytes` in state when the volume cannot be measured now.
    /// An empty ext4 volume still shows its directories (`du` of a fresh one is about 20 KiB),
    /// so only a small value passes as empty; `None` (never read) is unknown.
    pub fn from_last_read(used_bytes: Option<u64>, why_not_now: &str) -> VolumeContents {
        match used_bytes {
            Some(b) if b <= EMPTY_VOLUME_MAX_BYTES => VolumeContents::Empty,
            Some(b) => VolumeContents::HoldsData {
                detail: format!("{b} bytes when last read ({why_not_now})"),
            },
            None => VolumeContents::Unknown {
                reason: why_not_now.to_owned(),
            },
        }
    }
}

/// `du -sb` of an ext4 volume with nothing but `lost+found` and the registry's empty
/// directory tree is well under this.
pub const EMPTY_VOLUME_MAX_BYTES: u64 = 64 * 1024;

/// What [`destroy_volume`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeDestroyed {
    Deleted,
    AlreadyGone,
}

/// Destroy for `backend = "volume"`: unless `force`, a volume not known to be empty is kept
/// and [`Error::HoldsData`] says how to proceed. Otherwise it is detached from every droplet
/// and deleted. A volume already gone is success.
pub async fn destroy_volume(
    client: &do_api::Client,
    volume_id: &str,
    contents: &VolumeContents,
    force: bool,
    timeout: Duration,
) -> Result<VolumeDestroyed, Error> {
    let Some(v) = client.get_volume(volume_id).await? else {
        return Ok(VolumeDestroyed::AlreadyGone);
    };
    if !force {
        let detail = match contents {
            VolumeContents::Empty => None,
            VolumeContents::HoldsData { detail } => Some(detail.clone()),
            VolumeContents::Unknown { reason } => Some(format!(
                "data that could not be measured ({reason}), so it is presumed to hold images"
            )),
        };
        if let Some(detail) = detail {
            return Err(Error::HoldsData {
                kind: "volume",
                name: v.name,
                id: v.id,
                detail,
            });
        }
    }
    let region = v
        .region
        .as_ref()
        .map(|r| r.slug.clone())
        .unwrap_or_default();
    for droplet_id in &v.droplet_ids {
        detach(client, volume_id, *droplet_id, &region, timeout).await?;
    }
    client.delete_volume(volume_id).await?;
    tracing::info!(volume = volume_id, name = %v.name, "volume deleted");
    Ok(VolumeDestroyed::Deleted)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::do_api::{DropletCreateRequest, ImageRef};
    use crate::storage::testkit::{Api, NoSpaces, ShellTransport};

    const T: Duration = Duration::from_secs(20);

    async fn droplet(api: &Api, name: &str) -> u64 {
        let req = DropletCreateRequest {
            name: name.into(),
            region: "nyc3".into(),
            size: "s-1vcpu-1gb".into(),
            image: ImageRef::Slug("debian-12-x64".into()),
            ssh_keys: vec![],
            user_data: None,
            tags: vec![],
            volumes: vec![],
            ipv6: false,
            monitoring: false,
            vpc_uuid: None,
        };
        let d = api
            .client
            .create_droplet(&req, &format!("tf-acc-test-{name}"))
            .await
            .unwrap();
        api.client.wait_for_droplet_active(d.id, T).await.unwrap();
        d.id
    }

    #[test]
    fn resize_grows_only_within_limits() {
        assert!(check_resize(50, 50).is_ok());
        assert!(check_resize(50, 51).is_ok());
        let e = check_resize(50, 40).unwrap_err();
        assert!(
            e.contains("50 GiB → 40 GiB") && e.contains("only grow"),
            "{e}"
        );
        assert!(check_resize(50, 16385).unwrap_err().contains("16384"));
        assert!(check_resize(1, 0).is_err());
        assert_eq!(mount_path("reg-data"), "/mnt/reg-data");
        assert_eq!(volume_name_problem("registry-example-com-data"), None);
        for bad in ["", "1reg", "Reg", "reg.data", "reg_data", &"r".repeat(65)] {
            assert!(volume_name_problem(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn volume_lifecycle_on_localocean_api() {
        let api = Api::start(Arc::new(NoSpaces)).await;
        let c = &api.client;
        let d1 = droplet(&api, "reg-1").await;
        let d2 = droplet(&api, "reg-2").await;

        // Idempotent create: found by name and region the second time.
        let tags = vec!["registry".to_string()];
        let v = ensure_volume(c, "reg-data", "nyc3", 10, &tags)
            .await
            .unwrap();
        let again = ensure_volume(c, "reg-data", "nyc3", 10, &tags)
            .await
            .unwrap();
        assert_eq!(v.id, again.id);
        assert_eq!(api.hv.count("create_volume"), 1);
        assert_eq!(v.filesystem_type.as_deref(), Some("ext4"));
        assert_eq!(c.list_volumes("reg-data", "nyc3").await.unwrap().len(), 1);

        // Attach waits for the action; attaching again changes nothing.
        attach(c, &v.id, d1, "nyc3", T).await.unwrap();
        let got = c.get_volume(&v.id).await.unwrap().unwrap();
        assert_eq!(got.droplet_ids, vec![d1]);
        attach(c, &v.id, d1, "nyc3", T).await.unwrap();
        assert_eq!(api.hv.count("attach_volume"), 1);

        // Another droplet: refused by attach, done by move_to (detach, then attach).
        let e = attach(c, &v.id, d2, "nyc3", T).await.unwrap_err();
        assert!(
            matches!(e, Error::VolumeAttachedElsewhere { attached_to, .. } if attached_to == d1),
            "{e}"
        );
        move_to(c, &v.id, d2, "nyc3", T).await.unwrap();
        let got = c.get_volume(&v.id).await.unwrap().unwrap();
        assert_eq!(got.droplet_ids, vec![d2]);
        assert_eq!(api.hv.count(&format!("detach_volume {d1}")), 1);

        // Grow waits and returns the new size; same size is a no-op; smaller is refused.
        let grown = grow(c, &v.id, 20, "nyc3", T).await.unwrap();
        assert_eq!(grown.size_gigabytes, 20);
        grow(c, &v.id, 20, "nyc3", T).await.unwrap();
        assert_eq!(api.hv.count("resize_volume"), 1);
        let e = grow(c, &v.id, 15, "nyc3", T).await.unwrap_err();
        assert!(matches!(
            e,
            Error::VolumeShrink {
                current: 20,
                desired: 15,
                ..
            }
        ));
        assert!(e.to_string().contains("reg-data") && e.to_string().contains(&v.id));

        // Destroy guard: data, or not knowing, keeps the volume unless forced.
        let holds = VolumeContents::HoldsData {
            detail: "3 files (4096 bytes)".into(),
        };
        let e = destroy_volume(c, &v.id, &holds, false, T)
            .await
            .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("volume reg-data") && m.contains(&v.id), "{m}");
        assert!(
            m.contains("3 files") && m.contains("force_destroy = true"),
            "{m}"
        );
        let unknown = VolumeContents::from_last_read(None, "droplet gone");
        assert!(destroy_volume(c, &v.id, &unknown, false, T).await.is_err());
        assert!(c.get_volume(&v.id).await.unwrap().is_some());

        // Forced: detached from its droplet, deleted; a second destroy finds it gone.
        let done = destroy_volume(c, &v.id, &holds, true, T).await.unwrap();
        assert_eq!(done, VolumeDestroyed::Deleted);
        assert!(c.get_volume(&v.id).await.unwrap().is_none());
        assert_eq!(api.hv.count(&format!("detach_volume {d2}")), 1);
        let gone = destroy_volume(c, &v.id, &VolumeContents::Empty, false, T)
            .await
            .unwrap();
        assert_eq!(gone, VolumeDestroyed::AlreadyGone);
        // Detaching a deleted volume is success too; attaching it says it is gone.
        detach(c, &v.id, d2, "nyc3", T).await.unwrap();
        assert!(matches!(
            attach(c, &v.id, d2, "nyc3", T).await.unwrap_err(),
            Error::VolumeGone { .. }
        ));

        // An empty volume is deleted without force.
        let empty = ensure_volume(c, "reg-empty", "nyc3", 1, &[]).await.unwrap();
        attach(c, &empty.id, d1, "nyc3", T).await.unwrap();
        let contents = VolumeContents::from_usage(&VolumeUsage {
            bytes: 16384,
            files: 0,
        });
        assert_eq!(contents, VolumeContents::Empty);
        destroy_volume(c, &empty.id, &contents, false, T)
            .await
            .unwrap();
        assert!(c.get_volume(&empty.id).await.unwrap().is_none());
        api.stop();
    }

    #[test]
    fn last_read_usage_decides_conservatively() {
        assert_eq!(
            VolumeContents::from_last_read(Some(20_480), "ssh down"),
            VolumeContents::Empty
        );
        assert!(matches!(
            VolumeContents::from_last_read(Some(10_000_000), "ssh down"),
            VolumeContents::HoldsData { detail } if detail.contains("10000000 bytes") && detail.contains("ssh down")
        ));
        assert!(matches!(
            VolumeContents::from_last_read(None, "never read"),
            VolumeContents::Unknown { .. }
        ));
    }

    #[tokio::test]
    async fn usage_over_the_transport_refuses_an_unmounted_path() {
        let dir = tempfile::tempdir().unwrap();
        let t = ShellTransport::new(dir.path());
        let mnt = dir.path().join("mnt/reg-data");
        std::fs::create_dir_all(mnt.join("lost+found")).unwrap();
        std::fs::write(mnt.join("lost+found/#123"), b"fsck leftovers").unwrap();
        let m = mnt.to_str().unwrap();

        // Not a mount point: the droplet's own disk, never reported as an empty volume.
        t.shim("mountpoint", "exit 1");
        let e = volume_usage(&t, m).await.unwrap_err();
        assert!(matches!(e, Error::NotMounted { .. }), "{e}");
        assert!(grow_filesystem(&t, m).await.is_err());

        t.shim("mountpoint", "exit 0");
        let u = volume_usage(&t, m).await.unwrap();
        assert_eq!(u.files, 0, "lost+found does not count");
        assert!(u.bytes > 0);
        assert_eq!(VolumeContents::from_usage(&u), VolumeContents::Empty);

        let blob = mnt.join("docker/registry/v2/blobs/sha256/ab/data");
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, vec![7u8; 5000]).unwrap();
        let u = volume_usage(&t, m).await.unwrap();
        assert_eq!(u.files, 1);
        assert!(u.bytes >= 5000);
        assert_eq!(volume_used_bytes(&t, m).await.unwrap(), u.bytes);
        assert!(matches!(
            VolumeContents::from_usage(&u),
            VolumeContents::HoldsData { .. }
        ));
    }

    #[tokio::test]
    async fn grow_filesystem_runs_resize2fs_on_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let t = ShellTransport::new(dir.path());
        let log = dir.path().join("calls");
        let m = dir.path().to_str().unwrap().to_owned();
        t.shim("mountpoint", "exit 0");
        // /dev/null is no block device: resize2fs is skipped, as inside localocean's machines.
        let fs_file = dir.path().join("fstype");
        t.shim(
            "findmnt",
            &format!(
                "case \"$*\" in *SOURCE*) echo /dev/null ;; *FSTYPE*) cat {} ;; esac",
                fs_file.display()
            ),
        );
        t.shim(
            "resize2fs",
            &format!("echo \"resize2fs $*\" >> {}", log.display()),
        );
        std::fs::write(&fs_file, "ext4\n").unwrap();
        let size = grow_filesystem(&t, &m).await.unwrap();
        assert!(size > 0);
        assert!(
            !log.exists(),
            "resize2fs must not run on a non-block device"
        );

        std::fs::write(&fs_file, "vfat\n").unwrap();
        let e = grow_filesystem(&t, &m).await.unwrap_err().to_string();
        assert!(
            e.contains("cannot grow a vfat file system") && e.contains(&m),
            "{e}"
        );
    }
}
