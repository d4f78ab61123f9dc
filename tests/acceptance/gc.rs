//! Deleting and collecting garbage end to end: push users delete by digest (pull users may
//! not), a collection asked for through the plan frees the deleted image's space with pulls
//! and pushes running throughout: no pull fails, no push ends in a corrupt image.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::registry::{Fixture, ADMIN_PW};
use crate::support::docker::token_for;
use crate::support::registry_client::{make_oci_image, manifest_digest, text};

const READER_PW: &str = "reader-password-0102";
const LOOPER_PW: &str = "looper-password-0103";
/// Random bytes: a layer gzip cannot shrink, so the freed space is about this.
const LAYER: usize = 4 * 1024 * 1024;

fn body(run: u32) -> String {
    body_with(run, "2099-01-01 03:00:00", false)
}

fn body_with(run: u32, schedule: &str, delete_untagged: bool) -> String {
    format!(
        r#"
resource "docker_registry" "r" {{
  name   = "NAME"
  region = "nyc3"
  fqdn   = "FQDN"
  users = {{
    admin  = {{ password = "{ADMIN_PW}" }}
    reader = {{ password = "{READER_PW}", access = "pull" }}
    looper = {{ password = "{LOOPER_PW}", access = "pull" }}
  }}
  tls {{ source = "self_signed" }}
  garbage_collection {{
    # Far away at first: this test's collections are the ones it asks for, and systemd
    # still has to accept the timer when the converge starts it.
    schedule        = "{schedule}"
    delete_untagged = {delete_untagged}
    run             = {run}
  }}
}}
"#
    )
}

