//! The state model of `docker_registry`: plain serde structs over tf-provider's `Value`
//! (value, null, unknown), apart from the logic that fills them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tf_provider::value::{serde_as_vec, Value};

pub type S = Value<String>;
pub type N = Value<i64>;
pub type B = Value<bool>;

/// One entry of `users`, as written in HCL: no computed attribute lives here (see `users`).
#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct UserState {
    pub password: S,
    pub password_bcrypt: S,
    /// Null means `push`.
    pub access: S,
}

/// A computed map by user name; an entry can be unknown in a plan (a hash made at apply).
pub type ByUser = Value<BTreeMap<String, S>>;

#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
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
    pub renew: S,
    pub renew_interval: S,
}

#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct StorageState {
    pub backend: S,
    pub size_gib: N,
    pub bucket: S,
    pub force_destroy: B,
    pub spaces_redirect: B,
    /// After an import with droplet-disk storage: the user accepts losing the old droplet's
    /// images. Absent from states written before import existed.
    #[serde(default)]
    pub accept_image_loss: B,
    /// Spaces keys of this registry's owner, used instead of the provider's to create, check
    /// and empty its bucket. Absent from states written before they existed.
    #[serde(default)]
    pub spaces_access_id: S,
    #[serde(default)]
    pub spaces_secret_key: S,
    /// `volume` only: the snapshot the registry's new volume starts from.
    #[serde(default)]
    pub volume_snapshot_id: S,
    /// `spaces` only: days a noncurrent object version is kept (bucket versioning with a
    /// lifecycle rule). Absent from states written before it existed.
    #[serde(default)]
    pub keep_deleted_days: N,
}

/// The `monitoring` block: a DigitalOcean uptime check of the registry with its alerts.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct MonitoringState {
    pub uptime_check: B,
    pub alert_emails: Value<Vec<S>>,
    pub ssl_expiry_days: N,
    pub down_alert: B,
    pub regions: Value<Vec<S>>,
}

/// The `garbage_collection` block: plain optional arguments (no default filled in, so
/// removing one is a change the plan shows as it is).
#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct GcState {
    pub schedule: S,
    /// Null means false.
    pub delete_untagged: B,
    /// Bumped by the user to run one collection during apply.
    pub run: N,
    /// The `retention` blocks; absent from states written before they existed.
    #[serde(default = "no_rules")]
    pub retention: Value<Vec<Value<RetentionState>>>,
}

fn no_rules() -> Value<Vec<Value<RetentionState>>> {
    Value::Value(Vec::new())
}

/// One `retention` block (see `crate::retention` for what it means).
#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct RetentionState {
    pub repositories: Value<Vec<S>>,
    pub keep_last: N,
    pub older_than_days: N,
    pub keep_tags: Value<Vec<S>>,
    pub allow_delete_all: B,
}

/// The `backups` block: DigitalOcean's automated backups of the droplet's disk. Plain
/// optional arguments: the defaults (`daily`, hour 0, `SUN` for weekly) live in the model.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct BackupsState {
    pub plan: S,
    pub weekday: S,
    pub hour: N,
}

#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct TimeoutsState {
    pub create: S,
    pub update: S,
    pub delete: S,
}

