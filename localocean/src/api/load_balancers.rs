//! `/v2/load_balancers`: regional load balancers with their droplets (by id or by tag) and
//! forwarding rules. The API holds what it was given; a sync task keeps the machines'
//! HAProxy in line with it (droplets tagged, booted or deleted included) and turns a new
//! balancer `active` once it runs at its address.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::droplets::{default_vpc, validate_name};
use super::error::new_uuid;
use super::reserved_ips::default_project;
use super::{catalog, page_response, validate_tags, ApiError, App, DoJson, ReqInfo};
use crate::balancer::{
    firewall_source, Backend, BalancerSpec, ForwardingRule, HealthCheck, LbFirewall, StickySessions,
};
use crate::clock::now_rfc3339;
use crate::store::{LoadBalancer, State as StoreState};

/// How often the sync task looks at the store when nothing woke it.
const SYNC_PERIOD: Duration = Duration::from_secs(1);
/// How long a spec that failed to apply waits before it is tried again (a changed spec is
/// tried at once).
const RETRY_FAILED: Duration = Duration::from_secs(15);

/// What the sync task last applied to the machines, per balancer; a change in the store
/// (or a droplet that booted, was tagged or deleted) makes a spec differ, and it is applied.
#[derive(Default)]
pub(crate) struct LbSync {
    applied: tokio::sync::Mutex<HashMap<String, BalancerSpec>>,
    /// Specs that failed to apply, and when.
    failed: tokio::sync::Mutex<HashMap<String, (BalancerSpec, std::time::Instant)>>,
    wake: tokio::sync::Notify,
}

impl LbSync {
    /// Asks the sync task to look now rather than at its next period.
    pub(crate) fn changed(&self) {
        self.wake.notify_one();
    }
}

/// Starts the sync task when there is a runtime to run it on; it ends with the `App`.
pub(crate) fn spawn_sync(app: &Arc<App>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<App> = Arc::downgrade(app);
    let sync = app.lb_sync.clone();
    rt.spawn(async move {
        loop {
            {
                let Some(app) = weak.upgrade() else { return };
                sync_once(&app).await;
            }
            tokio::select! {
                _ = sync.wake.notified() => {}
                _ = tokio::time::sleep(SYNC_PERIOD) => {}
            }
        }
    });
}

/// Applies every balancer whose spec changed since it was last applied.
async fn sync_once(app: &Arc<App>) {
    let mut applied = app.lb_sync.applied.lock().await;
    let specs: Vec<BalancerSpec> = app.store.read(|s| {
        s.load_balancers
            .iter()
            .filter_map(|lb| spec(s, lb))
            .collect()
    });
    let mut failed = app.lb_sync.failed.lock().await;
    for spec in specs {
        if applied.get(&spec.id) == Some(&spec) {
            continue;
        }
        if let Some((f, at)) = failed.get(&spec.id) {
            if *f == spec && at.elapsed() < RETRY_FAILED {
                continue;
            }
        }
        let result = app.hv.apply_load_balancer(&spec).await;
        match &result {
            Err(e) => {
                tracing::warn!(lb = %spec.id, error = %format!("{e:#}"), "applying load balancer");
                failed.insert(spec.id.clone(), (spec.clone(), std::time::Instant::now()));
            }
            Ok(()) => {
                failed.remove(&spec.id);
            }
        }
        let ok = result.is_ok();
        let _ = app.store.mutate::<_, ApiError>(|s| {
            if let Some(lb) = s.load_balancers.iter_mut().find(|l| l.id == spec.id) {
                if ok {
                    lb.status = "active".into();
                } else if lb.status == "new" {
                    lb.status = "errored".into();
                }
            }
            Ok(())
        });
        if ok {
            applied.insert(spec.id.clone(), spec);
        }
    }
}

