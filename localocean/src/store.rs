//! The API's persistent state: every object the API holds, kept in memory and written to
//! `state_dir/api.json` atomically (temp file, rename) after every mutation.
//!
//! The state lock is held only to change the state and serialise it: the file is written
//! after, in mutation order, under a lock of its own. DNS answers and GETs read the state
//! and must never wait for the disk: with an fsync under the state lock, a loaded host
//! (debootstraps, volume images, docker's vfs layers) once stalled every request, DNS
//! included, for 12 s, and every test resolving a name at that moment failed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::{DomainRecord, Zone, ZoneSource};
use crate::spaces::Grant;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SshKey {
    pub id: u64,
    pub fingerprint: String,
    pub public_key: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkV4 {
    pub ip_address: String,
    pub netmask: String,
    pub gateway: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Droplet {
    pub id: u64,
    pub name: String,
    pub region: String,
    pub size: String,
    pub image: String,
    /// `new`, `active`, `off`.
    pub status: String,
    pub created_at: String,
    pub tags: Vec<String>,
    pub volume_ids: Vec<String>,
    pub networks_v4: Vec<NetworkV4>,
    pub ipv6: bool,
    pub monitoring: bool,
    pub vpc_uuid: String,
    /// Kept so the machine can be booted again after a restart of localocean.
    pub user_data: Option<String>,
    pub ssh_public_keys: Vec<String>,
    pub locked: bool,
    /// Disk in GiB; can differ from the size's after a resize without `disk`.
    #[serde(default)]
    pub disk: u32,
    /// Volumes its first boot mounts (DigitalOcean's automount, decided at create).
    #[serde(default)]
    pub automount_volume_ids: Vec<String>,
    /// Automated backups: the policy while they are enabled, `None` while they are not.
    #[serde(default)]
    pub backup_policy: Option<BackupPolicy>,
    /// Unix seconds of the last backup taken, or of when backups were enabled: a window is
    /// due only when it starts after this, so enabling backups mid-window waits for the
    /// next one and a window gets one backup. `None` (older state files) is the epoch.
    #[serde(default)]
    pub backups_since: Option<i64>,
}

/// A droplet's backup policy (`droplet_backup_policy` in the spec); the read-only window
/// length and retention follow from the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupPolicy {
    /// `daily` or `weekly`.
    pub plan: String,
    /// `SUN` to `SAT`; weekly plans only.
    pub weekday: Option<String>,
    /// Start of the window: 0, 4, 8, 12, 16 or 20 (UTC).
    pub hour: u32,
}

/// A Droplet snapshot: an `image` of type `snapshot` (and a `snapshots` entry with
/// `resource_type` droplet), a copy of the droplet's disk that outlives the droplet and that
/// droplets can be created from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DropletSnapshot {
    pub id: u64,
    pub name: String,
    /// The droplet it was taken from (it may be gone since).
    pub droplet_id: u64,
    pub region: String,
    pub created_at: String,
    /// The droplet's disk when it was taken: a droplet made from it needs at least this.
    pub min_disk_size: u32,
    /// The data it holds, in GB.
    pub size_gigabytes: f64,
    /// The distribution of the image the droplet was made from (`Debian`).
    pub distribution: String,
    pub tags: Vec<String>,
}

/// An automated Droplet backup: an `image` of type `backup`, a copy of the droplet's disk
/// taken in its policy's window, that droplets can be created from like a snapshot, and
/// that goes when its retention ends or with its droplet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DropletBackup {
    /// The fields it shares with a snapshot (it is the same kind of disk copy).
    #[serde(flatten)]
    pub image: DropletSnapshot,
    /// Unix seconds after which retention deletes it (`retention_period_days` of the
    /// policy it was taken under, so disabling backups does not cut it short).
    pub expires_at: i64,
}

