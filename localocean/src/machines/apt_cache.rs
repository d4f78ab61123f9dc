//! The apt proxy droplets install packages through: apt-cacher-ng on loopback, run as a child
//! process with its own config, behind the front on the bridge address that answers as a
//! mirror does ([`super::apt_front`]), so `apt-get install` works without NAT.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::sys::{self, io_err, SysError, SysResult};

pub struct AptCacher {
    child: tokio::process::Child,
    pid_file: Option<PathBuf>,
    /// The proxy the droplets talk to (see [`super::apt_front`]).
    front: Option<tokio::task::JoinHandle<()>>,
}

/// Shared across runs so packages fetched once stay cached; one cache per slot because
/// two apt-cacher-ng processes must not share a cache directory.
pub fn cache_dir(slot: u16) -> PathBuf {
    crate::image::cache_root()
        .parent()
        .unwrap_or(Path::new("/tmp"))
        .join("apt-cacher-ng")
        .join(format!("slot{slot}"))
}

impl AptCacher {
    /// Starts apt-cacher-ng on a loopback port with config and logs under `run_dir`, and the
    /// droplets' proxy on `bind:port` in front of it; only the Debian archive and its
    /// security mirror are proxied (ForceManaged), so the proxy is no way out to the rest of
    /// the internet. `pid_file` lets `down` kill apt-cacher-ng after a crash.
    pub async fn start(
        run_dir: &Path,
        cache: &Path,
        bind: Ipv4Addr,
        port: u16,
        pid_file: Option<&Path>,
    ) -> SysResult<AptCacher> {
        let cfg = run_dir.join("conf");
        let logs = run_dir.join("log");
        for d in [&cfg, &logs, &cache.to_path_buf()] {
            std::fs::create_dir_all(d).map_err(io_err("creating", d))?;
        }
        // The droplets' side first: a held port fails here, before anything started.
        let front = crate::net::bind_tcp_patiently(std::net::SocketAddr::from((bind, port)))
            .await
            .map_err(|e| SysError::Other(format!("binding the apt proxy on {bind}:{port}: {e}")))?;
        // Below the ephemeral range: apt-cacher-ng refuses ports above 32767 ("Error
        // resolving address for binding").
        let acng_port = crate::instance::free_port()?;
        sys::write_atomic(
            &cfg.join("backends_debian"),
            b"http://deb.debian.org/debian/\n",
            0o644,
        )?;
        let conf = format!(
            "CacheDir: {cache}\n\
             LogDir: {logs}\n\
             SupportDir: /usr/lib/apt-cacher-ng\n\
             Port: {acng_port}\n\
             BindAddress: 127.0.0.1\n\
             ForeGround: 1\n\
             PidFile: {run}/acng.pid\n\
             SocketPath: {run}/acng.socket\n\
             ReportPage: acng-report.html\n\
             ExThreshold: 4\n\
             ForceManaged: 1\n\
             Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian\n\
             Remap-secdeb: security.debian.org security.debian.org/debian-security deb.debian.org/debian-security /debian-security ; deb.debian.org/debian-security\n",
            cache = cache.display(),
            logs = logs.display(),
            run = run_dir.display(),
        );
        sys::write_atomic(&cfg.join("acng.conf"), conf.as_bytes(), 0o644)?;
        let out =
            std::fs::File::create(logs.join("stdout.log")).map_err(io_err("creating", &logs))?;
        let err = out.try_clone().map_err(io_err("creating", &logs))?;
        let child = tokio::process::Command::new("apt-cacher-ng")
            .arg("-c")
            .arg(&cfg)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SysError::Spawn {
                command: "apt-cacher-ng".into(),
                source,
            })?;
        if let (Some(pf), Some(pid)) = (pid_file, child.id()) {
            sys::write_atomic(pf, pid.to_string().as_bytes(), 0o644)?;
        }
        let mut me = AptCacher {
            child,
            pid_file: pid_file.map(Path::to_path_buf),
            front: None,
        };
        // Generous: under the full test suite's load (several instances starting at once, the
        // compiler on every core) 15 s was not always enough.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, acng_port))
                .await
                .is_ok()
            {
                me.front = Some(super::apt_front::spawn(
                    front,
                    (Ipv4Addr::LOCALHOST, acng_port).into(),
                ));
                return Ok(me);
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(SysError::Other(format!(
                    "apt-cacher-ng exited at start ({status}); see {}",
                    logs.display()
                )));
            }
            if Instant::now() > deadline {
                me.stop().await;
                return Err(SysError::Other(format!(
                    "apt-cacher-ng did not listen on 127.0.0.1:{acng_port} within 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(front) = self.front.take() {
            front.abort();
        }
        if let Some(pid) = self.child.id() {
            crate::process::signal(pid as i32, libc::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
        if let Some(pf) = &self.pid_file {
            let _ = std::fs::remove_file(pf);
        }
    }
}