/// The droplets behind `lb` now: those named, or those tagged, that still exist.
fn members(s: &StoreState, lb: &LoadBalancer) -> Vec<u64> {
    if lb.tag.is_empty() {
        lb.droplet_ids
            .iter()
            .copied()
            .filter(|id| s.droplets.contains_key(id))
            .collect()
    } else {
        s.droplets
            .values()
            .filter(|d| d.region == lb.region && d.tags.contains(&lb.tag))
            .map(|d| d.id)
            .collect()
    }
}

/// What the machines run for `lb`: its members that have an address (a droplet still
/// booting has none yet, and joins when it does).
fn spec(s: &StoreState, lb: &LoadBalancer) -> Option<BalancerSpec> {
    let ip: Ipv4Addr = lb.ip.parse().ok()?;
    let backends = members(s, lb)
        .into_iter()
        .filter_map(|id| {
            let d = s.droplets.get(&id)?;
            let ip = d.networks_v4.first()?.ip_address.parse().ok()?;
            Some(Backend { droplet_id: id, ip })
        })
        .collect();
    Some(BalancerSpec {
        id: lb.id.clone(),
        ip,
        forwarding_rules: lb.forwarding_rules.clone(),
        health_check: lb.health_check.clone(),
        sticky_sessions: lb.sticky_sessions.clone(),
        redirect_http_to_https: lb.redirect_http_to_https,
        enable_proxy_protocol: lb.enable_proxy_protocol,
        enable_backend_keepalive: lb.enable_backend_keepalive,
        http_idle_timeout_seconds: lb.http_idle_timeout_seconds,
        firewall: lb.firewall.clone(),
        backends,
    })
}

fn lb_json(s: &StoreState, lb: &LoadBalancer) -> Value {
    let mut v = json!({
        "id": lb.id,
        "name": lb.name,
        // Assigned while it is provisioned, as on DigitalOcean: empty until active.
        "ip": if lb.status == "active" { lb.ip.as_str() } else { "" },
        "size_unit": lb.size_unit,
        "algorithm": "round_robin",
        "status": lb.status,
        "created_at": lb.created_at,
        "forwarding_rules": lb.forwarding_rules,
        "health_check": lb.health_check,
        "sticky_sessions": lb.sticky_sessions,
        "region": catalog::region_json(&lb.region),
        "tag": lb.tag,
        "droplet_ids": members(s, lb),
        "redirect_http_to_https": lb.redirect_http_to_https,
        "enable_proxy_protocol": lb.enable_proxy_protocol,
        "enable_backend_keepalive": lb.enable_backend_keepalive,
        "http_idle_timeout_seconds": lb.http_idle_timeout_seconds,
        "vpc_uuid": lb.vpc_uuid,
        "project_id": lb.project_id,
        "disable_lets_encrypt_dns_records": lb.disable_lets_encrypt_dns_records,
        "firewall": lb.firewall,
        "network": "EXTERNAL",
        "network_stack": "IPV4",
        "type": "REGIONAL",
        "tls_cipher_policy": lb.tls_cipher_policy,
    });
    if let Some(size) = &lb.size {
        v["size"] = json!(size);
    }
    v
}

fn find<'a>(s: &'a StoreState, id: &str) -> Result<&'a LoadBalancer, ApiError> {
    s.load_balancers
        .iter()
        .find(|l| l.id == id)
        .ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
pub struct RuleReq {
    entry_protocol: String,
    entry_port: u32,
    target_protocol: String,
    target_port: u32,
    certificate_id: Option<String>,
    tls_passthrough: Option<bool>,
}

#[derive(Default, Deserialize)]
pub struct HealthCheckReq {
    protocol: Option<String>,
    port: Option<u32>,
    path: Option<String>,
    check_interval_seconds: Option<u32>,
    response_timeout_seconds: Option<u32>,
    unhealthy_threshold: Option<u32>,
    healthy_threshold: Option<u32>,
}

