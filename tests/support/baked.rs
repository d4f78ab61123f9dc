//! A Droplet snapshot with the registry's packages installed, made once per test binary on
//! the shared localocean: the droplets of most tests boot from it (`image = "<its id>"`) and
//! their first converge installs nothing, where apt and dpkg were about 40 % of a droplet's
//! CPU. The tests that keep the stock image (`Fixture::stock` and the tests on instances of
//! their own) keep the first boot's install tested.
//!
//! Made as a user makes one on DigitalOcean: a droplet from the stock image with the
//! provider's own user data, the provider's packages installed the way its converge installs
//! them (no service started by the install), a shutdown, the droplet `snapshot` action; the
//! droplet is deleted after. The renewal's packages are in it too: certbot (every ACME
//! registry renews on its droplet) and bind9, whose named is disabled in the image (the
//! converge enables it where DNS-01 renewal needs it, and disables it elsewhere), so that it
//! does not start on every droplet's boot.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use terraform_provider_docker::remote::converge::{NAMED_PACKAGES, PACKAGES, RENEWAL_PACKAGES};
use terraform_provider_docker::secret::Secret;

use super::localocean::{unique_label, LocalOcean};

/// The snapshot's image id on the shared instance, made on first use; every later caller
/// gets the same id, or the same failure.
pub fn image(lo: &LocalOcean) -> String {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    match IMAGE.get_or_init(|| bake(lo)) {
        Ok(id) => id.clone(),
        Err(e) => panic!("baking the registry image failed: {e}"),
    }
}

/// What a bake made, deleted when it ends (done or failed).
struct Made<'a> {
    lo: &'a LocalOcean,
    droplet: Option<u64>,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.droplet {
            let (status, body) = self.lo.api("DELETE", &format!("/v2/droplets/{id}"), None);
            if status != 204 && status != 404 {
                eprintln!("deleting the bake droplet ({id}): {status} {body}");
            }
        }
    }
}

fn bake(lo: &LocalOcean) -> Result<String, String> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("tf-acc-test-bake-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let key = dir.path().join("key");
    let host = dir.path().join("host");
    for f in [&key, &host] {
        keygen(f)?;
    }
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let host_public = read(&host.with_extension("pub"))?;
    let user_data = terraform_provider_docker::render::user_data(
        &read(&key.with_extension("pub"))?,
        &Secret::new(read(&host)?),
        &host_public,
    );
    let name = format!("{}-bake", unique_label());
    let (status, body) = lo.api(
        "POST",
        "/v2/droplets",
        Some(json!({
            "name": name, "region": "nyc3", "size": "s-1vcpu-512mb-10gb",
            "image": "debian-12-x64", "user_data": user_data,
        })),
    );
    if status != 202 {
        return Err(format!("creating the droplet: {status} {body}"));
    }
    let mut made = Made {
        lo,
        droplet: body["droplet"]["id"].as_u64(),
    };
    let id = made.droplet.ok_or("no droplet id")?;
    wait_action(lo, &body["links"]["actions"][0]["id"], "create")?;
    let (_, d) = lo.api("GET", &format!("/v2/droplets/{id}"), None);
    let ip = d["droplet"]["networks"]["v4"]
        .as_array()
        .and_then(|n| n.iter().find(|a| a["type"] == "public"))
        .and_then(|a| a["ip_address"].as_str())
        .ok_or_else(|| format!("droplet ({id}) has no public address: {d}"))?
        .to_string();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{ip} {host_public}")).map_err(|e| e.to_string())?;

    // As the provider's converge installs them: after cloud-init, with no service started.
    let install = format!(
        "set -e\n\
         cloud-init status --wait >/dev/null || true\n\
         printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d\n\
         chmod 755 /usr/sbin/policy-rc.d\n\
         for attempt in 1 2 3; do\n\
           if apt-get -q -o DPkg::Lock::Timeout=300 update >/tmp/bake.log 2>&1 &&\n\
              DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 \\\n\
                --no-install-recommends -o Dpkg::Options::=--force-confdef \\\n\
                -o Dpkg::Options::=--force-confold install {PACKAGES} {RENEWAL_PACKAGES} {NAMED_PACKAGES} >>/tmp/bake.log 2>&1; then\n\
             systemctl disable --quiet named\n\
             rm -f /usr/sbin/policy-rc.d /tmp/bake.log\n\
             exit 0\n\
           fi\n\
           sleep $((attempt * 5))\n\
         done\n\
         tail -n 25 /tmp/bake.log >&2\n\
         exit 1\n"
    );
    // Root logs in once cloud-init has applied the user data, a moment after sshd answers.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = super::ssh_pinned(&key, &known_hosts, &ip, &install);
        if out.status.success() {
            break;
        }
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        // 255: ssh itself failed (not yet let in); anything else is the install's own failure.
        if out.status.code() != Some(255) || Instant::now() > deadline {
            return Err(format!("installing the packages on {ip}: {said}"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    let action = |body: Value| -> Result<(), String> {
        let (status, a) = lo.api("POST", &format!("/v2/droplets/{id}/actions"), Some(body));
        if status != 201 {
            return Err(format!("droplet action: {status} {a}"));
        }
        wait_action(
            lo,
            &a["action"]["id"],
            a["action"]["type"].as_str().unwrap_or("?"),
        )
    };
    action(json!({"type": "shutdown"}))?;
    action(json!({"type": "snapshot", "name": name}))?;
    let (_, snaps) = lo.api("GET", &format!("/v2/droplets/{id}/snapshots"), None);
    let image = snaps["snapshots"][0]["id"]
        .as_u64()
        .ok_or_else(|| format!("the snapshot action made no snapshot: {snaps}"))?;
    let (status, body) = lo.api("DELETE", &format!("/v2/droplets/{id}"), None);
    if status != 204 {
        return Err(format!("deleting the droplet: {status} {body}"));
    }
    made.droplet = None;
    eprintln!(
        "baked image {image} ({PACKAGES} {RENEWAL_PACKAGES} {NAMED_PACKAGES}) in {} s",
        started.elapsed().as_secs()
    );
    Ok(image.to_string())
}

fn keygen(file: &Path) -> Result<(), String> {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bake", "-f"])
        .arg(file)
        .status()
        .map_err(|e| format!("ssh-keygen: {e}"))?;
    st.success()
        .then_some(())
        .ok_or_else(|| "ssh-keygen failed".to_string())
}

/// Waits (up to 10 minutes, a loaded machine's boot) for action `id` to complete.
fn wait_action(lo: &LocalOcean, id: &Value, what: &str) -> Result<(), String> {
    let id = id
        .as_u64()
        .ok_or_else(|| format!("{what}: no action id ({id})"))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, a) = lo.api("GET", &format!("/v2/actions/{id}"), None);
        match a["action"]["status"].as_str() {
            Some("completed") => return Ok(()),
            Some("errored") => return Err(format!("{what} action errored: {a}")),
            _ if Instant::now() > deadline => return Err(format!("{what} action never ended")),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}
