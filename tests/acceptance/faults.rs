//! Faults end to end (issue #11): each apply succeeds or fails naming the object and what to
//! do, the next apply converges, and destroy leaves nothing. Faults act on whatever request or
//! droplet comes next, so each test has a localocean of its own.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::registry::{Fixture, ADMIN_PW};
use crate::support::localocean::Ocean;

/// Every fault armed on this instance, with how often it fired.
fn faults(fx: &Fixture) -> Vec<Value> {
    let url = format!("{}/_localocean/faults", fx.lo.api_url);
    let body: Value = reqwest::blocking::get(url).unwrap().json().unwrap();
    body.as_array()
        .cloned()
        .or_else(|| body["faults"].as_array().cloned())
        .unwrap_or_default()
}

/// `update` bounds the SSH-refused update; a new droplet needs longer.
fn body(users: &str, update: &str) -> String {
    format!(
        r#"
resource "docker_registry" "r" {{
  name   = "NAME"
  region = "nyc3"
  fqdn   = "FQDN"
  users = {{ {users} }}
  tls {{ source = "self_signed" }}
  timeouts {{
    create = "6m"
    update = "{update}"
  }}
}}
"#
    )
}

/// `out` with its line wrapping undone (OpenTofu wraps diagnostics).
fn words(out: &str) -> String {
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The A record of the registry's fqdn: (id, data).
fn a_record(fx: &Fixture) -> Vec<(u64, String)> {
    fx.lo
        .records(&fx.domain)
        .into_iter()
        .filter(|r| r["type"] == "A")
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// One registry through an API storm at create (429 with Retry-After on the droplet's create,
/// HTML 502 pages on its reads, the new droplet 404 for a while, a slow boot), then its droplet
/// deleted by hand (plan says so, apply boots a new one for the same record, firewall and
/// keys), then SSH refused during an update (the apply fails naming the droplet; the next one
/// converges), then destroy leaving nothing.
#[test]
fn api_storms_a_droplet_deleted_by_hand_and_refused_ssh_are_survived() {
    let fx = Fixture::on(Ocean::own());
    for spec in [
        json!({ "kind": "http", "method": "POST", "path_prefix": "/v2/droplets",
                "status": 429, "count": 3, "retry_after": 1 }),
        json!({ "kind": "http", "method": "GET", "path_prefix": "/v2/droplets/",
                "status": 502, "count": 2 }),
        json!({ "kind": "droplet_404", "seconds": 8 }),
        json!({ "kind": "boot_delay", "seconds": 8 }),
    ] {
        fx.lo.arm_fault(spec);
    }
    let admin = format!("admin = {{ password = \"{ADMIN_PW}\" }}");
    fx.config(&body(&admin, "5m"));
    fx.apply();
    for f in faults(&fx) {
        assert!(
            f["fired"].as_u64().unwrap_or(0) > 0,
            "a fault never fired: {f}"
        );
    }
    let (code, out) = fx.plan_code();
    assert_eq!(code, 0, "plan after the create is not empty:\n{out}");
    let v = fx.values();
    let first = v["droplet_id"].as_u64().unwrap();
    let firewall = v["firewall_id"].as_str().unwrap().to_owned();
    let record = v["record_id"].as_u64().unwrap();

    // Deleted by hand: the state keeps the rest, and the plan says why a droplet is made.
    let (status, b) = fx.lo.api("DELETE", &format!("/v2/droplets/{first}"), None);
    assert_eq!(status, 204, "{b}");
    let (code, out) = fx.plan_code();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("Droplet ({first}) is gone")), "{out}");
    assert!(out.contains("droplet is gone"), "{out}");
    assert!(
        !out.contains("must be replaced"),
        "the registry itself is not replaced:\n{out}"
    );
    fx.apply();
    let v = fx.values();
    let second = v["droplet_id"].as_u64().unwrap();
    assert_ne!(second, first);
    assert_eq!(v["firewall_id"].as_str().unwrap(), firewall);
    assert_eq!(v["record_id"].as_u64().unwrap(), record);
    let ip = v["ipv4_address"].as_str().unwrap().to_owned();
    assert_eq!(a_record(&fx), vec![(record, ip.clone())]);
    let droplets = fx.droplets();
    assert_eq!(droplets.len(), 1, "{droplets:?}");
    let (code, out) = fx.plan_code();
    assert_eq!(code, 0, "plan after the new droplet is not empty:\n{out}");

    // SSH refused during an update: the apply fails naming the droplet, the state stays
    // usable, and once SSH answers again the next apply converges. (The refresh before the
    // update spends its own time trying SSH: the refusal outlasts both.)
    let refused_at = Instant::now();
    let refusal = Duration::from_secs(80);
    fx.lo.arm_fault(json!({
        "kind": "ssh_refused", "droplet_id": second, "seconds": refusal.as_secs()
    }));
    let users = format!("{admin}\n    reader = {{ password = \"reader-password-0002\" }}");
    fx.config(&body(&users, "20s"));
    let (ok, out) = fx
        .tf
        .run_text(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    assert!(!ok, "apply should fail while SSH is refused:\n{out}");
    assert!(
        out.contains(&format!("({second})")) || out.contains(&ip),
        "the error does not name droplet {second}:\n{out}"
    );
    assert!(words(&out).contains("run `apply` again"), "{out}");
    assert_eq!(fx.values()["droplet_id"].as_u64(), Some(second));
    if let Some(left) = refusal.checked_sub(refused_at.elapsed()) {
        std::thread::sleep(left + Duration::from_secs(2));
    }
    fx.apply();
    let (code, out) = fx.plan_code();
    assert_eq!(code, 0, "plan after the repair is not empty:\n{out}");
    assert_eq!(fx.droplets().len(), 1);

    fx.destroy_and_check_nothing_left();
}

/// A droplet whose boot errors at create, then a droplet replacement whose old droplet cannot
/// be deleted after the record switch (the API
/// answers 500 to every DELETE): the apply succeeds with a warning, the state holds the new
/// droplet and lists the old one in `retired_droplet_ids`; the next plan says it deletes it,
/// the next apply does, and destroy leaves nothing.
#[test]
fn a_boot_error_then_an_old_droplet_left_after_the_record_switch_are_recovered_next_apply() {
    let fx = Fixture::on(Ocean::own());
    let body = |generation: u32| {
        format!(
            r#"
resource "docker_registry" "r" {{
  name   = "NAME"
  region = "nyc3"
  fqdn   = "FQDN"
  droplet_generation = {generation}
  users = {{ admin = {{ password = "{ADMIN_PW}" }} }}
  tls {{ source = "self_signed" }}
}}
"#
        )
    };
    // First a droplet whose boot errors: the apply fails naming it, the next one converges.
    // The provider watches the droplet's create action, so the failure comes as soon as the
    // action errors, long before the create timeout.
    fx.lo.arm_fault(json!({ "kind": "boot_error" }));
    let create_timeout = Duration::from_secs(600);
    fx.config(&body(1).replace("tls {", "timeouts {\n    create = \"10m\"\n  }\n  tls {"));
    let started = Instant::now();
    let (ok, out) = fx
        .tf
        .run_text(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    let took = started.elapsed();
    eprintln!("boot error: the apply failed after {took:?} (create timeout {create_timeout:?})");
    assert!(!ok, "apply should fail when the boot errors:\n{out}");
    let said = words(&out);
    assert!(
        said.contains("waiting for droplet (") && said.contains("to become active"),
        "the error does not name the droplet:\n{out}"
    );
    assert!(said.contains("(create) errored"), "{out}");
    assert!(
        took < create_timeout / 5,
        "the errored boot failed only after {took:?}:\n{out}"
    );
    assert!(said.contains("run `apply` again"), "{out}");
    fx.config(&body(1));
    fx.apply();
    assert_eq!(fx.droplets().len(), 1, "{:?}", fx.droplets());
    let old = fx.values()["droplet_id"].as_u64().unwrap();
    fx.lo.arm_fault(json!({
        "kind": "http", "method": "DELETE", "path_prefix": "/v2/droplets/",
        "status": 500, "count": 1000
    }));
    fx.config(&body(2));
    let out = fx.apply();
    assert!(out.contains("The old droplet was not deleted"), "{out}");
    assert!(out.contains(&format!("({old})")), "{out}");
    let v = fx.values();
    let new = v["droplet_id"].as_u64().unwrap();
    assert_ne!(new, old);
    assert_eq!(v["retired_droplet_ids"], json!([old]), "{v}");
    let ip = v["ipv4_address"].as_str().unwrap().to_owned();
    let a: Vec<String> = a_record(&fx).into_iter().map(|(_, d)| d).collect();
    assert_eq!(a, vec![ip], "the record does not point at the new droplet");

    let url = format!("{}/_localocean/faults", fx.lo.api_url);
    reqwest::blocking::Client::new().delete(url).send().unwrap();
    let (code, out) = fx.plan_code();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Old droplets will be deleted"), "{out}");
    fx.apply();
    let ids: Vec<u64> = fx
        .droplets()
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![new], "the old droplet is still there");
    assert_eq!(fx.values()["retired_droplet_ids"], json!([]));
    let (code, out) = fx.plan_code();
    assert_eq!(code, 0, "{out}");
    fx.destroy_and_check_nothing_left();
}
