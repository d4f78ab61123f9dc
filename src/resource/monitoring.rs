//! The optional DigitalOcean uptime check of `https://<fqdn>` with its alerts (`monitoring`
//! block): an SSL-expiry alert, and a down alert unless turned off; kept in state by id.

use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use super::desired::s;
use super::env::Env;
use super::error::{Error, Result, ResultExt};
use super::model::{Model, TlsSource};
use super::state::{known, RegistryState};
use crate::do_api::{self, UptimeAlert, UptimeCheck, UptimeNotifications};

/// DigitalOcean's probe regions.
pub const REGIONS: [&str; 4] = ["us_east", "us_west", "eu_west", "se_asia"];
pub const DEFAULT_SSL_EXPIRY_DAYS: i64 = 14;
/// Alert thresholds are in whole days; past a year nothing but a misunderstanding is meant.
pub const MAX_SSL_EXPIRY_DAYS: i64 = 365;
/// How long the condition must hold before DigitalOcean mails.
const PERIOD: &str = "2m";

/// The check and alerts the configuration asks for (`monitoring.uptime_check = true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Monitoring {
    pub alert_emails: Vec<String>,
    pub ssl_expiry_days: i64,
    pub down_alert: bool,
    pub regions: Vec<String>,
}

fn strings(v: &Value<Vec<super::state::S>>) -> Option<Vec<String>> {
    v.as_ref_option().map(|l| {
        l.iter()
            .filter_map(|x| x.as_ref_option().cloned())
            .collect()
    })
}

impl Monitoring {
    /// `None` when there is no block or `uptime_check` is not true.
    pub fn of(st: &RegistryState) -> Option<Monitoring> {
        let b = st.monitoring.as_ref_option()?;
        if b.uptime_check.as_ref_option() != Some(&true) {
            return None;
        }
        Some(Monitoring {
            alert_emails: strings(&b.alert_emails).unwrap_or_default(),
            ssl_expiry_days: b
                .ssl_expiry_days
                .as_ref_option()
                .copied()
                .unwrap_or(DEFAULT_SSL_EXPIRY_DAYS),
            down_alert: b.down_alert.as_ref_option().copied().unwrap_or(true),
            regions: strings(&b.regions)
                .unwrap_or_else(|| REGIONS.iter().map(|r| (*r).to_owned()).collect()),
        })
    }
}

fn attr(name: &'static str) -> AttributePath {
    AttributePath::new("monitoring").index(0).attribute(name)
}

/// Plan-time checks, each on its attribute. Unknown values are left to apply.
pub fn check_config(diags: &mut Diagnostics, config: &RegistryState) {
    let Some(b) = config.monitoring.as_ref_option() else {
        return;
    };
    let on = b.uptime_check.as_ref_option() == Some(&true);
    let emails = strings(&b.alert_emails);
    if on && b.alert_emails.is_null() {
        diags.error(
            "Missing `monitoring.alert_emails`",
            "An uptime check alerts by e-mail: give at least one address (DigitalOcean mails only addresses verified on the account).",
            attr("alert_emails"),
        );
    }
    if let Some(emails) = &emails {
        if on && emails.is_empty() && b.alert_emails.is_value() {
            diags.error(
                "Empty `monitoring.alert_emails`",
                "Give at least one address for the uptime check's alerts.",
                attr("alert_emails"),
            );
        }
        for (i, e) in emails.iter().enumerate() {
            let ok = e.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && !host.is_empty() && !host.contains('@')
            }) && !e.contains(char::is_whitespace);
            if !ok {
                diags.error(
                    "Invalid `monitoring.alert_emails`",
                    format!("{e:?} is not an e-mail address."),
                    attr("alert_emails").index(i as i64),
                );
            }
        }
    }
    if let Some(d) = b.ssl_expiry_days.as_ref_option() {
        if !(1..=MAX_SSL_EXPIRY_DAYS).contains(d) {
            diags.error(
                "Invalid `monitoring.ssl_expiry_days`",
                format!("{d} is not between 1 and {MAX_SSL_EXPIRY_DAYS}: the alert fires when the served certificate expires within that many days."),
                attr("ssl_expiry_days"),
            );
        }
    }
    if let Some(regions) = strings(&b.regions) {
        if regions.is_empty() && b.regions.is_value() {
            diags.error(
                "Empty `monitoring.regions`",
                format!("Name at least one of {}.", REGIONS.join(", ")),
                attr("regions"),
            );
        }
        for (i, r) in regions.iter().enumerate() {
            if !REGIONS.contains(&r.as_str()) {
                diags.error(
                    "Invalid `monitoring.regions`",
                    format!(
                        "{r:?} is not an uptime region; valid: {}.",
                        REGIONS.join(", ")
                    ),
                    attr("regions").index(i as i64),
                );
            } else if regions[..i].contains(r) {
                diags.error(
                    "Duplicate `monitoring.regions`",
                    format!("{r:?} is listed twice."),
                    attr("regions").index(i as i64),
                );
            }
        }
    }
    // An alert that fires before the renewal is due says nothing is wrong.
    let m = Model::of(config);
    if let (true, TlsSource::Acme, Some(d)) = (on, m.tls.source, b.ssl_expiry_days.as_ref_option())
    {
        if *d >= i64::from(m.tls.renew_before_days) {
            diags.warning(
                "The SSL-expiry alert fires before renewal is due",
                format!("`ssl_expiry_days = {d}` is not below `tls.renew_before_days = {}`: every certificate would alert before it is renewed. Choose fewer days, so that the alert means the renewal failed.", m.tls.renew_before_days),
                attr("ssl_expiry_days"),
            );
        }
    }
}

