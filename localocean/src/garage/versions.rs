//! S3 bucket versioning as records, pure (no I/O): each versioned bucket's state, every key's
//! versions newest first, its noncurrent-expiry rules, and the XML S3 answers with.
//!
//! Where bytes live follows from the records: a key's latest version, when it is an object,
//! is the object in the real bucket; every other object version is in the bucket's hidden
//! bucket under [`hidden_key`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version id S3 gives writes made before versioning or while it is suspended.
pub const NULL_ID: &str = "null";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Never set: the bucket has records only for a lifecycle configuration kept here.
    Unversioned,
    Enabled,
    Suspended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unversioned => "",
            Status::Enabled => "Enabled",
            Status::Suspended => "Suspended",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub id: String,
    /// Unix milliseconds.
    pub last_modified: i64,
    /// As S3 gives it, quotes included; empty for delete markers.
    pub etag: String,
    pub size: u64,
    pub delete_marker: bool,
    /// When a newer version replaced it (Unix milliseconds): lifecycle rules count from here.
    #[serde(default)]
    pub noncurrent_since: Option<i64>,
}

/// One lifecycle rule localocean enforces itself (Garage has no versions to expire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub prefix: String,
    pub noncurrent_days: Option<u32>,
    pub expired_object_delete_marker: bool,
}

/// A lifecycle configuration as the client sent it, and the rules read from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub xml: String,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketVersions {
    pub status: Status,
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    /// Every key's versions, newest first; a key with none is absent.
    #[serde(default)]
    pub keys: BTreeMap<String, Vec<Version>>,
}

/// Where a noncurrent version's bytes are kept in the hidden bucket.
pub fn hidden_key(version_id: &str, key: &str) -> String {
    format!("{version_id}/{key}")
}

/// What removing one version asks of the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed {
    pub version: Version,
    /// The removed version was the latest (its bytes, if any, were in the real bucket).
    pub was_latest: bool,
    /// The version that became the latest by it, when that is an object: its bytes move from
    /// the hidden bucket back to the real one.
    pub promoted: Option<Version>,
}

impl BucketVersions {
    pub fn new(status: Status) -> Self {
        BucketVersions {
            status,
            lifecycle: None,
            keys: BTreeMap::new(),
        }
    }

