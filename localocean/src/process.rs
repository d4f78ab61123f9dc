//! The processes localocean records in pid files (serve, Garage, apt-cacher-ng, machines) and
//! the ones tests watch: liveness, signals, waiting for an exit, never hitting a recycled pid.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often a wait looks at the process again.
const POLL: Duration = Duration::from_millis(50);

/// Whether a process exists and is not a zombie (exited, not yet reaped by its parent): a
/// zombie holds no resources, so for every caller here it is gone.
///
/// A process is a zombie only once its last thread has ended. Its first thread (whose state
/// /proc/<pid>/stat shows) can end first: killed while another thread finishes a disk write,
/// or a program whose main thread returns early. Until the others end, the process keeps its
/// files and sockets open, and `ss -p` cannot name it (the zombie's /proc/<pid>/fd is gone):
/// seen as a port "held by nobody" seconds after a `kill -9`.
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(')')?;
                rest.split_whitespace()
                    .next()
                    .map(|state| state != "Z" && state != "X")
            })
            .unwrap_or(false)
    })
}

/// Sends `sig` to `pid`. Never to pid 0 or -1 (the caller's group, every process), which a
/// bad pid file would otherwise turn into.
pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain kill(2) on a pid the caller recorded itself.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Sends `sig` to every process of the group `pgid` leads (a process started with setsid).
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: as `signal`; a negative pid addresses the process group.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// The pid a pid file holds, if it holds one.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The process's command line, one entry per argument; empty when it is gone.
pub fn cmdline(pid: i32) -> Vec<String> {
    let own = read_cmdline(&format!("/proc/{pid}/cmdline"));
    if !own.is_empty() {
        return own;
    }
    // A process whose first thread has ended (see `alive`) shows its command line only
    // through the threads it still runs.
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|task| read_cmdline(&task.path().join("cmdline").to_string_lossy()))
        .find(|args| !args.is_empty())
        .unwrap_or_default()
}

