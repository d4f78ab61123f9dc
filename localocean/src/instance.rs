//! One localocean instance's identity, persisted in its state dir: network slot, ports and
//! API token. Slots are claimed with lock files so instances never share a subnet.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::machines::sys::{self, io_err, SysError, SysResult};
use crate::net::{Subnet, MAX_SLOTS};

pub const SLOTS_DIR: &str = "/run/localocean/slots";
const CONFIG_FILE: &str = "instance.json";

/// A secret that never prints (the API token).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceConfig {
    pub slot: u16,
    pub api_port: u16,
    pub dns_port: u16,
    pub s3_port: u16,
    /// More ports for services that need them (Garage RPC/admin...), by name.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    pub token: Secret,
}

/// Where a running instance publishes how to reach it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ready {
    pub api_url: String,
    pub token: Secret,
    pub dns: String,
    /// The recursive resolver (follows delegations from the zones); empty from an older
    /// instance.
    #[serde(default)]
    pub resolver: String,
    pub s3_url: String,
    pub pid: u32,
}

pub const APT_PROXY_PORT: u16 = 3142;

/// Paths inside a state dir.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    pub fn ready(&self) -> PathBuf {
        self.root.join("ready.json")
    }
    pub fn serve_pid(&self) -> PathBuf {
        self.root.join("serve.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("localocean.log")
    }
    pub fn machines(&self) -> PathBuf {
        self.root.join("machines")
    }
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }
    pub fn balancers(&self) -> PathBuf {
        self.root.join("balancers")
    }
    pub fn services(&self) -> PathBuf {
        self.root.join("services")
    }
}

/// Default state dir: `$LOCALOCEAN_STATE_DIR`, else `~/.local/state/localocean/default`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOCALOCEAN_STATE_DIR") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/state/localocean/default")
}

impl InstanceConfig {
    pub fn subnet(&self) -> Subnet {
        Subnet::new(self.slot)
    }

