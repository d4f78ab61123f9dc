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
