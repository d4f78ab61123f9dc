//! Droplet backups as DigitalOcean describes them: `backups` and `backup_policy` at create,
//! the `enable_backups`, `disable_backups` and `change_backup_policy` actions, the policy
//! endpoints, and the backups themselves. A scheduler in the running localocean (every
//! minute, `spawn_scheduler`) backs up each droplet whose policy window has started since
//! its last backup (or since backups were enabled): a live copy of the disk through the
//! hypervisor call snapshots use, recorded as an image of type `backup` that droplets can
//! be created from. Backups older than the policy's `retention_period_days` are deleted,
//! and a droplet's backups go with it. Disabling backups keeps the existing ones until
//! their retention ends (the spec does not say otherwise). Tests run the scheduler at a
//! chosen time with `App::run_backups` instead of waiting for a window.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime, Time};

use super::{images, page_response, parse_id, ApiError, App, ReqInfo};
use crate::clock::rfc3339;
use crate::store::{BackupPolicy, Droplet, DropletBackup, DropletSnapshot, State as StoreState};

/// How often the scheduler looks for windows that have started: well inside the 4-hour
/// window, so a backup is never missed while localocean runs.
const TICK: std::time::Duration = std::time::Duration::from_secs(60);

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

/// Time between two windows of the policy.
fn period(p: &BackupPolicy) -> Duration {
    if p.weekday.is_some() {
        Duration::days(7)
    } else {
        Duration::days(1)
    }
}

/// The start of the policy's latest window that has started by `now` (it may be over).
pub fn last_window_start(p: &BackupPolicy, now: OffsetDateTime) -> OffsetDateTime {
    // Exactly one window starts in (now - period, now].
    next_window(p, now - period(p)).0
}

/// The droplets to back up at `now`: backups enabled, the latest window started after the
/// last backup (or the enabling) and has not ended, and the droplet free: not being
/// created, not locked, no action in progress, no backup of it running (`running`).
pub fn due(s: &StoreState, now: OffsetDateTime, running: &HashSet<u64>) -> Vec<u64> {
    s.droplets
        .values()
        .filter(|d| {
            let Some(p) = &d.backup_policy else {
                return false;
            };
            let start = last_window_start(p, now);
            let since = d.backups_since.unwrap_or(0);
            start.unix_timestamp() > since
                && now < start + Duration::hours(WINDOW_HOURS)
                && matches!(d.status.as_str(), "active" | "off")
                && !d.locked
                && !running.contains(&d.id)
                && !s.actions.values().any(|a| {
                    a.resource_type == "droplet"
                        && a.resource_id == Some(d.id)
                        && a.status == "in-progress"
                })
        })
        .map(|d| d.id)
        .collect()
}

/// The backups whose retention has ended at `now`.
pub fn expired(s: &StoreState, now: OffsetDateTime) -> Vec<u64> {
    let now = now.unix_timestamp();
    s.droplet_backups
        .iter()
        .filter(|b| b.expires_at <= now)
        .map(|b| b.image.id)
        .collect()
}

/// The ids of a droplet's backups (`backup_ids` of a droplet), oldest first.
pub fn ids_of_droplet(s: &StoreState, droplet_id: u64) -> Vec<u64> {
    s.droplet_backups
        .iter()
        .filter(|b| b.image.droplet_id == droplet_id)
        .map(|b| b.image.id)
        .collect()
}

/// As `/v2/droplets/{id}/backups` shows one (`droplet_snapshot` in the spec, of type
/// `backup`).
fn backup_json(b: &DropletBackup) -> Value {
    let x = &b.image;
    json!({
        "id": x.id,
        "name": x.name,
        "distribution": x.distribution,
        "slug": null,
        "public": false,
        "regions": [x.region],
        "created_at": x.created_at,
        "min_disk_size": x.min_disk_size,
        "size_gigabytes": x.size_gigabytes,
        "type": "backup",
    })
}

/// Starts the scheduler: every `TICK`, `run` at the real time. It stops with the app.
pub(crate) fn spawn_scheduler(app: &Arc<App>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<App> = Arc::downgrade(app);
    rt.spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            let Some(app) = weak.upgrade() else { return };
            run(&app, OffsetDateTime::now_utc()).await;
        }
    });
}

/// One pass of the scheduler at `now` (see `App::run_backups`): prunes, then backs up the
/// due droplets one after another. Returns the ids of the backups taken.
pub(crate) async fn run(app: &Arc<App>, now: OffsetDateTime) -> Vec<u64> {
    for id in app.store.read(|s| expired(s, now)) {
        delete(app, id).await;
    }
    let running = app
        .backups_running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut taken = Vec::new();
    for droplet_id in app.store.read(|s| due(s, now, &running)) {
        // Claimed here so that a pass running at the same time skips it.
        if !app
            .backups_running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(droplet_id)
        {
            continue;
        }
        let backup = take(app, droplet_id, now).await;
        app.backups_running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&droplet_id);
        taken.extend(backup);
    }
    taken
}

