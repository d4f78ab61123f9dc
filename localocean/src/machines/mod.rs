//! Droplets as systemd-nspawn machines: an overlayfs root over the cached image, a network
//! namespace on the instance bridge, a NoCloud seed from the droplet's user data.

pub mod apt_cache;
mod apt_front;
pub mod balancer;
mod cgroup;
mod devices;
mod disk_image;
mod ssh_fault;
pub mod sys;
mod volume;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::balancer::BalancerSpec;
use crate::hypervisor::{Hypervisor, MachineInfo, MachineSpec, Power, VolumeSpec};
use crate::instance::{StateDir, APT_PROXY_PORT};
use crate::net::{self, Subnet};
use crate::process;
use sys::{io_err, SysError, SysResult};

pub use volume::{automount_point, by_id_name, purge_volumes};

/// What localocean remembers about a droplet's machine (`machines/<id>/machine.json`), so
/// a restarted localocean can adopt or restart it and `down` can remove it after a crash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineRecord {
    pub droplet_id: u64,
    pub name: String,
    pub image: String,
    pub slot: u16,
    pub ipv4: Ipv4Addr,
    /// The power state the user asked for: a restarted localocean boots machines that are on.
    pub powered_on: bool,
    pub memory_mib: u32,
    pub vcpus: u32,
    #[serde(default)]
    pub volumes: Vec<AttachedVolume>,
    /// The reserved IP assigned to the droplet, an address of its `eth0` while it runs.
    #[serde(default)]
    pub reserved_ipv4: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedVolume {
    pub id: String,
    pub name: String,
    /// Its disk's name in the machine (`sda`, `sdb`...), kept across reboots.
    #[serde(default)]
    pub device: String,
}

#[derive(Clone, Debug)]
pub struct NspawnConfig {
    pub state: StateDir,
    pub subnet: Subnet,
    /// How long a boot may take until sshd answers.
    pub boot_timeout: Duration,
}

impl NspawnConfig {
    pub fn new(state: StateDir, subnet: Subnet) -> Self {
        NspawnConfig {
            state,
            subnet,
            // Generous: the create action errors when it passes, and an errored create fails
            // the provider at once (as on DigitalOcean, where it means the droplet is lost).
            // A slow boot is not that: with a whole test suite booting machines on two
            // cores, cloud-init alone took over 120 s.
            boot_timeout: Duration::from_secs(600),
        }
    }
}

/// The systemd-nspawn hypervisor. Each operation on one droplet holds that droplet's lock,
/// so a power action never races a delete.
pub struct Nspawn {
    cfg: NspawnConfig,
    locks: std::sync::Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises address allocation; holds the host number given last (0: none yet).
    alloc: tokio::sync::Mutex<u8>,
    /// Serialises changes to load balancers; true once `stop_all` ran (localocean is
    /// exiting), after which none is started again.
    balancers: tokio::sync::Mutex<bool>,
}

struct Paths {
    dir: PathBuf,
}

impl Paths {
    fn record(&self) -> PathBuf {
        self.dir.join("machine.json")
    }
    fn pid(&self) -> PathBuf {
        self.dir.join("nspawn.pid")
    }
    fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    fn merged(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The machine's `/dev/disk/by-id`, bound in from here so that links made while it
    /// runs appear inside at once.
    fn by_id(&self) -> PathBuf {
        self.dir.join("by-id")
    }
}

pub fn machine_name(slot: u16, droplet_id: u64) -> String {
    format!("lo{slot}-d{droplet_id}")
}

impl Nspawn {
    pub fn new(cfg: NspawnConfig) -> Self {
        sys::ensure_inotify_limits();
        Nspawn {
            cfg,
            locks: Default::default(),
            alloc: Default::default(),
            balancers: Default::default(),
        }
    }

    pub fn subnet(&self) -> Subnet {
        self.cfg.subnet
    }

    fn paths(&self, droplet_id: u64) -> Paths {
        Paths {
            dir: self.cfg.state.machines().join(droplet_id.to_string()),
        }
    }

    fn lock(&self, droplet_id: u64) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("lock map")
            .entry(droplet_id)
            .or_default()
            .clone()
    }

    /// The images the machines there are were made from.
    fn image_keys(&self) -> Vec<String> {
        self.records().into_iter().map(|r| r.image).collect()
    }

    pub fn records(&self) -> Vec<MachineRecord> {
        read_records(&self.cfg.state)
    }

