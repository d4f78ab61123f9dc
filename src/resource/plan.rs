//! Plan: defaults (also for an argument removed from the configuration), the checks that need
//! the API, what becomes unknown, what forces a replacement, warnings (a new droplet, a
//! resize, a renewal), the users' hashes kept for unchanged passwords, and the file digests
//! the droplet must have (so a hand edit shows as drift).

use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use super::certificate::{self, check_provided};
use super::desired::{expected_digests, s};
use super::env::Env;
use super::error::{storage_attr, Error};
use super::model::{Backend, Model, TlsSource};
use super::network::{find_domain, parent_of};
use super::schema;
use super::state::{http_secret_given, known, Private, PrivateState, RegistryState};
use super::users;
use super::validate;
use crate::diag;
use crate::storage::{self, volume};

/// Calls `$then!` with every optional-computed argument of the top level, of `tls` and of
/// `storage`: the one list of arguments whose default the provider fills in.
macro_rules! defaulted_arguments {
    ($then:ident) => {
        $then!(
            [size, image, ssh_allowed_cidrs, anonymous_pull, ui, reserved_ip, replicas],
            tls: [source, challenge, key_type, renew_before_days, revoke_on_destroy, caa, renew, renew_interval],
            storage: [backend, force_destroy, spaces_redirect]
        )
    };
}

/// Spelled as the schema spells them: `size`, `tls.source`, ...
pub const DEFAULTED: &[&str] = {
    macro_rules! names {
        ([$($a:ident),*], tls: [$($t:ident),*], storage: [$($b:ident),*]) => {
            &[$(stringify!($a),)* $(concat!("tls.", stringify!($t)),)* $(concat!("storage.", stringify!($b)),)*]
        };
    }
    defaulted_arguments!(names)
};

/// An optional-computed argument that `config` leaves unset is planned at its default, not
/// at its prior value: OpenTofu proposes the prior value for it (it cannot tell "removed"
/// from "computed"), so removing `anonymous_pull = true` would otherwise keep the registry
/// public. Unset here; `apply_defaults` fills the default in.
pub fn unset_what_config_leaves_unset(st: &mut RegistryState, config: &RegistryState) {
    macro_rules! unset {
        ([$($a:ident),*], tls: [$($t:ident),*], storage: [$($b:ident),*]) => {
            $( if config.$a.is_null() { st.$a = Value::Null; } )*
            if let (Value::Value(c), Value::Value(p)) = (&config.tls, &mut st.tls) {
                $( if c.$t.is_null() { p.$t = Value::Null; } )*
            }
            if let (Value::Value(c), Value::Value(p)) = (&config.storage, &mut st.storage) {
                $( if c.$b.is_null() { p.$b = Value::Null; } )*
            }
        };
    }
    defaulted_arguments!(unset);
}