/// Copies the droplet's disk as a new backup taken at `now`. A failed copy leaves no image
/// and no files, and the droplet stays due (the next pass tries again).
async fn take(app: &Arc<App>, droplet_id: u64, now: OffsetDateTime) -> Option<u64> {
    let (droplet, image_id) = app
        .store
        .mutate::<_, ApiError>(|s| {
            let d = s.droplets.get(&droplet_id).cloned();
            Ok(d.map(|d| (d, s.new_id())))
        })
        .ok()
        .flatten()?;
    let policy = droplet.backup_policy.clone()?;
    let bytes = match app.hv.snapshot_droplet(droplet_id, image_id).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(droplet = droplet_id, error = %format!("{e:#}"), "backup failed");
            let _ = app.hv.delete_image(image_id).await;
            return None;
        }
    };
    let date = time::macros::format_description!("[year]-[month]-[day]");
    let day = now.format(&date).unwrap_or_default();
    let stored = app.store.mutate::<_, ApiError>(|s| {
        let distribution = images::distribution_of(s, &droplet.image);
        // Deleted while it was copied: the backup goes with it.
        let Some(d) = s.droplets.get_mut(&droplet_id) else {
            return Ok(false);
        };
        d.backups_since = Some(now.unix_timestamp());
        s.droplet_backups.push(DropletBackup {
            image: DropletSnapshot {
                id: image_id,
                name: format!("{} {day}", droplet.name),
                droplet_id,
                region: droplet.region.clone(),
                created_at: rfc3339(now),
                min_disk_size: droplet.disk,
                size_gigabytes: images::gigabytes(bytes),
                distribution,
                tags: Vec::new(),
            },
            expires_at: (now + Duration::days(i64::from(retention_days(&policy)))).unix_timestamp(),
        });
        Ok(true)
    });
    if !matches!(stored, Ok(true)) {
        let _ = app.hv.delete_image(image_id).await;
        return None;
    }
    Some(image_id)
}

/// Deletes backup `id`: its copy (kept while droplets made from it run), then its record.
/// A copy that cannot be deleted keeps the record, so the next pass tries again.
async fn delete(app: &App, id: u64) {
    if let Err(e) = app.hv.delete_image(id).await {
        tracing::error!(image = id, error = %format!("{e:#}"), "deleting droplet backup");
        return;
    }
    let _ = app.store.mutate::<_, ApiError>(|s| {
        s.droplet_backups.retain(|b| b.image.id != id);
        Ok(())
    });
}

