//! Garage as a child process: where its binary is, the config written at every start, its
//! pid file (so `localocean down` finds it after a crash), startup until the cluster is
//! healthy, and stopping it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::RngCore;
use serde_json::json;
use tokio::process::{Child, Command};

use super::admin::{AdminClient, ClusterHealth, ClusterStatus, GarageError, NodeStatus};
use super::write_private;

/// Where `scripts/setup` installs Garage; `GARAGE_BIN` overrides it.
const DEFAULT_GARAGE_BIN: &str = ".cache/tf-docker-registry/garage-2.5.0/bin/garage";
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Garage itself gives open connections 10 s after SIGTERM; this leaves it room to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Capacity announced in the layout; Garage needs a number, the disk is the real limit.
const NODE_CAPACITY_BYTES: u64 = 100 * 1024 * 1024 * 1024;

/// The Garage binary: `GARAGE_BIN`, else the path `scripts/setup` installs to.
pub fn garage_bin() -> Result<PathBuf, GarageError> {
    let path = match std::env::var_os("GARAGE_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(DEFAULT_GARAGE_BIN)
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(GarageError::NotFound(path))
    }
}

/// The file holding the pid of the Garage started for `dir`, so `localocean down` can stop
/// it after localocean itself died.
pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join("garage.pid")
}

/// Stops a Garage left running for `dir` by a previous localocean (crash, kill -9). Only the
/// recorded pid is signalled, and only if that process still is a Garage using this `dir`'s
/// config, so a recycled pid is never hit. Returns whether a process was stopped.
pub async fn kill_stale(dir: &Path) -> anyhow::Result<bool> {
    // `start` records the canonical path in Garage's command line.
    let dir = &dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let file = pid_file(dir);
    let config = config_path(dir);
    let config = config.to_string_lossy();
    let ours = crate::process::recorded(&file, |args| args.iter().any(|a| *a == config));
    if let Some(pid) = ours {
        tracing::info!(pid, "stopping a Garage left over from a previous run");
        crate::process::terminate(pid, STOP_TIMEOUT).await;
    }
    std::fs::remove_file(&file).ok();
    Ok(ours.is_some())
}

fn config_path(dir: &Path) -> PathBuf {
    dir.join("garage.toml")
}

/// Where Garage's own listeners go: free loopback ports, picked at every start.
pub(super) struct Listeners {
    /// Garage's S3 API; only the forwarders connect to it.
    pub(super) s3: SocketAddr,
    pub(super) rpc: SocketAddr,
    pub(super) admin: SocketAddr,
}

impl Listeners {
    pub(super) fn pick() -> anyhow::Result<Listeners> {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = || free_port(loopback).map(|p| SocketAddr::new(loopback, p));
        Ok(Listeners {
            s3: port()?,
            rpc: port()?,
            admin: port()?,
        })
    }
}

/// `dir`'s log of Garage's output.
pub(super) fn log_path(dir: &Path) -> PathBuf {
    dir.join("garage.log")
}

/// Writes the config and starts Garage on it, recording its pid; `dir` is canonical.
pub(super) fn spawn(
    bin: &Path,
    dir: &Path,
    region: &str,
    listen: &Listeners,
    admin_token: &str,
) -> anyhow::Result<Child> {
    let config = render_config(
        dir,
        region,
        listen.s3,
        listen.rpc,
        listen.admin,
        admin_token,
    );
    write_private(&config_path(dir), config.as_bytes())?;
    let log_path = log_path(dir);
    // Garage logs every request line, presigned signatures included: owner-only.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config_path(dir))
        .arg("server")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("RUST_LOG", "garage=info")
        .env("NO_COLOR", "1")
        // Dropping the handle without `stop` (a panic in a test) must not leak a server.
        .kill_on_drop(true);
    // The sandbox's AWS_* settings (a CA bundle, credentials) are not Garage's business.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(&name);
        }
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("garage exited at once")?;
    std::fs::write(pid_file(dir), format!("{pid}\n"))?;
    Ok(child)
}

