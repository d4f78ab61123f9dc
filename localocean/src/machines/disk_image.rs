//! Droplet snapshots as the machines keep them: a copy of a machine's overlay upper dir (what
//! its disk holds beyond the image it was made from) beside the key of that image. A machine
//! made from a snapshot mounts the copy as a lower layer above that image's own layers, so a
//! snapshot of a droplet made from a snapshot works too. Whiteouts and overlay attributes are
//! copied as they are (`cp -a`): a lower layer honours them as the upper did.
//!
//! DigitalOcean's droplets keep running when the snapshot they were made from is deleted: a
//! deleted snapshot that machines still use is only marked, and goes with the last of them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::sys::{self, io_err, SysError, SysResult};
use crate::image;
use crate::instance::StateDir;

fn images_dir(state: &StateDir) -> PathBuf {
    state.root.join("images")
}

fn dir(state: &StateDir, id: u64) -> PathBuf {
    images_dir(state).join(id.to_string())
}

/// The image key a machine records: a base image's slug, or a snapshot's id.
fn snapshot_id(key: &str) -> Option<u64> {
    key.parse().ok()
}

/// The lower layers of a machine made from `key`, topmost first: each snapshot's copy down
/// to the base image's root file system (built when missing).
pub async fn layers(state: &StateDir, key: &str) -> SysResult<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut key = key.to_string();
    while let Some(id) = snapshot_id(&key) {
        let d = dir(state, id);
        let root = d.join("root");
        if !root.is_dir() || out.len() > 64 {
            return Err(SysError::Other(format!(
                "image ({id}) has no copy under {}",
                d.display()
            )));
        }
        out.push(root);
        let base = d.join("base");
        key = std::fs::read_to_string(&base)
            .map_err(io_err("reading", &base))?
            .trim()
            .to_string();
    }
    out.push(image::ensure_image(&key).await?);
    Ok(out)
}

/// The snapshots a machine made from `key` stands on.
fn chain(state: &StateDir, key: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut key = key.to_string();
    while let Some(id) = snapshot_id(&key) {
        if out.contains(&id) {
            break;
        }
        out.push(id);
        match std::fs::read_to_string(dir(state, id).join("base")) {
            Ok(k) => key = k.trim().to_string(),
            Err(_) => break,
        }
    }
    out
}

/// Copies `upper` (a machine made from `base`) as image `id`; returns the bytes the copy
/// holds. Files written while it copies may or may not be in it, as with a live snapshot.
pub async fn take(state: &StateDir, upper: &Path, base: &str, id: u64) -> SysResult<u64> {
    let all = images_dir(state);
    std::fs::create_dir_all(&all).map_err(io_err("creating", &all))?;
    let tmp = all.join(format!(".{id}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err("removing", &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    let copied = async {
        let src = upper.to_string_lossy().into_owned();
        let dst = tmp.join("root").to_string_lossy().into_owned();
        sys::run("cp", &["-a", src.as_str(), dst.as_str()]).await?;
        let base_file = tmp.join("base");
        std::fs::write(&base_file, base).map_err(io_err("writing", &base_file))?;
        let out = sys::run("du", &["-sb", dst.as_str()]).await?;
        Ok::<u64, SysError>(
            out.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        )
    }
    .await;
    let bytes = match copied {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let d = dir(state, id);
    std::fs::rename(&tmp, &d).map_err(io_err("renaming into", &d))?;
    Ok(bytes)
}

/// Removes image `id`, or marks it for removal while a machine made from `in_use` keys
/// stands on it. One already gone is removed.
pub fn delete(state: &StateDir, id: u64, in_use: &[String]) -> SysResult<()> {
    let d = dir(state, id);
    if !d.exists() {
        return Ok(());
    }
    if used(state, in_use).contains(&id) {
        let mark = d.join("deleted");
        return std::fs::write(&mark, b"").map_err(io_err("writing", &mark));
    }
    std::fs::remove_dir_all(&d).map_err(io_err("removing", &d))
}

/// Removes the images marked deleted that no machine made from `in_use` keys needs now.
pub fn sweep(state: &StateDir, in_use: &[String]) {
    let Ok(entries) = std::fs::read_dir(images_dir(state)) else {
        return;
    };
    let used = used(state, in_use);
    for e in entries.flatten() {
        let Some(id) = e.file_name().to_str().and_then(snapshot_id) else {
            continue;
        };
        if e.path().join("deleted").exists() && !used.contains(&id) {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(image = id, error = %err, "removing a deleted image");
            }
        }
    }
}

fn used(state: &StateDir, in_use: &[String]) -> HashSet<u64> {
    in_use.iter().flat_map(|k| chain(state, k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_snapshot_of_a_snapshot_stacks_and_deletion_waits_for_its_last_user() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let upper = tmp.path().join("upper");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/one"), "1").unwrap();
        let bytes = take(&state, &upper, "debian-12-x64", 7).await.unwrap();
        assert!(bytes > 0);
        assert_eq!(
            std::fs::read_to_string(dir(&state, 7).join("root/etc/one")).unwrap(),
            "1"
        );
        // A droplet made from 7, then snapshotted as 9.
        take(&state, &upper, "7", 9).await.unwrap();
        assert_eq!(chain(&state, "9"), [9, 7]);
        assert_eq!(chain(&state, "debian-12-x64"), Vec::<u64>::new());

        // 7 is under 9, which a machine uses: only marked.
        delete(&state, 7, &["9".to_string()]).unwrap();
        assert!(dir(&state, 7).join("deleted").exists());
        sweep(&state, &["9".to_string()]);
        assert!(dir(&state, 7).exists());
        // That machine gone, the sweep removes it; 9 was never deleted and stays.
        sweep(&state, &[]);
        assert!(!dir(&state, 7).exists());
        assert!(dir(&state, 9).exists());
        delete(&state, 9, &[]).unwrap();
        assert!(!dir(&state, 9).exists());
        delete(&state, 9, &[]).unwrap();
    }
}
