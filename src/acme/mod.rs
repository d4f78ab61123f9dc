//! Certificates from an ACME CA (Let's Encrypt; Pebble in tests) via instant-acme: account, order,
//! DNS-01 through DigitalOcean records, through the droplet's own DNS server (a delegated
//! challenge name) or HTTP-01 through the droplet; renewal rule (ARI), revoke, CAA helpers.

mod dns;
mod http;
pub mod renewal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    Problem, RetryPolicy, RevocationReason, RevocationRequest,
};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use url::Url;

use crate::config::Settings;
use crate::do_api::{self, DomainRecordRequest};
use crate::remote::{shell_quote, RemoteError, Transport};
use crate::render::paths;
use crate::secret::Secret;
use crate::tls::{self, Issued};

pub use dns::DnsError;

/// How long the CA may take to validate and issue once the challenge is in place.
const DEFAULT_ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a TXT record may take to reach every authoritative server. DigitalOcean's
/// servers usually answer within seconds; a few minutes covers a slow one.
const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(300);
/// Orders placed before a persistent badNonce is reported.
const ORDER_ATTEMPTS: u32 = 3;
/// DigitalOcean's minimum TTL: a stale negative answer must not linger in the CA's resolver.
const CHALLENGE_TTL: u32 = 30;

/// Where and how to order certificates.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    pub directory_url: Url,
    /// PEM bundle of extra roots trusted for the directory (Pebble's listener CA in tests).
    pub extra_roots_pem: Option<String>,
    /// DNS servers asked whether the TXT record is visible; empty means the domain's own NS
    /// records, resolved through the system resolver.
    pub dns_servers: Vec<SocketAddr>,
    /// Bound on waiting for the TXT record to show on every server.
    pub propagation_timeout: Duration,
    /// Bound on each wait for the CA (validation, then issuance).
    pub order_timeout: Duration,
}

impl AcmeConfig {
    pub fn new(directory_url: Url) -> AcmeConfig {
        AcmeConfig {
            directory_url,
            extra_roots_pem: None,
            dns_servers: Vec::new(),
            propagation_timeout: DEFAULT_PROPAGATION_TIMEOUT,
            order_timeout: DEFAULT_ORDER_TIMEOUT,
        }
    }

    /// The provider's `acme_directory_url`, `acme_ca_certificates` and `acme_dns_servers`;
    /// default timeouts.
    pub fn from_settings(settings: &Settings) -> AcmeConfig {
        AcmeConfig {
            extra_roots_pem: settings.acme_ca_certificates.clone(),
            dns_servers: settings.acme_dns_servers.clone(),
            ..AcmeConfig::new(settings.acme_directory_url.clone())
        }
    }
}

/// The certificate's key algorithm (`tls.key_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyType {
    #[default]
    EcdsaP256,
    Rsa2048,
    Rsa4096,
}

