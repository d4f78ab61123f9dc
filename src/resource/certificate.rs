//! The registry's certificate: self-signed (a private CA kept across renewals), provided, or
//! from ACME (DNS-01 through the account's records or the droplet's delegated DNS, HTTP-01
//! through the droplet); the CAA record; when a certificate is due; and the droplet's own
//! renewal: its files' inputs, the delegation, adopting what it renewed, the plan's warning.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tf_provider::value::Value;
use tf_provider::Diagnostics;

use super::desired::{s, secret_of};
use super::env::Env;
use super::error::{tls_attr, Error, Result, ResultExt};
use super::model::{ChallengeKind, Model, RenewMode, TlsSource, MAX_TIMEOUT, MIN_RENEW_INTERVAL};
use super::network::domain_of;
use super::state::{known, RegistryState};
use crate::acme::{self, renewal};
use crate::config::Settings;
use crate::do_api::DomainRecordRequest;
use crate::remote::{shell_quote, Transport};
use crate::render::paths;
use crate::render::renewal::{renewal_paths, RenewChallenge, RenewalSpec};
use crate::secret::Secret;
use crate::tls;

/// The provider's ACME settings.
pub fn acme_config(settings: &Settings) -> acme::AcmeConfig {
    acme::AcmeConfig::from_settings(settings)
}

/// Puts an issued certificate (and its CA, if any) in state.
pub fn store_issued(st: &mut RegistryState, issued: tls::Issued) {
    st.certificate_pem = s(issued.cert_chain_pem);
    st.tls_private_key_pem = s(issued.private_key_pem.expose().to_owned());
    st.certificate_not_after = s(tls::rfc3339(issued.not_after));
    st.ca_certificate_pem = issued.ca_certificate_pem.map(s).unwrap_or(Value::Null);
    st.ca_private_key_pem = issued
        .ca_private_key_pem
        .map(|k| s(k.expose().to_owned()))
        .unwrap_or(Value::Null);
}

/// The provided certificate, checked, or (any other source that gets here: self-signed) one
/// for the fqdn and the droplet's addresses, signed by the CA in state (made the first time).
/// ACME certificates are ordered instead: see [`obtain`].
fn issue_locally(st: &mut RegistryState, m: &Model) -> Result<()> {
    let issued = if m.tls.source == TlsSource::Provided {
        let chain = m.tls.certificate_pem.clone().unwrap_or_default();
        let key = m.tls.private_key_pem.clone().unwrap_or_default();
        let info = tls::check_provided(&chain, &key, &m.fqdn).at(tls_attr("certificate_pem"))?;
        tls::Issued {
            cert_chain_pem: chain,
            private_key_pem: key,
            ca_certificate_pem: None,
            ca_private_key_pem: None,
            not_after: info.not_after,
        }
    } else {
        // The reserved IP first: clients that reach the registry by address use it. Behind a
        // load balancer, its address only: every droplet serves the same certificate, and
        // droplets come and go.
        let own = known(&st.load_balancer_ip).is_none();
        let ips: Vec<IpAddr> = [
            known(&st.load_balancer_ip),
            known(&st.reserved_ip_address),
            known(&st.ipv4_address).filter(|_| own),
            known(&st.ipv6_address).filter(|_| own),
        ]
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
        tls::self_signed(&m.fqdn, &ips, existing)?
    };
    store_issued(st, issued);
    Ok(())
}

/// Orders an ACME certificate for the registry and stores it and the account in `st`.
pub async fn order(
    settings: &Settings,
    st: &mut RegistryState,
    m: &Model,
    challenge: acme::Challenge,
) -> Result<()> {
    let account = secret_of(&st.acme_account_key);
    let got = acme::issue(
        &acme_config(settings),
        account.as_ref(),
        m.tls.email.as_deref(),
        &m.fqdn,
        m.tls.key_type,
        challenge,
    )
    .await
    .context("ordering the certificate for", &m.fqdn)?;
    for w in &got.warnings {
        tracing::warn!(warning = %w, "certificate issued with a warning");
    }
    st.acme_account_key = s(got.account.expose().to_owned());
    let (at, rule) = renewal::renew_at(
        &acme_config(settings),
        &got.issued.cert_chain_pem,
        m.tls.renew_before_days,
    )
    .await
    .map_err(Error::from)?;
    tracing::info!(fqdn = %m.fqdn, renew_at = %tls::rfc3339(at), rule = rule.as_str(), "certificate renewal due");
    st.certificate_renew_at = s(tls::rfc3339(at));
    store_issued(st, got.issued);
    Ok(())
}

