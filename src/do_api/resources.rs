//! One method per DigitalOcean endpoint the resource calls; each names its object in errors
//! ("deleting droplet (1234): ...") and picks the 404 meaning of its operation.

use serde_json::json;

use super::error::ResultExt;
use super::types::*;
use super::{Client, Error};

/// How long a droplet action refused for a pending event is asked for again.
const BUSY_FOR: std::time::Duration = std::time::Duration::from_secs(120);
/// How often it is asked again meanwhile.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

impl Client {
    // ---- account, regions, sizes, images -------------------------------------------------

    /// GET /v2/account: also the cheapest check that the token works.
    pub async fn account(&self) -> Result<Account, Error> {
        self.get(self.url(&["v2", "account"], &[]), "account").await
    }

    pub async fn list_regions(&self) -> Result<Vec<Region>, Error> {
        self.list_all(self.url(&["v2", "regions"], &[]), "regions")
            .await
    }

    pub async fn list_sizes(&self) -> Result<Vec<Size>, Error> {
        self.list_all(self.url(&["v2", "sizes"], &[]), "sizes")
            .await
    }

    /// GET /v2/images/{slug}; `None` when no such image exists.
    pub async fn get_image(&self, slug: &str) -> Result<Option<Image>, Error> {
        self.get_opt(self.url(&["v2", "images", slug], &[]), "image")
            .await
            .context("reading image", slug)
    }

    // ---- ssh keys -------------------------------------------------------------------------

    pub async fn create_ssh_key(&self, req: &SshKeyCreateRequest) -> Result<SshKey, Error> {
        self.post(self.url(&["v2", "account", "keys"], &[]), req, "ssh_key")
            .await
            .context("creating ssh key", &req.name)
    }

    /// `None` when the account holds no key with that fingerprint.
    pub async fn get_ssh_key(&self, fingerprint: &str) -> Result<Option<SshKey>, Error> {
        self.get_opt(
            self.url(&["v2", "account", "keys", fingerprint], &[]),
            "ssh_key",
        )
        .await
        .context("reading ssh key", fingerprint)
    }

    /// By id or fingerprint; a key already gone is success.
    pub async fn delete_ssh_key(&self, id_or_fingerprint: &str) -> Result<(), Error> {
        self.delete(
            self.url(&["v2", "account", "keys", id_or_fingerprint], &[]),
            None,
        )
        .await
        .context("deleting ssh key", id_or_fingerprint)
    }

    // ---- droplets -------------------------------------------------------------------------

    /// Creates a droplet that can be found again by `unique_tag` (added to its tags). If the
    /// POST fails in a way that may have created it anyway (a 5xx, a reset), the droplets
    /// holding that tag are listed: one with the same name is the result, and the POST is
    /// repeated only when there is none, so a flaky API never leaves two droplets.
    pub async fn create_droplet(
        &self,
        req: &DropletCreateRequest,
        unique_tag: &str,
    ) -> Result<Droplet, Error> {
        Ok(self.create_droplet_watched(req, unique_tag).await?.droplet)
    }

    /// As [`Client::create_droplet`], with the id of the droplet's `create` action: the
    /// answer links it (`links.actions`); a droplet found after an ambiguous failure has no
    /// answer, so its actions are listed. The action is what says a boot errored: the droplet
    /// itself stays `new`.
    pub async fn create_droplet_watched(
        &self,
        req: &DropletCreateRequest,
        unique_tag: &str,
    ) -> Result<NewDroplet, Error> {
        let mut req = req.clone();
        if !req.tags.iter().any(|t| t == unique_tag) {
            req.tags.push(unique_tag.to_owned());
        }
        let name = req.name.clone();
        let find = || {
            let name = name.clone();
            async move {
                let found = self.list_droplets_by_tag(unique_tag).await?;
                Ok(found
                    .into_iter()
                    .find(|d| d.name == name)
                    .map(|droplet| DropletCreated {
                        droplet,
                        links: CreateLinks::default(),
                    }))
            }
        };
        let created: DropletCreated = self
            .create_with_recovery(self.url(&["v2", "droplets"], &[]), &req, "", find)
            .await
            .context("creating droplet", &req.name)?;
        let linked = created
            .links
            .actions
            .iter()
            .find(|a| a.rel == "create")
            .map(|a| a.id);
        let create_action = match linked {
            Some(id) => Some(id),
            None => match self.list_droplet_actions(created.droplet.id).await {
                Ok(actions) => actions
                    .into_iter()
                    .find(|a| a.kind == "create")
                    .map(|a| a.id),
                Err(e) => {
                    // Only the early failure is lost: the wait still ends at its timeout.
                    tracing::warn!(droplet = created.droplet.id, error = %e, "cannot find the droplet's create action");
                    None
                }
            },
        };
        Ok(NewDroplet {
            droplet: created.droplet,
            create_action,
        })
    }

