//! Retention as the resource runs it: the preview (the registry listed over HTTPS with the
//! provider's own token, the rules evaluated by `crate::retention`), its place in the plan,
//! and the apply that deletes exactly what the plan showed, each tag only while it still
//! points at the previewed digest.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use super::desired::{s, secret_of};
use super::env::Env;
use super::error::{Error, Result};
use super::model::Model;
use super::network::record_target;
use super::state::{known, RegistryState};
use crate::diag;
use crate::remote::registry_api::{ConfigRef, RegistryTarget};
use crate::retention::{self, Repository, Selection, Tag};

/// `garbage_collection[0].<attr>`
pub fn gc_attr(attr: &'static str) -> AttributePath {
    AttributePath::new("garbage_collection")
        .index(0)
        .attribute(attr)
}

/// A selection as state holds it.
pub fn to_state(sel: &Selection) -> Value<BTreeMap<String, super::state::S>> {
    Value::Value(sel.iter().map(|(k, v)| (k.clone(), s(v))).collect())
}

/// The known entries of a selection in state.
pub fn from_state(v: &Value<BTreeMap<String, super::state::S>>) -> Selection {
    v.as_ref_option()
        .into_iter()
        .flatten()
        .filter_map(|(k, d)| Some((k.clone(), d.as_ref_option()?.clone())))
        .collect()
}

/// The registry of `st`, reached where its record points, trusting only its certificate.
pub fn target_of(st: &RegistryState, m: &Model) -> Result<RegistryTarget> {
    let addr = record_target(st)
        .or_else(|| known(&st.ipv4_address))
        .ok_or(Error::MissingState("droplet address"))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| Error::BadAddress(addr.to_owned()))?;
    let leaf = crate::tls::leaf_info(
        known(&st.certificate_pem).ok_or(Error::MissingState("certificate"))?,
    )?;
    let secret = secret_of(&st.http_secret).ok_or(Error::MissingState("http secret"))?;
    let key = crate::render::token_key(&secret)?;
    Ok(RegistryTarget {
        fqdn: m.fqdn.clone(),
        ip,
        certificate_der: leaf.der,
        renewed_by: super::certificate::renewal_issuer(st, m),
        token_key_pem: key.private_key_pem,
        kid: key.kid,
    })
}

/// The registry's repositories some rule applies to, with their tags dated.
async fn list(env: &Env, t: &RegistryTarget, rules: &[retention::Rule]) -> Result<Vec<Repository>> {
    let api = &env.registry;
    let mut out = Vec::new();
    for name in api.catalog(t).await? {
        if !rules.iter().any(|r| r.applies_to(&name)) {
            continue;
        }
        let mut dated: BTreeMap<ConfigRef, Option<time::OffsetDateTime>> = BTreeMap::new();
        let mut tags = Vec::new();
        for r in api.tags(t, &name).await? {
            let created = match &r.config {
                Some(c) => match dated.get(c) {
                    Some(d) => *d,
                    None => {
                        let d = api.created(t, &name, c).await?;
                        dated.insert(c.clone(), d);
                        d
                    }
                },
                None => None,
            };
            tags.push(Tag {
                name: r.tag,
                digest: r.digest,
                created,
                children: r.children,
            });
        }
        out.push(Repository { name, tags });
    }
    Ok(out)
}

/// What the rules of `m` select in the registry of `st` now.
pub async fn preview(env: &Env, st: &RegistryState, m: &Model) -> Result<Selection> {
    let rules = m.retention_rules();
    let t = target_of(st, m)?;
    let repos = list(env, &t, rules).await?;
    Ok(retention::evaluate(
        rules,
        &repos,
        time::OffsetDateTime::now_utc(),
    ))
}

/// `retention_preview` from the registry, for read (and create, or a plan that changed the
/// rules): null without rules; a registry that cannot be listed is a warning and leaves it
/// null, so that no apply deletes from a preview nobody saw.
pub async fn refresh(env: &Env, diags: &mut Diagnostics, st: &mut RegistryState, m: &Model) {
    if m.retention_rules().is_empty() {
        st.retention_preview = Value::Null;
        return;
    }
    match preview(env, st, m).await {
        Ok(sel) => st.retention_preview = to_state(&sel),
        Err(e) => {
            st.retention_preview = Value::Null;
            diag::warning(
                diags,
                "Cannot preview the retention rules",
                &e.during("listing the registry's tags; `retention_preview` is null and no apply deletes anything until it can be read"),
            );
        }
    }
}

