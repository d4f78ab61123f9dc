//! terraform-provider-docker: the `docker_registry` resource builds a private Docker registry
//! on DigitalOcean (droplet, DNS, TLS, storage, users) and keeps it converged.

use std::collections::HashMap;

use tf_provider::DynamicResource;

pub mod config;
pub mod logging;
pub mod provider;
pub mod secret;

pub use provider::{DockerProvider, SettingsHandle};

/// The provider type name: resources are `docker_<name>`.
pub const PROVIDER_NAME: &str = "docker";

/// Every resource the provider serves, keyed by its name without the `docker_` prefix.
pub fn resources(_settings: &SettingsHandle) -> HashMap<String, Box<dyn DynamicResource>> {
    HashMap::new()
}
