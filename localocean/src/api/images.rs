//! Images: DigitalOcean's base images (the fixed catalogue) and the account's Droplet
//! snapshots (images of type `snapshot`). The droplet `snapshot` action takes one: a copy of
//! the droplet's disk made by the hypervisor, that outlives the droplet and that droplets
//! are created from by its id. `GET /v2/images` (with `private` and `type`),
//! `GET`/`DELETE /v2/images/{id}`, `GET /v2/droplets/{id}/snapshots`, and the droplet half of
//! the account-wide `/v2/snapshots` (`resource_type=droplet`; ids as strings there).
//! Droplet backups (see `backups`) are images of type `backup` here too, made and booted
//! from the same way; they are not snapshots, and only their retention or their droplet's
//! deletion removes them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{catalog, page_response, parse_id, ApiError, App, ReqInfo};
use crate::store::{DropletBackup, DropletSnapshot, State as StoreState};

/// An image a droplet can be created from.
pub enum Image<'a> {
    Base(&'static catalog::Image),
    Snapshot(&'a DropletSnapshot),
    /// An automated backup: booted from like a snapshot.
    Backup(&'a DropletBackup),
}

impl Image<'_> {
    /// What a droplet records as its image, and the hypervisor boots: the base image's slug,
    /// or the snapshot's id.
    pub fn key(&self) -> String {
        match self {
            Image::Base(i) => i.slug.to_string(),
            Image::Snapshot(x) => x.id.to_string(),
            Image::Backup(b) => b.image.id.to_string(),
        }
    }

    /// The smallest disk, in GB, a droplet made from it needs.
    pub fn min_disk_size(&self) -> u32 {
        match self {
            Image::Base(i) => i.min_disk_size,
            Image::Snapshot(x) => x.min_disk_size,
            Image::Backup(b) => b.image.min_disk_size,
        }
    }

    /// The one region a snapshot is in (base images are in every region).
    pub fn region(&self) -> Option<String> {
        match self {
            Image::Base(_) => None,
            Image::Snapshot(x) => Some(x.region.clone()),
            Image::Backup(b) => Some(b.image.region.clone()),
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Image::Base(i) => catalog::image_json(i),
            Image::Snapshot(x) => snapshot_image_json(x),
            Image::Backup(b) => backup_image_json(b),
        }
    }
}

/// By slug or numeric id, as DigitalOcean accepts either.
pub fn find<'a>(s: &'a StoreState, key: &str) -> Option<Image<'a>> {
    if let Some(i) = catalog::image(key) {
        return Some(Image::Base(i));
    }
    let id: u64 = key.parse().ok()?;
    s.droplet_snapshots
        .iter()
        .find(|x| x.id == id)
        .map(Image::Snapshot)
        .or_else(|| {
            s.droplet_backups
                .iter()
                .find(|b| b.image.id == id)
                .map(Image::Backup)
        })
}

/// The distribution of image `key` (a droplet's `image`), for a copy of a droplet made
/// from it; `Debian` when the image is gone.
pub fn distribution_of(s: &StoreState, key: &str) -> String {
    find(s, key).map_or_else(
        || "Debian".to_string(),
        |i| match i {
            Image::Base(b) => b.distribution.to_string(),
            Image::Snapshot(x) => x.distribution.clone(),
            Image::Backup(b) => b.image.distribution.clone(),
        },
    )
}

/// The data a copy holds, in GB to two decimals, from the bytes the hypervisor reports.
pub fn gigabytes(bytes: u64) -> f64 {
    (bytes as f64 / 1e9 * 100.0).round() / 100.0
}

/// A backup as `/v2/images` shows it: a snapshot's image of type `backup`.
pub fn backup_image_json(b: &DropletBackup) -> Value {
    let mut v = snapshot_image_json(&b.image);
    v["type"] = json!("backup");
    v
}

/// A snapshot as `/v2/images` shows it (`image` in the spec).
fn snapshot_image_json(x: &DropletSnapshot) -> Value {
    json!({
        "id": x.id,
        "name": x.name,
        "type": "snapshot",
        "distribution": x.distribution,
        "slug": null,
        "public": false,
        "regions": [x.region],
        "created_at": x.created_at,
        "min_disk_size": x.min_disk_size,
        "size_gigabytes": x.size_gigabytes,
        "description": "",
        "tags": x.tags,
        "status": "available",
        "error_message": "",
    })
}

/// As `/v2/snapshots` shows it (`snapshots` in the spec: string ids).
pub fn snapshot_json(x: &DropletSnapshot) -> Value {
    json!({
        "id": x.id.to_string(),
        "name": x.name,
        "regions": [x.region],
        "created_at": x.created_at,
        "resource_id": x.droplet_id.to_string(),
        "resource_type": "droplet",
        "min_disk_size": x.min_disk_size,
        "size_gigabytes": x.size_gigabytes,
        "tags": x.tags,
    })
}

/// As `/v2/droplets/{id}/snapshots` shows it (`droplet_snapshot` in the spec).
fn droplet_snapshot_json(x: &DropletSnapshot) -> Value {
    json!({
        "id": x.id,
        "name": x.name,
        "regions": [x.region],
        "created_at": x.created_at,
        "min_disk_size": x.min_disk_size,
        "size_gigabytes": x.size_gigabytes,
        "type": "snapshot",
    })
}

