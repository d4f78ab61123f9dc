//! `/v2/firewalls`: cloud firewalls held as objects (validated rules, droplet and tag
//! membership); enforcing them on the machines is out of scope.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::new_uuid;
use super::{page_response, validate_tags, ApiError, App, DoJson, ReqInfo};
use crate::clock::now_rfc3339;
use crate::store::{Firewall, State as StoreState};

#[derive(Clone, Serialize, Deserialize)]
struct Targets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    addresses: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    droplet_ids: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    load_balancer_uids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kubernetes_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<String>>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Rule {
    protocol: String,
    #[serde(default)]
    ports: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sources: Option<Targets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destinations: Option<Targets>,
}

#[derive(Deserialize)]
pub struct FirewallReq {
    name: String,
    droplet_ids: Option<Vec<u64>>,
    tags: Option<Vec<String>>,
    inbound_rules: Option<Vec<Rule>>,
    outbound_rules: Option<Vec<Rule>>,
}

fn valid_ports(p: &str) -> bool {
    let port = |s: &str| s.parse::<u16>().is_ok_and(|n| n > 0);
    p == "all"
        || p == "0"
        || port(p)
        || p.split_once('-').is_some_and(|(a, b)| {
            port(a) && port(b) && a.parse::<u16>().ok() <= b.parse::<u16>().ok()
        })
}

fn valid_address(a: &str) -> bool {
    match a.split_once('/') {
        Some((ip, len)) => match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => len.parse::<u8>().is_ok_and(|l| l <= 32),
            Ok(IpAddr::V6(_)) => len.parse::<u8>().is_ok_and(|l| l <= 128),
            Err(_) => false,
        },
        None => a.parse::<IpAddr>().is_ok(),
    }
}

fn check_rule(s: &StoreState, mut r: Rule, inbound: bool) -> Result<Value, ApiError> {
    if !matches!(r.protocol.as_str(), "tcp" | "udp" | "icmp") {
        return Err(ApiError::unprocessable(format!(
            "protocol {:?} is invalid: use tcp, udp or icmp",
            r.protocol
        )));
    }
    match (&r.ports, r.protocol.as_str()) {
        (None, "icmp") => r.ports = Some("0".into()),
        (None, _) => {
            return Err(ApiError::unprocessable(
                "ports is required for tcp and udp rules",
            ))
        }
        (Some(p), _) if !valid_ports(p) => {
            return Err(ApiError::unprocessable(format!(
                "ports {p:?} is invalid: use a port, a range like 8000-9000, or all"
            )))
        }
        _ => {}
    }
    let (targets, what) = if inbound {
        (r.sources.as_ref(), "sources")
    } else {
        (r.destinations.as_ref(), "destinations")
    };
    let t = targets.ok_or_else(|| ApiError::unprocessable(format!("{what} is required")))?;
    for a in t.addresses.iter().flatten() {
        if !valid_address(a) {
            return Err(ApiError::unprocessable(format!(
                "address {a:?} is not an IP address or CIDR block"
            )));
        }
    }
    for d in t.droplet_ids.iter().flatten() {
        if !s.droplets.contains_key(d) {
            return Err(ApiError::unprocessable(format!(
                "droplet {d} was not found"
            )));
        }
    }
    validate_tags(t.tags.as_deref().unwrap_or_default())?;
    if inbound {
        r.destinations = None;
    } else {
        r.sources = None;
    }
    serde_json::to_value(r).map_err(|e| ApiError::server_error(e.to_string()))
}

