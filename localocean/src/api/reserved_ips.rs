//! `/v2/reserved_ips`: addresses the account holds in a region, and their `assign` and
//! `unassign` actions, which move the address onto a droplet's machine or take it off.

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    action_json, catalog, complete_action, new_action, page_response, parse_id, ApiError, App,
    DoJson, ReqInfo,
};
use crate::store::{Action, ReservedIp, State as StoreState};

/// The account's limit, as `/v2/account` states it (`floating_ip_limit`).
const RESERVED_IP_LIMIT: usize = 3;

/// DigitalOcean names a reserved IP's actions by the address as a number.
fn resource_id(ip: &str) -> Option<u64> {
    ip.parse::<Ipv4Addr>().ok().map(|a| u64::from(u32::from(a)))
}

fn reserved_ip_json(s: &StoreState, r: &ReservedIp) -> Value {
    let droplet = r
        .droplet_id
        .and_then(|id| s.droplets.get(&id))
        .map_or(Value::Null, |d| super::droplets::droplet_json(s, d));
    json!({
        "ip": r.ip,
        "region": catalog::region_json(&r.region),
        "droplet": droplet,
        "locked": r.locked,
        "project_id": r.project_id,
    })
}

/// The reserved IP at `raw`; anything that is not one of the account's is a 404, as on DO.
fn find<'a>(s: &'a StoreState, raw: &str) -> Result<&'a ReservedIp, ApiError> {
    s.reserved_ips
        .iter()
        .find(|r| r.ip == raw)
        .ok_or_else(ApiError::not_found)
}

/// A stable project id standing for the account's default project.
pub(crate) fn default_project() -> String {
    "7e1b4c2a-6f0d-4d8e-9a51-3c2f0b6d9e41".to_string()
}

pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let items = app.store.read(|s| {
        s.reserved_ips
            .iter()
            .map(|r| reserved_ip_json(s, r))
            .collect()
    });
    page_response("reserved_ips", items, &info)
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(ip): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.store
        .read(|s| find(s, &ip).map(|r| reserved_ip_json(s, r)))
        .map(|r| Json(json!({ "reserved_ip": r })))
}

#[derive(Deserialize)]
pub struct CreateReservedIp {
    droplet_id: Option<u64>,
    region: Option<String>,
    project_id: Option<String>,
}

/// Checks that `droplet_id` can take a reserved IP of `region` now: it exists, has booted,
/// is in that region and holds no other reserved IP.
fn check_droplet(
    s: &StoreState,
    droplet_id: u64,
    region: Option<&str>,
    ip: Option<&str>,
) -> Result<String, ApiError> {
    let d = s.droplets.get(&droplet_id).ok_or_else(|| {
        ApiError::unprocessable(format!("Droplet {droplet_id} could not be found."))
    })?;
    if d.status == "new" || d.locked {
        return Err(ApiError::unprocessable(
            "Droplet already has a pending event.",
        ));
    }
    if let Some(region) = region.filter(|r| *r != d.region) {
        return Err(ApiError::unprocessable(format!(
            "The reserved IP is in region {region}; the Droplet is in {}.",
            d.region
        )));
    }
    let other = s
        .reserved_ips
        .iter()
        .any(|r| r.droplet_id == Some(droplet_id) && Some(r.ip.as_str()) != ip);
    if other {
        return Err(ApiError::unprocessable(
            "The Droplet already has a reserved IP assigned.",
        ));
    }
    Ok(d.region.clone())
}