impl KeyType {
    pub const ALL: [&'static str; 3] = ["ecdsa-p256", "rsa-2048", "rsa-4096"];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }
}

impl std::str::FromStr for KeyType {
    type Err = AcmeError;
    fn from_str(s: &str) -> Result<KeyType, AcmeError> {
        match s {
            "ecdsa-p256" => Ok(KeyType::EcdsaP256),
            "rsa-2048" => Ok(KeyType::Rsa2048),
            "rsa-4096" => Ok(KeyType::Rsa4096),
            other => Err(AcmeError::Key(format!(
                "unknown key_type {other:?}; use one of {}",
                KeyType::ALL.join(", ")
            ))),
        }
    }
}

/// How the CA checks that we control the name.
#[derive(Clone)]
pub enum Challenge {
    /// A TXT record `_acme-challenge.<fqdn>` in `domain`, a DigitalOcean domain that holds fqdn.
    Dns01 {
        client: do_api::Client,
        domain: String,
    },
    /// A file under `paths::ACME_HTTP01_DIR` on every droplet (several behind a load
    /// balancer: the CA's check reaches any of them), served by nginx on port 80.
    Http01 { transports: Vec<Arc<dyn Transport>> },
    /// A TXT record in the droplet's own DNS server, to which `_acme-challenge.<fqdn>` is
    /// delegated (renewal on the droplet with DNS-01); `server` answers for it (the droplet's
    /// address, port 53) when the provider has no `acme_dns_servers`.
    Dns01Droplet {
        transport: Arc<dyn Transport>,
        server: SocketAddr,
    },
}

impl Challenge {
    fn kind(&self) -> ChallengeType {
        match self {
            Challenge::Dns01 { .. } | Challenge::Dns01Droplet { .. } => ChallengeType::Dns01,
            Challenge::Http01 { .. } => ChallengeType::Http01,
        }
    }
}

/// `nsupdate -l` on the droplet: its named accepts updates signed with the session key it
/// made, readable by root only.
fn nsupdate_command(record: &str, value: Option<&str>) -> String {
    let update = match value {
        Some(v) => format!("update add {record}. {CHALLENGE_TTL} TXT \"{v}\"\nsend\n"),
        None => format!("update delete {record}. TXT\nsend\n"),
    };
    let once = format!("printf '%s' {} | nsupdate -l", shell_quote(&update));
    if value.is_none() {
        return once;
    }
    // named may be down (the droplet's renewal failing for that reason): it must answer now.
    // Its session key appears a moment after it starts.
    format!(
        "systemctl is-active --quiet named || systemctl restart named; \
         for i in 1 2 3 4 5 6 7 8 9 10; do {once} && exit 0; sleep 1; done; exit 1"
    )
}

/// How long each phase took, for the lead's timing output.
#[derive(Clone, Debug, Default)]
pub struct IssueTimings {
    /// Account loaded or created and order placed.
    pub order_placed: Duration,
    /// The challenge answer is in place (DNS: visible on every server asked).
    pub challenge_ready: Duration,
    /// The CA validated the name.
    pub validated: Duration,
    /// The certificate is downloaded.
    pub issued: Duration,
}

/// What `issue` hands back.
#[derive(Clone, Debug)]
pub struct Issuance {
    pub issued: Issued,
    /// The account credentials to keep in state (instant-acme's `AccountCredentials` as JSON);
    /// new when none were given, or when the given ones belong to another directory or the CA
    /// no longer knows them.
    pub account: Secret,
    pub timings: IssueTimings,
    /// Things that went wrong after the certificate was issued (a challenge record that could
    /// not be removed): worth a warning, not a failure.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME client setup: {0}")]
    Setup(String),
    #[error("the stored ACME account credentials are unreadable ({0})")]
    Credentials(String),
    /// instant-acme retries each request on badNonce; `issue` also retries the whole order.
    #[error("the CA at {directory} kept rejecting our nonces (badNonce); try again")]
    BadNonce { directory: String },
    /// `issue` recovers from this by creating a new account; `revoke` cannot.
    #[error("the CA at {directory} does not know the stored ACME account (it was deactivated, or a test CA restarted)")]
    AccountUnknown { directory: String },
    #[error("{step} at {directory}: {detail}")]
    Ca {
        step: String,
        directory: String,
        detail: String,
    },
    #[error("the CA at {directory} rate-limited us ({detail}); {}", retry_hint(.retry_after))]
    RateLimited {
        directory: String,
        detail: String,
        retry_after: Option<String>,
    },
    #[error("CAA records for {fqdn} do not allow this CA ({detail}); add a CAA record `0 issue \"{ca}\"` to the domain (or set `caa = true`), or remove the CAA records that forbid it")]
    Caa {
        fqdn: String,
        ca: String,
        detail: String,
    },
    #[error("creating the DNS-01 challenge record TXT {record}: {source}")]
    CreateRecord {
        record: String,
        #[source]
        source: Box<do_api::Error>,
    },
    #[error("the DNS-01 challenge record TXT {record} did not appear on {servers} within {}s; {hint}", .waited.as_secs())]
    Propagation {
        record: String,
        servers: String,
        waited: Duration,
        hint: &'static str,
    },
    #[error("checking the DNS-01 challenge record TXT {record}: {source}")]
    Dns {
        record: String,
        #[source]
        source: DnsError,
    },
    #[error("writing TXT {record} into the droplet's DNS server: {detail}")]
    DropletDns { record: String, detail: String },
    #[error("the CA could not validate TXT {record}: {detail}")]
    Dns01Failed { record: String, detail: String },
    #[error("writing the HTTP-01 answer {path}: {source}")]
    Upload {
        path: String,
        #[source]
        source: RemoteError,
    },
    #[error("the CA could not fetch {url}: {detail}; check that port 80 of {fqdn} reaches the droplet (DNS A record, firewall) and nginx runs")]
    Http01Failed {
        url: String,
        fqdn: String,
        detail: String,
    },
    #[error("{fqdn} is not inside the DigitalOcean domain {domain}")]
    OutsideDomain { fqdn: String, domain: String },
    #[error("the certificate key: {0}")]
    Key(String),
    #[error("the certificate: {0}")]
    Certificate(String),
    #[error("{0}; and cleaning up the challenge failed: {1}")]
    WithCleanup(Box<AcmeError>, String),
}

fn retry_hint(retry_after: &Option<String>) -> String {
    match retry_after {
        Some(t) => format!("try again after {t}"),
        None => "wait and try again later (see the CA's rate limit documentation)".into(),
    }
}

/// The part of the DNS name the challenge record gets, relative to the DO domain.
pub fn challenge_record_name(fqdn: &str, domain: &str) -> Result<String, AcmeError> {
    let fqdn = fqdn.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if fqdn == domain {
        Ok("_acme-challenge".into())
    } else if let Some(sub) = fqdn.strip_suffix(&format!(".{domain}")) {
        Ok(format!("_acme-challenge.{sub}"))
    } else {
        Err(AcmeError::OutsideDomain { fqdn, domain })
    }
}

/// The CAA `issue` value for the directory's CA. Known CAs by their API host; otherwise the
/// last two labels of the directory host (a test CA on `localhost` or an IP: the host itself).
pub fn caa_issuer(directory_url: &Url) -> String {
    let host = directory_url
        .host_str()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let known: [(&str, &str); 4] = [
        ("letsencrypt.org", "letsencrypt.org"),
        ("zerossl.com", "sectigo.com"),
        ("pki.goog", "pki.goog"),
        ("buypass.com", "buypass.com"),
    ];
    for (suffix, ca) in known {
        if host == suffix || host.ends_with(&format!(".{suffix}")) {
            return ca.to_owned();
        }
    }
    if directory_url
        .host()
        .is_some_and(|h| !matches!(h, url::Host::Domain(_)))
    {
        return host;
    }
    let labels: Vec<&str> = host.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

/// The CAA record that lets the directory's CA issue for `fqdn`, as a DO record of `domain`.
pub fn caa_record(
    fqdn: &str,
    domain: &str,
    directory_url: &Url,
) -> Result<DomainRecordRequest, AcmeError> {
    let fqdn_l = fqdn.trim_end_matches('.').to_ascii_lowercase();
    let domain_l = domain.trim_end_matches('.').to_ascii_lowercase();
    let name = if fqdn_l == domain_l {
        "@".to_owned()
    } else {
        fqdn_l
            .strip_suffix(&format!(".{domain_l}"))
            .ok_or(AcmeError::OutsideDomain {
                fqdn: fqdn_l.clone(),
                domain: domain_l.clone(),
            })?
            .to_owned()
    };
    Ok(DomainRecordRequest {
        kind: "CAA".into(),
        name,
        data: caa_issuer(directory_url),
        priority: None,
        port: None,
        ttl: Some(1800),
        weight: None,
        flags: Some(0),
        tag: Some("issue".into()),
    })
}

/// Why the certificate must be replaced now, or `None` when it is good for longer than
/// `renew_before_days`.
pub fn needs_renewal(
    cert_pem: &str,
    fqdn: &str,
    renew_before_days: u32,
    now: OffsetDateTime,
) -> Option<String> {
    let info = match tls::leaf_info(cert_pem) {
        Ok(i) => i,
        Err(e) => return Some(format!("the stored certificate is unreadable ({e})")),
    };
    let fqdn = fqdn.trim_end_matches('.').to_ascii_lowercase();
    if !info.dns_names.iter().any(|n| tls::name_matches(n, &fqdn)) {
        return Some(format!(
            "the certificate is for {:?}, not {fqdn:?}",
            info.dns_names
        ));
    }
    if info.not_after <= now {
        return Some(format!(
            "the certificate expired on {}",
            tls::rfc3339(info.not_after)
        ));
    }
    let window = time::Duration::days(i64::from(renew_before_days));
    if info.not_after - window <= now {
        return Some(format!(
            "the certificate expires on {}, within renew_before_days = {renew_before_days}",
            tls::rfc3339(info.not_after)
        ));
    }
    None
}

// ---- the order ------------------------------------------------------------------------------

fn ca_err(cfg: &AcmeConfig, step: &str, e: instant_acme::Error) -> AcmeError {
    let directory = cfg.directory_url.to_string();
    if let instant_acme::Error::Api(p) = &e {
        if let Some(err) = problem_error(cfg, p, None) {
            return err;
        }
    }
    AcmeError::Ca {
        step: step.to_owned(),
        directory,
        detail: e.to_string(),
    }
}

/// The problems that have their own advice; `fqdn` when known, for CAA.
fn problem_error(cfg: &AcmeConfig, p: &Problem, fqdn: Option<&str>) -> Option<AcmeError> {
    let kind = p.r#type.as_deref().unwrap_or_default();
    let detail = p.detail.clone().unwrap_or_else(|| kind.to_owned());
    if kind.ends_with(":rateLimited") {
        return Some(AcmeError::RateLimited {
            directory: cfg.directory_url.to_string(),
            retry_after: retry_after_from_detail(&detail),
            detail,
        });
    }
    if kind.ends_with(":badNonce") {
        return Some(AcmeError::BadNonce {
            directory: cfg.directory_url.to_string(),
        });
    }
    if kind.ends_with(":accountDoesNotExist") {
        return Some(AcmeError::AccountUnknown {
            directory: cfg.directory_url.to_string(),
        });
    }
    if kind.ends_with(":caa") {
        return Some(AcmeError::Caa {
            fqdn: fqdn.unwrap_or("the name").to_owned(),
            ca: caa_issuer(&cfg.directory_url),
            detail,
        });
    }
    None
}

/// Let's Encrypt says when a limit resets inside the problem detail:
/// "... retry after 2025-01-01 00:00:00 UTC: see https://...".
fn retry_after_from_detail(detail: &str) -> Option<String> {
    let lower = detail.to_ascii_lowercase();
    let at = lower.find("retry after ")? + "retry after ".len();
    let rest = &detail[at..];
    let end = rest.find(": ").unwrap_or(rest.len());
    let t = rest[..end].trim().trim_end_matches(['.', ',']);
    (!t.is_empty()).then(|| t.to_owned())
}

fn is_problem(e: &instant_acme::Error, suffix: &str) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref().is_some_and(|t| t.ends_with(suffix)))
}

