//! The S3 side of Spaces: create, measure, empty and delete the registry's bucket (SigV4
//! presigned requests built by rusty-s3, sent with reqwest), and the registry's own key.
//!
//! Signing region: real Spaces accepts both the bucket's region and "us-east-1"; localocean's
//! Garage accepts exactly one, "us-east-1". So requests are signed for
//! [`DEFAULT_SIGNING_REGION`] unless told otherwise, while the endpoint carries the bucket's
//! region (`https://{region}.digitaloceanspaces.com`). Requests are path-style
//! (`<endpoint>/<bucket>/<key>`), which both accept.
//!
//! - `client`: the signed request, its retries and errors;
//! - `xml`: reading S3's answers;
//! - `bucket`: create (and the marker of a create in progress), measure, empty, delete;
//! - `keys`: the registry's own key and its storage settings.

mod bucket;
mod client;
mod keys;
mod xml;

#[cfg(test)]
pub(crate) mod scripted;

pub use bucket::{
    bucket_holds, destroy_bucket, keep_deleted_days, set_keep_deleted_days, BucketDestroyed,
    Created, LifecycleRule, Marker, Usage, CREATING_MARKER, KEEP_DELETED_RULE,
};
pub use client::{resolve_endpoint, DEFAULT_SIGNING_REGION, S3};
pub use keys::{delete_registry_key, mint_registry_key, registry_storage, RegistryKey};
