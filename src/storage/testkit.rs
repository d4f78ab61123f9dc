//! Test harness for the storage steps: localocean's API in-process (fake hypervisor, real or
//! absent Spaces backend), a real Garage in a temp dir, and a local shell standing in for SSH.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use localocean::api::{self, ApiConfig, App};
use localocean::hypervisor::{Hypervisor, MachineInfo, MachineSpec, Power, VolumeSpec};
use localocean::spaces::{Grant, IssuedKey, SpacesBackend};
use url::Url;

use crate::config::Settings;
use crate::do_api::{self, Timings};
use crate::remote::{Output, RemoteError, Transport};
use crate::secret::Secret;

pub const TOKEN: &str = "storage-test-token-0123456789";

/// Boots instantly; records each volume call as "<op> <droplet> <volume name> <size>".
#[derive(Default)]
pub struct FakeHv {
    next_ip: AtomicU32,
    pub calls: Mutex<Vec<String>>,
}

impl FakeHv {
    pub fn count(&self, prefix: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
}

#[async_trait]
impl Hypervisor for FakeHv {
    async fn create(&self, _spec: MachineSpec) -> anyhow::Result<MachineInfo> {
        let n = self.next_ip.fetch_add(1, Ordering::SeqCst) + 2;
        Ok(MachineInfo {
            ipv4: Ipv4Addr::new(198, 18, 0, n as u8),
            gateway: Ipv4Addr::new(198, 18, 0, 1),
            netmask: Ipv4Addr::new(255, 254, 0, 0),
        })
    }
    async fn delete(&self, _droplet_id: u64) -> anyhow::Result<()> {
        Ok(())
    }
    async fn power(&self, _droplet_id: u64, _action: Power) -> anyhow::Result<()> {
        Ok(())
    }
    async fn resize(&self, _id: u64, _memory_mib: u32, _vcpus: u32) -> anyhow::Result<()> {
        Ok(())
    }
    async fn create_volume(&self, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("create_volume {} {}", v.name, v.size_gib));
        Ok(())
    }
    async fn resize_volume(&self, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("resize_volume {} {}", v.name, v.size_gib));
        Ok(())
    }
    async fn delete_volume(&self, id: &str) -> anyhow::Result<()> {
        self.log(format!("delete_volume {id}"));
        Ok(())
    }
    async fn attach_volume(&self, droplet_id: u64, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("attach_volume {droplet_id} {}", v.name));
        Ok(())
    }
    async fn detach_volume(&self, droplet_id: u64, v: &VolumeSpec) -> anyhow::Result<()> {
        self.log(format!("detach_volume {droplet_id} {}", v.name));
        Ok(())
    }
}

/// For tests that never touch Spaces keys.
pub struct NoSpaces;

#[async_trait]
impl SpacesBackend for NoSpaces {
    async fn create_key(&self, _name: &str, _grants: &[Grant]) -> anyhow::Result<IssuedKey> {
        anyhow::bail!("no Spaces backend in this test")
    }
    async fn update_key(&self, _a: &str, _n: &str, _g: &[Grant]) -> anyhow::Result<()> {
        anyhow::bail!("no Spaces backend in this test")
    }
    async fn delete_key(&self, _access_key: &str) -> anyhow::Result<()> {
        anyhow::bail!("no Spaces backend in this test")
    }
}

/// localocean's API served on a loopback port, and a client for it.
pub struct Api {
    pub client: do_api::Client,
    pub base: Url,
    pub hv: Arc<FakeHv>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Api {
    pub async fn start(spaces: Arc<dyn SpacesBackend>) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHv::default());
        let mut config = ApiConfig::new(dir.path().to_path_buf(), vec![TOKEN.to_string()]);
        config.rate_limit_per_minute = 100_000;
        let app: Arc<App> = App::load(config, hv.clone(), spaces).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = api::router(app);
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let base = Url::parse(&format!("http://{addr}")).unwrap();
        let client = do_api::Client::with_timings(&settings(&base, None), fast()).unwrap();
        Api {
            client,
            base,
            hv,
            server,
            _dir: dir,
        }
    }

    pub fn stop(self) {
        self.server.abort();
    }
}

pub fn fast() -> Timings {
    Timings {
        backoff_start: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        poll_start: Duration::from_millis(20),
        poll_max: Duration::from_millis(100),
        not_found_grace: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
    }
}

/// Provider settings for localocean at `api`, with Spaces credentials if given.
pub fn settings(api: &Url, spaces: Option<(&str, &IssuedKey)>) -> Settings {
    Settings {
        token: Secret::new(TOKEN),
        api_endpoint: api.clone(),
        spaces_access_id: spaces.map(|(_, k)| Secret::new(k.access_key.clone())),
        spaces_secret_key: spaces.map(|(_, k)| Secret::new(k.secret_key.clone())),
        spaces_endpoint: spaces.map(|(e, _)| e.to_owned()).unwrap_or_default(),
        http_retry_max: 2,
        requests_per_second: 0,
        acme_directory_url: Url::parse("https://acme.invalid/directory").unwrap(),
        acme_ca_certificates: None,
        acme_dns_servers: Vec::new(),
        terraform_version: String::new(),
    }
}

/// Runs commands with the local bash; `bin` comes first on PATH, for shims of
/// `mountpoint`, `findmnt`, `resize2fs` that the test controls.
pub struct ShellTransport {
    pub bin: PathBuf,
}

impl ShellTransport {
    pub fn new(dir: &Path) -> ShellTransport {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        ShellTransport { bin }
    }

    pub fn shim(&self, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.bin.join(name);
        std::fs::write(&p, format!("#!/bin/bash\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[async_trait]
impl Transport for ShellTransport {
    async fn exec(&self, cmd: &str, stdin: &[u8]) -> Result<Output, RemoteError> {
        use tokio::io::AsyncWriteExt;
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(cmd)
            .env("PATH", path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).await.unwrap();
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        Ok(Output {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    fn describe(&self) -> String {
        "local test shell".into()
    }
}
