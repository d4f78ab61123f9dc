//! `/v2/account/keys`: SSH public keys, addressed by id or by DO's MD5 fingerprint;
//! droplets created with them get the public keys in their machine spec.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{page_response, ApiError, App, DoJson, ReqInfo};
use crate::store::{SshKey, State as StoreState};

/// DO's fingerprint: MD5 of the decoded key blob, as colon-separated lowercase hex.
pub fn fingerprint(public_key: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::unprocessable("Key invalid type, we support 'ssh-rsa', 'ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521'")
    };
    let mut parts = public_key.split_whitespace();
    let kind = parts.next().ok_or_else(invalid)?;
    if !matches!(
        kind,
        "ssh-rsa"
            | "ssh-ed25519"
            | "ecdsa-sha2-nistp256"
            | "ecdsa-sha2-nistp384"
            | "ecdsa-sha2-nistp521"
            | "sk-ssh-ed25519@openssh.com"
            | "sk-ecdsa-sha2-nistp256@openssh.com"
    ) {
        return Err(invalid());
    }
    let blob = parts
        .next()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| ApiError::unprocessable("Key invalid, the key data is not valid base64"))?;
    // The blob starts with its own type name; a mismatch means a pasted-together key.
    let embedded_ok = blob.len() >= 4 && {
        let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        blob.get(4..4 + n) == Some(kind.as_bytes())
    };
    if !embedded_ok {
        return Err(ApiError::unprocessable(
            "Key invalid, the key data does not match its type",
        ));
    }
    let digest = Md5::digest(&blob);
    Ok(digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

fn key_json(k: &SshKey) -> Value {
    json!({
        "id": k.id,
        "fingerprint": k.fingerprint,
        "public_key": k.public_key,
        "name": k.name,
    })
}

/// Finds a key by numeric id or by fingerprint.
pub(crate) fn find<'a>(s: &'a StoreState, ident: &str) -> Option<&'a SshKey> {
    match ident.parse::<u64>() {
        Ok(id) => s.ssh_keys.get(&id),
        Err(_) => s.ssh_keys.values().find(|k| k.fingerprint == ident),
    }
}

pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let items = app
        .store
        .read(|s| s.ssh_keys.values().map(key_json).collect());
    page_response("ssh_keys", items, &info)
}

#[derive(Deserialize)]
pub struct CreateKey {
    name: String,
    public_key: String,
}

pub async fn create(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<CreateKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if req.name.trim().is_empty() {
        return Err(ApiError::unprocessable("Name is required"));
    }
    let fp = fingerprint(&req.public_key)?;
    let key = app.store.mutate(|s| {
        if s.ssh_keys.values().any(|k| k.fingerprint == fp) {
            return Err(ApiError::unprocessable(
                "SSH Key is already in use on your account",
            ));
        }
        let key = SshKey {
            id: s.new_id(),
            fingerprint: fp.clone(),
            public_key: req.public_key.trim().to_string(),
            name: req.name.clone(),
        };
        s.ssh_keys.insert(key.id, key.clone());
        Ok(key)
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "ssh_key": key_json(&key) })),
    ))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.store
        .read(|s| find(s, &ident).map(key_json))
        .map(|k| Json(json!({ "ssh_key": k })))
        .ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
pub struct UpdateKey {
    name: String,
}

pub async fn update(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
    DoJson(req): DoJson<UpdateKey>,
) -> Result<Json<Value>, ApiError> {
    if req.name.trim().is_empty() {
        return Err(ApiError::unprocessable("Name is required"));
    }
    let key = app.store.mutate(|s| {
        let id = find(s, &ident).ok_or_else(ApiError::not_found)?.id;
        let key = s.ssh_keys.get_mut(&id).ok_or_else(ApiError::not_found)?;
        key.name = req.name.clone();
        Ok::<_, ApiError>(key.clone())
    })?;
    Ok(Json(json!({ "ssh_key": key_json(&key) })))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.store.mutate(|s| {
        let id = find(s, &ident).ok_or_else(ApiError::not_found)?.id;
        s.ssh_keys.remove(&id);
        Ok::<_, ApiError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