    /// GET /v2/droplets/{id}/actions, newest first as DigitalOcean lists them.
    pub async fn list_droplet_actions(&self, droplet_id: u64) -> Result<Vec<Action>, Error> {
        self.list_all(
            self.url(&["v2", "droplets", &droplet_id.to_string(), "actions"], &[]),
            "actions",
        )
        .await
        .context("listing actions of droplet", droplet_id)
    }

    /// The read path: `None` when the droplet is gone.
    pub async fn get_droplet(&self, id: u64) -> Result<Option<Droplet>, Error> {
        self.get_opt(
            self.url(&["v2", "droplets", &id.to_string()], &[]),
            "droplet",
        )
        .await
        .context("reading droplet", id)
    }

    /// A droplet already gone is success.
    pub async fn delete_droplet(&self, id: u64) -> Result<(), Error> {
        self.delete(self.url(&["v2", "droplets", &id.to_string()], &[]), None)
            .await
            .context("deleting droplet", id)
    }

    /// Every droplet of the account (import finds the one an address belongs to).
    pub async fn list_droplets(&self) -> Result<Vec<Droplet>, Error> {
        self.list_all(self.url(&["v2", "droplets"], &[]), "droplets")
            .await
            .context("listing droplets", "all")
    }

    pub async fn list_droplets_by_tag(&self, tag: &str) -> Result<Vec<Droplet>, Error> {
        self.list_all(
            self.url(&["v2", "droplets"], &[("tag_name", tag)]),
            "droplets",
        )
        .await
        .context("listing droplets tagged", tag)
    }

