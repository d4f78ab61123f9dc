//! Issue #17's rows 5 and 6, each beside its floor measured in the same run: a create apply vs
//! a droplet made and provisioned by hand; docker CLI push/pull through nginx vs direct.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::PROVIDER_BLOCK;
use crate::support::docker::{ok, Dockerd};
use crate::support::localocean::{unique_label, Ocean};
use crate::support::registry_client::text;
use crate::support::tofu::Tofu;

const ADMIN_PW: &str = "admin-password-0001";
const READER_PW: &str = "reader-password-0002";

/// One line of scripts/bench's table: `BENCH|row|what|measured|goal|met`, `row` being the
/// row's number in issue #17's table. scripts/bench collects these lines from every bench's
/// output and prints them as one table, in the issue's order, at the end.
pub fn bench_line(row: u32, what: &str, measured: &str, goal: &str, met: bool) {
    eprintln!(
        "BENCH|{row}|{what}|{measured}|{goal}|{}",
        if met { "yes" } else { "no" }
    );
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The packages the provider's converge installs, read from its source so that the floor
/// installs exactly those (the constant is private to the provider).
fn provider_packages() -> String {
    let src = include_str!("../../src/remote/converge.rs");
    src.lines()
        .find_map(|l| l.strip_prefix("const PACKAGES: &str = \""))
        .and_then(|rest| rest.strip_suffix("\";"))
        .expect("const PACKAGES in src/remote/converge.rs")
        .to_owned()
}

/// One registry on the shared localocean: self-signed, two users, storage as given.
struct Bench {
    lo: Ocean,
    tf: Tofu,
    name: String,
    domain: String,
    fqdn: String,
}

impl Bench {
    /// A registry with `storage` (the lines inside `storage { }`); `spaces`: the provider
    /// gets Spaces keys of its own (a full-access key, as a user would have) and the endpoint.
    fn new(storage: &str, spaces: bool) -> Self {
        let lo = Ocean::shared();
        let name = unique_label();
        let domain = format!("{name}.test");
        lo.create_domain(&domain);
        let fqdn = format!("registry.{domain}");
        let mut provider = String::new();
        if spaces {
            let (status, body) = lo.api(
                "POST",
                "/v2/spaces/keys",
                Some(json!({ "name": format!("{name}-provider"), "grants": [{ "bucket": "", "permission": "fullaccess" }] })),
            );
            assert_eq!(status, 201, "{body}");
            // Droplets reach Spaces on the bridge address, and so does the host.
            let port = lo.s3_url.rsplit(':').next().unwrap().trim_end_matches('/');
            provider = format!(
                "  spaces_access_id  = \"{}\"\n  spaces_secret_key = \"{}\"\n  spaces_endpoint   = \"http://{}:{port}\"\n",
                body["key"]["access_key"].as_str().unwrap(),
                body["key"]["secret_key"].as_str().or(body["secret_key"].as_str()).unwrap(),
                lo.bridge_ip(),
            );
        }
        let tf = Tofu::new("");
        tf.write(
            "main.tf",
            &format!(
                r#"{PROVIDER_BLOCK}
provider "docker" {{
  token        = "{}"
  api_endpoint = "{}"
{provider}}}

resource "docker_registry" "r" {{
  name   = "{name}"
  region = "nyc3"
  fqdn   = "{fqdn}"
  users  = {{
    admin  = {{ password = "{ADMIN_PW}" }}
    reader = {{ password = "{READER_PW}", access = "pull" }}
  }}
  tls {{ source = "self_signed" }}
  storage {{
{storage}
  }}
}}
"#,
                lo.token, lo.api_url
            ),
        );
        Self {
            lo,
            tf,
            name,
            domain,
            fqdn,
        }
    }

    /// `tofu apply`, timed as a user waits for it.
    fn apply(&self) -> f64 {
        let t = Instant::now();
        let (ok, out) = self
            .tf
            .run_text(&["apply", "-auto-approve", "-no-color", "-input=false"]);
        let secs = t.elapsed().as_secs_f64();
        assert!(
            ok,
            "tofu apply failed:\n{out}\n--- localocean log tail:\n{}",
            self.lo.log_tail()
        );
        secs
    }

    fn values(&self) -> Value {
        self.tf.resource_values()
    }

    /// Destroys the registry and its domain; checks that no droplet of it is left.
    fn destroy(&self) {
        let (ok, out) =
            self.tf
                .run_text(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
        assert!(ok, "tofu destroy failed:\n{out}");
        let left = self.lo.droplets_of(&self.name);
        assert!(left.is_empty(), "droplets left: {left:?}");
        let (status, body) = self
            .lo
            .api("DELETE", &format!("/v2/domains/{}", self.domain), None);
        assert_eq!(status, 204, "deleting {}: {body}", self.domain);
    }
}

/// ssh to root@ip with `key`, accepting only the host key in `known_hosts`; `stdin` is sent.
fn ssh(key: &Path, known_hosts: &Path, ip: &str, cmd: &str, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=2",
            "-o",
        ])
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg(format!("root@{ip}"))
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// An ed25519 key pair written at `path` (and `path.pub`); returns (private, public).
fn keygen(path: &Path) -> (String, String) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen");
    (
        std::fs::read_to_string(path).unwrap(),
        std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned(),
    )
}

