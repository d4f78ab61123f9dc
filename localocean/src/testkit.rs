//! Fakes for tests that exercise the API without machines or Garage: a hypervisor that boots
//! nothing and records each call, Spaces backends that refuse or record, and the API served
//! in-process on a loopback port. Shared by localocean's own tests and the provider's.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::api::{self, ApiConfig, App};
use crate::balancer::BalancerSpec;
use crate::hypervisor::{Hypervisor, MachineInfo, MachineSpec, Power, VolumeSpec};
use crate::spaces::{Grant, IssuedKey, SpacesBackend};

/// "Boots" instantly with addresses from 198.18.0.0/15 (198.18.0.2 first) and records each
/// call as one line: `create <id> <name> keys=<n> volumes=<n>`, `delete <id>`,
/// `power <id> <action>`, `resize <id> <mib> <vcpus>`, `create_volume <name> <gib>` (with
/// ` from <snapshot>` when made from one), `snapshot_volume <name> <snapshot>`,
/// `delete_snapshot <snapshot>`,
/// `resize_volume <name> <gib>`, `delete_volume <id>`, `attach_volume <droplet> <name>`,
/// `detach_volume <droplet> <name>`, `set_reserved_ip <droplet> <ip|none>`,
/// `apply_load_balancer <id> <ip> rules=<entry ports> droplets=<ids>`,
/// `delete_load_balancer <id>`. Reserved IPs come from 198.19.255.200 up, load balancers
/// from 198.19.255.150 up, far from its droplets' addresses.
#[derive(Default)]
pub struct NullHypervisor {
    calls: Mutex<Vec<String>>,
    next_ip: AtomicU32,
    /// The user data each machine was created with, by address: what its first boot (and a
    /// metadata service) would see.
    user_data: Mutex<std::collections::BTreeMap<Ipv4Addr, String>>,
}

impl NullHypervisor {
    fn log(&self, s: String) {
        self.calls.lock().expect("calls lock").push(s);
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// The user data of the machine at `ip`, if one was created there with some.
    pub fn user_data_of(&self, ip: &str) -> Option<String> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        self.user_data
            .lock()
            .expect("user data lock")
            .get(&ip)
            .cloned()
    }

    /// How many calls start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }
}

#[async_trait]
impl Hypervisor for NullHypervisor {
    async fn create(&self, spec: MachineSpec) -> anyhow::Result<MachineInfo> {
        let n = self.next_ip.fetch_add(1, Ordering::SeqCst) + 2;
        self.log(format!(
            "create {} {} keys={} volumes={}",
            spec.droplet_id,
            spec.name,
            spec.ssh_public_keys.len(),
            spec.volumes.len()
        ));
        let ipv4 = Ipv4Addr::new(198, 18, (n / 250) as u8, (n % 250) as u8);
        if let Some(u) = spec.user_data {
            self.user_data
                .lock()
                .expect("user data lock")
                .insert(ipv4, u);
        }
        Ok(MachineInfo {
            ipv4,
            gateway: Ipv4Addr::new(198, 18, 0, 1),
            netmask: Ipv4Addr::new(255, 254, 0, 0),
        })
    }
    async fn delete(&self, droplet_id: u64) -> anyhow::Result<()> {
        self.log(format!("delete {droplet_id}"));
        Ok(())
    }
    async fn power(&self, droplet_id: u64, action: Power) -> anyhow::Result<()> {
        self.log(format!("power {droplet_id} {action:?}"));
        Ok(())
    }
    async fn resize(&self, droplet_id: u64, memory_mib: u32, vcpus: u32) -> anyhow::Result<()> {
        self.log(format!("resize {droplet_id} {memory_mib} {vcpus}"));
        Ok(())
    }
    fn reserved_ip_pool(&self) -> Vec<Ipv4Addr> {
        crate::net::Subnet::new(511).reserved_ips()
    }
    async fn set_reserved_ip(&self, droplet_id: u64, ip: Option<Ipv4Addr>) -> anyhow::Result<()> {
        match ip {
            Some(ip) => self.log(format!("set_reserved_ip {droplet_id} {ip}")),
            None => self.log(format!("set_reserved_ip {droplet_id} none")),
        }
        Ok(())
    }
    fn load_balancer_pool(&self) -> Vec<Ipv4Addr> {
        crate::net::Subnet::new(511).load_balancer_ips()
    }
    async fn apply_load_balancer(&self, spec: &BalancerSpec) -> anyhow::Result<()> {
        let join = |v: Vec<String>| v.join(",");
        self.log(format!(
            "apply_load_balancer {} {} rules={} droplets={}",
            spec.id,
            spec.ip,
            join(
                spec.forwarding_rules
                    .iter()
                    .map(|r| r.entry_port.to_string())
                    .collect()
            ),
            join(
                spec.backends
                    .iter()
                    .map(|b| b.droplet_id.to_string())
                    .collect()
            ),
        ));
        Ok(())
    }
    async fn delete_load_balancer(&self, id: &str) -> anyhow::Result<()> {
        self.log(format!("delete_load_balancer {id}"));
        Ok(())
    }
    async fn create_volume(&self, v: &VolumeSpec) -> anyhow::Result<()> {
        match &v.snapshot_id {
            Some(snap) => self.log(format!(
                "create_volume {} {} from {snap}",
                v.name, v.size_gib
            )),
            None => self.log(format!("create_volume {} {}", v.name, v.size_gib)),
        }
        Ok(())
    }
    async fn snapshot_volume(&self, v: &VolumeSpec, snapshot_id: &str) -> anyhow::Result<u64> {
        self.log(format!("snapshot_volume {} {snapshot_id}", v.name));
        Ok(0)
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> anyhow::Result<()> {
        self.log(format!("delete_snapshot {snapshot_id}"));
        Ok(())
    }
    async fn snapshot_droplet(&self, droplet_id: u64, image_id: u64) -> anyhow::Result<u64> {
        self.log(format!("snapshot_droplet {droplet_id} {image_id}"));
        Ok(0)
    }
    async fn delete_image(&self, image_id: u64) -> anyhow::Result<()> {
        self.log(format!("delete_image {image_id}"));
        Ok(())
    }
    async fn resize_volume(&self, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("resize_volume {} {}", v.name, v.size_gib));
        Ok(())
    }
    async fn delete_volume(&self, id: &str) -> anyhow::Result<()> {
        self.log(format!("delete_volume {id}"));
        Ok(())
    }
    async fn attach_volume(&self, droplet_id: u64, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("attach_volume {droplet_id} {}", v.name));
        Ok(())
    }
    async fn detach_volume(&self, droplet_id: u64, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("detach_volume {droplet_id} {}", v.name));
        Ok(())
    }
}