    /// Starts an action; wait for it with [`Client::wait_for_action`]. Not retried after a
    /// 5xx: a repeated resize or power cycle is not harmless, the caller re-plans instead.
    /// Starts an action on a droplet. While DigitalOcean refuses it because the droplet is
    /// busy with another event (422 "pending event": a backup in its window, an action just
    /// started), it is asked again every [`BUSY_RETRY`] for up to [`BUSY_FOR`].
    pub async fn droplet_action(
        &self,
        droplet_id: u64,
        action: &DropletAction,
    ) -> Result<Action, Error> {
        let deadline = std::time::Instant::now() + BUSY_FOR;
        loop {
            let r = self
                .post(
                    self.url(&["v2", "droplets", &droplet_id.to_string(), "actions"], &[]),
                    action,
                    "action",
                )
                .await;
            match r {
                Err(e)
                    if e.status() == Some(422)
                        && e.to_string().to_ascii_lowercase().contains("pending event")
                        && std::time::Instant::now() + BUSY_RETRY < deadline =>
                {
                    tracing::info!(
                        droplet = droplet_id,
                        action = action.name(),
                        "droplet busy with a pending event; asking again"
                    );
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                r => {
                    return r.context(
                        &format!("starting {} on droplet", action.name()),
                        droplet_id,
                    )
                }
            }
        }
    }

    pub async fn power_off(&self, droplet_id: u64) -> Result<Action, Error> {
        self.droplet_action(droplet_id, &DropletAction::PowerOff)
            .await
    }

    pub async fn power_on(&self, droplet_id: u64) -> Result<Action, Error> {
        self.droplet_action(droplet_id, &DropletAction::PowerOn)
            .await
    }

    pub async fn shutdown(&self, droplet_id: u64) -> Result<Action, Error> {
        self.droplet_action(droplet_id, &DropletAction::Shutdown)
            .await
    }

    pub async fn reboot(&self, droplet_id: u64) -> Result<Action, Error> {
        self.droplet_action(droplet_id, &DropletAction::Reboot)
            .await
    }

    /// Resizes CPU and RAM only (`disk: false`), so the droplet can be sized down again.
    pub async fn resize(&self, droplet_id: u64, size: &str) -> Result<Action, Error> {
        self.droplet_action(
            droplet_id,
            &DropletAction::Resize {
                size: size.to_owned(),
                disk: false,
            },
        )
        .await
    }

    pub async fn rename(&self, droplet_id: u64, name: &str) -> Result<Action, Error> {
        self.droplet_action(
            droplet_id,
            &DropletAction::Rename {
                name: name.to_owned(),
            },
        )
        .await
    }

    /// GET /v2/droplets/{id}/backups/policy: whether backups are on, and their policy.
    pub async fn get_backup_policy(&self, droplet_id: u64) -> Result<BackupPolicyRecord, Error> {
        self.get(
            self.url(
                &[
                    "v2",
                    "droplets",
                    &droplet_id.to_string(),
                    "backups",
                    "policy",
                ],
                &[],
            ),
            "policy",
        )
        .await
        .context("reading the backup policy of droplet", droplet_id)
    }

    /// GET /v2/actions/{id}, for any resource's action.
    pub async fn get_action(&self, action_id: u64) -> Result<Action, Error> {
        self.get(
            self.url(&["v2", "actions", &action_id.to_string()], &[]),
            "action",
        )
        .await
        .context("reading action", action_id)
    }

    // ---- domains and records --------------------------------------------------------------

    /// `None` when the account does not hold the domain (records cannot be made there).
    pub async fn get_domain(&self, name: &str) -> Result<Option<Domain>, Error> {
        self.get_opt(self.url(&["v2", "domains", name], &[]), "domain")
            .await
            .context("reading domain", name)
    }

    /// Records of `domain`, filtered server-side. DigitalOcean wants `name` fully qualified
    /// ("registry.example.com") in the filter, though records are created with relative names.
    pub async fn list_records(
        &self,
        domain: &str,
        name: Option<&str>,
        kind: Option<&str>,
    ) -> Result<Vec<DomainRecord>, Error> {
        let mut query = Vec::new();
        if let Some(n) = name {
            query.push(("name", n));
        }
        if let Some(t) = kind {
            query.push(("type", t));
        }
        self.list_all(
            self.url(&["v2", "domains", domain, "records"], &query),
            "domain_records",
        )
        .await
        .context("listing records of domain", domain)
    }

    /// Creates a record. After an ambiguous failure the same name/type/data is looked up
    /// before retrying, so a TXT challenge is never doubled.
    pub async fn create_record(
        &self,
        domain: &str,
        req: &DomainRecordRequest,
    ) -> Result<DomainRecord, Error> {
        let fqdn = if req.name == "@" {
            domain.to_owned()
        } else {
            format!("{}.{domain}", req.name)
        };
        let find = || {
            let fqdn = fqdn.clone();
            async move {
                let found = self
                    .list_records(domain, Some(&fqdn), Some(&req.kind))
                    .await?;
                Ok(found.into_iter().find(|r| r.data == req.data))
            }
        };
        self.create_with_recovery(
            self.url(&["v2", "domains", domain, "records"], &[]),
            req,
            "domain_record",
            find,
        )
        .await
        .context(&format!("creating {} record", req.kind), &fqdn)
    }

    /// `None` when the record (or its domain) is gone.
    pub async fn get_record(&self, domain: &str, id: u64) -> Result<Option<DomainRecord>, Error> {
        self.get_opt(
            self.url(&["v2", "domains", domain, "records", &id.to_string()], &[]),
            "domain_record",
        )
        .await
        .context(&format!("reading record of domain {domain}"), id)
    }

    /// PUT: the record becomes exactly `req`.
    pub async fn update_record(
        &self,
        domain: &str,
        id: u64,
        req: &DomainRecordRequest,
    ) -> Result<DomainRecord, Error> {
        self.put(
            self.url(&["v2", "domains", domain, "records", &id.to_string()], &[]),
            req,
            "domain_record",
        )
        .await
        .context(&format!("updating record of domain {domain}"), id)
    }

    pub async fn delete_record(&self, domain: &str, id: u64) -> Result<(), Error> {
        self.delete(
            self.url(&["v2", "domains", domain, "records", &id.to_string()], &[]),
            None,
        )
        .await
        .context(&format!("deleting record of domain {domain}"), id)
    }

    // ---- volumes --------------------------------------------------------------------------

    /// Creates a volume; names are unique per region, so after an ambiguous failure the name
    /// is looked up before retrying.
    pub async fn create_volume(&self, req: &VolumeCreateRequest) -> Result<Volume, Error> {
        let find = || async move {
            let found = self.list_volumes(&req.name, &req.region).await?;
            Ok(found.into_iter().next())
        };
        self.create_with_recovery(self.url(&["v2", "volumes"], &[]), req, "volume", find)
            .await
            .context("creating volume", &req.name)
    }

    pub async fn get_volume(&self, id: &str) -> Result<Option<Volume>, Error> {
        self.get_opt(self.url(&["v2", "volumes", id], &[]), "volume")
            .await
            .context("reading volume", id)
    }

    pub async fn delete_volume(&self, id: &str) -> Result<(), Error> {
        self.delete(self.url(&["v2", "volumes", id], &[]), None)
            .await
            .context("deleting volume", id)
    }

    pub async fn list_volumes(&self, name: &str, region: &str) -> Result<Vec<Volume>, Error> {
        self.list_all(
            self.url(&["v2", "volumes"], &[("name", name), ("region", region)]),
            "volumes",
        )
        .await
        .context("listing volumes named", format!("{name} in {region}"))
    }

    /// Every volume in `region`, whatever its name.
    pub async fn list_volumes_in(&self, region: &str) -> Result<Vec<Volume>, Error> {
        self.list_all(
            self.url(&["v2", "volumes"], &[("region", region)]),
            "volumes",
        )
        .await
        .context("listing volumes in", region)
    }

    /// Starts attach/detach/resize; wait with [`Client::wait_for_volume_action`].
    pub async fn volume_action(
        &self,
        volume_id: &str,
        action: &VolumeAction,
    ) -> Result<Action, Error> {
        self.post(
            self.url(&["v2", "volumes", volume_id, "actions"], &[]),
            action,
            "action",
        )
        .await
        .context(&format!("starting {} on volume", action.name()), volume_id)
    }

    pub async fn get_volume_action(
        &self,
        volume_id: &str,
        action_id: u64,
    ) -> Result<Action, Error> {
        self.get(
            self.url(
                &[
                    "v2",
                    "volumes",
                    volume_id,
                    "actions",
                    &action_id.to_string(),
                ],
                &[],
            ),
            "action",
        )
        .await
        .context(&format!("reading action of volume {volume_id}"), action_id)
    }

    // ---- volume snapshots -----------------------------------------------------------------

    /// Takes a snapshot of a volume. After an ambiguous failure the volume's snapshots are
    /// listed: one with the same name is the result, so a flaky API never leaves two.
    pub async fn create_volume_snapshot(
        &self,
        volume_id: &str,
        req: &SnapshotCreateRequest,
    ) -> Result<Snapshot, Error> {
        let find = || async move {
            let found = self.list_volume_snapshots(volume_id).await?;
            Ok(found.into_iter().find(|s| s.name == req.name))
        };
        self.create_with_recovery(
            self.url(&["v2", "volumes", volume_id, "snapshots"], &[]),
            req,
            "snapshot",
            find,
        )
        .await
        .context(
            &format!("taking a snapshot of volume {volume_id} named"),
            &req.name,
        )
    }

    pub async fn list_volume_snapshots(&self, volume_id: &str) -> Result<Vec<Snapshot>, Error> {
        self.list_all(
            self.url(&["v2", "volumes", volume_id, "snapshots"], &[]),
            "snapshots",
        )
        .await
        .context("listing snapshots of volume", volume_id)
    }

    /// `None` when no such snapshot exists.
    pub async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>, Error> {
        self.get_opt(self.url(&["v2", "snapshots", id], &[]), "snapshot")
            .await
            .context("reading snapshot", id)
    }

    /// A snapshot already gone is success.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Error> {
        self.delete(self.url(&["v2", "snapshots", id], &[]), None)
            .await
            .context("deleting snapshot", id)
    }

