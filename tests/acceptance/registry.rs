//! docker_registry end to end: apply, push and pull with skopeo, users changed in place under
//! a loop of pulls, a hand edit put back, destroy leaving nothing, a failed apply destroyed,
//! bad inputs refused at plan time, no secret in a trace log, a droplet replaced behind its
//! reserved IP under a loop of pulls.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::PROVIDER_BLOCK;
use crate::support::docker::v2_status_with_token;
use crate::support::localocean::{unique_label, Ocean};
use crate::support::registry_client::{make_oci_image, manifest_digest, text, Skopeo};
use crate::support::tofu::Tofu;
pub use crate::support::{ssh_files, ssh_pinned};

pub(super) const ADMIN_PW: &str = "admin-password-0001";
const READER_PW: &str = "reader-password-0002";
const LOOPER_PW: &str = "looper-password-0003";

/// One test's registry: its own name (`NAME` in a config), domain and fqdn (`FQDN`), so the
/// tests share one localocean and each checks only what its registry made.
pub(super) struct Fixture {
    pub(super) lo: Ocean,
    pub(super) tf: Tofu,
    pub(super) name: String,
    pub(super) domain: String,
    pub(super) fqdn: String,
}

impl Fixture {
    /// On the binary's shared localocean, booting from its baked image.
    pub(super) fn new() -> Self {
        Self::on(Ocean::shared())
    }

    /// On the shared localocean, booting from the stock image: the first converge installs
    /// every package, as on a new DigitalOcean account.
    pub(super) fn stock() -> Self {
        Self::with_image(Ocean::shared(), None)
    }

    pub(super) fn on(lo: Ocean) -> Self {
        let image = lo.baked_image();
        Self::with_image(lo, image)
    }

    fn with_image(lo: Ocean, image: Option<String>) -> Self {
        let name = unique_label();
        let domain = format!("{name}.test");
        lo.create_domain(&domain);
        let fqdn = format!("registry.{domain}");
        let tf = Tofu::new("").with_image(image);
        Self {
            lo,
            tf,
            name,
            domain,
            fqdn,
        }
    }

    /// This registry's droplets.
    pub(super) fn droplets(&self) -> Vec<Value> {
        self.lo.droplets_of(&self.name)
    }

    /// Writes main.tf with the provider pointed at this localocean and `body` after it.
    pub(super) fn config(&self, body: &str) {
        self.config_with(body, "");
    }

    /// As [`Fixture::config`], with `provider_extra` in the provider block.
    pub(super) fn config_with(&self, body: &str, provider_extra: &str) {
        let provider = format!(
            "provider \"docker\" {{\n  token = \"{}\"\n  api_endpoint = \"{}\"\n{provider_extra}}}\n",
            self.lo.token, self.lo.api_url
        );
        let body = body.replace("FQDN", &self.fqdn).replace("NAME", &self.name);
        self.tf
            .write("main.tf", &format!("{PROVIDER_BLOCK}\n{provider}\n{body}"));
    }

    pub(super) fn apply(&self) -> String {
        let (ok, out) = self
            .tf
            .run_text(&["apply", "-auto-approve", "-no-color", "-input=false"]);
        assert!(
            ok,
            "tofu apply failed:\n{out}\n--- localocean log tail:\n{}",
            self.lo.log_tail()
        );
        out
    }

    pub(super) fn values(&self) -> Value {
        self.tf.resource_values()
    }

