//! Volumes as DigitalOcean gives them, seen from inside real machines: block devices under
//! their by-id names, mounted only by the automount of a volume formatted at creation and
//! attached at the droplet's creation; hot attach, hot detach (even when mounted), online
//! growth; a volume that moves keeps its data.

use std::net::Ipv4Addr;
use std::path::Path;

use localocean::hypervisor::{Hypervisor, Power, VolumeSpec};
use localocean::machines::{automount_point, by_id_name};

use super::{keygen, spec, ssh, ssh_ok, Lab};

const GIB: u64 = 1 << 30;

fn volume(id: u64, tag: &str, fs: Option<&str>) -> VolumeSpec {
    VolumeSpec {
        id: format!("vol-{id}-{tag}"),
        name: format!("tf-acc-vol-{id}-{tag}"),
        size_gib: 1,
        filesystem_type: fs.map(str::to_string),
        filesystem_label: None,
        automount: false,
        snapshot_id: None,
    }
}

fn by_id(v: &VolumeSpec) -> String {
    format!("/dev/disk/by-id/{}", by_id_name(&v.name))
}

/// The device's size in bytes as the machine sees it.
fn size_inside(key: &Path, ip: Ipv4Addr, v: &VolumeSpec) -> u64 {
    ssh_ok(key, ip, &format!("blockdev --getsize64 {}", by_id(v)))
        .trim()
        .parse()
        .unwrap()
}

/// What is mounted from the volume's device in the machine (empty: nothing).
fn mounts_of(key: &Path, ip: Ipv4Addr, v: &VolumeSpec) -> String {
    let (_, out) = ssh(
        key,
        ip,
        &format!("findmnt -n -o TARGET -S \"$(readlink -f {})\"", by_id(v)),
    );
    out.trim().to_string()
}

