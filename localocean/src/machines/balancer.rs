//! Load balancers as HAProxy (Debian's `haproxy`), one master process per balancer in a
//! network namespace of its own on the instance's bridge, at the balancer's address.
//! A changed spec is a reload: the new process takes the listening sockets and the servers'
//! health, the old one finishes its connections and accepts no new ones (a removed droplet
//! is drained).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::sys::{self, io_err, SysError, SysResult};
use crate::balancer::{render_haproxy, BalancerSpec, RuntimePaths};
use crate::instance::StateDir;
use crate::net::{self, Subnet};
use crate::process;

/// What outlives localocean for one balancer (`balancers/<id>/balancer.json`): enough for
/// `down` to find its process and namespace after a crash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BalancerRecord {
    pub id: String,
    pub ip: Ipv4Addr,
    /// HAProxy's admin socket (see [`socket_path`]).
    pub socket: PathBuf,
}

/// Where a balancer's admin socket lives: a short path of its own, by instance slot and
/// address. A unix socket's path holds at most 107 bytes and HAProxy binds a temporary
/// `<path>.<pid>.tmp` first: in a temp state dir, `balancers/<uuid>/haproxy.sock` was over.
pub fn socket_path(subnet: Subnet, ip: Ipv4Addr) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{}-{}.sock", subnet.slot, ip.octets()[3]))
}

const SOCKET_DIR: &str = "/run/localocean/balancers";

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(state: &StateDir, id: &str) -> Files {
        Files {
            dir: state.balancers().join(id),
        }
    }
    fn record(&self) -> PathBuf {
        self.dir.join("balancer.json")
    }
    fn config(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }
    fn pid(&self) -> PathBuf {
        self.dir.join("haproxy.pid")
    }
    fn server_state(&self) -> PathBuf {
        self.dir.join("servers.state")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("haproxy.log")
    }
}

fn haproxy_bin() -> &'static str {
    // The master runs itself again on every reload, by its argv[0]: an absolute path does
    // not depend on the PATH localocean was started with.
    if Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    }
}

/// The balancer's HAProxy master, if it runs (never a recycled pid).
fn running_pid(f: &Files) -> Option<i32> {
    process::recorded(&f.pid(), |args| {
        args.first().is_some_and(|a| a.ends_with("haproxy"))
    })
}

