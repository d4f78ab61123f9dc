//! The operations through the `Resource` impl, as OpenTofu calls them, against localocean's
//! API in process (null hypervisor), droplets played by test machines in temp dirs, and an
//! outside check that records. Loopback only; no machine boots, no CA or Garage runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use localocean::spaces::SpacesBackend;
use localocean::testkit::{NoSpaces, RecordingSpaces};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use super::env::{Seams, Timings};
use super::error::{storage_attr, tls_attr};
use super::state::{known, RegistryState, StorageState, TimeoutsState, TlsState, UserState};
use super::RegistryResource;
use crate::do_api::{self, SshKeyCreateRequest};
use crate::provider::SettingsHandle;
use crate::render::paths;
use crate::storage::spaces::scripted;
use crate::testkit::api::{fast, Api};
use crate::testkit::{FakeMachines, FakeOutside, FakeRegistry};

mod defaults;
mod import;
mod replicas;
mod reserved_ip;
mod seed;
mod users;

const DOMAIN: &str = "example.test";
const FQDN: &str = "registry.example.test";
const ADMIN_PW: &str = "admin-password-0123";
const READER_HASH: &str = "$2y$08$abcdefghijklmnopqrstuu5UmCkrG5qkWh4Tlr2ct8ErgEjCJwDpu";
/// The null hypervisor hands out addresses in order: the first droplet, then the next.
const FIRST_IP: &str = "198.18.0.2";
const SECOND_IP: &str = "198.18.0.3";

fn s(v: &str) -> Value<String> {
    Value::Value(v.to_owned())
}

fn no_meta() -> ValueEmpty {
    ValueEmpty::Null
}

fn paths_of(d: &[tf_provider::Diagnostic]) -> Vec<String> {
    d.iter().map(|e| e.attribute.to_string()).collect()
}

fn summaries(d: &[tf_provider::Diagnostic]) -> Vec<String> {
    d.iter().map(|e| e.summary.to_string()).collect()
}

/// A registry as written in HCL: self-signed, an admin (push) and a reader (pull, by hash).
fn config(name: &str) -> RegistryState {
    let mut users = BTreeMap::new();
    users.insert(
        "admin".to_owned(),
        Value::Value(UserState {
            password: s(ADMIN_PW),
            ..Default::default()
        }),
    );
    users.insert(
        "reader".to_owned(),
        Value::Value(UserState {
            password_bcrypt: s(READER_HASH),
            access: s("pull"),
            ..Default::default()
        }),
    );
    RegistryState {
        name: s(name),
        region: s("nyc3"),
        fqdn: s(FQDN),
        users: Value::Value(users),
        tls: Value::Value(TlsState {
            source: s("self_signed"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_volume(mut c: RegistryState, size_gib: i64, force: bool) -> RegistryState {
    c.storage = Value::Value(StorageState {
        backend: s("volume"),
        size_gib: Value::Value(size_gib),
        force_destroy: if force {
            Value::Value(true)
        } else {
            Value::Null
        },
        ..Default::default()
    });
    c
}

/// localocean's API with `example.test`, the resource with test seams around it.
struct World {
    api: Api,
    machines: Arc<FakeMachines>,
    outside: Arc<FakeOutside>,
    registry: Arc<FakeRegistry>,
    resource: RegistryResource,
}

impl World {
    async fn start() -> World {
        World::start_with(Arc::new(NoSpaces), None).await
    }

    /// `s3`: a Spaces endpoint for the provider's credentials (the scripted bucket).
    async fn start_with(spaces: Arc<dyn SpacesBackend>, s3: Option<&str>) -> World {
        let api = Api::start(spaces).await;
        api.add_domain(DOMAIN).await;
        let machines = FakeMachines::new();
        let hv = api.hv.clone();
        machines.boot_with_user_data(Arc::new(move |addr: &str| hv.user_data_of(addr)));
        let outside = FakeOutside::new();
        let registry = FakeRegistry::new();
        let mut settings = api.settings(None);
        if let Some(endpoint) = s3 {
            settings.spaces_access_id = Some(crate::secret::Secret::new("AKPROVIDER"));
            settings.spaces_secret_key = Some(crate::secret::Secret::new("provider-secret"));
            settings.spaces_endpoint = endpoint.to_owned();
        }
        let handle = SettingsHandle::default();
        handle.set(settings);
        let resource = RegistryResource::with_seams(
            handle,
            Seams {
                machines: machines.clone(),
                outside: outside.clone(),
                registry: registry.clone(),
                timings: Timings {
                    old_droplet_grace: Duration::from_millis(300),
                    probe_connect: Duration::from_secs(2),
                    rollback: Duration::from_secs(5),
                    drain: Duration::from_millis(100),
                    balancer_healthy: Duration::from_millis(100),
                    api: fast(),
                },
            },
        );
        World {
            api,
            machines,
            outside,
            registry,
            resource,
        }
    }

    fn client(&self) -> &do_api::Client {
        &self.api.client
    }

    async fn plan_create(&self, config: RegistryState) -> (Option<RegistryState>, Diagnostics) {
        let mut d = Diagnostics::default();
        let planned = self
            .resource
            .plan_create(&mut d, config.clone(), config, no_meta())
            .await
            .map(|(st, _)| st);
        (planned, d)
    }

    /// plan + create; the state OpenTofu would keep, and the diagnostics. With a volume, the
    /// test droplets see its device, as DigitalOcean's do once it is attached.
    async fn create(&self, config: RegistryState) -> (RegistryState, Diagnostics) {
        if super::model::Model::of(&config).storage.backend == super::model::Backend::Volume {
            let name = super::model::Model::of(&config).volume_name();
            for ip in [FIRST_IP, SECOND_IP] {
                self.machines.machine(ip).attach_volume(&name);
            }
        }
        let (planned, d) = self.plan_create(config.clone()).await;
        let planned = planned.unwrap_or_else(|| panic!("plan failed: {d:?}"));
        let mut d = Diagnostics::default();
        let (st, _) = self
            .resource
            .create(&mut d, planned, config, Value::Null, no_meta())
            .await
            .expect("create returns a state");
        (st, d)
    }

    /// A registry that exists, created without an error.
    async fn created(&self, config: RegistryState) -> RegistryState {
        let (st, d) = self.create(config).await;
        assert!(d.errors.is_empty(), "create failed: {:?}", d.errors);
        st
    }

    /// The plan of `change` to `prior`, as OpenTofu proposes it: the prior values with the
    /// changed arguments.
    async fn plan_update(
        &self,
        prior: &RegistryState,
        change: impl FnOnce(&mut RegistryState),
    ) -> (Option<(RegistryState, Vec<AttributePath>)>, Diagnostics) {
        let (planned, d) = self.plan_update_private(prior, change).await;
        (planned.map(|(st, _, replace)| (st, replace)), d)
    }

    /// [`World::plan_update`] with the planned private state.
    #[allow(clippy::type_complexity)]
    async fn plan_update_private(
        &self,
        prior: &RegistryState,
        change: impl FnOnce(&mut RegistryState),
    ) -> (
        Option<(
            RegistryState,
            super::state::PrivateState,
            Vec<AttributePath>,
        )>,
        Diagnostics,
    ) {
        let mut proposed = prior.clone();
        change(&mut proposed);
        // The configuration leaves `http_secret` unset unless the change sets it: OpenTofu
        // proposes the prior value, the configuration holds null (see `tests/seed.rs`).
        let mut config = proposed.clone();
        if config.http_secret == prior.http_secret {
            config.http_secret = Value::Null;
        }
        let mut d = Diagnostics::default();
        let planned = self
            .resource
            .plan_update(
                &mut d,
                prior.clone(),
                proposed,
                config,
                Value::Null,
                no_meta(),
            )
            .await;
        (planned, d)
    }

    /// plan + update in place; the resulting state and the update's diagnostics.
    async fn update(
        &self,
        prior: &RegistryState,
        change: impl FnOnce(&mut RegistryState),
    ) -> (RegistryState, Diagnostics) {
        let (planned, d) = self.plan_update_private(prior, change).await;
        let (planned, private, replace) = planned.unwrap_or_else(|| panic!("plan failed: {d:?}"));
        assert!(replace.is_empty(), "the change replaces: {replace:?}");
        let mut d = Diagnostics::default();
        let (st, _) = self
            .resource
            .update(
                &mut d,
                prior.clone(),
                planned.clone(),
                planned.clone(),
                private,
                no_meta(),
            )
            .await
            .expect("update returns a state");
        if d.errors.is_empty() {
            // OpenTofu refuses a successful apply whose result differs from a known planned
            // value ("Provider produced inconsistent result after apply").
            if !planned.retired_droplet_ids.is_unknown() {
                assert_eq!(
                    st.retired_droplet_ids, planned.retired_droplet_ids,
                    "inconsistent result after apply: retired_droplet_ids"
                );
            }
            if !planned.droplet_id.is_unknown() {
                assert_eq!(
                    st.droplet_id, planned.droplet_id,
                    "inconsistent result after apply: droplet_id"
                );
            }
        }
        (st, d)
    }

    async fn updated(
        &self,
        prior: &RegistryState,
        change: impl FnOnce(&mut RegistryState),
    ) -> RegistryState {
        let (st, d) = self.update(prior, change).await;
        assert!(d.errors.is_empty(), "update failed: {:?}", d.errors);
        st
    }

    async fn read(&self, st: &RegistryState) -> (Option<RegistryState>, Diagnostics) {
        let mut d = Diagnostics::default();
        let got = self
            .resource
            .read(&mut d, st.clone(), Value::Null, no_meta())
            .await
            .map(|(st, _)| st);
        (got, d)
    }

    async fn destroy(&self, st: &RegistryState) -> Diagnostics {
        let mut d = Diagnostics::default();
        let done = self
            .resource
            .destroy(&mut d, st.clone(), Value::Null, no_meta())
            .await;
        assert_eq!(done.is_some(), d.errors.is_empty(), "{d:?}");
        d
    }

    async fn droplet(&self, st: &RegistryState) -> Option<do_api::Droplet> {
        self.client()
            .get_droplet(droplet_id(st))
            .await
            .expect("GET droplet")
    }

    async fn record_data(&self, st: &RegistryState) -> Option<String> {
        let id = st.record_id.as_ref_option().copied()? as u64;
        self.client()
            .get_record(DOMAIN, id)
            .await
            .expect("GET record")
            .map(|r| r.data)
    }

    async fn firewall(&self, id: &str) -> Option<do_api::Firewall> {
        self.client().get_firewall(id).await.expect("GET firewall")
    }
}

fn droplet_id(st: &RegistryState) -> u64 {
    *st.droplet_id.as_ref_option().expect("droplet id in state") as u64
}

fn text(v: &Value<String>) -> &str {
    v.as_ref_option().map(String::as_str).unwrap_or_default()
}

/// `map[name]`; a missing entry reads as null.
fn by_user(map: &super::state::ByUser, name: &str) -> Value<String> {
    map.as_ref_option()
        .and_then(|m| m.get(name).cloned())
        .unwrap_or(Value::Null)
}

fn ssh_cidrs(f: &do_api::Firewall) -> Vec<String> {
    f.inbound_rules
        .iter()
        .filter(|r| r.ports == "22")
        .flat_map(|r| r.sources.addresses.clone())
        .collect()
}

// ---- plan -----------------------------------------------------------------------------------

#[tokio::test]
async fn plan_create_fills_defaults_and_leaves_what_apply_makes_unknown() {
    let w = World::start().await;
    let (planned, d) = w.plan_create(config("reg")).await;
    assert!(d.errors.is_empty() && d.warnings.is_empty(), "{d:?}");
    let st = planned.unwrap();
    assert_eq!(text(&st.size), "s-1vcpu-1gb");
    assert_eq!(text(&st.image), "debian-12-x64");
    assert_eq!(st.anonymous_pull, Value::Value(false));
    let cidrs: Vec<&str> = st
        .ssh_allowed_cidrs
        .as_ref_option()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(cidrs, ["0.0.0.0/0", "::/0"]);
    let tls = st.tls.as_ref_option().unwrap();
    assert_eq!(text(&tls.source), "self_signed");
    assert_eq!(text(&tls.challenge), "dns-01");
    assert_eq!(text(&tls.key_type), "ecdsa-p256");
    assert_eq!(tls.renew_before_days, Value::Value(30));
    assert_eq!(text(&by_user(&st.user_access, "admin")), "push");
    assert!(
        by_user(&st.bcrypt_hashes, "admin").is_unknown(),
        "hashed at apply"
    );
    assert_eq!(text(&by_user(&st.bcrypt_hashes, "reader")), READER_HASH);
    assert_eq!(text(&st.id), FQDN);
    assert_eq!(text(&st.url), "https://registry.example.test");
    for (name, unknown) in [
        ("droplet_id", st.droplet_id.is_unknown()),
        ("ipv4_address", st.ipv4_address.is_unknown()),
        ("files_digest", st.files_digest.is_unknown()),
        (
            "management_private_key",
            st.management_private_key.is_unknown(),
        ),
        ("certificate_pem", st.certificate_pem.is_unknown()),
        ("docker_config_json", st.docker_config_json.is_unknown()),
    ] {
        assert!(unknown, "{name} is not unknown");
    }
    assert!(w.api.hv.calls().is_empty(), "a plan made something");
}

#[tokio::test]
async fn plan_create_refuses_an_image_whose_disk_or_region_does_not_fit() {
    let w = World::start().await;
    // A snapshot of a droplet with a 25 GB disk, in nyc3.
    let image = w.api.droplet_snapshot("s-1vcpu-1gb", "nyc3").await;
    let mut c = config("reg");
    c.image = s(&image);
    c.size = s("s-1vcpu-512mb-10gb");
    c.region = s("ams3");
    let (planned, d) = w.plan_create(c).await;
    assert!(planned.is_none());
    assert_eq!(
        summaries(&d.errors),
        [
            "`image` needs a larger disk than `size` has",
            "`image` is not in the registry's region"
        ]
    );
    assert_eq!(paths_of(&d.errors), ["image", "image"]);
    assert!(
        d.errors[0].detail.contains("25 GB"),
        "{}",
        d.errors[0].detail
    );
    // A size with disk enough, in the snapshot's region: planned, the id kept as given.
    let mut c = config("reg");
    c.image = s(&image);
    c.size = s("s-1vcpu-1gb");
    c.region = s("nyc3");
    let (planned, d) = w.plan_create(c).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert_eq!(text(&planned.unwrap().image), image);
}

#[tokio::test]
async fn plan_create_names_the_attribute_of_each_bad_value() {
    let w = World::start().await;
    // Checks that need the API: each on its attribute, valid choices listed.
    let mut c = config("reg");
    c.region = s("atlantis1");
    c.size = s("s-64vcpu-1tb");
    c.image = s("windows-95");
    c.fqdn = s("registry.elsewhere.test");
    let (planned, d) = w.plan_create(c).await;
    assert!(planned.is_none());
    assert_eq!(
        summaries(&d.errors),
        [
            "Unknown `region`",
            "Unknown `size`",
            "Unknown `image`",
            "Domain not in this account"
        ]
    );
    assert_eq!(paths_of(&d.errors), ["region", "size", "image", "fqdn"]);
    assert!(
        d.errors[0].detail.contains("nyc3"),
        "{}",
        d.errors[0].detail
    );

    // Spaces without the provider's Spaces credentials.
    let mut c = config("reg");
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        ..Default::default()
    });
    let (_, d) = w.plan_create(c).await;
    assert_eq!(summaries(&d.errors), ["Spaces credentials missing"]);
    assert_eq!(d.errors[0].attribute, storage_attr("backend"));

    // A provided certificate that does not parse: the plan fails, not the apply.
    let mut c = config("reg");
    c.tls = Value::Value(TlsState {
        source: s("provided"),
        certificate_pem: s("not a certificate"),
        private_key_pem: s("not a key"),
        ..Default::default()
    });
    let (_, d) = w.plan_create(c).await;
    assert_eq!(summaries(&d.errors), ["Invalid provided certificate"]);
    assert_eq!(d.errors[0].attribute, tls_attr("certificate_pem"));

    // A timeout too long for any clock: a diagnostic on it, never a panic.
    let mut c = config("reg");
    c.timeouts = Value::Value(TimeoutsState {
        create: s("99999999999999999999999h"),
        ..Default::default()
    });
    let (_, d) = w.plan_create(c).await;
    assert_eq!(summaries(&d.errors), ["Invalid `timeouts.create`"]);
    assert_eq!(
        d.errors[0].attribute,
        AttributePath::new("timeouts").index(0).attribute("create")
    );
    assert!(w.api.hv.calls().is_empty());
}

#[tokio::test]
async fn plan_update_replaces_for_region_fqdn_backend_and_bucket() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    async fn replaced(
        w: &World,
        prior: &RegistryState,
        change: fn(&mut RegistryState),
    ) -> (RegistryState, Vec<String>, Diagnostics) {
        let (planned, d) = w.plan_update(prior, change).await;
        let (st, replace) = planned.expect("plan");
        (st, replace.iter().map(|p| p.to_string()).collect(), d)
    }
    let (st, replace, _) = replaced(&w, &prior, |st| st.region = s("ams3")).await;
    assert_eq!(replace, ["region"]);
    assert!(
        st.droplet_id.is_unknown() && st.http_secret.is_unknown(),
        "planned as new"
    );
    let (_, replace, _) = replaced(&w, &prior, |st| st.fqdn = s("other.example.test")).await;
    assert_eq!(replace, ["fqdn"]);
    let (_, replace, d) = replaced(&w, &prior, |st| {
        st.storage = Value::Value(StorageState {
            backend: s("volume"),
            size_gib: Value::Value(1),
            ..Default::default()
        })
    })
    .await;
    assert_eq!(replace, ["storage[0].backend"]);
    assert_eq!(
        summaries(&d.warnings),
        ["Changing the storage backend replaces the registry"]
    );
    // Nothing that forces a replacement: none planned.
    let (_, replace, d) = replaced(&w, &prior, |st| st.anonymous_pull = Value::Value(true)).await;
    assert!(
        replace.is_empty() && d.warnings.is_empty(),
        "{replace:?} {d:?}"
    );

    // Another bucket of a Spaces registry is another registry.
    let mut spaces = prior.clone();
    spaces.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("images-a"),
        force_destroy: Value::Value(false),
        spaces_redirect: Value::Value(false),
        ..Default::default()
    });
    let (planned, _) = w
        .plan_update(&spaces, |st| {
            if let Value::Value(b) = &mut st.storage {
                b.bucket = s("images-b");
            }
        })
        .await;
    let (_, replace) = planned.unwrap();
    assert_eq!(replace, [storage_attr("bucket")]);
}

