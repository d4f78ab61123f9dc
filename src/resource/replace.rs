//! A new droplet for the same registry (`image` or `droplet_generation` changed, or the old
//! droplet is gone): booted with the same keys, converged and verified on its own address, the
//! firewall and the record (or, with `reserved_ip`, the reserved IP: no DNS change) switched to
//! it. The switch is the commit point: before it a failure deletes the new droplet and leaves
//! the old one serving (with its volume and reserved IP put back); after it the new droplet is
//! the registry, and the old one is retired: deleted once the record's TTL has passed (at once
//! when only the reserved IP moved: no client holds the old address), or, if that fails, kept
//! in `retired_droplet_ids` and deleted by the next apply or destroy.

use std::time::Instant;

use tf_provider::value::Value;
use tf_provider::Diagnostics;

use super::certificate;
use super::destroy::retired_droplets;
use super::droplet::{self, Outside};
use super::env::Env;
use super::error::{Error, Result, ResultExt};
use super::model::{deadline_after, Model, TlsSource};
use super::network::{
    assign_reserved_ip, ensure_record, ensure_reserved_ip, firewall_request, release_reserved_ip,
    RECORD_TTL,
};
use super::state::{known, RegistryState};
use super::users;
use crate::diag;
use crate::remote::commands;
use crate::storage::volume;

/// Why the next apply boots a new droplet, if it does: what the plan says.
pub fn new_droplet_reason(prior: &RegistryState, planned: &RegistryState) -> Option<&'static str> {
    if super::import::imported(prior) {
        Some("imported: the provider holds neither the droplet's management key nor its SSH host key")
    } else if prior.droplet_id.is_null() && prior.id.is_value() {
        Some("the registry's droplet is gone (deleted outside Terraform?): a new droplet is created for the firewall, record, keys and storage kept in state")
    } else if prior.image != planned.image {
        Some("`image` changed")
    } else if prior.droplet_generation != planned.droplet_generation {
        Some("`droplet_generation` changed")
    } else {
        None
    }
}

/// Plan: droplets a replacement could not delete are deleted by the next apply, which the
/// plan shows (their list becomes empty) and says.
pub fn plan_retired(diags: &mut Diagnostics, prior: &RegistryState, planned: &mut RegistryState) {
    let ids = retired_droplets(prior);
    if ids.is_empty() {
        return;
    }
    // Unknown, not empty: a droplet the apply cannot delete stays listed.
    planned.retired_droplet_ids = Value::Unknown;
    let list: Vec<String> = ids.iter().map(|i| format!("({i})")).collect();
    diags.root_warning(
        "Old droplets will be deleted",
        format!(
            "Droplet {} left from an earlier replacement is deleted by this apply.",
            list.join(", ")
        ),
    );
}

/// Deletes the retired droplets; one that cannot be deleted stays listed, with a warning.
pub async fn delete_retired(
    env: &Env,
    diags: &mut Diagnostics,
    st: &mut RegistryState,
    prior: &RegistryState,
) {
    let ids = retired_droplets(prior);
    if ids.is_empty() {
        // Nothing to delete: the list stays as it was (planned unknown for a new droplet,
        // which may retire the old one).
        if st.retired_droplet_ids.is_unknown() {
            st.retired_droplet_ids = prior.retired_droplet_ids.clone();
        }
        return;
    }
    let mut left = Vec::new();
    for id in ids {
        match env.client.delete_droplet(id).await {
            Ok(()) => tracing::info!(droplet = id, "retired droplet deleted"),
            Err(e) => {
                diag::warning(
                    diags,
                    format!("Deleting old droplet ({id}) failed"),
                    &Error::from(e).during(
                        "it stays in `retired_droplet_ids`; the next apply or destroy deletes it",
                    ),
                );
                left.push(id);
            }
        }
    }
    set_retired(st, left);
}

fn set_retired(st: &mut RegistryState, ids: Vec<u64>) {
    st.retired_droplet_ids =
        Value::Value(ids.into_iter().map(|i| Value::Value(i as i64)).collect());
}

pub(super) fn retire(st: &mut RegistryState, id: u64) {
    let mut ids = retired_droplets(st);
    if !ids.contains(&id) {
        ids.push(id);
    }
    set_retired(st, ids);
}

pub(super) fn unretire(st: &mut RegistryState, id: u64) {
    let ids = retired_droplets(st)
        .into_iter()
        .filter(|i| *i != id)
        .collect();
    set_retired(st, ids);
}

fn id_of(v: &Value<i64>) -> Option<u64> {
    v.as_ref_option().map(|i| *i as u64)
}

