//! Import: `tofu import docker_registry.<name> <fqdn>` adopts a registry from what DigitalOcean
//! shows of it: the A record, the droplet (or reserved IP) it points at, the droplet's
//! firewall, its volume or Spaces bucket, the ACME and CAA records of the fqdn, and its uptime
//! check.
//!
//! What only the droplet's maker knows (the management and host keys, the http secret, the
//! users' hashes, the certificate's key) stays null in state: that is the mark [`imported`]
//! reads, and the next plan replaces the droplet because of it (see `plan::plan_imported`).

use tf_provider::value::Value;

use super::desired::s;
use super::env::Env;
use super::error::{Error, Result};
use super::model::Backend;
use super::network::find_domain;
use super::state::{RegistryState, StorageState};
use super::validate;
use crate::do_api::Droplet;

/// What `tofu import` says once the registry is in state.
pub const IMPORTED_DETAIL: &str = "The droplet, its firewall, the DNS records and the storage are in state. The provider did not make this droplet and holds none of its keys (management key, SSH host key), nor the registry's http secret, the users' hashes or the certificate's key, so the next plan replaces the droplet: a volume or Spaces bucket is kept and moves to the new droplet; images on the droplet's own disk would be lost, and that plan fails unless `storage { accept_image_loss = true }` says so. Users, TLS and every other setting come from the configuration.";

/// True for a registry imported and not yet given a droplet of the provider's own: the state
/// names a registry but holds no management key, which the provider writes into state before
/// anything else of a registry it makes.
pub fn imported(st: &RegistryState) -> bool {
    st.id.is_value() && st.management_private_key.is_null()
}

/// Why an import cannot go on: the fqdn does not lead to a registry.
fn not_found(fqdn: &str, why: impl Into<String>) -> Error {
    Error::NotImportable {
        fqdn: fqdn.to_owned(),
        why: why.into(),
    }
}

/// The state of the registry at `fqdn`, as far as the API shows it.
pub async fn import(env: &Env, fqdn: &str) -> Result<RegistryState> {
    let fqdn = fqdn.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Some(problem) = validate::fqdn_problem(&fqdn) {
        return Err(not_found(
            &fqdn,
            format!("the import id must be the registry's fqdn: {problem}"),
        ));
    }
    let client = &env.client;
    let (domain, name) = find_domain(client, &fqdn).await?.ok_or_else(|| {
        not_found(
            &fqdn,
            "no domain of this DigitalOcean account holds it".to_owned(),
        )
    })?;
    let in_domain = if name == "@" {
        domain.clone()
    } else {
        format!("{name}.{domain}")
    };
    let record = client
        .list_records(&domain, Some(&in_domain), Some("A"))
        .await?
        .into_iter()
        .find(|r| r.kind == "A")
        .ok_or_else(|| not_found(&fqdn, format!("domain {domain} holds no A record for it")))?;
    let address = record.data.clone();

    let mut st = RegistryState {
        id: s(fqdn.clone()),
        fqdn: s(fqdn.clone()),
        url: s(format!("https://{fqdn}")),
        domain: s(domain.clone()),
        record_id: Value::Value(record.id as i64),
        reserved_ip: Value::Value(false),
        retired_droplet_ids: Value::Value(Vec::new()),
        ..Default::default()
    };

    // The droplet: where the reserved IP is assigned, else the one holding the address.
    let droplet = match client.get_reserved_ip(&address).await? {
        Some(rip) => {
            let id = rip.droplet.map(|d| d.id).ok_or_else(|| {
                not_found(
                    &fqdn,
                    format!("its A record points at reserved IP {address}, which no droplet holds"),
                )
            })?;
            st.reserved_ip = Value::Value(true);
            st.reserved_ip_address = s(address.clone());
            client.get_droplet(id).await?.ok_or_else(|| {
                not_found(
                    &fqdn,
                    format!("reserved IP {address} names droplet ({id}), which is gone"),
                )
            })?
        }
        None => client
            .list_droplets()
            .await?
            .into_iter()
            .find(|d| d.public_ipv4() == Some(address.as_str()))
            .ok_or_else(|| {
                not_found(
                    &fqdn,
                    format!(
                        "its A record points at {address}, which no droplet of this account holds"
                    ),
                )
            })?,
    };
    take_droplet(&mut st, &droplet);
    let droplet_name = droplet.name.clone();
    let region = droplet
        .region
        .as_ref()
        .map(|r| r.slug.clone())
        .unwrap_or_default();

    // The firewall in front of it: the provider's by name first, else any that holds it.
    let firewalls = client.list_firewalls().await?;
    let ours = format!("{droplet_name}-registry");
    let firewall = firewalls
        .iter()
        .filter(|f| f.droplet_ids.contains(&droplet.id))
        .max_by_key(|f| f.name == ours);
    if let Some(f) = firewall {
        st.firewall_id = s(f.id.clone());
        let ssh: Vec<String> = f
            .inbound_rules
            .iter()
            .filter(|r| r.ports == "22")
            .flat_map(|r| r.sources.addresses.clone())
            .collect();
        if !ssh.is_empty() {
            st.ssh_allowed_cidrs = Value::Value(ssh.into_iter().map(s).collect());
        }
    }

    let storage = storage_of(env, &droplet, &region, &mut st).await?;
    // The droplet's disk is the default: as a configuration without a `storage` block says.
    if Backend::of(&storage.backend) != Backend::Droplet {
        st.storage = Value::Value(storage);
    }

    // The fqdn's other records the provider makes: the CAA record and the ACME delegation.
    for (kind, name) in [
        ("CAA", in_domain.clone()),
        ("NS", format!("_acme-challenge.{in_domain}")),
    ] {
        let found = client
            .list_records(&domain, Some(&name), Some(kind))
            .await?
            .into_iter()
            .find(|r| r.kind == kind && (kind != "NS" || r.data.trim_end_matches('.') == fqdn));
        let id = found.map_or(Value::Null, |r| Value::Value(r.id as i64));
        match kind {
            "CAA" => st.caa_record_id = id,
            _ => st.acme_delegation_record_id = id,
        }
    }
    // The uptime check the provider names after the registry: the next apply keeps it (with
    // `monitoring`) or deletes it, and destroy deletes it.
    let check = client.list_uptime_checks().await?.into_iter().find(|c| {
        c.name == format!("docker-registry {fqdn}") && c.target == format!("https://{fqdn}")
    });
    if let Some(c) = check {
        st.uptime_check_id = s(c.id);
    }
    tracing::info!(
        fqdn = %fqdn,
        droplet = droplet.id,
        firewall = ?st.firewall_id.as_ref_option(),
        volume = ?st.volume_id.as_ref_option(),
        "imported; the next apply replaces the droplet"
    );
    Ok(st)
}

