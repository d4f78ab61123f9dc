//! `/v2/volumes`: block storage volumes, block devices in the hypervisor's machines; attach,
//! detach and resize actions, by id or by name.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::new_uuid;
use super::{
    action_json, catalog, complete_action, new_action, page_response, parse_id, validate_tags,
    ApiError, App, DoJson, ReqInfo,
};
use crate::clock::now_rfc3339;
use crate::hypervisor::VolumeSpec;
use crate::store::Volume;

const MAX_GIB: u32 = 16 * 1024;
/// DO's limit of volumes attached to one droplet.
const MAX_PER_DROPLET: usize = 7;

pub(crate) fn volume_spec(v: &Volume) -> VolumeSpec {
    VolumeSpec {
        id: v.id.clone(),
        name: v.name.clone(),
        size_gib: v.size_gigabytes,
        filesystem_type: (!v.filesystem_type.is_empty()).then(|| v.filesystem_type.clone()),
        filesystem_label: (!v.filesystem_label.is_empty()).then(|| v.filesystem_label.clone()),
        automount: false,
        snapshot_id: v.snapshot_id.clone(),
    }
}

fn volume_json(v: &Volume) -> Value {
    json!({
        "id": v.id,
        "region": catalog::region_json(&v.region),
        "droplet_ids": v.droplet_ids,
        "name": v.name,
        "description": v.description,
        "size_gigabytes": v.size_gigabytes,
        "created_at": v.created_at,
        "filesystem_type": v.filesystem_type,
        "filesystem_label": v.filesystem_label,
        "tags": v.tags,
    })
}

/// DO's volume names: lowercase letters, digits and `-`, starting with a letter, at most 64.
fn validate_volume_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "name {name:?} is invalid: use lowercase letters, numbers and hyphens, starting with a letter"
        )))
    }
}

/// DO's label rules: only with a `filesystem_type`; at most 16 characters for ext4 and 12
/// for xfs (what their mkfs accept).
fn validate_label(fs: &str, label: &str) -> Result<(), ApiError> {
    if label.is_empty() {
        return Ok(());
    }
    let max = match fs {
        "ext4" => 16,
        "xfs" => 12,
        _ => {
            return Err(ApiError::unprocessable(
                "filesystem_label may only be used with filesystem_type",
            ))
        }
    };
    if label.chars().count() > max {
        return Err(ApiError::unprocessable(format!(
            "filesystem_label may have at most {max} characters for {fs}"
        )));
    }
    if label.chars().any(|c| c.is_control()) {
        return Err(ApiError::unprocessable(
            "filesystem_label may not contain control characters",
        ));
    }
    Ok(())
}

pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let name = info.param("name").map(str::to_string);
    let region = info.param("region").map(str::to_string);
    let items = app.store.read(|s| {
        s.volumes
            .iter()
            .filter(|v| name.as_ref().is_none_or(|n| &v.name == n))
            .filter(|v| region.as_ref().is_none_or(|r| &v.region == r))
            .map(volume_json)
            .collect()
    });
    page_response("volumes", items, &info)
}

#[derive(Deserialize)]
pub struct CreateVolume {
    name: String,
    size_gigabytes: u32,
    region: String,
    #[serde(default)]
    description: String,
    filesystem_type: Option<String>,
    filesystem_label: Option<String>,
    tags: Option<Vec<String>>,
    snapshot_id: Option<String>,
}