/// The DNS-01 challenge through the account's records of the fqdn's domain.
pub async fn dns01(env: &Env, m: &Model) -> Result<acme::Challenge> {
    let (domain, _) = domain_of(&env.client, &m.fqdn).await?;
    Ok(acme::Challenge::Dns01 {
        client: env.client.clone(),
        domain,
    })
}

/// An ACME certificate by HTTP-01, for a droplet that serves port 80 already.
pub async fn order_http01(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    // Behind a load balancer the CA's check reaches any droplet: the answer goes on each.
    let mut transports: Vec<Arc<dyn Transport>> = Vec::new();
    for (id, ip) in super::fleet::members(st) {
        let v = super::fleet::view(st, id, &ip);
        transports.push(env.connect(&v, deadline).await?);
    }
    if transports.is_empty() {
        transports.push(env.connect(st, deadline).await?);
    }
    order(&env.settings, st, m, acme::Challenge::Http01 { transports }).await
}

/// A new certificate for `st` (tls changed, renewal due, self-signed SANs changed).
pub async fn obtain(env: &Env, st: &mut RegistryState, m: &Model, deadline: Instant) -> Result<()> {
    if m.tls.source != TlsSource::Acme {
        return issue_locally(st, m);
    }
    ensure_caa(env, st, m).await?;
    if m.tls.challenge == ChallengeKind::Http01 {
        return order_http01(env, st, m, deadline).await;
    }
    // Once the challenge name is delegated to the droplet, only its DNS server answers it.
    let challenge = match dns01_on_droplet(env, st, deadline).await? {
        Some(c) => c,
        None => dns01(env, m).await?,
    };
    let r = order(&env.settings, st, m, challenge).await;
    st.ca_certificate_pem = Value::Null;
    st.ca_private_key_pem = Value::Null;
    r
}

/// With `tls.caa = true`: a CAA record that lets only the ACME directory's CA issue.
pub async fn ensure_caa(env: &Env, st: &mut RegistryState, m: &Model) -> Result<()> {
    if !m.tls.caa || st.caa_record_id.is_value() {
        return Ok(());
    }
    let (domain, _) = domain_of(&env.client, &m.fqdn).await?;
    let req = acme::caa_record(&m.fqdn, &domain, &env.settings.acme_directory_url)?;
    // One an interrupted create made is taken over rather than doubled.
    let same = env
        .client
        .list_records(&domain, Some(&m.fqdn), Some("CAA"))
        .await?
        .into_iter()
        .find(|r| r.data == req.data && r.tag == req.tag);
    if let Some(rec) = same {
        st.caa_record_id = Value::Value(rec.id as i64);
        st.domain = s(domain);
        return Ok(());
    }
    let rec = env
        .client
        .create_record(&domain, &req)
        .await
        .context("creating the CAA record of", &m.fqdn)
        .map_err(|e| e.at(tls_attr("caa")))?;
    st.caa_record_id = Value::Value(rec.id as i64);
    st.domain = s(domain);
    Ok(())
}

/// The CAA record of `prior` when the plan no longer has one (`tls.caa` or ACME went away):
/// deleted, so that no record keeps restricting who may issue for the name.
pub async fn drop_caa(env: &Env, prior: &RegistryState, st: &mut RegistryState) -> Result<()> {
    let (Some(id), true) = (
        prior.caa_record_id.as_ref_option(),
        st.caa_record_id.is_null(),
    ) else {
        return Ok(());
    };
    if let Some(domain) = known(&prior.domain) {
        match env.client.delete_record(domain, *id as u64).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                // Still there: keep its id, so the next apply or destroy deletes it.
                st.caa_record_id = prior.caa_record_id;
                return Err(Error::from(e)
                    .context("deleting the CAA record", id)
                    .at(tls_attr("caa")));
            }
        }
    }
    Ok(())
}

/// Why an ACME certificate in state must be renewed now, if it must (whoever renews it).
pub fn renewal_reason(st: &RegistryState, m: &Model) -> Option<String> {
    if m.tls.source != TlsSource::Acme {
        return None;
    }
    renewal_reason_at(st, m, time::OffsetDateTime::now_utc()).map(|r| r.text)
}

