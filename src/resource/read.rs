//! Read: a droplet that is gone (404) is planned anew and everything else is kept (the
//! firewall, records, volume, bucket and keys outlive it); otherwise the addresses, name, size,
//! record and firewall are refreshed, and the digest of every managed file read in one SSH
//! round trip, so a hand edit on the droplet shows in the next plan; with retention rules, the
//! registry is listed for their preview.

use tf_provider::value::Value;
use tf_provider::Diagnostics;

use super::certificate;
use super::desired::{s, spec_of};
use super::env::Env;
use super::model::{Backend, Model};
use super::network::record_target;
use super::state::{known, RegistryState};
use crate::diag;
use crate::remote;
use crate::storage::volume;

/// What the registry is now; `None` when its droplet is gone, or (with an error diagnostic)
/// when the droplet cannot be read. Failures to refresh a part are warnings: the part keeps
/// its last value.
pub async fn read(
    diags: &mut Diagnostics,
    env: &Env,
    mut st: RegistryState,
) -> Option<RegistryState> {
    let client = &env.client;
    forget_deleted_retirees(diags, env, &mut st).await;
    if st.replicas.is_null() {
        // A state from before `replicas`: one droplet.
        st.replicas = Value::Value(1);
    }
    // The load balancer, and the droplets after the first (the first may change: see there).
    super::fleet::read(env, diags, &mut st).await;
    let mut reserved = None;
    if let Some(ip) = known(&st.reserved_ip_address).map(str::to_owned) {
        // A reserved IP deleted by hand: the next plan makes another (see `plan_reserved_ip`).
        match client.get_reserved_ip(&ip).await {
            Ok(Some(r)) => reserved = Some(r),
            Ok(None) => st.reserved_ip_address = Value::Null,
            Err(e) => diag::warning(diags, format!("Reading reserved IP ({ip})"), &e.into()),
        }
    }
    let Some(id) = st.droplet_id.as_ref_option().map(|i| *i as u64) else {
        return Some(st);
    };
    let droplet = match client.get_droplet(id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            droplet_gone(diags, &mut st, id);
            return Some(st);
        }
        Err(e) => {
            diag::error(diags, format!("Reading droplet ({id})"), &e.into());
            return None;
        }
    };
    if let Some(r) = reserved.filter(|r| r.droplet_id() != Some(id)) {
        reserved_ip_moved(diags, &mut st, &r, id);
    }
    st.ipv4_address = droplet.public_ipv4().map(s).unwrap_or(Value::Null);
    st.ipv6_address = droplet.public_ipv6().map(s).unwrap_or(Value::Null);
    let mut members = super::fleet::members(&st);
    match members.first_mut() {
        Some(first) if first.0 == id => {
            first.1 = known(&st.ipv4_address).unwrap_or_default().to_owned()
        }
        _ => members = vec![(id, known(&st.ipv4_address).unwrap_or_default().to_owned())],
    }
    let ipv6 = st.ipv6_address.clone();
    super::fleet::set_members(&mut st, &members);
    st.ipv6_address = ipv6;
    st.name = s(droplet.name.clone());
    if !droplet.size_slug.is_empty() {
        st.size = s(droplet.size_slug.clone());
    }
    super::backups::read(env, diags, &mut st, &droplet).await;
    if let (Some(domain), Some(rid)) = (
        known(&st.domain).map(str::to_owned),
        st.record_id.as_ref_option().copied(),
    ) {
        match client.get_record(&domain, rid as u64).await {
            Ok(Some(rec)) if Some(rec.data.as_str()) == record_target(&st) => {}
            Ok(_) => st.record_id = Value::Null,
            Err(e) => diag::warning(diags, format!("Reading record ({rid})"), &e.into()),
        }
    }
    let m = Model::of(&st);
    if let Some(fw) = known(&st.firewall_id).map(str::to_owned) {
        match client.get_firewall(&fw).await {
            Ok(Some(f)) => {
                let mut have: Vec<String> = f
                    .inbound_rules
                    .iter()
                    .filter(|r| r.ports == "22")
                    .flat_map(|r| r.sources.addresses.clone())
                    .collect();
                have.sort();
                let mut want = m.ssh_allowed_cidrs.clone();
                want.sort();
                if have != want {
                    st.ssh_allowed_cidrs = Value::Value(have.into_iter().map(s).collect());
                }
            }
            Ok(None) => st.firewall_id = Value::Null,
            Err(e) => diag::warning(diags, format!("Reading firewall ({fw})"), &e.into()),
        }
    }
    super::monitoring::read(env, &mut st, diags).await;
    certificate::refresh_renewal(env, &mut st, &m).await;
    // The droplet's files, in one SSH round trip: a hand edit shows up in the next plan.
    if let Some(spec) = spec_of(&st, &m) {
        let paths = remote::managed_paths(&spec);
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let extra = [
            certificate::droplet_read_command(&st, &m),
            gc_read_command(&m),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        let extra = (!extra.is_empty()).then(|| extra.join("; "));
        match env.connect_briefly(&st).await {
            Ok(t) => {
                match remote::managed_file_digests_and(t.as_ref(), &refs, extra.as_deref()).await
                {
                    Ok((d, renewal)) => {
                        st.files_digest =
                            Value::Value(d.into_iter().map(|(k, v)| (k, s(v))).collect());
                        // What the droplet renewed, taken into state before the plan compares.
                        certificate::take_droplet_read(env, &mut st, &m, &renewal).await;
                        take_gc_status(&mut st, &renewal);
                    }
                    Err(e) => diag::warning(
                        diags,
                        format!("Reading files on droplet ({id})"),
                        &e.into(),
                    ),
                }
                if m.storage.backend == Backend::Volume {
                    match volume::volume_used_bytes(t.as_ref(), &m.volume_name()).await {
                        Ok(b) => st.storage_used_bytes = Value::Value(b as i64),
                        Err(e) => diag::warning(
                            diags,
                            format!("Measuring the volume on droplet ({id})"),
                            &e.into(),
                        ),
                    }
                }
            }
            Err(e) => diag::warning(
                diags,
                format!("Cannot reach droplet ({id}) over SSH"),
                &e.during("the file digests in state are kept as they were; the next apply converges again"),
            ),
        }
        super::fleet::read_other_digests(env, diags, &mut st, &refs).await;
    }
    if let (Backend::Spaces, Some(bucket)) = (m.storage.backend, &m.storage.bucket) {
        if let Ok(c) = env.bucket_client(&m) {
            match c.usage(bucket).await {
                Ok(u) => st.storage_used_bytes = Value::Value(u.bytes as i64),
                Err(e) => diag::warning(diags, format!("Reading bucket {bucket}"), &e.into()),
            }
            // Versioning suspended or the rule changed outside Terraform: the plan shows it,
            // and apply puts it back.
            if m.storage.keep_deleted_days.is_some() {
                match crate::storage::spaces::keep_deleted_days(&c, bucket).await {
                    Ok(days) => {
                        if let Value::Value(storage) = &mut st.storage {
                            storage.keep_deleted_days =
                                days.map_or(Value::Null, |d| Value::Value(d as i64));
                        }
                    }
                    Err(e) => diag::warning(
                        diags,
                        format!("Reading the versioning of bucket {bucket}"),
                        &e.into(),
                    ),
                }
            }
        }
    }
    // What the retention rules select now: the preview the next plan shows and applies.
    super::retention::refresh(env, diags, &mut st, &m).await;
    Some(st)
}