/// Loop devices over this lab's volume files: none may outlive the lab.
fn loops_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let f = std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
        if Path::new(f.trim()).starts_with(&dir) {
            out.push(format!("{}: {}", e.file_name().to_string_lossy(), f.trim()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_are_disks_mounted_only_by_digitaloceans_automount() {
    let mut lab = Lab::new().await;
    let (key, public) = keygen(lab.dir.path());
    let id = 4_300_000 + u64::from(rand::random::<u16>());

    // Formatted at creation and attached at the droplet's creation: DigitalOcean's automount.
    let auto = VolumeSpec {
        automount: true,
        filesystem_label: Some("auto".into()),
        ..volume(id, "auto", Some("ext4"))
    };
    // Created without a file system: a blank disk, never mounted.
    let blank = volume(id, "blank", None);
    // Formatted, attached after the droplet exists: a disk, not mounted.
    let later = volume(id, "later", Some("ext4"));
    for v in [&auto, &blank, &later] {
        lab.hv.create_volume(v).await.expect("create volume");
    }
    let mut with_volumes = spec(id, &public, None);
    with_volumes.volumes = vec![auto.clone(), blank.clone()];
    let ip = lab.hv.create(with_volumes).await.expect("create").ipv4;

    let point = automount_point(&auto.name);
    assert_eq!(point, format!("/mnt/tf_acc_vol_{id}_auto"));
    let mnt = ssh_ok(
        &key,
        ip,
        &format!("findmnt -n -o SOURCE,FSTYPE,OPTIONS {point}"),
    );
    assert!(
        mnt.starts_with("/dev/sda ext4 ") && mnt.contains("noatime") && mnt.contains("discard"),
        "automount: {mnt}"
    );
    let unit = ssh_ok(
        &key,
        ip,
        &format!(
            "cat /etc/systemd/system/mnt-tf_acc_vol_{id}_auto.mount && systemctl is-enabled mnt-tf_acc_vol_{id}_auto.mount"
        ),
    );
    assert!(
        unit.contains("Options=defaults,nofail,discard,noatime") && unit.contains("enabled"),
        "{unit}"
    );
    assert_eq!(
        ssh_ok(&key, ip, &format!("readlink -f {}", by_id(&auto))).trim(),
        "/dev/sda"
    );
    assert_eq!(
        ssh_ok(
            &key,
            ip,
            &format!("blkid -o value -s LABEL {}", by_id(&auto))
        )
        .trim(),
        "auto"
    );
    assert_eq!(
        ssh_ok(&key, ip, &format!("readlink -f {}", by_id(&blank))).trim(),
        "/dev/sdb"
    );
    assert_eq!(size_inside(&key, ip, &blank), GIB);
    assert_eq!(mounts_of(&key, ip, &blank), "");
    let bytes = ssh_ok(
        &key,
        ip,
        &format!("head -c 1048576 {} | tr -d '\\000' | wc -c", by_id(&blank)),
    );
    assert_eq!(
        bytes.trim(),
        "0",
        "a volume without filesystem_type is blank"
    );
    ssh_ok(&key, ip, &format!("echo kept > {point}/auto && sync"));

    // Hot attach: the disk appears in the running machine, unmounted.
    lab.hv.attach_volume(id, &later).await.expect("attach");
    assert_eq!(
        ssh_ok(&key, ip, &format!("readlink -f {}", by_id(&later))).trim(),
        "/dev/sdc"
    );
    assert_eq!(size_inside(&key, ip, &later), GIB);
    assert_eq!(mounts_of(&key, ip, &later), "");
    assert_eq!(
        ssh_ok(&key, ip, "ls /mnt")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [format!("tf_acc_vol_{id}_auto")],
        "only the automounted volume has a directory in /mnt"
    );

    // The user mounts it; it grows online, and resize2fs in the machine grows the file system.
    ssh_ok(
        &key,
        ip,
        &format!(
            "mkdir -p /srv/later && mount -o discard,defaults {} /srv/later && echo before > /srv/later/data && sync",
            by_id(&later)
        ),
    );
    let df = |ip| -> u64 {
        ssh_ok(&key, ip, "df -B1 --output=size /srv/later | tail -1")
            .trim()
            .parse()
            .unwrap()
    };
    let df_before = df(ip);
    let later = VolumeSpec {
        size_gib: 2,
        ..later
    };
    lab.hv.resize_volume(&later).await.expect("resize");
    assert_eq!(size_inside(&key, ip, &later), 2 * GIB, "grown online");
    assert_eq!(df(ip), df_before, "the file system is the user's to grow");
    // Unmounted for resize2fs: ext4's online resize needs CAP_SYS_RESOURCE, which this
    // test host's own bounding set lacks (so no machine on it can have it); the device grew
    // online above, which is localocean's part.
    ssh_ok(
        &key,
        ip,
        &format!(
            "umount /srv/later && e2fsck -f -p {dev} 2>&1 && resize2fs {dev} 2>&1 && mount -o discard,defaults {dev} /srv/later",
            dev = by_id(&later)
        ),
    );
    let df_after = df(ip);
    assert!(
        df_after > df_before + GIB / 2,
        "resize2fs did not grow it: {df_before} -> {df_after}"
    );

    // A reboot: the automount unit mounts again; the disks are there, in the same places.
    lab.hv.power(id, Power::Reboot).await.expect("reboot");
    assert_eq!(
        ssh_ok(&key, ip, &format!("cat {point}/auto")).trim(),
        "kept"
    );
    assert_eq!(
        ssh_ok(&key, ip, &format!("readlink -f {}", by_id(&later))).trim(),
        "/dev/sdc"
    );
    assert_eq!(mounts_of(&key, ip, &later), "");
    ssh_ok(
        &key,
        ip,
        &format!("mount {} /srv/later && cat /srv/later/data", by_id(&later)),
    );

    // Hot detach of a blank, unmounted disk.
    lab.hv
        .detach_volume(id, &blank)
        .await
        .expect("detach blank");
    let (present, _) = ssh(&key, ip, &format!("test -e {}", by_id(&blank)));
    assert!(!present, "blank disk still in the machine");
    let (present, _) = ssh(&key, ip, "test -e /dev/sdb");
    assert!(!present, "/dev/sdb still in the machine");

    // Hot detach of a mounted disk, as a hot unplug: the disk goes, the file system still
    // mounted in the machine fails every write from then on.
    lab.hv
        .detach_volume(id, &later)
        .await
        .expect("detach mounted");
    let (present, _) = ssh(&key, ip, "test -e /dev/sdc");
    assert!(!present, "/dev/sdc still in the machine");
    let (wrote, out) = ssh(
        &key,
        ip,
        "echo after > /srv/later/after && sync -f /srv/later/after",
    );
    assert!(!wrote, "a write reached a detached volume: {out}");
    ssh_ok(&key, ip, "umount -l /srv/later");

    // The volume moves to another droplet: a disk, not mounted; what was written before the
    // detach is there, nothing after it.
    let other = id + 1;
    let ip2 = lab
        .hv
        .create(spec(other, &public, None))
        .await
        .expect("create second")
        .ipv4;
    lab.hv
        .attach_volume(other, &later)
        .await
        .expect("attach to second");
    assert_eq!(
        ssh_ok(&key, ip2, &format!("readlink -f {}", by_id(&later))).trim(),
        "/dev/sda"
    );
    assert_eq!(size_inside(&key, ip2, &later), 2 * GIB);
    assert_eq!(mounts_of(&key, ip2, &later), "");
    let seen = ssh_ok(
        &key,
        ip2,
        &format!(
            "mkdir -p /data && mount {} /data && cat /data/data && ls /data",
            by_id(&later)
        ),
    );
    assert!(seen.starts_with("before\n"), "{seen}");
    assert!(
        !seen.contains("after"),
        "a write after the detach landed: {seen}"
    );

    // A snapshot taken while a machine writes to the mounted file system is one point in
    // time of the disk (localocean freezes the file system for the copy): a volume made from
    // it, in another machine, is a clean file system with what was written before.
    let writer = ssh_ok(
        &key,
        ip2,
        "nohup sh -c 'i=0; while [ $i -lt 100000 ]; do echo $i > /data/w.$((i % 64)); i=$((i+1)); done' >/dev/null 2>&1 & echo $!",
    );
    let writer = writer.trim();
    let snap = format!("snap-{id}");
    let bytes = lab
        .hv
        .snapshot_volume(&later, &snap)
        .await
        .expect("snapshot under writes");
    assert!(bytes > 0, "the snapshot holds no data");
    let restored = VolumeSpec {
        size_gib: 3,
        snapshot_id: Some(snap.clone()),
        ..volume(id, "restored", Some("ext4"))
    };
    lab.hv
        .create_volume(&restored)
        .await
        .expect("volume from snapshot");
    lab.hv
        .attach_volume(id, &restored)
        .await
        .expect("attach restored");
    assert_eq!(size_inside(&key, ip, &restored), 3 * GIB);
    let checked = ssh_ok(
        &key,
        ip,
        &format!(
            "e2fsck -f -n {dev} 2>&1 && mkdir -p /restored && mount -o ro {dev} /restored && cat /restored/data && umount /restored",
            dev = by_id(&restored)
        ),
    );
    assert!(checked.ends_with("before\n"), "{checked}");
    lab.hv
        .detach_volume(id, &restored)
        .await
        .expect("detach restored");
    lab.hv
        .delete_volume(&restored.id)
        .await
        .expect("delete restored");
    lab.hv
        .delete_snapshot(&snap)
        .await
        .expect("delete snapshot");
    lab.hv
        .delete_snapshot(&snap)
        .await
        .expect("delete snapshot twice");

    ssh_ok(
        &key,
        ip2,
        &format!("kill {writer} || true; umount -l /data"),
    );
    lab.hv
        .detach_volume(other, &later)
        .await
        .expect("detach from second");

    // Deleting a droplet detaches its volumes; they outlive it.
    lab.hv.delete(id).await.expect("delete");
    lab.hv.delete(other).await.expect("delete second");
    assert!(lab
        .state
        .volumes()
        .join(format!("{}.img", auto.id))
        .exists());
    for v in [&auto, &blank, &later] {
        lab.hv.delete_volume(&v.id).await.expect("delete volume");
    }
    let volumes = lab.state.volumes();
    lab.teardown().await;
    let left = loops_under(&volumes);
    assert!(left.is_empty(), "loop devices left: {left:?}");
}
