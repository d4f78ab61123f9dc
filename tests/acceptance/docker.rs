//! Real clients against registries made by `tofu apply`: the docker CLI (Debian's docker.io,
//! a dockerd of the test's own) and podman log in, push multi-layer images and pull them, per
//! user access, anonymous pull beside authenticated push; testssl.sh rates the TLS front.

use std::time::Instant;

use serde_json::Value;

use super::PROVIDER_BLOCK;
use crate::support::docker::{
    docker_archive, ok, pushed_digest, token_for, DockerCli, Dockerd, Podman,
};
use crate::support::localocean::{unique_label, Ocean};
use crate::support::pebble::{Pebble, PebbleOptions};
use crate::support::registry_client::text;
use crate::support::tofu::Tofu;

const ADMIN_PW: &str = "admin-password-0001";
const READER_PW: &str = "reader-password-0002";

/// One registry on the binary's shared localocean, applied with `tls` and `extra` in the resource.
struct Registry {
    lo: Ocean,
    name: String,
    tf: Tofu,
    domain: String,
    fqdn: String,
    pebble: Option<Pebble>,
}

impl Registry {
    fn apply(tls: &str, extra: &str, acme: bool) -> Self {
        Self::apply_with(tls, extra, acme, None)
    }

    /// `provider_dir`: where tofu finds the provider, when not this build's.
    fn apply_with(tls: &str, extra: &str, acme: bool, provider_dir: Option<String>) -> Self {
        let lo = Ocean::shared();
        let name = unique_label();
        let domain = format!("{name}.test");
        lo.create_domain(&domain);
        let fqdn = format!("registry.{domain}");
        let pebble = acme.then(|| Pebble::start_with(lo.resolver, 80, PebbleOptions::default()));
        let mut provider = format!(
            "provider \"docker\" {{\n  token = \"{}\"\n  api_endpoint = \"{}\"\n",
            lo.token, lo.api_url
        );
        if let Some(p) = &pebble {
            provider.push_str(&format!(
                "  acme_directory_url = \"{}\"\n  acme_ca_certificates = \"{}\"\n  acme_dns_servers = [\"{}\"]\n",
                p.directory_url(),
                p.listener_ca_pem().replace('\n', "\\n"),
                lo.resolver
            ));
        }
        provider.push_str("}\n");
        let body = format!(
            r#"
resource "docker_registry" "r" {{
  name   = "{name}"
  region = "nyc3"
  fqdn   = "{fqdn}"
  users  = {{
    admin  = {{ password = "{ADMIN_PW}" }}
    reader = {{ password = "{READER_PW}", access = "pull" }}
  }}
  tls {{
{tls}
  }}
{extra}
}}
"#
        );
        // Another build of the provider may not take an image id: the stock image for it.
        let image = provider_dir.is_none().then(|| lo.baked_image()).flatten();
        let tf = Tofu::new("").with_image(image);
        if let Some(dir) = provider_dir {
            tf.write(
                "tofu.rc",
                &format!("provider_installation {{\n  dev_overrides {{\n    \"registry.opentofu.org/anchorage/docker\" = \"{dir}\"\n  }}\n  direct {{}}\n}}\n"),
            );
        }
        tf.write("main.tf", &format!("{PROVIDER_BLOCK}\n{provider}\n{body}"));
        let started = Instant::now();
        let (applied, out) = tf.run_text(&["apply", "-auto-approve", "-no-color", "-input=false"]);
        assert!(
            applied,
            "tofu apply failed:\n{out}\n--- localocean log tail:\n{}",
            lo.log_tail()
        );
        eprintln!(
            "{fqdn}: applied in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Self {
            lo,
            name,
            tf,
            domain,
            fqdn,
            pebble,
        }
    }

    fn values(&self) -> Value {
        self.tf.resource_values()
    }