/// Deletes every backup of droplet `droplet_id` (it is being destroyed).
pub(crate) async fn delete_all_of(app: &App, droplet_id: u64) {
    for id in app.store.read(|s| ids_of_droplet(s, droplet_id)) {
        delete(app, id).await;
    }
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

/// `GET /v2/droplets/{id}/backups`: its backups, oldest first, paged.
pub async fn list(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    info: ReqInfo,
) -> Result<Json<Value>, ApiError> {
    let d = droplet(&app, &id)?;
    let items = app.store.read(|s| {
        s.droplet_backups
            .iter()
            .filter(|b| b.image.droplet_id == d.id)
            .map(backup_json)
            .collect()
    });
    Ok(page_response("backups", items, &info))
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

    fn droplet(id: u64, policy: Option<BackupPolicy>, since: &str) -> Droplet {
        let mut d: Droplet = serde_json::from_value(json!({
            "id": id, "name": format!("web-{id}"), "region": "nyc3", "size": "s-1vcpu-1gb",
            "image": "debian-12-x64", "status": "active", "created_at": "", "tags": [],
            "volume_ids": [], "networks_v4": [], "ipv6": false, "monitoring": false,
            "vpc_uuid": "", "user_data": null, "ssh_public_keys": [], "locked": false,
            "disk": 25,
        }))
        .unwrap();
        d.backup_policy = policy;
        d.backups_since = Some(at(since).unix_timestamp());
        d
    }

    fn daily(hour: u32) -> BackupPolicy {
        BackupPolicy {
            plan: "daily".into(),
            weekday: None,
            hour,
        }
    }

    #[test]
    fn a_droplet_is_due_once_per_window_started_since_its_last_backup() {
        let mut s = StoreState::default();
        // Enabled on Wednesday 2026-12-02 at 09:00, window 04:00-08:00.
        s.droplets
            .insert(1, droplet(1, Some(daily(4)), "2026-12-02T09:00:00Z"));
        s.droplets
            .insert(2, droplet(2, None, "2026-12-02T09:00:00Z"));
        let none = HashSet::new();
        let due_at = |s: &StoreState, t: &str| due(s, at(t), &none);
        assert!(
            due_at(&s, "2026-12-02T10:00:00Z").is_empty(),
            "today's window began before backups were enabled"
        );
        assert!(due_at(&s, "2026-12-03T03:59:59Z").is_empty());
        assert_eq!(due_at(&s, "2026-12-03T04:00:00Z"), vec![1]);
        assert_eq!(due_at(&s, "2026-12-03T07:59:59Z"), vec![1]);
        assert!(
            due_at(&s, "2026-12-03T08:00:00Z").is_empty(),
            "the window is over"
        );
        // Not while it is busy: a backup of it running, locked, another action running.
        assert!(due(&s, at("2026-12-03T05:00:00Z"), &HashSet::from([1])).is_empty());
        s.droplets.get_mut(&1).unwrap().locked = true;
        assert!(due_at(&s, "2026-12-03T05:00:00Z").is_empty());
        s.droplets.get_mut(&1).unwrap().locked = false;
        s.actions.insert(
            9,
            serde_json::from_value(json!({
                "id": 9, "status": "in-progress", "type": "reboot", "started_at": "",
                "completed_at": null, "resource_id": 1, "resource_type": "droplet",
                "region_slug": "nyc3",
            }))
            .unwrap(),
        );
        assert!(due_at(&s, "2026-12-03T05:00:00Z").is_empty());
        s.actions.clear();
        // Backed up in this window: not again until the next one.
        s.droplets.get_mut(&1).unwrap().backups_since =
            Some(at("2026-12-03T04:01:00Z").unix_timestamp());
        assert!(due_at(&s, "2026-12-03T07:00:00Z").is_empty());
        assert_eq!(due_at(&s, "2026-12-04T04:30:00Z"), vec![1]);
        // Weekly on Sunday: not on Thursday, then on Sunday 2026-12-06.
        s.droplets.get_mut(&1).unwrap().backup_policy = Some(BackupPolicy {
            plan: "weekly".into(),
            weekday: Some("SUN".into()),
            hour: 4,
        });
        assert!(due_at(&s, "2026-12-04T04:30:00Z").is_empty());
        assert_eq!(due_at(&s, "2026-12-06T06:00:00Z"), vec![1]);
    }

    #[tokio::test]
    async fn backups_are_taken_listed_as_images_and_pruned_after_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(crate::testkit::NullHypervisor::default());
        let app = App::load(
            super::super::ApiConfig::new(dir.path().to_path_buf(), vec!["t".into()]),
            hv.clone(),
            Arc::new(crate::testkit::NoSpaces),
        )
        .unwrap();
        app.store
            .mutate::<_, ApiError>(|s| {
                s.droplets
                    .insert(7, droplet(7, Some(daily(4)), "2026-12-02T09:00:00Z"));
                Ok(())
            })
            .unwrap();
        let first = app.run_backups(at("2026-12-03T04:10:00Z")).await;
        assert_eq!(first.len(), 1, "one backup in the first window");
        assert!(app.run_backups(at("2026-12-03T05:00:00Z")).await.is_empty());
        let b = app.store.read(|s| s.droplet_backups[0].clone());
        assert_eq!(
            backup_json(&b),
            json!({
                "id": first[0], "name": "web-7 2026-12-03", "distribution": "Debian",
                "slug": null, "public": false, "regions": ["nyc3"],
                "created_at": "2026-12-03T04:10:00Z", "min_disk_size": 25,
                "size_gigabytes": 0.0, "type": "backup",
            })
        );
        let image = app
            .store
            .read(|s| images::find(s, &first[0].to_string()).map(|i| i.json()));
        assert_eq!(image.unwrap()["type"], "backup");
        // Daily backups are kept 7 days: the eighth day's pass deletes the first.
        let mut ids = first.clone();
        for day in 4..=9 {
            let t = format!("2026-12-{day:02}T04:10:00Z");
            ids.extend(app.run_backups(at(&t)).await);
        }
        assert_eq!(app.store.read(|s| ids_of_droplet(s, 7)), ids);
        let eighth = app.run_backups(at("2026-12-10T04:10:00Z")).await;
        assert_eq!(eighth.len(), 1);
        let kept = app.store.read(|s| ids_of_droplet(s, 7));
        assert_eq!(kept.len(), 7);
        assert!(!kept.contains(&first[0]), "the 7-day-old backup was kept");
        assert!(hv.calls().contains(&format!("delete_image {}", first[0])));
        // With the droplet gone, its backups go.
        delete_all_of(&app, 7).await;
        assert!(app.store.read(|s| s.droplet_backups.is_empty()));
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
