//! Block storage volumes as DigitalOcean gives them: a sparse backing file per volume that
//! outlives droplets, and while it is attached to a running machine, a loop device over it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::hypervisor::VolumeSpec;
use crate::instance::StateDir;

use super::sys::{self, io_err, SysError, SysResult};

fn image(state: &StateDir, id: &str) -> PathBuf {
    state.volumes().join(format!("{id}.img"))
}

fn snapshot_image(state: &StateDir, snapshot_id: &str) -> PathBuf {
    state
        .volumes()
        .join("snapshots")
        .join(format!("{snapshot_id}.img"))
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

/// Volume names become file names in the machine (the by-id link, the mount unit), so they
/// keep to DigitalOcean's characters.
pub fn check_name(name: &str) -> SysResult<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(SysError::Other(format!("invalid volume name {name:?}")));
    }
    Ok(())
}

/// The name under `/dev/disk/by-id` that DigitalOcean gives a volume's disk.
pub fn by_id_name(volume_name: &str) -> String {
    format!("scsi-0DO_Volume_{volume_name}")
}

/// Where DigitalOcean's automount puts a volume: `/mnt/<name>` with every `-` as `_`.
pub fn automount_point(volume_name: &str) -> String {
    format!("/mnt/{}", volume_name.replace('-', "_"))
}

pub fn check_exists(state: &StateDir, id: &str) -> SysResult<()> {
    check_id(id)?;
    if !image(state, id).exists() {
        return Err(SysError::Other(format!("volume ({id}) does not exist")));
    }
    Ok(())
}

/// Makes the sparse backing file, with the file system DigitalOcean would put on it when
/// `filesystem_type` is set, blank otherwise. Idempotent.
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
    if let Some(snap) = &v.snapshot_id {
        // A volume from a snapshot starts as a copy of the snapshot's data; its file system
        // is the snapshot's, never made again.
        check_id(snap)?;
        let src = snapshot_image(state, snap);
        if let Err(e) = copy_sparse(&src, &tmp).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    let want = u64::from(v.size_gib) << 30;
    if f.metadata().map_err(io_err("reading", &tmp))?.len() > want {
        let _ = std::fs::remove_file(&tmp);
        return Err(SysError::Other(format!(
            "volume ({}) is smaller than its snapshot",
            v.id
        )));
    }
    f.set_len(want).map_err(io_err("sizing", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    drop(f);
    if let (Some(fs), None) = (&v.filesystem_type, &v.snapshot_id) {
        if let Err(e) = mkfs(&tmp, fs, v.filesystem_label.as_deref()).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    std::fs::rename(&tmp, &img).map_err(io_err("renaming into", &img))?;
    Ok(())
}

async fn mkfs(file: &Path, fs: &str, label: Option<&str>) -> SysResult<()> {
    let mut args: Vec<String> = Vec::new();
    let program = match fs {
        "ext4" => {
            args.extend(["-F".into(), "-q".into()]);
            "mkfs.ext4"
        }
        "xfs" => {
            args.extend(["-f".into(), "-q".into()]);
            "mkfs.xfs"
        }
        other => {
            return Err(SysError::Other(format!(
                "filesystem_type {other:?} is not supported"
            )))
        }
    };
    if let Some(l) = label {
        args.extend(["-L".into(), l.to_string()]);
    }
    args.push(file.to_string_lossy().into_owned());
    sys::run(program, &args).await.map(drop)
}

/// `cp` that keeps holes and shares blocks where the file system can (reflink), then syncs.
async fn copy_sparse(src: &Path, dst: &Path) -> SysResult<()> {
    let (s, d) = (
        src.to_string_lossy().into_owned(),
        dst.to_string_lossy().into_owned(),
    );
    sys::run(
        "cp",
        &["--reflink=auto", "--sparse=always", s.as_str(), d.as_str()],
    )
    .await?;
    std::fs::File::open(dst)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", dst))
}

/// Takes a snapshot: a copy of the volume's backing file, made while every file system
/// mounted from it (in the machines whose leaders are given) is frozen, so the copy is one
/// point in time of the disk, as DigitalOcean's snapshot of a block device is. A file
/// system someone else froze already (`fsfreeze` in the droplet) is left frozen for them.
/// Returns the bytes the copy holds.
pub async fn snapshot(
    state: &StateDir,
    id: &str,
    snapshot_id: &str,
    leaders: &[i32],
) -> SysResult<u64> {
    check_exists(state, id)?;
    check_id(snapshot_id)?;
    let dst = snapshot_image(state, snapshot_id);
    let dir = dst.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    if dst.exists() {
        return allocated(&dst);
    }
    let mut devices = Vec::new();
    for l in loops_of(state, id).into_iter().filter(Loop::live) {
        devices.push(device_numbers(&l.dev)?);
    }
    let mut frozen = Vec::new();
    for &leader in leaders {
        for mp in mounts_of(leader, &devices) {
            match Frozen::freeze(&mp) {
                Ok(Some(f)) => frozen.push(f),
                Ok(None) => tracing::info!("volume ({id}): {} was frozen already", mp.display()),
                Err(e) => {
                    drop(frozen);
                    return Err(e);
                }
            }
        }
    }
    let tmp = dir.join(format!(".{snapshot_id}.img.tmp"));
    let copied = copy_sparse(&image(state, id), &tmp).await;
    drop(frozen);
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &dst).map_err(io_err("renaming into", &dst))?;
    allocated(&dst)
}

fn allocated(file: &Path) -> SysResult<u64> {
    Ok(std::fs::metadata(file)
        .map_err(io_err("reading", file))?
        .blocks()
        * 512)
}

/// Removes a snapshot's copy; one already gone is removed.
pub fn delete_snapshot(state: &StateDir, snapshot_id: &str) -> SysResult<()> {
    check_id(snapshot_id)?;
    let img = snapshot_image(state, snapshot_id);
    match std::fs::remove_file(&img) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &img)(e)),
        _ => Ok(()),
    }
}

