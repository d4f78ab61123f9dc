//! Test doubles of the provider's seams, shared by its unit tests and the `suite` binary: a
//! shell machine in a temp dir, droplets made of them, and an outside check that records.
//!
//! Not part of the provider's interface (hidden from docs); nothing here touches the network.

mod machine;

#[cfg(test)]
pub(crate) mod api;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use crate::remote::{Connector, Expectation, Machine, OutsideCheck, RemoteError, Transport};

pub use machine::LocalTransport;

/// Where a droplet's first boot finds the user data its create request carried, by address.
pub type UserDataSource = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Droplets as [`LocalTransport`]s, one per address, made on first connect. An address can be
/// made to refuse connections, as a droplet whose SSH never comes up. With a user data source,
/// a droplet's first boot installs the SSH host key its user data carries, as cloud-init does,
/// and from then on a connection must accept the key in its `etc/ssh`, as sshd would show it.
#[derive(Default)]
pub struct FakeMachines {
    machines: Mutex<BTreeMap<String, Arc<LocalTransport>>>,
    refused: Mutex<BTreeSet<String>>,
    log: Mutex<Vec<String>>,
    user_data: Mutex<Option<UserDataSource>>,
}

impl FakeMachines {
    pub fn new() -> Arc<FakeMachines> {
        Arc::new(FakeMachines::default())
    }

    /// The machine at `addr`, made now if no one connected yet.
    pub fn machine(&self, addr: &str) -> Arc<LocalTransport> {
        let source = self.user_data.lock().expect("user data lock").clone();
        self.machines
            .lock()
            .expect("machines lock")
            .entry(addr.to_owned())
            .or_insert_with(|| {
                let m = LocalTransport::new();
                if let Some(user_data) = source.and_then(|f| f(addr)) {
                    first_boot(&m, &user_data);
                }
                Arc::new(m)
            })
            .clone()
    }

    /// Droplets made from now on boot with the user data `source` gives for their address.
    pub fn boot_with_user_data(&self, source: UserDataSource) {
        *self.user_data.lock().expect("user data lock") = Some(source);
    }

    /// Every address connected to so far.
    pub fn addresses(&self) -> Vec<String> {
        self.machines
            .lock()
            .expect("machines lock")
            .keys()
            .cloned()
            .collect()
    }

    /// From now on, connecting to `addr` fails as a refused SSH port would.
    pub fn refuse(&self, addr: &str) {
        self.refused
            .lock()
            .expect("refused lock")
            .insert(addr.to_owned());
    }

    pub fn allow(&self, addr: &str) {
        self.refused.lock().expect("refused lock").remove(addr);
    }

    /// `connect <addr>`, `refused <addr>` (SSH down) or `refused-host-key <addr>`, oldest first.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }
}

#[async_trait]
impl Connector for FakeMachines {
    async fn connect(
        &self,
        machine: &Machine,
        _deadline: Instant,
    ) -> Result<Arc<dyn Transport>, RemoteError> {
        let refused = self
            .refused
            .lock()
            .expect("refused lock")
            .contains(&machine.addr);
        let mut log = self.log.lock().expect("log lock");
        if refused {
            log.push(format!("refused {}", machine.addr));
            return Err(RemoteError::Connect {
                addr: machine.addr.clone(),
                message: "gave up after 1 attempts in 0 s: TCP connect: Connection refused".into(),
            });
        }
        drop(log);
        let m = self.machine(&machine.addr);
        // sshd shows the key in /etc/ssh; the client checks it before anything else.
        if let Ok(line) = std::fs::read_to_string(m.path(crate::remote::host_key::SSH_HOST_KEY_PUB))
        {
            let offered = crate::remote::keys::public_key_blob(&line)?;
            if let Err(e) = machine.host_keys.check(&machine.addr, &offered) {
                let mut log = self.log.lock().expect("log lock");
                log.push(format!("refused-host-key {}", machine.addr));
                return Err(e);
            }
        }
        let mut log = self.log.lock().expect("log lock");
        log.push(format!("connect {}", machine.addr));
        Ok(m)
    }
}