/// Checks a provided certificate at plan time: `Err` fails the plan on `tls.certificate_pem`.
pub fn check_provided(m: &Model) -> Result<()> {
    if let (Some(c), Some(k)) = (&m.tls.certificate_pem, &m.tls.private_key_pem) {
        if !m.fqdn.is_empty() {
            tls::check_provided(c, k, &m.fqdn)
                .map_err(Error::from)
                .at(tls_attr("certificate_pem"))?;
        }
    }
    Ok(())
}

// ---- renewal on the droplet ------------------------------------------------------------------

/// The droplet renews this registry's certificate itself.
pub fn renews_on_droplet(m: &Model) -> bool {
    m.tls.source == TlsSource::Acme && m.tls.renew == RenewMode::Droplet
}

/// The issuer (DER) whose renewals of state's certificate a check from outside accepts: the
/// droplet's own timer may replace the certificate during any apply (see
/// [`crate::remote::outside::pinned_client`]). None unless the droplet renews it.
pub fn renewal_issuer(st: &RegistryState, m: &Model) -> Option<Vec<u8>> {
    if !renews_on_droplet(m) {
        return None;
    }
    crate::tls::issuer_der(known(&st.certificate_pem)?)
}

/// `_acme-challenge.<fqdn>` is delegated to the droplet's DNS server.
pub fn delegates_challenge(m: &Model) -> bool {
    renews_on_droplet(m) && m.tls.challenge == ChallengeKind::Dns01
}

/// What the droplet's renewal is rendered from, all of it from state; `None` without renewal
/// on the droplet or before the registry has an ACME account.
pub fn renewal_spec(st: &RegistryState, m: &Model) -> Option<RenewalSpec> {
    if !renews_on_droplet(m) {
        return None;
    }
    let account = secret_of(&st.acme_account_key)?;
    let parsed: serde_json::Value = serde_json::from_str(account.expose()).ok()?;
    let directory = parsed.get("directory")?.as_str()?.to_owned();
    Some(RenewalSpec {
        directory_url: directory,
        challenge: match m.tls.challenge {
            ChallengeKind::Dns01 => RenewChallenge::Dns01,
            ChallengeKind::Http01 => RenewChallenge::Http01,
        },
        key_type: m.tls.key_type.as_str().to_owned(),
        renew_before_days: m.tls.renew_before_days,
        interval: m.tls.renew_interval,
        account_json: account,
        ca_certificates_pem: known(&st.acme_ca_certificates).map(str::to_owned),
    })
}