/// The account the credentials name, when they are for this directory; otherwise a new one.
async fn load_or_create_account(
    cfg: &AcmeConfig,
    stored: Option<&Secret>,
    email: Option<&str>,
) -> Result<(Account, Secret), AcmeError> {
    if let Some(stored) = stored.filter(|s| !s.is_empty()) {
        match parse_credentials(stored) {
            Ok((creds, directory)) if directory.as_deref() == Some(cfg.directory_url.as_str()) => {
                let account = Account::builder_with_http(http::client(cfg)?)
                    .from_credentials(creds)
                    .await
                    .map_err(|e| ca_err(cfg, "loading the ACME account", e))?;
                return Ok((account, stored.clone()));
            }
            Ok(_) => tracing::info!(
                directory = %cfg.directory_url,
                "the stored ACME account belongs to another directory; creating a new account"
            ),
            // Losing the account costs nothing but a registration: no reason to fail the order.
            Err(e) => tracing::warn!("{e}; creating a new ACME account"),
        }
    }
    create_account(cfg, email).await
}

/// The credentials and the directory they belong to.
fn parse_credentials(
    stored: &Secret,
) -> Result<(instant_acme::AccountCredentials, Option<String>), AcmeError> {
    let value: serde_json::Value =
        serde_json::from_str(stored.expose()).map_err(|e| AcmeError::Credentials(json_err(&e)))?;
    let directory = value
        .get("directory")
        .and_then(|d| d.as_str())
        .map(str::to_owned);
    let creds = serde_json::from_value(value).map_err(|e| AcmeError::Credentials(json_err(&e)))?;
    Ok((creds, directory))
}