/// The plan's part (no network): what the preview becomes and what the apply deletes.
/// - rules changed: the preview is evaluated again (unknown here, filled by
///   [`preview_changed_rules`]), and a `run` in the same plan is refused: new rules are
///   previewed before they delete anything;
/// - `run` changed: the preview's entries are what the apply deletes (returned, for the
///   private state); the plan shows each leaving `retention_preview`, and what is deleted
///   shows in `retention_deleted` after the apply.
pub fn plan(
    diags: &mut Diagnostics,
    prior: &RegistryState,
    st: &mut RegistryState,
    collection_asked: bool,
) -> Selection {
    let (was, now) = (Model::of(prior), Model::of(st));
    let rules = now.retention_rules();
    if rules.is_empty() {
        st.retention_preview = Value::Null;
        return Selection::new();
    }
    if rules != was.retention_rules() {
        if collection_asked {
            diags.error(
                "Retention rules changed in the plan that runs them",
                "This plan changes the `retention` rules and `garbage_collection.run` together. Rules are previewed before they delete anything: apply the rules first (`retention_preview` then shows what they select), then change `run` in a later plan, which shows each tag it deletes.",
                gc_attr("run"),
            );
        }
        st.retention_preview = Value::Unknown;
        return Selection::new();
    }
    if !collection_asked {
        st.retention_preview = prior.retention_preview.clone();
        return Selection::new();
    }
    if prior.retention_preview.is_null() {
        diags.error(
            "No retention preview to apply",
            "The retention rules' preview could not be read from the registry (see the warning when it was refreshed), and nothing is deleted without one. Once `retention_preview` reads again, plan again.",
            gc_attr("run"),
        );
        return Selection::new();
    }
    st.retention_preview = Value::Value(BTreeMap::new());
    st.retention_deleted = Value::Unknown;
    from_state(&prior.retention_preview)
}

/// The plan's network part: a changed rule set's preview, evaluated against the registry as it
/// is now. Left unknown (apply evaluates it) when the registry cannot be read.
pub async fn preview_changed_rules(env: &Env, diags: &mut Diagnostics, st: &mut RegistryState) {
    if !st.retention_preview.is_unknown() || st.droplet_id.is_unknown() {
        return;
    }
    let m = Model::of(st);
    match preview(env, st, &m).await {
        Ok(sel) => st.retention_preview = to_state(&sel),
        Err(e) => diag::warning(
            diags,
            "Cannot preview the new retention rules",
            &e.during("listing the registry's tags; the apply reads the preview instead, and deletes nothing"),
        ),
    }
}

/// Apply: deletes the planned `delete` set, repository by repository, each tag only while it
/// still points at its planned digest and nothing kept depends on that digest (a tag pushed
/// since onto the same image, or a kept index naming it). Returns what was deleted; what was
/// skipped is a warning naming each tag and why.
pub async fn delete_planned(
    env: &Env,
    diags: &mut Diagnostics,
    st: &RegistryState,
    m: &Model,
    delete: &Selection,
) -> Result<Selection> {
    let mut deleted = Selection::new();
    if delete.is_empty() {
        return Ok(deleted);
    }
    let t = target_of(st, m)?;
    let mut by_repo: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (k, digest) in delete {
        if let Some((repo, tag)) = retention::split_key(k) {
            by_repo
                .entry(repo)
                .or_default()
                .insert(tag, digest.as_str());
        }
    }
    let mut skipped: Vec<String> = Vec::new();
    for (repo, planned) in by_repo {
        let now = env.registry.tags(&t, repo).await?;
        let (go, why) = deletable(&now, &planned);
        for (tag, reason) in why {
            skipped.push(format!("{repo}:{tag} ({reason})"));
        }
        for (digest, tags) in go {
            env.registry
                .delete_manifest(&t, repo, &digest)
                .await
                .map_err(|e| Error::from(e).at(gc_attr("run")))?;
            tracing::info!(repository = repo, %digest, tags = ?tags, "retention deleted");
            for tag in tags {
                deleted.insert(retention::key(repo, &tag), digest.clone());
            }
        }
    }
    if !skipped.is_empty() {
        diags.warning(
            "Retention skipped tags that changed since the plan",
            format!(
                "These tags were in the plan's preview but are not deleted: {}. The next refresh previews them again.",
                skipped.join(", ")
            ),
            gc_attr("run"),
        );
    }
    Ok(deleted)
}

