//! How an operation reaches a droplet: a [`Connector`] turns the droplet's address and keys
//! into a [`Transport`]. SSH in production; tests hand out local stand-ins instead.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{HostKeyPolicy, RemoteError, SshTransport, Transport};
use crate::secret::Secret;

/// A droplet as the provider knows it: where it is and the keys that let us in.
#[derive(Clone, Debug)]
pub struct Machine {
    /// IPv4 address (`ip` or `ip:port`).
    pub addr: String,
    /// The management key (OpenSSH private key).
    pub private_key: Secret,
    /// The host keys the provider installed, the only ones accepted (see `resource::host_key`).
    pub host_keys: HostKeyPolicy,
}

impl Machine {
    /// A machine that must show exactly `host_public_key`.
    pub fn pinned(addr: &str, private_key: Secret, host_public_key: &str) -> Machine {
        Machine {
            addr: addr.to_owned(),
            private_key,
            host_keys: HostKeyPolicy::only(host_public_key),
        }
    }
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// A session to `machine` as root, retried until `deadline` while it boots.
    async fn connect(
        &self,
        machine: &Machine,
        deadline: Instant,
    ) -> Result<Arc<dyn Transport>, RemoteError>;
}

/// SSH with the pinned host keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct SshConnector;

#[async_trait]
impl Connector for SshConnector {
    async fn connect(
        &self,
        machine: &Machine,
        deadline: Instant,
    ) -> Result<Arc<dyn Transport>, RemoteError> {
        let t = SshTransport::connect_with(
            &machine.addr,
            "root",
            &machine.private_key,
            &machine.host_keys,
            deadline,
        )
        .await?;
        Ok(Arc::new(t))
    }
}