/// serde's messages may quote the offending value, which here is key material.
fn json_err(e: &serde_json::Error) -> String {
    format!("{:?} error at line {}", e.classify(), e.line())
}

async fn create_account(
    cfg: &AcmeConfig,
    email: Option<&str>,
) -> Result<(Account, Secret), AcmeError> {
    let contact = email.map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let mut attempt = 1;
    let (account, creds) = loop {
        let created = Account::builder_with_http(http::client(cfg)?)
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                cfg.directory_url.to_string(),
                None,
            )
            .await
            .map_err(|e| ca_err(cfg, "creating the ACME account", e));
        match created {
            // A new key each time, so a half-created account is simply abandoned.
            Err(AcmeError::BadNonce { .. }) if attempt < ORDER_ATTEMPTS => attempt += 1,
            other => break other?,
        }
    };
    let json = serde_json::to_string(&creds)
        .map_err(|e| AcmeError::Setup(format!("serializing the account: {}", json_err(&e))))?;
    tracing::info!(directory = %cfg.directory_url, "created an ACME account");
    Ok((account, Secret::new(json)))
}

/// A challenge answer put in place, to be removed whatever happens next.
enum Placed {
    Record {
        client: do_api::Client,
        domain: String,
        id: u64,
        fqdn: String,
    },
    File {
        transport: Arc<dyn Transport>,
        path: String,
    },
    DropletTxt {
        transport: Arc<dyn Transport>,
        record: String,
    },
}

