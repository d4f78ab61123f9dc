//! Users through the operations: a generated password that logs in and stays, per-user docker
//! configs, and a state written by schema version 1 that upgrades to a plan with no change.

use super::*;
use crate::resource::upgrade;
use crate::resource::users::GENERATED_PASSWORD_LEN;

/// `config` with `ci`, given no password: one is generated. The only other push user goes,
/// so the outside check must log in as `ci`.
fn with_generated_user(name: &str) -> RegistryState {
    let mut c = config(name);
    if let Value::Value(users) = &mut c.users {
        users.remove("admin");
        users.insert("ci".to_owned(), Value::Value(UserState::default()));
    }
    c
}

#[tokio::test]
async fn a_user_without_a_password_gets_one_that_logs_in_and_stays() {
    let w = World::start().await;
    let st = w.created(with_generated_user("reg")).await;
    let pw = text(&by_user(&st.generated_passwords, "ci")).to_owned();
    assert_eq!(pw.len(), GENERATED_PASSWORD_LEN);
    // Its hash is on the droplet, in both files (push is the default access).
    let machine = w.machines.machine(FIRST_IP);
    let hash = text(&by_user(&st.bcrypt_hashes, "ci")).to_owned();
    for file in [paths::HTPASSWD, paths::HTPASSWD_PUSH] {
        let text = std::fs::read_to_string(machine.path(file)).unwrap();
        assert!(text.contains(&format!("ci:{hash}\n")), "{file}: {text}");
    }
    assert!(crate::render::htpasswd::password_matches(
        &crate::secret::Secret::new(pw.clone()),
        &hash
    ));
    // The registry was proven from outside with it.
    let check = w.outside.checks().last().cloned().unwrap();
    let (user, secret) = check.push_user.expect("a push user was checked");
    assert_eq!((user.as_str(), secret.expose()), ("ci", pw.as_str()));
    // The docker configs carry it; no plaintext exists for `reader` (a hash only).
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("ci:{pw}"),
    );
    assert!(text(&by_user(&st.docker_config_jsons, "ci")).contains(&auth));
    assert!(text(&st.docker_config_json).contains("registry.example.test"));
    assert_eq!(by_user(&st.docker_config_jsons, "reader"), Value::Null);

    // The next plan keeps it: no change at all.
    let (planned, d) = w.plan_update(&st, |_| {}).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert_eq!(planned.unwrap().0, st);
}

#[tokio::test]
async fn a_state_from_schema_version_1_upgrades_to_a_plan_with_no_change() {
    let w = World::start().await;
    let st = w.created(config("reg")).await;
    let v1 = upgrade::as_v1(&st);
    let mut d = Diagnostics::default();
    let upgraded = w
        .resource
        .upgrade(&mut d, 1, tf_provider::RawValue::Json(v1))
        .await
        .unwrap_or_else(|| panic!("upgrade failed: {d:?}"));
    // `access = "push"`, filled in by version 1, is unset again, as in the configuration.
    assert_eq!(upgraded, st);
    let (planned, d) = w.plan_update(&upgraded, |_| {}).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert_eq!(planned.unwrap().0, st, "the upgrade shows as a change");
    // A state from a newer provider is refused, with a diagnostic.
    let mut d = Diagnostics::default();
    let none = w
        .resource
        .upgrade(&mut d, 9, tf_provider::RawValue::Json(b"{}".to_vec()))
        .await;
    assert!(none.is_none());
    assert_eq!(
        summaries(&d.errors),
        ["Cannot upgrade the registry's state"]
    );
}
