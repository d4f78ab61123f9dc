//! Update in place: rename, resize, firewall, reserved IP on or off, record, volume growth, people's keys, tags,
//! users and certificate on the running droplet; a new `image` or `droplet_generation`, or a
//! droplet that is gone, gets a new droplet instead (see `replace`). Droplets an earlier
//! replacement could not delete are deleted first. A failed update keeps every id and secret it
//! made or switched to ([`kept_after_failure`]).

use std::time::Instant;

use tf_provider::Diagnostics;

use super::certificate;
use super::desired::s;
use super::droplet;
use super::env::Env;
use super::error::{storage_attr, Error, Result, ResultExt};
use super::fleet;
use super::model::Model;
use super::network::{ensure_firewall, ensure_record, ensure_reserved_ip, release_reserved_ip};
use super::replace::{delete_retired, new_droplet_reason, replace_droplet};
use super::state::{known, RegistryState};
use super::users;
use crate::do_api::Action;
use crate::remote::commands;
use crate::storage::volume;
use tf_provider::value::Value;

pub async fn update(
    env: &Env,
    diags: &mut Diagnostics,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
    retention_delete: &crate::retention::Selection,
    deadline: Instant,
) -> Result<()> {
    super::host_key::as_found(prior, st);
    if st.http_secret.is_unknown() {
        // The configuration dropped its `http_secret`: a generated one from now on.
        st.http_secret = super::desired::s(droplet::random_hex(32));
    }
    delete_retired(env, diags, st, prior).await;
    if fleet::in_use(prior, m) {
        return update_fleet(env, diags, prior, st, m, retention_delete, deadline).await;
    }
    if new_droplet_reason(prior, st).is_some() {
        replace_droplet(env, diags, prior, st, m, deadline).await?;
        fleet::settle_single(st);
        return super::monitoring::ensure(env, prior, st, m).await;
    }
    let client = &env.client;
    let id = prior
        .droplet_id
        .as_ref_option()
        .map(|i| *i as u64)
        .ok_or(Error::MissingState("droplet id"))?;
    droplet_settings(env, prior, st, m, id, deadline).await?;
    // Firewall: recreated when gone, updated when the SSH sources changed.
    ensure_firewall(client, prior, st, m, &[id]).await?;
    if m.reserved_ip {
        // Turned on (or its address is gone): made and assigned before the record moves.
        ensure_reserved_ip(env, st, m, id, deadline).await?;
    }
    let address_moved = prior.reserved_ip_address != st.reserved_ip_address;
    if st.record_id.is_unknown() || address_moved {
        if st.record_id.is_unknown() {
            st.record_id = prior.record_id;
        }
        ensure_record(client, st).await?;
    }
    if let (false, Some(old)) = (m.reserved_ip, known(&prior.reserved_ip_address)) {
        // Turned off: the record points at the droplet already. A client that resolved the
        // name within the record's TTL still uses the reserved IP: it serves until then.
        tokio::time::sleep(env.timings.old_droplet_grace).await;
        if let Err(e) = release_reserved_ip(env, old, deadline).await {
            st.reserved_ip_address = prior.reserved_ip_address.clone();
            return Err(e);
        }
    }
    grow_volume(env, prior, st, m, deadline).await?;
    super::create::keep_deleted(env, m, Model::of(prior).storage.keep_deleted_days).await?;
    if prior.ssh_key_fingerprints != st.ssh_key_fingerprints {
        droplet::set_people_keys(env, st, m, deadline).await?;
    }
    users::fill(st, Some(prior)).await?;
    if st.certificate_pem.is_unknown() {
        certificate::obtain(env, st, m, deadline).await?;
    }
    certificate::drop_caa(env, prior, st).await?;
    certificate::prepare_renewal(env, st, m).await?;
    droplet::converge_and_verify(env, st, m, deadline).await?;
    if collection_asked(prior, st) && !m.retention_rules().is_empty() {
        // Retention first: what it deletes, the collection frees.
        let deleted = super::retention::delete_planned(env, diags, st, m, retention_delete).await?;
        st.retention_deleted = super::retention::to_state(&deleted);
    }
    collect_if_asked(env, prior, st, m, deadline).await?;
    fleet::settle_single(st);
    super::monitoring::ensure(env, prior, st, m).await
}

