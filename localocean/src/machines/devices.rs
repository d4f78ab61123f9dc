//! A machine's view of its volumes: the disk nodes in its /dev, the by-id links DigitalOcean
//! names them by, and the mount units of DigitalOcean's automount.

use std::path::Path;

use super::sys::{self, io_err, SysError, SysResult};
use super::volume;
use super::AttachedVolume;

/// A volume that the machine's first boot mounts, as DigitalOcean's automount does.
#[derive(Clone, Debug)]
pub struct Automount {
    pub volume_name: String,
    /// `ext4` or `xfs`.
    pub fs_type: String,
}

/// The first disk name (`sda`, `sdb`...) none of the machine's volumes has.
pub fn free_device(attached: &[AttachedVolume]) -> String {
    (b'a'..=b'z')
        .map(|c| format!("sd{}", c as char))
        .find(|d| attached.iter().all(|v| &v.device != d))
        // The API allows 7 volumes per droplet.
        .expect("fewer than 26 volumes per machine")
}

/// Gives volumes recorded before disk names existed one each, in their order.
pub fn name_devices(volumes: &mut [AttachedVolume]) {
    for i in 0..volumes.len() {
        if volumes[i].device.is_empty() {
            volumes[i].device = free_device(volumes);
        }
    }
}

/// Empties `dir` (or makes it): the by-id links are rewritten at every boot.
pub fn reset_dir(dir: &Path) -> SysResult<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io_err("removing", dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))
}

/// `scsi-0DO_Volume_<name> -> ../../sdX` in the host directory bound at the machine's
/// `/dev/disk/by-id`, as udev links it on a droplet.
pub fn link_by_id(dir: &Path, v: &AttachedVolume) -> SysResult<()> {
    volume::check_name(&v.name)?;
    let link = dir.join(volume::by_id_name(&v.name));
    let tmp = dir.join(format!(".{}.tmp", volume::by_id_name(&v.name)));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("../../{}", v.device), &tmp)
        .map_err(io_err("linking", &tmp))?;
    std::fs::rename(&tmp, &link).map_err(io_err("renaming into", &link))
}

pub fn unlink_by_id(dir: &Path, v: &AttachedVolume) -> SysResult<()> {
    volume::check_name(&v.name)?;
    let link = dir.join(volume::by_id_name(&v.name));
    match std::fs::remove_file(&link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &link)(e)),
        _ => Ok(()),
    }
}

fn check_device(name: &str) -> SysResult<()> {
    let ok = name.len() == 3 && name.starts_with("sd") && name.as_bytes()[2].is_ascii_lowercase();
    if ok {
        Ok(())
    } else {
        Err(SysError::Other(format!("invalid disk name {name:?}")))
    }
}

/// Runs a command in the machine's mount and pid namespaces (its /dev, its tools). The pid
/// namespace too, so that the machine's /proc/self is the command itself: coreutils' chmod
/// and umount read it.
async fn inside(leader: i32, args: &[&str]) -> SysResult<String> {
    let l = leader.to_string();
    let mut all = vec!["-t", l.as_str(), "-m", "-p", "--"];
    all.extend_from_slice(args);
    sys::run("nsenter", &all).await
}

/// Makes `/dev/<name>` in a running machine: the same device as `dev` on the host, owned
/// as Debian's udev owns disks.
pub async fn plug(leader: i32, dev: &Path, name: &str) -> SysResult<()> {
    check_device(name)?;
    let (major, minor) = volume::device_numbers(dev)?;
    unplug(leader, name).await?;
    let node = format!("/dev/{name}");
    let (major, minor) = (major.to_string(), minor.to_string());
    inside(
        leader,
        &[
            "mknod",
            "-m",
            "0660",
            node.as_str(),
            "b",
            major.as_str(),
            minor.as_str(),
        ],
    )
    .await?;
    inside(leader, &["chown", "root:disk", node.as_str()]).await?;
    Ok(())
}

/// Removes `/dev/<name>` from a running machine. A disk bound at boot is a bind mount there;
/// `umount` takes a path that is a mount point as that mount point, so it removes the bind
/// and never a file system mounted from the disk.
pub async fn unplug(leader: i32, name: &str) -> SysResult<()> {
    check_device(name)?;
    let node = format!("/dev/{name}");
    if mount_point_in(leader, &node) {
        inside(leader, &["umount", node.as_str()]).await?;
    }
    inside(leader, &["rm", "-f", node.as_str()]).await?;
    Ok(())
}

