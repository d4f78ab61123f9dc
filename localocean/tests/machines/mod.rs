//! Real droplets on this host (needs root, debootstrap and systemd-nspawn; builds the cached
//! image on first run): boot, SSH, cloud-init, apt through the proxy, volumes, faults, cleanup.

mod backups;
mod load_balancer;
mod reserved_ip;
mod volumes;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use localocean::hypervisor::{Hypervisor, MachineSpec, Power};
use localocean::instance::{claim_slot, release_slot, StateDir, APT_PROXY_PORT};
use localocean::machines::apt_cache::{self, AptCacher};
use localocean::machines::{self, sys, Nspawn, NspawnConfig};
use localocean::net::{self, Subnet};
use localocean::process;

/// One private localocean network with its apt proxy, torn down on drop even when the
/// test panics, so a failed run leaves nothing behind.
struct Lab {
    dir: tempfile::TempDir,
    state: StateDir,
    subnet: Subnet,
    acng: Option<AptCacher>,
    hv: Nspawn,
}

impl Lab {
    async fn new() -> Lab {
        assert_eq!(unsafe { libc::geteuid() }, 0, "machines tests need root");
        localocean::image::ensure_image(localocean::image::DEFAULT_SLUG)
            .await
            .expect("image build (debootstrap)");
        let dir = tempfile::Builder::new()
            .prefix("localocean-test-")
            .tempdir()
            .unwrap();
        let state = StateDir::new(dir.path().join("state"));
        std::fs::create_dir_all(&state.root).unwrap();
        let slot = claim_slot(&state.root, None).expect("slot");
        let subnet = Subnet::new(slot);
        net::ensure_bridge(subnet).await.expect("bridge");
        let acng = AptCacher::start(
            &state.services().join("apt-cacher-ng"),
            &apt_cache::cache_dir(slot),
            subnet.bridge_ip(),
            APT_PROXY_PORT,
            None,
        )
        .await
        .expect("apt-cacher-ng");
        let hv = Nspawn::new(NspawnConfig::new(state.clone(), subnet));
        Lab {
            dir,
            state,
            subnet,
            acng: Some(acng),
            hv,
        }
    }

    async fn teardown(&mut self) {
        machines::purge(&self.state, self.subnet).await;
        if let Some(mut a) = self.acng.take() {
            a.stop().await;
        }
        net::delete_bridge(self.subnet).await;
        release_slot(&self.state.root, self.subnet.slot);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.acng.is_none() {
            return;
        }
        if std::thread::panicking() {
            // Keep what explains the failure: console logs outlive the machines' removal.
            let keep = self.dir.path().join("failed-logs");
            let _ = std::fs::create_dir_all(&keep);
            for rec in machines::read_records(&self.state) {
                let id = rec.droplet_id.to_string();
                let _ = std::fs::copy(
                    self.state.machines().join(&id).join("console.log"),
                    keep.join(format!("{id}.console.log")),
                );
            }
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("test state kept in {}", dir.keep().display());
        }
        // Drop cannot await; clean up on a runtime of its own.
        let state = self.state.clone();
        let subnet = self.subnet;
        let acng = self.acng.take();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                machines::purge(&state, subnet).await;
                if let Some(mut a) = acng {
                    a.stop().await;
                }
                net::delete_bridge(subnet).await;
                release_slot(&state.root, subnet.slot);
            });
        })
        .join()
        .unwrap();
    }
}

