//! Block storage volumes: sparse ext4 image files, loop-mounted on the host and bound into
//! a machine at `/mnt/<name>`; they outlive droplets like DigitalOcean volumes.

use std::path::{Path, PathBuf};

use crate::hypervisor::VolumeSpec;
use crate::instance::StateDir;

use super::sys::{self, io_err, SysError, SysResult};

fn image(state: &StateDir, id: &str) -> PathBuf {
    state.volumes().join(format!("{id}.img"))
}

fn mount_point(state: &StateDir, id: &str) -> PathBuf {
    state.volumes().join(format!("{id}.mnt"))
}

fn check_id(id: &str) -> SysResult<()> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(SysError::Other(format!("invalid volume id {id:?}")));
    }
    Ok(())
}

fn check_name(name: &str) -> SysResult<()> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(SysError::Other(format!("invalid volume name {name:?}")));
    }
    Ok(())
}

pub fn check_exists(state: &StateDir, id: &str) -> SysResult<()> {
    check_id(id)?;
    if !image(state, id).exists() {
        return Err(SysError::Other(format!("volume ({id}) does not exist")));
    }
    Ok(())
}

/// Makes the sparse backing file and its ext4 file system (every `filesystem_type` gets
/// ext4: the only one the image's tools and the tests need). Idempotent.
pub async fn create(state: &StateDir, v: &VolumeSpec) -> SysResult<()> {
    check_id(&v.id)?;
    check_name(&v.name)?;
    let dir = state.volumes();
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let img = image(state, &v.id);
    if img.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!(".{}.img.tmp", v.id));
    let f = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.set_len(u64::from(v.size_gib) << 30)
        .map_err(io_err("sizing", &tmp))?;
    drop(f);
    let t = tmp.to_string_lossy().into_owned();
    let label: String = v.name.chars().take(16).collect();
    if let Err(e) = sys::run("mkfs.ext4", &["-F", "-q", "-L", label.as_str(), t.as_str()]).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &img).map_err(io_err("renaming into", &img))?;
    Ok(())
}