#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
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
    pub ui: B,
    pub reserved_ip: B,
    pub tags: Value<Vec<S>>,
    /// Absent from states written before it existed (one droplet).
    #[serde(default)]
    pub replicas: N,
    #[serde(with = "serde_as_vec")]
    pub tls: Value<TlsState>,
    #[serde(with = "serde_as_vec")]
    pub storage: Value<StorageState>,
    #[serde(with = "serde_as_vec")]
    pub timeouts: Value<TimeoutsState>,
    #[serde(with = "serde_as_vec")]
    pub monitoring: Value<MonitoringState>,
    #[serde(with = "serde_as_vec")]
    pub garbage_collection: Value<GcState>,
    #[serde(with = "serde_as_vec")]
    pub backups: Value<BackupsState>,

    // Computed.
    pub id: S,
    pub droplet_id: N,
    pub ipv4_address: S,
    pub ipv6_address: S,
    /// Every droplet, `droplet_id` first; absent from states written before replicas.
    #[serde(default)]
    pub droplet_ids: Value<Vec<N>>,
    #[serde(default)]
    pub ipv4_addresses: Value<Vec<S>>,
    /// With `replicas` of 2 or more: the load balancer and its address (the record's target).
    #[serde(default)]
    pub load_balancer_id: S,
    #[serde(default)]
    pub load_balancer_ip: S,
    /// The reserved IP the A record points at, with `reserved_ip = true`.
    pub reserved_ip_address: S,
    pub url: S,
    pub domain: S,
    pub record_id: N,
    pub caa_record_id: N,
    pub aaaa_record_id: N,
    pub firewall_id: S,
    pub host_key_fingerprint: S,
    pub user_data_host_key_fingerprint: S,
    pub certificate_pem: S,
    pub certificate_not_after: S,
    pub ca_certificate_pem: S,
    pub registry_version: S,
    pub docker_config_json: S,
    pub user_access: ByUser,
    pub generated_passwords: ByUser,
    /// The hash of every user that reaches the droplet: `password_bcrypt`, or a hash of the
    /// password made once and kept until it changes, so an unchanged user never shows in a plan.
    pub bcrypt_hashes: ByUser,
    pub docker_config_jsons: ByUser,
    pub storage_used_bytes: N,
    pub volume_id: S,
    pub spaces_endpoint: S,
    pub spaces_key_id: S,
    /// Whether the provider created the bucket (`false`: it existed and was adopted, so
    /// destroy never empties nor deletes it).
    pub bucket_created: B,
    /// Droplets this registry replaced (or booted and gave up) and could not delete yet: the
    /// next apply and destroy delete them, so none is ever forgotten.
    pub retired_droplet_ids: Value<Vec<N>>,
    /// sha256 of every file the provider manages on the droplet, as last read.
    pub files_digest: Value<BTreeMap<String, S>>,
    pub certificate_renew_at: S,
    pub renewal_status: S,
    pub acme_delegation_record_id: N,
    pub acme_ca_certificates: S,
    /// The uptime check of `monitoring`, and its alerts' ids by type (`ssl_expiry`, `down`).
    pub uptime_check_id: S,
    pub uptime_alert_ids: Value<BTreeMap<String, S>>,
    /// When the droplet's last garbage collection finished (RFC 3339), as last read.
    pub garbage_collection_last_run: S,
    /// What it freed, in bytes (null with Spaces or a failed run).
    pub garbage_collection_freed_bytes: N,
    /// `repository:tag` → digest: what the retention rules select now (null without rules).
    pub retention_preview: Value<BTreeMap<String, S>>,
    /// What the last apply's retention deleted, in the same shape.
    pub retention_deleted: Value<BTreeMap<String, S>>,

    // Computed secrets the provider made; sensitive, never printed.
    pub management_private_key: S,
    pub management_public_key: S,
    pub host_private_key: S,
    pub host_public_key: S,
    pub tls_private_key_pem: S,
    pub ca_private_key_pem: S,
    /// Optional and computed: given in the configuration, or generated once (see
    /// `plan::plan_http_secret`).
    pub http_secret: S,
    pub acme_account_key: S,
    pub spaces_secret_key: S,
}

/// What the provider keeps in the resource's private state, which plans never show.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, Debug)]
pub struct Private {
    /// The current `http_secret` came from the configuration: once it is removed from there,
    /// the next plan returns to a generated one (a generated one is kept). False for states
    /// written before `http_secret` could be set, whose secret was always generated.
    #[serde(default)]
    pub http_secret_given: bool,
    /// What the plan's retention deletes (`repository:tag` → digest): the preview the plan
    /// showed leaving, handed to the apply as it was planned.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub retention_delete: BTreeMap<String, String>,
}

/// The private state as OpenTofu hands it over: null for a state that has none yet.
pub type PrivateState = Value<Private>;

/// Whether `private` says the current `http_secret` was given.
pub fn http_secret_given(private: &PrivateState) -> bool {
    private.as_ref_option().is_some_and(|p| p.http_secret_given)
}

