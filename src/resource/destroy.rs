//! Destroy: stored images first. Unless `force_destroy`, writes stop (nginx answers 503) and
//! the volume or bucket is measured now; one that holds images, or cannot be measured now,
//! stops the destroy before anything is deleted, and writes resume. Then the certificate
//! (revoked when asked), records, reserved IP, load balancer, firewall, droplets, volume,
//! bucket and the registry's key.
//! What is already gone counts as deleted; a bucket the registry did not create is kept.

use std::sync::Arc;

use tf_provider::Diagnostics;

use super::certificate::acme_config;
use super::desired::secret_of;
use super::env::Env;
use super::error::{storage_attr, Error, Result};
use super::model::{deadline_after, Backend, Model, TlsSource};
use super::network::release_reserved_ip;
use super::state::{known, RegistryState};
use crate::acme;
use crate::diag;
use crate::remote::{commands, Transport};
use crate::storage::{self, spaces, volume};

/// Deletes everything `st` names. `Err` (with every failure already in `diags`) when
/// something was kept.
pub async fn destroy(
    env: &Env,
    diags: &mut Diagnostics,
    st: &RegistryState,
    m: &Model,
) -> Result<(), ()> {
    let client = &env.client;
    let bucket_adopted = m.storage.backend == Backend::Spaces && !bucket_created(st);
    // Stored images first: a volume or bucket that holds data (or cannot be measured) stops
    // the destroy before anything is deleted, so the registry keeps serving and stays in state.
    let mut volume_contents = None;
    if !m.storage.force_destroy && holds_measurable_storage(st, m) {
        let stopped = stop_writes(env, st).await;
        let verdict = guard(env, st, m, &stopped, bucket_adopted).await;
        match verdict {
            Ok(contents) => volume_contents = contents,
            Err(e) => {
                if let Ok(t) = &stopped {
                    // The registry stays: let it take pushes again.
                    if let Err(re) = commands::resume_writes(t.as_ref()).await {
                        diag::warning(
                            diags,
                            "Writes are still stopped on the registry",
                            &Error::from(re).during("the next apply lets them through again"),
                        );
                    }
                }
                diag::error(diags, "The registry still stores images", &e);
                return Err(());
            }
        }
    }
    let mut failed = false;
    if let (TlsSource::Acme, true, Some(account), Some(cert)) = (
        m.tls.source,
        m.tls.revoke_on_destroy,
        secret_of(&st.acme_account_key),
        known(&st.certificate_pem),
    ) {
        // A failed revocation must not keep the droplet alive: warn and go on.
        match acme::revoke(&acme_config(&env.settings), &account, cert).await {
            Ok(()) => tracing::info!("certificate revoked"),
            Err(e) => diag::warning(diags, "Revoking the certificate failed", &e.into()),
        }
    }
    if let Some(domain) = known(&st.domain) {
        for (what, rid) in [
            ("CAA record", &st.caa_record_id),
            ("ACME delegation record", &st.acme_delegation_record_id),
            ("record", &st.record_id),
            ("record", &st.aaaa_record_id),
        ] {
            if let Some(rid) = rid.as_ref_option() {
                if let Err(e) = client.delete_record(domain, *rid as u64).await {
                    diag::error(
                        diags,
                        format!("Deleting {what} ({rid}) of {domain}"),
                        &e.into(),
                    );
                    failed = true;
                }
            }
        }
    }
    if let Err(e) = super::monitoring::delete(env, st, m).await {
        diag::error(diags, "Deleting the uptime check", &e.into());
        failed = true;
    }
    if let Some(ip) = known(&st.reserved_ip_address) {
        // Unassigned first, then deleted: the address leaves the account with nothing on it.
        let deadline = deadline_after(m.timeouts.delete);
        if let Err(e) = release_reserved_ip(env, ip, deadline).await {
            diag::error(diags, format!("Deleting reserved IP ({ip})"), &e);
            failed = true;
        }
    }
    if let Some(lb) = known(&st.load_balancer_id) {
        // Before the droplets: it sends them nothing more.
        if let Err(e) = client.delete_load_balancer(lb).await {
            diag::error(diags, format!("Deleting load balancer ({lb})"), &e.into());
            failed = true;
        }
    }
    if let Some(fw) = known(&st.firewall_id) {
        if let Err(e) = client.delete_firewall(fw).await {
            diag::error(diags, format!("Deleting firewall ({fw})"), &e.into());
            failed = true;
        }
    }
    let droplets = super::fleet::members(st)
        .into_iter()
        .map(|(id, _)| id)
        .chain(retired_droplets(st));
    for id in droplets {
        if let Err(e) = client.delete_droplet(id).await {
            diag::error(diags, format!("Deleting droplet ({id})"), &e.into());
            failed = true;
        }
    }
    if let (Backend::Volume, Some(vid)) = (m.storage.backend, known(&st.volume_id)) {
        let contents = volume_contents.unwrap_or_else(|| {
            volume::VolumeContents::unmeasured(None, "not measured: force_destroy is set")
        });
        let kept = volume::destroy_volume(
            client,
            vid,
            &contents,
            m.storage.force_destroy,
            m.timeouts.delete,
        )
        .await;
        if let Err(e) = kept {
            let e = Error::from(e).at(storage_attr("force_destroy"));
            diag::error(diags, "The registry's volume was kept", &e);
            failed = true;
        }
    }
    if m.storage.backend == Backend::Spaces {
        if let Some(key) = known(&st.spaces_key_id) {
            if let Err(e) = spaces::delete_registry_key(client, key).await {
                diag::error(
                    diags,
                    format!("Deleting the registry's Spaces key ({key})"),
                    &e.into(),
                );
                failed = true;
            }
        }
        let bucket = m.storage.bucket.clone().unwrap_or_default();
        if bucket_adopted {
            diags.warning(
                "The bucket was kept",
                format!("Bucket {bucket} ({}) existed before this registry adopted it, so destroy leaves it and everything in it, even with `force_destroy`. Delete it by hand if it is no longer needed.", m.region),
                storage_attr("bucket"),
            );
        } else {
            let result = match env.bucket_client(m) {
                Ok(c) => spaces::destroy_bucket(&c, &bucket, &m.region, m.storage.force_destroy)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let e = Error::from(e).at(storage_attr("force_destroy"));
                diag::error(diags, "The registry's bucket was kept", &e);
                failed = true;
            }
        }
    }
    if failed {
        Err(())
    } else {
        Ok(())
    }
}