/// A volume snapshot (`snapshots` in the spec, `resource_type` volume): a copy of the
/// volume's data that outlives the volume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    pub id: String,
    pub name: String,
    /// The volume it was taken from (it may be gone since).
    pub resource_id: String,
    pub region: String,
    pub created_at: String,
    /// The volume's size when it was taken: a volume made from it is at least this large.
    pub min_disk_size: u32,
    /// The data it holds, in GB (the copy's allocated blocks).
    pub size_gigabytes: f64,
    pub tags: Vec<String>,
    /// The volume's file system when it was taken: a volume made from it has the same.
    #[serde(default)]
    pub filesystem_type: String,
    #[serde(default)]
    pub filesystem_label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Action {
    pub id: u64,
    /// `in-progress`, `completed`, `errored`.
    pub status: String,
    #[serde(rename = "type")]
    pub action_type: String,
    pub started_at: String,
    pub completed_at: Option<String>,
    /// Droplet id for droplet actions; volumes have string ids, so DO leaves it null there.
    pub resource_id: Option<u64>,
    pub resource_type: String,
    pub region_slug: Option<String>,
    /// The volume of a volume action (not part of DO's JSON, which has no string resource id).
    #[serde(default)]
    pub volume_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Domain {
    pub name: String,
    pub ttl: u32,
    pub records: Vec<DomainRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub description: String,
    pub size_gigabytes: u32,
    pub region: String,
    pub created_at: String,
    pub tags: Vec<String>,
    pub filesystem_type: String,
    pub filesystem_label: String,
    pub droplet_ids: Vec<u64>,
    /// Whether it was ever attached: DigitalOcean automounts a volume on its first
    /// attachment only (and only when that is a droplet's creation).
    #[serde(default)]
    pub attached_before: bool,
    /// The snapshot it was made from, if any (its data came from there).
    #[serde(default)]
    pub snapshot_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Firewall {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub droplet_ids: Vec<u64>,
    pub tags: Vec<String>,
    /// Held as given (validated on the way in); enforcement on machines is out of scope.
    pub inbound_rules: Vec<serde_json::Value>,
    pub outbound_rules: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpacesKey {
    pub name: String,
    pub access_key: String,
    pub grants: Vec<Grant>,
    pub created_at: String,
}

/// An uptime check (`/v2/uptime/checks`) with its alerts; stored, never probed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UptimeCheck {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub check_type: String,
    pub target: String,
    pub regions: Vec<String>,
    pub enabled: bool,
    pub alerts: Vec<UptimeAlert>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UptimeAlert {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub alert_type: String,
    pub threshold: Option<i64>,
    pub comparison: Option<String>,
    /// `{"email": [...], "slack": [{"channel", "url"}]}`, as given.
    pub notifications: serde_json::Value,
    pub period: String,
}

/// A reserved IP: an address of the instance's network held by the account, assigned to at
/// most one droplet of its region (DigitalOcean's `reserved_ip`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReservedIp {
    pub ip: String,
    pub region: String,
    pub droplet_id: Option<u64>,
    /// An action on it is in progress; DigitalOcean refuses another meanwhile.
    pub locked: bool,
    pub project_id: String,
}

/// A load balancer (DigitalOcean's `load_balancer`): what the API was given, with the
/// spec's defaults filled in, plus what it assigned.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub id: String,
    pub name: String,
    /// Assigned at creation from the instance's load balancer addresses; shown once active.
    pub ip: String,
    /// `new`, `active`, `errored`.
    pub status: String,
    pub created_at: String,
    pub region: String,
    pub size_unit: u32,
    /// The deprecated `size`, echoed when it was given.
    pub size: Option<String>,
    pub forwarding_rules: Vec<crate::balancer::ForwardingRule>,
    pub health_check: crate::balancer::HealthCheck,
    pub sticky_sessions: crate::balancer::StickySessions,
    pub redirect_http_to_https: bool,
    pub enable_proxy_protocol: bool,
    pub enable_backend_keepalive: bool,
    pub http_idle_timeout_seconds: u32,
    pub disable_lets_encrypt_dns_records: bool,
    pub firewall: crate::balancer::LbFirewall,
    pub vpc_uuid: String,
    pub project_id: String,
    /// The droplets named by id (empty when `tag` names them).
    pub droplet_ids: Vec<u64>,
    /// Every droplet with this tag is behind it, as it is tagged; empty when by id.
    pub tag: String,
    pub tls_cipher_policy: String,
}

/// Everything the API persists. Maps are ordered so listings are stable (creation order
/// for numeric ids).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub next_id: u64,
    pub ssh_keys: BTreeMap<u64, SshKey>,
    pub droplets: BTreeMap<u64, Droplet>,
    pub actions: BTreeMap<u64, Action>,
    pub domains: BTreeMap<String, Domain>,
    /// Volume ids in creation order, since their ids are random UUIDs.
    pub volumes: Vec<Volume>,
    pub firewalls: Vec<Firewall>,
    pub spaces_keys: Vec<SpacesKey>,
    /// In creation order (random UUID ids). Absent from state files older than it.
    #[serde(default)]
    pub uptime_checks: Vec<UptimeCheck>,
    /// In creation order.
    #[serde(default)]
    pub reserved_ips: Vec<ReservedIp>,
    /// In creation order (random UUID ids).
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancer>,
    /// Volume snapshots, in creation order.
    #[serde(default)]
    pub volume_snapshots: Vec<VolumeSnapshot>,
    /// Droplet snapshots (images of type `snapshot`), in creation order.
    #[serde(default)]
    pub droplet_snapshots: Vec<DropletSnapshot>,
    /// Droplet backups (images of type `backup`), oldest first.
    #[serde(default)]
    pub droplet_backups: Vec<DropletBackup>,
}