/// Fills the defaults of optional-computed arguments left null.
pub fn apply_defaults(st: &mut RegistryState) {
    if st.size.is_null() {
        st.size = s(schema::DEFAULT_SIZE);
    }
    if st.image.is_null() {
        st.image = s(schema::DEFAULT_IMAGE);
    }
    if st.ssh_allowed_cidrs.is_null() {
        st.ssh_allowed_cidrs = Value::Value(schema::DEFAULT_CIDRS.iter().map(|c| s(*c)).collect());
    }
    if st.anonymous_pull.is_null() {
        st.anonymous_pull = Value::Value(false);
    }
    if st.ui.is_null() {
        st.ui = Value::Value(false);
    }
    if st.reserved_ip.is_null() {
        st.reserved_ip = Value::Value(false);
    }
    if st.replicas.is_null() {
        st.replicas = Value::Value(1);
    }
    let st_replicas = st.replicas.as_ref_option().copied().unwrap_or(1);
    if let Value::Value(t) = &mut st.tls {
        if t.source.is_null() {
            t.source = s(TlsSource::default().as_str());
        }
        if t.challenge.is_null() {
            t.challenge = s(super::model::ChallengeKind::default().as_str());
        }
        if t.key_type.is_null() {
            t.key_type = s(crate::acme::KeyType::default().as_str());
        }
        if t.renew_before_days.is_null() {
            t.renew_before_days = Value::Value(super::model::DEFAULT_RENEW_BEFORE_DAYS);
        }
        if t.revoke_on_destroy.is_null() {
            t.revoke_on_destroy = Value::Value(false);
        }
        if t.caa.is_null() {
            t.caa = Value::Value(false);
        }
        if t.renew.is_null() {
            // Several droplets cannot each renew alone (see `validate::check_replicas`).
            let several = st_replicas > 1;
            t.renew = s(if several {
                super::model::RenewMode::Plan.as_str()
            } else {
                super::model::RenewMode::default().as_str()
            });
        }
        if t.renew_interval.is_null() {
            t.renew_interval = s(super::model::DEFAULT_RENEW_INTERVAL);
        }
    }
    if let Value::Value(st) = &mut st.storage {
        if st.backend.is_null() {
            st.backend = s(Backend::default().as_str());
        }
        if st.force_destroy.is_null() {
            st.force_destroy = Value::Value(false);
        }
        if st.spaces_redirect.is_null() {
            st.spaces_redirect = Value::Value(false);
        }
    }
}

/// Every plan-time check that needs no API, plus what is not available where asked.
pub fn check_config(diags: &mut Diagnostics, config: &RegistryState) {
    validate::check_config(diags, config);
    super::limits::check(diags, config);
    certificate::check_renewal_config(diags, config);
    super::monitoring::check_config(diags, config);
    let m = Model::of(config);
    if m.storage.backend == Backend::Spaces {
        if let Some(region) = known(&config.region) {
            if let Err(e) = storage::check_spaces_region(region) {
                diag::error(diags, "Region without Spaces", &e.into());
            }
        }
    }
}

/// `value` must be one of the API's `valid` choices; the diagnostic lists them.
fn check_choice(
    diags: &mut Diagnostics,
    attr: &'static str,
    value: &str,
    what: &str,
    valid: Result<Vec<String>, crate::do_api::Error>,
) {
    match valid {
        Ok(mut valid) => {
            if !valid.iter().any(|v| v == value) {
                valid.sort();
                diags.error(
                    format!("Unknown `{attr}`"),
                    format!("{value:?} is not {what}; valid: {}.", valid.join(", ")),
                    AttributePath::new(attr),
                );
            }
        }
        Err(e) => diag::error(
            diags,
            format!("Cannot check `{attr}`"),
            &Error::from(e).at(AttributePath::new(attr)),
        ),
    }
}

/// A snapshot or custom image needs a disk at least its `min_disk_size` and is only in the
/// regions it lists (a base image is in every region): DigitalOcean refuses the droplet
/// otherwise, after the plan; this says so in it.
fn check_image_fits(
    diags: &mut Diagnostics,
    image: &str,
    found: &crate::do_api::Image,
    size_disk: Option<u64>,
    region: Option<&str>,
) {
    if let (Some(need), Some(disk)) = (found.min_disk_size, size_disk) {
        if disk < need {
            diags.error(
                "`image` needs a larger disk than `size` has",
                format!(
                    "Image {image:?} needs a disk of at least {need} GB; the size's disk is {disk} GB. Choose a larger `size`, or an image made from a droplet with a smaller disk."
                ),
                AttributePath::new("image"),
            );
        }
    }
    let private = found.kind.as_deref().is_some_and(|k| k != "base");
    if let Some(region) = region {
        if private && !found.regions.is_empty() && !found.regions.iter().any(|r| r == region) {
            diags.error(
                "`image` is not in the registry's region",
                format!(
                    "Image {image:?} is in {}, not in {region:?}: transfer it to {region:?} first (an image action), or choose one of its regions.",
                    found.regions.join(", ")
                ),
                AttributePath::new("image"),
            );
        }
    }
}