    /// `tofu plan -detailed-exitcode`: 0 no changes, 2 changes.
    pub(super) fn plan_code(&self) -> (i32, String) {
        let out = self
            .tf
            .run(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
        (out.status.code().unwrap_or(-1), text(&out))
    }

    pub(super) fn skopeo(&self, ca: Option<&str>) -> Skopeo {
        Skopeo::new(self.lo.bridge_ip(), ca)
    }

    /// The import step: `tofu state rm`, then `tofu import` by fqdn. Checks that import found
    /// the same droplet, firewall and record, and returns the imported values. The state before
    /// is kept in `before-import.tfstate` for [`Fixture::restore_state`].
    pub(super) fn import_again(&self) -> Value {
        let before = self.values();
        let dir = self.tf.dir.path();
        std::fs::copy(
            dir.join("terraform.tfstate"),
            dir.join("before-import.tfstate"),
        )
        .unwrap();
        let (ok, out) = self
            .tf
            .run_text(&["state", "rm", "-no-color", "docker_registry.r"]);
        assert!(ok, "state rm: {out}");
        let (ok, out) = self.tf.run_text(&[
            "import",
            "-no-color",
            "-input=false",
            "docker_registry.r",
            &self.fqdn,
        ]);
        assert!(ok && out.contains("Import successful"), "import: {out}");
        let imported = self.values();
        for attr in [
            "droplet_id",
            "firewall_id",
            "record_id",
            "domain",
            "name",
            "region",
        ] {
            assert_eq!(imported[attr], before[attr], "imported {attr}");
        }
        imported
    }

    /// The state as it was before [`Fixture::import_again`].
    pub(super) fn restore_state(&self) {
        let dir = self.tf.dir.path();
        std::fs::copy(
            dir.join("before-import.tfstate"),
            dir.join("terraform.tfstate"),
        )
        .unwrap();
    }

    pub(super) fn destroy_and_check_nothing_left(&self) {
        self.destroy_with_and_check_nothing_left(&[]);
    }

    /// As [`Fixture::destroy_and_check_nothing_left`], with `extra` arguments to destroy.
    pub(super) fn destroy_with_and_check_nothing_left(&self, extra: &[&str]) {
        let mut args = vec!["destroy", "-auto-approve", "-no-color", "-input=false"];
        args.extend_from_slice(extra);
        let (ok, out) = self.tf.run_text(&args);
        assert!(ok, "tofu destroy failed:\n{out}");
        assert!(
            self.droplets().is_empty(),
            "droplets left: {:?}",
            self.droplets()
        );
        assert!(
            self.lo.firewalls_of(&self.name).is_empty(),
            "firewalls left: {:?}",
            self.lo.firewalls_of(&self.name)
        );
        let records: Vec<Value> = self
            .lo
            .records(&self.domain)
            .into_iter()
            .filter(|r| r["type"] != "NS" && r["type"] != "SOA")
            .collect();
        assert!(records.is_empty(), "records left: {records:?}");
        // The provider registers no SSH key of its own; the keys tests make themselves are
        // named `person-<test>`.
        let (_, keys) = self.lo.api("GET", "/v2/account/keys", None);
        let left: Vec<&Value> = keys["ssh_keys"]
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
        assert!(left.is_empty(), "ssh keys left: {keys}");
    }
}

fn registry_body(users: &str) -> String {
    format!(
        r#"
resource "docker_registry" "r" {{
  name   = "NAME"
  region = "nyc3"
  fqdn   = "FQDN"
  users = {{
{users}
  }}
  tls {{ source = "self_signed" }}
}}
"#
    )
}

fn https_client(ca_pem: &str, fqdn: &str, ip: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(fqdn, format!("{ip}:443").parse().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A loop of authenticated pulls (manifest GETs by skopeo) in a thread; counts failures.
pub struct PullLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl PullLoop {
    pub fn start(skopeo: Skopeo, reference: String, creds: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failures.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                // At most five pulls a second: each asks /token with credentials, which nginx
                // limits to 10 a second per client (burst 40); a quiet machine ran faster.
                let began = std::time::Instant::now();
                let out = skopeo.inspect_raw(&reference, Some(&creds));
                if let Some(rest) =
                    std::time::Duration::from_millis(200).checked_sub(began.elapsed())
                {
                    std::thread::sleep(rest);
                }
                if out.status.success() {
                    o.fetch_add(1, Ordering::SeqCst);
                } else {
                    f.lock().unwrap().push(text(&out));
                }
            }
        });
        Self {
            stop,
            ok,
            failures,
            handle: Some(handle),
        }
    }

    /// Pulls finished so far, failed or not.
    pub fn done(&self) -> usize {
        self.ok.load(Ordering::SeqCst) + self.failures.lock().unwrap().len()
    }

