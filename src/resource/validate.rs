//! Plan-time checks that need no API: each bad value gets its own diagnostic on its own
//! attribute. Unknown values (computed elsewhere in the config) are checked at apply.

use std::time::Duration;

use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use super::model::{
    parse_access, Backend, ChallengeKind, TlsSource, ACCESS_ALL, MAX_REPLICAS, MAX_TIMEOUT,
};
use super::state::{known, RegistryState, StorageState, TlsState, UserState};
use crate::acme::KeyType;

pub const MIN_PASSWORD_LEN: usize = 12;
/// bcrypt ignores every byte after the 72nd.
pub const MAX_PASSWORD_BYTES: usize = 72;
pub const MAX_USERNAME_LEN: usize = 64;

fn err(diags: &mut Diagnostics, path: AttributePath, summary: &str, detail: String) {
    diags.error(summary.to_owned(), detail, path);
}

pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub fn check_name(diags: &mut Diagnostics, name: &str) {
    if !is_dns_label(name) {
        err(
            diags,
            AttributePath::new("name"),
            "Invalid `name`",
            format!("`name` must be a lowercase DNS label: 1 to 63 of a-z, 0-9 and `-`, not starting or ending with `-`; got {name:?}."),
        );
    }
}

pub fn fqdn_problem(fqdn: &str) -> Option<String> {
    if fqdn.len() > 253 {
        return Some(format!(
            "it is {} characters long; the limit is 253",
            fqdn.len()
        ));
    }
    if fqdn.ends_with('.') {
        return Some("leave out the trailing dot".into());
    }
    let labels: Vec<&str> = fqdn.split('.').collect();
    if labels.len() < 2 {
        return Some("it needs at least two labels, like `registry.example.com`".into());
    }
    if let Some(bad) = labels.iter().find(|l| !is_dns_label(l)) {
        return Some(format!(
            "the label {bad:?} is not a lowercase DNS label (a-z, 0-9, `-`, 1 to 63 characters)"
        ));
    }
    None
}

pub fn check_fqdn(diags: &mut Diagnostics, fqdn: &str) {
    if let Some(p) = fqdn_problem(fqdn) {
        err(
            diags,
            AttributePath::new("fqdn"),
            "Invalid `fqdn`",
            format!("{fqdn:?} is not a valid host name: {p}."),
        );
    }
}

pub fn is_bcrypt_hash(h: &str) -> bool {
    let b = h.as_bytes();
    b.len() == 60
        && (h.starts_with("$2y$") || h.starts_with("$2b$") || h.starts_with("$2a$"))
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b'$'
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

pub fn check_user(diags: &mut Diagnostics, name: &str, user: &UserState) {
    let path = AttributePath::new("users").key(name.to_owned());
    if name.is_empty() {
        err(
            diags,
            path.clone(),
            "Invalid user name",
            "A user name must not be empty.".into(),
        );
    } else if name.len() > MAX_USERNAME_LEN {
        err(
            diags,
            path.clone(),
            "Invalid user name",
            format!(
                "The user name {name:?} is {} characters long; the limit is {MAX_USERNAME_LEN}.",
                name.len()
            ),
        );
    } else if name.contains(':') || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        err(
            diags,
            path.clone(),
            "Invalid user name",
            format!("The user name {name:?} holds `:`, white space or a control character, which htpasswd cannot carry."),
        );
    }
    let has_pw = !user.password.is_null();
    let has_hash = !user.password_bcrypt.is_null();
    // Neither: the provider generates a password (`generated_passwords`).
    if has_pw && has_hash {
        err(
            diags,
            path.clone(),
            "Conflicting passwords",
            format!("User {name:?} sets both `password` and `password_bcrypt`; set at most one (or neither, for a generated password)."),
        );
    }
    if let Some(pw) = user.password.as_ref_option() {
        if pw.chars().count() < MIN_PASSWORD_LEN {
            err(
                diags,
                path.clone().attribute("password"),
                "Password too short",
                format!("The password of user {name:?} has {} characters; use {MIN_PASSWORD_LEN} or more.", pw.chars().count()),
            );
        } else if pw.len() > MAX_PASSWORD_BYTES {
            err(
                diags,
                path.clone().attribute("password"),
                "Password too long",
                format!("The password of user {name:?} is {} bytes long; bcrypt reads only the first {MAX_PASSWORD_BYTES}, so use at most {MAX_PASSWORD_BYTES}.", pw.len()),
            );
        }
    }
    if let Some(h) = user.password_bcrypt.as_ref_option() {
        if !is_bcrypt_hash(h) {
            err(
                diags,
                path.clone().attribute("password_bcrypt"),
                "Invalid `password_bcrypt`",
                format!("The `password_bcrypt` of user {name:?} is not a bcrypt hash (`$2y$10$` followed by 53 characters); make one with `htpasswd -nbB user pass`."),
            );
        }
    }
    if let Some(access) = user.access.as_ref_option() {
        if parse_access(access).is_none() {
            err(
                diags,
                path.attribute("access"),
                "Invalid `access`",
                format!(
                    "User {name:?} has access {access:?}; use {}.",
                    quoted(ACCESS_ALL, " or ")
                ),
            );
        }
    }
}

/// Why a string is not a CIDR block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("no `/prefix`")]
    NoPrefix,
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{0:?} is not a prefix length")]
    Length(String),
    #[error("prefix /{len} is longer than /{max}")]
    TooLong { len: u8, max: u8 },
}

pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), CidrError> {
    let (ip, len) = s.split_once('/').ok_or(CidrError::NoPrefix)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| CidrError::Address(ip.to_owned()))?;
    let len: u8 = len.parse().map_err(|_| CidrError::Length(len.to_owned()))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(CidrError::TooLong { len, max });
    }
    Ok((ip, len))
}

