//! `/v2/droplets`: create (asynchronous, through the hypervisor), list, get, delete, and
//! droplet actions (power, reboot, resize, rename).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    action_json, catalog, complete_action, new_action, page_response, parse_id, validate_tags,
    ApiError, App, DoJson, ReqInfo,
};
use crate::clock::now_rfc3339;
use crate::hypervisor::{MachineSpec, Power, VolumeSpec};
use crate::store::{Droplet, NetworkV4, State as StoreState};

const MAX_NAMES: usize = 10;
/// DO's limit on user data.
const MAX_USER_DATA: usize = 64 * 1024;

/// DO's hostname rule: letters, digits, `.` and `-`, starting and ending with a letter or
/// digit, at most 255 characters.
pub(crate) fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "Name ({name}) Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)"
        )))
    }
}

pub(crate) fn machine_spec(s: &StoreState, d: &Droplet) -> MachineSpec {
    let size = catalog::size(&d.size);
    MachineSpec {
        droplet_id: d.id,
        name: d.name.clone(),
        image: d.image.clone(),
        user_data: d.user_data.clone(),
        ssh_public_keys: d.ssh_public_keys.clone(),
        volumes: s
            .volumes
            .iter()
            .filter(|v| d.volume_ids.contains(&v.id))
            .map(|v| VolumeSpec {
                automount: d.automount_volume_ids.contains(&v.id),
                ..super::volumes::volume_spec(v)
            })
            .collect(),
        memory_mib: size.map_or(1024, |s| s.memory_mib),
        vcpus: size.map_or(1, |s| s.vcpus),
        disk_gib: d.disk,
    }
}

pub(crate) fn droplet_json(s: &StoreState, d: &Droplet) -> Value {
    let size = catalog::size(&d.size);
    let image = super::images::find(s, &d.image);
    let mut features = vec!["droplet_agent"];
    if d.backup_policy.is_some() {
        features.push("backups");
    }
    if d.monitoring {
        features.push("monitoring");
    }
    if d.ipv6 {
        features.push("ipv6");
    }
    let v4: Vec<Value> = d
        .networks_v4
        .iter()
        .map(|n| {
            json!({
                "ip_address": n.ip_address,
                "netmask": n.netmask,
                "gateway": n.gateway,
                "type": "public",
            })
        })
        .collect();
    json!({
        "id": d.id,
        "name": d.name,
        "memory": size.map_or(0, |s| s.memory_mib),
        "vcpus": size.map_or(0, |s| s.vcpus),
        "disk": d.disk,
        "disk_info": [{"type": "local", "size": {"amount": d.disk, "unit": "gib"}}],
        "locked": d.locked,
        "status": d.status,
        "kernel": null,
        "created_at": d.created_at,
        "features": features,
        "backup_ids": super::backups::ids_of_droplet(s, d.id),
        "next_backup_window": super::backups::next_window_json(d),
        "snapshot_ids": super::images::ids_of_droplet(s, d.id),
        "image": image.map_or(Value::Null, |i| i.json()),
        "volume_ids": d.volume_ids,
        "size": size.map_or(Value::Null, catalog::size_json),
        "size_slug": d.size,
        // IPv6 is accepted but no v6 address is assigned: the machines' bridge is v4 only.
        "networks": {"v4": v4, "v6": []},
        "region": catalog::region_json(&d.region),
        "tags": d.tags,
        "vpc_uuid": d.vpc_uuid,
    })
}

/// A stable VPC id per region, standing for DO's default VPC.
pub(crate) fn default_vpc(region: &str) -> String {
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(format!("localocean-vpc-{region}")));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Deserialize)]
pub struct CreateDroplet {
    name: Option<String>,
    names: Option<Vec<String>>,
    region: Option<String>,
    size: String,
    image: Value,
    #[serde(default)]
    ssh_keys: Vec<Value>,
    user_data: Option<String>,
    tags: Option<Vec<String>>,
    volumes: Option<Vec<String>>,
    #[serde(default)]
    monitoring: bool,
    #[serde(default)]
    ipv6: bool,
    vpc_uuid: Option<String>,
    #[serde(default)]
    backups: bool,
    backup_policy: Option<super::backups::PolicyRequest>,
}

