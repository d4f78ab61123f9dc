//! DigitalOcean's key grants (read / readwrite / fullaccess) as desired state, converged onto
//! Garage's per-bucket key permissions on every change, and every [`RECONCILE_EVERY`] while
//! the S3 endpoints see requests (and [`QUIET_FOR`] after the last one).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::admin::{AdminClient, BucketInfo, GarageError};
use super::versioning::is_hidden;
use super::write_private;
use crate::spaces::Grant;

/// How often grants are re-applied while S3 requests come in: a safety net, since a bucket
/// made through S3 gets its grants before CreateBucket answers (the forwarders converge on
/// every bucket PUT) and key changes converge at once. Each pass costs Garage an argon2 check
/// of the admin token and a scan of every bucket: at 500 ms, while the tests' registries
/// pulled through Spaces, Garage used about 40 CPU-s of a whole test run.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// How long after the last S3 request the loop keeps polling at [`RECONCILE_EVERY`]. A bucket
/// can only appear through S3 (CreateBucket, through the forwarders) or through this
/// module's own calls, which converge at once; with no S3 request there is nothing new to
/// find, and each poll costs Garage a scan of every bucket (13 % of a core, measured idle).
pub const QUIET_FOR: Duration = Duration::from_secs(10);

/// How often the loop polls all the same when the S3 endpoints are quiet: a safety net for
/// a request that reached Garage by some other way.
const IDLE_EVERY: Duration = Duration::from_secs(30);

/// When the S3 forwarders last saw a request.
pub(super) struct Activity {
    base: Instant,
    /// Milliseconds since `base` plus one at the last request; 0: none yet.
    last: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A request was seen (called on its arrival and on its answer).
    pub(super) fn touch(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// Whether a request was seen within `window`.
    fn within(&self, window: Duration) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        last != 0
            && self.now().saturating_sub(last)
                <= u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The grants of every key issued here, persisted so they survive a restart, and the admin
/// client that applies them.
pub(super) struct Grants {
    pub(super) admin: AdminClient,
    /// DigitalOcean-style grants per access key, the desired state.
    desired: Mutex<BTreeMap<String, KeyGrants>>,
    file: PathBuf,
    /// Serialises converge runs so the background loop and an API call never interleave.
    converge_lock: tokio::sync::Mutex<()>,
    /// localocean's version-store key: the only one with access to the hidden version stores.
    store_key: Mutex<Option<String>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct KeyGrants {
    pub(super) name: String,
    pub(super) grants: Vec<Grant>,
}

pub(super) fn is_full_access(grants: &[Grant]) -> bool {
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
pub(super) struct Perms {
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
    pub(super) fn can_read(self) -> bool {
        self.read
    }
    pub(super) fn can_write(self) -> bool {
        self.write
    }
    pub(super) fn is_owner(self) -> bool {
        self.owner
    }
}

impl Grants {
    /// The grants saved in `file` by a previous run (none on a first start).
    pub(super) fn load(admin: AdminClient, file: PathBuf) -> anyhow::Result<Grants> {
        let desired = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", file.display()))?,
            Err(_) => BTreeMap::new(),
        };
        Ok(Grants {
            admin,
            desired: Mutex::new(desired),
            file,
            converge_lock: tokio::sync::Mutex::new(()),
            store_key: Mutex::new(None),
        })
    }

    pub(super) fn set_desired(&self, access_key: &str, grants: KeyGrants) -> anyhow::Result<()> {
        let mut desired = self.desired.lock().expect("poisoned");
        desired.insert(access_key.to_string(), grants);
        self.persist(&desired)
    }

    pub(super) fn set_store_key(&self, access_key: &str) {
        *self.store_key.lock().expect("poisoned") = Some(access_key.to_string());
    }

    /// What the key's grants give it on `bucket` (nothing for a key not issued here).
    pub(super) fn perms_of(&self, access_key: &str, bucket: &str) -> Perms {
        let desired = self.desired.lock().expect("poisoned");
        match desired.get(access_key) {
            Some(kg) if !is_hidden(bucket) => perms_for(&kg.grants, &[bucket.to_string()]),
            _ => Perms::NONE,
        }
    }

    pub(super) fn remove_desired(&self, access_key: &str) -> anyhow::Result<()> {
        let mut desired = self.desired.lock().expect("poisoned");
        if desired.remove(access_key).is_some() {
            self.persist(&desired)?;
        }
        Ok(())
    }

    fn persist(&self, desired: &BTreeMap<String, KeyGrants>) -> anyhow::Result<()> {
        write_private(&self.file, &serde_json::to_vec_pretty(desired)?)
    }

    /// Makes every bucket's permissions for our keys equal to what their grants say.
    pub(super) async fn converge(&self) -> anyhow::Result<()> {
        let _guard = self.converge_lock.lock().await;
        let desired = self.desired.lock().expect("poisoned").clone();
        let store_key = self.store_key.lock().expect("poisoned").clone();
        let mut buckets: Vec<BucketInfo> = self.admin.get("ListBucketsInfo", &[]).await?;
        for bucket in &mut buckets {
            self.globalise_aliases(bucket).await?;
            let have: HashMap<&str, Perms> = bucket
                .keys
                .iter()
                .map(|k| (k.access_key_id.as_str(), k.permissions))
                .collect();
            for (key, kg) in &desired {
                // A version store is localocean's alone, whatever a key's grants say.
                let want = if bucket.global_aliases.iter().any(|a| is_hidden(a)) {
                    if store_key.as_deref() == Some(key.as_str()) {
                        Perms::ALL
                    } else {
                        Perms::NONE
                    }
                } else {
                    perms_for(&kg.grants, &bucket.global_aliases)
                };
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

pub(super) async fn reconcile_loop(
    grants: std::sync::Weak<Grants>,
    activity: std::sync::Arc<Activity>,
) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_run = Instant::now();
    loop {
        tick.tick().await;
        let Some(grants) = grants.upgrade() else {
            return;
        };
        if !activity.within(QUIET_FOR) && last_run.elapsed() < IDLE_EVERY {
            continue;
        }
        last_run = Instant::now();
        if let Err(e) = grants.converge().await {
            tracing::warn!(error = %format!("{e:#}"), "applying Spaces key grants failed");
        }
    }
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
    fn activity_is_recent_only_after_a_request() {
        let a = Activity::new();
        assert!(!a.within(QUIET_FOR), "no request yet");
        a.touch();
        assert!(a.within(QUIET_FOR));
        assert!(a.within(Duration::from_millis(100)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !a.within(Duration::from_millis(10)),
            "30 ms ago is not within 10 ms"
        );
        assert!(a.within(QUIET_FOR));
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