/// Waits until Garage serves, with its single-node layout applied (once: a restart over the
/// same `dir` keeps data, keys and layout). On failure the child is killed and reaped.
pub(super) async fn wait_serving(
    admin: &AdminClient,
    child: &mut Child,
    dir: &Path,
) -> anyhow::Result<()> {
    let log = log_path(dir);
    let ready = async {
        let node = wait_ready(admin, child, &log).await?;
        ensure_layout(admin, &node).await?;
        wait_healthy(admin, child, &log).await
    };
    let result = ready.await;
    if result.is_err() {
        child.start_kill().ok();
        child.wait().await.ok();
        std::fs::remove_file(pid_file(dir)).ok();
    }
    result
}

/// SIGTERM, then SIGKILL if Garage has not exited within [`STOP_TIMEOUT`]; reaps it.
pub(super) async fn stop(child: &mut Child) {
    // `id()` is None once the child was reaped, so a recycled pid is never signalled.
    let Some(pid) = child.id() else {
        return;
    };
    crate::process::signal(pid as i32, libc::SIGTERM);
    if tokio::time::timeout(STOP_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(pid, "garage ignored SIGTERM; killing it");
        child.kill().await.ok();
    }
}

/// Waits until the admin API answers and returns this node's id.
async fn wait_ready(
    admin: &AdminClient,
    child: &mut Child,
    log: &Path,
) -> anyhow::Result<NodeStatus> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "garage exited during startup ({status}); see {}",
                log.display()
            );
        }
        match admin.get::<ClusterStatus>("GetClusterStatus", &[]).await {
            Ok(mut s) if !s.nodes.is_empty() => {
                tracing::debug!(layout_version = s.layout_version, "garage admin API is up");
                return Ok(s.nodes.remove(0));
            }
            Ok(_) => {}
            Err(e) if Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(format!(
                    "waiting for garage to start; see {}",
                    log.display()
                )))
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Assigns the node a storage role and applies the layout, unless a previous run did.
async fn ensure_layout(admin: &AdminClient, node: &NodeStatus) -> anyhow::Result<()> {
    if node.role.is_some() {
        return Ok(());
    }
    let body = json!({
        "roles": [{ "id": node.id, "zone": "dc1", "capacity": NODE_CAPACITY_BYTES, "tags": [] }]
    });
    let layout: serde_json::Value = admin
        .post("UpdateClusterLayout", &[], &body)
        .await
        .context("staging the single-node garage layout")?;
    let version = layout
        .get("version")
        .and_then(|v| v.as_u64())
        .context("garage UpdateClusterLayout: no version in the response")?;
    let _: serde_json::Value = admin
        .post(
            "ApplyClusterLayout",
            &[],
            &json!({ "version": version + 1 }),
        )
        .await
        .context("applying the single-node garage layout")?;
    Ok(())
}

/// Waits until the cluster reports healthy, i.e. the layout is live and S3 calls will work.
async fn wait_healthy(admin: &AdminClient, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "garage exited during startup ({status}); see {}",
                log.display()
            );
        }
        match admin.get::<ClusterHealth>("GetClusterHealth", &[]).await {
            Ok(h) if h.status == "healthy" => return Ok(()),
            _ if Instant::now() >= deadline => {
                anyhow::bail!("garage did not become healthy; see {}", log.display())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn render_config(
    dir: &Path,
    region: &str,
    s3: SocketAddr,
    rpc: SocketAddr,
    admin: SocketAddr,
    admin_token: &str,
) -> String {
    let rpc_secret = random_hex(32);
    format!(
        r#"# Written by localocean at every start; edits are lost.
metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "{rpc}"
rpc_public_addr = "{rpc}"
rpc_secret = "{rpc_secret}"

[s3_api]
api_bind_addr = "{s3}"
s3_region = "{region}"

[admin]
api_bind_addr = "{admin}"
admin_token = "{admin_token}"
"#,
        meta = dir.join("meta").display(),
        data = dir.join("data").display(),
    )
}

fn free_port(ip: std::net::IpAddr) -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0))
        .with_context(|| format!("finding a free port on {ip}"))?;
    Ok(l.local_addr()?.port())
}

pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}