impl State {
    /// One counter for every numeric id, so ids never repeat across kinds or restarts.
    pub fn new_id(&mut self) -> u64 {
        if self.next_id < 1000 {
            // Starting high makes ids look like DO's and keeps small literals in tests from
            // accidentally naming real objects.
            self.next_id = 3_000_000;
        }
        self.next_id += 1;
        self.next_id
    }
}

pub struct Store {
    path: PathBuf,
    state: Mutex<State>,
    /// Mutations so far, counted under the state lock (their order).
    changes: AtomicU64,
    /// The last mutation written to the file.
    written: Mutex<u64>,
}

impl Store {
    pub const FILE_NAME: &'static str = "api.json";

    /// Opens the store in `state_dir`, creating the directory; a missing file is an empty store.
    pub fn load(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(Self::FILE_NAME);
        let mut state: State = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        // A state written before `attached_before` existed: a volume attached now was
        // attached before, so a later droplet's creation never automounts it.
        for v in state
            .volumes
            .iter_mut()
            .filter(|v| !v.droplet_ids.is_empty())
        {
            v.attached_before = true;
        }
        Ok(Store {
            path,
            state: Mutex::new(state),
            changes: AtomicU64::new(0),
            written: Mutex::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a state that was either restored or fully
        // mutated (see `mutate`), so continuing with it is sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Runs `f` on the state and persists the result. If `f` fails, or the write fails,
    /// the state is restored to what it was, so a failed request changes nothing.
    pub fn mutate<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut State) -> Result<R, E>,
    ) -> Result<R, E> {
        let (r, bytes, change, before) = {
            let mut guard = self.lock();
            let before = guard.clone();
            let r = match f(&mut guard) {
                Ok(r) => r,
                Err(e) => {
                    *guard = before;
                    return Err(e);
                }
            };
            let bytes = match serde_json::to_vec_pretty(&*guard) {
                Ok(b) => b,
                Err(source) => {
                    *guard = before;
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        source,
                    }
                    .into());
                }
            };
            let change = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
            (r, bytes, change, before)
        };
        match blocking(|| self.persist(change, &bytes)) {
            Ok(()) => Ok(r),
            Err(e) => {
                // Undone unless a later mutation already built on it (then both stand in
                // memory and the next write carries them).
                let mut guard = self.lock();
                if self.changes.load(Ordering::SeqCst) == change {
                    *guard = before;
                }
                Err(e.into())
            }
        }
    }

    /// Writes mutation `change`'s state unless a later one is already on disk.
    fn persist(&self, change: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written >= change {
            return Ok(());
        }
        write_atomically(&self.path, bytes)?;
        *written = change;
        Ok(())
    }
}