/// Plan-time checks of `tls.renew` and `tls.renew_interval`, on their attributes.
pub fn check_renewal_config(diags: &mut Diagnostics, config: &RegistryState) {
    let Some(t) = config.tls.as_ref_option() else {
        return;
    };
    if let Some(v) = t.renew.as_ref_option() {
        if RenewMode::parse(v).is_none() {
            diags.error(
                "Invalid `tls.renew`",
                format!("{v:?} is not one of {}.", RenewMode::ALL.join(", ")),
                tls_attr("renew"),
            );
        }
    }
    if let Some(v) = t.renew_interval.as_ref_option() {
        let problem = match super::validate::parse_duration(v) {
            Ok(d) if d < MIN_RENEW_INTERVAL => Some("it is shorter than 5s".to_owned()),
            Ok(d) if d > MAX_TIMEOUT => Some("it is longer than a week".to_owned()),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(p) = problem {
            diags.error(
                "Invalid `tls.renew_interval`",
                format!("{v:?} is not a usable interval: {p} (a Go duration such as \"12h\")."),
                tls_attr("renew_interval"),
            );
        }
    }
}

/// Computed renewal values a create must fill: none of them is known before apply.
pub fn init_renewal_state(env: &Env, st: &mut RegistryState) {
    st.certificate_renew_at = Value::Null;
    st.renewal_status = Value::Null;
    st.acme_delegation_record_id = Value::Null;
    st.acme_ca_certificates = s(env
        .settings
        .acme_ca_certificates
        .clone()
        .unwrap_or_default());
}

/// Before a converge: the renewal's computed values, and the delegation of the challenge name
/// to the droplet (made or removed as `renew` and `challenge` ask).
pub async fn prepare_renewal(env: &Env, st: &mut RegistryState, m: &Model) -> Result<()> {
    if !st.acme_ca_certificates.is_value() {
        st.acme_ca_certificates = s(env
            .settings
            .acme_ca_certificates
            .clone()
            .unwrap_or_default());
    }
    if st.renewal_status.is_unknown() {
        st.renewal_status = Value::Null;
    }
    if !st.certificate_renew_at.is_value() {
        st.certificate_renew_at = Value::Null;
        if let (TlsSource::Acme, Some(cert)) = (m.tls.source, known(&st.certificate_pem)) {
            let cfg = acme_config(&env.settings);
            if let Ok((at, _)) = renewal::renew_at(&cfg, cert, m.tls.renew_before_days).await {
                st.certificate_renew_at = s(tls::rfc3339(at));
            }
        }
    }
    ensure_delegation(env, st, m).await
}

/// The NS record `_acme-challenge.<fqdn>` → `<fqdn>.` (whose A record is the droplet) when
/// the droplet answers its own DNS-01 challenges; removed when it no longer does.
async fn ensure_delegation(env: &Env, st: &mut RegistryState, m: &Model) -> Result<()> {
    let client = &env.client;
    let wanted = delegates_challenge(m);
    let existing = st
        .acme_delegation_record_id
        .as_ref_option()
        .map(|i| *i as u64);
    let (domain, _) = domain_of(client, &m.fqdn).await?;
    match (wanted, existing) {
        (true, Some(id)) => {
            if client
                .get_record(&domain, id)
                .await
                .context("reading the ACME delegation record of", &m.fqdn)?
                .is_some()
            {
                return Ok(());
            }
        }
        (false, Some(id)) => {
            match client.delete_record(&domain, id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(Error::from(e).context("deleting the ACME delegation record", id))
                }
            }
            st.acme_delegation_record_id = Value::Null;
            return Ok(());
        }
        (false, None) => {
            st.acme_delegation_record_id = Value::Null;
            return Ok(());
        }
        (true, None) => {}
    }
    let name = acme::challenge_record_name(&m.fqdn, &domain)?;
    let req = DomainRecordRequest {
        kind: "NS".into(),
        name,
        data: format!("{}.", m.fqdn.trim_end_matches('.')),
        ttl: Some(super::network::RECORD_TTL),
        ..Default::default()
    };
    let rec = client
        .create_record(&domain, &req)
        .await
        .context("delegating the ACME challenge name of", &m.fqdn)
        .map_err(|e| e.at(tls_attr("renew")))?;
    tracing::info!(fqdn = %m.fqdn, record = rec.id, "challenge name delegated to the droplet");
    st.acme_delegation_record_id = Value::Value(rec.id as i64);
    Ok(())
}

/// The DNS-01 challenge through the droplet's own DNS server, once the name is delegated.
pub async fn dns01_on_droplet(
    env: &Env,
    st: &RegistryState,
    deadline: Instant,
) -> Result<Option<acme::Challenge>> {
    if st.acme_delegation_record_id.as_ref_option().is_none() {
        return Ok(None);
    }
    let Some(ip) = known(&st.ipv4_address).and_then(|a| a.parse::<IpAddr>().ok()) else {
        return Ok(None);
    };
    let transport: Arc<dyn Transport> = env.connect(st, deadline).await?;
    Ok(Some(acme::Challenge::Dns01Droplet {
        transport,
        server: SocketAddr::new(ip, 53),
    }))
}

/// The droplet's status file, as the provider keeps it: known fields only, short, no
/// control characters (it ends up in plan output).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenewalStatus {
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub checked_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub renew_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failing_since: String,
}

impl RenewalStatus {
    fn parse(text: &str) -> Option<RenewalStatus> {
        let mut st: RenewalStatus = serde_json::from_str(text.trim()).ok()?;
        for f in [
            &mut st.result,
            &mut st.checked_at,
            &mut st.renew_at,
            &mut st.rule,
            &mut st.message,
            &mut st.failing_since,
        ] {
            *f = f.chars().filter(|c| !c.is_control()).take(300).collect();
        }
        Some(st)
    }

    fn of(st: &RegistryState) -> Option<RenewalStatus> {
        known(&st.renewal_status).and_then(RenewalStatus::parse)
    }

    fn time(s: &str) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    }
}

