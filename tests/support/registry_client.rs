//! Registry clients for tests: a minimal OCI image built on disk, and skopeo run with a
//! private /etc/resolv.conf (a mount namespace of its own) so that registry names resolve
//! through localocean's DNS without touching the host's resolver.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    d
}

/// An OCI image layout at `dir` with one layer holding `size` random bytes; returns the
/// manifest digest, which a registry must give back unchanged.
pub fn make_oci_image(dir: &Path, size: usize) -> String {
    make_oci_image_with(dir, size, false)
}

/// As `make_oci_image`; with `gzipped` the layer is stored gzip-compressed, so a push sends it
/// as it is (skopeo compresses plain layers on the way, which would measure gzip, not the wire).
pub fn make_oci_image_with(dir: &Path, size: usize, gzipped: bool) -> String {
    make_oci_image_full(dir, size, gzipped, None)
}

/// As `make_oci_image`, with the image config's `created` (RFC 3339), which dates the image
/// for retention rules.
pub fn make_oci_image_created(dir: &Path, size: usize, created: &str) -> String {
    make_oci_image_full(dir, size, false, Some(created))
}

fn make_oci_image_full(dir: &Path, size: usize, gzipped: bool, created: Option<&str>) -> String {
    use rand::RngCore;
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let src = dir.join("rootfs");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(src.join("payload.bin"), &data).unwrap();
    let tar = dir.join("layer.tar");
    let st = Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("payload.bin")
        .status()
        .unwrap();
    assert!(st.success());
    let plain = std::fs::read(&tar).unwrap();
    let diff_id = sha(&plain);
    let (layer, layer_type) = if gzipped {
        let st = Command::new("gzip")
            .args(["-1", "-n", "-f"])
            .arg(&tar)
            .status()
            .unwrap();
        assert!(st.success());
        let gz = tar.with_extension("tar.gz");
        let bytes = std::fs::read(&gz).unwrap();
        let _ = std::fs::remove_file(&gz);
        (bytes, "application/vnd.oci.image.layer.v1.tar+gzip")
    } else {
        (plain, "application/vnd.oci.image.layer.v1.tar")
    };
    let layer_digest = put_blob(dir, &layer);
    let mut config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "config": {}
    });
    if let Some(created) = created {
        config["created"] = created.into();
    }
    let config = config.to_string();
    let config_digest = put_blob(dir, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": layer_type, "digest": layer_digest, "size": layer.len() }]
    })
    .to_string();
    let manifest_digest = put_blob(dir, manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "latest" }
        }]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_file(&tar);
    manifest_digest
}

pub fn manifest_digest(raw: &[u8]) -> String {
    sha(raw)
}

/// skopeo with names resolved by the DNS server at `dns` (port 53) and `cert_dir` trusted.
pub struct Skopeo {
    pub dir: tempfile::TempDir,
    pub cert_dir: PathBuf,
}

impl Skopeo {
    pub fn new(dns: Ipv4Addr, ca_pem: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tf-acc-test-skopeo-")
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join("resolv.conf"),
            format!("nameserver {dns}\n"),
        )
        .unwrap();
        let cert_dir = dir.path().join("certs");
        std::fs::create_dir_all(&cert_dir).unwrap();
        if let Some(ca) = ca_pem {
            std::fs::write(cert_dir.join("ca.crt"), ca).unwrap();
        }
        Self { dir, cert_dir }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let resolv = self.dir.path().join("resolv.conf");
        let mut cmd = Command::new("unshare");
        localocean::process::end_with_parent(&mut cmd);
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/resolv.conf && exec skopeo \"$@\"")
            .arg(&resolv)
            .args(args)
            .output()
            .expect("running skopeo (scripts/setup installs it)")
    }

    fn cert_flag(&self, flag: &str) -> String {
        format!("{flag}={}", self.cert_dir.display())
    }

    /// Pushes the OCI layout at `src` to `reference` (`host/repo:tag`). skopeo compresses the
    /// layer on the way, so the pushed manifest digest is read from `--digestfile`.
    pub fn push(&self, src: &Path, reference: &str, creds: Option<&str>) -> Output {
        let digestfile = self.dir.path().join("pushed.digest");
        let mut args = vec![
            "copy".to_string(),
            "--retry-times=0".into(),
            self.cert_flag("--dest-cert-dir"),
            format!("--digestfile={}", digestfile.display()),
        ];
        if let Some(c) = creds {
            args.push(format!("--dest-creds={c}"));
        } else {
            args.push("--dest-no-creds".into());
        }
        args.push(format!("oci:{}:latest", src.display()));
        args.push(format!("docker://{reference}"));
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The manifest digest of the last successful push.
    pub fn pushed_digest(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pushed.digest"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The raw manifest of `reference`, as a pull sees it.
    pub fn inspect_raw(&self, reference: &str, creds: Option<&str>) -> Output {
        let mut args = vec![
            "inspect".to_string(),
            "--raw".into(),
            self.cert_flag("--cert-dir"),
        ];
        if let Some(c) = creds {
            args.push(format!("--creds={c}"));
        } else {
            args.push("--no-creds".into());
        }
        args.push(format!("docker://{reference}"));
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Pulls `reference` into an OCI layout at `dest`.
    pub fn pull(&self, reference: &str, dest: &Path, creds: Option<&str>) -> Output {
        let mut args = vec![
            "copy".to_string(),
            "--retry-times=0".into(),
            self.cert_flag("--src-cert-dir"),
        ];
        if let Some(c) = creds {
            args.push(format!("--src-creds={c}"));
        } else {
            args.push("--src-no-creds".into());
        }
        args.push(format!("docker://{reference}"));
        args.push(format!("oci:{}:latest", dest.display()));
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
