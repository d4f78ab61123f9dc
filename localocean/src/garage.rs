//! Spaces for localocean: a single-node Garage (S3-compatible) run as a child process, with
//! DigitalOcean's key grants (read / readwrite / fullaccess) converged onto Garage's bucket permissions.
//!
//! Design notes:
//! - Region: Garage accepts exactly one signing region (`s3_region`), while real Spaces accepts
//!   both the bucket's region ("ams3") and "us-east-1". [`GarageOptions::s3_region`] picks the
//!   one this instance accepts; its default, "us-east-1", is the choice that also works against
//!   real Spaces, so clients configured with it behave the same here and there.
//! - Grants are desired state: DigitalOcean lets a key name a bucket that does not exist yet
//!   and `fullaccess` covers every bucket, including ones created later, but Garage attaches
//!   permissions to existing buckets only. So the grants of every key issued here are kept
//!   (in `grants.json`, surviving a restart) and a converge loop applies them to Garage's
//!   buckets on every change and every [`RECONCILE_EVERY`], so a bucket created later picks up
//!   its grants within that period. No bucket is ever created on a key's behalf.
//! - Exposure: Garage binds its S3 API on a private loopback port. Clients reach it through
//!   TCP forwarders: one on `GarageOptions::s3_addr`, plus one per [`Garage::expose`] (the
//!   droplets' bridge IP), so nothing else is opened to the bridge and `stop` can close every
//!   client connection at once (Garage would otherwise wait 10 s for idle keep-alives).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::spaces::{Grant, IssuedKey, SpacesBackend};

/// Where `scripts/setup` installs Garage; `GARAGE_BIN` overrides it.
const DEFAULT_GARAGE_BIN: &str = ".cache/tf-docker-registry/garage-2.5.0/bin/garage";
/// How often grants are re-applied, which bounds how long a bucket created directly through
/// S3 waits for the grants that name it.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(500);
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Garage itself gives open connections 10 s after SIGTERM; this leaves it room to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Capacity announced in the layout; Garage needs a number, the disk is the real limit.
const NODE_CAPACITY_BYTES: u64 = 100 * 1024 * 1024 * 1024;
const ADMIN_KEY_NAME: &str = "localocean-spaces-admin";

/// Errors from Garage's admin API, named by endpoint; never carry the admin token.
#[derive(Debug, thiserror::Error)]
pub enum GarageError {
    #[error("garage not found at {0}: run scripts/setup")]
    NotFound(PathBuf),
    #[error("garage admin API {endpoint}: {source}")]
    Http {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("garage admin API {endpoint} answered {status}: {message}")]
    Api {
        endpoint: String,
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("garage admin API {endpoint}: unexpected response: {source}")]
    Payload {
        endpoint: String,
        #[source]
        source: serde_json::Error,
    },
}

impl GarageError {
    fn is_not_found(&self) -> bool {
        matches!(self, GarageError::Api { status, .. } if *status == reqwest::StatusCode::NOT_FOUND)
    }
}

/// How to run Garage.
#[derive(Clone, Debug)]
pub struct GarageOptions {
    /// The only region Garage accepts in request signatures (see the module notes).
    pub s3_region: String,
    /// Loopback address for the S3 API; port 0 picks a free one. A fixed port keeps the
    /// endpoint stable across restarts of localocean.
    pub s3_addr: SocketAddr,
}