    fn load(&self, droplet_id: u64) -> SysResult<Option<MachineRecord>> {
        let path = self.paths(droplet_id).record();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(|r| Some(with_devices(r)))
                .map_err(|e| SysError::Other(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    fn save(&self, rec: &MachineRecord) -> SysResult<()> {
        let body = serde_json::to_vec_pretty(rec).expect("record serialises");
        sys::write_atomic(&self.paths(rec.droplet_id).record(), &body, 0o644)
    }

    /// The pid of the machine's running nspawn process, if any.
    pub fn running_pid(&self, droplet_id: u64) -> Option<i32> {
        running_pid(&self.paths(droplet_id).pid())
    }

    /// The machine's init process as seen from the host (for nsenter).
    fn leader_pid(&self, droplet_id: u64) -> Option<i32> {
        leader_of(self.running_pid(droplet_id)?)
    }

    /// The next free address after the one given last (wrapping around): as on DigitalOcean,
    /// a droplet does not get the address a droplet deleted a moment ago had, which clients
    /// (SSH's known hosts, neighbour caches, a balancer's draining connections) may still
    /// tie to the old machine.
    async fn allocate_ip(&self, last: &mut u8) -> SysResult<Ipv4Addr> {
        let used: Vec<Ipv4Addr> = self.records().iter().map(|r| r.ipv4).collect();
        let hosts = net::DROPLET_HOSTS;
        let after = hosts.clone().filter(|n| *n > *last);
        let picked = after
            .chain(hosts.clone().filter(|n| *n <= *last))
            .find(|n| !used.contains(&self.cfg.subnet.host(*n)));
        if let Some(n) = picked {
            *last = n;
        }
        picked.map(|n| self.cfg.subnet.host(n)).ok_or_else(|| {
            SysError::Other(format!(
                "no free address left in {}/24",
                self.cfg.subnet.host(0)
            ))
        })
    }

    /// Boots a machine from its record: network namespace, overlay root, per-instance files,
    /// then nspawn; returns when sshd answers.
    async fn start(&self, rec: &MachineRecord, seed: Option<&Seed>) -> SysResult<()> {
        self.start_within(rec, seed, self.cfg.boot_timeout).await
    }

    /// As `start`, failing when sshd does not answer within `limit`.
    async fn start_within(
        &self,
        rec: &MachineRecord,
        seed: Option<&Seed>,
        limit: Duration,
    ) -> SysResult<()> {
        let p = self.paths(rec.droplet_id);
        let lower = disk_image::layers(&self.cfg.state, &rec.image).await?;
        net::create_droplet_net(self.cfg.subnet, rec.droplet_id, rec.ipv4).await?;
        if let Some(ip) = rec.reserved_ipv4 {
            net::add_reserved_ip(self.cfg.subnet, rec.droplet_id, ip).await?;
            net::forget_neighbour(self.cfg.subnet, ip).await;
        }
        for d in [p.upper(), p.work(), p.merged()] {
            std::fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        if !sys::is_mounted(&p.merged()) {
            let lower: Vec<String> = lower.iter().map(|l| l.display().to_string()).collect();
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                p.upper().display(),
                p.work().display()
            );
            let merged = p.merged().to_string_lossy().into_owned();
            sys::run(
                "mount",
                &[
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    opts.as_str(),
                    merged.as_str(),
                ],
            )
            .await?;
        }
        self.write_instance_files(rec, &p.merged(), seed)?;

        // Attached volumes are disks in the machine, as on DigitalOcean: a loop device per
        // volume at /dev/sdX, and its by-id link. Bound at boot, before the machine's
        // systemd mounts anything, so that mount units and fstab find them.
        let mut binds = vec![format!("--bind={}:/dev/disk/by-id", p.by_id().display())];
        devices::reset_dir(&p.by_id())?;
        for v in &rec.volumes {
            let dev = volume::loop_device(&self.cfg.state, &v.id).await?;
            binds.push(format!("--bind={}:/dev/{}", dev.display(), v.device));
            devices::link_by_id(&p.by_id(), v)?;
        }
        let name = machine_name(self.cfg.subnet.slot, rec.droplet_id);
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.console())
            .map_err(io_err("opening", &p.console()))?;
        let console_err = console
            .try_clone()
            .map_err(io_err("opening", &p.console()))?;
        // In a cgroup of its own (see `cgroup`): the shell moves itself there, then becomes
        // nspawn, so nspawn makes its cgroups under the machine's.
        let procs = cgroup::prepare(&name).map_err(io_err("making the cgroup of", &p.dir))?;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(cgroup::enter_then_exec(&procs, "systemd-nspawn"))
            .arg("systemd-nspawn")
            .arg("--boot")
            .arg("--quiet")
            .arg(format!("--directory={}", p.merged().display()))
            .arg(format!("--machine={name}"))
            .arg(format!("--hostname={}", hostname(&rec.name)))
            .arg(format!(
                "--network-namespace-path=/run/netns/{}",
                self.cfg.subnet.netns_name(rec.droplet_id)
            ))
            // No systemd on the host: nothing to register with or to make a scope in.
            .arg("--register=no")
            .arg("--keep-unit")
            .arg("--resolv-conf=off")
            .arg("--timezone=off")
            .arg("--link-journal=no")
            .arg("--console=read-only")
            // Root on a droplet manages its own network (its firewall, routes); the machine's
            // namespace is its own, so this reaches nothing of the host's.
            .arg("--capability=CAP_NET_ADMIN")
            // The machine's systemd delays mount jobs while /proc/self/mountinfo changes more
            // than 5 times a second, and on a loaded host such a boot stalled for good (every
            // job "waiting", sshd never started; systemd's own fix is this variable, systemd
            // PR 25638). A droplet's boot is not that busy with mounts on DigitalOcean either.
            .arg("--setenv=SYSTEMD_DEFAULT_MOUNT_RATE_LIMIT_BURST=1000")
            .args(&binds)
            .stdin(std::process::Stdio::null())
            .stdout(console)
            .stderr(console_err)
            // Its own process group: a Ctrl-C at localocean's terminal must not reach the
            // machines, localocean stops them in order.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| SysError::Spawn {
            command: "systemd-nspawn".into(),
            source,
        })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        sys::write_atomic(&p.pid(), pid.to_string().as_bytes(), 0o644)?;
        // Reap the process whenever it ends, so its pid never lingers as a zombie.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        self.wait_for_ssh(rec, pid, limit).await
    }