pub async fn create(
    State(app): State<Arc<App>>,
    info: ReqInfo,
    DoJson(req): DoJson<CreateDroplet>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let single = req.name.is_some();
    let names = match (req.name, req.names) {
        (Some(n), None) => vec![n],
        (None, Some(ns)) if !ns.is_empty() => ns,
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                "specify either name or names, not both",
            ))
        }
        _ => return Err(ApiError::unprocessable("name is required")),
    };
    if names.len() > MAX_NAMES {
        return Err(ApiError::unprocessable(format!(
            "you may create at most {MAX_NAMES} droplets at once"
        )));
    }
    for n in &names {
        validate_name(n)?;
    }
    let region = req.region.unwrap_or_else(|| "nyc3".to_string());
    if catalog::region(&region).is_none() {
        return Err(ApiError::unprocessable(format!(
            "You specified an invalid region for Droplet creation: {region}"
        )));
    }
    let size = catalog::size(&req.size).ok_or_else(|| {
        ApiError::unprocessable("You specified an invalid size for Droplet creation.")
    })?;
    let image_key = match &req.image {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(ApiError::unprocessable("image must be a slug or an id")),
    };
    let (image, image_min_disk, image_region) = app
        .store
        .read(|s| {
            super::images::find(s, &image_key).map(|i| (i.key(), i.min_disk_size(), i.region()))
        })
        .ok_or_else(|| {
            ApiError::unprocessable("You specified an invalid image for Droplet creation.")
        })?;
    if image_region.is_some_and(|r| r != region) {
        return Err(ApiError::unprocessable(format!(
            "The image is not available in region {region}."
        )));
    }
    if size.disk_gib < image_min_disk {
        return Err(ApiError::unprocessable(format!(
            "This image needs a disk of at least {image_min_disk} GB; size {} has {} GB.",
            size.slug, size.disk_gib
        )));
    }
    if req
        .user_data
        .as_ref()
        .is_some_and(|u| u.len() > MAX_USER_DATA)
    {
        return Err(ApiError::unprocessable(
            "user_data is larger than the 64 KiB DigitalOcean allows",
        ));
    }
    let tags = req.tags.unwrap_or_default();
    validate_tags(&tags)?;
    let backup_policy = match (req.backups, &req.backup_policy) {
        (true, p) => Some(super::backups::policy_from(p.as_ref())?),
        (false, None) => None,
        (false, Some(_)) => {
            return Err(ApiError::unprocessable(
                "backup_policy may only be set when backups is true",
            ))
        }
    };
    let volume_ids = req.volumes.unwrap_or_default();
    if !volume_ids.is_empty() && names.len() > 1 {
        return Err(ApiError::unprocessable(
            "volumes can only be attached when creating a single droplet",
        ));
    }

    let created = app.store.mutate(|s| {
        if s.droplets.len() + names.len() > app.config.droplet_limit as usize {
            return Err(ApiError::unprocessable(
                "creating this/these droplet(s) will exceed your droplet limit",
            ));
        }
        let mut ssh_public_keys = Vec::new();
        for k in &req.ssh_keys {
            let ident = match k {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(ApiError::unprocessable(
                        "ssh_keys must be ids or fingerprints",
                    ))
                }
            };
            let key = super::keys::find(s, &ident)
                .ok_or_else(|| ApiError::unprocessable(format!("ssh key {ident} was not found")))?;
            ssh_public_keys.push(key.public_key.clone());
        }
        for vid in &volume_ids {
            let v =
                s.volumes.iter().find(|v| &v.id == vid).ok_or_else(|| {
                    ApiError::unprocessable(format!("volume {vid} was not found"))
                })?;
            if v.region != region {
                return Err(ApiError::unprocessable(format!(
                    "volume {vid} is in region {}, not {region}",
                    v.region
                )));
            }
            if !v.droplet_ids.is_empty() {
                return Err(ApiError::unprocessable(format!(
                    "volume {vid} is already attached to another droplet"
                )));
            }
        }
        let mut out = Vec::new();
        for name in &names {
            let d = Droplet {
                id: s.new_id(),
                name: name.clone(),
                region: region.clone(),
                size: size.slug.to_string(),
                image: image.clone(),
                status: "new".into(),
                created_at: now_rfc3339(),
                tags: tags.clone(),
                volume_ids: volume_ids.clone(),
                networks_v4: Vec::new(),
                ipv6: req.ipv6,
                monitoring: req.monitoring,
                vpc_uuid: req.vpc_uuid.clone().unwrap_or_else(|| default_vpc(&region)),
                user_data: req.user_data.clone(),
                ssh_public_keys: ssh_public_keys.clone(),
                locked: false,
                disk: size.disk_gib,
                // DigitalOcean mounts a volume it formatted when its first attachment is
                // this droplet's creation; a volume that was attached before is not.
                automount_volume_ids: s
                    .volumes
                    .iter()
                    .filter(|v| volume_ids.contains(&v.id))
                    .filter(|v| !v.filesystem_type.is_empty() && !v.attached_before)
                    .map(|v| v.id.clone())
                    .collect(),
                backup_policy: backup_policy.clone(),
                backups_since: Some(time::OffsetDateTime::now_utc().unix_timestamp()),
            };
            for v in s.volumes.iter_mut().filter(|v| volume_ids.contains(&v.id)) {
                v.droplet_ids.push(d.id);
                v.attached_before = true;
            }
            s.droplets.insert(d.id, d.clone());
            let action = new_action(s, "create", Some(d.id), "droplet", &region);
            out.push((d, action));
        }
        Ok(out)
    })?;

    let mut droplets = Vec::new();
    let mut links = Vec::new();
    for (d, action) in created {
        app.faults.bind_droplet_404(d.id);
        let boot_faults = app.faults.take_boot_faults();
        tokio::spawn(boot(app.clone(), d.id, action.id, boot_faults));
        droplets.push(app.store.read(|s| droplet_json(s, &d)));
        links.push(json!({
            "id": action.id,
            "rel": "create",
            "href": format!("http://{}/v2/actions/{}", info.host, action.id),
        }));
    }
    let body = if single {
        json!({ "droplet": droplets[0], "links": { "actions": links } })
    } else {
        json!({ "droplets": droplets, "links": { "actions": links } })
    };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// The create action's background half: waits for the machine, then records the outcome.
