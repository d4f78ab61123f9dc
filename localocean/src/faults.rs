//! Faults armed through `/_localocean/faults`: HTTP error storms, droplets that 404 after
//! create, slow or failed boots, SSH refused, Spaces throttling. Each records when it fired.

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
    /// Spaces (S3, on every endpoint: the host's and the droplets') answers `status` with
    /// S3's XML error, as Spaces does when busy: `503 SlowDown` (the default) or
    /// `500 InternalError`. `count` answers in all; with `share`, only that share of the
    /// matching requests, spread evenly (a busy Spaces, not one that is down).
    Spaces {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        #[serde(default = "root_prefix")]
        path_prefix: String,
        #[serde(default = "one")]
        count: u32,
        #[serde(default = "slow_down")]
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        share: Option<f64>,
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
fn root_prefix() -> String {
    "/".to_string()
}
fn slow_down() -> u16 {
    503
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
    #[error(
        "status {0} is not a Spaces fault status (use 503 for SlowDown or 500 for InternalError)"
    )]
    BadSpacesStatus(u16),
    #[error("share must be above 0 and at most 1")]
    BadShare,
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
        if let FaultSpec::Spaces {
            status,
            count,
            share,
            ..
        } = self
        {
            if !matches!(status, 500 | 503) {
                return Err(FaultError::BadSpacesStatus(*status));
            }
            if *count == 0 {
                return Err(FaultError::ZeroCount);
            }
            if share.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
                return Err(FaultError::BadShare);
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
    /// Requests a `spaces` fault with a `share` has matched, faulted or not.
    #[serde(skip)]
    matched: u64,
}

/// A Spaces fault's answer: S3's status, error code and message.
#[derive(Clone, Debug, PartialEq)]
pub struct SpacesFault {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
    pub retry_after: Option<u64>,
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
    crate::clock::now_rfc3339()
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
            matched: 0,
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

    /// Makes fault `id` inactive; false if there is no such fault.
    pub fn disarm(&self, id: u64) -> bool {
        let mut faults = self.lock();
        let Some(f) = faults.iter_mut().find(|f| f.id == id) else {
            return false;
        };
        f.active = false;
        f.until = None;
        true
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

    /// The answer for this Spaces request if a `spaces` fault takes it; consumes one count.
    pub fn take_spaces(&self, method: &str, path: &str) -> Option<SpacesFault> {
        let mut faults = self.lock();
        for f in faults.iter_mut().filter(|f| f.active) {
            let FaultSpec::Spaces {
                method: m,
                path_prefix,
                count,
                status,
                share,
                retry_after,
            } = &f.spec
            else {
                continue;
            };
            let method_matches = m.as_ref().is_none_or(|m| m.eq_ignore_ascii_case(method));
            if !method_matches || !path.starts_with(path_prefix.as_str()) {
                continue;
            }
            if let Some(p) = share {
                // Request n is faulted when n * share passes a whole number: evenly spread,
                // and the same on every run.
                f.matched += 1;
                let n = f.matched as f64;
                if (n * p).floor() <= ((n - 1.0) * p).floor() {
                    continue;
                }
            }
            f.fired += 1;
            f.fired_at.push(now_string());
            if f.fired >= *count {
                f.active = false;
            }
            let (code, message) = if *status == 500 {
                (
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                )
            } else {
                ("SlowDown", "Please reduce your request rate.")
            };
            return Some(SpacesFault {
                status: *status,
                code,
                message,
                retry_after: *retry_after,
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spaces(count: u32, status: u16, share: Option<f64>) -> FaultSpec {
        FaultSpec::Spaces {
            method: Some("PUT".into()),
            path_prefix: "/bkt/".into(),
            count,
            status,
            share,
            retry_after: None,
        }
    }

    #[test]
    fn spaces_faults_parse_with_slow_down_as_the_default() {
        let spec: FaultSpec = serde_json::from_value(serde_json::json!({
            "kind": "spaces", "count": 3
        }))
        .unwrap();
        assert_eq!(
            spec,
            FaultSpec::Spaces {
                method: None,
                path_prefix: "/".into(),
                count: 3,
                status: 503,
                share: None,
                retry_after: None,
            }
        );
        let f = Faults::new();
        assert!(matches!(
            f.arm(spaces(1, 502, None)),
            Err(FaultError::BadSpacesStatus(502))
        ));
        assert!(matches!(
            f.arm(spaces(0, 503, None)),
            Err(FaultError::ZeroCount)
        ));
        for share in [0.0, 1.5, f64::NAN] {
            assert!(matches!(
                f.arm(spaces(1, 503, Some(share))),
                Err(FaultError::BadShare)
            ));
        }
        assert!(f.list().is_empty());
    }

    #[test]
    fn spaces_faults_answer_count_matching_requests_then_stop() {
        let f = Faults::new();
        f.arm(spaces(2, 503, None)).unwrap();
        assert_eq!(f.take_spaces("GET", "/bkt/a"), None, "another method");
        assert_eq!(f.take_spaces("PUT", "/other/a"), None, "another bucket");
        let first = f.take_spaces("put", "/bkt/a").unwrap();
        assert_eq!((first.status, first.code), (503, "SlowDown"));
        assert!(f.take_spaces("PUT", "/bkt/b").is_some());
        assert_eq!(f.take_spaces("PUT", "/bkt/c"), None);
        let listed = f.list();
        assert_eq!((listed[0].fired, listed[0].active), (2, false));
        // No API fault takes a Spaces request's place, nor the other way round.
        f.arm(spaces(5, 500, None)).unwrap();
        assert_eq!(f.take_http("PUT", "/bkt/a").map(|h| h.status), None);
        assert_eq!(
            f.take_spaces("PUT", "/bkt/a").map(|s| s.code),
            Some("InternalError")
        );
    }

    #[test]
    fn a_share_of_spaces_requests_is_spread_evenly() {
        let f = Faults::new();
        f.arm(spaces(100, 503, Some(0.25))).unwrap();
        let hits: Vec<bool> = (0..8)
            .map(|_| f.take_spaces("PUT", "/bkt/x").is_some())
            .collect();
        assert_eq!(hits, [false, false, false, true, false, false, false, true]);
        assert_eq!(f.list()[0].fired, 2);
        assert!(f.disarm(f.list()[0].id));
        assert!(!f.disarm(999));
        assert!(!f.list()[0].active);
        assert_eq!(f.take_spaces("PUT", "/bkt/x"), None);
    }
}