    async fn wait_for_ssh(&self, rec: &MachineRecord, pid: i32, limit: Duration) -> SysResult<()> {
        let deadline = Instant::now() + limit;
        loop {
            if !process::alive(pid) {
                return Err(SysError::Other(format!(
                    "droplet ({}) machine exited during boot; console log tail:\n{}",
                    rec.droplet_id,
                    tail(&self.paths(rec.droplet_id).console(), 1500)
                )));
            }
            if ssh_banner(rec.ipv4).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(SysError::Other(format!(
                    "droplet ({}) did not answer on {}:22 within {:?}; console log tail:\n{}",
                    rec.droplet_id,
                    rec.ipv4,
                    limit,
                    tail(&self.paths(rec.droplet_id).console(), 1500)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Files that differ per machine and are rewritten on every boot, in the overlay.
    fn write_instance_files(
        &self,
        rec: &MachineRecord,
        root: &Path,
        seed: Option<&Seed>,
    ) -> SysResult<()> {
        let bridge = self.cfg.subnet.bridge_ip();
        let put = |rel: &str, body: &str, mode: u32| {
            let path = root.join(rel);
            // The image may carry a symlink here (resolv.conf); never write through it.
            if std::fs::symlink_metadata(&path)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
            {
                std::fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
            sys::write_atomic(&path, body.as_bytes(), mode)
        };
        put("etc/resolv.conf", &format!("nameserver {bridge}\n"), 0o644)?;
        let host = hostname(&rec.name);
        put("etc/hostname", &format!("{host}\n"), 0o644)?;
        put(
            "etc/hosts",
            &format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                name = host
            ),
            0o644,
        )?;
        put(
            "etc/apt/apt.conf.d/01localocean-proxy",
            &format!("Acquire::http::Proxy \"http://{bridge}:{APT_PROXY_PORT}\";\n"),
            0o644,
        )?;
        if let Some(seed) = seed {
            let dir = "var/lib/cloud/seed/nocloud";
            put(&format!("{dir}/user-data"), &seed.user_data, 0o600)?;
            put(&format!("{dir}/meta-data"), &seed.meta_data, 0o600)?;
            for m in &seed.automounts {
                devices::write_automount(root, m)?;
            }
        }
        Ok(())
    }

    /// Stops the machine (orderly shutdown, then kill after `grace`), unmounts its root and
    /// removes its network; the upper dir and the record stay.
    async fn stop(&self, droplet_id: u64, grace: Duration) {
        let p = self.paths(droplet_id);
        if let Some(pid) = running_pid(&p.pid()) {
            // nspawn turns SIGTERM into an orderly shutdown of the machine's systemd.
            process::signal(pid, libc::SIGTERM);
            if !process::wait_exit(pid, grace).await {
                kill_tree(pid).await;
            }
        }
        let _ = std::fs::remove_file(p.pid());
        unmount(&p.merged()).await;
        net::delete_droplet_net(self.cfg.subnet, droplet_id).await;
        cgroup::remove(&machine_name(self.cfg.subnet.slot, droplet_id)).await;
        // Loop devices exist while their machine runs; the next boot makes them again.
        if let Ok(Some(rec)) = self.load(droplet_id) {
            for v in &rec.volumes {
                volume::release(&self.cfg.state, &v.id).await;
            }
        }
    }

    /// Boots every machine that should be on and is not running (after a localocean
    /// restart); machines whose nspawn is still alive are adopted as they are.
    pub async fn resume_all(&self) {
        let futs = self.records().into_iter().map(|rec| async move {
            let lock = self.lock(rec.droplet_id);
            let _g = lock.lock().await;
            if !rec.powered_on || self.running_pid(rec.droplet_id).is_some() {
                return;
            }
            self.stop(rec.droplet_id, Duration::ZERO).await;
            if let Err(e) = self.start(&rec, None).await {
                tracing::error!("restarting droplet ({}): {e}", rec.droplet_id);
            }
        });
        futures::future::join_all(futs).await;
    }

    /// Removes machines whose droplet the API no longer holds (a delete cut short by a
    /// crash). Run before the API serves, so no droplet created meanwhile looks orphaned.
    pub async fn remove_orphans(&self, droplet_ids: &[u64]) {
        for rec in self.records() {
            if !droplet_ids.contains(&rec.droplet_id) {
                tracing::warn!("removing machine of deleted droplet ({})", rec.droplet_id);
                if let Err(e) = self.delete(rec.droplet_id).await {
                    tracing::error!("removing droplet ({}): {e:#}", rec.droplet_id);
                }
            }
        }
    }

    /// Brings the machines in line with the API after a restart: volumes the API knows get
    /// a backing file; an active droplet without a machine (a create cut short) gets one,
    /// with a fresh disk; machines that should run are adopted or booted. Returns the
    /// machines created here, whose addresses the API must record.
    pub async fn restore(
        &self,
        active: Vec<MachineSpec>,
        volumes: &[VolumeSpec],
    ) -> Vec<(u64, MachineInfo)> {
        for v in volumes {
            if let Err(e) = volume::create(&self.cfg.state, v).await {
                tracing::error!("volume ({}): {e}", v.id);
            }
        }
        let have: Vec<u64> = self.records().iter().map(|r| r.droplet_id).collect();
        let mut created = Vec::new();
        for spec in active.into_iter().filter(|s| !have.contains(&s.droplet_id)) {
            let id = spec.droplet_id;
            tracing::warn!("droplet ({id}) had no machine; booting a fresh one");
            match self.create(spec).await {
                Ok(info) => created.push((id, info)),
                Err(e) => tracing::error!("booting droplet ({id}): {e:#}"),
            }
        }
        self.resume_all().await;
        created
    }

    /// Removes load balancers whose id the API no longer holds (a delete cut short).
    pub async fn remove_orphan_balancers(&self, ids: &[String]) {
        let _g = self.balancers.lock().await;
        for rec in balancer::read_records(&self.cfg.state) {
            if !ids.contains(&rec.id) {
                tracing::warn!("removing load balancer {} the API no longer holds", rec.id);
                if let Err(e) =
                    balancer::remove(&self.cfg.state, self.cfg.subnet, &rec.id, false).await
                {
                    tracing::error!("removing load balancer {}: {e}", rec.id);
                }
            }
        }
    }

    /// Stops every machine but keeps its disk and power setting, and every load balancer
    /// but keeps its files, for localocean's exit (the next start runs them again).
    pub async fn stop_all(&self) {
        {
            let mut closed = self.balancers.lock().await;
            *closed = true;
            for rec in balancer::read_records(&self.cfg.state) {
                if let Err(e) =
                    balancer::remove(&self.cfg.state, self.cfg.subnet, &rec.id, true).await
                {
                    tracing::warn!("stopping load balancer {}: {e}", rec.id);
                }
            }
        }
        let futs = self.records().into_iter().map(|rec| async move {
            let lock = self.lock(rec.droplet_id);
            let _g = lock.lock().await;
            self.stop(rec.droplet_id, Duration::from_secs(20)).await;
        });
        futures::future::join_all(futs).await;
    }

    /// Makes the droplet refuse SSH for `duration` (fault injection), then accept again.
    pub async fn refuse_ssh(&self, droplet_id: u64, duration: Duration) -> SysResult<()> {
        net::reject_ssh(self.cfg.subnet, droplet_id).await?;
        let subnet = self.cfg.subnet;
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            net::allow_ssh(subnet, droplet_id).await;
        });
        Ok(())
    }
}

/// What only a machine's first boot gets.
struct Seed {
    user_data: String,
    meta_data: String,
    /// Volumes mounted as DigitalOcean's automount does: (volume name, file system type).
    automounts: Vec<devices::Automount>,
}

impl Seed {
    fn new(spec: &MachineSpec) -> Self {
        let user_data = match &spec.user_data {
            Some(u) if !u.trim().is_empty() => u.clone(),
            _ => "#cloud-config\n{}\n".to_string(),
        };
        // JSON is YAML; `public-keys` is where DigitalOcean's datasource puts the droplet's
        // keys too, and cloud-init authorises them for root (disable_root is off).
        let meta = serde_json::json!({
            "instance-id": format!("droplet-{}", spec.droplet_id),
            "local-hostname": hostname(&spec.name),
            "public-keys": spec.ssh_public_keys,
        });
        Seed {
            user_data,
            meta_data: serde_json::to_string_pretty(&meta).expect("json"),
            automounts: spec
                .volumes
                .iter()
                .filter(|v| v.automount)
                .filter_map(|v| {
                    Some(devices::Automount {
                        volume_name: v.name.clone(),
                        fs_type: v.filesystem_type.clone()?,
                    })
                })
                .collect(),
        }
    }
}

#[async_trait]
impl Hypervisor for Nspawn {
    async fn create(&self, spec: MachineSpec) -> anyhow::Result<MachineInfo> {
        let lock = self.lock(spec.droplet_id);
        let _g = lock.lock().await;
        if self.load(spec.droplet_id)?.is_some() {
            anyhow::bail!("droplet ({}) already has a machine", spec.droplet_id);
        }
        for v in &spec.volumes {
            volume::check_exists(&self.cfg.state, &v.id)?;
            volume::check_name(&v.name)?;
        }
        let rec = {
            let mut last = self.alloc.lock().await;
            let mut rec = MachineRecord {
                droplet_id: spec.droplet_id,
                name: spec.name.clone(),
                image: spec.image.clone(),
                slot: self.cfg.subnet.slot,
                ipv4: self.allocate_ip(&mut last).await?,
                powered_on: true,
                memory_mib: spec.memory_mib,
                vcpus: spec.vcpus,
                volumes: Vec::new(),
                reserved_ipv4: None,
            };
            for v in &spec.volumes {
                let device = devices::free_device(&rec.volumes);
                rec.volumes.push(AttachedVolume {
                    id: v.id.clone(),
                    name: v.name.clone(),
                    device,
                });
            }
            // Recorded before anything is built, so a failed create is still cleaned up.
            self.save(&rec)?;
            rec
        };
        let seed = Seed::new(&spec);
        // A first boot that wedges is started again once, as a reboot would: seen under heavy
        // load, systemd in the machine left every job waiting (sysinit.target behind mount
        // units that never ran) and sshd never started. A third of the limit for the first try.
        let first = self.cfg.boot_timeout / 3;
        if let Err(e) = self.start_within(&rec, Some(&seed), first).await {
            tracing::warn!(droplet = spec.droplet_id, error = %e, "first boot did not finish; starting the machine again");
            self.stop(spec.droplet_id, Duration::from_secs(5)).await;
            self.start_within(&rec, None, self.cfg.boot_timeout - first)
                .await
                .map_err(|e| anyhow::anyhow!("booting droplet ({}): {e}", spec.droplet_id))?;
        }
        Ok(MachineInfo {
            ipv4: rec.ipv4,
            gateway: self.cfg.subnet.bridge_ip(),
            netmask: self.cfg.subnet.netmask(),
        })
    }

    async fn delete(&self, droplet_id: u64) -> anyhow::Result<()> {
        let lock = self.lock(droplet_id);
        let _g = lock.lock().await;
        // The droplet's volumes are detached with it (stop releases their loop devices);
        // their data stays.
        self.stop(droplet_id, Duration::from_secs(10)).await;
        let dir = self.paths(droplet_id).dir;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))?;
        }
        // A deleted snapshot this machine was the last to stand on goes now.
        disk_image::sweep(&self.cfg.state, &self.image_keys());
        Ok(())
    }

