//! Retention rules, evaluated: which tags of which repositories the `retention` blocks select
//! for deletion now. Pure (data in, selection out): the preview, the plan and the apply all
//! use this one evaluation, and nothing else decides what retention deletes.
//!
//! The rules' meaning, in one place:
//! - a rule applies to a repository whose name matches one of its `repositories` globs
//!   (`*` and `?` stay within one path segment, `**` crosses `/`);
//! - within a rule, a tag matching `keep_tags` is kept and counts for nothing; of the others,
//!   the `keep_last` newest (by the image's `created` date) are kept, and the rest are
//!   selected, but with `older_than_days` only those created more than that many days ago;
//! - keep wins: a tag is deleted only when every rule that applies to its repository selects
//!   it (a repository no rule applies to loses nothing), as Harbor's and zot's retain rules;
//! - a tag whose image has no `created` date is never deleted (it cannot be dated);
//! - the registry deletes by digest, and that deletes every tag of the digest: a tag whose
//!   digest another kept tag also points at, or that a kept index names, is kept.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

/// One `retention` block, as the model reads it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Rule {
    /// Repository globs; the rule applies to a repository matching any.
    pub repositories: Vec<String>,
    /// Keep this many newest tags (not counting `keep_tags`).
    pub keep_last: Option<u32>,
    /// Select only tags created more than this many days ago.
    pub older_than_days: Option<u32>,
    /// Tag globs never selected by this rule (`latest`, `v*`).
    pub keep_tags: Vec<String>,
    /// The rule may select every tag not in `keep_tags` whatever its age and rank.
    pub allow_delete_all: bool,
}

impl Rule {
    pub fn applies_to(&self, repository: &str) -> bool {
        self.repositories
            .iter()
            .any(|p| glob_matches(p.as_bytes(), repository.as_bytes()))
    }

    fn protects(&self, tag: &str) -> bool {
        self.keep_tags
            .iter()
            .any(|p| glob_matches(p.as_bytes(), tag.as_bytes()))
    }

    /// Whether the rule keeps anything besides `keep_tags`: a `keep_last` or an
    /// `older_than_days` of at least 1. Without, it selects every other tag of its
    /// repositories, which needs `allow_delete_all`.
    pub fn keeps_by_rank_or_age(&self) -> bool {
        self.keep_last.unwrap_or(0) > 0 || self.older_than_days.unwrap_or(0) > 0
    }
}

/// One tag as the registry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    /// The manifest's digest (`sha256:...`): what a delete removes, with every tag on it.
    pub digest: String,
    /// The image config's `created` (an index: its first image's); None when absent.
    pub created: Option<OffsetDateTime>,
    /// An index's manifests: deleting one of them would break the index.
    pub children: Vec<String>,
}

/// A repository and its tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    pub name: String,
    pub tags: Vec<Tag>,
}

/// What retention would delete: `repository:tag` → the digest it points at.
pub type Selection = BTreeMap<String, String>;

/// `repository:tag`, the key of a [`Selection`].
pub fn key(repository: &str, tag: &str) -> String {
    format!("{repository}:{tag}")
}

/// Splits a [`Selection`] key at its last `:` (tags hold none; repositories hold no `:`).
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once(':')
}

/// The tags `rules` select for deletion at `now`.
pub fn evaluate(rules: &[Rule], repositories: &[Repository], now: OffsetDateTime) -> Selection {
    let mut out = Selection::new();
    for repo in repositories {
        for tag in evaluate_repository(rules, repo, now) {
            out.insert(key(&repo.name, &tag.name), tag.digest.clone());
        }
    }
    out
}

