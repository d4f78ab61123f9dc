//! The `backups` block: DigitalOcean's automated backups of the droplet's disk, sent in the
//! droplet's create request, changed in place with the droplet's backup actions, read back so
//! a change made elsewhere (the control panel) shows in the plan.

use std::time::Instant;

use tf_provider::value::Value;
use tf_provider::Diagnostics;

use super::desired::s;
use super::env::Env;
use super::error::Result;
use super::model::{Backups, Model};
use super::state::{BackupsState, RegistryState};
use crate::diag;
use crate::do_api::{self, DropletAction};

/// What the create request carries: `(backups, backup_policy)`.
pub fn create_fields(m: &Model) -> (bool, Option<do_api::BackupPolicy>) {
    (m.backups.is_some(), m.backups.as_ref().map(Backups::policy))
}

/// The action that takes the droplet from `before` to `after`, if any.
pub fn action(before: Option<&Backups>, after: Option<&Backups>) -> Option<DropletAction> {
    match (before, after) {
        (None, None) => None,
        (Some(_), None) => Some(DropletAction::DisableBackups),
        (None, Some(b)) => Some(DropletAction::EnableBackups {
            backup_policy: Some(b.policy()),
        }),
        (Some(a), Some(b)) if a != b => Some(DropletAction::ChangeBackupPolicy {
            backup_policy: b.policy(),
        }),
        _ => None,
    }
}

/// In place on droplet `id`: enables, disables or changes the policy, and waits.
pub async fn update(
    env: &Env,
    prior: &RegistryState,
    m: &Model,
    id: u64,
    deadline: Instant,
) -> Result<()> {
    let before = Model::of(prior).backups;
    let Some(a) = action(before.as_ref(), m.backups.as_ref()) else {
        return Ok(());
    };
    let started = env.client.droplet_action(id, &a).await?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    env.client.wait_for_action(started.id, remaining).await?;
    Ok(())
}

/// The block as `b` says, in state's terms.
fn state_of(b: Option<&Backups>) -> Value<BackupsState> {
    match b {
        None => Value::Null,
        Some(b) => Value::Value(BackupsState {
            plan: s(b.plan.clone()),
            weekday: b.weekday.clone().map(s).unwrap_or(Value::Null),
            hour: Value::Value(i64::from(b.hour)),
        }),
    }
}

/// Refreshes `backups` from the droplet: when what DigitalOcean has differs from what the
/// state means (defaults filled in), the state takes DigitalOcean's, so the plan shows the
/// drift and the next apply puts the configuration back.
pub async fn read(
    env: &Env,
    diags: &mut Diagnostics,
    st: &mut RegistryState,
    droplet: &do_api::Droplet,
) {
    let have = if droplet.features.iter().any(|f| f == "backups") {
        match env.client.get_backup_policy(droplet.id).await {
            Ok(r) if r.backup_enabled => Some(
                r.backup_policy
                    .as_ref()
                    .map(Backups::from_policy)
                    .unwrap_or_else(|| Backups::from_policy(&Default::default())),
            ),
            Ok(_) => None,
            Err(e) => {
                diag::warning(
                    diags,
                    format!("Reading the backup policy of droplet ({})", droplet.id),
                    &e.into(),
                );
                return;
            }
        }
    } else {
        None
    };
    if have != Model::of(st).backups {
        st.backups = state_of(have.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(plan: &str, weekday: Option<&str>, hour: u32) -> Backups {
        Backups {
            plan: plan.into(),
            weekday: weekday.map(Into::into),
            hour,
        }
    }

    #[test]
    fn each_change_is_one_action() {
        let daily = b("daily", None, 0);
        let weekly = b("weekly", Some("SUN"), 4);
        assert_eq!(action(None, None), None);
        assert_eq!(action(Some(&daily), Some(&daily)), None);
        assert_eq!(
            action(Some(&daily), None),
            Some(DropletAction::DisableBackups)
        );
        assert_eq!(
            action(None, Some(&weekly)),
            Some(DropletAction::EnableBackups {
                backup_policy: Some(do_api::BackupPolicy {
                    plan: "weekly".into(),
                    weekday: Some("SUN".into()),
                    hour: Some(4),
                })
            })
        );
        assert_eq!(
            action(Some(&weekly), Some(&daily)),
            Some(DropletAction::ChangeBackupPolicy {
                backup_policy: do_api::BackupPolicy {
                    plan: "daily".into(),
                    weekday: None,
                    hour: Some(0),
                }
            })
        );
    }

    #[test]
    fn defaults_are_sent_explicitly() {
        let mut st = RegistryState {
            backups: Value::Value(BackupsState::default()),
            ..Default::default()
        };
        let (on, policy) = create_fields(&Model::of(&st));
        assert!(on);
        assert_eq!(
            policy,
            Some(do_api::BackupPolicy {
                plan: "daily".into(),
                weekday: None,
                hour: Some(0)
            })
        );
        st.backups = Value::Value(BackupsState {
            plan: s("weekly".to_string()),
            ..Default::default()
        });
        let (_, policy) = create_fields(&Model::of(&st));
        assert_eq!(policy.unwrap().weekday.as_deref(), Some("SUN"));
        st.backups = Value::Null;
        assert_eq!(create_fields(&Model::of(&st)), (false, None));
    }
}