/// The update of a registry with several droplets (or going to or from several): the
/// balancer and the record first, each droplet's settings, the certificate, then the droplets
/// themselves: fewer (drained first), converged (or replaced one at a time), more (each
/// verified before it joins); back to one, the record leaves the balancer, which is deleted
/// once the record's TTL has passed. `st` names the droplets that serve at every step, so a
/// failure keeps them all.
async fn update_fleet(
    env: &Env,
    diags: &mut Diagnostics,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
    retention_delete: &crate::retention::Selection,
    deadline: Instant,
) -> Result<()> {
    let client = &env.client;
    let replacing = new_droplet_reason(prior, st).is_some();
    // An apply killed while it added a droplet left one no state knows (still tagged as
    // being created): deleted before anything else.
    let keep: Vec<u64> = fleet::members(prior)
        .into_iter()
        .map(|(id, _)| id)
        .chain(super::destroy::retired_droplets(prior))
        .collect();
    droplet::sweep_interrupted(env, m, &keep, false).await?;
    fleet::set_members(st, &fleet::members(prior));
    st.ipv6_address = prior.ipv6_address.clone();
    st.load_balancer_id = prior.load_balancer_id.clone();
    st.load_balancer_ip = prior.load_balancer_ip.clone();
    if st.record_id.is_unknown() {
        st.record_id = prior.record_id;
    }
    users::fill(st, Some(prior)).await?;
    // Fewer droplets first: nothing is done to those that leave.
    fleet::shrink(env, diags, st, m).await?;
    let ids: Vec<u64> = fleet::members(st).iter().map(|(id, _)| *id).collect();
    ensure_firewall(client, prior, st, m, &ids).await?;
    let single = m.replicas == 1;
    if !single {
        fleet::ensure_balancer(env, st, m, &ids, deadline).await?;
    } else {
        // Back to one droplet: the record points at it from now on.
        st.load_balancer_ip = Value::Null;
    }
    if st.record_id.is_null()
        || super::network::record_target(prior) != super::network::record_target(st)
    {
        ensure_record(client, st).await?;
    }
    if !replacing {
        for &id in &ids {
            if prior.size != st.size && known(&st.size).is_some() {
                // Out of the balancer while it is off (one droplet at a time: the others
                // serve meanwhile). It goes back once converged and verified (below).
                fleet::leave_balancer(env, st, id).await?;
            }
            droplet_settings(env, prior, st, m, id, deadline).await?;
        }
        if prior.ssh_key_fingerprints != st.ssh_key_fingerprints {
            for (id, ip) in fleet::members(st) {
                droplet::set_people_keys(env, &fleet::view(st, id, &ip), m, deadline).await?;
            }
        }
    }
    super::create::keep_deleted(env, m, Model::of(prior).storage.keep_deleted_days).await?;
    if st.certificate_pem.is_unknown() {
        certificate::obtain(env, st, m, deadline).await?;
    }
    certificate::drop_caa(env, prior, st).await?;
    certificate::prepare_renewal(env, st, m).await?;
    if replacing {
        fleet::roll(env, diags, st, m, deadline).await?;
    } else if !fleet::members(st).is_empty() {
        fleet::converge_all(env, st, m, deadline).await?;
    }
    // Every droplet, verified now, in the balancer (one resized, or taken out by hand).
    fleet::join_balancer(env, st, m, deadline).await?;
    if collection_asked(prior, st) && !replacing {
        if !m.retention_rules().is_empty() {
            let deleted =
                super::retention::delete_planned(env, diags, st, m, retention_delete).await?;
            st.retention_deleted = super::retention::to_state(&deleted);
        }
        collect_on_every_droplet(env, prior, st, m, deadline).await?;
    }
    fleet::grow(env, st, m, deadline).await?;
    if single && known(&st.load_balancer_id).is_some() {
        // A client that resolved the name within the record's TTL still uses the balancer.
        tokio::time::sleep(env.timings.old_droplet_grace).await;
        fleet::delete_balancer(env, st).await?;
    }
    if single {
        fleet::settle_single(st);
    }
    super::monitoring::ensure(env, prior, st, m).await
}

