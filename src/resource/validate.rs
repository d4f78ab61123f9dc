//! Plan-time checks that need no API: each bad value gets its own diagnostic on its own
//! attribute. Unknown values (computed elsewhere in the config) are checked at apply.

use std::time::Duration;

use tf_provider::{AttributePath, Diagnostics};

use super::state::{known, RegistryState, StorageState, TlsState, UserState};

pub const MIN_PASSWORD_LEN: usize = 12;
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
    match (has_pw, has_hash) {
        (true, true) => err(
            diags,
            path.clone(),
            "Conflicting passwords",
            format!("User {name:?} sets both `password` and `password_bcrypt`; set exactly one."),
        ),
        (false, false) => err(
            diags,
            path.clone(),
            "Missing password",
            format!("User {name:?} needs `password` or `password_bcrypt`."),
        ),
        _ => {}
    }
    if let Some(pw) = user.password.as_ref_option() {
        if pw.chars().count() < MIN_PASSWORD_LEN {
            err(
                diags,
                path.clone().attribute("password"),
                "Password too short",
                format!("The password of user {name:?} has {} characters; use {MIN_PASSWORD_LEN} or more.", pw.chars().count()),
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
        if access != "push" && access != "pull" {
            err(
                diags,
                path.attribute("access"),
                "Invalid `access`",
                format!("User {name:?} has access {access:?}; use \"push\" or \"pull\"."),
            );
        }
    }
}

pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (ip, len) = s.split_once('/').ok_or("no `/prefix`")?;
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix /{len} is longer than /{max}"));
    }
    Ok((ip, len))
}

/// Parses a Go-style duration: `90s`, `20m`, `1h30m`, `1.5h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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
            unit.push(chars.next().unwrap());
        }
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (use h, m, s)")),
        };
        seen = true;
    }
    if !num.is_empty() || !seen {
        return Err(format!("{s:?} is not a duration like \"20m\" or \"1h30m\""));
    }
    Ok(Duration::from_secs_f64(total))
}

pub fn check_tls(diags: &mut Diagnostics, tls: &TlsState) {
    let p = || AttributePath::new("tls").index(0);
    let one_of =
        |diags: &mut Diagnostics, attr: &'static str, v: &super::state::S, allowed: &[&str]| {
            if let Some(v) = v.as_ref_option() {
                if !allowed.contains(&v.as_str()) {
                    err(
                        diags,
                        p().attribute(attr),
                        &format!("Invalid `tls.{attr}`"),
                        format!(
                            "{v:?} is not one of {}.",
                            allowed
                                .iter()
                                .map(|a| format!("\"{a}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
        };
    one_of(
        diags,
        "source",
        &tls.source,
        &["acme", "self_signed", "provided"],
    );
    one_of(diags, "challenge", &tls.challenge, &["dns-01", "http-01"]);
    one_of(
        diags,
        "key_type",
        &tls.key_type,
        &["ecdsa-p256", "rsa-2048", "rsa-4096"],
    );
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
    let source = tls
        .source
        .as_ref_option()
        .map(String::as_str)
        .unwrap_or("acme");
    let provided = source == "provided";
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
                format!("`{attr}` is only for `source = \"provided\"` (source is {source:?})."),
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

pub fn bucket_problem(b: &str) -> Option<String> {
    if !(3..=63).contains(&b.len()) {
        return Some(format!("it has {} characters; use 3 to 63", b.len()));
    }
    if !b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Some("use only lowercase letters, digits and `-` (Spaces rules)".into());
    }
    if !b.as_bytes()[0].is_ascii_alphanumeric()
        || !b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
    {
        return Some("it must start and end with a letter or digit".into());
    }
    None
}

pub fn check_storage(diags: &mut Diagnostics, st: &StorageState) {
    let p = || AttributePath::new("storage").index(0);
    let backend = st
        .backend
        .as_ref_option()
        .map(String::as_str)
        .unwrap_or("droplet");
    if !st.backend.is_unknown() && !["droplet", "volume", "spaces"].contains(&backend) {
        err(
            diags,
            p().attribute("backend"),
            "Invalid `storage.backend`",
            format!("{backend:?} is not one of \"droplet\", \"volume\", \"spaces\"."),
        );
        return;
    }
    match (backend, st.size_gib.as_ref_option()) {
        ("volume", None) if st.size_gib.is_null() => err(
            diags,
            p().attribute("size_gib"),
            "Missing `storage.size_gib`",
            "`backend = \"volume\"` needs `size_gib`.".into(),
        ),
        ("volume", Some(n)) if !(1..=16384).contains(n) => err(
            diags,
            p().attribute("size_gib"),
            "Invalid `storage.size_gib`",
            format!("{n} GiB is outside DigitalOcean's volume sizes, 1 to 16384 GiB."),
        ),
        (b, Some(_)) if b != "volume" => err(
            diags,
            p().attribute("size_gib"),
            "Unexpected `storage.size_gib`",
            format!("`size_gib` is only for `backend = \"volume\"` (backend is {b:?})."),
        ),
        _ => {}
    }
    match (backend, st.bucket.as_ref_option()) {
        ("spaces", None) if st.bucket.is_null() => err(
            diags,
            p().attribute("bucket"),
            "Missing `storage.bucket`",
            "`backend = \"spaces\"` needs `bucket`.".into(),
        ),
        ("spaces", Some(b)) => {
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
            format!("`bucket` is only for `backend = \"spaces\"` (backend is {b:?})."),
        ),
        _ => {}
    }
}

/// Every check that needs no API.
pub fn check_config(diags: &mut Diagnostics, c: &RegistryState) {
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
    if let Some(st) = c.storage.as_ref_option() {
        check_storage(diags, st);
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
                        e,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_provider::value::Value;

    fn paths(d: &Diagnostics) -> Vec<String> {
        d.errors.iter().map(|e| e.attribute.to_string()).collect()
    }

    fn user(pw: Option<&str>, hash: Option<&str>, access: Option<&str>) -> UserState {
        UserState {
            password: pw.map(str::to_owned).into(),
            password_bcrypt: hash.map(str::to_owned).into(),
            access: access.map(str::to_owned).into(),
            bcrypt_hash: Value::Null,
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
            ("neither", user(None, None, None), "users[\"neither\"]"),
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
        assert!(bucket_problem("acme-registry").is_none());
        for bad in ["ab", "Acme", "acme_registry", "-acme", "acme.registry"] {
            assert!(bucket_problem(bad).is_some(), "{bad}");
        }
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
