//! What the API asks of Spaces: access keys with bucket grants that really work against
//! the S3 endpoint. The real implementation drives Garage (`garage` module).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub bucket: String,
    /// `read`, `readwrite` or `fullaccess` (DigitalOcean's names).
    pub permission: String,
}

#[derive(Clone, Debug)]
pub struct IssuedKey {
    pub access_key: String,
    pub secret_key: String,
}

#[async_trait]
pub trait SpacesBackend: Send + Sync + 'static {
    async fn create_key(&self, name: &str, grants: &[Grant]) -> anyhow::Result<IssuedKey>;
    /// Replaces the key's grants and name.
    async fn update_key(
        &self,
        access_key: &str,
        name: &str,
        grants: &[Grant],
    ) -> anyhow::Result<()>;
    async fn delete_key(&self, access_key: &str) -> anyhow::Result<()>;
}
