//! The `docker` provider: its schema, configuration, and the resources it serves.
//! Resources are built before configure runs, so they share the settings through a handle.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tf_provider::schema::Schema;
use tf_provider::value::ValueEmpty;
use tf_provider::{Diagnostics, DynamicResource, Provider};

use crate::config::{self, ProcessEnv, ProviderConfig, Settings};

/// Settings filled in by `configure`, read by the resources.
#[derive(Clone, Default)]
pub struct SettingsHandle(Arc<RwLock<Option<Arc<Settings>>>>);

impl SettingsHandle {
    pub fn set(&self, s: Settings) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(s));
    }

    /// The settings, or an error diagnostic when the provider was not configured.
    pub fn get(&self, diags: &mut Diagnostics) -> Option<Arc<Settings>> {
        let s = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        if s.is_none() {
            diags.root_error(
                "Provider not configured",
                "The docker provider was used before it was configured; this is a bug in the provider.",
            );
        }
        s
    }
}

#[derive(Default)]
pub struct DockerProvider {
    pub settings: SettingsHandle,
}

#[async_trait]
impl Provider for DockerProvider {
    type Config<'a> = ProviderConfig<'a>;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 1,
            block: config::schema_block(),
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::Config<'a>) -> Option<()> {
        config::validate(diags, &config);
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        terraform_version: String,
        config: Self::Config<'a>,
    ) -> Option<()> {
        let settings = config::resolve(diags, &config, &ProcessEnv, terraform_version)?;
        tracing::debug!(
            api_endpoint = %settings.api_endpoint,
            http_retry_max = settings.http_retry_max,
            requests_per_second = settings.requests_per_second,
            "provider configured"
        );
        self.settings.set(settings);
        Some(())
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(crate::resources(&self.settings))
    }
}
