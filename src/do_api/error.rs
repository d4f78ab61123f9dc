//! The one error type of the DigitalOcean client: API error bodies, transport failures,
//! unparseable payloads, and waits that ran out of time, each able to name the object.

use std::fmt;
use std::time::Duration;

/// Everything a call to the DigitalOcean API can fail with.
///
/// No variant ever holds the API token: it lives only in a sensitive request header. Bodies
/// quoted in [`Error::InvalidPayload`] and [`Error::Api`] are redacted before they get here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DigitalOcean answered with an error status. `id` and `message` come from its error body
    /// (`{"id":"not_found","message":...}`); for bodies that are not DO's JSON (an HTML 502
    /// page from a proxy) `id` is derived from the status and `message` quotes the body.
    #[error("{method} {path}: DigitalOcean API error {status} ({id}): {message}{}", request_suffix(.request_id))]
    Api {
        method: String,
        path: String,
        status: u16,
        id: String,
        message: String,
        request_id: Option<String>,
    },

    /// The request did not complete: DNS, connect, TLS, reset, or the client-side timeout.
    #[error("{method} {path}: {}", crate::error_chain::display_chain(.source))]
    Transport {
        method: String,
        path: String,
        #[source]
        source: reqwest::Error,
    },

    /// A success status whose body is not what the API documents.
    #[error("{method} {path}: unexpected response body (status {status}): {reason}; body starts with: {snippet:?}")]
    InvalidPayload {
        method: String,
        path: String,
        status: u16,
        reason: String,
        snippet: String,
    },

    /// A wait reached its deadline. Displays as
    /// "waiting for droplet (1234) to become active: still new after 20m".
    #[error("{what}: still {state} after {}", human_duration(*.elapsed))]
    Timeout {
        what: String,
        state: String,
        elapsed: Duration,
    },

    /// An action (power off, attach, resize...) ended in DigitalOcean's `errored` state.
    #[error("{what}: action {action_id} ({kind}) errored")]
    ActionErrored {
        what: String,
        action_id: u64,
        kind: String,
    },

    /// An object reached a state from which the awaited state cannot follow.
    #[error("{what}: unexpected state {state:?} (waiting for {target:?})")]
    UnexpectedState {
        what: String,
        state: String,
        target: String,
    },

    /// The client could not be set up or a request not built (a token with a newline in it).
    #[error("DigitalOcean client: {0}")]
    Config(String),

    /// Another error, with what was being done to which object: "creating droplet (web-1): ...".
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// True when the API said 404, however deeply the error is wrapped in context.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The HTTP status DigitalOcean answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Context { source, .. } => source.status(),
            _ => None,
        }
    }

    /// DigitalOcean's error id (`not_found`, `unprocessable_entity`, ...), if it answered.
    pub fn api_id(&self) -> Option<&str> {
        match self {
            Error::Api { id, .. } => Some(id),
            Error::Context { source, .. } => source.api_id(),
            _ => None,
        }
    }

    /// True for a wait that ran out of time, however deeply wrapped.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Context { source, .. } => source.is_timeout(),
            _ => false,
        }
    }

    /// Wraps the error with the operation and object: `e.context("deleting droplet", 1234)`
    /// displays as "deleting droplet (1234): ...".
    pub fn context(self, doing: &str, object: impl fmt::Display) -> Error {
        Error::Context {
            what: format!("{doing} ({object})"),
            source: Box::new(self),
        }
    }

    /// Whether the failure may have happened after DigitalOcean acted on the request: a 5xx
    /// (but 501) or a transport failure once the request may have left.
    pub(crate) fn is_ambiguous(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status >= 500 && *status != 501,
            Error::Transport { source, .. } => !source.is_connect() && !source.is_builder(),
            Error::Context { source, .. } => source.is_ambiguous(),
            _ => false,
        }
    }
}

/// Adds `.context(...)` to results, so call sites read `client.get(..).await.context("reading droplet", id)?`.
pub trait ResultExt<T> {
    fn context(self, doing: &str, object: impl fmt::Display) -> Result<T, Error>;
}

impl<T> ResultExt<T> for Result<T, Error> {
    fn context(self, doing: &str, object: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|e| e.context(doing, object))
    }
}

fn request_suffix(request_id: &Option<String>) -> String {
    match request_id {
        Some(id) if !id.is_empty() => format!(" (request id {id})"),
        _ => String::new(),
    }
}

/// "20m", "1m30s", "2h5m", "800ms": how long a wait lasted, for messages.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> Error {
        Error::Api {
            method: "GET".into(),
            path: "/v2/droplets/1".into(),
            status,
            id: "not_found".into(),
            message: "The resource you were accessing could not be found.".into(),
            request_id: Some("abc".into()),
        }
    }

    #[test]
    fn not_found_is_seen_through_context() {
        let e = api(404).context("reading droplet", 1);
        assert!(e.is_not_found());
        assert_eq!(e.api_id(), Some("not_found"));
        assert!(!api(500).is_not_found());
        assert_eq!(
            e.to_string(),
            "reading droplet (1): GET /v2/droplets/1: DigitalOcean API error 404 (not_found): \
             The resource you were accessing could not be found. (request id abc)"
        );
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human_duration(Duration::from_secs(1200)), "20m");
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h5m");
        assert_eq!(human_duration(Duration::from_millis(800)), "800ms");
        let t = Error::Timeout {
            what: "waiting for droplet (123) to become active".into(),
            state: "new".into(),
            elapsed: Duration::from_secs(1200),
        };
        assert_eq!(
            t.to_string(),
            "waiting for droplet (123) to become active: still new after 20m"
        );
        assert!(t.context("creating registry", "r").is_timeout());
    }

    #[test]
    fn ambiguity_follows_status() {
        assert!(api(502).is_ambiguous());
        assert!(!api(501).is_ambiguous());
        assert!(!api(422).is_ambiguous());
    }
}
