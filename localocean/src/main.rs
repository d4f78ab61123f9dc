//! The `localocean` command: up, down, status, serve, image build.
//! `serve` runs everything in the foreground; `up`/`down` manage it as a background process.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use localocean::instance::{
    default_state_dir, release_slot, InstanceConfig, Ready, StateDir, APT_PROXY_PORT,
};
use localocean::machines::apt_cache::{self, AptCacher};
use localocean::machines::{self, sys, Nspawn, NspawnConfig};
use localocean::process::{self, Identity};
use localocean::{api, dns, garage, image, net, resolver};

/// The name of the recursive resolver's port in the instance config.
const RESOLVER_PORT: &str = "resolver";

#[derive(Parser)]
#[command(
    name = "localocean",
    about = "A local DigitalOcean: API v2 subset, real droplets (systemd-nspawn), DNS, Spaces"
)]
struct Cli {
    /// Where the instance keeps its config, token, droplets and volumes.
    #[arg(long, global = true, env = "LOCALOCEAN_STATE_DIR", default_value_os_t = default_state_dir())]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run localocean in the foreground until SIGTERM/SIGINT; machines stop on exit and
    /// boot again at the next start.
    Serve {
        /// When process PID exits, stop and remove everything, as `down` does.
        #[arg(long, value_name = "PID")]
        exit_with: Option<i32>,
        /// How many droplets the account may hold (`droplet_limit`; DigitalOcean raises an
        /// account's limit on request).
        #[arg(long, value_name = "N", env = "LOCALOCEAN_DROPLET_LIMIT", default_value_t = api::DEFAULT_DROPLET_LIMIT)]
        droplet_limit: u32,
    },
    /// Start `serve` in the background (log: <state-dir>/localocean.log) and print how to
    /// reach it; prints the same when it is already running.
    Up {
        /// Print {"api_url","token","dns","s3_url"} as JSON: endpoints on the bridge's
        /// address, which the host and the droplets reach alike.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for readiness (the first start builds the droplet image).
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// When process PID exits, stop and remove everything, as `down` does: a test run
        /// passes its own pid, so even a killed test binary leaves nothing behind. Applies
        /// when this command starts localocean; an instance already running keeps its own.
        #[arg(long, value_name = "PID")]
        exit_with: Option<i32>,
        /// The account's droplet limit, when this command starts localocean (see `serve`).
        #[arg(long, value_name = "N")]
        droplet_limit: Option<u32>,
    },
    /// Stop localocean and remove EVERYTHING it made for this state dir: droplets, volumes,
    /// namespaces, veths, the bridge, mounts, processes, and the state dir itself. Works
    /// after a crash too.
    Down,
    /// Whether localocean runs, its API URL and how many droplets exist.
    Status,
    /// Build or update the cached droplet image.
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// debootstrap the Debian 12 image into the cache (skipped when current).
    Build,
}

/// Errors print as one line with their causes and no backtrace (RUST_BACKTRACE may be set
/// in the caller's environment): `up` shows the tail of serve's log, which must end in the
/// reason, not in stack frames.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let state = StateDir::new(absolute(&cli.state_dir)?);
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Cmd::Serve {
            exit_with,
            droplet_limit,
        } => rt.block_on(serve(state, exit_with, droplet_limit)),
        Cmd::Up {
            json,
            timeout,
            exit_with,
            droplet_limit,
        } => rt.block_on(up(
            state,
            json,
            Duration::from_secs(timeout),
            exit_with,
            droplet_limit,
        )),
        Cmd::Down => rt.block_on(down(state)),
        Cmd::Status => rt.block_on(status(state)),
        Cmd::Image {
            command: ImageCmd::Build,
        } => rt.block_on(async {
            let dir = image::ensure_image(image::DEFAULT_SLUG).await?;
            println!("{}", dir.display());
            Ok(())
        }),
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// This binary's path; a rebuild while it runs leaves `/proc/self/exe` pointing at
/// "<path> (deleted)", and then the new binary at the same path is what to start.
fn self_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

/// The pid of this state dir's `serve`, if it is alive.
fn serve_pid(state: &StateDir) -> Option<i32> {
    process::recorded(&state.serve_pid(), |args| args.iter().any(|a| a == "serve"))
}

