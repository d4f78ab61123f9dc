//! The registry's place on the network: the firewall in front of the droplet, the account's
//! domain that holds the fqdn, the reserved IP (if any) and the A record that points at it.

use std::time::Instant;

use tf_provider::value::Value;

use super::desired::s;
use super::env::Env;
use super::error::{Error, Result};
use super::model::Model;
use super::state::{known, RegistryState};
use crate::do_api::{self, Client};

/// Short, so that a replaced droplet's address leaves caches quickly (DigitalOcean's minimum).
pub const RECORD_TTL: u32 = 30;

/// 22 from `ssh_allowed_cidrs`, 80 and 443 from anywhere (and 53, UDP and TCP, when the
/// droplet answers its own DNS-01 challenges); everything out. With a load balancer too:
/// each droplet is checked on its own address before it joins (and people may reach one).
pub fn firewall_request(m: &Model, droplet_ids: &[u64]) -> do_api::FirewallRequest {
    let anywhere = || do_api::FirewallTarget {
        addresses: vec!["0.0.0.0/0".into(), "::/0".into()],
        ..Default::default()
    };
    let rule = |ports: &str, sources| do_api::InboundRule {
        protocol: "tcp".into(),
        ports: ports.into(),
        sources,
    };
    do_api::FirewallRequest {
        name: format!("{}-registry", m.name),
        droplet_ids: droplet_ids.to_vec(),
        tags: vec![],
        inbound_rules: vec![
            rule(
                "22",
                do_api::FirewallTarget {
                    addresses: m.ssh_allowed_cidrs.clone(),
                    ..Default::default()
                },
            ),
            rule("80", anywhere()),
            rule("443", anywhere()),
        ]
        .into_iter()
        .chain(
            super::certificate::delegates_challenge(m)
                .then(|| {
                    ["udp", "tcp"].map(|p| do_api::InboundRule {
                        protocol: p.into(),
                        ports: "53".into(),
                        sources: anywhere(),
                    })
                })
                .into_iter()
                .flatten(),
        )
        .collect(),
        outbound_rules: ["tcp", "udp", "icmp"]
            .iter()
            .map(|p| do_api::OutboundRule {
                protocol: (*p).into(),
                ports: "0".into(),
                destinations: anywhere(),
            })
            .collect(),
    }
}

