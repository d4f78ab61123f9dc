//! The seed's `module "registry"` block as its README writes it, with only `source` (this
//! repository's module) and a provider block changed: its own Spaces keys and bucket, its
//! `registry_http_secret`, docker login and push as `admin`, the catalog in a browser's way.

use std::time::Instant;

use serde_json::{json, Value};

use super::registry::ssh_pinned;
use super::PROVIDER_BLOCK;
use crate::support::docker::{docker_archive, ok, Dockerd};
use crate::support::localocean::unique_label;
use crate::support::localocean::Ocean;
use crate::support::pebble::{Pebble, PebbleOptions};
use crate::support::registry_client::text;
use crate::support::tofu::Tofu;

use terraform_provider_docker::secret::Secret;
use terraform_provider_docker::storage::spaces::S3;

/// As in the seed README.
const ADMIN_PW: &str = "SoMeP@SsW0rd";
/// The module's default `droplet_name`: the block does not set it.
const DROPLET_NAME: &str = "docker-registry";
const HTTP_SECRET: &str = "seed-shared-http-secret-0123456789";
const HTTP_SECRET_2: &str = "seed-rotated-http-secret-9876543210";

/// `tofu show -json`: the module's `docker_registry`, secrets included.
fn module_registry(tf: &Tofu) -> Value {
    let out = tf.run(&["show", "-json"]);
    assert!(out.status.success(), "tofu show: {}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["values"]["root_module"]["child_modules"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["address"] == "module.registry"))
        .and_then(|m| m["resources"].as_array())
        .and_then(|r| r.iter().find(|r| r["type"] == "docker_registry"))
        .map(|r| r["values"].clone())
        .unwrap_or_else(|| panic!("no docker_registry in module.registry: {v}"))
}

/// `curl` of `https://<fqdn><path>` at `ip`, trusting `ca`; `user` is `user:password`.
/// Returns (status, headers, body).
fn curl(
    fqdn: &str,
    ip: &str,
    ca: &std::path::Path,
    path: &str,
    user: Option<&str>,
) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{fqdn}:443:{ip}"), "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"]);
    if let Some(u) = user {
        cmd.args(["-u", u]);
    }
    let out = cmd.arg(format!("https://{fqdn}{path}")).output().unwrap();
    assert!(out.status.success(), "curl {path}: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        std::fs::read_to_string(&headers).unwrap().to_lowercase(),
        body.to_owned(),
    )
}

