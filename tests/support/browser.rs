//! Headless Chromium for the acceptance tests: Debian's `chromium`, driven by playwright-core
//! (both installed by scripts/setup) through tests/support/browser.mjs, one JSON command a line.
//!
//! Each browser has a fresh profile and a HOME of its own whose NSS database trusts the
//! registry's CA (a real trust anchor, not ignored certificate errors), and resolves the
//! registry's name with `--host-resolver-rules`: the host's DNS is not touched.
//!
//! The browser runs in a network namespace of its own, which has only loopback (and a dummy
//! address, so that it counts as online): the registry's name resolves to 127.0.0.1 there, and
//! a forwarder in this process carries each connection to the droplet's port 443. Other tests
//! add and remove namespaces, bridges and addresses on the host all the time; Chromium in the
//! host's namespace took each as a network change and aborted requests in flight
//! (`ERR_NETWORK_CHANGED`), which failed this test in CI three times.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::{json, Value};

/// playwright-core's folder: PLAYWRIGHT_CORE, else where scripts/setup puts it.
pub fn playwright_core() -> PathBuf {
    if let Some(p) = std::env::var_os("PLAYWRIGHT_CORE") {
        return p.into();
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/playwright/node_modules/playwright-core");
    assert!(
        local.join("package.json").exists(),
        "playwright-core not found at {}: run scripts/setup (or set PLAYWRIGHT_CORE)",
        local.display()
    );
    local
}

pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    next_id: u64,
    /// The browser's network namespace and its forwarder; removed on drop, after the browser.
    netns: Option<Netns>,
    /// The profile and HOME; removed on drop, after the browser is gone.
    pub dir: tempfile::TempDir,
}

/// How long one command may take (a page load, a wait for a row).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long Chromium may take to start (over 60 s seen while the suite booted droplets).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(240);

impl Browser {
    /// A browser that trusts `ca_pem` and finds `fqdn` at `ip`.
    pub fn start(fqdn: &str, ip: &str, ca_pem: &str) -> Self {
        assert!(
            Path::new("/usr/bin/chromium").exists(),
            "/usr/bin/chromium not found: run scripts/setup"
        );
        let dir = tempfile::Builder::new()
            .prefix("tf-acc-test-browser-")
            .tempdir()
            .unwrap();
        let home = dir.path().join("home");
        let nssdb = home.join(".pki/nssdb");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&nssdb).unwrap();
        std::fs::create_dir_all(&profile).unwrap();
        let ca = dir.path().join("registry-ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        let db = format!("sql:{}", nssdb.display());
        certutil(&["-N", "--empty-password", "-d", &db]);
        // "C,,": a CA trusted to issue TLS server certificates, nothing else.
        let ca = ca.display().to_string();
        certutil(&["-A", "-d", &db, "-n", "registry-ca", "-t", "C,,", "-i", &ca]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/browser.mjs");
        // The namespace is named after the browser's own temporary folder: unique, and found
        // by the name a leftover would carry.
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let netns = Netns::new(&name, ip);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &netns.name, "node"])
            .arg(&script)
            .env("PLAYWRIGHT_CORE", playwright_core())
            .env("BROWSER_PROFILE", &profile)
            .env("BROWSER_HOME", &home)
            .env("BROWSER_RESOLVE", format!("MAP {fqdn} 127.0.0.1"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running node (Node.js is on the machine; scripts/setup checks)");
        let stdin = child.stdin.take().unwrap();
        let answers = reader(child.stdout.take().unwrap());
        let ready = answers
            .recv_timeout(LAUNCH_TIMEOUT)
            .unwrap_or_else(|e| panic!("Chromium did not start within {LAUNCH_TIMEOUT:?} ({e})"));
        assert_eq!(
            ready, r#"{"ready":true}"#,
            "the browser driver's first line"
        );
        Self {
            child,
            stdin,
            answers,
            next_id: 0,
            netns: Some(netns),
            dir,
        }
    }

    /// Runs `op` with `args` (an object); its value, or the driver's error.
    pub fn try_call(&mut self, op: &str, args: Value) -> Result<Value, String> {
        self.next_id += 1;
        let mut cmd = args;
        cmd["id"] = json!(self.next_id);
        cmd["op"] = json!(op);
        writeln!(self.stdin, "{cmd}").map_err(|e| format!("browser gone: {e}"))?;
        self.stdin
            .flush()
            .map_err(|e| format!("browser gone: {e}"))?;
        // An answer to an earlier command that timed out may come first: skipped.
        let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
        let answer = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .answers
                .recv_timeout(left)
                .map_err(|e| format!("{op}: no answer from the browser ({e})"))?;
            let answer: Value =
                serde_json::from_str(&line).map_err(|e| format!("{op}: {e}: {line}"))?;
            if answer["id"] == json!(self.next_id) {
                break answer;
            }
        };
        if answer["ok"] == json!(true) {
            Ok(answer["value"].clone())
        } else {
            Err(answer["error"].as_str().unwrap_or("?").to_owned())
        }
    }