    async fn snapshot_droplet(&self, droplet_id: u64, image_id: u64) -> anyhow::Result<u64> {
        let lock = self.lock(droplet_id);
        let _g = lock.lock().await;
        let rec = self
            .load(droplet_id)?
            .ok_or_else(|| anyhow::anyhow!("droplet ({droplet_id}) has no machine"))?;
        let upper = self.paths(droplet_id).upper();
        Ok(disk_image::take(&self.cfg.state, &upper, &rec.image, image_id).await?)
    }

    async fn delete_image(&self, image_id: u64) -> anyhow::Result<()> {
        Ok(disk_image::delete(
            &self.cfg.state,
            image_id,
            &self.image_keys(),
        )?)
    }

    async fn power(&self, droplet_id: u64, action: Power) -> anyhow::Result<()> {
        let lock = self.lock(droplet_id);
        let _g = lock.lock().await;
        let mut rec = self
            .load(droplet_id)?
            .ok_or_else(|| anyhow::anyhow!("droplet ({droplet_id}) has no machine"))?;
        match action {
            Power::Off | Power::Shutdown => {
                let grace = if action == Power::Off {
                    Duration::from_secs(3)
                } else {
                    Duration::from_secs(60)
                };
                rec.powered_on = false;
                self.save(&rec)?;
                self.stop(droplet_id, grace).await;
            }
            Power::On => {
                rec.powered_on = true;
                self.save(&rec)?;
                if self.running_pid(droplet_id).is_none() {
                    self.stop(droplet_id, Duration::ZERO).await;
                    self.start(&rec, None).await?;
                }
            }
            Power::Reboot => {
                rec.powered_on = true;
                self.save(&rec)?;
                self.stop(droplet_id, Duration::from_secs(30)).await;
                self.start(&rec, None).await?;
            }
        }
        Ok(())
    }

