//! Droplet backups as DigitalOcean describes them: `backups` and `backup_policy` at create,
//! the `enable_backups`, `disable_backups` and `change_backup_policy` actions, the policy
//! endpoints. localocean records the policy and computes its next window; it takes no
//! backups on a timer, so a droplet's backup list stays empty.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime, Time};

use super::{page_response, parse_id, ApiError, App, ReqInfo};
use crate::clock::rfc3339;
use crate::store::{BackupPolicy, Droplet};

const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const HOURS: [u32; 6] = [0, 4, 8, 12, 16, 20];
const WINDOW_HOURS: i64 = 4;

/// A policy as a request sends it (`droplet_backup_policy`; the read-only fields are
/// ignored if sent).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PolicyRequest {
    plan: Option<String>,
    weekday: Option<String>,
    hour: Option<u32>,
}

/// The policy a request asks for, checked against the spec's enums. Omitted, the plan is
/// daily (as the spec says); an omitted hour is the first window of the day, an omitted
/// weekday Sunday.
pub fn policy_from(req: Option<&PolicyRequest>) -> Result<BackupPolicy, ApiError> {
    let req = req.cloned().unwrap_or_default();
    let plan = req.plan.unwrap_or_else(|| "daily".into());
    if !matches!(plan.as_str(), "daily" | "weekly") {
        return Err(ApiError::unprocessable(format!(
            "backup_policy.plan {plan:?} is invalid: use daily or weekly"
        )));
    }
    let hour = req.hour.unwrap_or(0);
    if !HOURS.contains(&hour) {
        return Err(ApiError::unprocessable(format!(
            "backup_policy.hour {hour} is invalid: use one of 0, 4, 8, 12, 16, 20"
        )));
    }
    if let Some(w) = &req.weekday {
        if !WEEKDAYS.contains(&w.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "backup_policy.weekday {w:?} is invalid: use SUN, MON, TUE, WED, THU, FRI or SAT"
            )));
        }
    }
    let weekday = match plan.as_str() {
        "weekly" => Some(req.weekday.unwrap_or_else(|| "SUN".into())),
        _ => None,
    };
    Ok(BackupPolicy {
        plan,
        weekday,
        hour,
    })
}

fn retention_days(p: &BackupPolicy) -> u32 {
    if p.plan == "weekly" {
        28
    } else {
        7
    }
}

pub fn policy_json(p: &BackupPolicy) -> Value {
    let mut v = json!({
        "plan": p.plan,
        "hour": p.hour,
        "window_length_hours": WINDOW_HOURS,
        "retention_period_days": retention_days(p),
    });
    if let Some(w) = &p.weekday {
        v["weekday"] = json!(w);
    }
    v
}

/// The first window of the policy that starts after `now`.
pub fn next_window(p: &BackupPolicy, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let at = Time::from_hms(p.hour as u8, 0, 0).unwrap_or(Time::MIDNIGHT);
    let mut start = now.replace_time(at);
    if let Some(w) = &p.weekday {
        let want = WEEKDAYS.iter().position(|d| d == w).unwrap_or(0) as i64;
        let today = i64::from(now.weekday().number_days_from_sunday());
        start += Duration::days((want - today).rem_euclid(7));
        if start <= now {
            start += Duration::days(7);
        }
    } else if start <= now {
        start += Duration::days(1);
    }
    (start, start + Duration::hours(WINDOW_HOURS))
}

pub fn next_window_json(d: &Droplet) -> Value {
    match &d.backup_policy {
        Some(p) => {
            let (start, end) = next_window(p, OffsetDateTime::now_utc());
            json!({"start": rfc3339(start), "end": rfc3339(end)})
        }
        None => Value::Null,
    }
}

fn policy_record(d: &Droplet) -> Value {
    let mut v = json!({
        "droplet_id": d.id,
        "backup_enabled": d.backup_policy.is_some(),
    });
    if let Some(p) = &d.backup_policy {
        v["backup_policy"] = policy_json(p);
        v["next_backup_window"] = next_window_json(d);
    }
    v
}

