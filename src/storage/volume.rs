//! `backend = "volume"`: a DigitalOcean volume in the droplet's region, attached, and mounted
//! by the converge at `/mnt/<name>` from its device; grown in place (API resize, then the file
//! system online over SSH); measured over SSH.
//!
//! On DigitalOcean a volume is a block device, `/dev/disk/by-id/scsi-0DO_Volume_<name>`
//! ([`device_path`]). DigitalOcean mounts it by itself only when it is formatted and attached
//! at droplet creation, at a path of its own choosing, and never after it moved to another
//! droplet: the converge mounts it itself (see `remote::converge`), and everything here that
//! looks into the volume first checks that the path really is on that device.
//!
//! Emptiness at destroy: only a fresh measurement counts. A volume that cannot be measured now
//! (droplet gone, SSH down, not mounted, another device at the path) is
//! [`VolumeContents::Unknown`], which blocks a destroy without `force_destroy` like data does;
//! a size read earlier never passes as "empty", since images may have been pushed since.

use std::time::{Duration, Instant};

use super::{Error, VOLUME_MAX_GIB, VOLUME_MIN_GIB};
use crate::do_api::{self, Volume, VolumeAction, VolumeCreateRequest};
use crate::remote::{shell_quote, status_text, Transport};

/// Where the converge mounts the registry's volume, and the registry's data directory. Not
/// DigitalOcean's automount path (`/mnt/<name>` with `-` turned into `_`): that one exists only
/// on a droplet created with the volume, and the registry must find its data on every droplet.
pub fn mount_path(volume_name: &str) -> String {
    format!("/mnt/{volume_name}")
}

/// The volume's device on a droplet it is attached to, as DigitalOcean names it.
pub fn device_path(volume_name: &str) -> String {
    format!("/dev/disk/by-id/scsi-0DO_Volume_{volume_name}")
}

/// The volume name behind a [`mount_path`].
pub fn name_of_mount(mount_path: &str) -> Option<&str> {
    mount_path
        .strip_prefix("/mnt/")
        .filter(|n| !n.contains('/'))
}

