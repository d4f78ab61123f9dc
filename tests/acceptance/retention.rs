//! Retention end to end: tags pushed in three repositories with images dated by their
//! `created`, two rules; the plan shows the preview, a tag pushed again between plan and
//! apply is not deleted, the apply deletes exactly the rest of the preview, every other tag
//! still pulls by digest, and the collection frees the deleted images' space.

use std::collections::BTreeMap;

use super::registry::{Fixture, ADMIN_PW};
use crate::support::registry_client::{make_oci_image_created, text, Skopeo};

const READER_PW: &str = "reader-password-0402";
/// Random bytes: the deleted images' layers, so the freed space is about two of these.
const BIG: usize = 2 * 1024 * 1024;
const SMALL: usize = 64 * 1024;

fn body(run: u32, rules: bool) -> String {
    let rules = if rules {
        r#"
    retention {
      repositories = ["ret/app"]
      keep_last    = 2
      keep_tags    = ["latest", "release-*"]
    }
    retention {
      repositories    = ["ret/**"]
      older_than_days = 25
      keep_tags       = ["latest", "stable"]
    }"#
    } else {
        ""
    };
    format!(
        r#"
resource "docker_registry" "r" {{
  name   = "NAME"
  region = "nyc3"
  fqdn   = "FQDN"
  users = {{
    admin  = {{ password = "{ADMIN_PW}" }}
    reader = {{ password = "{READER_PW}", access = "pull" }}
  }}
  tls {{ source = "self_signed" }}
  garbage_collection {{
    schedule = "2099-01-01 03:00:00"
    run      = {run}{rules}
  }}
}}

output "preview" {{
  value = docker_registry.r.retention_preview
}}
"#
    )
}

fn days_ago(days: i64) -> String {
    (time::OffsetDateTime::now_utc() - time::Duration::days(days))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Whether a line of `plan` shows the map entry `k = d` marked `sign` (OpenTofu pads keys to
/// align the `=`).
fn shows(plan: &str, sign: &str, k: &str, d: &str) -> bool {
    plan.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with(&format!("{sign} \"{k}\"")) && l.contains(&format!("= \"{d}\""))
    })
}