/// Why a string is not a timeout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("{0:?} is not a duration like \"20m\" or \"1h30m\"")]
    Shape(String),
    #[error("{0:?}: unknown unit {1:?} (use h, m, s)")]
    Unit(String, String),
    #[error("{0:?} is longer than the longest timeout, {}h", MAX_TIMEOUT.as_secs() / 3600)]
    TooLong(String),
}

/// Parses a Go-style duration: `90s`, `20m`, `1h30m`, `1.5h`; at most [`MAX_TIMEOUT`], so
/// that no value can overflow a `Duration` or a deadline.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut seen = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let n: f64 = num
            .parse()
            .map_err(|_| DurationError::Shape(s.to_owned()))?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(DurationError::Unit(s.to_owned(), unit)),
        };
        seen = true;
    }
    if !num.is_empty() || !seen {
        return Err(DurationError::Shape(s.to_owned()));
    }
    match Duration::try_from_secs_f64(total) {
        Ok(d) if d <= MAX_TIMEOUT => Ok(d),
        _ => Err(DurationError::TooLong(s.to_owned())),
    }
}

/// `"a", "b"` for messages.
fn quoted(allowed: &[&str], sep: &str) -> String {
    allowed
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(sep)
}

/// `garbage_collection`: the schedule is checked as well as can be without systemd (see
/// `render::gc::check_on_calendar`), the counter as `droplet_generation` is.
fn check_gc(diags: &mut Diagnostics, g: &super::state::GcState) {
    let attr = |a: &'static str| {
        AttributePath::new("garbage_collection")
            .index(0)
            .attribute(a)
    };
    if let Some(schedule) = g.schedule.as_ref_option() {
        if let Err(why) = crate::render::gc::check_on_calendar(schedule) {
            err(
                diags,
                attr("schedule"),
                "Invalid `garbage_collection.schedule`",
                format!("{schedule:?} is not a systemd OnCalendar expression this provider accepts: {why}. Use a shorthand (`daily`, `weekly`) or `[weekdays] [YYYY-MM-DD] HH:MM[:SS]`, for example `Sun 03:00` or `*-*-* 04:30:00 UTC`."),
            );
        }
    }
    if let Some(n) = g.run.as_ref_option() {
        if *n < 0 {
            err(
                diags,
                attr("run"),
                "Invalid `garbage_collection.run`",
                format!("{n} is negative."),
            );
        }
    }
    for (i, r) in g
        .retention
        .as_ref_option()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(r) = r.as_ref_option() {
            check_retention(diags, i, r);
        }
    }
}

/// The longest `older_than_days`: a century.
pub const MAX_RETENTION_DAYS: i64 = 36_500;

/// One `retention` block: its globs, its numbers, and a rule that would keep nothing but its
/// `keep_tags` only with `allow_delete_all`.
fn check_retention(diags: &mut Diagnostics, i: usize, r: &super::state::RetentionState) {
    use crate::retention::{repository_pattern_problem, tag_pattern_problem};
    let at = || {
        AttributePath::new("garbage_collection")
            .index(0)
            .attribute("retention")
            .index(i as i64)
    };
    if let Some(repos) = r.repositories.as_ref_option() {
        if repos.is_empty() {
            err(
                diags,
                at().attribute("repositories"),
                "Invalid `garbage_collection.retention.repositories`",
                "The list is empty: name at least one repository glob (`\"**\"` for every repository).".into(),
            );
        }
        for (j, p) in repos.iter().enumerate() {
            if let Some(why) = p
                .as_ref_option()
                .and_then(|p| repository_pattern_problem(p))
            {
                err(
                    diags,
                    at().attribute("repositories").index(j as i64),
                    "Invalid `garbage_collection.retention.repositories`",
                    format!(
                        "{:?} is not a repository glob: {why}.",
                        p.as_ref_option().unwrap_or(&String::new())
                    ),
                );
            }
        }
    }
    for (j, p) in r
        .keep_tags
        .as_ref_option()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(why) = p.as_ref_option().and_then(|p| tag_pattern_problem(p)) {
            err(
                diags,
                at().attribute("keep_tags").index(j as i64),
                "Invalid `garbage_collection.retention.keep_tags`",
                format!(
                    "{:?} is not a tag glob: {why}.",
                    p.as_ref_option().unwrap_or(&String::new())
                ),
            );
        }
    }
    for (name, v, max) in [
        ("keep_last", &r.keep_last, u32::MAX as i64),
        ("older_than_days", &r.older_than_days, MAX_RETENTION_DAYS),
    ] {
        if let Some(n) = v.as_ref_option() {
            if *n < 0 || *n > max {
                err(
                    diags,
                    at().attribute(name),
                    &format!("Invalid `garbage_collection.retention.{name}`"),
                    format!("{n} is outside 0..{max}."),
                );
            }
        }
    }
    // Unknown numbers (from values known only at apply) are given the benefit of the doubt.
    let keeps = |v: &super::state::N| v.is_unknown() || v.as_ref_option().is_some_and(|n| *n > 0);
    let allowed = r.allow_delete_all.as_ref_option().copied().unwrap_or(false)
        || r.allow_delete_all.is_unknown();
    if !keeps(&r.keep_last) && !keeps(&r.older_than_days) && !allowed {
        err(
            diags,
            at().attribute("allow_delete_all"),
            "Retention rule deletes every tag",
            format!("Retention rule {} has no `keep_last` nor `older_than_days` of at least 1: it selects every tag of its repositories but those `keep_tags` names, whatever their age. Set `keep_last` or `older_than_days`, or `allow_delete_all = true` if that is what you mean.", i + 1),
        );
    }
}