/// The firewall for the droplets `ids`: recreated when it is gone, updated when the SSH
/// sources changed (or the plan could not tell), kept otherwise; `st.firewall_id` says which
/// it is.
pub async fn ensure_firewall(
    client: &Client,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
    ids: &[u64],
) -> Result<()> {
    let req = firewall_request(m, ids);
    match known(&prior.firewall_id) {
        Some(fw)
            if prior.ssh_allowed_cidrs != st.ssh_allowed_cidrs || st.firewall_id.is_unknown() =>
        {
            match client.update_firewall(fw, &req).await {
                Ok(f) => st.firewall_id = s(f.id),
                Err(e) if e.is_not_found() => {
                    let f = client.create_firewall(&req).await?;
                    st.firewall_id = s(f.id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(fw) => st.firewall_id = s(fw.to_owned()),
        None => {
            let f = client.create_firewall(&req).await?;
            st.firewall_id = s(f.id);
        }
    }
    Ok(())
}

pub fn parent_of(fqdn: &str) -> &str {
    fqdn.split_once('.').map(|(_, p)| p).unwrap_or(fqdn)
}

/// The account's domain holding `fqdn` (longest suffix first) and the record name in it.
pub async fn find_domain(
    client: &Client,
    fqdn: &str,
) -> Result<Option<(String, String)>, do_api::Error> {
    let labels: Vec<&str> = fqdn.split('.').collect();
    for i in 0..labels.len().saturating_sub(1) {
        let domain = labels[i..].join(".");
        if client.get_domain(&domain).await?.is_some() {
            let name = if i == 0 {
                "@".to_owned()
            } else {
                labels[..i].join(".")
            };
            return Ok(Some((domain, name)));
        }
    }
    Ok(None)
}

/// The account's domain holding `fqdn` and the record name in it, for apply (plan checked
/// that it exists).
pub async fn domain_of(client: &Client, fqdn: &str) -> Result<(String, String)> {
    find_domain(client, fqdn)
        .await?
        .ok_or_else(|| Error::NoDomain {
            fqdn: fqdn.to_owned(),
        })
}

/// Where the A record points and the outside checks go: the load balancer when the registry
/// has one, else the reserved IP when it has one, else the droplet's own IPv4 address.
pub fn record_target(st: &RegistryState) -> Option<&str> {
    known(&st.load_balancer_ip)
        .or_else(|| known(&st.reserved_ip_address))
        .or_else(|| known(&st.ipv4_address))
}

/// Plan: turning `reserved_ip` on makes an address only apply knows (as does a reserved IP
/// that is gone); turning it off drops it. The A record stays the same record.
pub fn plan_reserved_ip(prior: &RegistryState, st: &mut RegistryState, m: &Model) {
    if !m.reserved_ip {
        st.reserved_ip_address = Value::Null;
    } else if prior.reserved_ip_address.is_null() {
        st.reserved_ip_address = Value::Unknown;
    } else {
        st.reserved_ip_address = prior.reserved_ip_address.clone();
    }
}

/// The registry's reserved IP, made in its region when there is none (in `st` at once, so a
/// failure after this is cleaned up by destroy), assigned to `droplet_id` unless it is there
/// already.
pub async fn ensure_reserved_ip(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    droplet_id: u64,
    deadline: Instant,
) -> Result<()> {
    let client = &env.client;
    let existing = match known(&st.reserved_ip_address) {
        Some(ip) => client.get_reserved_ip(ip).await?,
        None => None,
    };
    let rip = match existing {
        Some(r) => r,
        None => {
            let r = client.create_reserved_ip(&m.region).await?;
            st.reserved_ip_address = s(r.ip.clone());
            tracing::info!(ip = %r.ip, region = %m.region, "reserved IP created");
            r
        }
    };
    if rip.droplet_id() != Some(droplet_id) {
        assign_reserved_ip(env, &rip.ip, droplet_id, deadline).await?;
    }
    Ok(())
}

/// Moves the reserved IP onto `droplet_id` and waits until DigitalOcean says it is there.
pub async fn assign_reserved_ip(
    env: &Env,
    ip: &str,
    droplet_id: u64,
    deadline: Instant,
) -> Result<()> {
    let a = env.client.assign_reserved_ip(ip, droplet_id).await?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    env.client.wait_for_action(a.id, remaining).await?;
    tracing::info!(ip, droplet = droplet_id, "reserved IP assigned");
    Ok(())
}

/// Unassigns the reserved IP (when assigned) and deletes it; one already gone is success.
pub async fn release_reserved_ip(env: &Env, ip: &str, deadline: Instant) -> Result<()> {
    let client = &env.client;
    let Some(rip) = client.get_reserved_ip(ip).await? else {
        return Ok(());
    };
    if rip.droplet_id().is_some() {
        let a = client.unassign_reserved_ip(ip).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        client.wait_for_action(a.id, remaining).await?;
    }
    client.delete_reserved_ip(ip).await?;
    tracing::info!(ip, "reserved IP deleted");
    Ok(())
}

/// Points the A record at the registry's address ([`record_target`]). The record in state is updated; without
/// one (never made, deleted by hand, or pointing elsewhere when last read) an A record the
/// domain already holds for the fqdn is taken over rather than joined by a second one, which
/// would send clients to two addresses; only when there is none is one created.
pub async fn ensure_record(client: &Client, st: &mut RegistryState) -> Result<()> {
    let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
    let ip = record_target(st).unwrap_or_default().to_owned();
    let (domain, name) = domain_of(client, &fqdn).await?;
    st.domain = s(domain.clone());
    let req = do_api::DomainRecordRequest {
        kind: "A".into(),
        name,
        data: ip.clone(),
        ttl: Some(RECORD_TTL),
        ..Default::default()
    };
    if let Some(id) = st.record_id.as_ref_option().map(|i| *i as u64) {
        if let Some(rec) = client.get_record(&domain, id).await? {
            if rec.data != ip {
                client.update_record(&domain, id, &req).await?;
            }
            return Ok(());
        }
    }
    let fqdn_in_domain = if req.name == "@" {
        domain.clone()
    } else {
        format!("{}.{domain}", req.name)
    };
    let existing = client
        .list_records(&domain, Some(&fqdn_in_domain), Some("A"))
        .await?;
    if let Some(rec) = existing.iter().find(|r| r.kind == "A") {
        tracing::warn!(record = rec.id, fqdn = %fqdn, data = %rec.data, "taking over the A record the domain already holds");
        st.record_id = Value::Value(rec.id as i64);
        if rec.data != ip || rec.ttl != Some(RECORD_TTL) {
            client.update_record(&domain, rec.id, &req).await?;
        }
        return Ok(());
    }
    let rec = client.create_record(&domain, &req).await?;
    st.record_id = Value::Value(rec.id as i64);
    Ok(())
}
