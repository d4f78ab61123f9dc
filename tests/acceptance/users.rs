//! Users as the seeds have them, defaults that come back, and users at scale, end to end:
//! a generated password and per-user docker configs used by skopeo; every defaulted argument
//! removed from the configuration, planned back to its default and applied; and (ignored,
//! `bench_`) 1,000 users: a plan with no change, one change under pulls, the first apply and
//! the provider's peak memory, each printed.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use super::registry::PullLoop;
use super::PROVIDER_BLOCK;
use crate::support::localocean::{unique_label, Ocean};
use crate::support::pebble::Pebble;
use crate::support::registry_client::{make_oci_image, text, Skopeo};
use crate::support::tofu::{provider_dir, Tofu};

const ADMIN_PW: &str = "admin-password-0001";
const READER_PW: &str = "reader-password-0002";
const LEGACY_PW: &str = "legacy-password-0003";

/// One localocean with a domain, OpenTofu in a temp dir, and Pebble when ACME is needed.
struct Fx {
    lo: Ocean,
    /// The registry's name (droplet, firewall, volume): unique on the shared localocean.
    name: String,
    pebble: Option<Pebble>,
    tf: Tofu,
    domain: String,
    fqdn: String,
}

impl Fx {
    fn new(acme: bool) -> Fx {
        let lo = Ocean::shared();
        let name = unique_label();
        let domain = format!("{name}.test");
        lo.create_domain(&domain);
        let pebble = acme.then(|| Pebble::start(lo.dns, 80));
        let fqdn = format!("registry.{domain}");
        let tf = Tofu::new("").with_image(lo.baked_image());
        Fx {
            lo,
            name,
            pebble,
            tf,
            domain,
            fqdn,
        }
    }

    /// main.tf: the provider pointed at this localocean (and Pebble), then `body`.
    fn config(&self, body: &str) {
        let acme = self.pebble.as_ref().map_or(String::new(), |p| {
            format!(
                "  acme_directory_url = \"{}\"\n  acme_ca_certificates = \"{}\"\n  acme_dns_servers = [\"{}\"]\n",
                p.directory_url(),
                p.listener_ca_pem().replace('\n', "\\n"),
                self.lo.dns
            )
        });
        let provider = format!(
            "provider \"docker\" {{\n  token = \"{}\"\n  api_endpoint = \"{}\"\n{acme}}}\n",
            self.lo.token, self.lo.api_url
        );
        let body = body
            .replace("FQDN", &self.fqdn)
            .replace("\"NAME\"", &format!("\"{}\"", self.name));
        self.tf
            .write("main.tf", &format!("{PROVIDER_BLOCK}\n{provider}\n{body}"));
    }