/// What the API changes on droplet `id`: its name, size (a resize powers it off), backups and
/// tags.
async fn droplet_settings(
    env: &Env,
    prior: &RegistryState,
    st: &RegistryState,
    m: &Model,
    id: u64,
    deadline: Instant,
) -> Result<()> {
    let client = &env.client;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let wait = |a: Action| async move { client.wait_for_action(a.id, remaining()).await };
    if prior.name != st.name && !m.name.is_empty() {
        wait(client.rename(id, &m.name).await?).await?;
    }
    if prior.size != st.size && known(&st.size).is_some() {
        wait(client.power_off(id).await?).await?;
        wait(client.resize(id, &m.size).await?).await?;
        wait(client.power_on(id).await?).await?;
    }
    super::backups::update(env, prior, m, id, deadline).await?;
    if prior.tags != st.tags {
        let old = Model::of(prior).tags;
        for t in m.tags.iter().filter(|t| !old.contains(t)) {
            client.tag_droplet(t, id).await?;
        }
        for t in old.iter().filter(|t| !m.tags.contains(t)) {
            client.untag_droplet(t, id).await?;
        }
    }
    Ok(())
}

/// Whether this apply runs a garbage collection: `garbage_collection.run` is set and differs
/// from before (unset before counts as different, as for `droplet_generation`). Adding the
/// block without `run`, or removing `run`, collects nothing.
pub fn collection_asked(prior: &RegistryState, planned: &RegistryState) -> bool {
    let run = |st: &RegistryState| Model::of(st).gc.and_then(|g| g.run);
    matches!(run(planned), Some(now) if Some(now) != run(prior))
}

/// One collection on the droplet when the plan asked for it (after the converge, so the
/// collector and its settings are the ones just written); its result goes into state.
async fn collect_if_asked(
    env: &Env,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    if !collection_asked(prior, st) {
        return Ok(());
    }
    let t = env.connect(st, deadline).await?;
    let status = commands::collect_garbage(t.as_ref())
        .await
        .map_err(|e| Error::from(e).at(gc_attr("run")))?;
    tracing::info!(freed_bytes = ?status.freed_bytes, blobs_deleted = ?status.blobs_deleted, tags_checked = ?status.tags_checked, "garbage collected");
    st.garbage_collection_last_run = s(status.finished_at);
    st.garbage_collection_freed_bytes = status.freed_bytes.map_or(Value::Null, Value::Value);
    if let Ok(p) = commands::probe(
        t.as_ref(),
        super::desired::spec_of(st, m)
            .and_then(|sp| sp.storage_root().map(str::to_owned))
            .as_deref(),
    )
    .await
    {
        if m.storage.backend != super::model::Backend::Spaces {
            st.storage_used_bytes = Value::Value(p.storage_used_bytes as i64);
        }
    }
    Ok(())
}

