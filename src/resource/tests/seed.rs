//! What the seed module passes through: a given `http_secret` (used, changed, dropped back to a
//! generated one, with the private state that tells them apart), and a registry's own Spaces
//! keys managing its bucket when the provider has none.

use super::*;
use crate::resource::state::{Private, PrivateState};

const GIVEN: &str = "shared-http-secret-0123456789";

/// The registry's config on the test droplet.
fn registry_config(w: &World) -> String {
    std::fs::read_to_string(w.machines.machine(FIRST_IP).path(paths::REGISTRY_CONFIG)).unwrap()
}

fn given(private: &PrivateState) -> bool {
    crate::resource::state::http_secret_given(private)
}

/// Plan and apply `http_secret` = `secret` (None: left out of the configuration) on `prior`,
/// as OpenTofu does: the proposal holds the prior value where the configuration has none.
async fn apply_secret(
    w: &World,
    prior: &RegistryState,
    private: &PrivateState,
    secret: Option<&str>,
) -> (RegistryState, RegistryState, PrivateState) {
    let mut config = prior.clone();
    config.http_secret = secret.map(str::to_owned).into();
    let mut proposed = prior.clone();
    if let Some(v) = secret {
        proposed.http_secret = s(v);
    }
    let mut d = Diagnostics::default();
    let (planned, planned_private, replace) = w
        .resource
        .plan_update(
            &mut d,
            prior.clone(),
            proposed,
            config.clone(),
            private.clone(),
            no_meta(),
        )
        .await
        .unwrap_or_else(|| panic!("plan failed: {d:?}"));
    assert!(replace.is_empty(), "{replace:?}");
    let mut d = Diagnostics::default();
    let (st, private) = w
        .resource
        .update(
            &mut d,
            prior.clone(),
            planned.clone(),
            config,
            planned_private,
            no_meta(),
        )
        .await
        .expect("update returns a state");
    assert!(d.errors.is_empty(), "update failed: {:?}", d.errors);
    if planned.http_secret.is_value() {
        assert_eq!(
            st.http_secret, planned.http_secret,
            "inconsistent after apply"
        );
    }
    (planned, st, private)
}

#[tokio::test]
async fn a_given_http_secret_is_used_and_dropping_it_returns_to_a_generated_one() {
    let w = World::start().await;
    // Created with none: generated, and kept by an apply that does not name one.
    let c = config("reg");
    let mut d = Diagnostics::default();
    let (planned, private) = w
        .resource
        .plan_create(&mut d, c.clone(), c.clone(), no_meta())
        .await
        .unwrap_or_else(|| panic!("{d:?}"));
    assert!(planned.http_secret.is_unknown());
    assert!(!given(&private));
    let (st, private) = w
        .resource
        .create(&mut d, planned, c, private, no_meta())
        .await
        .unwrap();
    assert!(d.errors.is_empty(), "{d:?}");
    let generated = text(&st.http_secret).to_owned();
    assert_eq!(generated.len(), 64);
    assert!(registry_config(&w).contains(&generated));

    let (planned, st, private) = apply_secret(&w, &st, &private, None).await;
    assert_eq!(text(&planned.http_secret), generated, "kept, no change");
    assert_eq!(planned.files_digest, st.files_digest);
    assert!(!given(&private));

    // Given: planned as given, the config and the token key rewritten.
    let key_before =
        std::fs::read_to_string(w.machines.machine(FIRST_IP).path(paths::TOKEN_KEY)).unwrap();
    let (planned, st, private) = apply_secret(&w, &st, &private, Some(GIVEN)).await;
    assert_eq!(text(&planned.http_secret), GIVEN);
    assert!(given(&private));
    assert_eq!(text(&st.http_secret), GIVEN);
    let on_droplet = registry_config(&w);
    assert!(on_droplet.contains(GIVEN) && !on_droplet.contains(&generated));
    let key_after =
        std::fs::read_to_string(w.machines.machine(FIRST_IP).path(paths::TOKEN_KEY)).unwrap();
    assert_ne!(
        key_before, key_after,
        "the token key is derived from the secret"
    );
    // Never in a log line of the machine nor in Debug of the state.
    assert!(!format!("{st:?}").contains(GIVEN));
    assert!(!w.machines.machine(FIRST_IP).log().contains(GIVEN));

    // Kept while given.
    let (planned, st, private) = apply_secret(&w, &st, &private, Some(GIVEN)).await;
    assert_eq!(text(&planned.http_secret), GIVEN);
    assert_eq!(text(&st.http_secret), GIVEN);

    // Dropped from the configuration: the plan shows a new one (unknown until apply).
    let (planned, st, private) = apply_secret(&w, &st, &private, None).await;
    assert!(
        planned.http_secret.is_unknown(),
        "the plan shows the change"
    );
    assert!(!given(&private));
    let regenerated = text(&st.http_secret).to_owned();
    assert_eq!(regenerated.len(), 64);
    assert_ne!(regenerated, GIVEN);
    assert_ne!(regenerated, generated);
    assert!(registry_config(&w).contains(&regenerated));

    // A state from before private state existed (null) counts as generated: kept.
    let (planned, _, _) = apply_secret(&w, &st, &Value::Null, None).await;
    assert_eq!(text(&planned.http_secret), regenerated);
}

