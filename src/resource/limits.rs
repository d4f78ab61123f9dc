//! Inputs that DigitalOcean would refuse or bcrypt would silently cut, each refused at plan time
//! on its attribute: a name that makes a bad volume name, tags, SSH key fingerprints (their
//! shape here, their existence in the account with the API), no SSH source.

use tf_provider::{AttributePath, Diagnostics};

use super::env::Env;
use super::model::Backend;
use super::state::{known, RegistryState};
use crate::diag;
use crate::storage::volume;

/// DigitalOcean's tags: letters, digits, `:`, `-`, `_`, at most 255 characters (the spec's
/// `tags.name` pattern).
pub const MAX_TAG_LEN: usize = 255;
/// The volume is named `<name>-registry-data`, and volume names hold at most 64 characters.
pub const MAX_NAME_WITH_VOLUME: usize = 64 - VOLUME_SUFFIX.len();
const VOLUME_SUFFIX: &str = "-registry-data";

/// Every check of this module that needs no API.
pub fn check(diags: &mut Diagnostics, c: &RegistryState) {
    check_volume_name(diags, c);
    check_tags(diags, c);
    check_fingerprints(diags, c);
    check_ssh_sources(diags, c);
    // Passwords over bcrypt's 72 bytes: validate.rs, with the other password rules.
}

/// DigitalOcean's volume names (the spec's `volume_base.name`): lowercase letters, digits and
/// `-`, starting with a letter, at most 64 characters. The registry's name is the volume's
/// prefix, so it must start with a letter and leave room for the suffix.
fn check_volume_name(diags: &mut Diagnostics, c: &RegistryState) {
    let backend = c
        .storage
        .as_ref_option()
        .map(|s| Backend::of(&s.backend))
        .unwrap_or_default();
    let Some(name) = known(&c.name) else { return };
    if backend != Backend::Volume || !super::validate::is_dns_label(name) {
        // Not a volume, or already reported as a bad name.
        return;
    }
    let volume = format!("{name}{VOLUME_SUFFIX}");
    if let Some(problem) = volume::volume_name_problem(&volume) {
        diags.error(
            "Invalid `name` for a volume",
            format!("With `storage.backend = \"volume\"` the volume is named {volume:?}, which DigitalOcean refuses: {problem}. Use a `name` that starts with a letter and has at most {MAX_NAME_WITH_VOLUME} characters."),
            AttributePath::new("name"),
        );
    }
}

/// What is wrong with a tag under DigitalOcean's rules, if anything.
pub fn tag_problem(tag: &str) -> Option<String> {
    if tag.is_empty() || tag.len() > MAX_TAG_LEN {
        return Some(format!(
            "it has {} characters; use 1 to {MAX_TAG_LEN}",
            tag.len()
        ));
    }
    tag.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_')))
        .map(|c| format!("it holds {c:?}; tags hold only letters, digits, `:`, `-` and `_`"))
}

fn check_tags(diags: &mut Diagnostics, c: &RegistryState) {
    let Some(tags) = c.tags.as_ref_option() else {
        return;
    };
    for (i, tag) in tags.iter().enumerate() {
        let Some(tag) = tag.as_ref_option() else {
            continue;
        };
        if let Some(problem) = tag_problem(tag) {
            diags.error(
                "Invalid tag",
                format!("{tag:?} is not a DigitalOcean tag: {problem}."),
                AttributePath::new("tags").index(i as i64),
            );
        }
    }
}