    pub fn versions(&self, key: &str) -> &[Version] {
        self.keys.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn latest(&self, key: &str) -> Option<&Version> {
        self.versions(key).first()
    }

    pub fn find(&self, key: &str, id: &str) -> Option<&Version> {
        self.versions(key).iter().find(|v| v.id == id)
    }

    /// Whether any key has a version or delete marker left (S3 refuses to delete the bucket).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id under which the current object's bytes must be set aside before a write
    /// replaces it; `None` when there is no current object or the write overwrites it for
    /// good (a suspended bucket's `null` version).
    pub fn aside_id(&self, key: &str) -> Option<String> {
        let latest = self.latest(key).filter(|v| !v.delete_marker)?;
        if self.status == Status::Suspended && latest.id == NULL_ID {
            return None;
        }
        Some(latest.id.clone())
    }

    /// Records `version` as the key's latest. Returns the hidden keys whose bytes are no longer
    /// referenced: a new `null` version replaces the previous one.
    pub fn push(&mut self, key: &str, version: Version) -> Vec<String> {
        let list = self.keys.entry(key.to_string()).or_default();
        let mut gone = Vec::new();
        if version.id == NULL_ID {
            if let Some(i) = list.iter().position(|v| v.id == NULL_ID) {
                let old = list.remove(i);
                // The current null object was overwritten in place; an older one was aside.
                if i > 0 && !old.delete_marker {
                    gone.push(hidden_key(NULL_ID, key));
                }
            }
        }
        if let Some(prev) = list.first_mut() {
            prev.noncurrent_since.get_or_insert(version.last_modified);
        }
        list.insert(0, version);
        gone
    }

    /// Removes one version for good.
    pub fn remove(&mut self, key: &str, id: &str) -> Option<Removed> {
        let list = self.keys.get_mut(key)?;
        let i = list.iter().position(|v| v.id == id)?;
        let version = list.remove(i);
        let was_latest = i == 0;
        let mut promoted = None;
        if was_latest {
            if let Some(first) = list.first_mut() {
                first.noncurrent_since = None;
                if !first.delete_marker {
                    promoted = Some(first.clone());
                }
            }
        }
        if list.is_empty() {
            self.keys.remove(key);
        }
        Some(Removed {
            version,
            was_latest,
            promoted,
        })
    }

    /// Versions due to go under the lifecycle rules at `now` (Unix milliseconds), as
    /// (key, version id), oldest first per key so that no removal promotes a version.
    pub fn expired(&self, now: i64) -> Vec<(String, String)> {
        let Some(lifecycle) = &self.lifecycle else {
            return Vec::new();
        };
        let mut due = Vec::new();
        for (key, list) in &self.keys {
            let rules: Vec<&Rule> = lifecycle
                .rules
                .iter()
                .filter(|r| key.starts_with(&r.prefix))
                .collect();
            let days = rules.iter().filter_map(|r| r.noncurrent_days).min();
            let mut left = list.len();
            if let Some(days) = days {
                let age = i64::from(days) * 86_400_000;
                for v in list.iter().skip(1).rev() {
                    if v.noncurrent_since.is_some_and(|t| t + age <= now) {
                        due.push((key.clone(), v.id.clone()));
                        left -= 1;
                    }
                }
            }
            let sole_marker = left == 1 && list[0].delete_marker;
            if sole_marker && rules.iter().any(|r| r.expired_object_delete_marker) {
                due.push((key.clone(), list[0].id.clone()));
            }
        }
        due
    }
}

/// A page of ListObjectVersions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// (key, version, is latest), by key then newest first.
    pub entries: Vec<(String, Version, bool)>,
    pub next: Option<(String, String)>,
}

/// What ListObjectVersions asks for.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub prefix: String,
    pub key_marker: String,
    pub version_id_marker: String,
    pub max_keys: usize,
}

impl BucketVersions {
    /// One page of versions. `unrecorded` are current objects the records do not know (written
    /// before versioning was enabled): each is listed as its `null` version.
    pub fn list(&self, q: &ListQuery, unrecorded: &[(String, Version)]) -> Listing {
        let mut all: BTreeMap<&str, Vec<&Version>> = BTreeMap::new();
        for (k, list) in &self.keys {
            all.insert(k, list.iter().collect());
        }
        for (k, v) in unrecorded {
            all.entry(k).or_insert_with(|| vec![v]);
        }
        let mut out = Listing::default();
        let mut taken = 0;
        for (key, list) in all.range::<str, _>((
            std::ops::Bound::Included(q.key_marker.as_str()),
            std::ops::Bound::Unbounded,
        )) {
            if !key.starts_with(&q.prefix) {
                continue;
            }
            let skip = if *key == q.key_marker {
                if q.version_id_marker.is_empty() {
                    continue;
                }
                match list.iter().position(|v| v.id == q.version_id_marker) {
                    Some(i) => i + 1,
                    None => continue,
                }
            } else {
                0
            };
            for (i, v) in list.iter().enumerate().skip(skip) {
                if taken == q.max_keys {
                    if let Some((k, v, _)) = out.entries.last() {
                        out.next = Some((k.clone(), v.id.clone()));
                    }
                    return out;
                }
                out.entries.push((key.to_string(), (*v).clone(), i == 0));
                taken += 1;
            }
        }
        out
    }
}