/// Validates a create/update body into the firewall it describes (keeping `id` and
/// `created_at` of `existing`).
fn build(
    s: &StoreState,
    req: FirewallReq,
    existing: Option<&Firewall>,
) -> Result<Firewall, ApiError> {
    let name_ok = req.name.len() >= 2
        && req.name.len() <= 255
        && req.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && req
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !name_ok {
        return Err(ApiError::unprocessable(format!(
            "name {:?} is invalid: use letters, numbers, . and -",
            req.name
        )));
    }
    if req.inbound_rules.is_none() && req.outbound_rules.is_none() {
        return Err(ApiError::unprocessable(
            "at least one of inbound_rules or outbound_rules is required",
        ));
    }
    let droplet_ids = req.droplet_ids.unwrap_or_default();
    for d in &droplet_ids {
        if !s.droplets.contains_key(d) {
            return Err(ApiError::unprocessable(format!(
                "droplet {d} was not found"
            )));
        }
    }
    let tags = req.tags.unwrap_or_default();
    validate_tags(&tags)?;
    let inbound_rules = req
        .inbound_rules
        .unwrap_or_default()
        .into_iter()
        .map(|r| check_rule(s, r, true))
        .collect::<Result<_, _>>()?;
    let outbound_rules = req
        .outbound_rules
        .unwrap_or_default()
        .into_iter()
        .map(|r| check_rule(s, r, false))
        .collect::<Result<_, _>>()?;
    Ok(Firewall {
        id: existing.map_or_else(new_uuid, |f| f.id.clone()),
        name: req.name,
        created_at: existing.map_or_else(now_rfc3339, |f| f.created_at.clone()),
        droplet_ids,
        tags,
        inbound_rules,
        outbound_rules,
    })
}

fn firewall_json(f: &Firewall) -> Value {
    json!({
        "id": f.id,
        "name": f.name,
        "status": "succeeded",
        "created_at": f.created_at,
        "pending_changes": [],
        "droplet_ids": f.droplet_ids,
        "tags": f.tags,
        "inbound_rules": f.inbound_rules,
        "outbound_rules": f.outbound_rules,
    })
}

pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let items = app
        .store
        .read(|s| s.firewalls.iter().map(firewall_json).collect());
    page_response("firewalls", items, &info)
}

pub async fn create(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<FirewallReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let fw = app.store.mutate(|s| {
        let fw = build(s, req, None)?;
        s.firewalls.push(fw.clone());
        Ok::<_, ApiError>(fw)
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "firewall": firewall_json(&fw) })),
    ))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.store
        .read(|s| s.firewalls.iter().find(|f| f.id == id).map(firewall_json))
        .map(|f| Json(json!({ "firewall": f })))
        .ok_or_else(ApiError::not_found)
}

/// PUT replaces the whole firewall, as on DO: rules left out are removed.
pub async fn update(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<FirewallReq>,
) -> Result<Json<Value>, ApiError> {
    let fw = app.store.mutate(|s| {
        let idx = s
            .firewalls
            .iter()
            .position(|f| f.id == id)
            .ok_or_else(ApiError::not_found)?;
        let fw = build(s, req, Some(&s.firewalls[idx]))?;
        s.firewalls[idx] = fw.clone();
        Ok::<_, ApiError>(fw)
    })?;
    Ok(Json(json!({ "firewall": firewall_json(&fw) })))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.store.mutate(|s| {
        let before = s.firewalls.len();
        s.firewalls.retain(|f| f.id != id);
        if s.firewalls.len() == before {
            return Err(ApiError::not_found());
        }
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct DropletIds {
    droplet_ids: Vec<u64>,
}

pub async fn add_droplets(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<DropletIds>,
) -> Result<StatusCode, ApiError> {
    app.store.mutate(|s| {
        for d in &req.droplet_ids {
            if !s.droplets.contains_key(d) {
                return Err(ApiError::unprocessable(format!(
                    "droplet {d} was not found"
                )));
            }
        }
        let fw = s
            .firewalls
            .iter_mut()
            .find(|f| f.id == id)
            .ok_or_else(ApiError::not_found)?;
        for d in req.droplet_ids {
            if !fw.droplet_ids.contains(&d) {
                fw.droplet_ids.push(d);
            }
        }
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_droplets(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<DropletIds>,
) -> Result<StatusCode, ApiError> {
    app.store.mutate(|s| {
        let fw = s
            .firewalls
            .iter_mut()
            .find(|f| f.id == id)
            .ok_or_else(ApiError::not_found)?;
        fw.droplet_ids.retain(|d| !req.droplet_ids.contains(d));
        Ok::<_, ApiError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