fn evaluate_repository<'a>(
    rules: &[Rule],
    repo: &'a Repository,
    now: OffsetDateTime,
) -> Vec<&'a Tag> {
    let applying: Vec<&Rule> = rules.iter().filter(|r| r.applies_to(&repo.name)).collect();
    if applying.is_empty() {
        return Vec::new();
    }
    // Keep wins: selected by every rule that applies.
    let mut selected: BTreeSet<&str> = repo.tags.iter().map(|t| t.name.as_str()).collect();
    for rule in applying {
        let by_rule = selected_by(rule, &repo.tags, now);
        selected.retain(|t| by_rule.contains(t));
    }
    // A delete removes the digest: keep what a kept tag points at or a kept index names,
    // until nothing changes (a tag kept this way keeps its own index's children).
    loop {
        let kept_digests: BTreeSet<&str> = repo
            .tags
            .iter()
            .filter(|t| !selected.contains(t.name.as_str()))
            .flat_map(|t| {
                std::iter::once(t.digest.as_str()).chain(t.children.iter().map(String::as_str))
            })
            .collect();
        let before = selected.len();
        selected.retain(|name| {
            repo.tags
                .iter()
                .find(|t| t.name == *name)
                .is_some_and(|t| !kept_digests.contains(t.digest.as_str()))
        });
        if selected.len() == before {
            break;
        }
    }
    repo.tags
        .iter()
        .filter(|t| selected.contains(t.name.as_str()))
        .collect()
}

/// The tags one rule selects in a repository it applies to.
fn selected_by<'a>(rule: &Rule, tags: &'a [Tag], now: OffsetDateTime) -> BTreeSet<&'a str> {
    let mut candidates: Vec<&Tag> = tags.iter().filter(|t| !rule.protects(&t.name)).collect();
    candidates.sort_by(|a, b| newest_first(a, b));
    let keep = rule.keep_last.unwrap_or(0) as usize;
    candidates
        .into_iter()
        .skip(keep)
        .filter(|t| {
            let Some(created) = t.created else {
                // Undated: never selected.
                return false;
            };
            match rule.older_than_days {
                Some(days) => now - created > time::Duration::days(days as i64),
                None => true,
            }
        })
        .map(|t| t.name.as_str())
        .collect()
}

/// Newest first: undated tags first (they are never deleted, and count as newest), then by
/// `created`, later first; a tie goes to the tag whose name sorts last.
fn newest_first(a: &Tag, b: &Tag) -> std::cmp::Ordering {
    match (a.created, b.created) {
        (None, None) => b.name.cmp(&a.name),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| b.name.cmp(&a.name)),
    }
}

/// `*` and `?` match within one `/`-separated segment, `**` matches across them.
pub fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            let rest = &pattern[2..];
            // `**/` also matches no segment at all: `a/**/b` matches `a/b`.
            if rest.first() == Some(&b'/') && glob_matches(&rest[1..], text) {
                return true;
            }
            (0..=text.len()).any(|i| glob_matches(rest, &text[i..]))
        }
        Some(b'*') => {
            let rest = &pattern[1..];
            let segment = text.iter().position(|c| *c == b'/').unwrap_or(text.len());
            (0..=segment).any(|i| glob_matches(rest, &text[i..]))
        }
        Some(b'?') => {
            !text.is_empty() && text[0] != b'/' && glob_matches(&pattern[1..], &text[1..])
        }
        Some(c) => text.first() == Some(c) && glob_matches(&pattern[1..], &text[1..]),
    }
}