fn droplet(app: &App, raw_id: &str) -> Result<Droplet, ApiError> {
    let id = parse_id(raw_id)?;
    app.store
        .read(|s| s.droplets.get(&id).cloned())
        .ok_or_else(ApiError::not_found)
}

/// `GET /v2/droplets/{id}/backups`: none are taken here (see the module's comment).
pub async fn list(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    info: ReqInfo,
) -> Result<Json<Value>, ApiError> {
    droplet(&app, &id)?;
    Ok(page_response("backups", Vec::new(), &info))
}

pub async fn policy(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = droplet(&app, &id)?;
    Ok(Json(json!({ "policy": policy_record(&d) })))
}

/// `GET /v2/droplets/backups/policies`: a map from droplet id to its policy record, paged
/// as DigitalOcean pages it.
pub async fn policies(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let records: Vec<Value> = app
        .store
        .read(|s| s.droplets.values().map(policy_record).collect());
    let Json(mut page) = page_response("policies", records, &info);
    let map: serde_json::Map<String, Value> = page["policies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r["droplet_id"].to_string(), r))
        .collect();
    page["policies"] = Value::Object(map);
    Json(page)
}

pub async fn supported() -> Json<Value> {
    let policy = |name: &str, days: u32| {
        json!({
            "name": name,
            "possible_window_starts": HOURS,
            "window_length_hours": WINDOW_HOURS,
            "retention_period_days": days,
            "possible_days": if name == "weekly" { json!(WEEKDAYS) } else { json!([]) },
        })
    };
    Json(json!({ "supported_policies": [policy("weekly", 28), policy("daily", 7)] }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn the_next_window_is_the_first_after_now() {
        let daily = policy_from(Some(&PolicyRequest {
            plan: Some("daily".into()),
            weekday: Some("MON".into()),
            hour: Some(20),
        }))
        .unwrap();
        assert_eq!(daily.weekday, None, "a daily plan has no weekday");
        // 2026-12-02 is a Wednesday.
        let (s, e) = next_window(&daily, at("2026-12-02T09:00:00Z"));
        assert_eq!(
            (rfc3339(s), rfc3339(e)),
            ("2026-12-02T20:00:00Z".into(), "2026-12-03T00:00:00Z".into())
        );
        let (s, _) = next_window(&daily, at("2026-12-02T20:00:00Z"));
        assert_eq!(rfc3339(s), "2026-12-03T20:00:00Z");
        let weekly = policy_from(Some(&PolicyRequest {
            plan: Some("weekly".into()),
            weekday: Some("SUN".into()),
            hour: Some(4),
        }))
        .unwrap();
        let (s, _) = next_window(&weekly, at("2026-12-02T09:00:00Z"));
        assert_eq!(rfc3339(s), "2026-12-06T04:00:00Z");
        let wed = BackupPolicy {
            weekday: Some("WED".into()),
            ..weekly
        };
        let (s, _) = next_window(&wed, at("2026-12-02T09:00:00Z"));
        assert_eq!(
            rfc3339(s),
            "2026-12-09T04:00:00Z",
            "today's window has begun"
        );
    }

    #[test]
    fn policies_outside_the_spec_are_refused() {
        let req = |plan: &str, weekday: Option<&str>, hour: u32| PolicyRequest {
            plan: Some(plan.into()),
            weekday: weekday.map(Into::into),
            hour: Some(hour),
        };
        assert!(policy_from(Some(&req("hourly", None, 0))).is_err());
        assert!(policy_from(Some(&req("daily", None, 3))).is_err());
        assert!(policy_from(Some(&req("weekly", Some("sun"), 0))).is_err());
        let p = policy_from(None).unwrap();
        assert_eq!((p.plan.as_str(), p.hour), ("daily", 0));
    }
}