impl Placed {
    async fn remove(&self) -> Result<(), String> {
        match self {
            Placed::Record {
                client,
                domain,
                id,
                fqdn,
            } => match client.delete_record(domain, *id).await {
                Ok(()) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(format!("removing TXT {fqdn} (record {id}): {e}")),
            },
            Placed::DropletTxt { transport, record } => {
                match transport.exec(&nsupdate_command(record, None), b"").await {
                    Ok(out) if out.success() => Ok(()),
                    Ok(out) => Err(format!(
                        "removing TXT {record} on {}: {}",
                        transport.describe(),
                        out.stderr_tail()
                    )),
                    Err(e) => Err(format!("removing TXT {record}: {e}")),
                }
            }
            Placed::File { transport, path } => {
                let cmd = format!("rm -f {}", shell_quote(&transport.rooted(path)));
                match transport.exec(&cmd, b"").await {
                    Ok(out) if out.success() => Ok(()),
                    Ok(out) => Err(format!(
                        "removing {path} on {}: {}",
                        transport.describe(),
                        out.stderr_tail()
                    )),
                    Err(e) => Err(format!("removing {path}: {e}")),
                }
            }
        }
    }
}

/// Orders a certificate for `fqdn`. The challenge answer (TXT record or file) is removed
/// before this returns, whether the order succeeded, failed or timed out.
pub async fn issue(
    cfg: &AcmeConfig,
    account: Option<&Secret>,
    email: Option<&str>,
    fqdn: &str,
    key_type: KeyType,
    challenge: Challenge,
) -> Result<Issuance, AcmeError> {
    let fqdn = fqdn.trim_end_matches('.').to_ascii_lowercase();
    let started = Instant::now();
    // The key does not depend on the CA; generating it first (RSA takes a while) keeps the
    // challenge record's lifetime short.
    let key = generate_key(key_type).await?;
    let (mut account, mut account_secret) = load_or_create_account(cfg, account, email).await?;
    let mut placed = Cleanup::default();
    let mut timings = IssueTimings::default();
    let mut warnings = Vec::new();
    let mut recreated = false;
    let mut attempt = 1;
    let chain = loop {
        let result = order(
            cfg,
            &account,
            &fqdn,
            &key,
            &challenge,
            &mut placed.0,
            &mut timings,
            started,
        )
        .await;
        match (result, placed.run().await) {
            (Ok(chain), Ok(())) => break chain,
            (Ok(chain), Err(c)) => {
                tracing::warn!(fqdn = %fqdn, "{c}");
                warnings.push(c);
                break chain;
            }
            (Err(e), Err(c)) => return Err(AcmeError::WithCleanup(Box::new(e), c)),
            (Err(AcmeError::AccountUnknown { .. }), Ok(())) if !recreated => {
                // The CA forgot the account (deactivated, or a test CA restarted): a new one.
                tracing::info!(directory = %cfg.directory_url, "the CA does not know the stored ACME account; creating a new one");
                recreated = true;
                (account, account_secret) = create_account(cfg, email).await?;
            }
            (Err(AcmeError::BadNonce { .. }), Ok(())) if attempt < ORDER_ATTEMPTS => {
                // instant-acme already retried the request; a new order is the next step up.
                tracing::info!(fqdn = %fqdn, attempt, "the CA kept rejecting nonces; placing a new order");
                attempt += 1;
            }
            (Err(e), Ok(())) => return Err(e),
        }
    };
    let info = tls::leaf_info(&chain).map_err(|e| AcmeError::Certificate(e.to_string()))?;
    tracing::info!(fqdn = %fqdn, not_after = %tls::rfc3339(info.not_after), elapsed_ms = started.elapsed().as_millis() as u64, "ACME certificate ready");
    Ok(Issuance {
        issued: Issued {
            cert_chain_pem: chain,
            private_key_pem: Secret::new(key.serialize_pem()),
            ca_certificate_pem: None,
            ca_private_key_pem: None,
            not_after: info.not_after,
        },
        account: account_secret,
        timings,
        warnings,
    })
}