/// Read: the provider's extra roots as the droplet should trust them, and when the
/// certificate is due (the CA may have moved its window: a revocation asks for renewal now).
pub async fn refresh_renewal(env: &Env, st: &mut RegistryState, m: &Model) {
    if m.tls.source != TlsSource::Acme {
        return;
    }
    st.acme_ca_certificates = s(env
        .settings
        .acme_ca_certificates
        .clone()
        .unwrap_or_default());
    if let Some(cert) = known(&st.certificate_pem).map(str::to_owned) {
        let cfg = acme_config(&env.settings);
        if let Ok((at, _)) = renewal::renew_at(&cfg, &cert, m.tls.renew_before_days).await {
            st.certificate_renew_at = s(tls::rfc3339(at));
        }
    }
}

/// The shell that prints what read takes from the droplet besides the digests: the renewal's
/// status and the served chain, and the served key only when the chain differs from state's.
pub fn droplet_read_command(st: &RegistryState, m: &Model) -> Option<String> {
    if !renews_on_droplet(m) {
        return None;
    }
    let chain = shell_quote(paths::TLS_CERT_CHAIN);
    let key = shell_quote(paths::TLS_PRIVATE_KEY);
    let expected = known(&st.certificate_pem)
        .map(|c| crate::remote::sha256_hex(c.as_bytes()))
        .unwrap_or_default();
    Some(format!(
        "echo @@STATUS; cat {} 2>/dev/null; echo; echo @@CHAIN; cat {chain} 2>/dev/null; \
         echo @@KEY; if [ \"$(sha256sum < {chain} 2>/dev/null | cut -d' ' -f1)\" != {} ]; then cat {key} 2>/dev/null; fi; echo @@END",
        shell_quote(renewal_paths::STATUS),
        shell_quote(&expected),
    ))
}

/// Takes what read found on the droplet into `st`: the renewal status, and the certificate
/// the droplet renewed, when it is one (see [`adoptable`]).
pub async fn take_droplet_read(env: &Env, st: &mut RegistryState, m: &Model, output: &str) {
    let section = |name: &str| -> Option<&str> {
        let start = output.find(&format!("@@{name}\n"))? + name.len() + 3;
        let rest = &output[start..];
        let end = rest.find("@@").unwrap_or(rest.len());
        Some(&rest[..end])
    };
    if let Some(status) = section("STATUS").and_then(RenewalStatus::parse) {
        st.renewal_status = s(serde_json::to_string(&status).unwrap_or_default());
    }
    let (Some(chain), Some(key)) = (section("CHAIN"), section("KEY")) else {
        return;
    };
    if key.trim().is_empty() || chain.trim().is_empty() {
        return;
    }
    let key = Secret::new(key.to_owned());
    match adoptable(st, m, chain, &key, time::OffsetDateTime::now_utc()) {
        Ok(info) => {
            tracing::info!(fqdn = %m.fqdn, not_after = %tls::rfc3339(info.not_after), "adopting the certificate the droplet renewed");
            st.certificate_pem = s(chain.to_owned());
            st.tls_private_key_pem = s(key.expose().to_owned());
            st.certificate_not_after = s(tls::rfc3339(info.not_after));
            let cfg = acme_config(&env.settings);
            if let Ok((at, _)) = renewal::renew_at(&cfg, chain, m.tls.renew_before_days).await {
                st.certificate_renew_at = s(tls::rfc3339(at));
            }
        }
        Err(why) => {
            tracing::info!(fqdn = %m.fqdn, "the droplet serves a certificate that is not taken into state ({why}); the next apply puts state's back")
        }
    }
}

/// A certificate the droplet holds is the registry's own renewal when it is for the fqdn,
/// valid now, later than state's, its key matches, and it was signed by the issuer of state's
/// certificate (the same CA). Anything else is drift.
pub fn adoptable(
    st: &RegistryState,
    m: &Model,
    chain: &str,
    key: &Secret,
    now: time::OffsetDateTime,
) -> std::result::Result<tls::LeafInfo, String> {
    if !renews_on_droplet(m) {
        return Err("renewal on the droplet is off".into());
    }
    let current = known(&st.certificate_pem).ok_or("state holds no certificate")?;
    let info = tls::check_provided(chain, key, &m.fqdn).map_err(|e| e.to_string())?;
    let was = tls::leaf_info(current).map_err(|e| e.to_string())?;
    if info.not_after <= was.not_after {
        return Err("it is not newer than the certificate in state".into());
    }
    if !renewal::issued_by_same_ca(chain, current, now).map_err(|e| e.to_string())? {
        return Err("it was not issued by the CA of the certificate in state".into());
    }
    Ok(info)
}

