//! The provider block: its schema, plan-time validation, and the settings it resolves to
//! (arguments first, then the same environment variables DigitalOcean's own provider reads).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Block, Description};
use tf_provider::value::{Value, ValueNumber, ValueString};
use tf_provider::{AttributePath, Diagnostics};
use url::Url;

use crate::secret::Secret;

pub const DEFAULT_API_ENDPOINT: &str = "https://api.digitalocean.com";
pub const DEFAULT_SPACES_ENDPOINT: &str = "https://{region}.digitaloceanspaces.com";
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const DEFAULT_HTTP_RETRY_MAX: i64 = 4;

/// The provider block as OpenTofu sends it.
#[derive(Serialize, Deserialize, Default, Clone)]
pub struct ProviderConfig<'a> {
    #[serde(borrow = "'a")]
    pub token: ValueString<'a>,
    pub api_endpoint: ValueString<'a>,
    pub spaces_access_id: ValueString<'a>,
    pub spaces_secret_key: ValueString<'a>,
    pub spaces_endpoint: ValueString<'a>,
    pub http_retry_max: ValueNumber,
    pub requests_per_second: ValueNumber,
    pub acme_directory_url: ValueString<'a>,
    pub acme_ca_certificates: ValueString<'a>,
    pub acme_dns_servers: Value<Vec<ValueString<'a>>>,
}

/// What the resource works with once the provider is configured.
#[derive(Clone, Debug)]
pub struct Settings {
    pub token: Secret,
    pub api_endpoint: Url,
    pub spaces_access_id: Option<Secret>,
    pub spaces_secret_key: Option<Secret>,
    /// May hold `{region}`, replaced by the bucket's region.
    pub spaces_endpoint: String,
    pub http_retry_max: u32,
    /// 0 means unlimited.
    pub requests_per_second: u32,
    pub acme_directory_url: Url,
    /// PEM bundle of extra roots trusted for the ACME directory (test CAs such as Pebble).
    pub acme_ca_certificates: Option<String>,
    /// DNS servers asked whether a DNS-01 record is visible; empty: the domain's NS servers.
    pub acme_dns_servers: Vec<std::net::SocketAddr>,
    pub terraform_version: String,
}

fn attr(ty: AttributeType, description: &str, sensitive: bool) -> Attribute {
    Attribute {
        attr_type: ty,
        description: Description::markdown(description),
        constraint: AttributeConstraint::Optional,
        sensitive,
        deprecated: false,
    }
}

