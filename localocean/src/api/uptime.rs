//! `/v2/uptime/checks` and their alerts, as DigitalOcean's spec describes them: validated,
//! stored and listed (paged); nothing is probed, so a check's state is never reported here.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::new_uuid;
use super::{page_response, ApiError, App, DoJson, ReqInfo};
use crate::store::{UptimeAlert, UptimeCheck};

const CHECK_TYPES: [&str; 3] = ["ping", "http", "https"];
const REGIONS: [&str; 4] = ["us_east", "us_west", "eu_west", "se_asia"];
const ALERT_TYPES: [&str; 4] = ["latency", "down", "down_global", "ssl_expiry"];
const COMPARISONS: [&str; 2] = ["greater_than", "less_than"];
const PERIODS: [&str; 7] = ["2m", "3m", "5m", "10m", "15m", "30m", "1h"];
/// The address the account's `GET /v2/account` shows as verified: DigitalOcean mails alerts
/// only to verified addresses of the account.
const VERIFIED_EMAIL: &str = super::catalog::ACCOUNT_EMAIL;

/// The fields of `check_updatable`; all optional on PUT, most required on POST.
#[derive(Deserialize)]
pub struct CheckReq {
    name: Option<String>,
    #[serde(rename = "type")]
    check_type: Option<String>,
    target: Option<String>,
    regions: Option<Vec<String>>,
    enabled: Option<bool>,
}

fn check_json(c: &UptimeCheck) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "type": c.check_type,
        "target": c.target,
        "regions": c.regions,
        "enabled": c.enabled,
    })
}

fn validate_check(c: &UptimeCheck) -> Result<(), ApiError> {
    if c.name.trim().is_empty() || c.name.len() > 255 {
        return Err(ApiError::unprocessable("name is required"));
    }
    if !CHECK_TYPES.contains(&c.check_type.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "type {:?} is invalid: use ping, http or https",
            c.check_type
        )));
    }
    let target_ok = match c.check_type.as_str() {
        "ping" => !c.target.is_empty() && !c.target.contains(char::is_whitespace),
        scheme => url::Url::parse(&c.target)
            .is_ok_and(|u| u.scheme() == scheme && u.host_str().is_some_and(|h| !h.is_empty())),
    };
    if !target_ok {
        return Err(ApiError::unprocessable(format!(
            "target {:?} is not a valid {} target",
            c.target, c.check_type
        )));
    }
    if c.regions.is_empty() {
        return Err(ApiError::unprocessable(
            "regions must name at least one region",
        ));
    }
    if let Some(r) = c.regions.iter().find(|r| !REGIONS.contains(&r.as_str())) {
        return Err(ApiError::unprocessable(format!(
            "regions: {r:?} is not a region: use us_east, us_west, eu_west or se_asia"
        )));
    }
    Ok(())
}

fn missing(field: &str) -> ApiError {
    ApiError::unprocessable(format!("{field} is required"))
}

pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let items = app
        .store
        .read(|s| s.uptime_checks.iter().map(check_json).collect());
    page_response("checks", items, &info)
}

pub async fn create(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<CheckReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let check = UptimeCheck {
        id: new_uuid(),
        name: req.name.ok_or_else(|| missing("name"))?,
        check_type: req.check_type.ok_or_else(|| missing("type"))?,
        target: req.target.ok_or_else(|| missing("target"))?,
        regions: req.regions.ok_or_else(|| missing("regions"))?,
        // The spec's default.
        enabled: req.enabled.unwrap_or(true),
        alerts: Vec::new(),
    };
    validate_check(&check)?;
    app.store.mutate(|s| {
        s.uptime_checks.push(check.clone());
        Ok::<_, ApiError>(())
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "check": check_json(&check) })),
    ))
}

fn find_check(app: &App, id: &str) -> Result<UptimeCheck, ApiError> {
    app.store
        .read(|s| s.uptime_checks.iter().find(|c| c.id == id).cloned())
        .ok_or_else(ApiError::not_found)
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = find_check(&app, &id)?;
    Ok(Json(json!({ "check": check_json(&c) })))
}

pub async fn update(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    DoJson(req): DoJson<CheckReq>,
) -> Result<Json<Value>, ApiError> {
    let mut c = find_check(&app, &id)?;
    if let Some(v) = req.name {
        c.name = v;
    }
    if let Some(v) = req.check_type {
        c.check_type = v;
    }
    if let Some(v) = req.target {
        c.target = v;
    }
    if let Some(v) = req.regions {
        c.regions = v;
    }
    if let Some(v) = req.enabled {
        c.enabled = v;
    }
    validate_check(&c)?;
    app.store.mutate(|s| {
        let slot = s
            .uptime_checks
            .iter_mut()
            .find(|x| x.id == id)
            .ok_or_else(ApiError::not_found)?;
        // Alerts are changed through their own endpoints.
        c.alerts = std::mem::take(&mut slot.alerts);
        *slot = c.clone();
        Ok::<_, ApiError>(())
    })?;
    Ok(Json(json!({ "check": check_json(&c) })))
}