/// Calls `$then!` with every computed attribute: the one list that says what apply fills in.
macro_rules! computed_attributes {
    ($then:ident) => {
        $then!(
            id,
            droplet_id,
            ipv4_address,
            ipv6_address,
            droplet_ids,
            ipv4_addresses,
            load_balancer_id,
            load_balancer_ip,
            reserved_ip_address,
            url,
            domain,
            record_id,
            caa_record_id,
            aaaa_record_id,
            firewall_id,
            host_key_fingerprint,
            user_data_host_key_fingerprint,
            certificate_pem,
            certificate_not_after,
            ca_certificate_pem,
            registry_version,
            docker_config_json,
            user_access,
            generated_passwords,
            bcrypt_hashes,
            docker_config_jsons,
            storage_used_bytes,
            volume_id,
            spaces_endpoint,
            spaces_key_id,
            bucket_created,
            retired_droplet_ids,
            files_digest,
            certificate_renew_at,
            renewal_status,
            acme_delegation_record_id,
            acme_ca_certificates,
            uptime_check_id,
            uptime_alert_ids,
            garbage_collection_last_run,
            garbage_collection_freed_bytes,
            retention_preview,
            retention_deleted,
            management_private_key,
            management_public_key,
            host_private_key,
            host_public_key,
            tls_private_key_pem,
            ca_private_key_pem,
            acme_account_key,
            spaces_secret_key
        )
    };
}

macro_rules! names {
    ($($f:ident),*) => {
        &[$(stringify!($f)),*]
    };
}

/// The names of the computed attributes, as the schema spells them.
pub const COMPUTED: &[&str] = computed_attributes!(names);

impl RegistryState {
    /// Every computed attribute unknown: what a plan shows for values only apply can fill.
    pub fn unknown_computed(&mut self) {
        macro_rules! unknown {
            ($($f:ident),*) => { $( self.$f = Value::Unknown; )* };
        }
        computed_attributes!(unknown);
    }

    /// Computed values left unknown after a failed apply become null: state cannot hold
    /// unknowns.
    pub fn null_unknowns(&mut self) {
        macro_rules! null {
            ($($f:ident),*) => { $( if self.$f.is_unknown() { self.$f = Value::Null; } )* };
        }
        computed_attributes!(null);
        // Optional and computed, so not in the list: unknown when apply was to generate it.
        if self.http_secret.is_unknown() {
            self.http_secret = Value::Null;
        }
        // A map keeps the entries that are known: a hash made before the failure stays.
        for map in [
            &mut self.user_access,
            &mut self.generated_passwords,
            &mut self.bcrypt_hashes,
            &mut self.docker_config_jsons,
            &mut self.files_digest,
        ] {
            if let Value::Value(m) = map {
                m.retain(|_, v| !v.is_unknown());
            }
        }
    }
}

// `Debug` of every state type prints each value but the secrets: the schema's sensitive
// attributes, and whatever `secret::redact_json` finds by name or by shape.
macro_rules! debug_without_secrets {
    ($($t:ident),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                crate::secret::fmt_redacted(stringify!($t), self, &super::schema::is_sensitive, f)
            }
        }
    )*};
}
debug_without_secrets!(
    UserState,
    TlsState,
    StorageState,
    TimeoutsState,
    MonitoringState,
    RegistryState
);

/// A known, non-empty string value.
pub fn known(v: &S) -> Option<&str> {
    v.as_ref_option()
        .map(|s| s.as_str())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_provider::schema::AttributeConstraint;

    #[test]
    fn the_computed_list_is_the_schemas() {
        let schema = super::super::schema::schema();
        let mut from_schema: Vec<&str> = schema
            .block
            .attributes
            .iter()
            .filter(|(_, a)| matches!(a.constraint, AttributeConstraint::Computed))
            .map(|(name, _)| name.as_str())
            .collect();
        from_schema.sort();
        let mut listed = COMPUTED.to_vec();
        listed.sort();
        assert_eq!(listed, from_schema);
    }

    #[test]
    fn unknowns_become_null_and_values_stay() {
        let mut st = RegistryState {
            name: Value::Value("r".into()),
            ..Default::default()
        };
        st.unknown_computed();
        assert!(st.droplet_id.is_unknown() && st.files_digest.is_unknown() && st.url.is_unknown());
        st.droplet_id = Value::Value(7);
        st.null_unknowns();
        assert_eq!(st.droplet_id, Value::Value(7));
        assert!(st.files_digest.is_null() && st.http_secret.is_null());
        assert_eq!(st.name, Value::Value("r".to_string()));
        // Maps keep their known entries: a hash made before a failure stays in state.
        st.bcrypt_hashes = Value::Value(BTreeMap::from([
            ("a".to_owned(), Value::Value("$2y$...".to_owned())),
            ("b".to_owned(), Value::Unknown),
        ]));
        st.null_unknowns();
        let kept: Vec<&String> = st.bcrypt_hashes.as_ref_option().unwrap().keys().collect();
        assert_eq!(kept, ["a"]);
    }
}