/// The ids a plan shows: unknown when apply will make or change something, null when off.
pub fn plan(prior: &RegistryState, st: &mut RegistryState) {
    match Monitoring::of(st) {
        None => {
            st.uptime_check_id = Value::Null;
            st.uptime_alert_ids = Value::Null;
        }
        Some(want) => {
            let same = Monitoring::of(prior).as_ref() == Some(&want)
                && prior.url == st.url
                && known(&prior.uptime_check_id).is_some()
                && prior.uptime_alert_ids.is_value();
            if !same {
                st.uptime_check_id = if known(&prior.uptime_check_id).is_some() {
                    prior.uptime_check_id.clone()
                } else {
                    Value::Unknown
                };
                st.uptime_alert_ids = Value::Unknown;
            }
        }
    }
}

/// The check's name: the registry's, so that a check made by an apply that failed before
/// state took its id is found again (by name and target) instead of made twice.
fn check_name(m: &Model) -> String {
    format!("docker-registry {}", m.fqdn)
}

fn target(m: &Model) -> String {
    format!("https://{}", m.fqdn)
}

fn wanted_alerts(m: &Model, mon: &Monitoring) -> Vec<UptimeAlert> {
    let notifications = UptimeNotifications {
        email: mon.alert_emails.clone(),
        slack: Vec::new(),
    };
    let mut alerts = vec![UptimeAlert {
        name: format!(
            "{}: certificate expires within {} days",
            m.fqdn, mon.ssl_expiry_days
        ),
        alert_type: "ssl_expiry".into(),
        threshold: Some(mon.ssl_expiry_days),
        comparison: Some("less_than".into()),
        notifications: notifications.clone(),
        period: PERIOD.into(),
        ..Default::default()
    }];
    if mon.down_alert {
        alerts.push(UptimeAlert {
            name: format!("{}: down", m.fqdn),
            alert_type: "down".into(),
            notifications,
            period: PERIOD.into(),
            ..Default::default()
        });
    }
    alerts
}

fn same_alert(a: &UptimeAlert, b: &UptimeAlert) -> bool {
    a.name == b.name
        && a.alert_type == b.alert_type
        && a.threshold == b.threshold
        && a.comparison == b.comparison
        && a.notifications.email == b.notifications.email
        && a.period == b.period
}

