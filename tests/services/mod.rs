//! Tests of the provider's clients against real services started here, no machines: Pebble
//! (ACME orders: `acme::pebble_*`) and Garage (Spaces: `spaces::garage_*`), each with
//! localocean's API and DNS in process. Run with `cargo test --test suite -- services::`.

mod acme;
mod spaces;

use std::time::Duration;

use terraform_provider_docker::config::Settings;
use terraform_provider_docker::do_api::Timings;
use terraform_provider_docker::secret::Secret;
use url::Url;

/// The token the in-process API accepts.
pub const TOKEN: &str = "services-test-token-0123456789";

/// Backoff and polling in tens of milliseconds.
pub fn fast() -> Timings {
    Timings {
        backoff_start: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        poll_start: Duration::from_millis(50),
        poll_max: Duration::from_millis(200),
        not_found_grace: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
    }
}

/// Provider settings for the in-process API at `api`, with Spaces credentials
/// (endpoint, access key, secret) if given.
pub fn settings(api: &str, spaces: Option<(&str, &str, &str)>) -> Settings {
    Settings {
        token: Secret::new(TOKEN),
        api_endpoint: Url::parse(api).unwrap(),
        spaces_access_id: spaces.map(|(_, a, _)| Secret::new(a)),
        spaces_secret_key: spaces.map(|(_, _, s)| Secret::new(s)),
        spaces_endpoint: spaces.map(|(e, _, _)| e.to_owned()).unwrap_or_default(),
        http_retry_max: 2,
        requests_per_second: 0,
        acme_directory_url: Url::parse("https://acme.invalid/dir").unwrap(),
        acme_ca_certificates: None,
        acme_dns_servers: Vec::new(),
        terraform_version: "1.8.0".into(),
    }
}