/// A Spaces backend for tests that never mint keys: every call fails.
pub struct NoSpaces;

#[async_trait]
impl SpacesBackend for NoSpaces {
    async fn create_key(&self, _name: &str, _grants: &[Grant]) -> anyhow::Result<IssuedKey> {
        anyhow::bail!("no Spaces backend in this test")
    }
    async fn update_key(&self, _a: &str, _n: &str, _g: &[Grant]) -> anyhow::Result<()> {
        anyhow::bail!("no Spaces backend in this test")
    }
    async fn delete_key(&self, _access_key: &str) -> anyhow::Result<()> {
        anyhow::bail!("no Spaces backend in this test")
    }
}

/// A Spaces backend that issues keys in memory and records them as (access key, name, grants).
#[derive(Default)]
pub struct RecordingSpaces {
    pub keys: Mutex<Vec<(String, String, Vec<Grant>)>>,
}

#[async_trait]
impl SpacesBackend for RecordingSpaces {
    async fn create_key(&self, name: &str, grants: &[Grant]) -> anyhow::Result<IssuedKey> {
        let mut keys = self.keys.lock().expect("keys lock");
        let access_key = format!("DO00TEST{:012}", keys.len());
        keys.push((access_key.clone(), name.to_string(), grants.to_vec()));
        Ok(IssuedKey {
            access_key,
            secret_key: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0".into(),
        })
    }
    async fn update_key(
        &self,
        access_key: &str,
        name: &str,
        grants: &[Grant],
    ) -> anyhow::Result<()> {
        let mut keys = self.keys.lock().expect("keys lock");
        let k = keys
            .iter_mut()
            .find(|k| k.0 == access_key)
            .ok_or_else(|| anyhow::anyhow!("no such key"))?;
        k.1 = name.to_string();
        k.2 = grants.to_vec();
        Ok(())
    }
    async fn delete_key(&self, access_key: &str) -> anyhow::Result<()> {
        self.keys
            .lock()
            .expect("keys lock")
            .retain(|k| k.0 != access_key);
        Ok(())
    }
}

/// localocean's API served on a loopback port (port 0) by a task of the current runtime;
/// stopped when dropped.
pub struct ApiServer {
    pub app: Arc<App>,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub token: String,
    server: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Serves an `App` over `state_dir` accepting `token`, with DigitalOcean's rate limit
    /// raised so that tests are not throttled.
    pub async fn start(
        state_dir: &std::path::Path,
        token: &str,
        hv: Arc<dyn Hypervisor>,
        spaces: Arc<dyn SpacesBackend>,
    ) -> anyhow::Result<ApiServer> {
        let mut config = ApiConfig::new(state_dir.to_path_buf(), vec![token.to_string()]);
        config.rate_limit_per_minute = 100_000;
        let app = App::load(config, hv, spaces)?;
        Self::serve(app, token).await
    }

    /// Serves an existing `App` (a test that set its own `ApiConfig`).
    pub async fn serve(app: Arc<App>, token: &str) -> anyhow::Result<ApiServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = api::router(app.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(ApiServer {
            app,
            base: format!("http://{addr}"),
            token: token.to_string(),
            server,
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
