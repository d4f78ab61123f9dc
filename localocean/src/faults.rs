//! Faults armed through `/_localocean/faults`: HTTP error storms, droplets that 404 after
//! create, slow or failed boots, SSH refused. Each fault records when it fired.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What the machines layer offers for the `ssh_refused` fault. The API has no way into a
/// machine itself, so the lifecycle code registers an implementation with
/// `App::set_ssh_faults`.
#[async_trait]
pub trait SshFaults: Send + Sync + 'static {
    /// Makes sshd on the droplet refuse connections for `seconds`, then accept again.
    async fn refuse_ssh(&self, droplet_id: u64, seconds: u64) -> anyhow::Result<()>;
}

/// A fault as posted to the admin endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultSpec {
    /// The next `count` matching /v2 requests answer `status` instead of being served.
    Http {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        #[serde(default = "default_prefix")]
        path_prefix: String,
        #[serde(default = "one")]
        count: u32,
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// The next created droplet answers 404 on GET for `seconds` after its create.
    #[serde(rename = "droplet_404")]
    Droplet404 { seconds: u64 },
    /// The next boot waits `seconds` before the machine is started.
    BootDelay { seconds: u64 },
    /// The next create action ends `errored` and no machine is made.
    BootError,
    /// sshd on the droplet refuses connections for `seconds`. Without `droplet_id`, the next
    /// droplet to boot: armed before its create, the refusal starts before the droplet turns
    /// active, so a client never sees SSH open (how the acceptance tests fail an apply halfway).
    SshRefused {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        droplet_id: Option<u64>,
        seconds: u64,
    },
}

fn default_prefix() -> String {
    "/v2/".to_string()
}
fn one() -> u32 {
    1
}

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("status {0} is not a fault status (use 429, 500, 502, 503 or 504)")]
    BadStatus(u16),
    #[error("count must be at least 1")]
    ZeroCount,
}

impl FaultSpec {
    pub fn validate(&self) -> Result<(), FaultError> {
        if let FaultSpec::Http { status, count, .. } = self {
            if !matches!(status, 429 | 500 | 502 | 503 | 504) {
                return Err(FaultError::BadStatus(*status));
            }
            if *count == 0 {
                return Err(FaultError::ZeroCount);
            }
        }
        Ok(())
    }
}

/// An armed fault and its firing history, as the admin endpoint lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ArmedFault {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub armed_at: String,
    /// How many times it fired (HTTP answers replaced, 404s served, boots delayed...).
    pub fired: u32,
    pub fired_at: Vec<String>,
    /// False once it has nothing left to do; it stays listed until cleared.
    pub active: bool,
    /// The droplet a `droplet_404` fault was bound to at create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub droplet_id: Option<u64>,
    #[serde(skip)]
    until: Option<Instant>,
}

/// An HTTP fault's answer.
#[derive(Clone, Debug)]
pub struct HttpFault {
    pub status: u16,
    pub retry_after: Option<u64>,
}

#[derive(Default)]
pub struct Faults {
    inner: Mutex<Vec<ArmedFault>>,
    next_id: Mutex<u64>,
}

fn now_string() -> String {
    crate::api::now_rfc3339()
}

