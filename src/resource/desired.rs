//! What the droplet must hold, derived from state: the render spec (users with their hashes,
//! storage, TLS material) and the digests of its files.

use std::collections::BTreeMap;

use tf_provider::value::Value;

use super::error::{Error, Result};
use super::model::{Backend, Model};
use super::state::{known, RegistryState, S};
use crate::remote::{self, TlsMaterial};
use crate::render::{self, RegistrySpec, Storage};
use crate::secret::Secret;
use crate::storage::{spaces, volume};

pub fn s(v: impl Into<String>) -> S {
    Value::Value(v.into())
}

pub fn secret_of(v: &S) -> Option<Secret> {
    v.as_ref_option().map(|x| Secret::new(x.clone()))
}

/// The users as rendered: those whose hash is known.
fn users_of(st: &RegistryState, m: &Model) -> Vec<render::User> {
    let Some(hashes) = st.bcrypt_hashes.as_ref_option() else {
        return Vec::new();
    };
    m.users
        .iter()
        .filter_map(|u| {
            Some(render::User {
                name: u.name.clone(),
                bcrypt_hash: hashes.get(&u.name)?.as_ref_option()?.clone(),
                access: u.access,
            })
        })
        .collect()
}

/// The registry's storage as rendered; None while a value it needs is not known yet.
fn storage_of(st: &RegistryState, m: &Model) -> Option<Storage> {
    Some(match m.storage.backend {
        Backend::Volume => Storage::Volume {
            mount_path: volume::mount_path(&m.volume_name()),
        },
        Backend::Spaces => Storage::Spaces {
            bucket: m.storage.bucket.clone()?,
            region: spaces::DEFAULT_SIGNING_REGION.to_owned(),
            endpoint: known(&st.spaces_endpoint)?.trim_end_matches('/').to_owned(),
            access_key: known(&st.spaces_key_id)?.to_owned(),
            secret_key: secret_of(&st.spaces_secret_key)?,
            redirect: m.storage.spaces_redirect,
        },
        Backend::Droplet => Storage::Droplet,
    })
}

/// Everything the droplet's files are rendered from; None while something is not known.
pub fn spec_of(st: &RegistryState, m: &Model) -> Option<RegistrySpec> {
    let mut spec = RegistrySpec::new(
        known(&st.fqdn)?.to_owned(),
        storage_of(st, m)?,
        secret_of(&st.http_secret)?,
    );
    spec.users = users_of(st, m);
    spec.anonymous_pull = m.anonymous_pull;
    spec.ui = m.ui;
    spec.health_check = m.replicas > 1;
    spec.renewal = super::certificate::renewal_spec(st, m);
    spec.gc = m.gc.as_ref().map(|g| render::gc::GcSpec {
        schedule: g.schedule.clone(),
        delete_untagged: g.delete_untagged,
    });
    Some(spec)
}

pub fn tls_material_of(st: &RegistryState) -> Option<TlsMaterial> {
    Some(TlsMaterial {
        cert_chain_pem: known(&st.certificate_pem)?.to_owned(),
        private_key_pem: secret_of(&st.tls_private_key_pem)?,
    })
}

/// The files the droplet must hold, rendered.
pub fn desired_files(
    st: &RegistryState,
    m: &Model,
) -> Result<(RegistrySpec, Vec<remote::ManagedFile>)> {
    let spec = spec_of(st, m).ok_or(Error::InputsUnknown)?;
    let material = tls_material_of(st).ok_or(Error::MissingState("certificate"))?;
    let files = remote::desired_files(&spec, &material)?;
    Ok((spec, files))
}

/// The digests the droplet's files must have, or None when some input is not known yet.
pub fn expected_digests(st: &RegistryState, m: &Model) -> Option<BTreeMap<String, String>> {
    // Every user in `users` has a hash in `bcrypt_hashes`, all known.
    let hashes = st.bcrypt_hashes.as_ref_option()?;
    let all_hashed = m.users.len() == hashes.len() && hashes.values().all(|h| h.is_value());
    if !all_hashed {
        return None;
    }
    let (_, files) = desired_files(st, m).ok()?;
    Some(files.iter().map(|f| (f.path.clone(), f.digest())).collect())
}