/// The challenge answers in place. `run` removes them; if the `issue` future is dropped
/// first (the caller's timeout, a cancelled apply), `Drop` removes them on a spawned task.
#[derive(Default)]
struct Cleanup(Vec<Placed>);

impl Cleanup {
    async fn run(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        for p in self.0.drain(..) {
            if let Err(e) = p.remove().await {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut rest = Cleanup(std::mem::take(&mut self.0));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = rest.run().await {
                        tracing::warn!(
                            "removing ACME challenge answers after a cancelled order: {e}"
                        );
                    }
                });
            }
            Err(_) => tracing::warn!(
                "an ACME order was cancelled outside a runtime; its challenge answers stay in place"
            ),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn order(
    cfg: &AcmeConfig,
    account: &Account,
    fqdn: &str,
    key: &KeyPair,
    challenge: &Challenge,
    placed: &mut Vec<Placed>,
    timings: &mut IssueTimings,
    started: Instant,
) -> Result<String, AcmeError> {
    let ident = [Identifier::Dns(fqdn.to_owned())];
    let mut order = account
        .new_order(&NewOrder::new(&ident))
        .await
        .map_err(|e| map_order_err(cfg, fqdn, "placing the order", e))?;
    timings.order_placed = started.elapsed();
    tracing::info!(fqdn, challenge = ?challenge.kind(), "ACME order placed");

    let mut record_name = None;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz =
            authz.map_err(|e| map_order_err(cfg, fqdn, "reading the authorization", e))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(AcmeError::Ca {
                    step: format!("authorization for {fqdn}"),
                    directory: cfg.directory_url.to_string(),
                    detail: format!("status {other:?}"),
                })
            }
        }
        let mut ch = authz
            .challenge(challenge.kind())
            .ok_or_else(|| AcmeError::Ca {
                step: format!("authorization for {fqdn}"),
                directory: cfg.directory_url.to_string(),
                detail: format!("the CA offers no {:?} challenge", challenge.kind()),
            })?;
        let key_auth = ch.key_authorization();
        match challenge {
            Challenge::Dns01 { client, domain } => {
                let rel = challenge_record_name(fqdn, domain)?;
                let record = format!("_acme-challenge.{fqdn}");
                let value = key_auth.dns_value();
                let req = DomainRecordRequest {
                    kind: "TXT".into(),
                    name: rel,
                    data: value.clone(),
                    priority: None,
                    port: None,
                    ttl: Some(CHALLENGE_TTL),
                    weight: None,
                    flags: None,
                    tag: None,
                };
                let created = client.create_record(domain, &req).await.map_err(|source| {
                    AcmeError::CreateRecord {
                        record: record.clone(),
                        source: Box::new(source),
                    }
                })?;
                placed.push(Placed::Record {
                    client: client.clone(),
                    domain: domain.clone(),
                    id: created.id,
                    fqdn: record.clone(),
                });
                let servers = if cfg.dns_servers.is_empty() {
                    dns::authoritative_servers(domain)
                        .await
                        .map_err(|source| AcmeError::Dns {
                            record: record.clone(),
                            source,
                        })?
                } else {
                    cfg.dns_servers.clone()
                };
                dns::wait_for_txt(&record, &value, &servers, cfg.propagation_timeout)
                    .await
                    .map_err(|e| match e {
                        DnsError::NotVisible { waited } => AcmeError::Propagation {
                            record: record.clone(),
                            servers: dns::describe(&servers),
                            waited,
                            hint: if cfg.dns_servers.is_empty() {
                                "check that the domain's NS records point at DigitalOcean (ns1/ns2/ns3.digitalocean.com)"
                            } else {
                                "check that the DNS servers configured for the provider serve this domain"
                            },
                        },
                        source => AcmeError::Dns {
                            record: record.clone(),
                            source,
                        },
                    })?;
                tracing::info!(record = %record, servers = %dns::describe(&servers), elapsed_ms = started.elapsed().as_millis() as u64, "ACME TXT record visible");
                record_name = Some(record);
            }
            Challenge::Dns01Droplet { transport, server } => {
                let record = format!("_acme-challenge.{fqdn}");
                let value = key_auth.dns_value();
                // The value is base64url: nothing in it can break out of the quotes.
                placed.push(Placed::DropletTxt {
                    transport: transport.clone(),
                    record: record.clone(),
                });
                let out = transport
                    .exec(&nsupdate_command(&record, Some(&value)), b"")
                    .await
                    .map_err(|source| AcmeError::Upload {
                        path: format!("TXT {record}"),
                        source,
                    })?;
                if !out.success() {
                    return Err(AcmeError::DropletDns {
                        record,
                        detail: out.stderr_tail(),
                    });
                }
                let servers = if cfg.dns_servers.is_empty() {
                    vec![*server]
                } else {
                    cfg.dns_servers.clone()
                };
                dns::wait_for_txt(&record, &value, &servers, cfg.propagation_timeout)
                    .await
                    .map_err(|e| match e {
                        DnsError::NotVisible { waited } => AcmeError::Propagation {
                            record: record.clone(),
                            servers: dns::describe(&servers),
                            waited,
                            hint: "check that the droplet's DNS server (named) runs and that port 53 reaches it",
                        },
                        source => AcmeError::Dns {
                            record: record.clone(),
                            source,
                        },
                    })?;
                tracing::info!(record = %record, servers = %dns::describe(&servers), "ACME TXT record visible on the droplet's DNS");
                record_name = Some(record);
            }
            Challenge::Http01 { transports } => {
                // The token names a file on the droplet: only base64url characters may pass.
                let token = ch.token.clone();
                if token.is_empty()
                    || !token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(AcmeError::Ca {
                        step: format!("HTTP-01 challenge for {fqdn}"),
                        directory: cfg.directory_url.to_string(),
                        detail: "the CA sent a token that is not base64url".into(),
                    });
                }
                let path = format!("{}/{token}", paths::ACME_HTTP01_DIR);
                for transport in transports {
                    placed.push(Placed::File {
                        transport: transport.clone(),
                        path: path.clone(),
                    });
                    transport
                        .upload(&path, key_auth.as_str().as_bytes(), 0o644)
                        .await
                        .map_err(|source| AcmeError::Upload {
                            path: path.clone(),
                            source,
                        })?;
                }
                tracing::info!(path = %path, "ACME HTTP-01 answer written");
            }
        }
        timings.challenge_ready = started.elapsed();
        ch.set_ready()
            .await
            .map_err(|e| map_order_err(cfg, fqdn, "asking for validation", e))?;
    }

    let policy = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(cfg.order_timeout);
    let status = order.poll_ready(&policy).await;
    let failed = match status {
        Ok(OrderStatus::Ready) => None,
        Ok(other) => Some(format!("the order became {other:?}")),
        Err(instant_acme::Error::Timeout(_)) => Some(format!(
            "the CA did not validate within {}s",
            cfg.order_timeout.as_secs()
        )),
        Err(e) => {
            if let instant_acme::Error::Api(p) = &e {
                if let Some(err) = problem_error(cfg, p, Some(fqdn)) {
                    return Err(err);
                }
            }
            Some(e.to_string())
        }
    };
    if let Some(summary) = failed {
        return Err(validation_error(cfg, &mut order, fqdn, challenge, record_name, summary).await);
    }
    timings.validated = started.elapsed();
    tracing::info!(
        fqdn,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "ACME challenge validated"
    );

    let csr = csr(fqdn, key)?;
    order
        .finalize_csr(&csr)
        .await
        .map_err(|e| map_order_err(cfg, fqdn, "finalizing the order", e))?;
    let chain = order
        .poll_certificate(&policy)
        .await
        .map_err(|e| map_order_err(cfg, fqdn, "downloading the certificate", e))?;
    timings.issued = started.elapsed();
    Ok(chain)
}