    async fn resize(&self, droplet_id: u64, memory_mib: u32, vcpus: u32) -> anyhow::Result<()> {
        let lock = self.lock(droplet_id);
        let _g = lock.lock().await;
        let mut rec = self
            .load(droplet_id)?
            .ok_or_else(|| anyhow::anyhow!("droplet ({droplet_id}) has no machine"))?;
        // Limits are recorded only: without systemd on the host there is no cgroup manager
        // to apply them through, and tests do not depend on them.
        rec.memory_mib = memory_mib;
        rec.vcpus = vcpus;
        self.save(&rec)?;
        Ok(())
    }

    fn reserved_ip_pool(&self) -> Vec<Ipv4Addr> {
        self.cfg.subnet.reserved_ips()
    }

    fn load_balancer_pool(&self) -> Vec<Ipv4Addr> {
        self.cfg.subnet.load_balancer_ips()
    }

    async fn apply_load_balancer(&self, spec: &BalancerSpec) -> anyhow::Result<()> {
        let closed = self.balancers.lock().await;
        if *closed {
            anyhow::bail!(
                "localocean is stopping: load balancer {} not started",
                spec.id
            );
        }
        balancer::apply(&self.cfg.state, self.cfg.subnet, spec)
            .await
            .map_err(|e| anyhow::anyhow!("load balancer {} ({}): {e}", spec.id, spec.ip))
    }