    /// As `try_call`; a failure fails the test with what the driver said, what the page
    /// showed and every request it made (a wait that timed out says nothing by itself).
    pub fn call(&mut self, op: &str, args: Value) -> Value {
        match self.try_call(op, args.clone()) {
            Ok(v) => v,
            Err(e) => {
                let page = args.get("page").cloned().unwrap_or(Value::Null);
                let shown = self
                    .try_call("text", json!({"page": page, "selector": "body"}))
                    .unwrap_or_else(|e| json!(format!("(no text: {e})")));
                let report = self
                    .try_call("report", json!({"page": page}))
                    .unwrap_or_else(|e| json!(format!("(no report: {e})")));
                panic!("browser {op} {args}: {e}\npage shows: {shown}\npage report: {report}")
            }
        }
    }
}

fn certutil(args: &[&str]) {
    let out = Command::new("certutil")
        .args(args)
        .output()
        .expect("running certutil (libnss3-tools; scripts/setup installs it)");
    assert!(
        out.status.success(),
        "certutil {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lines from the driver, on a thread, so a hung browser fails a command by timeout.
fn reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Drop for Browser {
    fn drop(&mut self) {
        // `quit` closes Chromium through playwright; if the driver does not exit, SIGTERM
        // makes playwright kill the browser's process group before exiting. Both by pid.
        let _ = writeln!(self.stdin, "{}", json!({"id": 0, "op": "quit"}));
        let _ = self.stdin.flush();
        'ended: for signal in [None, Some("-TERM"), Some("-KILL")] {
            if let Some(sig) = signal {
                let _ = Command::new("kill")
                    .args([sig, &self.child.id().to_string()])
                    .status();
            }
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break 'ended;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // The namespace after the browser: nothing runs in it any more.
        self.netns.take();
    }
}

/// A network namespace of the browser's own (`ip netns add`, by its own name) whose
/// 127.0.0.1:443 this process forwards to `target`:443 on the host.
struct Netns {
    name: String,
    stop: Arc<AtomicBool>,
    forwarder: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    fn new(name: &str, target: &str) -> Self {
        let name = name.to_owned();
        ip(&["netns", "add", &name]);
        // From here on, drop removes the namespace whatever fails next.
        let mut ns = Netns {
            name,
            stop: Arc::new(AtomicBool::new(false)),
            forwarder: None,
        };
        // An address besides loopback (with none, Chromium counts itself offline), on a veth
        // pair with both ends inside (this host has no dummy links).
        let name = ns.name.clone();
        let inside = |args: &[&str]| ip(&[&["-n", name.as_str()], args].concat());
        // No IPv6: a link-local address would appear a second or two after the link is up
        // (once duplicate detection ends), and Chromium, started by then, would take it for a
        // network change and abort the page's first load (seen). The namespace's addresses
        // are all in place before the browser starts, and never change after.
        ip(&[
            "netns",
            "exec",
            &name,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        ]);
        inside(&["link", "set", "lo", "up"]);
        inside(&[
            "link", "add", "online0", "type", "veth", "peer", "name", "online1",
        ]);
        inside(&["address", "add", "198.19.255.254/32", "dev", "online0"]);
        inside(&["link", "set", "online1", "up"]);
        inside(&["link", "set", "online0", "up"]);
        let listener = listen_inside(&ns.name);
        listener.set_nonblocking(true).unwrap();
        let (stop, target) = (ns.stop.clone(), format!("{target}:443"));
        ns.forwarder = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let target = target.clone();
                        std::thread::spawn(move || relay(inbound, &target));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("browser forwarder: accept: {e}"),
                }
            }
        }));
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(f) = self.forwarder.take() {
            let _ = f.join();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2; scripts/setup installs it)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A listener on 127.0.0.1:443 inside the namespace `name`: made on a thread that enters the
/// namespace and then ends (a socket stays in the namespace it was made in; connections the
/// forwarder makes later, from this process's own threads, start on the host).
fn listen_inside(name: &str) -> TcpListener {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        TcpListener::bind("127.0.0.1:443").expect("port 443 in the browser's namespace")
    })
    .join()
    .expect("entering the browser's namespace")
}

/// Carries one connection both ways until either side closes.
fn relay(inbound: TcpStream, target: &str) {
    let Ok(outbound) = TcpStream::connect(target) else {
        return;
    };
    inbound.set_nonblocking(false).ok();
    let (mut in_r, mut out_w) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
    let upload = std::thread::spawn(move || {
        let _ = std::io::copy(&mut in_r, &mut out_w);
        let _ = out_w.shutdown(std::net::Shutdown::Write);
    });
    let (mut out_r, mut in_w) = (outbound, inbound);
    let _ = std::io::copy(&mut out_r, &mut in_w);
    let _ = in_w.shutdown(std::net::Shutdown::Write);
    let _ = upload.join();
}