impl Default for GarageOptions {
    fn default() -> Self {
        GarageOptions {
            s3_region: "us-east-1".into(),
            s3_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

/// The Garage binary: `GARAGE_BIN`, else the path `scripts/setup` installs to.
pub fn garage_bin() -> Result<PathBuf, GarageError> {
    let path = match std::env::var_os("GARAGE_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(DEFAULT_GARAGE_BIN)
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(GarageError::NotFound(path))
    }
}

/// The file holding the pid of the Garage started for `dir`, so `localocean down` can stop
/// it after localocean itself died.
pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join("garage.pid")
}

/// Stops a Garage left running for `dir` by a previous localocean (crash, kill -9). Only the
/// recorded pid is signalled, and only if that process still is a Garage using this `dir`'s
/// config, so a recycled pid is never hit. Returns whether a process was stopped.
pub async fn kill_stale(dir: &Path) -> anyhow::Result<bool> {
    // `start` records the canonical path in Garage's command line.
    let dir = &dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let file = pid_file(dir);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(false);
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        std::fs::remove_file(&file).ok();
        return Ok(false);
    };
    let config = config_path(dir);
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmd| {
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.iter()
                .any(|a| *a == config.as_os_str().as_encoded_bytes())
        })
        .unwrap_or(false);
    if ours {
        tracing::info!(pid, "stopping a Garage left over from a previous run");
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if alive(pid) {
            signal(pid, libc::SIGKILL);
        }
    }
    std::fs::remove_file(&file).ok();
    Ok(ours)
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether a process with this pid is still running; a zombie (exited, not yet reaped by
/// its parent) counts as gone.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // /proc/<pid>/stat is "pid (comm) state ..."; comm may contain spaces, so split after ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

fn config_path(dir: &Path) -> PathBuf {
    dir.join("garage.toml")
}

/// A running single-node Garage.
pub struct Garage {
    inner: Arc<Inner>,
    /// Behind a lock so that `shutdown` works through a shared `Arc<Garage>`.
    child: tokio::sync::Mutex<Child>,
    pid: u32,
    dir: PathBuf,
    s3_addr: SocketAddr,
    /// Where Garage itself listens for S3; only the forwarders connect to it.
    garage_s3: SocketAddr,
    reconciler: JoinHandle<()>,
    forwarders: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    admin: AdminClient,
    /// DigitalOcean-style grants per access key, the desired state.
    desired: Mutex<BTreeMap<String, KeyGrants>>,
    grants_file: PathBuf,
    /// Serialises converge runs so the background loop and an API call never interleave.
    converge_lock: tokio::sync::Mutex<()>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct KeyGrants {
    name: String,
    grants: Vec<Grant>,
}

impl Garage {
    /// Writes the config under `dir`, starts Garage, waits until it serves, and gives the node
    /// its single-node layout (once: a restart over the same `dir` keeps data, keys and layout).
    pub async fn start(dir: &Path, opts: &GarageOptions) -> anyhow::Result<Garage> {
        let bin = garage_bin()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        kill_stale(&dir).await?;

        // Clients go through this forwarder, not to Garage directly (see the module notes).
        let public = tokio::net::TcpListener::bind(opts.s3_addr)
            .await
            .with_context(|| format!("binding the Spaces S3 endpoint on {}", opts.s3_addr))?;
        let s3_addr = public.local_addr()?;
        let loopback = std::net::IpAddr::V4(Ipv4Addr::LOCALHOST);
        let garage_s3 = SocketAddr::new(loopback, free_port(loopback)?);
        let rpc_addr = SocketAddr::new(loopback, free_port(loopback)?);
        let admin_addr = SocketAddr::new(loopback, free_port(loopback)?);
        let admin_token = random_hex(32);
        let config = render_config(
            &dir,
            &opts.s3_region,
            garage_s3,
            rpc_addr,
            admin_addr,
            &admin_token,
        );
        write_private(&config_path(&dir), config.as_bytes())?;

        let log_path = dir.join("garage.log");
        // Garage logs every request line, presigned signatures included: owner-only.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(config_path(&dir))
            .arg("server")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("RUST_LOG", "garage=info")
            .env("NO_COLOR", "1")
            // Dropping the handle without `stop` (a panic in a test) must not leak a server.
            .kill_on_drop(true);
        // The sandbox's AWS_* settings (a CA bundle, credentials) are not Garage's business.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(&name);
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("garage exited at once")?;
        std::fs::write(pid_file(&dir), format!("{pid}\n"))?;

        let admin = AdminClient::new(admin_addr, admin_token)?;
        let ready = async {
            let node = wait_ready(&admin, &mut child, &log_path).await?;
            ensure_layout(&admin, &node).await?;
            wait_healthy(&admin, &mut child, &log_path).await
        };
        if let Err(e) = ready.await {
            child.start_kill().ok();
            child.wait().await.ok();
            std::fs::remove_file(pid_file(&dir)).ok();
            return Err(e);
        }

        let grants_file = dir.join("grants.json");
        let desired = match std::fs::read(&grants_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", grants_file.display()))?,
            Err(_) => BTreeMap::new(),
        };
        let inner = Arc::new(Inner {
            admin,
            desired: Mutex::new(desired),
            grants_file,
            converge_lock: tokio::sync::Mutex::new(()),
        });
        let reconciler = tokio::spawn(reconcile_loop(Arc::downgrade(&inner)));
        tracing::info!(pid, %s3_addr, region = %opts.s3_region, "garage started");
        Ok(Garage {
            inner,
            child: tokio::sync::Mutex::new(child),
            pid,
            dir,
            s3_addr,
            garage_s3,
            reconciler,
            forwarders: Mutex::new(vec![spawn_forwarder(public, garage_s3)]),
        })
    }

    /// The S3 endpoint on loopback (`GarageOptions::s3_addr`, with its port resolved).
    pub fn s3_endpoint(&self) -> SocketAddr {
        self.s3_addr
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the S3 API reachable at `addr` too (the bridge IP, for droplets) by forwarding
    /// TCP to the loopback endpoint. Port 0 picks a port; returns the bound address.
    pub async fn expose(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the Spaces forwarder on {addr}"))?;
        let bound = listener.local_addr()?;
        let task = spawn_forwarder(listener, self.garage_s3);
        self.forwarders.lock().expect("poisoned").push(task);
        tracing::info!(%bound, "Spaces S3 endpoint exposed");
        Ok(bound)
    }

    /// The provider's own Spaces credentials (SPACES_ACCESS_KEY_ID / SECRET): a full-access
    /// key that may create buckets and reaches every bucket. Issued once per `dir`.
    pub async fn admin_s3_key(&self) -> anyhow::Result<IssuedKey> {
        let path = self.dir.join("admin-key.json");
        if let Ok(bytes) = std::fs::read(&path) {
            let stored: StoredKey = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            match self.inner.admin.key_info(&stored.access_key).await {
                Ok(_) => {
                    return Ok(IssuedKey {
                        access_key: stored.access_key,
                        secret_key: stored.secret_key,
                    })
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let key = self
            .create_key(
                ADMIN_KEY_NAME,
                &[Grant {
                    bucket: String::new(),
                    permission: "fullaccess".into(),
                }],
            )
            .await?;
        let stored = StoredKey {
            access_key: key.access_key.clone(),
            secret_key: key.secret_key.clone(),
        };
        write_private(&path, &serde_json::to_vec(&stored)?)?;
        Ok(key)
    }

    /// Applies the desired grants to Garage now instead of at the next tick.
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        self.inner.converge().await
    }

    /// Stops forwarders, the converge loop and Garage (SIGTERM, then SIGKILL after a grace
    /// period), and removes the pid file.
    pub async fn stop(self) {
        self.shutdown().await;
    }

    /// `stop` for a shared handle; calling it again is harmless. Once it returned, the
    /// S3 endpoint refuses connections and `SpacesBackend` calls fail.
    pub async fn shutdown(&self) {
        self.reconciler.abort();
        let forwarders: Vec<_> = self
            .forwarders
            .lock()
            .expect("poisoned")
            .drain(..)
            .collect();
        for task in forwarders {
            task.abort();
            // Awaiting the cancelled task makes sure its client connections are closed
            // before Garage starts waiting for them.
            let _ = task.await;
        }
        let mut child = self.child.lock().await;
        // `id()` is None once the child was reaped, so a recycled pid is never signalled.
        if let Some(pid) = child.id() {
            signal(pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(pid = self.pid, "garage ignored SIGTERM; killing it");
            child.kill().await.ok();
        }
        std::fs::remove_file(pid_file(&self.dir)).ok();
        tracing::info!(pid = self.pid, "garage stopped");
    }
}

/// Forwards every connection accepted on `listener` to `target`. Connection tasks live in
/// the accept loop's set, so aborting the returned task closes them all.
fn spawn_forwarder(listener: tokio::net::TcpListener, target: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (mut inbound, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Spaces forwarder accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            while conns.try_join_next().is_some() {}
            conns.spawn(async move {
                match tokio::net::TcpStream::connect(target).await {
                    Ok(mut outbound) => {
                        outbound.set_nodelay(true).ok();
                        inbound.set_nodelay(true).ok();
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "Spaces forwarder cannot reach garage")
                    }
                }
            });
        }
    })
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    access_key: String,
    secret_key: String,
}

#[async_trait]
impl SpacesBackend for Garage {
    async fn create_key(&self, name: &str, grants: &[Grant]) -> anyhow::Result<IssuedKey> {
        let full = is_full_access(grants);
        let created: KeyInfo = self
            .inner
            .admin
            .post(
                "CreateKey",
                &[],
                &json!({ "name": name, "neverExpires": true, "allow": { "createBucket": full } }),
            )
            .await?;
        let secret = created
            .secret_access_key
            .context("garage CreateKey returned no secret key")?;
        let access = created.access_key_id;
        self.inner.set_desired(
            &access,
            KeyGrants {
                name: name.to_string(),
                grants: grants.to_vec(),
            },
        )?;
        if let Err(e) = self.inner.converge().await {
            // A key without its grants would look issued but not work: take it back.
            self.delete_key(&access).await.ok();
            return Err(e.context(format!("granting bucket access to spaces key ({access})")));
        }
        Ok(IssuedKey {
            access_key: access,
            secret_key: secret,
        })
    }

    async fn update_key(
        &self,
        access_key: &str,
        name: &str,
        grants: &[Grant],
    ) -> anyhow::Result<()> {
        let full = is_full_access(grants);
        let perm = json!({ "createBucket": true });
        let body = if full {
            json!({ "name": name, "allow": perm })
        } else {
            json!({ "name": name, "deny": perm })
        };
        let _: KeyInfo = self
            .inner
            .admin
            .post("UpdateKey", &[("id", access_key)], &body)
            .await
            .with_context(|| format!("updating spaces key ({access_key})"))?;
        self.inner.set_desired(
            access_key,
            KeyGrants {
                name: name.to_string(),
                grants: grants.to_vec(),
            },
        )?;
        self.inner
            .converge()
            .await
            .with_context(|| format!("granting bucket access to spaces key ({access_key})"))
    }

    async fn delete_key(&self, access_key: &str) -> anyhow::Result<()> {
        match self
            .inner
            .admin
            .post::<serde_json::Value>("DeleteKey", &[("id", access_key)], &json!({}))
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("deleting spaces key ({access_key})"))
                )
            }
        }
        self.inner.remove_desired(access_key)
    }
}