/// Digest → the tags that go with it.
pub type Deletions = BTreeMap<String, Vec<String>>;
/// (tag, why it stays).
pub type Skipped = Vec<(String, String)>;

/// Of one repository's `planned` deletions (tag → digest), given its tags `now`: the digests
/// to delete with the tags that go with each, and the tags skipped with the reason.
pub fn deletable(
    now: &[crate::remote::registry_api::TagRef],
    planned: &BTreeMap<&str, &str>,
) -> (Deletions, Skipped) {
    let mut skipped = Skipped::new();
    let mut go = Deletions::new();
    for (tag, digest) in planned {
        match now.iter().find(|t| t.tag == *tag) {
            None => skipped.push((tag.to_string(), "gone already".to_owned())),
            Some(t) if t.digest != *digest => {
                skipped.push((tag.to_string(), format!("pushed again: now {}", t.digest)))
            }
            Some(_) => go
                .entry(digest.to_string())
                .or_default()
                .push(tag.to_string()),
        }
    }
    // What stays: every tag not going; its digest and an index's children must survive.
    let going: BTreeSet<&str> = go.values().flatten().map(String::as_str).collect();
    let kept: Vec<&crate::remote::registry_api::TagRef> = now
        .iter()
        .filter(|t| !going.contains(t.tag.as_str()))
        .collect();
    go.retain(|digest, tags| {
        let holder = kept
            .iter()
            .find(|k| k.digest == *digest || k.children.iter().any(|c| c == digest));
        match holder {
            Some(k) => {
                let why = if k.digest == *digest {
                    format!("its image is now also tagged {:?}", k.tag)
                } else {
                    format!("the index {:?} names its image", k.tag)
                };
                skipped.extend(tags.iter().map(|t| (t.clone(), why.clone())));
                false
            }
            None => true,
        }
    });
    (go, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::registry_api::TagRef;

    fn tag(name: &str, digest: &str) -> TagRef {
        TagRef {
            tag: name.into(),
            digest: digest.into(),
            children: Vec::new(),
            config: None,
        }
    }

    #[test]
    fn only_what_still_points_at_the_planned_digest_is_deleted() {
        let now = vec![
            tag("1", "sha256:one"),
            tag("2", "sha256:two-again"),
            tag("3", "sha256:three"),
            tag("alias", "sha256:three"),
            tag("4", "sha256:four"),
            tag("4b", "sha256:four"),
            tag("keep", "sha256:keep"),
        ];
        let planned = BTreeMap::from([
            ("1", "sha256:one"),
            ("2", "sha256:two"),
            ("3", "sha256:three"),
            ("4", "sha256:four"),
            ("4b", "sha256:four"),
            ("gone", "sha256:g"),
        ]);
        let (go, skipped) = deletable(&now, &planned);
        assert_eq!(
            go,
            BTreeMap::from([
                ("sha256:one".to_owned(), vec!["1".to_owned()]),
                (
                    "sha256:four".to_owned(),
                    vec!["4".to_owned(), "4b".to_owned()]
                ),
            ])
        );
        let reasons: BTreeMap<String, String> = skipped.into_iter().collect();
        assert!(reasons["2"].contains("pushed again"), "{reasons:?}");
        assert!(
            reasons["3"].contains("also tagged \"alias\""),
            "{reasons:?}"
        );
        assert!(reasons["gone"].contains("gone"), "{reasons:?}");
        assert_eq!(reasons.len(), 3);
    }

    #[test]
    fn an_image_a_kept_index_names_now_is_not_deleted() {
        let mut index = tag("multi", "sha256:idx");
        index.children = vec!["sha256:amd".into()];
        let now = vec![index, tag("amd64", "sha256:amd")];
        let (go, skipped) = deletable(&now, &BTreeMap::from([("amd64", "sha256:amd")]));
        assert!(go.is_empty());
        assert!(skipped[0].1.contains("index \"multi\""), "{skipped:?}");
    }

    #[test]
    fn selections_round_trip_through_state() {
        let sel = Selection::from([("team/app:1".to_owned(), "sha256:a".to_owned())]);
        assert_eq!(from_state(&to_state(&sel)), sel);
        assert!(from_state(&Value::Null).is_empty());
    }
}