#[derive(Default, Deserialize)]
pub struct StickyReq {
    #[serde(rename = "type")]
    kind: Option<String>,
    cookie_name: Option<String>,
    cookie_ttl_seconds: Option<u32>,
}

/// A create or a full update (PUT): what is not given takes its default.
#[derive(Deserialize)]
pub struct LbReq {
    name: Option<String>,
    region: Option<String>,
    size_unit: Option<u32>,
    size: Option<String>,
    algorithm: Option<String>,
    forwarding_rules: Option<Vec<RuleReq>>,
    health_check: Option<HealthCheckReq>,
    sticky_sessions: Option<StickyReq>,
    redirect_http_to_https: Option<bool>,
    enable_proxy_protocol: Option<bool>,
    enable_backend_keepalive: Option<bool>,
    http_idle_timeout_seconds: Option<u32>,
    disable_lets_encrypt_dns_records: Option<bool>,
    firewall: Option<LbFirewall>,
    vpc_uuid: Option<String>,
    project_id: Option<String>,
    droplet_ids: Option<Vec<u64>>,
    tag: Option<String>,
    network: Option<String>,
    network_stack: Option<String>,
    #[serde(rename = "type")]
    lb_type: Option<String>,
    tls_cipher_policy: Option<String>,
}

fn port(what: &str, p: u32) -> Result<u16, ApiError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::unprocessable(format!("{what} must be between 1 and 65535")))
}

/// One forwarding rule, checked as DigitalOcean checks it; what localocean cannot do for real
/// (TLS termination, which needs `/v2/certificates`; HTTP/2 and HTTP/3; UDP) is refused
/// with a message saying so rather than accepted and not done.
fn rule(r: &RuleReq) -> Result<ForwardingRule, ApiError> {
    const ENTRY: &[&str] = &["http", "https", "http2", "http3", "tcp", "udp"];
    const TARGET: &[&str] = &["http", "https", "http2", "tcp", "udp"];
    if !ENTRY.contains(&r.entry_protocol.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "forwarding_rules: entry_protocol {:?} is not one of {}",
            r.entry_protocol,
            ENTRY.join(", ")
        )));
    }
    if !TARGET.contains(&r.target_protocol.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "forwarding_rules: target_protocol {:?} is not one of {}",
            r.target_protocol,
            TARGET.join(", ")
        )));
    }
    let entry_port = port("forwarding_rules: entry_port", r.entry_port)?;
    let target_port = port("forwarding_rules: target_port", r.target_port)?;
    let passthrough = r.tls_passthrough.unwrap_or(false);
    let certificate_id = r.certificate_id.clone().unwrap_or_default();
    let (entry, target) = (r.entry_protocol.as_str(), r.target_protocol.as_str());
    if (entry == "udp") != (target == "udp") {
        return Err(ApiError::unprocessable(
            "forwarding_rules: udp must be both the entry and the target protocol",
        ));
    }
    if passthrough && !(entry == "https" && target == "https") {
        return Err(ApiError::unprocessable(
            "forwarding_rules: tls_passthrough needs https as entry and target protocol",
        ));
    }
    if passthrough && !certificate_id.is_empty() {
        return Err(ApiError::unprocessable(
            "forwarding_rules: a certificate_id cannot be used with tls_passthrough",
        ));
    }
    let supported = matches!(
        (entry, target, passthrough),
        ("http", "http", false) | ("tcp", "tcp", false) | ("https", "https", true)
    );
    if !supported {
        return Err(ApiError::unprocessable(format!(
            "forwarding_rules: {entry} to {target}{} is not available in localocean, which \
             forwards http to http, tcp to tcp and https to https with tls_passthrough \
             (TLS termination needs certificates, which it does not implement)",
            if passthrough {
                " with tls_passthrough"
            } else {
                ""
            }
        )));
    }
    Ok(ForwardingRule {
        entry_protocol: r.entry_protocol.clone(),
        entry_port,
        target_protocol: r.target_protocol.clone(),
        target_port,
        certificate_id,
        tls_passthrough: passthrough,
    })
}