pub fn schema_block() -> Block {
    use AttributeType::{Number, String};
    let attributes: HashMap<std::string::String, Attribute> = [
        ("token", attr(String, "DigitalOcean API token. Falls back to `DIGITALOCEAN_TOKEN`, then `DIGITALOCEAN_ACCESS_TOKEN`.", true)),
        ("api_endpoint", attr(String, "Base URL of the DigitalOcean API. Falls back to `DIGITALOCEAN_API_URL`, then `https://api.digitalocean.com`.", false)),
        ("spaces_access_id", attr(String, "Spaces access key id, used to create and empty buckets. Falls back to `SPACES_ACCESS_KEY_ID`.", true)),
        ("spaces_secret_key", attr(String, "Spaces secret key. Falls back to `SPACES_SECRET_ACCESS_KEY`.", true)),
        ("spaces_endpoint", attr(String, "Spaces S3 endpoint; `{region}` is replaced by the bucket's region. Falls back to `SPACES_ENDPOINT_URL`, then `https://{region}.digitaloceanspaces.com`.", false)),
        ("http_retry_max", attr(Number, "How many times a request that failed with 429 or a 5xx (but 501) is retried, honouring `Retry-After`. Default 4.", false)),
        ("requests_per_second", attr(Number, "Client-side limit of API requests per second; 0 (the default) means unlimited.", false)),
        ("acme_directory_url", attr(String, "ACME directory for `tls { source = \"acme\" }`. Default: Let's Encrypt production.", false)),
        ("acme_ca_certificates", attr(String, "Extra PEM root certificates trusted when talking to the ACME directory (for test CAs such as Pebble).", false)),
        ("acme_dns_servers", attr(AttributeType::List(Box::new(AttributeType::String)), "DNS servers (`ip` or `ip:port`) asked whether a DNS-01 challenge record is visible before validation is requested. Default: the domain's own authoritative servers.", false)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Block {
        version: 1,
        attributes,
        description: Description::markdown(
            "Builds private Docker registries on DigitalOcean. Configure it as you would DigitalOcean's own provider.",
        ),
        ..Default::default()
    }
}

fn check_url(diags: &mut Diagnostics, name: &'static str, raw: &str, allow_template: bool) {
    let candidate = if allow_template {
        raw.replace("{region}", "region")
    } else {
        raw.to_owned()
    };
    match Url::parse(&candidate) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {}
        Ok(u) => diags.error(
            format!("Invalid `{name}`"),
            format!(
                "`{name}` must be an http or https URL with a host, got scheme `{}`.",
                u.scheme()
            ),
            AttributePath::new(name),
        ),
        Err(e) => diags.error(
            format!("Invalid `{name}`"),
            format!("`{name}` is not a URL ({e}): {raw:?}"),
            AttributePath::new(name),
        ),
    }
}

fn check_non_negative(diags: &mut Diagnostics, name: &'static str, v: &ValueNumber) {
    if let Some(n) = v.as_ref_option() {
        if *n < 0 {
            diags.error(
                format!("Invalid `{name}`"),
                format!("`{name}` must be 0 or more, got {n}."),
                AttributePath::new(name),
            );
        } else if *n > u32::MAX as i64 {
            diags.error(
                format!("Invalid `{name}`"),
                format!("`{name}` is too large: {n}."),
                AttributePath::new(name),
            );
        }
    }
}

/// Counts PEM certificates in a bundle; `Err` says what is wrong with it.
pub fn count_pem_certificates(pem: &str) -> Result<usize, String> {
    let begins = pem.matches("-----BEGIN CERTIFICATE-----").count();
    let ends = pem.matches("-----END CERTIFICATE-----").count();
    if begins == 0 {
        return Err("no `-----BEGIN CERTIFICATE-----` block found".into());
    }
    if begins != ends {
        return Err(format!(
            "{begins} BEGIN markers but {ends} END markers: the bundle is cut"
        ));
    }
    reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map(|v| v.len())
        .map_err(|e| format!("not valid PEM certificates: {e}"))
}

/// `ip` or `ip:port` (port 53 when left out).
pub fn parse_dns_server(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not `ip` or `ip:port`"))
}

fn dns_servers(config: &ProviderConfig<'_>) -> Vec<Result<std::net::SocketAddr, String>> {
    config
        .acme_dns_servers
        .as_ref_option()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_ref_option().map(|s| parse_dns_server(s)))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks every known value; unknown values (computed elsewhere) are checked at configure.
pub fn validate(diags: &mut Diagnostics, config: &ProviderConfig<'_>) {
    for (i, r) in dns_servers(config).into_iter().enumerate() {
        if let Err(e) = r {
            diags.error(
                "Invalid `acme_dns_servers`",
                format!("{e}."),
                AttributePath::new("acme_dns_servers").index(i as i64),
            );
        }
    }
    for (name, value, template) in [
        ("api_endpoint", &config.api_endpoint, false),
        ("spaces_endpoint", &config.spaces_endpoint, true),
        ("acme_directory_url", &config.acme_directory_url, false),
    ] {
        if let Some(raw) = value.as_ref_option() {
            check_url(diags, name, raw, template);
        }
    }
    check_non_negative(diags, "http_retry_max", &config.http_retry_max);
    check_non_negative(diags, "requests_per_second", &config.requests_per_second);
    if let Some(pem) = config.acme_ca_certificates.as_ref_option() {
        if let Err(e) = count_pem_certificates(pem) {
            diags.error(
                "Invalid `acme_ca_certificates`",
                format!("`acme_ca_certificates` must hold PEM certificates: {e}."),
                AttributePath::new("acme_ca_certificates"),
            );
        }
    }
}

/// Where a value comes from: the argument, else the first environment variable that is set.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

fn pick(value: &ValueString<'_>, env: &dyn Env, vars: &[&str]) -> Option<String> {
    value
        .as_ref_option()
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty())
        .or_else(|| vars.iter().find_map(|v| env.get(v)))
}