/// A shell function, `on_device PATH DEVICE`: prints `ok`, `not-mounted`, `no-device` or
/// `other <major:minor>`, telling whether PATH is a mount point of DEVICE's file system
/// (compared by device number: the by-id name is a link, and a mount may name the device
/// another way).
pub const ON_DEVICE_FN: &str = r#"on_device() {
  if ! mountpoint -q "$1"; then echo not-mounted; return 0; fi
  if [ ! -e "$2" ]; then echo no-device; return 0; fi
  local x want have
  x=$(stat -L -c %t:%T "$2")
  want=$(printf '%d:%d' "0x${x%%:*}" "0x${x##*:}")
  have=$(mountpoint -d "$1")
  if [ "$want" = "$have" ]; then echo ok; else echo "other $have"; fi
}
"#;

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
pub fn check_resize(current_gib: u64, desired_gib: u64) -> Result<(), Error> {
    if !(VOLUME_MIN_GIB..=VOLUME_MAX_GIB).contains(&desired_gib) {
        return Err(Error::VolumeSize { gib: desired_gib });
    }
    if desired_gib < current_gib {
        return Err(Error::ResizeShrinks {
            current: current_gib,
            desired: desired_gib,
        });
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
    snapshot_id: Option<&str>,
) -> Result<Volume, Error> {
    if let Some(found) = client.list_volumes(name, region).await?.into_iter().next() {
        return Ok(found);
    }
    let req = VolumeCreateRequest {
        name: name.to_owned(),
        size_gigabytes: size_gib,
        region: region.to_owned(),
        description: Some("Docker registry storage (terraform-provider-docker)".into()),
        // A volume from a snapshot has the snapshot's file system.
        filesystem_type: snapshot_id.is_none().then(|| "ext4".into()),
        tags: tags.to_vec(),
        snapshot_id: snapshot_id.map(str::to_owned),
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

/// Grows the file system of volume `volume_name` (mounted at [`mount_path`]) to fill its
/// resized device, online, and returns its size in bytes as `df` reports it. `resize2fs` is a
/// no-op on a file system already at full size, so this is safe to repeat.
pub async fn grow_filesystem(transport: &dyn Transport, volume_name: &str) -> Result<u64, Error> {
    let mount = mount_path(volume_name);
    let m = shell_quote(&transport.rooted(&mount));
    let d = shell_quote(&transport.rooted(&device_path(volume_name)));
    let cmd = format!(
        "set -e; {ON_DEVICE_FN}m={m}; d={d}; \
         where=$(on_device \"$m\" \"$d\"); \
         if [ \"$where\" != ok ]; then echo \"$where\"; exit 0; fi; \
         fs=$(findmnt -n -o FSTYPE --mountpoint \"$m\"); \
         case \"$fs\" in \
           ext2|ext3|ext4) resize2fs \"$d\" >&2 ;; \
           xfs) xfs_growfs \"$m\" >&2 ;; \
           *) echo \"cannot grow a $fs file system\" >&2; exit 4 ;; \
         esac; \
         echo \"size $(df -B1 --output=size \"$m\" | tail -n 1 | tr -d ' ')\""
    );
    let host = transport.describe();
    let out = transport.exec(&cmd, b"").await?;
    let fail = |detail: String| Error::GrowFilesystem {
        mount_path: mount.clone(),
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
    if text == "not-mounted" || text == "no-device" || text.starts_with("other ") {
        return Err(Error::NotOnVolume {
            name: volume_name.to_owned(),
            mount_path: mount.clone(),
            host,
            why: text.to_owned(),
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

/// Measures the volume `volume_name` where the registry keeps it ([`mount_path`]). A path
/// with no file system mounted on it, or another device's, is an error, never "empty": it
/// would be the droplet's own disk.
pub async fn volume_usage(
    transport: &dyn Transport,
    volume_name: &str,
) -> Result<VolumeUsage, Error> {
    let mount = mount_path(volume_name);
    let m = shell_quote(&transport.rooted(&mount));
    let d = shell_quote(&transport.rooted(&device_path(volume_name)));
    let cmd = format!(
        "set -e; {ON_DEVICE_FN}m={m}; d={d}; \
         where=$(on_device \"$m\" \"$d\"); \
         if [ \"$where\" != ok ]; then echo \"$where\"; exit 0; fi; \
         b=$(du -sbx \"$m\" | cut -f1); \
         f=$(find \"$m\" -xdev -path \"$m/lost+found\" -prune -o -type f -print | wc -l); \
         echo \"$b $f\""
    );
    let host = transport.describe();
    let out = transport.exec(&cmd, b"").await?;
    let what = format!("measuring {mount} on {host}");
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
    let not_on_volume = |why: String| Error::NotOnVolume {
        name: volume_name.to_owned(),
        mount_path: mount.clone(),
        host: host.clone(),
        why,
    };
    match text {
        "not-mounted" => return Err(not_on_volume("nothing is mounted there".into())),
        "no-device" => {
            return Err(not_on_volume(format!(
                "{} does not exist: the volume is not attached to this droplet",
                device_path(volume_name)
            )))
        }
        t if t.starts_with("other ") => {
            return Err(not_on_volume(format!(
                "the path is on device {}, not on {}",
                &t[6..],
                device_path(volume_name)
            )))
        }
        _ => {}
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
pub async fn volume_used_bytes(transport: &dyn Transport, volume_name: &str) -> Result<u64, Error> {
    Ok(volume_usage(transport, volume_name).await?.bytes)
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

    /// The volume cannot be measured now (`why_not_now`). What was read earlier
    /// (`last_read_bytes`) is told, but decides nothing: images may have been pushed since.
    pub fn unmeasured(
        last_read_bytes: Option<u64>,
        why_not_now: impl std::fmt::Display,
    ) -> VolumeContents {
        let reason = match last_read_bytes {
            Some(b) => format!("{why_not_now}; {b} bytes when last read"),
            None => why_not_now.to_string(),
        };
        VolumeContents::Unknown { reason }
    }

    /// What keeps an unforced destroy from deleting the volume, if anything: its data, or
    /// not knowing.
    pub fn holds(&self) -> Option<String> {
        match self {
            VolumeContents::Empty => None,
            VolumeContents::HoldsData { detail } => Some(detail.clone()),
            VolumeContents::Unknown { reason } => Some(format!(
                "data that could not be measured ({reason}): presumed to hold images"
            )),
        }
    }
}

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
        if let Some(detail) = contents.holds() {
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

    use localocean::testkit::NoSpaces;

    use super::*;
    use crate::do_api::{DropletCreateRequest, ImageRef};
    use crate::testkit::api::Api;
    use crate::testkit::LocalTransport;

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
            backups: false,
            backup_policy: None,
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
        let e = check_resize(50, 40).unwrap_err().to_string();
        assert!(
            e.contains("50 GiB → 40 GiB") && e.contains("only grow"),
            "{e}"
        );
        assert!(check_resize(50, 16385)
            .unwrap_err()
            .to_string()
            .contains("16384"));
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
        let v = ensure_volume(c, "reg-data", "nyc3", 10, &tags, None)
            .await
            .unwrap();
        let again = ensure_volume(c, "reg-data", "nyc3", 10, &tags, None)
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
        let unknown = VolumeContents::unmeasured(None, "droplet gone");
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
        let empty = ensure_volume(c, "reg-empty", "nyc3", 1, &[], None)
            .await
            .unwrap();
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
    fn what_cannot_be_measured_now_is_unknown_whatever_was_read_before() {
        // About what `du` says of a fresh, empty ext4 volume: once taken for "empty".
        for last in [None, Some(20_480), Some(0), Some(10_000_000)] {
            let c = VolumeContents::unmeasured(last, "ssh down");
            assert!(
                matches!(&c, VolumeContents::Unknown { reason } if reason.contains("ssh down")),
                "{last:?}: {c:?}"
            );
            assert!(c.holds().unwrap().contains("presumed to hold images"));
        }
        assert!(matches!(
            VolumeContents::unmeasured(Some(20_480), "ssh down"),
            VolumeContents::Unknown { reason } if reason.contains("20480 bytes when last read")
        ));
    }

    const NAME: &str = "reg-registry-data";

    #[tokio::test]
    async fn usage_is_measured_only_on_the_volumes_own_device() {
        let t = LocalTransport::new();
        let m = mount_path(NAME);
        let mnt = t.path(&m);
        std::fs::create_dir_all(mnt.join("lost+found")).unwrap();
        std::fs::write(mnt.join("lost+found/#123"), b"fsck leftovers").unwrap();

        // Not a mount point: the droplet's own disk, never reported as an empty volume.
        let e = volume_usage(&t, NAME).await.unwrap_err();
        assert!(
            matches!(&e, Error::NotOnVolume { why, .. } if why.contains("nothing is mounted")),
            "{e}"
        );
        assert!(e.to_string().contains(NAME), "{e}");
        // Something is mounted, but the volume is not attached.
        t.set_mounted(true);
        let e = volume_usage(&t, NAME).await.unwrap_err();
        assert!(
            matches!(&e, Error::NotOnVolume { why, .. } if why.contains("not attached")),
            "{e}"
        );
        // Another device is mounted there.
        t.attach_volume(NAME);
        t.set_mount_device("8:32");
        let e = volume_usage(&t, NAME).await.unwrap_err();
        assert!(
            matches!(&e, Error::NotOnVolume { why, .. } if why.contains("8:32")),
            "{e}"
        );
        assert!(grow_filesystem(&t, NAME).await.is_err());

        t.set_mount_device("8:16");
        let u = volume_usage(&t, NAME).await.unwrap();
        assert_eq!(u.files, 0, "lost+found does not count");
        assert!(u.bytes > 0);
        assert_eq!(VolumeContents::from_usage(&u), VolumeContents::Empty);

        let blob = mnt.join("docker/registry/v2/blobs/sha256/ab/data");
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, vec![7u8; 5000]).unwrap();
        let u = volume_usage(&t, NAME).await.unwrap();
        assert_eq!(u.files, 1);
        assert!(u.bytes >= 5000);
        assert_eq!(volume_used_bytes(&t, NAME).await.unwrap(), u.bytes);
        assert!(matches!(
            VolumeContents::from_usage(&u),
            VolumeContents::HoldsData { .. }
        ));
    }

    #[tokio::test]
    async fn grow_filesystem_runs_resize2fs_on_the_volumes_device() {
        let t = LocalTransport::new();
        let m = mount_path(NAME);
        std::fs::create_dir_all(t.path(&m)).unwrap();
        t.attach_volume(NAME);
        t.set_mounted(true);
        t.set_volume_content(Some("ext4"));
        let size = grow_filesystem(&t, NAME).await.unwrap();
        assert!(size > 0);
        assert!(
            t.log()
                .contains(&format!("resize2fs {}", t.root_str() + &device_path(NAME))),
            "{}",
            t.log()
        );
        t.set_volume_content(Some("vfat"));
        let e = grow_filesystem(&t, NAME).await.unwrap_err().to_string();
        assert!(
            e.contains("cannot grow a vfat file system") && e.contains(&m),
            "{e}"
        );
    }

    #[test]
    fn paths_of_a_volume() {
        assert_eq!(mount_path(NAME), "/mnt/reg-registry-data");
        assert_eq!(
            device_path(NAME),
            "/dev/disk/by-id/scsi-0DO_Volume_reg-registry-data"
        );
        assert_eq!(name_of_mount(&mount_path(NAME)), Some(NAME));
        assert_eq!(name_of_mount("/var/lib/docker-registry"), None);
    }
}