/// Whether the `tls` block changed in a way that needs a new certificate: who renews, and
/// how often the droplet looks, do not.
/// Plan: a self-signed certificate names the registry's reserved IP (clients that reach the
/// registry by address check it), so turning `reserved_ip` on or off issues it again, as does
/// one issued before it named the reserved IP.
pub fn self_signed_addresses_changed(prior: &RegistryState, st: &RegistryState, m: &Model) -> bool {
    if m.tls.source != TlsSource::SelfSigned {
        return false;
    }
    if prior.reserved_ip_address != st.reserved_ip_address
        || prior.load_balancer_ip != st.load_balancer_ip
    {
        return true;
    }
    let (Some(ip), Some(pem)) = (
        known(&st.reserved_ip_address).and_then(|ip| ip.parse::<IpAddr>().ok()),
        known(&prior.certificate_pem),
    ) else {
        return false;
    };
    tls::leaf_info(pem).is_ok_and(|leaf| !leaf.ip_addresses.contains(&ip))
}

pub fn certificate_inputs_changed(prior: &RegistryState, st: &RegistryState) -> bool {
    let strip = |s: &RegistryState| {
        s.tls.as_ref_option().cloned().map(|mut t| {
            t.renew = Value::Null;
            t.renew_interval = Value::Null;
            t
        })
    };
    strip(prior) != strip(st)
}

/// Plan: the renewal's computed values that apply will change, after the file digests were
/// planned (the droplet's trusted roots, when not read yet, make those unknown too).
pub fn plan_renewal_state(
    prior: &RegistryState,
    st: &mut RegistryState,
    was: &Model,
    m: &Model,
    tls_changed: bool,
) {
    if m.tls.source != TlsSource::Acme {
        st.certificate_renew_at = Value::Null;
    } else if tls_changed {
        st.certificate_renew_at = Value::Unknown;
    }
    let wanted = delegates_challenge(m);
    if wanted && prior.acme_delegation_record_id.is_null() {
        st.acme_delegation_record_id = Value::Unknown;
    } else if !wanted {
        st.acme_delegation_record_id = Value::Null;
    }
    if delegates_challenge(was) != wanted {
        // Port 53 opens or closes.
        st.firewall_id = Value::Unknown;
    }
    if renews_on_droplet(m) && !prior.acme_ca_certificates.is_value() {
        // A registry from before the droplet renewed: its roots are read at apply.
        st.acme_ca_certificates = Value::Unknown;
        st.files_digest = Value::Unknown;
    }
}

/// Plan: whether the provider renews the certificate in this apply. Warns when the droplet
/// has been failing to renew a certificate that is due, naming the droplet's reason.
pub fn renewal_plan(diags: &mut Diagnostics, prior: &RegistryState, m: &Model) -> bool {
    if m.tls.source != TlsSource::Acme {
        return false;
    }
    let now = time::OffsetDateTime::now_utc();
    let Some(reason) = renewal_reason_at(prior, m, now) else {
        return false;
    };
    let fqdn = known(&prior.fqdn).unwrap_or_default();
    if m.tls.renew == RenewMode::Droplet && !reason.hard {
        match droplet_renewal_trouble(prior, m, now) {
            None => return false,
            Some(trouble) => diags.root_warning(
                "Renewal on the droplet is failing",
                format!(
                    "The certificate of {fqdn} is due ({}), and the droplet has not renewed it: {trouble}. This apply renews it from the provider instead.",
                    reason.text
                ),
            ),
        }
    }
    diags.root_warning(
        "The certificate will be renewed",
        format!("The certificate of {fqdn} is replaced: {}.", reason.text),
    );
    true
}

struct Reason {
    text: String,
    /// Not a matter of time (unreadable, another name, expired): the provider replaces it now.
    hard: bool,
}

fn renewal_reason_at(st: &RegistryState, m: &Model, now: time::OffsetDateTime) -> Option<Reason> {
    let cert = known(&st.certificate_pem)?;
    let fqdn = known(&st.fqdn)?;
    // Expiry, name and readability first: those need no rule.
    if let Some(r) = acme::needs_renewal(cert, fqdn, 0, now) {
        return Some(Reason {
            text: r,
            hard: true,
        });
    }
    match known(&st.certificate_renew_at).and_then(RenewalStatus::time) {
        Some(at) if at <= now => Some(Reason {
            text: format!(
                "renewal was due on {} (the CA's renewal information, or renew_before_days)",
                tls::rfc3339(at)
            ),
            hard: false,
        }),
        Some(_) => None,
        None => acme::needs_renewal(cert, fqdn, m.tls.renew_before_days, now)
            .map(|text| Reason { text, hard: false }),
    }
}