#[tokio::test]
async fn plan_update_warns_of_a_new_droplet_and_a_resize() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    let (planned, d) = w
        .plan_update(&prior, |st| st.droplet_generation = Value::Value(1))
        .await;
    let (st, replace) = planned.unwrap();
    assert!(replace.is_empty());
    assert_eq!(summaries(&d.warnings), ["The droplet will be replaced"]);
    assert!(st.droplet_id.is_unknown() && st.ipv4_address.is_unknown());
    assert!(st.files_digest.is_unknown() && st.registry_version.is_unknown());
    // The self-signed certificate names the droplet's address: a new one.
    assert!(st.certificate_pem.is_unknown());
    // The keys stay: people's known_hosts keep working.
    assert_eq!(st.host_public_key, prior.host_public_key);
    assert_eq!(st.management_private_key, prior.management_private_key);

    let (planned, d) = w.plan_update(&prior, |st| st.size = s("s-1vcpu-2gb")).await;
    let (st, _) = planned.unwrap();
    assert_eq!(summaries(&d.warnings), ["Resizing powers the droplet off"]);
    assert_eq!(st.droplet_id, prior.droplet_id, "same droplet");
    assert_eq!(st.certificate_pem, prior.certificate_pem);
}

#[tokio::test]
async fn plan_update_refuses_to_shrink_a_volume() {
    let w = World::start().await;
    let prior = w.created(with_volume(config("reg"), 5, false)).await;
    let (planned, d) = w
        .plan_update(&prior, |st| {
            if let Value::Value(b) = &mut st.storage {
                b.size_gib = Value::Value(4);
            }
        })
        .await;
    assert!(planned.is_none());
    assert_eq!(summaries(&d.errors), ["Invalid `storage.size_gib`"]);
    assert_eq!(d.errors[0].attribute, storage_attr("size_gib"));
    assert!(
        d.errors[0].detail.contains("5 GiB → 4 GiB"),
        "{}",
        d.errors[0].detail
    );
}

#[tokio::test]
async fn plan_update_keeps_the_hash_of_an_unchanged_password() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    let hash = |st: &RegistryState, user: &str| by_user(&st.bcrypt_hashes, user);
    assert!(hash(&prior, "admin").is_value());

    // Nothing changed: nothing planned, not even the hash of the plaintext password.
    let (planned, _) = w.plan_update(&prior, |_| {}).await;
    let (st, _) = planned.unwrap();
    assert_eq!(st, prior);

    // A new password: its hash unknown (made at apply), the other user's kept.
    let (planned, _) = w
        .plan_update(&prior, |st| {
            if let Value::Value(users) = &mut st.users {
                if let Value::Value(u) = users.get_mut("admin").unwrap() {
                    u.password = s("another-password-456");
                }
            }
        })
        .await;
    let (st, _) = planned.unwrap();
    assert!(hash(&st, "admin").is_unknown());
    assert_eq!(hash(&st, "reader"), hash(&prior, "reader"));
    assert!(st.docker_config_json.is_unknown());
    assert!(st.files_digest.is_unknown(), "the htpasswd files change");
}

