//! Certificates end to end: ACME from Pebble by DNS-01 and HTTP-01 (Pebble resolving through
//! localocean's DNS), renewal through the plan under a loop of pulls, a DNS-01 failure that
//! leaves no challenge record, revocation on destroy, and a provided certificate.

use std::time::Duration;

use serde_json::{json, Value};

use super::PROVIDER_BLOCK;
use crate::support::localocean::{unique_label, Ocean};
use crate::support::pebble::{Pebble, PebbleOptions};
use crate::support::registry_client::{make_oci_image, text, Skopeo};
use crate::support::tofu::Tofu;

const ADMIN_PW: &str = "admin-password-0001";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// One test's registry (its own name and domain) and a Pebble of its own.
struct AcmeFixture {
    lo: Ocean,
    pebble: Pebble,
    tf: Tofu,
    name: String,
    domain: String,
    fqdn: String,
}

impl AcmeFixture {
    /// On the binary's shared localocean.
    fn new(opts: PebbleOptions) -> Self {
        Self::on(Ocean::shared(), opts)
    }

    fn on(lo: Ocean, opts: PebbleOptions) -> Self {
        let name = unique_label();
        let domain = format!("{name}.test");
        lo.create_domain(&domain);
        // Pebble validates HTTP-01 on port 80 of the droplet, as a public CA would, and
        // resolves through localocean's resolver, which follows delegations as the internet's do.
        let pebble = Pebble::start_with(lo.resolver, 80, opts);
        let fqdn = format!("registry.{domain}");
        let tf = Tofu::new("").with_image(lo.baked_image());
        Self {
            lo,
            pebble,
            tf,
            name,
            domain,
            fqdn,
        }
    }

    fn config(&self, tls: &str, extra: &str) {
        self.config_with_provider(tls, extra, "");
    }

    /// [`AcmeFixture::config`] with more of the provider block (`provider_extra`, whole lines).
    fn config_with_provider(&self, tls: &str, extra: &str, provider_extra: &str) {
        let ca = self.pebble.listener_ca_pem().replace('\n', "\\n");
        let provider = format!(
            "provider \"docker\" {{\n  token = \"{}\"\n  api_endpoint = \"{}\"\n  acme_directory_url = \"{}\"\n  acme_ca_certificates = \"{ca}\"\n  acme_dns_servers = [\"{}\"]\n{provider_extra}}}\n",
            self.lo.token,
            self.lo.api_url,
            self.pebble.directory_url(),
            self.lo.resolver
        );
        let body = format!(
            r#"
resource "docker_registry" "r" {{
  name   = "{}"
  region = "nyc3"
  fqdn   = "{}"
  users  = {{ admin = {{ password = "{ADMIN_PW}" }} }}
  tls {{
{tls}
  }}
{extra}
}}
"#,
            self.name, self.fqdn
        );
        self.tf
            .write("main.tf", &format!("{PROVIDER_BLOCK}\n{provider}\n{body}"));
    }

    fn apply_logged(&self, log: &str) -> (bool, String) {
        self.tf.apply_logged(log, "info")
    }

    fn values(&self) -> Value {
        self.tf.resource_values()
    }

    /// The challenge's answers (TXT) in the user's domain; not the delegation of the name
    /// to the droplet (an NS record, there for the droplet's own DNS-01 renewals).
    fn challenge_records(&self) -> Vec<Value> {
        self.acme_records()
            .into_iter()
            .filter(|r| r["type"] != "NS")
            .collect()
    }