/// Why the droplet will not renew a due certificate by itself, if it will not: its last run
/// failed, it has not run for three intervals, or it never ran.
fn droplet_renewal_trouble(
    st: &RegistryState,
    m: &Model,
    now: time::OffsetDateTime,
) -> Option<String> {
    let Some(status) = RenewalStatus::of(st) else {
        return Some("the droplet has no renewal status yet".into());
    };
    if status.result == "failed" {
        let since = if status.failing_since.is_empty() {
            String::new()
        } else {
            format!(" since {}", status.failing_since)
        };
        return Some(format!(
            "it has been failing{since}: {}",
            if status.message.is_empty() {
                "no reason given"
            } else {
                // The warning ends the sentence itself.
                status.message.trim_end_matches('.')
            }
        ));
    }
    let interval = time::Duration::seconds(m.tls.renew_interval.as_secs() as i64);
    let stale_after = std::cmp::max(interval * 3_i32, interval + time::Duration::minutes(10));
    match RenewalStatus::time(&status.checked_at) {
        Some(t) if now - t <= stale_after => None,
        Some(t) => Some(format!(
            "its renewal check has not run since {}",
            tls::rfc3339(t)
        )),
        None => Some("its renewal status is unreadable".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::state::{TlsState, S};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use time::{Duration as D, OffsetDateTime};

    const FQDN: &str = "registry.example.com";

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A chain (leaf, then its CA) and the leaf's key.
    fn leaf(ca: &Ca, name: &str, from: OffsetDateTime, to: OffsetDateTime) -> (String, Secret) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.not_before = from;
        p.not_after = to;
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
        (
            format!("{}{}", cert.pem(), ca.cert.pem()),
            Secret::new(key.serialize_pem()),
        )
    }

    fn state(renew: &str, chain: &str) -> (RegistryState, Model) {
        let st = RegistryState {
            fqdn: s(FQDN),
            certificate_pem: s(chain.to_owned()),
            tls: Value::Value(TlsState {
                source: s("acme"),
                renew: s(renew.to_owned()),
                renew_interval: s("5s"),
                renew_before_days: Value::Value(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = Model::of(&st);
        (st, m)
    }

    #[test]
    fn only_a_newer_certificate_from_the_same_ca_for_the_fqdn_is_adopted() {
        let now = OffsetDateTime::now_utc();
        let our = ca("our CA");
        let (current, _) = leaf(&our, FQDN, now - D::days(1), now + D::days(2));
        let (st, m) = state("droplet", &current);
        let (renewed, key) = leaf(&our, FQDN, now - D::minutes(1), now + D::days(3));
        assert!(adoptable(&st, &m, &renewed, &key, now).is_ok());
        // Its key must be the one that goes with it.
        let (_, other_key) = leaf(&our, FQDN, now, now + D::days(3));
        assert!(adoptable(&st, &m, &renewed, &other_key, now).is_err());
        // Another CA that names itself the same.
        let foreign = ca("our CA");
        let (forged, fkey) = leaf(&foreign, FQDN, now - D::minutes(1), now + D::days(3));
        let why = adoptable(&st, &m, &forged, &fkey, now).unwrap_err();
        assert!(why.contains("not issued by the CA"), "{why}");
        // Older, another name, expired.
        let (older, okey) = leaf(&our, FQDN, now - D::days(2), now + D::days(1));
        assert!(adoptable(&st, &m, &older, &okey, now).is_err());
        let (other, nkey) = leaf(&our, "other.example.com", now, now + D::days(3));
        assert!(adoptable(&st, &m, &other, &nkey, now).is_err());
        let (expired, ekey) = leaf(&our, FQDN, now - D::days(5), now - D::days(1));
        assert!(adoptable(&st, &m, &expired, &ekey, now).is_err());
        // Renewal through the plan only: what the droplet holds is drift.
        let (st, m) = state("plan", &current);
        assert!(adoptable(&st, &m, &renewed, &key, now).is_err());
    }

    fn status(result: &str, checked: OffsetDateTime, message: &str) -> S {
        s(serde_json::json!({
            "result": result,
            "checked_at": tls::rfc3339(checked),
            "message": message,
            "failing_since": tls::rfc3339(checked),
        })
        .to_string())
    }

    #[test]
    fn the_plan_renews_a_due_certificate_only_when_the_droplet_fails_to() {
        let now = OffsetDateTime::now_utc();
        let our = ca("our CA");
        let (due, _) = leaf(&our, FQDN, now - D::days(1), now + D::hours(12));
        let (mut st, m) = state("droplet", &due);
        st.certificate_renew_at = s(tls::rfc3339(now - D::hours(1)));

        // The droplet checked a moment ago and will renew: nothing to plan, no warning.
        st.renewal_status = status("waiting", now - D::seconds(2), "");
        let mut d = Diagnostics::default();
        assert!(!renewal_plan(&mut d, &st, &m));
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);

        // It failed: the warning names its reason, and the provider renews.
        st.renewal_status = status(
            "failed",
            now - D::seconds(2),
            "nsupdate failed: connection refused",
        );
        let mut d = Diagnostics::default();
        assert!(renewal_plan(&mut d, &st, &m));
        let summaries: Vec<&str> = d.warnings.iter().map(|w| w.summary.as_ref()).collect();
        assert_eq!(
            summaries,
            [
                "Renewal on the droplet is failing",
                "The certificate will be renewed"
            ]
        );
        assert!(d.warnings[0].detail.contains("connection refused"));

        // It has not checked for a long while: renewed from the provider too.
        st.renewal_status = status("waiting", now - D::hours(2), "");
        let mut d = Diagnostics::default();
        assert!(renewal_plan(&mut d, &st, &m));
        assert!(d.warnings[0].detail.contains("has not run since"));

        // Not due: a failing droplet is no reason to renew yet.
        st.certificate_renew_at = s(tls::rfc3339(now + D::hours(1)));
        st.renewal_status = status("failed", now, "boom");
        let mut d = Diagnostics::default();
        assert!(!renewal_plan(&mut d, &st, &m));
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn renewal_inputs_come_from_state_and_changes_of_who_renews_keep_the_certificate() {
        let (mut st, m) = state("droplet", "x");
        assert!(renewal_spec(&st, &m).is_none(), "no account yet");
        st.acme_account_key = s(
            r#"{"id":"https://ca.test/acct/1","key_pkcs8":"AAAA","directory":"https://ca.test/dir"}"#,
        );
        st.acme_ca_certificates = s("");
        let spec = renewal_spec(&st, &m).unwrap();
        assert_eq!(spec.directory_url, "https://ca.test/dir");
        assert_eq!(spec.ca_certificates_pem, None);
        assert_eq!(spec.interval, std::time::Duration::from_secs(5));
        assert!(delegates_challenge(&m));
        let mut other = st.clone();
        if let Value::Value(t) = &mut other.tls {
            t.renew = s("plan");
            t.renew_interval = s("1h");
        }
        assert!(!certificate_inputs_changed(&st, &other));
        assert!(renewal_spec(&other, &Model::of(&other)).is_none());
        if let Value::Value(t) = &mut other.tls {
            t.key_type = s("rsa-2048");
        }
        assert!(certificate_inputs_changed(&st, &other));
    }

    #[test]
    fn bad_renewal_settings_fail_the_plan_on_their_attribute() {
        let config = RegistryState {
            tls: Value::Value(TlsState {
                renew: s("sometimes"),
                renew_interval: s("1s"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        check_renewal_config(&mut d, &config);
        let summaries: Vec<&str> = d.errors.iter().map(|e| e.summary.as_ref()).collect();
        assert_eq!(
            summaries,
            ["Invalid `tls.renew`", "Invalid `tls.renew_interval`"]
        );
    }

    #[test]
    fn the_droplet_status_is_kept_short_and_plain() {
        let long = format!("{{\"result\":\"failed\",\"checked_at\":\"x\",\"message\":\"{}\\u001b[31m\",\"extra\":1}}", "a".repeat(500));
        let st = RenewalStatus::parse(&long).unwrap();
        assert_eq!(st.message.len(), 300);
        assert!(!st.message.contains('\u{1b}'));
        assert!(RenewalStatus::parse("not json").is_none());
    }
}