#[tokio::test]
async fn plan_update_shows_a_hand_edit_as_a_digest_change() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    // read finds the htpasswd file edited on the droplet.
    let machine = w.machines.machine(FIRST_IP);
    std::fs::write(machine.path(paths::HTPASSWD), "mallory:$2y$05$x\n").unwrap();
    let (read, d) = w.read(&prior).await;
    assert!(d.errors.is_empty() && d.warnings.is_empty(), "{d:?}");
    let read = read.unwrap();
    let digest =
        |st: &RegistryState| st.files_digest.as_ref_option().unwrap()[paths::HTPASSWD].clone();
    assert_ne!(digest(&read), digest(&prior));
    // The plan wants the file back as it was written.
    let (planned, _) = w.plan_update(&read, |_| {}).await;
    let (st, _) = planned.unwrap();
    assert_eq!(digest(&st), digest(&prior));
    assert_ne!(st, read, "the drift is a change");
    // Applying it puts the file back.
    let fixed = w.updated(&read, |_| {}).await;
    assert_eq!(digest(&fixed), digest(&prior));
    let htpasswd = std::fs::read_to_string(machine.path(paths::HTPASSWD)).unwrap();
    assert!(!htpasswd.contains("mallory") && htpasswd.contains("admin:"));
}

#[tokio::test]
async fn plan_update_renews_an_acme_certificate_that_is_due() {
    let w = World::start().await;
    let created = w.created(config("reg")).await;
    // As if ordered from an ACME CA and now 10 days from expiry.
    let mut prior = created.clone();
    if let Value::Value(t) = &mut prior.tls {
        t.source = s("acme");
        // Renewal through the plan only: the droplet's own renewal is tested below.
        t.renew = s("plan");
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![FQDN.to_owned()]).unwrap();
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    prior.certificate_pem = s(&params.self_signed(&key).unwrap().pem());
    let (planned, d) = w.plan_update(&prior, |_| {}).await;
    let (st, _) = planned.unwrap();
    assert_eq!(summaries(&d.warnings), ["The certificate will be renewed"]);
    assert!(
        d.warnings[0].detail.contains("renew_before_days = 30"),
        "{:?}",
        d.warnings
    );
    assert!(st.certificate_pem.is_unknown() && st.tls_private_key_pem.is_unknown());
    // Far from expiry: no renewal.
    let (planned, d) = w.plan_update(&created, |_| {}).await;
    assert!(d.warnings.is_empty());
    assert_eq!(planned.unwrap().0.certificate_pem, created.certificate_pem);
}

// ---- create ---------------------------------------------------------------------------------

#[tokio::test]
async fn create_converges_verifies_and_records_every_id() {
    let w = World::start().await;
    let st = w.created(config("reg")).await;
    let d = w.droplet(&st).await.expect("droplet exists");
    assert_eq!(d.name, "reg");
    assert_eq!(text(&st.ipv4_address), FIRST_IP);
    assert_eq!(w.record_data(&st).await.as_deref(), Some(FIRST_IP));
    let fw = w.firewall(text(&st.firewall_id)).await.expect("firewall");
    assert_eq!(fw.droplet_ids, [droplet_id(&st)]);
    assert_eq!(text(&st.registry_version), "2.8.2+ds1");
    // Every managed file is on the droplet, with the digest state holds.
    let machine = w.machines.machine(FIRST_IP);
    for (path, digest) in st.files_digest.as_ref_option().unwrap() {
        let bytes = std::fs::read(machine.path(path)).unwrap();
        assert_eq!(&crate::remote::sha256_hex(&bytes), text(digest), "{path}");
    }
    // Checked from outside with our certificate and a push user.
    let checks = w.outside.checks();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].ip.to_string(), FIRST_IP);
    assert_eq!(
        checks[0].push_user.as_ref().map(|u| u.0.as_str()),
        Some("admin")
    );
    let leaf = crate::tls::leaf_info(text(&st.certificate_pem)).unwrap();
    assert_eq!(checks[0].certificate_der, leaf.der);
    let mut unknowns = st.clone();
    unknowns.null_unknowns();
    assert_eq!(unknowns, st, "no unknown left in state");
}

#[tokio::test]
async fn create_failing_halfway_keeps_every_id_so_destroy_cleans_up() {
    let w = World::start().await;
    w.machines.refuse(FIRST_IP);
    let (st, d) = w.create(config("halfway")).await;
    assert_eq!(summaries(&d.errors), ["Creating the registry failed"]);
    let id = droplet_id(&st);
    let detail = &d.errors[0].detail;
    assert!(
        detail.contains(&format!("converging droplet halfway ({id})")),
        "{detail}"
    );
    assert!(st.firewall_id.is_value() && st.record_id.is_value());
    assert!(st.registry_version.is_null(), "unknowns become null");
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(w.droplet(&st).await.is_none());
    assert!(w.firewall(text(&st.firewall_id)).await.is_none());
    assert!(w.record_data(&st).await.is_none());
}

#[tokio::test]
async fn a_create_killed_halfway_is_swept_by_the_next_create() {
    let w = World::start().await;
    w.machines.refuse(FIRST_IP);
    // The provider killed after the droplet, firewall and record were made: no state at all.
    let (lost, d) = w.create(config("killed")).await;
    assert_eq!(summaries(&d.errors), ["Creating the registry failed"]);
    let left = droplet_id(&lost);
    let st = w.created(config("killed")).await;
    assert_ne!(droplet_id(&st), left);
    assert!(
        w.client().get_droplet(left).await.unwrap().is_none(),
        "the droplet of the killed create is left"
    );
    let firewalls: Vec<String> = w
        .client()
        .list_firewalls()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(firewalls, [text(&st.firewall_id).to_owned()]);
    // The A record the killed create made is taken over, not joined by a second one.
    let a = w
        .client()
        .list_records(text(&st.domain), Some(FQDN), Some("A"))
        .await
        .unwrap();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].id as i64, *st.record_id.as_ref_option().unwrap());
    assert_eq!(a[0].data, SECOND_IP);
    // The registry's droplet no longer carries the "being created" tag.
    let d = w.droplet(&st).await.unwrap();
    assert!(
        !d.tags
            .iter()
            .any(|t| t.starts_with("docker-registry-creating-")),
        "{:?}",
        d.tags
    );
}

#[tokio::test]
async fn ssh_dropped_under_the_converge_converges_again_over_a_new_connection() {
    let w = World::start().await;
    let m = w.machines.machine(FIRST_IP);
    // The converge script (it carries the managed files as here-documents).
    m.drop_once("__TF_EOF__");
    let st = w.created(config("dropped")).await;
    assert_eq!(m.dropped(), 1);
    let connects = w
        .machines
        .log()
        .iter()
        .filter(|l| **l == format!("connect {FIRST_IP}"))
        .count();
    assert!(connects >= 2, "{:?}", w.machines.log());
    assert!(st.files_digest.is_value());
}

// ---- update in place ------------------------------------------------------------------------

#[tokio::test]
async fn update_renames_resizes_and_retags_the_droplet() {
    let w = World::start().await;
    let mut c = config("reg");
    c.tags = Value::Value(vec![s("team-a"), s("keep")]);
    let prior = w.created(c).await;
    let id = droplet_id(&prior);
    let st = w
        .updated(&prior, |st| {
            st.name = s("reg-renamed");
            st.size = s("s-1vcpu-2gb");
            st.tags = Value::Value(vec![s("keep"), s("team-b")]);
        })
        .await;
    assert_eq!(droplet_id(&st), id, "the same droplet");
    let d = w.droplet(&st).await.unwrap();
    assert_eq!(d.name, "reg-renamed");
    assert_eq!(d.size_slug, "s-1vcpu-2gb");
    let mut tags = d.tags.clone();
    tags.retain(|t| !t.starts_with("docker-registry-"));
    tags.sort();
    assert_eq!(tags, ["keep", "team-b"]);
    // Powered off for the resize, on again after.
    let calls: Vec<String> = w
        .api
        .hv
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("power") || c.starts_with("resize"))
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].contains("Off") && calls[1].starts_with("resize") && calls[2].contains("On"));
}

#[tokio::test]
async fn update_changes_the_firewall_and_recreates_one_that_is_gone() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    let fw = text(&prior.firewall_id).to_owned();
    let st = w
        .updated(&prior, |st| {
            st.ssh_allowed_cidrs = Value::Value(vec![s("203.0.113.0/24")]);
        })
        .await;
    assert_eq!(text(&st.firewall_id), fw, "updated in place");
    assert_eq!(
        ssh_cidrs(&w.firewall(&fw).await.unwrap()),
        ["203.0.113.0/24"]
    );

    // Deleted by hand: read notices, the plan leaves it unknown, apply makes a new one.
    w.client().delete_firewall(&fw).await.unwrap();
    let (read, _) = w.read(&st).await;
    let read = read.unwrap();
    assert!(read.firewall_id.is_null());
    let (planned, _) = w.plan_update(&read, |_| {}).await;
    assert!(planned.unwrap().0.firewall_id.is_unknown());
    let st = w.updated(&read, |_| {}).await;
    let new_fw = text(&st.firewall_id).to_owned();
    assert_ne!(new_fw, fw);
    let f = w.firewall(&new_fw).await.unwrap();
    assert_eq!(f.droplet_ids, [droplet_id(&st)]);
    assert_eq!(ssh_cidrs(&f), ["203.0.113.0/24"]);

    // Deleted while the sources change: the update finds it gone and makes another.
    w.client().delete_firewall(&new_fw).await.unwrap();
    let st = w
        .updated(&st, |st| {
            st.ssh_allowed_cidrs = Value::Value(vec![s("198.51.100.0/24")]);
        })
        .await;
    let third = text(&st.firewall_id).to_owned();
    assert_ne!(third, new_fw);
    assert_eq!(
        ssh_cidrs(&w.firewall(&third).await.unwrap()),
        ["198.51.100.0/24"]
    );
}

#[tokio::test]
async fn update_recreates_a_record_deleted_by_hand() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    let rid = *prior.record_id.as_ref_option().unwrap() as u64;
    w.client().delete_record(DOMAIN, rid).await.unwrap();
    let (read, _) = w.read(&prior).await;
    let read = read.unwrap();
    assert!(read.record_id.is_null());
    let st = w.updated(&read, |_| {}).await;
    assert_ne!(*st.record_id.as_ref_option().unwrap() as u64, rid);
    assert_eq!(w.record_data(&st).await.as_deref(), Some(FIRST_IP));
}

