//! What the API asks of the machines: boot, power, delete droplets; create, attach,
//! detach, resize, delete volumes; run, reconfigure and remove load balancers. The real implementation is systemd-nspawn (`machines`);
//! unit tests of the API may use a fake.

use std::net::Ipv4Addr;

use async_trait::async_trait;

use crate::balancer::BalancerSpec;

#[derive(Clone, Debug)]
pub struct MachineSpec {
    pub droplet_id: u64,
    pub name: String,
    /// Image: a base image's slug (`debian-12-x64`) or a Droplet snapshot's id.
    pub image: String,
    /// Cloud-init user data, as sent in the create request.
    pub user_data: Option<String>,
    /// OpenSSH public keys to authorise for root.
    pub ssh_public_keys: Vec<String>,
    /// Volumes attached at creation; those with `automount` are mounted at first boot.
    pub volumes: Vec<VolumeSpec>,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub disk_gib: u32,
}

#[derive(Clone, Debug)]
pub struct VolumeSpec {
    pub id: String,
    pub name: String,
    pub size_gib: u32,
    /// `ext4` or `xfs`: formatted at creation; `None` leaves the device blank.
    pub filesystem_type: Option<String>,
    pub filesystem_label: Option<String>,
    /// Mount it at the machine's first boot, as DigitalOcean does for a volume formatted at
    /// creation whose first attachment is the droplet's creation; never otherwise.
    pub automount: bool,
    /// The snapshot whose data the volume starts with (its file system comes with it).
    pub snapshot_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct MachineInfo {
    pub ipv4: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    On,
    Off,
    Reboot,
    /// Graceful shutdown.
    Shutdown,
}

#[async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    /// Allocates the machine's address and starts it; returns once it has booted
    /// (sshd accepting connections) or failed.
    async fn create(&self, spec: MachineSpec) -> anyhow::Result<MachineInfo>;
    /// Stops the machine and removes its upper dir, namespace and veth. Volumes stay.
    /// Succeeds when the machine is already gone.
    async fn delete(&self, droplet_id: u64) -> anyhow::Result<()>;
    async fn power(&self, droplet_id: u64, action: Power) -> anyhow::Result<()>;
    /// Copies the droplet's disk, running or not, as image `image_id` (a Droplet snapshot
    /// that machines can be created from); returns the bytes the copy holds.
    async fn snapshot_droplet(&self, droplet_id: u64, image_id: u64) -> anyhow::Result<u64>;
    /// Removes an image's copy; machines made from it keep running. Succeeds when it is
    /// gone already.
    async fn delete_image(&self, image_id: u64) -> anyhow::Result<()>;
    /// Changes memory/CPU limits (the machine is off during a DO resize).
    async fn resize(&self, droplet_id: u64, memory_mib: u32, vcpus: u32) -> anyhow::Result<()>;

    /// The addresses reserved IPs are made from: the instance's own, never a droplet's.
    fn reserved_ip_pool(&self) -> Vec<Ipv4Addr>;
    /// Makes `ip` an address of the droplet's machine beside its own (`None`: takes its
    /// reserved IP away). Kept across reboots; gone with the machine. Hosts and machines
    /// that cached the address's old owner ask again.
    async fn set_reserved_ip(&self, droplet_id: u64, ip: Option<Ipv4Addr>) -> anyhow::Result<()>;

    /// The addresses load balancers are given: the instance's own, never a droplet's or a
    /// reserved IP's.
    fn load_balancer_pool(&self) -> Vec<Ipv4Addr>;
    /// Runs the load balancer as `spec` says, at its address: started when it does not run,
    /// reconfigured in place when it does (connections to droplets it no longer lists
    /// finish, new ones go to the others). Applying the same spec again changes nothing.
    async fn apply_load_balancer(&self, spec: &BalancerSpec) -> anyhow::Result<()>;
    /// Stops it and removes its address; succeeds when it is already gone.
    async fn delete_load_balancer(&self, id: &str) -> anyhow::Result<()>;

    /// Makes the backing file (formatted when `filesystem_type` is set); it outlives
    /// droplets.
    async fn create_volume(&self, volume: &VolumeSpec) -> anyhow::Result<()>;
    /// Grows the device, online when attached; the file system is the user's to grow.
    async fn resize_volume(&self, volume: &VolumeSpec) -> anyhow::Result<()>;
    async fn delete_volume(&self, volume_id: &str) -> anyhow::Result<()>;
    /// Copies the volume's data as one point in time of the disk (file systems mounted from
    /// it are frozen meanwhile); the copy outlives the volume. Returns the bytes it holds.
    async fn snapshot_volume(&self, volume: &VolumeSpec, snapshot_id: &str) -> anyhow::Result<u64>;
    /// Removes a snapshot's copy; succeeds when it is gone already.
    async fn delete_snapshot(&self, snapshot_id: &str) -> anyhow::Result<()>;
    /// Appears in the machine as a block device,
    /// `/dev/disk/by-id/scsi-0DO_Volume_<name>`, running or not; never mounted.
    async fn attach_volume(&self, droplet_id: u64, volume: &VolumeSpec) -> anyhow::Result<()>;
    /// Disappears from the machine, even when mounted there (a hot unplug: the mounted
    /// file system gets I/O errors, the volume keeps what reached it before).
    async fn detach_volume(&self, droplet_id: u64, volume: &VolumeSpec) -> anyhow::Result<()>;
}