/// Deleting a check deletes its alerts.
pub async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.store.mutate(|s| {
        let before = s.uptime_checks.len();
        s.uptime_checks.retain(|c| c.id != id);
        if s.uptime_checks.len() == before {
            return Err(ApiError::not_found());
        }
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct SlackReq {
    channel: String,
    url: String,
}

#[derive(Deserialize)]
pub struct NotificationReq {
    email: Option<Vec<String>>,
    slack: Option<Vec<SlackReq>>,
}

#[derive(Deserialize)]
pub struct AlertReq {
    name: Option<String>,
    #[serde(rename = "type")]
    alert_type: Option<String>,
    threshold: Option<i64>,
    comparison: Option<String>,
    notifications: Option<NotificationReq>,
    period: Option<String>,
}

/// Threshold and comparison only when set: the spec types them integer and string, not null.
fn alert_json(a: &UptimeAlert) -> Value {
    let mut v = json!({
        "id": a.id,
        "name": a.name,
        "type": a.alert_type,
        "notifications": a.notifications,
        "period": a.period,
    });
    if let Some(t) = a.threshold {
        v["threshold"] = json!(t);
    }
    if let Some(c) = &a.comparison {
        v["comparison"] = json!(c);
    }
    v
}

/// An alert from a POST or PUT body: both require name, type, notifications and period.
fn alert_from(req: AlertReq, id: String) -> Result<UptimeAlert, ApiError> {
    let name = req.name.ok_or_else(|| missing("name"))?;
    let alert_type = req.alert_type.ok_or_else(|| missing("type"))?;
    let n = req.notifications.ok_or_else(|| missing("notifications"))?;
    let period = req.period.ok_or_else(|| missing("period"))?;
    if name.trim().is_empty() || name.len() > 255 {
        return Err(missing("name"));
    }
    if !ALERT_TYPES.contains(&alert_type.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "type {alert_type:?} is invalid: use latency, down, down_global or ssl_expiry"
        )));
    }
    if !PERIODS.contains(&period.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "period {period:?} is invalid: use 2m, 3m, 5m, 10m, 15m, 30m or 1h"
        )));
    }
    if let Some(c) = req
        .comparison
        .as_deref()
        .filter(|c| !COMPARISONS.contains(c))
    {
        return Err(ApiError::unprocessable(format!(
            "comparison {c:?} is invalid: use greater_than or less_than"
        )));
    }
    // Latency is in milliseconds, SSL expiry in days: both need a threshold.
    if matches!(alert_type.as_str(), "latency" | "ssl_expiry")
        && req.threshold.is_none_or(|t| t < 1)
    {
        return Err(ApiError::unprocessable(format!(
            "threshold is required for a {alert_type} alert and must be positive"
        )));
    }
    let email = n.email.ok_or_else(|| missing("notifications.email"))?;
    let slack = n.slack.ok_or_else(|| missing("notifications.slack"))?;
    if let Some(e) = email.iter().find(|e| e.as_str() != VERIFIED_EMAIL) {
        return Err(ApiError::unprocessable(format!(
            "email {e:?} is not a verified email of this account"
        )));
    }
    for s in &slack {
        let ok = url::Url::parse(&s.url).is_ok_and(|u| u.scheme() == "https");
        if !ok || s.channel.trim().is_empty() {
            return Err(ApiError::unprocessable(
                "slack notifications need a channel and an https webhook url",
            ));
        }
    }
    Ok(UptimeAlert {
        id,
        name,
        alert_type,
        threshold: req.threshold,
        comparison: req.comparison,
        notifications: json!({
            "email": email,
            "slack": slack.iter().map(|s| json!({"channel": s.channel, "url": s.url})).collect::<Vec<_>>(),
        }),
        period,
    })
}

pub async fn list_alerts(
    State(app): State<Arc<App>>,
    Path(check): Path<String>,
    info: ReqInfo,
) -> Result<Json<Value>, ApiError> {
    let c = find_check(&app, &check)?;
    Ok(page_response(
        "alerts",
        c.alerts.iter().map(alert_json).collect(),
        &info,
    ))
}

pub async fn create_alert(
    State(app): State<Arc<App>>,
    Path(check): Path<String>,
    DoJson(req): DoJson<AlertReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    find_check(&app, &check)?;
    let alert = alert_from(req, new_uuid())?;
    app.store.mutate(|s| {
        let c = s
            .uptime_checks
            .iter_mut()
            .find(|c| c.id == check)
            .ok_or_else(ApiError::not_found)?;
        c.alerts.push(alert.clone());
        Ok::<_, ApiError>(())
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "alert": alert_json(&alert) })),
    ))
}

pub async fn get_alert(
    State(app): State<Arc<App>>,
    Path((check, alert)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let c = find_check(&app, &check)?;
    let a = c
        .alerts
        .iter()
        .find(|a| a.id == alert)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "alert": alert_json(a) })))
}

pub async fn update_alert(
    State(app): State<Arc<App>>,
    Path((check, alert)): Path<(String, String)>,
    DoJson(req): DoJson<AlertReq>,
) -> Result<Json<Value>, ApiError> {
    let c = find_check(&app, &check)?;
    if !c.alerts.iter().any(|a| a.id == alert) {
        return Err(ApiError::not_found());
    }
    let new = alert_from(req, alert.clone())?;
    app.store.mutate(|s| {
        let slot = s
            .uptime_checks
            .iter_mut()
            .find(|c| c.id == check)
            .and_then(|c| c.alerts.iter_mut().find(|a| a.id == alert))
            .ok_or_else(ApiError::not_found)?;
        *slot = new.clone();
        Ok::<_, ApiError>(())
    })?;
    Ok(Json(json!({ "alert": alert_json(&new) })))
}

pub async fn delete_alert(
    State(app): State<Arc<App>>,
    Path((check, alert)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.store.mutate(|s| {
        let c = s
            .uptime_checks
            .iter_mut()
            .find(|c| c.id == check)
            .ok_or_else(ApiError::not_found)?;
        let before = c.alerts.len();
        c.alerts.retain(|a| a.id != alert);
        if c.alerts.len() == before {
            return Err(ApiError::not_found());
        }
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