#[tokio::test]
async fn a_given_http_secret_survives_a_droplet_replacement_and_a_generated_one_too() {
    let w = World::start().await;
    let mut c = config("reg");
    c.http_secret = s(GIVEN);
    let mut d = Diagnostics::default();
    let (planned, private) = w
        .resource
        .plan_create(&mut d, c.clone(), c.clone(), no_meta())
        .await
        .unwrap_or_else(|| panic!("{d:?}"));
    assert_eq!(text(&planned.http_secret), GIVEN);
    assert_eq!(
        private,
        Value::Value(Private {
            http_secret_given: true,
            ..Default::default()
        })
    );
    let (st, private) = w
        .resource
        .create(&mut d, planned, c.clone(), private, no_meta())
        .await
        .unwrap();
    assert!(d.errors.is_empty(), "{d:?}");
    assert_eq!(text(&st.http_secret), GIVEN);
    assert!(registry_config(&w).contains(GIVEN));
    // A new droplet (droplet_generation): same secret, planned as known.
    let mut proposed = st.clone();
    proposed.droplet_generation = Value::Value(1);
    let mut config = proposed.clone();
    config.http_secret = s(GIVEN);
    let (planned, _, _) = w
        .resource
        .plan_update(&mut d, st.clone(), proposed, config, private, no_meta())
        .await
        .unwrap();
    assert_eq!(text(&planned.http_secret), GIVEN);

    // A generated one is kept through a droplet replacement, onto the new droplet.
    let w = World::start().await;
    let st = w.created(super::config("gen")).await;
    let generated = text(&st.http_secret).to_owned();
    let replaced = w
        .updated(&st, |c| c.droplet_generation = Value::Value(1))
        .await;
    assert_ne!(replaced.droplet_id, st.droplet_id, "a new droplet");
    assert_eq!(text(&replaced.http_secret), generated);
    let on_new =
        std::fs::read_to_string(w.machines.machine(SECOND_IP).path(paths::REGISTRY_CONFIG))
            .unwrap();
    assert!(on_new.contains(&generated));

    // A bad one fails the plan on the attribute, without quoting it.
    let mut bad = c.clone();
    bad.http_secret = s("too short");
    let (planned, d) = w.plan_create(bad).await;
    assert!(planned.is_none());
    assert_eq!(
        paths_of(&d.errors),
        [AttributePath::new("http_secret").to_string()]
    );
    assert!(!format!("{d:?}").contains("too short"));
}

/// A Spaces registry whose `storage` block has keys, the provider none.
fn with_own_keys(c: &mut RegistryState) {
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        spaces_access_id: s("AKOWNER"),
        spaces_secret_key: s("owner-secret"),
        ..Default::default()
    });
}

#[tokio::test]
async fn the_registrys_own_spaces_keys_manage_its_bucket_without_provider_keys() {
    let bucket: scripted::Shared = Default::default();
    bucket
        .lock()
        .unwrap()
        .versions
        .push(("someone-elses/file".into(), "v1".into(), false, 42));
    let (addr, server) = scripted::serve(bucket.clone()).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys.clone(), Some(&format!("http://{addr}"))).await;
    // The provider has an endpoint but no keys.
    let mut settings = w.api.settings(None);
    settings.spaces_endpoint = format!("http://{addr}");
    w.resource.settings.set(settings);

    // Without keys anywhere: the plan fails on `storage.backend`.
    let mut c = config("reg");
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        ..Default::default()
    });
    let (planned, d) = w.plan_create(c).await;
    assert!(planned.is_none());
    assert_eq!(summaries(&d.errors), ["Spaces credentials missing"]);

    let mut c = config("reg");
    with_own_keys(&mut c);
    let (planned, d) = w.plan_create(c.clone()).await;
    assert!(planned.is_some(), "{d:?}");
    assert_eq!(
        summaries(&d.warnings),
        ["The bucket exists and will be adopted"]
    );
    let st = w.created(c).await;
    assert_eq!(st.bucket_created, Value::Value(false));
    assert!(bucket
        .lock()
        .unwrap()
        .access_keys
        .iter()
        .all(|k| k == "AKOWNER"));
    assert!(!bucket.lock().unwrap().access_keys.is_empty());
    // The registry still holds its own key, not the owner's.
    assert_ne!(text(&st.spaces_key_id), "AKOWNER");
    assert!(!registry_config(&w).contains("owner-secret"));
    assert!(!format!("{st:?}").contains("owner-secret"));

    // Changing the keys replaces nothing and keeps the registry's key.
    let (planned, d) = w
        .plan_update(&st, |c| {
            if let Value::Value(b) = &mut c.storage {
                b.spaces_access_id = s("AKROTATED");
                b.spaces_secret_key = s("rotated-secret");
            }
        })
        .await;
    let (planned, replace) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(replace.is_empty(), "{replace:?}");
    assert_eq!(planned.spaces_key_id, st.spaces_key_id);
    assert_eq!(planned.droplet_id, st.droplet_id);
    let st = w
        .updated(&st, |c| {
            if let Value::Value(b) = &mut c.storage {
                b.spaces_access_id = s("AKROTATED");
                b.spaces_secret_key = s("rotated-secret");
            }
        })
        .await;
    // Read measures the bucket with the new keys.
    bucket.lock().unwrap().access_keys.clear();
    let (read, d) = w.read(&st).await;
    assert!(read.is_some(), "{d:?}");
    let used = bucket.lock().unwrap().access_keys.clone();
    assert!(
        !used.is_empty() && used.iter().all(|k| k == "AKROTATED"),
        "{used:?}"
    );

    // Destroy never deletes the adopted bucket, nor anything in it.
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    let b = bucket.lock().unwrap();
    assert_eq!(b.versions.len(), 1, "{:?}", b.versions);
    assert!(!b
        .requests
        .iter()
        .any(|r| r == "delete" || r == "delete-bucket"));
    drop(b);
    server.abort();
}

