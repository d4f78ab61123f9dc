//! Create: keys, storage, certificate and droplet, each id in state as soon as it exists, so a
//! create that fails halfway can always be destroyed. A DNS-01 order runs while the droplet boots.

use std::time::Instant;

use tf_provider::value::Value;

use super::certificate::{self, store_issued};
use super::desired::s;
use super::droplet::{self, random_hex};
use super::env::Env;
use super::error::{Error, Result, ResultExt};
use super::model::{Backend, ChallengeKind, Model, TlsSource};
use super::network::{ensure_record, ensure_reserved_ip};
use super::state::{known, RegistryState};
use super::users;
use crate::remote;
use crate::storage::{spaces, volume};
use crate::tls;

/// Fills `st` (the plan) by making everything; on error `st` holds every id made so far.
pub async fn create(env: &Env, st: &mut RegistryState, m: &Model, deadline: Instant) -> Result<()> {
    // Hashing new passwords takes seconds for many users: it runs while the droplet boots and
    // installs its packages, and ends before the first converge, the first step that needs
    // the hashes.
    let hashing = users::start(st, None);
    let mgmt = remote::generate_ed25519("terraform-provider-docker")?;
    st.management_private_key = s(mgmt.private_openssh.expose().to_owned());
    st.management_public_key = s(mgmt.public_openssh.clone());
    if !st.http_secret.is_value() {
        // Not given: generated once, kept from now on.
        st.http_secret = s(random_hex(32));
    }
    st.aaaa_record_id = Value::Null;
    st.ipv6_address = Value::Null;
    st.acme_account_key = Value::Null;
    st.caa_record_id = Value::Null;
    st.retired_droplet_ids = Value::Value(Vec::new());
    st.load_balancer_id = Value::Null;
    st.load_balancer_ip = Value::Null;
    // A create killed halfway before this one left parts no state knows: gone first.
    droplet::sweep_interrupted(env, m, &[], true).await?;
    sweep_storage(env, m).await?;
    certificate::init_renewal_state(env, st);
    let marker = provision_storage(env, st, m).await?;
    keep_deleted(env, m, None).await?;
    let started = Instant::now();
    let timeline = |step: &str| {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "create timeline: {step}"
        )
    };
    if m.tls.source == TlsSource::Acme {
        certificate::ensure_caa(env, st, m).await?;
    }
    if m.tls.source == TlsSource::Acme && m.tls.challenge == ChallengeKind::Dns01 {
        // DNS-01 needs no droplet: the order runs while the droplet boots.
        let challenge = certificate::dns01(env, m).await?;
        let mut cert_st = st.clone();
        let order = async {
            let r = certificate::order(&env.settings, &mut cert_st, m, challenge).await;
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                ok = r.is_ok(),
                "create timeline: certificate ready"
            );
            r
        };
        let boot = async {
            droplet::boot(env, st, m, true, deadline).await?;
            timeline("droplet active");
            env.connect(st, deadline).await?;
            timeline("droplet SSH-ready");
            install_packages(env, st, m, deadline).await?;
            timeline("packages installed");
            Ok(())
        };
        let (cert, booted): (Result<()>, Result<()>) = tokio::join!(order, boot);
        booted?;
        cert?;
        mint_registry_key(env, st, m).await?;
        st.acme_account_key = cert_st.acme_account_key;
        st.certificate_pem = cert_st.certificate_pem;
        st.tls_private_key_pem = cert_st.tls_private_key_pem;
        st.certificate_not_after = cert_st.certificate_not_after;
        st.ca_certificate_pem = Value::Null;
        st.ca_private_key_pem = Value::Null;
        reserve_address(env, st, m, deadline).await?;
        ensure_record(&env.client, st).await?;
        hashing.finish(st).await?;
        timeline("users hashed");
        certificate::prepare_renewal(env, st, m).await?;
        droplet::converge_and_verify(env, st, m, deadline).await?;
        timeline("registry verified");
        droplet::done_creating(env, st, m).await;
        more_droplets(env, st, m, deadline).await?;
        storage_created(env, st, m, marker.as_ref()).await;
        return Ok(());
    }
    droplet::boot(env, st, m, true, deadline).await?;
    mint_registry_key(env, st, m).await?;
    reserve_address(env, st, m, deadline).await?;
    ensure_record(&env.client, st).await?;
    install_packages(env, st, m, deadline).await?;
    hashing.finish(st).await?;
    if m.tls.source == TlsSource::Acme {
        // HTTP-01: nginx must answer on port 80 first, and it needs some certificate to
        // start on 443: a throwaway self-signed one, replaced right after.
        store_issued(st, tls::self_signed(&m.fqdn, &[], None)?);
        st.ca_certificate_pem = Value::Null;
        st.ca_private_key_pem = Value::Null;
        droplet::converge_and_verify(env, st, m, deadline).await?;
        certificate::order_http01(env, st, m, deadline).await?;
    } else {
        certificate::obtain(env, st, m, deadline).await?;
    }
    certificate::prepare_renewal(env, st, m).await?;
    droplet::converge_and_verify(env, st, m, deadline).await?;
    droplet::done_creating(env, st, m).await;
    more_droplets(env, st, m, deadline).await?;
    storage_created(env, st, m, marker.as_ref()).await;
    // Monitors a registry that serves: made last.
    super::monitoring::ensure(env, &RegistryState::default(), st, m).await
}