/// Checks that need the API: region, size, image, and the fqdn's domain.
async fn check_with_api(diags: &mut Diagnostics, env: &Env, st: &RegistryState) {
    let client = &env.client;
    if let Some(region) = known(&st.region) {
        let valid = client.list_regions().await.map(|rs| {
            rs.into_iter()
                .filter(|r| r.available)
                .map(|r| r.slug)
                .collect()
        });
        check_choice(diags, "region", region, "a DigitalOcean region", valid);
    }
    let mut size_disk = None;
    if let Some(size) = known(&st.size) {
        let sizes = client.list_sizes().await;
        if let Ok(ss) = &sizes {
            size_disk = ss.iter().find(|s| s.slug == size).map(|s| s.disk);
        }
        let valid = sizes.map(|ss| ss.into_iter().map(|s| s.slug).collect());
        check_choice(diags, "size", size, "a droplet size", valid);
    }
    if let Some(image) = known(&st.image) {
        match client.get_image(image).await {
            Ok(Some(found)) => {
                check_image_fits(diags, image, &found, size_disk, known(&st.region));
            }
            Ok(None) => diags.error(
                "Unknown `image`",
                format!(
                    "{image:?} is neither an image slug (for example \"{}\") nor the id of an image or snapshot of this account.",
                    schema::DEFAULT_IMAGE
                ),
                AttributePath::new("image"),
            ),
            Err(e) => diag::error(
                diags,
                "Cannot check `image`",
                &Error::from(e).at(AttributePath::new("image")),
            ),
        }
    }
    super::limits::check_fingerprints_exist(diags, env, st).await;
    if let Some(fqdn) = known(&st.fqdn) {
        if validate::fqdn_problem(fqdn).is_none() {
            match find_domain(client, fqdn).await {
                Ok(Some(_)) => {}
                Ok(None) => diags.error(
                    "Domain not in this account",
                    format!(
                        "No domain of this DigitalOcean account holds {fqdn:?}: add its domain (for example `{}`) to DigitalOcean DNS first.",
                        parent_of(fqdn)
                    ),
                    AttributePath::new("fqdn"),
                ),
                Err(e) => diag::error(
                    diags,
                    "Cannot check `fqdn`",
                    &Error::from(e).at(AttributePath::new("fqdn")),
                ),
            }
        }
    }
}

/// `proposed` with its defaults, when `config` passes every check that needs no API.
pub fn checked_with_defaults(
    diags: &mut Diagnostics,
    proposed: RegistryState,
    config: &RegistryState,
) -> Option<RegistryState> {
    check_config(diags, config);
    let mut st = proposed;
    unset_what_config_leaves_unset(&mut st, config);
    apply_defaults(&mut st);
    diags.errors.is_empty().then_some(st)
}

/// The plan of a new registry from `st` (see [`checked_with_defaults`]): checked against the
/// API, every computed value unknown. `None` when the plan fails (diagnostics say why).
pub async fn plan_create(
    diags: &mut Diagnostics,
    env: &Env,
    mut st: RegistryState,
) -> Option<RegistryState> {
    let m = Model::of(&st);
    let settings = &env.settings;
    let keys_unknown = st
        .storage
        .as_ref_option()
        .is_some_and(|b| b.spaces_access_id.is_unknown() || b.spaces_secret_key.is_unknown());
    if m.storage.backend == Backend::Spaces
        && m.storage.spaces_keys.is_none()
        && !keys_unknown
        && (settings.spaces_access_id.is_none() || settings.spaces_secret_key.is_none())
    {
        diags.error(
            "Spaces credentials missing",
            "`storage.backend = \"spaces\"` needs Spaces keys to create the bucket: `storage.spaces_access_id` and `storage.spaces_secret_key`, or the provider's `spaces_access_id` and `spaces_secret_key` (or SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY); the registry then gets its own key for that bucket only.",
            storage_attr("backend"),
        );
        return None;
    }
    check_with_api(diags, env, &st).await;
    if !diags.errors.is_empty() {
        return None;
    }
    super::create::adoption_warning(diags, env, &m).await;
    as_new(&mut st);
    if m.tls.source == TlsSource::Provided {
        // A provided certificate is known now: fail the plan, not the apply.
        if let Err(e) = check_provided(&m) {
            diag::error(diags, "Invalid provided certificate", &e);
            return None;
        }
    }
    Some(st)
}