fn rules(given: &[RuleReq]) -> Result<Vec<ForwardingRule>, ApiError> {
    let out = given.iter().map(rule).collect::<Result<Vec<_>, _>>()?;
    check_unique_ports(&out)?;
    Ok(out)
}

fn check_unique_ports(rules: &[ForwardingRule]) -> Result<(), ApiError> {
    for (i, r) in rules.iter().enumerate() {
        if rules[..i].iter().any(|o| o.entry_port == r.entry_port) {
            return Err(ApiError::unprocessable(format!(
                "forwarding_rules: entry_port {} is used by more than one rule",
                r.entry_port
            )));
        }
    }
    Ok(())
}

fn within(what: &str, v: u32, lo: u32, hi: u32) -> Result<u32, ApiError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::unprocessable(format!(
            "{what} must be between {lo} and {hi}"
        )))
    }
}

fn health_check(h: &HealthCheckReq) -> Result<HealthCheck, ApiError> {
    let d = HealthCheck::default();
    let protocol = h.protocol.clone().unwrap_or(d.protocol);
    if !["http", "https", "tcp"].contains(&protocol.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "health_check: protocol {protocol:?} is not one of http, https, tcp"
        )));
    }
    let path = h.path.clone().unwrap_or(d.path);
    // Written into HAProxy's config: a path with a space or a control character would be
    // another directive.
    let path_ok = path.starts_with('/')
        && path.len() <= 255
        && path.chars().all(|c| c.is_ascii_graphic() && c != '#');
    if !path_ok {
        return Err(ApiError::unprocessable(
            "health_check: path must start with / and hold no spaces or control characters",
        ));
    }
    Ok(HealthCheck {
        protocol,
        port: port("health_check: port", h.port.unwrap_or(u32::from(d.port)))?,
        path,
        check_interval_seconds: within(
            "health_check: check_interval_seconds",
            h.check_interval_seconds.unwrap_or(d.check_interval_seconds),
            3,
            300,
        )?,
        response_timeout_seconds: within(
            "health_check: response_timeout_seconds",
            h.response_timeout_seconds
                .unwrap_or(d.response_timeout_seconds),
            3,
            300,
        )?,
        unhealthy_threshold: within(
            "health_check: unhealthy_threshold",
            h.unhealthy_threshold.unwrap_or(d.unhealthy_threshold),
            2,
            10,
        )?,
        healthy_threshold: within(
            "health_check: healthy_threshold",
            h.healthy_threshold.unwrap_or(d.healthy_threshold),
            2,
            10,
        )?,
    })
}

fn sticky(s: &StickyReq) -> Result<StickySessions, ApiError> {
    match s.kind.as_deref().unwrap_or("none") {
        "none" => Ok(StickySessions::default()),
        "cookies" => {
            let name = s.cookie_name.clone().unwrap_or_else(|| "DO-LB".into());
            let ok = !name.is_empty()
                && name.len() <= 40
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(ApiError::unprocessable(
                    "sticky_sessions: cookie_name may hold letters, digits, - and _ (at most 40)",
                ));
            }
            Ok(StickySessions {
                kind: "cookies".into(),
                cookie_name: Some(name),
                cookie_ttl_seconds: Some(within(
                    "sticky_sessions: cookie_ttl_seconds",
                    s.cookie_ttl_seconds.unwrap_or(300),
                    1,
                    u32::MAX,
                )?),
            })
        }
        other => Err(ApiError::unprocessable(format!(
            "sticky_sessions: type {other:?} is not one of cookies, none"
        ))),
    }
}

fn one_of(what: &str, given: Option<&str>, allowed: &[&str], only: &str) -> Result<(), ApiError> {
    match given {
        None => Ok(()),
        Some(v) if v == only => Ok(()),
        Some(v) if allowed.contains(&v) => Err(ApiError::unprocessable(format!(
            "{what} {v} is not available in localocean (only {only})"
        ))),
        Some(v) => Err(ApiError::unprocessable(format!(
            "{what} {v:?} is not one of {}",
            allowed.join(", ")
        ))),
    }
}

