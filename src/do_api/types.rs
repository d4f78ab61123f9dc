//! Request and response bodies, after the schemas of shared/do-openapi.yaml (`droplet`,
//! `action`, `domain_record`, `volume_full`, `firewall`, `key`, ...); unknown fields are ignored.

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::Secret;

/// `null` and a missing field both read as the empty list (fakes and DO disagree on which).
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `account` (GET /v2/account).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Account {
    #[serde(default)]
    pub droplet_limit: i64,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub email_verified: bool,
    /// "active", "warning" or "locked".
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_message: String,
}

/// `region`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Region {
    #[serde(default)]
    pub name: String,
    pub slug: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub features: Vec<String>,
    #[serde(default)]
    pub available: bool,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub sizes: Vec<String>,
}

impl Region {
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// `size`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Size {
    pub slug: String,
    #[serde(default)]
    pub memory: u64,
    #[serde(default)]
    pub vcpus: u32,
    #[serde(default)]
    pub disk: u64,
    #[serde(default)]
    pub transfer: f64,
    #[serde(default)]
    pub price_monthly: f64,
    #[serde(default)]
    pub price_hourly: f64,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub regions: Vec<String>,
    #[serde(default)]
    pub available: bool,
    pub description: Option<String>,
}

/// `image`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Image {
    pub id: Option<u64>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub distribution: Option<String>,
    pub slug: Option<String>,
    pub public: Option<bool>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub regions: Vec<String>,
    pub min_disk_size: Option<u64>,
    pub status: Option<String>,
}

/// `sshKeys`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct SshKey {
    pub id: u64,
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub public_key: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SshKeyCreateRequest {
    pub name: String,
    pub public_key: String,
}

/// An SSH key given to a droplet create: by id or by fingerprint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SshKeyRef {
    Id(u64),
    Fingerprint(String),
}

/// An image given to a droplet create: by slug or by id.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ImageRef {
    Id(u64),
    Slug(String),
}

impl From<&str> for ImageRef {
    /// Digits are an image's id (a snapshot or a custom image), anything else a slug: the
    /// API takes a snapshot only by its number.
    fn from(s: &str) -> Self {
        match s.parse() {
            Ok(id) if !s.starts_with('0') => ImageRef::Id(id),
            _ => ImageRef::Slug(s.to_owned()),
        }
    }
}

/// `droplet_single_create`. `user_data` is a [`Secret`]: ours carries the SSH host key.
#[derive(Clone, Debug, Serialize)]
pub struct DropletCreateRequest {
    pub name: String,
    pub region: String,
    pub size: String,
    pub image: ImageRef,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<SshKeyRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Secret>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub ipv6: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub monitoring: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_uuid: Option<String>,
    /// Automated backups of the droplet's disk, with `backup_policy` (daily when omitted).
    #[serde(skip_serializing_if = "is_false")]
    pub backups: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_policy: Option<BackupPolicy>,
}

/// `droplet_backup_policy`: `plan` daily or weekly, `weekday` (weekly), `hour` the start of
/// the 4-hour window (0, 4, ..., 20 UTC). The read-only window length and retention are read
/// but never sent.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct BackupPolicy {
    pub plan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<u32>,
}

/// `droplet_backup_policy_record`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct BackupPolicyRecord {
    #[serde(default)]
    pub backup_enabled: bool,
    pub backup_policy: Option<BackupPolicy>,
}

/// `snapshots` with `resource_type` volume: a volume's snapshot.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Snapshot {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub regions: Vec<String>,
    #[serde(default)]
    pub min_disk_size: u64,
    #[serde(default)]
    pub size_gigabytes: f64,
    #[serde(default)]
    pub resource_id: String,
    #[serde(default)]
    pub resource_type: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
}

/// The body of `POST /v2/volumes/{id}/snapshots`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SnapshotCreateRequest {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `network_v4` / `network_v6`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct NetworkAddress {
    pub ip_address: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// A dotted mask for v4, a prefix length for v6.
    pub netmask: Option<serde_json::Value>,
    pub gateway: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Networks {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub v4: Vec<NetworkAddress>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub v6: Vec<NetworkAddress>,
}

/// The answer to POST /v2/droplets (one droplet): the droplet and the actions it started.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DropletCreated {
    pub droplet: Droplet,
    #[serde(default)]
    pub links: CreateLinks,
}

/// `links` of a create answer; DigitalOcean links the droplet's `create` action there.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CreateLinks {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub actions: Vec<ActionLink>,
}

/// `action_link`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ActionLink {
    pub id: u64,
    #[serde(default)]
    pub rel: String,
}