/// The droplet's id, name, region, size, image, addresses and the user's tags (the
/// provider's own `docker-registry-*` tags are its bookkeeping, not configuration).
fn take_droplet(st: &mut RegistryState, d: &Droplet) {
    st.droplet_id = Value::Value(d.id as i64);
    st.name = s(d.name.clone());
    if let Some(r) = &d.region {
        st.region = s(r.slug.clone());
    }
    if !d.size_slug.is_empty() {
        st.size = s(d.size_slug.clone());
    }
    // A snapshot or custom image has no slug: its id is how `image` names it.
    if let Some(image) = d
        .image
        .as_ref()
        .and_then(|i| i.slug.clone().or(i.id.map(|id| id.to_string())))
    {
        st.image = s(image);
    }
    st.ipv4_address = d.public_ipv4().map(s).unwrap_or(Value::Null);
    st.ipv6_address = d.public_ipv6().map(s).unwrap_or(Value::Null);
    let tags: Vec<_> = d
        .tags
        .iter()
        .filter(|t| !t.starts_with("docker-registry-"))
        .cloned()
        .map(s)
        .collect();
    if !tags.is_empty() {
        st.tags = Value::Value(tags);
    }
}

/// The storage as the provider names it: the volume `<name>-registry-data` attached to the
/// droplet, else the bucket the registry's Spaces key `<name>-registry` is granted, else the
/// droplet's disk.
async fn storage_of(
    env: &Env,
    droplet: &Droplet,
    region: &str,
    st: &mut RegistryState,
) -> Result<StorageState> {
    let client = &env.client;
    let volume_name = format!("{}-registry-data", droplet.name);
    for vid in &droplet.volume_ids {
        if let Some(v) = client.get_volume(vid).await? {
            if v.name == volume_name {
                st.volume_id = s(v.id.clone());
                return Ok(StorageState {
                    backend: s(Backend::Volume.as_str()),
                    size_gib: Value::Value(v.size_gigabytes as i64),
                    ..Default::default()
                });
            }
        }
    }
    let key_name = format!("{}-registry", droplet.name);
    let key = client
        .list_spaces_keys()
        .await?
        .into_iter()
        .find(|k| k.name == key_name && k.grants.iter().any(|g| !g.bucket.is_empty()));
    if let Some(key) = key {
        let bucket = key
            .grants
            .iter()
            .find(|g| !g.bucket.is_empty())
            .map(|g| g.bucket.clone())
            .unwrap_or_default();
        // The old droplet's key: the secret is not readable, so the replacement mints the
        // registry a new one and deletes this one (see `replace`).
        st.spaces_key_id = s(key.access_key);
        // Who made the bucket cannot be known: adopted, so destroy never empties it.
        st.bucket_created = Value::Value(false);
        tracing::info!(
            bucket,
            region,
            "imported registry stores its images in Spaces"
        );
        return Ok(StorageState {
            backend: s(Backend::Spaces.as_str()),
            bucket: s(bucket),
            ..Default::default()
        });
    }
    Ok(StorageState {
        backend: s(Backend::Droplet.as_str()),
        ..Default::default()
    })
}