    async fn delete_load_balancer(&self, id: &str) -> anyhow::Result<()> {
        let _g = self.balancers.lock().await;
        balancer::remove(&self.cfg.state, self.cfg.subnet, id, false)
            .await
            .map_err(|e| anyhow::anyhow!("deleting load balancer {id}: {e}"))
    }

    async fn set_reserved_ip(&self, droplet_id: u64, ip: Option<Ipv4Addr>) -> anyhow::Result<()> {
        let lock = self.lock(droplet_id);
        let _g = lock.lock().await;
        let mut rec = self
            .load(droplet_id)?
            .ok_or_else(|| anyhow::anyhow!("droplet ({droplet_id}) has no machine"))?;
        let old = rec.reserved_ipv4;
        rec.reserved_ipv4 = ip;
        self.save(&rec)?;
        // A machine that is off has no namespace: its next boot adds the address.
        let running = net::netns_exists(&self.cfg.subnet.netns_name(droplet_id)).await;
        if let Some(old) = old.filter(|o| Some(*o) != ip) {
            net::remove_reserved_ip(self.cfg.subnet, droplet_id, old).await;
            net::forget_neighbour(self.cfg.subnet, old).await;
        }
        if let (Some(ip), true) = (ip, running) {
            net::add_reserved_ip(self.cfg.subnet, droplet_id, ip).await?;
            net::forget_neighbour(self.cfg.subnet, ip).await;
        }
        Ok(())
    }

