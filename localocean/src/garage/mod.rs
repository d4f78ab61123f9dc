//! Spaces for localocean: a single-node Garage (S3-compatible) run as a child process, with
//! DigitalOcean's key grants (read / readwrite / fullaccess) converged onto Garage's bucket permissions.
//!
//! Design notes (each part in its own module: `process`, `admin`, `grants`, `forward`):
//! - Region: Garage accepts exactly one signing region (`s3_region`), while real Spaces accepts
//!   both the bucket's region ("ams3") and "us-east-1". [`GarageOptions::s3_region`] picks the
//!   one this instance accepts; its default, "us-east-1", is the choice that also works against
//!   real Spaces, so clients configured with it behave the same here and there.
//! - Grants are desired state: DigitalOcean lets a key name a bucket that does not exist yet
//!   and `fullaccess` covers every bucket, including ones created later, but Garage attaches
//!   permissions to existing buckets only. So the grants of every key issued here are kept
//!   (in `grants.json`, surviving a restart) and a converge loop applies them to Garage's
//!   buckets on every change, on every bucket PUT that succeeds (before the client has the
//!   answer: a new bucket is global and has its grants at once, as on Spaces) and, while S3
//!   requests come in, every [`RECONCILE_EVERY`]. No bucket is ever created on a key's behalf.
//! - Exposure: Garage binds its S3 API on a private loopback port. Clients reach it through
//!   HTTP forwarders: one on `GarageOptions::s3_addr`, plus one per [`Garage::expose`] (the
//!   droplets' bridge IP), so nothing else is opened to the bridge and `stop` can close every
//!   client connection at once (Garage would otherwise wait 10 s for idle keep-alives). They
//!   read each request, so the API's `spaces` faults answer there ([`Garage::set_faults`]).
//! - Versioning: Garage has none, so the forwarders add S3 bucket versioning (`versioning`):
//!   records here, noncurrent versions in a hidden bucket per versioned bucket that only
//!   localocean's own key reaches, and the version requests answered (and authenticated,
//!   `sigv4`) here. Unversioned buckets are served by Garage exactly as before.

mod admin;
mod forward;
mod grants;
mod process;
pub mod sigv4;
mod versioning;
mod versions;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::spaces::{Grant, IssuedKey, SpacesBackend};
use admin::{AdminClient, KeyInfo};
use grants::{is_full_access, Activity, Grants, KeyGrants};

pub use admin::GarageError;
pub use grants::{QUIET_FOR, RECONCILE_EVERY};
pub use process::{garage_bin, kill_stale, pid_file};

const ADMIN_KEY_NAME: &str = "localocean-spaces-admin";
/// The key localocean copies versions with: the only one that reaches the version stores.
const STORE_KEY_NAME: &str = "localocean-version-store";

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

/// A running single-node Garage.
pub struct Garage {
    grants: Arc<Grants>,
    /// Behind a lock so that `shutdown` works through a shared `Arc<Garage>`.
    child: tokio::sync::Mutex<Child>,
    pid: u32,
    dir: PathBuf,
    s3_addr: SocketAddr,
    /// Where Garage itself listens for S3; only the forwarders connect to it.
    garage_s3: SocketAddr,
    reconciler: JoinHandle<()>,
    forwarders: Mutex<Vec<JoinHandle<()>>>,
    faults: forward::FaultSlot,
    /// When the forwarders last saw a request: the converge loop polls only then.
    activity: Arc<Activity>,
    versioning: Arc<versioning::Versioning>,
    sweeper: JoinHandle<()>,
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
        let public = crate::net::bind_tcp_patiently(opts.s3_addr)
            .await
            .with_context(|| format!("binding the Spaces S3 endpoint on {}", opts.s3_addr))?;
        let s3_addr = public.local_addr()?;
        let listen = process::Listeners::pick()?;
        let admin_token = process::random_hex(32);
        let mut child = process::spawn(&bin, &dir, &opts.s3_region, &listen, &admin_token)?;
        let pid = child.id().context("garage exited at once")?;
        let admin = AdminClient::new(listen.admin, admin_token)?;
        process::wait_serving(&admin, &mut child, &dir).await?;

