//! Several droplets behind a load balancer (`replicas` of 2 or more): the members in state
//! (`droplet_ids`, `ipv4_addresses`, the first one being `droplet_id`), the balancer the A
//! record points at, and the moves that change the members without a failed pull: a droplet
//! is added only once it is converged and verified on its own address (then the balancer's
//! checks pass before anything else happens), and removed only once the balancer stopped
//! sending it requests and drained the ones it had.
//!
//! Each member is reached through a view of the state ([`view`]): the state with that
//! droplet's id and address, so that everything written for one droplet (converge, checks,
//! SSH keys) works for each.

use std::time::{Duration, Instant};

use futures::future::join_all;
use tf_provider::value::Value;
use tf_provider::Diagnostics;

use super::desired::s;
use super::droplet::{self, Outside};
use super::env::Env;
use super::error::{Error, Result};
use super::model::Model;
use super::state::{known, RegistryState};
use crate::diag;
use crate::do_api;

/// How often the balancer checks each droplet, and after how many results it changes its
/// mind: a droplet that stops answering gets no new requests after about 6 s.
const CHECK_INTERVAL_S: u32 = 3;
const CHECK_TIMEOUT_S: u32 = 3;
const UNHEALTHY_THRESHOLD: u32 = 2;
const HEALTHY_THRESHOLD: u32 = 2;
/// How long the checks take to mark a droplet that joined the balancer as up.
pub const HEALTHY_AFTER: Duration =
    Duration::from_secs((CHECK_INTERVAL_S * HEALTHY_THRESHOLD + 1) as u64);
/// How long the registry may take to answer through the balancer once a droplet serves:
/// the checks that mark it up again, and the balancer's reload.
const THROUGH_BALANCER: Duration = Duration::from_secs(90);

/// Whether the registry runs as several droplets behind a balancer, or did before this plan:
/// then its changes go through this module.
pub fn in_use(prior: &RegistryState, m: &Model) -> bool {
    m.replicas > 1 || members(prior).len() > 1 || known(&prior.load_balancer_id).is_some()
}