fn keygen(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "localocean-test",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

fn ssh(key: &Path, ip: Ipv4Addr, command: &str) -> (bool, String) {
    let out = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("root@{ip}"))
        .arg(command)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ssh_ok(key: &Path, ip: Ipv4Addr, command: &str) -> String {
    let (ok, text) = ssh(key, ip, command);
    assert!(ok, "ssh root@{ip} {command:?} failed:\n{text}");
    text
}

fn spec(id: u64, public_key: &str, user_data: Option<&str>) -> MachineSpec {
    MachineSpec {
        droplet_id: id,
        name: format!("tf-acc-test-{id}"),
        image: "debian-12-x64".into(),
        user_data: user_data.map(str::to_string),
        ssh_public_keys: vec![public_key.to_string()],
        volumes: vec![],
        memory_mib: 1024,
        vcpus: 1,
        disk_gib: 25,
    }
}

/// What a droplet leaves on the host, to prove it is all gone after delete.
struct Traces {
    netns: String,
    veth: String,
    root: PathBuf,
    pid: i32,
    /// The machine's own cgroup directories (each machine has its own: a cgroup shared by
    /// every machine let one droplet's systemd remove another's service cgroups).
    cgroups: Vec<PathBuf>,
}

fn traces(lab: &Lab, id: u64) -> Traces {
    let pid = lab.hv.running_pid(id).expect("machine running");
    let own = format!("/localocean/lo{}-d{id}", lab.subnet.slot);
    let listed = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    // name=systemd (v1) and the unified hierarchy: both must be the machine's own.
    let mut cgroups = Vec::new();
    for line in listed.lines() {
        let (hierarchy, path) = match line.split(':').collect::<Vec<_>>()[..] {
            [_, "name=systemd", path] => ("systemd", path),
            ["0", "", path] => ("unified", path),
            _ => continue,
        };
        assert!(
            path.starts_with(&own),
            "nspawn of {id} in cgroup {line}, not {own}"
        );
        let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            Path::new("/sys/fs/cgroup").join(hierarchy)
        };
        cgroups.push(root.join(own.trim_start_matches('/')));
    }
    assert!(
        !cgroups.is_empty(),
        "no systemd cgroup for nspawn of {id}:\n{listed}"
    );
    Traces {
        netns: lab.subnet.netns_name(id),
        veth: lab.subnet.veth_name(id),
        root: lab.state.machines().join(id.to_string()).join("root"),
        pid,
        cgroups,
    }
}

fn assert_gone(t: &Traces) {
    let netns = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !netns.split_whitespace().any(|n| n == t.netns),
        "netns {} left: {netns}",
        t.netns
    );
    let link = Command::new("ip")
        .args(["link", "show", "dev", &t.veth])
        .output()
        .unwrap();
    assert!(!link.status.success(), "veth {} left", t.veth);
    assert!(
        !sys::is_mounted(&t.root),
        "{} still mounted",
        t.root.display()
    );
    assert!(!process::alive(t.pid), "nspawn pid {} still alive", t.pid);
    for c in &t.cgroups {
        assert!(!c.exists(), "cgroup {} left", c.display());
    }
    assert!(!t.root.exists(), "{} left", t.root.display());
}

