//! State upgrades: a state written by an older schema version, brought to the current shape
//! without losing what only state holds (the users' hashes, so no password is hashed again).

use serde_json::{json, Map, Value as Json};

use super::schema::{DEFAULT_ACCESS, SCHEMA_VERSION};
use super::state::RegistryState;
use super::users;

/// Why a prior state cannot be upgraded; names the version.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "state version {0} is newer than this provider's ({SCHEMA_VERSION}): upgrade the provider"
    )]
    Newer(i64),
    #[error("state version {0} is not one this provider wrote")]
    Unknown(i64),
    #[error("the version {version} state cannot be read: {detail}")]
    Shape { version: i64, detail: String },
}

/// `prior` (JSON, as state holds it) at schema `version`, in the current shape.
pub fn upgrade(version: i64, prior: &[u8]) -> Result<RegistryState, UpgradeError> {
    let shape = |detail: String| UpgradeError::Shape { version, detail };
    let mut v: Json = serde_json::from_slice(prior).map_err(|e| shape(e.to_string()))?;
    match version {
        1 => from_v1(&mut v).map_err(shape)?,
        v if v > SCHEMA_VERSION => return Err(UpgradeError::Newer(v)),
        v if v != SCHEMA_VERSION => return Err(UpgradeError::Unknown(v)),
        _ => {}
    }
    fill_absent(&mut v);
    let mut st: RegistryState = serde_json::from_value(v).map_err(|e| shape(e.to_string()))?;
    // The derived user maps, from the users and the hashes moved out of them: with the
    // state as its own prior, every hash is kept (a user a failed create left without one
    // is hashed here).
    let prior = st.clone();
    users::fill_now(&mut st, Some(&prior)).map_err(|e| shape(e.to_string()))?;
    Ok(st)
}

/// Attributes and blocks added within a schema version (`garbage_collection` and its computed
/// attributes) are absent from a state an earlier build wrote: null (no block) is what they
/// were then.
fn fill_absent(v: &mut Json) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    let schema = super::schema::schema();
    for name in schema.block.attributes.keys() {
        obj.entry(name.clone()).or_insert(Json::Null);
    }
    for name in schema.block.blocks.keys() {
        obj.entry(name.clone()).or_insert_with(|| json!([]));
    }
}

/// Version 1 kept each user's hash inside `users` (`bcrypt_hash`) and filled `access` in.
fn from_v1(v: &mut Json) -> Result<(), String> {
    let obj = v.as_object_mut().ok_or("not an object")?;
    let mut hashes = Map::new();
    if let Some(users) = obj.get_mut("users").and_then(Json::as_object_mut) {
        for (name, u) in users.iter_mut() {
            let Some(u) = u.as_object_mut() else { continue };
            if let Some(h) = u.remove("bcrypt_hash").filter(|h| !h.is_null()) {
                hashes.insert(name.clone(), h);
            }
            // `push` was filled in when unset: most configurations leave it out, and a value
            // here that the configuration lacks would show as a change once.
            if u.get("access").and_then(Json::as_str) == Some(DEFAULT_ACCESS) {
                u.insert("access".into(), Json::Null);
            }
        }
    }
    obj.insert("bcrypt_hashes".into(), Json::Object(hashes));
    obj.insert("generated_passwords".into(), json!({}));
    for derived in ["user_access", "docker_config_jsons"] {
        obj.insert(derived.into(), Json::Null);
    }
    Ok(())
}