    async fn create_volume(&self, volume: &VolumeSpec) -> anyhow::Result<()> {
        Ok(volume::create(&self.cfg.state, volume).await?)
    }

    async fn resize_volume(&self, volume: &VolumeSpec) -> anyhow::Result<()> {
        Ok(volume::resize(&self.cfg.state, volume).await?)
    }

    async fn delete_volume(&self, volume_id: &str) -> anyhow::Result<()> {
        if let Some(rec) = self
            .records()
            .into_iter()
            .find(|r| r.volumes.iter().any(|v| v.id == volume_id))
        {
            anyhow::bail!(
                "volume ({volume_id}) is attached to droplet ({})",
                rec.droplet_id
            );
        }
        Ok(volume::delete(&self.cfg.state, volume_id).await?)
    }

    async fn snapshot_volume(&self, volume: &VolumeSpec, snapshot_id: &str) -> anyhow::Result<u64> {
        let leaders: Vec<i32> = self
            .records()
            .into_iter()
            .filter(|r| r.volumes.iter().any(|v| v.id == volume.id))
            .filter_map(|r| self.leader_pid(r.droplet_id))
            .collect();
        Ok(volume::snapshot(&self.cfg.state, &volume.id, snapshot_id, &leaders).await?)
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> anyhow::Result<()> {
        Ok(volume::delete_snapshot(&self.cfg.state, snapshot_id)?)
    }

    async fn attach_volume(&self, droplet_id: u64, volume: &VolumeSpec) -> anyhow::Result<()> {
        let lock = self.lock(droplet_id);
        let _g = lock.lock().await;
        let mut rec = self
            .load(droplet_id)?
            .ok_or_else(|| anyhow::anyhow!("droplet ({droplet_id}) has no machine"))?;
        volume::check_exists(&self.cfg.state, &volume.id)?;
        if let Some(other) = self
            .records()
            .into_iter()
            .find(|r| r.droplet_id != droplet_id && r.volumes.iter().any(|v| v.id == volume.id))
        {
            anyhow::bail!(
                "volume ({}) is already attached to droplet ({})",
                volume.id,
                other.droplet_id
            );
        }
        if rec.volumes.iter().any(|v| v.id == volume.id) {
            return Ok(());
        }
        volume::check_name(&volume.name)?;
        let attached = AttachedVolume {
            id: volume.id.clone(),
            name: volume.name.clone(),
            device: devices::free_device(&rec.volumes),
        };
        // A machine that is off gets the disk at its next boot.
        if let Some(leader) = self.leader_pid(droplet_id) {
            let dev = volume::loop_device(&self.cfg.state, &volume.id).await?;
            let plugged = async {
                devices::plug(leader, &dev, &attached.device).await?;
                devices::link_by_id(&self.paths(droplet_id).by_id(), &attached)
            };
            if let Err(e) = plugged.await {
                volume::release(&self.cfg.state, &volume.id).await;
                return Err(e.into());
            }
        }
        rec.volumes.push(attached);
        self.save(&rec)?;
        Ok(())
    }

    async fn detach_volume(&self, droplet_id: u64, volume: &VolumeSpec) -> anyhow::Result<()> {
        let lock = self.lock(droplet_id);
        let _g = lock.lock().await;
        let Some(mut rec) = self.load(droplet_id)? else {
            return Ok(());
        };
        let Some(attached) = rec.volumes.iter().find(|v| v.id == volume.id).cloned() else {
            return Ok(());
        };
        // As a hot unplug: the disk goes even when the machine has it mounted; what the
        // machine wrote before reaches the volume, nothing after (volume::unplug).
        volume::unplug(&self.cfg.state, &volume.id).await?;
        devices::unlink_by_id(&self.paths(droplet_id).by_id(), &attached)?;
        if let Some(leader) = self.leader_pid(droplet_id) {
            devices::unplug(leader, &attached.device).await?;
        }
        rec.volumes.retain(|v| v.id != volume.id);
        self.save(&rec)?;
        Ok(())
    }
}

pub fn read_records(state: &StateDir) -> Vec<MachineRecord> {
    let Ok(entries) = std::fs::read_dir(state.machines()) else {
        return Vec::new();
    };
    let mut out: Vec<MachineRecord> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("machine.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .map(with_devices)
        .collect();
    out.sort_by_key(|r| r.droplet_id);
    out
}

/// A record written before volumes had disk names gets them.
fn with_devices(mut rec: MachineRecord) -> MachineRecord {
    devices::name_devices(&mut rec.volumes);
    rec
}

fn running_pid(pid_file: &Path) -> Option<i32> {
    // A recycled pid must not be mistaken for our machine.
    process::recorded(pid_file, |args| {
        args.iter().any(|a| a.contains("systemd-nspawn"))
    })
}

/// The machine's PID 1: nspawn's child in another pid namespace.
fn leader_of(nspawn_pid: i32) -> Option<i32> {
    let my_ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let children =
        std::fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .find(|c| {
            std::fs::read_link(format!("/proc/{c}/ns/pid"))
                .map(|ns| ns != my_ns)
                .unwrap_or(false)
        })
}

/// Kills nspawn and the machine's processes when an orderly shutdown did not finish.
async fn kill_tree(nspawn_pid: i32) {
    if let Some(leader) = leader_of(nspawn_pid) {
        // Killing the container's PID 1 tears down its whole pid namespace.
        process::signal(leader, libc::SIGKILL);
    }
    process::signal(nspawn_pid, libc::SIGKILL);
    process::wait_exit(nspawn_pid, Duration::from_secs(10)).await;
}

async fn unmount(path: &Path) {
    if !sys::is_mounted(path) {
        return;
    }
    let p = path.to_string_lossy().into_owned();
    // Recursive: anything mounted below the root goes with it.
    if !sys::run_quiet("umount", &["-R", p.as_str()]).await {
        // Something still holds it (a process not yet reaped): detach it lazily.
        sys::run_quiet("umount", &["-l", p.as_str()]).await;
    }
}

/// The droplet name as a valid host name (nspawn refuses others): DigitalOcean names
/// allow characters a host name does not.
fn hostname(name: &str) -> String {
    let h: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let h = h.trim_matches(|c| c == '-' || c == '.').to_string();
    if h.is_empty() {
        "droplet".into()
    } else {
        h
    }
}

/// True when `ip:22` accepts TCP and sends an SSH identification line.
pub async fn ssh_banner(ip: Ipv4Addr) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((ip, 22)).await.ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.ok()?;
        (&buf == b"SSH-").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(()))
    )
}

