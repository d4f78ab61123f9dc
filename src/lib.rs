//! terraform-provider-docker: the `docker_registry` resource builds a private Docker registry
//! on DigitalOcean (droplet, DNS, TLS, storage, users) and keeps it converged.

use std::collections::HashMap;

use tf_provider::DynamicResource;

pub mod acme;
pub mod config;
pub mod diag;
pub mod do_api;
pub mod docs;
pub mod error_chain;
pub mod logging;
pub mod provider;
pub mod remote;
pub mod render;
pub mod resource;
pub mod retention;
pub mod secret;
pub mod snapshot;
pub mod storage;
#[doc(hidden)]
pub mod testkit;
pub mod tls;

pub use provider::{DockerProvider, SettingsHandle};

/// The provider type name: resources are `docker_<name>`.
pub const PROVIDER_NAME: &str = "docker";

/// Every resource the provider serves, keyed by its name without the `docker_` prefix.
pub fn resources(settings: &SettingsHandle) -> HashMap<String, Box<dyn DynamicResource>> {
    let mut m: HashMap<String, Box<dyn DynamicResource>> = HashMap::new();
    m.insert(
        "registry".to_owned(),
        Box::new(resource::RegistryResource::new(settings.clone())),
    );
    m.insert(
        "registry_snapshot".to_owned(),
        Box::new(snapshot::SnapshotResource::new(settings.clone())),
    );
    m
}
