//! A string that must never be printed (passwords, private keys, tokens), and redaction of
//! what reaches a log anyway: secret fields found by what they are, not by an exact name.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext. Call it only where the value leaves for its one place (an HTTP header,
    /// a hash function, the state file); never to format a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// What a redacted value reads as.
pub const REDACTED: &str = "***";

/// True when a field named `name` holds a secret, judged by what the name says it is: any
/// token, secret, password, credential, authorization, cookie, user data or private part, and
/// any key but a public one (`public_key`, a fingerprint, a key type). Case, `-` and `_` do
/// not matter, so `userData`, `user-data` and `X-Auth-Token` are found too.
pub fn is_secret_name(name: &str) -> bool {
    let n = normalized(name);
    names_a_secret(&n) || names_a_key(&n)
}

fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Names that say the value is secret, whatever its shape.
fn names_a_secret(n: &str) -> bool {
    const MARKERS: &[&str] = &[
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "credential",
        "authorization",
        "cookie",
        "userdata",
        "private",
        "signature",
        "htpasswd",
        "bcrypt",
    ];
    // `auth` as in docker's `auths`/`auth` (base64 of user:password), not as in `author`.
    MARKERS.iter().any(|m| n.contains(m)) || (n.contains("auth") && !n.contains("author"))
}

/// A key that is not said to be public. As a container (`keys: [...]`, `ssh_keys`) it is a
/// list of keys, searched rather than hidden whole.
fn names_a_key(n: &str) -> bool {
    n.contains("key")
        && !["public", "fingerprint", "keytype"]
            .iter()
            .any(|m| n.contains(m))
}

/// Replaces, at any depth, the value of every field [`is_secret_name`] names, and scrubs
/// every other string with [`scrub`] (a private key pasted into a `description` is found by
/// its markers).
pub fn redact_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let n = normalized(k);
                let container = v.is_object() || v.is_array();
                if !v.is_null() && (names_a_secret(&n) || names_a_key(&n) && !container) {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::String(s) => {
            // JSON inside a string (a docker config, a body kept as text) by its keys too.
            let t = s.trim_start();
            if t.starts_with('{') || t.starts_with('[') {
                if let Ok(mut inner) = serde_json::from_str::<Value>(s) {
                    if inner.is_object() || inner.is_array() {
                        redact_json(&mut inner);
                        *s = inner.to_string();
                        return;
                    }
                }
            }
            if let Cow::Owned(clean) = scrub(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// `Debug` for a serializable type that may hold secrets: `name {json}`, with the value of
/// every field `sensitive` names (at any depth) or [`redact_json`] finds shown as `***`.
pub fn fmt_redacted<T: serde::Serialize>(
    name: &str,
    value: &T,
    sensitive: &dyn Fn(&str) -> bool,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let Ok(mut json) = serde_json::to_value(value) else {
        return write!(f, "{name} {{ .. }}");
    };
    redact_named(&mut json, sensitive);
    redact_json(&mut json);
    write!(f, "{name} {json}")
}

fn redact_named(value: &mut serde_json::Value, sensitive: &dyn Fn(&str) -> bool) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if sensitive(k) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact_named(v, sensitive);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_named(v, sensitive)),
        _ => {}
    }
}

/// Where the first word of `text` that names a secret starts ([`is_secret_name`]): text that
/// is not valid JSON may still hold `"password": "..."`, so everything from there is unsafe.
pub fn first_secret_word(text: &str) -> Option<usize> {
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        let in_word = c.is_ascii_alphanumeric() || c == '_' || c == '-';
        match (in_word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if is_secret_name(&text[s..i]) {
                    return Some(s);
                }
                start = None;
            }
            _ => {}
        }
    }
    None
}

/// `text` with every secret found by its shape replaced: PEM private key blocks (up to their
/// END line, or to the end when it is cut off), `Bearer`/`Basic` credentials, JWTs, and
/// DigitalOcean tokens. Borrowed when there was nothing to replace.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for f in [scrub_pem, scrub_auth_schemes, scrub_words] {
        if let Cow::Owned(s) = f(&out) {
            out = Cow::Owned(s);
        }
    }
    out
}