/// The droplets a replacement left behind (see `replace`).
pub fn retired_droplets(st: &RegistryState) -> Vec<u64> {
    st.retired_droplet_ids
        .as_ref_option()
        .map(|l| {
            l.iter()
                .filter_map(|id| id.as_ref_option().map(|i| *i as u64))
                .collect()
        })
        .unwrap_or_default()
}

/// True only when the provider is known to have made the bucket: a bucket of unknown origin
/// (a state from before this was recorded) is treated as adopted, never emptied.
pub fn bucket_created(st: &RegistryState) -> bool {
    st.bucket_created.as_ref_option().copied().unwrap_or(false)
}

/// A volume, or a bucket this registry made: what an unforced destroy must measure first.
fn holds_measurable_storage(st: &RegistryState, m: &Model) -> bool {
    match m.storage.backend {
        Backend::Volume => known(&st.volume_id).is_some(),
        Backend::Spaces => bucket_created(st),
        Backend::Droplet => false,
    }
}

/// Writes stopped on the droplet (nginx answers 503 to them), over the connection that then
/// measures the volume; `Err` when the droplet cannot be reached or told.
async fn stop_writes(env: &Env, st: &RegistryState) -> Result<Arc<dyn Transport>> {
    let t = env.connect_briefly(st).await?;
    commands::stop_writes(t.as_ref()).await?;
    tracing::info!("writes stopped on the registry before measuring its storage");
    Ok(t)
}

/// The destroy guard: `Err` when the volume or bucket holds images or cannot be measured
/// now; else what the volume holds (empty), if there is one.
async fn guard(
    env: &Env,
    st: &RegistryState,
    m: &Model,
    stopped: &Result<Arc<dyn Transport>>,
    bucket_adopted: bool,
) -> Result<Option<volume::VolumeContents>> {
    let kept = |e: storage::Error| Err(Error::from(e).during("nothing was destroyed"));
    if let (Backend::Volume, Some(vid)) = (m.storage.backend, known(&st.volume_id)) {
        let last = st.storage_used_bytes.as_ref_option().map(|b| *b as u64);
        let contents = match stopped {
            Ok(t) => match volume::volume_usage(t.as_ref(), &m.volume_name()).await {
                Ok(u) => volume::VolumeContents::from_usage(&u),
                Err(e) => volume::VolumeContents::unmeasured(last, e),
            },
            Err(e) => volume::VolumeContents::unmeasured(
                last,
                format!("writes could not be stopped on the droplet to measure it: {e}"),
            ),
        };
        if let Some(detail) = contents.holds() {
            return kept(storage::Error::HoldsData {
                kind: "volume",
                name: m.volume_name(),
                id: vid.to_owned(),
                detail,
            });
        }
        return Ok(Some(contents));
    }
    if m.storage.backend == Backend::Spaces && !bucket_adopted {
        // Writes that could not be stopped (the droplet unreachable) cannot lose anything
        // here: Spaces refuses to delete a bucket that is not empty.
        let bucket = m.storage.bucket.clone().unwrap_or_default();
        let holds = match env.bucket_client(m) {
            Ok(s3) => {
                super::create::drop_own_marker(&s3, &bucket, m).await;
                spaces::bucket_holds(&s3, &bucket).await
            }
            Err(e) => Err(e),
        };
        match holds {
            Ok(None) => {}
            Ok(Some(detail)) => {
                return kept(storage::Error::HoldsData {
                    kind: "bucket",
                    name: bucket.clone(),
                    id: m.region.clone(),
                    detail,
                })
            }
            Err(e) => {
                return kept(storage::Error::Unmeasured {
                    kind: "bucket",
                    name: bucket.clone(),
                    id: m.region.clone(),
                    source: Box::new(e),
                })
            }
        }
    }
    Ok(None)
}
