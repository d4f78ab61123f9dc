//! `docker_registry`: the `Resource` impl. Each call loads the typed model, runs its operation
//! (one module each) and hands back state, or diagnostics made from the operation's error.

pub mod backups;
pub mod certificate;
pub mod create;
pub mod desired;
pub mod destroy;
pub mod droplet;
pub mod env;
pub mod error;
pub mod fleet;
pub mod host_key;
pub mod import;
pub mod limits;
pub mod model;
pub mod monitoring;
pub mod network;
pub mod plan;
pub mod read;
pub mod replace;
pub mod retention;
pub mod schema;
pub mod state;
pub mod update;
pub mod upgrade;
pub mod users;
pub mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use tf_provider::value::ValueEmpty;
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::diag;
use crate::provider::SettingsHandle;
use env::{Env, Seams};
use model::{deadline_after, Model};
use state::RegistryState;

pub use error::Error;

/// What a failed create leaves, and how to go on.
pub const CREATE_FAILED_NEXT: &str = "Everything made so far (droplet, firewall, record, storage, keys) is in state, so nothing is lost or orphaned. Once the cause is fixed, run `apply` again (the half-made registry is replaced), or `destroy` to remove it.";

/// What a failed update leaves, and how to go on.
pub const UPDATE_FAILED_NEXT: &str = "The state keeps the previous settings and everything this apply made or switched to (a new droplet, record, certificate), so nothing is orphaned. Once the cause is fixed, run `apply` again to finish the change.";

pub struct RegistryResource {
    pub settings: SettingsHandle,
    pub seams: Seams,
}

impl RegistryResource {
    /// The resource as the provider serves it: SSH, HTTPS, DigitalOcean's timings.
    pub fn new(settings: SettingsHandle) -> RegistryResource {
        RegistryResource::with_seams(settings, Seams::default())
    }

    /// The resource with other collaborators (tests).
    pub fn with_seams(settings: SettingsHandle, seams: Seams) -> RegistryResource {
        RegistryResource { settings, seams }
    }

    fn env(&self, diags: &mut Diagnostics) -> Option<Env> {
        let settings = self.settings.get(diags)?;
        match Env::new(Arc::clone(&settings), &self.seams) {
            Ok(env) => Some(env),
            Err(e) => {
                diag::error(diags, "Cannot build the DigitalOcean client", &e);
                None
            }
        }
    }
}

#[async_trait]
impl Resource for RegistryResource {
    type State<'a> = RegistryState;
    type PrivateState<'a> = state::PrivateState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<tf_provider::schema::Schema> {
        Some(schema::schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        plan::check_config(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        st: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let env = self.env(diags)?;
        let st = read::read(diags, &env, st).await?;
        Some((st, private))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // Checks that need no API come first, so a bad config fails without a client.
        let mut st = plan::checked_with_defaults(diags, proposed, &config)?;
        let private = plan::plan_http_secret(&mut st, &config, None);
        let env = self.env(diags)?;
        let st = plan::plan_create(diags, &env, st).await?;
        Some((st, private))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let (mut st, private, replace) =
            plan::plan_update(diags, &prior, &private, proposed, &config)?;
        if replace.is_empty() && st.retention_preview.is_unknown() {
            // New rules: their preview, from the registry as it is now.
            let env = self.env(diags)?;
            retention::preview_changed_rules(&env, diags, &mut st).await;
        }
        // Only a warning depends on the settings: a plan never fails for want of them here.
        if let Some(settings) = self.settings.get(&mut Diagnostics::default()) {
            plan::warn_without_bucket_keys(diags, &settings, &prior, &st);
        }
        if prior.ssh_key_fingerprints != st.ssh_key_fingerprints {
            // A new fingerprint must name a key of the account: fail the plan, not the apply.
            let env = self.env(diags)?;
            limits::check_fingerprints_exist(diags, &env, &st).await;
            if !diags.errors.is_empty() {
                return None;
            }
        }
        Some((st, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let env = self.env(diags)?;
        let mut st = planned;
        let m = Model::of(&st);
        let deadline = deadline_after(m.timeouts.create);
        // Whatever happened, every id made so far is in `st`, so destroy can clean up.
        if let Err(e) = create::create(&env, &mut st, &m, deadline).await {
            diag::error_then(
                diags,
                "Creating the registry failed",
                &e,
                CREATE_FAILED_NEXT,
            );
            st.null_unknowns();
        } else if st.retention_preview.is_unknown() {
            // A volume or bucket may hold images already.
            retention::refresh(&env, diags, &mut st, &m).await;
        }
        Some((st, private))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let env = self.env(diags)?;
        let mut st = planned;
        let m = Model::of(&st);
        let deadline = deadline_after(m.timeouts.update);
        let delete = private
            .as_ref_option()
            .map(|p| p.retention_delete.clone())
            .unwrap_or_default();
        // The deletions were for this apply only.
        let private = match private {
            tf_provider::value::Value::Value(p) => {
                tf_provider::value::Value::Value(state::Private {
                    retention_delete: Default::default(),
                    ..p
                })
            }
            other => other,
        };
        if let Err(e) = update::update(&env, diags, &prior, &mut st, &m, &delete, deadline).await {
            diag::error_then(
                diags,
                "Updating the registry failed",
                &e,
                UPDATE_FAILED_NEXT,
            );
            // Keep what is known to be true: the prior state, with what the update made.
            let kept = update::kept_after_failure(&prior, &st);
            // The prior `http_secret` stays; whether it was given is not known here. Given is
            // the safe guess: a later plan without one generates a new one (a change it
            // shows), where "generated" would keep a secret the configuration dropped.
            let private = if kept.http_secret != st.http_secret {
                tf_provider::value::Value::Value(state::Private {
                    http_secret_given: true,
                    ..Default::default()
                })
            } else {
                private
            };
            return Some((kept, private));
        }
        if st.retention_preview.is_unknown() {
            // A new droplet, or rules whose preview the plan could not read.
            retention::refresh(&env, diags, &mut st, &m).await;
        }
        Some((st, private))
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let env = self.env(diags)?;
        match import::import(&env, &id).await {
            Ok(st) => {
                diags.root_warning(
                    "Imported: the next apply replaces the droplet",
                    import::IMPORTED_DETAIL,
                );
                Some((
                    st,
                    tf_provider::value::Value::Value(state::Private::default()),
                ))
            }
            Err(e) => {
                diag::error(diags, "Cannot import the registry", &e);
                None
            }
        }
    }

    async fn upgrade<'a>(
        &self,
        diags: &mut Diagnostics,
        version: i64,
        prior_state: tf_provider::RawValue,
    ) -> Option<Self::State<'a>> {
        // OpenTofu always sends a state to upgrade as JSON.
        let json = match &prior_state {
            tf_provider::RawValue::Json(j) => j.as_slice(),
            tf_provider::RawValue::MessagePack(_) => b"",
        };
        match upgrade::upgrade(version, json) {
            Ok(st) => Some(st),
            Err(e) => {
                diags.root_error("Cannot upgrade the registry's state", e.to_string());
                None
            }
        }
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        st: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let env = self.env(diags)?;
        let m = Model::of(&st);
        destroy::destroy(&env, diags, &st, &m).await.ok()
    }
}
