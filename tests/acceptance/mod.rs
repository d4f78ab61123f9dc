//! Acceptance tests: OpenTofu drives the built provider against localocean (real droplets),
//! skopeo pushes and pulls. The tests share the binary's localocean, each with names of its
//! own and checking only what it made; a test that arms faults has an instance of its own.

mod bench;
mod certificates;
mod docker;
mod faults;
mod gc;
mod import;
mod registry;
mod renewal;
mod replicas;
mod retention;
mod secrets;
mod seed_module;
mod snapshots;
mod storage;
mod ui;
mod users;

use crate::support::tofu::Tofu;

pub const PROVIDER_BLOCK: &str = r#"
terraform {
  required_providers {
    docker = { source = "anchorage/docker" }
  }
}
"#;

#[test]
fn tofu_validate_and_plan_load_the_built_provider() {
    let tf = Tofu::new(&format!(
        "{PROVIDER_BLOCK}\nprovider \"docker\" {{\n  token = \"dop_v1_test\"\n  api_endpoint = \"http://127.0.0.1:9\"\n  http_retry_max = 2\n}}\n"
    ));
    let (ok, out) = tf.run_text(&["validate", "-no-color"]);
    assert!(ok, "tofu validate failed:\n{out}");
    assert!(
        out.contains("Provider development overrides are in effect"),
        "dev_overrides not used:\n{out}"
    );
    let (ok, out) = tf.run_text(&["plan", "-no-color", "-input=false"]);
    assert!(ok, "tofu plan failed:\n{out}");
    assert!(out.contains("No changes"), "{out}");
}

#[test]
fn tofu_validate_names_a_bad_provider_argument() {
    let tf = Tofu::new(&format!(
        "{PROVIDER_BLOCK}\nprovider \"docker\" {{\n  api_endpoint = \"not a url\"\n  http_retry_max = -1\n}}\n{}",
        r#"
resource "docker_registry" "r" {
  name   = "registry"
  region = "ams3"
  fqdn   = "registry.example.com"
  tls { source = "self_signed" }
}
"#
    ));
    let (ok, out) = tf.run_text(&["validate", "-no-color"]);
    assert!(!ok, "tofu validate should fail:\n{out}");
    assert!(out.contains("Invalid `api_endpoint`"), "{out}");
    assert!(out.contains("Invalid `http_retry_max`"), "{out}");
}

/// The harness's config writer gives the baked image to registries that name none.
#[test]
fn each_registry_block_without_an_image_gets_the_image() {
    let hcl = "provider \"docker\" {}\nresource \"docker_registry\" \"a\" {\n  name = \"a\"\n  tls { source = \"self_signed\" }\n}\nresource \"docker_registry\" \"b\" {\n  image = \"debian-12-x64\"\n}\n";
    let out = crate::support::tofu::with_image(hcl, "3000042");
    assert_eq!(out.matches("image = \"3000042\"").count(), 1, "{out}");
    assert!(
        out.contains("\"a\" {\n  image = \"3000042\"\n  name = \"a\""),
        "{out}"
    );
    assert!(
        out.contains("\"b\" {\n  image = \"debian-12-x64\""),
        "{out}"
    );
}
