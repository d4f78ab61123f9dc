//! The droplet's SSH host key. A droplet is born with a throwaway key (user data carries it, so
//! the first connection needs no trust on first use); user data stays readable on the droplet
//! through the metadata service, so right after that first connection the droplet is moved to
//! the registry's own key, derived from the management key, and the born key opens nothing.
//!
//! State says where a droplet is: `host_public_key` equal to the registry's key means moved,
//! and `user_data_host_key_fingerprint` names the born key, which connections then refuse by
//! name. Any other `host_public_key` is the key in the droplet's user data (a droplet just
//! born, a create that failed before the move, state written by a provider before the move
//! existed): its connections accept that key or the registry's, so a move that happened but
//! never reached state (the provider killed in between) still connects, and the next apply
//! records it. Nothing else is ever accepted.

use std::sync::Arc;
use std::time::Instant;

use tf_provider::value::Value;
use tf_provider::Diagnostics;

use super::desired::{s, secret_of};
use super::env::Env;
use super::error::{Error, Result};
use super::model::Model;
use super::state::{known, RegistryState};
use crate::remote::keys::public_key_blob;
use crate::remote::{self, GeneratedKey, HostKeyPolicy, Machine, Transport};

/// The registry's own host key, from the management key in `st`.
pub fn registry_key(st: &RegistryState) -> Result<GeneratedKey> {
    let mgmt =
        secret_of(&st.management_private_key).ok_or(Error::MissingState("management key"))?;
    Ok(remote::derived_host_key(&mgmt)?)
}

/// True when `st`'s droplet was moved to the registry's key.
pub fn moved(st: &RegistryState, registry: &GeneratedKey) -> Result<bool> {
    let Some(current) = known(&st.host_public_key) else {
        return Ok(false);
    };
    Ok(public_key_blob(current)? == public_key_blob(&registry.public_openssh)?)
}

fn set_key(st: &mut RegistryState, key: &GeneratedKey) {
    st.host_private_key = s(key.private_openssh.expose().to_owned());
    st.host_public_key = s(key.public_openssh.clone());
    st.host_key_fingerprint = s(key.fingerprint_sha256.clone());
}

/// A fresh throwaway key for a droplet about to be created, put in `st` (not moved yet):
/// user data carries it, and only the first connection accepts it.
pub fn born(st: &mut RegistryState, m: &Model) -> Result<GeneratedKey> {
    let key = remote::generate_ed25519(&format!("root@{}", m.name))?;
    set_key(st, &key);
    st.user_data_host_key_fingerprint = Value::Null;
    Ok(key)
}

/// The droplet in `st` as a [`Machine`]: its address, the management key, and the host keys
/// it may show (see the module notes).
pub fn machine_of(st: &RegistryState) -> Result<Machine> {
    let addr = known(&st.ipv4_address)
        .ok_or(Error::MissingState("droplet IPv4 address"))?
        .to_owned();
    let private_key =
        secret_of(&st.management_private_key).ok_or(Error::MissingState("management key"))?;
    let current = known(&st.host_public_key)
        .ok_or(Error::MissingState("host key"))?
        .to_owned();
    let registry = registry_key(st)?;
    let host_keys = if moved(st, &registry)? {
        HostKeyPolicy {
            accepted: vec![current],
            user_data_fingerprint: known(&st.user_data_host_key_fingerprint).map(str::to_owned),
        }
    } else {
        HostKeyPolicy {
            accepted: vec![current, registry.public_openssh],
            user_data_fingerprint: None,
        }
    };
    Ok(Machine {
        addr,
        private_key,
        host_keys,
    })
}

/// A session to the droplet in `st` on the registry's key. A droplet still on its born key is
/// moved first, over a session pinned to that key, and `st` records the move once a new
/// connection proved that sshd serves the registry's key; until then `st` still accepts both,
/// so a failure anywhere in between locks nobody out.
pub async fn secure(
    env: &Env,
    st: &mut RegistryState,
    deadline: Instant,
) -> Result<Arc<dyn Transport>> {
    let registry = registry_key(st)?;
    if moved(st, &registry)? {
        return env.connect(st, deadline).await;
    }
    let born = known(&st.host_public_key)
        .ok_or(Error::MissingState("host key"))?
        .to_owned();
    let first = env.connect(st, deadline).await?;
    remote::host_key::install(first.as_ref(), &registry).await?;
    let mut pinned = machine_of(st)?;
    pinned.host_keys = HostKeyPolicy {
        accepted: vec![registry.public_openssh.clone()],
        user_data_fingerprint: None,
    };
    let t = env.machines.connect(&pinned, deadline).await?;
    drop(first);
    let born_fingerprint = remote::fingerprint_sha256(&born)?;
    tracing::info!(
        droplet = st.droplet_id.as_ref_option().copied().unwrap_or_default(),
        // Not `user_data_*`: the log redacts fields named so whole (see `secret::is_secret_name`).
        born_key_fingerprint = %born_fingerprint,
        host_key_fingerprint = %registry.fingerprint_sha256,
        "droplet moved off the SSH host key in its user data"
    );
    set_key(st, &registry);
    st.user_data_host_key_fingerprint = s(born_fingerprint);
    Ok(t)
}

/// Apply of an update: `planned` shows the droplet moved, but until it is, connections must
/// accept the droplet as it is. Puts the prior keys back when the prior droplet was not moved.
pub fn as_found(prior: &RegistryState, planned: &mut RegistryState) {
    let Ok(registry) = registry_key(prior) else {
        return;
    };
    if !moved(prior, &registry).unwrap_or(true) {
        planned.host_private_key = prior.host_private_key.clone();
        planned.host_public_key = prior.host_public_key.clone();
        planned.host_key_fingerprint = prior.host_key_fingerprint.clone();
        planned.user_data_host_key_fingerprint = prior.user_data_host_key_fingerprint.clone();
    }
}

/// Plan of an update: a new droplet is born with a new key (its fingerprint known after
/// apply) and moved to the registry's key; a droplet not yet moved (a registry made before
/// the move existed) is moved now, which the plan says.
pub fn plan(
    diags: &mut Diagnostics,
    prior: &RegistryState,
    st: &mut RegistryState,
    new_droplet: bool,
) {
    let Ok(registry) = registry_key(prior) else {
        return;
    };
    // Before the check below: a droplet deleted by hand (no id in state) is a new droplet too.
    if new_droplet {
        set_key(st, &registry);
        st.user_data_host_key_fingerprint = Value::Unknown;
        return;
    }
    if prior.droplet_id.is_null() {
        return;
    }
    let Ok(was_moved) = moved(prior, &registry) else {
        return;
    };
    if !was_moved {
        set_key(st, &registry);
        st.user_data_host_key_fingerprint = known(&prior.host_public_key)
            .and_then(|k| remote::fingerprint_sha256(k).ok())
            .map(s)
            .unwrap_or(Value::Unknown);
        diags.root_warning(
            "The droplet's SSH host key will be replaced",
            format!(
                "The droplet still serves the SSH host key from its user data ({}), which any process on the droplet can read from the metadata service. Apply installs the registry's own key ({}) and from then on refuses the old one. Update the droplet's entry in your known_hosts.",
                known(&prior.host_key_fingerprint).unwrap_or("?"),
                registry.fingerprint_sha256
            ),
        );
    }
}