pub async fn replace_droplet(
    env: &Env,
    diags: &mut Diagnostics,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let client = &env.client;
    // None: the old droplet is gone already (see `read`), nothing to stop or retire.
    let old_id = id_of(&prior.droplet_id);
    let imported = super::import::imported(prior);
    if imported {
        take_over(env, prior, st, m).await?;
    }
    users::fill(st, Some(prior)).await?;
    st.firewall_id = prior.firewall_id.clone();
    st.record_id = prior.record_id;
    st.domain = prior.domain.clone();
    let volume_id = known(&prior.volume_id).map(str::to_owned);
    // A replacement killed halfway before this one left a droplet no state knows.
    let keep: Vec<u64> = old_id.into_iter().chain(retired_droplets(prior)).collect();
    droplet::sweep_interrupted(env, m, &keep, false).await?;
    let mut gap_started: Option<Instant> = None;
    let staged = async {
        droplet::boot(env, st, m, false, deadline).await?;
        if st.certificate_pem.is_unknown() || m.tls.source == TlsSource::SelfSigned {
            certificate::obtain(env, st, m, deadline).await?;
        }
        let new_id = id_of(&st.droplet_id).unwrap_or_default();
        if let Some(vid) = &volume_id {
            if let Some(old_id) = old_id {
                // One file system, one writer: the old registry stops before the volume moves.
                // From here until the new droplet is verified, pushes and pulls fail.
                gap_started = Some(Instant::now());
                if imported {
                    // Not the provider's to reach over SSH: shut down through the API, which
                    // stops its registry and unmounts the volume as any shutdown does.
                    shut_down(env, old_id, deadline).await?;
                } else {
                    let old = env.connect(prior, deadline).await?;
                    commands::release_volume(old.as_ref(), &m.volume_name())
                        .await
                        .context("releasing the volume on droplet", old_id)?;
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            volume::move_to(client, vid, new_id, &m.region, remaining)
                .await
                .map_err(|e| {
                    Error::from(e).during(format!("moving volume ({vid}) to droplet ({new_id})"))
                })?;
        }
        certificate::prepare_renewal(env, st, m).await?;
        // Proven on its own address: the registry's address still reaches the old droplet.
        droplet::converge_and_verify_at(env, st, m, deadline, Outside::OwnAddress).await?;
        if let Some(fw) = known(&st.firewall_id) {
            client
                .update_firewall(fw, &firewall_request(m, &[new_id]))
                .await?;
        }
        Ok(())
    }
    .await;
    let switched = match staged {
        Ok(()) => switch_address(env, prior, st, m, deadline).await,
        Err(e) => Err(e),
    };
    if let Err(e) = switched {
        return Err(roll_back(
            env,
            prior,
            st,
            m,
            old_id,
            volume_id.as_deref(),
            gap_started,
            deadline,
            e,
        )
        .await);
    }
    // Committed: the record points at the new droplet, which is the registry now.
    let new_id = id_of(&st.droplet_id).unwrap_or_default();
    droplet::done_creating(env, st, m).await;
    if let Some(t) = gap_started {
        tracing::info!(
            gap_ms = t.elapsed().as_millis() as u64,
            "volume switch-over gap: registry stopped on the old droplet until the new one was verified and the record switched"
        );
    }
    let Some(old_id) = old_id else {
        if imported {
            drop_imported_leftovers(env, diags, prior, st, m).await;
        }
        return Ok(());
    };
    // Listed before the wait, so that whatever happens next, the old droplet is in state.
    retire(st, old_id);
    let same_address = m.reserved_ip
        && known(&prior.reserved_ip_address).is_some()
        && prior.reserved_ip_address == st.reserved_ip_address;
    if same_address {
        tracing::info!(
            old = old_id,
            new = new_id,
            "reserved IP moved, record unchanged: deleting the old droplet"
        );
    } else {
        tracing::info!(
            old = old_id,
            new = new_id,
            ttl = RECORD_TTL,
            "record switched; waiting for its TTL before deleting the old droplet"
        );
        tokio::time::sleep(env.timings.old_droplet_grace).await;
    }
    if let (false, Some(ip)) = (m.reserved_ip, known(&prior.reserved_ip_address)) {
        // Turned off with this replacement: the record left it a TTL ago.
        if let Err(e) = release_reserved_ip(env, ip, deadline).await {
            st.reserved_ip_address = prior.reserved_ip_address.clone();
            diag::warning(
                diags,
                "The reserved IP was not deleted",
                &e.during("it stays in state; the next apply deletes it"),
            );
        }
    }
    match client.delete_droplet(old_id).await {
        Ok(()) => unretire(st, old_id),
        Err(source) => diag::warning(
            diags,
            "The old droplet was not deleted",
            &Error::OldDropletLeft {
                new: new_id,
                old: old_id,
                source: Box::new(source),
            },
        ),
    }
    if imported {
        // After the old droplet: it served with its key until then.
        drop_imported_leftovers(env, diags, prior, st, m).await;
    }
    Ok(())
}

/// The commit point: with `reserved_ip`, the reserved IP moves to the new droplet (the record
/// changes only when the address is new) and the registry is proven there again; else the
/// record points at the new droplet.
async fn switch_address(
    env: &Env,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    if !m.reserved_ip {
        return switch_record(env, st).await;
    }
    let new_id = id_of(&st.droplet_id).ok_or(Error::MissingState("droplet id"))?;
    ensure_reserved_ip(env, st, m, new_id, deadline).await?;
    if prior.reserved_ip_address != st.reserved_ip_address {
        switch_record(env, st).await?;
    }
    droplet::verify_registry(env, st, m).await
}

/// Points the record at the new droplet. When the API fails, the record is read back: one
/// that points at the new droplet anyway is switched.
async fn switch_record(env: &Env, st: &mut RegistryState) -> Result<()> {
    let Err(e) = ensure_record(&env.client, st).await else {
        return Ok(());
    };
    let (Some(domain), Some(rid), Some(ip)) = (
        known(&st.domain),
        id_of(&st.record_id),
        super::network::record_target(st),
    ) else {
        return Err(e);
    };
    match env.client.get_record(domain, rid).await {
        Ok(Some(rec)) if rec.data == ip => Ok(()),
        _ => Err(e),
    }
}

/// Before the switch: the new droplet deleted (or, if that fails, retired: kept in state),
/// the volume put back on the old droplet and its registry started, and `st` back on the old
/// droplet. Returns the error to report.
#[allow(clippy::too_many_arguments)]
async fn roll_back(
    env: &Env,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
    old_id: Option<u64>,
    volume_id: Option<&str>,
    gap_started: Option<Instant>,
    deadline: Instant,
    e: Error,
) -> Error {
    let mut e = e;
    if let (Some(vid), Some(old_id), Some(_)) = (volume_id, old_id, gap_started) {
        // Put the volume back and restart the old registry, so it serves again.
        if let Err(be) = roll_back_volume(env, prior, vid, old_id, m, deadline).await {
            tracing::warn!(error = %be, "putting the volume back on the old droplet");
            e = e.with_cleanup(be.during("putting the volume back on the old droplet failed too"));
        }
    }
    let new_id = id_of(&st.droplet_id).filter(|n| Some(*n) != old_id);
    if let (Some(ip), Some(old_id), Some(_)) = (known(&st.reserved_ip_address), old_id, new_id) {
        // It may have reached the new droplet: back on the old one, which serves again.
        let back = deadline_after(env.timings.rollback);
        let put_back = async {
            match env.client.get_reserved_ip(ip).await? {
                Some(r) if r.droplet_id() != Some(old_id) => {
                    assign_reserved_ip(env, ip, old_id, back).await
                }
                _ => Ok(()),
            }
        };
        if let Err(be) = put_back.await {
            tracing::warn!(error = %be, "putting the reserved IP back on the old droplet");
            e = e.with_cleanup(
                be.during("putting the reserved IP back on the old droplet failed too"),
            );
        }
    }
    // `st` speaks of the old droplet again; the new one's certificate (self-signed for its
    // address) goes with it. An ACME certificate is valid for any droplet and is kept.
    st.droplet_id = prior.droplet_id;
    st.ipv4_address = prior.ipv4_address.clone();
    st.ipv6_address = prior.ipv6_address.clone();
    if m.tls.source == TlsSource::SelfSigned {
        st.certificate_pem = prior.certificate_pem.clone();
        st.certificate_not_after = prior.certificate_not_after.clone();
        st.tls_private_key_pem = prior.tls_private_key_pem.clone();
        st.ca_certificate_pem = prior.ca_certificate_pem.clone();
        st.ca_private_key_pem = prior.ca_private_key_pem.clone();
    }
    if let Some(new_id) = new_id {
        if let Err(de) = env.client.delete_droplet(new_id).await {
            retire(st, new_id);
            return e.with_cleanup(Error::from(de).during(format!(
                "deleting the new droplet ({new_id}) failed too; it stays in `retired_droplet_ids` and the next apply or destroy deletes it"
            )));
        }
    }
    e
}

/// The volume back on the old droplet and its registry started again.
async fn roll_back_volume(
    env: &Env,
    prior: &RegistryState,
    vid: &str,
    old_id: u64,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(env.timings.rollback);
    let back = volume::move_to(&env.client, vid, old_id, &m.region, remaining)
        .await
        .context("moving volume back", vid);
    let restarted = async {
        if super::import::imported(prior) {
            // Shut down through the API (see `shut_down`): powered on, it mounts the volume
            // and starts its registry as at any boot.
            let a = env.client.power_on(old_id).await?;
            env.client
                .wait_for_action(a.id, env.timings.rollback)
                .await?;
            return Ok(());
        }
        let old = env
            .connect(prior, deadline_after(env.timings.rollback))
            .await?;
        commands::start_registry(old.as_ref())
            .await
            .context("starting the registry on droplet", old_id)
    }
    .await;
    back.and(restarted)
}

/// An imported registry's first replacement: the provider's own management key, the
/// registry's own Spaces key (the imported droplet's secret is not readable), and the ACME
/// delegation taken from the old droplet (made again for the new one by `prepare_renewal`;
/// left in place it would hide the new certificate's DNS-01 answer).
async fn take_over(
    env: &Env,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
) -> Result<()> {
    let mgmt = crate::remote::generate_ed25519("terraform-provider-docker")?;
    st.management_private_key = super::desired::s(mgmt.private_openssh.expose().to_owned());
    st.management_public_key = super::desired::s(mgmt.public_openssh.clone());
    if m.storage.backend == super::model::Backend::Spaces {
        let bucket = m.storage.bucket.clone().unwrap_or_default();
        let s3 = env.bucket_client(m)?;
        st.spaces_endpoint = super::desired::s(s3.endpoint().as_str().to_owned());
        let key =
            crate::storage::spaces::mint_registry_key(&env.client, &m.spaces_key_name(), &bucket)
                .await
                .context("minting the registry's Spaces key for bucket", &bucket)?;
        st.spaces_key_id = super::desired::s(key.access_key);
        st.spaces_secret_key = super::desired::s(key.secret_key.expose().to_owned());
    }
    if let (Some(domain), Some(id)) = (
        known(&prior.domain),
        id_of(&prior.acme_delegation_record_id),
    ) {
        match env.client.delete_record(domain, id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Err(
                    Error::from(e).context("deleting the imported ACME delegation record", id)
                )
            }
        }
    }
    st.acme_delegation_record_id = Value::Null;
    Ok(())
}

/// The imported droplet shut down (gracefully; powered off if that fails), waited for.
async fn shut_down(env: &Env, id: u64, deadline: Instant) -> Result<()> {
    let client = &env.client;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let graceful = async {
        let a = client.shutdown(id).await?;
        client.wait_for_action(a.id, remaining()).await
    }
    .await;
    if let Err(e) = graceful {
        tracing::warn!(droplet = id, error = %e, "shutdown failed; powering off");
        let a = client.power_off(id).await?;
        client
            .wait_for_action(a.id, remaining())
            .await
            .map_err(|e| Error::from(e).context("powering off the imported droplet", id))?;
    }
    tracing::info!(droplet = id, "imported droplet shut down");
    Ok(())
}

/// After an imported registry's switch: the imported droplet's Spaces keys (by the registry's
/// key name, all but the new one) and a CAA record the configuration does not ask for. A
/// failure warns: the registry serves either way.
async fn drop_imported_leftovers(
    env: &Env,
    diags: &mut Diagnostics,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
) {
    if m.storage.backend == super::model::Backend::Spaces {
        let name = m.spaces_key_name();
        let keep = known(&st.spaces_key_id).unwrap_or_default().to_owned();
        // The imported droplet's key by its id (its name follows the droplet's, which the
        // configuration may have changed), and any other by the registry's key name.
        let imported_key = known(&prior.spaces_key_id).map(str::to_owned);
        match env.client.list_spaces_keys().await {
            Ok(keys) => {
                let old = |k: &crate::do_api::SpacesKey| {
                    k.name == name || Some(&k.access_key) == imported_key.as_ref()
                };
                for k in keys.into_iter().filter(|k| old(k) && k.access_key != keep) {
                    if let Err(e) =
                        crate::storage::spaces::delete_registry_key(&env.client, &k.access_key)
                            .await
                    {
                        diag::warning(
                            diags,
                            format!(
                                "Deleting the imported droplet's Spaces key ({})",
                                k.access_key
                            ),
                            &e.into(),
                        );
                    }
                }
            }
            Err(e) => diag::warning(diags, "Listing Spaces keys", &e.into()),
        }
    }
    if let Err(e) = certificate::drop_caa(env, prior, st).await {
        diag::warning(diags, "Deleting the imported CAA record", &e);
    }
}