/// For tests: a state as version 1 wrote it, from a current one.
#[cfg(test)]
pub fn as_v1(st: &RegistryState) -> Vec<u8> {
    let mut v = serde_json::to_value(st).unwrap();
    let hashes = v["bcrypt_hashes"].clone();
    let obj = v.as_object_mut().unwrap();
    for k in [
        "bcrypt_hashes",
        "generated_passwords",
        "user_access",
        "docker_config_jsons",
    ] {
        obj.remove(k);
    }
    if let Some(users) = obj.get_mut("users").and_then(Json::as_object_mut) {
        for (name, u) in users.iter_mut() {
            let u = u.as_object_mut().unwrap();
            u.insert("bcrypt_hash".into(), hashes[name.as_str()].clone());
            if u["access"].is_null() {
                u.insert("access".into(), json!(DEFAULT_ACCESS));
            }
        }
    }
    serde_json::to_vec(&v).unwrap()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tf_provider::value::Value;

    use super::*;
    use crate::resource::state::UserState;

    const HASH: &str = "$2y$08$abcdefghijklmnopqrstuu5UmCkrG5qkWh4Tlr2ct8ErgEjCJwDpu";
    const ADMIN_HASH: &str = "$2y$08$0123456789012345678901u7PLXyQ4KxxgIh/1E6k5o8fVoeR2sKi";

    /// A version 1 state as the provider wrote it: hashes inside `users`, `access` filled in.
    fn v1() -> Vec<u8> {
        let users = BTreeMap::from([
            (
                "admin".to_owned(),
                Value::Value(UserState {
                    password: Value::Value("admin-password-01".into()),
                    ..Default::default()
                }),
            ),
            (
                "ci".to_owned(),
                Value::Value(UserState {
                    password_bcrypt: Value::Value(HASH.into()),
                    access: Value::Value("pull".into()),
                    ..Default::default()
                }),
            ),
        ]);
        let st = RegistryState {
            name: Value::Value("reg".into()),
            fqdn: Value::Value("registry.example.test".into()),
            users: Value::Value(users),
            bcrypt_hashes: Value::Value(BTreeMap::from([
                ("admin".to_owned(), Value::Value(ADMIN_HASH.to_owned())),
                ("ci".to_owned(), Value::Value(HASH.to_owned())),
            ])),
            docker_config_json: Value::Value("{}".into()),
            ..Default::default()
        };
        as_v1(&st)
    }

    #[test]
    fn a_state_from_before_garbage_collection_reads_as_without_it() {
        let st = RegistryState {
            name: Value::Value("reg".into()),
            ..Default::default()
        };
        let mut raw = serde_json::to_value(&st).unwrap();
        for k in [
            "garbage_collection",
            "garbage_collection_last_run",
            "garbage_collection_freed_bytes",
        ] {
            raw.as_object_mut().unwrap().remove(k);
        }
        let up = upgrade(SCHEMA_VERSION, &serde_json::to_vec(&raw).unwrap()).unwrap();
        assert!(up.garbage_collection.is_null());
        assert!(up.garbage_collection_last_run.is_null());
        assert_eq!(up.name, Value::Value("reg".into()));
    }

    #[test]
    fn version_1_keeps_every_hash_and_fills_the_new_maps() {
        let raw: serde_json::Value = serde_json::from_slice(&v1()).unwrap();
        assert_eq!(raw["users"]["admin"]["bcrypt_hash"], ADMIN_HASH);
        assert_eq!(raw["users"]["admin"]["access"], "push");
        let st = upgrade(1, &v1()).unwrap();
        let get = |m: &super::super::state::ByUser, k: &str| m.as_ref_option().unwrap()[k].clone();
        // The hash made for admin's password is kept: nothing is hashed again.
        assert_eq!(
            get(&st.bcrypt_hashes, "admin"),
            Value::Value(ADMIN_HASH.into())
        );
        assert_eq!(get(&st.bcrypt_hashes, "ci"), Value::Value(HASH.into()));
        assert_eq!(get(&st.user_access, "admin"), Value::Value("push".into()));
        assert_eq!(get(&st.user_access, "ci"), Value::Value("pull".into()));
        // The filled-in default went back to unset; an explicit `pull` stays.
        let users = st.users.as_ref_option().unwrap();
        assert_eq!(users["admin"].as_ref_option().unwrap().access, Value::Null);
        assert_eq!(
            users["ci"].as_ref_option().unwrap().access,
            Value::Value("pull".into())
        );
        // Every derived value is known: state holds no unknowns.
        assert!(get(&st.docker_config_jsons, "admin").is_value());
        assert!(st.docker_config_json.is_value());
        assert_eq!(st.generated_passwords, Value::Value(BTreeMap::new()));
        // It reads back as a version 2 state, unchanged.
        let again = upgrade(SCHEMA_VERSION, &serde_json::to_vec(&st).unwrap()).unwrap();
        assert_eq!(again, st);
    }

    #[test]
    fn other_versions_and_shapes_are_refused_with_the_version() {
        let e = upgrade(SCHEMA_VERSION + 1, &v1()).unwrap_err();
        assert!(e.to_string().contains("upgrade the provider"), "{e}");
        assert!(matches!(upgrade(0, &v1()), Err(UpgradeError::Unknown(0))));
        let e = upgrade(1, b"[1, 2]").unwrap_err();
        assert!(e.to_string().contains("version 1"), "{e}");
    }
}
