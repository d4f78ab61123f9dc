//! Where the registry keeps its images when not on the droplet disk: a DigitalOcean volume
//! (`volume`) or a Spaces bucket (`spaces`), with plan-time checks and the destroy guard.
//!
//! The resource layer drives the lifecycle; this module gives it idempotent steps:
//! - volume: [`volume::ensure_volume`] → [`volume::attach`] → (registry runs at
//!   [`volume::mount_path`]) → [`volume::grow`] + [`volume::grow_filesystem`] →
//!   [`volume::volume_usage`] → [`volume::destroy_volume`].
//! - spaces: [`spaces::S3::ensure_bucket`] with the provider's credentials →
//!   [`spaces::mint_registry_key`] (the droplet's own, bucket-scoped key) → [`spaces::S3::usage`]
//!   → [`spaces::destroy_bucket`] + [`spaces::delete_registry_key`].

pub mod spaces;
pub mod volume;

use crate::do_api;
use crate::remote::RemoteError;

/// Regions where DigitalOcean offers Spaces, as DigitalOcean's own Terraform provider lists
/// them (`SpacesRegions`, from the availability matrix). A bucket lives in the droplet's region.
pub const SPACES_REGIONS: &[&str] = &[
    "ams3", "blr1", "fra1", "lon1", "nyc3", "sfo2", "sfo3", "sgp1", "syd1", "tor1",
];

/// What to do about storage that still holds images, said wherever destroy stops for it.
pub const FORCE_DESTROY_ADVICE: &str = "To delete it together with the stored images, set `force_destroy = true` in the `storage` block, run `apply`, then destroy again. To keep the images, move them out first (or `state rm` the registry and delete the rest by hand).";

/// DigitalOcean's volume sizes, in GiB.
pub const VOLUME_MIN_GIB: u64 = 1;
pub const VOLUME_MAX_GIB: u64 = 16384;

/// `Err` says why `region` cannot hold a bucket, listing the regions that can.
pub fn check_spaces_region(region: &str) -> Result<(), Error> {
    if SPACES_REGIONS.contains(&region) {
        Ok(())
    } else {
        Err(Error::NoSpacesInRegion {
            region: region.to_owned(),
        })
    }
}

/// What is wrong with a bucket name under the Spaces rules (a subset of S3's): 3 to 63
/// characters, lowercase letters, digits and `-`, starting and ending with a letter or digit,
/// not shaped like an IP address, none of S3's reserved prefixes and suffixes.
pub fn bucket_problem(name: &str) -> Option<String> {
    let len = name.len();
    if !(3..=63).contains(&len) {
        return Some(format!(
            "bucket name {name:?} has {len} characters; use 3 to 63"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "bucket name {name:?} holds {c:?}; use only lowercase letters, digits and `-`"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Some(format!(
            "bucket name {name:?} must start and end with a letter or digit"
        ));
    }
    if name.starts_with("xn--") || name.starts_with("sthree-") {
        return Some(format!(
            "bucket name {name:?} starts with a prefix S3 reserves (`xn--`, `sthree-`)"
        ));
    }
    if name.ends_with("-s3alias") || name.ends_with("--ol-s3") {
        return Some(format!(
            "bucket name {name:?} ends with a suffix S3 reserves (`-s3alias`, `--ol-s3`)"
        ));
    }
    None
}

/// Everything the storage steps fail with. Messages name the bucket or volume and its id;
/// no variant ever holds a secret key or a presigned URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Boxed: the API error is large, and most results here never carry one.
    #[error(transparent)]
    Api(Box<do_api::Error>),

    #[error(transparent)]
    Remote(#[from] RemoteError),

    /// The request to Spaces did not complete.
    #[error("{op} on bucket {bucket}: {message}")]
    S3Transport {
        op: &'static str,
        bucket: String,
        message: String,
    },

    /// Spaces answered with an error status; `code` and `message` come from its XML body.
    #[error("{op} on bucket {bucket}: Spaces answered {status} ({code}): {message}")]
    S3Status {
        op: &'static str,
        bucket: String,
        status: u16,
        code: String,
        message: String,
    },

    #[error("{op} on bucket {bucket}: unexpected response from Spaces: {detail}")]
    S3Payload {
        op: &'static str,
        bucket: String,
        detail: String,
    },

    /// `storage.keep_deleted_days` would replace lifecycle rules the bucket has of its own.
    #[error("bucket {bucket} has lifecycle rules of its own ({}): `storage.keep_deleted_days` sets the bucket's whole lifecycle configuration and would replace them; remove them, or leave `keep_deleted_days` unset and add a NoncurrentVersionExpiration rule to them yourself", rules.join(", "))]
    LifecycleTaken { bucket: String, rules: Vec<String> },

    /// Bucket names are global in Spaces: another account may hold this one.
    #[error("bucket {bucket} exists but these Spaces credentials may not use it (status {status}): the name is probably taken by another account; choose another `storage.bucket`")]
    BucketTaken { bucket: String, status: u16 },

    #[error("Spaces endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },

    #[error("no Spaces credentials: set `spaces_access_id` and `spaces_secret_key` in the provider block (or SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY)")]
    NoSpacesCredentials,

    /// The destroy guard: storage that holds images is kept unless `force_destroy` is set.
    #[error(
        "{kind} {name} ({id}) still holds {detail}, so it was kept and destroy stopped. {}",
        FORCE_DESTROY_ADVICE
    )]
    HoldsData {
        kind: &'static str,
        name: String,
        id: String,
        detail: String,
    },

    /// The destroy guard, when the storage cannot be looked into: presumed to hold images.
    #[error("{kind} {name} ({id}) could not be measured ({source}), so it is presumed to hold images; it was kept and destroy stopped. {}", FORCE_DESTROY_ADVICE)]
    Unmeasured {
        kind: &'static str,
        name: String,
        id: String,
        source: Box<Error>,
    },

    #[error("volume {name} ({id}) is attached to droplet {attached_to}, not {wanted}; detach it there first")]
    VolumeAttachedElsewhere {
        name: String,
        id: String,
        attached_to: u64,
        wanted: u64,
    },

    #[error("Spaces is not available in region {region:?}; `storage.backend = \"spaces\"` needs the registry in one of: {}", SPACES_REGIONS.join(", "))]
    NoSpacesInRegion { region: String },

    #[error("{gib} GiB is outside DigitalOcean's volume sizes, {VOLUME_MIN_GIB} to {VOLUME_MAX_GIB} GiB")]
    VolumeSize { gib: u64 },

    /// A planned size below the current one (plan time: no volume named yet).
    #[error("a volume can only grow: {current} GiB → {desired} GiB would shrink it (DigitalOcean cannot shrink volumes); keep {current} or more")]
    ResizeShrinks { current: u64, desired: u64 },

    #[error("volume ({id}) does not exist (deleted outside Terraform?)")]
    VolumeGone { id: String },

    #[error("volume {name} ({id}): `size_gib` can only grow: {current} GiB → {desired} GiB would shrink it")]
    VolumeShrink {
        name: String,
        id: String,
        current: u64,
        desired: u64,
    },

    /// The registry's data directory is not on the volume's device (not mounted, the volume
    /// not attached, another device there): what is there is not the volume.
    #[error("volume {name} is not what is mounted at {mount_path} on {host}: {why}")]
    NotOnVolume {
        name: String,
        mount_path: String,
        host: String,
        why: String,
    },

    #[error("growing the file system at {mount_path} on {host}: {detail}")]
    GrowFilesystem {
        mount_path: String,
        host: String,
        detail: String,
    },
}