fn https_client(ca_pem: &str, fqdn: &str, ip: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(fqdn, format!("{ip}:443").parse().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// What one push attempt during the collection ended with.
enum Pushed {
    Ok { reference: String, digest: String },
    Refused(String),
}

#[test]
fn delete_then_collect_frees_space_with_no_failed_pull_and_no_corrupt_push() {
    let fx = Fixture::new();
    fx.config(&body(0));
    fx.apply();
    let v = fx.values();
    let ip = v["ipv4_address"].as_str().unwrap().to_owned();
    let ca = v["ca_certificate_pem"].as_str().unwrap().to_owned();
    assert!(v["garbage_collection_last_run"].is_null(), "{v}");
    let admin = format!("admin:{ADMIN_PW}");
    let reader = format!("reader:{READER_PW}");

    // Two tags sharing nothing (each its own random layer and config).
    let work = tempfile::tempdir().unwrap();
    let sk = fx.skopeo(Some(&ca));
    let mut digests = Vec::new();
    for tag in ["gone", "kept"] {
        let dir = work.path().join(tag);
        make_oci_image(&dir, LAYER);
        let out = sk.push(&dir, &format!("{}/acc/app:{tag}", fx.fqdn), Some(&admin));
        assert!(out.status.success(), "push {tag}: {}", text(&out));
        digests.push(sk.pushed_digest());
    }
    let (gone, kept) = (digests[0].clone(), digests[1].clone());
    let gone_ref = format!("{}/acc/app@{gone}", fx.fqdn);
    let kept_ref = format!("{}/acc/app@{kept}", fx.fqdn);
    let raw = sk.inspect_raw(&gone_ref, Some(&reader));
    assert!(raw.status.success(), "{}", text(&raw));
    let gone_layer: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let gone_layer = gone_layer["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();

    // A pull user may not delete; a push user may (by digest, as docker's API does).
    let out = sk.run(&[
        "delete",
        &format!("--cert-dir={}", sk.cert_dir.display()),
        &format!("--creds={reader}"),
        &format!("docker://{gone_ref}"),
    ]);
    assert!(!out.status.success(), "the pull user deleted a manifest");
    let said = text(&out);
    assert!(
        ["401", "403", "denied", "unauthorized"]
            .iter()
            .any(|w| said.to_lowercase().contains(w)),
        "{said}"
    );
    assert!(sk.inspect_raw(&gone_ref, Some(&reader)).status.success());
    let out = sk.run(&[
        "delete",
        &format!("--cert-dir={}", sk.cert_dir.display()),
        &format!("--creds={admin}"),
        &format!("docker://{gone_ref}"),
    ]);
    assert!(out.status.success(), "delete as admin: {}", text(&out));
    assert!(!sk.inspect_raw(&gone_ref, Some(&reader)).status.success());

    // Pulls of the kept image (whole: manifest and blobs) loop through the collection.
    let stop = Arc::new(AtomicBool::new(false));
    let pull_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let pulls = {
        let (stop, failures) = (stop.clone(), pull_failures.clone());
        let sk = fx.skopeo(Some(&ca));
        let (reference, creds) = (kept_ref.clone(), format!("looper:{LOOPER_PW}"));
        std::thread::spawn(move || {
            let mut n = 0;
            let scratch = tempfile::tempdir().unwrap();
            while !stop.load(Ordering::SeqCst) {
                let began = Instant::now();
                let dest = scratch.path().join(format!("pull-{n}"));
                let out = sk.pull(&reference, &dest, Some(&creds));
                if out.status.success() {
                    n += 1;
                } else {
                    failures.lock().unwrap().push(text(&out));
                }
                let _ = std::fs::remove_dir_all(&dest);
                // Paced under the token endpoint's 10 a second per client.
                if let Some(rest) = Duration::from_millis(400).checked_sub(began.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            n
        })
    };
    // And manifest GETs as fast as one client goes (one token, no skopeo start-up): the
    // registry's restart lasts a fraction of a second, which paced pulls can miss.
    let fast_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let fast = {
        let (stop, failures) = (stop.clone(), fast_failures.clone());
        let http = https_client(&ca, &fx.fqdn, &ip);
        let token = token_for(
            &http,
            &fx.fqdn,
            "looper",
            LOOPER_PW,
            "repository:acc/app:pull",
        );
        let url = format!("https://{}/v2/acc/app/manifests/{kept}", fx.fqdn);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = http
                    .get(&url)
                    .bearer_auth(&token)
                    .header("Accept", "application/vnd.oci.image.manifest.v1+json")
                    .send();
                match r {
                    Ok(r) if r.status().as_u16() == 200 => n += 1,
                    Ok(r) => failures.lock().unwrap().push(format!(
                        "{}: {}",
                        r.status(),
                        r.text().unwrap_or_default()
                    )),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
            n
        })
    };
    // Pushes keep starting through the collection: each ends pushed or refused with the
    // collector's 503; an upload's first request shows the Retry-After.
    let pushes = {
        let stop = stop.clone();
        let sk = fx.skopeo(Some(&ca));
        let (fqdn, admin, work) = (fx.fqdn.clone(), admin.clone(), work.path().to_owned());
        let http = https_client(&ca, &fx.fqdn, &ip);
        std::thread::spawn(move || {
            let mut results = Vec::new();
            let mut retry_after = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let dir = work.join(format!("during-{i}"));
                make_oci_image(&dir, 256 * 1024);
                let reference = format!("{fqdn}/acc/during:{i}");
                let out = sk.push(&dir, &reference, Some(&admin));
                if out.status.success() {
                    results.push(Pushed::Ok {
                        reference,
                        digest: sk.pushed_digest(),
                    });
                } else {
                    results.push(Pushed::Refused(text(&out)));
                }
                let token = token_for(
                    &http,
                    &fqdn,
                    "admin",
                    ADMIN_PW,
                    "repository:acc/probe:pull,push",
                );
                let r = http
                    .post(format!("https://{fqdn}/v2/acc/probe/blobs/uploads/"))
                    .bearer_auth(token)
                    .send()
                    .unwrap();
                if r.status().as_u16() == 503 {
                    let after = r
                        .headers()
                        .get("retry-after")
                        .map(|h| h.to_str().unwrap_or_default().to_owned());
                    retry_after.push((after, r.text().unwrap_or_default()));
                }
                let _ = std::fs::remove_dir_all(&dir);
                std::thread::sleep(Duration::from_millis(300));
            }
            (results, retry_after)
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    // One collection, asked for through the plan.
    fx.config(&body(1));
    let began = Instant::now();
    let (ok, out) = fx.tf.apply_logged("gc-apply.log", "info");
    let took = began.elapsed();
    assert!(ok, "apply with a collection failed:\n{out}");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let pulled = pulls.join().unwrap();
    let fast_ok = fast.join().unwrap();
    let (pushed, retry_after) = pushes.join().unwrap();
    assert!(out.contains("1 changed"), "{out}");
    let fast_failed = fast_failures.lock().unwrap().clone();
    eprintln!(
        "gc: apply with one collection took {:.1} s; {pulled} pulls, {fast_ok} manifest GETs ({} failed), {} pushes meanwhile",
        took.as_secs_f64(),
        fast_failed.len(),
        pushed.len()
    );

    // Pulls: none failed.
    let failures = pull_failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} pulls failed across the collection: {:?}",
        failures.len(),
        pulled + failures.len(),
        failures.first()
    );
    assert!(pulled >= 3, "only {pulled} pulls ran across the collection");
    assert!(
        fast_failed.is_empty(),
        "{} of {} manifest GETs failed across the collection: {:?}",
        fast_failed.len(),
        fast_ok + fast_failed.len(),
        fast_failed.first()
    );
    assert!(
        fast_ok >= 100,
        "only {fast_ok} manifest GETs ran across the collection"
    );

    // The space: about the deleted image (its layer, config and manifest).
    let v = fx.values();
    let freed = v["garbage_collection_freed_bytes"]
        .as_i64()
        .expect("freed bytes");
    let layer = LAYER as i64;
    assert!(
        freed >= layer * 9 / 10 && freed <= layer + 1024 * 1024,
        "freed {freed} bytes for a {layer}-byte layer"
    );
    let last = v["garbage_collection_last_run"].as_str().expect("last run");
    let at = time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{last}: {e}"));
    let age = time::OffsetDateTime::now_utc() - at;
    assert!(age.whole_seconds().abs() < 600, "last run {last}");

    // The kept image pulls by digest, whole; the deleted layer is gone, not served from the
    // registry's cache (the restart).
    let dest = work.path().join("kept-after");
    let out = sk.pull(&kept_ref, &dest, Some(&reader));
    assert!(
        out.status.success(),
        "pull of the kept image: {}",
        text(&out)
    );
    let raw = sk.inspect_raw(&kept_ref, Some(&reader));
    assert_eq!(manifest_digest(&raw.stdout), kept);
    let http = https_client(&ca, &fx.fqdn, &ip);
    let token = token_for(
        &http,
        &fx.fqdn,
        "reader",
        READER_PW,
        "repository:acc/app:pull",
    );
    let status = http
        .head(format!("https://{}/v2/acc/app/blobs/{gone_layer}", fx.fqdn))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 404, "the deleted image's layer is still served");

    // Pushes during the collection: refused with the collector's message, or whole.
    let mut refused = 0;
    for p in &pushed {
        match p {
            Pushed::Refused(why) => {
                refused += 1;
                assert!(
                    why.contains("503") || why.contains("garbage collection"),
                    "a push failed without the collector's 503: {why}"
                );
            }
            Pushed::Ok { reference, digest } => {
                let dest = work
                    .path()
                    .join(format!("check-{}", digest.replace(':', "-")));
                let out = sk.pull(reference, &dest, Some(&reader));
                assert!(
                    out.status.success(),
                    "{reference} pushed during the collection does not pull: {}",
                    text(&out)
                );
                let raw = sk.inspect_raw(reference, Some(&reader));
                assert_eq!(&manifest_digest(&raw.stdout), digest, "{reference}");
            }
        }
    }
    assert!(
        !retry_after.is_empty() || refused > 0,
        "no push met the collection: the test did not exercise it ({} pushes)",
        pushed.len()
    );
    for (after, body) in &retry_after {
        assert_eq!(after.as_deref(), Some("30"), "{body}");
        assert!(body.contains("garbage collection in progress"), "{body}");
    }
    eprintln!(
        "gc: {} pushes during the collection, {refused} refused with 503, {} upload starts answered 503 + Retry-After",
        pushed.len(),
        retry_after.len()
    );

    // The collector checked every tag after the restart (the kept one at least), found none
    // broken (else the apply would have failed naming it).
    let log = std::fs::read_to_string(fx.tf.dir.path().join("gc-apply.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("garbage collected"))
        .unwrap_or_else(|| panic!("no collection in the provider's log"));
    let checked: i64 = line
        .split("tags_checked")
        .nth(1)
        .and_then(|rest| rest.split("Some(").nth(1))
        .and_then(|n| n.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tag count in {line}"));
    assert!(checked >= 1, "{line}");
    eprintln!("gc: the collector checked {checked} tags after the restart, none broken");

    // Read finds the same run: nothing to plan.
    let (code, plan) = fx.plan_code();
    assert_eq!(code, 0, "plan after the collection is not empty:\n{plan}");

    // The schedule: a tag moved to another image leaves the first one untagged; a timer due
    // in a moment, with delete_untagged, collects it with no apply.
    let moving = format!("{}/acc/app:moving", fx.fqdn);
    let mut untagged = String::new();
    for i in 0..2 {
        let dir = work.path().join(format!("moving-{i}"));
        make_oci_image(&dir, LAYER / 4);
        let out = sk.push(&dir, &moving, Some(&admin));
        assert!(out.status.success(), "push {moving}: {}", text(&out));
        if i == 0 {
            untagged = sk.pushed_digest();
        }
    }
    let untagged_ref = format!("{}/acc/app@{untagged}", fx.fqdn);
    assert!(sk
        .inspect_raw(&untagged_ref, Some(&reader))
        .status
        .success());
    let due = time::OffsetDateTime::now_utc() + Duration::from_secs(45);
    let schedule = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        due.year(),
        u8::from(due.month()),
        due.day(),
        due.hour(),
        due.minute(),
        due.second()
    );
    fx.config(&body_with(1, &schedule, true));
    let out = fx.apply();
    assert!(out.contains("1 changed"), "{out}");
    let first_run = last.to_owned();
    let waited = Instant::now();
    let v = loop {
        std::thread::sleep(Duration::from_secs(5));
        let (ok, out) = fx.tf.run_text(&[
            "apply",
            "-refresh-only",
            "-auto-approve",
            "-no-color",
            "-input=false",
        ]);
        assert!(ok, "refresh failed:\n{out}");
        let v = fx.values();
        if v["garbage_collection_last_run"].as_str() != Some(first_run.as_str()) {
            break v;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(150),
            "the timer due at {schedule} did not collect (last run still {first_run})"
        );
    };
    let freed = v["garbage_collection_freed_bytes"]
        .as_i64()
        .expect("freed bytes");
    let quarter = (LAYER / 4) as i64;
    assert!(
        freed >= quarter * 9 / 10 && freed <= quarter + 512 * 1024,
        "the scheduled run freed {freed} bytes for an untagged {quarter}-byte layer"
    );
    assert!(
        !sk.inspect_raw(&untagged_ref, Some(&reader))
            .status
            .success(),
        "the untagged manifest survived delete_untagged"
    );
    for reference in [&moving, &kept_ref] {
        let out = sk.inspect_raw(reference, Some(&reader));
        assert!(
            out.status.success(),
            "{reference} after the scheduled run: {}",
            text(&out)
        );
    }
    eprintln!(
        "gc: the timer due at {schedule} ran {:.0} s after the apply; freed {freed} bytes",
        waited.elapsed().as_secs_f64()
    );
    fx.destroy_and_check_nothing_left();
}

/// A schedule systemd would not take is refused by `tofu validate`, naming the attribute.
#[test]
fn tofu_validate_names_a_bad_schedule() {
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
    schedule = "every sunday at 3"
  }
}
"#
    ));
    let (ok, out) = tf.run_text(&["validate", "-no-color"]);
    assert!(!ok, "tofu validate should fail:\n{out}");
    assert!(
        out.contains("Invalid `garbage_collection.schedule`"),
        "{out}"
    );
    assert!(
        out.contains("garbage_collection[0].schedule") || out.contains("schedule = "),
        "{out}"
    );
}