#[test]
fn a_state_written_before_the_storage_keys_existed_upgrades() {
    let mut c = config("reg");
    with_own_keys(&mut c);
    let mut json = serde_json::to_value(&c).unwrap();
    let storage = json["storage"][0].as_object_mut().unwrap();
    storage.remove("spaces_access_id");
    storage.remove("spaces_secret_key");
    let st = crate::resource::upgrade::upgrade(
        crate::resource::schema::SCHEMA_VERSION,
        &serde_json::to_vec(&json).unwrap(),
    )
    .unwrap();
    let b = st.storage.as_ref_option().unwrap();
    assert!(b.spaces_access_id.is_null() && b.spaces_secret_key.is_null());
    assert_eq!(b.bucket, s("reg-images"));
}

#[tokio::test]
async fn a_failed_update_that_dropped_the_secret_keeps_it_as_given() {
    let w = World::start().await;
    let mut c = config("reg");
    c.http_secret = s(GIVEN);
    let mut d = Diagnostics::default();
    let (planned, private) = w
        .resource
        .plan_create(&mut d, c.clone(), c.clone(), no_meta())
        .await
        .unwrap();
    let (st, private) = w
        .resource
        .create(&mut d, planned, c, private, no_meta())
        .await
        .unwrap();
    assert!(d.errors.is_empty(), "{d:?}");
    // Dropped from the configuration; the apply fails at the outside check.
    let mut config = st.clone();
    config.http_secret = Value::Null;
    let (planned, planned_private, _) = w
        .resource
        .plan_update(
            &mut d,
            st.clone(),
            st.clone(),
            config.clone(),
            private,
            no_meta(),
        )
        .await
        .unwrap();
    assert!(planned.http_secret.is_unknown() && !given(&planned_private));
    w.outside.fail_for(FIRST_IP);
    let mut d = Diagnostics::default();
    let (kept, kept_private) = w
        .resource
        .update(
            &mut d,
            st.clone(),
            planned,
            config.clone(),
            planned_private,
            no_meta(),
        )
        .await
        .unwrap();
    assert!(!d.errors.is_empty(), "the update should fail");
    assert_eq!(text(&kept.http_secret), GIVEN);
    assert!(given(&kept_private), "the kept secret counts as given");
    // So the next plan still moves to a generated one.
    let mut d = Diagnostics::default();
    let (planned, _, _) = w
        .resource
        .plan_update(&mut d, kept.clone(), kept, config, kept_private, no_meta())
        .await
        .unwrap();
    assert!(planned.http_secret.is_unknown());
}

#[tokio::test]
async fn a_plan_that_leaves_a_created_bucket_without_keys_warns_on_the_keys() {
    let bucket: scripted::Shared = Default::default();
    bucket.lock().unwrap().absent = true;
    let (addr, server) = scripted::serve(bucket.clone()).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys.clone(), Some(&format!("http://{addr}"))).await;
    let mut settings = w.api.settings(None);
    settings.spaces_endpoint = format!("http://{addr}");
    w.resource.settings.set(settings);
    let mut c = config("reg");
    with_own_keys(&mut c);
    let st = w.created(c).await;
    assert_eq!(st.bucket_created, Value::Value(true));
    assert!(bucket
        .lock()
        .unwrap()
        .access_keys
        .iter()
        .all(|k| k == "AKOWNER"));
    // Keys kept: no warning.
    let (planned, d) = w.plan_update(&st, |_| {}).await;
    assert!(planned.is_some() && d.warnings.is_empty(), "{d:?}");
    // Keys removed, the provider has none: a warning on the keys, not an error.
    let (planned, d) = w
        .plan_update(&st, |c| {
            if let Value::Value(b) = &mut c.storage {
                b.spaces_access_id = Value::Null;
                b.spaces_secret_key = Value::Null;
            }
        })
        .await;
    assert!(planned.is_some(), "{d:?}");
    assert_eq!(
        summaries(&d.warnings),
        ["No Spaces keys for the registry's bucket"]
    );
    assert_eq!(d.warnings[0].attribute, storage_attr("spaces_access_id"));
    server.abort();
}