/// `backups`: the values DigitalOcean's spec allows (`droplet_backup_policy`).
fn check_backups(diags: &mut Diagnostics, b: &super::state::BackupsState) {
    use super::model::{BACKUP_HOURS, BACKUP_PLANS, BACKUP_WEEKDAYS};
    let attr = |a: &'static str| AttributePath::new("backups").index(0).attribute(a);
    if let Some(plan) = b.plan.as_ref_option() {
        if !BACKUP_PLANS.contains(&plan.as_str()) {
            err(
                diags,
                attr("plan"),
                "Invalid `backups.plan`",
                format!(
                    "{plan:?} is not a backup plan: use {}.",
                    quoted(BACKUP_PLANS, " or ")
                ),
            );
        }
    }
    if let Some(day) = b.weekday.as_ref_option() {
        if !BACKUP_WEEKDAYS.contains(&day.as_str()) {
            err(
                diags,
                attr("weekday"),
                "Invalid `backups.weekday`",
                format!(
                    "{day:?} is not a weekday: use one of {}.",
                    quoted(BACKUP_WEEKDAYS, ", ")
                ),
            );
        } else if !matches!(&b.plan, tf_provider::value::Value::Unknown)
            && b.plan.as_ref_option().map(String::as_str) != Some("weekly")
        {
            err(
                diags,
                attr("weekday"),
                "Invalid `backups.weekday`",
                "A weekday applies to weekly backups only: set `plan = \"weekly\"`, or remove `weekday`.".to_owned(),
            );
        }
    }
    if let Some(h) = b.hour.as_ref_option() {
        if !BACKUP_HOURS.contains(h) {
            err(
                diags,
                attr("hour"),
                "Invalid `backups.hour`",
                format!(
                    "{h} is not the start of a backup window: use 0, 4, 8, 12, 16 or 20 (UTC)."
                ),
            );
        }
    }
}

pub fn check_tls(diags: &mut Diagnostics, tls: &TlsState) {
    let p = || AttributePath::new("tls").index(0);
    let one_of = |diags: &mut Diagnostics,
                  attr: &'static str,
                  v: &super::state::S,
                  allowed: &[&str],
                  ok: &dyn Fn(&str) -> bool| {
        if let Some(v) = v.as_ref_option() {
            if !ok(v) {
                err(
                    diags,
                    p().attribute(attr),
                    &format!("Invalid `tls.{attr}`"),
                    format!("{v:?} is not one of {}.", quoted(allowed, ", ")),
                );
            }
        }
    };
    one_of(diags, "source", &tls.source, TlsSource::ALL, &|v| {
        TlsSource::parse(v).is_some()
    });
    one_of(
        diags,
        "challenge",
        &tls.challenge,
        ChallengeKind::ALL,
        &|v| ChallengeKind::parse(v).is_some(),
    );
    one_of(diags, "key_type", &tls.key_type, &KeyType::ALL, &|v| {
        v.parse::<KeyType>().is_ok()
    });
    if let Some(d) = tls.renew_before_days.as_ref_option() {
        if !(1..=89).contains(d) {
            err(
                diags,
                p().attribute("renew_before_days"),
                "Invalid `tls.renew_before_days`",
                format!("{d} is outside 1 to 89 days."),
            );
        }
    }
    let source = TlsSource::of(&tls.source);
    let provided = source == TlsSource::Provided;
    for (attr, v) in [
        ("certificate_pem", &tls.certificate_pem),
        ("private_key_pem", &tls.private_key_pem),
    ] {
        if provided && v.is_null() {
            err(
                diags,
                p().attribute(attr),
                &format!("Missing `tls.{attr}`"),
                format!("`source = \"provided\"` needs `{attr}`."),
            );
        }
        if !provided && !v.is_null() {
            err(
                diags,
                p().attribute(attr),
                &format!("Unexpected `tls.{attr}`"),
                format!(
                    "`{attr}` is only for `source = \"provided\"` (source is {:?}).",
                    source.as_str()
                ),
            );
        }
    }
    if let Some(email) = tls.email.as_ref_option() {
        if !email.contains('@') || email.chars().any(char::is_whitespace) {
            err(
                diags,
                p().attribute("email"),
                "Invalid `tls.email`",
                format!("{email:?} is not an e-mail address."),
            );
        }
    }
}

