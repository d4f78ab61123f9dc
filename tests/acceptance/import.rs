//! Import end to end (issue #13): a registry on a volume with an image pushed, removed from
//! state, imported by its fqdn; the plan says the droplet will be replaced and why, the apply
//! moves the volume to a droplet of the provider's own, the image pulls again by digest, and
//! destroy leaves nothing.

use serde_json::Value;

use super::storage::StorageFixture;

const VOLUME: &str = "    backend  = \"volume\"\n    size_gib = 1\n    force_destroy = true";

#[test]
fn import_by_fqdn_then_apply_serves_the_volume_images_again_and_destroy_leaves_nothing() {
    let fx = StorageFixture::new(false);
    fx.config(1, VOLUME);
    let (ok, out) = fx.apply_logged("create.log");
    assert!(ok, "apply: {out}\n{}", fx.lo.log_tail());
    let before = fx.values();
    let (by_digest, _) = fx.push(128 * 1024);
    fx.pull(&by_digest);

    let (ok, out) = fx
        .tf
        .run_text(&["state", "rm", "-no-color", "docker_registry.r"]);
    assert!(ok, "state rm: {out}");
    let (ok, out) = fx.tf.run_text(&[
        "import",
        "-no-color",
        "-input=false",
        "docker_registry.r",
        &fx.fqdn,
    ]);
    assert!(ok, "import: {out}");
    assert!(out.contains("Import successful"), "{out}");
    assert!(
        out.contains("Imported: the next apply replaces the droplet"),
        "{out}"
    );
    let imported = fx.values();
    for attr in ["droplet_id", "firewall_id", "record_id", "volume_id"] {
        assert_eq!(imported[attr], before[attr], "{attr}");
    }
    assert_eq!(imported["management_private_key"], Value::Null);

    let (ok, out) = fx
        .tf
        .run_text(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
    assert!(!ok, "the plan must show changes:\n{out}");
    let said = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains("Warning: Imported: the droplet will be replaced")
            && said.contains("holds neither its management key nor its SSH host key")
            && said.contains(&format!(
                "the images on volume {}-registry-data are kept",
                fx.name
            )),
        "the plan does not say why:\n{out}"
    );
    assert!(said.contains("~ droplet_id"), "{out}");
    assert!(said.contains("1 to change, 0 to destroy"), "{out}");

    let (ok, out) = fx.apply_logged("takeover.log");
    assert!(ok, "apply after import: {out}\n{}", fx.lo.log_tail());
    let after = fx.values();
    assert_ne!(after["droplet_id"], before["droplet_id"], "not replaced");
    assert_eq!(after["volume_id"], before["volume_id"], "the volume stays");
    assert_eq!(after["firewall_id"], before["firewall_id"]);
    assert_eq!(fx.droplets().len(), 1, "{:?}", fx.droplets());
    fx.pull(&by_digest);

    // The registry is the provider's again: nothing more to do.
    let (ok, out) = fx
        .tf
        .run_text(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
    assert!(ok, "a second plan shows changes:\n{out}");

    let (ok, out) = fx.destroy();
    assert!(ok, "destroy: {out}");
    assert!(fx.droplets().is_empty(), "{:?}", fx.droplets());
    assert!(fx.lo.volumes_of(&fx.name).is_empty());
    assert!(fx.lo.firewalls_of(&fx.name).is_empty());
    let domain = fx.fqdn.split_once('.').unwrap().1;
    let records: Vec<Value> = fx
        .lo
        .records(domain)
        .into_iter()
        .filter(|r| r["type"] != "NS" && r["type"] != "SOA")
        .collect();
    assert!(records.is_empty(), "records left: {records:?}");
    let (_, keys) = fx.lo.api("GET", "/v2/spaces/keys", None);
    let left: Vec<&Value> = keys["keys"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter(|k| k["name"].as_str().unwrap_or("").starts_with(&fx.name))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "Spaces keys left: {left:?}");
}