    /// The PEM roots a client must trust: the private CA, or Pebble's root and intermediate.
    fn trust_pem(&self) -> String {
        match &self.pebble {
            Some(p) => tokio::runtime::Runtime::new().unwrap().block_on(async {
                format!(
                    "{}{}",
                    p.issuing_root_pem().await,
                    p.intermediate_pem().await
                )
            }),
            None => self.values()["ca_certificate_pem"]
                .as_str()
                .expect("ca_certificate_pem")
                .to_owned(),
        }
    }

    fn destroy(&self) {
        let (ok, out) =
            self.tf
                .run_text(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
        assert!(ok, "tofu destroy failed:\n{out}");
        let left = self.lo.droplets_of(&self.name);
        assert!(left.is_empty(), "{left:?}");
        let left: Vec<Value> = self
            .lo
            .records(&self.domain)
            .into_iter()
            .filter(|r| r["type"] != "NS" && r["type"] != "SOA")
            .collect();
        assert!(left.is_empty(), "records left: {left:?}");
    }
}

/// Loads a fresh image of `layers` layers tagged `reference` into the daemon.
fn load_image(cli: &DockerCli, reference: &str, layers: usize) {
    let work = tempfile::tempdir().unwrap();
    let archive = docker_archive(work.path(), reference, layers, 256 * 1024);
    let out = cli.run(&["load", "-i", archive.to_str().unwrap()]);
    ok("docker load", &out);
}

fn refused(out: &std::process::Output) -> bool {
    let t = text(out).to_lowercase();
    !out.status.success() && (t.contains("denied") || t.contains("unauthorized"))
}

/// testssl.sh against the registry's address with SNI = fqdn, trusting `ca_pem`; returns its
/// findings rated HIGH or CRITICAL and a summary (severity counts, protocols, ciphers, HSTS).
fn testssl(fqdn: &str, ip: &str, ca_pem: &str) -> (Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("testssl.json");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    // No DNS at all (the fqdn only resolves through localocean); the address is given.
    // Every check but the two slow listings (each cipher one by one, client simulations):
    // protocols, cipher categories, forward secrecy, server preference, the certificate,
    // headers, vulnerabilities.
    let out = std::process::Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--nodns",
            "none",
        ])
        .args(["-p", "-s", "-f", "-P", "-S", "-h", "-U", "--add-ca"])
        .arg(&ca)
        .args(["--ip", ip, "--jsonfile"])
        .arg(&json)
        .arg(format!("https://{fqdn}"))
        .output()
        .expect("running testssl (scripts/setup installs testssl.sh)");
    let findings: Vec<Value> = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
        .unwrap_or_else(|e| panic!("testssl wrote no JSON ({e}):\n{}", text(&out)));
    assert!(
        findings.len() > 20,
        "testssl found too little to judge:\n{}",
        text(&out)
    );
    // One exception, a property of the test's CA rather than of the registry: a private CA
    // (or Pebble) names no CRL or OCSP responder in its certificates, which testssl rates HIGH.
    let ca_without_revocation = |f: &Value| {
        f["id"] == "cert_revocation"
            && f["finding"]
                .as_str()
                .is_some_and(|t| t.contains("Neither CRL nor OCSP URI provided"))
    };
    let bad: Vec<Value> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .filter(|f| !ca_without_revocation(f))
        .cloned()
        .collect();
    let summary: Vec<String> = findings
        .iter()
        .filter(|f| {
            let id = f["id"].as_str().unwrap_or_default();
            id.starts_with("SSLv")
                || id.starts_with("TLS1")
                || id.starts_with("cipherorder_")
                || id == "HSTS"
                || id == "FS"
                || id == "cipher_order"
                || id.starts_with("HSTS")
                || matches!(f["severity"].as_str(), Some("MEDIUM" | "WARN"))
                || id.starts_with("cert_")
                || id.starts_with("cipherlist_")
        })
        .map(|f| {
            format!(
                "{} {}: {}",
                f["id"].as_str().unwrap_or_default(),
                f["severity"].as_str().unwrap_or_default(),
                f["finding"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for f in &findings {
        *counts
            .entry(f["severity"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    (bad, format!("{counts:?}\n{}", summary.join("\n")))
}

/// A private registry with a self-signed certificate, trusted through certs.d: docker login
/// (wrong then right password), push of a multi-layer image, pull by tag and by digest, a pull
/// user's push refused, pull refused after logout; podman does the same round; testssl.sh
/// finds nothing rated HIGH or CRITICAL.
#[test]
fn docker_and_podman_on_a_private_self_signed_registry() {
    let reg = Registry::apply("    source = \"self_signed\"", "", false);
    let v = reg.values();
    let ip = v["ipv4_address"].as_str().unwrap().to_owned();
    let fqdn = reg.fqdn.clone();
    let ca = reg.trust_pem();
    let tls_check = {
        let (fqdn, ip, ca) = (fqdn.clone(), ip.clone(), ca.clone());
        std::thread::spawn(move || testssl(&fqdn, &ip, &ca))
    };

    token_grants(&fqdn, &ip, &ca);

    let dockerd = Dockerd::start(reg.lo.bridge_ip(), &[(&fqdn, &ca)]);
    let admin = dockerd.cli();
    let out = admin.login(&fqdn, "admin", "not-the-password");
    assert!(
        !out.status.success(),
        "a wrong password logged in: {}",
        text(&out)
    );
    assert!(
        !admin.config_json().exists()
            || !std::fs::read_to_string(admin.config_json())
                .unwrap()
                .contains(&fqdn)
    );
    let out = admin.login(&fqdn, "admin", ADMIN_PW);
    ok("docker login as admin", &out);
    assert!(text(&out).contains("Login Succeeded"), "{}", text(&out));

    let tag = format!("{fqdn}/acc/multi:1");
    load_image(&admin, &tag, 3);
    let out = admin.run(&["push", &tag]);
    ok("docker push", &out);
    let digest = pushed_digest(&out).unwrap_or_else(|| panic!("no digest in {}", text(&out)));
    let pushed_layers = text(&out).matches(": Pushed").count();
    assert_eq!(pushed_layers, 3, "{}", text(&out));

    admin.rmi(&[&tag]);
    let out = admin.run(&["pull", &tag]);
    ok("docker pull by tag", &out);
    assert!(text(&out).contains(&digest), "{}", text(&out));
    let by_digest = format!("{fqdn}/acc/multi@{digest}");
    admin.rmi(&[&tag, &by_digest]);
    let out = admin.run(&["pull", &by_digest]);
    ok("docker pull by digest", &out);
    let out = admin.run(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        &by_digest,
    ]);
    ok("docker image inspect", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");

    // A pull user pulls, and its push is refused with docker's own message.
    let reader = dockerd.cli();
    ok(
        "docker login as reader",
        &reader.login(&fqdn, "reader", READER_PW),
    );
    let out = reader.run(&["pull", &tag]);
    ok("docker pull as reader", &out);
    let denied = format!("{fqdn}/acc/denied:1");
    ok("docker tag", &reader.run(&["tag", &tag, &denied]));
    let out = reader.run(&["push", &denied]);
    assert!(
        refused(&out),
        "the pull user's push was not refused: {}",
        text(&out)
    );

    // After logout the registry is closed to this client again.
    ok("docker logout", &admin.logout(&fqdn));
    admin.rmi(&[&tag, &by_digest, &denied]);
    let out = admin.run(&["pull", &tag]);
    assert!(refused(&out), "pull after logout: {}", text(&out));
    drop(dockerd);

    podman_round(&reg, &ca);

    let (bad, summary) = tls_check.join().unwrap();
    eprintln!("testssl.sh against {fqdn}:\n{summary}");
    assert!(
        bad.is_empty(),
        "testssl.sh rated these HIGH or CRITICAL: {bad:#?}"
    );
    reg.destroy();
}

/// The token endpoint of a private registry grants what each user holds, and nothing to
/// anonymous clients; the registry accepts its tokens for exactly those actions.
fn token_grants(fqdn: &str, ip: &str, ca: &str) {
    use base64::Engine;
    let http = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve(fqdn, format!("{ip}:443").parse().unwrap())
        .build()
        .unwrap();
    let claims = |token: &str| -> Value {
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    let scope = "repository:acc/grants:pull,push,delete registry:catalog:* other:x:pull";
    let granted = |user: &str, pw: &str| -> Vec<(String, Value)> {
        let token = token_for(&http, fqdn, user, pw, scope);
        let c = claims(&token);
        assert_eq!(c["sub"], user);
        assert_eq!(c["aud"], fqdn);
        c["access"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    format!(
                        "{}:{}",
                        a["type"].as_str().unwrap(),
                        a["name"].as_str().unwrap()
                    ),
                    a["actions"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        granted("admin", ADMIN_PW),
        [
            (
                "repository:acc/grants".to_owned(),
                serde_json::json!(["pull", "push", "delete"])
            ),
            ("registry:catalog".to_owned(), serde_json::json!(["*"])),
        ]
    );
    assert_eq!(
        granted("reader", READER_PW),
        [
            (
                "repository:acc/grants".to_owned(),
                serde_json::json!(["pull"])
            ),
            ("registry:catalog".to_owned(), serde_json::json!(["*"])),
        ]
    );
    let status = |req: reqwest::blocking::RequestBuilder| req.send().unwrap().status().as_u16();
    let token_url = format!("https://{fqdn}/token");
    assert_eq!(
        status(http.get(&token_url).query(&[("service", fqdn)])),
        401,
        "anonymous"
    );
    assert_eq!(
        status(
            http.get(&token_url)
                .query(&[("service", fqdn)])
                .basic_auth("admin", Some("wrong"))
        ),
        401,
        "wrong password"
    );
    assert_eq!(
        status(
            http.get(&token_url)
                .query(&[("service", "elsewhere.example")])
                .basic_auth("admin", Some(ADMIN_PW))
        ),
        400,
        "another service"
    );
    // The registry honours the catalog grant: the reader lists repositories with its token.
    let token = token_for(&http, fqdn, "reader", READER_PW, "registry:catalog:*");
    let resp = http
        .get(format!("https://{fqdn}/v2/_catalog"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Basic credentials on the API itself get the Bearer challenge, not a bcrypt check
    // (`/v2/_catalog` is the one exception, for browsers: see tests/acceptance/seed_module.rs).
    let resp = http
        .get(format!("https://{fqdn}/v2/"))
        .basic_auth("admin", Some(ADMIN_PW))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with(&format!(
            "Bearer realm=\"https://{fqdn}/token\",service=\"{fqdn}\""
        )),
        "{challenge}"
    );
    assert_eq!(
        resp.headers()["strict-transport-security"]
            .to_str()
            .unwrap(),
        "max-age=63072000"
    );
    assert!(
        resp.headers().get("server").is_none_or(|s| s == "nginx"),
        "{:?}",
        resp.headers().get("server")
    );
}

/// podman (Debian's): a wrong password fails, login, push, pull, a pull user's push refused.
fn podman_round(reg: &Registry, ca: &str) {
    let fqdn = &reg.fqdn;
    let pm = Podman::new(reg.lo.bridge_ip(), fqdn, ca);
    let certs = pm.cert_flag(fqdn);
    let login = |user: &str, pw: &str| {
        pm.run(
            &["login", &certs, "-u", user, "--password-stdin", fqdn],
            &format!("{pw}\n"),
        )
    };
    assert!(!login("admin", "not-the-password").status.success());
    ok("podman login", &login("admin", ADMIN_PW));
    let work = tempfile::tempdir().unwrap();
    let tag = format!("{fqdn}/acc/podman:1");
    let archive = docker_archive(work.path(), &tag, 2, 128 * 1024);
    let out = pm.run(&["load", "-i", archive.to_str().unwrap()], "");
    ok("podman load", &out);
    ok("podman push", &pm.run(&["push", &certs, &tag], ""));
    ok("podman rmi", &pm.run(&["rmi", &tag], ""));
    ok("podman pull", &pm.run(&["pull", &certs, &tag], ""));
    ok("podman login as reader", &login("reader", READER_PW));
    let denied = format!("{fqdn}/acc/podman-denied:1");
    ok("podman tag", &pm.run(&["tag", &tag, &denied], ""));
    let out = pm.run(&["push", &certs, &denied], "");
    assert!(refused(&out), "podman push as reader: {}", text(&out));
}

/// `anonymous_pull = true` with an ACME certificate (Pebble's root in certs.d): docker pulls
/// with no login, and after `docker login` a push user pushes to the same name.
#[test]
fn docker_anonymous_pull_beside_push_with_acme() {
    let reg = Registry::apply("    source = \"acme\"", "  anonymous_pull = true", true);
    let fqdn = reg.fqdn.clone();
    let roots = reg.trust_pem();
    let dockerd = Dockerd::start(reg.lo.bridge_ip(), &[(&fqdn, &roots)]);
    let cli = dockerd.cli();
    let tag = format!("{fqdn}/acc/public:1");
    load_image(&cli, &tag, 2);
    // containerd (buildkit, kubelets) tries OAuth2's POST first; a 405 sends it back to GET
    // with Basic credentials, instead of an anonymous token that could not push.
    let ip = reg.values()["ipv4_address"].as_str().unwrap().to_owned();
    let mut http = reqwest::blocking::Client::builder().tls_built_in_root_certs(false);
    for cert in reqwest::Certificate::from_pem_bundle(roots.as_bytes()).unwrap() {
        http = http.add_root_certificate(cert);
    }
    let http = http
        .resolve(&fqdn, format!("{ip}:443").parse().unwrap())
        .build()
        .unwrap();
    let resp = http
        .post(format!("https://{fqdn}/token"))
        .form(&[
            ("grant_type", "password"),
            ("service", fqdn.as_str()),
            ("username", "admin"),
            ("password", ADMIN_PW),
        ])
        .send()
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        405,
        "OAuth2 POST to the token endpoint"
    );
    // No login: pushing is refused.
    let out = cli.run(&["push", &tag]);
    assert!(refused(&out), "anonymous push: {}", text(&out));
    let out = cli.login(&fqdn, "admin", "not-the-password");
    assert!(
        !out.status.success(),
        "a wrong password logged in: {}",
        text(&out)
    );
    ok("docker login", &cli.login(&fqdn, "admin", ADMIN_PW));
    let out = cli.run(&["push", &tag]);
    ok("docker push after login", &out);
    let digest = pushed_digest(&out).expect("pushed digest");

    let anonymous = dockerd.cli();
    cli.rmi(&[&tag]);
    let out = anonymous.run(&["pull", &tag]);
    ok("anonymous docker pull", &out);
    assert!(text(&out).contains(&digest), "{}", text(&out));
    // The same name again: a second tag pushed by the logged-in client, pulled anonymously.
    let tag2 = format!("{fqdn}/acc/public:2");
    ok("docker tag", &cli.run(&["tag", &tag, &tag2]));
    ok("docker push :2", &cli.run(&["push", &tag2]));
    cli.rmi(&[&tag, &tag2]);
    ok("anonymous pull :2", &anonymous.run(&["pull", &tag2]));
    let out = anonymous.run(&["push", &tag2]);
    assert!(refused(&out), "anonymous push after a pull: {}", text(&out));
    drop(dockerd);
    reg.destroy();
}

/// Manifest GETs per second (wrk, 8 keep-alive connections, 10 s each) on one registry with
/// `anonymous_pull = true`: a push user's requests vs anonymous ones, as a client sends them
/// (a Bearer token with token auth, Basic credentials on every request before it), plus the
/// token endpoint's own rate (one bcrypt each). Prints the figures; asserts only that every
/// request succeeded. `BENCH_PROVIDER_DIR=<dir of another build>` measures that build.
#[test]
#[ignore = "benchmark: prints figures (make bench)"]
fn bench_manifest_gets_with_credentials_vs_anonymous() {
    let reg = Registry::apply_with(
        "    source = \"self_signed\"",
        "  anonymous_pull = true",
        false,
        std::env::var("BENCH_PROVIDER_DIR").ok(),
    );
    let v = reg.values();
    let ip = v["ipv4_address"].as_str().unwrap().to_owned();
    let fqdn = reg.fqdn.clone();
    let ca = reg.trust_pem();
    let sk = crate::support::registry_client::Skopeo::new(reg.lo.bridge_ip(), Some(&ca));
    let work = tempfile::tempdir().unwrap();
    crate::support::registry_client::make_oci_image(&work.path().join("img"), 4096);
    let out = sk.push(
        &work.path().join("img"),
        &format!("{fqdn}/bench/manifest:1"),
        Some(&format!("admin:{ADMIN_PW}")),
    );
    ok("skopeo push", &out);
    let http = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve(&fqdn, format!("{ip}:443").parse().unwrap())
        .build()
        .unwrap();
    let challenge = http
        .get(format!("https://{fqdn}/v2/"))
        .send()
        .unwrap()
        .headers()
        .get("www-authenticate")
        .map(|h| h.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bearer = challenge.starts_with("Bearer");
    let scope = "repository:bench/manifest:pull";
    let token = |user: Option<(&str, &str)>| {
        let mut req = http
            .get(format!("https://{fqdn}/token"))
            .query(&[("service", fqdn.as_str()), ("scope", scope)]);
        if let Some((u, p)) = user {
            req = req.basic_auth(u, Some(p));
        }
        let body: Value = req.send().unwrap().json().unwrap();
        format!("Authorization: Bearer {}", body["token"].as_str().unwrap())
    };
    let (with_credentials, without) = if bearer {
        (token(Some(("admin", ADMIN_PW))), token(None))
    } else {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PW}"));
        (format!("Authorization: Basic {basic}"), String::new())
    };
    let url = format!("https://{ip}/v2/bench/manifest/manifests/1");
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
    let host = format!("Host: {fqdn}");
    let wrk = |headers: &[&str], url: &str| -> f64 {
        let mut cmd = std::process::Command::new("wrk");
        cmd.args(["-t", "2", "-c", "8", "-d", "10s"]);
        for h in headers.iter().filter(|h| !h.is_empty()) {
            cmd.args(["-H", h]);
        }
        let out = cmd
            .arg(url)
            .output()
            .expect("wrk (scripts/setup installs it)");
        let t = text(&out);
        assert!(out.status.success(), "wrk: {t}");
        assert!(!t.contains("Non-2xx"), "requests failed under wrk:\n{t}");
        t.lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rate in wrk's output:\n{t}"))
    };
    // Interleaved rounds, so that load from elsewhere on the machine hits both sides alike.
    let (mut anonymous, mut credentials) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        anonymous.push(wrk(&[&host, accept, &without], &url));
        credentials.push(wrk(&[&host, accept, &with_credentials], &url));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "manifest GETs/s ({}): with credentials {credentials:.0?}, anonymous {anonymous:.0?}",
        if bearer {
            "token auth"
        } else {
            "Basic on every request"
        },
    );
    let (c, a) = (median(&mut credentials), median(&mut anonymous));
    eprintln!(
        "medians: with credentials {c:.0}, anonymous {a:.0}, ratio {:.2}",
        c / a
    );
    if bearer {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PW}"));
        let token_url = format!("https://{ip}/token?service={fqdn}&scope={scope}");
        // One client address: the per-client limit on token requests applies (429s), so the
        // rate of 200s is what a single guesser gets, and wrk's total is the attempt rate.
        let mut cmd = std::process::Command::new("wrk");
        cmd.args(["-t", "2", "-c", "8", "-d", "10s", "-H", &host])
            .args(["-H", &format!("Authorization: Basic {basic}")])
            .arg(&token_url);
        let out = cmd.output().unwrap();
        eprintln!("token requests from one client, 10 s:\n{}", text(&out));
    }
    reg.destroy();
}