        let grants = Arc::new(Grants::load(admin, dir.join("grants.json"))?);
        // The version stores' key is not the provider's (`admin_s3_key`): a ListBuckets with
        // that one must not show them.
        let store_key = ensure_own_key(&grants, &dir, STORE_KEY_NAME, "versions-key.json")
            .await
            .context("issuing localocean's version-store key")?;
        grants.set_store_key(&store_key.access_key);
        let versioning = Arc::new(versioning::Versioning::load(
            dir.join("versions.json"),
            Arc::downgrade(&grants),
            listen.s3,
            &opts.s3_region,
            store_key,
        )?);
        let sweeper = tokio::spawn(versioning::sweep_loop(Arc::downgrade(&versioning)));
        let activity = Arc::new(Activity::new());
        let reconciler = tokio::spawn(grants::reconcile_loop(
            Arc::downgrade(&grants),
            activity.clone(),
        ));
        tracing::info!(pid, %s3_addr, region = %opts.s3_region, "garage started");
        let faults = forward::FaultSlot::default();
        let weak_grants = Arc::downgrade(&grants);
        Ok(Garage {
            grants,
            child: tokio::sync::Mutex::new(child),
            pid,
            dir,
            s3_addr,
            garage_s3: listen.s3,
            reconciler,
            forwarders: Mutex::new(vec![forward::spawn(
                public,
                listen.s3,
                faults.clone(),
                activity.clone(),
                weak_grants,
                versioning.clone(),
            )]),
            faults,
            activity,
            versioning,
            sweeper,
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
        let listener = crate::net::bind_tcp_patiently(addr)
            .await
            .with_context(|| format!("binding the Spaces forwarder on {addr}"))?;
        let bound = listener.local_addr()?;
        let task = forward::spawn(
            listener,
            self.garage_s3,
            self.faults.clone(),
            self.activity.clone(),
            Arc::downgrade(&self.grants),
            self.versioning.clone(),
        );
        self.forwarders.lock().expect("poisoned").push(task);
        tracing::info!(%bound, "Spaces S3 endpoint exposed");
        Ok(bound)
    }

    /// The faults every S3 endpoint of this Garage answers with (the API's `spaces` kind).
    pub fn set_faults(&self, faults: Arc<crate::faults::Faults>) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = Some(faults);
    }

    /// The provider's own Spaces credentials (SPACES_ACCESS_KEY_ID / SECRET): a full-access
    /// key that may create buckets and reaches every bucket. Issued once per `dir`.
    pub async fn admin_s3_key(&self) -> anyhow::Result<IssuedKey> {
        ensure_own_key(&self.grants, &self.dir, ADMIN_KEY_NAME, "admin-key.json").await
    }

    /// Whether `bucket`'s hidden version store exists in Garage (for tests).
    #[doc(hidden)]
    pub async fn version_store_exists(&self, bucket: &str) -> anyhow::Result<bool> {
        let name = versioning::hidden_bucket(bucket);
        match self
            .grants
            .admin
            .get::<serde_json::Value>("GetBucketInfo", &[("globalAlias", &name)])
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies the lifecycle rules on versions (noncurrent-version expiry, lone delete
    /// markers) as if it were `now`; they also run every minute. Returns how many versions
    /// went.
    pub async fn sweep_versions(&self, now: std::time::SystemTime) -> anyhow::Result<usize> {
        let ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        self.versioning.sweep(ms).await
    }

    /// Applies the desired grants to Garage now instead of at the next tick.
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        self.grants.converge().await
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
        self.sweeper.abort();
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
        process::stop(&mut *self.child.lock().await).await;
        std::fs::remove_file(pid_file(&self.dir)).ok();
        tracing::info!(pid = self.pid, "garage stopped");
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    access_key: String,
    secret_key: String,
}

#[async_trait]
impl SpacesBackend for Garage {
    async fn create_key(&self, name: &str, grants: &[Grant]) -> anyhow::Result<IssuedKey> {
        issue_key(&self.grants, name, grants).await
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
            .grants
            .admin
            .post("UpdateKey", &[("id", access_key)], &body)
            .await
            .with_context(|| format!("updating spaces key ({access_key})"))?;
        self.grants.set_desired(
            access_key,
            KeyGrants {
                name: name.to_string(),
                grants: grants.to_vec(),
            },
        )?;
        self.grants
            .converge()
            .await
            .with_context(|| format!("granting bucket access to spaces key ({access_key})"))
    }

    async fn delete_key(&self, access_key: &str) -> anyhow::Result<()> {
        match self
            .grants
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
        self.grants.remove_desired(access_key)
    }
}

/// One of localocean's own full-access keys, kept in `file` under `dir`: issued once per `dir`.
async fn ensure_own_key(
    grants: &Grants,
    dir: &Path,
    name: &str,
    file: &str,
) -> anyhow::Result<IssuedKey> {
    let path = dir.join(file);
    if let Ok(bytes) = std::fs::read(&path) {
        let stored: StoredKey = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        match grants.admin.key_info(&stored.access_key).await {
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
    let full = [Grant {
        bucket: String::new(),
        permission: "fullaccess".into(),
    }];
    let key = issue_key(grants, name, &full).await?;
    let stored = StoredKey {
        access_key: key.access_key.clone(),
        secret_key: key.secret_key.clone(),
    };
    write_private(&path, &serde_json::to_vec(&stored)?)?;
    Ok(key)
}

/// Creates a Garage key and gives it `grants`; the key is taken back if that fails.
async fn issue_key(grants: &Grants, name: &str, wanted: &[Grant]) -> anyhow::Result<IssuedKey> {
    let full = is_full_access(wanted);
    let created: KeyInfo = grants
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
    grants.set_desired(
        &access,
        KeyGrants {
            name: name.to_string(),
            grants: wanted.to_vec(),
        },
    )?;
    if let Err(e) = grants.converge().await {
        // A key without its grants would look issued but not work: take it back.
        grants
            .admin
            .post::<serde_json::Value>("DeleteKey", &[("id", &access)], &json!({}))
            .await
            .ok();
        grants.remove_desired(&access).ok();
        return Err(e.context(format!("granting bucket access to spaces key ({access})")));
    }
    Ok(IssuedKey {
        access_key: access,
        secret_key: secret,
    })
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