/// The droplets in state, `droplet_id` first, with their addresses.
pub fn members(st: &RegistryState) -> Vec<(u64, String)> {
    let ids: Vec<u64> = st
        .droplet_ids
        .as_ref_option()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_ref_option().map(|i| *i as u64))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return st
            .droplet_id
            .as_ref_option()
            .map(|id| {
                vec![(
                    *id as u64,
                    known(&st.ipv4_address).unwrap_or_default().to_owned(),
                )]
            })
            .unwrap_or_default();
    }
    let ips: Vec<String> = st
        .ipv4_addresses
        .as_ref_option()
        .map(|l| {
            l.iter()
                .map(|v| v.as_ref_option().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| (id, ips.get(i).cloned().unwrap_or_default()))
        .collect()
}

/// Puts `members` into state: the lists, and the first as `droplet_id` and `ipv4_address`.
pub fn set_members(st: &mut RegistryState, members: &[(u64, String)]) {
    st.droplet_ids = Value::Value(
        members
            .iter()
            .map(|(id, _)| Value::Value(*id as i64))
            .collect(),
    );
    st.ipv4_addresses = Value::Value(members.iter().map(|(_, ip)| s(ip.clone())).collect());
    match members.first() {
        Some((id, ip)) => {
            if st.droplet_id != Value::Value(*id as i64) {
                // Another droplet is first now: its IPv6 address is not known here.
                st.ipv6_address = Value::Null;
            }
            st.droplet_id = Value::Value(*id as i64);
            st.ipv4_address = s(ip.clone());
        }
        None => {
            st.droplet_id = Value::Null;
            st.ipv4_address = Value::Null;
            st.ipv6_address = Value::Null;
        }
    }
}

/// One droplet alone: the lists hold it, and there is no balancer.
pub fn settle_single(st: &mut RegistryState) {
    let one: Vec<(u64, String)> = members(st).into_iter().take(1).collect();
    let ipv6 = st.ipv6_address.clone();
    set_members(st, &one);
    st.ipv6_address = ipv6;
    st.load_balancer_id = Value::Null;
    st.load_balancer_ip = Value::Null;
}

/// `st` as seen from one droplet: its id and address in place of the first's.
pub fn view(st: &RegistryState, id: u64, ip: &str) -> RegistryState {
    let mut v = st.clone();
    if v.droplet_id != Value::Value(id as i64) {
        v.ipv6_address = Value::Null;
    }
    v.droplet_id = Value::Value(id as i64);
    v.ipv4_address = s(ip.to_owned());
    v
}

/// What the balancer is asked to be: HTTPS passed through to the droplets (they hold the
/// certificate), HTTP forwarded (HTTP-01 answers, redirects), each droplet checked at the
/// registry's health path on port 80.
pub fn balancer_request(m: &Model, droplet_ids: &[u64]) -> do_api::LoadBalancerRequest {
    let rule = |protocol: &str, port: u16, passthrough: bool| do_api::ForwardingRule {
        entry_protocol: protocol.into(),
        entry_port: port,
        target_protocol: protocol.into(),
        target_port: port,
        tls_passthrough: passthrough,
    };
    do_api::LoadBalancerRequest {
        name: format!("{}-registry", m.name),
        region: m.region.clone(),
        forwarding_rules: vec![rule("https", 443, true), rule("http", 80, false)],
        health_check: do_api::HealthCheck {
            protocol: "http".into(),
            port: 80,
            path: crate::render::nginx::HEALTH_PATH.into(),
            check_interval_seconds: CHECK_INTERVAL_S,
            response_timeout_seconds: CHECK_TIMEOUT_S,
            unhealthy_threshold: UNHEALTHY_THRESHOLD,
            healthy_threshold: HEALTHY_THRESHOLD,
        },
        droplet_ids: droplet_ids.to_vec(),
    }
}

/// The balancer in front of `droplet_ids`: made when there is none (its id in state at once,
/// so a failure after this is cleaned up by destroy), its rules and check put back when they
/// drifted; waited for until it is active with an address, which goes into state.
pub async fn ensure_balancer(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    droplet_ids: &[u64],
    deadline: Instant,
) -> Result<()> {
    let client = &env.client;
    let req = balancer_request(m, droplet_ids);
    let existing = match known(&st.load_balancer_id) {
        Some(id) => client.get_load_balancer(id).await?,
        None => None,
    };
    let id = match existing {
        Some(lb) => {
            let drifted = lb.forwarding_rules != req.forwarding_rules
                || lb.health_check.as_ref() != Some(&req.health_check);
            if drifted {
                // The droplets it holds stay: PUT replaces them too.
                let mut put = req.clone();
                put.droplet_ids = lb.droplet_ids.clone();
                client.update_load_balancer(&lb.id, &put).await?;
                tracing::info!(load_balancer = %lb.id, "load balancer rules and check set again");
            }
            lb.id
        }
        None => {
            let lb = client.create_load_balancer(&req).await?;
            st.load_balancer_id = s(lb.id.clone());
            st.load_balancer_ip = Value::Null;
            tracing::info!(load_balancer = %lb.id, droplets = ?droplet_ids, "load balancer created");
            lb.id
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let lb = client.wait_for_load_balancer(&id, remaining).await?;
    st.load_balancer_id = s(lb.id);
    st.load_balancer_ip = s(lb.ip);
    Ok(())
}

/// The balancer deleted (one already gone is success) and out of state.
pub async fn delete_balancer(env: &Env, st: &mut RegistryState) -> Result<()> {
    if let Some(id) = known(&st.load_balancer_id).map(str::to_owned) {
        env.client.delete_load_balancer(&id).await?;
        tracing::info!(load_balancer = %id, "load balancer deleted");
    }
    st.load_balancer_id = Value::Null;
    st.load_balancer_ip = Value::Null;
    Ok(())
}

/// Takes droplet `id` out of the balancer (when there is one) and lets it drain; it stays a
/// member: [`join_balancer`] puts it back.
pub async fn leave_balancer(env: &Env, st: &RegistryState, id: u64) -> Result<()> {
    if let Some(lb) = known(&st.load_balancer_id) {
        env.client.remove_load_balancer_droplets(lb, &[id]).await?;
        tracing::info!(
            droplet = id,
            load_balancer = lb,
            "droplet taken out of the load balancer; draining"
        );
        tokio::time::sleep(env.timings.drain).await;
    }
    Ok(())
}

/// Every member the balancer does not hold is added (each was verified on its own address by
/// this apply), and the registry proven through the balancer again.
pub async fn join_balancer(
    env: &Env,
    st: &RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let Some(id) = known(&st.load_balancer_id) else {
        return Ok(());
    };
    let Some(lb) = env.client.get_load_balancer(id).await? else {
        return Ok(());
    };
    let missing: Vec<u64> = members(st)
        .into_iter()
        .map(|(d, _)| d)
        .filter(|d| !lb.droplet_ids.contains(d))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    env.client.add_load_balancer_droplets(id, &missing).await?;
    tracing::info!(droplets = ?missing, load_balancer = id, "droplets added to the load balancer");
    verify_through_balancer(env, st, m, deadline).await
}

/// The registry proven through the balancer: asked again while the balancer's checks have
/// not marked a droplet that serves as up yet (a new balancer, a droplet that restarted).
pub async fn verify_through_balancer(
    env: &Env,
    st: &RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let until = deadline.min(Instant::now() + THROUGH_BALANCER);
    loop {
        match droplet::verify_registry(env, st, m).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() + Duration::from_secs(2) < until => {
                tracing::debug!(error = %e, "not through the load balancer yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                return Err(e.during(
                    "checking the registry through its load balancer, whose health checks reach each droplet at port 80",
                ))
            }
        }
    }
}

/// Converges every member at once, each verified on its own address, then the registry
/// through the balancer. The first droplet's findings (file digests, version, usage) go
/// into state.
pub async fn converge_all(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let ms = members(st);
    let runs = ms.iter().map(|(id, ip)| {
        let mut v = view(st, *id, ip);
        async move {
            let r = droplet::converge_and_verify_at(env, &mut v, m, deadline, Outside::OwnAddress)
                .await;
            (v, r)
        }
    });
    let done = join_all(runs).await;
    let mut first_error = None;
    for (i, (v, r)) in done.into_iter().enumerate() {
        match r {
            Ok(()) if i == 0 => take_findings(st, &v),
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(droplet = ?v.droplet_id.as_ref_option(), error = %e, "converging a droplet of the registry failed");
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    verify_through_balancer(env, st, m, deadline).await
}

/// What a converge of the first droplet found, into state.
fn take_findings(st: &mut RegistryState, v: &RegistryState) {
    st.files_digest = v.files_digest.clone();
    st.registry_version = v.registry_version.clone();
    st.storage_used_bytes = v.storage_used_bytes;
    st.garbage_collection_last_run = v.garbage_collection_last_run.clone();
    st.garbage_collection_freed_bytes = v.garbage_collection_freed_bytes;
    st.host_private_key = v.host_private_key.clone();
    st.host_public_key = v.host_public_key.clone();
    st.host_key_fingerprint = v.host_key_fingerprint.clone();
    st.user_data_host_key_fingerprint = v.user_data_host_key_fingerprint.clone();
}

/// A new droplet for the registry: booted, converged and verified on its own address, in the
/// firewall, in the balancer and through its checks. On failure the droplet (if it was made)
/// is deleted, or retired when that fails too, so none is forgotten.
async fn add_member(
    env: &Env,
    st: &RegistryState,
    m: &Model,
    deadline: Instant,
) -> (Option<u64>, Result<(u64, String, RegistryState)>) {
    let mut v = st.clone();
    v.droplet_id = Value::Null;
    v.ipv4_address = Value::Null;
    v.ipv6_address = Value::Null;
    let r = async {
        droplet::boot(env, &mut v, m, false, deadline).await?;
        let id = v
            .droplet_id
            .as_ref_option()
            .map(|i| *i as u64)
            .ok_or(Error::MissingState("droplet id"))?;
        droplet::converge_and_verify_at(env, &mut v, m, deadline, Outside::OwnAddress).await?;
        if let Some(fw) = known(&st.firewall_id) {
            env.client.add_firewall_droplets(fw, &[id]).await?;
        }
        if let Some(lb) = known(&st.load_balancer_id) {
            env.client.add_load_balancer_droplets(lb, &[id]).await?;
            tracing::info!(
                droplet = id,
                load_balancer = lb,
                "droplet added to the load balancer"
            );
        }
        droplet::done_creating(env, &v, m).await;
        let ip = known(&v.ipv4_address).unwrap_or_default().to_owned();
        Ok((id, ip))
    }
    .await;
    let made = v.droplet_id.as_ref_option().map(|i| *i as u64);
    (made, r.map(|(id, ip)| (id, ip, v)))
}

/// Adds droplets (all at once) until there are `m.replicas`; each joins the members as soon
/// as it serves. A droplet that failed is deleted (or retired), and the first error returned.
pub async fn grow(env: &Env, st: &mut RegistryState, m: &Model, deadline: Instant) -> Result<()> {
    let have = members(st);
    let want = m.replicas as usize;
    if have.len() >= want {
        return Ok(());
    }
    let base = st.clone();
    let adds = (have.len()..want).map(|_| add_member(env, &base, m, deadline));
    let done = join_all(adds).await;
    let mut ms = have;
    let mut first_error = None;
    for (made, r) in done {
        match r {
            Ok((id, ip, v)) => {
                if ms.is_empty() {
                    take_findings(st, &v);
                }
                ms.push((id, ip));
            }
            Err(e) => {
                if let Some(id) = made {
                    drop_failed(env, st, id).await;
                }
                first_error.get_or_insert(e);
            }
        }
    }
    set_members(st, &ms);
    if let Some(e) = first_error {
        return Err(e);
    }
    if known(&st.load_balancer_id).is_some() {
        verify_through_balancer(env, st, m, deadline).await?;
    }
    Ok(())
}

/// A droplet that never joined: deleted, or kept in `retired_droplet_ids` when that fails.
async fn drop_failed(env: &Env, st: &mut RegistryState, id: u64) {
    if let Err(e) = env.client.delete_droplet(id).await {
        tracing::warn!(droplet = id, error = %e, "deleting a droplet that failed to join; it stays retired");
        super::replace::retire(st, id);
    }
}

/// Takes `id` out of the balancer, lets it drain, and deletes it; listed in
/// `retired_droplet_ids` until it is deleted (a failure to delete warns and leaves it there
/// for the next apply or destroy).
async fn remove_member(
    env: &Env,
    diags: &mut Diagnostics,
    st: &mut RegistryState,
    id: u64,
) -> Result<()> {
    leave_balancer(env, st, id).await?;
    let ms: Vec<(u64, String)> = members(st).into_iter().filter(|(i, _)| *i != id).collect();
    set_members(st, &ms);
    super::replace::retire(st, id);
    match env.client.delete_droplet(id).await {
        Ok(()) => {
            super::replace::unretire(st, id);
            tracing::info!(droplet = id, "droplet removed from the registry and deleted");
        }
        Err(e) => diag::warning(
            diags,
            format!("Deleting droplet ({id}) failed"),
            &Error::from(e).during(
                "it left the registry and stays in `retired_droplet_ids`; the next apply or destroy deletes it",
            ),
        ),
    }
    Ok(())
}

/// Removes the last droplets until there are `m.replicas`.
pub async fn shrink(
    env: &Env,
    diags: &mut Diagnostics,
    st: &mut RegistryState,
    m: &Model,
) -> Result<()> {
    while members(st).len() > m.replicas as usize {
        let Some((id, _)) = members(st).last().cloned() else {
            break;
        };
        remove_member(env, diags, st, id).await?;
    }
    Ok(())
}

/// A new droplet for each member, one at a time: the new one booted, converged, verified and
/// in the balancer (and through its checks) before the old one leaves it, drains and is
/// deleted. A failure keeps what is done: the members in state are the droplets that serve.
pub async fn roll(
    env: &Env,
    diags: &mut Diagnostics,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let old = members(st);
    for (i, (old_id, _)) in old.iter().enumerate() {
        let base = st.clone();
        let (made, r) = add_member(env, &base, m, deadline).await;
        let (new_id, new_ip, v) = match r {
            Ok(x) => x,
            Err(e) => {
                if let Some(id) = made {
                    drop_failed(env, st, id).await;
                }
                return Err(e);
            }
        };
        // In the old one's place, so `droplet_id` stays the first.
        let mut ms = members(st);
        ms.insert(i, (new_id, new_ip));
        set_members(st, &ms);
        if i == 0 {
            take_findings(st, &v);
        }
        verify_through_balancer(env, st, m, deadline).await?;
        // Health checks mark a new droplet up before the old one goes.
        tokio::time::sleep(env.timings.balancer_healthy).await;
        remove_member(env, diags, st, *old_id).await?;
        tracing::info!(old = old_id, new = new_id, "droplet replaced");
    }
    Ok(())
}

/// Plan: the members that apply changes become unknown (and the balancer when it is made).
pub fn plan(prior: &RegistryState, st: &mut RegistryState, m: &Model, new_droplets: bool) {
    let before = members(prior).len();
    if new_droplets || before != m.replicas as usize {
        st.droplet_ids = Value::Unknown;
        st.ipv4_addresses = Value::Unknown;
        // A droplet that leaves and cannot be deleted is listed there.
        st.retired_droplet_ids = Value::Unknown;
        if before == 0 {
            st.droplet_id = Value::Unknown;
            st.ipv4_address = Value::Unknown;
        }
    }
    if m.replicas > 1 {
        if known(&prior.load_balancer_id).is_none() {
            st.load_balancer_id = Value::Unknown;
            st.load_balancer_ip = Value::Unknown;
        }
    } else {
        st.load_balancer_id = Value::Null;
        st.load_balancer_ip = Value::Null;
    }
}

/// Read: each member that still exists, with its address (the first's is read by the
/// caller). A member deleted by hand leaves the list, so the plan adds one again; when the
/// first is gone, the next one is first. The balancer: gone leaves state (the plan makes
/// another).
pub async fn read(env: &Env, diags: &mut Diagnostics, st: &mut RegistryState) {
    let client = &env.client;
    if let Some(id) = known(&st.load_balancer_id).map(str::to_owned) {
        match client.get_load_balancer(&id).await {
            Ok(Some(lb)) => st.load_balancer_ip = s(lb.ip),
            Ok(None) => {
                st.load_balancer_id = Value::Null;
                st.load_balancer_ip = Value::Null;
            }
            Err(e) => diag::warning(diags, format!("Reading load balancer ({id})"), &e.into()),
        }
    }
    let ms = members(st);
    if ms.len() <= 1 {
        return;
    }
    let mut kept = Vec::new();
    for (id, ip) in ms {
        match client.get_droplet(id).await {
            Ok(Some(d)) => kept.push((id, d.public_ipv4().map(str::to_owned).unwrap_or(ip))),
            Ok(None) => diags.root_warning(
                "A droplet of the registry is gone",
                format!("Droplet ({id}) was deleted outside Terraform: the next apply makes another in its place."),
            ),
            Err(e) => {
                diag::warning(diags, format!("Reading droplet ({id})"), &e.into());
                kept.push((id, ip));
            }
        }
    }
    set_members(st, &kept);
}

/// Read: the managed files of the droplets after the first, whose digests state holds. A file
/// that is not the same on every droplet reads as `differs between droplets: ...`, never as
/// the digest the plan expects, so a hand edit on any droplet shows in the next plan and apply
/// converges every droplet again.
pub async fn read_other_digests(
    env: &Env,
    diags: &mut Diagnostics,
    st: &mut RegistryState,
    paths: &[&str],
) {
    let others: Vec<(u64, String)> = members(st).into_iter().skip(1).collect();
    if others.is_empty() {
        return;
    }
    let Value::Value(first) = &st.files_digest else {
        return;
    };
    let reads = others.iter().map(|(id, ip)| {
        let v = view(st, *id, ip);
        async move {
            let t = env.connect_briefly(&v).await?;
            let (d, _) = crate::remote::managed_file_digests_and(t.as_ref(), paths, None).await?;
            Ok::<_, Error>(d)
        }
    });
    let got = join_all(reads).await;
    let mut merged = first.clone();
    for ((id, _), r) in others.iter().zip(got) {
        let digests = match r {
            Ok(d) => d,
            Err(e) => {
                diag::warning(
                    diags,
                    format!("Cannot read the files of droplet ({id})"),
                    &e.during(
                        "its files are not compared this time; the next apply converges it again",
                    ),
                );
                continue;
            }
        };
        let keys: std::collections::BTreeSet<&String> =
            first.keys().chain(digests.keys()).collect();
        for k in keys {
            let theirs = digests.get(k).map(String::as_str).unwrap_or("absent");
            let ours = first
                .get(k)
                .and_then(|v| v.as_ref_option())
                .map(String::as_str)
                .unwrap_or("absent");
            if theirs != ours {
                merged.insert(
                    k.clone(),
                    s(format!(
                        "differs between droplets: droplet ({id}) has {theirs}"
                    )),
                );
            }
        }
    }
    st.files_digest = Value::Value(merged);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st_with(ids: &[(u64, &str)]) -> RegistryState {
        let mut st = RegistryState::default();
        set_members(
            &mut st,
            &ids.iter()
                .map(|(i, ip)| (*i, (*ip).to_owned()))
                .collect::<Vec<_>>(),
        );
        st
    }

    #[test]
    fn the_first_member_is_the_droplet_and_a_view_speaks_of_its_own() {
        let st = st_with(&[(1, "198.18.0.2"), (2, "198.18.0.3")]);
        assert_eq!(st.droplet_id, Value::Value(1));
        assert_eq!(known(&st.ipv4_address), Some("198.18.0.2"));
        let v = view(&st, 2, "198.18.0.3");
        assert_eq!(v.droplet_id, Value::Value(2));
        assert_eq!(known(&v.ipv4_address), Some("198.18.0.3"));
        assert_eq!(members(&v), members(&st), "a view keeps the list");
        // A state from before replicas: its one droplet.
        let mut old = RegistryState {
            droplet_id: Value::Value(7),
            ipv4_address: s("198.18.0.9".to_owned()),
            ..Default::default()
        };
        assert_eq!(members(&old), vec![(7, "198.18.0.9".to_owned())]);
        settle_single(&mut old);
        assert_eq!(old.droplet_ids, Value::Value(vec![Value::Value(7)]));
        assert!(old.load_balancer_id.is_null());
    }

    #[test]
    fn the_balancer_passes_tls_through_and_checks_the_registry_without_credentials() {
        let m = Model::of(&RegistryState {
            name: s("reg".to_owned()),
            region: s("nyc3".to_owned()),
            ..Default::default()
        });
        let req = balancer_request(&m, &[4, 5]);
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["forwarding_rules"][0]["entry_protocol"], "https");
        assert_eq!(json["forwarding_rules"][0]["tls_passthrough"], true);
        assert_eq!(json["forwarding_rules"][1]["entry_port"], 80);
        assert!(json["forwarding_rules"][1].get("tls_passthrough").is_none());
        assert_eq!(json["health_check"]["path"], "/healthz");
        assert_eq!(json["droplet_ids"], serde_json::json!([4, 5]));
        // Within DigitalOcean's ranges: interval and timeout 3-300 s, thresholds 2-10.
        for k in ["check_interval_seconds", "response_timeout_seconds"] {
            assert!((3..=300).contains(&json["health_check"][k].as_u64().unwrap()));
        }
        for k in ["unhealthy_threshold", "healthy_threshold"] {
            assert!((2..=10).contains(&json["health_check"][k].as_u64().unwrap()));
        }
    }

    #[test]
    fn the_plan_shows_what_apply_changes_in_the_members() {
        let prior = st_with(&[(1, "a"), (2, "b")]);
        let mut prior = prior;
        prior.load_balancer_id = s("lb".to_owned());
        let mut st = prior.clone();
        let mut m = Model::of(&prior);
        m.replicas = 2;
        plan(&prior, &mut st, &m, false);
        assert_eq!(st.droplet_ids, prior.droplet_ids, "nothing changes");
        m.replicas = 3;
        plan(&prior, &mut st, &m, false);
        assert!(st.droplet_ids.is_unknown() && st.droplet_id.is_value());
        let mut st = prior.clone();
        m.replicas = 1;
        plan(&prior, &mut st, &m, false);
        assert!(st.droplet_ids.is_unknown() && st.load_balancer_id.is_null());
    }
}
