//! Backups and snapshots end to end (issue #13): a registry on a volume with weekly droplet
//! backups; a `docker_registry_snapshot` applied under a loop of pulls (none fails; a push
//! meanwhile gets 503 with Retry-After and succeeds after); a second registry made from the
//! snapshot serves the same digests (and not what was pushed after it); import by id; destroy
//! leaves nothing, the snapshot included.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::registry::{Fixture, ADMIN_PW};
use crate::support::docker::token_for;
use crate::support::registry_client::{make_oci_image, manifest_digest, text};

const READER_PW: &str = "reader-password-1301";

fn registry(name: &str, fqdn: &str, storage_extra: &str, extra: &str) -> String {
    format!(
        r#"
resource "docker_registry" "{name}" {{
  name   = "NAME{suffix}"
  region = "nyc3"
  fqdn   = "{fqdn}"
  users = {{
    admin  = {{ password = "{ADMIN_PW}" }}
    reader = {{ password = "{READER_PW}", access = "pull" }}
  }}
  tls {{ source = "self_signed" }}
  storage {{
    backend       = "volume"
    size_gib      = 1
    force_destroy = true
{storage_extra}
  }}
{extra}
}}
"#,
        suffix = if name == "r" { "" } else { "-b" },
    )
}

const BACKUPS: &str = r#"  backups {
    plan    = "weekly"
    weekday = "SUN"
    hour    = 4
  }"#;

const SNAPSHOT: &str = r#"
resource "docker_registry_snapshot" "s" {
  name            = "NAME-snap-1"
  volume_id       = docker_registry.r.volume_id
  droplet_address = docker_registry.r.ipv4_address
  ssh_private_key = docker_registry.r.management_private_key
  host_public_key = docker_registry.r.host_public_key
}
"#;