/// Seconds of each step of the floor: (create → SSH answers, packages installed over SSH).
/// The droplet is what the provider makes: same image, size, region and cloud-config (our
/// management key for root, a host key pinned from the start); the install is the converge
/// script's own (wait for cloud-init, services held back, apt-get update and install).
fn floor(lo: &Ocean, packages: &str) -> (f64, f64) {
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("mgmt");
    let (_, mgmt_public) = keygen(&key);
    let (host_private, host_public) = keygen(&work.path().join("host"));
    let user_data = terraform_provider_docker::render::user_data(
        &mgmt_public,
        &terraform_provider_docker::secret::Secret::new(host_private),
        &host_public,
    );
    let name = unique_label();
    let t0 = Instant::now();
    let (status, body) = lo.api(
        "POST",
        "/v2/droplets",
        Some(json!({
            "name": name,
            "region": "nyc3",
            "size": terraform_provider_docker::resource::schema::DEFAULT_SIZE,
            "image": terraform_provider_docker::resource::schema::DEFAULT_IMAGE,
            "user_data": user_data,
            "tags": [name],
        })),
    );
    assert_eq!(status, 202, "creating the floor's droplet: {body}");
    let id = body["droplet"]["id"].as_u64().expect("droplet id");
    let deadline = Instant::now() + Duration::from_secs(180);
    let ip = loop {
        let (status, body) = lo.api("GET", &format!("/v2/droplets/{id}"), None);
        assert_eq!(status, 200, "{body}");
        let public = body["droplet"]["networks"]["v4"]
            .as_array()
            .and_then(|v| v.iter().find(|n| n["type"] == "public"))
            .and_then(|n| n["ip_address"].as_str())
            .map(str::to_owned);
        if let (Some(ip), "active") = (public, body["droplet"]["status"].as_str().unwrap_or("")) {
            break ip;
        }
        assert!(Instant::now() < deadline, "droplet {id} not active: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let known_hosts = work.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{ip} {host_public}\n")).unwrap();
    loop {
        let out = ssh(&key, &known_hosts, &ip, "true", "");
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SSH on droplet {id}: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let to_ssh = t0.elapsed().as_secs_f64();
    let script = format!(
        r#"set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
if command -v cloud-init >/dev/null 2>&1 && ! systemctl is-active --quiet cloud-final.service; then
  timeout 600 cloud-init status --wait >/dev/null 2>&1 || true
fi
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install {packages} >/dev/null
rm -f /usr/sbin/policy-rc.d
"#
    );
    let t1 = Instant::now();
    let out = ssh(&key, &known_hosts, &ip, "bash -s", &script);
    let install = t1.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "installing {packages} on droplet {id}: {}",
        text(&out)
    );
    let (status, body) = lo.api("DELETE", &format!("/v2/droplets/{id}"), None);
    assert_eq!(status, 204, "deleting droplet {id}: {body}");
    (to_ssh, install)
}

/// Row 5: `tofu apply` creating a self-signed registry with 2 users, and in the same run its
/// floor (a droplet through localocean's API to SSH, plus installing the provider's packages
/// over SSH), interleaved over `BENCH_ROUNDS` rounds (default 2) so that the machine's load
/// falls on both alike. Prints both and their ratio; asserts only that everything worked.
#[test]
#[ignore = "benchmark: scripts/bench runs it"]
fn bench_create_apply_vs_floor() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let packages = provider_packages();
    let lo = Ocean::shared();
    let (mut applies, mut floors) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let b = Bench::new("    backend = \"droplet\"", false);
        let apply = b.apply();
        b.destroy();
        let (to_ssh, install) = floor(&lo, &packages);
        eprintln!(
            "bench create: round {}: apply {apply:.1} s; floor {:.1} s (create→SSH {to_ssh:.1} s + install {install:.1} s); ratio {:.2}",
            round + 1,
            to_ssh + install,
            apply / (to_ssh + install)
        );
        applies.push(apply);
        floors.push(to_ssh + install);
    }
    let (a, f) = (mean(&applies), mean(&floors));
    let ratio = a / f;
    eprintln!(
        "bench create: mean over {rounds}: apply {a:.1} s, floor {f:.1} s, ratio {ratio:.2} (goal ≤ 1.2)"
    );
    bench_line(
        5,
        "create apply, self-signed, 2 users vs floor",
        &format!("{a:.1} s vs {f:.1} s: {ratio:.2}×"),
        "≤ 1.2×",
        ratio <= 1.2,
    );
}