fn tail(path: &Path, max: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let start = s.len().saturating_sub(max);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// Removes every machine and load balancer recorded in `state` (processes, mounts,
/// namespaces, directories), whether or not localocean is still running: `localocean down`
/// after a crash.
pub async fn purge(state: &StateDir, subnet: Subnet) {
    balancer::purge(state, subnet).await;
    let nspawn = Nspawn::new(NspawnConfig::new(state.clone(), subnet));
    for rec in nspawn.records() {
        if let Err(e) = nspawn.delete(rec.droplet_id).await {
            tracing::warn!("removing droplet ({}): {e}", rec.droplet_id);
        }
    }
    // Directories without a readable record (a create that died early).
    if let Ok(entries) = std::fs::read_dir(state.machines()) {
        for e in entries.flatten() {
            if let Ok(id) = e.file_name().to_string_lossy().parse::<u64>() {
                let _ = nspawn.delete(id).await;
            }
        }
    }
    purge_volumes(state).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(user_data: Option<&str>) -> MachineSpec {
        MachineSpec {
            droplet_id: 42,
            name: "web_1.example".into(),
            image: "debian-12-x64".into(),
            user_data: user_data.map(str::to_string),
            ssh_public_keys: vec!["ssh-ed25519 AAAA k1".into()],
            volumes: vec![],
            memory_mib: 1024,
            vcpus: 1,
            disk_gib: 25,
        }
    }

    #[test]
    fn seed_authorises_request_keys_and_names_the_instance() {
        let seed = Seed::new(&spec(Some("#cloud-config\nruncmd: [true]\n")));
        assert_eq!(seed.user_data, "#cloud-config\nruncmd: [true]\n");
        let meta: serde_json::Value = serde_json::from_str(&seed.meta_data).unwrap();
        assert_eq!(meta["instance-id"], "droplet-42");
        assert_eq!(meta["local-hostname"], "web-1.example");
        assert_eq!(meta["public-keys"][0], "ssh-ed25519 AAAA k1");
    }

    #[test]
    fn seed_without_user_data_is_an_empty_cloud_config() {
        let seed = Seed::new(&spec(Some("  ")));
        assert!(seed.user_data.starts_with("#cloud-config\n"));
    }

    #[test]
    fn hostnames_are_valid_for_nspawn() {
        assert_eq!(hostname("tf-acc-test-1"), "tf-acc-test-1");
        assert_eq!(hostname("_weird name_"), "weird-name");
        assert_eq!(hostname("___"), "droplet");
        assert_eq!(hostname(&"a".repeat(100)).len(), 63);
    }
}