    fn apply(&self) -> String {
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

    /// `tofu plan -detailed-exitcode`: 0 no changes, 2 changes.
    fn plan(&self) -> (i32, String) {
        let out = self
            .tf
            .run(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn values(&self) -> Value {
        self.tf.resource_values()
    }

    fn skopeo(&self, ca: Option<&str>) -> Skopeo {
        Skopeo::new(self.lo.bridge_ip(), ca)
    }

    fn volumes(&self) -> Vec<Value> {
        self.lo.volumes_of(&self.name)
    }

    fn destroy_and_check_nothing_left(&self) {
        let (ok, out) =
            self.tf
                .run_text(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
        assert!(ok, "tofu destroy failed:\n{out}");
        assert!(
            self.lo.droplets_of(&self.name).is_empty(),
            "{:?}",
            self.lo.droplets_of(&self.name)
        );
        assert!(
            self.lo.firewalls_of(&self.name).is_empty(),
            "{:?}",
            self.lo.firewalls_of(&self.name)
        );
        assert!(self.volumes().is_empty(), "{:?}", self.volumes());
        let records: Vec<Value> = self
            .lo
            .records(&self.domain)
            .into_iter()
            .filter(|r| r["type"] != "NS" && r["type"] != "SOA")
            .collect();
        assert!(records.is_empty(), "records left: {records:?}");
    }
}

/// `skopeo <verb> --<dir>-authfile=<file with config>` and the rest of `args`.
fn with_authfile(sk: &Skopeo, flag: &str, config: &str, args: &[String]) -> Output {
    let file = sk.dir.path().join(format!("auth-{}.json", rand_suffix()));
    std::fs::write(&file, config).unwrap();
    let mut all = vec![args[0].clone(), format!("{flag}={}", file.display())];
    all.extend(args[1..].iter().cloned());
    sk.run(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

fn rand_suffix() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().gen::<u32>())
}

fn by_user<'a>(v: &'a Value, attr: &str, user: &str) -> &'a str {
    v[attr][user]
        .as_str()
        .unwrap_or_else(|| panic!("no {attr}[{user:?}] in {}", v[attr]))
}

#[test]
fn a_generated_password_and_each_users_docker_config_log_in_with_skopeo() {
    let fx = Fx::new(false);
    let legacy_hash =
        terraform_provider_docker::render::hash_password(&LEGACY_PW.to_owned().into()).unwrap();
    fx.config(&format!(
        r#"
resource "docker_registry" "r" {{
  name   = "NAME"
  region = "nyc3"
  fqdn   = "FQDN"
  users = {{
    ci     = {{}}
    reader = {{ password = "{READER_PW}", access = "pull" }}
    legacy = {{ password_bcrypt = "{legacy_hash}", access = "pull" }}
  }}
  tls {{ source = "self_signed" }}
}}

output "ci_password" {{
  value     = docker_registry.r.generated_passwords["ci"]
  sensitive = true
}}
"#
    ));
    let out = fx.apply();
    assert!(
        !out.contains(READER_PW) && !out.contains(&legacy_hash),
        "a secret in the apply output:\n{out}"
    );
    let v = fx.values();
    let ci_pw = by_user(&v, "generated_passwords", "ci").to_owned();
    assert_eq!(ci_pw.len(), 32, "{ci_pw}");
    assert!(ci_pw.chars().all(|c| c.is_ascii_alphanumeric()));
    let (ok, raw) = fx.tf.run_text(&["output", "-raw", "ci_password"]);
    assert!(ok && raw.contains(&ci_pw), "tofu output -raw: {raw}");
    assert_eq!(
        v["user_access"],
        serde_json::json!({"ci": "push", "reader": "pull", "legacy": "pull"})
    );
    assert!(
        v["docker_config_jsons"]["legacy"].is_null(),
        "no plaintext, no config"
    );
    let ci_config = by_user(&v, "docker_config_jsons", "ci").to_owned();
    // The Kubernetes pull secret's `.dockerconfigjson` is that text, as it is.
    let k8s: Value = serde_json::from_str(&ci_config).unwrap();
    let auth = k8s["auths"][fx.fqdn.as_str()]["auth"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap(),
        format!("ci:{ci_pw}").as_bytes()
    );

    // ci pushes with its config file alone (skopeo reads docker's config.json format).
    let ca = v["ca_certificate_pem"].as_str().unwrap().to_owned();
    let sk = fx.skopeo(Some(&ca));
    let work = tempfile::tempdir().unwrap();
    make_oci_image(&work.path().join("img"), 64 * 1024);
    let reference = format!("{}/acc/users:1", fx.fqdn);
    let cert_dir = format!("--dest-cert-dir={}", sk.cert_dir.display());
    let push = |config: &str| {
        with_authfile(
            &sk,
            "--dest-authfile",
            config,
            &[
                "copy".into(),
                "--retry-times=0".into(),
                cert_dir.clone(),
                format!("oci:{}:latest", work.path().join("img").display()),
                format!("docker://{reference}"),
            ],
        )
    };
    let out = push(&ci_config);
    assert!(out.status.success(), "push as ci: {}", text(&out));
    // reader pulls with its own config, and may not push with it.
    let reader_config = by_user(&v, "docker_config_jsons", "reader").to_owned();
    let out = with_authfile(
        &sk,
        "--authfile",
        &reader_config,
        &[
            "inspect".into(),
            "--raw".into(),
            format!("--cert-dir={}", sk.cert_dir.display()),
            format!("docker://{reference}"),
        ],
    );
    assert!(out.status.success(), "inspect as reader: {}", text(&out));
    assert!(!push(&reader_config).status.success(), "reader pushed");
    // legacy, known only by its hash, logs in with its password.
    let out = sk.inspect_raw(&reference, Some(&format!("legacy:{LEGACY_PW}")));
    assert!(out.status.success(), "inspect as legacy: {}", text(&out));

    // The generated password stays: nothing to do on the next plan.
    let (code, out) = fx.plan();
    assert_eq!(code, 0, "plan after apply is not empty:\n{out}");
    fx.destroy_and_check_nothing_left();
}

/// Every defaulted argument away from its default. The size is a smaller one: DigitalOcean
/// never shrinks a droplet's disk, so a droplet made bigger could not go back.
const NON_DEFAULTS: &str = r#"
resource "docker_registry" "r" {
  name              = "NAME"
  region            = "nyc3"
  fqdn              = "FQDN"
  size              = "s-1vcpu-512mb-10gb"
  ssh_allowed_cidrs = ["198.18.0.0/15", "127.0.0.0/8"]
  anonymous_pull    = true
  ui                = true
  users = {
    admin  = { password = "ADMIN_PW" }
    reader = { password = "READER_PW", access = "pull" }
  }
  tls {
    source            = "self_signed"
    challenge         = "http-01"
    key_type          = "rsa-2048"
    renew_before_days = 10
    revoke_on_destroy = true
    caa               = true
  }
  storage {
    backend         = "volume"
    size_gib        = 1
    force_destroy   = true
    spaces_redirect = true
  }
  timeouts {
    create = "15m"
    update = "15m"
    delete = "9m"
  }
}
"#;

fn without(config: &str, lines: &[&str]) -> String {
    config
        .lines()
        .filter(|l| !lines.iter().any(|x| l.trim_start().starts_with(x)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_plan_shows(plan: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(plan.contains(w), "the plan does not show {w:?}:\n{plan}");
    }
}

#[test]
fn removed_arguments_return_to_their_defaults_in_the_plan_and_on_the_registry() {
    let fx = Fx::new(true);
    let all = NON_DEFAULTS
        .replace("ADMIN_PW", ADMIN_PW)
        .replace("READER_PW", READER_PW);
    fx.config(&all);
    fx.apply();
    let v = fx.values();
    assert_eq!(v["storage"][0]["backend"], "volume");
    assert_eq!(fx.volumes().len(), 1);

    // 1. The backend goes (with its size): the registry is replaced, on the droplet's disk.
    let no_backend = without(&all, &["backend", "size_gib"]);
    fx.config(&no_backend);
    let (code, plan) = fx.plan();
    assert_eq!(code, 2, "{plan}");
    assert_plan_shows(
        &plan,
        &["must be replaced", "~ backend", "\"volume\" -> \"droplet\""],
    );
    fx.apply();
    assert_eq!(fx.values()["storage"][0]["backend"], "droplet");
    assert!(fx.volumes().is_empty(), "{:?}", fx.volumes());

    // 2. Every other argument goes, `tls` keeping only its source and `storage` empty: each
    // is planned back to its default, in place.
    let rest = without(
        &no_backend,
        &[
            "size ",
            "ssh_allowed_cidrs",
            "anonymous_pull",
            "ui ",
            "challenge",
            "key_type",
            "renew_before_days",
            "revoke_on_destroy",
            "caa",
            "force_destroy",
            "spaces_redirect",
            "create =",
            "update =",
            "delete =",
        ],
    )
    .replace(", access = \"pull\"", "")
    .replace("timeouts {\n  }", "");
    assert!(!rest.contains("timeouts"), "{rest}");
    fx.config(&rest);
    let (code, plan) = fx.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(!plan.contains("must be replaced"), "{plan}");
    assert_plan_shows(
        &plan,
        &[
            "update in-place",
            "~ size",
            "\"s-1vcpu-512mb-10gb\" -> \"s-1vcpu-1gb\"",
            "~ anonymous_pull",
            "true -> false",
            "~ ui",
            "+ \"0.0.0.0/0\"",
            "+ \"::/0\"",
            "- \"198.18.0.0/15\"",
            "~ \"reader\" = \"pull\" -> \"push\"",
            "\"http-01\" -> \"dns-01\"",
            "\"rsa-2048\" -> \"ecdsa-p256\"",
            "10 -> 30",
            "~ revoke_on_destroy",
            "~ caa",
            "~ force_destroy",
            "~ spaces_redirect",
            "- timeouts {",
            "Resizing powers the droplet off",
        ],
    );
    fx.apply();
    let v = fx.values();
    assert_eq!(v["size"], "s-1vcpu-1gb");
    assert_eq!(v["anonymous_pull"], false);
    assert_eq!(v["ui"], false);
    assert_eq!(
        v["ssh_allowed_cidrs"],
        serde_json::json!(["0.0.0.0/0", "::/0"])
    );
    assert_eq!(v["tls"][0]["key_type"], "ecdsa-p256");
    assert_eq!(v["storage"][0]["force_destroy"], false);
    assert_eq!(fx.lo.droplets_of(&fx.name)[0]["size_slug"], "s-1vcpu-1gb");
    let fw = &fx.lo.firewalls_of(&fx.name)[0];
    let mut ssh: Vec<String> = fw["inbound_rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ports"] == "22")
        .flat_map(|r| {
            r["sources"]["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    ssh.sort();
    assert_eq!(ssh, ["0.0.0.0/0", "::/0"]);
    // No longer public; reader, back to `push`, pushes.
    let ca = v["ca_certificate_pem"].as_str().unwrap().to_owned();
    let sk = fx.skopeo(Some(&ca));
    let work = tempfile::tempdir().unwrap();
    make_oci_image(&work.path().join("img"), 64 * 1024);
    let reference = format!("{}/acc/defaults:1", fx.fqdn);
    let out = sk.push(
        &work.path().join("img"),
        &reference,
        Some(&format!("reader:{READER_PW}")),
    );
    assert!(out.status.success(), "push as reader: {}", text(&out));
    let out = sk.inspect_raw(&reference, None);
    assert!(!out.status.success(), "anonymous pull still works");
    let (code, plan) = fx.plan();
    assert_eq!(code, 0, "plan after the defaults came back:\n{plan}");

    // 3. The `tls` and `storage` blocks go: an ACME certificate, the documented default.
    let bare = without(&rest, &["source"])
        .replace("tls {\n  }", "")
        .replace("storage {\n  }", "");
    assert!(!bare.contains("tls") && !bare.contains("storage"), "{bare}");
    fx.config(&bare);
    let (code, plan) = fx.plan();
    assert_eq!(code, 2, "{plan}");
    assert_plan_shows(
        &plan,
        &["update in-place", "- tls {", "- source", "\"self_signed\""],
    );
    fx.apply();
    let v = fx.values();
    assert!(v["ca_certificate_pem"].is_null(), "still self-signed");
    let pebble = fx.pebble.as_ref().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let roots = rt.block_on(async {
        format!(
            "{}{}",
            pebble.issuing_root_pem().await,
            pebble.intermediate_pem().await
        )
    });
    let out = fx
        .skopeo(Some(&roots))
        .inspect_raw(&reference, Some(&format!("admin:{ADMIN_PW}")));
    assert!(
        out.status.success(),
        "pull with only Pebble trusted: {}",
        text(&out)
    );
    let (code, plan) = fx.plan();
    assert_eq!(code, 0, "plan after the ACME certificate:\n{plan}");
    fx.destroy_and_check_nothing_left();
}

// ---- 1,000 users ----------------------------------------------------------------------------

const BENCH_USERS: usize = 1000;

/// 1,000 users as HCL literals: `admin` (push) and `userNNNN`, every third a pull user.
fn thousand_users(changed: Option<usize>) -> String {
    let mut body = format!(
        "resource \"docker_registry\" \"r\" {{\n  name   = \"NAME\"\n  region = \"nyc3\"\n  fqdn   = \"FQDN\"\n  tls {{ source = \"self_signed\" }}\n  users = {{\n    admin = {{ password = \"{ADMIN_PW}\" }}\n"
    );
    for i in 1..BENCH_USERS {
        let pw = if changed == Some(i) {
            format!("changed-password-{i:04}")
        } else {
            format!("bench-password-{i:04}")
        };
        let access = if i % 3 == 0 {
            ", access = \"pull\""
        } else {
            ""
        };
        body.push_str(&format!(
            "    user{i:04} = {{ password = \"{pw}\"{access} }}\n"
        ));
    }
    body.push_str("  }\n}\n");
    body
}

/// Every process under `pid` (its threads' children, recursively).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// `VmHWM` (peak resident set) of `pid` in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs `tofu args` and samples the peak RSS of every provider process it starts, found by
/// pid among tofu's descendants (the provider binary's path names it): (output, seconds, peak
/// KiB over all of them).
fn run_measured(tf: &Tofu, args: &[&str]) -> (Output, f64, u64) {
    let provider = std::fs::canonicalize(provider_dir().join("terraform-provider-docker")).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("out"), logs.path().join("err"));
    let started = Instant::now();
    let mut child = tf
        .command(args)
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .expect("starting tofu");
    let mut peak = 0u64;
    let status = loop {
        for pid in descendants(child.id()) {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if exe.as_deref() == Some(Path::new(&provider)) {
                peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let secs = started.elapsed().as_secs_f64();
    let out = Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    };
    (out, secs, peak)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

#[test]
#[ignore = "benchmark: run with --ignored bench"]
fn bench_users_1000_plan_one_change_first_apply_and_provider_memory() {
    let fx = Fx::new(false);
    let apply = ["apply", "-auto-approve", "-no-color", "-input=false"];
    fx.config(&thousand_users(None));
    let load = load_average();
    let (out, first_apply, first_rss) = run_measured(&fx.tf, &apply);
    assert!(out.status.success(), "first apply:\n{}", text(&out));
    eprintln!(
        "bench users: first apply, {BENCH_USERS} users: {first_apply:.1} s (goal 15 s; load {load})"
    );
    eprintln!(
        "bench users: provider peak RSS during that apply: {:.1} MB (goal 60 MB)",
        first_rss as f64 / 1024.0
    );

    let mut plans = Vec::new();
    for _ in 0..3 {
        let load = load_average();
        let (out, secs, _) = run_measured(
            &fx.tf,
            &["plan", "-no-color", "-input=false", "-detailed-exitcode"],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "plan not empty:\n{}",
            text(&out)
        );
        plans.push((secs, load));
    }
    let mut sorted: Vec<f64> = plans.iter().map(|p| p.0).collect();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "bench users: plan with no change, {BENCH_USERS} users: median {:.1} s (goal 2 s; runs {})",
        sorted[1],
        plans
            .iter()
            .map(|(s, l)| format!("{s:.1} s at load {l}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // One user's password changes while another user pulls in a loop.
    let v = fx.values();
    let ca = v["ca_certificate_pem"].as_str().unwrap().to_owned();
    let sk = fx.skopeo(Some(&ca));
    let work = tempfile::tempdir().unwrap();
    make_oci_image(&work.path().join("img"), 64 * 1024);
    let reference = format!("{}/bench/users:1", fx.fqdn);
    let out = sk.push(
        &work.path().join("img"),
        &reference,
        Some(&format!("admin:{ADMIN_PW}")),
    );
    assert!(out.status.success(), "push: {}", text(&out));
    let looper = PullLoop::start(
        fx.skopeo(Some(&ca)),
        reference,
        "user0003:bench-password-0003".into(),
    );
    std::thread::sleep(Duration::from_secs(1));
    fx.config(&thousand_users(Some(7)));
    let load = load_average();
    let (out, one_change, change_rss) = run_measured(&fx.tf, &apply);
    std::thread::sleep(Duration::from_secs(1));
    let (pulls, failures) = looper.finish();
    assert!(out.status.success(), "apply of one user:\n{}", text(&out));
    assert!(text(&out).contains("1 changed"), "{}", text(&out));
    eprintln!(
        "bench users: apply of one changed user among {BENCH_USERS}: {one_change:.1} s (goal 3 s; load {load}); pulls during it: {pulls} ok, {} failed (goal 0)",
        failures.len()
    );
    eprintln!(
        "bench users: provider peak RSS during that apply: {:.1} MB",
        change_rss as f64 / 1024.0
    );
    assert!(failures.is_empty(), "pulls failed: {:?}", failures.first());
    let (code, out) = fx.plan();
    assert_eq!(code, 0, "plan after the change:\n{out}");
    fx.destroy_and_check_nothing_left();
}
