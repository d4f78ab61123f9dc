//! A control group of its own for every machine.
//!
//! With no systemd on the host (so no cgroup manager), systemd-nspawn puts a machine in
//! `payload/` under its own cgroup: the root of each hierarchy, the same directory for every
//! machine. Their systemd instances then shared every unit's cgroup
//! (`payload/system.slice/nginx.service`...): one droplet stopping a service removed the
//! directory another droplet was starting the same service in, which failed that start with
//! `status=219/CGROUP` (seen several times under the full suite). Each machine's nspawn now
//! starts in `localocean/<machine>/` of the hierarchies systemd uses, as each droplet on
//! DigitalOcean is a machine of its own.

use std::path::{Path, PathBuf};

/// Where localocean's machines' cgroups live in each hierarchy.
const PARENT: &str = "localocean";

/// The hierarchies a machine's systemd uses: cgroup v2 alone, or (hybrid, as here) the
/// `name=systemd` v1 hierarchy and the unified one beside it.
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| root.join(h))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// Makes the machine's cgroup in every hierarchy; the `cgroup.procs` files its nspawn must
/// move itself into before it starts (see [`enter_then_exec`]).
pub fn prepare(machine: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut procs = Vec::new();
    for h in hierarchies() {
        let dir = h.join(PARENT).join(machine);
        std::fs::create_dir_all(&dir)?;
        procs.push(dir.join("cgroup.procs"));
    }
    Ok(procs)
}

/// A shell script for `sh -c SCRIPT sh ARGS...` that moves itself (so the program it becomes)
/// into each of `procs`, then executes `program` with ARGS: nspawn starts in the machine's
/// own cgroups, before it makes any of its own.
pub fn enter_then_exec(procs: &[PathBuf], program: &str) -> String {
    let mut script = String::new();
    for p in procs {
        script.push_str(&format!("echo $$ > '{}' || exit 125; ", p.display()));
    }
    script.push_str(&format!("exec {program} \"$@\""));
    script
}

/// Removes the machine's cgroups once nothing runs in them: every directory under them
/// (what the machine's systemd and nspawn made), deepest first. A process of a killed
/// machine may take a moment to leave; what still holds one after 5 s stays, and is said.
pub async fn remove(machine: &str) {
    if let Some(secs) = cpu_seconds(machine) {
        // What the machine cost, kernel time included (its processes only): a figure for
        // the test suite's CPU budget.
        tracing::info!(
            machine,
            cpu_seconds = format!("{secs:.1}"),
            "machine's CPU time"
        );
    }
    for h in hierarchies() {
        let dir = h.join(PARENT).join(machine);
        let mut tries = 0;
        while dir.exists() {
            match remove_tree(&dir) {
                Ok(()) => break,
                Err(e) if tries >= 50 => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "machine cgroup left behind");
                    break;
                }
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The CPU time the machine's processes used, from the cgroup v2 `cpu.stat` (its dead
/// descendants' time included); `None` where there is no cgroup v2 hierarchy.
fn cpu_seconds(machine: &str) -> Option<f64> {
    let stat = hierarchies()
        .into_iter()
        .map(|h| h.join(PARENT).join(machine).join("cpu.stat"))
        .find_map(|p| std::fs::read_to_string(p).ok())?;
    usage_seconds(&stat)
}

fn usage_seconds(cpu_stat: &str) -> Option<f64> {
    cpu_stat.lines().find_map(|l| {
        let usec: u64 = l.strip_prefix("usage_usec ")?.trim().parse().ok()?;
        Some(usec as f64 / 1e6)
    })
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_usage_is_read_in_seconds() {
        let stat = "usage_usec 12500000\nuser_usec 10000000\nsystem_usec 2500000\n";
        assert_eq!(usage_seconds(stat), Some(12.5));
        assert_eq!(usage_seconds("user_usec 1\n"), None);
    }

    #[test]
    fn the_script_enters_each_cgroup_then_becomes_the_program() {
        let procs = [
            PathBuf::from("/sys/fs/cgroup/systemd/localocean/m-1/cgroup.procs"),
            PathBuf::from("/sys/fs/cgroup/unified/localocean/m-1/cgroup.procs"),
        ];
        let s = enter_then_exec(&procs, "systemd-nspawn");
        assert_eq!(
            s,
            "echo $$ > '/sys/fs/cgroup/systemd/localocean/m-1/cgroup.procs' || exit 125; \
             echo $$ > '/sys/fs/cgroup/unified/localocean/m-1/cgroup.procs' || exit 125; \
             exec systemd-nspawn \"$@\""
        );
    }
}
