//! The droplet renews its own certificate (tls.renew = "droplet"), with no apply: by HTTP-01
//! through nginx and by DNS-01 through its own DNS server (the challenge name delegated to
//! it, Pebble resolving through localocean's recursive resolver), under a loop of pulls; the
//! provider adopts the renewal with an empty plan; a renewal that fails on the droplet shows
//! as a plan warning naming the cause, and apply renews from the provider instead; and no
//! DigitalOcean token, Spaces key or other account key is on the droplet.
//!
//! Pebble issues certificates valid one day and fifty seconds with `renew_before_days = 1`
//! (Debian 12's Pebble offers no renewal information, so the days rule applies): each is due
//! fifty seconds after issue, and the droplet checks every five seconds.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::registry::{ssh_pinned, PullLoop};
use super::PROVIDER_BLOCK;
use crate::support::localocean::{unique_label, Ocean};
use crate::support::pebble::{Pebble, PebbleOptions};
use crate::support::registry_client::{make_oci_image, text, Skopeo};
use crate::support::tofu::Tofu;
use terraform_provider_docker::render::paths;

const ADMIN_PW: &str = "admin-password-0001";
/// Given to the provider so that the test can look for it on the droplet.
const SPACES_ID: &str = "DO00RENEWTESTSPACESID";
const SPACES_SECRET: &str = "renew-test-spaces-secret-never-on-the-droplet";
const VALIDITY: u64 = 86400 + 50;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

struct Fixture {
    lo: Ocean,
    pebble: Pebble,
    tf: Tofu,
    name: String,
    domain: String,
    fqdn: String,
    keys: tempfile::TempDir,
}

impl Fixture {
    fn new(challenge: &str) -> Fixture {
        let lo = Ocean::shared();
        let name = unique_label();
        let domain = format!("{name}.test");
        lo.create_domain(&domain);
        // On the bridge, so that the droplet reaches the directory; validating through the
        // resolver, which follows the challenge name's delegation to the droplet.
        let pebble = Pebble::start_with(
            lo.resolver,
            80,
            PebbleOptions {
                validity_seconds: Some(VALIDITY),
                listen_ip: Some(IpAddr::V4(lo.bridge_ip())),
                ..Default::default()
            },
        );
        let fqdn = format!("registry.{domain}");
        let tf = Tofu::new("").with_image(lo.baked_image());
        let fx = Fixture {
            lo,
            pebble,
            tf,
            name,
            domain,
            fqdn,
            keys: tempfile::tempdir().unwrap(),
        };
        let ca = fx.pebble.listener_ca_pem().replace('\n', "\\n");
        let provider = format!(
            "provider \"docker\" {{\n  token = \"{}\"\n  api_endpoint = \"{}\"\n  acme_directory_url = \"{}\"\n  acme_ca_certificates = \"{ca}\"\n  acme_dns_servers = [\"{}\"]\n  spaces_access_id = \"{SPACES_ID}\"\n  spaces_secret_key = \"{SPACES_SECRET}\"\n}}\n",
            fx.lo.token,
            fx.lo.api_url,
            fx.pebble.directory_url(),
            fx.lo.resolver
        );
        let body = format!(
            r#"
resource "docker_registry" "r" {{
  name   = "{}"
  region = "nyc3"
  fqdn   = "{}"
  users  = {{ admin = {{ password = "{ADMIN_PW}" }} }}
  tls {{
    source            = "acme"
    challenge         = "{challenge}"
    renew_before_days = 1
    renew_interval    = "5s"
  }}
}}
"#,
            fx.name, fx.fqdn
        );
        fx.tf
            .write("main.tf", &format!("{PROVIDER_BLOCK}\n{provider}\n{body}"));
        fx
    }

    fn values(&self) -> Value {
        self.tf.resource_values()
    }

    fn skopeo(&self) -> Skopeo {
        let (root, intermediate) = rt().block_on(async {
            (
                self.pebble.issuing_root_pem().await,
                self.pebble.intermediate_pem().await,
            )
        });
        Skopeo::new(self.lo.bridge_ip(), Some(&format!("{root}{intermediate}")))
    }