    // ---- firewalls ------------------------------------------------------------------------

    /// Not retried after a 5xx: firewall names are not unique, so a lookup could not tell
    /// ours from another.
    pub async fn create_firewall(&self, req: &FirewallRequest) -> Result<Firewall, Error> {
        self.post(self.url(&["v2", "firewalls"], &[]), req, "firewall")
            .await
            .context("creating firewall", &req.name)
    }

    pub async fn get_firewall(&self, id: &str) -> Result<Option<Firewall>, Error> {
        self.get_opt(self.url(&["v2", "firewalls", id], &[]), "firewall")
            .await
            .context("reading firewall", id)
    }

    /// Every firewall of the account.
    pub async fn list_firewalls(&self) -> Result<Vec<Firewall>, Error> {
        self.list_all(self.url(&["v2", "firewalls"], &[]), "firewalls")
            .await
            .context("listing firewalls", "all")
    }

    /// PUT replaces the whole firewall: rules and droplets not in `req` are removed.
    pub async fn update_firewall(
        &self,
        id: &str,
        req: &FirewallRequest,
    ) -> Result<Firewall, Error> {
        self.put(self.url(&["v2", "firewalls", id], &[]), req, "firewall")
            .await
            .context("updating firewall", id)
    }

    pub async fn delete_firewall(&self, id: &str) -> Result<(), Error> {
        self.delete(self.url(&["v2", "firewalls", id], &[]), None)
            .await
            .context("deleting firewall", id)
    }