fn read_cmdline(path: &str) -> Vec<String> {
    std::fs::read(path)
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The live process a pid file names, if its command line passes `is_ours`: a pid file left
/// by a crash may name a pid that now belongs to something else.
pub fn recorded(pid_file: &Path, is_ours: impl Fn(&[String]) -> bool) -> Option<i32> {
    let pid = read_pid_file(pid_file)?;
    (alive(pid) && is_ours(&cmdline(pid))).then_some(pid)
}

/// Waits up to `limit` for `pid` to exit; true if it did.
pub async fn wait_exit(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// [`wait_exit`] for code without a runtime (the tests' harness).
pub fn wait_exit_blocking(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// SIGTERM, up to `grace` for an orderly exit, then SIGKILL; true if it ended in time.
pub async fn terminate(pid: i32, grace: Duration) -> bool {
    signal(pid, libc::SIGTERM);
    if wait_exit(pid, grace).await {
        return true;
    }
    tracing::warn!(pid, "process ignored SIGTERM for {grace:?}; killing it");
    signal(pid, libc::SIGKILL);
    wait_exit(pid, Duration::from_secs(10)).await
}

/// Makes the child `cmd` starts get SIGTERM when the thread that starts it ends: for tools a
/// test runs and waits for (OpenTofu, Pebble, skopeo), so that none outlives a killed test
/// binary. Only for a child that the starting thread outlives (not from a pool thread).
pub fn end_with_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id() as i32;
    // SAFETY: prctl, getppid and raise are async-signal-safe and touch no memory of the
    // parent; this runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A parent gone before the prctl sends no signal any more.
            if libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
    cmd
}

/// A process told apart from a later one that reuses its pid: the pid plus its start time
/// (clock ticks since boot, field 22 of /proc/<pid>/stat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub pid: i32,
    start: u64,
}

impl Identity {
    /// The process running now as `pid`; None if there is none.
    pub fn of(pid: i32) -> Option<Identity> {
        if !alive(pid) {
            return None;
        }
        let start = stat_fields(pid)?.get(19)?.parse().ok()?;
        Some(Identity { pid, start })
    }

    /// Whether this very process still runs (not a zombie, not a newcomer on its pid).
    pub fn alive(&self) -> bool {
        Identity::of(self.pid).as_ref() == Some(self)
    }
}

/// The fields of /proc/<pid>/stat after the command name (which may hold spaces and
/// parentheses, so the split is at the last ')'): state first, start time at index 19.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_with_a_stable_identity() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        let id = Identity::of(me).expect("own identity");
        assert!(id.alive());
        assert_eq!(Identity::of(me), Some(id));
        // Another start time on the same pid is another process.
        let other = Identity {
            pid: me,
            start: id.start + 1,
        };
        assert!(!other.alive());
        assert!(cmdline(me).iter().any(|a| a.contains("localocean")));
    }

    #[test]
    fn a_process_whose_first_thread_ended_is_alive_while_another_holds_its_socket() {
        // The first thread ends (pthread_exit) while a second one sleeps: the process still
        // listens on its port, though /proc/<pid>/stat already shows a zombie.
        let script = "import ctypes, socket, sys, threading, time\n\
            s = socket.socket()\n\
            s.bind(('127.0.0.1', 0))\n\
            s.listen()\n\
            print(s.getsockname()[1], flush=True)\n\
            threading.Thread(target=lambda: time.sleep(3)).start()\n\
            ctypes.CDLL(None).pthread_exit(None)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let pid = child.id() as i32;
        let mut port = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut port,
        )
        .unwrap();
        let port: u16 = port.trim().parse().expect("port");
        let deadline = Instant::now() + Duration::from_secs(5);
        while stat_fields(pid).and_then(|f| f.first().cloned()).as_deref() != Some("Z") {
            assert!(
                Instant::now() < deadline,
                "first thread of {pid} never ended"
            );
            std::thread::sleep(POLL);
        }
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
            "the port is still held"
        );
        assert!(alive(pid), "a zombie first thread with a live second one");
        assert!(
            cmdline(pid).first().is_some_and(|a| a.ends_with("python3")),
            "{:?}",
            cmdline(pid)
        );
        assert!(Identity::of(pid).is_some());
        assert!(wait_exit_blocking(pid, Duration::from_secs(10)));
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("port free once it is gone");
        child.wait().unwrap();
    }

    #[test]
    fn a_recorded_process_is_found_signalled_and_seen_gone() {
        let dir = tempfile_dir();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        // Between fork and exec the child still shows this binary's command line.
        let deadline = Instant::now() + Duration::from_secs(5);
        while cmdline(pid).first().map(String::as_str) != Some("sleep") {
            assert!(Instant::now() < deadline, "sleep ({pid}) never ran");
            std::thread::sleep(POLL);
        }
        let file = dir.join("sleep.pid");
        std::fs::write(&file, format!("{pid}\n")).unwrap();
        assert_eq!(
            recorded(&file, |args| args
                .first()
                .is_some_and(|a| a.ends_with("sleep"))),
            Some(pid)
        );
        // A pid file naming a process that is not ours is ignored.
        assert_eq!(
            recorded(&file, |args| args.iter().any(|a| a == "garage")),
            None
        );
        signal(pid, libc::SIGKILL);
        // Killed but not reaped: a zombie, which counts as gone.
        assert!(wait_exit_blocking(pid, Duration::from_secs(5)));
        assert_eq!(recorded(&file, |_| true), None);
        child.wait().unwrap();
        assert!(!alive(0) && !alive(-1));
        assert_eq!(read_pid_file(&dir.join("missing.pid")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_child_ends_with_the_thread_that_started_it() {
        let mut child = std::thread::spawn(|| {
            end_with_parent(std::process::Command::new("sleep").arg("30"))
                .spawn()
                .expect("sleep")
        })
        .join()
        .unwrap();
        let pid = child.id() as i32;
        // The starting thread is gone: the child got SIGTERM (a zombie until reaped, which
        // counts as gone).
        assert!(
            wait_exit_blocking(pid, Duration::from_secs(5)),
            "sleep ({pid}) still runs"
        );
        child.wait().unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("localocean-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