/// A droplet just created, and its `create` action when known.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewDroplet {
    pub droplet: Droplet,
    pub create_action: Option<u64>,
}

/// `droplet`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Droplet {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub memory: u64,
    #[serde(default)]
    pub vcpus: u32,
    #[serde(default)]
    pub disk: u64,
    #[serde(default)]
    pub locked: bool,
    /// "new", "active", "off" or "archive".
    #[serde(default)]
    pub status: String,
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub features: Vec<String>,
    pub image: Option<Image>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub volume_ids: Vec<String>,
    #[serde(default)]
    pub size_slug: String,
    #[serde(default)]
    pub networks: Networks,
    pub region: Option<Region>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    pub vpc_uuid: Option<String>,
}

impl Droplet {
    fn address(&self, v6: bool, kind: &str) -> Option<&str> {
        let list = if v6 {
            &self.networks.v6
        } else {
            &self.networks.v4
        };
        list.iter()
            .find(|n| n.kind == kind)
            .map(|n| n.ip_address.as_str())
    }

    pub fn public_ipv4(&self) -> Option<&str> {
        self.address(false, "public")
    }

    pub fn private_ipv4(&self) -> Option<&str> {
        self.address(false, "private")
    }

    pub fn public_ipv6(&self) -> Option<&str> {
        self.address(true, "public")
    }

    pub fn region_slug(&self) -> Option<&str> {
        self.region.as_ref().map(|r| r.slug.as_str())
    }
}

/// `action`: what droplet and volume actions return, and /v2/actions/{id}.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Action {
    pub id: u64,
    /// "in-progress", "completed" or "errored".
    #[serde(default)]
    pub status: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub resource_id: Option<u64>,
    pub resource_type: Option<String>,
    pub region_slug: Option<String>,
}

/// The droplet actions the resource uses (`droplet_action_*`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DropletAction {
    PowerOff,
    PowerOn,
    Shutdown,
    Reboot,
    /// `disk: false` keeps the resize reversible (a disk cannot shrink back).
    Resize {
        size: String,
        disk: bool,
    },
    Rename {
        name: String,
    },
    EnableBackups {
        #[serde(skip_serializing_if = "Option::is_none")]
        backup_policy: Option<BackupPolicy>,
    },
    DisableBackups,
    ChangeBackupPolicy {
        backup_policy: BackupPolicy,
    },
}

impl DropletAction {
    pub fn name(&self) -> &'static str {
        match self {
            DropletAction::PowerOff => "power_off",
            DropletAction::PowerOn => "power_on",
            DropletAction::Shutdown => "shutdown",
            DropletAction::Reboot => "reboot",
            DropletAction::Resize { .. } => "resize",
            DropletAction::Rename { .. } => "rename",
            DropletAction::EnableBackups { .. } => "enable_backups",
            DropletAction::DisableBackups => "disable_backups",
            DropletAction::ChangeBackupPolicy { .. } => "change_backup_policy",
        }
    }
}

/// `domain`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Domain {
    pub name: String,
    pub ttl: Option<u64>,
    pub zone_file: Option<String>,
}

/// `domain_record`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct DomainRecord {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub data: String,
    pub priority: Option<i64>,
    pub port: Option<u16>,
    pub ttl: Option<u32>,
    pub weight: Option<i64>,
    pub flags: Option<u8>,
    pub tag: Option<String>,
}

/// The writable part of `domain_record`, for create (POST) and update (PUT).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DomainRecordRequest {
    #[serde(rename = "type")]
    pub kind: String,
    /// Relative to the domain: "registry", "_acme-challenge.registry", or "@".
    pub name: String,
    pub data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `volume_full`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Volume {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub droplet_ids: Vec<u64>,
    #[serde(default)]
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub size_gigabytes: u64,
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    pub region: Option<Region>,
    pub filesystem_type: Option<String>,
    pub filesystem_label: Option<String>,
}

/// `volumes_ext4` / `volumes_xfs`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct VolumeCreateRequest {
    pub name: String,
    pub size_gigabytes: u64,
    pub region: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// "ext4" or "xfs": DigitalOcean formats the volume, and Debian mounts it on attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem_label: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

/// `volume_action_post_attach` / `_detach` / `_resize`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VolumeAction {
    Attach {
        droplet_id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    Detach {
        droplet_id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    Resize {
        size_gigabytes: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
}

impl VolumeAction {
    pub fn name(&self) -> &'static str {
        match self {
            VolumeAction::Attach { .. } => "attach",
            VolumeAction::Detach { .. } => "detach",
            VolumeAction::Resize { .. } => "resize",
        }
    }
}

/// `firewall_rule_target`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FirewallTarget {
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub droplet_ids: Vec<u64>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub load_balancer_uids: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub kubernetes_ids: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
}