/// A balancer from a create or PUT request, checked; `existing` keeps what the request
/// cannot change (id, address, status, creation time, region).
fn from_request(
    s: &StoreState,
    req: &LbReq,
    existing: Option<&LoadBalancer>,
) -> Result<LoadBalancer, ApiError> {
    let region = req
        .region
        .clone()
        .ok_or_else(|| ApiError::unprocessable("region is required"))?;
    if catalog::region(&region).is_none() {
        return Err(ApiError::unprocessable(format!(
            "You specified an invalid region: {region}"
        )));
    }
    if let Some(e) = existing.filter(|e| e.region != region) {
        return Err(ApiError::unprocessable(format!(
            "a load balancer cannot move: it is in {}",
            e.region
        )));
    }
    let given_rules = req
        .forwarding_rules
        .as_deref()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::unprocessable("at least one forwarding rule is required"))?;
    let tag = req.tag.clone().unwrap_or_default();
    let droplet_ids = req.droplet_ids.clone().unwrap_or_default();
    if !tag.is_empty() && !droplet_ids.is_empty() {
        return Err(ApiError::unprocessable(
            "droplet_ids and tag are mutually exclusive: give one of them",
        ));
    }
    if !tag.is_empty() {
        validate_tags(std::slice::from_ref(&tag))?;
    }
    for id in &droplet_ids {
        let d = s
            .droplets
            .get(id)
            .ok_or_else(|| ApiError::unprocessable(format!("Droplet {id} could not be found.")))?;
        if d.region != region {
            return Err(ApiError::unprocessable(format!(
                "Droplet {id} is in {}, the load balancer in {region}",
                d.region
            )));
        }
    }
    if let Some(name) = &req.name {
        validate_name(name)?;
    }
    one_of(
        "network",
        req.network.as_deref(),
        &["EXTERNAL", "INTERNAL"],
        "EXTERNAL",
    )?;
    one_of(
        "network_stack",
        req.network_stack.as_deref(),
        &["IPV4", "DUALSTACK"],
        "IPV4",
    )?;
    one_of(
        "type",
        req.lb_type.as_deref(),
        &["REGIONAL", "REGIONAL_NETWORK", "GLOBAL"],
        "REGIONAL",
    )?;
    let tls_cipher_policy = req
        .tls_cipher_policy
        .clone()
        .unwrap_or_else(|| "DEFAULT".into());
    if !["DEFAULT", "STRONG"].contains(&tls_cipher_policy.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "tls_cipher_policy {tls_cipher_policy:?} is not one of DEFAULT, STRONG"
        )));
    }
    if let Some(size) = &req.size {
        if !["lb-small", "lb-medium", "lb-large"].contains(&size.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "size {size:?} is not one of lb-small, lb-medium, lb-large"
            )));
        }
    }
    if let Some(a) = &req.algorithm {
        if !["round_robin", "least_connections"].contains(&a.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "algorithm {a:?} is not one of round_robin, least_connections"
            )));
        }
    }
    let firewall = req.firewall.clone().unwrap_or_default();
    if let Some(bad) = firewall
        .allow
        .iter()
        .chain(&firewall.deny)
        .find(|r| firewall_source(r).is_none())
    {
        return Err(ApiError::unprocessable(format!(
            "firewall: {bad:?} is neither ip:<address> nor cidr:<address>/<length>"
        )));
    }
    let id = existing.map_or_else(new_uuid, |e| e.id.clone());
    Ok(LoadBalancer {
        name: req
            .name
            .clone()
            .unwrap_or_else(|| format!("lb-{}", &id[..8])),
        ip: existing.map(|e| e.ip.clone()).unwrap_or_default(),
        status: existing.map_or_else(|| "new".into(), |e| e.status.clone()),
        created_at: existing.map_or_else(now_rfc3339, |e| e.created_at.clone()),
        id,
        size_unit: within("size_unit", req.size_unit.unwrap_or(1), 1, 100)?,
        size: req.size.clone(),
        forwarding_rules: rules(given_rules)?,
        health_check: health_check(req.health_check.as_ref().unwrap_or(&Default::default()))?,
        sticky_sessions: sticky(req.sticky_sessions.as_ref().unwrap_or(&Default::default()))?,
        redirect_http_to_https: req.redirect_http_to_https.unwrap_or(false),
        enable_proxy_protocol: req.enable_proxy_protocol.unwrap_or(false),
        enable_backend_keepalive: req.enable_backend_keepalive.unwrap_or(false),
        http_idle_timeout_seconds: within(
            "http_idle_timeout_seconds",
            req.http_idle_timeout_seconds.unwrap_or(60),
            30,
            600,
        )?,
        disable_lets_encrypt_dns_records: req.disable_lets_encrypt_dns_records.unwrap_or(false),
        firewall,
        vpc_uuid: req.vpc_uuid.clone().unwrap_or_else(|| default_vpc(&region)),
        project_id: req.project_id.clone().unwrap_or_else(default_project),
        region,
        droplet_ids,
        tag,
        tls_cipher_policy,
    })
}

