//! Running host tools (ip, mount, nsenter, debootstrap) with errors that name the command.
//! Every privileged step of localocean goes through here, so failures read the same everywhere.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`: {source} (is it installed? run scripts/setup)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub type SysResult<T> = Result<T, SysError>;

pub fn io_err(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SysError {
    let path = path.to_path_buf();
    move |source| SysError::Io {
        context,
        path,
        source,
    }
}

fn describe<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Long enough for mkfs or e2fsck on a big sparse volume; a hung tool must not hang an
/// API request forever.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a command to completion and returns its stdout; non-zero exit is an error that
/// carries the tail of stderr (the tools we run do not print secrets).
pub async fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> SysResult<String> {
    run_for(program, args, DEFAULT_TIMEOUT).await
}

/// [`run`] with its own time limit; the command is killed when it expires.
pub async fn run_for<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    limit: Duration,
) -> SysResult<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(limit, output)
        .await
        .map_err(|_| {
            SysError::Other(format!(
                "`{}` did not finish within {limit:?}",
                describe(program, args)
            ))
        })?
        .map_err(|source| SysError::Spawn {
            command: describe(program, args),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .trim()
            .chars()
            .rev()
            .take(600)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(SysError::Failed {
            command: describe(program, args),
            status: out.status.to_string(),
            stderr: tail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], for cleanup paths: the error is logged, not returned, because cleanup
/// must carry on past what is already gone.
pub async fn run_quiet<S: AsRef<OsStr>>(program: &str, args: &[S]) -> bool {
    match run(program, args).await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("ignored during cleanup: {e}");
            false
        }
    }
}

/// Whether `path` is a mount point (listed in /proc/self/mountinfo).
/// The mount points at or under `root` (this process's view).
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(root))
        .collect()
}

pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| m.replace("\\040", " ") == want)
            .unwrap_or(false)
    })
}

/// What the host's inotify limits must be at least. Every running machine's systemd,
/// journald and services hold inotify instances, all counted against root on the host (the
/// machines have no user namespace of their own): the kernel's default of 128 instances ran
/// out under the full test suite, and the next machine's systemd exited at once ("Failed to
/// create control group inotify object: Too many open files"), or a boot stalled.
pub const INOTIFY_LIMITS: [(&str, u64); 2] =
    [("max_user_instances", 8192), ("max_user_watches", 524_288)];

/// Raises the host's inotify limits to [`INOTIFY_LIMITS`]; never lowers them.
pub fn ensure_inotify_limits() {
    for (name, want) in INOTIFY_LIMITS {
        let path = format!("/proc/sys/fs/inotify/{name}");
        let have = std::fs::read_to_string(&path)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        if have.is_some_and(|h| h >= want) {
            continue;
        }
        match std::fs::write(&path, want.to_string()) {
            Ok(()) => tracing::info!("raised fs.inotify.{name} from {have:?} to {want} for the machines"),
            Err(e) => tracing::warn!(
                "fs.inotify.{name} is {have:?}, below the {want} that many machines need, and cannot be raised: {e}"
            ),
        }
    }
}

/// Writes a file atomically (temp + rename) creating parent dirs. No fsync: nothing here
/// must survive a host crash, and on a loaded host an fsync took seconds, blocking the
/// async task that wrote (and its runtime thread).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> SysResult<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(contents).map_err(io_err("writing", &tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err("renaming into", path))?;
    Ok(())
}