pub fn check_storage(diags: &mut Diagnostics, st: &StorageState) {
    let p = || AttributePath::new("storage").index(0);
    if let Some(b) = st.backend.as_ref_option() {
        if Backend::parse(b).is_none() {
            err(
                diags,
                p().attribute("backend"),
                "Invalid `storage.backend`",
                format!("{b:?} is not one of {}.", quoted(Backend::ALL, ", ")),
            );
            return;
        }
    }
    let backend = Backend::of(&st.backend);
    match (backend, st.size_gib.as_ref_option()) {
        (Backend::Volume, None) if st.size_gib.is_null() => err(
            diags,
            p().attribute("size_gib"),
            "Missing `storage.size_gib`",
            "`backend = \"volume\"` needs `size_gib`.".into(),
        ),
        (Backend::Volume, Some(n)) if !(1..=16384).contains(n) => err(
            diags,
            p().attribute("size_gib"),
            "Invalid `storage.size_gib`",
            format!("{n} GiB is outside DigitalOcean's volume sizes, 1 to 16384 GiB."),
        ),
        (b, Some(_)) if b != Backend::Volume => err(
            diags,
            p().attribute("size_gib"),
            "Unexpected `storage.size_gib`",
            format!(
                "`size_gib` is only for `backend = \"volume\"` (backend is {:?}).",
                b.as_str()
            ),
        ),
        _ => {}
    }
    if !st.backend.is_unknown() && backend != Backend::Volume && !st.volume_snapshot_id.is_null() {
        err(
            diags,
            p().attribute("volume_snapshot_id"),
            "Unexpected `storage.volume_snapshot_id`",
            format!(
                "A snapshot is a volume's: `volume_snapshot_id` is only for `backend = \"volume\"` (backend is {:?}).",
                backend.as_str()
            ),
        );
    }
    if !st.backend.is_unknown() && backend != Backend::Spaces && !st.keep_deleted_days.is_null() {
        err(
            diags,
            p().attribute("keep_deleted_days"),
            "Unexpected `storage.keep_deleted_days`",
            format!(
                "Object versions are a bucket's: `keep_deleted_days` is only for `backend = \"spaces\"` (backend is {:?}).",
                backend.as_str()
            ),
        );
    }
    if let Some(days) = st.keep_deleted_days.as_ref_option() {
        if !(1..=3650).contains(days) {
            err(
                diags,
                p().attribute("keep_deleted_days"),
                "Invalid `storage.keep_deleted_days`",
                format!("{days} days: keep deleted objects for 1 to 3650 days, or leave it unset for no versioning."),
            );
        }
    }
    if let Some(id) = st.volume_snapshot_id.as_ref_option() {
        if id.trim().is_empty() {
            err(
                diags,
                p().attribute("volume_snapshot_id"),
                "Invalid `storage.volume_snapshot_id`",
                "The snapshot id is empty.".into(),
            );
        }
    }
    let (id, key) = (&st.spaces_access_id, &st.spaces_secret_key);
    // An unknown backend (validate, before variables are known) cannot be judged yet.
    if !st.backend.is_unknown() && backend != Backend::Spaces && (!id.is_null() || !key.is_null()) {
        let attr = if id.is_null() {
            "spaces_secret_key"
        } else {
            "spaces_access_id"
        };
        err(
            diags,
            p().attribute(attr),
            &format!("Unexpected `storage.{attr}`"),
            format!(
                "Spaces keys are only for `backend = \"spaces\"` (backend is {:?}).",
                backend.as_str()
            ),
        );
    } else if id.is_null() != key.is_null() {
        let (set, missing) = if id.is_null() {
            ("spaces_secret_key", "spaces_access_id")
        } else {
            ("spaces_access_id", "spaces_secret_key")
        };
        err(
            diags,
            p().attribute(missing),
            &format!("Missing `storage.{missing}`"),
            format!("`storage.{set}` is set: set `storage.{missing}` too (a key id and its secret go together), or neither to use the provider's keys."),
        );
    } else {
        for (attr, v) in [("spaces_access_id", id), ("spaces_secret_key", key)] {
            if v.as_ref_option().is_some_and(|v| v.trim().is_empty()) {
                err(
                    diags,
                    p().attribute(attr),
                    &format!("Empty `storage.{attr}`"),
                    "An empty key cannot sign requests: set the key, or leave both keys out to use the provider's.".into(),
                );
            }
        }
    }
    match (backend, st.bucket.as_ref_option()) {
        (Backend::Spaces, None) if st.bucket.is_null() => err(
            diags,
            p().attribute("bucket"),
            "Missing `storage.bucket`",
            "`backend = \"spaces\"` needs `bucket`.".into(),
        ),
        (Backend::Spaces, Some(b)) => {
            if let Some(problem) = crate::storage::bucket_problem(b) {
                err(
                    diags,
                    p().attribute("bucket"),
                    "Invalid `storage.bucket`",
                    format!("{b:?} is not a valid bucket name: {problem}."),
                );
            }
        }
        (b, Some(_)) => err(
            diags,
            p().attribute("bucket"),
            "Unexpected `storage.bucket`",
            format!(
                "`bucket` is only for `backend = \"spaces\"` (backend is {:?}).",
                b.as_str()
            ),
        ),
        _ => {}
    }
}

/// Why `secret` cannot be the registry's `http.secret`; never quotes it.
pub fn http_secret_problem(secret: &str) -> Option<String> {
    let len = secret.len();
    if !(16..=256).contains(&len) {
        return Some(format!(
            "it is {len} bytes long; it must be 16 to 256 characters"
        ));
    }
    if let Some(i) = secret.bytes().position(|b| !b.is_ascii_graphic()) {
        return Some(format!(
            "character {} is not printable ASCII or is a space; use letters, digits and ASCII punctuation",
            i + 1
        ));
    }
    None
}

