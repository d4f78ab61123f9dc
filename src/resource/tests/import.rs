//! `tofu import docker_registry.x <fqdn>`: the state read from the API, the plan that
//! replaces the droplet (with a warning, or with droplet-disk storage a refusal unless
//! `storage.accept_image_loss`), the apply that moves the volume to a droplet of the
//! provider's own, and a destroy that leaves nothing.

use super::*;

impl World {
    async fn import(&self, id: &str) -> (Option<RegistryState>, Diagnostics) {
        let mut d = Diagnostics::default();
        let got = self
            .resource
            .import(&mut d, id.to_owned())
            .await
            .map(|(st, _)| st);
        (got, d)
    }

    /// What `tofu state rm` then `tofu import` leaves: the imported state, refreshed.
    async fn imported(&self, id: &str) -> RegistryState {
        let (st, d) = self.import(id).await;
        let st = st.unwrap_or_else(|| panic!("import failed: {d:?}"));
        assert!(d.errors.is_empty(), "{d:?}");
        assert!(
            summaries(&d.warnings)
                .contains(&"Imported: the next apply replaces the droplet".to_owned()),
            "{d:?}"
        );
        let (st, d) = self.read(&st).await;
        assert!(d.errors.is_empty() && d.warnings.is_empty(), "{d:?}");
        st.expect("the imported droplet exists")
    }
}

/// OpenTofu's proposal after an import: the configuration's arguments over the imported state.
fn configured(config: &RegistryState) -> impl FnOnce(&mut RegistryState) + '_ {
    move |st| {
        st.name = config.name.clone();
        st.region = config.region.clone();
        st.fqdn = config.fqdn.clone();
        st.users = config.users.clone();
        st.tls = config.tls.clone();
        st.storage = config.storage.clone();
    }
}

#[tokio::test]
async fn import_adopts_the_volume_and_the_plan_replaces_the_droplet_keeping_it() {
    let w = World::start().await;
    let cfg = with_volume(config("reg"), 2, false);
    let made = w.created(cfg.clone()).await;

    let st = w.imported(&format!("{FQDN}.")).await;
    // What the API shows, as the provider made it.
    assert_eq!(st.id, s(FQDN));
    assert_eq!(st.droplet_id, made.droplet_id);
    assert_eq!(st.firewall_id, made.firewall_id);
    assert_eq!(st.record_id, made.record_id);
    assert_eq!(st.domain, s(DOMAIN));
    assert_eq!(st.volume_id, made.volume_id);
    assert_eq!(st.name, s("reg"));
    assert_eq!(st.region, s("nyc3"));
    let storage = st.storage.as_ref_option().expect("storage block");
    assert_eq!(storage.backend, s("volume"));
    assert_eq!(storage.size_gib, Value::Value(2));
    // What only the droplet's maker knows is not there: the mark of an imported registry.
    assert!(st.management_private_key.is_null() && st.http_secret.is_null());
    assert!(st.bcrypt_hashes.is_null() && st.tls_private_key_pem.is_null());

    let (planned, d) = w.plan_update(&st, configured(&cfg)).await;
    let (planned, replace) = planned.unwrap_or_else(|| panic!("plan failed: {d:?}"));
    assert!(replace.is_empty(), "{replace:?}");
    assert!(planned.droplet_id.is_unknown());
    assert!(planned.management_private_key.is_unknown() && planned.http_secret.is_unknown());
    assert!(planned.certificate_pem.is_unknown());
    assert_eq!(planned.volume_id, made.volume_id, "the volume stays");
    let warning = d
        .warnings
        .iter()
        .find(|w| w.summary == "Imported: the droplet will be replaced")
        .unwrap_or_else(|| panic!("{d:?}"));
    assert!(
        warning
            .detail
            .contains("holds neither its management key nor its SSH host key")
            && warning
                .detail
                .contains("the images on volume reg-registry-data are kept"),
        "{}",
        warning.detail
    );

    let after = w.updated(&st, configured(&cfg)).await;
    let old = droplet_id(&made);
    assert_ne!(droplet_id(&after), old, "a droplet of the provider's own");
    assert_eq!(after.volume_id, made.volume_id);
    assert_eq!(after.firewall_id, made.firewall_id);
    assert!(after.management_private_key.is_value() && after.http_secret.is_value());
    assert!(
        w.client().get_droplet(old).await.unwrap().is_none(),
        "old droplet deleted"
    );
    // Shut down through the API before its volume moved: it was never reached over SSH.
    assert!(
        w.api
            .hv
            .calls()
            .iter()
            .any(|c| c.starts_with(&format!("power {old} Shutdown"))),
        "{:?}",
        w.api.hv.calls()
    );
    assert_eq!(w.record_data(&after).await.as_deref(), Some(SECOND_IP));
    let v = w
        .client()
        .get_volume(text(&after.volume_id))
        .await
        .unwrap()
        .expect("volume");
    assert_eq!(v.droplet_ids, [droplet_id(&after)]);

    // The registry is the provider's now: the next plan is an ordinary one.
    let (planned, d) = w.plan_update(&after, |_| {}).await;
    let (planned, _) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert_eq!(planned.droplet_id, after.droplet_id, "{d:?}");
}