#[tokio::test]
async fn update_writes_peoples_keys_to_the_running_droplet() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    let person = crate::remote::generate_ed25519("bob@laptop").unwrap();
    let key = w
        .client()
        .create_ssh_key(&SshKeyCreateRequest {
            name: "bob".into(),
            public_key: person.public_openssh.clone(),
        })
        .await
        .unwrap();
    let st = w
        .updated(&prior, |st| {
            st.ssh_key_fingerprints = Value::Value(vec![s(&key.fingerprint)]);
        })
        .await;
    let keys = std::fs::read_to_string(
        w.machines
            .machine(FIRST_IP)
            .path(crate::remote::commands::AUTHORIZED_KEYS),
    )
    .unwrap();
    let lines: Vec<&str> = keys.lines().collect();
    assert_eq!(
        lines,
        [
            text(&st.management_public_key),
            person.public_openssh.as_str()
        ]
    );

    // A fingerprint the account does not hold: the plan fails, on that fingerprint.
    let unknown = "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99";
    let (planned, d) = w
        .plan_update(&st, |st| {
            st.ssh_key_fingerprints = Value::Value(vec![s(&key.fingerprint), s(unknown)]);
        })
        .await;
    assert!(planned.is_none());
    assert_eq!(summaries(&d.errors), ["Unknown SSH key"]);
    assert_eq!(
        d.errors[0].attribute,
        AttributePath::new("ssh_key_fingerprints").index(1)
    );
    assert!(
        d.errors[0].detail.contains(unknown),
        "{}",
        d.errors[0].detail
    );
    // Should one vanish between plan and apply, the apply says which.
    let mut planned = st.clone();
    planned.ssh_key_fingerprints = Value::Value(vec![s(&key.fingerprint), s(unknown)]);
    let mut d = Diagnostics::default();
    w.resource
        .update(
            &mut d,
            st.clone(),
            planned.clone(),
            planned,
            Value::Null,
            no_meta(),
        )
        .await
        .unwrap();
    assert_eq!(summaries(&d.errors), ["Updating the registry failed"]);
    assert_eq!(
        d.errors[0].attribute,
        AttributePath::new("ssh_key_fingerprints").index(1)
    );
    assert!(
        d.errors[0].detail.contains(unknown),
        "{}",
        d.errors[0].detail
    );
}

#[tokio::test]
async fn update_grows_the_volume_and_its_file_system() {
    let w = World::start().await;
    let prior = w.created(with_volume(config("reg"), 1, false)).await;
    let machine = w.machines.machine(FIRST_IP);
    machine.clear_log();
    let st = w
        .updated(&prior, |st| {
            if let Value::Value(b) = &mut st.storage {
                b.size_gib = Value::Value(3);
            }
        })
        .await;
    assert_eq!(st.volume_id, prior.volume_id);
    assert_eq!(w.api.hv.count("resize_volume reg-registry-data 3"), 1);
    let v = w
        .client()
        .get_volume(text(&st.volume_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.size_gigabytes, 3);
    // The file system grew online, on the volume's own device.
    assert!(
        machine.log().contains(&format!(
            "resize2fs {}",
            machine
                .path(&crate::storage::volume::device_path("reg-registry-data"))
                .display()
        )),
        "{}",
        machine.log()
    );
}

#[tokio::test]
async fn update_changes_users_on_the_running_registry_without_a_restart() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    let machine = w.machines.machine(FIRST_IP);
    machine.clear_log();
    let st = w
        .updated(&prior, |st| {
            if let Value::Value(users) = &mut st.users {
                users.insert(
                    "ci".to_owned(),
                    Value::Value(UserState {
                        password: s("ci-password-0123456"),
                        access: s("push"),
                        ..Default::default()
                    }),
                );
            }
        })
        .await;
    let all = std::fs::read_to_string(machine.path(paths::HTPASSWD)).unwrap();
    let push = std::fs::read_to_string(machine.path(paths::HTPASSWD_PUSH)).unwrap();
    assert!(all.contains("ci:") && all.contains("reader:"), "{all}");
    assert!(push.contains("ci:") && !push.contains("reader:"), "{push}");
    let log = machine.log();
    assert!(
        !log.contains("systemctl restart") && !log.contains("systemctl reload"),
        "{log}"
    );
    // The admin's hash was kept; the new user's made.
    let user = |st: &RegistryState, name: &str| by_user(&st.bcrypt_hashes, name);
    assert_eq!(user(&st, "admin"), user(&prior, "admin"));
    assert!(text(&user(&st, "ci")).starts_with("$2y$"));
    assert_eq!(w.outside.checks().len(), 2, "verified again");
}

// ---- replacement ----------------------------------------------------------------------------

#[tokio::test]
async fn replacement_switches_the_record_after_verifying_and_deletes_the_old_droplet_later() {
    let w = Arc::new(World::start().await);
    let prior = w.created(config("reg")).await;
    let old = droplet_id(&prior);
    let (planned, _) = w
        .plan_update(&prior, |st| st.droplet_generation = Value::Value(1))
        .await;
    let (planned, _) = planned.unwrap();
    let task = {
        let w = w.clone();
        let prior = prior.clone();
        tokio::spawn(async move {
            let mut d = Diagnostics::default();
            let got = w
                .resource
                .update(
                    &mut d,
                    prior,
                    planned.clone(),
                    planned,
                    Value::Null,
                    no_meta(),
                )
                .await;
            (got.map(|(st, _)| st), d)
        })
    };
    // Watch the record: when it moves, the new droplet has been verified and the old one
    // still serves (the record's TTL has not passed).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the record never moved"
        );
        if w.record_data(&prior).await.as_deref() == Some(SECOND_IP) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        w.client().get_droplet(old).await.unwrap().is_some(),
        "the old droplet went before the record's TTL passed"
    );
    assert!(w.outside.checked_ips().contains(&SECOND_IP.to_owned()));
    let (st, d) = task.await.unwrap();
    assert!(d.errors.is_empty(), "{d:?}");
    let st = st.unwrap();
    assert_ne!(droplet_id(&st), old);
    assert_eq!(text(&st.ipv4_address), SECOND_IP);
    assert!(
        w.client().get_droplet(old).await.unwrap().is_none(),
        "old droplet deleted"
    );
    // Same keys, same firewall (now in front of the new droplet), same record.
    assert_eq!(st.host_private_key, prior.host_private_key);
    assert_eq!(st.firewall_id, prior.firewall_id);
    assert_eq!(st.record_id, prior.record_id);
    let fw = w.firewall(text(&st.firewall_id)).await.unwrap();
    assert_eq!(fw.droplet_ids, [droplet_id(&st)]);
    // The new droplet got the files, with a certificate for its own address.
    assert!(w
        .machines
        .machine(SECOND_IP)
        .path(paths::REGISTRY_CONFIG)
        .exists());
    assert_ne!(st.certificate_pem, prior.certificate_pem);
}

#[tokio::test]
async fn replacement_failing_before_the_switch_deletes_the_new_droplet_and_keeps_the_old() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    w.outside.fail_for(SECOND_IP);
    let (st, d) = w
        .update(&prior, |st| st.droplet_generation = Value::Value(7))
        .await;
    assert_eq!(summaries(&d.errors), ["Updating the registry failed"]);
    assert!(
        d.errors[0].detail.contains("converging droplet reg ("),
        "{}",
        d.errors[0].detail
    );
    // The state is the old registry's; the old droplet serves and the record points at it.
    assert_eq!(st.droplet_id, prior.droplet_id);
    assert!(w.droplet(&prior).await.is_some());
    assert_eq!(w.record_data(&prior).await.as_deref(), Some(FIRST_IP));
    let creates = w.api.hv.count("create ");
    assert_eq!(creates, 2, "{:?}", w.api.hv.calls());
    let new_id = w
        .api
        .hv
        .calls()
        .iter()
        .filter(|c| c.starts_with("create "))
        .nth(1)
        .and_then(|c| c.split_whitespace().nth(1).map(str::to_owned))
        .unwrap();
    assert_eq!(
        w.api.hv.count(&format!("delete {new_id}")),
        1,
        "new droplet deleted"
    );
    assert_eq!(w.api.hv.count(&format!("delete {}", droplet_id(&prior))), 0);
}

#[tokio::test]
async fn replacement_with_a_volume_moves_it_and_puts_it_back_on_failure() {
    let w = World::start().await;
    let prior = w.created(with_volume(config("reg"), 1, false)).await;
    let old = droplet_id(&prior);
    let vid = text(&prior.volume_id).to_owned();
    w.outside.fail_for(SECOND_IP);
    let (st, d) = w
        .update(&prior, |st| st.droplet_generation = Value::Value(1))
        .await;
    assert!(!d.errors.is_empty());
    assert_eq!(st.droplet_id, prior.droplet_id);
    // The old registry was stopped for the move and started again once the volume was back.
    let old_log = w.machines.machine(FIRST_IP).log();
    let stop = old_log
        .find("systemctl stop docker-registry")
        .expect("stopped");
    let start = old_log
        .find("systemctl start docker-registry")
        .expect("started again");
    assert!(stop < start, "{old_log}");
    let v = w.client().get_volume(&vid).await.unwrap().unwrap();
    assert_eq!(v.droplet_ids, [old], "the volume is back");

    // Without the fault: moved for good.
    let w2 = World::start().await;
    let prior = w2.created(with_volume(config("reg"), 1, false)).await;
    let st = w2
        .updated(&prior, |st| st.droplet_generation = Value::Value(1))
        .await;
    let v = w2
        .client()
        .get_volume(text(&st.volume_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.droplet_ids, [droplet_id(&st)]);
    assert!(w2
        .machines
        .machine(FIRST_IP)
        .log()
        .contains("systemctl stop docker-registry"));
}

// ---- destroy --------------------------------------------------------------------------------

/// Everything `st` names still exists.
async fn assert_nothing_deleted(w: &World, st: &RegistryState) {
    assert!(w.droplet(st).await.is_some(), "droplet deleted");
    assert!(
        w.firewall(text(&st.firewall_id)).await.is_some(),
        "firewall deleted"
    );
    assert!(w.record_data(st).await.is_some(), "record deleted");
    if let Some(v) = st.volume_id.as_ref_option() {
        assert!(
            w.client().get_volume(v).await.unwrap().is_some(),
            "volume deleted"
        );
    }
}

#[tokio::test]
async fn destroy_keeps_a_volume_holding_images_and_deletes_nothing() {
    let w = World::start().await;
    let st = w.created(with_volume(config("reg"), 1, false)).await;
    let machine = w.machines.machine(FIRST_IP);
    let blob = machine.path("/mnt/reg-registry-data/docker/registry/v2/blobs/sha256/ab/data");
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(&blob, vec![7u8; 5000]).unwrap();
    let d = w.destroy(&st).await;
    assert_eq!(summaries(&d.errors), ["The registry still stores images"]);
    assert_eq!(d.errors[0].attribute, storage_attr("force_destroy"));
    let detail = &d.errors[0].detail;
    assert!(
        detail.contains("volume reg-registry-data") && detail.contains("1 files"),
        "{detail}"
    );
    assert_eq!(
        detail.matches("force_destroy = true").count(),
        1,
        "{detail}"
    );
    assert_nothing_deleted(&w, &st).await;

    // With force_destroy: everything goes, the volume too.
    let forced = w
        .updated(&st, |st| {
            if let Value::Value(b) = &mut st.storage {
                b.force_destroy = Value::Value(true);
            }
        })
        .await;
    let d = w.destroy(&forced).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(w.droplet(&st).await.is_none());
    assert!(w.firewall(text(&st.firewall_id)).await.is_none());
    assert!(w.record_data(&st).await.is_none());
    assert!(w
        .client()
        .get_volume(text(&st.volume_id))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn destroy_keeps_a_volume_it_cannot_measure() {
    let w = World::start().await;
    let mut st = w.created(with_volume(config("reg"), 1, false)).await;
    // Never read, and the droplet does not answer: presumed to hold images.
    st.storage_used_bytes = Value::Null;
    w.machines.refuse(FIRST_IP);
    let d = w.destroy(&st).await;
    assert_eq!(summaries(&d.errors), ["The registry still stores images"]);
    assert_eq!(d.errors[0].attribute, storage_attr("force_destroy"));
    assert!(
        d.errors[0].detail.contains("could not be measured"),
        "{}",
        d.errors[0].detail
    );
    assert_nothing_deleted(&w, &st).await;
}

#[tokio::test]
async fn destroy_keeps_a_bucket_holding_images_or_that_cannot_be_listed() {
    let bucket: scripted::Shared = Default::default();
    bucket.lock().unwrap().versions.push((
        "docker/registry/v2/blobs/x".into(),
        "v1".into(),
        false,
        42,
    ));
    let (addr, server) = scripted::serve(bucket.clone()).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys.clone(), Some(&format!("http://{addr}"))).await;
    let mut c = config("reg");
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        ..Default::default()
    });
    let mut st = w.created(c).await;
    assert_eq!(keys.keys.lock().unwrap().len(), 1, "the registry's own key");
    // The scripted bucket was there before (so it was adopted): say the registry made it,
    // as it would have, to see the guard.
    assert_eq!(st.bucket_created, Value::Value(false));
    st.bucket_created = Value::Value(true);

    let d = w.destroy(&st).await;
    assert_eq!(summaries(&d.errors), ["The registry still stores images"]);
    assert_eq!(d.errors[0].attribute, storage_attr("force_destroy"));
    let detail = &d.errors[0].detail;
    assert!(
        detail.contains("bucket reg-images") && detail.contains("1 objects (42 bytes)"),
        "{detail}"
    );
    assert_nothing_deleted(&w, &st).await;
    assert_eq!(keys.keys.lock().unwrap().len(), 1, "key kept");

    // Spaces answers nothing but errors: it cannot be listed, so it is presumed to hold images.
    bucket.lock().unwrap().fail_next = 1000;
    let d = w.destroy(&st).await;
    assert_eq!(summaries(&d.errors), ["The registry still stores images"]);
    assert!(
        d.errors[0].detail.contains("could not be measured"),
        "{}",
        d.errors[0].detail
    );
    assert_nothing_deleted(&w, &st).await;
    server.abort();
}