fn read_ready(state: &StateDir) -> Option<Ready> {
    serde_json::from_slice(&std::fs::read(state.ready()).ok()?).ok()
}

async fn healthy(ready: &Ready) -> bool {
    let client = reqwest::Client::new();
    matches!(
        client
            .get(format!("{}/v2/account", ready.api_url))
            .bearer_auth(ready.token.expose())
            .timeout(Duration::from_secs(5))
            .send()
            .await,
        Ok(r) if r.status().is_success()
    )
}

struct Services {
    acng: Option<AptCacher>,
    garage: Option<Arc<garage::Garage>>,
    dns: Option<dns::DnsServer>,
    resolver: Option<dns::DnsServer>,
    api: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    hv: Option<Arc<Nspawn>>,
    metadata: Option<tokio::task::JoinHandle<()>>,
}

/// Why `serve` stopped.
#[derive(Debug, PartialEq)]
enum Stop {
    /// SIGTERM or SIGINT: machines stop and boot again at the next start.
    Signal,
    /// The `--exit-with` process is gone: everything is removed.
    WatchedExited,
}

async fn serve(state: StateDir, exit_with: Option<i32>, droplet_limit: u32) -> anyhow::Result<()> {
    if let Some(pid) = serve_pid(&state) {
        anyhow::bail!(
            "localocean already runs for {} (pid {pid})",
            state.root.display()
        );
    }
    let watched = match exit_with {
        Some(pid) => {
            Some(Identity::of(pid).with_context(|| format!("--exit-with {pid}: no such process"))?)
        }
        None => None,
    };
    let (mut cfg, new_token) = InstanceConfig::load_or_create(&state)?;
    // Allocated once and kept, as the other ports are.
    cfg.port(&state, RESOLVER_PORT)?;
    cfg.free_held_ports(&state)?;
    // Printed once, and only to a terminal: under `up` stdout is the log file, and
    // secrets stay out of logs (the token is in instance.json and ready.json, mode 0600).
    // SAFETY: isatty only inspects a file descriptor.
    if new_token && unsafe { libc::isatty(1) } == 1 {
        println!("localocean API token: {}", cfg.token.expose());
    }
    sys::write_atomic(
        &state.serve_pid(),
        std::process::id().to_string().as_bytes(),
        0o644,
    )?;
    let _ = std::fs::remove_file(state.ready());
    let mut svc = Services {
        acng: None,
        garage: None,
        dns: None,
        resolver: None,
        api: None,
        hv: None,
        metadata: None,
    };
    let result = run_services(&state, &cfg, &mut svc, watched, droplet_limit).await;
    if let Err(e) = &result {
        tracing::error!("localocean failed: {e:#}");
    }
    let _ = std::fs::remove_file(state.ready());
    stop_services(&cfg, svc).await;
    let _ = std::fs::remove_file(state.serve_pid());
    if matches!(result, Ok(Stop::WatchedExited)) {
        tracing::info!("the --exit-with process is gone: removing everything");
        remove_instance(&state).await?;
    }
    result.map(drop)
}

