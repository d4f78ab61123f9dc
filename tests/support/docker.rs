//! The docker CLI and podman as registry clients: a dockerd of the test's own (Debian's docker.io,
//! vfs, no iptables, no bridge) in a private mount namespace with the test's resolv.conf and
//! /etc/docker, stopped by its pid; multi-layer images built on disk; the token flow by hand.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::registry_client::text;

/// Debian's docker.io, by path: another docker CLI may come first on PATH.
pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";

/// A dockerd with its own data root, exec root, socket, pid file, daemon.json and certs.d.
/// dockerd itself talks to registries, so it runs where the registry's name resolves through
/// localocean's DNS: a mount namespace whose /etc/resolv.conf and /etc/docker are bind
/// mounts of files in the test's temp dir (the host's stay untouched).
pub struct Dockerd {
    /// None only while dropping.
    dir: Option<tempfile::TempDir>,
    child: Child,
    pid: u32,
}

impl Dockerd {
    /// Starts dockerd resolving through `dns` and trusting, for each `(registry host, PEM)`,
    /// that CA (`certs.d/<host>/ca.crt`, as docker documents for private registries).
    pub fn start(dns: Ipv4Addr, trusted: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tf-acc-test-dockerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("resolv.conf"), format!("nameserver {dns}\n")).unwrap();
        let etc = d.join("etc-docker");
        std::fs::create_dir_all(etc.join("certs.d")).unwrap();
        // No registry mirrors, no insecure registries: the test's trust is certs.d alone.
        std::fs::write(etc.join("daemon.json"), "{}\n").unwrap();
        for (host, pem) in trusted {
            let certs = etc.join("certs.d").join(host);
            std::fs::create_dir_all(&certs).unwrap();
            std::fs::write(certs.join("ca.crt"), pem).unwrap();
        }
        assert!(
            Path::new("/etc/docker").is_dir(),
            "/etc/docker is missing: run scripts/setup (docker.io creates it)"
        );
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$0\" /etc/resolv.conf && mount --bind \"$1\" /etc/docker && \
                 shift && exec \"$@\"",
            )
            .arg(d.join("resolv.conf"))
            .arg(&etc)
            .arg(DOCKERD)
            .arg("--config-file")
            .arg(etc.join("daemon.json"))
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .args(["--bridge=none", "--data-root"])
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("-p")
            .arg(d.join("docker.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd (scripts/setup installs docker.io)");
        // unshare and sh exec in place: the child's pid is dockerd's.
        let pid = child.id();
        let mut me = Self {
            dir: Some(dir),
            child,
            pid,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("dockerd exited ({status}):\n{}", me.log_tail());
            }
            let probe = Command::new(DOCKER)
                .args([
                    "-H",
                    &me.host(),
                    "version",
                    "--format",
                    "{{.Server.Version}}",
                ])
                .output()
                .unwrap();
            if probe.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s:\n{}",
                me.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        me
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("dockerd's dir").path()
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.path().join("docker.sock").display())
    }

    /// A docker CLI with a config dir (credentials) of its own, talking to this daemon.
    pub fn cli(&self) -> DockerCli {
        let config = tempfile::Builder::new()
            .prefix("tf-acc-test-docker-config-")
            .tempdir()
            .unwrap();
        DockerCli {
            config,
            host: self.host(),
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The pid in a pid file, if that process still runs.
    fn live_pid(path: &Path) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // dockerd's own containerd, started by it, is stopped by it on SIGTERM; its pid file
        // lets the fallback below find it by id should dockerd die first.
        let containerd_pid = self.path().join("exec/containerd/containerd.pid");
        let containerd = Self::live_pid(&containerd_pid);
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(pid) = containerd.filter(|p| Path::new(&format!("/proc/{p}")).exists()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let dir = self.dir.take().expect("dockerd's dir");
        if std::thread::panicking() {
            // Keep the log for the failure; the data root holds only the test's images.
            let kept = dir.keep();
            let _ = std::fs::remove_dir_all(kept.join("data"));
            eprintln!("dockerd log kept in {}", kept.join("dockerd.log").display());
        }
    }
}

/// The docker CLI with its own `DOCKER_CONFIG`.
pub struct DockerCli {
    config: tempfile::TempDir,
    host: String,
}

impl DockerCli {
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, "")
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(DOCKER)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.config.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running docker (scripts/setup installs docker.io)");
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    /// `docker login` with the password on stdin, as CI scripts do.
    pub fn login(&self, registry: &str, user: &str, password: &str) -> Output {
        self.run_stdin(
            &["login", registry, "-u", user, "--password-stdin"],
            &format!("{password}\n"),
        )
    }

    pub fn logout(&self, registry: &str) -> Output {
        self.run(&["logout", registry])
    }

    /// The credentials file this CLI writes (`docker login` stores them there).
    pub fn config_json(&self) -> PathBuf {
        self.config.path().join("config.json")
    }

    /// Removes local images (a later pull must fetch them from the registry).
    pub fn rmi(&self, references: &[&str]) {
        let mut args = vec!["rmi", "--force"];
        args.extend(references);
        let _ = self.run(&args);
    }
}