/// With `replicas`: the droplets after the first, each verified before it joins the load
/// balancer; else the lists name the one droplet.
async fn more_droplets(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    if m.replicas > 1 {
        super::fleet::grow(env, st, m, deadline).await
    } else {
        super::fleet::settle_single(st);
        Ok(())
    }
}

/// With `reserved_ip`: the reserved IP made and assigned to the droplet (active by now),
/// before the record is made, so the record points at it from the start. With `replicas`:
/// the load balancer, with the first droplet in it, for the same reason.
async fn reserve_address(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    if m.replicas > 1 {
        st.reserved_ip_address = Value::Null;
        let droplet = st
            .droplet_id
            .as_ref_option()
            .map(|i| *i as u64)
            .ok_or(Error::MissingState("droplet id"))?;
        return super::fleet::ensure_balancer(env, st, m, &[droplet], deadline).await;
    }
    if !m.reserved_ip {
        st.reserved_ip_address = Value::Null;
        return Ok(());
    }
    let droplet = st
        .droplet_id
        .as_ref_option()
        .map(|i| *i as u64)
        .ok_or(Error::MissingState("droplet id"))?;
    ensure_reserved_ip(env, st, m, droplet, deadline).await
}

/// The droplet's packages, on their own: installed while the passwords are still being
/// hashed (the converge needs the hashes; the packages need none).
async fn install_packages(
    env: &Env,
    st: &RegistryState,
    m: &Model,
    deadline: Instant,
) -> Result<()> {
    let droplet = st.droplet_id.as_ref_option().copied().unwrap_or_default();
    let installed = async {
        let t = env.connect(st, deadline).await?;
        Ok::<_, Error>(remote::install_packages(t.as_ref()).await?)
    }
    .await
    .map_err(|e| Error::Context {
        // The converge's first part, named as the converge is.
        what: format!("converging droplet {} ({droplet})", m.name),
        source: Box::new(e),
    })?;
    tracing::info!(droplet, ?installed, "packages installed");
    Ok(())
}

/// The registry's own Spaces key, made once its droplet exists: a key left by a create killed
/// before that is found with the droplet (see `droplet::sweep_interrupted`).
async fn mint_registry_key(env: &Env, st: &mut RegistryState, m: &Model) -> Result<()> {
    if m.storage.backend != Backend::Spaces {
        return Ok(());
    }
    let bucket = m.storage.bucket.clone().unwrap_or_default();
    let key = spaces::mint_registry_key(&env.client, &m.spaces_key_name(), &bucket)
        .await
        .context("minting the registry's Spaces key for bucket", &bucket)?;
    st.spaces_key_id = s(key.access_key);
    st.spaces_secret_key = s(key.secret_key.expose().to_owned());
    Ok(())
}

/// What the bucket's [`spaces::CREATING_MARKER`] says: which registry's create made it.
pub(super) fn marker_text(m: &Model) -> String {
    format!(
        "Made by terraform-provider-docker for the registry {} ({}), whose create has not finished.\n",
        m.fqdn,
        droplet::creating_tag(&m.fqdn)
    )
}