async fn run_services(
    state: &StateDir,
    cfg: &InstanceConfig,
    svc: &mut Services,
    watched: Option<Identity>,
    droplet_limit: u32,
) -> anyhow::Result<Stop> {
    let subnet = cfg.subnet();
    let bridge = subnet.bridge_ip();
    let mut signals = Signals::new()?;

    image::ensure_image(image::DEFAULT_SLUG)
        .await
        .context("building the droplet image")?;
    net::ensure_bridge(subnet)
        .await
        .context("creating the bridge")?;

    let acng_pid = state.services().join("apt-cacher-ng.pid");
    kill_recorded(&acng_pid, "apt-cacher-ng");
    svc.acng = Some(
        AptCacher::start(
            &state.services().join("apt-cacher-ng"),
            &apt_cache::cache_dir(subnet.slot),
            bridge,
            APT_PROXY_PORT,
            Some(&acng_pid),
        )
        .await?,
    );

    let garage_dir = state.services().join("garage");
    garage::kill_stale(&garage_dir).await?;
    let g = Arc::new(
        garage::Garage::start(
            &garage_dir,
            &garage::GarageOptions {
                s3_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.s3_port)),
                ..Default::default()
            },
        )
        .await
        .context("starting Spaces (garage)")?,
    );
    svc.garage = Some(g.clone());
    g.expose(SocketAddr::from((bridge, cfg.s3_port))).await?;

    let hv = Arc::new(Nspawn::new(NspawnConfig::new(state.clone(), subnet)));
    svc.hv = Some(hv.clone());

    let mut api_config =
        api::ApiConfig::new(state.root.clone(), vec![cfg.token.expose().to_string()]);
    api_config.droplet_limit = droplet_limit;
    let app = api::App::load(api_config, hv.clone(), g.clone())?;
    app.set_ssh_faults(hv.clone());
    g.set_faults(app.shared_faults());
    hv.remove_orphans(&app.droplet_ids()).await;
    hv.remove_orphan_balancers(&app.load_balancer_ids()).await;
    {
        // Machines that were on when localocean stopped boot again while the API serves.
        let (hv, app) = (hv.clone(), app.clone());
        tokio::spawn(async move {
            let created = hv.restore(app.active_machines(), &app.volumes()).await;
            for (id, info) in created {
                if let Err(e) = app.record_machine(id, &info) {
                    tracing::error!("recording droplet ({id}): {e:#}");
                }
            }
        });
    }

    let dns_local = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.dns_port));
    svc.dns = Some(
        dns::serve(
            vec![SocketAddr::from((bridge, 53)), dns_local],
            api::zones(&app),
        )
        .await?,
    );

    // The droplets' metadata service (169.254.169.254, sent here by the bridge's rules).
    let md_addr = SocketAddr::from((bridge, net::METADATA_PORT));
    let md = localocean::net::bind_tcp_patiently(md_addr)
        .await
        .with_context(|| format!("binding the metadata service on {md_addr}"))?;
    let md_router = api::metadata::router(app.clone());
    svc.metadata = Some(tokio::spawn(async move {
        let service = md_router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(md, service).await {
            tracing::error!("metadata service: {e}");
        }
    }));

    // The recursive resolver (Pebble's and the tests'): loopback and the bridge, one port.
    let resolver_port = cfg.ports.get(RESOLVER_PORT).copied().unwrap_or(0);
    let resolver_local = SocketAddr::from((Ipv4Addr::LOCALHOST, resolver_port));
    svc.resolver = Some(
        resolver::serve(
            vec![resolver_local, SocketAddr::from((bridge, resolver_port))],
            api::zones(&app),
            resolver::Upstream::default(),
        )
        .await?,
    );

    // Every endpoint is on the bridge's host address, which the host and every droplet
    // reach alike, as DigitalOcean's endpoints answer from anywhere; loopback would be
    // another host inside a droplet.
    let api_addr = SocketAddr::from((bridge, cfg.api_port));
    let listener = localocean::net::bind_tcp_patiently(api_addr)
        .await
        .with_context(|| format!("binding the API on {api_addr}"))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = api::router(app);
    let server = tokio::spawn(async move {
        let r = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!("API server: {e}");
        }
    });
    svc.api = Some((tx, server));

    let ready = Ready {
        api_url: format!("http://{api_addr}"),
        token: cfg.token.clone(),
        dns: SocketAddr::from((bridge, 53)).to_string(),
        resolver: resolver_local.to_string(),
        s3_url: format!("http://{bridge}:{}", cfg.s3_port),
        pid: std::process::id(),
    };
    sys::write_atomic(&state.ready(), &serde_json::to_vec_pretty(&ready)?, 0o600)?;
    tracing::info!(
        api = %ready.api_url,
        dns = %ready.dns,
        resolver = %ready.resolver,
        s3 = %ready.s3_url,
        bridge = %bridge,
        "localocean ready"
    );
    let stop = tokio::select! {
        _ = signals.wait() => Stop::Signal,
        _ = exited(watched) => Stop::WatchedExited,
    };
    tracing::info!(?stop, "stopping localocean");
    Ok(stop)
}