#[test]
fn the_seed_module_block_with_its_keys_secret_docker_and_catalog() {
    let lo = Ocean::shared();
    let label = unique_label();
    let domain = format!("{label}.test");
    lo.create_domain(&domain);
    let fqdn = format!("registry.{domain}");
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The seed user's Spaces key and bucket, made before the module: the module adopts the
    // bucket, so destroy must leave it and its contents.
    let (status, key) = lo.api(
        "POST",
        "/v2/spaces/keys",
        Some(json!({ "name": format!("{label}-owner"), "grants": [{ "bucket": "", "permission": "fullaccess" }] })),
    );
    assert_eq!(status, 201, "{key}");
    let owner_id = key["key"]["access_key"].as_str().unwrap().to_owned();
    let owner_secret = key["key"]["secret_key"]
        .as_str()
        .or(key["secret_key"].as_str())
        .unwrap()
        .to_owned();
    let port = lo
        .s3_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let endpoint = format!("http://{}:{port}", lo.bridge_ip());
    let owner_s3 = S3::new(
        &endpoint,
        "nyc3",
        "us-east-1",
        Secret::new(owner_id.clone()),
        Secret::new(owner_secret.clone()),
    )
    .unwrap();
    let bucket = format!("seed-{label}");
    assert!(
        rt.block_on(owner_s3.ensure_bucket(&bucket)).unwrap().0,
        "bucket made by the test"
    );

    // The seed user's SSH key, as `digitalocean_ssh_key.somekey` would have made it.
    let tf = Tofu::new("");
    let keyfile = tf.dir.path().join("somekey");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&keyfile)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(keyfile.with_extension("pub")).unwrap();
    let (status, ssh_key) = lo.api(
        "POST",
        "/v2/account/keys",
        Some(json!({ "name": format!("person-{label}"), "public_key": public.trim() })),
    );
    assert_eq!(status, 201, "{ssh_key}");
    let fingerprint = ssh_key["ssh_key"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();

    let pebble = Pebble::start_with(lo.resolver, 80, PebbleOptions::default());
    // The provider has the Spaces endpoint but no Spaces keys: the module's keys do the work.
    let provider = format!(
        "provider \"docker\" {{\n  token = \"{}\"\n  api_endpoint = \"{}\"\n  spaces_endpoint = \"{endpoint}\"\n  acme_directory_url = \"{}\"\n  acme_ca_certificates = \"{}\"\n  acme_dns_servers = [\"{}\"]\n}}\n",
        lo.token,
        lo.api_url,
        pebble.directory_url(),
        pebble.listener_ca_pem().replace('\n', "\\n"),
        lo.resolver
    );
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/terraform/modules/registry");
    // The seed README's block; only the values are this test bed's.
    let main_tf = |space_key: &str, space_secret: &str, http_secret: &str| {
        let module = format!(
            r#"
module "registry" {{
    source              = "{source}"
    ssh_key_fingerprint = "{fingerprint}"
    admin_password      = "{ADMIN_PW}"
    admin_email         = "hostmaster@{domain}"
    fqdn                = "{fqdn}"
    region              = "nyc3"
    space_name          = "{bucket}"
    space_key           = "{space_key}"
    space_secret        = "{space_secret}"
    registry_http_secret = "{http_secret}"
}}

output "ip" {{
  value = module.registry.ip
}}

output "fqdn" {{
  value = module.registry.fqdn
}}
"#,
            source = source.display()
        );
        format!("{PROVIDER_BLOCK}\n{provider}\n{module}")
    };
    tf.write("main.tf", &main_tf(&owner_id, &owner_secret, HTTP_SECRET));
    // Applies log at trace level (tofu's and the provider's own file): no secret may be there.
    let plugin_log = tf.dir.path().join("plugin.log");
    let logged = |args: &[&str], log: &str| -> (bool, String) {
        let out = tf
            .command(args)
            .env("TF_LOG", "trace")
            .env("TF_LOG_PATH", tf.dir.path().join(log))
            .env("PLUGIN_LOG_FILE", &plugin_log)
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    };
    let (got, out) = tf.run_text(&["get", "-no-color"]);
    assert!(got, "tofu get:\n{out}");
    let started = Instant::now();
    let (applied, out) = logged(
        &["apply", "-auto-approve", "-no-color", "-input=false"],
        "create.log",
    );
    assert!(
        applied,
        "tofu apply failed:\n{out}\n--- localocean log tail:\n{}",
        lo.log_tail()
    );
    eprintln!(
        "{fqdn}: the seed module applied in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // No warning of ignored inputs any more; the adopted bucket is announced.
    assert!(!out.contains("ignored"), "{out}");

    // Outputs `ip` and `fqdn`, as the old module had them.
    let v = module_registry(&tf);
    let droplets = lo.droplets_of(DROPLET_NAME);
    assert_eq!(droplets.len(), 1, "{droplets:?}");
    let ip = v["ipv4_address"].as_str().unwrap().to_owned();
    let public_v4 = droplets[0]["networks"]["v4"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "public")
        .map(|n| n["ip_address"].as_str().unwrap().to_owned());
    assert_eq!(public_v4.as_deref(), Some(ip.as_str()));
    let outputs = tf.run(&["output", "-json"]);
    assert!(outputs.status.success(), "{}", text(&outputs));
    let outputs: Value = serde_json::from_slice(&outputs.stdout).unwrap();
    assert_eq!(outputs["ip"]["value"], json!(ip));
    assert_eq!(outputs["fqdn"]["value"], json!(fqdn));
    let a_records: Vec<Value> = lo
        .records(&domain)
        .into_iter()
        .filter(|r| r["type"] == "A" && r["name"] == "registry")
        .collect();
    assert_eq!(a_records.len(), 1, "{a_records:?}");
    assert_eq!(a_records[0]["data"], json!(ip));
    assert_eq!(v["http_secret"], json!(HTTP_SECRET));
    assert_eq!(v["bucket_created"], json!(false), "the bucket was adopted");
    let registry_key_id = v["spaces_key_id"].as_str().unwrap().to_owned();
    assert_ne!(registry_key_id, owner_id, "the registry holds its own key");

    // docker login as admin, push.
    let roots = rt.block_on(async {
        format!(
            "{}{}",
            pebble.issuing_root_pem().await,
            pebble.intermediate_pem().await
        )
    });
    let dockerd = Dockerd::start(lo.bridge_ip(), &[(&fqdn, &roots)]);
    let cli = dockerd.cli();
    ok(
        "docker login -u admin",
        &cli.login(&fqdn, "admin", ADMIN_PW),
    );
    let work = tempfile::tempdir().unwrap();
    let tag = format!("{fqdn}/seed/hello:1");
    let archive = docker_archive(work.path(), &tag, 2, 256 * 1024);
    ok(
        "docker load",
        &cli.run(&["load", "-i", archive.to_str().unwrap()]),
    );
    ok("docker push", &cli.run(&["push", &tag]));
    cli.rmi(&[&tag]);
    ok("docker pull", &cli.run(&["pull", &tag]));

    // "View the registry catalog: Browse to https://<fqdn>/v2/_catalog", as curl -u does it.
    let ca = work.path().join("roots.pem");
    std::fs::write(&ca, &roots).unwrap();
    let auth = format!("admin:{ADMIN_PW}");
    let (status, headers, body) = curl(&fqdn, &ip, &ca, "/v2/_catalog", Some(&auth));
    assert_eq!(status, 200, "{headers}{body}");
    let listing: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(listing["repositories"], json!(["seed/hello"]), "{body}");
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    // A browser first comes without credentials: it must be asked for them (Basic).
    let (status, headers, _) = curl(&fqdn, &ip, &ca, "/v2/_catalog", None);
    assert_eq!(status, 401);
    assert!(
        headers.contains("www-authenticate: basic realm=\"registry\""),
        "{headers}"
    );
    let (status, headers, _) = curl(
        &fqdn,
        &ip,
        &ca,
        "/v2/_catalog",
        Some("admin:not-the-password"),
    );
    assert_eq!(status, 401);
    assert!(headers.contains("www-authenticate: basic"), "{headers}");
    // Where docker decides how to authenticate, nothing changed: the registry's Bearer challenge.
    let (status, headers, _) = curl(&fqdn, &ip, &ca, "/v2/", Some(&auth));
    assert_eq!(status, 401);
    assert!(
        headers.contains(&format!(
            "www-authenticate: bearer realm=\"https://{fqdn}/token\""
        )),
        "{headers}"
    );

    // The registry's config on the droplet holds the given http secret, and not the
    // owner's Spaces keys (the registry uses its own).
    let mgmt = tf.dir.path().join("mgmt.key");
    std::fs::write(&mgmt, v["management_private_key"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&mgmt, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let known_hosts = tf.dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("{ip} {}\n", v["host_public_key"].as_str().unwrap()),
    )
    .unwrap();
    let registry_config = || {
        let out = ssh_pinned(
            &mgmt,
            &known_hosts,
            &ip,
            "cat /etc/docker/registry/provider.yml",
        );
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let config = registry_config();
    assert!(
        config.contains(&format!("\"secret\": \"{HTTP_SECRET}\"")),
        "no http secret in:\n{config}"
    );
    assert!(config.contains(&registry_key_id));
    assert!(!config.contains(&owner_id) && !config.contains(&owner_secret));
    // The person's key logs in too (`ssh_key_fingerprint`).
    let out = ssh_pinned(&keyfile, &known_hosts, &ip, "true");
    assert!(out.status.success(), "{}", text(&out));

    // A new http secret and new Spaces keys (the owner rotates them): updated in place,
    // nothing replaced; the droplet's config and token key follow; docker and the catalog
    // work on with new tokens.
    let droplet_id = v["droplet_id"].clone();
    let (status, key2) = lo.api(
        "POST",
        "/v2/spaces/keys",
        Some(json!({ "name": format!("{label}-owner2"), "grants": [{ "bucket": "", "permission": "fullaccess" }] })),
    );
    assert_eq!(status, 201, "{key2}");
    let owner2_id = key2["key"]["access_key"].as_str().unwrap().to_owned();
    let owner2_secret = key2["key"]["secret_key"]
        .as_str()
        .or(key2["secret_key"].as_str())
        .unwrap()
        .to_owned();
    tf.write(
        "main.tf",
        &main_tf(&owner2_id, &owner2_secret, HTTP_SECRET_2),
    );
    let (planned, out) = tf.run_text(&["plan", "-no-color", "-input=false"]);
    assert!(planned, "{out}");
    assert!(out.contains("will be updated in-place"), "{out}");
    assert!(!out.contains("must be replaced"), "{out}");
    assert!(
        out.contains("~ http_secret"),
        "the plan hides the secret change:\n{out}"
    );
    let (applied, out) = logged(
        &["apply", "-auto-approve", "-no-color", "-input=false"],
        "rotate.log",
    );
    assert!(applied, "{out}");
    let v2 = module_registry(&tf);
    assert_eq!(v2["droplet_id"], droplet_id, "the droplet was replaced");
    assert_eq!(
        v2["spaces_key_id"],
        json!(registry_key_id),
        "the registry's key changed"
    );
    assert_eq!(v2["http_secret"], json!(HTTP_SECRET_2));
    let config = registry_config();
    assert!(
        config.contains(&format!("\"secret\": \"{HTTP_SECRET_2}\"")),
        "{config}"
    );
    assert!(!config.contains(HTTP_SECRET));
    cli.rmi(&[&tag]);
    ok("docker pull with the new secret", &cli.run(&["pull", &tag]));
    let (status, _, body) = curl(&fqdn, &ip, &ca, "/v2/_catalog", Some(&auth));
    assert_eq!(status, 200, "{body}");

    // registry_http_secret back to "" (the old module's default): a generated one, shown by
    // the plan, kept afterwards.
    tf.write("main.tf", &main_tf(&owner2_id, &owner2_secret, ""));
    let (planned, out) = tf.run_text(&["plan", "-no-color", "-input=false"]);
    assert!(planned && out.contains("~ http_secret"), "{out}");
    let (applied, out) = logged(
        &["apply", "-auto-approve", "-no-color", "-input=false"],
        "generate.log",
    );
    assert!(applied, "{out}");
    let generated = module_registry(&tf)["http_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        generated.len() == 64 && generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a generated secret"
    );
    assert!(registry_config().contains(&generated));
    let (planned, out) = tf.run_text(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
    assert!(planned, "the generated secret is not kept:\n{out}");
    cli.rmi(&[&tag]);
    ok(
        "docker pull with a generated secret",
        &cli.run(&["pull", &tag]),
    );

    let stored = rt.block_on(owner_s3.usage(&bucket)).unwrap();
    assert!(stored.objects > 0, "the image is not in the bucket");
    drop(dockerd);

    for log in ["plugin.log", "create.log", "rotate.log", "generate.log"] {
        let logged = std::fs::read_to_string(tf.dir.path().join(log)).unwrap();
        assert!(
            logged.contains("DigitalOcean response body"),
            "{log} holds no provider trace"
        );
        for (what, secret) in [
            ("the given http secret", HTTP_SECRET),
            ("the new http secret", HTTP_SECRET_2),
            ("the generated http secret", generated.as_str()),
            ("the owner's Spaces secret", owner_secret.as_str()),
            ("the new Spaces secret", owner2_secret.as_str()),
            ("the admin password", ADMIN_PW),
        ] {
            assert!(!logged.contains(secret), "{what} appears in {log}");
        }
    }

    let (destroyed, out) = tf.run_text(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    assert!(destroyed, "tofu destroy failed:\n{out}");
    assert!(out.contains("The bucket was kept"), "{out}");
    assert!(
        lo.droplets_of(DROPLET_NAME).is_empty(),
        "{:?}",
        lo.droplets_of(DROPLET_NAME)
    );
    assert!(
        lo.firewalls_of(DROPLET_NAME).is_empty(),
        "{:?}",
        lo.firewalls_of(DROPLET_NAME)
    );
    let records: Vec<Value> = lo
        .records(&domain)
        .into_iter()
        .filter(|r| r["type"] != "NS" && r["type"] != "SOA")
        .collect();
    assert!(records.is_empty(), "records left: {records:?}");
    let (status, _) = lo.api("GET", &format!("/v2/spaces/keys/{registry_key_id}"), None);
    assert_eq!(status, 404, "the registry's Spaces key is still there");
    let (_, keys) = lo.api("GET", "/v2/account/keys", None);
    let provider_keys: Vec<&Value> = keys["ssh_keys"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter(|k| {
                    !k["name"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("person-")
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(provider_keys.is_empty(), "ssh keys left: {keys}");
    // The bucket the module did not create is still there, with everything in it.
    assert!(
        rt.block_on(owner_s3.head_bucket(&bucket)).unwrap(),
        "the adopted bucket was deleted"
    );
    let after = rt.block_on(owner_s3.usage(&bucket)).unwrap();
    assert_eq!(after.objects, stored.objects, "objects were deleted");

    // The test's own things.
    rt.block_on(owner_s3.empty_bucket(&bucket)).unwrap();
    rt.block_on(owner_s3.delete_bucket(&bucket)).unwrap();
    lo.api("DELETE", &format!("/v2/spaces/keys/{owner_id}"), None);
    lo.api("DELETE", &format!("/v2/spaces/keys/{owner2_id}"), None);
    lo.api("DELETE", &format!("/v2/account/keys/{fingerprint}"), None);
}
