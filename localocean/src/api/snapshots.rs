//! Volume snapshots: `POST`/`GET /v2/volumes/{id}/snapshots`, `/v2/volumes/snapshots/{id}`
//! and the account-wide `/v2/snapshots`, which also lists and removes Droplet snapshots
//! (those are images: see `images`). A volume snapshot is a copy of the volume's data made
//! by the hypervisor, one point in time of the disk, kept after the volume is deleted.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::new_uuid;
use super::{page_response, validate_tags, ApiError, App, DoJson, ReqInfo};
use crate::clock::now_rfc3339;
use crate::store::VolumeSnapshot;

fn snapshot_json(s: &VolumeSnapshot) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "regions": [s.region],
        "created_at": s.created_at,
        "resource_id": s.resource_id,
        "resource_type": "volume",
        "min_disk_size": s.min_disk_size,
        "size_gigabytes": s.size_gigabytes,
        "tags": s.tags,
    })
}

#[derive(Deserialize)]
pub struct CreateSnapshot {
    name: String,
    tags: Option<Vec<String>>,
}

/// Gigabytes as DigitalOcean bills them, to two decimals.
fn gigabytes(bytes: u64) -> f64 {
    (bytes as f64 / 1e9 * 100.0).round() / 100.0
}

pub async fn create(
    State(app): State<Arc<App>>,
    Path(volume_id): Path<String>,
    DoJson(req): DoJson<CreateSnapshot>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let volume = app
        .store
        .read(|s| s.volumes.iter().find(|v| v.id == volume_id).cloned())
        .ok_or_else(ApiError::not_found)?;
    if req.name.trim().is_empty() || req.name.len() > 255 {
        return Err(ApiError::unprocessable(
            "name is required (at most 255 characters)",
        ));
    }
    let tags = req.tags.unwrap_or_default();
    validate_tags(&tags)?;
    let id = new_uuid();
    let bytes = app
        .hv
        .snapshot_volume(&super::volumes::volume_spec(&volume), &id)
        .await
        .map_err(|e| {
            tracing::error!(volume = %volume.id, error = %format!("{e:#}"), "snapshotting volume");
            ApiError::server_error(format!(
                "taking a snapshot of volume {} failed",
                volume.name
            ))
        })?;
    let snapshot = VolumeSnapshot {
        id,
        name: req.name,
        resource_id: volume.id.clone(),
        region: volume.region.clone(),
        created_at: now_rfc3339(),
        min_disk_size: volume.size_gigabytes,
        size_gigabytes: gigabytes(bytes),
        tags,
        filesystem_type: volume.filesystem_type.clone(),
        filesystem_label: volume.filesystem_label.clone(),
    };
    let stored = app.store.mutate(|s| {
        s.volume_snapshots.push(snapshot.clone());
        Ok::<_, ApiError>(())
    });
    if let Err(e) = stored {
        // Not recorded: the copy must not outlive the failed request.
        let _ = app.hv.delete_snapshot(&snapshot.id).await;
        return Err(e);
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "snapshot": snapshot_json(&snapshot) })),
    ))
}

pub async fn list_for_volume(
    State(app): State<Arc<App>>,
    Path(volume_id): Path<String>,
    info: ReqInfo,
) -> Result<Json<Value>, ApiError> {
    let items = app.store.read(|s| {
        s.volumes.iter().any(|v| v.id == volume_id).then(|| {
            s.volume_snapshots
                .iter()
                .filter(|x| x.resource_id == volume_id)
                .map(snapshot_json)
                .collect::<Vec<_>>()
        })
    });
    Ok(page_response(
        "snapshots",
        items.ok_or_else(ApiError::not_found)?,
        &info,
    ))
}

/// `GET /v2/snapshots`, with DigitalOcean's `resource_type` filter.
pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let kind = info.param("resource_type");
    let droplets_too = matches!(kind, None | Some("droplet"));
    let volumes_too = matches!(kind, None | Some("volume"));
    let items = app.store.read(|s| {
        let droplets = s
            .droplet_snapshots
            .iter()
            .filter(|_| droplets_too)
            .map(super::images::snapshot_json);
        let volumes = s
            .volume_snapshots
            .iter()
            .filter(|_| volumes_too)
            .map(snapshot_json);
        droplets.chain(volumes).collect()
    });
    page_response("snapshots", items, &info)
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.store
        .read(|s| {
            let volume = s.volume_snapshots.iter().find(|x| x.id == id);
            let droplet = || {
                let n: u64 = id.parse().ok()?;
                s.droplet_snapshots.iter().find(|x| x.id == n)
            };
            volume
                .map(snapshot_json)
                .or_else(|| droplet().map(super::images::snapshot_json))
        })
        .map(|v| Json(json!({ "snapshot": v })))
        .ok_or_else(ApiError::not_found)
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app
        .store
        .read(|s| s.volume_snapshots.iter().any(|x| x.id == id))
    {
        // A Droplet snapshot's id (digits only; volume snapshots have UUIDs).
        return match id.parse::<u64>() {
            Ok(n) => super::images::delete_snapshot(&app, n).await,
            Err(_) => Err(ApiError::not_found()),
        };
    }
    app.hv.delete_snapshot(&id).await.map_err(|e| {
        tracing::error!(snapshot = %id, error = %format!("{e:#}"), "deleting snapshot");
        ApiError::server_error(format!("deleting snapshot {id} failed"))
    })?;
    app.store.mutate(|s| {
        s.volume_snapshots.retain(|x| x.id != id);
        Ok::<_, ApiError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