impl Faults {
    pub fn new() -> Faults {
        Faults::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ArmedFault>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms a fault; returns its listing. `ssh_refused` is fired by the caller right away.
    pub fn arm(&self, spec: FaultSpec) -> Result<ArmedFault, FaultError> {
        spec.validate()?;
        let id = {
            let mut n = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let fault = ArmedFault {
            id,
            spec,
            armed_at: now_string(),
            fired: 0,
            fired_at: Vec::new(),
            active: true,
            droplet_id: None,
            until: None,
        };
        self.lock().push(fault.clone());
        Ok(fault)
    }

    pub fn list(&self) -> Vec<ArmedFault> {
        let mut faults = self.lock();
        let now = Instant::now();
        for f in faults.iter_mut() {
            if let Some(until) = f.until {
                if now >= until {
                    f.active = false;
                }
            }
        }
        faults.clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Records that fault `id` fired outside this module (ssh_refused).
    pub fn mark_fired(&self, id: u64, still_active: bool) {
        if let Some(f) = self.lock().iter_mut().find(|f| f.id == id) {
            f.fired += 1;
            f.fired_at.push(now_string());
            f.active = still_active;
        }
    }

    /// The answer for this request if an HTTP fault matches it; consumes one count.
    pub fn take_http(&self, method: &str, path: &str) -> Option<HttpFault> {
        let mut faults = self.lock();
        for f in faults.iter_mut().filter(|f| f.active) {
            if let FaultSpec::Http {
                method: m,
                path_prefix,
                count,
                status,
                retry_after,
            } = &f.spec
            {
                let method_matches = match m {
                    Some(m) => m.eq_ignore_ascii_case(method),
                    None => true,
                };
                if method_matches && path.starts_with(path_prefix.as_str()) {
                    f.fired += 1;
                    f.fired_at.push(now_string());
                    if f.fired >= *count {
                        f.active = false;
                    }
                    return Some(HttpFault {
                        status: *status,
                        retry_after: *retry_after,
                    });
                }
            }
        }
        None
    }

    /// Called at droplet create: binds a pending `droplet_404` fault to this droplet.
    pub fn bind_droplet_404(&self, droplet_id: u64) {
        let mut faults = self.lock();
        if let Some(f) = faults.iter_mut().find(|f| {
            f.active && f.droplet_id.is_none() && matches!(f.spec, FaultSpec::Droplet404 { .. })
        }) {
            if let FaultSpec::Droplet404 { seconds } = f.spec {
                f.droplet_id = Some(droplet_id);
                f.until = Some(Instant::now() + Duration::from_secs(seconds));
            }
        }
    }

    /// True if GET of this droplet must answer 404 now; counts each such answer.
    pub fn droplet_hidden(&self, droplet_id: u64) -> bool {
        let mut faults = self.lock();
        let now = Instant::now();
        for f in faults.iter_mut() {
            if f.droplet_id == Some(droplet_id) && matches!(f.spec, FaultSpec::Droplet404 { .. }) {
                match f.until {
                    Some(until) if now < until => {
                        f.fired += 1;
                        f.fired_at.push(now_string());
                        return true;
                    }
                    _ => f.active = false,
                }
            }
        }
        false
    }

    /// Called once per boot: the delay to wait (if a boot_delay fault is armed) and whether
    /// the boot must fail (if a boot_error fault is armed). Both are consumed.
    /// The armed `ssh_refused` without a droplet id, if any: (fault id, seconds). Fires it.
    pub fn take_next_ssh_refusal(&self) -> Option<(u64, u64)> {
        let mut faults = self.lock();
        let f = faults.iter_mut().find(|f| {
            f.active
                && matches!(
                    f.spec,
                    FaultSpec::SshRefused {
                        droplet_id: None,
                        ..
                    }
                )
        })?;
        let FaultSpec::SshRefused { seconds, .. } = f.spec else {
            return None;
        };
        f.fired += 1;
        f.fired_at.push(now_string());
        f.active = false;
        Some((f.id, seconds))
    }

    pub fn take_boot_faults(&self) -> (Option<Duration>, bool) {
        let mut faults = self.lock();
        let mut delay = None;
        let mut error = false;
        for f in faults.iter_mut().filter(|f| f.active) {
            match f.spec {
                FaultSpec::BootDelay { seconds } if delay.is_none() => {
                    delay = Some(Duration::from_secs(seconds));
                }
                FaultSpec::BootError if !error => error = true,
                _ => continue,
            }
            f.fired += 1;
            f.fired_at.push(now_string());
            f.active = false;
        }
        (delay, error)
    }
}
