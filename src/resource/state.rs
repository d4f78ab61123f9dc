//! The state model of `docker_registry`: plain serde structs over tf-provider's `Value`
//! (value, null, unknown), apart from the logic that fills them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tf_provider::value::{serde_as_vec, Value};

pub type S = Value<String>;
pub type N = Value<i64>;
pub type B = Value<bool>;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct UserState {
    pub password: S,
    pub password_bcrypt: S,
    pub access: S,
    /// The hash that reaches the droplet: `password_bcrypt`, or a hash of `password` made
    /// once and kept until the password changes, so an unchanged user never shows in a plan.
    pub bcrypt_hash: S,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TlsState {
    pub source: S,
    pub email: S,
    pub challenge: S,
    pub key_type: S,
    pub renew_before_days: N,
    pub revoke_on_destroy: B,
    pub caa: B,
    pub certificate_pem: S,
    pub private_key_pem: S,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StorageState {
    pub backend: S,
    pub size_gib: N,
    pub bucket: S,
    pub force_destroy: B,
    pub spaces_redirect: B,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TimeoutsState {
    pub create: S,
    pub update: S,
    pub delete: S,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RegistryState {
    // Arguments.
    pub name: S,
    pub region: S,
    pub size: S,
    pub image: S,
    pub droplet_generation: N,
    pub fqdn: S,
    pub ssh_key_fingerprints: Value<Vec<S>>,
    pub ssh_allowed_cidrs: Value<Vec<S>>,
    pub users: Value<BTreeMap<String, Value<UserState>>>,
    pub anonymous_pull: B,
    pub tags: Value<Vec<S>>,
    #[serde(with = "serde_as_vec")]
    pub tls: Value<TlsState>,
    #[serde(with = "serde_as_vec")]
    pub storage: Value<StorageState>,
    #[serde(with = "serde_as_vec")]
    pub timeouts: Value<TimeoutsState>,

    // Computed.
    pub id: S,
    pub droplet_id: N,
    pub ipv4_address: S,
    pub ipv6_address: S,
    pub url: S,
    pub domain: S,
    pub record_id: N,
    pub caa_record_id: N,
    pub aaaa_record_id: N,
    pub firewall_id: S,
    pub host_key_fingerprint: S,
    pub certificate_pem: S,
    pub certificate_not_after: S,
    pub ca_certificate_pem: S,
    pub registry_version: S,
    pub docker_config_json: S,
    pub storage_used_bytes: N,
    pub volume_id: S,
    pub spaces_endpoint: S,
    pub spaces_key_id: S,
    /// sha256 of every file the provider manages on the droplet, as last read.
    pub files_digest: Value<BTreeMap<String, S>>,

    // Computed secrets the provider made; sensitive, never printed.
    pub management_private_key: S,
    pub management_public_key: S,
    pub host_private_key: S,
    pub host_public_key: S,
    pub tls_private_key_pem: S,
    pub ca_private_key_pem: S,
    pub http_secret: S,
    pub acme_account_key: S,
    pub spaces_secret_key: S,
}

/// A known, non-empty string value.
pub fn known(v: &S) -> Option<&str> {
    v.as_ref_option()
        .map(|s| s.as_str())
        .filter(|s| !s.is_empty())
}