/// ListObjectVersions' answer.
pub fn list_xml(bucket: &str, q: &ListQuery, page: &Listing) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    x.push_str(&format!(
        "<Name>{}</Name><Prefix>{}</Prefix><KeyMarker>{}</KeyMarker><VersionIdMarker>{}</VersionIdMarker><MaxKeys>{}</MaxKeys><IsTruncated>{}</IsTruncated>",
        escape(bucket),
        escape(&q.prefix),
        escape(&q.key_marker),
        escape(&q.version_id_marker),
        q.max_keys,
        page.next.is_some()
    ));
    if let Some((k, v)) = &page.next {
        x.push_str(&format!(
            "<NextKeyMarker>{}</NextKeyMarker><NextVersionIdMarker>{}</NextVersionIdMarker>",
            escape(k),
            escape(v)
        ));
    }
    for (key, v, latest) in &page.entries {
        let common = format!(
            "<Key>{}</Key><VersionId>{}</VersionId><IsLatest>{latest}</IsLatest><LastModified>{}</LastModified>",
            escape(key),
            escape(&v.id),
            iso_time(v.last_modified)
        );
        if v.delete_marker {
            x.push_str(&format!("<DeleteMarker>{common}</DeleteMarker>"));
        } else {
            x.push_str(&format!(
                "<Version>{common}<ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Version>",
                escape(&v.etag),
                v.size
            ));
        }
    }
    x.push_str("</ListVersionsResult>");
    x
}

/// GetBucketVersioning's answer; `None`: never set.
pub fn versioning_xml(status: Option<Status>) -> String {
    let inner = status
        .map(|s| format!("<Status>{}</Status>", s.as_str()))
        .unwrap_or_default();
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{inner}</VersioningConfiguration>")
}

/// The `Status` of a PutBucketVersioning body.
pub fn parse_versioning(body: &str) -> Option<Status> {
    match tag_text(body, "Status")?.trim() {
        "Enabled" => Some(Status::Enabled),
        "Suspended" => Some(Status::Suspended),
        _ => None,
    }
}

/// The rules localocean enforces from a lifecycle configuration: those that are enabled and
/// expire noncurrent versions or lone delete markers. Empty when there are none.
pub fn parse_lifecycle(body: &str) -> Vec<Rule> {
    let mut rules = Vec::new();
    for rule in body.split("<Rule>").skip(1) {
        let rule = rule.split("</Rule>").next().unwrap_or_default();
        if tag_text(rule, "Status").map(str::trim) != Some("Enabled") {
            continue;
        }
        let noncurrent_days = tag_text(rule, "NoncurrentVersionExpiration")
            .and_then(|n| tag_text(n, "NoncurrentDays"))
            .and_then(|d| d.trim().parse().ok());
        let eodm = tag_text(rule, "ExpiredObjectDeleteMarker").map(str::trim) == Some("true");
        if noncurrent_days.is_none() && !eodm {
            continue;
        }
        rules.push(Rule {
            prefix: tag_text(rule, "Prefix").map(unescape).unwrap_or_default(),
            noncurrent_days,
            expired_object_delete_marker: eodm,
        });
    }
    rules
}

/// The (key, version id) pairs of a DeleteObjects body, and whether it asks for a quiet answer.
pub fn parse_delete_objects(body: &str) -> (Vec<(String, Option<String>)>, bool) {
    let quiet = tag_text(body, "Quiet").map(str::trim) == Some("true");
    let objects = body
        .split("<Object>")
        .skip(1)
        .filter_map(|o| {
            let o = o.split("</Object>").next()?;
            Some((
                unescape(tag_text(o, "Key")?),
                tag_text(o, "VersionId").map(unescape),
            ))
        })
        .collect();
    (objects, quiet)
}