#[tokio::test]
async fn destroy_of_an_empty_volume_needs_no_force_and_tolerates_what_is_gone() {
    let w = World::start().await;
    let st = w.created(with_volume(config("reg"), 1, false)).await;
    // Gone already: the record, by hand.
    let rid = *st.record_id.as_ref_option().unwrap() as u64;
    w.client().delete_record(DOMAIN, rid).await.unwrap();
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(w.droplet(&st).await.is_none());
    assert!(w
        .client()
        .get_volume(text(&st.volume_id))
        .await
        .unwrap()
        .is_none());
    // Twice: everything is gone, which is what destroy wants.
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
}

// ---- nothing lost (issue #11) ---------------------------------------------------------------

impl World {
    /// Arms a fault on the in-process API (as `POST /_localocean/faults`).
    async fn fault(&self, spec: serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}_localocean/faults", self.api.base))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }

    async fn clear_faults(&self) {
        let r = reqwest::Client::new()
            .delete(format!("{}_localocean/faults", self.api.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

fn retired(st: &RegistryState) -> Vec<u64> {
    super::destroy::retired_droplets(st)
}

/// The new droplet of a replacement: the second one the hypervisor created.
fn second_droplet(w: &World) -> u64 {
    w.api
        .hv
        .calls()
        .iter()
        .filter(|c| c.starts_with("create "))
        .nth(1)
        .and_then(|c| c.split_whitespace().nth(1)?.parse().ok())
        .expect("a second droplet")
}

#[tokio::test]
async fn destroy_never_takes_an_earlier_small_reading_for_empty() {
    let w = World::start().await;
    let mut st = w.created(with_volume(config("reg"), 1, false)).await;
    // What `du` says of a fresh ext4 volume, as read after create: it once passed for empty,
    // and a volume filled since was deleted when SSH failed at destroy.
    st.storage_used_bytes = Value::Value(20_480);
    w.machines.refuse(FIRST_IP);
    let d = w.destroy(&st).await;
    assert_eq!(summaries(&d.errors), ["The registry still stores images"]);
    let detail = &d.errors[0].detail;
    assert!(
        detail.contains("presumed to hold images") && detail.contains("20480 bytes when last read"),
        "{detail}"
    );
    assert!(detail.contains("writes could not be stopped"), "{detail}");
    assert_nothing_deleted(&w, &st).await;

    // The volume there but not mounted: not measurable either.
    w.machines.allow(FIRST_IP);
    w.machines.machine(FIRST_IP).set_mounted(false);
    let d = w.destroy(&st).await;
    assert_eq!(summaries(&d.errors), ["The registry still stores images"]);
    assert!(
        d.errors[0].detail.contains("nothing is mounted there"),
        "{}",
        d.errors[0].detail
    );
    assert_nothing_deleted(&w, &st).await;

    // With force_destroy nothing needs measuring.
    w.machines.refuse(FIRST_IP);
    let mut forced = st.clone();
    if let Value::Value(b) = &mut forced.storage {
        b.force_destroy = Value::Value(true);
    }
    let d = w.destroy(&forced).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(w
        .client()
        .get_volume(text(&st.volume_id))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn destroy_stops_writes_before_it_measures_and_lets_them_through_when_it_keeps_all() {
    let w = World::start().await;
    let st = w.created(with_volume(config("reg"), 1, false)).await;
    let machine = w.machines.machine(FIRST_IP);
    let blob = machine.path("/mnt/reg-registry-data/docker/registry/v2/blobs/sha256/ab/data");
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(&blob, vec![7u8; 5000]).unwrap();
    let before = machine.commands().len();
    let d = w.destroy(&st).await;
    assert_eq!(summaries(&d.errors), ["The registry still stores images"]);
    let cmds = machine.commands()[before..].to_vec();
    let at = |what: &str| {
        cmds.iter()
            .position(|c| c.contains(what))
            .unwrap_or_else(|| panic!("no {what} in {cmds:#?}"))
    };
    let stopped = at(&format!(
        "> '{}'",
        machine.path(paths::WRITES_STOPPED).display()
    ));
    let measured = at("du -sbx");
    let resumed = at(&format!(
        "rm -f '{}'",
        machine.path(paths::WRITES_STOPPED).display()
    ));
    assert!(stopped < measured && measured < resumed, "{cmds:#?}");
    assert!(
        !machine.path(paths::WRITES_STOPPED).exists(),
        "writes resumed"
    );

    // Empty: writes stop, the measure says empty, everything goes.
    std::fs::remove_file(&blob).unwrap();
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(machine.path(paths::WRITES_STOPPED).exists());
    assert!(w.droplet(&st).await.is_none());
}

#[tokio::test]
async fn a_replacement_that_cannot_delete_the_old_droplet_keeps_it_in_state_until_it_can() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    let old = droplet_id(&prior);
    w.fault(serde_json::json!({
        "kind": "http", "method": "DELETE", "path_prefix": format!("/v2/droplets/{old}"),
        "status": 500, "count": 50
    }))
    .await;
    let (st, d) = w
        .update(&prior, |st| st.droplet_generation = Value::Value(1))
        .await;
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(summaries(&d.warnings), ["The old droplet was not deleted"]);
    assert!(
        d.warnings[0].detail.contains("retired_droplet_ids"),
        "{}",
        d.warnings[0].detail
    );
    // The new droplet is the registry: in state, and the record points at it.
    assert_ne!(droplet_id(&st), old);
    assert_eq!(text(&st.ipv4_address), SECOND_IP);
    assert_eq!(w.record_data(&st).await.as_deref(), Some(SECOND_IP));
    assert_eq!(retired(&st), [old]);
    assert!(w.client().get_droplet(old).await.unwrap().is_some());

    // The next plan says the old droplet goes; the apply deletes it.
    w.clear_faults().await;
    let (planned, d) = w.plan_update(&st, |_| {}).await;
    let (planned, _) = planned.unwrap();
    assert_eq!(summaries(&d.warnings), ["Old droplets will be deleted"]);
    assert!(planned.retired_droplet_ids.is_unknown());
    let st = w.updated(&st, |_| {}).await;
    assert!(retired(&st).is_empty());
    assert!(w.client().get_droplet(old).await.unwrap().is_none());
    // And a destroy deletes what is still listed.
    let mut listed = st.clone();
    listed.retired_droplet_ids = Value::Value(vec![Value::Value(old as i64)]);
    let d = w.destroy(&listed).await;
    assert!(d.errors.is_empty(), "{d:?}");
}

#[tokio::test]
async fn a_replacement_failing_before_the_switch_never_forgets_the_new_droplet() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    w.outside.fail_for(SECOND_IP);
    // No droplet can be deleted: the new one stays, and must stay in state.
    w.fault(serde_json::json!({
        "kind": "http", "method": "DELETE", "path_prefix": "/v2/droplets/",
        "status": 500, "count": 50
    }))
    .await;
    let (st, d) = w
        .update(&prior, |st| st.droplet_generation = Value::Value(1))
        .await;
    assert_eq!(summaries(&d.errors), ["Updating the registry failed"]);
    let new = second_droplet(&w);
    assert!(
        d.errors[0]
            .detail
            .contains(&format!("deleting the new droplet ({new}) failed too")),
        "{}",
        d.errors[0].detail
    );
    assert_eq!(st.droplet_id, prior.droplet_id, "the old droplet serves");
    assert_eq!(retired(&st), [new]);
    assert!(w.client().get_droplet(new).await.unwrap().is_some());

    w.clear_faults().await;
    let st = w.updated(&st, |_| {}).await;
    assert!(retired(&st).is_empty());
    assert!(w.client().get_droplet(new).await.unwrap().is_none());
    assert_eq!(st.droplet_id, prior.droplet_id);
}

#[tokio::test]
async fn a_failed_update_keeps_the_certificate_it_made() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    let machine = w.machines.machine(FIRST_IP);
    w.outside.fail_for(FIRST_IP);
    let (st, d) = w
        .update(&prior, |st| {
            if let Value::Value(t) = &mut st.tls {
                t.renew_before_days = Value::Value(20);
            }
        })
        .await;
    assert_eq!(summaries(&d.errors), ["Updating the registry failed"]);
    // The droplet serves the new certificate now; state says so, so the next apply does not
    // make yet another one.
    assert_ne!(st.certificate_pem, prior.certificate_pem);
    assert_eq!(
        std::fs::read_to_string(machine.path(paths::TLS_CERT_CHAIN)).unwrap(),
        text(&st.certificate_pem)
    );
    assert!(st.tls_private_key_pem.is_value());
    // The argument stays as it was, so the next plan proposes the change again.
    assert_eq!(st.tls, prior.tls);
    assert_eq!(st.droplet_id, prior.droplet_id);
}

#[test]
fn a_failed_update_keeps_what_it_made_and_the_prior_arguments() {
    let prior = RegistryState {
        name: s("reg"),
        droplet_id: Value::Value(1),
        record_id: Value::Value(10),
        caa_record_id: Value::Null,
        acme_account_key: s("old-account"),
        certificate_pem: s("old-cert"),
        files_digest: Value::Value(BTreeMap::new()),
        ..Default::default()
    };
    let mut st = prior.clone();
    st.name = s("reg-renamed");
    st.unknown_computed();
    st.droplet_id = Value::Value(2);
    st.ipv4_address = s(SECOND_IP);
    st.record_id = Value::Value(10);
    st.caa_record_id = Value::Value(11);
    st.acme_account_key = s("new-account");
    st.certificate_pem = s("new-cert");
    st.retired_droplet_ids = Value::Value(vec![Value::Value(1)]);
    let kept = super::update::kept_after_failure(&prior, &st);
    assert_eq!(kept.name, prior.name, "arguments as they were");
    assert_eq!(kept.droplet_id, Value::Value(2));
    assert_eq!(text(&kept.ipv4_address), SECOND_IP);
    assert_eq!(kept.caa_record_id, Value::Value(11));
    assert_eq!(text(&kept.acme_account_key), "new-account");
    assert_eq!(text(&kept.certificate_pem), "new-cert");
    assert_eq!(retired(&kept), [1]);
    // Not reached: the prior value (never unknown in state).
    assert_eq!(kept.files_digest, prior.files_digest);
    assert!(kept.http_secret.is_null());
}

#[tokio::test]
async fn a_droplet_deleted_by_hand_is_planned_anew_and_nothing_else_is_lost() {
    let w = World::start().await;
    let prior = w.created(with_volume(config("reg"), 1, false)).await;
    let old = droplet_id(&prior);
    w.client().delete_droplet(old).await.unwrap();

    let (read, d) = w.read(&prior).await;
    let read = read.expect("the registry stays in state");
    assert_eq!(summaries(&d.warnings), [format!("Droplet ({old}) is gone")]);
    assert!(read.droplet_id.is_null() && read.ipv4_address.is_null());
    for (what, same) in [
        ("firewall", read.firewall_id == prior.firewall_id),
        ("record", read.record_id == prior.record_id),
        ("volume", read.volume_id == prior.volume_id),
        (
            "keys",
            read.management_private_key == prior.management_private_key,
        ),
        ("host key", read.host_private_key == prior.host_private_key),
    ] {
        assert!(same, "{what} dropped from state");
    }

    let (planned, d) = w.plan_update(&read, |_| {}).await;
    let (planned, replace) = planned.unwrap();
    assert!(replace.is_empty());
    assert_eq!(summaries(&d.warnings), ["The droplet will be replaced"]);
    assert!(
        d.warnings[0].detail.contains("is gone"),
        "{}",
        d.warnings[0].detail
    );
    assert!(planned.droplet_id.is_unknown());

    // The volume holds the file system made on the first droplet.
    w.machines
        .machine(SECOND_IP)
        .set_volume_content(Some("ext4"));
    let st = w.updated(&read, |_| {}).await;
    let new = droplet_id(&st);
    assert_ne!(new, old);
    assert_eq!(text(&st.ipv4_address), SECOND_IP);
    assert_eq!(st.record_id, prior.record_id);
    assert_eq!(w.record_data(&st).await.as_deref(), Some(SECOND_IP));
    assert_eq!(st.firewall_id, prior.firewall_id);
    let fw = w.firewall(text(&st.firewall_id)).await.unwrap();
    assert_eq!(fw.droplet_ids, [new]);
    let v = w
        .client()
        .get_volume(text(&st.volume_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.droplet_ids, [new], "the volume follows");
    assert!(retired(&st).is_empty());
    // Mounted on the new droplet by its device, never formatted again.
    let log = w.machines.machine(SECOND_IP).log();
    assert!(
        !log.contains("mkfs") && log.contains("mount -t ext4"),
        "{log}"
    );
}

/// Arms droplet creates to fail (500, past every retry): the create stops right after its
/// storage, as a provider killed there would, and its state is thrown away as OpenTofu's is.
fn fail_droplet_creates(w: &World) {
    w.api
        .faults()
        .arm(localocean::faults::FaultSpec::Http {
            method: Some("POST".into()),
            path_prefix: "/v2/droplets".into(),
            count: 1000,
            status: 500,
            retry_after: None,
        })
        .unwrap();
}

const CREATING: &str = "docker-registry-creating-";

#[tokio::test]
async fn a_volume_a_killed_create_left_is_taken_back_then_untagged() {
    let w = World::start().await;
    fail_droplet_creates(&w);
    let (lost, d) = w.create(with_volume(config("killed"), 1, false)).await;
    assert_eq!(summaries(&d.errors), ["Creating the registry failed"]);
    let left = text(&lost.volume_id).to_owned();
    let v = w.client().get_volume(&left).await.unwrap().unwrap();
    assert!(
        v.tags.iter().any(|t| t.starts_with(CREATING)),
        "the volume is not tagged as being created: {:?}",
        v.tags
    );
    w.api.faults().clear();

    let st = w.created(with_volume(config("killed"), 1, false)).await;
    assert_eq!(
        text(&st.volume_id),
        left,
        "the leftover volume was not taken back"
    );
    let volumes = w.client().list_volumes_in("nyc3").await.unwrap();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert!(
        !volumes[0].tags.iter().any(|t| t.starts_with(CREATING)),
        "the registry's volume still says it is being created: {:?}",
        volumes[0].tags
    );
}

#[tokio::test]
async fn a_volume_a_killed_create_left_is_deleted_when_the_next_create_stores_elsewhere() {
    let w = World::start().await;
    fail_droplet_creates(&w);
    let (lost, _) = w.create(with_volume(config("killed"), 1, false)).await;
    assert!(known(&lost.volume_id).is_some());
    w.api.faults().clear();
    // A volume of another registry, and one no create is making, are left alone.
    let other = w.created(with_volume(config("other"), 1, false)).await;
    // Same fqdn, on the droplet's disk now.
    let st = w.created(config("killed")).await;
    let volumes: Vec<String> = w
        .client()
        .list_volumes_in("nyc3")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(volumes, [text(&other.volume_id).to_owned()]);
    assert!(known(&st.volume_id).is_none());
}

#[tokio::test]
async fn a_bucket_a_killed_create_made_is_taken_back_by_its_marker_not_adopted() {
    let bucket: scripted::Shared = Default::default();
    bucket.lock().unwrap().absent = true;
    let (addr, server) = scripted::serve(bucket.clone()).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys.clone(), Some(&format!("http://{addr}"))).await;
    let mut c = config("reg");
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        force_destroy: Value::Value(true),
        ..Default::default()
    });
    fail_droplet_creates(&w);
    let (lost, d) = w.create(c.clone()).await;
    assert_eq!(summaries(&d.errors), ["Creating the registry failed"]);
    assert_eq!(lost.bucket_created, Value::Value(true));
    let marker = bucket
        .lock()
        .unwrap()
        .contents
        .get(crate::storage::spaces::CREATING_MARKER)
        .cloned()
        .expect("no marker in the new bucket");
    assert!(marker.contains(FQDN), "{marker}");
    w.api.faults().clear();

    // The plan says the bucket is taken back, not adopted; the create records it as made by
    // this registry, and the marker goes once the create is done.
    let (_, d) = w.plan_create(c.clone()).await;
    assert_eq!(
        summaries(&d.warnings),
        ["The bucket an interrupted create left will be taken back"]
    );
    let st = w.created(c).await;
    assert_eq!(st.bucket_created, Value::Value(true));
    assert!(
        bucket.lock().unwrap().versions.is_empty(),
        "the marker is still in the bucket: {:?}",
        bucket.lock().unwrap().versions
    );
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(bucket.lock().unwrap().absent, "the bucket was kept");
    server.abort();
}

#[tokio::test]
async fn a_marker_the_create_could_not_delete_does_not_keep_an_empty_bucket() {
    let bucket: scripted::Shared = Default::default();
    bucket.lock().unwrap().absent = true;
    let (addr, server) = scripted::serve(bucket.clone()).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys.clone(), Some(&format!("http://{addr}"))).await;
    let mut c = config("reg");
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        ..Default::default()
    });
    let st = w.created(c.clone()).await;
    // As if deleting it at the end of the create had failed.
    let text = super::create::marker_text(&super::model::Model::of(&c));
    {
        let mut b = bucket.lock().unwrap();
        let marker = crate::storage::spaces::CREATING_MARKER.to_owned();
        b.versions
            .push((marker.clone(), "v7".into(), false, text.len() as u64));
        b.contents.insert(marker, text);
    }
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(bucket.lock().unwrap().absent, "the empty bucket was kept");
    server.abort();
}