    /// Waits until `n` pulls have finished (at most `limit`): on a loaded machine one pull can
    /// take seconds, and a fixed wait saw too few of them.
    pub fn wait_for(&self, n: usize, limit: Duration) {
        let start = std::time::Instant::now();
        while self.done() < n && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap();
        (
            self.ok.load(Ordering::SeqCst),
            self.failures.lock().unwrap().clone(),
        )
    }
}

#[test]
fn registry_lifecycle_push_pull_users_drift_destroy() {
    let fx = Fixture::stock();
    let users = format!(
        "    admin  = {{ password = \"{ADMIN_PW}\" }}\n    reader = {{ password = \"{READER_PW}\", access = \"pull\" }}\n    looper = {{ password = \"{LOOPER_PW}\", access = \"pull\" }}"
    );
    fx.config(&registry_body(&users));
    let log = fx.tf.dir.path().join("create-trace.log");
    let (ok, out) = fx.tf.apply_logged("create-trace.log", "trace");
    assert!(
        ok,
        "tofu apply failed:\n{out}\n--- localocean log tail:\n{}",
        fx.lo.log_tail()
    );
    let v = fx.values();
    let droplet_id = v["droplet_id"].as_u64().expect("droplet_id");
    let ip = v["ipv4_address"].as_str().expect("ipv4_address").to_owned();
    let ca = v["ca_certificate_pem"]
        .as_str()
        .expect("ca_certificate_pem")
        .to_owned();
    assert_eq!(v["url"], json!(format!("https://{}", fx.fqdn)));
    assert!(v["host_key_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    assert!(!v["registry_version"].as_str().unwrap().is_empty());

    // The served certificate chains to ca_certificate_pem; /v2/ and the catalog need credentials.
    let http = https_client(&ca, &fx.fqdn, &ip);
    for path in ["/v2/", "/v2/_catalog"] {
        let r = http
            .get(format!("https://{}{path}", fx.fqdn))
            .send()
            .expect("TLS with only our CA trusted");
        assert_eq!(r.status().as_u16(), 401, "{path} without credentials");
    }

    // Push as the push user, pull as the pull user, same digest; the pull user cannot push.
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("image");
    make_oci_image(&image, 512 * 1024);
    let sk = fx.skopeo(Some(&ca));
    let reference = format!("{}/acc/hello:1", fx.fqdn);
    let out = sk.push(&image, &reference, Some(&format!("admin:{ADMIN_PW}")));
    assert!(out.status.success(), "push as admin: {}", text(&out));
    let digest = sk.pushed_digest();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let pulled = work.path().join("pulled");
    let out = sk.pull(
        &format!("{}/acc/hello@{digest}", fx.fqdn),
        &pulled,
        Some(&format!("reader:{READER_PW}")),
    );
    assert!(
        out.status.success(),
        "pull by digest as reader: {}",
        text(&out)
    );
    let out = sk.inspect_raw(&reference, Some(&format!("reader:{READER_PW}")));
    assert!(out.status.success(), "inspect as reader: {}", text(&out));
    assert_eq!(
        manifest_digest(&out.stdout),
        digest,
        "pulled manifest digest"
    );
    let out = sk.push(
        &image,
        &format!("{}/acc/denied:1", fx.fqdn),
        Some(&format!("reader:{READER_PW}")),
    );
    assert!(!out.status.success(), "the pull user could push");
    let out = sk.inspect_raw(&reference, None);
    assert!(
        !out.status.success(),
        "anonymous pull worked on a private registry"
    );

    // A second plan is empty: nothing drifts by itself.
    let (code, out) = fx.plan_code();
    assert_eq!(code, 0, "plan after apply is not empty:\n{out}");

    // Users change in place under a loop of pulls: add one, remove one, change a password.
    let looper = PullLoop::start(
        fx.skopeo(Some(&ca)),
        reference.clone(),
        format!("looper:{LOOPER_PW}"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let new_admin_pw = "admin-password-0004";
    let users2 = format!(
        "    admin  = {{ password = \"{new_admin_pw}\" }}\n    writer = {{ password = \"writer-password-05\" }}\n    looper = {{ password = \"{LOOPER_PW}\", access = \"pull\" }}"
    );
    fx.config(&registry_body(&users2));
    let update_log = fx.tf.dir.path().join("update-trace.log");
    let (update_ok, update_out) = fx.tf.apply_logged("update-trace.log", "trace");
    std::thread::sleep(Duration::from_secs(1));
    let (pulls, failures) = looper.finish();
    assert!(update_ok, "users update failed:\n{update_out}");
    assert!(update_out.contains("1 changed"), "{update_out}");
    assert!(
        failures.is_empty(),
        "{} of {} pulls failed during the users update: {:?}",
        failures.len(),
        pulls + failures.len(),
        failures.first()
    );
    assert!(pulls >= 3, "only {pulls} pulls ran through the update");
    eprintln!("pull loop: {pulls} pulls through the users update, none failed");
    let v2 = fx.values();
    assert_eq!(
        v2["droplet_id"].as_u64(),
        Some(droplet_id),
        "the droplet was replaced"
    );
    let auth = |u: &str, p: &str| v2_status_with_token(&http, &fx.fqdn, u, p);
    assert_eq!(auth("reader", READER_PW), 401, "removed user still works");
    assert_eq!(
        auth("writer", "writer-password-05"),
        200,
        "new user does not work"
    );
    assert_eq!(auth("admin", ADMIN_PW), 401, "old password still works");
    assert_eq!(
        auth("admin", new_admin_pw),
        200,
        "new password does not work"
    );

    // No secret in the trace logs of the create and the update.
    let key = v2["management_private_key"].as_str().unwrap().to_owned();
    let host_key = v2["host_private_key"].as_str().unwrap().to_owned();
    let tls_key = v2["tls_private_key_pem"].as_str().unwrap().to_owned();
    let key_line = |k: &str| k.lines().nth(1).unwrap_or_default().to_owned();
    for path in [&log, &update_log] {
        let logtext = std::fs::read_to_string(path).unwrap();
        assert!(
            logtext.contains("docker"),
            "{} holds no provider log",
            path.display()
        );
        for (what, secret) in [
            ("admin password", ADMIN_PW.to_owned()),
            ("new admin password", new_admin_pw.to_owned()),
            ("reader password", READER_PW.to_owned()),
            ("API token", fx.lo.token.clone()),
            ("management key", key_line(&key)),
            ("host key", key_line(&host_key)),
            ("TLS key", key_line(&tls_key)),
        ] {
            assert!(!secret.is_empty());
            assert!(
                !logtext.contains(&secret),
                "{what} appears in {}",
                path.display()
            );
        }
    }

    // A hand edit on the droplet shows in the plan; apply puts the file back.
    let (keyfile, known_hosts) = ssh_files(fx.tf.dir.path(), &v2, &[&ip]);
    let ssh = |cmd: &str| ssh_pinned(&keyfile, &known_hosts, &ip, cmd);
    let before = ssh("sha256sum < /etc/nginx/registry/htpasswd");
    assert!(
        before.status.success(),
        "ssh with the pinned host key: {}",
        text(&before)
    );
    let out = ssh("echo 'intruder:$2y$05$abcdefghijklmnopqrstuu5RmH0i1pHH3ZQJ6D1T9lkmqMbDyI7zq' >> /etc/nginx/registry/htpasswd");
    assert!(out.status.success(), "{}", text(&out));
    let (code, out) = fx.plan_code();
    assert_eq!(code, 2, "a hand edit does not show in the plan:\n{out}");
    assert!(out.contains("/etc/nginx/registry/htpasswd"), "{out}");
    fx.apply();
    let after = ssh("sha256sum < /etc/nginx/registry/htpasswd");
    assert_eq!(
        text(&after),
        text(&before),
        "apply did not restore the htpasswd file"
    );
    let (code, out) = fx.plan_code();
    assert_eq!(code, 0, "plan after the repair is not empty:\n{out}");

    // Import step: droplet-disk storage, so the plan after it refuses to lose the images, on
    // `storage.accept_image_loss`; destroy needs no SSH there and still leaves nothing.
    let imported = fx.import_again();
    assert!(
        imported["storage"].as_array().map_or(0, Vec::len) == 0,
        "droplet disk: no storage block: {imported}"
    );
    let (code, out) = fx.plan_code();
    let said = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(code, 1, "the plan must fail:\n{out}");
    assert!(
        said.contains("Imported registry on the droplet disk: its images would be lost")
            && said.contains("accept_image_loss = true")
            && said.contains("tofu destroy -refresh=false"),
        "{out}"
    );
    // That error stops destroy's own refreshing plan too (OpenTofu plans before destroying);
    // without it, destroy needs no SSH on the droplet disk and leaves nothing.
    fx.destroy_with_and_check_nothing_left(&["-refresh=false"]);
}

#[test]
fn failed_apply_names_the_droplet_and_destroy_cleans_up() {
    // The fault hits the next droplet to boot: an instance of this test's own.
    let fx = Fixture::on(Ocean::own());
    // sshd refuses the provider for longer than the create may take.
    fx.lo
        .arm_fault(json!({ "kind": "ssh_refused", "seconds": 600 }));
    fx.config(&format!(
        r#"
resource "docker_registry" "r" {{
  name   = "NAME"
  region = "nyc3"
  fqdn   = "FQDN"
  users = {{ admin = {{ password = "{ADMIN_PW}" }} }}
  tls {{ source = "self_signed" }}
  timeouts {{ create = "40s" }}
}}
"#
    ));
    let started = Instant::now();
    let (ok, out) = fx
        .tf
        .run_text(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    assert!(!ok, "apply should fail while SSH is refused:\n{out}");
    let droplets = fx.droplets();
    assert_eq!(droplets.len(), 1, "{droplets:?}");
    let id = droplets[0]["id"].as_u64().unwrap();
    assert!(
        out.contains(&format!("({id})")) || out.contains(&id.to_string()),
        "the error does not name droplet {id}:\n{out}"
    );
    assert!(
        out.contains(&fx.name),
        "the error does not name the droplet:\n{out}"
    );
    eprintln!("failed apply took {:?}", started.elapsed());
    // The state holds what was made, so destroy removes it.
    fx.destroy_and_check_nothing_left();
}

#[test]
fn bad_inputs_fail_the_plan_with_their_own_diagnostic() {
    let fx = Fixture::new();
    let hash = "$2y$10$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ01234";
    let base = |name: &str,
                region: &str,
                size: &str,
                image: &str,
                fqdn: &str,
                users: &str,
                cidrs: &str| {
        format!(
            r#"
resource "docker_registry" "r" {{
  name   = "{name}"
  region = "{region}"
  size   = "{size}"
  image  = "{image}"
  fqdn   = "{fqdn}"
  ssh_allowed_cidrs = [{cidrs}]
  users = {{ {users} }}
  tls {{ source = "self_signed" }}
}}
"#
        )
    };
    let ok_users = format!("admin = {{ password = \"{ADMIN_PW}\" }}");
    let cidr = "\"0.0.0.0/0\"";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad fqdn",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "not_a_name",
                &ok_users,
                cidr,
            ),
            "Invalid `fqdn`",
        ),
        (
            "domain not in account",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "registry.elsewhere.test",
                &ok_users,
                cidr,
            ),
            "Domain not in this account",
        ),
        (
            "empty username",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &format!("\"\" = {{ password = \"{ADMIN_PW}\" }}"),
                cidr,
            ),
            "Invalid user name",
        ),
        (
            "long username",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &format!("{} = {{ password = \"{ADMIN_PW}\" }}", "u".repeat(65)),
                cidr,
            ),
            "Invalid user name",
        ),
        (
            "colon username",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &format!("\"a:b\" = {{ password = \"{ADMIN_PW}\" }}"),
                cidr,
            ),
            "Invalid user name",
        ),
        (
            "space username",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &format!("\"a b\" = {{ password = \"{ADMIN_PW}\" }}"),
                cidr,
            ),
            "Invalid user name",
        ),
        (
            "newline username",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &format!("\"a\\nb\" = {{ password = \"{ADMIN_PW}\" }}"),
                cidr,
            ),
            "Invalid user name",
        ),
        (
            "short password",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                "admin = { password = \"short\" }",
                cidr,
            ),
            "Password too short",
        ),
        (
            "both passwords",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &format!("admin = {{ password = \"{ADMIN_PW}\", password_bcrypt = \"{hash}\" }}"),
                cidr,
            ),
            "Conflicting passwords",
        ),
        (
            "bad bcrypt",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                "admin = { password_bcrypt = \"$1$abc\" }",
                cidr,
            ),
            "Invalid `password_bcrypt`",
        ),
        (
            "unknown access",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &format!("admin = {{ password = \"{ADMIN_PW}\", access = \"admin\" }}"),
                cidr,
            ),
            "Invalid `access`",
        ),
        (
            "unknown region",
            base(
                &fx.name,
                "atlantis1",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &ok_users,
                cidr,
            ),
            "Unknown `region`",
        ),
        (
            "unknown size",
            base(
                &fx.name,
                "nyc3",
                "s-64vcpu-1tb",
                "debian-12-x64",
                "FQDN",
                &ok_users,
                cidr,
            ),
            "Unknown `size`",
        ),
        (
            "unknown image",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "windows-95",
                "FQDN",
                &ok_users,
                cidr,
            ),
            "Unknown `image`",
        ),
        (
            "bad cidr",
            base(
                &fx.name,
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &ok_users,
                "\"10.0.0.0/33\"",
            ),
            "Invalid CIDR in `ssh_allowed_cidrs`",
        ),
        (
            "bad name",
            base(
                "Bad_Name",
                "nyc3",
                "s-1vcpu-1gb",
                "debian-12-x64",
                "FQDN",
                &ok_users,
                cidr,
            ),
            "Invalid `name`",
        ),
    ];
    for (what, body, want) in cases {
        fx.config(&body);
        let (ok, out) = fx.tf.run_text(&["plan", "-no-color", "-input=false"]);
        assert!(!ok, "{what}: plan succeeded:\n{out}");
        assert!(out.contains(want), "{what}: no {want:?} in:\n{out}");
        assert!(
            !out.contains("panic"),
            "{what}: the provider panicked:\n{out}"
        );
        // The API checks list the valid choices.
        if want == "Unknown `region`" {
            assert!(
                out.contains("nyc3"),
                "{what}: valid regions not listed:\n{out}"
            );
        }
    }
    assert!(fx.droplets().is_empty(), "a failed plan created a droplet");
}