/// The text between the first `<name>` and the `</name>` after it.
pub fn tag_text<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// S3's timestamp form: `2024-01-02T03:04:05.678Z`.
pub fn iso_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, t: i64) -> Version {
        Version {
            id: id.into(),
            last_modified: t,
            etag: format!("\"{id}\""),
            size: 1,
            delete_marker: false,
            noncurrent_since: None,
        }
    }

    fn marker(id: &str, t: i64) -> Version {
        Version {
            delete_marker: true,
            etag: String::new(),
            size: 0,
            ..v(id, t)
        }
    }

    fn ids(b: &BucketVersions, key: &str) -> Vec<String> {
        b.versions(key).iter().map(|v| v.id.clone()).collect()
    }

    #[test]
    fn versions_are_newest_first_and_the_latest_is_set_aside() {
        let mut b = BucketVersions::new(Status::Enabled);
        assert_eq!(b.aside_id("k"), None);
        b.push("k", v("a", 1));
        assert_eq!(b.aside_id("k").as_deref(), Some("a"));
        b.push("k", v("b", 2));
        b.push("k", marker("m", 3));
        assert_eq!(ids(&b, "k"), ["m", "b", "a"]);
        assert_eq!(b.latest("k").unwrap().id, "m");
        assert_eq!(b.aside_id("k"), None, "a delete marker has no bytes");
        assert_eq!(b.find("k", "b").unwrap().noncurrent_since, Some(3));
        assert_eq!(b.find("k", "a").unwrap().noncurrent_since, Some(2));
    }

    #[test]
    fn deleting_the_latest_promotes_the_next() {
        let mut b = BucketVersions::new(Status::Enabled);
        b.push("k", v("a", 1));
        b.push("k", v("b", 2));
        b.push("k", marker("m", 3));
        let r = b.remove("k", "m").unwrap();
        assert!(r.was_latest && r.version.delete_marker);
        assert_eq!(r.promoted.as_ref().unwrap().id, "b");
        assert_eq!(b.latest("k").unwrap().noncurrent_since, None);
        let r = b.remove("k", "a").unwrap();
        assert!(!r.was_latest && r.promoted.is_none());
        b.push("k", marker("m2", 4));
        b.push("k", v("c", 5));
        let r = b.remove("k", "c").unwrap();
        assert_eq!(
            r.promoted, None,
            "a marker became latest: the key is absent"
        );
        assert!(b.remove("k", "nope").is_none());
        b.remove("k", "m2").unwrap();
        b.remove("k", "b").unwrap();
        assert!(b.is_empty());
    }

    #[test]
    fn a_suspended_bucket_replaces_its_null_version() {
        let mut b = BucketVersions::new(Status::Enabled);
        b.push("k", v(NULL_ID, 1));
        b.push("k", v("a", 2));
        b.status = Status::Suspended;
        assert_eq!(b.aside_id("k").as_deref(), Some("a"));
        let gone = b.push("k", v(NULL_ID, 3));
        assert_eq!(gone, [hidden_key(NULL_ID, "k")]);
        assert_eq!(ids(&b, "k"), [NULL_ID, "a"]);
        assert_eq!(b.aside_id("k"), None, "the current null is overwritten");
        let gone = b.push("k", marker(NULL_ID, 4));
        assert!(gone.is_empty(), "the current null object was overwritten");
        assert_eq!(ids(&b, "k"), [NULL_ID, "a"]);
        assert!(b.latest("k").unwrap().delete_marker);
    }

    #[test]
    fn listing_pages_with_markers() {
        let mut b = BucketVersions::new(Status::Enabled);
        b.push("a", v("a1", 1));
        b.push("a", v("a2", 2));
        b.push("b", v("b1", 3));
        b.push("b", marker("b2", 4));
        b.push("c/x", v("c1", 5));
        let unrecorded = vec![("a0".to_string(), v(NULL_ID, 0))];
        let mut q = ListQuery {
            max_keys: 2,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = b.list(&q, &unrecorded);
            seen.extend(
                page.entries
                    .iter()
                    .map(|(k, v, l)| format!("{k}:{}:{l}", v.id)),
            );
            match page.next {
                Some((k, v)) => {
                    q.key_marker = k;
                    q.version_id_marker = v;
                }
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                "a:a2:true",
                "a:a1:false",
                "a0:null:true",
                "b:b2:true",
                "b:b1:false",
                "c/x:c1:true"
            ]
        );
        let q = ListQuery {
            prefix: "c/".into(),
            max_keys: 1000,
            ..Default::default()
        };
        assert_eq!(b.list(&q, &unrecorded).entries.len(), 1);
        let q = ListQuery {
            key_marker: "a".into(),
            max_keys: 1000,
            ..Default::default()
        };
        let page = b.list(&q, &unrecorded);
        assert_eq!(
            page.entries[0].0, "a0",
            "a key marker alone skips the whole key"
        );
        let xml = list_xml("bk", &q, &page);
        assert!(xml.contains("<DeleteMarker><Key>b</Key><VersionId>b2</VersionId><IsLatest>true</IsLatest><LastModified>1970-01-01T00:00:00.004Z</LastModified></DeleteMarker>"), "{xml}");
        assert!(xml.contains("<IsTruncated>false</IsTruncated>"));
    }

    #[test]
    fn the_sweep_expires_noncurrent_versions_and_lone_markers() {
        let day = 86_400_000;
        let mut b = BucketVersions::new(Status::Enabled);
        b.push("k", v("a", 0));
        b.push("k", v("b", day));
        b.push("k", v("c", 3 * day));
        b.push("gone", v("g", 0));
        b.push("gone", marker("gm", day));
        b.push("other/k", v("o1", 0));
        b.push("other/k", v("o2", day));
        assert!(b.expired(100 * day).is_empty(), "no lifecycle, no expiry");
        b.lifecycle = Some(Lifecycle {
            xml: String::new(),
            rules: parse_lifecycle(
                "<LifecycleConfiguration><Rule><ID>x</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status><NoncurrentVersionExpiration><NoncurrentDays>2</NoncurrentDays></NoncurrentVersionExpiration></Rule><Rule><Filter><Prefix>gone</Prefix></Filter><Status>Enabled</Status><Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule></LifecycleConfiguration>",
            ),
        });
        // "a" became noncurrent at day 1, "b" at day 3: at day 3.5 only "a" is two days old.
        let due = b.expired(3 * day + day / 2);
        assert_eq!(
            due,
            [
                ("gone".to_string(), "g".to_string()),
                ("gone".to_string(), "gm".to_string()),
                ("k".to_string(), "a".to_string()),
                ("other/k".to_string(), "o1".to_string()),
            ]
        );
        let due = b.expired(100 * day);
        assert!(due.contains(&("k".to_string(), "b".to_string())));
        assert!(
            !due.iter().any(|(_, id)| id == "c" || id == "o2"),
            "current versions stay"
        );
    }

    #[test]
    fn request_bodies_are_read() {
        assert_eq!(
            parse_versioning("<VersioningConfiguration xmlns=\"x\"><Status>Suspended</Status></VersioningConfiguration>"),
            Some(Status::Suspended)
        );
        let (objs, quiet) = parse_delete_objects(
            "<Delete><Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object><Object><Key>c</Key><VersionId>v1</VersionId></Object></Delete>",
        );
        assert!(quiet);
        assert_eq!(
            objs,
            [
                ("a&b".to_string(), None),
                ("c".to_string(), Some("v1".to_string()))
            ]
        );
        assert!(versioning_xml(None).ends_with("\"></VersioningConfiguration>"));
        assert!(versioning_xml(Some(Status::Enabled)).contains("<Status>Enabled</Status>"));
        assert_eq!(unescape("&#x41;&#66;&bogus"), "AB&bogus");
        assert!(parse_lifecycle(
            "<Rule><Status>Enabled</Status><Expiration><Days>3</Days></Expiration></Rule>"
        )
        .is_empty());
    }
}