/// Grows the file and the file system (online when it is mounted). Shrinking is refused,
/// as on DigitalOcean.
pub async fn resize(state: &StateDir, v: &VolumeSpec) -> SysResult<()> {
    check_exists(state, &v.id)?;
    let img = image(state, &v.id);
    let want = u64::from(v.size_gib) << 30;
    let have = std::fs::metadata(&img)
        .map_err(io_err("reading", &img))?
        .len();
    if want < have {
        return Err(SysError::Other(format!(
            "volume ({}) cannot shrink from {} GiB to {} GiB",
            v.id,
            have >> 30,
            v.size_gib
        )));
    }
    if want == have {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .and_then(|f| f.set_len(want))
        .map_err(io_err("growing", &img))?;
    let mnt = mount_point(state, &v.id);
    if sys::is_mounted(&mnt) {
        let m = mnt.to_string_lossy().into_owned();
        let dev = sys::run("findmnt", &["-n", "-o", "SOURCE", m.as_str()]).await?;
        let dev = dev.trim().to_string();
        sys::run("losetup", &["-c", dev.as_str()]).await?;
        // Online growth needs a kernel that lets us (some sandboxes refuse the ioctl); if
        // it is refused the file system grows the next time the volume is mounted.
        if let Err(e) = sys::run("resize2fs", &[dev.as_str()]).await {
            tracing::warn!("volume ({}) grows at its next attach: {e}", v.id);
            sys::write_atomic(&grow_marker(state, &v.id), b"", 0o644)?;
        }
    } else {
        grow_offline(state, &v.id).await?;
    }
    Ok(())
}

fn grow_marker(state: &StateDir, id: &str) -> PathBuf {
    state.volumes().join(format!("{id}.grow"))
}

async fn grow_offline(state: &StateDir, id: &str) -> SysResult<()> {
    let i = image(state, id).to_string_lossy().into_owned();
    sys::run("e2fsck", &["-f", "-p", i.as_str()]).await?;
    sys::run("resize2fs", &[i.as_str()]).await?;
    let _ = std::fs::remove_file(grow_marker(state, id));
    Ok(())
}

pub async fn delete(state: &StateDir, id: &str) -> SysResult<()> {
    check_id(id)?;
    unmount_host(state, id).await?;
    let _ = std::fs::remove_file(grow_marker(state, id));
    let img = image(state, id);
    if img.exists() {
        std::fs::remove_file(&img).map_err(io_err("removing", &img))?;
    }
    let mnt = mount_point(state, id);
    let _ = std::fs::remove_dir(&mnt);
    Ok(())
}

/// Loop-mounts the volume on the host (idempotent) and returns the mount point.
pub async fn ensure_mounted(state: &StateDir, id: &str) -> SysResult<PathBuf> {
    check_exists(state, id)?;
    let mnt = mount_point(state, id);
    std::fs::create_dir_all(&mnt).map_err(io_err("creating", &mnt))?;
    if !sys::is_mounted(&mnt) {
        if grow_marker(state, id).exists() {
            grow_offline(state, id).await?;
        }
        let i = image(state, id).to_string_lossy().into_owned();
        let m = mnt.to_string_lossy().into_owned();
        sys::run("mount", &["-o", "loop", i.as_str(), m.as_str()]).await?;
    }
    Ok(mnt)
}

pub async fn unmount_host(state: &StateDir, id: &str) -> SysResult<()> {
    let mnt = mount_point(state, id);
    if sys::is_mounted(&mnt) {
        let m = mnt.to_string_lossy().into_owned();
        sys::run("umount", &[m.as_str()]).await?;
    }
    Ok(())
}

/// Binds an already host-mounted volume into a running machine at `/mnt/<name>`. The
/// machine's root is a shared mount on the host and nspawn keeps the machine's mounts as
/// its slaves, so a bind made under the host path of that root appears inside at once (no
/// systemd-machined here, so no `machinectl bind`; the host's `/` is private, so nspawn's
/// own propagation dir would not carry it).
pub async fn bind_into_running(root: &Path, host: &Path, name: &str) -> SysResult<()> {
    check_name(name)?;
    let target = root.join("mnt").join(name);
    std::fs::create_dir_all(&target).map_err(io_err("creating", &target))?;
    if !sys::is_mounted(&target) {
        let h = host.to_string_lossy().into_owned();
        let t = target.to_string_lossy().into_owned();
        sys::run("mount", &["--bind", h.as_str(), t.as_str()]).await?;
    }
    Ok(())
}

/// Undoes [`bind_into_running`]; the unmount propagates into the machine too. A volume
/// bound at boot (`--bind`) lives only in the machine's namespace and is unmounted there.
pub async fn unmount_in_running(root: &Path, leader: Option<i32>, name: &str) -> SysResult<()> {
    check_name(name)?;
    let target = root.join("mnt").join(name);
    if sys::is_mounted(&target) {
        let t = target.to_string_lossy().into_owned();
        if sys::run("umount", &[t.as_str()]).await.is_err() {
            // Busy inside the machine: detach now, the kernel finishes when it is released.
            sys::run("umount", &["-l", t.as_str()]).await?;
        }
    }
    if let Some(leader) = leader {
        let inside = format!("/mnt/{name}");
        let leader = leader.to_string();
        let l = leader.as_str();
        let mounted = sys::run(
            "nsenter",
            &["-t", l, "-m", "--", "mountpoint", "-q", inside.as_str()],
        )
        .await
        .is_ok();
        if mounted
            && sys::run("nsenter", &["-t", l, "-m", "--", "umount", inside.as_str()])
                .await
                .is_err()
        {
            sys::run(
                "nsenter",
                &["-t", l, "-m", "--", "umount", "-l", inside.as_str()],
            )
            .await?;
        }
    }
    Ok(())
}

/// Unmounts and removes every volume of the instance (`localocean down`).
pub async fn purge_volumes(state: &StateDir) {
    let dir = state.volumes();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().map(|x| x == "mnt").unwrap_or(false) && sys::is_mounted(&path) {
            let p = path.to_string_lossy().into_owned();
            if !sys::run_quiet("umount", &[p.as_str()]).await {
                sys::run_quiet("umount", &["-l", p.as_str()]).await;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