/// Storage an interrupted create of this registry left: volumes still tagged
/// [`droplet::creating_tag`] (no state knows them). The volume this create would make is
/// taken back (`ensure_volume` finds it by name); any other is deleted. A bucket is taken
/// back by its marker in [`provision_storage`].
async fn sweep_storage(env: &Env, m: &Model) -> Result<()> {
    let tag = droplet::creating_tag(&m.fqdn);
    for v in env.client.list_volumes_in(&m.region).await? {
        if !v.tags.contains(&tag) {
            continue;
        }
        if m.storage.backend == Backend::Volume && v.name == m.volume_name() {
            tracing::warn!(volume = %v.id, name = %v.name, "taking back the volume an interrupted create left");
            continue;
        }
        tracing::warn!(volume = %v.id, name = %v.name, "deleting a volume an interrupted create left");
        // Nothing was ever stored there for anyone: the create that made it never returned.
        let unused = volume::VolumeContents::unmeasured(None, "left by an interrupted create");
        volume::destroy_volume(&env.client, &v.id, &unused, true, m.timeouts.delete)
            .await
            .context("deleting the volume an interrupted create left", &v.name)?;
    }
    Ok(())
}

/// The create finished: its storage stops saying "being created" (the volume's tag, the
/// bucket's marker), so that no later create of the same fqdn takes it for a leftover. A
/// failure only warns: the state holds the storage either way.
async fn storage_created(
    env: &Env,
    st: &RegistryState,
    m: &Model,
    marker: Option<&spaces::Marker>,
) {
    let tag = droplet::creating_tag(&m.fqdn);
    if let (Backend::Volume, Some(vid)) = (m.storage.backend, known(&st.volume_id)) {
        if let Err(e) = env.client.untag_volume(&tag, vid).await {
            tracing::warn!(volume = vid, error = %e, "could not remove the creating tag");
        }
    }
    if let Some(marker) = marker {
        let bucket = m.storage.bucket.clone().unwrap_or_default();
        let deleted = match env.bucket_client(m) {
            Ok(s3) => s3.delete_marker(&bucket, marker).await,
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            tracing::warn!(bucket, error = %e, "could not delete the creating marker");
        }
    }
}

/// Deletes this registry's marker from `bucket` if a create left it there (its delete at the
/// end of the create failed): the registry's own bookkeeping, not stored images, so that
/// an unforced destroy does not count it as data. A failure leaves it, counted (the safe side).
pub(super) async fn drop_own_marker(s3: &spaces::S3, bucket: &str, m: &Model) {
    let dropped = match s3.read_marker(bucket).await {
        Ok(Some(marker)) if marker.text == marker_text(m) => {
            s3.delete_marker(bucket, &marker).await.map(|()| true)
        }
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    };
    match dropped {
        Ok(true) => tracing::info!(bucket, "deleted the marker a create left"),
        Ok(false) => {}
        Err(e) => tracing::warn!(bucket, error = %e, "could not look for the creating marker"),
    }
}

/// The volume or the bucket, before the droplet: each id goes into state as soon as it exists.
/// A bucket this create made (or takes back) carries its marker until the create finishes.
/// A volume from a snapshot: the snapshot exists and fits in `storage.size_gib`.
async fn check_snapshot_fits(env: &Env, id: &str, size_gib: u64) -> Result<()> {
    let at = super::error::storage_attr;
    let snap = env
        .client
        .get_snapshot(id)
        .await?
        .ok_or_else(|| Error::NoSnapshot(id.to_owned()).at(at("volume_snapshot_id")))?;
    if snap.min_disk_size > size_gib {
        return Err(Error::SnapshotTooLarge {
            id: id.to_owned(),
            min: snap.min_disk_size,
            size: size_gib,
        }
        .at(at("size_gib")));
    }
    Ok(())
}

/// `storage.keep_deleted_days` onto the bucket: set when it changed (or, after a read found
/// it changed on the bucket, set again); versioning suspended when it was set (`was`) and is
/// not any more.
pub(super) async fn keep_deleted(env: &Env, m: &Model, was: Option<u32>) -> Result<()> {
    let (Backend::Spaces, Some(bucket)) = (m.storage.backend, &m.storage.bucket) else {
        return Ok(());
    };
    let want = m.storage.keep_deleted_days;
    if want == was {
        return Ok(());
    }
    let s3 = env.bucket_client(m)?;
    spaces::set_keep_deleted_days(&s3, bucket, want)
        .await
        .map_err(|e| {
            Error::from(e)
                .context("keeping deleted objects in bucket", bucket)
                .at(super::error::storage_attr("keep_deleted_days"))
        })?;
    tracing::info!(bucket, days = ?want, "bucket versioning set for keep_deleted_days");
    Ok(())
}