/// `-----BEGIN ... PRIVATE KEY-----` through its `-----END ...-----` line.
fn scrub_pem(text: &str) -> Cow<'_, str> {
    const BEGIN: &str = "-----BEGIN ";
    let mut out = String::new();
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find(BEGIN) {
        let after = &rest[at + BEGIN.len()..];
        let label_end = after.find("-----").unwrap_or(after.len());
        if !after[..label_end].contains("PRIVATE KEY") {
            out.push_str(&rest[..at + BEGIN.len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..at]);
        out.push_str("[redacted private key]");
        changed = true;
        rest = match after.find("-----END ") {
            Some(end) => {
                let tail = &after[end + "-----END ".len()..];
                match tail.find("-----") {
                    Some(close) => &tail[close + "-----".len()..],
                    None => "",
                }
            }
            None => "",
        };
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The credential after `Bearer` or `Basic` (any case), as in an Authorization header.
fn scrub_auth_schemes(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for scheme in ["bearer ", "basic "] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(scheme) {
            let start = from + i + scheme.len();
            let start = start + text[start..].len() - text[start..].trim_start().len();
            let len = text[start..]
                .find(|c: char| c.is_whitespace() || "\"',;)}]".contains(c))
                .unwrap_or(text.len() - start);
            // `Bearer realm="..."` is a challenge, not a credential; base64 may end in `=`.
            let word = &text[start..start + len];
            let parameter =
                word.trim_end_matches('=').contains('=') || text[start + len..].starts_with('"');
            if !word.trim_end_matches('=').is_empty() && !parameter {
                cuts.push((start, start + len));
            }
            from = start.max(from + i + 1);
        }
    }
    replace_spans(text, cuts)
}

/// Whole words that are secrets by their shape: JWTs (`eyJ...`, three base64url parts) and
/// DigitalOcean tokens (`dop_v1_...`, `doo_v1_...`, `dor_v1_...`).
fn scrub_words(text: &str) -> Cow<'_, str> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    let mut cuts = Vec::new();
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        if !is_word(bytes[i] as char) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word(bytes[i] as char) {
            i += 1;
        }
        let word = &text[start..i];
        let jwt = word.starts_with("eyJ")
            && word.split('.').count() == 3
            && word.split('.').all(|p| p.len() >= 2);
        let do_token = ["dop_v1_", "doo_v1_", "dor_v1_"]
            .iter()
            .any(|p| word.starts_with(p) && word.len() > p.len() + 16);
        if jwt || do_token {
            cuts.push((start, i));
        }
    }
    replace_spans(text, cuts)
}