pub async fn create(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<CreateVolume>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_volume_name(&req.name)?;
    if req.size_gigabytes == 0 || req.size_gigabytes > MAX_GIB {
        return Err(ApiError::unprocessable(format!(
            "size_gigabytes must be between 1 and {MAX_GIB}"
        )));
    }
    if catalog::region(&req.region).is_none() {
        return Err(ApiError::unprocessable(format!(
            "region {:?} is not available",
            req.region
        )));
    }
    let snapshot = match &req.snapshot_id {
        Some(sid) => {
            let snap = app
                .store
                .read(|s| s.volume_snapshots.iter().find(|x| &x.id == sid).cloned())
                .ok_or_else(|| ApiError::unprocessable(format!("snapshot {sid} was not found")))?;
            if snap.region != req.region {
                return Err(ApiError::unprocessable(format!(
                    "snapshot {sid} is not available in region {}",
                    req.region
                )));
            }
            if req.size_gigabytes < snap.min_disk_size {
                return Err(ApiError::unprocessable(format!(
                    "size_gigabytes must be at least the snapshot's min_disk_size ({})",
                    snap.min_disk_size
                )));
            }
            Some(snap)
        }
        None => None,
    };
    // A volume from a snapshot has the snapshot's file system, whatever the request says.
    let (fs, label) = match &snapshot {
        Some(snap) => (
            Some(snap.filesystem_type.clone()),
            Some(snap.filesystem_label.clone()),
        ),
        None => (req.filesystem_type, req.filesystem_label),
    };
    let fs = fs.unwrap_or_default();
    if !matches!(fs.as_str(), "" | "ext4" | "xfs") {
        return Err(ApiError::unprocessable(format!(
            "filesystem_type {fs:?} is invalid: use ext4 or xfs"
        )));
    }
    let label = label.unwrap_or_default();
    validate_label(&fs, &label)?;
    let tags = req.tags.unwrap_or_default();
    validate_tags(&tags)?;
    let taken = app.store.read(|s| {
        s.volumes
            .iter()
            .any(|v| v.name == req.name && v.region == req.region)
    });
    if taken {
        return Err(ApiError::conflict(format!(
            "a volume named {} already exists in {}",
            req.name, req.region
        )));
    }
    let volume = Volume {
        id: new_uuid(),
        name: req.name.clone(),
        description: req.description,
        size_gigabytes: req.size_gigabytes,
        region: req.region,
        created_at: now_rfc3339(),
        tags,
        filesystem_label: label,
        filesystem_type: fs,
        droplet_ids: Vec::new(),
        attached_before: false,
        snapshot_id: snapshot.map(|s| s.id),
    };
    app.hv
        .create_volume(&volume_spec(&volume))
        .await
        .map_err(|e| {
            tracing::error!(volume = %volume.id, error = %format!("{e:#}"), "creating volume");
            ApiError::server_error(format!("creating volume {} failed", volume.name))
        })?;
    app.store.mutate(|s| {
        s.volumes.push(volume.clone());
        Ok::<_, ApiError>(())
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "volume": volume_json(&volume) })),
    ))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.store
        .read(|s| s.volumes.iter().find(|v| v.id == id).map(volume_json))
        .map(|v| Json(json!({ "volume": v })))
        .ok_or_else(ApiError::not_found)
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let v = app
        .store
        .read(|s| s.volumes.iter().find(|v| v.id == id).cloned())
        .ok_or_else(ApiError::not_found)?;
    if !v.droplet_ids.is_empty() {
        return Err(ApiError::conflict(
            "Attached volumes cannot be deleted; detach it from its droplet first.",
        ));
    }
    app.hv.delete_volume(&v.id).await.map_err(|e| {
        tracing::error!(volume = %v.id, error = %format!("{e:#}"), "deleting volume");
        ApiError::server_error(format!("deleting volume {} failed", v.name))
    })?;
    app.store.mutate(|s| {
        s.volumes.retain(|x| x.id != v.id);
        Ok::<_, ApiError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct VolumeAction {
    #[serde(rename = "type")]
    action_type: String,
    /// DO's own examples send it as a number or as a string.
    droplet_id: Option<Value>,
    size_gigabytes: Option<u32>,
    region: Option<String>,
    volume_name: Option<String>,
}

fn droplet_id_of(v: &Option<Value>) -> Result<u64, ApiError> {
    match v {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::unprocessable("droplet_id is required"))
}

pub async fn action_post(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<VolumeAction>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    run_action(app, id, req).await
}

pub async fn action_by_name(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<VolumeAction>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = req
        .volume_name
        .clone()
        .ok_or_else(|| ApiError::unprocessable("volume_name is required"))?;
    let id = app
        .store
        .read(|s| {
            s.volumes
                .iter()
                .find(|v| v.name == name && req.region.as_ref().is_none_or(|r| &v.region == r))
                .map(|v| v.id.clone())
        })
        .ok_or_else(ApiError::not_found)?;
    run_action(app, id, req).await
}

enum Step {
    Attach(u64),
    Detach(u64),
    Resize(u32),
}

async fn run_action(
    app: Arc<App>,
    id: String,
    req: VolumeAction,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let volume = app
        .store
        .read(|s| s.volumes.iter().find(|v| v.id == id).cloned())
        .ok_or_else(ApiError::not_found)?;
    let (step, action_type) = match req.action_type.as_str() {
        "attach" => {
            let did = droplet_id_of(&req.droplet_id)?;
            let droplet = app
                .store
                .read(|s| s.droplets.get(&did).cloned())
                .ok_or_else(|| ApiError::unprocessable(format!("droplet {did} was not found")))?;
            if droplet.region != volume.region {
                return Err(ApiError::unprocessable(
                    "volume and droplet must be in the same region",
                ));
            }
            if !volume.droplet_ids.is_empty() {
                return Err(ApiError::unprocessable(
                    "volume is already attached to a droplet",
                ));
            }
            if droplet.status == "new" {
                return Err(ApiError::unprocessable(
                    "Droplet already has a pending event.",
                ));
            }
            if droplet.volume_ids.len() >= MAX_PER_DROPLET {
                return Err(ApiError::unprocessable(format!(
                    "a droplet can have at most {MAX_PER_DROPLET} volumes"
                )));
            }
            (Step::Attach(did), "attach_volume")
        }
        "detach" => {
            let did = droplet_id_of(&req.droplet_id)?;
            if !volume.droplet_ids.contains(&did) {
                return Err(ApiError::unprocessable(format!(
                    "volume is not attached to droplet {did}"
                )));
            }
            (Step::Detach(did), "detach_volume")
        }
        "resize" => {
            let size = req
                .size_gigabytes
                .ok_or_else(|| ApiError::unprocessable("size_gigabytes is required"))?;
            if size <= volume.size_gigabytes {
                return Err(ApiError::unprocessable(
                    "volumes can only be resized to a larger size",
                ));
            }
            if size > MAX_GIB {
                return Err(ApiError::unprocessable(format!(
                    "size_gigabytes must be at most {MAX_GIB}"
                )));
            }
            (Step::Resize(size), "resize_volume")
        }
        other => {
            return Err(ApiError::unprocessable(format!(
                "volume action type {other:?} is invalid: use attach, detach or resize"
            )))
        }
    };
    let action = app.store.mutate(|s| {
        let mut a = new_action(s, action_type, None, "volume", &volume.region);
        a.volume_id = Some(volume.id.clone());
        s.actions.insert(a.id, a.clone());
        Ok::<_, ApiError>(a)
    })?;
    let action_id = action.id;
    let app2 = app.clone();
    tokio::spawn(async move {
        let mut spec = volume_spec(&volume);
        let result = match step {
            Step::Attach(did) => app2.hv.attach_volume(did, &spec).await,
            Step::Detach(did) => app2.hv.detach_volume(did, &spec).await,
            Step::Resize(size) => {
                spec.size_gib = size;
                app2.hv.resize_volume(&spec).await
            }
        };
        if let Err(e) = &result {
            tracing::warn!(volume = %volume.id, error = %format!("{e:#}"), "volume action failed");
        }
        let _ = app2.store.mutate::<_, ApiError>(|s| {
            if result.is_ok() {
                apply(s, &volume.id, &step);
            }
            complete_action(s, action_id, result.is_ok());
            Ok(())
        });
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "action": action_json(&action) })),
    ))
}