async fn provision_storage(
    env: &Env,
    st: &mut RegistryState,
    m: &Model,
) -> Result<Option<spaces::Marker>> {
    st.volume_id = Value::Null;
    st.spaces_endpoint = Value::Null;
    st.spaces_key_id = Value::Null;
    st.spaces_secret_key = Value::Null;
    st.bucket_created = Value::Null;
    match m.storage.backend {
        Backend::Volume => {
            let size = m.storage.size_gib.unwrap_or(10).max(1);
            let name = m.volume_name();
            // Tagged as the droplet is, "being created" included: a create killed before
            // the droplet exists leaves a volume that the next create still finds.
            let mut tags = m.tags.clone();
            tags.push(droplet::creating_tag(&m.fqdn));
            let from = m.storage.volume_snapshot_id.as_deref();
            if let Some(id) = from {
                check_snapshot_fits(env, id, size).await?;
            }
            let v = volume::ensure_volume(&env.client, &name, &m.region, size, &tags, from)
                .await
                .context("creating volume", &name)?;
            st.volume_id = s(v.id);
            Ok(None)
        }
        Backend::Spaces => {
            let bucket = m.storage.bucket.clone().unwrap_or_default();
            let s3 = env.bucket_client(m)?;
            let created = s3
                .ensure_bucket(&bucket)
                .await
                .context("creating bucket", &bucket)?;
            st.spaces_endpoint = s(s3.endpoint().as_str().to_owned());
            let text = marker_text(m);
            if created.0 {
                // Recorded at once: destroy empties and deletes only a bucket this registry
                // made. Marked right after: killed before the marker, the next create would
                // take the bucket for someone else's and adopt it (kept, never emptied).
                st.bucket_created = Value::Value(true);
                let marker = s3
                    .put_marker(&bucket, &text)
                    .await
                    .context("marking the new bucket", &bucket)?;
                return Ok(Some(marker));
            }
            let found = s3
                .read_marker(&bucket)
                .await
                .context("reading the marker of bucket", &bucket)?;
            match found {
                Some(marker) if marker.text == text => {
                    tracing::warn!(bucket, "taking back the bucket an interrupted create left");
                    st.bucket_created = Value::Value(true);
                    Ok(Some(marker))
                }
                _ => {
                    st.bucket_created = Value::Value(false);
                    Ok(None)
                }
            }
        }
        Backend::Droplet => Ok(None),
    }
}

/// Plan: a bucket that exists already is adopted, not made; the plan says so, and what that
/// means for destroy. A bucket that cannot be looked at now is left to apply to report.
pub async fn adoption_warning(diags: &mut tf_provider::Diagnostics, env: &Env, m: &Model) {
    let (Backend::Spaces, Some(bucket)) = (m.storage.backend, &m.storage.bucket) else {
        return;
    };
    let Ok(s3) = env.bucket_client(m) else {
        return;
    };
    if let Ok(true) = s3.head_bucket(bucket).await {
        if let Ok(Some(marker)) = s3.read_marker(bucket).await {
            if marker.text == marker_text(m) {
                diags.warning(
                    "The bucket an interrupted create left will be taken back",
                    format!("Bucket {bucket} ({}) was made by an earlier create of this registry that did not finish (its object `{}` says so): this create takes it back as its own, so destroy will empty it with `force_destroy` as any bucket this registry made.", m.region, spaces::CREATING_MARKER),
                    super::error::storage_attr("bucket"),
                );
                return;
            }
        }
        diags.warning(
            "The bucket exists and will be adopted",
            format!("Bucket {bucket} ({}) already exists and these credentials reach it: the registry will store its images in it alongside what it holds. Because this registry does not create it, destroy will never empty nor delete it, even with `force_destroy`.", m.region),
            super::error::storage_attr("bucket"),
        );
    }
}