impl DockerCli {
    /// `docker import` of a tarball holding one file of `size` random bytes, tagged `tag`: an
    /// image of one layer that no registry holds yet. The bytes come from the system's tools
    /// (a debug build of the rand crate would take longer than what a benchmark measures).
    pub fn import_random(&self, dir: &Path, tag: &str, size: usize) {
        let src = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(dir)
            .unwrap();
        let tar = dir.join(format!("import-{}.tar", hex::encode(Sha256::digest(tag))));
        let st = Command::new("sh")
            .arg("-c")
            .arg("head -c \"$0\" /dev/urandom > \"$1/blob.bin\" && tar -C \"$1\" -cf \"$2\" .")
            .arg(size.to_string())
            .arg(src.path())
            .arg(&tar)
            .status()
            .unwrap();
        assert!(st.success(), "writing the {size}-byte tarball for {tag}");
        drop(src);
        let out = self.run(&["import", tar.to_str().unwrap(), tag]);
        let _ = std::fs::remove_file(&tar);
        ok(&format!("docker import {tag}"), &out);
    }
}

/// The manifest digest `docker push` prints ("1: digest: sha256:... size: 1234").
pub fn pushed_digest(out: &Output) -> Option<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().find_map(|l| {
        let rest = &l[l.find("digest: ")? + 8..];
        rest.split_whitespace()
            .next()
            .filter(|d| d.starts_with("sha256:"))
            .map(str::to_owned)
    })
}

/// A `docker load` archive at `dir/image.tar` holding an image tagged `tag` with `layers`
/// layers of `layer_size` random bytes each (docker save's layout: manifest.json, the config,
/// one layer.tar per layer). Nothing comes from Docker Hub.
pub fn docker_archive(dir: &Path, tag: &str, layers: usize, layer_size: usize) -> PathBuf {
    use rand::RngCore;
    let root = dir.join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let mut diff_ids = Vec::new();
    let mut layer_paths = Vec::new();
    for i in 0..layers {
        let src = dir.join(format!("layer{i}"));
        std::fs::create_dir_all(&src).unwrap();
        let mut data = vec![0u8; layer_size];
        rand::thread_rng().fill_bytes(&mut data);
        std::fs::write(src.join(format!("file{i}.bin")), &data).unwrap();
        let tar = dir.join(format!("layer{i}.tar"));
        let st = Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let bytes = std::fs::read(&tar).unwrap();
        let hex = hex::encode(Sha256::digest(&bytes));
        std::fs::create_dir_all(root.join(&hex)).unwrap();
        std::fs::rename(&tar, root.join(&hex).join("layer.tar")).unwrap();
        let _ = std::fs::remove_dir_all(&src);
        diff_ids.push(format!("sha256:{hex}"));
        layer_paths.push(format!("{hex}/layer.tar"));
    }
    let history: Vec<serde_json::Value> = (0..layers)
        .map(|i| serde_json::json!({ "created": "1970-01-01T00:00:00Z", "created_by": format!("layer {i}") }))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": { "Cmd": ["/file0.bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    })
    .to_string();
    let config_name = format!("{}.json", hex::encode(Sha256::digest(config.as_bytes())));
    std::fs::write(root.join(&config_name), &config).unwrap();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": layer_paths,
    }]);
    std::fs::write(root.join("manifest.json"), manifest.to_string()).unwrap();
    let archive = dir.join("image.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let _ = std::fs::remove_dir_all(&root);
    archive
}

/// podman (Debian's) with storage, auth file, resolv.conf and trusted CAs of the test's own;
/// run in a private mount namespace like skopeo, so names resolve through localocean's DNS.
pub struct Podman {
    pub dir: tempfile::TempDir,
}

impl Podman {
    pub fn new(dns: Ipv4Addr, registry: &str, ca_pem: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tf-acc-test-podman-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("resolv.conf"), format!("nameserver {dns}\n")).unwrap();
        let certs = d.join("certs.d").join(registry);
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::write(certs.join("ca.crt"), ca_pem).unwrap();
        std::fs::write(
            d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/storage\"\n",
                d.display()
            ),
        )
        .unwrap();
        Self { dir }
    }

    /// `podman <args>` with `stdin`.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let d = self.dir.path();
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/resolv.conf && exec podman \"$@\"")
            .arg(d.join("resolv.conf"))
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .env("XDG_RUNTIME_DIR", d.join("xdg"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running podman (scripts/setup installs it)");
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    /// `--cert-dir` with the registry's CA (login, push and pull take it).
    pub fn cert_flag(&self, registry: &str) -> String {
        format!(
            "--cert-dir={}",
            self.dir.path().join("certs.d").join(registry).display()
        )
    }
}

/// What `/v2/` answers to `user` after the token dance docker does: a token from the token
/// endpoint with Basic credentials (its status when that fails), then `/v2/` with the token.
pub fn v2_status_with_token(
    http: &reqwest::blocking::Client,
    fqdn: &str,
    user: &str,
    password: &str,
) -> u16 {
    let resp = http
        .get(format!("https://{fqdn}/token"))
        .query(&[("service", fqdn)])
        .basic_auth(user, Some(password))
        .send()
        .unwrap();
    if resp.status().as_u16() != 200 {
        return resp.status().as_u16();
    }
    let body: serde_json::Value = resp.json().unwrap();
    let token = body["token"].as_str().expect("token in the token response");
    http.get(format!("https://{fqdn}/v2/"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// A token for `scope` (e.g. `repository:acc/x:pull,push`) as `user`.
pub fn token_for(
    http: &reqwest::blocking::Client,
    fqdn: &str,
    user: &str,
    password: &str,
    scope: &str,
) -> String {
    let resp = http
        .get(format!("https://{fqdn}/token"))
        .query(&[("service", fqdn), ("scope", scope)])
        .basic_auth(user, Some(password))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "token for {user} on {scope}");
    let body: serde_json::Value = resp.json().unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// Fails with the command's output when it did not succeed.
pub fn ok(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed:\n{}", text(out));
}