fn map_order_err(cfg: &AcmeConfig, fqdn: &str, step: &str, e: instant_acme::Error) -> AcmeError {
    if let instant_acme::Error::Api(p) = &e {
        if let Some(err) = problem_error(cfg, p, Some(fqdn)) {
            return err;
        }
    }
    ca_err(cfg, &format!("{step} for {fqdn}"), e)
}

/// Reads the authorizations back to find the CA's reason (the challenge's error).
async fn validation_error(
    cfg: &AcmeConfig,
    order: &mut instant_acme::Order,
    fqdn: &str,
    challenge: &Challenge,
    record: Option<String>,
    summary: String,
) -> AcmeError {
    let mut reason: Option<(Problem, String)> = None;
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for ch in &authz.challenges {
            if let Some(p) = &ch.error {
                reason = Some((p.clone(), ch.token.clone()));
            }
        }
    }
    if let Some((p, _)) = &reason {
        if let Some(err) = problem_error(cfg, p, Some(fqdn)) {
            return err;
        }
    }
    let detail = match &reason {
        Some((p, _)) => format!("{summary}: {p}"),
        None => summary,
    };
    match challenge {
        Challenge::Dns01 { .. } | Challenge::Dns01Droplet { .. } => AcmeError::Dns01Failed {
            record: record.unwrap_or_else(|| format!("_acme-challenge.{fqdn}")),
            detail,
        },
        Challenge::Http01 { .. } => AcmeError::Http01Failed {
            url: format!(
                "http://{fqdn}/.well-known/acme-challenge/{}",
                reason.map(|(_, t)| t).unwrap_or_default()
            ),
            fqdn: fqdn.to_owned(),
            detail,
        },
    }
}