impl From<do_api::Error> for Error {
    fn from(e: do_api::Error) -> Self {
        Error::Api(Box::new(e))
    }
}

impl Error {
    /// True for the destroy guard's refusal, which the resource reports as is.
    pub fn is_holds_data(&self) -> bool {
        matches!(self, Error::HoldsData { .. } | Error::Unmeasured { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_spaces_rules() {
        for ok in [
            "acme-registry",
            "abc",
            "a1b2c3",
            &"a".repeat(63),
            "0registry9",
        ] {
            assert_eq!(bucket_problem(ok), None, "{ok}");
        }
        let cases = [
            ("ab", "3 to 63"),
            (&"a".repeat(64) as &str, "3 to 63"),
            ("Acme", "'A'"),
            ("acme_registry", "'_'"),
            ("acme.registry", "'.'"),
            ("-acme", "start and end"),
            ("acme-", "start and end"),
            ("xn--acme", "prefix"),
            ("sthree-acme", "prefix"),
            ("acme-s3alias", "suffix"),
            ("acme--ol-s3", "suffix"),
        ];
        for (bad, why) in cases {
            let p = bucket_problem(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(p.contains(why), "{bad}: {p}");
            assert!(p.contains(&format!("{bad:?}")), "names the bucket: {p}");
        }
    }

    #[test]
    fn spaces_regions_are_checked_with_the_list() {
        for r in [
            "nyc3", "ams3", "sfo2", "sfo3", "sgp1", "fra1", "syd1", "blr1",
        ] {
            assert!(check_spaces_region(r).is_ok(), "{r}");
        }
        let e = check_spaces_region("nyc1").unwrap_err().to_string();
        assert!(e.contains("\"nyc1\""));
        for r in SPACES_REGIONS {
            assert!(e.contains(r), "{e}");
        }
    }

    #[test]
    fn destroy_guard_says_what_to_do() {
        let e = Error::HoldsData {
            kind: "bucket",
            name: "acme-registry".into(),
            id: "nyc3".into(),
            detail: "12 objects (3400 bytes)".into(),
        };
        let m = e.to_string();
        assert!(m.starts_with("bucket acme-registry (nyc3) still holds 12 objects"));
        assert!(m.contains("force_destroy = true"));
    }
}