#[tokio::test]
async fn droplet_disk_import_fails_the_plan_unless_image_loss_is_accepted() {
    let w = World::start().await;
    let cfg = config("disk");
    let made = w.created(cfg.clone()).await;
    let st = w.imported(FQDN).await;
    assert!(st.storage.is_null(), "droplet disk: no storage block");
    assert_eq!(st.droplet_id, made.droplet_id);

    let (planned, d) = w.plan_update(&st, configured(&cfg)).await;
    assert!(planned.is_none(), "the plan must fail");
    assert_eq!(
        paths_of(&d.errors),
        [storage_attr("accept_image_loss").to_string()]
    );
    let e = &d.errors[0];
    assert!(
        e.detail.contains("images on its disk would be deleted")
            && e.detail.contains("accept_image_loss = true")
            && e.detail.contains("Nothing was changed"),
        "{}",
        e.detail
    );
    // Nothing happened: the old droplet serves on.
    assert!(w.droplet(&made).await.is_some());

    let mut accepted = cfg.clone();
    accepted.storage = Value::Value(StorageState {
        accept_image_loss: Value::Value(true),
        ..Default::default()
    });
    let (planned, d) = w.plan_update(&st, configured(&accepted)).await;
    let (planned, _) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(planned.droplet_id.is_unknown());
    assert!(
        d.warnings
            .iter()
            .any(|w| w.summary == "Imported: the droplet will be replaced"
                && w.detail.contains("lost with it")),
        "{d:?}"
    );
}

#[tokio::test]
async fn import_of_a_name_without_a_registry_says_why() {
    let w = World::start().await;
    let (st, d) = w.import(FQDN).await;
    assert!(st.is_none());
    assert!(
        d.errors[0].detail.contains(&format!(
            "cannot import {FQDN}: domain {DOMAIN} holds no A record"
        )),
        "{d:?}"
    );
    let (st, d) = w.import("registry.elsewhere.test").await;
    assert!(st.is_none());
    assert!(
        d.errors[0]
            .detail
            .contains("no domain of this DigitalOcean account"),
        "{d:?}"
    );
    let (_, d) = w.import("not a name").await;
    assert!(
        d.errors[0].detail.contains("must be the registry's fqdn"),
        "{d:?}"
    );
}

