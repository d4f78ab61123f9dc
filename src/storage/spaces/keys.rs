//! The registry's own Spaces key, readwrite on its bucket only, and the S3 settings the
//! registry is rendered with: the droplet never holds the provider's credentials.

use super::client::S3;
use crate::do_api::{self, Grant, SpacesKeyCreateRequest};
use crate::secret::Secret;
use crate::storage::Error;

/// The registry's own Spaces key: readwrite on its bucket only. The secret is returned by
/// DigitalOcean once, at create: keep it in state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryKey {
    pub access_key: String,
    pub secret_key: Secret,
}

/// Mints the registry's own Spaces key, readwrite on `bucket` only, so the droplet never
/// holds the provider's broad credentials. `name` shows in DigitalOcean's key list.
pub async fn mint_registry_key(
    client: &do_api::Client,
    name: &str,
    bucket: &str,
) -> Result<RegistryKey, Error> {
    let created = client
        .create_spaces_key(&SpacesKeyCreateRequest {
            name: name.to_owned(),
            grants: vec![Grant {
                bucket: bucket.to_owned(),
                permission: "readwrite".into(),
            }],
        })
        .await?;
    Ok(RegistryKey {
        access_key: created.key.access_key,
        secret_key: created.secret_key,
    })
}

/// Revokes the registry's key; a key already gone is success.
pub async fn delete_registry_key(client: &do_api::Client, access_key: &str) -> Result<(), Error> {
    client.delete_spaces_key(access_key).await?;
    Ok(())
}

/// The registry's S3 driver settings: the same endpoint the provider uses (so in localocean
/// it must be one the droplets reach too, the bridge address rather than loopback), the
/// signing region as `region` (distribution skips its AWS region check when an endpoint is
/// set), and the registry's own key, never the provider's.
pub fn registry_storage(
    s3: &S3,
    bucket: &str,
    key: &RegistryKey,
    redirect: bool,
) -> crate::render::Storage {
    crate::render::Storage::Spaces {
        bucket: bucket.to_owned(),
        region: s3.signing_region().to_owned(),
        endpoint: s3.endpoint().as_str().trim_end_matches('/').to_owned(),
        access_key: key.access_key.clone(),
        secret_key: key.secret_key.clone(),
        redirect,
    }
}