/// Where, seen from the host, a machine has mounted one of these devices.
fn mounts_of(leader: i32, devices: &[(u32, u32)]) -> Vec<PathBuf> {
    let info = std::fs::read_to_string(format!("/proc/{leader}/mountinfo")).unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let (major, minor) = f.get(2)?.split_once(':')?;
            let dev = (major.parse().ok()?, minor.parse().ok()?);
            let point = unescape(f.get(4)?);
            devices.contains(&dev).then(|| {
                Path::new(&format!("/proc/{leader}/root")).join(point.trim_start_matches('/'))
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let digit = |c: u8| u32::from(c - b'0');
            let v = digit(b[i + 1]) * 64 + digit(b[i + 2]) * 8 + digit(b[i + 3]);
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// A file system frozen by us, thawed when dropped (whatever happened meanwhile).
struct Frozen(std::fs::File, PathBuf);

impl Frozen {
    /// `None` when it was frozen already (by the droplet's own `fsfreeze`).
    fn freeze(mount_point: &Path) -> SysResult<Option<Frozen>> {
        let f = std::fs::File::open(mount_point).map_err(io_err("opening", mount_point))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: FIFREEZE takes no argument beyond the fd, which stays open for the call.
        if unsafe { libc::ioctl(fd, FIFREEZE as _, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                return Ok(None);
            }
            return Err(io_err("freezing", mount_point)(e));
        }
        Ok(Some(Frozen(f, mount_point.to_path_buf())))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.0);
        // SAFETY: as in `freeze`.
        if unsafe { libc::ioctl(fd, FITHAW as _, 0) } != 0 {
            tracing::error!(
                "thawing {}: {}",
                self.1.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Grows the backing file and every live loop device over it, so that a machine sees the
/// new size at once. Shrinking is refused, as on DigitalOcean; the file system is left as
/// it is (growing it is the user's job, as on DigitalOcean).
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
    if want > have {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .and_then(|f| f.set_len(want))
            .map_err(io_err("growing", &img))?;
    }
    for l in loops_of(state, &v.id).into_iter().filter(Loop::live) {
        let dev = l.dev.to_string_lossy().into_owned();
        sys::run("losetup", &["-c", dev.as_str()]).await?;
    }
    Ok(())
}

/// Removes the backing file; refused while a live loop device is over it.
pub async fn delete(state: &StateDir, id: &str) -> SysResult<()> {
    check_id(id)?;
    if let Some(l) = loops_of(state, id).into_iter().find(Loop::live) {
        return Err(SysError::Other(format!(
            "volume ({id}) is still in use ({})",
            l.dev.display()
        )));
    }
    let img = image(state, id);
    if img.exists() {
        std::fs::remove_file(&img).map_err(io_err("removing", &img))?;
    }
    Ok(())
}

/// A loop device bound to a file, as the kernel lists it under `/sys/block`.
#[derive(Debug)]
struct Loop {
    dev: PathBuf,
    sys: PathBuf,
    offset: u64,
    autoclear: bool,
}

impl Loop {
    /// Serving the volume: neither fenced (see [`fence`]) nor released by `losetup -d`.
    fn live(&self) -> bool {
        self.offset == 0 && !self.autoclear
    }

    fn still_bound(&self) -> bool {
        self.sys.join("loop").exists()
    }
}

/// Every loop device whose backing file satisfies `backed_by`. Found by the file's path,
/// so localocean only ever touches loop devices it made, whoever else uses others.
fn loops_where(backed_by: impl Fn(&Path) -> bool) -> Vec<Loop> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let mut out: Vec<Loop> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter_map(|e| {
            let sys = e.path();
            let file = read(sys.join("loop/backing_file"));
            let file = file.trim_end_matches('\n');
            let file = file.strip_suffix(" (deleted)").unwrap_or(file);
            if file.is_empty() || !backed_by(Path::new(file)) {
                return None;
            }
            Some(Loop {
                dev: Path::new("/dev").join(e.file_name()),
                offset: read(sys.join("loop/offset")).trim().parse().unwrap_or(0),
                autoclear: read(sys.join("loop/autoclear")).trim() == "1",
                sys,
            })
        })
        .collect();
    out.sort_by(|a, b| a.dev.cmp(&b.dev));
    out
}

/// The kernel names a backing file by its resolved path.
fn resolved_volumes_dir(state: &StateDir) -> PathBuf {
    std::fs::canonicalize(state.volumes()).unwrap_or_else(|_| state.volumes())
}

fn loops_of(state: &StateDir, id: &str) -> Vec<Loop> {
    let img = resolved_volumes_dir(state).join(format!("{id}.img"));
    loops_where(|f| f == img)
}

/// How long a released loop device may take to go: the file system of a machine that just
/// stopped is let go by the kernel shortly after its last process ends.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

/// The volume's live loop device, made when there is none. A loop device released when its
/// machine stopped may still be held by that machine's file system for a moment: wait for
/// it to go, so that two file systems never write the same file.
pub async fn loop_device(state: &StateDir, id: &str) -> SysResult<PathBuf> {
    check_exists(state, id)?;
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        let loops = loops_of(state, id);
        if let Some(l) = loops.iter().find(|l| l.live()) {
            return Ok(l.dev.clone());
        }
        if !loops.iter().any(|l| l.offset == 0 && l.autoclear) {
            break;
        }
        if Instant::now() > deadline {
            return Err(SysError::Other(format!(
                "volume ({id}) is still held by a stopped machine"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let img = image(state, id).to_string_lossy().into_owned();
    let dev = sys::run("losetup", &["--find", "--show", img.as_str()]).await?;
    Ok(PathBuf::from(dev.trim()))
}

/// Lets go of the volume's loop devices after its machine stopped, waiting until the kernel
/// has freed them (see [`loop_device`]).
pub async fn release(state: &StateDir, id: &str) {
    let loops = loops_of(state, id);
    for l in &loops {
        let dev = l.dev.to_string_lossy().into_owned();
        sys::run_quiet("losetup", &["-d", dev.as_str()]).await;
    }
    let deadline = Instant::now() + RELEASE_WAIT;
    while loops.iter().any(|l| l.offset == 0 && l.still_bound()) {
        if Instant::now() > deadline {
            tracing::warn!("volume ({id}): a loop device is still held after its machine stopped");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes the volume away from a running machine, as a hot unplug does: every loop device
/// over it is fenced first, so that a file system still mounted in the machine gets I/O
/// errors and can never again write the file (which the volume's next attachment opens
/// afresh), then released.
pub async fn unplug(state: &StateDir, id: &str) -> SysResult<()> {
    for l in loops_of(state, id).into_iter().filter(|l| l.offset == 0) {
        fence(&l.dev)?;
        let dev = l.dev.to_string_lossy().into_owned();
        sys::run("losetup", &["-d", dev.as_str()]).await?;
    }
    Ok(())
}

/// `struct loop_info64` of <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// Moves the loop device's window past the end of any file: its size drops to zero, the
/// block layer fails every further read and write, and nothing more reaches the file. The
/// kernel writes back what the device holds before the window moves, as an unplugged disk
/// keeps what reached it. (Device-mapper's error target would say it more plainly, but not
/// every kernel localocean runs on has device-mapper; every one has loop devices.)
fn fence(dev: &Path) -> SysResult<()> {
    let f = std::fs::File::open(dev).map_err(io_err("opening", dev))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: all zeroes is a valid LoopInfo64 (plain integers and byte arrays).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one loop_info64 through the pointer, which points at
    // a live struct of that layout; fd stays open for the call.
    if unsafe { libc::ioctl(fd, LOOP_GET_STATUS64 as _, &mut info as *mut LoopInfo64) } != 0 {
        return Err(io_err("reading the status of", dev)(
            std::io::Error::last_os_error(),
        ));
    }
    info.offset = 1 << 62;
    info.sizelimit = 0;
    // SAFETY: LOOP_SET_STATUS64 reads one loop_info64 through the pointer.
    if unsafe { libc::ioctl(fd, LOOP_SET_STATUS64 as _, &info as *const LoopInfo64) } != 0 {
        return Err(io_err("fencing", dev)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The (major, minor) numbers of a device node, to make the same node in a machine.
pub fn device_numbers(dev: &Path) -> SysResult<(u32, u32)> {
    let rdev = std::fs::metadata(dev)
        .map_err(io_err("reading", dev))?
        .rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

/// Releases every loop device over this instance's volumes and removes their files
/// (`localocean down`, after every machine is gone).
pub async fn purge_volumes(state: &StateDir) {
    let dir = resolved_volumes_dir(state);
    for l in loops_where(|f| f.starts_with(&dir)) {
        if l.offset == 0 {
            if let Err(e) = fence(&l.dev) {
                tracing::debug!("ignored during cleanup: {e}");
            }
        }
        let dev = l.dev.to_string_lossy().into_owned();
        sys::run_quiet("losetup", &["-d", dev.as_str()]).await;
    }
    let _ = std::fs::remove_dir_all(state.volumes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_digitalocean() {
        assert_eq!(
            by_id_name("volume-nyc1-01"),
            "scsi-0DO_Volume_volume-nyc1-01"
        );
        assert_eq!(automount_point("volume-nyc1-01"), "/mnt/volume_nyc1_01");
        assert!(check_name("volume-nyc1-01").is_ok());
        for bad in ["", "a/b", "../x", "a b", "a.b"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/mnt/plain"), "/mnt/plain");
        assert_eq!(unescape("/mnt/x\\"), "/mnt/x\\");
    }

    #[test]
    fn loop_info_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
    }
}