fn apply(s: &mut crate::store::State, volume_id: &str, step: &Step) {
    match *step {
        Step::Attach(did) => {
            if let Some(v) = s.volumes.iter_mut().find(|v| v.id == volume_id) {
                v.droplet_ids = vec![did];
                v.attached_before = true;
            }
            if let Some(d) = s.droplets.get_mut(&did) {
                d.volume_ids.push(volume_id.to_string());
            }
        }
        Step::Detach(did) => {
            if let Some(v) = s.volumes.iter_mut().find(|v| v.id == volume_id) {
                v.droplet_ids.retain(|x| *x != did);
            }
            if let Some(d) = s.droplets.get_mut(&did) {
                d.volume_ids.retain(|x| x != volume_id);
            }
        }
        Step::Resize(size) => {
            if let Some(v) = s.volumes.iter_mut().find(|v| v.id == volume_id) {
                v.size_gigabytes = size;
            }
        }
    }
}

pub async fn actions_list(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    info: ReqInfo,
) -> Result<Json<Value>, ApiError> {
    if !app.store.read(|s| s.volumes.iter().any(|v| v.id == id)) {
        return Err(ApiError::not_found());
    }
    let items = app.store.read(|s| {
        s.actions
            .values()
            .rev()
            .filter(|a| a.volume_id.as_deref() == Some(id.as_str()))
            .map(action_json)
            .collect()
    });
    Ok(page_response("actions", items, &info))
}

pub async fn action_get(
    State(app): State<Arc<App>>,
    Path((id, action_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let action_id = parse_id(&action_id)?;
    app.store
        .read(|s| {
            s.actions
                .get(&action_id)
                .filter(|a| a.volume_id.as_deref() == Some(id.as_str()))
                .map(action_json)
        })
        .map(|a| Json(json!({ "action": a })))
        .ok_or_else(ApiError::not_found)
}