pub async fn create(
    State(app): State<Arc<App>>,
    info: ReqInfo,
    DoJson(req): DoJson<CreateReservedIp>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let pool = app.hv.reserved_ip_pool();
    let (body, assign) = app.store.mutate(|s| {
        let region = match (req.droplet_id, &req.region) {
            (Some(id), None) => check_droplet(s, id, None, None)?,
            (None, Some(region)) => {
                if catalog::region(region).is_none() {
                    return Err(ApiError::unprocessable(format!(
                        "You specified an invalid region: {region}"
                    )));
                }
                region.clone()
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::unprocessable(
                    "specify either droplet_id or region, not both",
                ))
            }
            (None, None) => {
                return Err(ApiError::unprocessable(
                    "a reserved IP needs either a droplet_id or a region",
                ))
            }
        };
        if s.reserved_ips.len() >= RESERVED_IP_LIMIT {
            return Err(ApiError::unprocessable(format!(
                "You have reached the limit of {RESERVED_IP_LIMIT} reserved IPs on your account."
            )));
        }
        let ip = pool
            .iter()
            .map(|a| a.to_string())
            .find(|a| s.reserved_ips.iter().all(|r| &r.ip != a))
            .ok_or_else(|| {
                ApiError::unprocessable("No reserved IP is available in this region.")
            })?;
        let r = ReservedIp {
            ip: ip.clone(),
            region: region.clone(),
            droplet_id: None,
            locked: req.droplet_id.is_some(),
            project_id: req.project_id.clone().unwrap_or_else(default_project),
        };
        s.reserved_ips.push(r.clone());
        let reserve = new_action(s, "reserve_ip", resource_id(&ip), "reserved_ip", &region);
        complete_action(s, reserve.id, true);
        // Created for a droplet: DigitalOcean answers at once, still unassigned and locked,
        // with the assign action to follow.
        let assign = req.droplet_id.map(|droplet_id| {
            let a = new_action(s, "assign_ip", resource_id(&ip), "reserved_ip", &region);
            (ip.clone(), droplet_id, a)
        });
        let links = match &assign {
            Some((_, droplet_id, a)) => json!({
                "droplets": [{
                    "id": droplet_id,
                    "rel": "droplet",
                    "href": format!("http://{}/v2/droplets/{droplet_id}", info.host),
                }],
                "actions": [{
                    "id": a.id,
                    "rel": "assign_ip",
                    "href": format!("http://{}/v2/actions/{}", info.host, a.id),
                }],
            }),
            None => json!({}),
        };
        Ok((
            json!({ "reserved_ip": reserved_ip_json(s, &r), "links": links }),
            assign,
        ))
    })?;
    if let Some((ip, droplet_id, action)) = assign {
        tokio::spawn(run_action(app.clone(), ip, Some(droplet_id), action.id));
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Deletes the reserved IP; an assigned one is taken off its droplet first.
pub async fn delete(
    State(app): State<Arc<App>>,
    Path(ip): Path<String>,
) -> Result<StatusCode, ApiError> {
    let holder = app.store.read(|s| {
        let r = find(s, &ip)?;
        if r.locked {
            return Err(ApiError::unprocessable(
                "The reserved IP has a pending event.",
            ));
        }
        Ok(r.droplet_id)
    })?;
    if let Some(droplet_id) = holder {
        app.hv
            .set_reserved_ip(droplet_id, None)
            .await
            .map_err(|e| {
                tracing::error!(%ip, droplet = droplet_id, error = %format!("{e:#}"), "unassigning reserved ip");
                ApiError::server_error(format!("deleting reserved IP {ip} failed"))
            })?;
    }
    app.store.mutate(|s| {
        s.reserved_ips.retain(|r| r.ip != ip);
        Ok::<_, ApiError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct ReservedIpAction {
    #[serde(rename = "type")]
    action_type: String,
    droplet_id: Option<u64>,
}

pub async fn action_post(
    State(app): State<Arc<App>>,
    Path(ip): Path<String>,
    DoJson(req): DoJson<ReservedIpAction>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let target = match req.action_type.as_str() {
        "assign" => Some(req.droplet_id.ok_or_else(|| {
            ApiError::unprocessable("droplet_id is required to assign a reserved IP")
        })?),
        "unassign" => None,
        other => {
            return Err(ApiError::unprocessable(format!(
                "action type {other:?} is not valid for a reserved IP"
            )))
        }
    };
    let action: Action = app.store.mutate(|s| {
        let r = find(s, &ip)?.clone();
        if r.locked {
            return Err(ApiError::unprocessable(
                "The reserved IP has a pending event.",
            ));
        }
        let action_type = match target {
            Some(droplet_id) => {
                check_droplet(s, droplet_id, Some(&r.region), Some(&r.ip))?;
                "assign_ip"
            }
            None if r.droplet_id.is_none() => {
                return Err(ApiError::unprocessable(
                    "The reserved IP is not assigned to a Droplet.",
                ))
            }
            None => "unassign_ip",
        };
        let a = new_action(s, action_type, resource_id(&ip), "reserved_ip", &r.region);
        if let Some(r) = s.reserved_ips.iter_mut().find(|r| r.ip == ip) {
            r.locked = true;
        }
        Ok(a)
    })?;
    tokio::spawn(run_action(app.clone(), ip, target, action.id));
    Ok((
        StatusCode::CREATED,
        Json(json!({ "action": action_json(&action) })),
    ))
}

/// An action's background half: the address goes onto the new holder first, then off the
/// old one, so it is never without a machine while it moves; then the outcome is recorded.
async fn run_action(app: Arc<App>, ip: String, target: Option<u64>, action_id: u64) {
    let addr: Option<Ipv4Addr> = ip.parse().ok();
    let previous = app.store.read(|s| {
        s.reserved_ips
            .iter()
            .find(|r| r.ip == ip)
            .and_then(|r| r.droplet_id)
    });
    let result = async {
        let addr = addr.ok_or_else(|| anyhow::anyhow!("{ip} is not an IPv4 address"))?;
        if let Some(droplet_id) = target {
            app.hv.set_reserved_ip(droplet_id, Some(addr)).await?;
        }
        if let Some(old) = previous.filter(|old| Some(*old) != target) {
            app.hv.set_reserved_ip(old, None).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &result {
        tracing::warn!(%ip, error = %format!("{e:#}"), "reserved ip action failed");
    }
    let _ = app.store.mutate::<_, ApiError>(|s| {
        // A droplet deleted meanwhile took the address with its machine.
        let target = target.filter(|id| s.droplets.contains_key(id));
        if let Some(r) = s.reserved_ips.iter_mut().find(|r| r.ip == ip) {
            r.locked = false;
            if result.is_ok() {
                r.droplet_id = target;
            }
        }
        complete_action(s, action_id, result.is_ok());
        Ok(())
    });
}

pub async fn actions_list(
    State(app): State<Arc<App>>,
    Path(ip): Path<String>,
    info: ReqInfo,
) -> Result<Json<Value>, ApiError> {
    let items = app.store.read(|s| {
        find(s, &ip)?;
        let rid = resource_id(&ip);
        Ok::<_, ApiError>(
            s.actions
                .values()
                .rev()
                .filter(|a| a.resource_type == "reserved_ip" && a.resource_id == rid)
                .map(action_json)
                .collect::<Vec<_>>(),
        )
    })?;
    Ok(page_response("actions", items, &info))
}

pub async fn action_get(
    State(app): State<Arc<App>>,
    Path((ip, action_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let action_id = parse_id(&action_id)?;
    app.store
        .read(|s| {
            find(s, &ip)?;
            s.actions
                .get(&action_id)
                .filter(|a| a.resource_type == "reserved_ip" && a.resource_id == resource_id(&ip))
                .map(action_json)
                .ok_or_else(ApiError::not_found)
        })
        .map(|a| Json(json!({ "action": a })))
}
