//! `docker_registry`: plan, create, read, update and delete of one registry. Inner layers
//! (do_api, remote, render, tls) return typed errors; this layer turns them into diagnostics.

pub mod schema;
pub mod state;
pub mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::acme;
use crate::config::Settings;
use crate::do_api::{self, Client};
use crate::provider::SettingsHandle;
use crate::remote::{self, SshTransport, Transport};
use crate::render::{self, Access, RegistrySpec, Storage};
use crate::secret::Secret;
use crate::storage::{self, spaces as s3, volume};
use crate::tls;
use state::{known, RegistryState, S};

pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
pub const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Short, so that a replaced droplet's address leaves caches quickly.
pub const RECORD_TTL: u32 = 30;

pub struct RegistryResource {
    pub settings: SettingsHandle,
}

fn s(v: impl Into<String>) -> S {
    Value::Value(v.into())
}

fn secret_of(v: &S) -> Option<Secret> {
    v.as_ref_option().map(|x| Secret::new(x.clone()))
}

/// Unknown for computed values that only apply can fill.
fn unknown_computed(st: &mut RegistryState) {
    st.droplet_id = Value::Unknown;
    st.ipv4_address = Value::Unknown;
    st.ipv6_address = Value::Unknown;
    st.domain = Value::Unknown;
    st.record_id = Value::Unknown;
    st.caa_record_id = Value::Unknown;
    st.acme_account_key = Value::Unknown;
    st.spaces_endpoint = Value::Unknown;
    st.spaces_key_id = Value::Unknown;
    st.spaces_secret_key = Value::Unknown;
    st.aaaa_record_id = Value::Unknown;
    st.firewall_id = Value::Unknown;
    st.host_key_fingerprint = Value::Unknown;
    st.certificate_pem = Value::Unknown;
    st.certificate_not_after = Value::Unknown;
    st.ca_certificate_pem = Value::Unknown;
    st.registry_version = Value::Unknown;
    st.docker_config_json = Value::Unknown;
    st.storage_used_bytes = Value::Unknown;
    st.volume_id = Value::Unknown;
    st.files_digest = Value::Unknown;
    st.management_private_key = Value::Unknown;
    st.management_public_key = Value::Unknown;
    st.host_private_key = Value::Unknown;
    st.host_public_key = Value::Unknown;
    st.tls_private_key_pem = Value::Unknown;
    st.ca_private_key_pem = Value::Unknown;
    st.http_secret = Value::Unknown;
}

/// Fills the defaults of optional-computed arguments.
fn apply_defaults(st: &mut RegistryState) {
    if st.size.is_null() {
        st.size = s(schema::DEFAULT_SIZE);
    }
    if st.image.is_null() {
        st.image = s(schema::DEFAULT_IMAGE);
    }
    if st.ssh_allowed_cidrs.is_null() {
        st.ssh_allowed_cidrs = Value::Value(schema::DEFAULT_CIDRS.iter().map(|c| s(*c)).collect());
    }
    if st.anonymous_pull.is_null() {
        st.anonymous_pull = Value::Value(false);
    }
    if let Value::Value(users) = &mut st.users {
        for u in users.values_mut() {
            if let Value::Value(u) = u {
                if u.access.is_null() {
                    u.access = s(schema::DEFAULT_ACCESS);
                }
            }
        }
    }
    if let Value::Value(t) = &mut st.tls {
        if t.source.is_null() {
            t.source = s("acme");
        }
        if t.challenge.is_null() {
            t.challenge = s("dns-01");
        }
        if t.key_type.is_null() {
            t.key_type = s("ecdsa-p256");
        }
        if t.renew_before_days.is_null() {
            t.renew_before_days = Value::Value(30);
        }
        if t.revoke_on_destroy.is_null() {
            t.revoke_on_destroy = Value::Value(false);
        }
        if t.caa.is_null() {
            t.caa = Value::Value(false);
        }
    }
    if let Value::Value(st) = &mut st.storage {
        if st.backend.is_null() {
            st.backend = s("droplet");
        }
        if st.force_destroy.is_null() {
            st.force_destroy = Value::Value(false);
        }
        if st.spaces_redirect.is_null() {
            st.spaces_redirect = Value::Value(false);
        }
    }
}

fn tls_source(st: &RegistryState) -> String {
    st.tls
        .as_ref_option()
        .and_then(|t| t.source.as_ref_option().cloned())
        .unwrap_or_else(|| "acme".into())
}

fn storage_backend(st: &RegistryState) -> String {
    st.storage
        .as_ref_option()
        .and_then(|t| t.backend.as_ref_option().cloned())
        .unwrap_or_else(|| "droplet".into())
}

fn timeout(st: &RegistryState, which: &str, default: Duration) -> Duration {
    let t = st.timeouts.as_ref_option();
    let v = t.and_then(|t| match which {
        "create" => t.create.as_ref_option(),
        "update" => t.update.as_ref_option(),
        _ => t.delete.as_ref_option(),
    });
    v.and_then(|v| validate::parse_duration(v).ok())
        .unwrap_or(default)
}

/// What is not built yet gets a plan-time error on its attribute, so nothing is created.
fn check_supported(diags: &mut Diagnostics, st: &RegistryState) {
    let backend = storage_backend(st);
    if backend == "spaces" {
        if let Some(region) = known(&st.region) {
            if let Err(e) = storage::check_spaces_region(region) {
                diags.error(
                    "Region without Spaces",
                    format!("{e}."),
                    AttributePath::new("region"),
                );
            }
        }
    }
}

/// The users as rendered, from a state whose hashes are known.
fn users_of(st: &RegistryState) -> Vec<render::User> {
    let mut out = Vec::new();
    if let Some(users) = st.users.as_ref_option() {
        for (name, u) in users {
            let Some(u) = u.as_ref_option() else { continue };
            let Some(hash) = u.bcrypt_hash.as_ref_option() else {
                continue;
            };
            out.push(render::User {
                name: name.clone(),
                bcrypt_hash: hash.clone(),
                access: if u.access.as_ref_option().map(String::as_str) == Some("pull") {
                    Access::Pull
                } else {
                    Access::Push
                },
            });
        }
    }
    out
}

fn spec_of(st: &RegistryState) -> Option<RegistrySpec> {
    let mut spec = RegistrySpec::new(
        known(&st.fqdn)?.to_owned(),
        storage_of(st)?,
        secret_of(&st.http_secret)?,
    );
    spec.users = users_of(st);
    spec.anonymous_pull = st.anonymous_pull.as_ref_option().copied().unwrap_or(false);
    Some(spec)
}

fn volume_name(st: &RegistryState) -> String {
    format!("{}-registry-data", known(&st.name).unwrap_or("registry"))
}

/// The registry's storage as rendered; None while a value it needs is not known yet.
fn storage_of(st: &RegistryState) -> Option<Storage> {
    let block = st.storage.as_ref_option().cloned().unwrap_or_default();
    Some(match storage_backend(st).as_str() {
        "volume" => Storage::Volume {
            mount_path: volume::mount_path(&volume_name(st)),
        },
        "spaces" => Storage::Spaces {
            bucket: block.bucket.as_ref_option()?.clone(),
            region: s3::DEFAULT_SIGNING_REGION.to_owned(),
            endpoint: known(&st.spaces_endpoint)?.trim_end_matches('/').to_owned(),
            access_key: known(&st.spaces_key_id)?.to_owned(),
            secret_key: secret_of(&st.spaces_secret_key)?,
            redirect: block
                .spaces_redirect
                .as_ref_option()
                .copied()
                .unwrap_or(false),
        },
        _ => Storage::Droplet,
    })
}

fn force_destroy(st: &RegistryState) -> bool {
    st.storage
        .as_ref_option()
        .and_then(|b| b.force_destroy.as_ref_option().copied())
        .unwrap_or(false)
}

fn tls_material_of(st: &RegistryState) -> Option<remote::TlsMaterial> {
    Some(remote::TlsMaterial {
        cert_chain_pem: known(&st.certificate_pem)?.to_owned(),
        private_key_pem: secret_of(&st.tls_private_key_pem)?,
    })
}