#[test]
fn droplet_generation_bump_replaces_the_droplet_inside_an_update() {
    let fx = Fixture::new();
    // Images in a bucket, so both droplets serve the same ones: a loop of pulls runs through
    // the replacement. The provider's own Spaces key: full access, as a user's would be.
    let (status, key) = fx.lo.api(
        "POST",
        "/v2/spaces/keys",
        Some(json!({ "name": format!("{}-provider", fx.name), "grants": [{ "bucket": "", "permission": "fullaccess" }] })),
    );
    assert_eq!(status, 201, "{key}");
    let provider_key = key["key"]["access_key"].as_str().unwrap().to_owned();
    let port = fx
        .lo
        .s3_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let spaces = format!(
        "  spaces_access_id = \"{provider_key}\"\n  spaces_secret_key = \"{}\"\n  spaces_endpoint = \"http://{}:{port}\"\n",
        key["key"]["secret_key"].as_str().or(key["secret_key"].as_str()).unwrap(),
        fx.lo.bridge_ip()
    );
    let body = |generation: u32| {
        format!(
            r#"
resource "docker_registry" "r" {{
  name   = "NAME"
  region = "nyc3"
  fqdn   = "FQDN"
  droplet_generation = {generation}
  reserved_ip = true
  users = {{ admin = {{ password = "{ADMIN_PW}" }} }}
  tls {{ source = "self_signed" }}
  storage {{
    backend = "spaces"
    bucket  = "NAME-images"
    force_destroy = true
  }}
}}
"#
        )
    };
    let a_records = || -> Vec<Value> {
        fx.lo
            .records(&fx.domain)
            .into_iter()
            .filter(|r| r["type"] == "A")
            .collect()
    };
    fx.config_with(&body(1), &spaces);
    fx.apply();
    let v1 = fx.values();
    let old_id = v1["droplet_id"].as_u64().unwrap();
    let rip = v1["reserved_ip_address"].as_str().unwrap().to_owned();
    assert_ne!(v1["ipv4_address"].as_str(), Some(rip.as_str()));
    let before = a_records();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["data"].as_str(), Some(rip.as_str()), "A record");
    let (_, r) = fx.lo.api("GET", &format!("/v2/reserved_ips/{rip}"), None);
    assert_eq!(r["reserved_ip"]["droplet"]["id"].as_u64(), Some(old_id));

    // An image to pull through the replacement, by the fqdn (the reserved IP).
    let ca1 = v1["ca_certificate_pem"].as_str().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("image");
    make_oci_image(&image, 256 * 1024);
    let reference = format!("{}/acc/moved:1", fx.fqdn);
    let creds = format!("admin:{ADMIN_PW}");
    let out = fx.skopeo(Some(&ca1)).push(&image, &reference, Some(&creds));
    assert!(out.status.success(), "push: {}", text(&out));
    let looper = PullLoop::start(fx.skopeo(Some(&ca1)), reference.clone(), creds);
    std::thread::sleep(Duration::from_secs(1));
    fx.config_with(&body(2), &spaces);
    let (code, plan) = fx.plan_code();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("update in-place") && !plan.contains("must be replaced"),
        "the bump should update in place:\n{plan}"
    );
    assert!(
        plan.contains("The droplet will be replaced"),
        "the plan does not warn:\n{plan}"
    );
    let out = fx.apply();
    assert!(out.contains("1 changed"), "{out}");
    std::thread::sleep(Duration::from_secs(2));
    let (ok, failures) = looper.finish();
    assert!(ok > 0, "no pull went through");
    // A connection open to the old droplet at the instant the address moves is reset by the
    // new one, which never saw it (so it is on DigitalOcean, whose reserved IPs move the
    // same way): at most one such pull, caught mid-request. Any other failure (a refused
    // connection, an HTTP error, a wrong certificate) fails the test.
    let reset = |f: &String| f.contains("connection reset by peer") || f.contains("EOF");
    assert!(
        failures.len() <= 1 && failures.iter().all(reset),
        "{} of {} pulls failed through the replacement: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    eprintln!(
        "reserved IP replacement: {ok} pulls through the apply, {} reset at the move",
        failures.len()
    );
    let v2 = fx.values();
    let new_id = v2["droplet_id"].as_u64().unwrap();
    let new_ip = v2["ipv4_address"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id, "the droplet was not replaced");
    assert_eq!(v2["reserved_ip_address"].as_str(), Some(rip.as_str()));
    let (_, r) = fx.lo.api("GET", &format!("/v2/reserved_ips/{rip}"), None);
    assert_eq!(
        r["reserved_ip"]["droplet"]["id"].as_u64(),
        Some(new_id),
        "the reserved IP did not move"
    );
    assert_eq!(
        v2["host_key_fingerprint"], v1["host_key_fingerprint"],
        "the host key changed"
    );
    let ids: Vec<u64> = fx
        .droplets()
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![new_id], "the old droplet is still there");
    // No DNS change at all: the same record, the same address.
    assert_eq!(a_records(), before, "the A record changed");
    let ca = v2["ca_certificate_pem"].as_str().unwrap();
    for ip in [&new_ip, &rip] {
        let http = https_client(ca, &fx.fqdn, ip);
        assert_eq!(
            v2_status_with_token(&http, &fx.fqdn, "admin", ADMIN_PW),
            200,
            "through {ip}"
        );
    }
    let (code, out) = fx.plan_code();
    assert_eq!(code, 0, "plan after the replacement is not empty:\n{out}");

    // A person's key added later is authorised on the running droplet.
    let keyfile = fx.tf.dir.path().join("person");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&keyfile)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(keyfile.with_extension("pub")).unwrap();
    let (status, key) = fx.lo.api(
        "POST",
        "/v2/account/keys",
        Some(json!({ "name": format!("person-{}", fx.name), "public_key": public.trim() })),
    );
    assert_eq!(status, 201, "{key}");
    let fp = key["ssh_key"]["fingerprint"].as_str().unwrap().to_owned();
    let later = |reserved_ip: bool| {
        body(2)
            .replace(
                "droplet_generation = 2",
                &format!(
                    "droplet_generation = 2\n  ssh_key_fingerprints = [\"{fp}\"]\n  tags = [\"team-a\"]"
                ),
            )
            .replace(
                "reserved_ip = true",
                &format!("reserved_ip = {reserved_ip}"),
            )
    };
    fx.config_with(&later(true), &spaces);
    fx.apply();
    let tags = fx.droplets()[0]["tags"].clone();
    assert!(
        tags.as_array().unwrap().contains(&json!("team-a")),
        "tag not applied: {tags}"
    );
    let known_hosts = fx.tf.dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("{new_ip} {}\n", v2["host_public_key"].as_str().unwrap()),
    )
    .unwrap();
    let out = ssh_pinned(&keyfile, &known_hosts, &new_ip, "true");
    assert!(
        out.status.success(),
        "the person's key does not log in: {}",
        text(&out)
    );

    // Off, then on again, in place: the same droplet and record, the record moved each time.
    fx.config_with(&later(false), &spaces);
    fx.apply();
    let v3 = fx.values();
    assert_eq!(v3["droplet_id"].as_u64(), Some(new_id));
    assert!(
        v3["reserved_ip_address"].is_null(),
        "{}",
        v3["reserved_ip_address"]
    );
    let a = a_records();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["id"], before[0]["id"], "the same record");
    assert_eq!(
        a[0]["data"].as_str(),
        Some(new_ip.as_str()),
        "record on the droplet"
    );
    let (status, r) = fx.lo.api("GET", &format!("/v2/reserved_ips/{rip}"), None);
    assert_eq!(status, 404, "the reserved IP turned off is left: {r}");
    fx.config_with(&later(true), &spaces);
    fx.apply();
    let v4 = fx.values();
    assert_eq!(v4["droplet_id"].as_u64(), Some(new_id));
    let rip2 = v4["reserved_ip_address"].as_str().unwrap().to_owned();
    let a = a_records();
    assert_eq!(
        a[0]["data"].as_str(),
        Some(rip2.as_str()),
        "record on the reserved IP"
    );
    let (_, r) = fx.lo.api("GET", &format!("/v2/reserved_ips/{rip2}"), None);
    assert_eq!(r["reserved_ip"]["droplet"]["id"].as_u64(), Some(new_id));
    let http = https_client(ca, &fx.fqdn, &rip2);
    assert_eq!(
        v2_status_with_token(&http, &fx.fqdn, "admin", ADMIN_PW),
        200,
        "through {rip2}"
    );
    let (code, out) = fx.plan_code();
    assert_eq!(
        code, 0,
        "plan after turning it on again is not empty:\n{out}"
    );

    // Import step: found through the reserved IP, with its bucket; the plan replaces the
    // droplet and keeps the bucket. The state from before is put back for the destroy (an
    // imported bucket counts as adopted, which destroy would keep).
    let imported = fx.import_again();
    assert_eq!(
        imported["reserved_ip_address"].as_str(),
        Some(rip2.as_str())
    );
    assert_eq!(imported["reserved_ip"], json!(true));
    assert_eq!(
        imported["storage"][0]["bucket"],
        json!(format!("{}-images", fx.name))
    );
    assert_eq!(imported["spaces_key_id"], v4["spaces_key_id"]);
    let (code, out) = fx.plan_code();
    let said = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(code, 2, "{out}");
    assert!(
        said.contains("Warning: Imported: the droplet will be replaced")
            && said.contains(&format!("the images in bucket {}-images are kept", fx.name))
            && said.contains("the reserved IP moved to it"),
        "{out}"
    );
    fx.restore_state();

    fx.destroy_and_check_nothing_left();
    for ip in [&rip, &rip2] {
        let (status, r) = fx.lo.api("GET", &format!("/v2/reserved_ips/{ip}"), None);
        assert_eq!(status, 404, "the reserved IP is left: {r}");
    }
    let (status, _) = fx
        .lo
        .api("DELETE", &format!("/v2/spaces/keys/{provider_key}"), None);
    assert_eq!(status, 204, "the provider's Spaces key");
    let (_, keys) = fx.lo.api("DELETE", &format!("/v2/account/keys/{fp}"), None);
    let _ = keys;
}
