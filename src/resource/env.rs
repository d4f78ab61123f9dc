//! What an operation works with: the DigitalOcean client and the provider's settings, plus
//! the seams a test replaces: how a droplet is reached, how it is checked from outside, waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::do_api::{self, Client};
use crate::remote::{
    Connector, HttpsCheck, HttpsRegistry, Machine, OutsideCheck, RegistryApi, SshConnector,
    Transport,
};
use crate::storage::{self, spaces};

use super::error::Result;
use super::model::Model;
use super::state::RegistryState;

/// How long things take; tests shrink them.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// After the record points at a new droplet: how long the old one keeps serving (the
    /// record's TTL), so no client that still resolves the old address fails.
    pub old_droplet_grace: Duration,
    /// A droplet reached in passing (read's digests, destroy's measure) has this long to answer.
    pub probe_connect: Duration,
    /// Least time given to put a volume back on the old droplet after a failed replacement.
    pub rollback: Duration,
    /// After a droplet left the load balancer: how long the requests it holds (a layer being
    /// pulled) have to finish before it is stopped or deleted.
    pub drain: Duration,
    /// After a droplet joined the load balancer: how long its checks take to mark it up
    /// (interval times healthy threshold, and a second).
    pub balancer_healthy: Duration,
    /// The API client's backoff and polling.
    pub api: do_api::Timings,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            old_droplet_grace: Duration::from_secs(super::network::RECORD_TTL as u64),
            probe_connect: Duration::from_secs(30),
            rollback: Duration::from_secs(60),
            drain: Duration::from_secs(10),
            balancer_healthy: super::fleet::HEALTHY_AFTER,
            api: do_api::Timings::default(),
        }
    }
}

/// The collaborators the resource is built with.
#[derive(Clone)]
pub struct Seams {
    pub machines: Arc<dyn Connector>,
    pub outside: Arc<dyn OutsideCheck>,
    /// The registry's own API (retention's listing and deletes).
    pub registry: Arc<dyn RegistryApi>,
    pub timings: Timings,
}

impl Default for Seams {
    /// Production: SSH, HTTPS, DigitalOcean's pace.
    fn default() -> Self {
        Seams {
            machines: Arc::new(SshConnector),
            outside: Arc::new(HttpsCheck),
            registry: Arc::new(HttpsRegistry),
            timings: Timings::default(),
        }
    }
}

/// One operation's world.
#[derive(Clone)]
pub struct Env {
    pub client: Client,
    pub settings: Arc<Settings>,
    pub machines: Arc<dyn Connector>,
    pub outside: Arc<dyn OutsideCheck>,
    pub registry: Arc<dyn RegistryApi>,
    pub timings: Timings,
}

impl Env {
    pub fn new(settings: Arc<Settings>, seams: &Seams) -> Result<Env> {
        let client = Client::with_timings(&settings, seams.timings.api)?;
        Ok(Env {
            client,
            settings,
            machines: seams.machines.clone(),
            outside: seams.outside.clone(),
            registry: seams.registry.clone(),
            timings: seams.timings,
        })
    }

    /// The droplet in `st`, reached with the management key and accepting only the host keys
    /// `host_key::machine_of` names.
    pub async fn connect(
        &self,
        st: &RegistryState,
        deadline: Instant,
    ) -> Result<Arc<dyn Transport>> {
        let machine = machine_of(st)?;
        Ok(self.machines.connect(&machine, deadline).await?)
    }

    /// The client that manages the registry's bucket: with the keys of its `storage` block when
    /// it has them, else with the provider's.
    pub fn bucket_client(&self, m: &Model) -> std::result::Result<spaces::S3, storage::Error> {
        match &m.storage.spaces_keys {
            Some((id, key)) => {
                spaces::S3::with_keys(&self.settings, &m.region, id.clone(), key.clone())
            }
            None => spaces::S3::from_settings(&self.settings, &m.region),
        }
    }

    /// [`Env::connect`] with the short bound of a droplet reached in passing.
    pub async fn connect_briefly(&self, st: &RegistryState) -> Result<Arc<dyn Transport>> {
        let deadline = super::model::deadline_after(self.timings.probe_connect);
        self.connect(st, deadline).await
    }
}

fn machine_of(st: &RegistryState) -> Result<Machine> {
    super::host_key::machine_of(st)
}