#[tokio::test]
async fn destroy_right_after_import_keeps_an_unmeasurable_volume_and_removes_the_rest() {
    let w = World::start().await;
    // The volume cannot be measured without SSH: it counts as holding images, as any volume
    // that cannot be measured, and nothing is deleted.
    let made = w.created(with_volume(config("kept"), 1, false)).await;
    let st = w.imported(FQDN).await;
    let d = w.destroy(&st).await;
    assert_eq!(
        paths_of(&d.errors),
        [storage_attr("force_destroy").to_string()],
        "{d:?}"
    );
    assert!(w.droplet(&made).await.is_some(), "nothing deleted");
    let d = w.destroy(&made).await;
    assert!(d.errors.is_empty(), "{d:?}");

    // Droplet disk: nothing to measure; every part goes, found by the ids import read.
    let made = w.created(config("gone")).await;
    let st = w.imported(FQDN).await;
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(w.droplet(&made).await.is_none());
    assert!(w.record_data(&made).await.is_none());
    assert!(w
        .client()
        .get_firewall(text(&made.firewall_id))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn import_finds_the_bucket_by_the_registry_key_and_the_apply_gives_it_a_key_of_its_own() {
    let bucket: scripted::Shared = Default::default();
    bucket.lock().unwrap().absent = true;
    let (addr, server) = scripted::serve(bucket.clone()).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys.clone(), Some(&format!("http://{addr}"))).await;
    let mut cfg = config("reg");
    cfg.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        ..Default::default()
    });
    let made = w.created(cfg.clone()).await;
    let old_key = text(&made.spaces_key_id).to_owned();

    let st = w.imported(FQDN).await;
    let storage = st.storage.as_ref_option().expect("storage block");
    assert_eq!(storage.backend, s("spaces"));
    assert_eq!(storage.bucket, s("reg-images"));
    assert_eq!(text(&st.spaces_key_id), old_key);
    // Nobody can tell who made the bucket: adopted, never emptied by destroy.
    assert_eq!(st.bucket_created, Value::Value(false));

    let (planned, d) = w.plan_update(&st, configured(&cfg)).await;
    let (planned, _) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(planned.spaces_key_id.is_unknown() && planned.spaces_secret_key.is_unknown());
    assert!(
        d.warnings.iter().any(|w| w
            .detail
            .contains("the images in bucket reg-images are kept")),
        "{d:?}"
    );

    let after = w.updated(&st, configured(&cfg)).await;
    assert_ne!(droplet_id(&after), droplet_id(&made));
    let new_key = text(&after.spaces_key_id).to_owned();
    assert!(!new_key.is_empty() && new_key != old_key);
    assert!(after.spaces_secret_key.is_value() && after.spaces_endpoint.is_value());
    let listed: Vec<String> = w
        .client()
        .list_spaces_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.access_key)
        .collect();
    assert_eq!(listed, [new_key], "the imported droplet's key is deleted");

    // Destroy keeps the adopted bucket, says so, and removes the rest.
    let d = w.destroy(&after).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert_eq!(summaries(&d.warnings), ["The bucket was kept"]);
    assert!(!bucket.lock().unwrap().absent);
    assert!(w.client().list_spaces_keys().await.unwrap().is_empty());
    server.abort();
}

#[tokio::test]
async fn import_finds_the_uptime_check_and_the_apply_removes_it_when_monitoring_is_off() {
    let w = World::start().await;
    let mut cfg = with_volume(config("mon"), 1, false);
    cfg.monitoring = monitoring(None, None);
    let made = w.created(cfg.clone()).await;
    let st = w.imported(FQDN).await;
    assert_eq!(st.uptime_check_id, made.uptime_check_id);

    // The configuration without `monitoring`: the check goes with this apply.
    let off = with_volume(config("mon"), 1, false);
    let after = w.updated(&st, configured(&off)).await;
    assert!(after.uptime_check_id.is_null());
    assert!(w.client().list_uptime_checks().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_imported_registry_is_taken_over_with_one_droplet_before_replicas() {
    let w = World::start().await;
    let cfg = config("disk");
    let made = w.created(cfg.clone()).await;
    let st = w.imported(FQDN).await;
    let mut two = cfg.clone();
    two.replicas = Value::Value(2);
    two.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        ..Default::default()
    });
    let (planned, d) = w
        .plan_update(&st, |c| {
            configured(&two)(c);
            c.replicas = two.replicas;
        })
        .await;
    assert!(planned.is_none(), "the plan must fail");
    assert_eq!(
        paths_of(&d.errors),
        [AttributePath::new("replicas").to_string()]
    );
    assert!(
        d.errors[0]
            .detail
            .contains("apply with `replicas = 1` first"),
        "{}",
        d.errors[0].detail
    );
    // Nothing happened: the old droplet serves on.
    assert!(w.droplet(&made).await.is_some());
}