/// Everything computed unknown, as for a registry made from scratch.
fn as_new(st: &mut RegistryState) {
    st.unknown_computed();
    if st.http_secret.is_null() {
        // Generated by apply.
        st.http_secret = Value::Unknown;
    }
    if super::monitoring::Monitoring::of(st).is_none() {
        st.uptime_check_id = Value::Null;
        st.uptime_alert_ids = Value::Null;
    }
    users::plan(st, None);
    st.id = st.fqdn.clone();
    st.url = st.fqdn.as_ref().map(|f| format!("https://{f}"));
    if !Model::of(st).reserved_ip {
        st.reserved_ip_address = Value::Null;
    }
    // A new registry deletes nothing; its preview is read once it serves.
    st.retention_deleted = Value::Null;
    if Model::of(st).retention_rules().is_empty() {
        st.retention_preview = Value::Null;
    }
}

/// A registry that made its bucket needs Spaces keys to empty and delete it on destroy: a plan
/// that leaves it none (the `storage` keys removed, the provider has none) says so, on the
/// keys, rather than let destroy fail later. An adopted bucket is never touched, so it needs none.
pub fn warn_without_bucket_keys(
    diags: &mut Diagnostics,
    settings: &crate::config::Settings,
    prior: &RegistryState,
    st: &RegistryState,
) {
    let m = Model::of(st);
    let keys_unknown = st
        .storage
        .as_ref_option()
        .is_some_and(|b| b.spaces_access_id.is_unknown() || b.spaces_secret_key.is_unknown());
    let provider_keys = settings.spaces_access_id.is_some() && settings.spaces_secret_key.is_some();
    if m.storage.backend == Backend::Spaces
        && prior.bucket_created == Value::Value(true)
        && m.storage.spaces_keys.is_none()
        && !keys_unknown
        && !provider_keys
    {
        diags.warning(
            "No Spaces keys for the registry's bucket",
            "This registry created its bucket, and destroy empties (with `force_destroy`) and deletes it with Spaces keys: set `storage.spaces_access_id` and `storage.spaces_secret_key`, or the provider's keys, before destroying. Until then the stored size is not read.",
            storage_attr("spaces_access_id"),
        );
    }
}

/// `http_secret` as planned, and whether it comes from the configuration (kept in private
/// state). Given: the configuration's. Not given: the one generated before, kept, unless the
/// current one was given (the configuration dropped it): then a new one, generated by apply
/// and shown as a change. OpenTofu proposes the prior value for an optional-computed argument
/// the configuration leaves unset, so only the private state tells these cases apart.
pub fn plan_http_secret(
    st: &mut RegistryState,
    config: &RegistryState,
    prior: Option<(&RegistryState, &PrivateState)>,
) -> PrivateState {
    let given = !config.http_secret.is_null();
    if given {
        st.http_secret = config.http_secret.clone();
    } else {
        st.http_secret = match prior {
            Some((prior, private))
                if !http_secret_given(private) && prior.http_secret.is_value() =>
            {
                prior.http_secret.clone()
            }
            _ => Value::Unknown,
        };
    }
    Value::Value(Private {
        http_secret_given: given,
        ..Default::default()
    })
}