    fn acme_records(&self) -> Vec<Value> {
        self.lo
            .records(&self.domain)
            .into_iter()
            .filter(|r| {
                r["name"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("_acme-challenge")
            })
            .collect()
    }

    /// skopeo trusting only Pebble's roots.
    fn skopeo(&self) -> Skopeo {
        let (root, intermediate) = rt().block_on(async {
            (
                self.pebble.issuing_root_pem().await,
                self.pebble.intermediate_pem().await,
            )
        });
        Skopeo::new(self.lo.bridge_ip(), Some(&format!("{root}{intermediate}")))
    }

    fn push_and_pull(&self, sk: &Skopeo) -> String {
        let work = tempfile::tempdir().unwrap();
        make_oci_image(&work.path().join("img"), 64 * 1024);
        let reference = format!("{}/acc/acme:1", self.fqdn);
        let out = sk.push(
            &work.path().join("img"),
            &reference,
            Some(&format!("admin:{ADMIN_PW}")),
        );
        assert!(
            out.status.success(),
            "push with only Pebble's root trusted: {}",
            text(&out)
        );
        let digest = sk.pushed_digest();
        let out = sk.pull(
            &format!("{}/acc/acme@{digest}", self.fqdn),
            &work.path().join("pulled"),
            Some(&format!("admin:{ADMIN_PW}")),
        );
        assert!(out.status.success(), "pull: {}", text(&out));
        reference
    }

    fn destroy(&self) {
        let (ok, out) =
            self.tf
                .run_text(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
        assert!(ok, "destroy: {out}");
        assert!(self.lo.droplets_of(&self.name).is_empty());
        let left: Vec<Value> = self
            .lo
            .records(&self.domain)
            .into_iter()
            // The zone's own SOA and NS stay; the challenge's delegation (an NS too) goes.
            .filter(|r| r["type"] != "SOA" && !(r["type"] == "NS" && r["name"] == "@"))
            .collect();
        assert!(left.is_empty(), "records left: {left:?}");
    }
}

/// `create timeline: <what>` lines of OpenTofu's log (it re-formats our hclog JSON as text,
/// `... create timeline: certificate ready: ... elapsed_ms=1234 ...`).
fn timeline(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter_map(|l| {
            let at = l.find("create timeline: ")?;
            let rest = &l[at + "create timeline: ".len()..];
            let what = rest.split(':').next()?.trim().to_owned();
            let ms = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("elapsed_ms="))?
                .trim_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()?;
            Some((what, ms))
        })
        .collect()
}

/// The serial of the certificate `ip` serves for `fqdn` (lowercase hex, no leading zeros).
fn served_serial(ip: &str, fqdn: &str) -> String {
    let served = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo | openssl s_client -connect {ip}:443 -servername {fqdn} 2>/dev/null | openssl x509 -noout -serial"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&served.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
        .trim_start_matches('0')
        .to_owned()
}

fn serial(cert_pem: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
    hex::encode(pem.parse_x509().unwrap().raw_serial())
}

#[test]
fn acme_dns01_issues_overlaps_the_boot_and_revokes_on_destroy() {
    let fx = AcmeFixture::new(PebbleOptions::default());
    fx.config("    source = \"acme\"\n    email = \"ops@example.test\"\n    revoke_on_destroy = true\n    caa = true", "");
    let (ok, out) = fx.apply_logged("create.log");
    assert!(ok, "apply: {out}\n--- pebble log:\n{}", fx.pebble.log());
    let v = fx.values();
    let cert = v["certificate_pem"].as_str().unwrap().to_owned();
    assert!(
        v["ca_certificate_pem"].is_null(),
        "an ACME registry has no private CA"
    );
    assert!(
        fx.challenge_records().is_empty(),
        "challenge records left: {:?}",
        fx.challenge_records()
    );
    // renew = "droplet" (the default): the challenge name is delegated to the droplet.
    let delegation = fx.acme_records();
    assert_eq!(delegation.len(), 1, "{delegation:?}");
    assert_eq!(delegation[0]["type"], "NS", "{delegation:?}");
    assert_eq!(
        delegation[0]["data"]
            .as_str()
            .unwrap()
            .trim_end_matches('.'),
        fx.fqdn,
        "{delegation:?}"
    );
    let caa: Vec<Value> = fx
        .lo
        .records(&fx.domain)
        .into_iter()
        .filter(|r| r["type"] == "CAA")
        .collect();
    assert_eq!(caa.len(), 1, "{caa:?}");
    fx.push_and_pull(&fx.skopeo());

    let log = std::fs::read_to_string(fx.tf.dir.path().join("create.log")).unwrap();
    let tl = timeline(&log);
    for (what, ms) in &tl {
        eprintln!(
            "create timeline (DNS-01): {what}: {:.1} s after apply start",
            *ms as f64 / 1000.0
        );
    }
    assert!(
        tl.iter().any(|(m, _)| m.contains("certificate ready")),
        "no timeline in the log: {tl:?}"
    );
    assert!(
        tl.iter().any(|(m, _)| m.contains("droplet SSH-ready")),
        "no timeline in the log: {tl:?}"
    );

    fx.destroy();
    assert!(
        rt().block_on(fx.pebble.is_revoked(&cert)),
        "Pebble does not report the certificate revoked"
    );
}

#[test]
fn acme_http01_issues_through_port_80() {
    let fx = AcmeFixture::new(PebbleOptions::default());
    fx.config("    source = \"acme\"\n    challenge = \"http-01\"", "");
    let (ok, out) = fx.apply_logged("create.log");
    assert!(ok, "apply: {out}\n--- pebble log:\n{}", fx.pebble.log());
    fx.push_and_pull(&fx.skopeo());
    assert!(fx.challenge_records().is_empty());
    fx.destroy();
}

#[test]
fn acme_renewal_shows_in_the_plan_and_apply_serves_a_new_serial_under_pulls() {
    // Certificates valid 10 days with a 30-day renewal window: due as soon as issued.
    let fx = AcmeFixture::new(PebbleOptions {
        validity_seconds: Some(10 * 86400),
        ..Default::default()
    });
    // Renewal through the plan only (the droplet's own renewal: tests/acceptance/renewal.rs).
    fx.config(
        "    source = \"acme\"\n    renew_before_days = 30\n    renew = \"plan\"",
        "",
    );
    let (ok, out) = fx.apply_logged("create.log");
    assert!(ok, "apply: {out}");
    let v1 = fx.values();
    let sk = fx.skopeo();
    let reference = fx.push_and_pull(&sk);
    let out = fx
        .tf
        .run(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
    let plan = text(&out);
    assert_eq!(out.status.code(), Some(2), "{plan}");
    assert!(plan.contains("The certificate will be renewed"), "{plan}");
    assert!(plan.contains("certificate_pem"), "{plan}");

    let looper =
        super::registry::PullLoop::start(fx.skopeo(), reference, format!("admin:{ADMIN_PW}"));
    std::thread::sleep(Duration::from_secs(1));
    let (ok, out) = fx.apply_logged("renew.log");
    std::thread::sleep(Duration::from_secs(1));
    let (pulls, failures) = looper.finish();
    assert!(ok, "renewal apply: {out}");
    assert!(
        failures.is_empty(),
        "{} pulls failed during the renewal: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(pulls >= 3, "only {pulls} pulls ran through the renewal");
    let v2 = fx.values();
    assert_ne!(
        serial(v2["certificate_pem"].as_str().unwrap()),
        serial(v1["certificate_pem"].as_str().unwrap()),
        "same serial after renewal"
    );
    assert_eq!(v2["droplet_id"], v1["droplet_id"]);
    // The droplet serves the new one.
    let ip = v2["ipv4_address"].as_str().unwrap();
    assert_eq!(
        served_serial(ip, &fx.fqdn),
        serial(v2["certificate_pem"].as_str().unwrap()).trim_start_matches('0'),
        "the droplet serves an old certificate"
    );
    eprintln!("renewal: {pulls} pulls through the apply, none failed");

    // Switched to the droplet's own renewal (not due for nine days with renew_before_days =
    // 1): this existing registry gets certbot, the timer (and BIND for DNS-01) on this apply,
    // and the plan after it is empty.
    fx.config("    source = \"acme\"\n    renew_before_days = 1", "");
    let (ok, out) = fx.apply_logged("switch.log");
    assert!(ok, "apply switching to renew = \"droplet\": {out}");
    let v3 = fx.values();
    assert_eq!(v3["tls"][0]["renew"], "droplet");
    assert!(
        v3["acme_delegation_record_id"].is_number(),
        "no delegation of the challenge name: {}",
        v3["acme_delegation_record_id"]
    );
    let keys = tempfile::tempdir().unwrap();
    let (key, known) = (keys.path().join("id"), keys.path().join("known_hosts"));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&key, v3["management_private_key"].as_str().unwrap()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            &known,
            format!("{ip} {}\n", v3["host_public_key"].as_str().unwrap()),
        )
        .unwrap();
    }
    let out = super::registry::ssh_pinned(
        &key,
        &known,
        ip,
        "systemctl is-active registry-renew.timer named; systemctl is-enabled registry-renew.timer",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["active", "active", "enabled"],
        "the droplet's renewal is not running: {}",
        text(&out)
    );
    let out = fx
        .tf
        .run(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the plan after the switch is not empty:\n{}",
        text(&out)
    );
    fx.destroy();
}

#[test]
fn dns01_failure_names_the_record_and_leaves_none() {
    // Arms a fault: an instance of this test's own.
    let fx = AcmeFixture::on(Ocean::own(), PebbleOptions::default());
    // Creating records fails; the A record is made later, so only the challenge is hit.
    fx.lo.arm_fault(json!({
        "kind": "http", "method": "POST",
        "path_prefix": format!("/v2/domains/{}/records", fx.domain),
        "status": 500, "count": 1000
    }));
    fx.config("    source = \"acme\"", "  timeouts { create = \"3m\" }");
    let (ok, out) = fx.apply_logged("create.log");
    assert!(!ok, "apply should fail:\n{out}");
    let record = format!("_acme-challenge.{}", fx.fqdn);
    assert!(
        out.contains(&record),
        "the error does not name {record}:\n{out}"
    );
    assert!(
        fx.challenge_records().is_empty(),
        "challenge records left: {:?}",
        fx.challenge_records()
    );
    let url = format!("{}/_localocean/faults", fx.lo.api_url);
    reqwest::blocking::Client::new().delete(url).send().unwrap();
    fx.destroy();
}

#[test]
fn provided_certificate_is_served_and_one_for_another_name_fails_the_plan() {
    let lo = Ocean::shared();
    let name = unique_label();
    let domain = format!("{name}.test");
    lo.create_domain(&domain);
    let fqdn = format!("registry.{domain}");
    let make = |name: &str| {
        let issued = terraform_provider_docker::tls::self_signed(name, &[], None).unwrap();
        (
            issued.cert_chain_pem,
            issued.private_key_pem.expose().to_owned(),
            issued.ca_certificate_pem.unwrap(),
        )
    };
    let tf = Tofu::new("");
    let write = |cert: &str, key: &str| {
        let provider = format!(
            "provider \"docker\" {{\n  token = \"{}\"\n  api_endpoint = \"{}\"\n}}\n",
            lo.token, lo.api_url
        );
        let body = format!(
            r#"
resource "docker_registry" "r" {{
  name   = "{name}"
  region = "nyc3"
  fqdn   = "{fqdn}"
  users  = {{ admin = {{ password = "{ADMIN_PW}" }} }}
  tls {{
    source          = "provided"
    certificate_pem = <<-EOT
{cert}EOT
    private_key_pem = <<-EOT
{key}EOT
  }}
}}
"#
        );
        tf.write("main.tf", &format!("{PROVIDER_BLOCK}\n{provider}\n{body}"));
    };
    let (other_cert, other_key, _) = make(&format!("other.{domain}"));
    write(&other_cert, &other_key);
    let (ok, out) = tf.run_text(&["plan", "-no-color", "-input=false"]);
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        !ok && flat.contains("Invalid provided certificate"),
        "{out}"
    );
    assert!(flat.contains(&format!("not \"{fqdn}\"")), "{out}");