pub fn read_records(state: &StateDir) -> Vec<BalancerRecord> {
    let Ok(entries) = std::fs::read_dir(state.balancers()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("balancer.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Starts or reconfigures the balancer as `spec` says; see `Hypervisor::apply_load_balancer`.
pub async fn apply(state: &StateDir, subnet: Subnet, spec: &BalancerSpec) -> SysResult<()> {
    let f = Files::new(state, &spec.id);
    std::fs::create_dir_all(&f.dir).map_err(io_err("creating", &f.dir))?;
    std::fs::create_dir_all(SOCKET_DIR).map_err(io_err("creating", Path::new(SOCKET_DIR)))?;
    let socket = socket_path(subnet, spec.ip);
    let record = BalancerRecord {
        id: spec.id.clone(),
        ip: spec.ip,
        socket: socket.clone(),
    };
    sys::write_atomic(
        &f.record(),
        &serde_json::to_vec_pretty(&record).expect("record serialises"),
        0o644,
    )?;
    // A namespace gone (the host cleaned up, a restart) takes the process's network with
    // it: start both afresh.
    let ns = subnet.balancer_netns_name(spec.ip);
    if !net::netns_exists(&ns).await {
        if let Some(pid) = running_pid(&f) {
            stop_process(pid).await;
        }
        net::create_balancer_net(subnet, spec.ip).await?;
    }

    let rt = RuntimePaths {
        socket: socket.to_string_lossy().into_owned(),
        server_state: f.server_state().to_string_lossy().into_owned(),
    };
    let config = render_haproxy(spec, &rt);
    let candidate = f.dir.join("haproxy.cfg.new");
    sys::write_atomic(&candidate, config.as_bytes(), 0o600)?;
    let candidate_s = candidate.to_string_lossy().into_owned();
    // Checked before it replaces the running config: a reload of a bad one would leave
    // the master without workers.
    sys::run(haproxy_bin(), &["-c", "-f", candidate_s.as_str()]).await?;
    std::fs::rename(&candidate, f.config()).map_err(io_err("renaming", &candidate))?;

    match running_pid(&f) {
        Some(pid) => reload(&f, &socket, pid).await,
        None => start(&f, &socket, &ns).await,
    }
}

async fn start(f: &Files, socket: &Path, ns: &str) -> SysResult<()> {
    let _ = std::fs::remove_file(socket);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(f.log())
        .map_err(io_err("opening", &f.log()))?;
    let log_err = log.try_clone().map_err(io_err("opening", &f.log()))?;
    let config = f.config().to_string_lossy().into_owned();
    let mut child = tokio::process::Command::new("ip")
        // `ip netns exec` runs HAProxy in the process it started: the pid is the master's.
        .args(["netns", "exec", ns, haproxy_bin(), "-W", "-db", "-f"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own group (the master and its workers): localocean stops it by that id, and
        // a Ctrl-C at localocean's terminal does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|source| SysError::Spawn {
            command: "haproxy".into(),
            source,
        })?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    sys::write_atomic(&f.pid(), pid.to_string().as_bytes(), 0o644)?;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if worker_pid(socket).await.is_some() {
            return Ok(());
        }
        if !process::alive(pid) || Instant::now() > deadline {
            return Err(SysError::Other(format!(
                "haproxy for load balancer {} did not start; log tail:\n{}",
                f.dir.display(),
                tail(&f.log(), 1500)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Saves the servers' health for the new process, then has the master load the new config
/// (SIGUSR2); returns once the new worker answers.
async fn reload(f: &Files, socket: &Path, master: i32) -> SysResult<()> {
    let before = worker_pid(socket).await;
    if let Ok(states) = command(socket, "show servers state").await {
        sys::write_atomic(&f.server_state(), states.as_bytes(), 0o600)?;
    }
    process::signal(master, libc::SIGUSR2);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = worker_pid(socket).await;
        if now.is_some() && now != before {
            return Ok(());
        }
        if !process::alive(master) || Instant::now() > deadline {
            return Err(SysError::Other(format!(
                "haproxy for load balancer {} did not reload; log tail:\n{}",
                f.dir.display(),
                tail(&f.log(), 1500)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pid of the worker that serves the admin socket now.
async fn worker_pid(socket: &Path) -> Option<String> {
    let info = command(socket, "show info").await.ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .map(|p| p.trim().to_string())
}

/// One command on HAProxy's admin socket; the answer as text.
async fn command(path: &Path, cmd: &str) -> SysResult<String> {
    let io = async {
        let mut s = tokio::net::UnixStream::connect(path).await?;
        s.write_all(format!("{cmd}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(5), io).await {
        Ok(r) => r.map_err(io_err("talking to", path)),
        Err(_) => Err(SysError::Other(format!("{}: no answer", path.display()))),
    }
}

/// Each server's health as HAProxy sees it now: (backend, server, status), e.g.
/// `("to443", "d3000001", "UP")`; `DOWN` once the health check has marked it down.
pub async fn server_status(state: &StateDir, id: &str) -> SysResult<Vec<(String, String, String)>> {
    let f = Files::new(state, id);
    let record: BalancerRecord = std::fs::read(f.record())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| SysError::Other(format!("load balancer {id} has no record")))?;
    let csv = command(&record.socket, "show stat").await?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
        return Err(SysError::Other(format!("unexpected `show stat`: {csv}")));
    };
    Ok(lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > st && !matches!(f[sv], "FRONTEND" | "BACKEND"))
        .map(|f| (f[px].to_string(), f[sv].to_string(), f[st].to_string()))
        .collect())
}

/// SIGTERM to the master (it ends its workers), then SIGKILL to the whole group if any of
/// it is left.
async fn stop_process(pid: i32) {
    process::signal(pid, libc::SIGTERM);
    if !process::wait_exit(pid, Duration::from_secs(5)).await {
        process::signal_group(pid, libc::SIGKILL);
        process::wait_exit(pid, Duration::from_secs(5)).await;
    }
    // Workers of earlier reloads still finishing their connections.
    process::signal_group(pid, libc::SIGKILL);
}

/// Stops the balancer and removes its namespace; its files stay when `keep` (localocean's
/// exit: the next start runs it again), else they go too. Succeeds when it is already gone.
pub async fn remove(state: &StateDir, subnet: Subnet, id: &str, keep: bool) -> SysResult<()> {
    let f = Files::new(state, id);
    if let Some(pid) = running_pid(&f) {
        stop_process(pid).await;
    }
    let record: Option<BalancerRecord> = std::fs::read(f.record())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(r) = record {
        net::delete_balancer_net(subnet, r.ip).await;
        let _ = std::fs::remove_file(&r.socket);
    }
    if !keep && f.dir.exists() {
        std::fs::remove_dir_all(&f.dir).map_err(io_err("removing", &f.dir))?;
    }
    Ok(())
}

/// Removes every balancer of the state dir (processes, namespaces, files): `down`.
pub async fn purge(state: &StateDir, subnet: Subnet) {
    let Ok(entries) = std::fs::read_dir(state.balancers()) else {
        return;
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if let Err(e) = remove(state, subnet, &id, false).await {
            tracing::warn!("removing load balancer {id}: {e}");
        }
    }
}

fn tail(path: &Path, max: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let start = s.len().saturating_sub(max);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}