fn string_map(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a map: {v}"))
        .iter()
        .map(|(k, d)| (k.clone(), d.as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn retention_deletes_what_the_plan_previewed_and_nothing_else() {
    let fx = Fixture::new();
    fx.config(&body(0, false));
    fx.apply();
    let v = fx.values();
    assert!(v["retention_preview"].is_null(), "{v}");
    let ca = v["ca_certificate_pem"].as_str().unwrap().to_owned();
    let admin = format!("admin:{ADMIN_PW}");
    let reader = format!("reader:{READER_PW}");
    let sk = fx.skopeo(Some(&ca));
    let work = tempfile::tempdir().unwrap();
    let reference = |repo_tag: &str| format!("{}/{repo_tag}", fx.fqdn);

    // Each tag its own image, dated; `latest` and `stable` copied registry to registry, so
    // they share their image (and digest) with `ret/app:4` and `ret/tool:old`.
    let mut digests: BTreeMap<String, String> = BTreeMap::new();
    let push = |sk: &Skopeo, repo_tag: &str, size: usize, age: i64| -> String {
        let dir = work.path().join(repo_tag.replace(['/', ':'], "-"));
        let _ = std::fs::remove_dir_all(&dir);
        make_oci_image_created(&dir, size, &days_ago(age));
        let out = sk.push(&dir, &reference(repo_tag), Some(&admin));
        assert!(out.status.success(), "push {repo_tag}: {}", text(&out));
        sk.pushed_digest()
    };
    for (repo_tag, size, age) in [
        ("ret/app:1", BIG, 40),
        ("ret/app:2", SMALL, 30),
        ("ret/app:3", SMALL, 20),
        ("ret/app:4", SMALL, 1),
        ("ret/app:release-1", SMALL, 60),
        ("ret/tool:old", SMALL, 50),
        ("ret/tool:older", BIG, 45),
        ("ret/tool:new", SMALL, 1),
        ("other/x:ancient", SMALL, 100),
    ] {
        digests.insert(repo_tag.to_owned(), push(&sk, repo_tag, size, age));
    }
    for (from, to) in [
        ("ret/app:4", "ret/app:latest"),
        ("ret/tool:old", "ret/tool:stable"),
    ] {
        let out = sk.run(&[
            "copy",
            "--retry-times=0",
            &format!("--src-cert-dir={}", sk.cert_dir.display()),
            &format!("--dest-cert-dir={}", sk.cert_dir.display()),
            &format!("--src-creds={admin}"),
            &format!("--dest-creds={admin}"),
            &format!("docker://{}", reference(from)),
            &format!("docker://{}", reference(to)),
        ]);
        assert!(out.status.success(), "copy {from} {to}: {}", text(&out));
        let raw = sk.inspect_raw(&reference(to), Some(&reader));
        let d = crate::support::registry_client::manifest_digest(&raw.stdout);
        assert_eq!(d, digests[from], "{to} is not {from}'s image");
        digests.insert(to.to_owned(), d);
    }

    // The rules: `ret/app` keeps its 2 newest (not counting latest, release-*) and loses
    // only what is also older than 25 days: 1 and 2. `ret/tool` loses what is older than 25
    // days but `stable`: `old` shares its image with `stable`, so only `older`. `other/x`:
    // no rule applies.
    let expected: BTreeMap<String, String> = ["ret/app:1", "ret/app:2", "ret/tool:older"]
        .iter()
        .map(|k| (k.to_string(), digests[*k].clone()))
        .collect();
    fx.config(&body(0, true));
    let (ok, plan) = fx.tf.run_text(&["plan", "-no-color", "-input=false"]);
    assert!(ok, "plan with the rules failed:\n{plan}");
    for (k, d) in &expected {
        assert!(
            shows(&plan, "+", k, d),
            "the plan does not preview {k} = {d}:\n{plan}"
        );
    }
    fx.apply();
    let v = fx.values();
    assert_eq!(string_map(&v["retention_preview"]), expected);
    assert!(v["retention_deleted"].is_null(), "{v}");

    // The run, planned and saved: the plan shows each previewed tag leaving the preview.
    fx.config(&body(1, true));
    let (ok, plan) = fx
        .tf
        .run_text(&["plan", "-no-color", "-input=false", "-out=run.tfplan"]);
    assert!(ok, "plan of the run failed:\n{plan}");
    for (k, d) in &expected {
        assert!(
            shows(&plan, "-", k, d),
            "the plan does not show {k} deleted:\n{plan}"
        );
    }
    // Between plan and apply, `ret/app:2` is pushed again (another image, as old): the
    // apply must not delete it.
    let again = push(&sk, "ret/app:2", SMALL, 30);
    assert_ne!(again, digests["ret/app:2"]);
    digests.insert("ret/app:2".to_owned(), again);

    let (ok, out) = fx
        .tf
        .run_text(&["apply", "-no-color", "-input=false", "run.tfplan"]);
    assert!(ok, "apply of the run failed:\n{out}");
    // OpenTofu wraps a diagnostic's lines.
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("Retention skipped tags that changed since the plan")
            && flat.contains("ret/app:2 (pushed again: now"),
        "no warning for the tag pushed again:\n{out}"
    );
    let v = fx.values();
    let deleted = string_map(&v["retention_deleted"]);
    let mut want = expected.clone();
    want.remove("ret/app:2");
    assert_eq!(
        deleted, want,
        "deleted is not the preview less the re-pushed tag"
    );

    // Deleted: gone by tag and by digest.
    for k in want.keys() {
        let repo = k.split(':').next().unwrap();
        for r in [reference(k), format!("{}@{}", reference(repo), digests[k])] {
            let out = sk.inspect_raw(&r, Some(&reader));
            assert!(!out.status.success(), "{r} still there after retention");
        }
    }
    // Everything else still pulls, whole, by digest.
    for (k, d) in &digests {
        if want.contains_key(k) {
            continue;
        }
        let repo = k.split(':').next().unwrap();
        let r = format!("{}@{d}", reference(repo));
        let dest = work
            .path()
            .join(format!("pulled-{}", k.replace(['/', ':'], "-")));
        let out = sk.pull(&r, &dest, Some(&reader));
        assert!(
            out.status.success(),
            "{k} ({r}) does not pull: {}",
            text(&out)
        );
        let tagged = sk.inspect_raw(&reference(k), Some(&reader));
        assert_eq!(
            crate::support::registry_client::manifest_digest(&tagged.stdout),
            *d,
            "{k} moved"
        );
    }

    // The collection freed the two deleted images (their 2 MiB layers), not the image
    // `ret/app:2` left untagged (no `delete_untagged`).
    let freed = v["garbage_collection_freed_bytes"]
        .as_i64()
        .expect("freed bytes");
    let two = 2 * BIG as i64;
    assert!(
        freed >= two * 9 / 10 && freed <= two + 1024 * 1024,
        "freed {freed} bytes for two {BIG}-byte layers"
    );
    // Read previews what the rules select now: the image pushed again (30 days old) and
    // nothing of what was deleted.
    let (ok, out) = fx.tf.run_text(&[
        "apply",
        "-refresh-only",
        "-auto-approve",
        "-no-color",
        "-input=false",
    ]);
    assert!(ok, "refresh failed:\n{out}");
    let v = fx.values();
    assert_eq!(
        string_map(&v["retention_preview"]),
        BTreeMap::from([("ret/app:2".to_owned(), digests["ret/app:2"].clone())])
    );
    // A preview that changed at refresh is no change to apply: the plan is empty.
    let (code, plan) = fx.plan_code();
    assert_eq!(code, 0, "plan after the refresh is not empty:\n{plan}");
    eprintln!("retention: deleted {deleted:?}; freed {freed} bytes");
    fx.destroy_and_check_nothing_left();
}

/// A rule that would delete every tag is refused by `tofu validate` without the flag,
/// naming the attribute; so is a bad glob.
#[test]
fn tofu_validate_names_a_rule_that_keeps_nothing_and_a_bad_glob() {
    let tf = crate::support::tofu::Tofu::new(&format!(
        "{}\nprovider \"docker\" {{\n  token = \"dop_v1_test\"\n  api_endpoint = \"http://127.0.0.1:9\"\n}}\n{}",
        super::PROVIDER_BLOCK,
        r#"
resource "docker_registry" "r" {
  name   = "registry"
  region = "ams3"
  fqdn   = "registry.example.com"
  tls { source = "self_signed" }
  garbage_collection {
    retention {
      repositories = ["team/*"]
      keep_tags    = ["latest"]
    }
    retention {
      repositories = ["Team/[ab]"]
      keep_last    = 3
    }
  }
}
"#
    ));
    let (ok, out) = tf.run_text(&["validate", "-no-color"]);
    assert!(!ok, "tofu validate should fail:\n{out}");
    assert!(out.contains("Retention rule deletes every tag"), "{out}");
    assert!(out.contains("allow_delete_all"), "{out}");
    assert!(
        out.contains("Invalid `garbage_collection.retention.repositories`"),
        "{out}"
    );
}