/// The plan of a change: `None` when the plan fails, else the planned state and the
/// attributes whose change replaces the whole registry.
pub fn plan_update(
    diags: &mut Diagnostics,
    prior: &RegistryState,
    prior_private: &PrivateState,
    proposed: RegistryState,
    config: &RegistryState,
) -> Option<(RegistryState, PrivateState, Vec<AttributePath>)> {
    let mut st = checked_with_defaults(diags, proposed, config)?;
    let private = plan_http_secret(&mut st, config, Some((prior, prior_private)));
    let (was, m) = (Model::of(prior), Model::of(&st));
    if was.storage.backend == Backend::Volume && m.storage.backend == Backend::Volume {
        if let (Some(a), Some(b)) = (was.storage.size_gib, m.storage.size_gib) {
            if let Err(e) = volume::check_resize(a, b) {
                diag::error(diags, "Invalid `storage.size_gib`", &e.into());
                return None;
            }
        }
    }
    let imported = super::import::imported(prior);
    if imported {
        check_imported(diags, prior, &st)?;
    }
    let mut replace = Vec::new();
    for (attr, a, b) in [
        ("region", &prior.region, &st.region),
        ("fqdn", &prior.fqdn, &st.fqdn),
    ] {
        if a != b {
            replace.push(AttributePath::new(attr));
        }
    }
    if was.storage.backend != m.storage.backend {
        replace.push(storage_attr("backend"));
        diags.root_warning(
            "Changing the storage backend replaces the registry",
            "Images are not migrated to the new backend: push them again, or keep the backend and bump `droplet_generation` to replace only the droplet.",
        );
    }
    if m.storage.backend == Backend::Spaces && was.storage.bucket != m.storage.bucket {
        replace.push(storage_attr("bucket"));
    }
    if m.storage.backend == Backend::Volume
        && was.storage.backend == Backend::Volume
        && was.storage.volume_snapshot_id != m.storage.volume_snapshot_id
        && m.storage.volume_snapshot_id.is_some()
    {
        diags.warning(
            "`storage.volume_snapshot_id` changes nothing on this registry",
            "A snapshot is read only when the registry's volume is created, and this registry's volume exists: its images stay as they are. To serve the snapshot's images, make a new registry with this `volume_snapshot_id`.",
            storage_attr("volume_snapshot_id"),
        );
    }
    if !replace.is_empty() {
        // The whole registry is replaced: plan it as a create (a new generated secret too).
        if !http_secret_given(&private) {
            st.http_secret = Value::Null;
        }
        as_new(&mut st);
        return Some((st, private, replace));
    }
    super::replace::plan_retired(diags, prior, &mut st);
    let new_droplet = super::replace::new_droplet_reason(prior, &st);
    let fleet = super::fleet::in_use(prior, &m);
    if let Some(why) = new_droplet {
        // A fresh droplet is created, converged and verified, the record switched to it,
        // and the old one deleted after the record's TTL: everything about the machine
        // is known only after apply. The keys and the host key stay the same.
        st.droplet_id = Value::Unknown;
        st.storage_used_bytes = Value::Unknown;
        st.ipv4_address = Value::Unknown;
        st.ipv6_address = Value::Unknown;
        st.registry_version = Value::Unknown;
        st.files_digest = Value::Unknown;
        // The old droplet is listed there if it cannot be deleted after the switch.
        st.retired_droplet_ids = Value::Unknown;
        if m.tls.source == TlsSource::SelfSigned && !fleet {
            // Its SANs hold the droplet's addresses.
            st.certificate_pem = Value::Unknown;
            st.certificate_not_after = Value::Unknown;
            st.tls_private_key_pem = Value::Unknown;
        }
        let switch = if m.reserved_ip && known(&prior.reserved_ip_address).is_some() {
            "the reserved IP moved to it (the DNS record stays as it is), and the old droplet (if any) deleted at once"
        } else {
            "the DNS record pointed at it, and the old droplet (if any) deleted once the record's TTL has passed"
        };
        if imported {
            plan_imported(diags, prior, &mut st, &m, switch);
        } else if fleet {
            diags.root_warning(
                "The droplets will be replaced one at a time",
                format!("{why}: for each droplet, a new one is created, converged, verified on its own address and added to the load balancer, and once the balancer's checks pass the old one is taken out of it, drained and deleted. Pulls and pushes go on throughout."),
            );
        } else {
            diags.root_warning(
                "The droplet will be replaced",
                format!("{why}: a new droplet is created, converged and verified, {switch}. Images stored on the droplet disk are not carried over; a volume or Spaces bucket is."),
            );
        }
    } else if prior.size != st.size && st.size.is_value() {
        diags.root_warning(
            "Resizing powers the droplet off",
            format!("Changing `size` from {:?} to {:?} powers the droplet off, resizes it and powers it on: the registry is unavailable for a minute or two.", prior.size.as_ref_option(), st.size.as_ref_option()),
        );
    }
    super::network::plan_reserved_ip(prior, &mut st, &m);
    super::fleet::plan(prior, &mut st, &m, new_droplet.is_some());
    super::host_key::plan(diags, prior, &mut st, new_droplet.is_some());
    users::plan(&mut st, Some(prior));
    // An imported registry's certificate key is unknown: a new certificate.
    let mut tls_changed = imported || certificate::certificate_inputs_changed(prior, &st);
    if certificate::renewal_plan(diags, prior, &was) {
        tls_changed = true;
    }
    if tls_changed {
        st.certificate_pem = Value::Unknown;
        st.certificate_not_after = Value::Unknown;
        st.tls_private_key_pem = Value::Unknown;
        st.ca_certificate_pem = Value::Unknown;
        st.ca_private_key_pem = Value::Unknown;
        // The ACME account is made by the first apply that orders (then kept); a CAA record
        // exists exactly while an ACME registry asks for one.
        let acme = m.tls.source == TlsSource::Acme;
        if acme && prior.acme_account_key.is_null() {
            st.acme_account_key = Value::Unknown;
        }
        if !(acme && m.tls.caa) {
            st.caa_record_id = Value::Null;
        } else if prior.caa_record_id.is_null() {
            st.caa_record_id = Value::Unknown;
        }
    }
    if !tls_changed && certificate::self_signed_addresses_changed(prior, &st, &m) {
        // The same private CA signs the new one: clients that trust it keep trusting.
        st.certificate_pem = Value::Unknown;
        st.certificate_not_after = Value::Unknown;
        st.tls_private_key_pem = Value::Unknown;
    }
    // Drift: compare what the droplet holds (as read) with what it must hold.
    st.files_digest = match expected_digests(&st, &m) {
        Some(expected) => Value::Value(expected.into_iter().map(|(k, v)| (k, s(v))).collect()),
        None => Value::Unknown,
    };
    certificate::plan_renewal_state(prior, &mut st, &was, &m, tls_changed);
    if imported && certificate::delegates_challenge(&m) {
        // The delegation goes to the new droplet: made again (see `replace`).
        st.acme_delegation_record_id = Value::Unknown;
    }
    let collecting = super::update::collection_asked(prior, &st) && new_droplet.is_none();
    if collecting {
        // One collection runs during this apply (see `update::collect_if_asked`).
        st.garbage_collection_last_run = Value::Unknown;
        st.garbage_collection_freed_bytes = Value::Unknown;
    }
    let retention_delete = if new_droplet.is_some() {
        // Listed again once the new droplet serves (see `RegistryResource::update`).
        st.retention_preview = if m.retention_rules().is_empty() {
            Value::Null
        } else {
            Value::Unknown
        };
        Default::default()
    } else {
        super::retention::plan(diags, prior, &mut st, collecting)
    };
    if !diags.errors.is_empty() {
        return None;
    }
    let private = match private {
        Value::Value(p) => Value::Value(Private {
            retention_delete,
            ..p
        }),
        other => other,
    };
    if st.record_id.is_null() {
        st.record_id = Value::Unknown;
    }
    if st.firewall_id.is_null() {
        st.firewall_id = Value::Unknown;
    }
    super::monitoring::plan(prior, &mut st);
    if st != *prior {
        st.registry_version = Value::Unknown;
        st.storage_used_bytes = Value::Unknown;
    }
    Some((st, private, replace))
}