pub async fn create(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<LbReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let pool = app.hv.load_balancer_pool();
    let body = app.store.mutate::<_, ApiError>(|s| {
        let mut lb = from_request(s, &req, None)?;
        lb.ip = pool
            .iter()
            .map(|a| a.to_string())
            .find(|a| s.load_balancers.iter().all(|l| &l.ip != a))
            .ok_or_else(|| {
                ApiError::unprocessable("No load balancer address is available in this region.")
            })?;
        s.load_balancers.push(lb.clone());
        Ok(json!({ "load_balancer": lb_json(s, &lb) }))
    })?;
    app.lb_sync.changed();
    Ok((StatusCode::ACCEPTED, Json(body)))
}

pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let items = app
        .store
        .read(|s| s.load_balancers.iter().map(|lb| lb_json(s, lb)).collect());
    page_response("load_balancers", items, &info)
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.store
        .read(|s| find(s, &id).map(|lb| lb_json(s, lb)))
        .map(|lb| Json(json!({ "load_balancer": lb })))
}

pub async fn update(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<LbReq>,
) -> Result<Json<Value>, ApiError> {
    let body = app.store.mutate::<_, ApiError>(|s| {
        let existing = find(s, &id)?.clone();
        let lb = from_request(s, &req, Some(&existing))?;
        let json = lb_json(s, &lb);
        if let Some(slot) = s.load_balancers.iter_mut().find(|l| l.id == id) {
            *slot = lb;
        }
        Ok(json!({ "load_balancer": json }))
    })?;
    app.lb_sync.changed();
    Ok(Json(body))
}

/// Stops the balancer on the machines, then forgets it; its droplets stay.
pub async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // Held across the delete, so the sync task never starts it again in between.
    let mut applied = app.lb_sync.applied.lock().await;
    app.store.read(|s| find(s, &id).map(|_| ()))?;
    app.hv.delete_load_balancer(&id).await.map_err(|e| {
        tracing::error!(lb = %id, error = %format!("{e:#}"), "deleting load balancer");
        ApiError::server_error(format!("deleting load balancer {id} failed"))
    })?;
    app.store.mutate::<_, ApiError>(|s| {
        s.load_balancers.retain(|l| l.id != id);
        Ok::<_, ApiError>(())
    })?;
    applied.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct DropletsReq {
    droplet_ids: Vec<u64>,
}