fn replace_spans(text: &str, mut cuts: Vec<(usize, usize)>) -> Cow<'_, str> {
    if cuts.is_empty() {
        return Cow::Borrowed(text);
    }
    cuts.sort();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in cuts {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(s.expose(), "hunter2-hunter2");
    }

    /// Every type that holds a secret, formatted with `{:?}` with its secrets set to canaries:
    /// none of them may show. The state's secrets are the schema's sensitive attributes.
    #[test]
    fn no_type_holding_a_secret_prints_it() {
        use crate::resource::schema;
        use crate::resource::state::{RegistryState, StorageState, TimeoutsState, TlsState};
        use tf_provider::schema::AttributeType;

        let canaries = std::cell::RefCell::new(Vec::new());
        let canary = |what: &str| {
            let c = format!("CANARY-{}-{what}", canaries.borrow().len());
            canaries.borrow_mut().push(c.clone());
            serde_json::Value::String(c)
        };
        // The state with every sensitive attribute set, nested ones too, found from the schema.
        let schema = schema::schema();
        let mut st = serde_json::to_value(RegistryState::default()).unwrap();
        for (name, attr) in &schema.block.attributes {
            if attr.sensitive {
                st[name] = match &attr.attr_type {
                    // A map of secrets by user name (`bcrypt_hashes`, `generated_passwords`...).
                    AttributeType::Map(_) => serde_json::json!({ "admin": canary(name) }),
                    _ => canary(name),
                };
            }
            if let AttributeType::AttributeMap(nested) = &attr.attr_type {
                let mut one = serde_json::Map::new();
                for (n, a) in nested {
                    one.insert(
                        n.clone(),
                        if a.sensitive {
                            canary(n)
                        } else {
                            serde_json::Value::Null
                        },
                    );
                }
                st[name] = serde_json::json!({ "admin": one });
            }
        }
        for (name, block) in &schema.block.blocks {
            let tf_provider::schema::NestedBlock::Optional(b) = block else {
                panic!("block {name} is not optional");
            };
            let mut one = serde_json::Map::new();
            for (n, a) in &b.attributes {
                one.insert(
                    n.clone(),
                    if a.sensitive {
                        canary(n)
                    } else {
                        serde_json::Value::Null
                    },
                );
            }
            st[name] = serde_json::json!([one]);
        }
        // Secrets a non-sensitive attribute must not hold, caught by their shape anyway.
        st["ca_certificate_pem"] = serde_json::json!(format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----",
            canary("pasted-key").as_str().unwrap()
        ));
        let st: RegistryState = serde_json::from_value(st).unwrap();
        let model = crate::resource::model::Model::of(&st);
        let user = st.users.as_ref_option().unwrap()["admin"].clone();
        let tls: TlsState = st.tls.as_ref_option().unwrap().clone();
        let storage: StorageState = st.storage.as_ref_option().cloned().unwrap_or_default();
        let timeouts: TimeoutsState = st.timeouts.as_ref_option().cloned().unwrap_or_default();

        let settings = crate::config::Settings {
            token: Secret::new(canary("token").as_str().unwrap()),
            api_endpoint: url::Url::parse("https://api.example").unwrap(),
            spaces_access_id: Some(Secret::new(canary("access-id").as_str().unwrap())),
            spaces_secret_key: Some(Secret::new(canary("spaces-secret").as_str().unwrap())),
            spaces_endpoint: String::new(),
            http_retry_max: 1,
            requests_per_second: 0,
            acme_directory_url: url::Url::parse("https://acme.example/dir").unwrap(),
            acme_ca_certificates: None,
            acme_dns_servers: Vec::new(),
            terraform_version: String::new(),
        };
        let droplet = crate::do_api::DropletCreateRequest {
            name: "r".into(),
            region: "nyc3".into(),
            size: "s".into(),
            image: crate::do_api::ImageRef::Slug("debian-12-x64".into()),
            ssh_keys: Vec::new(),
            user_data: Some(Secret::new(canary("user-data").as_str().unwrap())),
            tags: Vec::new(),
            volumes: Vec::new(),
            ipv6: false,
            monitoring: false,
            vpc_uuid: None,
            backups: false,
            backup_policy: None,
        };
        let spaces_key: crate::do_api::SpacesKeyCreated =
            serde_json::from_value(serde_json::json!({
                "name": "k", "access_key": "DOACCESS", "secret_key": canary("spaces-key-secret"),
                "grants": [], "created_at": "2026-01-01T00:00:00Z"
            }))
            .unwrap();
        let key = crate::remote::generate_ed25519("t").unwrap();
        canaries.borrow_mut().push(
            key.private_openssh
                .expose()
                .lines()
                .nth(1)
                .unwrap()
                .to_owned(),
        );
        let machine = crate::remote::Machine::pinned(
            "198.18.0.2",
            key.private_openssh.clone(),
            &key.public_openssh,
        );
        let tls_material = crate::remote::TlsMaterial {
            cert_chain_pem: String::new(),
            private_key_pem: Secret::new(canary("tls-material").as_str().unwrap()),
        };

        let mut spec = crate::render::RegistrySpec::new(
            "r.example",
            crate::render::Storage::Droplet,
            Secret::new(canary("spec-http-secret").as_str().unwrap()),
        );
        spec.users.push(crate::render::User {
            name: "admin".into(),
            bcrypt_hash: canary("spec-bcrypt").as_str().unwrap().to_owned(),
            access: crate::render::Access::Push,
        });

        let printed = [
            format!("{spec:?}"),
            format!("{st:?}"),
            format!("{model:?}"),
            format!("{user:?}"),
            format!("{tls:?} {storage:?} {timeouts:?}"),
            format!("{settings:?}"),
            format!("{droplet:?}"),
            format!("{spaces_key:?}"),
            format!("{key:?} {machine:?} {tls_material:?}"),
        ]
        .join("\n");
        let canaries = canaries.into_inner();
        assert!(printed.contains("RegistryState {"), "{printed}");
        assert!(canaries.len() > 15, "{canaries:?}");
        for c in &canaries {
            assert!(!printed.contains(c.as_str()), "{c} printed:\n{printed}");
        }
    }

    #[test]
    fn secret_names_are_found_by_what_they_say() {
        for name in [
            "token",
            "access_token",
            "X-Auth-Token",
            "Authorization",
            "secret_key",
            "spaces_secret_key",
            "http_secret",
            "password",
            "new_password",
            "password_bcrypt",
            "user_data",
            "userData",
            "user-data",
            "private_key_pem",
            "host_private_key",
            "acme_account_key",
            "access_key",
            "key",
            "Cookie",
            "htpasswd",
        ] {
            assert!(is_secret_name(name), "{name} not taken for a secret");
        }
        for name in [
            "name",
            "public_key",
            "management_public_key",
            "fingerprint",
            "host_key_fingerprint",
            "key_type",
            "region",
            "ip_address",
            "monitoring",
        ] {
            assert!(!is_secret_name(name), "{name} taken for a secret");
        }
    }

    #[test]
    fn json_is_redacted_by_key_and_by_shape() {
        let mut v = serde_json::json!({
            "droplet": {"name": "n", "userData": "#cloud-config", "tags": ["a"]},
            "keys": [{"Secret-Key": "s3", "public_key": "ssh-ed25519 AAAA", "sig": null}],
            "note": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n",
            "header": "Bearer abc.def-ghi",
        });
        redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "droplet": {"name": "n", "userData": "***", "tags": ["a"]},
                "keys": [{"Secret-Key": "***", "public_key": "ssh-ed25519 AAAA", "sig": null}],
                "note": "[redacted private key]\n",
                "header": "Bearer ***",
            })
        );
    }

    #[test]
    fn text_is_scrubbed_by_shape() {
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\n-----END OPENSSH PRIVATE KEY-----";
        let cases = [
            (format!("key {pem} done"), "key [redacted private key] done"),
            // Cut off before its END line: everything after BEGIN goes.
            (
                "x -----BEGIN PRIVATE KEY-----\nMIIE".to_owned(),
                "x [redacted private key]",
            ),
            (
                "authorization: Bearer dop_v1_0123456789abcdef0123456789".to_owned(),
                "authorization: Bearer ***",
            ),
            (
                "Authorization: Basic YWRtaW46cHc=".to_owned(),
                "Authorization: Basic ***",
            ),
            (
                "token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln, then".to_owned(),
                "token ***, then",
            ),
            (
                "t=dop_v1_0123456789abcdef0123456789abcdef".to_owned(),
                "t=***",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(scrub(&input), want, "{input}");
        }
        // Public material and challenges stay readable.
        for keep in [
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "www-authenticate: Bearer realm=\"https://r.example/token\",service=\"r\"",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKWb root@registry",
            "the registry (3000012) at 198.18.0.2",
        ] {
            assert!(
                matches!(scrub(keep), Cow::Borrowed(_)),
                "{keep} changed to {}",
                scrub(keep)
            );
        }
    }
}