/// Every check that needs no API.
pub fn check_config(diags: &mut Diagnostics, c: &RegistryState) {
    if let Some(secret) = c.http_secret.as_ref_option() {
        if let Some(problem) = http_secret_problem(secret) {
            err(
                diags,
                AttributePath::new("http_secret"),
                "Invalid `http_secret`",
                format!("The value is not usable as the registry's `http.secret`: {problem}."),
            );
        }
    }
    if let Some(n) = known(&c.name) {
        check_name(diags, n);
    } else if c.name.as_ref_option().is_some() {
        check_name(diags, "");
    }
    if let Some(f) = c.fqdn.as_ref_option() {
        check_fqdn(diags, f);
    }
    if let Some(users) = c.users.as_ref_option() {
        for (name, u) in users {
            if let Some(u) = u.as_ref_option() {
                check_user(diags, name, u);
            }
        }
    }
    if let Some(cidrs) = c.ssh_allowed_cidrs.as_ref_option() {
        for (i, cidr) in cidrs.iter().enumerate() {
            if let Some(s) = cidr.as_ref_option() {
                if let Err(e) = parse_cidr(s) {
                    err(
                        diags,
                        AttributePath::new("ssh_allowed_cidrs").index(i as i64),
                        "Invalid CIDR in `ssh_allowed_cidrs`",
                        format!("{s:?} is not a CIDR block: {e}."),
                    );
                }
            }
        }
    }
    if let Some(g) = c.droplet_generation.as_ref_option() {
        if *g < 0 {
            err(
                diags,
                AttributePath::new("droplet_generation"),
                "Invalid `droplet_generation`",
                format!("{g} is negative."),
            );
        }
    }
    if let Some(tls) = c.tls.as_ref_option() {
        check_tls(diags, tls);
    }
    check_replicas(diags, c);
    if let Some(st) = c.storage.as_ref_option() {
        check_storage(diags, st);
    }
    if let Some(g) = c.garbage_collection.as_ref_option() {
        check_gc(diags, g);
    }
    if let Some(b) = c.backups.as_ref_option() {
        check_backups(diags, b);
    }
    if let Some(t) = c.timeouts.as_ref_option() {
        for (attr, v) in [
            ("create", &t.create),
            ("update", &t.update),
            ("delete", &t.delete),
        ] {
            if let Some(s) = v.as_ref_option() {
                if let Err(e) = parse_duration(s) {
                    err(
                        diags,
                        AttributePath::new("timeouts").index(0).attribute(attr),
                        &format!("Invalid `timeouts.{attr}`"),
                        format!("{e}."),
                    );
                }
            }
        }
    }
}