/// The digests the droplet's files must have, or None when some input is not known yet.
fn expected_digests(st: &RegistryState) -> Option<BTreeMap<String, String>> {
    let spec = spec_of(st)?;
    let material = tls_material_of(st)?;
    if st.users.as_ref_option().is_some_and(|u| {
        u.values()
            .any(|u| u.as_ref_option().is_some_and(|u| !u.bcrypt_hash.is_value()))
    }) {
        return None;
    }
    let files = remote::desired_files(&spec, &material).ok()?;
    Some(files.iter().map(|f| (f.path.clone(), f.digest())).collect())
}

/// `{"auths": {fqdn: ...}}` for the first user (push users first) with a plaintext password.
fn docker_config_json(st: &RegistryState) -> String {
    let fqdn = known(&st.fqdn).unwrap_or_default();
    let mut candidates: Vec<(bool, &String, &String)> = Vec::new();
    if let Some(users) = st.users.as_ref_option() {
        for (name, u) in users {
            if let Some(u) = u.as_ref_option() {
                if let Some(pw) = u.password.as_ref_option() {
                    let pull = u.access.as_ref_option().map(String::as_str) == Some("pull");
                    candidates.push((pull, name, pw));
                }
            }
        }
    }
    candidates.sort();
    let mut auths = serde_json::Map::new();
    if let Some((_, name, pw)) = candidates.first() {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{pw}"));
        auths.insert(fqdn.to_owned(), serde_json::json!({ "auth": auth }));
    }
    serde_json::json!({ "auths": auths }).to_string()
}

/// A push user with a plaintext password, to prove authenticated access after converge.
fn push_credentials(st: &RegistryState) -> Option<(String, Secret)> {
    let users = st.users.as_ref_option()?;
    users.iter().find_map(|(name, u)| {
        let u = u.as_ref_option()?;
        if u.access.as_ref_option().map(String::as_str) == Some("pull") {
            return None;
        }
        Some((name.clone(), secret_of(&u.password)?))
    })
}

/// Hashes new or changed passwords; keeps the prior hash of an unchanged one.
fn fill_hashes(st: &mut RegistryState, prior: Option<&RegistryState>) -> Result<(), String> {
    let prior_users = prior.and_then(|p| p.users.as_ref_option());
    if let Value::Value(users) = &mut st.users {
        for (name, u) in users.iter_mut() {
            let Value::Value(u) = u else { continue };
            if let Some(h) = u.password_bcrypt.as_ref_option() {
                u.bcrypt_hash = s(h.clone());
                continue;
            }
            let Some(pw) = u.password.as_ref_option() else {
                u.bcrypt_hash = Value::Unknown;
                continue;
            };
            let prior_hash = prior_users
                .and_then(|p| p.get(name))
                .and_then(|p| p.as_ref_option())
                .filter(|p| p.password.as_ref_option() == Some(pw))
                .and_then(|p| p.bcrypt_hash.as_ref_option().cloned());
            u.bcrypt_hash = match prior_hash {
                Some(h) => s(h),
                None => s(
                    render::hash_password(&Secret::new(pw.clone())).map_err(|e| e.to_string())?
                ),
            };
        }
    }
    Ok(())
}

/// For plan: a user's hash is known when unchanged, else computed at apply.
fn plan_hashes(st: &mut RegistryState, prior: Option<&RegistryState>) {
    let prior_users = prior.and_then(|p| p.users.as_ref_option());
    if let Value::Value(users) = &mut st.users {
        for (name, u) in users.iter_mut() {
            let Value::Value(u) = u else { continue };
            if let Some(h) = u.password_bcrypt.as_ref_option() {
                u.bcrypt_hash = s(h.clone());
                continue;
            }
            let same = prior_users
                .and_then(|p| p.get(name))
                .and_then(|p| p.as_ref_option())
                .filter(|p| u.password.is_value() && p.password == u.password);
            u.bcrypt_hash = match same {
                Some(p) => p.bcrypt_hash.clone(),
                None => Value::Unknown,
            };
        }
    }
}

impl RegistryResource {
    fn client(&self, diags: &mut Diagnostics) -> Option<(Client, Arc<Settings>)> {
        let settings = self.settings.get(diags)?;
        match Client::new(&settings) {
            Ok(c) => Some((c, settings)),
            Err(e) => {
                diags.root_error("Cannot build the DigitalOcean client", e.to_string());
                None
            }
        }
    }

    /// Checks that need the API: region, size, image, and the fqdn's domain.
    async fn check_with_api(&self, diags: &mut Diagnostics, client: &Client, st: &RegistryState) {
        if let Some(region) = known(&st.region) {
            let valid = client.list_regions().await.map(|rs| {
                rs.into_iter()
                    .filter(|r| r.available)
                    .map(|r| r.slug)
                    .collect()
            });
            check_choice(diags, "region", region, "a DigitalOcean region", valid);
        }
        if let Some(size) = known(&st.size) {
            let valid = client
                .list_sizes()
                .await
                .map(|ss| ss.into_iter().map(|s| s.slug).collect());
            check_choice(diags, "size", size, "a droplet size", valid);
        }
        if let Some(image) = known(&st.image) {
            match client.get_image(image).await {
                Ok(Some(_)) => {}
                Ok(None) => diags.error(
                    "Unknown `image`",
                    format!(
                        "{image:?} is not an image slug of this account (for example \"{}\").",
                        schema::DEFAULT_IMAGE
                    ),
                    AttributePath::new("image"),
                ),
                Err(e) => diags.error(
                    "Cannot check `image`",
                    e.to_string(),
                    AttributePath::new("image"),
                ),
            }
        }
        if let Some(fqdn) = known(&st.fqdn) {
            if validate::fqdn_problem(fqdn).is_none() {
                match find_domain(client, fqdn).await {
                    Ok(Some(_)) => {}
                    Ok(None) => diags.error("Domain not in this account", format!("No domain of this DigitalOcean account holds {fqdn:?}: add its domain (for example `{}`) to DigitalOcean DNS first.", parent_of(fqdn)), AttributePath::new("fqdn")),
                    Err(e) => diags.error("Cannot check `fqdn`", e.to_string(), AttributePath::new("fqdn")),
                }
            }
        }
    }
}

/// `value` must be one of the API's `valid` choices; the diagnostic lists them.
fn check_choice(
    diags: &mut Diagnostics,
    attr: &'static str,
    value: &str,
    what: &str,
    valid: Result<Vec<String>, do_api::Error>,
) {
    match valid {
        Ok(mut valid) => {
            if !valid.iter().any(|v| v == value) {
                valid.sort();
                diags.error(
                    format!("Unknown `{attr}`"),
                    format!("{value:?} is not {what}; valid: {}.", valid.join(", ")),
                    AttributePath::new(attr),
                );
            }
        }
        Err(e) => diags.error(
            format!("Cannot check `{attr}`"),
            e.to_string(),
            AttributePath::new(attr),
        ),
    }
}

/// The account's domain holding `fqdn`, for apply-time callers (plan checked it exists).
async fn domain_of(client: &Client, fqdn: &str) -> Result<String, String> {
    find_domain(client, fqdn)
        .await
        .map_err(|e| e.to_string())?
        .map(|(domain, _)| domain)
        .ok_or_else(|| format!("no domain of the account holds {fqdn}"))
}

fn parent_of(fqdn: &str) -> &str {
    fqdn.split_once('.').map(|(_, p)| p).unwrap_or(fqdn)
}

/// The account's domain holding `fqdn` (longest suffix first) and the record name in it.
async fn find_domain(
    client: &Client,
    fqdn: &str,
) -> Result<Option<(String, String)>, do_api::Error> {
    let labels: Vec<&str> = fqdn.split('.').collect();
    for i in 0..labels.len().saturating_sub(1) {
        let domain = labels[i..].join(".");
        if client.get_domain(&domain).await?.is_some() {
            let name = if i == 0 {
                "@".to_owned()
            } else {
                labels[..i].join(".")
            };
            return Ok(Some((domain, name)));
        }
    }
    Ok(None)
}

fn firewall_request(name: &str, droplet_id: u64, cidrs: &[String]) -> do_api::FirewallRequest {
    let anywhere = || do_api::FirewallTarget {
        addresses: vec!["0.0.0.0/0".into(), "::/0".into()],
        ..Default::default()
    };
    let rule = |ports: &str, sources| do_api::InboundRule {
        protocol: "tcp".into(),
        ports: ports.into(),
        sources,
    };
    do_api::FirewallRequest {
        name: format!("{name}-registry"),
        droplet_ids: vec![droplet_id],
        tags: vec![],
        inbound_rules: vec![
            rule(
                "22",
                do_api::FirewallTarget {
                    addresses: cidrs.to_vec(),
                    ..Default::default()
                },
            ),
            rule("80", anywhere()),
            rule("443", anywhere()),
        ],
        outbound_rules: ["tcp", "udp"]
            .iter()
            .map(|p| do_api::OutboundRule {
                protocol: (*p).into(),
                ports: "0".into(),
                destinations: anywhere(),
            })
            .chain(std::iter::once(do_api::OutboundRule {
                protocol: "icmp".into(),
                ports: "0".into(),
                destinations: anywhere(),
            }))
            .collect(),
    }
}