    /// Adding a droplet that is already there changes nothing, so this is retried like a PUT.
    pub async fn add_firewall_droplets(&self, id: &str, droplet_ids: &[u64]) -> Result<(), Error> {
        self.post_idempotent_empty(
            self.url(&["v2", "firewalls", id, "droplets"], &[]),
            &json!({ "droplet_ids": droplet_ids }),
        )
        .await
        .context("adding droplets to firewall", id)
    }

    /// A firewall already gone counts as success: the droplets are out of it.
    pub async fn remove_firewall_droplets(
        &self,
        id: &str,
        droplet_ids: &[u64],
    ) -> Result<(), Error> {
        let body = json!({ "droplet_ids": droplet_ids });
        self.delete(
            self.url(&["v2", "firewalls", id, "droplets"], &[]),
            Some(&body),
        )
        .await
        .context("removing droplets from firewall", id)
    }

    // ---- tags -------------------------------------------------------------------------------

    /// Tags `droplet_id` with `tag`, creating the tag first (creating an existing tag is a
    /// no-op on DigitalOcean). Both calls are harmless to repeat.
    pub async fn tag_droplet(&self, tag: &str, droplet_id: u64) -> Result<(), Error> {
        self.post_idempotent_empty(self.url(&["v2", "tags"], &[]), &json!({ "name": tag }))
            .await
            .context("creating tag", tag)?;
        self.post_idempotent_empty(
            self.url(&["v2", "tags", tag, "resources"], &[]),
            &json!({ "resources": [{ "resource_id": droplet_id.to_string(), "resource_type": "droplet" }] }),
        )
        .await
        .context("tagging droplet", droplet_id)
    }

    /// A tag or droplet already gone counts as success.
    pub async fn untag_droplet(&self, tag: &str, droplet_id: u64) -> Result<(), Error> {
        let body = json!({ "resources": [{ "resource_id": droplet_id.to_string(), "resource_type": "droplet" }] });
        self.delete(
            self.url(&["v2", "tags", tag, "resources"], &[]),
            Some(&body),
        )
        .await
        .context("untagging droplet", droplet_id)
    }

    /// Takes `tag` off volume `volume_id`; a tag or volume already gone counts as success.
    pub async fn untag_volume(&self, tag: &str, volume_id: &str) -> Result<(), Error> {
        let body =
            json!({ "resources": [{ "resource_id": volume_id, "resource_type": "volume" }] });
        self.delete(
            self.url(&["v2", "tags", tag, "resources"], &[]),
            Some(&body),
        )
        .await
        .context("untagging volume", volume_id)
    }

    // ---- spaces keys ----------------------------------------------------------------------

    /// The secret is in the answer only this once. Not retried after a 5xx: a key created
    /// unseen could never yield its secret again.
    pub async fn create_spaces_key(
        &self,
        req: &SpacesKeyCreateRequest,
    ) -> Result<SpacesKeyCreated, Error> {
        self.post(self.url(&["v2", "spaces", "keys"], &[]), req, "key")
            .await
            .context("creating spaces key", &req.name)
    }

