//! The machine: boot a droplet with the registry's keys (and its firewall), converge it over
//! SSH, prove it from outside; and the people's SSH keys on a running droplet.

use std::net::IpAddr;
use std::time::Instant;

use tf_provider::value::Value;

use super::desired::{desired_files, s};
use super::env::Env;
use super::error::{Error, Result, ResultExt};
use super::host_key;
use super::model::Model;
use super::network::{firewall_request, record_target};
use super::state::{known, RegistryState};
use crate::do_api;
use crate::remote::{self, commands, Expectation, StorageProbe};
use crate::render;
use crate::secret::Secret;
use crate::tls;

pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Creates a droplet with the keys in `st`, the firewall when there is none, and waits for
/// the droplet to be active; fills droplet_id (as soon as it exists) and the addresses.
pub async fn boot(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    attach_volume: bool,
    deadline: Instant,
) -> Result<()> {
    let client = &env.client;
    // Every droplet is born with a key of its own, never the registry's: user data stays
    // readable on the droplet (see `host_key`).
    let birth = host_key::born(st, m)?;
    let mgmt_public = known(&st.management_public_key).unwrap_or_default();
    let user_data = render::user_data(mgmt_public, &birth.private_openssh, &birth.public_openssh);
    let unique_tag = format!("docker-registry-{}", random_hex(6));
    let (backups, backup_policy) = super::backups::create_fields(m);
    let mut tags = m.tags.clone();
    tags.push(unique_tag.clone());
    tags.push(creating_tag(&m.fqdn));
    let req = do_api::DropletCreateRequest {
        name: m.name.clone(),
        region: m.region.clone(),
        size: m.size.clone(),
        image: do_api::ImageRef::from(m.image.as_str()),
        ssh_keys: m
            .ssh_key_fingerprints
            .iter()
            .cloned()
            .map(do_api::SshKeyRef::Fingerprint)
            .collect(),
        user_data: Some(Secret::new(user_data)),
        tags,
        volumes: known(&st.volume_id)
            .filter(|_| attach_volume)
            .map(|v| vec![v.to_owned()])
            .unwrap_or_default(),
        ipv6: false,
        monitoring: false,
        vpc_uuid: None,
        backups,
        backup_policy,
    };
    let do_api::NewDroplet {
        droplet,
        create_action,
    } = client.create_droplet_watched(&req, &unique_tag).await?;
    st.droplet_id = Value::Value(droplet.id as i64);
    tracing::info!(droplet = droplet.id, fqdn = %m.fqdn, "droplet created");

    // The firewall needs only the droplet's id: make it while the droplet boots.
    let fw_req = firewall_request(m, &[droplet.id]);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let need_firewall = known(&st.firewall_id).is_none();
    let firewall = async {
        if need_firewall {
            client.create_firewall(&fw_req).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let (fw, active) = tokio::join!(
        firewall,
        client.wait_for_new_droplet(droplet.id, create_action, remaining)
    );
    if let Some(f) = fw? {
        st.firewall_id = s(f.id);
    }
    let active = active?;
    let ip = active.public_ipv4().ok_or_else(|| Error::NoIpv4 {
        name: m.name.clone(),
        id: droplet.id,
    })?;
    st.ipv4_address = s(ip);
    st.ipv6_address = active.public_ipv6().map(s).unwrap_or(Value::Null);
    Ok(())
}

/// Where the outside check reaches the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outside {
    /// Where its A record points: the reserved IP when it has one.
    Registry,
    /// The droplet's own address: a replacement's new droplet, before the reserved IP moves.
    OwnAddress,
}

/// Writes every managed file, reloads what changed, reads the registry's version and usage,
/// and proves the registry from outside, where its record points. Errors name the droplet.
pub async fn converge_and_verify(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    if known(&st.load_balancer_id).is_some() {
        // Behind a balancer: on the droplet's own address, then through the balancer once
        // its checks pass.
        converge_and_verify_at(env, st, m, deadline, Outside::OwnAddress).await?;
        return super::fleet::verify_through_balancer(env, st, m, deadline).await;
    }
    converge_and_verify_at(env, st, m, deadline, Outside::Registry).await
}

pub async fn converge_and_verify_at(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
    at: Outside,
) -> Result<()> {
    let droplet = st.droplet_id.as_ref_option().copied().unwrap_or_default();
    let object = format!("{} ({droplet})", m.name);
    converge_inner(env, st, m, deadline, at)
        .await
        .map_err(|e| Error::Context {
            what: format!("converging droplet {object}"),
            source: Box::new(e),
        })
}

async fn converge_inner(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
    at: Outside,
) -> Result<()> {
    let (spec, files) = desired_files(st, m)?;
    // The first session to a new droplet moves it off the host key in its user data.
    let mut transport = host_key::secure(env, st, deadline).await?;
    let report = match remote::converge(transport.as_ref(), &spec, &files).await {
        Ok(r) => r,
        // The connection broke under the script (a network blip, sshd restarted): the
        // script is idempotent, so it runs again over a new connection, within the deadline.
        Err(e @ remote::RemoteError::Session { .. }) if Instant::now() < deadline => {
            tracing::warn!(error = %e, "SSH connection lost during the converge; converging again");
            transport = env.connect(st, deadline).await?;
            remote::converge(transport.as_ref(), &spec, &files).await?
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(waited) = report.renewal_waited {
        tracing::info!(
            waited_s = waited,
            "a renewal on the droplet was running: waited for it to end before installing the certificate"
        );
    }
    let checked = check_after_converge(env, st, m, &spec, transport.as_ref(), &report, at).await;
    if report.renewal_held {
        // The droplet's renewal was held for the new certificate's check: it runs again,
        // whatever the check found (a resume timer on the droplet is the net under a kill).
        match remote::resume_renewal(transport.as_ref()).await {
            Ok(()) => tracing::debug!("registry-renew.timer started again"),
            Err(e) if checked.is_ok() => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, "could not start registry-renew.timer again"),
        }
    }
    checked
}

/// What follows a converge: state's digests, the registry's version and usage, and the check
/// from outside.
async fn check_after_converge(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    spec: &render::RegistrySpec,
    transport: &dyn remote::Transport,
    report: &remote::ConvergeReport,
    at: Outside,
) -> Result<()> {
    tracing::info!(
        droplet = st.droplet_id.as_ref_option().copied().unwrap_or_default(),
        changed = ?report.changed,
        installed = ?report.installed,
        nginx_reloaded = report.nginx_reloaded,
        registry_restarted = report.registry_restarted,
        "converged"
    );
    st.files_digest = Value::Value(
        report
            .digests
            .iter()
            .map(|(k, v)| (k.clone(), s(v.clone())))
            .collect(),
    );
    let probe = commands::probe(transport, spec.storage_root()).await?;
    st.registry_version = s(probe.registry_version);
    st.storage_used_bytes = Value::Value(probe.storage_used_bytes as i64);
    // Known once a collection ran (a run asked for by this apply fills them in after).
    if st.garbage_collection_last_run.is_unknown() {
        st.garbage_collection_last_run = Value::Null;
    }
    if st.garbage_collection_freed_bytes.is_unknown() {
        st.garbage_collection_freed_bytes = Value::Null;
    }
    verify_outside(env, st, m, spec, at).await
}

/// The registry proved from outside only, where its record points: after a reserved IP moved.
pub async fn verify_registry(env: &Env, st: &RegistryState, m: &Model) -> Result<()> {
    let (spec, _) = desired_files(st, m)?;
    verify_outside(env, st, m, &spec, Outside::Registry).await
}

async fn verify_outside(
    env: &Env,
    st: &RegistryState,
    m: &Model,
    spec: &render::RegistrySpec,
    at: Outside,
) -> Result<()> {
    let addr = match at {
        Outside::Registry => record_target(st),
        Outside::OwnAddress => known(&st.ipv4_address),
    }
    .unwrap_or_default();
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| Error::BadAddress(addr.to_owned()))?;
    let leaf = tls::leaf_info(known(&st.certificate_pem).unwrap_or_default())?;
    env.outside
        .verify(&Expectation {
            fqdn: m.fqdn.clone(),
            ip,
            certificate_der: leaf.der,
            renewed_by: super::certificate::renewal_issuer(st, m),
            anonymous_pull: m.anonymous_pull,
            // From `st`: a generated password is known only once apply has made it.
            push_user: Model::of(st).push_credentials(),
            storage: Some(storage_probe(spec)?),
        })
        .await?;
    Ok(())
}

/// The storage round trip of the verification: the registry's storage named as the user
/// knows it, and what to check when the registry cannot use it.
pub fn storage_probe(spec: &render::RegistrySpec) -> Result<StorageProbe> {
    let token = render::token_key(&spec.http_secret)?;
    let (storage, advice) = match &spec.storage {
        render::Storage::Droplet => (
            format!("the droplet's disk ({})", render::paths::DROPLET_STORAGE),
            "Check the droplet's disk (full?) and the registry's log (`journalctl -u docker-registry`).".to_owned(),
        ),
        render::Storage::Volume { mount_path } => (
            format!("volume {} at {mount_path}", crate::storage::volume::name_of_mount(mount_path).unwrap_or(mount_path)),
            "Check that the volume is attached to the droplet and mounted there, and the registry's log (`journalctl -u docker-registry`).".to_owned(),
        ),
        render::Storage::Spaces {
            bucket, endpoint, ..
        } => (
            format!("Spaces bucket {bucket} at {endpoint}"),
            "Check the provider's `spaces_endpoint` (the droplet itself must reach it: an address that works from this machine, such as a loopback or private one, may not work from the droplet), the Spaces credentials and the region.".to_owned(),
        ),
    };
    Ok(StorageProbe {
        storage,
        advice,
        token_key_pem: token.private_key_pem,
        kid: token.kid,
    })
}

/// Root's authorized_keys on a running droplet: the management key and the public keys of
/// `ssh_key_fingerprints`, looked up in the account (DigitalOcean only adds them at create).
pub async fn set_people_keys(
    env: &Env,
    st: &RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let mut lines = vec![known(&st.management_public_key)
        .ok_or(Error::MissingState("management key"))?
        .to_owned()];
    for (i, fp) in m.ssh_key_fingerprints.iter().enumerate() {
        let path = tf_provider::AttributePath::new("ssh_key_fingerprints").index(i as i64);
        match env.client.get_ssh_key(fp).await.at(path.clone())? {
            Some(k) => lines.push(k.public_key.trim().to_owned()),
            None => return Err(Error::UnknownSshKey(fp.clone()).at(path)),
        }
    }
    let transport = env.connect(st, deadline).await?;
    commands::set_authorized_keys(transport.as_ref(), &lines).await?;
    Ok(())
}

/// The tag a droplet carries from its create until it serves the registry. A create or a
/// replacement that never finished (the provider killed, the machine lost) leaves droplets no
/// state knows; the next one finds them by this tag ([`sweep_interrupted`]).
pub fn creating_tag(fqdn: &str) -> String {
    format!(
        "docker-registry-creating-{}",
        &remote::sha256_hex(fqdn.as_bytes())[..12]
    )
}

/// The droplet in `st` serves the registry: it is no longer "being created".
pub async fn done_creating(env: &Env, st: &RegistryState, m: &Model) {
    let Some(id) = st.droplet_id.as_ref_option().map(|i| *i as u64) else {
        return;
    };
    if let Err(e) = env.client.untag_droplet(&creating_tag(&m.fqdn), id).await {
        // Harmless but for a later interrupted create of the same fqdn, which would take
        // this droplet for its own leftover: say so.
        tracing::warn!(droplet = id, error = %e, "could not remove the creating tag");
    }
}

/// Deletes what an interrupted create or replacement of this registry left behind: droplets
/// still tagged [`creating_tag`] other than `keep`; and with `parts` (a create, which starts
/// from nothing), the firewall, the load balancer and the registry's Spaces key made for
/// them, which no state holds either. Nothing is touched when no such droplet exists.
pub async fn sweep_interrupted(env: &Env, m: &Model, keep: &[u64], parts: bool) -> Result<()> {
    let client = &env.client;
    let tag = creating_tag(&m.fqdn);
    let left: Vec<u64> = client
        .list_droplets_by_tag(&tag)
        .await?
        .into_iter()
        .map(|d| d.id)
        .filter(|id| !keep.contains(id))
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    for id in &left {
        tracing::warn!(droplet = id, fqdn = %m.fqdn, "deleting a droplet an interrupted apply left");
        client.delete_droplet(*id).await?;
    }
    if !parts {
        return Ok(());
    }
    let fw_name = firewall_request(m, &[]).name;
    for f in client.list_firewalls().await? {
        if f.name == fw_name && f.droplet_ids.iter().all(|d| left.contains(d)) {
            tracing::warn!(firewall = %f.id, "deleting a firewall an interrupted create left");
            client.delete_firewall(&f.id).await?;
        }
    }
    if m.replicas > 1 {
        // The balancer is made with the first droplet in it (see `create::reserve_address`).
        let lb_name = super::fleet::balancer_request(m, &[]).name;
        for lb in client.list_load_balancers().await? {
            if lb.name == lb_name && lb.droplet_ids.iter().all(|d| left.contains(d)) {
                tracing::warn!(load_balancer = %lb.id, "deleting a load balancer an interrupted create left");
                client.delete_load_balancer(&lb.id).await?;
            }
        }
    }
    if m.storage.backend == super::model::Backend::Spaces {
        let key_name = m.spaces_key_name();
        for k in client.list_spaces_keys().await? {
            if k.name == key_name {
                tracing::warn!(key = %k.access_key, "deleting a Spaces key an interrupted create left");
                client.delete_spaces_key(&k.access_key).await?;
            }
        }
    }
    Ok(())
}