/// User data as the provider writes it: a file, and an SSH host key generated outside the
/// droplet so the client can pin it before the first connection.
fn user_data(host_private: &str, host_public: &str) -> String {
    let private: String = host_private.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "#cloud-config
write_files:
  - path: /root/from-user-data.txt
    content: hello from user data
    permissions: '0600'
ssh_keys:
  ed25519_private: |
{private}  ed25519_public: {host_public}
"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn droplet_boots_serves_ssh_runs_cloud_init_installs_packages_and_cleans_up() {
    let mut lab = Lab::new().await;
    let (key, public) = keygen(lab.dir.path());
    let host_dir = lab.dir.path().join("hostkey");
    std::fs::create_dir_all(&host_dir).unwrap();
    let (host_key, host_public) = keygen(&host_dir);
    let host_private = std::fs::read_to_string(&host_key).unwrap();
    let id = 4_100_000 + u64::from(rand::random::<u16>());

    let t0 = Instant::now();
    let info = lab
        .hv
        .create(spec(
            id,
            &public,
            Some(&user_data(&host_private, &host_public)),
        ))
        .await
        .expect("create");
    println!("create→ssh: {:.1} s", t0.elapsed().as_secs_f64());
    assert_eq!(info.gateway, lab.subnet.bridge_ip());
    let ip = info.ipv4;
    let tr = traces(&lab, id);

    // The host key from user data is the one sshd presents (no trust on first use).
    let known = lab.dir.path().join("known_hosts");
    std::fs::write(&known, format!("{ip} {host_public}\n")).unwrap();
    let pinned = Command::new("ssh")
        .arg("-i")
        .arg(&key)
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg(format!("root@{ip}"))
        .arg("true")
        .output()
        .unwrap();
    assert!(
        pinned.status.success(),
        "pinned host key refused: {}",
        String::from_utf8_lossy(&pinned.stderr)
    );

    // The key from the request is authorised for root; user data ran.
    let (_, status) = ssh(&key, ip, "cloud-init status --wait --long");
    if !status.contains("status: done") {
        let (_, log) = ssh(
            &key,
            ip,
            "grep -E 'WARN|ERROR|Traceback' -A3 /var/log/cloud-init.log | tail -60",
        );
        panic!("cloud-init did not finish cleanly:\n{status}\n{log}");
    }
    // sshd was not restarted after boot: a client connecting right after create is
    // never refused.
    let starts = ssh_ok(
        &key,
        ip,
        "journalctl -b -o cat _PID=1 | grep -c '^Started ssh.service'",
    );
    assert_eq!(
        starts.trim(),
        "1",
        "sshd (re)started {} times",
        starts.trim()
    );
    let text = ssh_ok(&key, ip, "cat /root/from-user-data.txt");
    assert_eq!(text.trim(), "hello from user data");
    let host = ssh_ok(&key, ip, "hostname");
    assert_eq!(host.trim(), format!("tf-acc-test-{id}"));

    // apt works through apt-cacher-ng on the bridge.
    ssh_ok(
        &key,
        ip,
        "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q tree >/dev/null && tree --version",
    );

    // A snapshot of the running droplet is an image another droplet boots from: what the
    // first installed is there with nothing installed again, under the new droplet's own
    // name; deleted while that droplet runs, the copy stays until the droplet goes.
    let image_id = id + 1;
    let bytes = lab
        .hv
        .snapshot_droplet(id, image_id)
        .await
        .expect("snapshot");
    assert!(bytes > 1_000_000, "the copy holds {bytes} bytes");
    let id2 = id + 2;
    let mut from_image = spec(id2, &public, None);
    from_image.image = image_id.to_string();
    let ip2 = lab
        .hv
        .create(from_image)
        .await
        .expect("create from the snapshot")
        .ipv4;
    assert_eq!(
        ssh_ok(&key, ip2, "hostname; tree --version | cut -c1-4").trim(),
        format!("tf-acc-test-{id2}\ntree")
    );
    let copy = lab.state.root.join("images").join(image_id.to_string());
    lab.hv.delete_image(image_id).await.expect("delete image");
    assert!(copy.exists(), "the copy went while a droplet stands on it");
    assert_eq!(
        ssh_ok(&key, ip2, "hostname").trim(),
        format!("tf-acc-test-{id2}")
    );
    lab.hv
        .delete(id2)
        .await
        .expect("delete the droplet from the snapshot");
    assert!(
        !copy.exists(),
        "the deleted image outlived its last droplet"
    );

    // A reboot is a new machine process on the same disk.
    lab.hv.power(id, Power::Reboot).await.expect("reboot");
    let tr_after_reboot = traces(&lab, id);
    assert_ne!(tr.pid, tr_after_reboot.pid);
    assert_eq!(
        ssh_ok(&key, ip, "cat /root/from-user-data.txt").trim(),
        "hello from user data"
    );

    // The SSH fault refuses connections, then lifts by itself.
    machines::Nspawn::refuse_ssh(&lab.hv, id, Duration::from_secs(3))
        .await
        .expect("fault");
    assert!(
        !machines::ssh_banner(ip).await,
        "ssh still answers under the fault"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(machines::ssh_banner(ip).await, "ssh did not come back");

    lab.hv.delete(id).await.expect("delete");
    assert_gone(&tr_after_reboot);
    lab.hv.delete(id).await.expect("delete is idempotent");

    let bridge = lab.subnet.bridge_name();
    lab.teardown().await;
    let link = Command::new("ip")
        .args(["link", "show", "dev", &bridge])
        .output()
        .unwrap();
    assert!(!link.status.success(), "bridge {bridge} left");
}

/// `down` on a state dir the machines were made in directly (no instance.json: what a killed
/// machines test leaves) finds the machines by their records' slot and removes them, the
/// bridge and the slot with the dir; before, it removed the dir's files, failed on the
/// machines' mounted roots and left them running with nothing recording them.
#[tokio::test(flavor = "multi_thread")]
async fn down_removes_a_dir_of_machines_without_an_instance() {
    let mut lab = Lab::new().await;
    let (_key, public) = keygen(lab.dir.path());
    let id = 4_300_000 + u64::from(rand::random::<u16>());
    lab.hv
        .create(spec(id, &public, None))
        .await
        .expect("create");
    let tr = traces(&lab, id);
    if let Some(mut a) = lab.acng.take() {
        a.stop().await;
    }
    assert!(!lab.state.config().exists(), "a lab has no instance.json");
    let out = localocean(&lab.state.root, &["down"]);
    assert!(
        out.status.success(),
        "down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_gone(&tr);
    assert!(!lab.state.root.exists(), "state dir left");
    let bridge = lab.subnet.bridge_name();
    let link = Command::new("ip")
        .args(["link", "show", "dev", &bridge])
        .output()
        .unwrap();
    assert!(!link.status.success(), "bridge {bridge} left");
    assert!(!Path::new(localocean::instance::SLOTS_DIR)
        .join(format!("{}.lock", lab.subnet.slot))
        .exists());
}

/// A benchmark (scripts/bench runs it): prints the median time from create to SSH.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_create_to_ssh() {
    let mut lab = Lab::new().await;
    let (_key, public) = keygen(lab.dir.path());
    let mut times = Vec::new();
    for i in 0..5u64 {
        let id = 4_200_000 + i;
        let t0 = Instant::now();
        lab.hv
            .create(spec(id, &public, None))
            .await
            .expect("create");
        times.push(t0.elapsed().as_secs_f64());
        lab.hv.delete(id).await.expect("delete");
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "bench: droplet create→ssh median {:.1} s over 5 (all: {times:.1?})",
        times[2]
    );
    lab.teardown().await;
}

fn localocean(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_localocean"))
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap()
}

/// The whole lifecycle through the binary: `up --json`; a droplet made through the API;
/// localocean killed -9 and started again (the machine is adopted, still running);
/// stopped with SIGTERM and started again (the machine boots again); finally killed -9 once
/// more (a crash) and `down`, after which nothing of it remains.
#[tokio::test(flavor = "multi_thread")]
async fn up_restart_and_down_after_crash_leave_nothing() {
    localocean::image::ensure_image(localocean::image::DEFAULT_SLUG)
        .await
        .expect("image build (debootstrap)");
    let tmp = tempfile::Builder::new()
        .prefix("localocean-up-")
        .tempdir()
        .unwrap();
    let state = tmp.path().join("state");
    let sd = StateDir::new(&state);
    let out = localocean(&state, &["up", "--json"]);
    if !out.status.success() {
        let log = std::fs::read_to_string(sd.log()).unwrap_or_default();
        localocean(&state, &["down"]);
        panic!("up failed: {}\n{log}", String::from_utf8_lossy(&out.stderr));
    }
    let ready: serde_json::Value = serde_json::from_slice(&out.stdout).expect("up --json");

    // Every check runs inside the guard: a failure still takes the instance down below.
    let lifecycle = std::panic::AssertUnwindSafe(async {
        let keys: Vec<&String> = ready.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["api_url", "dns", "resolver", "s3_url", "token"]);
        // `up` again reports the same running instance.
        assert_eq!(up_json(&state), ready);
        let (id, ip, key) = make_droplet(&ready, tmp.path()).await;
        droplet_sees_dns_and_spaces(&ready, &key, ip).await;
        let disk = attach_new_volume(&ready, id).await;
        let disk_size = format!("blockdev --getsize64 {disk}");
        assert_eq!(ssh_ok(&key, ip, &disk_size).trim(), "1073741824");
        droplet_sees_its_metadata(&key, ip, id);
        let (lb, lb_ip) = make_balancer(&ready, &sd, id).await;
        let lb_first = balancer_pid(&sd, &lb);
        let hv_pid = |sd: &StateDir| -> i32 {
            process::read_pid_file(&sd.machines().join(id.to_string()).join("nspawn.pid"))
                .expect("nspawn.pid")
        };
        let first = hv_pid(&sd);

        // `up` at once: it finds the killed serve still ending (its threads let go of its
        // ports and files last), waits for it and starts a new one.
        process::signal(serve_pid(&sd), libc::SIGKILL);
        assert_eq!(up_json(&state), ready, "same instance after a crash");
        assert_eq!(hv_pid(&sd), first, "running machine adopted, not restarted");
        assert_eq!(ssh_ok(&key, ip, "hostname").trim(), "tf-acc-test-up");
        assert_eq!(balancer_pid(&sd, &lb), lb_first, "load balancer adopted");
        assert_eq!(banner(lb_ip, 2222), "SSH-", "load balancer after a crash");

        let pid = serve_pid(&sd);
        process::signal(pid, libc::SIGTERM);
        assert!(
            process::wait_exit(pid, Duration::from_secs(90)).await,
            "serve ignored SIGTERM"
        );
        assert!(
            !process::alive(first),
            "machine kept running after serve stopped"
        );
        assert!(
            !process::alive(lb_first),
            "load balancer kept running after serve stopped"
        );
        assert_eq!(up_json(&state), ready, "same instance after a restart");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !machines::ssh_banner(ip).await {
            assert!(
                Instant::now() < deadline,
                "droplet ({id}) not back after restart"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(ssh_ok(&key, ip, "hostname").trim(), "tf-acc-test-up");
        assert_ne!(hv_pid(&sd), first);
        // The restarted localocean made the volume's disk again, and runs the balancer.
        assert_eq!(ssh_ok(&key, ip, &disk_size).trim(), "1073741824");
        wait_banner(lb_ip, 2222, "load balancer after a restart").await;
        assert_ne!(balancer_pid(&sd, &lb), lb_first);
        (id, lb, lb_ip)
    });
    let made = futures::FutureExt::catch_unwind(lifecycle).await;

    let cfg = localocean::instance::InstanceConfig::load(&sd)
        .unwrap()
        .expect("instance.json");
    let subnet = cfg.subnet();
    let serve = serve_pid(&sd);
    let records = machines::read_records(&sd);
    let machine_pids: Vec<i32> = records
        .iter()
        .filter_map(|r| {
            process::read_pid_file(
                &sd.machines()
                    .join(r.droplet_id.to_string())
                    .join("nspawn.pid"),
            )
        })
        .collect();
    let balancers: Vec<(i32, Ipv4Addr)> = machines::balancer::read_records(&sd)
        .iter()
        .filter_map(|r| {
            Some((
                process::read_pid_file(&sd.balancers().join(&r.id).join("haproxy.pid"))?,
                r.ip,
            ))
        })
        .collect();
    if made.is_err() {
        // `down` removes the state dir; keep the log that explains the failure.
        let _ = std::fs::copy(sd.log(), tmp.path().join("failed-localocean.log"));
    }
    // A crash: serve gets no chance to clean up.
    process::signal(serve, libc::SIGKILL);
    let down = localocean(&state, &["down"]);
    assert!(
        down.status.success(),
        "down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let (droplet_id, _, _) = match made {
        Ok(made) => made,
        Err(panic) => {
            eprintln!("test state kept in {}", tmp.keep().display());
            std::panic::resume_unwind(panic)
        }
    };
    assert_eq!(records.len(), 1);
    assert_eq!(machine_pids.len(), 1);

    std::thread::sleep(Duration::from_millis(500));
    assert_instance_gone(&state, subnet, droplet_id, serve, &machine_pids);
    assert_eq!(balancers.len(), 1);
    for (pid, ip) in balancers {
        assert_balancer_gone(subnet, pid, ip);
    }
}

/// Nothing of an instance is left: its serve and machines, the droplet's namespace and veth,
/// the bridge, mounts under the state dir, the state dir, the slot lock.
fn assert_instance_gone(
    state: &Path,
    subnet: Subnet,
    droplet_id: u64,
    serve: i32,
    machine_pids: &[i32],
) {
    assert!(!process::alive(serve), "serve still alive");
    for pid in machine_pids {
        assert!(!process::alive(*pid), "machine {pid} still alive");
    }
    let listed = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let ns = subnet.netns_name(droplet_id);
    assert!(
        !listed.split_whitespace().any(|n| n == ns),
        "netns {ns} left"
    );
    for link in [subnet.bridge_name(), subnet.veth_name(droplet_id)] {
        let st = Command::new("ip")
            .args(["link", "show", "dev", &link])
            .output()
            .unwrap();
        assert!(!st.status.success(), "link {link} left");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*state.to_string_lossy()),
        "mounts under {} left",
        state.display()
    );
    assert!(!state.exists(), "state dir left");
    let state_s = state.to_string_lossy();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let f = std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
        assert!(
            !f.contains(&*state_s),
            "loop device {} left over {f}",
            e.file_name().to_string_lossy()
        );
    }
    assert!(!Path::new(localocean::instance::SLOTS_DIR)
        .join(format!("{}.lock", subnet.slot))
        .exists());
}