async fn boot(app: Arc<App>, id: u64, action_id: u64, faults: (Option<Duration>, bool)) {
    let (delay, fail) = faults;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let Some(spec) = app.machine_spec(id) else {
        let _ = app.store.mutate::<_, ApiError>(|s| {
            complete_action(s, action_id, false);
            Ok(())
        });
        return;
    };
    if fail {
        tracing::info!(droplet = id, "boot_error fault: create action errored");
        let _ = app.store.mutate::<_, ApiError>(|s| {
            complete_action(s, action_id, false);
            Ok(())
        });
        return;
    }
    match app.hv.create(spec).await {
        Ok(machine) => {
            if let Some((fault_id, seconds)) = app.faults.take_next_ssh_refusal() {
                let ssh = app
                    .ssh_faults
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(ssh) = ssh {
                    if let Err(e) = ssh.refuse_ssh(id, seconds).await {
                        tracing::warn!(droplet = id, fault = fault_id, error = %format!("{e:#}"), "ssh_refused fault");
                    }
                }
            }
            let still_there = app
                .store
                .mutate::<_, ApiError>(|s| {
                    let Some(d) = s.droplets.get_mut(&id) else {
                        complete_action(s, action_id, false);
                        return Ok(false);
                    };
                    d.status = "active".into();
                    d.networks_v4 = vec![NetworkV4 {
                        ip_address: machine.ipv4.to_string(),
                        netmask: machine.netmask.to_string(),
                        gateway: machine.gateway.to_string(),
                    }];
                    complete_action(s, action_id, true);
                    Ok(true)
                })
                .unwrap_or(false);
            // It has an address now: load balancers that name or tag it take it in.
            app.lb_sync.changed();
            if !still_there {
                // Deleted while booting: the machine must not outlive its droplet.
                if let Err(e) = app.hv.delete(id).await {
                    tracing::warn!(droplet = id, error = %format!("{e:#}"), "removing machine of deleted droplet");
                }
            }
        }
        Err(e) => {
            tracing::warn!(droplet = id, error = %format!("{e:#}"), "droplet create failed");
            let _ = app.store.mutate::<_, ApiError>(|s| {
                complete_action(s, action_id, false);
                Ok(())
            });
        }
    }
}

pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let tag = info.param("tag_name").map(str::to_string);
    let name = info.param("name").map(str::to_string);
    let items = app.store.read(|s| {
        s.droplets
            .values()
            .filter(|d| tag.as_ref().is_none_or(|t| d.tags.contains(t)))
            .filter(|d| name.as_ref().is_none_or(|n| &d.name == n))
            .map(|d| droplet_json(s, d))
            .collect()
    });
    page_response("droplets", items, &info)
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    if app.faults.droplet_hidden(id) {
        return Err(ApiError::not_found());
    }
    app.store
        .read(|s| s.droplets.get(&id).map(|d| droplet_json(s, d)))
        .map(|d| Json(json!({ "droplet": d })))
        .ok_or_else(ApiError::not_found)
}

/// Removes the machine, then the droplet; its volumes stay, detached, and its reserved IP
/// stays the account's, unassigned (the address went with the machine).
async fn destroy(app: &Arc<App>, id: u64) -> Result<(), ApiError> {
    app.hv.delete(id).await.map_err(|e| {
        tracing::error!(droplet = id, error = %format!("{e:#}"), "deleting machine");
        ApiError::server_error(format!("deleting droplet {id} failed"))
    })?;
    app.store.mutate(|s| {
        s.droplets.remove(&id);
        for v in s.volumes.iter_mut() {
            v.droplet_ids.retain(|d| *d != id);
        }
        for f in s.firewalls.iter_mut() {
            f.droplet_ids.retain(|d| *d != id);
        }
        for r in s
            .reserved_ips
            .iter_mut()
            .filter(|r| r.droplet_id == Some(id))
        {
            r.droplet_id = None;
        }
        // DigitalOcean takes a deleted droplet out of its load balancers.
        for lb in s.load_balancers.iter_mut() {
            lb.droplet_ids.retain(|d| *d != id);
        }
        Ok::<_, ApiError>(())
    })?;
    // DigitalOcean deletes a droplet's backups with it (its snapshots stay). After the
    // droplet left the store, so a backup stored while the machine went is caught too; one
    // stored later finds no droplet and removes itself.
    super::backups::delete_all_of(app, id).await;
    app.lb_sync.changed();
    Ok(())
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    if !app.store.read(|s| s.droplets.contains_key(&id)) {
        return Err(ApiError::not_found());
    }
    destroy(&app, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_by_tag(
    State(app): State<Arc<App>>,
    info: ReqInfo,
) -> Result<StatusCode, ApiError> {
    let tag = info
        .param("tag_name")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unprocessable("tag_name is required to delete droplets"))?
        .to_string();
    let ids: Vec<u64> = app.store.read(|s| {
        s.droplets
            .values()
            .filter(|d| d.tags.contains(&tag))
            .map(|d| d.id)
            .collect()
    });
    for id in ids {
        destroy(&app, id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn actions_list(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    info: ReqInfo,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let items = app.store.read(|s| {
        s.droplets.get(&id).map(|_| {
            s.actions
                .values()
                .rev()
                .filter(|a| a.resource_type == "droplet" && a.resource_id == Some(id))
                .map(action_json)
                .collect::<Vec<_>>()
        })
    });
    let items = items.ok_or_else(ApiError::not_found)?;
    Ok(page_response("actions", items, &info))
}

pub async fn action_get(
    State(app): State<Arc<App>>,
    Path((id, action_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let action_id = parse_id(&action_id)?;
    app.store
        .read(|s| {
            s.actions
                .get(&action_id)
                .filter(|a| a.resource_type == "droplet" && a.resource_id == Some(id))
                .map(action_json)
        })
        .map(|a| Json(json!({ "action": a })))
        .ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
pub struct DropletAction {
    #[serde(rename = "type")]
    action_type: String,
    size: Option<String>,
    #[serde(default)]
    disk: bool,
    name: Option<String>,
    backup_policy: Option<super::backups::PolicyRequest>,
}

/// What a power action asks of the hypervisor and the status it leaves.
fn power_of(action: &str) -> Option<(Power, &'static str)> {
    match action {
        "power_off" => Some((Power::Off, "off")),
        "power_on" => Some((Power::On, "active")),
        "reboot" | "power_cycle" => Some((Power::Reboot, "active")),
        "shutdown" => Some((Power::Shutdown, "off")),
        _ => None,
    }
}

pub async fn action_post(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<DropletAction>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let t = req.action_type.as_str();
    let droplet = app
        .store
        .read(|s| s.droplets.get(&id).cloned())
        .ok_or_else(ApiError::not_found)?;
    let busy = droplet.locked
        || droplet.status == "new"
        || app.backing_up(id)
        || app.store.read(|s| {
            s.actions.values().any(|a| {
                a.resource_type == "droplet"
                    && a.resource_id == Some(id)
                    && a.status == "in-progress"
            })
        });
    if busy && t != "rename" {
        return Err(ApiError::unprocessable(
            "Droplet already has a pending event.",
        ));
    }

    if let Some((power, end_status)) = power_of(t) {
        let action = app.store.mutate(|s| {
            Ok::<_, ApiError>(new_action(s, t, Some(id), "droplet", &droplet.region))
        })?;
        let app2 = app.clone();
        let action_id = action.id;
        tokio::spawn(async move {
            let result = app2.hv.power(id, power).await;
            if let Err(e) = &result {
                tracing::warn!(droplet = id, error = %format!("{e:#}"), "power action failed");
            }
            let _ = app2.store.mutate::<_, ApiError>(|s| {
                if let (Ok(()), Some(d)) = (&result, s.droplets.get_mut(&id)) {
                    d.status = end_status.into();
                }
                complete_action(s, action_id, result.is_ok());
                Ok(())
            });
        });
        return Ok((
            StatusCode::CREATED,
            Json(json!({ "action": action_json(&action) })),
        ));
    }

    match t {
        "snapshot" => {
            let name = req
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| {
                    format!(
                        "{}-{}",
                        droplet.name,
                        time::OffsetDateTime::now_utc().unix_timestamp()
                    )
                });
            if name.len() > 255 {
                return Err(ApiError::unprocessable("name is at most 255 characters"));
            }
            let action = app.store.mutate(|s| {
                Ok::<_, ApiError>(new_action(s, t, Some(id), "droplet", &droplet.region))
            })?;
            tokio::spawn(super::images::take(app.clone(), id, action.id, name));
            Ok((
                StatusCode::CREATED,
                Json(json!({ "action": action_json(&action) })),
            ))
        }
        "resize" => {
            let slug = req
                .size
                .ok_or_else(|| ApiError::unprocessable("size is required to resize"))?;
            let size = catalog::size(&slug)
                .ok_or_else(|| ApiError::unprocessable(format!("size {slug} is not valid")))?;
            if droplet.status != "off" {
                return Err(ApiError::unprocessable(
                    "Droplet must be powered off before it can be resized.",
                ));
            }
            if size.disk_gib < droplet.disk {
                return Err(ApiError::unprocessable(
                    "This size is not available because it has a smaller disk.",
                ));
            }
            let new_disk = if req.disk {
                size.disk_gib
            } else {
                droplet.disk
            };
            let action = app.store.mutate(|s| {
                Ok::<_, ApiError>(new_action(
                    s,
                    "resize",
                    Some(id),
                    "droplet",
                    &droplet.region,
                ))
            })?;
            let app2 = app.clone();
            let action_id = action.id;
            tokio::spawn(async move {
                let result = app2.hv.resize(id, size.memory_mib, size.vcpus).await;
                if let Err(e) = &result {
                    tracing::warn!(droplet = id, error = %format!("{e:#}"), "resize failed");
                }
                let _ = app2.store.mutate::<_, ApiError>(|s| {
                    if let (Ok(()), Some(d)) = (&result, s.droplets.get_mut(&id)) {
                        d.size = size.slug.to_string();
                        d.disk = new_disk;
                    }
                    complete_action(s, action_id, result.is_ok());
                    Ok(())
                });
            });
            Ok((
                StatusCode::CREATED,
                Json(json!({ "action": action_json(&action) })),
            ))
        }
        "rename" => {
            let name = req
                .name
                .ok_or_else(|| ApiError::unprocessable("name is required to rename"))?;
            validate_name(&name)?;
            let action = app.store.mutate(|s| {
                let a = new_action(s, "rename", Some(id), "droplet", &droplet.region);
                if let Some(d) = s.droplets.get_mut(&id) {
                    d.name = name.clone();
                }
                complete_action(s, a.id, true);
                Ok::<_, ApiError>(s.actions[&a.id].clone())
            })?;
            Ok((
                StatusCode::CREATED,
                Json(json!({ "action": action_json(&action) })),
            ))
        }
        "enable_backups" | "disable_backups" | "change_backup_policy" => {
            let policy = match t {
                "disable_backups" => None,
                "change_backup_policy" if droplet.backup_policy.is_none() => {
                    return Err(ApiError::unprocessable(
                        "Backups are not enabled for this Droplet.",
                    ))
                }
                "change_backup_policy" if req.backup_policy.is_none() => {
                    return Err(ApiError::unprocessable(
                        "backup_policy is required to change the backup policy",
                    ))
                }
                _ => Some(super::backups::policy_from(req.backup_policy.as_ref())?),
            };
            let action = app.store.mutate(|s| {
                let a = new_action(s, t, Some(id), "droplet", &droplet.region);
                if let Some(d) = s.droplets.get_mut(&id) {
                    // Enabling starts the count afresh: the first backup is in the
                    // first window that starts from now on.
                    if d.backup_policy.is_none() && policy.is_some() {
                        d.backups_since = Some(time::OffsetDateTime::now_utc().unix_timestamp());
                    }
                    d.backup_policy = policy.clone();
                }
                complete_action(s, a.id, true);
                Ok::<_, ApiError>(s.actions[&a.id].clone())
            })?;
            Ok((
                StatusCode::CREATED,
                Json(json!({ "action": action_json(&action) })),
            ))
        }
        other => Err(ApiError::unprocessable(format!(
            "action type {other:?} is not supported by localocean"
        ))),
    }
}

/// Parses an IPv4 the way record and domain validation need it.
pub(crate) fn is_ipv4(s: &str) -> bool {
    s.parse::<Ipv4Addr>().is_ok()
}