    pub async fn get_spaces_key(&self, access_key: &str) -> Result<Option<SpacesKey>, Error> {
        self.get_opt(self.url(&["v2", "spaces", "keys", access_key], &[]), "key")
            .await
            .context("reading spaces key", access_key)
    }

    /// Every Spaces key of the account (without secrets).
    pub async fn list_spaces_keys(&self) -> Result<Vec<SpacesKey>, Error> {
        self.list_all(self.url(&["v2", "spaces", "keys"], &[]), "keys")
            .await
            .context("listing spaces keys", "all")
    }

    pub async fn delete_spaces_key(&self, access_key: &str) -> Result<(), Error> {
        self.delete(self.url(&["v2", "spaces", "keys", access_key], &[]), None)
            .await
            .context("deleting spaces key", access_key)
    }

    // ---- uptime checks ----------------------------------------------------------------------

    /// Not retried after a 5xx: check names are not unique; the caller looks for a check
    /// made unseen by its name and target (`list_uptime_checks`).
    pub async fn create_uptime_check(&self, req: &UptimeCheck) -> Result<UptimeCheck, Error> {
        self.post(self.url(&["v2", "uptime", "checks"], &[]), req, "check")
            .await
            .context("creating uptime check", &req.name)
    }

    pub async fn get_uptime_check(&self, id: &str) -> Result<Option<UptimeCheck>, Error> {
        self.get_opt(self.url(&["v2", "uptime", "checks", id], &[]), "check")
            .await
            .context("reading uptime check", id)
    }

    /// Every uptime check of the account.
    pub async fn list_uptime_checks(&self) -> Result<Vec<UptimeCheck>, Error> {
        self.list_all(self.url(&["v2", "uptime", "checks"], &[]), "checks")
            .await
            .context("listing uptime checks", "all")
    }

    pub async fn update_uptime_check(
        &self,
        id: &str,
        req: &UptimeCheck,
    ) -> Result<UptimeCheck, Error> {
        self.put(self.url(&["v2", "uptime", "checks", id], &[]), req, "check")
            .await
            .context("updating uptime check", id)
    }

    /// Deletes the check and its alerts; one already gone counts as deleted.
    pub async fn delete_uptime_check(&self, id: &str) -> Result<(), Error> {
        self.delete(self.url(&["v2", "uptime", "checks", id], &[]), None)
            .await
            .context("deleting uptime check", id)
    }

    pub async fn create_uptime_alert(
        &self,
        check_id: &str,
        req: &UptimeAlert,
    ) -> Result<UptimeAlert, Error> {
        self.post(
            self.url(&["v2", "uptime", "checks", check_id, "alerts"], &[]),
            req,
            "alert",
        )
        .await
        .context("creating uptime alert", &req.name)
    }

    pub async fn list_uptime_alerts(&self, check_id: &str) -> Result<Vec<UptimeAlert>, Error> {
        self.list_all(
            self.url(&["v2", "uptime", "checks", check_id, "alerts"], &[]),
            "alerts",
        )
        .await
        .context("listing uptime alerts of check", check_id)
    }

    pub async fn update_uptime_alert(
        &self,
        check_id: &str,
        id: &str,
        req: &UptimeAlert,
    ) -> Result<UptimeAlert, Error> {
        self.put(
            self.url(&["v2", "uptime", "checks", check_id, "alerts", id], &[]),
            req,
            "alert",
        )
        .await
        .context("updating uptime alert", id)
    }

    pub async fn delete_uptime_alert(&self, check_id: &str, id: &str) -> Result<(), Error> {
        self.delete(
            self.url(&["v2", "uptime", "checks", check_id, "alerts", id], &[]),
            None,
        )
        .await
        .context("deleting uptime alert", id)
    }

    // ---- reserved IPs ---------------------------------------------------------------------

    /// A reserved IP in `region`, unassigned. Not retried after a 5xx: a second one would
    /// be another address, which no state would know.
    pub async fn create_reserved_ip(&self, region: &str) -> Result<ReservedIp, Error> {
        self.post(
            self.url(&["v2", "reserved_ips"], &[]),
            &json!({ "region": region }),
            "reserved_ip",
        )
        .await
        .context("creating a reserved IP in region", region)
    }