#[tokio::test]
async fn an_existing_bucket_is_adopted_with_a_warning_and_never_emptied() {
    let bucket: scripted::Shared = Default::default();
    bucket
        .lock()
        .unwrap()
        .versions
        .push(("someone-elses/file".into(), "v1".into(), false, 42));
    let (addr, server) = scripted::serve(bucket.clone()).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys.clone(), Some(&format!("http://{addr}"))).await;
    let mut c = config("reg");
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        force_destroy: Value::Value(true),
        ..Default::default()
    });
    let (planned, d) = w.plan_create(c.clone()).await;
    assert!(planned.is_some(), "{d:?}");
    assert_eq!(
        summaries(&d.warnings),
        ["The bucket exists and will be adopted"]
    );
    assert_eq!(d.warnings[0].attribute, storage_attr("bucket"));
    assert!(
        d.warnings[0].detail.contains("never empty"),
        "{}",
        d.warnings[0].detail
    );

    let st = w.created(c).await;
    assert_eq!(st.bucket_created, Value::Value(false));
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert_eq!(summaries(&d.warnings), ["The bucket was kept"]);
    {
        let b = bucket.lock().unwrap();
        assert_eq!(
            b.versions.len(),
            1,
            "the bucket was emptied: {:?}",
            b.versions
        );
        assert!(!b
            .requests
            .iter()
            .any(|r| r == "delete" || r == "delete-bucket"));
    }
    assert!(w.droplet(&st).await.is_none(), "the rest is destroyed");
    assert!(
        keys.keys.lock().unwrap().is_empty(),
        "the registry's key deleted"
    );
    server.abort();
}