/// `up --exit-with PID`, as the test harness starts its shared instance: when PID dies (here
/// killed -9, as a test binary may be), localocean removes everything it made, with no `down`.
#[tokio::test(flavor = "multi_thread")]
async fn up_exit_with_removes_everything_once_the_watched_process_is_gone() {
    localocean::image::ensure_image(localocean::image::DEFAULT_SLUG)
        .await
        .expect("image build (debootstrap)");
    let tmp = tempfile::Builder::new()
        .prefix("localocean-exit-with-")
        .tempdir()
        .unwrap();
    let state = tmp.path().join("state");
    let sd = StateDir::new(&state);
    // If an assertion fails before the instance is gone, `down` still removes it.
    let _down = DownOnDrop(state.clone());
    let mut watched = Command::new("sleep").arg("600").spawn().unwrap();
    let out = localocean(
        &state,
        &["up", "--json", "--exit-with", &watched.id().to_string()],
    );
    assert!(
        out.status.success(),
        "up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready: serde_json::Value = serde_json::from_slice(&out.stdout).expect("up --json");
    let (id, ip, key) = make_droplet(&ready, tmp.path()).await;
    let (lb, lb_ip) = make_balancer(&ready, &sd, id).await;
    let haproxy = balancer_pid(&sd, &lb);
    let subnet = localocean::instance::InstanceConfig::load(&sd)
        .unwrap()
        .expect("instance.json")
        .subnet();
    let serve = serve_pid(&sd);
    let machine = process::read_pid_file(&sd.machines().join(id.to_string()).join("nspawn.pid"))
        .expect("nspawn.pid");
    // Still up while the watched process lives.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(process::alive(serve));
    assert_eq!(ssh_ok(&key, ip, "hostname").trim(), "tf-acc-test-up");

    watched.kill().unwrap();
    watched.wait().unwrap();
    assert!(
        process::wait_exit(serve, Duration::from_secs(120)).await,
        "serve ({serve}) still runs after the watched process is gone"
    );
    assert_instance_gone(&state, subnet, id, serve, &[machine]);
    assert_balancer_gone(subnet, haproxy, lb_ip);
}

/// Runs `localocean down` on a state dir when dropped (harmless when it is gone already).
struct DownOnDrop(PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            localocean(&self.0, &["down"]);
        }
    }
}

