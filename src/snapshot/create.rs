//! Create: a consistent snapshot of the registry's volume. On the droplet, writes are refused
//! (503 + Retry-After), uploads in flight land, the file system is synced and frozen; then
//! DigitalOcean's snapshot is taken and awaited; then writes resume, whatever happened before.

use std::time::{Duration, Instant};

use tf_provider::value::Value;

use super::state::SnapshotState;
use crate::do_api::SnapshotCreateRequest;
use crate::remote::{status_text, Machine, RemoteError, Transport};
use crate::render::snapshot::{pause_script, resume_script};
use crate::resource::env::Env;
use crate::resource::error::{Error, Result};
use crate::resource::state::known;
use crate::secret::Secret;
use crate::storage::volume::{device_path, mount_path};

/// How long the droplet keeps writes paused if the provider never resumes them.
pub const WATCHDOG: Duration = Duration::from_secs(15 * 60);

/// What a create leaves: the snapshot (once DigitalOcean has it) and the first error.
pub struct Taken {
    pub snapshot: Option<crate::do_api::Snapshot>,
    pub quiesce: Option<String>,
    pub error: Option<Error>,
}

pub async fn take(env: &Env, st: &SnapshotState, deadline: Instant) -> Taken {
    let mut taken = Taken {
        snapshot: None,
        quiesce: None,
        error: None,
    };
    let volume_id = known(&st.volume_id).unwrap_or_default().to_owned();
    let volume = match env.client.get_volume(&volume_id).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            taken.error = Some(
                Error::MissingState("volume")
                    .context("finding the registry's volume", &volume_id)
                    .at(tf_provider::AttributePath::new("volume_id")),
            );
            return taken;
        }
        Err(e) => {
            taken.error = Some(e.into());
            return taken;
        }
    };
    let mount = mount_path(&volume.name);
    let machine = Machine::pinned(
        known(&st.droplet_address).unwrap_or_default(),
        Secret::new(known(&st.ssh_private_key).unwrap_or_default()),
        known(&st.host_public_key).unwrap_or_default(),
    );
    let t = match env.machines.connect(&machine, deadline).await {
        Ok(t) => t,
        Err(e) => {
            taken.error =
                Some(Error::from(e).context("reaching the registry's droplet", &machine.addr));
            return taken;
        }
    };
    let paused = pause(t.as_ref(), &mount, &device_path(&volume.name)).await;
    let result = match paused {
        Ok(q) => {
            taken.quiesce = Some(q);
            snapshot(env, &volume_id, st, deadline).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(s) => taken.snapshot = Some(s),
        Err(e) => taken.error = Some(e),
    }
    // Always, even after a failed pause: it may have refused writes before it failed.
    if let Err(e) = resume(t.as_ref(), &mount).await {
        let e = Error::from(e).context(
            "resuming writes (the droplet resumes them by itself within 15 minutes)",
            &volume.name,
        );
        taken.error = Some(match taken.error.take() {
            Some(first) => Error::WithCleanup {
                source: Box::new(first),
                cleanup: Box::new(e),
            },
            None => e,
        });
    }
    taken
}

async fn pause(t: &dyn Transport, mount: &str, device: &str) -> Result<String> {
    let script = pause_script(mount, device, WATCHDOG.as_secs())?;
    let out = t.exec(&script, b"").await?;
    if !out.success() {
        return Err(RemoteError::Command {
            what: format!("pausing writes for a snapshot on {}", t.describe()),
            status: status_text(out.status),
            stderr: out.stderr_tail(),
        }
        .into());
    }
    let how = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if how == "sync" {
        tracing::warn!(mount, "fsfreeze refused on the droplet: the snapshot is taken after sync, with writes refused");
    }
    Ok(how)
}

async fn resume(t: &dyn Transport, mount: &str) -> std::result::Result<(), RemoteError> {
    let script = resume_script(mount)?;
    let out = t.exec(&script, b"").await?;
    if !out.success() {
        return Err(RemoteError::Command {
            what: format!("resuming writes on {}", t.describe()),
            status: status_text(out.status),
            stderr: out.stderr_tail(),
        });
    }
    Ok(())
}

async fn snapshot(
    env: &Env,
    volume_id: &str,
    st: &SnapshotState,
    deadline: Instant,
) -> Result<crate::do_api::Snapshot> {
    let req = SnapshotCreateRequest {
        name: known(&st.name).unwrap_or_default().to_owned(),
        tags: Vec::new(),
    };
    let made = env.client.create_volume_snapshot(volume_id, &req).await?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    Ok(env.client.wait_for_snapshot(&made.id, remaining).await?)
}

