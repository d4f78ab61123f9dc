//! Timestamps as DigitalOcean writes them (`2024-05-01T12:00:00Z`), for API objects and for
//! the faults' firing history alike, so neither has to reach into the other for the clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in UTC, to the second, as DigitalOcean's `created_at` and action timestamps.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// A UTC time as DigitalOcean writes it.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Seconds since the Unix epoch (rate-limit reset times).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