/// An inbound rule: `protocol` tcp/udp/icmp, `ports` "443", "8000-9000" or "0" (all).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct InboundRule {
    pub protocol: String,
    #[serde(default)]
    pub ports: String,
    #[serde(default)]
    pub sources: FirewallTarget,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct OutboundRule {
    pub protocol: String,
    #[serde(default)]
    pub ports: String,
    #[serde(default)]
    pub destinations: FirewallTarget,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PendingChange {
    pub droplet_id: u64,
    #[serde(default)]
    pub removing: bool,
    #[serde(default)]
    pub status: String,
}

/// `reserved_ip`: the address is its id.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ReservedIp {
    pub ip: String,
    /// The droplet it is assigned to; null when unassigned.
    #[serde(default)]
    pub droplet: Option<ReservedIpDroplet>,
    /// An action on it is in progress.
    #[serde(default)]
    pub locked: bool,
}

/// The part of a reserved IP's `droplet` the resource reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ReservedIpDroplet {
    pub id: u64,
}

impl ReservedIp {
    pub fn droplet_id(&self) -> Option<u64> {
        self.droplet.as_ref().map(|d| d.id)
    }
}

/// `firewall`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Firewall {
    pub id: String,
    /// "waiting", "succeeded" or "failed".
    #[serde(default)]
    pub status: String,
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub pending_changes: Vec<PendingChange>,
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub droplet_ids: Vec<u64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub inbound_rules: Vec<InboundRule>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub outbound_rules: Vec<OutboundRule>,
}

/// The writable part of `firewall`, for create (POST) and update (PUT, which replaces all).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FirewallRequest {
    pub name: String,
    pub droplet_ids: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub inbound_rules: Vec<InboundRule>,
    pub outbound_rules: Vec<OutboundRule>,
}

/// `grant`: `permission` is "read", "readwrite", "fullaccess" (with bucket "") or "".
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Grant {
    pub bucket: String,
    pub permission: String,
}

/// `key` (Spaces access key) as read back: never holds the secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct SpacesKey {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub grants: Vec<Grant>,
    pub access_key: String,
    pub created_at: Option<String>,
}

/// `key_create_response`: the only time DigitalOcean returns the secret.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SpacesKeyCreated {
    #[serde(flatten)]
    pub key: SpacesKey,
    pub secret_key: Secret,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpacesKeyCreateRequest {
    pub name: String,
    pub grants: Vec<Grant>,
}

/// An uptime check (`/v2/uptime/checks`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct UptimeCheck {
    #[serde(default, skip_serializing)]
    pub id: String,
    pub name: String,
    /// `ping`, `http` or `https`.
    #[serde(rename = "type")]
    pub check_type: String,
    pub target: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub regions: Vec<String>,
    #[serde(default)]
    pub enabled: bool,
}

/// Who an uptime alert notifies. DigitalOcean requires both lists, empty or not.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct UptimeNotifications {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub email: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub slack: Vec<serde_json::Value>,
}

/// An alert of an uptime check.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct UptimeAlert {
    #[serde(default, skip_serializing)]
    pub id: String,
    pub name: String,
    /// `latency`, `down`, `down_global` or `ssl_expiry`.
    #[serde(rename = "type")]
    pub alert_type: String,
    /// Days for `ssl_expiry`, milliseconds for `latency`; none for `down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<String>,
    #[serde(default)]
    pub notifications: UptimeNotifications,
    pub period: String,
}

/// `forwarding_rule`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ForwardingRule {
    pub entry_protocol: String,
    pub entry_port: u16,
    pub target_protocol: String,
    pub target_port: u16,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_passthrough: bool,
}

/// `health_check`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HealthCheck {
    pub protocol: String,
    pub port: u16,
    #[serde(default)]
    pub path: String,
    pub check_interval_seconds: u32,
    pub response_timeout_seconds: u32,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

/// The body of `POST /v2/load_balancers` and `PUT /v2/load_balancers/{id}` (a regional
/// balancer, droplets by id).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LoadBalancerRequest {
    pub name: String,
    pub region: String,
    pub forwarding_rules: Vec<ForwardingRule>,
    pub health_check: HealthCheck,
    pub droplet_ids: Vec<u64>,
}

/// `load_balancer`: what the resource reads of it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct LoadBalancer {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Empty while it is `new` (provisioning).
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub ip: String,
    /// `new`, `active` or `errored`.
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub droplet_ids: Vec<u64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub forwarding_rules: Vec<ForwardingRule>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
}

fn null_as_empty_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}