/// Resolves once the watched process is gone; never without one.
async fn exited(watched: Option<Identity>) {
    let Some(watched) = watched else {
        return std::future::pending().await;
    };
    while watched.alive() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Stops what `serve` started, in reverse order. Machines are stopped, not removed: the
/// next `serve` boots them again (DigitalOcean droplets outlive API outages).
async fn stop_services(cfg: &InstanceConfig, svc: Services) {
    if let Some((tx, task)) = svc.api {
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    if let Some(r) = svc.resolver {
        let _ = r.shutdown().await;
    }
    if let Some(d) = svc.dns {
        let _ = d.shutdown().await;
    }
    if let Some(m) = svc.metadata {
        m.abort();
    }
    if let Some(hv) = svc.hv {
        hv.stop_all().await;
    }
    if let Some(g) = svc.garage {
        match Arc::try_unwrap(g) {
            Ok(g) => g.stop().await,
            // A request still holds it; dropping the last handle kills the child.
            Err(_) => tracing::warn!("Spaces still in use at exit; it stops with the process"),
        }
    }
    if let Some(mut a) = svc.acng {
        a.stop().await;
    }
    net::delete_bridge(cfg.subnet()).await;
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Kills a process recorded in a pid file if it still is `name` (never a recycled pid).
fn kill_recorded(pid_file: &Path, name: &str) -> bool {
    let hit = process::recorded(pid_file, |args| args.iter().any(|a| a.contains(name)));
    if let Some(pid) = hit {
        process::signal(pid, libc::SIGKILL);
    }
    let _ = std::fs::remove_file(pid_file);
    hit.is_some()
}

async fn up(
    state: StateDir,
    json: bool,
    timeout: Duration,
    exit_with: Option<i32>,
    droplet_limit: Option<u32>,
) -> anyhow::Result<()> {
    let running = serve_pid(&state);
    if running.is_some() && exit_with.is_some() {
        eprintln!(
            "localocean already runs for {}: --exit-with not applied",
            state.root.display()
        );
    }
    let ready = match (running, read_ready(&state)) {
        (Some(pid), Some(r)) if r.pid as i32 == pid && healthy(&r).await => r,
        (Some(pid), _) => {
            match wait_ready(&state, pid, timeout).await {
                Ok(r) => r,
                // It was ending as this command found it (killed, or stopping): once it has let go
                // of its ports and files, a new one starts.
                Err(e) if !process::alive(pid) => {
                    eprintln!("localocean serve ({pid}) ended while starting up ({e:#}); starting it again");
                    start_serve(&state, exit_with, droplet_limit, timeout).await?
                }
                Err(e) => return Err(e),
            }
        }
        (None, _) => start_serve(&state, exit_with, droplet_limit, timeout).await?,
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "api_url": ready.api_url,
                "token": ready.token.expose(),
                "dns": ready.dns,
                "resolver": ready.resolver,
                "s3_url": ready.s3_url,
            })
        );
    } else {
        println!("API:   {}", ready.api_url);
        println!("token: {}", ready.token.expose());
        println!("DNS:   {}", ready.dns);
        println!("resolver: {}", ready.resolver);
        println!("S3:    {}", ready.s3_url);
    }
    Ok(())
}

/// Starts `localocean serve` for `state` in a session of its own and waits until it is ready.
async fn start_serve(
    state: &StateDir,
    exit_with: Option<i32>,
    droplet_limit: Option<u32>,
    timeout: Duration,
) -> anyhow::Result<Ready> {
    std::fs::create_dir_all(&state.root)?;
    let _ = std::fs::remove_file(state.ready());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.log())?;
    let mut cmd = std::process::Command::new(self_exe()?);
    cmd.arg("serve").arg("--state-dir").arg(&state.root);
    if let Some(pid) = exit_with {
        cmd.arg("--exit-with").arg(pid.to_string());
    }
    if let Some(n) = droplet_limit {
        cmd.arg("--droplet-limit").arg(n.to_string());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session: it must outlive this command and the terminal.
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting localocean serve")?;
    let pid = child.id() as i32;
    // Reap it if it dies early, so pid_alive sees it go.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    wait_ready(state, pid, timeout).await
}

