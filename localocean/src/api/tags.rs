//! `/v2/tags`: creating a tag and tagging or untagging droplets. Tags live on the droplets
//! themselves (as on DigitalOcean, a droplet lists its tags); a tag with no droplet still exists.

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

fn tag_json(name: &str, droplets: usize) -> Value {
    json!({
        "tag": {
            "name": name,
            "resources": { "count": droplets, "droplets": { "count": droplets } }
        }
    })
}

pub async fn create(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<TagReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_tags(std::slice::from_ref(&req.name))?;
    let count = app.store.read(|s| {
        s.droplets
            .values()
            .filter(|d| d.tags.contains(&req.name))
            .count()
    });
    Ok((StatusCode::CREATED, Json(tag_json(&req.name, count))))
}

/// Only droplets can be tagged here; other types answer 422 rather than pretending.
fn droplet_ids(req: &ResourcesReq) -> Result<Vec<u64>, ApiError> {
    req.resources
        .iter()
        .map(|r| {
            if r.resource_type != "droplet" {
                return Err(ApiError::unprocessable(format!(
                    "resource_type {:?} cannot be tagged in localocean (only droplet)",
                    r.resource_type
                )));
            }
            r.resource_id.parse::<u64>().map_err(|_| {
                ApiError::unprocessable(format!(
                    "resource_id {:?} is not a droplet id",
                    r.resource_id
                ))
            })
        })
        .collect()
}

pub async fn assign(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    DoJson(req): DoJson<ResourcesReq>,
) -> Result<StatusCode, ApiError> {
    validate_tags(std::slice::from_ref(&tag))?;
    let ids = droplet_ids(&req)?;
    app.store.mutate(|s| {
        if ids.iter().any(|id| !s.droplets.contains_key(id)) {
            return Err(ApiError::not_found());
        }
        for id in &ids {
            let d = s.droplets.get_mut(id).expect("checked above");
            if !d.tags.contains(&tag) {
                d.tags.push(tag.clone());
            }
        }
        Ok::<_, ApiError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unassign(
    State(app): State<Arc<App>>,
    Path(tag): Path<String>,
    DoJson(req): DoJson<ResourcesReq>,
) -> Result<StatusCode, ApiError> {
    let ids = droplet_ids(&req)?;
    app.store.mutate(|s| {
        for id in &ids {
            if let Some(d) = s.droplets.get_mut(id) {
                d.tags.retain(|t| t != &tag);
            }
        }
        Ok::<_, ApiError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