    let (cert, key, ca) = make(&fqdn);
    write(&cert, &key);
    let (ok, out) = tf.run_text(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    assert!(ok, "{out}");
    let out = tf.run(&["show", "-json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &v["values"]["root_module"]["resources"][0]["values"];
    let ip = v["ipv4_address"].as_str().unwrap();
    let served = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo | openssl s_client -connect {ip}:443 -servername {fqdn} 2>/dev/null | openssl x509 -noout -serial"))
        .output()
        .unwrap();
    let served = String::from_utf8_lossy(&served.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    assert_eq!(
        served.trim_start_matches('0'),
        serial(&cert).trim_start_matches('0'),
        "the droplet does not serve the provided certificate"
    );
    let sk = Skopeo::new(lo.bridge_ip(), Some(&ca));
    let work = tempfile::tempdir().unwrap();
    make_oci_image(&work.path().join("img"), 1024);
    let out = sk.push(
        &work.path().join("img"),
        &format!("{fqdn}/acc/p:1"),
        Some(&format!("admin:{ADMIN_PW}")),
    );
    assert!(out.status.success(), "{}", text(&out));
    let (ok, out) = tf.run_text(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    assert!(ok, "{out}");
    assert!(lo.droplets_of(&name).is_empty());
}

/// Two droplets behind a load balancer: the certificate is ordered by HTTP-01 through the
/// balancer at create (the balancer holds the first droplet only then), then renewed through
/// the plan (the default with `replicas`) while the balancer holds both: the CA's check
/// reaches whichever droplet the balancer picks, so the answer must be on each. Every droplet
/// serves the certificate in state, before and after.
#[test]
fn acme_http01_through_a_load_balancer_reaches_every_droplet_and_each_serves_the_renewal() {
    // Valid 10 days with a 30-day renewal window: due as soon as issued.
    let fx = AcmeFixture::new(PebbleOptions {
        validity_seconds: Some(10 * 86400),
        ..Default::default()
    });
    // Spaces for the droplets to share: the provider's own key, as a user has one (droplets
    // reach Spaces on the bridge address, and so does this machine).
    let (status, body) = fx.lo.api(
        "POST",
        "/v2/spaces/keys",
        Some(json!({ "name": format!("{}-provider", fx.name), "grants": [{ "bucket": "", "permission": "fullaccess" }] })),
    );
    assert_eq!(status, 201, "{body}");
    let port = fx
        .lo
        .s3_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/');
    let provider_extra = format!(
        "  spaces_access_id = \"{}\"\n  spaces_secret_key = \"{}\"\n  spaces_endpoint = \"http://{}:{port}\"\n",
        body["key"]["access_key"].as_str().unwrap(),
        body["key"]["secret_key"].as_str().or(body["secret_key"].as_str()).unwrap(),
        fx.lo.bridge_ip()
    );
    use rand::Rng;
    let bucket = format!("tf-acc-{:08x}", rand::thread_rng().gen::<u32>());
    fx.config_with_provider(
        "    source = \"acme\"\n    challenge = \"http-01\"\n    renew_before_days = 30",
        &format!("  replicas = 2\n  storage {{\n    backend = \"spaces\"\n    bucket  = \"{bucket}\"\n    force_destroy = true\n  }}"),
        &provider_extra,
    );
    let (ok, out) = fx.apply_logged("create.log");
    assert!(ok, "apply: {out}\n--- pebble log:\n{}", fx.pebble.log());
    let v1 = fx.values();
    assert_eq!(v1["tls"][0]["renew"], "plan", "the default with replicas");
    let ips: Vec<String> = v1["ipv4_addresses"]
        .as_array()
        .unwrap_or_else(|| panic!("ipv4_addresses: {}", v1["ipv4_addresses"]))
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    let first = serial(v1["certificate_pem"].as_str().unwrap());
    for ip in &ips {
        assert_eq!(
            served_serial(ip, &fx.fqdn),
            first.trim_start_matches('0'),
            "droplet {ip} does not serve the certificate in state"
        );
    }
    fx.push_and_pull(&fx.skopeo());

    let out = fx
        .tf
        .run(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
    let plan = text(&out);
    assert_eq!(out.status.code(), Some(2), "{plan}");
    assert!(plan.contains("The certificate will be renewed"), "{plan}");
    let (ok, out) = fx.apply_logged("renew.log");
    assert!(
        ok,
        "renewal apply: {out}\n--- pebble log:\n{}",
        fx.pebble.log()
    );
    let v2 = fx.values();
    let second = serial(v2["certificate_pem"].as_str().unwrap());
    assert_ne!(second, first, "same serial after renewal");
    assert_eq!(v2["droplet_ids"], v1["droplet_ids"], "renewed in place");
    for ip in &ips {
        assert_eq!(
            served_serial(ip, &fx.fqdn),
            second.trim_start_matches('0'),
            "droplet {ip} does not serve the renewed certificate"
        );
    }
    fx.push_and_pull(&fx.skopeo());
    assert!(fx.challenge_records().is_empty());
    let lb = v2["load_balancer_id"].as_str().unwrap().to_owned();
    fx.destroy();
    let (status, body) = fx.lo.api("GET", &format!("/v2/load_balancers/{lb}"), None);
    assert_eq!(status, 404, "the load balancer outlived destroy: {body}");
}