/// The plan after an import, before anything else: with droplet-disk storage the imported
/// droplet's images would go with it, so the plan fails unless `storage.accept_image_loss`
/// says the user chose that; the volume is named after `name`, which must stay the droplet's.
fn check_imported(
    diags: &mut Diagnostics,
    prior: &RegistryState,
    st: &RegistryState,
) -> Option<()> {
    let (was, m) = (Model::of(prior), Model::of(st));
    let droplet = prior
        .droplet_id
        .as_ref_option()
        .map_or("?".to_owned(), |i| i.to_string());
    if was.storage.backend == Backend::Droplet
        && m.storage.backend == Backend::Droplet
        && !m.storage.accept_image_loss
    {
        diags.error(
            "Imported registry on the droplet disk: its images would be lost",
            format!("The registry at {fqdn} was imported with droplet-disk storage. The provider cannot reach a droplet it did not make (it holds neither its management key nor its host key), so this apply must replace droplet ({droplet}), and the images on its disk would be deleted with it. Nothing was changed. To go on, either copy the images elsewhere first (for example `skopeo sync` to another registry) and set `storage {{ accept_image_loss = true }}`; or keep the registry out of Terraform (`tofu state rm`); or delete it with `tofu destroy -refresh=false` (destroy's refreshing plan stops at this error too).", fqdn = was.fqdn),
            storage_attr("accept_image_loss"),
        );
        return None;
    }
    if was.storage.backend == Backend::Volume
        && m.storage.backend == Backend::Volume
        && was.name != m.name
    {
        diags.error(
            "Imported registry: `name` must stay the droplet's",
            format!(
                "The imported volume is named after the droplet ({:?}): set `name = {:?}`.",
                was.volume_name(),
                was.name
            ),
            AttributePath::new("name"),
        );
        return None;
    }
    if m.replicas > 1 {
        diags.error(
            "Imported registry: one droplet first",
            format!(
                "The first apply after an import replaces droplet ({droplet}) with one of the provider's own, which takes its keys, secrets and certificate over: apply with `replicas = 1` first, then raise `replicas` to {} in a later apply.",
                m.replicas
            ),
            AttributePath::new("replicas"),
        );
        return None;
    }
    Some(())
}

