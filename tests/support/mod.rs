//! The shared test harness: localocean instances, Pebble, OpenTofu, registry clients and the
//! tfplugin6 client. Every test group of the `suite` binary uses these modules.

#![allow(dead_code)]

pub mod baked;
pub mod browser;
pub mod docker;
pub mod localocean;
pub mod pebble;
pub mod registry_client;
pub mod tfplugin;
pub mod tofu;

/// What [`ssh_pinned`] reaches a registry's droplets with, written in `dir` from the state `v`:
/// its management key (mode 0600) and a known_hosts file pinning its host key for each of
/// `ips`, so that nothing is learnt (or written) on first use. Returns (key, known_hosts).
pub fn ssh_files(
    dir: &std::path::Path,
    v: &serde_json::Value,
    ips: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("mgmt.key");
    std::fs::write(
        &key,
        v["management_private_key"]
            .as_str()
            .expect("management key"),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let host_key = v["host_public_key"].as_str().expect("host key");
    let known_hosts = dir.join("known_hosts");
    let lines: String = ips.iter().map(|ip| format!("{ip} {host_key}\n")).collect();
    std::fs::write(&known_hosts, lines).unwrap();
    (key, known_hosts)
}

/// `ssh root@ip cmd` with `key`, accepting only the host key listed in `known_hosts`.
pub fn ssh_pinned(
    key: &std::path::Path,
    known_hosts: &std::path::Path,
    ip: &str,
    cmd: &str,
) -> std::process::Output {
    std::process::Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
        ])
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg(format!("root@{ip}"))
        .arg(cmd)
        .output()
        .unwrap()
}