pub fn resolve(
    diags: &mut Diagnostics,
    config: &ProviderConfig<'_>,
    env: &dyn Env,
    terraform_version: String,
) -> Option<Settings> {
    validate(diags, config);
    let token = pick(
        &config.token,
        env,
        &["DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"],
    );
    let Some(token) = token else {
        diags.error(
            "No DigitalOcean API token",
            "Set `token` in the provider block, or the environment variable DIGITALOCEAN_TOKEN \
             (or DIGITALOCEAN_ACCESS_TOKEN). For localocean, `localocean up` prints one.",
            AttributePath::new("token"),
        );
        return None;
    };
    let api = pick(&config.api_endpoint, env, &["DIGITALOCEAN_API_URL"])
        .unwrap_or_else(|| DEFAULT_API_ENDPOINT.to_owned());
    check_url(diags, "api_endpoint", &api, false);
    let spaces_endpoint = pick(&config.spaces_endpoint, env, &["SPACES_ENDPOINT_URL"])
        .unwrap_or_else(|| DEFAULT_SPACES_ENDPOINT.to_owned());
    check_url(diags, "spaces_endpoint", &spaces_endpoint, true);
    let acme = pick(&config.acme_directory_url, env, &[])
        .unwrap_or_else(|| DEFAULT_ACME_DIRECTORY.to_owned());
    check_url(diags, "acme_directory_url", &acme, false);
    if diags.errors.iter().len() > 0 {
        return None;
    }
    Some(Settings {
        token: Secret::new(token),
        api_endpoint: Url::parse(&api).ok()?,
        spaces_access_id: pick(&config.spaces_access_id, env, &["SPACES_ACCESS_KEY_ID"])
            .map(Secret::new),
        spaces_secret_key: pick(
            &config.spaces_secret_key,
            env,
            &["SPACES_SECRET_ACCESS_KEY"],
        )
        .map(Secret::new),
        spaces_endpoint,
        http_retry_max: config
            .http_retry_max
            .as_ref_option()
            .map(|n| *n as u32)
            .unwrap_or(DEFAULT_HTTP_RETRY_MAX as u32),
        requests_per_second: config
            .requests_per_second
            .as_ref_option()
            .map(|n| *n as u32)
            .unwrap_or(0),
        acme_directory_url: Url::parse(&acme).ok()?,
        acme_ca_certificates: pick(&config.acme_ca_certificates, env, &[]),
        acme_dns_servers: dns_servers(config)
            .into_iter()
            .filter_map(Result::ok)
            .collect(),
        terraform_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeEnv(Vec<(&'static str, &'static str)>);
    impl Env for FakeEnv {
        fn get(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn error_paths(diags: &Diagnostics) -> Vec<String> {
        diags
            .errors
            .iter()
            .map(|d| d.attribute.to_string())
            .collect()
    }

    #[test]
    fn token_falls_back_to_env_in_order() {
        let mut d = Diagnostics::default();
        let env = FakeEnv(vec![
            ("DIGITALOCEAN_ACCESS_TOKEN", "second"),
            ("DIGITALOCEAN_TOKEN", "first"),
        ]);
        let s = resolve(&mut d, &ProviderConfig::default(), &env, "1.6.2".into()).unwrap();
        assert_eq!(s.token.expose(), "first");
        assert_eq!(s.api_endpoint.as_str(), "https://api.digitalocean.com/");
        assert_eq!(s.http_retry_max, 4);
        assert_eq!(s.requests_per_second, 0);
        let env = FakeEnv(vec![("DIGITALOCEAN_ACCESS_TOKEN", "second")]);
        let s = resolve(&mut d, &ProviderConfig::default(), &env, "1.6.2".into()).unwrap();
        assert_eq!(s.token.expose(), "second");
    }

    #[test]
    fn argument_wins_over_env() {
        let mut d = Diagnostics::default();
        let env = FakeEnv(vec![
            ("DIGITALOCEAN_TOKEN", "env"),
            ("DIGITALOCEAN_API_URL", "http://env:1"),
        ]);
        let cfg = ProviderConfig {
            token: "arg".into(),
            api_endpoint: "http://127.0.0.1:8080".into(),
            ..Default::default()
        };
        let s = resolve(&mut d, &cfg, &env, String::new()).unwrap();
        assert_eq!(s.token.expose(), "arg");
        assert_eq!(s.api_endpoint.as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn missing_token_names_the_env_vars() {
        let mut d = Diagnostics::default();
        assert!(resolve(
            &mut d,
            &ProviderConfig::default(),
            &FakeEnv(vec![]),
            String::new()
        )
        .is_none());
        let e = &d.errors[0];
        assert!(
            e.detail.contains("DIGITALOCEAN_TOKEN")
                && e.detail.contains("DIGITALOCEAN_ACCESS_TOKEN")
        );
        assert_eq!(error_paths(&d), vec!["token".to_string()]);
    }

    #[test]
    fn bad_values_name_their_attribute() {
        let mut d = Diagnostics::default();
        let cfg = ProviderConfig {
            api_endpoint: "not a url".into(),
            spaces_endpoint: "ftp://{region}.example".into(),
            http_retry_max: (-1).into(),
            requests_per_second: (-3).into(),
            acme_ca_certificates: "hello".into(),
            ..Default::default()
        };
        validate(&mut d, &cfg);
        let mut paths = error_paths(&d);
        paths.sort();
        assert_eq!(
            paths,
            vec![
                "acme_ca_certificates",
                "api_endpoint",
                "http_retry_max",
                "requests_per_second",
                "spaces_endpoint"
            ]
        );
    }

    #[test]
    fn spaces_endpoint_template_is_accepted() {
        let mut d = Diagnostics::default();
        let cfg = ProviderConfig {
            spaces_endpoint: "https://{region}.digitaloceanspaces.com".into(),
            ..Default::default()
        };
        validate(&mut d, &cfg);
        assert!(d.errors.is_empty());
    }
}