/// The state after a create: what DigitalOcean says of the snapshot, how it was quiesced.
pub fn state_after(planned: &SnapshotState, taken: &Taken) -> Option<SnapshotState> {
    let s = taken.snapshot.as_ref()?;
    let mut st = planned.clone();
    st.take(s);
    st.quiesce = taken.quiesce.clone().map_or(Value::Null, Value::Value);
    Some(st)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use localocean::faults::FaultSpec;
    use localocean::testkit::NoSpaces;

    use super::*;
    use crate::do_api::VolumeCreateRequest;
    use crate::remote::{Connector, Output};
    use crate::resource::env::{Seams, Timings};
    use crate::testkit::api::{fast, Api};

    /// A droplet that runs nothing: it records each script and answers as told.
    struct Recorder {
        scripts: Mutex<Vec<String>>,
        pause_fails: bool,
    }

    #[async_trait]
    impl Transport for Recorder {
        async fn exec(&self, cmd: &str, _stdin: &[u8]) -> std::result::Result<Output, RemoteError> {
            self.scripts.lock().unwrap().push(cmd.to_owned());
            let pause = cmd.contains("fsfreeze -f");
            let fail = pause && self.pause_fails;
            Ok(Output {
                status: Some(if fail { 5 } else { 0 }),
                stdout: if pause && !fail {
                    b"fsfreeze\n".to_vec()
                } else {
                    Vec::new()
                },
                stderr: if fail {
                    b"uploads were still running".to_vec()
                } else {
                    Vec::new()
                },
            })
        }
        fn describe(&self) -> String {
            "droplet (test)".into()
        }
    }

    struct To(Arc<Recorder>);

    #[async_trait]
    impl Connector for To {
        async fn connect(
            &self,
            _machine: &Machine,
            _deadline: Instant,
        ) -> std::result::Result<Arc<dyn Transport>, RemoteError> {
            Ok(self.0.clone())
        }
    }

    async fn world(pause_fails: bool) -> (Api, Env, Arc<Recorder>, SnapshotState) {
        let api = Api::start(Arc::new(NoSpaces)).await;
        let rec = Arc::new(Recorder {
            scripts: Mutex::new(Vec::new()),
            pause_fails,
        });
        let seams = Seams {
            machines: Arc::new(To(rec.clone())),
            timings: Timings {
                api: fast(),
                ..Timings::default()
            },
            ..Seams::default()
        };
        let env = Env::new(Arc::new(api.settings(None)), &seams).unwrap();
        let v = api
            .client
            .create_volume(&VolumeCreateRequest {
                name: "r-registry-data".into(),
                size_gigabytes: 1,
                region: "nyc3".into(),
                filesystem_type: Some("ext4".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let st = SnapshotState {
            name: Value::Value("snap".into()),
            volume_id: Value::Value(v.id),
            droplet_address: Value::Value("198.18.0.2".into()),
            ssh_private_key: Value::Value("key".into()),
            host_public_key: Value::Value("ssh-ed25519 AAAA".into()),
            ..Default::default()
        };
        (api, env, rec, st)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(20)
    }

    #[tokio::test]
    async fn writes_pause_around_the_snapshot() {
        let (api, env, rec, st) = world(false).await;
        let taken = take(&env, &st, deadline()).await;
        assert!(
            taken.error.is_none(),
            "{:?}",
            taken.error.map(|e| e.to_string())
        );
        let s = taken.snapshot.as_ref().expect("a snapshot");
        assert_eq!(taken.quiesce.as_deref(), Some("fsfreeze"));
        assert_eq!(api.hv.count("snapshot_volume r-registry-data"), 1);
        let scripts = rec.scripts.lock().unwrap().clone();
        assert_eq!(scripts.len(), 2, "{scripts:?}");
        assert!(
            scripts[0].contains("MNT=/mnt/r-registry-data"),
            "{}",
            scripts[0]
        );
        assert!(scripts[0].contains("fsfreeze -f \"$MNT\""));
        assert!(scripts[1].contains("fsfreeze -u /mnt/r-registry-data"));
        let after = state_after(&st, &taken).unwrap();
        assert_eq!(after.id, Value::Value(s.id.clone()));
        assert_eq!(after.min_disk_size, Value::Value(1));
    }

    #[tokio::test]
    async fn writes_resume_when_the_snapshot_fails() {
        let (api, env, rec, st) = world(false).await;
        api.faults()
            .arm(FaultSpec::Http {
                method: Some("POST".into()),
                path_prefix: "/v2/volumes/".into(),
                // Every try of the POST: the client's retries and the create's recovery.
                count: 50,
                status: 503,
                retry_after: None,
            })
            .unwrap();
        let taken = take(&env, &st, deadline()).await;
        assert!(taken.snapshot.is_none());
        assert!(taken.error.is_some());
        assert!(state_after(&st, &taken).is_none(), "no snapshot, no state");
        let scripts = rec.scripts.lock().unwrap().clone();
        assert_eq!(scripts.len(), 2, "{scripts:?}");
        assert!(scripts[1].contains("fsfreeze -u"), "resume did not run");
    }

    #[tokio::test]
    async fn writes_resume_when_the_pause_fails() {
        let (api, env, rec, st) = world(true).await;
        let taken = take(&env, &st, deadline()).await;
        let e = taken.error.expect("an error").to_string();
        assert!(e.contains("uploads were still running"), "{e}");
        assert_eq!(
            api.hv.count("snapshot_volume"),
            0,
            "a snapshot without a pause"
        );
        let scripts = rec.scripts.lock().unwrap().clone();
        assert!(
            scripts.last().unwrap().contains("fsfreeze -u"),
            "{scripts:?}"
        );
    }
}