    /// Pushes an image; the reference to pull.
    fn push(&self, sk: &Skopeo) -> String {
        let work = tempfile::tempdir().unwrap();
        make_oci_image(&work.path().join("img"), 16 * 1024);
        let reference = format!("{}/acc/renew:1", self.fqdn);
        let out = sk.push(
            &work.path().join("img"),
            &reference,
            Some(&format!("admin:{ADMIN_PW}")),
        );
        assert!(out.status.success(), "push: {}", text(&out));
        reference
    }

    /// A command on the droplet as root, through the provider's management key and pinned host key.
    fn on_droplet(&self, cmd: &str) -> String {
        let v = self.values();
        let key = self.keys.path().join("id");
        let known = self.keys.path().join("known_hosts");
        let ip = v["ipv4_address"].as_str().unwrap();
        if !key.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&key, v["management_private_key"].as_str().unwrap()).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(
                &known,
                format!("{ip} {}\n", v["host_public_key"].as_str().unwrap()),
            )
            .unwrap();
        }
        self.on_droplet_at(ip, cmd)
    }

    /// `on_droplet` without reading state (which an apply running meanwhile is writing):
    /// the keys are those `on_droplet` wrote.
    fn on_droplet_at(&self, ip: &str, cmd: &str) -> String {
        let key = self.keys.path().join("id");
        let known = self.keys.path().join("known_hosts");
        let out = ssh_pinned(&key, &known, ip, cmd);
        assert!(out.status.success(), "{cmd} on the droplet: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The serial (lowercase hex, no leading zeros) of what the droplet serves on 443.
    fn served_serial(&self, ip: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("echo | openssl s_client -connect {ip}:443 -servername {} 2>/dev/null | openssl x509 -noout -serial", self.fqdn))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase()
            .trim_start_matches('0')
            .to_owned()
    }

    /// Waits until the droplet serves a certificate other than `serial`; its serial.
    fn wait_for_renewal(&self, ip: &str, serial: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            let now = self.served_serial(ip);
            if !now.is_empty() && now != serial {
                eprintln!(
                    "renewal: the droplet serves a new certificate {:.0} s after the wait began",
                    start.elapsed().as_secs_f64()
                );
                return now;
            }
            if start.elapsed() > within {
                let status = self.on_droplet(
                    "cat /var/lib/registry-renew/status.json; journalctl -u registry-renew -n 30 --no-pager",
                );
                panic!(
                    "the droplet did not renew within {within:?}:\n{status}\n--- pebble log:\n{}",
                    self.pebble.log()
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Asserts that a plan changes nothing. The droplet's certificates are due 50 s after
    /// issue: a plan that refreshes while the droplet's next renewal is still under way (a
    /// loaded machine: seen in a full run) finds the adopted certificate due and plans the
    /// provider's own renewal, rightly. Such a plan is made again once the droplet serves its
    /// renewal (three tries in all); any other change fails at once.
    fn assert_plan_empty(&self, what: &str) {
        let ip = self.values()["ipv4_address"].as_str().unwrap().to_owned();
        for attempt in 1.. {
            let served = self.served_serial(&ip);
            let (code, plan) = self.plan();
            if code == Some(0) {
                return;
            }
            let due = plan
                .lines()
                .find_map(|l| l.trim().strip_prefix("~ certificate_renew_at"))
                .and_then(|rest| rest.split('"').nth(1))
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t <= jiff::Timestamp::now());
            assert!(
                code == Some(2) && due && attempt < 3,
                "{what} is not empty (try {attempt}):\n{plan}"
            );
            eprintln!("{what}: try {attempt} found the certificate due; waiting for the droplet");
            self.wait_for_renewal(&ip, &served, Duration::from_secs(120));
        }
    }

    /// `apply` (logged to `log`) for a step that is not about renewal. The droplet renews
    /// every certificate 50 s after issue: an apply whose converge meets a renewal that began
    /// after the plan read the droplet's files stops, as the provider is meant to, with
    /// "...tls/... changed on the droplet during the apply; apply again" (seen in a full run).
    /// That apply, and only that one, is made again as the message asks (three tries in all).
    fn apply_beside_renewals(&self, log: &str) -> (bool, String) {
        for attempt in 1.. {
            let (ok, out) = self.tf.apply_logged(log, "info");
            let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
            let renewed = flat.contains("/etc/nginx/registry/tls/")
                && flat.contains("changed on the droplet during the apply; apply again");
            if ok || !renewed || attempt == 3 {
                return (ok, out);
            }
            eprintln!("{log}: try {attempt} met the droplet's renewal; applying again");
        }
        unreachable!()
    }

    fn plan(&self) -> (Option<i32>, String) {
        let out = self
            .tf
            .run(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
        (out.status.code(), text(&out))
    }

    fn refresh(&self) {
        let (ok, out) = self.tf.run_text(&[
            "apply",
            "-refresh-only",
            "-auto-approve",
            "-no-color",
            "-input=false",
        ]);
        assert!(ok, "refresh: {out}");
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
            .filter(|r| r["type"] != "SOA" && !(r["type"] == "NS" && r["name"] == "@"))
            .collect();
        assert!(left.is_empty(), "records left: {left:?}");
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn serial_of(cert_pem: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
    hex::encode(pem.parse_x509().unwrap().raw_serial())
        .trim_start_matches('0')
        .to_owned()
}

/// With no apply the droplet renews by itself, the pulls never fail, the next plan is empty
/// and the refreshed state holds the new certificate.
fn renews_without_apply(fx: &Fixture) -> Value {
    let (ok, out) = fx.tf.apply_logged("create.log", "info");
    assert!(ok, "apply: {out}\n--- pebble log:\n{}", fx.pebble.log());
    let v1 = fx.values();
    let ip = v1["ipv4_address"].as_str().unwrap().to_owned();
    let first = serial_of(v1["certificate_pem"].as_str().unwrap());
    // The certificate is due 50 s after it was issued: an apply slower than that (a loaded
    // machine) finds the droplet renewed already; the pulls then run across the next renewal.
    let served = fx.served_serial(&ip);
    if served != first {
        eprintln!("the droplet renewed before apply returned (served {served}, state {first})");
    }
    assert!(
        v1["certificate_renew_at"].as_str().is_some(),
        "no renewal time in state: {v1}"
    );
    let sk = fx.skopeo();
    let reference = fx.push(&sk);
    let looper = PullLoop::start(fx.skopeo(), reference, format!("admin:{ADMIN_PW}"));
    let renewed = fx.wait_for_renewal(&ip, &served, Duration::from_secs(180));
    // Pulls after the switch too (the renewal may land right as the wait begins): two more
    // whole pulls, and at least three in all.
    std::thread::sleep(Duration::from_secs(5));
    looper.wait_for((looper.done() + 2).max(3), Duration::from_secs(90));
    let (pulls, failures) = looper.finish();
    assert!(
        failures.is_empty(),
        "{} pulls failed across the renewal: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(pulls >= 3, "only {pulls} pulls ran across the renewal");
    eprintln!("renewal on the droplet: {pulls} pulls across it, none failed");

    fx.assert_plan_empty("the plan after the droplet renewed");
    fx.refresh();
    let v2 = fx.values();
    let in_state = serial_of(v2["certificate_pem"].as_str().unwrap());
    assert_ne!(in_state, first, "state kept the first certificate");
    assert!(
        v2["certificate_not_after"].as_str() > v1["certificate_not_after"].as_str(),
        "{} is not later than {}",
        v2["certificate_not_after"],
        v1["certificate_not_after"]
    );
    assert_eq!(v2["droplet_id"], v1["droplet_id"]);
    let status: Value =
        serde_json::from_str(v2["renewal_status"].as_str().expect("renewal status")).unwrap();
    assert_ne!(status["result"], "failed", "{status}");
    eprintln!("renewal: first {first}, droplet renewed to {renewed}, state holds {in_state}");
    v2
}

/// No DigitalOcean token, no Spaces key of the provider, and no ACME account but this
/// registry's on the droplet: in its files and in every process's environment.
fn no_foreign_secret_on_the_droplet(fx: &Fixture, v: &Value) {
    let account: Value = serde_json::from_str(v["acme_account_key"].as_str().unwrap()).unwrap();
    let own_key = account["key_pkcs8"].as_str().unwrap();
    let on = fx.on_droplet("cat /etc/registry-renew/account.json");
    let there: Value = serde_json::from_str(&on).unwrap();
    assert_eq!(
        there["key_pkcs8"], own_key,
        "the droplet holds another account"
    );
    let accounts = fx.on_droplet("find /etc/letsencrypt/accounts -name private_key.json | wc -l");
    assert_eq!(accounts.trim(), "1", "certbot holds other accounts");
    for (what, secret) in [
        ("DigitalOcean token", fx.lo.token.as_str()),
        ("Spaces access key", SPACES_ID),
        ("Spaces secret key", SPACES_SECRET),
    ] {
        let found = fx.on_droplet(&format!(
            "grep -rIl --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -F {s} / 2>/dev/null | head -5; \
             for e in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $e 2>/dev/null | grep -qF {s} && echo $e; done; true",
            s = shell_quote(secret)
        ));
        assert!(
            found.trim().is_empty(),
            "the {what} is on the droplet: {found}"
        );
    }
}

/// A certificate the droplet did not get from the registry's CA (here one it signed itself,
/// for the fqdn, valid, not due) is drift, not a renewal: the plan changes it and apply puts
/// a certificate from the CA back.
fn a_foreign_certificate_is_drift(fx: &Fixture) {
    let ip = fx.values()["ipv4_address"].as_str().unwrap().to_owned();
    // The droplet's certificates are due 50 s after issue: a renewal running now would
    // replace the foreign one (rightly) before the plan sees it. Hold the timer meanwhile.
    fx.on_droplet(
        "systemctl stop registry-renew.timer; \
         while [ \"$(systemctl show -p ActiveState --value registry-renew.service)\" = activating ]; \
         do sleep 1; done",
    );
    // The drift check needs the foreign certificate served while the plan reads; a renewal
    // already past the timer's stop could still replace it, so the step is tried up to three
    // times.
    let mut attempt = 0;
    let (foreign, code, plan) = loop {
        attempt += 1;
        fx.on_droplet(&format!(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3 \
             -subj /CN={f} -addext subjectAltName=DNS:{f} \
             -keyout {key}.foreign -out {cert}.foreign 2>/dev/null && \
             mv {key}.foreign {key} && mv {cert}.foreign {cert} && systemctl reload nginx",
            f = fx.fqdn,
            key = paths::TLS_PRIVATE_KEY,
            cert = paths::TLS_CERT_CHAIN,
        ));
        // Right after the reload an old nginx worker may still answer with the previous
        // certificate: wait until the foreign one is served (its serial is openssl's 20 bytes).
        let wait = Instant::now();
        let mut foreign = fx.served_serial(&ip);
        while foreign.len() < 40 && wait.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(500));
            foreign = fx.served_serial(&ip);
        }
        let (code, plan) = fx.plan();
        let after = fx.served_serial(&ip);
        if after == foreign {
            break (foreign, code, plan);
        }
        eprintln!(
            "attempt {attempt}: the foreign certificate was replaced before the plan ({after})"
        );
        assert!(
            attempt < 3,
            "the foreign certificate was replaced before the plan, three times"
        );
    };
    assert_eq!(
        code,
        Some(2),
        "a foreign certificate on the droplet is not drift:\n{plan}"
    );
    let (ok, out) = fx.tf.apply_logged("foreign.log", "info");
    assert!(ok, "apply putting the certificate back: {out}");
    let served = fx.served_serial(&ip);
    assert_ne!(
        served, foreign,
        "the droplet still serves the foreign certificate"
    );
    let issuer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | openssl s_client -connect {ip}:443 -servername {} 2>/dev/null | openssl x509 -noout -issuer",
            fx.fqdn
        ))
        .output()
        .unwrap();
    let issuer = String::from_utf8_lossy(&issuer.stdout);
    assert!(issuer.contains("Pebble"), "served after apply: {issuer}");
}

/// The fallback apply installs its certificate while a renewal of the droplet's is in flight.
/// A drop-in of the test's holds the droplet's next renewal behind a gate file, inside its
/// main process (the unit's own command runs once the gate opens); once the apply's converge
/// has stopped the timer (and waits for that renewal), the gate opens: the renewal completes
/// (the provider's own order started named again) and installs the droplet's certificate;
/// only then does the converge install the provider's, which the apply checks from outside.
/// Without the converge's hold, the droplet's renewal would land after the provider's
/// certificate and the apply's check would fail.
///
/// The hold is inside the main process (the gate, then `exec` of the unit's own command), so
/// that the run the converge waits for is the one already started. (This step failed in CI
/// with `status=219/CGROUP` when the hold was an `ExecStartPre`: every localocean machine
/// shared one cgroup then, and another droplet's systemd removed this unit's; each machine
/// has its own now.)
fn apply_renews_while_the_droplet_renews(fx: &Fixture, ip: &str, before: &str) {
    const GATE: &str = "/run/registry-renew-test-gate";
    const WAITING: &str = "/run/registry-renew-test-waiting";
    let unit = terraform_provider_docker::render::renewal::renewal_service();
    let run = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the renewal unit has an ExecStart");
    fx.on_droplet(&format!(
        "mkdir -p /etc/systemd/system/registry-renew.service.d && \
         printf '[Service]\\nExecStart=\\nExecStart=/bin/sh -c \"touch {WAITING}; while [ -e {GATE} ]; do sleep 1; done; rm -f {WAITING}; exec {run}\"\\n' \
           > /etc/systemd/system/registry-renew.service.d/test-gate.conf && \
         touch {GATE} && systemctl daemon-reload && systemctl start --no-block registry-renew.service"
    ));
    // The timer or the start above: a run now waits at the gate (or one that began before
    // the drop-in ends first, and the timer's next waits).
    let start = Instant::now();
    loop {
        let sub = fx.on_droplet_at(
            ip,
            &format!(
                "if [ -e {WAITING} ]; then systemctl show -p SubState --value registry-renew.service; fi"
            ),
        );
        if sub.trim() == "start" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no renewal waits at the gate: {sub}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let (ok, out, released) = std::thread::scope(|scope| {
        let apply = scope.spawn(|| fx.tf.apply_logged("renew.log", "info"));
        // The converge holds the timer before it writes the certificate, then waits.
        let start = Instant::now();
        loop {
            let timer = fx.on_droplet_at(ip, "systemctl is-active registry-renew.timer || true");
            if timer.trim() != "active" {
                break;
            }
            assert!(
                !apply.is_finished(),
                "the apply ended without holding the droplet's renewal"
            );
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "the apply never held the droplet's renewal"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // The net under a provider killed now: systemd starts the timer again by itself.
        let net = fx.on_droplet_at(
            ip,
            "systemctl is-active registry-renew-resume.timer || true",
        );
        assert_eq!(
            net.trim(),
            "active",
            "no resume timer scheduled during the hold"
        );
        // The renewal held at the gate can only succeed once the droplet answers its
        // challenges again: for DNS-01, named started anew (by the provider's own order) with
        // the session key nsupdate reads. On a loaded machine the gate opened before that, and
        // the held renewal failed instead of racing the converge.
        let start = Instant::now();
        loop {
            let ready = fx.on_droplet_at(
                ip,
                "if systemctl is-enabled named >/dev/null 2>&1; then \
                   systemctl is-active named >/dev/null && test -e /run/named/session.key && echo ready; \
                 else echo ready; fi",
            );
            if ready.trim() == "ready" {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                eprintln!("named not back after 30 s: the held renewal may fail");
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let released = std::time::SystemTime::now();
        fx.on_droplet_at(ip, &format!("rm -f {GATE}"));
        eprintln!("the apply holds the timer; the droplet's renewal in flight goes on");
        let (ok, out) = apply.join().unwrap();
        (ok, out, released)
    });
    let done = std::time::SystemTime::now();
    assert!(ok, "apply renewing from the provider: {out}");
    let log = std::fs::read_to_string(fx.tf.dir.path().join("renew.log")).unwrap_or_default();
    assert!(
        log.contains("waited for it to end before installing the certificate"),
        "the apply's converge did not wait for the droplet's renewal"
    );
    // The droplet's renewal did complete, during the apply (its journal; the status file is
    // rewritten by every run since).
    let since = released
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .saturating_sub(1);
    let journal = fx.on_droplet_at(
        ip,
        &format!("journalctl -u registry-renew.service --since @{since} -o cat --no-pager"),
    );
    let renewed: Vec<String> = journal
        .lines()
        .filter_map(|l| l.strip_prefix("renewed: serial "))
        .filter_map(|l| l.split(',').next())
        .map(|s| s.trim_start_matches('0').to_owned())
        .collect();
    // The held run must have ended during the apply (the converge waited for it), renewed or
    // not: a renewal that failed (named restarted under it) raced nothing, which is said.
    assert!(
        !renewed.is_empty() || journal.contains("renewal failed"),
        "the droplet's renewal in flight did not run during the apply:\n{journal}"
    );
    if renewed.is_empty() {
        eprintln!(
            "the held renewal failed (named not answering yet), so nothing raced:\n{journal}"
        );
    }
    let v3 = fx.values();
    let provided = serial_of(v3["certificate_pem"].as_str().unwrap());
    assert_ne!(provided, before);
    if let Some(theirs) = renewed.first() {
        assert_ne!(
            &provided, theirs,
            "state took the droplet's certificate instead of the provider's"
        );
    }
    // The provider's certificate is served (unless the droplet, whose timer runs again,
    // renewed it since the apply ended: then its own newer one).
    let served = fx.served_serial(ip);
    if served != provided {
        let after = done
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .saturating_sub(1);
        let later = fx.on_droplet_at(
            ip,
            &format!("journalctl -u registry-renew.service --since @{after} -o cat --no-pager"),
        );
        assert!(
            later.contains(&format!("renewed: serial {served},")),
            "the droplet serves {served}, not the certificate apply renewed ({provided}):\n{later}"
        );
    }
    let timers = fx.on_droplet_at(
        ip,
        "systemctl is-active registry-renew.timer registry-renew-resume.timer || true",
    );
    assert_eq!(
        timers.split_whitespace().collect::<Vec<_>>(),
        ["active", "inactive"],
        "the renewal timer was not started again"
    );
}

/// The uptime checks of the account whose target is this registry.
fn uptime_checks_of(fx: &Fixture) -> Vec<Value> {
    let (status, body) = fx.lo.api("GET", "/v2/uptime/checks?per_page=200", None);
    assert_eq!(status, 200, "{body}");
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["target"] == format!("https://{}", fx.fqdn).as_str())
        .cloned()
        .collect()
}

/// `monitoring`: turned on in an update, the account holds an https check of the fqdn with an
/// SSL-expiry alert of the given days (and a down alert), the next plan is empty; turned off,
/// the check is gone; turned on again for the steps that follow (destroy must remove it).
fn uptime_check_on_and_off(fx: &Fixture) {
    let plain = std::fs::read_to_string(fx.tf.dir.path().join("main.tf")).unwrap();
    let with = plain.replacen(
        "  tls {",
        "  monitoring {\n    uptime_check    = true\n    alert_emails    = [\"localocean@localhost\"]\n    ssl_expiry_days = 3\n  }\n  tls {",
        1,
    );
    assert_ne!(with, plain);
    fx.tf.write("main.tf", &with);
    let (ok, out) = fx.apply_beside_renewals("monitoring-on.log");
    assert!(ok, "apply turning the uptime check on: {out}");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("The SSL-expiry alert fires before renewal is due"),
        "no warning for days not below renew_before_days:\n{out}"
    );
    let checks = uptime_checks_of(fx);
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0]["type"], "https");
    let id = checks[0]["id"].as_str().unwrap().to_owned();
    let v = fx.values();
    assert_eq!(v["uptime_check_id"], id.as_str());
    let (status, body) = fx
        .lo
        .api("GET", &format!("/v2/uptime/checks/{id}/alerts"), None);
    assert_eq!(status, 200, "{body}");
    let alerts = body["alerts"].as_array().unwrap();
    let ssl: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["type"] == "ssl_expiry")
        .collect();
    assert_eq!(ssl.len(), 1, "{body}");
    assert_eq!(ssl[0]["threshold"], 3);
    assert_eq!(
        ssl[0]["notifications"]["email"],
        serde_json::json!(["localocean@localhost"])
    );
    assert!(alerts.iter().any(|a| a["type"] == "down"), "{body}");
    assert_eq!(v["uptime_alert_ids"]["ssl_expiry"], ssl[0]["id"]);
    fx.assert_plan_empty("the plan after turning monitoring on");

    fx.tf.write("main.tf", &plain);
    let (ok, out) = fx.apply_beside_renewals("monitoring-off.log");
    assert!(ok, "apply turning the uptime check off: {out}");
    assert!(uptime_checks_of(fx).is_empty(), "the check is still there");
    let (status, _) = fx.lo.api("GET", &format!("/v2/uptime/checks/{id}"), None);
    assert_eq!(status, 404);
    assert!(fx.values()["uptime_check_id"].is_null());

    fx.tf.write("main.tf", &with);
    let (ok, out) = fx.apply_beside_renewals("monitoring-again.log");
    assert!(ok, "apply turning the uptime check on again: {out}");
    assert_eq!(uptime_checks_of(fx).len(), 1);
}

#[test]
fn the_droplet_renews_by_http01_and_the_provider_adopts_it() {
    let fx = Fixture::new("http-01");
    let v = renews_without_apply(&fx);
    no_foreign_secret_on_the_droplet(&fx, &v);
    uptime_check_on_and_off(&fx);
    a_foreign_certificate_is_drift(&fx);
    fx.destroy();
    assert!(
        uptime_checks_of(&fx).is_empty(),
        "destroy left the uptime check"
    );
}

#[test]
fn the_droplet_renews_by_dns01_and_a_failing_renewal_is_renewed_by_apply() {
    let fx = Fixture::new("dns-01");
    let v = renews_without_apply(&fx);
    // The challenge name is delegated to the droplet, whose port 53 is open for it.
    let delegation: Vec<Value> = fx
        .lo
        .records(&fx.domain)
        .into_iter()
        .filter(|r| r["type"] == "NS" && r["name"] != "@")
        .collect();
    assert_eq!(delegation.len(), 1, "{delegation:?}");
    assert_eq!(
        delegation[0]["data"]
            .as_str()
            .unwrap()
            .trim_end_matches('.'),
        fx.fqdn
    );
    let fw = &fx.lo.firewalls_of(&fx.name)[0];
    let dns_rules = fw["inbound_rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ports"] == "53")
        .count();
    assert_eq!(dns_rules, 2, "port 53 (UDP and TCP) not open: {fw}");

    // Break the droplet's answers: its DNS server stops, the timer's renewals fail.
    fx.on_droplet("systemctl stop named");
    let start = Instant::now();
    loop {
        let status = fx.on_droplet("cat /var/lib/registry-renew/status.json 2>/dev/null || true");
        if status.contains("\"failed\"") {
            eprintln!("renewal failing on the droplet: {}", status.trim());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "the droplet's renewal did not fail: {status}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    let (code, plan) = fx.plan();
    let flat = plan.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(code, Some(2), "{plan}");
    assert!(flat.contains("Renewal on the droplet is failing"), "{plan}");
    assert!(
        flat.contains("nsupdate"),
        "the warning does not name the cause:\n{plan}"
    );
    assert!(flat.contains("The certificate will be renewed"), "{plan}");
    let before = serial_of(v["certificate_pem"].as_str().unwrap());
    let ip = v["ipv4_address"].as_str().unwrap().to_owned();
    apply_renews_while_the_droplet_renews(&fx, &ip, &before);
    fx.destroy();
}