/// Runs blocking file I/O from a request handler: on tokio's multi-thread runtime (`serve`)
/// its worker hands its other tasks (DNS answers among them) to another thread meanwhile.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Temp file and rename: a reader sees the old file or the new one, never a part. No
/// fsync: localocean's state need not survive a host crash, and an fsync on a loaded host
/// took seconds.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    // User data can carry an SSH host private key: owner-only, like DO's metadata service.
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?
    };
    file.write_all(bytes).map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// The DNS server makes the SOA itself (serial, timers); the listing's SOA row only carries
/// DO's TTL. Apex NS records are passed on: the server adds defaults only when there are none.
fn synthesised_by_dns(r: &DomainRecord) -> bool {
    r.record_type == "SOA"
}

impl ZoneSource for Store {
    fn zones(&self) -> Vec<Zone> {
        self.read(|s| {
            s.domains
                .values()
                .map(|d| Zone {
                    name: d.name.clone(),
                    ttl: d.ttl,
                    records: d
                        .records
                        .iter()
                        .filter(|r| !synthesised_by_dns(r))
                        .cloned()
                        .collect(),
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_attached_in_an_older_state_counts_as_attached_before() {
        let dir = tempfile::tempdir().unwrap();
        let volume = |id: &str, droplet_ids: &[u64]| {
            serde_json::json!({
                "id": id, "name": id, "description": "", "size_gigabytes": 1,
                "region": "nyc3", "created_at": "2026-01-01T00:00:00Z", "tags": [],
                "filesystem_type": "ext4", "filesystem_label": "", "droplet_ids": droplet_ids,
            })
        };
        let old = serde_json::json!({
            "next_id": 3_000_001, "ssh_keys": {}, "droplets": {}, "actions": {}, "domains": {},
            "volumes": [volume("attached", &[3_000_001]), volume("free", &[])],
            "firewalls": [], "spaces_keys": [],
        });
        std::fs::write(dir.path().join(Store::FILE_NAME), old.to_string()).unwrap();
        let store = Store::load(dir.path()).unwrap();
        let seen: Vec<(String, bool)> = store.read(|s| {
            s.volumes
                .iter()
                .map(|v| (v.id.clone(), v.attached_before))
                .collect()
        });
        assert_eq!(
            seen,
            [("attached".to_string(), true), ("free".to_string(), false)]
        );
    }

    /// Readers (DNS answers, GETs) never wait for the file: a write held up (here by holding
    /// its lock, as a slow disk would) leaves the new state readable, and the file follows.
    #[test]
    fn readers_do_not_wait_for_a_slow_write_and_the_file_follows_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::load(dir.path()).unwrap();
        let disk = store.written.lock().unwrap();
        std::thread::scope(|s| {
            let writer =
                s.spawn(|| store.mutate(|st| -> Result<u64, StoreError> { Ok(st.new_id()) }));
            let start = std::time::Instant::now();
            while store.read(|st| st.next_id) == 0 {
                assert!(start.elapsed() < std::time::Duration::from_secs(10));
                std::thread::yield_now();
            }
            // The mutation is visible while its write still waits.
            assert!(!writer.is_finished());
            let on_disk: State =
                serde_json::from_slice(&std::fs::read(store.path()).unwrap_or(b"{}".to_vec()))
                    .unwrap_or_default();
            assert_eq!(on_disk.next_id, 0);
            drop(disk);
            assert_eq!(writer.join().unwrap().unwrap(), 3_000_001);
        });
        let on_disk: State = serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(on_disk.next_id, 3_000_001);
    }
}
