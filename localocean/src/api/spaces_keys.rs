//! `/v2/spaces/keys`: Spaces access keys issued through the S3 backend; the secret is
//! returned once, at create, and never stored here.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{page_response, ApiError, App, DoJson, ReqInfo};
use crate::clock::now_rfc3339;
use crate::spaces::Grant;
use crate::store::SpacesKey;

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn validate(name: &str, grants: &[Grant]) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.len() > 255 {
        return Err(ApiError::unprocessable("name is required"));
    }
    for g in grants {
        match g.permission.as_str() {
            // DO spells an all-bucket key as one fullaccess grant on the empty bucket.
            "fullaccess" if g.bucket.is_empty() => {}
            "read" | "readwrite" | "fullaccess" if valid_bucket(&g.bucket) => {}
            "read" | "readwrite" | "fullaccess" => {
                return Err(ApiError::unprocessable(format!(
                    "bucket name {:?} is invalid",
                    g.bucket
                )))
            }
            other => {
                return Err(ApiError::unprocessable(format!(
                    "permission {other:?} is invalid: use read, readwrite or fullaccess"
                )))
            }
        }
    }
    Ok(())
}

fn key_json(k: &SpacesKey) -> Value {
    json!({
        "name": k.name,
        "grants": k.grants,
        "access_key": k.access_key,
        "created_at": k.created_at,
    })
}

fn backend_error(what: &str, e: anyhow::Error) -> ApiError {
    tracing::error!(error = %format!("{e:#}"), "spaces backend: {what}");
    ApiError::server_error(format!("Spaces backend failed to {what}"))
}

pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let name = info.param("name").map(str::to_string);
    let bucket = info.param("bucket").map(str::to_string);
    let permission = info.param("permission").map(str::to_string);
    let items = app.store.read(|s| {
        s.spaces_keys
            .iter()
            .filter(|k| name.as_ref().is_none_or(|n| &k.name == n))
            .filter(|k| {
                bucket
                    .as_ref()
                    .is_none_or(|b| k.grants.iter().any(|g| &g.bucket == b))
            })
            .filter(|k| {
                permission
                    .as_ref()
                    .is_none_or(|p| k.grants.iter().any(|g| &g.permission == p))
            })
            .map(key_json)
            .collect()
    });
    page_response("keys", items, &info)
}

#[derive(Deserialize)]
pub struct CreateKey {
    name: String,
    #[serde(default)]
    grants: Vec<Grant>,
}

pub async fn create(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<CreateKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate(&req.name, &req.grants)?;
    let issued = app
        .spaces
        .create_key(&req.name, &req.grants)
        .await
        .map_err(|e| backend_error("create the key", e))?;
    let key = SpacesKey {
        name: req.name,
        access_key: issued.access_key.clone(),
        grants: req.grants,
        created_at: now_rfc3339(),
    };
    app.store.mutate(|s| {
        s.spaces_keys.push(key.clone());
        Ok::<_, ApiError>(())
    })?;
    let mut body = key_json(&key);
    body["secret_key"] = json!(issued.secret_key);
    Ok((StatusCode::CREATED, Json(json!({ "key": body }))))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(access_key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.store
        .read(|s| {
            s.spaces_keys
                .iter()
                .find(|k| k.access_key == access_key)
                .map(key_json)
        })
        .map(|k| Json(json!({ "key": k })))
        .ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
pub struct UpdateKey {
    name: Option<String>,
    grants: Option<Vec<Grant>>,
}

/// PUT and PATCH: what is given replaces the key's name and grants.
pub async fn update(
    State(app): State<Arc<App>>,
    Path(access_key): Path<String>,
    DoJson(req): DoJson<UpdateKey>,
) -> Result<Json<Value>, ApiError> {
    let mut key = app
        .store
        .read(|s| {
            s.spaces_keys
                .iter()
                .find(|k| k.access_key == access_key)
                .cloned()
        })
        .ok_or_else(ApiError::not_found)?;
    if let Some(n) = req.name {
        key.name = n;
    }
    if let Some(g) = req.grants {
        key.grants = g;
    }
    validate(&key.name, &key.grants)?;
    app.spaces
        .update_key(&key.access_key, &key.name, &key.grants)
        .await
        .map_err(|e| backend_error("update the key", e))?;
    app.store.mutate(|s| {
        let k = s
            .spaces_keys
            .iter_mut()
            .find(|k| k.access_key == access_key)
            .ok_or_else(ApiError::not_found)?;
        *k = key.clone();
        Ok::<_, ApiError>(())
    })?;
    Ok(Json(json!({ "key": key_json(&key) })))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path(access_key): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app
        .store
        .read(|s| s.spaces_keys.iter().any(|k| k.access_key == access_key))
    {
        return Err(ApiError::not_found());
    }
    app.spaces
        .delete_key(&access_key)
        .await
        .map_err(|e| backend_error("delete the key", e))?;
    app.store.mutate(|s| {
        s.spaces_keys.retain(|k| k.access_key != access_key);
        Ok::<_, ApiError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