/// Why a `repositories` glob is refused, or None. Repository names are lowercase
/// `a-z 0-9 . _ - /` (distribution's grammar): a glob with anything else would match nothing.
pub fn repository_pattern_problem(p: &str) -> Option<String> {
    if p.is_empty() {
        return Some("it is empty (use \"**\" for every repository)".into());
    }
    if p.len() > 255 {
        return Some(format!(
            "it is {} characters long; the limit is 255",
            p.len()
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/*?".contains(*c)))
    {
        return Some(format!(
            "{c:?} cannot be in a repository name (lowercase a-z, 0-9, `.`, `_`, `-`, `/`; globs `*`, `?`, `**`)"
        ));
    }
    if p.contains("***") {
        return Some("`***` is not a glob (`*` within a segment, `**` across segments)".into());
    }
    if p.starts_with('/') || p.ends_with('/') || p.contains("//") {
        return Some("a segment is empty (a leading, trailing or double `/`)".into());
    }
    None
}

/// Why a `keep_tags` glob is refused, or None. Tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn tag_pattern_problem(p: &str) -> Option<String> {
    if p.is_empty() {
        return Some("it is empty".into());
    }
    if p.len() > 128 {
        return Some(format!(
            "it is {} characters long; a tag has at most 128",
            p.len()
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-*?".contains(*c)))
    {
        return Some(format!(
            "{c:?} cannot be in a tag (A-Z, a-z, 0-9, `_`, `.`, `-`; globs `*`, `?`)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 10:00 UTC);

    fn days_ago(d: i64) -> Option<OffsetDateTime> {
        Some(NOW - time::Duration::days(d))
    }

    fn tag(name: &str, digest: &str, created: Option<OffsetDateTime>) -> Tag {
        Tag {
            name: name.into(),
            digest: digest.into(),
            created,
            children: Vec::new(),
        }
    }

    fn repo(name: &str, tags: Vec<Tag>) -> Repository {
        Repository {
            name: name.into(),
            tags,
        }
    }

    fn rule(repos: &[&str]) -> Rule {
        Rule {
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn names(sel: &Selection) -> Vec<&str> {
        sel.keys().map(String::as_str).collect()
    }

    /// Five tags a day apart: `t1` the oldest (5 days), `t5` the newest (1 day).
    fn five() -> Repository {
        repo(
            "team/app",
            (1..=5)
                .map(|i| tag(&format!("t{i}"), &format!("sha256:{i}"), days_ago(6 - i)))
                .collect(),
        )
    }

    #[test]
    fn keep_last_keeps_the_newest_by_created_date_not_by_name_or_order() {
        // Listed newest first and named against their age: the date decides.
        let r = repo(
            "team/app",
            vec![
                tag("a", "sha256:a", days_ago(1)),
                tag("z", "sha256:z", days_ago(9)),
                tag("m", "sha256:m", days_ago(5)),
            ],
        );
        let rules = [Rule {
            keep_last: Some(1),
            ..rule(&["team/app"])
        }];
        assert_eq!(
            names(&evaluate(&rules, &[r], NOW)),
            ["team/app:m", "team/app:z"]
        );
    }

    #[test]
    fn the_selection_carries_each_tags_digest() {
        let rules = [Rule {
            keep_last: Some(4),
            ..rule(&["**"])
        }];
        let sel = evaluate(&rules, &[five()], NOW);
        assert_eq!(
            sel,
            Selection::from([("team/app:t1".into(), "sha256:1".into())])
        );
    }

    #[test]
    fn keep_last_larger_than_the_repository_deletes_nothing() {
        let rules = [Rule {
            keep_last: Some(10),
            ..rule(&["**"])
        }];
        assert!(evaluate(&rules, &[five()], NOW).is_empty());
    }

    #[test]
    fn ties_on_the_created_date_go_to_the_name_that_sorts_last() {
        let same = days_ago(3);
        let r = repo(
            "r",
            vec![
                tag("b", "sha256:b", same),
                tag("c", "sha256:c", same),
                tag("a", "sha256:a", same),
            ],
        );
        let rules = [Rule {
            keep_last: Some(1),
            ..rule(&["r"])
        }];
        assert_eq!(
            names(&evaluate(&rules, std::slice::from_ref(&r), NOW)),
            ["r:a", "r:b"]
        );
        let rules = [Rule {
            keep_last: Some(2),
            ..rule(&["r"])
        }];
        assert_eq!(names(&evaluate(&rules, &[r], NOW)), ["r:a"]);
    }

    #[test]
    fn older_than_days_selects_only_what_is_strictly_older() {
        let r = repo(
            "r",
            vec![
                tag("old", "sha256:o", days_ago(31)),
                tag("edge", "sha256:e", days_ago(30)),
                tag("new", "sha256:n", days_ago(2)),
            ],
        );
        let rules = [Rule {
            older_than_days: Some(30),
            ..rule(&["r"])
        }];
        assert_eq!(names(&evaluate(&rules, &[r], NOW)), ["r:old"]);
    }

    #[test]
    fn keep_last_and_older_than_days_together_need_both() {
        // Newest 2 kept whatever their age; of the rest, only those older than 3 days.
        let rules = [Rule {
            keep_last: Some(2),
            older_than_days: Some(3),
            ..rule(&["team/*"])
        }];
        // t1 (5 days), t2 (4 days) old enough; t3 (3 days) not strictly older; t4, t5 newest.
        assert_eq!(
            names(&evaluate(&rules, &[five()], NOW)),
            ["team/app:t1", "team/app:t2"]
        );
    }

    #[test]
    fn protected_tags_are_never_selected_and_do_not_count_for_keep_last() {
        let mut r = five();
        r.tags.push(tag("latest", "sha256:L", days_ago(50)));
        r.tags.push(tag("v1.0", "sha256:v", days_ago(60)));
        r.tags.push(tag("v2-rc", "sha256:w", days_ago(60)));
        let rules = [Rule {
            keep_last: Some(2),
            keep_tags: vec!["latest".into(), "v?.*".into()],
            ..rule(&["team/app"])
        }];
        // latest and v1.0 protected; v2-rc is not (`v?.*` needs a dot after one character);
        // the 2 newest of the others (t5, t4) kept.
        assert_eq!(
            names(&evaluate(&rules, &[r], NOW)),
            [
                "team/app:t1",
                "team/app:t2",
                "team/app:t3",
                "team/app:v2-rc"
            ]
        );
    }

    #[test]
    fn undated_tags_are_never_deleted_and_rank_as_newest() {
        let mut r = five();
        r.tags.push(tag("undated", "sha256:u", None));
        let rules = [Rule {
            keep_last: Some(1),
            ..rule(&["**"])
        }];
        // The undated tag takes the one kept place: every dated one is selected.
        let sel = evaluate(&rules, &[r.clone()], NOW);
        assert_eq!(sel.len(), 5);
        assert!(!sel.contains_key("team/app:undated"));
        let rules = [Rule {
            allow_delete_all: true,
            ..rule(&["**"])
        }];
        assert!(!evaluate(&rules, &[r], NOW).contains_key("team/app:undated"));
    }

    #[test]
    fn repositories_no_rule_applies_to_lose_nothing() {
        let mut other = five();
        other.name = "other/app".into();
        let rules = [Rule {
            keep_last: Some(1),
            ..rule(&["team/*"])
        }];
        let sel = evaluate(&rules, &[five(), other], NOW);
        assert_eq!(sel.len(), 4);
        assert!(sel.keys().all(|k| k.starts_with("team/app:")));
    }

    #[test]
    fn several_rules_keep_wins() {
        // A general rule keeps 1, a specific one keeps 3 of team/app: team/app keeps 3.
        let mut tools = five();
        tools.name = "team/tools".into();
        let rules = [
            Rule {
                keep_last: Some(1),
                ..rule(&["team/*"])
            },
            Rule {
                keep_last: Some(3),
                ..rule(&["team/app"])
            },
        ];
        let sel = evaluate(&rules, &[five(), tools], NOW);
        assert_eq!(
            names(&sel),
            [
                "team/app:t1",
                "team/app:t2",
                "team/tools:t1",
                "team/tools:t2",
                "team/tools:t3",
                "team/tools:t4"
            ]
        );
        // A tag one rule protects is kept though another selects it.
        let rules = [
            Rule {
                keep_last: Some(1),
                ..rule(&["team/app"])
            },
            Rule {
                older_than_days: Some(1),
                keep_tags: vec!["t2".into()],
                ..rule(&["team/**"])
            },
        ];
        assert_eq!(
            names(&evaluate(&rules, &[five()], NOW)),
            ["team/app:t1", "team/app:t3", "team/app:t4"]
        );
    }

    #[test]
    fn a_tag_sharing_its_digest_with_a_kept_tag_is_kept() {
        // `old` and `stable` are one image: deleting `old`'s digest would delete `stable`.
        let r = repo(
            "r",
            vec![
                tag("old", "sha256:s", days_ago(40)),
                tag("stable", "sha256:s", days_ago(40)),
                tag("older", "sha256:x", days_ago(45)),
                tag("new", "sha256:n", days_ago(1)),
            ],
        );
        let rules = [Rule {
            older_than_days: Some(10),
            keep_tags: vec!["stable".into()],
            ..rule(&["r"])
        }];
        assert_eq!(
            names(&evaluate(&rules, std::slice::from_ref(&r), NOW)),
            ["r:older"]
        );
        // Both tags of one image selected: both go (one delete).
        let rules = [Rule {
            older_than_days: Some(10),
            ..rule(&["r"])
        }];
        assert_eq!(
            names(&evaluate(&rules, &[r], NOW)),
            ["r:old", "r:older", "r:stable"]
        );
    }

    #[test]
    fn an_image_a_kept_index_names_is_kept_and_so_on() {
        // `multi` (kept) is an index naming `amd64`'s digest; `outer` is an index naming
        // `inner`'s digest, and `outer` shares its digest with `pin` (kept): both stay.
        let mut multi = tag("multi", "sha256:idx", days_ago(1));
        multi.children = vec!["sha256:amd".into()];
        let mut outer = tag("outer", "sha256:out", days_ago(40));
        outer.children = vec!["sha256:in".into()];
        let r = repo(
            "r",
            vec![
                multi,
                tag("amd64", "sha256:amd", days_ago(40)),
                outer,
                tag("pin", "sha256:out", days_ago(40)),
                tag("inner", "sha256:in", days_ago(40)),
                tag("gone", "sha256:g", days_ago(40)),
            ],
        );
        let rules = [Rule {
            older_than_days: Some(10),
            keep_tags: vec!["pin".into()],
            ..rule(&["r"])
        }];
        assert_eq!(names(&evaluate(&rules, &[r], NOW)), ["r:gone"]);
    }

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| glob_matches(p.as_bytes(), t.as_bytes());
        assert!(m("team/*", "team/app"));
        assert!(!m("team/*", "team/app/web"));
        assert!(!m("team/*", "team"));
        assert!(m("team/**", "team/app/web"));
        assert!(m("**", "a/b/c"));
        assert!(m("**/web", "a/b/web"));
        assert!(m("a/**/b", "a/b"));
        assert!(m("a/**/b", "a/x/y/b"));
        assert!(!m("a/**/b", "a/xb"));
        assert!(m("app-?", "app-1"));
        assert!(!m("app-?", "app-10"));
        assert!(!m("?", "/"));
        assert!(m("v*", "v1.2.3"));
        assert!(!m("v*", "release-v1"));
        assert!(m("*-rc*", "1.0-rc2"));
        assert!(m("latest", "latest"));
        assert!(!m("latest", "latest2"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn bad_patterns_are_named() {
        for (p, says) in [
            ("", "empty"),
            ("Team/*", "'T'"),
            ("team/[ab]", "'['"),
            ("team/***", "***"),
            ("/team", "segment"),
            ("team//app", "segment"),
            ("team/", "segment"),
        ] {
            let why = repository_pattern_problem(p).expect(p);
            assert!(why.contains(says), "{p:?}: {why}");
        }
        for ok in ["**", "team/*", "a.b_c-d/**/x?"] {
            assert_eq!(repository_pattern_problem(ok), None, "{ok}");
        }
        for (p, says) in [("", "empty"), ("v1/x", "'/'"), ("a b", "' '")] {
            let why = tag_pattern_problem(p).expect(p);
            assert!(why.contains(says), "{p:?}: {why}");
        }
        assert!(tag_pattern_problem(&"a".repeat(129)).is_some());
        for ok in ["latest", "v*", "Release_1.?-rc*"] {
            assert_eq!(tag_pattern_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn keys_split_at_the_last_colon() {
        assert_eq!(split_key(&key("team/app", "v1")), Some(("team/app", "v1")));
        assert!(Rule {
            keep_last: Some(1),
            ..Rule::default()
        }
        .keeps_by_rank_or_age());
        assert!(!Rule {
            keep_last: Some(0),
            older_than_days: Some(0),
            ..Rule::default()
        }
        .keeps_by_rank_or_age());
    }
}