/// Generates the certificate key. rcgen with ring cannot generate RSA keys, so RSA keys come
/// from the `rsa` crate as PKCS#8 and are loaded into rcgen for signing the CSR.
pub async fn generate_key(key_type: KeyType) -> Result<KeyPair, AcmeError> {
    let bits = match key_type {
        KeyType::EcdsaP256 => {
            return KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(|e| AcmeError::Key(e.to_string()))
        }
        KeyType::Rsa2048 => 2048,
        KeyType::Rsa4096 => 4096,
    };
    let pem = tokio::task::spawn_blocking(move || {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
            .map_err(|e| AcmeError::Key(format!("generating RSA-{bits}: {e}")))?;
        key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .map(|p| p.to_string())
            .map_err(|e| AcmeError::Key(format!("encoding RSA-{bits}: {e}")))
    })
    .await
    .map_err(|e| AcmeError::Key(format!("RSA key generation task: {e}")))??;
    KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &PKCS_RSA_SHA256)
        .map_err(|e| AcmeError::Key(format!("loading the RSA-{bits} key: {e}")))
}

fn csr(fqdn: &str, key: &KeyPair) -> Result<Vec<u8>, AcmeError> {
    let mut params = CertificateParams::new(vec![fqdn.to_owned()])
        .map_err(|e| AcmeError::Key(format!("CSR for {fqdn}: {e}")))?;
    params.distinguished_name.push(DnType::CommonName, fqdn);
    let req = params
        .serialize_request(key)
        .map_err(|e| AcmeError::Key(format!("CSR for {fqdn}: {e}")))?;
    Ok(req.der().to_vec())
}

/// Revokes the first certificate of `cert_pem` with the account that ordered it. A certificate
/// the CA already revoked counts as done, so destroy can run twice.
pub async fn revoke(cfg: &AcmeConfig, account: &Secret, cert_pem: &str) -> Result<(), AcmeError> {
    let info = tls::leaf_info(cert_pem).map_err(|e| AcmeError::Certificate(e.to_string()))?;
    let creds: instant_acme::AccountCredentials =
        serde_json::from_str(account.expose()).map_err(|e| AcmeError::Credentials(json_err(&e)))?;
    let account = Account::builder_with_http(http::client(cfg)?)
        .from_credentials(creds)
        .await
        .map_err(|e| ca_err(cfg, "loading the ACME account", e))?;
    let der = CertificateDer::from(info.der);
    match account
        .revoke(&RevocationRequest {
            certificate: &der,
            reason: Some(RevocationReason::CessationOfOperation),
        })
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_problem(&e, ":alreadyRevoked") => Ok(()),
        Err(e) => Err(ca_err(
            cfg,
            &format!("revoking the certificate for {:?}", info.dns_names),
            e,
        )),
    }
}

#[cfg(test)]
mod tests;