/// DigitalOcean names an account's SSH key by its MD5 fingerprint: 16 lowercase hex pairs
/// separated by `:`.
pub fn is_md5_fingerprint(fp: &str) -> bool {
    let parts: Vec<&str> = fp.split(':').collect();
    parts.len() == 16
        && parts.iter().all(|p| {
            p.len() == 2
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn fingerprints(c: &RegistryState) -> Vec<(usize, String)> {
    c.ssh_key_fingerprints
        .as_ref_option()
        .map(|l| {
            l.iter()
                .enumerate()
                .filter_map(|(i, f)| f.as_ref_option().map(|f| (i, f.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn fingerprint_path(i: usize) -> AttributePath {
    AttributePath::new("ssh_key_fingerprints").index(i as i64)
}

fn check_fingerprints(diags: &mut Diagnostics, c: &RegistryState) {
    for (i, fp) in fingerprints(c) {
        if !is_md5_fingerprint(&fp) {
            diags.error(
                "Invalid SSH key fingerprint",
                format!("{fp:?} is not a DigitalOcean SSH key fingerprint: DigitalOcean names keys by their MD5 fingerprint, 16 pairs of lowercase hex digits separated by `:` (as its control panel shows it, or `ssh-keygen -l -E md5 -f key.pub` without the `MD5:` prefix)."),
                fingerprint_path(i),
            );
        }
    }
}

/// Each well-formed fingerprint must name a key of the account (DigitalOcean refuses a droplet
/// with an unknown one, and the provider looks each up to write it on a running droplet).
pub async fn check_fingerprints_exist(diags: &mut Diagnostics, env: &Env, c: &RegistryState) {
    for (i, fp) in fingerprints(c) {
        if !is_md5_fingerprint(&fp) {
            continue;
        }
        match env.client.get_ssh_key(&fp).await {
            Ok(Some(_)) => {}
            Ok(None) => diags.error(
                "Unknown SSH key",
                format!("No SSH key with fingerprint {fp} in this DigitalOcean account: add the key to the account (Settings, Security) or remove the fingerprint."),
                fingerprint_path(i),
            ),
            Err(e) => diag::error(
                diags,
                "Cannot check `ssh_key_fingerprints`",
                &super::Error::from(e).at(fingerprint_path(i)),
            ),
        }
    }
}

/// An empty list would close port 22 to everyone, the provider included: every apply
/// converges the droplet over SSH, and destroy measures a volume over SSH.
fn check_ssh_sources(diags: &mut Diagnostics, c: &RegistryState) {
    if c.ssh_allowed_cidrs
        .as_ref_option()
        .is_some_and(|l| l.is_empty())
    {
        diags.error(
            "Empty `ssh_allowed_cidrs`",
            "An empty list closes port 22 to everyone, this provider included: it configures the droplet over SSH on every apply and measures stored images over SSH before a destroy, so the registry could no longer be changed or safely destroyed. List the networks that may reach SSH, including the address Terraform runs from, or leave the argument out (anywhere; only the provider's own key and the keys of `ssh_key_fingerprints` can log in).",
            AttributePath::new("ssh_allowed_cidrs"),
        );
    }
}

#[cfg(test)]
mod tests {

    use tf_provider::value::Value;

    use super::*;
    use crate::resource::state::StorageState;

    fn s(v: &str) -> Value<String> {
        Value::Value(v.to_owned())
    }

    fn base() -> RegistryState {
        RegistryState {
            name: s("registry"),
            region: s("nyc3"),
            fqdn: s("registry.example.com"),
            ..Default::default()
        }
    }

    /// The attributes of the errors the plan's own check (`plan::check_config`) reports.
    fn plan_errors(c: &RegistryState) -> Vec<(String, String)> {
        let mut d = Diagnostics::default();
        crate::resource::plan::check_config(&mut d, c);
        d.errors
            .iter()
            .map(|e| (e.attribute.to_string(), e.detail.to_string()))
            .collect()
    }

    fn volume(mut c: RegistryState) -> RegistryState {
        c.storage = Value::Value(StorageState {
            backend: s("volume"),
            size_gib: Value::Value(1),
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_name_that_makes_a_bad_volume_name_fails_the_plan_on_name() {
        assert!(plan_errors(&volume(base())).is_empty());
        let fifty = "r".repeat(MAX_NAME_WITH_VOLUME);
        assert_eq!(MAX_NAME_WITH_VOLUME, 50);
        let mut c = volume(base());
        c.name = s(&fifty);
        assert!(plan_errors(&c).is_empty(), "{:?}", plan_errors(&c));
        for bad in [format!("{fifty}x"), "1registry".to_owned()] {
            let mut c = volume(base());
            c.name = s(&bad);
            let errs = plan_errors(&c);
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert_eq!(errs[0].0, "name", "{errs:?}");
            assert!(errs[0].1.contains("-registry-data"), "{errs:?}");
        }
        // Without a volume the same names are fine droplet names.
        let mut c = base();
        c.name = s("1registry");
        assert!(plan_errors(&c).is_empty());
    }

    #[test]
    fn tags_follow_digitaloceans_rules() {
        let mut c = base();
        c.tags = Value::Value(vec![
            s("team:a"),
            s("bad tag"),
            s(""),
            s(&"t".repeat(256)),
            s("ok_2-x"),
        ]);
        let errs = plan_errors(&c);
        let paths: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(paths, ["tags[1]", "tags[2]", "tags[3]"], "{errs:?}");
        assert!(errs[0].1.contains("' '"), "{errs:?}");
    }

    #[test]
    fn fingerprints_must_have_digitaloceans_shape() {
        let good = "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa";
        assert!(is_md5_fingerprint(good));
        let mut c = base();
        c.ssh_key_fingerprints = Value::Value(vec![
            s(good),
            s("aa:bb:cc"),
            s("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"),
            s(&good.to_uppercase()),
        ]);
        let errs = plan_errors(&c);
        let paths: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "ssh_key_fingerprints[1]",
                "ssh_key_fingerprints[2]",
                "ssh_key_fingerprints[3]"
            ]
        );
        assert!(errs[0].1.contains("MD5"), "{errs:?}");
    }

    #[test]
    fn no_ssh_source_at_all_is_refused_with_the_reason() {
        let mut c = base();
        c.ssh_allowed_cidrs = Value::Value(vec![]);
        let errs = plan_errors(&c);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "ssh_allowed_cidrs");
        assert!(errs[0].1.contains("this provider included"), "{errs:?}");
        c.ssh_allowed_cidrs = Value::Value(vec![s("203.0.113.0/24")]);
        assert!(plan_errors(&c).is_empty());
    }
}