/// `replicas`: 1 to [`MAX_REPLICAS`]; 2 or more need what every droplet can share (Spaces), and
/// exclude what only one droplet can do: hold a reserved IP, renew the certificate alone (N
/// droplets would get N certificates, and an HTTP-01 check through the balancer reaches any
/// of them), or collect on a schedule (the others would keep taking pushes meanwhile).
fn check_replicas(diags: &mut Diagnostics, c: &RegistryState) {
    let Some(n) = c.replicas.as_ref_option().copied() else {
        return;
    };
    let at = || AttributePath::new("replicas");
    if n < 1 || n > MAX_REPLICAS as i64 {
        err(
            diags,
            at(),
            "Invalid `replicas`",
            format!("{n} is not between 1 and {MAX_REPLICAS}."),
        );
        return;
    }
    if n == 1 {
        return;
    }
    // Unknown (a module's input not known yet) is checked once it is known.
    let spaces = match &c.storage {
        Value::Unknown => true,
        Value::Null => false,
        Value::Value(s) => match &s.backend {
            Value::Unknown => true,
            Value::Null => false,
            Value::Value(b) => b == "spaces",
        },
    };
    if !spaces {
        err(
            diags,
            at(),
            "`replicas` needs Spaces storage",
            format!("{n} droplets must serve the same images: set `storage {{ backend = \"spaces\" }}` (a droplet's disk or a volume belongs to one droplet)."),
        );
    }
    if c.reserved_ip.as_ref_option() == Some(&true) {
        err(
            diags,
            AttributePath::new("reserved_ip"),
            "`reserved_ip` with `replicas`",
            format!("With `replicas = {n}` the A record points at the load balancer, whose address stays the same across droplet replacements: remove `reserved_ip` (a reserved IP belongs to one droplet)."),
        );
    }
    if let Some(tls) = c.tls.as_ref_option() {
        if tls.renew.as_ref_option().map(String::as_str) == Some("droplet") {
            err(
                diags,
                AttributePath::new("tls").index(0).attribute("renew"),
                "`tls.renew = \"droplet\"` with `replicas`",
                format!("With `replicas = {n}` each droplet would renew on its own and serve a certificate of its own, and an HTTP-01 check through the load balancer reaches any droplet: set `renew = \"plan\"` (the default with replicas), so that one certificate is ordered by the plan and installed on every droplet."),
            );
        }
    }
    if let Some(g) = c.garbage_collection.as_ref_option() {
        if g.schedule.as_ref_option().is_some() {
            err(
                diags,
                AttributePath::new("garbage_collection")
                    .index(0)
                    .attribute("schedule"),
                "`garbage_collection.schedule` with `replicas`",
                format!("A scheduled collection runs on one droplet alone, while the other {} would keep taking pushes into the same bucket and could lose what they write: with `replicas`, collect through the plan (`run`), which holds writes on every droplet while one collects.", n - 1),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(d: &Diagnostics) -> Vec<String> {
        d.errors.iter().map(|e| e.attribute.to_string()).collect()
    }

    fn user(pw: Option<&str>, hash: Option<&str>, access: Option<&str>) -> UserState {
        UserState {
            password: pw.map(str::to_owned).into(),
            password_bcrypt: hash.map(str::to_owned).into(),
            access: access.map(str::to_owned).into(),
        }
    }

    #[test]
    fn names_and_fqdns() {
        assert!(is_dns_label("registry-1"));
        for bad in ["", "-a", "a-", "Reg", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(fqdn_problem("registry.example.com").is_none());
        for bad in [
            "registry",
            "registry.example.com.",
            "reg..example.com",
            "Reg.example.com",
            "a b.example.com",
        ] {
            assert!(fqdn_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn each_bad_user_gets_its_own_diagnostic() {
        let hash = "$2y$10$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ01234";
        assert!(is_bcrypt_hash(hash), "{}", hash.len());
        let cases: Vec<(&str, UserState, &str)> = vec![
            ("", user(Some("long-enough-pw"), None, None), "users[\"\"]"),
            (
                "a:b",
                user(Some("long-enough-pw"), None, None),
                "users[\"a:b\"]",
            ),
            (
                "a b",
                user(Some("long-enough-pw"), None, None),
                "users[\"a b\"]",
            ),
            (
                "a\nb",
                user(Some("long-enough-pw"), None, None),
                "users[\"a\\nb\"]",
            ),
            ("short", user(Some("short"), None, None), "password"),
            (
                "both",
                user(Some("long-enough-pw"), Some(hash), None),
                "users[\"both\"]",
            ),
            ("long", user(Some(&"p".repeat(73)), None, None), "password"),
            (
                "badhash",
                user(None, Some("$1$abc"), None),
                "password_bcrypt",
            ),
            (
                "access",
                user(Some("long-enough-pw"), None, Some("admin")),
                "access",
            ),
        ];
        for (name, u, want) in cases {
            let mut d = Diagnostics::default();
            check_user(&mut d, name, &u);
            assert_eq!(d.errors.len(), 1, "{name:?}: {:?}", paths(&d));
            assert!(
                paths(&d)[0].contains(want),
                "{name:?}: {:?} lacks {want}",
                paths(&d)
            );
        }
        let mut d = Diagnostics::default();
        check_user(
            &mut d,
            &"x".repeat(65),
            &user(Some("long-enough-pw"), None, None),
        );
        assert_eq!(d.errors.len(), 1);
        let mut d = Diagnostics::default();
        check_user(&mut d, "ok", &user(None, Some(hash), Some("pull")));
        assert!(d.errors.is_empty());
        // Neither password nor hash: one is generated. 72 bytes is the longest accepted.
        for u in [
            user(None, None, None),
            user(Some(&"é".repeat(36)), None, None),
        ] {
            let mut d = Diagnostics::default();
            check_user(&mut d, "ok", &u);
            assert!(d.errors.is_empty(), "{:?}", paths(&d));
        }
    }

    #[test]
    fn cidrs_durations_buckets() {
        assert!(parse_cidr("0.0.0.0/0").is_ok());
        assert!(parse_cidr("::/0").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0.0").is_err());
        assert!(parse_cidr("banana/8").is_err());
        assert_eq!(parse_duration("20m").unwrap(), Duration::from_secs(1200));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("10x").is_err());
        // Too long for a timeout: a diagnostic, never a panic in `Duration`.
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::TooLong(_))
        ));
        assert!(parse_duration("169h").is_err());
        assert_eq!(parse_duration("168h").unwrap(), MAX_TIMEOUT);
        use crate::storage::bucket_problem;
        assert!(bucket_problem("acme-registry").is_none());
        for bad in ["ab", "Acme", "acme_registry", "-acme", "acme.registry"] {
            assert!(bucket_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn http_secret_is_checked_and_never_quoted() {
        let long = "x".repeat(257);
        let bad_secrets = [
            "short-secret",
            long.as_str(),
            "sixteen chars with spaces",
            "tab\tseparated-secret-value",
            "non-ascii-secret-\u{e9}\u{e9}\u{e9}",
        ];
        for secret in bad_secrets {
            let c = RegistryState {
                http_secret: secret.to_string().into(),
                ..Default::default()
            };
            let mut d = Diagnostics::default();
            check_config(&mut d, &c);
            let got = paths(&d);
            assert!(
                got.len() == 1 && got[0].contains("http_secret"),
                "{secret:?}: {got:?}"
            );
            let text = format!("{:?}", d.errors);
            assert!(!text.contains(secret), "the diagnostic quotes the secret");
        }
        for good in [
            "0123456789abcdef",
            "SoMe-Http-S3cret!#$%&'()*+,./:;<=>?@[]^_`{|}~",
        ] {
            let c = RegistryState {
                http_secret: good.to_string().into(),
                ..Default::default()
            };
            let mut d = Diagnostics::default();
            check_config(&mut d, &c);
            assert!(d.errors.is_empty(), "{good:?}: {:?}", paths(&d));
        }
        assert!(http_secret_problem(&"y".repeat(256)).is_none());
    }

    #[test]
    fn spaces_keys_go_together_and_only_with_spaces() {
        let storage = |backend: &str, id: Option<&str>, key: Option<&str>| StorageState {
            backend: backend.to_string().into(),
            bucket: (backend == "spaces").then(|| "images".to_string()).into(),
            spaces_access_id: id.map(str::to_owned).into(),
            spaces_secret_key: key.map(str::to_owned).into(),
            ..Default::default()
        };
        let cases = [
            (storage("spaces", Some("AK"), Some("sk-secret")), vec![]),
            (storage("spaces", None, None), vec![]),
            (
                storage("spaces", Some("AK"), None),
                vec!["spaces_secret_key"],
            ),
            (
                storage("spaces", None, Some("sk-secret")),
                vec!["spaces_access_id"],
            ),
            (
                storage("spaces", Some(" "), Some("sk-secret")),
                vec!["spaces_access_id"],
            ),
            (
                storage("droplet", Some("AK"), Some("sk-secret")),
                vec!["spaces_access_id"],
            ),
            (
                storage("volume", None, Some("sk-secret")),
                vec!["size_gib", "spaces_secret_key"],
            ),
        ];
        for (st, want) in cases {
            let mut d = Diagnostics::default();
            check_storage(&mut d, &st);
            let mut got = paths(&d);
            got.sort();
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.contains(w), "{g} lacks {w}");
            }
            assert!(
                !format!("{:?}", d.errors).contains("sk-secret"),
                "a key in {got:?}"
            );
        }
    }

    #[test]
    fn backups_outside_the_spec_are_named_at_plan_time() {
        use crate::resource::state::{BackupsState, RegistryState};
        let config = |plan: Option<&str>, weekday: Option<&str>, hour: Option<i64>| RegistryState {
            backups: tf_provider::value::Value::Value(BackupsState {
                plan: plan.map(str::to_string).into(),
                weekday: weekday.map(str::to_string).into(),
                hour: hour.into(),
            }),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        check_config(&mut d, &config(Some("weekly"), Some("SUN"), Some(4)));
        check_config(&mut d, &config(None, None, None));
        assert!(d.errors.is_empty(), "{:?}", paths(&d));
        let mut d = Diagnostics::default();
        check_config(&mut d, &config(Some("hourly"), Some("sun"), Some(3)));
        check_config(&mut d, &config(Some("daily"), Some("MON"), None));
        let summary: Vec<String> = d.errors.iter().map(|e| e.summary.to_string()).collect();
        assert_eq!(
            summary,
            [
                "Invalid `backups.plan`",
                "Invalid `backups.weekday`",
                "Invalid `backups.hour`",
                "Invalid `backups.weekday`"
            ]
        );
        let p = paths(&d);
        assert!(p[0].contains("backups") && p[0].contains("plan"), "{p:?}");
        assert!(p[2].contains("hour"), "{p:?}");
        assert!(d.errors[3].detail.contains("weekly backups only"));
    }

    #[test]
    fn several_replicas_need_spaces_and_exclude_what_one_droplet_holds() {
        use crate::resource::state::{GcState, RegistryState, StorageState, TlsState};
        use tf_provider::value::Value as V;
        let config = |n: i64, backend: Option<&str>| RegistryState {
            replicas: V::Value(n),
            storage: match backend {
                Some(b) => V::Value(StorageState {
                    backend: b.to_string().into(),
                    bucket: (b == "spaces").then(|| "b".to_string()).into(),
                    ..Default::default()
                }),
                None => V::Null,
            },
            ..Default::default()
        };
        let summaries = |c: &RegistryState| {
            let mut d = Diagnostics::default();
            check_replicas(&mut d, c);
            let p = paths(&d);
            let s: Vec<String> = d.errors.iter().map(|e| e.summary.to_string()).collect();
            (s, p)
        };
        for ok in [
            config(1, None),
            config(2, Some("spaces")),
            config(10, Some("spaces")),
        ] {
            assert!(summaries(&ok).0.is_empty(), "{:?}", summaries(&ok));
        }
        // A storage block not known yet is checked once it is.
        let mut unknown = config(3, None);
        unknown.storage = V::Unknown;
        assert!(summaries(&unknown).0.is_empty());
        for (n, backend) in [(2, None), (2, Some("volume")), (3, Some("droplet"))] {
            let (s, p) = summaries(&config(n, backend));
            assert_eq!(s, ["`replicas` needs Spaces storage"], "{n} {backend:?}");
            assert!(p[0].contains("replicas"), "{p:?}");
        }
        for n in [0, 11, -1] {
            assert_eq!(
                summaries(&config(n, Some("spaces"))).0,
                ["Invalid `replicas`"]
            );
        }
        let mut c = config(2, Some("spaces"));
        c.reserved_ip = V::Value(true);
        c.tls = V::Value(TlsState {
            renew: "droplet".to_string().into(),
            ..Default::default()
        });
        c.garbage_collection = V::Value(GcState {
            schedule: "Sun 03:00".to_string().into(),
            ..Default::default()
        });
        let (s, p) = summaries(&c);
        assert_eq!(
            s,
            [
                "`reserved_ip` with `replicas`",
                "`tls.renew = \"droplet\"` with `replicas`",
                "`garbage_collection.schedule` with `replicas`"
            ]
        );
        assert!(p[1].contains("renew") && p[2].contains("schedule"), "{p:?}");
        // Collections through the plan are for several droplets too.
        let mut c = config(2, Some("spaces"));
        c.garbage_collection = V::Value(GcState {
            run: V::Value(1),
            ..Default::default()
        });
        assert!(summaries(&c).0.is_empty());
    }

    #[test]
    fn a_snapshot_id_is_for_volumes_only() {
        use crate::resource::state::{RegistryState, StorageState};
        let config = |backend: &str| RegistryState {
            storage: tf_provider::value::Value::Value(StorageState {
                backend: backend.to_string().into(),
                size_gib: (backend == "volume").then_some(10).into(),
                bucket: (backend == "spaces").then(|| "b".to_string()).into(),
                volume_snapshot_id: "8eb4d51a".to_string().into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        check_config(&mut d, &config("volume"));
        assert!(d.errors.is_empty(), "{:?}", paths(&d));
        check_config(&mut d, &config("droplet"));
        assert_eq!(d.errors.len(), 1);
        assert!(paths(&d)[0].contains("volume_snapshot_id"));
    }

    #[test]
    fn keep_deleted_days_is_for_spaces_only_and_within_range() {
        use crate::resource::state::{RegistryState, StorageState};
        let config = |backend: &str, days: i64| RegistryState {
            storage: tf_provider::value::Value::Value(StorageState {
                backend: backend.to_string().into(),
                size_gib: (backend == "volume").then_some(10).into(),
                bucket: (backend == "spaces")
                    .then(|| "reg-images".to_string())
                    .into(),
                keep_deleted_days: days.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        check_config(&mut d, &config("spaces", 30));
        check_config(&mut d, &config("spaces", 3650));
        assert!(d.errors.is_empty(), "{:?}", paths(&d));
        for (backend, days, summary) in [
            ("volume", 30, "Unexpected `storage.keep_deleted_days`"),
            ("spaces", 0, "Invalid `storage.keep_deleted_days`"),
            ("spaces", 3651, "Invalid `storage.keep_deleted_days`"),
        ] {
            let mut d = Diagnostics::default();
            check_config(&mut d, &config(backend, days));
            let said: Vec<String> = d.errors.iter().map(|e| e.summary.to_string()).collect();
            assert_eq!(said, [summary], "{backend} {days}");
            assert!(
                paths(&d)[0].contains("keep_deleted_days"),
                "{:?}",
                paths(&d)
            );
        }
    }

    #[test]
    fn a_bad_schedule_is_named_at_plan_time() {
        use crate::resource::state::{GcState, RegistryState};
        let config = |schedule: &str, run: i64| RegistryState {
            garbage_collection: tf_provider::value::Value::Value(GcState {
                schedule: schedule.to_string().into(),
                run: run.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        check_config(&mut d, &config("Sun 03:00", 1));
        assert!(d.errors.is_empty(), "{:?}", paths(&d));
        let mut d = Diagnostics::default();
        check_config(&mut d, &config("every sunday at 3", -1));
        let p = paths(&d);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("garbage_collection") && p[0].contains("schedule"),
            "{p:?}"
        );
        assert!(p[1].contains("run"), "{p:?}");
        let summary: Vec<String> = d.errors.iter().map(|e| e.summary.to_string()).collect();
        assert_eq!(
            summary,
            [
                "Invalid `garbage_collection.schedule`",
                "Invalid `garbage_collection.run`"
            ]
        );
        assert!(
            d.errors[0].detail.contains("\"every\" is not a weekday"),
            "{}",
            d.errors[0].detail
        );
    }

    #[test]
    fn retention_rules_are_checked_on_their_attribute() {
        use crate::resource::state::{GcState, RegistryState, RetentionState};
        use tf_provider::value::Value;
        let strs =
            |v: &[&str]| Value::Value(v.iter().map(|s| Value::Value(s.to_string())).collect());
        let config = |rules: Vec<RetentionState>| RegistryState {
            garbage_collection: Value::Value(GcState {
                retention: Value::Value(rules.into_iter().map(Value::Value).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let good = RetentionState {
            repositories: strs(&["team/*", "**"]),
            keep_last: Value::Value(10),
            older_than_days: Value::Value(30),
            keep_tags: strs(&["latest", "v*"]),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        check_config(&mut d, &config(vec![good.clone()]));
        assert!(d.errors.is_empty(), "{:?}", paths(&d));

        let bad = RetentionState {
            repositories: strs(&["team/*", "Team/[x]"]),
            keep_last: Value::Value(-1),
            older_than_days: Value::Value(-5),
            keep_tags: strs(&["a/b"]),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        check_config(&mut d, &config(vec![good.clone(), bad]));
        let p = paths(&d);
        for want in [
            "retention[1].repositories[1]",
            "retention[1].keep_tags[0]",
            "retention[1].keep_last",
            "retention[1].older_than_days",
            "retention[1].allow_delete_all",
        ] {
            assert!(p.iter().any(|x| x.contains(want)), "{want} not in {p:?}");
        }
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(
            p.iter().all(|x| x.starts_with("garbage_collection[0]")),
            "{p:?}"
        );

        // Nothing kept by rank or age: only with the explicit flag.
        let all = RetentionState {
            repositories: strs(&["scratch/**"]),
            keep_last: Value::Value(0),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        check_config(&mut d, &config(vec![all.clone()]));
        assert_eq!(paths(&d).len(), 1);
        assert_eq!(d.errors[0].summary, "Retention rule deletes every tag");
        let mut d = Diagnostics::default();
        check_config(
            &mut d,
            &config(vec![RetentionState {
                allow_delete_all: Value::Value(true),
                ..all.clone()
            }]),
        );
        assert!(d.errors.is_empty(), "{:?}", paths(&d));
        // A number known only at apply is not held against the rule.
        let mut d = Diagnostics::default();
        check_config(
            &mut d,
            &config(vec![RetentionState {
                keep_last: Value::Unknown,
                ..all
            }]),
        );
        assert!(d.errors.is_empty(), "{:?}", paths(&d));
        // No repository at all.
        let mut d = Diagnostics::default();
        check_config(
            &mut d,
            &config(vec![RetentionState {
                repositories: Value::Value(Vec::new()),
                ..good
            }]),
        );
        assert_eq!(
            paths(&d),
            ["garbage_collection[0].retention[0].repositories"]
        );
    }

    #[test]
    fn storage_and_tls_rules() {
        let mut d = Diagnostics::default();
        check_storage(
            &mut d,
            &StorageState {
                backend: "volume".to_string().into(),
                ..Default::default()
            },
        );
        assert_eq!(paths(&d).len(), 1);
        let mut d = Diagnostics::default();
        check_storage(
            &mut d,
            &StorageState {
                backend: "droplet".to_string().into(),
                bucket: "abc".to_string().into(),
                size_gib: 5.into(),
                ..Default::default()
            },
        );
        assert_eq!(paths(&d).len(), 2, "{:?}", paths(&d));
        let mut d = Diagnostics::default();
        check_tls(
            &mut d,
            &TlsState {
                source: "provided".to_string().into(),
                ..Default::default()
            },
        );
        assert_eq!(paths(&d).len(), 2, "{:?}", paths(&d));
        let mut d = Diagnostics::default();
        check_tls(
            &mut d,
            &TlsState {
                source: "letsencrypt".to_string().into(),
                challenge: "tls-alpn-01".to_string().into(),
                ..Default::default()
            },
        );
        assert_eq!(paths(&d).len(), 2, "{:?}", paths(&d));
    }
}
