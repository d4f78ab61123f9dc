//! What the API asks of the machines: boot, power, delete droplets; create, attach,
//! detach, resize, delete volumes. The real implementation is systemd-nspawn (`machines`);
//! unit tests of the API may use a fake.

use std::net::Ipv4Addr;

use async_trait::async_trait;

#[derive(Clone, Debug)]
pub struct MachineSpec {
    pub droplet_id: u64,
    pub name: String,
    /// Image slug, e.g. `debian-12-x64`.
    pub image: String,
    /// Cloud-init user data, as sent in the create request.
    pub user_data: Option<String>,
    /// OpenSSH public keys to authorise for root.
    pub ssh_public_keys: Vec<String>,
    /// Volumes to attach at boot.
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
    pub filesystem_type: Option<String>,
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
    /// Changes memory/CPU limits (the machine is off during a DO resize).
    async fn resize(&self, droplet_id: u64, memory_mib: u32, vcpus: u32) -> anyhow::Result<()>;

    /// Makes the backing ext4 file; it outlives droplets.
    async fn create_volume(&self, volume: &VolumeSpec) -> anyhow::Result<()>;
    async fn resize_volume(&self, volume: &VolumeSpec) -> anyhow::Result<()>;
    async fn delete_volume(&self, volume_id: &str) -> anyhow::Result<()>;
    /// Appears in the machine at `/mnt/<volume name>`.
    async fn attach_volume(&self, droplet_id: u64, volume: &VolumeSpec) -> anyhow::Result<()>;
    async fn detach_volume(&self, droplet_id: u64, volume: &VolumeSpec) -> anyhow::Result<()>;
}