fn up_json(state: &Path) -> serde_json::Value {
    let out = localocean(state, &["up", "--json"]);
    if !out.status.success() {
        // A start after a restart found one of its ports held (twice, not understood): who
        // holds which socket (every state, with processes and inodes) names the holder.
        let listening = Command::new("ss").args(["-tuanpe"]).output();
        let listening = listening
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "up: {}\n--- listening sockets:\n{listening}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).expect("up --json")
}

fn serve_pid(sd: &StateDir) -> i32 {
    process::read_pid_file(&sd.serve_pid()).expect("serve.pid")
}

/// Registers a key and creates a droplet through the API; returns its id and address once
/// it is active and answers SSH with that key.
async fn make_droplet(ready: &serde_json::Value, dir: &Path) -> (u64, Ipv4Addr, PathBuf) {
    let api = ready["api_url"].as_str().unwrap();
    let token = ready["token"].as_str().unwrap();
    let (key, public) = keygen(dir);
    let http = reqwest::Client::new();
    let k: serde_json::Value = http
        .post(format!("{api}/v2/account/keys"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "tf-acc-test-key", "public_key": public}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = k["ssh_key"]["id"].as_u64().expect("key id");
    let d: serde_json::Value = http
        .post(format!("{api}/v2/droplets"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "name": "tf-acc-test-up", "region": "nyc3", "size": "s-1vcpu-1gb",
            "image": "debian-12-x64", "ssh_keys": [key_id],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = d["droplet"]["id"].as_u64().expect("droplet id");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let d: serde_json::Value = http
            .get(format!("{api}/v2/droplets/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if d["droplet"]["status"] == "active" {
            let ip: Ipv4Addr = d["droplet"]["networks"]["v4"][0]["ip_address"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(ssh_ok(&key, ip, "hostname").trim(), "tf-acc-test-up");
            return (id, ip, key);
        }
        assert!(
            Instant::now() < deadline,
            "droplet ({id}) never active: {d}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The first four bytes a TCP connection to `ip:port` receives (`SSH-` from an sshd).
fn banner(ip: Ipv4Addr, port: u16) -> String {
    use std::io::Read;
    let addr = std::net::SocketAddr::from((ip, port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4];
    match s.read_exact(&mut buf) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => String::new(),
    }
}

/// Waits until `ip:port` forwards to an sshd (a load balancer that runs).
async fn wait_banner(ip: Ipv4Addr, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while banner(ip, port) != "SSH-" {
        assert!(
            Instant::now() < deadline,
            "{what}: no sshd behind {ip}:{port}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Creates a load balancer through the API in front of the droplet's sshd (TCP 2222 to 22,
/// a TCP health check); returns its id and address once it is active and forwards.
async fn make_balancer(
    ready: &serde_json::Value,
    sd: &StateDir,
    droplet: u64,
) -> (String, Ipv4Addr) {
    let api = ready["api_url"].as_str().unwrap();
    let token = ready["token"].as_str().unwrap();
    let http = reqwest::Client::new();
    let lb: serde_json::Value = http
        .post(format!("{api}/v2/load_balancers"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "name": "tf-acc-test-lb", "region": "nyc3", "droplet_ids": [droplet],
            "forwarding_rules": [{"entry_protocol": "tcp", "entry_port": 2222,
                                  "target_protocol": "tcp", "target_port": 22}],
            "health_check": {"protocol": "tcp", "port": 22, "check_interval_seconds": 3},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = lb["load_balancer"]["id"]
        .as_str()
        .expect("lb id")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ip: Ipv4Addr = loop {
        let lb: serde_json::Value = http
            .get(format!("{api}/v2/load_balancers/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if lb["load_balancer"]["status"] == "active" {
            break lb["load_balancer"]["ip"].as_str().unwrap().parse().unwrap();
        }
        if Instant::now() > deadline {
            let log = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
            panic!(
                "load balancer {id} never active: {lb}\nlocalocean log:\n{}\nhaproxy log:\n{}",
                log(sd.log()),
                log(sd.balancers().join(&id).join("haproxy.log"))
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    wait_banner(ip, 2222, "new load balancer").await;
    (id, ip)
}

fn balancer_pid(sd: &StateDir, id: &str) -> i32 {
    process::read_pid_file(&sd.balancers().join(id).join("haproxy.pid")).expect("haproxy.pid")
}

/// The balancer's HAProxy and namespace are gone.
fn assert_balancer_gone(subnet: Subnet, pid: i32, ip: Ipv4Addr) {
    assert!(!process::alive(pid), "haproxy {pid} still alive");
    let ns = subnet.balancer_netns_name(ip);
    assert!(
        !Path::new("/run/netns").join(&ns).exists(),
        "netns {ns} left"
    );
    let st = Command::new("ip")
        .args(["link", "show", "dev", &subnet.balancer_veth_name(ip)])
        .output()
        .unwrap();
    assert!(!st.status.success(), "balancer veth left");
}

/// Creates a formatted volume through the API and attaches it to the running droplet;
/// returns its by-id path in the droplet once the attach action completed.
async fn attach_new_volume(ready: &serde_json::Value, droplet: u64) -> String {
    let api = ready["api_url"].as_str().unwrap();
    let token = ready["token"].as_str().unwrap();
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .post(format!("{api}/v2/volumes"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "name": "tf-acc-test-up-data", "region": "nyc3", "size_gigabytes": 1,
            "filesystem_type": "ext4",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vid = v["volume"]["id"].as_str().expect("volume id").to_string();
    let a: serde_json::Value = http
        .post(format!("{api}/v2/volumes/{vid}/actions"))
        .bearer_auth(token)
        .json(&serde_json::json!({"type": "attach", "droplet_id": droplet, "region": "nyc3"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let action = a["action"]["id"].as_u64().expect("action id");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a: serde_json::Value = http
            .get(format!("{api}/v2/actions/{action}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match a["action"]["status"].as_str() {
            Some("completed") => break,
            Some("in-progress") => {}
            _ => panic!("attach action: {a}"),
        }
        assert!(Instant::now() < deadline, "attach never completed: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    format!(
        "/dev/disk/by-id/{}",
        machines::by_id_name("tf-acc-test-up-data")
    )
}

/// Inside a droplet, names come from localocean's DNS on the bridge and Spaces answers on
/// the bridge address, as the registry on a droplet needs.
async fn droplet_sees_dns_and_spaces(ready: &serde_json::Value, key: &Path, ip: Ipv4Addr) {
    let api = ready["api_url"].as_str().unwrap();
    let token = ready["token"].as_str().unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{api}/v2/domains"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "tf-acc-test.example"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "domain: {}", r.status());
    let r = http
        .post(format!("{api}/v2/domains/tf-acc-test.example/records"))
        .bearer_auth(token)
        .json(&serde_json::json!({"type": "A", "name": "www", "data": ip.to_string(), "ttl": 60}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "record: {}", r.status());
    let resolved = ssh_ok(key, ip, "getent hosts www.tf-acc-test.example");
    assert!(
        resolved.starts_with(&ip.to_string()),
        "resolved: {resolved}"
    );

    // The endpoints `up` prints work from inside a droplet as they are, as DigitalOcean's do.
    let s3 = ready["s3_url"].as_str().unwrap();
    let code = ssh_ok(
        key,
        ip,
        &format!("curl -s -m 5 -o /dev/null -w '%{{http_code}}' {s3}/"),
    );
    assert_ne!(code.trim(), "000", "Spaces not reachable from the droplet");
    // Without the token (it stays out of command lines): DigitalOcean's 401 says it answered.
    let code = ssh_ok(
        key,
        ip,
        &format!("curl -s -m 5 -o /dev/null -w '%{{http_code}}' {api}/v2/account"),
    );
    assert_eq!(code.trim(), "401", "the API from the droplet");
    let nameserver = ssh_ok(
        key,
        ip,
        "awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf",
    );
    assert_eq!(
        ready["dns"].as_str().unwrap(),
        format!("{}:53", nameserver.trim()),
        "the DNS the droplet resolves through"
    );
}

/// Inside a droplet, DigitalOcean's metadata service answers at 169.254.169.254 with this
/// droplet's own data, to any local user (closing it is the droplet's business, as on DO).
fn droplet_sees_its_metadata(key: &Path, ip: Ipv4Addr, id: u64) {
    let get = |path: &str| format!("curl -sf -m 5 http://169.254.169.254/metadata/v1/{path}");
    assert_eq!(ssh_ok(key, ip, &get("id")).trim(), id.to_string());
    assert_eq!(ssh_ok(key, ip, &get("hostname")).trim(), "tf-acc-test-up");
    assert_eq!(
        ssh_ok(key, ip, &get("interfaces/public/0/ipv4/address")).trim(),
        ip.to_string()
    );
    let all = ssh_ok(
        key,
        ip,
        "curl -sf -m 5 http://169.254.169.254/metadata/v1.json",
    );
    let all: serde_json::Value = serde_json::from_str(&all).expect("v1.json");
    assert_eq!(all["droplet_id"], id);
    let as_nobody = ssh_ok(key, ip, &format!("runuser -u nobody -- {}", get("region")));
    assert_eq!(as_nobody.trim(), "nyc3");
    let (ok, out) = ssh(key, ip, &get("no-such-thing"));
    assert!(!ok, "an unknown path answered: {out}");
}

/// A slot whose bridge outlived its instance (state dir deleted, no `down`) is not handed
/// out again: the leftover's processes may still hold its addresses.
#[test]
fn a_slot_whose_bridge_outlived_its_instance_is_skipped() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let slot = claim_slot(a.path(), None).unwrap();
    // The bridge made while `a` still holds the slot, then `a` gone: its lock is stale and
    // its bridge outlives it. (Released first, the slot went to a test running alongside,
    // whose bridge this test then deleted under it.)
    let bridge = Subnet::new(slot).bridge_name();
    let made = Command::new("ip")
        .args(["link", "add", &bridge, "type", "bridge"])
        .status()
        .unwrap();
    assert!(made.success(), "ip link add {bridge}");
    let a_path = a.path().to_path_buf();
    drop(a);
    let claimed = claim_slot(b.path(), None);
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    release_slot(&a_path, slot);
    let claimed = claimed.unwrap();
    release_slot(b.path(), claimed);
    assert_ne!(
        claimed, slot,
        "slot {slot} handed out with its bridge still there"
    );
}

/// Instances started at once never share a slot, stale locks (their owners' state dirs
/// deleted) included: two of them once took over the same stale slot (read the stale lock,
/// remove it, create ours: three steps). Many rounds of many threads, since the window is
/// small.
#[test]
fn concurrent_claims_over_stale_locks_never_share_a_slot() {
    const N: usize = 12;
    for round in 0..20 {
        // Leave N stale locks behind: claimed by dirs that are then deleted.
        for _ in 0..N {
            let d = tempfile::tempdir().unwrap();
            claim_slot(d.path(), None).unwrap();
        }
        let dirs: Vec<tempfile::TempDir> = (0..N).map(|_| tempfile::tempdir().unwrap()).collect();
        let barrier = std::sync::Barrier::new(N);
        let claimed: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = dirs
                .iter()
                .map(|d| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        claim_slot(d.path(), None).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut distinct = claimed.clone();
        distinct.sort();
        distinct.dedup();
        // Each thread's own lock names its own dir: a slot taken twice names one of them.
        let owners: Vec<String> = claimed
            .iter()
            .map(|s| std::fs::read_to_string(format!("/run/localocean/slots/{s}.lock")).unwrap())
            .collect();
        for (d, slot) in dirs.iter().zip(&claimed) {
            release_slot(d.path(), *slot);
        }
        assert_eq!(
            distinct.len(),
            N,
            "round {round}: slots handed out twice: {claimed:?} (owners {owners:?})"
        );
    }
}

/// Machines need more inotify instances than the kernel's default (128 for root, shared by
/// every machine): a hypervisor raises the limits before it boots any.
#[test]
fn the_hypervisor_raises_the_hosts_inotify_limits() {
    let dir = tempfile::tempdir().unwrap();
    let _hv = Nspawn::new(NspawnConfig::new(StateDir::new(dir.path()), Subnet::new(0)));
    for (name, want) in sys::INOTIFY_LIMITS {
        let have: u64 = std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(have >= want, "fs.inotify.{name} is {have}, below {want}");
    }
}