/// A second registry process on the droplet, straight behind an SSH tunnel: the provider's
/// binary, config and storage, but listening on 127.0.0.1:5002 and naming itself by the
/// tunnel's local address. The provider's registry names itself `https://<fqdn>`, so the
/// upload URLs it hands out lead a client back through nginx; this one keeps the client on
/// the direct path. Stopped (its transient unit) and the tunnel closed when dropped.
struct Tunnel {
    child: std::process::Child,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    ip: String,
}

impl Tunnel {
    const UNIT: &'static str = "bench-registry-direct";

    fn open(dir: &Path, v: &Value) -> Self {
        let ip = v["ipv4_address"].as_str().unwrap().to_owned();
        let key = dir.join("mgmt.key");
        std::fs::write(&key, v["management_private_key"].as_str().unwrap()).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("{ip} {}\n", v["host_public_key"].as_str().unwrap()),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // As Debian's unit runs it (user docker-registry); a debug listener of its own in
        // case the config has one.
        let start = format!(
            "systemd-run --unit={} --property=User=docker-registry \
             --setenv=REGISTRY_HTTP_ADDR=127.0.0.1:5002 \
             --setenv=REGISTRY_HTTP_HOST=http://127.0.0.1:{port} \
             --setenv=REGISTRY_HTTP_DEBUG_ADDR=127.0.0.1:5003 \
             /usr/bin/docker-registry serve /etc/docker/registry/provider.yml",
            Self::UNIT
        );
        let out = ssh(&key, &known_hosts, &ip, &start, "");
        ok("starting the direct registry", &out);
        let mut cmd = Command::new("ssh");
        localocean::process::end_with_parent(&mut cmd);
        let child = cmd
            .arg("-i")
            .arg(&key)
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ExitOnForwardFailure=yes",
                "-N",
                "-L",
            ])
            .arg(format!("127.0.0.1:{port}:127.0.0.1:5002"))
            .arg(format!("root@{ip}"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let me = Self {
            child,
            port,
            key,
            known_hosts,
            ip,
        };
        // Up when /v2/ answers through the tunnel (401: it asks for a token).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}/v2/"))
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout) == "401" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the direct registry did not answer through the tunnel: {}",
                text(&ssh(
                    &me.key,
                    &me.known_hosts,
                    &me.ip,
                    &format!("journalctl -u {} --no-pager | tail -20", Self::UNIT),
                    ""
                ))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        me
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = ssh(
            &self.key,
            &self.known_hosts,
            &self.ip,
            &format!("systemctl stop {}", Self::UNIT),
            "",
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds a docker command takes; fails the test when it fails.
fn timed(what: &str, f: impl FnOnce() -> Output) -> f64 {
    let t = Instant::now();
    let out = f();
    let secs = t.elapsed().as_secs_f64();
    ok(what, &out);
    secs
}

/// Row 6: the docker CLI pushes and pulls an image of one 256 MiB random layer through nginx
/// (https://fqdn: TLS, chunked PATCHes through the proxy) and straight to the registry (the
/// same registry binary, config and storage on the droplet's loopback, through an SSH tunnel,
/// plain HTTP: docker takes localhost registries as insecure; see [`Tunnel`]). Each round,
/// each side logs in and pushes a new image of its own (no blob is already there or
/// mountable), then a fresh docker daemon pulls it back; the sides alternate who goes first.
/// `BENCH_ROUNDS` rounds (default 3), medians compared; backends from `BENCH_BACKENDS`
/// (default all three: `droplet volume spaces`). Prints each round, MiB/s and the ratios.
#[test]
#[ignore = "benchmark: scripts/bench runs it"]
fn bench_docker_push_pull_256mib_nginx_vs_direct() {
    const SIZE: usize = 256 * 1024 * 1024;
    let mib = SIZE as f64 / (1024.0 * 1024.0);
    let backends =
        std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "droplet volume spaces".into());
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3);
    for backend in backends.split_whitespace() {
        let storage = match backend {
            "droplet" => "    backend = \"droplet\"".to_owned(),
            "volume" => {
                "    backend = \"volume\"\n    size_gib = 2\n    force_destroy = true".to_owned()
            }
            "spaces" => format!(
                "    backend = \"spaces\"\n    bucket = \"bench-{:08x}\"\n    force_destroy = true",
                rand::random::<u32>()
            ),
            other => panic!("BENCH_BACKENDS: no backend {other:?} here (droplet, volume, spaces)"),
        };
        let b = Bench::new(&storage, backend == "spaces");
        b.apply();
        let v = b.values();
        let ca = v["ca_certificate_pem"].as_str().unwrap().to_owned();
        let tunnel = Tunnel::open(b.tf.dir.path(), &v);
        let direct = format!("127.0.0.1:{}", tunnel.port);
        let work: PathBuf = b.tf.dir.path().join("images");
        std::fs::create_dir_all(&work).unwrap();
        let sides = [("via nginx", b.fqdn.clone()), ("direct", direct)];
        // Seconds per side (0: nginx, 1: direct), one entry a round.
        let (mut push, mut pull) = ([vec![], vec![]], [vec![], vec![]]);
        for round in 0..rounds {
            // A repository per side: both sides reach the same registry and storage, so one
            // name would have the second push retag the first's image. A new image each
            // round: nothing is already there or mountable.
            let tags: Vec<String> = ["nginx", "direct"]
                .iter()
                .zip(&sides)
                .map(|(side, (_, host))| format!("{host}/bench/docker-{backend}-{side}:{round}"))
                .collect();
            // Sides alternate who goes first, round by round: an order effect (a warm disk
            // cache, load from elsewhere) falls on both alike.
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let dockerd = Dockerd::start(b.lo.bridge_ip(), &[(&b.fqdn, &ca)]);
            let cli = dockerd.cli();
            for ((_, host), tag) in sides.iter().zip(&tags) {
                ok(
                    &format!("docker login {host}"),
                    &cli.login(host, "admin", ADMIN_PW),
                );
                cli.import_random(&work, tag, SIZE);
            }
            for &i in &order {
                let tag = &tags[i];
                push[i].push(timed(&format!("docker push {tag}"), || {
                    cli.run(&["push", tag])
                }));
            }
            // Pulls by a fresh dockerd: the pushing one keeps layers it pushed even after
            // `rmi`.
            drop(cli);
            drop(dockerd);
            let dockerd = Dockerd::start(b.lo.bridge_ip(), &[(&b.fqdn, &ca)]);
            let cli = dockerd.cli();
            for (_, host) in &sides {
                ok(
                    &format!("docker login {host}"),
                    &cli.login(host, "admin", ADMIN_PW),
                );
            }
            // Each pull must fetch its layer (not find it local): "Pull complete" says it did.
            for &i in &order {
                let tag = &tags[i];
                let mut out = None;
                pull[i].push(timed(&format!("docker pull {tag}"), || {
                    let o = cli.run(&["pull", tag]);
                    out = Some(text(&o));
                    o
                }));
                let out = out.unwrap();
                assert!(out.contains("Pull complete"), "pull {tag}: {out}");
            }
            eprintln!(
                "bench docker: {backend} round {}: push {:.1} s via nginx, {:.1} s direct; pull {:.1} s via nginx, {:.1} s direct",
                round + 1,
                push[0][round],
                push[1][round],
                pull[0][round],
                pull[1][round],
            );
        }
        let (push, pull) = (
            [median(&push[0]), median(&push[1])],
            [median(&pull[0]), median(&pull[1])],
        );
        let (push_ratio, pull_ratio) = (push[1] / push[0], pull[1] / pull[0]);
        eprintln!(
            "bench docker: {backend:<7} 256 MiB push {:6.1} MiB/s via nginx, {:6.1} MiB/s direct (nginx/direct {push_ratio:.2}); pull {:6.1} MiB/s via nginx, {:6.1} MiB/s direct ({pull_ratio:.2}); medians of {rounds} rounds",
            mib / push[0],
            mib / push[1],
            mib / pull[0],
            mib / pull[1],
        );
        for (what, ratio, nginx, direct) in [
            ("push", push_ratio, mib / push[0], mib / push[1]),
            ("pull", pull_ratio, mib / pull[0], mib / pull[1]),
        ] {
            bench_line(
                6,
                &format!("256 MiB docker {what}, {backend}: nginx vs direct"),
                &format!("{nginx:.1} vs {direct:.1} MiB/s: {ratio:.2} (median of {rounds})"),
                "≥ 0.9",
                ratio >= 0.9,
            );
        }
        drop(tunnel);
        b.destroy();
    }
}