    /// `None` when the account no longer holds it.
    pub async fn get_reserved_ip(&self, ip: &str) -> Result<Option<ReservedIp>, Error> {
        self.get_opt(self.url(&["v2", "reserved_ips", ip], &[]), "reserved_ip")
            .await
            .context("reading reserved IP", ip)
    }

    /// A reserved IP already gone is success.
    pub async fn delete_reserved_ip(&self, ip: &str) -> Result<(), Error> {
        self.delete(self.url(&["v2", "reserved_ips", ip], &[]), None)
            .await
            .context("deleting reserved IP", ip)
    }

    /// Starts moving the reserved IP to `droplet_id` (from wherever it is); wait for the
    /// action with [`Client::wait_for_action`].
    pub async fn assign_reserved_ip(&self, ip: &str, droplet_id: u64) -> Result<Action, Error> {
        self.post(
            self.url(&["v2", "reserved_ips", ip, "actions"], &[]),
            &json!({ "type": "assign", "droplet_id": droplet_id }),
            "action",
        )
        .await
        .context(
            &format!("assigning to droplet {droplet_id} reserved IP"),
            ip,
        )
    }

    pub async fn unassign_reserved_ip(&self, ip: &str) -> Result<Action, Error> {
        self.post(
            self.url(&["v2", "reserved_ips", ip, "actions"], &[]),
            &json!({ "type": "unassign" }),
            "action",
        )
        .await
        .context("unassigning reserved IP", ip)
    }

    // ---- load balancers -------------------------------------------------------------------

    /// Not retried after a 5xx: a second balancer would be another address, which no state
    /// would know.
    pub async fn create_load_balancer(
        &self,
        req: &LoadBalancerRequest,
    ) -> Result<LoadBalancer, Error> {
        self.post(
            self.url(&["v2", "load_balancers"], &[]),
            req,
            "load_balancer",
        )
        .await
        .context("creating load balancer", &req.name)
    }

    /// `None` when the account no longer holds it.
    pub async fn get_load_balancer(&self, id: &str) -> Result<Option<LoadBalancer>, Error> {
        self.get_opt(
            self.url(&["v2", "load_balancers", id], &[]),
            "load_balancer",
        )
        .await
        .context("reading load balancer", id)
    }

    /// Every load balancer of the account.
    pub async fn list_load_balancers(&self) -> Result<Vec<LoadBalancer>, Error> {
        self.list_all(self.url(&["v2", "load_balancers"], &[]), "load_balancers")
            .await
            .context("listing load balancers", "all")
    }

    /// PUT replaces the whole balancer: rules, check and droplets as in `req`.
    pub async fn update_load_balancer(
        &self,
        id: &str,
        req: &LoadBalancerRequest,
    ) -> Result<LoadBalancer, Error> {
        self.put(
            self.url(&["v2", "load_balancers", id], &[]),
            req,
            "load_balancer",
        )
        .await
        .context("updating load balancer", id)
    }

    /// A balancer already gone is success.
    pub async fn delete_load_balancer(&self, id: &str) -> Result<(), Error> {
        self.delete(self.url(&["v2", "load_balancers", id], &[]), None)
            .await
            .context("deleting load balancer", id)
    }

    /// Adding a droplet that is already there changes nothing: retried like a PUT.
    pub async fn add_load_balancer_droplets(
        &self,
        id: &str,
        droplet_ids: &[u64],
    ) -> Result<(), Error> {
        self.post_idempotent_empty(
            self.url(&["v2", "load_balancers", id, "droplets"], &[]),
            &json!({ "droplet_ids": droplet_ids }),
        )
        .await
        .context("adding droplets to load balancer", id)
    }

    /// The droplets stop getting new connections; the ones they hold are drained. A balancer
    /// already gone counts as success.
    pub async fn remove_load_balancer_droplets(
        &self,
        id: &str,
        droplet_ids: &[u64],
    ) -> Result<(), Error> {
        let body = json!({ "droplet_ids": droplet_ids });
        self.delete(
            self.url(&["v2", "load_balancers", id, "droplets"], &[]),
            Some(&body),
        )
        .await
        .context("removing droplets from load balancer", id)
    }
}