fn https_client(ca_pem: &str, fqdn: &str, ip: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(fqdn, format!("{ip}:443").parse().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[test]
fn a_snapshot_under_pulls_makes_a_registry_with_the_same_digests() {
    let fx = Fixture::new();
    let fqdn2 = format!("restored.{}", fx.domain);
    let first = registry("r", "FQDN", "", BACKUPS);
    fx.config(&first);
    fx.apply();
    let v = fx.tf.values_of("docker_registry.r");
    let ip = v["ipv4_address"].as_str().unwrap().to_owned();
    let ca = v["ca_certificate_pem"].as_str().unwrap().to_owned();
    let volume_id = v["volume_id"].as_str().unwrap().to_owned();
    let droplet_id = v["droplet_id"].as_u64().unwrap();

    // Backups: as configured, on DigitalOcean's side.
    let (status, policy) = fx.lo.api(
        "GET",
        &format!("/v2/droplets/{droplet_id}/backups/policy"),
        None,
    );
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["policy"]["backup_enabled"], true, "{policy}");
    let p = &policy["policy"]["backup_policy"];
    assert_eq!(
        (&p["plan"], &p["weekday"], &p["hour"]),
        (&Value::from("weekly"), &Value::from("SUN"), &Value::from(4)),
        "{policy}"
    );

    // Drift: a policy changed elsewhere shows in the plan, and apply puts the configuration
    // back. Then a change in place: the same droplet, the new policy.
    let policy_of = || {
        let (_, p) = fx.lo.api(
            "GET",
            &format!("/v2/droplets/{droplet_id}/backups/policy"),
            None,
        );
        p["policy"].clone()
    };
    let (status, body) = fx.lo.api(
        "POST",
        &format!("/v2/droplets/{droplet_id}/actions"),
        Some(serde_json::json!({"type": "change_backup_policy",
                                "backup_policy": {"plan": "daily", "hour": 8}})),
    );
    assert_eq!(status, 201, "{body}");
    let (code, plan) = fx.plan_code();
    assert_eq!(code, 2, "a policy changed by hand does not show:\n{plan}");
    assert!(plan.contains("backups"), "{plan}");
    assert!(!plan.contains("must be replaced"), "{plan}");
    fx.apply();
    assert_eq!(policy_of()["backup_policy"]["plan"], "weekly");
    let daily = BACKUPS
        .replace("\"weekly\"", "\"daily\"")
        .replace("    weekday = \"SUN\"\n", "")
        .replace("= 4", "= 20");
    let first = registry("r", "FQDN", "", &daily);
    fx.config(&first);
    let out = fx.apply();
    assert!(out.contains("1 changed"), "{out}");
    let now = policy_of();
    assert_eq!(now["backup_policy"]["plan"], "daily", "{now}");
    assert_eq!(now["backup_policy"]["hour"], 20, "{now}");
    assert_eq!(
        fx.tf.values_of("docker_registry.r")["droplet_id"].as_u64(),
        Some(droplet_id),
        "the droplet was replaced for a backup policy"
    );

    // An image on the volume.
    let admin = format!("admin:{ADMIN_PW}");
    let reader = format!("reader:{READER_PW}");
    let work = tempfile::tempdir().unwrap();
    let sk = fx.skopeo(Some(&ca));
    let image = work.path().join("app");
    make_oci_image(&image, 2 * 1024 * 1024);
    let app = format!("{}/acc/app:1", fx.fqdn);
    let out = sk.push(&image, &app, Some(&admin));
    assert!(out.status.success(), "push: {}", text(&out));
    let digest = sk.pushed_digest();

    // Whole pulls (manifest and blobs) loop while the snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let pull_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let pulls = {
        let (stop, failures) = (stop.clone(), pull_failures.clone());
        let sk = fx.skopeo(Some(&ca));
        let (reference, creds) = (app.clone(), reader.clone());
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
                if let Some(rest) = Duration::from_millis(300).checked_sub(began.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            n
        })
    };
    // Upload starts as fast as one client goes: during the pause each is refused with 503.
    let refusals = {
        let stop = stop.clone();
        let http = https_client(&ca, &fx.fqdn, &ip);
        let token = token_for(
            &http,
            &fx.fqdn,
            "admin",
            ADMIN_PW,
            "repository:acc/probe:pull,push",
        );
        let url = format!("https://{}/v2/acc/probe/blobs/uploads/", fx.fqdn);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut accepted = 0;
            while !stop.load(Ordering::SeqCst) {
                if let Ok(r) = http.post(&url).bearer_auth(&token).send() {
                    match r.status().as_u16() {
                        503 => {
                            let after = r
                                .headers()
                                .get("retry-after")
                                .map(|h| h.to_str().unwrap_or_default().to_owned());
                            seen.push((after, r.text().unwrap_or_default()));
                        }
                        202 => accepted += 1,
                        _ => {}
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (seen, accepted)
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    fx.config(&format!("{first}\n{SNAPSHOT}"));
    let began = Instant::now();
    let out = fx.apply();
    let took = began.elapsed();
    assert!(out.contains("1 added"), "{out}");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let pulled = pulls.join().unwrap();
    let (refused, accepted) = refusals.join().unwrap();
    let failures = pull_failures.lock().unwrap().clone();
    let s = fx.tf.values_of("docker_registry_snapshot.s");
    let snap_id = s["id"].as_str().expect("snapshot id").to_owned();
    eprintln!(
        "snapshots: apply took {:.1} s ({}); {pulled} pulls ({} failed), {} upload starts refused, {accepted} accepted",
        took.as_secs_f64(),
        s["quiesce"],
        failures.len(),
        refused.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} pulls failed across the snapshot: {:?}",
        failures.len(),
        pulled + failures.len(),
        failures.first()
    );
    assert!(pulled >= 3, "only {pulled} pulls ran across the snapshot");
    assert!(
        !refused.is_empty(),
        "no upload start met the pause: the test did not exercise it"
    );
    for (after, body) in &refused {
        assert_eq!(after.as_deref(), Some("10"), "{body}");
        assert!(body.contains("volume snapshot"), "{body}");
    }
    assert!(accepted > 0, "no upload start before or after the pause");
    assert!(
        ["fsfreeze", "sync"].contains(&s["quiesce"].as_str().unwrap_or_default()),
        "{s}"
    );
    assert_eq!(s["volume_id"], volume_id.as_str());
    assert!(s["created_at"].is_string(), "{s}");
    assert_eq!(s["min_disk_size"], 1, "{s}");
    let (status, on_do) = fx.lo.api("GET", &format!("/v2/snapshots/{snap_id}"), None);
    assert_eq!(status, 200, "{on_do}");
    assert_eq!(on_do["snapshot"]["resource_id"], volume_id.as_str());
    // Writes resumed: a push after the snapshot succeeds (and is not in it).
    let later = work.path().join("later");
    make_oci_image(&later, 64 * 1024);
    let after_ref = format!("{}/acc/app:after", fx.fqdn);
    let out = sk.push(&later, &after_ref, Some(&admin));
    assert!(
        out.status.success(),
        "push after the snapshot: {}",
        text(&out)
    );

    // A second registry whose volume starts from the snapshot.
    let second = registry(
        "b",
        &fqdn2,
        "    volume_snapshot_id = docker_registry_snapshot.s.id",
        "",
    );
    fx.config(&format!("{first}\n{SNAPSHOT}\n{second}"));
    let out = fx.apply();
    assert!(out.contains("1 added"), "{out}");
    let b = fx.tf.values_of("docker_registry.b");
    assert_ne!(b["volume_id"], volume_id.as_str());
    let ca2 = b["ca_certificate_pem"].as_str().unwrap().to_owned();
    let sk2 = fx.skopeo(Some(&ca2));
    let restored = format!("{fqdn2}/acc/app:1");
    let raw = sk2.inspect_raw(&restored, Some(&reader));
    assert!(raw.status.success(), "{}", text(&raw));
    assert_eq!(
        manifest_digest(&raw.stdout),
        digest,
        "the restored registry serves another digest"
    );
    let out = sk2.pull(&restored, &work.path().join("restored"), Some(&reader));
    assert!(
        out.status.success(),
        "pull from the restored registry: {}",
        text(&out)
    );
    let out = sk2.inspect_raw(&format!("{fqdn2}/acc/app:after"), Some(&reader));
    assert!(
        !out.status.success(),
        "a tag pushed after the snapshot is in the registry made from it"
    );
    let (code, plan) = fx.plan_code();
    assert_eq!(code, 0, "plan after apply is not empty:\n{plan}");

    // Import by id: the snapshot comes back without replacement (the connection arguments
    // are the configuration's, stored in place).
    let (ok, out) = fx
        .tf
        .run_text(&["state", "rm", "-no-color", "docker_registry_snapshot.s"]);
    assert!(ok, "{out}");
    let (ok, out) = fx.tf.run_text(&[
        "import",
        "-no-color",
        "-input=false",
        "docker_registry_snapshot.s",
        &snap_id,
    ]);
    assert!(ok, "import failed:\n{out}");
    let imported = fx.tf.values_of("docker_registry_snapshot.s");
    assert_eq!(imported["volume_id"], volume_id.as_str(), "{imported}");
    assert_eq!(imported["name"], s["name"], "{imported}");
    let (code, plan) = fx.plan_code();
    assert!(code == 0 || code == 2, "{plan}");
    assert!(!plan.contains("must be replaced"), "{plan}");
    fx.apply();

    // Destroy: the registries, their volumes and the snapshot.
    fx.destroy_and_check_nothing_left();
    assert!(
        fx.lo.volumes_of(&fx.name).is_empty(),
        "volumes left: {:?}",
        fx.lo.volumes_of(&fx.name)
    );
    let (status, _) = fx.lo.api("GET", &format!("/v2/snapshots/{snap_id}"), None);
    assert_eq!(status, 404, "the snapshot outlived destroy");
    let (_, all) = fx.lo.api(
        "GET",
        "/v2/snapshots?resource_type=volume&per_page=200",
        None,
    );
    let left: Vec<&Value> = all["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["resource_id"] == volume_id.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "snapshots left: {left:?}");
}
