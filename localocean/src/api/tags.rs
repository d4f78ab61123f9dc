//! `/v2/tags`: creating a tag and tagging or untagging droplets and volumes. Tags live on the
//! resources themselves (as on DigitalOcean, a droplet or volume lists its tags); a tag with
//! no resource still exists.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{validate_tags, ApiError, App, DoJson};

#[derive(Deserialize)]
pub struct TagReq {
    name: String,
}

#[derive(Deserialize)]
pub struct ResourceRef {
    resource_id: String,
    resource_type: String,
}

#[derive(Deserialize)]
pub struct ResourcesReq {
    resources: Vec<ResourceRef>,
}

fn tag_json(name: &str, droplets: usize, volumes: usize) -> Value {
    json!({
        "tag": {
            "name": name,
            "resources": {
                "count": droplets + volumes,
                "droplets": { "count": droplets },
                "volumes": { "count": volumes }
            }
        }
    })
}

pub async fn create(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<TagReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_tags(std::slice::from_ref(&req.name))?;
    let (droplets, volumes) = app.store.read(|s| {
        (
            s.droplets
                .values()
                .filter(|d| d.tags.contains(&req.name))
                .count(),
            s.volumes
                .iter()
                .filter(|v| v.tags.contains(&req.name))
                .count(),
        )
    });
    Ok((
        StatusCode::CREATED,
        Json(tag_json(&req.name, droplets, volumes)),
    ))
}

/// What a request names: droplet ids and volume ids.
type Named = (Vec<u64>, Vec<String>);

/// Only droplets and volumes can be tagged here; other types answer 422 rather than
/// pretending.
fn named(req: &ResourcesReq) -> Result<Named, ApiError> {
    let (mut droplets, mut volumes) = (Vec::new(), Vec::new());
    for r in &req.resources {
        match r.resource_type.as_str() {
            "droplet" => droplets.push(r.resource_id.parse::<u64>().map_err(|_| {
                ApiError::unprocessable(format!(
                    "resource_id {:?} is not a droplet id",
                    r.resource_id
                ))
            })?),
            "volume" => volumes.push(r.resource_id.clone()),
            other => {
                return Err(ApiError::unprocessable(format!(
                "resource_type {other:?} cannot be tagged in localocean (only droplet and volume)"
            )))
            }
        }
    }
    Ok((droplets, volumes))
}

pub async fn assign(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    DoJson(req): DoJson<ResourcesReq>,
) -> Result<StatusCode, ApiError> {
    validate_tags(std::slice::from_ref(&tag))?;
    let (ids, vids) = named(&req)?;
    app.store.mutate(|s| {
        if ids.iter().any(|id| !s.droplets.contains_key(id))
            || vids.iter().any(|v| !s.volumes.iter().any(|x| &x.id == v))
        {
            return Err(ApiError::not_found());
        }
        for id in &ids {
            let d = s.droplets.get_mut(id).expect("checked above");
            if !d.tags.contains(&tag) {
                d.tags.push(tag.clone());
            }
        }
        for v in s.volumes.iter_mut().filter(|v| vids.contains(&v.id)) {
            if !v.tags.contains(&tag) {
                v.tags.push(tag.clone());
            }
        }
        Ok::<_, ApiError>(())
    })?;
    // Load balancers that select droplets by tag follow.
    app.lb_sync.changed();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unassign(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    DoJson(req): DoJson<ResourcesReq>,
) -> Result<StatusCode, ApiError> {
    let (ids, vids) = named(&req)?;
    app.store.mutate(|s| {
        for id in &ids {
            if let Some(d) = s.droplets.get_mut(id) {
                d.tags.retain(|t| t != &tag);
            }
        }
        for v in s.volumes.iter_mut().filter(|v| vids.contains(&v.id)) {
            v.tags.retain(|t| t != &tag);
        }
        Ok::<_, ApiError>(())
    })?;
    // Load balancers that select droplets by tag follow.
    app.lb_sync.changed();
    Ok(StatusCode::NO_CONTENT)
}