#[tokio::test]
async fn a_bucket_the_registry_made_is_recorded_and_deleted_with_force() {
    let bucket: scripted::Shared = Default::default();
    bucket.lock().unwrap().absent = true;
    let (addr, server) = scripted::serve(bucket.clone()).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys.clone(), Some(&format!("http://{addr}"))).await;
    let mut c = config("reg");
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        force_destroy: Value::Value(true),
        ..Default::default()
    });
    let (_, d) = w.plan_create(c.clone()).await;
    assert!(d.warnings.is_empty(), "{d:?}");
    let st = w.created(c).await;
    assert_eq!(st.bucket_created, Value::Value(true));
    // The verification proved the bucket through the registry, and names it.
    let probe = w.outside.checks()[0]
        .storage
        .clone()
        .expect("a storage check");
    assert_eq!(
        probe.storage,
        format!("Spaces bucket reg-images at http://{addr}")
    );
    bucket.lock().unwrap().versions.push((
        "docker/registry/v2/blobs/x".into(),
        "v1".into(),
        false,
        42,
    ));
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    let b = bucket.lock().unwrap();
    assert!(b.versions.is_empty() && b.absent, "emptied and deleted");
    drop(b);
    server.abort();
}
#[path = "tests_host_key.rs"]
mod host_key;

fn monitoring(days: Option<i64>, down: Option<bool>) -> Value<super::state::MonitoringState> {
    Value::Value(super::state::MonitoringState {
        uptime_check: Value::Value(true),
        alert_emails: Value::Value(vec![s("localocean@localhost")]),
        ssl_expiry_days: days.map_or(Value::Null, Value::Value),
        down_alert: down.map_or(Value::Null, Value::Value),
        ..Default::default()
    })
}

fn alert_id(st: &RegistryState, kind: &str) -> Option<String> {
    st.uptime_alert_ids
        .as_ref_option()
        .and_then(|m| m.get(kind))
        .and_then(|v| v.as_ref_option().cloned())
}

#[tokio::test]
async fn the_uptime_check_is_made_changed_in_place_and_removed() {
    let w = World::start().await;
    let plain = w.created(config("reg")).await;
    assert!(plain.uptime_check_id.is_null() && plain.uptime_alert_ids.is_null());
    assert!(w.client().list_uptime_checks().await.unwrap().is_empty());

    // Turned on in an update: an https check of the fqdn, an SSL-expiry alert with the days
    // and a down alert, both mailing the given address.
    let (planned, _) = w
        .plan_update(&plain, |c| c.monitoring = monitoring(Some(10), None))
        .await;
    assert!(planned.unwrap().0.uptime_check_id.is_unknown());
    let on = w
        .updated(&plain, |c| c.monitoring = monitoring(Some(10), None))
        .await;
    let check_id = text(&on.uptime_check_id).to_owned();
    let check = w
        .client()
        .get_uptime_check(&check_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (check.check_type.as_str(), check.target.as_str()),
        ("https", format!("https://{FQDN}").as_str())
    );
    assert_eq!(check.regions.len(), 4);
    let alerts = w.client().list_uptime_alerts(&check_id).await.unwrap();
    let ssl = alerts
        .iter()
        .find(|a| a.alert_type == "ssl_expiry")
        .unwrap();
    assert_eq!(ssl.threshold, Some(10));
    assert_eq!(ssl.notifications.email, ["localocean@localhost"]);
    assert!(alerts.iter().any(|a| a.alert_type == "down"));
    assert_eq!(
        alert_id(&on, "ssl_expiry").as_deref(),
        Some(ssl.id.as_str())
    );

    // Nothing changed: the plan keeps every id, apply calls nothing.
    let (planned, _) = w.plan_update(&on, |_| {}).await;
    let planned = planned.unwrap().0;
    assert_eq!(planned.uptime_check_id, on.uptime_check_id);
    assert_eq!(planned.uptime_alert_ids, on.uptime_alert_ids);

    // Other days, no down alert: the same check and SSL alert, updated; the down alert goes.
    let changed = w
        .updated(&on, |c| c.monitoring = monitoring(Some(5), Some(false)))
        .await;
    assert_eq!(text(&changed.uptime_check_id), check_id);
    assert_eq!(
        alert_id(&changed, "ssl_expiry"),
        alert_id(&on, "ssl_expiry")
    );
    assert_eq!(alert_id(&changed, "down"), None);
    let alerts = w.client().list_uptime_alerts(&check_id).await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].threshold, Some(5));

    // Deleted by hand: read forgets it, the plan makes it again.
    w.client().delete_uptime_check(&check_id).await.unwrap();
    let (read, _) = w.read(&changed).await;
    let read = read.unwrap();
    assert!(read.uptime_check_id.is_null());
    let again = w.updated(&read, |_| {}).await;
    let second = text(&again.uptime_check_id).to_owned();
    assert_ne!(second, check_id);

    // Turned off: the check and its alerts go.
    let off = w.updated(&again, |c| c.monitoring = Value::Null).await;
    assert!(off.uptime_check_id.is_null() && off.uptime_alert_ids.is_null());
    assert!(w
        .client()
        .get_uptime_check(&second)
        .await
        .unwrap()
        .is_none());

    // On again, then destroy: nothing left.
    let on = w
        .updated(&off, |c| c.monitoring = monitoring(None, None))
        .await;
    let ssl = w
        .client()
        .list_uptime_alerts(text(&on.uptime_check_id))
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.alert_type == "ssl_expiry")
        .unwrap();
    assert_eq!(ssl.threshold, Some(14), "the default days");
    let d = w.destroy(&on).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(w.client().list_uptime_checks().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_uptime_check_an_interrupted_apply_made_is_taken_over() {
    let w = World::start().await;
    let plain = w.created(config("reg")).await;
    // An apply made the check and died before state took its id.
    let left = w
        .client()
        .create_uptime_check(&do_api::UptimeCheck {
            name: format!("docker-registry {FQDN}"),
            check_type: "https".into(),
            target: format!("https://{FQDN}"),
            regions: vec!["us_east".into()],
            enabled: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let on = w
        .updated(&plain, |c| c.monitoring = monitoring(Some(7), None))
        .await;
    assert_eq!(text(&on.uptime_check_id), left.id);
    let checks = w.client().list_uptime_checks().await.unwrap();
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].regions.len(), 4, "its settings were put right");

    // Another one made unseen (an apply killed after its create): destroy removes both, and
    // leaves another registry's check alone.
    let mut unseen = checks[0].clone();
    unseen.regions = vec!["eu_west".into()];
    w.client().create_uptime_check(&unseen).await.unwrap();
    let other = w
        .client()
        .create_uptime_check(&do_api::UptimeCheck {
            name: "docker-registry other.example.test".into(),
            target: "https://other.example.test".into(),
            ..unseen.clone()
        })
        .await
        .unwrap();
    let d = w.destroy(&on).await;
    assert!(d.errors.is_empty(), "{d:?}");
    let left: Vec<String> = w
        .client()
        .list_uptime_checks()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, [other.id]);
}