pub async fn add_droplets(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<DropletsReq>,
) -> Result<StatusCode, ApiError> {
    app.store.mutate::<_, ApiError>(|s| {
        let lb = find(s, &id)?;
        if !lb.tag.is_empty() {
            return Err(ApiError::unprocessable(
                "Droplets cannot be added to a load balancer that selects them by tag.",
            ));
        }
        for d in &req.droplet_ids {
            match s.droplets.get(d) {
                None => {
                    return Err(ApiError::unprocessable(format!(
                        "Droplet {d} could not be found."
                    )))
                }
                Some(droplet) if droplet.region != lb.region => {
                    return Err(ApiError::unprocessable(format!(
                        "Droplet {d} is in {}, the load balancer in {}",
                        droplet.region, lb.region
                    )))
                }
                Some(_) => {}
            }
        }
        let lb = s
            .load_balancers
            .iter_mut()
            .find(|l| l.id == id)
            .expect("found above");
        for d in &req.droplet_ids {
            if !lb.droplet_ids.contains(d) {
                lb.droplet_ids.push(*d);
            }
        }
        Ok(())
    })?;
    app.lb_sync.changed();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_droplets(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<DropletsReq>,
) -> Result<StatusCode, ApiError> {
    app.store.mutate::<_, ApiError>(|s| {
        if !find(s, &id)?.tag.is_empty() {
            return Err(ApiError::unprocessable(
                "Droplets cannot be removed from a load balancer that selects them by tag.",
            ));
        }
        if let Some(lb) = s.load_balancers.iter_mut().find(|l| l.id == id) {
            lb.droplet_ids.retain(|d| !req.droplet_ids.contains(d));
        }
        Ok(())
    })?;
    app.lb_sync.changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct RulesReq {
    forwarding_rules: Vec<RuleReq>,
}

pub async fn add_rules(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<RulesReq>,
) -> Result<StatusCode, ApiError> {
    if req.forwarding_rules.is_empty() {
        return Err(ApiError::unprocessable(
            "at least one forwarding rule is required",
        ));
    }
    let added = rules(&req.forwarding_rules)?;
    app.store.mutate::<_, ApiError>(|s| {
        find(s, &id)?;
        let lb = s
            .load_balancers
            .iter_mut()
            .find(|l| l.id == id)
            .expect("found above");
        let mut all = lb.forwarding_rules.clone();
        all.extend(
            added
                .iter()
                .filter(|a| !all.contains(a))
                .cloned()
                .collect::<Vec<_>>(),
        );
        check_unique_ports(&all)?;
        lb.forwarding_rules = all;
        Ok(())
    })?;
    app.lb_sync.changed();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_rules(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<RulesReq>,
) -> Result<StatusCode, ApiError> {
    if req.forwarding_rules.is_empty() {
        return Err(ApiError::unprocessable(
            "at least one forwarding rule is required",
        ));
    }
    let removed = req
        .forwarding_rules
        .iter()
        .map(|r| {
            Ok(ForwardingRule {
                entry_protocol: r.entry_protocol.clone(),
                entry_port: port("forwarding_rules: entry_port", r.entry_port)?,
                target_protocol: r.target_protocol.clone(),
                target_port: port("forwarding_rules: target_port", r.target_port)?,
                certificate_id: String::new(),
                tls_passthrough: false,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    app.store.mutate::<_, ApiError>(|s| {
        find(s, &id)?;
        let lb = s
            .load_balancers
            .iter_mut()
            .find(|l| l.id == id)
            .expect("found above");
        let left: Vec<ForwardingRule> = lb
            .forwarding_rules
            .iter()
            .filter(|r| !removed.iter().any(|x| x.same_as(r)))
            .cloned()
            .collect();
        if left.is_empty() {
            return Err(ApiError::unprocessable(
                "a load balancer needs at least one forwarding rule",
            ));
        }
        lb.forwarding_rules = left;
        Ok(())
    })?;
    app.lb_sync.changed();
    Ok(StatusCode::NO_CONTENT)
}