/// Whether `path` is a mount point in the machine's mount namespace.
fn mount_point_in(leader: i32, path: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{leader}/mountinfo"))
        .map(|info| {
            info.lines()
                .any(|l| l.split(' ').nth(4).is_some_and(|m| m == path))
        })
        .unwrap_or(false)
}

/// DigitalOcean's automount, as it leaves a droplet: a mount unit named after
/// `/mnt/<name with - as _>`, enabled, with DigitalOcean's options. Written into the
/// machine's root before its first boot; like any unit it stays for later boots (and with
/// `nofail`, a volume detached since then does not hold up the boot).
pub fn write_automount(root: &Path, m: &Automount) -> SysResult<()> {
    volume::check_name(&m.volume_name)?;
    if !matches!(m.fs_type.as_str(), "ext4" | "xfs") {
        return Err(SysError::Other(format!(
            "filesystem_type {:?} cannot be mounted",
            m.fs_type
        )));
    }
    let point = volume::automount_point(&m.volume_name);
    // Volume names have only letters, digits and `-`, so the path needs no escaping.
    let unit = format!("{}.mount", point.trim_start_matches('/').replace('/', "-"));
    let body = format!(
        "[Unit]\n\
         Description=Mount DO Volume {name}\n\
         \n\
         [Mount]\n\
         What=/dev/disk/by-id/{by_id}\n\
         Where={point}\n\
         Options=defaults,nofail,discard,noatime\n\
         Type={fs}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        name = m.volume_name,
        by_id = volume::by_id_name(&m.volume_name),
        fs = m.fs_type,
    );
    let units = root.join("etc/systemd/system");
    sys::write_atomic(&units.join(&unit), body.as_bytes(), 0o644)?;
    let wants = units.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants).map_err(io_err("creating", &wants))?;
    let link = wants.join(&unit);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link)
        .map_err(io_err("linking", &link))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(device: &str) -> AttachedVolume {
        AttachedVolume {
            id: format!("id-{device}"),
            name: format!("vol-{device}"),
            device: device.into(),
        }
    }

    #[test]
    fn disks_take_the_first_free_name() {
        assert_eq!(free_device(&[]), "sda");
        assert_eq!(free_device(&[attached("sda"), attached("sdc")]), "sdb");
        let mut old = vec![attached(""), attached("sda"), attached("")];
        name_devices(&mut old);
        let names: Vec<&str> = old.iter().map(|v| v.device.as_str()).collect();
        assert_eq!(names, ["sdb", "sda", "sdc"]);
    }

    #[test]
    fn by_id_links_point_at_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let v = AttachedVolume {
            id: "1".into(),
            name: "volume-nyc1-01".into(),
            device: "sdb".into(),
        };
        link_by_id(dir.path(), &v).unwrap();
        let link = dir.path().join("scsi-0DO_Volume_volume-nyc1-01");
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../../sdb"));
        unlink_by_id(dir.path(), &v).unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        unlink_by_id(dir.path(), &v).unwrap();
    }

    #[test]
    fn automount_unit_is_digitaloceans() {
        let root = tempfile::tempdir().unwrap();
        let m = Automount {
            volume_name: "volume-nyc1-01".into(),
            fs_type: "ext4".into(),
        };
        write_automount(root.path(), &m).unwrap();
        let units = root.path().join("etc/systemd/system");
        let body = std::fs::read_to_string(units.join("mnt-volume_nyc1_01.mount")).unwrap();
        assert!(body.contains("What=/dev/disk/by-id/scsi-0DO_Volume_volume-nyc1-01\n"));
        assert!(body.contains("Where=/mnt/volume_nyc1_01\n"));
        assert!(body.contains("Options=defaults,nofail,discard,noatime\n"));
        assert!(body.contains("Type=ext4\n"));
        assert_eq!(
            std::fs::read_link(units.join("multi-user.target.wants/mnt-volume_nyc1_01.mount"))
                .unwrap(),
            Path::new("/etc/systemd/system/mnt-volume_nyc1_01.mount")
        );
        let bad = Automount {
            fs_type: "btrfs".into(),
            ..m
        };
        assert!(write_automount(root.path(), &bad).is_err());
    }

    #[test]
    fn disk_names_are_checked() {
        assert!(check_device("sda").is_ok());
        for bad in ["", "sd", "sdA", "../sda", "sda1", "hda"] {
            assert!(check_device(bad).is_err(), "{bad:?} accepted");
        }
    }
}