/// The ids of a droplet's snapshots (`snapshot_ids` of a droplet).
pub fn ids_of_droplet(s: &StoreState, droplet_id: u64) -> Vec<u64> {
    s.droplet_snapshots
        .iter()
        .filter(|x| x.droplet_id == droplet_id)
        .map(|x| x.id)
        .collect()
}

/// `GET /v2/images`: `private=true` lists the account's own (snapshots and backups), `type`
/// filters by kind (`distribution` is the base images; there are no application images
/// here).
pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let private = info.param("private") == Some("true");
    let kind = info.param("type");
    let base = !private && matches!(kind, None | Some("distribution"));
    let snapshots = matches!(kind, None | Some("snapshot"));
    let backups = matches!(kind, None | Some("backup"));
    let mut items: Vec<Value> = Vec::new();
    if base {
        items.extend(catalog::IMAGES.iter().map(catalog::image_json));
    }
    if snapshots {
        items.extend(app.store.read(|s| {
            s.droplet_snapshots
                .iter()
                .map(snapshot_image_json)
                .collect::<Vec<_>>()
        }));
    }
    if backups {
        items.extend(app.store.read(|s| {
            s.droplet_backups
                .iter()
                .map(backup_image_json)
                .collect::<Vec<_>>()
        }));
    }
    page_response("images", items, &info)
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.store
        .read(|s| find(s, &id).map(|i| i.json()))
        .map(|v| Json(json!({ "image": v })))
        .ok_or_else(ApiError::not_found)
}

/// `DELETE /v2/images/{id}`: a snapshot's copy goes; droplets made from it keep running.
pub async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if catalog::image(&id).is_some() {
        return Err(ApiError::unprocessable(
            "a public image cannot be deleted: only your own snapshots can",
        ));
    }
    let id = parse_id(&id)?;
    if app
        .store
        .read(|s| s.droplet_backups.iter().any(|b| b.image.id == id))
    {
        return Err(ApiError::unprocessable(format!(
            "image {id} is a backup: backups go when their retention ends or with their droplet"
        )));
    }
    delete_snapshot(&app, id).await
}

/// Removes droplet snapshot `id` (404 when there is none).
pub async fn delete_snapshot(app: &App, id: u64) -> Result<StatusCode, ApiError> {
    if !app
        .store
        .read(|s| s.droplet_snapshots.iter().any(|x| x.id == id))
    {
        return Err(ApiError::not_found());
    }
    app.hv.delete_image(id).await.map_err(|e| {
        tracing::error!(image = id, error = %format!("{e:#}"), "deleting droplet snapshot");
        ApiError::server_error(format!("deleting snapshot {id} failed"))
    })?;
    app.store.mutate(|s| {
        s.droplet_snapshots.retain(|x| x.id != id);
        Ok::<_, ApiError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v2/droplets/{id}/snapshots`.
pub async fn list_for_droplet(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    info: ReqInfo,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let items = app.store.read(|s| {
        s.droplets.contains_key(&id).then(|| {
            s.droplet_snapshots
                .iter()
                .filter(|x| x.droplet_id == id)
                .map(droplet_snapshot_json)
                .collect::<Vec<_>>()
        })
    });
    Ok(page_response(
        "snapshots",
        items.ok_or_else(ApiError::not_found)?,
        &info,
    ))
}

/// The droplet `snapshot` action's background half: copies the disk, then records the
/// image. A failed copy leaves no image and no files.
pub async fn take(app: Arc<App>, droplet_id: u64, action_id: u64, name: String) {
    let Some((droplet, image_id)) = app
        .store
        .mutate::<_, ApiError>(|s| {
            let d = s.droplets.get(&droplet_id).cloned();
            Ok(d.map(|d| (d, s.new_id())))
        })
        .ok()
        .flatten()
    else {
        let _ = app.store.mutate::<_, ApiError>(|s| {
            super::complete_action(s, action_id, false);
            Ok(())
        });
        return;
    };
    let copied = app.hv.snapshot_droplet(droplet_id, image_id).await;
    let distribution = app.store.read(|s| distribution_of(s, &droplet.image));
    let stored = match copied {
        Ok(bytes) => app.store.mutate(|s| {
            s.droplet_snapshots.push(DropletSnapshot {
                id: image_id,
                name,
                droplet_id,
                region: droplet.region.clone(),
                created_at: crate::clock::now_rfc3339(),
                min_disk_size: droplet.disk,
                size_gigabytes: gigabytes(bytes),
                distribution,
                tags: Vec::new(),
            });
            super::complete_action(s, action_id, true);
            Ok::<_, ApiError>(())
        }),
        Err(e) => {
            tracing::warn!(droplet = droplet_id, error = %format!("{e:#}"), "snapshot failed");
            Err(ApiError::server_error("snapshot failed"))
        }
    };
    if stored.is_err() {
        let _ = app.hv.delete_image(image_id).await;
        let _ = app.store.mutate::<_, ApiError>(|s| {
            super::complete_action(s, action_id, false);
            Ok(())
        });
    }
}