/// What cloud-init does with the provider's user data that matters to a connection: the host
/// key it carries becomes sshd's.
fn first_boot(m: &LocalTransport, user_data: &str) {
    let Some(json) = user_data.strip_prefix("#cloud-config\n") else {
        return;
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(json) else {
        return;
    };
    let keys = &config["ssh_keys"];
    let (Some(private), Some(public)) = (
        keys["ed25519_private"].as_str(),
        keys["ed25519_public"].as_str(),
    ) else {
        return;
    };
    for (path, body) in [
        (crate::remote::host_key::SSH_HOST_KEY, private.to_owned()),
        (
            crate::remote::host_key::SSH_HOST_KEY_PUB,
            format!("{public}\n"),
        ),
    ] {
        let p = m.path(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir etc/ssh");
        std::fs::write(p, body).expect("write host key");
    }
}

/// Records each check as (fqdn, ip); a check of an address marked failing fails.
#[derive(Default)]
pub struct FakeOutside {
    checks: Mutex<Vec<Expectation>>,
    failing: Mutex<BTreeSet<String>>,
}

impl FakeOutside {
    pub fn new() -> Arc<FakeOutside> {
        Arc::new(FakeOutside::default())
    }

    /// Checks of `ip` fail from now on, as a droplet serving the wrong thing.
    pub fn fail_for(&self, ip: &str) {
        self.failing
            .lock()
            .expect("failing lock")
            .insert(ip.to_owned());
    }

    /// Every check so far, oldest first.
    pub fn checks(&self) -> Vec<Expectation> {
        self.checks.lock().expect("checks lock").clone()
    }

    /// The addresses checked, oldest first.
    pub fn checked_ips(&self) -> Vec<String> {
        self.checks().iter().map(|c| c.ip.to_string()).collect()
    }
}

#[async_trait]
impl OutsideCheck for FakeOutside {
    async fn verify(&self, expect: &Expectation) -> Result<(), RemoteError> {
        self.checks
            .lock()
            .expect("checks lock")
            .push(expect.clone());
        let ip = expect.ip.to_string();
        if self.failing.lock().expect("failing lock").contains(&ip) {
            return Err(RemoteError::Outside {
                url: expect.url(),
                ip: expect.ip,
                detail: "without credentials answered 502 Bad Gateway, want 401".into(),
            });
        }
        Ok(())
    }
}

/// A registry's API in memory: repositories of tags, each with its digest, an index's
/// children and its image's `created`; deletes by digest remove every tag on it, as
/// distribution's do, and are recorded.
#[derive(Default)]
pub struct FakeRegistry {
    repos: Mutex<BTreeMap<String, Vec<FakeTag>>>,
    deletes: Mutex<Vec<(String, String)>>,
    /// While set, the catalog answers 503, as a registry that cannot be reached.
    down: std::sync::atomic::AtomicBool,
}

/// One tag of a [`FakeRegistry`].
#[derive(Clone, Debug)]
pub struct FakeTag {
    pub tag: String,
    pub digest: String,
    pub children: Vec<String>,
    pub created: Option<time::OffsetDateTime>,
}

impl FakeRegistry {
    pub fn new() -> Arc<FakeRegistry> {
        Arc::new(FakeRegistry::default())
    }

    /// Points `tag` of `repo` at `digest` (created `created`), as a push does.
    pub fn push(&self, repo: &str, tag: &str, digest: &str, created: Option<time::OffsetDateTime>) {
        let mut repos = self.repos.lock().expect("repos lock");
        let tags = repos.entry(repo.to_owned()).or_default();
        tags.retain(|t| t.tag != tag);
        tags.push(FakeTag {
            tag: tag.to_owned(),
            digest: digest.to_owned(),
            children: Vec::new(),
            created,
        });
    }

    /// The tags of `repo` now, by name.
    pub fn tags_of(&self, repo: &str) -> Vec<String> {
        let repos = self.repos.lock().expect("repos lock");
        repos
            .get(repo)
            .map(|t| t.iter().map(|t| t.tag.clone()).collect())
            .unwrap_or_default()
    }

    /// The catalog fails from now on (`true`) or answers again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every delete so far: (repository, digest).
    pub fn deletes(&self) -> Vec<(String, String)> {
        self.deletes.lock().expect("deletes lock").clone()
    }
}

#[async_trait]
impl crate::remote::RegistryApi for FakeRegistry {
    async fn catalog(&self, t: &crate::remote::RegistryTarget) -> Result<Vec<String>, RemoteError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RemoteError::Outside {
                url: format!("https://{}/v2/_catalog", t.fqdn),
                ip: t.ip,
                detail: "answered 503 Service Unavailable".into(),
            });
        }
        Ok(self
            .repos
            .lock()
            .expect("repos lock")
            .keys()
            .cloned()
            .collect())
    }

    async fn tags(
        &self,
        _t: &crate::remote::RegistryTarget,
        repository: &str,
    ) -> Result<Vec<crate::remote::registry_api::TagRef>, RemoteError> {
        let repos = self.repos.lock().expect("repos lock");
        Ok(repos
            .get(repository)
            .into_iter()
            .flatten()
            .map(|t| crate::remote::registry_api::TagRef {
                tag: t.tag.clone(),
                digest: t.digest.clone(),
                children: t.children.clone(),
                config: Some(crate::remote::registry_api::ConfigRef::Blob(format!(
                    "config-of-{}",
                    t.digest
                ))),
            })
            .collect())
    }

    async fn created(
        &self,
        _t: &crate::remote::RegistryTarget,
        repository: &str,
        config: &crate::remote::registry_api::ConfigRef,
    ) -> Result<Option<time::OffsetDateTime>, RemoteError> {
        let crate::remote::registry_api::ConfigRef::Blob(c) = config else {
            return Ok(None);
        };
        let repos = self.repos.lock().expect("repos lock");
        Ok(repos
            .get(repository)
            .into_iter()
            .flatten()
            .find(|t| format!("config-of-{}", t.digest) == *c)
            .and_then(|t| t.created))
    }

    async fn delete_manifest(
        &self,
        _t: &crate::remote::RegistryTarget,
        repository: &str,
        digest: &str,
    ) -> Result<(), RemoteError> {
        self.deletes
            .lock()
            .expect("deletes lock")
            .push((repository.to_owned(), digest.to_owned()));
        if let Some(tags) = self.repos.lock().expect("repos lock").get_mut(repository) {
            tags.retain(|t| t.digest != digest);
        }
        Ok(())
    }
}
