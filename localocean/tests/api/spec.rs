//! DigitalOcean's OpenAPI spec (`shared/do-openapi.yaml`) as JSON schemas: every response the
//! API tests receive is validated against the schema of its operation and status.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::Resp;

pub(super) struct Spec {
    doc: Value,
}

pub(super) fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        // `shared/` beside the clone (CI, /work/main) or higher up (a worktree in /work/wt/);
        // DO_OPENAPI_YAML names another place.
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = std::env::var_os("DO_OPENAPI_YAML")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                manifest
                    .ancestors()
                    .skip(2)
                    .map(|d| d.join("shared/do-openapi.yaml"))
                    .find(|p| p.exists())
            })
            .unwrap_or_else(|| manifest.join("../../shared/do-openapi.yaml"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&widen_huge_integers(&text)).expect("do-openapi.yaml parses");
        Spec {
            doc: yaml_to_json(yaml),
        }
    })
}

/// serde_yaml cannot hold integers beyond u64 (the spec has 18446744073709552000 as a
/// bound); writing such literals as floats keeps their meaning as bounds.
fn widen_huge_integers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let mut prev = ' ';
    let flush = |digits: &mut String, out: &mut String, next: char| {
        out.push_str(digits);
        if digits.len() >= 20 && next != '.' {
            out.push_str(".0");
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit()
            && (!digits.is_empty() || !prev.is_ascii_alphanumeric() && prev != '.')
        {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                flush(&mut digits, &mut out, c);
            }
            out.push(c);
        }
        prev = c;
    }
    flush(&mut digits, &mut out, ' ');
    out
}

/// Converts by hand because a few limits in the spec (e.g. 2^64) do not fit serde_json's
/// integers; those become floats, which is all a bound needs.
fn yaml_to_json(v: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64().unwrap_or(f64::MAX))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(a) => Value::Array(a.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

/// Keywords of OpenAPI that are annotations or not JSON Schema; dropped before validation.
const NOT_SCHEMA: &[&str] = &[
    "example",
    "examples",
    "readOnly",
    "writeOnly",
    "discriminator",
    "xml",
    "deprecated",
    "externalDocs",
    "nullable",
    "description",
    "title",
];

impl Spec {
    fn resolve(&self, reference: &str) -> &Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local refs are expected, got {reference}"));
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"))
    }

    /// Inlines `$ref`s (recursive schemas are cut at a depth where any value is allowed)
    /// and turns OpenAPI 3.0 `nullable: true` into "this schema, or null".
    fn inline(&self, v: &Value, depth: usize) -> Value {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    if depth > 40 {
                        return json!({});
                    }
                    return self.inline(self.resolve(r), depth + 1);
                }
                let mut out = Map::new();
                for (k, x) in m {
                    if NOT_SCHEMA.contains(&k.as_str()) || k.starts_with("x-") {
                        continue;
                    }
                    let x = if k == "properties" || k == "patternProperties" {
                        // Property names are data, not keywords: keep every one.
                        Value::Object(
                            x.as_object()
                                .map(|props| {
                                    props
                                        .iter()
                                        .map(|(name, s)| (name.clone(), self.inline(s, depth)))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        )
                    } else {
                        self.inline(x, depth)
                    };
                    out.insert(k.clone(), x);
                }
                if m.get("nullable") == Some(&Value::Bool(true)) {
                    json!({ "anyOf": [Value::Object(out), {"type": "null"}] })
                } else {
                    Value::Object(out)
                }
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.inline(x, depth)).collect()),
            other => other.clone(),
        }
    }

    /// The JSON schema of a response, or None when the spec gives the status no body.
    /// Statuses the operation does not list fall back to its `default` response.
    fn response_schema(&self, path: &str, method: &str, status: u16) -> Option<Value> {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "the spec has no operation {method} {path}");
        let responses = &op["responses"];
        let resp = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| panic!("{method} {path}: the spec allows no status {status}"));
        let resp = match resp.get("$ref").and_then(Value::as_str) {
            Some(r) => self.resolve(r),
            None => resp,
        };
        resp.pointer("/content/application~1json/schema")
            .map(|s| self.inline(s, 0))
    }
}

/// Panics unless the response body is what the spec says for `template` and `method` at
/// this status (no body where the spec has none).
pub(super) fn conforms(method: &str, template: &str, path: &str, r: &Resp) {
    let m = method.to_ascii_lowercase();
    match spec().response_schema(template, &m, r.status) {
        Some(schema) => {
            assert!(
                !r.body.is_null(),
                "{method} {path} answered {} without a JSON body: {:?}",
                r.status,
                r.text
            );
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft4)
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("schema of {method} {template} {}: {e}", r.status));
            let errors: Vec<String> = validator
                .iter_errors(&r.body)
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {path} ({}) does not match the spec:\n{}\nbody: {}",
                r.status,
                errors.join("\n"),
                r.body
            );
        }
        None => assert!(
            r.text.is_empty(),
            "{method} {path} ({}) should have no body, got {:?}",
            r.status,
            r.text
        ),
    }
}

/// The schema check must catch a broken body, or the conformance test proves nothing.
#[test]
fn schema_check_rejects_a_broken_droplet() {
    let schema = spec()
        .response_schema("/v2/droplets/{droplet_id}", "get", 200)
        .unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let size = json!({"slug": "s-1vcpu-1gb", "memory": 1024, "vcpus": 1, "disk": 25,
        "transfer": 1.0, "price_monthly": 6.0, "price_hourly": 0.00893,
        "regions": ["nyc3"], "available": true, "description": "Basic"});
    let region = json!({"name": "New York 3", "slug": "nyc3", "features": [],
        "available": true, "sizes": []});
    let good = json!({"droplet": {
        "id": 1, "name": "a", "memory": 1024, "vcpus": 1, "disk": 25, "locked": false,
        "status": "active", "kernel": null, "created_at": "2024-01-01T00:00:00Z",
        "features": [], "backup_ids": [], "next_backup_window": null, "snapshot_ids": [],
        "image": {}, "volume_ids": [], "size": size, "size_slug": "s-1vcpu-1gb",
        "networks": {"v4": [{"ip_address": "198.18.0.2", "netmask": "255.254.0.0",
            "gateway": "198.18.0.1", "type": "public"}], "v6": []},
        "region": region, "tags": []}});
    assert!(
        validator.is_valid(&good),
        "{:?}",
        validator.validate(&good).err()
    );
    for (field, bad) in [
        ("status", json!("running")),
        ("id", json!("1")),
        (
            "networks",
            json!({"v4": [{"ip_address": "not-an-ip", "type": "public"}]}),
        ),
        ("kernel", json!(5)),
    ] {
        let mut broken = good.clone();
        broken["droplet"][field] = bad;
        assert!(
            !validator.is_valid(&broken),
            "broken {field} passed validation"
        );
    }
    let mut missing = good.clone();
    missing["droplet"]
        .as_object_mut()
        .unwrap()
        .remove("size_slug");
    assert!(
        !validator.is_valid(&missing),
        "a missing required field passed"
    );
}