/// The garbage collector's status file, after the certificate's sections (which end at
/// `@@END`), when collection is configured.
fn gc_read_command(m: &Model) -> Option<String> {
    m.gc.as_ref()?;
    Some(format!(
        "echo @@GC; cat {} 2>/dev/null; echo; echo @@GC-END",
        remote::shell_quote(crate::render::gc::gc_paths::STATUS)
    ))
}

/// The last collection's time and result, when the droplet holds a status file. A failed
/// run (nothing freed) still counts as the last run.
fn take_gc_status(st: &mut RegistryState, output: &str) {
    let Some((_, rest)) = output.split_once("@@GC\n") else {
        return;
    };
    let body = rest.split("@@GC-END").next().unwrap_or_default();
    if let Some(status) = remote::commands::GcStatus::parse(body) {
        st.garbage_collection_last_run = s(status.finished_at);
        st.garbage_collection_freed_bytes = status.freed_bytes.map_or(Value::Null, Value::Value);
    }
}

/// The reserved IP is on another droplet, or on none (moved by hand): the registry's name
/// leads elsewhere. Read says `reserved_ip = false`, so the plan shows it turning on again,
/// and apply assigns the same address back (see `network::ensure_reserved_ip`).
fn reserved_ip_moved(
    diags: &mut Diagnostics,
    st: &mut RegistryState,
    r: &crate::do_api::ReservedIp,
    id: u64,
) {
    let now = match r.droplet_id() {
        Some(other) => format!("on droplet {other}"),
        None => "assigned to no droplet".to_owned(),
    };
    tracing::warn!(ip = %r.ip, droplet = id, "reserved IP is not on the registry's droplet");
    diags.root_warning(
        format!("Reserved IP ({}) is not on the registry's droplet", r.ip),
        format!("The registry's reserved IP {} is {now}, not on the registry's droplet ({id}) (moved outside Terraform?): clients that resolve the registry's name do not reach the registry. The next apply assigns it back to the registry's droplet.", r.ip),
    );
    st.reserved_ip = Value::Value(false);
}

/// The droplet is gone (deleted by hand, or by DigitalOcean): the registry's other parts stay
/// in state, and the next plan boots a new droplet for them (see `replace::new_droplet_reason`).
fn droplet_gone(diags: &mut Diagnostics, st: &mut RegistryState, id: u64) {
    tracing::warn!(
        droplet = id,
        "droplet is gone; the next apply creates a new one"
    );
    diags.root_warning(
        format!("Droplet ({id}) is gone"),
        format!("The registry's droplet ({id}) no longer exists (deleted outside Terraform?). Its firewall, DNS records, keys and storage are kept in state; the next apply creates a new droplet for them and points the record at it. Images on a volume or in a bucket are kept; images on the droplet's own disk are lost with it."),
    );
    st.droplet_id = Value::Null;
    st.ipv4_address = Value::Null;
    st.ipv6_address = Value::Null;
    st.droplet_ids = Value::Value(Vec::new());
    st.ipv4_addresses = Value::Value(Vec::new());
    st.files_digest = Value::Null;
    st.registry_version = Value::Null;
}

/// Retired droplets that are gone now need no deleting any more.
async fn forget_deleted_retirees(diags: &mut Diagnostics, env: &Env, st: &mut RegistryState) {
    let ids = super::destroy::retired_droplets(st);
    if ids.is_empty() {
        return;
    }
    let mut left = Vec::new();
    for id in ids {
        match env.client.get_droplet(id).await {
            Ok(None) => {}
            Ok(Some(_)) => left.push(id),
            Err(e) => {
                diag::warning(diags, format!("Reading retired droplet ({id})"), &e.into());
                left.push(id);
            }
        }
    }
    st.retired_droplet_ids =
        Value::Value(left.into_iter().map(|i| Value::Value(i as i64)).collect());
}