/// Makes, updates or removes the check and its alerts as the configuration says; each id goes
/// into state as soon as it exists.
pub async fn ensure(
    env: &Env,
    prior: &RegistryState,
    st: &mut RegistryState,
    m: &Model,
) -> Result<()> {
    let client = &env.client;
    // The plan left the ids as they were: nothing to change.
    if !st.uptime_check_id.is_unknown() && !st.uptime_alert_ids.is_unknown() {
        let off_and_gone = Monitoring::of(st).is_none() && known(&prior.uptime_check_id).is_none();
        let on_and_made = Monitoring::of(st).is_some() && known(&st.uptime_check_id).is_some();
        if off_and_gone || on_and_made {
            return Ok(());
        }
    }
    let Some(mon) = Monitoring::of(st) else {
        // Off (or never on): the check, with its alerts, goes.
        if let Some(id) = known(&prior.uptime_check_id).or(known(&st.uptime_check_id)) {
            client
                .delete_uptime_check(id)
                .await
                .context("deleting uptime check", id)?;
        }
        st.uptime_check_id = Value::Null;
        st.uptime_alert_ids = Value::Null;
        return Ok(());
    };
    let want = UptimeCheck {
        name: check_name(m),
        check_type: "https".into(),
        target: target(m),
        regions: mon.regions.clone(),
        enabled: true,
        ..Default::default()
    };
    // The check in state, else one an interrupted apply made (same name and target).
    let mut current = match known(&prior.uptime_check_id) {
        Some(id) => client.get_uptime_check(id).await?,
        None => None,
    };
    if current.is_none() {
        current = client
            .list_uptime_checks()
            .await?
            .into_iter()
            .find(|c| c.name == want.name && c.target == want.target);
    }
    let check = match current {
        Some(c)
            if c.check_type == want.check_type
                && c.target == want.target
                && c.regions == want.regions
                && c.enabled
                && c.name == want.name =>
        {
            c
        }
        Some(c) => client.update_uptime_check(&c.id, &want).await?,
        None => client.create_uptime_check(&want).await?,
    };
    st.uptime_check_id = s(check.id.clone());
    let wanted = wanted_alerts(m, &mon);
    let mut have = client.list_uptime_alerts(&check.id).await?;
    let mut ids = std::collections::BTreeMap::new();
    for w in &wanted {
        // The alert of that type already there is updated in place; any second one goes.
        let found = have.iter().position(|a| a.alert_type == w.alert_type);
        let alert = match found.map(|i| have.remove(i)) {
            Some(a) if same_alert(&a, w) => a,
            Some(a) => client.update_uptime_alert(&check.id, &a.id, w).await?,
            None => client.create_uptime_alert(&check.id, w).await?,
        };
        ids.insert(w.alert_type.clone(), s(alert.id));
    }
    for extra in have {
        client.delete_uptime_alert(&check.id, &extra.id).await?;
    }
    st.uptime_alert_ids = Value::Value(ids);
    Ok(())
}

/// Refresh: a check deleted outside Terraform leaves state (the next plan makes it again).
pub async fn read(env: &Env, st: &mut RegistryState, diags: &mut Diagnostics) {
    let Some(id) = known(&st.uptime_check_id).map(str::to_owned) else {
        return;
    };
    match env.client.get_uptime_check(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            st.uptime_check_id = Value::Null;
            st.uptime_alert_ids = Value::Null;
        }
        Err(e) => crate::diag::warning(
            diags,
            format!("Reading uptime check ({id})"),
            &Error::from(e),
        ),
    }
}

/// Destroy: the check and its alerts (gone already counts as deleted), and a check of this
/// registry that an interrupted apply made before state could take its id (found by name and
/// target). Nothing is listed for a registry that never had monitoring on.
pub async fn delete(
    env: &Env,
    st: &RegistryState,
    m: &Model,
) -> std::result::Result<(), do_api::Error> {
    let client = &env.client;
    if let Some(id) = known(&st.uptime_check_id) {
        client.delete_uptime_check(id).await?;
    }
    if Monitoring::of(st).is_none() && known(&st.uptime_check_id).is_none() {
        return Ok(());
    }
    let (name, target) = (check_name(m), target(m));
    for c in client.list_uptime_checks().await? {
        if c.name == name && c.target == target {
            client.delete_uptime_check(&c.id).await?;
        }
    }
    Ok(())
}