fn cidrs_of(st: &RegistryState) -> Vec<String> {
    st.ssh_allowed_cidrs
        .as_ref_option()
        .map(|v| {
            v.iter()
                .filter_map(|c| c.as_ref_option().cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// Proves the registry from outside: TLS with SNI = fqdn serves our certificate, `/v2/`
/// answers 401 without credentials and 200 with a push user's.
async fn verify_from_outside(st: &RegistryState, ip: IpAddr) -> Result<(), String> {
    let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
    let expected = tls::leaf_info(known(&st.certificate_pem).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    // The served certificate is compared byte for byte below, so chain trust is not needed here.
    let http = reqwest::Client::builder()
        .resolve(&fqdn, SocketAddr::new(ip, 443))
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("https://{fqdn}/v2/");
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url} at {ip}: {e}"))?;
    let served = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate().map(<[u8]>::to_vec));
    if served.as_deref() != Some(expected.der.as_slice()) {
        return Err(format!(
            "{url} at {ip} does not serve the certificate the provider installed"
        ));
    }
    let anonymous = st.anonymous_pull.as_ref_option().copied().unwrap_or(false);
    let want = if anonymous { 200 } else { 401 };
    if resp.status().as_u16() != want {
        return Err(format!(
            "GET {url} without credentials answered {}, want {want}",
            resp.status()
        ));
    }
    if let Some((user, pw)) = push_credentials(st) {
        let resp = http
            .get(&url)
            .basic_auth(&user, Some(pw.expose()))
            .send()
            .await
            .map_err(|e| format!("GET {url} as {user}: {e}"))?;
        if resp.status().as_u16() != 200 {
            return Err(format!(
                "GET {url} as push user {user:?} answered {}, want 200",
                resp.status()
            ));
        }
    }
    Ok(())
}

/// Connects to the droplet with the management key, accepting only our host key.
async fn connect(st: &RegistryState, deadline: Instant) -> Result<SshTransport, String> {
    let ip = known(&st.ipv4_address).ok_or("the droplet has no IPv4 address")?;
    let key = secret_of(&st.management_private_key).ok_or("no management key in state")?;
    let host = known(&st.host_public_key).ok_or("no host key in state")?;
    SshTransport::connect(ip, "root", &key, host, deadline)
        .await
        .map_err(|e| e.to_string())
}

/// Writes every managed file, reloads what changed, verifies from inside and outside.
async fn converge_and_verify(st: &mut RegistryState, deadline: Instant) -> Result<(), String> {
    let droplet = st.droplet_id.as_ref_option().copied().unwrap_or_default();
    let name = known(&st.name).unwrap_or_default().to_owned();
    let ctx = |e: String| format!("converging droplet {name} ({droplet}): {e}");
    let spec = spec_of(st).ok_or_else(|| ctx("the registry's inputs are not all known".into()))?;
    let material = tls_material_of(st).ok_or_else(|| ctx("no certificate in state".into()))?;
    let files = remote::desired_files(&spec, &material).map_err(|e| ctx(e.to_string()))?;
    let transport = connect(st, deadline).await.map_err(ctx)?;
    let report = remote::converge(&transport, &spec, &files)
        .await
        .map_err(|e| ctx(e.to_string()))?;
    tracing::info!(
        droplet,
        changed = ?report.changed,
        installed = ?report.installed,
        nginx_reloaded = report.nginx_reloaded,
        registry_restarted = report.registry_restarted,
        "converged"
    );
    st.files_digest = Value::Value(
        report
            .digests
            .iter()
            .map(|(k, v)| (k.clone(), s(v.clone())))
            .collect(),
    );
    let version = transport
        .exec(
            &format!(
                "docker-registry --version 2>/dev/null | awk '{{print $NF}}'; du -sb {} 2>/dev/null | cut -f1",
                remote::shell_quote(spec.storage_root().unwrap_or("/nonexistent"))
            ),
            b"",
        )
        .await
        .map_err(|e| ctx(e.to_string()))?;
    let text = String::from_utf8_lossy(&version.stdout).to_string();
    let mut lines = text.lines();
    st.registry_version = s(lines
        .next()
        .unwrap_or("")
        .trim()
        .trim_start_matches('v')
        .to_owned());
    st.storage_used_bytes = Value::Value(
        lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0),
    );
    let ip: IpAddr = known(&st.ipv4_address)
        .unwrap_or_default()
        .parse()
        .map_err(|_| ctx("bad IPv4 address in state".into()))?;
    verify_from_outside(st, ip).await.map_err(ctx)?;
    Ok(())
}

/// Issues the certificate state describes, for the droplet's addresses.
fn issue_certificate(st: &mut RegistryState) -> Result<(), String> {
    let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
    let tls_block = st.tls.as_ref_option().cloned().unwrap_or_default();
    let issued = match tls_source(st).as_str() {
        "self_signed" => {
            let ips: Vec<IpAddr> = [known(&st.ipv4_address), known(&st.ipv6_address)]
                .into_iter()
                .flatten()
                .filter_map(|ip| ip.parse().ok())
                .collect();
            let ca_cert = known(&st.ca_certificate_pem).map(str::to_owned);
            let ca_key = secret_of(&st.ca_private_key_pem);
            let existing = match (&ca_cert, &ca_key) {
                (Some(c), Some(k)) => Some((c.as_str(), k)),
                _ => None,
            };
            tls::self_signed(&fqdn, &ips, existing).map_err(|e| e.to_string())?
        }
        "provided" => {
            let chain = tls_block
                .certificate_pem
                .as_ref_option()
                .cloned()
                .unwrap_or_default();
            let key = secret_of(&tls_block.private_key_pem).unwrap_or_default();
            let info = tls::check_provided(&chain, &key, &fqdn).map_err(|e| e.to_string())?;
            tls::Issued {
                cert_chain_pem: chain,
                private_key_pem: key,
                ca_certificate_pem: None,
                ca_private_key_pem: None,
                not_after: info.not_after,
            }
        }
        other => return Err(format!("tls source {other:?} is not issued locally")),
    };
    store_issued(st, issued);
    Ok(())
}

fn store_issued(st: &mut RegistryState, issued: tls::Issued) {
    st.certificate_pem = s(issued.cert_chain_pem);
    st.tls_private_key_pem = s(issued.private_key_pem.expose().to_owned());
    st.certificate_not_after = s(tls::rfc3339(issued.not_after));
    st.ca_certificate_pem = issued.ca_certificate_pem.map(s).unwrap_or(Value::Null);
    st.ca_private_key_pem = issued
        .ca_private_key_pem
        .map(|k| s(k.expose().to_owned()))
        .unwrap_or(Value::Null);
}

fn acme_inputs(st: &RegistryState) -> (Option<String>, acme::KeyType, bool) {
    let t = st.tls.as_ref_option().cloned().unwrap_or_default();
    let key_type = t
        .key_type
        .as_ref_option()
        .and_then(|k| k.parse().ok())
        .unwrap_or_default();
    let http01 = t.challenge.as_ref_option().map(String::as_str) == Some("http-01");
    (t.email.as_ref_option().cloned(), key_type, http01)
}

/// Orders an ACME certificate for the registry and stores it and the account in `st`.
async fn acme_certificate(
    settings: &Settings,
    st: &mut RegistryState,
    challenge: acme::Challenge,
) -> Result<(), String> {
    let cfg = acme_config(settings);
    let (email, key_type, _) = acme_inputs(st);
    let account = secret_of(&st.acme_account_key);
    let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
    let got = acme::issue(
        &cfg,
        account.as_ref(),
        email.as_deref(),
        &fqdn,
        key_type,
        challenge,
    )
    .await
    .map_err(|e| format!("ordering the certificate for {fqdn}: {e}"))?;
    for w in &got.warnings {
        tracing::warn!(warning = %w, "certificate issued with a warning");
    }
    st.acme_account_key = s(got.account.expose().to_owned());
    store_issued(st, got.issued);
    Ok(())
}

fn acme_config(settings: &Settings) -> acme::AcmeConfig {
    let mut cfg = acme::AcmeConfig::from_settings(settings);
    cfg.dns_servers = settings.acme_dns_servers.clone();
    cfg
}

/// Why an ACME certificate in state must be renewed now, if it must.
fn renewal_reason(st: &RegistryState) -> Option<String> {
    if tls_source(st) != "acme" {
        return None;
    }
    let cert = known(&st.certificate_pem)?;
    let fqdn = known(&st.fqdn)?;
    let days = st
        .tls
        .as_ref_option()
        .and_then(|t| t.renew_before_days.as_ref_option().copied())
        .unwrap_or(30)
        .max(0) as u32;
    acme::needs_renewal(cert, fqdn, days, time::OffsetDateTime::now_utc())
}

/// Root's authorized_keys on a running droplet: the management key and the public keys of
/// `ssh_key_fingerprints`, looked up in the account (DigitalOcean only adds them at create).
async fn set_people_keys(
    client: &Client,
    st: &RegistryState,
    deadline: Instant,
) -> Result<(), String> {
    let mut lines = vec![known(&st.management_public_key)
        .ok_or("no management key in state")?
        .to_owned()];
    for fp in st
        .ssh_key_fingerprints
        .as_ref_option()
        .map(|v| {
            v.iter()
                .filter_map(|f| f.as_ref_option().cloned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    {
        match client.get_ssh_key(&fp).await {
            Ok(Some(k)) => lines.push(k.public_key.trim().to_owned()),
            Ok(None) => return Err(format!("no SSH key with fingerprint {fp} in the account")),
            Err(e) => return Err(e.to_string()),
        }
    }
    let transport = connect(st, deadline).await?;
    transport
        .upload(
            "/root/.ssh/authorized_keys",
            format!("{}\n", lines.join("\n")).as_bytes(),
            0o600,
        )
        .await
        .map_err(|e| e.to_string())
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Points the A record at the droplet, creating it when missing.
async fn ensure_record(client: &Client, st: &mut RegistryState) -> Result<(), String> {
    ensure_record_api(client, st)
        .await
        .map_err(|e| e.to_string())?
}

async fn ensure_record_api(
    client: &Client,
    st: &mut RegistryState,
) -> Result<Result<(), String>, do_api::Error> {
    let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
    let ip = known(&st.ipv4_address).unwrap_or_default().to_owned();
    let (domain, name) = match find_domain(client, &fqdn).await? {
        Some(d) => d,
        None => return Ok(Err(format!("no domain of the account holds {fqdn}"))),
    };
    st.domain = s(domain.clone());
    let req = do_api::DomainRecordRequest {
        kind: "A".into(),
        name,
        data: ip.clone(),
        ttl: Some(RECORD_TTL),
        ..Default::default()
    };
    if let Some(id) = st.record_id.as_ref_option().map(|i| *i as u64) {
        if let Some(rec) = client.get_record(&domain, id).await? {
            if rec.data != ip {
                client.update_record(&domain, id, &req).await?;
            }
            return Ok(Ok(()));
        }
    }
    let rec = client.create_record(&domain, &req).await?;
    st.record_id = Value::Value(rec.id as i64);
    Ok(Ok(()))
}

#[async_trait]
impl Resource for RegistryResource {
    type State<'a> = RegistryState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<tf_provider::schema::Schema> {
        Some(schema::schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        validate::check_config(diags, &config);
        check_supported(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        mut st: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let (client, _) = self.client(diags)?;
        let Some(id) = st.droplet_id.as_ref_option().map(|i| *i as u64) else {
            return Some((st, private));
        };
        let droplet = match client.get_droplet(id).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                tracing::info!(
                    droplet = id,
                    "droplet is gone; removing the registry from state"
                );
                return None;
            }
            Err(e) => {
                diags.root_error(format!("Reading droplet ({id})"), e.to_string());
                return None;
            }
        };
        st.ipv4_address = droplet.public_ipv4().map(s).unwrap_or(Value::Null);
        st.ipv6_address = droplet.public_ipv6().map(s).unwrap_or(Value::Null);
        st.name = s(droplet.name.clone());
        if !droplet.size_slug.is_empty() {
            st.size = s(droplet.size_slug.clone());
        }
        if let (Some(domain), Some(rid)) = (
            known(&st.domain).map(str::to_owned),
            st.record_id.as_ref_option().copied(),
        ) {
            match client.get_record(&domain, rid as u64).await {
                Ok(Some(rec)) if Some(rec.data.as_str()) == known(&st.ipv4_address) => {}
                Ok(_) => st.record_id = Value::Null,
                Err(e) => diags.root_warning(format!("Reading record ({rid})"), e.to_string()),
            }
        }
        if let Some(fw) = known(&st.firewall_id).map(str::to_owned) {
            match client.get_firewall(&fw).await {
                Ok(Some(f)) => {
                    let mut have: Vec<String> = f
                        .inbound_rules
                        .iter()
                        .filter(|r| r.ports == "22")
                        .flat_map(|r| r.sources.addresses.clone())
                        .collect();
                    have.sort();
                    let mut want = cidrs_of(&st);
                    want.sort();
                    if have != want {
                        st.ssh_allowed_cidrs = Value::Value(have.into_iter().map(s).collect());
                    }
                }
                Ok(None) => st.firewall_id = Value::Null,
                Err(e) => diags.root_warning(format!("Reading firewall ({fw})"), e.to_string()),
            }
        }
        // The droplet's files, in one SSH round trip: a hand edit shows up in the next plan.
        if let Some(spec) = spec_of(&st) {
            let paths = remote::managed_paths(&spec);
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            let deadline = Instant::now() + Duration::from_secs(30);
            match connect(&st, deadline).await {
                Ok(t) => {
                    match remote::managed_file_digests(&t, &refs).await {
                        Ok(d) => st.files_digest = Value::Value(d.into_iter().map(|(k, v)| (k, s(v))).collect()),
                        Err(e) => diags.root_warning(format!("Reading files on droplet ({id})"), e.to_string()),
                    }
                    if let Some(root) = spec.storage_root() {
                        if let Ok(b) = volume::volume_used_bytes(&t, root).await {
                            st.storage_used_bytes = Value::Value(b as i64);
                        }
                    }
                }
                Err(e) => diags.root_warning(
                    format!("Cannot reach droplet ({id}) over SSH"),
                    format!("{e}. The file digests in state are kept as they were; the next apply converges again."),
                ),
            }
        }
        if storage_backend(&st) == "spaces" {
            let bucket = st
                .storage
                .as_ref_option()
                .and_then(|b| b.bucket.as_ref_option().cloned());
            if let (Some(bucket), Some((_, settings))) = (bucket, self.client(diags)) {
                let region = known(&st.region).unwrap_or_default().to_owned();
                if let Ok(c) = s3::S3::from_settings(&settings, &region) {
                    match c.usage(&bucket).await {
                        Ok(u) => st.storage_used_bytes = Value::Value(u.bytes as i64),
                        Err(e) => {
                            diags.root_warning(format!("Reading bucket {bucket}"), e.to_string())
                        }
                    }
                }
            }
        }
        Some((st, private))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        validate::check_config(diags, &config);
        check_supported(diags, &config);
        let mut st = proposed;
        apply_defaults(&mut st);
        if !diags.errors.is_empty() {
            return None;
        }
        let (client, settings) = self.client(diags)?;
        if storage_backend(&st) == "spaces"
            && (settings.spaces_access_id.is_none() || settings.spaces_secret_key.is_none())
        {
            diags.error(
                "Spaces credentials missing",
                "`storage.backend = \"spaces\"` needs the provider's `spaces_access_id` and `spaces_secret_key` (or SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY) to create the bucket; the registry then gets its own key for that bucket only.",
                AttributePath::new("storage").index(0).attribute("backend"),
            );
            return None;
        }
        self.check_with_api(diags, &client, &st).await;
        if !diags.errors.is_empty() {
            return None;
        }
        unknown_computed(&mut st);
        plan_hashes(&mut st, None);
        st.id = st.fqdn.clone();
        st.url = st.fqdn.as_ref().map(|f| format!("https://{f}"));
        if tls_source(&st) == "provided" {
            // A provided certificate is known now: fail the plan, not the apply.
            let t = st.tls.as_ref_option().cloned().unwrap_or_default();
            if let (Some(c), Some(k), Some(f)) = (
                t.certificate_pem.as_ref_option(),
                secret_of(&t.private_key_pem),
                known(&st.fqdn),
            ) {
                if let Err(e) = tls::check_provided(c, &k, f) {
                    diags.error(
                        "Invalid provided certificate",
                        e.to_string(),
                        AttributePath::new("tls")
                            .index(0)
                            .attribute("certificate_pem"),
                    );
                    return None;
                }
            }
        }
        Some((st, ValueEmpty::Value(Default::default())))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        validate::check_config(diags, &config);
        check_supported(diags, &config);
        let mut st = proposed;
        apply_defaults(&mut st);
        if !diags.errors.is_empty() {
            return None;
        }
        if storage_backend(&prior) == "volume" && storage_backend(&st) == "volume" {
            let size = |x: &RegistryState| {
                x.storage
                    .as_ref_option()
                    .and_then(|b| b.size_gib.as_ref_option().copied())
            };
            if let (Some(a), Some(b)) = (size(&prior), size(&st)) {
                if let Err(e) = volume::check_resize(a.max(0) as u64, b.max(0) as u64) {
                    diags.error(
                        "Invalid `storage.size_gib`",
                        format!("{e}."),
                        AttributePath::new("storage").index(0).attribute("size_gib"),
                    );
                    return None;
                }
            }
        }
        let mut replace = Vec::new();
        for (attr, a, b) in [
            ("region", &prior.region, &st.region),
            ("fqdn", &prior.fqdn, &st.fqdn),
        ] {
            if a != b {
                replace.push(AttributePath::new(attr));
            }
        }
        if storage_backend(&prior) != storage_backend(&st) {
            replace.push(AttributePath::new("storage").index(0).attribute("backend"));
            diags.root_warning(
                "Changing the storage backend replaces the registry",
                "Images are not migrated to the new backend: push them again, or keep the backend and bump `droplet_generation` to replace only the droplet.",
            );
        }
        let bucket = |x: &RegistryState| {
            x.storage
                .as_ref_option()
                .and_then(|b| b.bucket.as_ref_option().cloned())
        };
        if storage_backend(&st) == "spaces" && bucket(&prior) != bucket(&st) {
            replace.push(AttributePath::new("storage").index(0).attribute("bucket"));
        }
        let new_droplet =
            prior.image != st.image || prior.droplet_generation != st.droplet_generation;
        if !replace.is_empty() {
            // The whole registry is replaced: plan it as a create.
            unknown_computed(&mut st);
            plan_hashes(&mut st, None);
            st.id = st.fqdn.clone();
            st.url = st.fqdn.as_ref().map(|f| format!("https://{f}"));
            return Some((st, private, replace));
        }
        if new_droplet {
            // A fresh droplet is created, converged and verified, the record switched to it,
            // and the old one deleted after the record's TTL: everything about the machine
            // is known only after apply. The keys and the host key stay the same.
            for v in [&mut st.droplet_id, &mut st.storage_used_bytes] {
                *v = Value::Unknown;
            }
            st.ipv4_address = Value::Unknown;
            st.ipv6_address = Value::Unknown;
            st.registry_version = Value::Unknown;
            st.files_digest = Value::Unknown;
            if tls_source(&st) == "self_signed" {
                // Its SANs hold the droplet's addresses.
                st.certificate_pem = Value::Unknown;
                st.certificate_not_after = Value::Unknown;
                st.tls_private_key_pem = Value::Unknown;
            }
            diags.root_warning(
                "The droplet will be replaced",
                "A change of `image` or `droplet_generation` creates a new droplet, converges and verifies it, points the DNS record at it, and deletes the old droplet once the record's TTL has passed. Images stored on the droplet disk are not carried over; a volume or Spaces bucket is.",
            );
        }
        if prior.size != st.size && st.size.is_value() && !new_droplet {
            diags.root_warning(
                "Resizing powers the droplet off",
                format!("Changing `size` from {:?} to {:?} powers the droplet off, resizes it and powers it on: the registry is unavailable for a minute or two.", prior.size.as_ref_option(), st.size.as_ref_option()),
            );
        }
        if let Some(tls) = st.tls.as_ref_option() {
            let _ = tls;
        }
        plan_hashes(&mut st, Some(&prior));
        let users_changed = prior.users != st.users;
        if users_changed {
            st.docker_config_json = Value::Unknown;
        }
        let mut tls_changed = prior.tls != st.tls;
        if let Some(reason) = renewal_reason(&prior) {
            diags.root_warning(
                "The certificate will be renewed",
                format!(
                    "The certificate of {} is replaced: {reason}.",
                    known(&prior.fqdn).unwrap_or_default()
                ),
            );
            tls_changed = true;
        }
        if tls_changed {
            st.certificate_pem = Value::Unknown;
            st.certificate_not_after = Value::Unknown;
            st.tls_private_key_pem = Value::Unknown;
            st.ca_certificate_pem = Value::Unknown;
            st.ca_private_key_pem = Value::Unknown;
        }
        // Drift: compare what the droplet holds (as read) with what it must hold.
        match expected_digests(&st) {
            Some(expected) => {
                st.files_digest =
                    Value::Value(expected.into_iter().map(|(k, v)| (k, s(v))).collect());
            }
            None => st.files_digest = Value::Unknown,
        }
        if st.record_id.is_null() {
            st.record_id = Value::Unknown;
        }
        if st.firewall_id.is_null() {
            st.firewall_id = Value::Unknown;
        }
        if st != prior {
            st.registry_version = Value::Unknown;
            st.storage_used_bytes = Value::Unknown;
        }
        Some((st, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let (client, settings) = self.client(diags)?;
        let mut st = planned;
        let deadline = Instant::now() + timeout(&st, "create", DEFAULT_CREATE_TIMEOUT);
        let result = self
            .create_inner(&client, &settings, &mut st, deadline)
            .await;
        // Whatever happened, every id made so far is in `st`, so destroy can clean up.
        if let Err(e) = result {
            diags.root_error("Creating the registry failed", e);
            null_unknowns(&mut st);
            return Some((st, private));
        }
        Some((st, private))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let (client, settings) = self.client(diags)?;
        let mut st = planned;
        let deadline = Instant::now() + timeout(&st, "update", DEFAULT_CREATE_TIMEOUT);
        if let Err(e) = self
            .update_inner(&client, &settings, &prior, &mut st, deadline)
            .await
        {
            diags.root_error("Updating the registry failed", e);
            // Keep what is known to be true: the prior state, with ids that may have changed.
            let mut keep = prior.clone();
            keep.record_id = st.record_id;
            keep.firewall_id = st.firewall_id.clone();
            null_unknowns(&mut keep);
            return Some((keep, private));
        }
        Some((st, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        st: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let (client, settings) = self.client(diags)?;
        let mut failed = false;
        // Stored images first: a volume or bucket that holds data stops the destroy before
        // anything is deleted, so the registry keeps serving and stays in state.
        let backend = storage_backend(&st);
        let force = force_destroy(&st);
        let volume_contents = if backend == "volume" && known(&st.volume_id).is_some() {
            Some(measure_volume(&st).await)
        } else {
            None
        };
        let bucket = st
            .storage
            .as_ref_option()
            .and_then(|b| b.bucket.as_ref_option().cloned())
            .unwrap_or_default();
        let region = known(&st.region).unwrap_or_default().to_owned();
        if !force {
            let holds = match (&volume_contents, backend.as_str()) {
                (Some(volume::VolumeContents::Empty), _) => None,
                (Some(volume::VolumeContents::HoldsData { detail }), _) => Some(format!("volume {} ({}) holds {detail}", volume_name(&st), known(&st.volume_id).unwrap_or_default())),
                (Some(volume::VolumeContents::Unknown { reason }), _) => Some(format!("volume {} ({}) could not be measured ({reason}), so it is presumed to hold images", volume_name(&st), known(&st.volume_id).unwrap_or_default())),
                (None, "spaces") => match s3::S3::from_settings(&settings, &region) {
                    Ok(c) => match c.head_bucket(&bucket).await {
                        Ok(false) => None,
                        Ok(true) => match c.usage(&bucket).await {
                            Ok(u) if u.objects == 0 && u.uploads == 0 => None,
                            Ok(u) => Some(format!("bucket {bucket} holds {} objects ({} bytes) and {} unfinished uploads", u.objects, u.bytes, u.uploads)),
                            Err(e) => Some(format!("bucket {bucket} could not be listed ({e}), so it is presumed to hold images")),
                        },
                        Err(e) => Some(format!("bucket {bucket} could not be checked ({e}), so it is presumed to hold images")),
                    },
                    Err(e) => Some(format!("bucket {bucket} could not be checked ({e}), so it is presumed to hold images")),
                },
                _ => None,
            };
            if let Some(what) = holds {
                diags.error(
                    "The registry still stores images",
                    format!("Nothing was destroyed: {what}. To delete the images with the registry, set `force_destroy = true` in the `storage` block, run `tofu apply`, then destroy again. To keep them, remove the registry from state instead (`tofu state rm`)."),
                    AttributePath::new("storage").index(0).attribute("force_destroy"),
                );
                return None;
            }
        }
        let revoke = tls_source(&st) == "acme"
            && st
                .tls
                .as_ref_option()
                .and_then(|t| t.revoke_on_destroy.as_ref_option().copied())
                .unwrap_or(false);
        if let (true, Some(account), Some(cert)) = (
            revoke,
            secret_of(&st.acme_account_key),
            known(&st.certificate_pem),
        ) {
            // A failed revocation must not keep the droplet alive: warn and go on.
            match acme::revoke(&acme_config(&settings), &account, cert).await {
                Ok(()) => tracing::info!("certificate revoked"),
                Err(e) => diags.root_warning("Revoking the certificate failed", e.to_string()),
            }
        }
        if let Some(domain) = known(&st.domain) {
            for (what, rid) in [
                ("CAA record", &st.caa_record_id),
                ("record", &st.record_id),
                ("record", &st.aaaa_record_id),
            ] {
                if let Some(rid) = rid.as_ref_option() {
                    if let Err(e) = client.delete_record(domain, *rid as u64).await {
                        diags.root_error(
                            format!("Deleting {what} ({rid}) of {domain}"),
                            e.to_string(),
                        );
                        failed = true;
                    }
                }
            }
        }
        if let Some(fw) = known(&st.firewall_id) {
            if let Err(e) = client.delete_firewall(fw).await {
                diags.root_error(format!("Deleting firewall ({fw})"), e.to_string());
                failed = true;
            }
        }
        if let Some(id) = st.droplet_id.as_ref_option() {
            if let Err(e) = client.delete_droplet(*id as u64).await {
                diags.root_error(format!("Deleting droplet ({id})"), e.to_string());
                failed = true;
            }
        }
        let delete_timeout = timeout(&st, "delete", DEFAULT_DELETE_TIMEOUT);
        if let (Some(vid), Some(contents)) = (known(&st.volume_id), volume_contents) {
            match volume::destroy_volume(&client, vid, &contents, force, delete_timeout).await {
                Ok(_) => {}
                Err(e) => {
                    diags.error(
                        "The registry's volume was kept",
                        format!("{e}"),
                        AttributePath::new("storage")
                            .index(0)
                            .attribute("force_destroy"),
                    );
                    failed = true;
                }
            }
        }
        if backend == "spaces" {
            if let Some(key) = known(&st.spaces_key_id) {
                if let Err(e) = s3::delete_registry_key(&client, key).await {
                    diags.root_error(
                        format!("Deleting the registry's Spaces key ({key})"),
                        e.to_string(),
                    );
                    failed = true;
                }
            }
            let result = match s3::S3::from_settings(&settings, &region) {
                Ok(c) => s3::destroy_bucket(&c, &bucket, &region, force).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                diags.error(
                    "The registry's bucket was kept",
                    format!("{e}"),
                    AttributePath::new("storage")
                        .index(0)
                        .attribute("force_destroy"),
                );
                failed = true;
            }
        }
        if failed {
            None
        } else {
            Some(())
        }
    }
}

/// What the registry's volume holds: measured over SSH, or the last read value when the
/// droplet cannot be asked.
async fn measure_volume(st: &RegistryState) -> volume::VolumeContents {
    let last = st.storage_used_bytes.as_ref_option().map(|b| *b as u64);
    let mount = volume::mount_path(&volume_name(st));
    match connect(st, Instant::now() + Duration::from_secs(30)).await {
        Ok(t) => match volume::volume_usage(&t, &mount).await {
            Ok(u) => volume::VolumeContents::from_usage(&u),
            Err(e) => volume::VolumeContents::from_last_read(last, &e.to_string()),
        },
        Err(e) => volume::VolumeContents::from_last_read(last, &e),
    }
}

/// Computed values left unknown after a failed apply become null: state cannot hold unknowns.
fn null_unknowns(st: &mut RegistryState) {
    macro_rules! n {
        ($($f:ident),*) => { $( if st.$f.is_unknown() { st.$f = Value::Null; } )* };
    }
    n!(
        droplet_id,
        ipv4_address,
        ipv6_address,
        domain,
        record_id,
        caa_record_id,
        aaaa_record_id,
        firewall_id,
        acme_account_key,
        spaces_endpoint,
        spaces_key_id,
        spaces_secret_key,
        host_key_fingerprint,
        certificate_pem,
        certificate_not_after,
        ca_certificate_pem,
        registry_version,
        docker_config_json,
        storage_used_bytes,
        volume_id,
        management_private_key,
        management_public_key,
        host_private_key,
        host_public_key,
        tls_private_key_pem,
        ca_private_key_pem,
        http_secret,
        id,
        url
    );
    if st.files_digest.is_unknown() {
        st.files_digest = Value::Null;
    }
    if let Value::Value(users) = &mut st.users {
        for u in users.values_mut() {
            if let Value::Value(u) = u {
                if u.bcrypt_hash.is_unknown() {
                    u.bcrypt_hash = Value::Null;
                }
            }
        }
    }
}

impl RegistryResource {
    /// The volume or the bucket and the registry's own Spaces key, before the droplet: each id
    /// goes into state as soon as it exists.
    async fn provision_storage(
        &self,
        client: &Client,
        settings: &Settings,
        st: &mut RegistryState,
        _deadline: Instant,
    ) -> Result<(), String> {
        st.volume_id = Value::Null;
        st.spaces_endpoint = Value::Null;
        st.spaces_key_id = Value::Null;
        st.spaces_secret_key = Value::Null;
        let block = st.storage.as_ref_option().cloned().unwrap_or_default();
        let region = known(&st.region).unwrap_or_default().to_owned();
        match storage_backend(st).as_str() {
            "volume" => {
                let size = block.size_gib.as_ref_option().copied().unwrap_or(10).max(1) as u64;
                let name = volume_name(st);
                let v = volume::ensure_volume(client, &name, &region, size, &[])
                    .await
                    .map_err(|e| format!("creating volume {name}: {e}"))?;
                st.volume_id = s(v.id);
            }
            "spaces" => {
                let bucket = block.bucket.as_ref_option().cloned().unwrap_or_default();
                let s3c = s3::S3::from_settings(settings, &region).map_err(|e| e.to_string())?;
                s3c.ensure_bucket(&bucket)
                    .await
                    .map_err(|e| format!("creating bucket {bucket}: {e}"))?;
                st.spaces_endpoint = s(s3c.endpoint().as_str().to_owned());
                let key_name = format!("{}-registry", known(&st.name).unwrap_or("registry"));
                let key = s3::mint_registry_key(client, &key_name, &bucket)
                    .await
                    .map_err(|e| format!("minting the registry's Spaces key for {bucket}: {e}"))?;
                st.spaces_key_id = s(key.access_key);
                st.spaces_secret_key = s(key.secret_key.expose().to_owned());
            }
            _ => {}
        }
        Ok(())
    }

    async fn create_inner(
        &self,
        client: &Client,
        settings: &Settings,
        st: &mut RegistryState,
        deadline: Instant,
    ) -> Result<(), String> {
        let name = known(&st.name).unwrap_or_default().to_owned();
        fill_hashes(st, None)?;
        st.docker_config_json = s(docker_config_json(st));
        let mgmt =
            remote::generate_ed25519("terraform-provider-docker").map_err(|e| e.to_string())?;
        let host = remote::generate_ed25519(&format!("root@{name}")).map_err(|e| e.to_string())?;
        st.management_private_key = s(mgmt.private_openssh.expose().to_owned());
        st.management_public_key = s(mgmt.public_openssh.clone());
        st.host_private_key = s(host.private_openssh.expose().to_owned());
        st.host_public_key = s(host.public_openssh.clone());
        st.host_key_fingerprint = s(host.fingerprint_sha256.clone());
        st.http_secret = s(random_hex(32));
        st.volume_id = Value::Null;
        st.aaaa_record_id = Value::Null;
        st.ipv6_address = Value::Null;

        st.acme_account_key = Value::Null;
        st.caa_record_id = Value::Null;
        self.provision_storage(client, settings, st, deadline)
            .await?;
        let started = Instant::now();
        let source = tls_source(st);
        let (_, _, http01) = acme_inputs(st);
        if source == "acme" {
            self.ensure_caa(client, settings, st).await?;
        }
        if source == "acme" && !http01 {
            // DNS-01 needs no droplet: the order runs while the droplet boots.
            let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
            let domain = domain_of(client, &fqdn).await?;
            let mut cert_st = st.clone();
            let challenge = acme::Challenge::Dns01 {
                client: client.clone(),
                domain,
            };
            let order = async {
                let r = acme_certificate(settings, &mut cert_st, challenge).await;
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    ok = r.is_ok(),
                    "create timeline: certificate ready"
                );
                r
            };
            let boot = async {
                self.boot_droplet(client, st, true, deadline).await?;
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "create timeline: droplet active"
                );
                connect(st, deadline).await?;
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "create timeline: droplet SSH-ready"
                );
                Ok::<(), String>(())
            };
            let (cert, booted) = tokio::join!(order, boot);
            booted?;
            cert?;
            st.acme_account_key = cert_st.acme_account_key;
            st.certificate_pem = cert_st.certificate_pem;
            st.tls_private_key_pem = cert_st.tls_private_key_pem;
            st.certificate_not_after = cert_st.certificate_not_after;
            st.ca_certificate_pem = Value::Null;
            st.ca_private_key_pem = Value::Null;
            ensure_record(client, st).await?;
            converge_and_verify(st, deadline).await?;
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "create timeline: registry verified"
            );
            return Ok(());
        }
        self.boot_droplet(client, st, true, deadline).await?;
        ensure_record(client, st).await?;
        if source == "acme" {
            // HTTP-01: nginx must answer on port 80 first, and it needs some certificate to
            // start on 443: a throwaway self-signed one, replaced right after.
            let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
            let placeholder = tls::self_signed(&fqdn, &[], None).map_err(|e| e.to_string())?;
            store_issued(st, placeholder);
            st.ca_certificate_pem = Value::Null;
            st.ca_private_key_pem = Value::Null;
            converge_and_verify(st, deadline).await?;
            self.renew_http01(settings, st, deadline).await?;
        } else {
            issue_certificate(st)?;
        }
        converge_and_verify(st, deadline).await?;
        Ok(())
    }

    /// An ACME certificate by HTTP-01 for a droplet that serves port 80 already.
    async fn renew_http01(
        &self,
        settings: &Settings,
        st: &mut RegistryState,
        deadline: Instant,
    ) -> Result<(), String> {
        let transport: Arc<dyn Transport> = Arc::new(connect(st, deadline).await?);
        acme_certificate(settings, st, acme::Challenge::Http01 { transport }).await
    }

    /// A new certificate for `st` (tls changed, renewal due, self-signed SANs changed).
    async fn obtain_certificate(
        &self,
        client: &Client,
        settings: &Settings,
        st: &mut RegistryState,
        deadline: Instant,
    ) -> Result<(), String> {
        if tls_source(st) != "acme" {
            return issue_certificate(st);
        }
        self.ensure_caa(client, settings, st).await?;
        let (_, _, http01) = acme_inputs(st);
        if http01 {
            return self.renew_http01(settings, st, deadline).await;
        }
        let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
        let domain = domain_of(client, &fqdn).await?;
        let r = acme_certificate(
            settings,
            st,
            acme::Challenge::Dns01 {
                client: client.clone(),
                domain,
            },
        )
        .await;
        st.ca_certificate_pem = Value::Null;
        st.ca_private_key_pem = Value::Null;
        r
    }

    /// With `tls.caa = true`: a CAA record that lets only the ACME directory's CA issue.
    async fn ensure_caa(
        &self,
        client: &Client,
        settings: &Settings,
        st: &mut RegistryState,
    ) -> Result<(), String> {
        let want = st
            .tls
            .as_ref_option()
            .and_then(|t| t.caa.as_ref_option().copied())
            .unwrap_or(false);
        if !want || st.caa_record_id.is_value() {
            return Ok(());
        }
        let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
        let domain = domain_of(client, &fqdn).await?;
        let req = acme::caa_record(&fqdn, &domain, &settings.acme_directory_url)
            .map_err(|e| e.to_string())?;
        let rec = client
            .create_record(&domain, &req)
            .await
            .map_err(|e| format!("creating the CAA record of {fqdn}: {e}"))?;
        st.caa_record_id = Value::Value(rec.id as i64);
        st.domain = s(domain);
        Ok(())
    }

    /// Creates a droplet with the keys in `st`, the firewall when there is none, and waits for
    /// the droplet to be active; fills droplet_id (as soon as it exists) and the addresses.
    async fn boot_droplet(
        &self,
        client: &Client,
        st: &mut RegistryState,
        attach_volume: bool,
        deadline: Instant,
    ) -> Result<(), String> {
        let name = known(&st.name).unwrap_or_default().to_owned();
        let fqdn = known(&st.fqdn).unwrap_or_default().to_owned();
        let mgmt_public = known(&st.management_public_key)
            .unwrap_or_default()
            .to_owned();
        let host_private = secret_of(&st.host_private_key).unwrap_or_default();
        let host_public = known(&st.host_public_key).unwrap_or_default().to_owned();
        let user_data = render::user_data(&mgmt_public, &host_private, &host_public);
        let mut tags: Vec<String> = st
            .tags
            .as_ref_option()
            .map(|t| {
                t.iter()
                    .filter_map(|x| x.as_ref_option().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let unique_tag = format!("docker-registry-{}", random_hex(6));
        tags.push(unique_tag.clone());
        let ssh_keys = st
            .ssh_key_fingerprints
            .as_ref_option()
            .map(|v| {
                v.iter()
                    .filter_map(|f| f.as_ref_option().cloned())
                    .map(do_api::SshKeyRef::Fingerprint)
                    .collect()
            })
            .unwrap_or_default();
        let req = do_api::DropletCreateRequest {
            name: name.clone(),
            region: known(&st.region).unwrap_or_default().to_owned(),
            size: known(&st.size).unwrap_or(schema::DEFAULT_SIZE).to_owned(),
            image: do_api::ImageRef::Slug(
                known(&st.image).unwrap_or(schema::DEFAULT_IMAGE).to_owned(),
            ),
            ssh_keys,
            user_data: Some(Secret::new(user_data)),
            tags,
            volumes: known(&st.volume_id)
                .filter(|_| attach_volume)
                .map(|v| vec![v.to_owned()])
                .unwrap_or_default(),
            ipv6: false,
            monitoring: false,
            vpc_uuid: None,
        };
        let droplet = client
            .create_droplet(&req, &unique_tag)
            .await
            .map_err(|e| e.to_string())?;
        st.droplet_id = Value::Value(droplet.id as i64);
        tracing::info!(droplet = droplet.id, %fqdn, "droplet created");

        // The firewall needs only the droplet's id: make it while the droplet boots.
        let fw_req = firewall_request(&name, droplet.id, &cidrs_of(st));
        let remaining = deadline.saturating_duration_since(Instant::now());
        let need_firewall = known(&st.firewall_id).is_none();
        let firewall = async {
            if need_firewall {
                client.create_firewall(&fw_req).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (fw, active) = tokio::join!(
            firewall,
            client.wait_for_droplet_active(droplet.id, remaining)
        );
        match fw {
            Ok(Some(f)) => st.firewall_id = s(f.id),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        let active = active.map_err(|e| e.to_string())?;
        let ip = active
            .public_ipv4()
            .ok_or_else(|| {
                format!(
                    "droplet {name} ({}) is active but has no public IPv4 address",
                    droplet.id
                )
            })?
            .to_owned();
        st.ipv4_address = s(ip);
        st.ipv6_address = active.public_ipv6().map(s).unwrap_or(Value::Null);
        Ok(())
    }

    /// A new droplet for the same registry: booted with the same keys, converged and verified,
    /// then the record switched to it and, after the record's TTL, the old droplet deleted.
    /// Until the switch a failure deletes the new droplet and leaves the old one serving.
    async fn replace_droplet(
        &self,
        client: &Client,
        settings: &Settings,
        prior: &RegistryState,
        st: &mut RegistryState,
        deadline: Instant,
    ) -> Result<(), String> {
        let old_id = prior
            .droplet_id
            .as_ref_option()
            .map(|i| *i as u64)
            .ok_or("no droplet id in state")?;
        fill_hashes(st, Some(prior))?;
        st.docker_config_json = s(docker_config_json(st));
        st.firewall_id = prior.firewall_id.clone();
        st.record_id = prior.record_id;
        st.domain = prior.domain.clone();
        let volume_id = known(&prior.volume_id).map(str::to_owned);
        let region = known(&st.region).unwrap_or_default().to_owned();
        let mut gap_started: Option<Instant> = None;
        let staged = async {
            self.boot_droplet(client, st, false, deadline).await?;
            if st.certificate_pem.is_unknown() || tls_source(st) == "self_signed" {
                self.obtain_certificate(client, settings, st, deadline)
                    .await?;
            }
            if let Some(vid) = &volume_id {
                // One filesystem, one writer: the old registry stops before the volume moves.
                // From here until the new droplet is verified, pushes and pulls fail.
                gap_started = Some(Instant::now());
                let old = connect(prior, deadline).await?;
                old.exec("systemctl stop docker-registry; sync", b"")
                    .await
                    .map_err(|e| e.to_string())?;
                let new_id = st
                    .droplet_id
                    .as_ref_option()
                    .map(|i| *i as u64)
                    .unwrap_or_default();
                let remaining = deadline.saturating_duration_since(Instant::now());
                volume::move_to(client, vid, new_id, &region, remaining)
                    .await
                    .map_err(|e| format!("moving volume ({vid}) to droplet ({new_id}): {e}"))?;
            }
            converge_and_verify(st, deadline).await
        }
        .await;
        if let Err(e) = staged {
            if let (Some(vid), Some(_)) = (&volume_id, gap_started) {
                // Put the volume back and restart the old registry, so it serves again.
                let remaining = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(60));
                let back = volume::move_to(client, vid, old_id, &region, remaining).await;
                let restarted = match connect(prior, Instant::now() + Duration::from_secs(60)).await
                {
                    Ok(t) => t
                        .exec("systemctl start docker-registry", b"")
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                if let Err(be) = back.map_err(|e| e.to_string()).and(restarted) {
                    tracing::warn!(error = %be, "putting the volume back on the old droplet");
                }
            }
            if let Some(new_id) = st.droplet_id.as_ref_option().map(|i| *i as u64) {
                if new_id != old_id {
                    if let Err(de) = client.delete_droplet(new_id).await {
                        return Err(format!(
                            "{e}; deleting the new droplet ({new_id}) failed too: {de}"
                        ));
                    }
                }
            }
            return Err(e);
        }
        let new_id = st
            .droplet_id
            .as_ref_option()
            .map(|i| *i as u64)
            .unwrap_or_default();
        let name = known(&st.name).unwrap_or_default().to_owned();
        if let Some(fw) = known(&st.firewall_id) {
            client
                .update_firewall(fw, &firewall_request(&name, new_id, &cidrs_of(st)))
                .await
                .map_err(|e| e.to_string())?;
        }
        ensure_record(client, st).await?;
        if let Some(t) = gap_started {
            tracing::info!(
                gap_ms = t.elapsed().as_millis() as u64,
                "volume switch-over gap: registry stopped on the old droplet until the new one was verified and the record switched"
            );
        }
        tracing::info!(
            old = old_id,
            new = new_id,
            ttl = RECORD_TTL,
            "record switched; waiting for its TTL before deleting the old droplet"
        );
        tokio::time::sleep(Duration::from_secs(RECORD_TTL as u64)).await;
        client
            .delete_droplet(old_id)
            .await
            .map_err(|e| format!("the registry now runs on droplet ({new_id}), but deleting the old droplet ({old_id}) failed: {e}; delete it by hand"))?;
        Ok(())
    }

    async fn update_inner(
        &self,
        client: &Client,
        settings: &Settings,
        prior: &RegistryState,
        st: &mut RegistryState,
        deadline: Instant,
    ) -> Result<(), String> {
        if prior.image != st.image || prior.droplet_generation != st.droplet_generation {
            return self
                .replace_droplet(client, settings, prior, st, deadline)
                .await;
        }
        let id = prior
            .droplet_id
            .as_ref_option()
            .map(|i| *i as u64)
            .ok_or("no droplet id in state")?;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        if prior.name != st.name {
            if let Some(name) = known(&st.name) {
                let a = client.rename(id, name).await.map_err(|e| e.to_string())?;
                client
                    .wait_for_action(a.id, remaining())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        if prior.size != st.size {
            if let Some(size) = known(&st.size) {
                let off = client.power_off(id).await.map_err(|e| e.to_string())?;
                client
                    .wait_for_action(off.id, remaining())
                    .await
                    .map_err(|e| e.to_string())?;
                let r = client.resize(id, size).await.map_err(|e| e.to_string())?;
                client
                    .wait_for_action(r.id, remaining())
                    .await
                    .map_err(|e| e.to_string())?;
                let on = client.power_on(id).await.map_err(|e| e.to_string())?;
                client
                    .wait_for_action(on.id, remaining())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        // Firewall: recreate when gone, update when the SSH sources changed.
        let name = known(&st.name).unwrap_or_default().to_owned();
        let fw_req = firewall_request(&name, id, &cidrs_of(st));
        match known(&prior.firewall_id) {
            Some(fw)
                if prior.ssh_allowed_cidrs != st.ssh_allowed_cidrs
                    || st.firewall_id.is_unknown() =>
            {
                match client.update_firewall(fw, &fw_req).await {
                    Ok(f) => st.firewall_id = s(f.id),
                    Err(e) if e.is_not_found() => {
                        let f = client
                            .create_firewall(&fw_req)
                            .await
                            .map_err(|e| e.to_string())?;
                        st.firewall_id = s(f.id);
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Some(fw) => st.firewall_id = s(fw.to_owned()),
            None => {
                let f = client
                    .create_firewall(&fw_req)
                    .await
                    .map_err(|e| e.to_string())?;
                st.firewall_id = s(f.id);
            }
        }
        if st.record_id.is_unknown() {
            st.record_id = prior.record_id;
            ensure_record(client, st).await?;
        }
        let size = |x: &RegistryState| {
            x.storage
                .as_ref_option()
                .and_then(|b| b.size_gib.as_ref_option().copied())
        };
        if let (Some(vid), Some(a), Some(b)) = (known(&st.volume_id), size(prior), size(st)) {
            if b > a {
                let region = known(&st.region).unwrap_or_default().to_owned();
                volume::grow(client, vid, b as u64, &region, remaining())
                    .await
                    .map_err(|e| format!("growing volume ({vid}): {e}"))?;
                let t = connect(st, deadline).await?;
                volume::grow_filesystem(&t, &volume::mount_path(&volume_name(st)))
                    .await
                    .map_err(|e| format!("growing the filesystem of volume ({vid}): {e}"))?;
            }
        }
        if prior.ssh_key_fingerprints != st.ssh_key_fingerprints {
            set_people_keys(client, st, deadline).await?;
        }
        if prior.tags != st.tags {
            let list = |x: &RegistryState| -> Vec<String> {
                x.tags
                    .as_ref_option()
                    .map(|v| {
                        v.iter()
                            .filter_map(|t| t.as_ref_option().cloned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (old, new) = (list(prior), list(st));
            for t in new.iter().filter(|t| !old.contains(t)) {
                client.tag_droplet(t, id).await.map_err(|e| e.to_string())?;
            }
            for t in old.iter().filter(|t| !new.contains(t)) {
                client
                    .untag_droplet(t, id)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        fill_hashes(st, Some(prior))?;
        st.docker_config_json = s(docker_config_json(st));
        if st.certificate_pem.is_unknown() {
            self.obtain_certificate(client, settings, st, deadline)
                .await?;
        }
        converge_and_verify(st, deadline).await?;
        Ok(())
    }
}