/// The plan of an imported registry's first apply: a new droplet with keys, secrets, hashes
/// and certificate of the provider's own, the storage kept. The warning says why and what
/// happens to the images.
fn plan_imported(
    diags: &mut Diagnostics,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
    switch: &str,
) {
    for v in [
        &mut st.management_private_key,
        &mut st.management_public_key,
        &mut st.host_private_key,
        &mut st.host_public_key,
        &mut st.host_key_fingerprint,
        &mut st.user_data_host_key_fingerprint,
    ] {
        *v = Value::Unknown;
    }
    if m.storage.backend == Backend::Spaces {
        // The imported droplet's key has no readable secret: the registry gets a new one.
        st.spaces_key_id = Value::Unknown;
        st.spaces_secret_key = Value::Unknown;
        st.spaces_endpoint = Value::Unknown;
    }
    let droplet = prior
        .droplet_id
        .as_ref_option()
        .map_or("?".to_owned(), |i| i.to_string());
    let images = match m.storage.backend {
        Backend::Volume => format!(
            "the images on volume {} are kept: it moves to the new droplet once the old one is shut down",
            m.volume_name()
        ),
        Backend::Spaces => format!(
            "the images in bucket {} are kept: the new droplet serves them before the record switches",
            m.storage.bucket.as_deref().unwrap_or("?")
        ),
        Backend::Droplet => "the images on the old droplet's disk are lost with it (`storage.accept_image_loss = true`)".to_owned(),
    };
    diags.root_warning(
        "Imported: the droplet will be replaced",
        format!("Imported: droplet ({droplet}) will be replaced because the provider holds neither its management key nor its SSH host key (nor the registry's http secret, the users' hashes or the certificate's key), so it cannot converge it; {images}. A new droplet is created with keys, secrets and a certificate of the provider's own, converged from this configuration and verified, {switch}. The firewall, DNS record{} are kept.", if m.reserved_ip { ", reserved IP" } else { "" }),
    );
}
