//! `docker_registry_snapshot`: a consistent DigitalOcean snapshot of a registry's volume.
//! Create takes it (see `create`), read follows DigitalOcean, destroy deletes it, import
//! takes its id; any change of `name`, `volume_id` or `triggers` takes a new one.

pub mod create;
pub mod schema;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::diag;
use crate::provider::SettingsHandle;
use crate::resource::env::{Env, Seams};
use crate::resource::model::deadline_after;
use state::SnapshotState;

/// How long a create may take: the pause, DigitalOcean's snapshot, the resume.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

pub struct SnapshotResource {
    pub settings: SettingsHandle,
    pub seams: Seams,
}

impl SnapshotResource {
    pub fn new(settings: SettingsHandle) -> SnapshotResource {
        SnapshotResource::with_seams(settings, Seams::default())
    }

    pub fn with_seams(settings: SettingsHandle, seams: Seams) -> SnapshotResource {
        SnapshotResource { settings, seams }
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

/// Plan-time checks that name their attribute.
pub fn check_config(diags: &mut Diagnostics, c: &SnapshotState) {
    if let Value::Value(name) = &c.name {
        if name.trim().is_empty() || name.len() > 255 {
            diags.error(
                "Invalid `name`",
                format!("{name:?}: a snapshot's name has 1 to 255 characters."),
                AttributePath::new("name"),
            );
        }
    }
    if let Value::Value(v) = &c.volume_id {
        if v.trim().is_empty() {
            diags.error(
                "Invalid `volume_id`",
                "The volume id is empty: is the registry's storage a volume (`storage { backend = \"volume\" }`)?",
                AttributePath::new("volume_id"),
            );
        }
    }
}

/// The arguments whose change replaces the snapshot, as paths for the plan.
pub fn replaced(prior: &SnapshotState, planned: &SnapshotState) -> Vec<AttributePath> {
    let mut out = Vec::new();
    if prior.name != planned.name {
        out.push(AttributePath::new("name"));
    }
    if prior.volume_id != planned.volume_id {
        out.push(AttributePath::new("volume_id"));
    }
    // An imported snapshot has no triggers: a configuration adding some replaces nothing.
    let no_triggers = |t: &Value<std::collections::BTreeMap<String, crate::resource::state::S>>| {
        t.as_ref_option().is_none_or(|m| m.is_empty())
    };
    if prior.triggers != planned.triggers
        && !(no_triggers(&prior.triggers) && prior.quiesce.is_null())
    {
        out.push(AttributePath::new("triggers"));
    }
    out
}

#[async_trait]
impl Resource for SnapshotResource {
    type State<'a> = SnapshotState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<tf_provider::schema::Schema> {
        Some(schema::schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        check_config(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        mut st: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let env = self.env(diags)?;
        let id = st.id.as_ref_option()?.clone();
        match env.client.get_snapshot(&id).await {
            Ok(Some(s)) => {
                st.take(&s);
                Some((st, private))
            }
            Ok(None) => None,
            Err(e) => {
                diag::error(diags, format!("Reading snapshot ({id})"), &e.into());
                Some((st, private))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        check_config(diags, &config);
        if !diags.errors.is_empty() {
            return None;
        }
        let mut st = proposed;
        st.unknown_computed();
        Some((st, Value::Null))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let replace = replaced(&prior, &proposed);
        let mut st = proposed;
        if !replace.is_empty() {
            st.unknown_computed();
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
        let taken = create::take(&env, &planned, deadline_after(CREATE_TIMEOUT)).await;
        let st = create::state_after(&planned, &taken);
        if let Some(e) = &taken.error {
            let next = if st.is_some() {
                "The snapshot was taken and is in state; `destroy` deletes it."
            } else {
                "No snapshot was kept. Once the cause is fixed, run `apply` again."
            };
            diag::error_then(diags, "Taking the volume snapshot failed", e, next);
        }
        st.map(|st| (st, private))
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // Only how the droplet is reached changed: stored, the snapshot stays as it is.
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        st: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let env = self.env(diags)?;
        let id = st.id.as_ref_option()?.clone();
        match env.client.delete_snapshot(&id).await {
            Ok(()) => Some(()),
            Err(e) => {
                diag::error(diags, format!("Deleting snapshot ({id})"), &e.into());
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let env = self.env(diags)?;
        match env.client.get_snapshot(&id).await {
            Ok(Some(s)) => {
                let mut st = SnapshotState::default();
                st.take(&s);
                Some((st, Value::Null))
            }
            Ok(None) => {
                diags.root_error(
                    "Cannot import the snapshot",
                    format!("No snapshot with id {id:?} in this DigitalOcean account."),
                );
                None
            }
            Err(e) => {
                diag::error(diags, format!("Reading snapshot ({id})"), &e.into());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str, triggers: &[(&str, &str)]) -> SnapshotState {
        SnapshotState {
            name: Value::Value(name.into()),
            volume_id: Value::Value("v-1".into()),
            triggers: if triggers.is_empty() {
                Value::Null
            } else {
                Value::Value(
                    triggers
                        .iter()
                        .map(|(k, v)| (k.to_string(), Value::Value(v.to_string())))
                        .collect(),
                )
            },
            quiesce: Value::Value("fsfreeze".into()),
            ..Default::default()
        }
    }

    #[test]
    fn name_volume_and_triggers_replace_and_the_connection_does_not() {
        let a = st("a", &[("day", "1")]);
        assert!(replaced(&a, &a).is_empty());
        let mut moved = a.clone();
        moved.droplet_address = Value::Value("198.18.0.9".into());
        assert!(replaced(&a, &moved).is_empty());
        assert_eq!(
            replaced(&a, &st("b", &[("day", "1")])),
            [AttributePath::new("name")]
        );
        assert_eq!(
            replaced(&a, &st("a", &[("day", "2")])),
            [AttributePath::new("triggers")]
        );
        // An imported snapshot (no quiesce, no triggers) takes the configuration's triggers.
        let mut imported = st("a", &[]);
        imported.quiesce = Value::Null;
        assert!(replaced(&imported, &a).is_empty());
    }

    #[test]
    fn bad_names_are_refused_on_their_attribute() {
        let mut d = Diagnostics::default();
        check_config(&mut d, &st(" ", &[]));
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].attribute, AttributePath::new("name"));
    }
}