/// One collection for several droplets on one bucket: writes held on every other droplet
/// (nginx answers 503 with Retry-After, as the collector's own does), the collection on the
/// first, then each other droplet in turn out of the balancer, its registry restarted (it
/// caches blob descriptors, some of which the collection deleted), verified on its own
/// address and back in the balancer, writes let through. Pulls go on throughout.
async fn collect_on_every_droplet(
    env: &Env,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let others: Vec<(u64, String)> = fleet::members(st).into_iter().skip(1).collect();
    let mut held = Vec::new();
    let mut result = Ok(());
    for (id, ip) in &others {
        let hold = async {
            let t = env.connect(&fleet::view(st, *id, ip), deadline).await?;
            commands::hold_writes_for_collection(t.as_ref())
                .await
                .map_err(|e| Error::from(e).at(gc_attr("run")))
        };
        match hold.await {
            Ok(()) => held.push((*id, ip.clone())),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_err() {
        // Nothing collected: the droplets that hold writes let them through again.
        for (id, ip) in &held {
            let released = async {
                let t = env.connect(&fleet::view(st, *id, ip), deadline).await?;
                Ok::<_, Error>(commands::release_writes(t.as_ref()).await?)
            };
            if let Err(e) = released.await {
                tracing::warn!(droplet = id, error = %e, "could not let writes through again; the next apply's converge does");
            }
        }
        return result;
    }
    tracing::info!(droplets = ?held.iter().map(|(id, _)| id).collect::<Vec<_>>(), "writes held for the collection");
    let collected = collect_if_asked(env, prior, st, m, deadline).await;
    let mut result = collected;
    for (id, ip) in held {
        let back = async {
            fleet::leave_balancer(env, st, id).await?;
            let mut v = fleet::view(st, id, &ip);
            let t = env.connect(&v, deadline).await?;
            commands::restart_registry_and_release_writes(t.as_ref()).await?;
            droplet::converge_and_verify_at(env, &mut v, m, deadline, droplet::Outside::OwnAddress)
                .await?;
            if let Some(lb) = known(&st.load_balancer_id) {
                env.client.add_load_balancer_droplets(lb, &[id]).await?;
            }
            Ok::<_, Error>(())
        };
        let back = back.await;
        if let Err(e) = back {
            tracing::warn!(droplet = id, error = %e, "a droplet after the collection");
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    // A droplet that failed stays out of the balancer: the next apply converges it, verifies
    // it and puts it back (`fleet::join_balancer`).
    let through = fleet::verify_through_balancer(env, st, m, deadline).await;
    result.and(through)
}

/// `garbage_collection[0].<attr>`
fn gc_attr(attr: &'static str) -> tf_provider::AttributePath {
    tf_provider::AttributePath::new("garbage_collection")
        .index(0)
        .attribute(attr)
}

/// `storage.size_gib` up: the volume through the API, then its file system on the droplet.
async fn grow_volume(
    env: &Env,
    prior: &RegistryState,
    st: &RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let (Some(vid), Some(before), Some(after)) = (
        known(&st.volume_id),
        Model::of(prior).storage.size_gib,
        m.storage.size_gib,
    ) else {
        return Ok(());
    };
    if after <= before {
        return Ok(());
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    volume::grow(&env.client, vid, after, &m.region, remaining)
        .await
        .context("growing volume", vid)?;
    let t = env.connect(st, deadline).await?;
    volume::grow_filesystem(t.as_ref(), &m.volume_name())
        .await
        .map_err(|e| {
            Error::from(e)
                .context("growing the file system of volume", vid)
                .at(storage_attr("size_gib"))
        })?;
    Ok(())
}

/// The state to keep after a failed update: the prior arguments (so the next plan proposes
/// the change again) with every id and secret that is known in `st`: what the update made or
/// switched to before it failed (a new droplet the record points at, a record, a firewall, a
/// renewed certificate, a new ACME account, a CAA record, retired droplets), so that nothing
/// is orphaned and nothing is made twice. What it had not reached yet is still unknown in
/// `st` and keeps its prior value.
pub fn kept_after_failure(prior: &RegistryState, st: &RegistryState) -> RegistryState {
    if super::import::imported(prior)
        && st.droplet_id.is_value()
        && st.droplet_id != prior.droplet_id
    {
        // An imported registry whose new droplet took over: that droplet is reached only
        // with the keys and secrets this apply made, so they all stay.
        let mut keep = st.clone();
        keep.null_unknowns();
        return keep;
    }
    let mut keep = prior.clone();
    macro_rules! known_in_st {
        ($($f:ident),*) => { $( if !st.$f.is_unknown() { keep.$f = st.$f.clone(); } )* };
    }
    known_in_st!(
        droplet_id,
        ipv4_address,
        ipv6_address,
        droplet_ids,
        ipv4_addresses,
        load_balancer_id,
        load_balancer_ip,
        domain,
        record_id,
        caa_record_id,
        aaaa_record_id,
        firewall_id,
        certificate_pem,
        certificate_not_after,
        tls_private_key_pem,
        ca_certificate_pem,
        ca_private_key_pem,
        acme_account_key,
        volume_id,
        retired_droplet_ids,
        uptime_check_id,
        uptime_alert_ids
    );
    // A reserved IP made by this update is kept; one it was to delete stays until deleted
    // (a null here may only mean the update had not reached it).
    if known(&st.reserved_ip_address).is_some() {
        keep.reserved_ip_address = st.reserved_ip_address.clone();
    }
    keep.null_unknowns();
    keep
}