#[tokio::test]
async fn bad_monitoring_settings_fail_the_plan_on_their_attribute() {
    let w = World::start().await;
    let mut c = config("reg");
    c.monitoring = Value::Value(super::state::MonitoringState {
        uptime_check: Value::Value(true),
        alert_emails: Value::Value(vec![s("ops@example.com"), s("not-an-address")]),
        ssl_expiry_days: Value::Value(0),
        regions: Value::Value(vec![s("us_east"), s("nyc3")]),
        ..Default::default()
    });
    let (planned, d) = w.plan_create(c).await;
    assert!(planned.is_none());
    let paths = paths_of(&d.errors);
    for want in [
        "monitoring[0].alert_emails[1]",
        "monitoring[0].ssl_expiry_days",
        "monitoring[0].regions[1]",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
    let mut c = config("reg");
    c.monitoring = Value::Value(super::state::MonitoringState {
        uptime_check: Value::Value(true),
        ..Default::default()
    });
    let (planned, d) = w.plan_create(c).await;
    assert!(planned.is_none());
    assert_eq!(paths_of(&d.errors), ["monitoring[0].alert_emails"]);
}

fn with_gc(mut st: RegistryState, schedule: Option<&str>, run: Option<i64>) -> RegistryState {
    st.garbage_collection = Value::Value(super::state::GcState {
        schedule: schedule.map(str::to_owned).into(),
        run: run.into(),
        ..Default::default()
    });
    st
}

#[tokio::test]
async fn a_collection_runs_when_run_changes_and_its_result_is_read_back() {
    use crate::render::gc::gc_paths as gp;
    let w = World::start().await;
    let prior = w
        .created(with_gc(config("reg"), Some("daily"), Some(0)))
        .await;
    // Created: the collector and its timer are on the droplet; no collection ran.
    let files = prior.files_digest.as_ref_option().unwrap();
    assert!(files.contains_key(gp::TIMER) && files.contains_key(gp::SCRIPT));
    assert!(prior.garbage_collection_last_run.is_null());
    assert!(prior.garbage_collection_freed_bytes.is_null());
    // Adding nothing but a schedule, or keeping `run`, plans no collection.
    let (planned, _) = w
        .plan_update(&prior, |st| {
            *st = with_gc(st.clone(), Some("weekly"), Some(0))
        })
        .await;
    assert!(planned.unwrap().0.garbage_collection_last_run.is_null());
    let (planned, _) = w
        .plan_update(&prior, |st| *st = with_gc(st.clone(), None, None))
        .await;
    assert!(planned.unwrap().0.garbage_collection_last_run.is_null());
    // A bump: the result is unknown until apply.
    let bump = |st: &mut RegistryState| *st = with_gc(st.clone(), Some("daily"), Some(1));
    let (planned, _) = w.plan_update(&prior, bump).await;
    let planned = planned.unwrap().0;
    assert!(planned.garbage_collection_last_run.is_unknown());
    assert!(planned.garbage_collection_freed_bytes.is_unknown());
    // The test droplet's systemctl runs nothing: the collector's status, as the droplet's
    // would write it, is there already, dated after the start.
    let machine = w.machines.machine(FIRST_IP);
    let status = machine.path(gp::STATUS);
    std::fs::create_dir_all(status.parent().unwrap()).unwrap();
    std::fs::write(
        &status,
        r#"{"result":"ok","finished_at":"2099-01-01T03:00:09Z","finished_unix":4070919609,"freed_bytes":4200000,"blobs_deleted":3}"#,
    )
    .unwrap();
    let st = w.updated(&prior, bump).await;
    assert!(machine
        .log()
        .contains("systemctl start registry-gc.service"));
    assert_eq!(
        text(&st.garbage_collection_last_run),
        "2099-01-01T03:00:09Z"
    );
    assert_eq!(st.garbage_collection_freed_bytes, Value::Value(4200000));
    // Read finds the same run: nothing to plan.
    let (read, d) = w.read(&st).await;
    assert!(d.errors.is_empty() && d.warnings.is_empty(), "{d:?}");
    let read = read.unwrap();
    assert_eq!(
        read.garbage_collection_last_run,
        st.garbage_collection_last_run
    );
    assert_eq!(
        read.garbage_collection_freed_bytes,
        st.garbage_collection_freed_bytes
    );
    // A failed run is an error on `garbage_collection.run`, with the collector's reason.
    std::fs::write(
        &status,
        r#"{"result":"failed","finished_at":"2099-01-01T04:00:00Z","finished_unix":4070923200,"freed_bytes":null,"blobs_deleted":null,"message":"uploads were still running after 300s"}"#,
    )
    .unwrap();
    let (_, d) = w
        .update(&st, |s| *s = with_gc(s.clone(), Some("daily"), Some(2)))
        .await;
    let e = d.errors.first().expect("an error");
    assert!(e.detail.contains("uploads were still running"), "{e:?}");
    assert!(
        e.attribute.to_string().contains("garbage_collection"),
        "{e:?}"
    );
}

fn with_retention(st: RegistryState, run: Option<i64>, keep_last: i64) -> RegistryState {
    let mut st = with_gc(st, None, run);
    if let Value::Value(g) = &mut st.garbage_collection {
        g.retention = Value::Value(vec![Value::Value(super::state::RetentionState {
            repositories: Value::Value(vec![s("team/*")]),
            keep_last: Value::Value(keep_last),
            keep_tags: Value::Value(vec![s("latest")]),
            ..Default::default()
        })]);
    }
    st
}

fn selection(v: &Value<BTreeMap<String, Value<String>>>) -> Vec<String> {
    v.as_ref_option()
        .unwrap_or_else(|| panic!("no selection: {v:?}"))
        .iter()
        .map(|(k, d)| format!("{k}={}", d.as_ref_option().unwrap()))
        .collect()
}

/// The preview is read from the registry, a plan that runs a collection shows it leaving,
/// and the apply deletes exactly it: not a tag pushed again since the plan, nor one outside
/// the rules; new rules cannot delete in the plan that brings them.
#[tokio::test]
async fn retention_deletes_what_the_plan_previewed_and_nothing_else() {
    use crate::render::gc::gc_paths as gp;
    let w = World::start().await;
    let day = |n: i64| Some(time::OffsetDateTime::now_utc() - time::Duration::days(n));
    for (repo, tag, digest, age) in [
        ("team/app", "1", "sha256:a1", 30),
        ("team/app", "2", "sha256:a2", 20),
        ("team/app", "3", "sha256:a3", 10),
        ("team/app", "latest", "sha256:a1", 30),
        ("team/web", "old", "sha256:w1", 40),
        ("team/web", "new", "sha256:w2", 1),
        ("other/app", "ancient", "sha256:o1", 400),
    ] {
        w.registry.push(repo, tag, digest, day(age));
    }
    // Without rules: no preview.
    let plain = w.created(with_gc(config("reg"), None, Some(0))).await;
    assert!(
        plain.retention_preview.is_null(),
        "{:?}",
        plain.retention_preview
    );
    // Rules added (no run): the plan previews them against the registry.
    let (planned, d) = w
        .plan_update(&plain, |st| *st = with_retention(st.clone(), Some(0), 1))
        .await;
    let planned = planned.unwrap_or_else(|| panic!("{d:?}")).0;
    // `1` shares its image with `latest` (kept): deleting its digest would delete `latest`.
    let want = ["team/app:2=sha256:a2", "team/web:old=sha256:w1"];
    assert_eq!(selection(&planned.retention_preview), want);
    // New rules and a run in one plan: refused, on `run`.
    let (refused, d) = w
        .plan_update(&plain, |st| *st = with_retention(st.clone(), Some(1), 1))
        .await;
    assert!(refused.is_none());
    assert_eq!(paths_of(&d.errors), ["garbage_collection[0].run"]);
    let prior = w
        .updated(&plain, |st| *st = with_retention(st.clone(), Some(0), 1))
        .await;
    assert_eq!(selection(&prior.retention_preview), want);
    assert!(w.registry.deletes().is_empty(), "applying rules deleted");
    // Read finds the same.
    let (read, d) = w.read(&prior).await;
    assert!(d.warnings.is_empty(), "{d:?}");
    let prior = read.unwrap();
    assert_eq!(selection(&prior.retention_preview), want);

    // The run: the plan shows the preview emptied and hands the apply exactly it.
    let bump = |st: &mut RegistryState| *st = with_retention(st.clone(), Some(1), 1);
    let (planned, _) = w.plan_update_private(&prior, bump).await;
    let (planned, private, _) = planned.unwrap();
    assert_eq!(planned.retention_preview, Value::Value(BTreeMap::new()));
    assert!(planned.retention_deleted.is_unknown());
    let delete: Vec<String> = private
        .as_ref_option()
        .unwrap()
        .retention_delete
        .iter()
        .map(|(k, d)| format!("{k}={d}"))
        .collect();
    assert_eq!(delete, want);
    // Between plan and apply: `team/web:old` is pushed again, and a new old tag appears.
    w.registry.push("team/web", "old", "sha256:w3", day(50));
    w.registry.push("team/app", "0", "sha256:a0", day(90));
    let machine = w.machines.machine(FIRST_IP);
    let status = machine.path(gp::STATUS);
    std::fs::create_dir_all(status.parent().unwrap()).unwrap();
    std::fs::write(
        &status,
        r#"{"result":"ok","finished_at":"2099-01-01T03:00:09Z","finished_unix":4070919609,"freed_bytes":10,"blobs_deleted":1}"#,
    )
    .unwrap();
    let (st, d) = w.update(&prior, bump).await;
    assert!(d.errors.is_empty(), "{d:?}");
    // Deleted: only `team/app:2`; `team/web:old` skipped with a warning naming it.
    assert_eq!(
        w.registry.deletes(),
        [("team/app".to_owned(), "sha256:a2".to_owned())]
    );
    assert_eq!(selection(&st.retention_deleted), ["team/app:2=sha256:a2"]);
    assert_eq!(st.retention_preview, planned.retention_preview);
    let warned = format!("{:?}", d.warnings);
    assert!(warned.contains("team/web:old (pushed again"), "{warned}");
    assert_eq!(w.registry.tags_of("team/web"), ["new", "old"]);
    assert_eq!(w.registry.tags_of("team/app"), ["1", "3", "latest", "0"]);
    assert_eq!(w.registry.tags_of("other/app"), ["ancient"]);
    // The next read previews what the rules select now.
    let (read, _) = w.read(&st).await;
    assert_eq!(
        selection(&read.unwrap().retention_preview),
        ["team/app:0=sha256:a0", "team/web:old=sha256:w3"]
    );
}

/// A registry that cannot be listed: the preview is null with a warning, and a run with
/// rules is refused rather than delete from a preview nobody saw.
#[tokio::test]
async fn without_a_preview_retention_deletes_nothing() {
    let w = World::start().await;
    let day = Some(time::OffsetDateTime::now_utc() - time::Duration::days(9));
    w.registry.push("team/app", "1", "sha256:a1", day);
    w.registry.push("team/app", "2", "sha256:a2", day);
    let prior = w.created(with_retention(config("reg"), Some(0), 1)).await;
    assert_eq!(
        selection(&prior.retention_preview),
        ["team/app:1=sha256:a1"]
    );
    w.registry.set_down(true);
    let (read, d) = w.read(&prior).await;
    let read = read.unwrap();
    assert!(
        read.retention_preview.is_null(),
        "{:?}",
        read.retention_preview
    );
    assert_eq!(
        summaries(&d.warnings),
        ["Cannot preview the retention rules"]
    );
    assert!(d.warnings[0].detail.contains("503"), "{:?}", d.warnings);
    let (planned, d) = w
        .plan_update(&read, |st| *st = with_retention(st.clone(), Some(1), 1))
        .await;
    assert!(planned.is_none());
    assert_eq!(summaries(&d.errors), ["No retention preview to apply"]);
    assert_eq!(paths_of(&d.errors), ["garbage_collection[0].run"]);
    assert!(w.registry.deletes().is_empty());
}

#[tokio::test]
async fn keep_deleted_days_turns_versioning_on_shows_drift_and_suspends_when_removed() {
    let bucket: scripted::Shared = Default::default();
    bucket.lock().unwrap().absent = true;
    let (addr, server) = scripted::serve(bucket.clone()).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys.clone(), Some(&format!("http://{addr}"))).await;
    let keep = |days: Option<i64>| {
        move |st: &mut RegistryState| {
            if let Value::Value(storage) = &mut st.storage {
                storage.keep_deleted_days = days.map_or(Value::Null, Value::Value);
            }
        }
    };
    let mut c = config("reg");
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        ..Default::default()
    });
    keep(Some(30))(&mut c);
    let st = w.created(c).await;
    {
        let b = bucket.lock().unwrap();
        assert_eq!(b.versioning.as_deref(), Some("Enabled"));
        let rule = b.lifecycle.clone().unwrap_or_default();
        assert!(
            rule.contains("<NoncurrentDays>30</NoncurrentDays>"),
            "{rule}"
        );
    }
    let days = |st: &RegistryState| st.storage.as_ref_option().unwrap().keep_deleted_days;
    let (read, d) = w.read(&st).await;
    assert!(d.warnings.is_empty(), "{d:?}");
    assert_eq!(days(&read.unwrap()), Value::Value(30));

    // Suspended by hand: read says so, the plan shows it, apply turns it on again.
    bucket.lock().unwrap().versioning = Some("Suspended".into());
    let (read, _) = w.read(&st).await;
    let read = read.unwrap();
    assert_eq!(days(&read), Value::Null);
    let (planned, d) = w.plan_update(&read, keep(Some(30))).await;
    let (planned, replace) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(replace.is_empty(), "{replace:?}");
    assert_eq!(days(&planned), Value::Value(30));
    let on = w.updated(&read, keep(Some(30))).await;
    assert_eq!(
        bucket.lock().unwrap().versioning.as_deref(),
        Some("Enabled")
    );

    // Removed from the configuration: versioning suspended, the rule kept.
    let off = w.updated(&on, keep(None)).await;
    assert_eq!(days(&off), Value::Null);
    let b = bucket.lock().unwrap();
    assert_eq!(b.versioning.as_deref(), Some("Suspended"));
    assert!(b
        .lifecycle
        .as_deref()
        .unwrap_or_default()
        .contains("<NoncurrentDays>30</NoncurrentDays>"));
    drop(b);
    server.abort();
}