fn is_full_access(grants: &[Grant]) -> bool {
    grants.iter().any(|g| g.permission == "fullaccess")
}

/// Garage permissions for a DigitalOcean permission name. `fullaccess` is account-wide in
/// DigitalOcean ("cannot mix with scoped permissions"), hence owner on every bucket.
fn perms_for(grants: &[Grant], bucket_aliases: &[String]) -> Perms {
    if is_full_access(grants) {
        return Perms::ALL;
    }
    let mut p = Perms::NONE;
    for g in grants {
        if !bucket_aliases.contains(&g.bucket) {
            continue;
        }
        match g.permission.as_str() {
            "read" => p.read = true,
            "readwrite" => {
                p.read = true;
                p.write = true;
            }
            _ => {}
        }
    }
    p
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Perms {
    #[serde(default)]
    read: bool,
    #[serde(default)]
    write: bool,
    #[serde(default)]
    owner: bool,
}

impl Perms {
    const NONE: Perms = Perms {
        read: false,
        write: false,
        owner: false,
    };
    const ALL: Perms = Perms {
        read: true,
        write: true,
        owner: true,
    };
    fn minus(self, other: Perms) -> Perms {
        Perms {
            read: self.read && !other.read,
            write: self.write && !other.write,
            owner: self.owner && !other.owner,
        }
    }
    fn any(self) -> bool {
        self.read || self.write || self.owner
    }
}

impl Inner {
    fn set_desired(&self, access_key: &str, grants: KeyGrants) -> anyhow::Result<()> {
        let mut desired = self.desired.lock().expect("poisoned");
        desired.insert(access_key.to_string(), grants);
        self.persist(&desired)
    }

    fn remove_desired(&self, access_key: &str) -> anyhow::Result<()> {
        let mut desired = self.desired.lock().expect("poisoned");
        if desired.remove(access_key).is_some() {
            self.persist(&desired)?;
        }
        Ok(())
    }

    fn persist(&self, desired: &BTreeMap<String, KeyGrants>) -> anyhow::Result<()> {
        write_private(&self.grants_file, &serde_json::to_vec_pretty(desired)?)
    }

    /// Makes every bucket's permissions for our keys equal to what their grants say.
    async fn converge(&self) -> anyhow::Result<()> {
        let _guard = self.converge_lock.lock().await;
        let desired = self.desired.lock().expect("poisoned").clone();
        let mut buckets: Vec<BucketInfo> = self.admin.get("ListBucketsInfo", &[]).await?;
        for bucket in &mut buckets {
            self.globalise_aliases(bucket).await?;
            let have: HashMap<&str, Perms> = bucket
                .keys
                .iter()
                .map(|k| (k.access_key_id.as_str(), k.permissions))
                .collect();
            for (key, kg) in &desired {
                let want = perms_for(&kg.grants, &bucket.global_aliases);
                let has = have.get(key.as_str()).copied().unwrap_or_default();
                let add = want.minus(has);
                let remove = has.minus(want);
                if add.any() {
                    self.change_perms("AllowBucketKey", &bucket.id, key, add)
                        .await?;
                }
                if remove.any() {
                    self.change_perms("DenyBucketKey", &bucket.id, key, remove)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Garage's S3 CreateBucket names the bucket for the creating key only (a local alias);
    /// Spaces bucket names are global. So the name becomes a global alias, and the local one
    /// is dropped, since S3 DeleteBucket through a local alias would only remove that alias
    /// and leave the bucket behind.
    async fn globalise_aliases(&self, bucket: &mut BucketInfo) -> anyhow::Result<()> {
        let locals: Vec<(String, String)> = bucket
            .keys
            .iter()
            .flat_map(|k| {
                k.bucket_local_aliases
                    .iter()
                    .map(|a| (k.access_key_id.clone(), a.clone()))
            })
            .collect();
        if bucket.global_aliases.is_empty() {
            let Some((_, name)) = locals.first() else {
                return Ok(());
            };
            let body = json!({ "bucketId": bucket.id, "globalAlias": name });
            match self
                .admin
                .post::<serde_json::Value>("AddBucketAlias", &[], &body)
                .await
            {
                Ok(_) => bucket.global_aliases.push(name.clone()),
                // Another bucket already holds the name (two keys created it at once, which
                // real Spaces would have refused): this one stays private to its creator.
                Err(GarageError::Api {
                    status, message, ..
                }) if status.is_client_error() && status != reqwest::StatusCode::NOT_FOUND => {
                    tracing::warn!(bucket = %name, %message, "bucket name already taken; left local");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (key, alias) in locals {
            if !bucket.global_aliases.contains(&alias) {
                continue;
            }
            let body = json!({ "bucketId": bucket.id, "localAlias": alias, "accessKeyId": key });
            match self
                .admin
                .post::<serde_json::Value>("RemoveBucketAlias", &[], &body)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn change_perms(
        &self,
        endpoint: &str,
        bucket_id: &str,
        access_key: &str,
        perms: Perms,
    ) -> anyhow::Result<()> {
        let body =
            json!({ "bucketId": bucket_id, "accessKeyId": access_key, "permissions": perms });
        match self
            .admin
            .post::<serde_json::Value>(endpoint, &[], &body)
            .await
        {
            Ok(_) => Ok(()),
            // The key was deleted behind our back (or the bucket just now): nothing to grant.
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

async fn reconcile_loop(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(e) = inner.converge().await {
            tracing::warn!(error = %format!("{e:#}"), "applying Spaces key grants failed");
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyInfo {
    access_key_id: String,
    #[serde(default)]
    secret_access_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BucketInfo {
    id: String,
    global_aliases: Vec<String>,
    keys: Vec<BucketKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BucketKey {
    access_key_id: String,
    permissions: Perms,
    #[serde(default)]
    bucket_local_aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterStatus {
    layout_version: u64,
    nodes: Vec<NodeStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeStatus {
    id: String,
    #[serde(default)]
    role: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterHealth {
    status: String,
}

/// Garage's admin API v2: `POST /v2/<Endpoint>` with a JSON body, or `GET` with a query.
struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    fn new(addr: SocketAddr, token: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            // Idle keep-alive connections would hold Garage's shutdown for its 10 s deadline.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(AdminClient {
            http,
            base: format!("http://{addr}/v2"),
            token,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T, GarageError> {
        let req = self
            .http
            .get(format!("{}/{endpoint}", self.base))
            .query(query);
        self.send(endpoint, req).await
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<T, GarageError> {
        let req = self
            .http
            .post(format!("{}/{endpoint}", self.base))
            .query(query)
            .json(body);
        self.send(endpoint, req).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, GarageError> {
        let http_err = |source: reqwest::Error| GarageError::Http {
            endpoint: endpoint.to_string(),
            source: source.without_url(),
        };
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(http_err)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http_err)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            return Err(GarageError::Api {
                endpoint: endpoint.to_string(),
                status,
                message,
            });
        }
        // DeleteKey and friends answer with an empty body.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|source| GarageError::Payload {
            endpoint: endpoint.to_string(),
            source,
        })
    }

    async fn key_info(&self, access_key: &str) -> Result<KeyInfo, GarageError> {
        self.get("GetKeyInfo", &[("id", access_key)]).await
    }
}

/// Waits until the admin API answers and returns this node's id.
async fn wait_ready(
    admin: &AdminClient,
    child: &mut Child,
    log: &Path,
) -> anyhow::Result<NodeStatus> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "garage exited during startup ({status}); see {}",
                log.display()
            );
        }
        match admin.get::<ClusterStatus>("GetClusterStatus", &[]).await {
            Ok(mut s) if !s.nodes.is_empty() => {
                tracing::debug!(layout_version = s.layout_version, "garage admin API is up");
                return Ok(s.nodes.remove(0));
            }
            Ok(_) => {}
            Err(e) if Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(format!(
                    "waiting for garage to start; see {}",
                    log.display()
                )))
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Assigns the node a storage role and applies the layout, unless a previous run did.
async fn ensure_layout(admin: &AdminClient, node: &NodeStatus) -> anyhow::Result<()> {
    if node.role.is_some() {
        return Ok(());
    }
    let body = json!({
        "roles": [{ "id": node.id, "zone": "dc1", "capacity": NODE_CAPACITY_BYTES, "tags": [] }]
    });
    let layout: serde_json::Value = admin
        .post("UpdateClusterLayout", &[], &body)
        .await
        .context("staging the single-node garage layout")?;
    let version = layout
        .get("version")
        .and_then(|v| v.as_u64())
        .context("garage UpdateClusterLayout: no version in the response")?;
    let _: serde_json::Value = admin
        .post(
            "ApplyClusterLayout",
            &[],
            &json!({ "version": version + 1 }),
        )
        .await
        .context("applying the single-node garage layout")?;
    Ok(())
}

/// Waits until the cluster reports healthy, i.e. the layout is live and S3 calls will work.
async fn wait_healthy(admin: &AdminClient, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "garage exited during startup ({status}); see {}",
                log.display()
            );
        }
        match admin.get::<ClusterHealth>("GetClusterHealth", &[]).await {
            Ok(h) if h.status == "healthy" => return Ok(()),
            _ if Instant::now() >= deadline => {
                anyhow::bail!("garage did not become healthy; see {}", log.display())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn render_config(
    dir: &Path,
    region: &str,
    s3: SocketAddr,
    rpc: SocketAddr,
    admin: SocketAddr,
    admin_token: &str,
) -> String {
    let rpc_secret = random_hex(32);
    format!(
        r#"# Written by localocean at every start; edits are lost.
metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "{rpc}"
rpc_public_addr = "{rpc}"
rpc_secret = "{rpc_secret}"

[s3_api]
api_bind_addr = "{s3}"
s3_region = "{region}"

[admin]
api_bind_addr = "{admin}"
admin_token = "{admin_token}"
"#,
        meta = dir.join("meta").display(),
        data = dir.join("data").display(),
    )
}

fn free_port(ip: std::net::IpAddr) -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0))
        .with_context(|| format!("finding a free port on {ip}"))?;
    Ok(l.local_addr()?.port())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Writes a file readable by its owner only (it holds secrets), atomically.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(bucket: &str, permission: &str) -> Grant {
        Grant {
            bucket: bucket.into(),
            permission: permission.into(),
        }
    }

    #[test]
    fn grants_map_to_garage_permissions() {
        let b1 = vec!["b1".to_string()];
        assert_eq!(
            perms_for(&[g("b1", "read")], &b1),
            Perms {
                read: true,
                ..Perms::NONE
            }
        );
        assert_eq!(
            perms_for(&[g("b1", "readwrite")], &b1),
            Perms {
                read: true,
                write: true,
                owner: false
            }
        );
        assert_eq!(perms_for(&[g("b2", "readwrite")], &b1), Perms::NONE);
        assert_eq!(perms_for(&[g("", "fullaccess")], &b1), Perms::ALL);
        assert_eq!(perms_for(&[g("b1", "")], &b1), Perms::NONE);
    }

    #[test]
    fn perms_difference() {
        let rw = Perms {
            read: true,
            write: true,
            owner: false,
        };
        let r = Perms {
            read: true,
            ..Perms::NONE
        };
        assert_eq!(
            rw.minus(r),
            Perms {
                write: true,
                ..Perms::NONE
            }
        );
        assert!(!r.minus(rw).any());
    }
}