async fn wait_ready(state: &StateDir, pid: i32, timeout: Duration) -> anyhow::Result<Ready> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = read_ready(state) {
            if r.pid as i32 == pid && healthy(&r).await {
                return Ok(r);
            }
        }
        if !process::alive(pid) {
            anyhow::bail!(
                "localocean serve exited before it was ready; see {}:\n{}",
                state.log().display(),
                log_tail(&state.log())
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "localocean was not ready within {timeout:?}; see {}",
                state.log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn down(state: StateDir) -> anyhow::Result<()> {
    if let Some(pid) = serve_pid(&state) {
        process::signal(pid, libc::SIGTERM);
        if !process::wait_exit(pid, Duration::from_secs(90)).await {
            // serve leads its own process group (setsid by `up`); its helpers are in it.
            process::signal_group(pid, libc::SIGKILL);
            process::signal(pid, libc::SIGKILL);
        }
    }
    remove_instance(&state).await?;
    println!("localocean is down; {} removed", state.root.display());
    Ok(())
}

/// Removes every machine, volume, namespace, mount, process and the state dir of an
/// instance whose `serve` is no longer running. Relies on nothing serve did on its way out
/// (it may have been killed -9), and finds everything by this instance's own records.
async fn remove_instance(state: &StateDir) -> anyhow::Result<()> {
    let state = state.clone();
    let cfg = InstanceConfig::load(&state)?;
    // A state dir with machines but no instance.json (one the machines were made in
    // directly, as localocean's own machine tests do, left by a killed test): the machines'
    // records name their slot. Removed without them, the dir's files went and its mounted
    // roots stopped the removal, leaving machines that nothing recorded any more.
    let subnet = cfg.as_ref().map(|c| c.subnet()).or_else(|| {
        machines::read_records(&state)
            .first()
            .map(|r| net::Subnet::new(r.slot))
    });
    if let Some(subnet) = subnet {
        machines::purge(&state, subnet).await;
    }
    kill_recorded(&state.services().join("apt-cacher-ng.pid"), "apt-cacher-ng");
    let garage_dir = state.services().join("garage");
    if let Err(e) = garage::kill_stale(&garage_dir).await {
        tracing::warn!("stopping Spaces: {e:#}");
    }
    if let Some(cfg) = &cfg {
        net::delete_bridge(cfg.subnet()).await;
        release_slot(&state.root, cfg.slot);
    } else if let Some(subnet) = subnet {
        // The slot's bridge is this dir's only if the dir holds the slot.
        if slot_held_by(&state.root, subnet.slot) {
            net::delete_bridge(subnet).await;
        }
        release_slot(&state.root, subnet.slot);
    }
    let mounted = sys::mounts_under(&state.root);
    if !mounted.is_empty() {
        anyhow::bail!(
            "{} still has file systems mounted ({}): nothing else removed; unmount them and run down again",
            state.root.display(),
            mounted
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    match std::fs::remove_dir_all(&state.root) {
        // `down` may run while a watched serve removes the same instance.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", state.root.display()))
        }
        _ => Ok(()),
    }
}

/// Whether `root` (a state dir) holds network slot `slot`.
fn slot_held_by(root: &Path, slot: u16) -> bool {
    let lock = Path::new(localocean::instance::SLOTS_DIR).join(format!("{slot}.lock"));
    let owner = std::fs::read_to_string(lock).unwrap_or_default();
    let me = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    !owner.trim().is_empty() && Path::new(owner.trim()) == me
}

async fn status(state: StateDir) -> anyhow::Result<()> {
    let records = machines::read_records(&state);
    let cfg = InstanceConfig::load(&state)?;
    let running_machines = match &cfg {
        Some(cfg) => {
            let hv = Nspawn::new(NspawnConfig::new(state.clone(), cfg.subnet()));
            records
                .iter()
                .filter(|r| hv.running_pid(r.droplet_id).is_some())
                .count()
        }
        None => 0,
    };
    match (serve_pid(&state), read_ready(&state)) {
        (Some(pid), Some(r)) if r.pid as i32 == pid => {
            let health = if healthy(&r).await {
                "healthy"
            } else {
                "not answering"
            };
            println!("localocean: running (pid {pid}, {health})");
            println!("API: {}", r.api_url);
            println!("DNS: {}", r.dns);
            println!("resolver: {}", r.resolver);
            println!("S3:  {}", r.s3_url);
        }
        (Some(pid), _) => println!("localocean: starting (pid {pid})"),
        (None, _) => println!("localocean: not running"),
    }
    if let Some(cfg) = &cfg {
        println!(
            "network: {}/24 on {}",
            cfg.subnet().host(0),
            cfg.subnet().bridge_name()
        );
    }
    println!(
        "droplets: {} ({} machines running)",
        records.len(),
        running_machines
    );
    Ok(())
}