    pub fn load(dir: &StateDir) -> SysResult<Option<Self>> {
        let path = dir.config();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SysError::Other(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    pub fn save(&self, dir: &StateDir) -> SysResult<()> {
        let body = serde_json::to_vec_pretty(self).expect("config serialises");
        sys::write_atomic(&dir.config(), &body, 0o600)
    }

    /// Loads the instance config, or makes one (free ports, new token) on first start; in
    /// both cases the instance's slot is claimed. The bool is true when the token is new.
    pub fn load_or_create(dir: &StateDir) -> SysResult<(Self, bool)> {
        std::fs::create_dir_all(&dir.root).map_err(io_err("creating", &dir.root))?;
        if let Some(cfg) = Self::load(dir)? {
            claim_slot(&dir.root, Some(cfg.slot))?;
            return Ok((cfg, false));
        }
        let slot = claim_slot(&dir.root, None)?;
        let cfg = InstanceConfig {
            slot,
            api_port: slot_port(slot, 0)?,
            dns_port: slot_port(slot, 1)?,
            s3_port: slot_port(slot, 2)?,
            ports: BTreeMap::new(),
            token: Secret(format!(
                "dop_v1_{}",
                hex::encode(rand::random::<[u8; 32]>())
            )),
        };
        cfg.save(dir)?;
        Ok((cfg, true))
    }

    /// Moves the loopback ports (DNS, Spaces) that something else holds to free ones, and
    /// saves that: a slot's ports are its preference, not a promise (seen: the shared test
    /// instance's Spaces port held by another process through two starts of it, 3 s apart).
    /// A holder gets 5 s to let go first, so that a restart keeps its ports when it can.
    pub fn free_held_ports(&mut self, dir: &StateDir) -> SysResult<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !(bindable(self.dns_port) && bindable(self.s3_port)) {
            if std::time::Instant::now() > deadline {
                for (what, port) in [("dns", &mut self.dns_port), ("s3", &mut self.s3_port)] {
                    if !bindable(*port) {
                        let new = free_port()?;
                        tracing::warn!(
                            what,
                            held = *port,
                            new,
                            "port held by another process; using another"
                        );
                        *port = new;
                    }
                }
                return self.save(dir);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(())
    }

    /// A named extra port, allocated and persisted on first use.
    pub fn port(&mut self, dir: &StateDir, name: &str) -> SysResult<u16> {
        if let Some(p) = self.ports.get(name) {
            return Ok(*p);
        }
        let p = match NAMED_PORTS.iter().position(|n| *n == name) {
            Some(i) => slot_port(self.slot, 3 + i as u16)?,
            None => free_port()?,
        };
        self.ports.insert(name.to_string(), p);
        self.save(dir)?;
        Ok(p)
    }
}

/// Ports a slot owns: `PORTS_PER_SLOT` from `PORT_BASE + PORTS_PER_SLOT × slot` (25,100 to
/// 29,195 for 512 slots): above the ports OpenTofu gives its plugins and below the kernel's
/// ephemeral range. Slots are claimed atomically, so instances started at once never pick the
/// same port; random free ports did (seen: two instances, and once one instance's API and
/// Spaces, on one port).
const PORT_BASE: u16 = 25_100;
/// OpenTofu (as go-plugin) starts every provider with `PLUGIN_MIN_PORT=10000` and
/// `PLUGIN_MAX_PORT=25000`, and a provider listens on the first free port from the bottom:
/// an instance's port in that range, free for a moment while the instance restarts, was taken
/// by a provider a test had just started (seen: the restart test's DNS port 10009 held by
/// `terraform-provider-docker`, the held-port failure of earlier sessions).
const PLUGIN_PORTS: std::ops::RangeInclusive<u16> = 10_000..=25_000;
const PORTS_PER_SLOT: u16 = 8;
/// The named extra ports that have a place in the slot's ports (after api, dns and s3).
const NAMED_PORTS: &[&str] = &["resolver"];

/// Port `index` of `slot`; when something else holds it, a free port as before.
fn slot_port(slot: u16, index: u16) -> SysResult<u16> {
    debug_assert!(index < PORTS_PER_SLOT && slot < MAX_SLOTS);
    let port = PORT_BASE + slot * PORTS_PER_SLOT + index;
    if bindable(port) {
        Ok(port)
    } else {
        free_port()
    }
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback port that is free now, chosen below the kernel's ephemeral range: the instance
/// binds it again after every restart, and a port from the ephemeral range (what binding
/// port 0 returns) can meanwhile become the source port of any outgoing connection on the
/// machine (seen: "Address already in use" on a restart while other tests ran).
pub fn free_port() -> SysResult<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Above the slots' ports, which their instances may not have bound yet, and above the
    // plugins' (see `PLUGIN_PORTS`).
    let low = (PORT_BASE + MAX_SLOTS * PORTS_PER_SLOT).max(*PLUGIN_PORTS.end() + 1);
    let high = ephemeral_start.max(low + 100);
    for _ in 0..200 {
        let port = low + rand::random::<u16>() % (high - low);
        if bindable(port) {
            return Ok(port);
        }
    }
    Err(SysError::Other(format!(
        "no free loopback port between {low} and {high}"
    )))
}

fn slot_file(slot: u16) -> PathBuf {
    Path::new(SLOTS_DIR).join(format!("{slot}.lock"))
}

/// Held while slots are claimed or released: reading a stale lock, removing it and creating
/// ours is three steps, and two instances starting at once both took over the same stale
/// slot (seen in CI: the second one's bridge was "File exists").
struct SlotsLock {
    /// The lock lasts as long as the descriptor is open.
    _file: std::fs::File,
}

impl SlotsLock {
    fn take() -> SysResult<SlotsLock> {
        std::fs::create_dir_all(SLOTS_DIR).map_err(io_err("creating", Path::new(SLOTS_DIR)))?;
        let path = Path::new(SLOTS_DIR).join(".claim.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns; released when it is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err("locking", &path)(std::io::Error::last_os_error()));
        }
        Ok(SlotsLock { _file: f })
    }
}

/// Claims `preferred` (an instance keeps its subnet, so droplet addresses survive a
/// restart) or the lowest free slot. A lock whose owner state dir no longer exists is
/// stale (its instance was removed without `down`, e.g. a deleted temp dir).
pub fn claim_slot(state_dir: &Path, preferred: Option<u16>) -> SysResult<u16> {
    let _claiming = SlotsLock::take()?;
    let me = std::fs::canonicalize(state_dir).map_err(io_err("resolving", state_dir))?;
    let me_s = me.to_string_lossy().into_owned();
    let candidates: Vec<u16> = match preferred {
        Some(s) => vec![s],
        None => (0..MAX_SLOTS).collect(),
    };
    for slot in candidates {
        let path = slot_file(slot);
        if let Ok(owner) = std::fs::read_to_string(&path) {
            if owner.trim() == me_s {
                return Ok(slot);
            }
            if Path::new(owner.trim()).exists() {
                if preferred.is_some() {
                    return Err(SysError::Other(format!(
                        "network slot {slot} is held by another localocean instance ({})",
                        owner.trim()
                    )));
                }
                continue;
            }
        }
        if preferred.is_none() && leftover_bridge(slot) {
            // An instance that vanished without `down` (its state dir deleted, or its lock
            // file gone with /run) may still hold the slot's addresses: its processes would
            // keep ours from binding them. Its leftovers are not ours to remove; another
            // slot is.
            tracing::warn!(
                slot,
                "skipping network slot {slot}: its bridge exists, its instance is gone"
            );
            continue;
        }
        // A stale lock (owner gone) is replaced; no other claim runs meanwhile.
        let _ = std::fs::remove_file(&path);
        use std::io::Write;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(me_s.as_bytes())
                    .map_err(io_err("writing", &path))?;
                return Ok(slot);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("creating", &path)(e)),
        }
    }
    Err(SysError::Other(
        "no free network slot in 198.18.0.0/15 (512 instances running?)".into(),
    ))
}

/// Whether the slot's bridge exists (made by an instance of that slot, see
/// [`crate::net::ensure_bridge`]).
fn leftover_bridge(slot: u16) -> bool {
    Path::new("/sys/class/net")
        .join(Subnet::new(slot).bridge_name())
        .exists()
}

/// Frees the slot if this state dir holds it.
pub fn release_slot(state_dir: &Path, slot: u16) {
    let _releasing = SlotsLock::take();
    let path = slot_file(slot);
    let me = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    if let Ok(owner) = std::fs::read_to_string(&path) {
        if Path::new(owner.trim()) == me {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn slots_own_distinct_ports_below_the_free_ones() {
        let mut seen = std::collections::BTreeSet::new();
        for slot in [0, 1, MAX_SLOTS - 1] {
            for index in 0..PORTS_PER_SLOT {
                assert!(seen.insert(PORT_BASE + slot * PORTS_PER_SLOT + index));
            }
        }
        let top = *seen.iter().next_back().unwrap();
        assert!(top < PORT_BASE + MAX_SLOTS * PORTS_PER_SLOT);
        let free = free_port().unwrap();
        assert!(free > top, "{free} is among the slots' ports");
        assert!(
            PORT_BASE > *PLUGIN_PORTS.end(),
            "slots among the plugins' ports"
        );
        assert!(3 + NAMED_PORTS.len() as u16 <= PORTS_PER_SLOT);
    }
}
