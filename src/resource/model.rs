//! A typed view of a registry's configuration, parsed once from the state: enums for the
//! certificate source, challenge, key type, storage backend and access; users; timeouts.
//!
//! Lenient by design: a value that is null or not known yet reads as its default, as the
//! plan shows it. Bad values never get here unnoticed: `validate` reports them on their
//! attribute with the same parsers, before anything is created.

use std::time::{Duration, Instant};

use super::schema::{DEFAULT_CIDRS, DEFAULT_IMAGE, DEFAULT_SIZE};
use super::state::{known, RegistryState, S};
use crate::acme::KeyType;
use crate::render::Access;
use crate::secret::Secret;

pub const DEFAULT_RENEW_BEFORE_DAYS: i64 = 30;
/// certbot's timer runs twice a day; so does the droplet's renewal check by default.
pub const DEFAULT_RENEW_INTERVAL: &str = "12h";
pub const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
pub const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
pub const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The longest timeout accepted: a week. Longer values get a plan-time diagnostic, and a
/// deadline never overflows `Instant`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most droplets one registry runs behind its load balancer.
pub const MAX_REPLICAS: u32 = 10;

/// Generates a string-backed enum: its HCL spellings, parsing, printing, and the default.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident { $default:ident = $dtext:literal $(, $variant:ident = $text:literal)+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
        pub enum $name {
            #[default]
            $default,
            $($variant),+
        }

        impl $name {
            /// Every spelling HCL accepts, the default first.
            pub const ALL: &'static [&'static str] = &[$dtext, $($text),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $name::$default => $dtext,
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                [$name::$default, $($name::$variant),+]
                    .into_iter()
                    .find(|v| v.as_str() == s)
            }

            /// The value as known in `v`; null or unknown read as the default.
            pub fn of(v: &S) -> $name {
                v.as_ref_option().and_then(|s| $name::parse(s)).unwrap_or_default()
            }
        }
    };
}

choice!(
    /// `tls.source`.
    TlsSource { Acme = "acme", SelfSigned = "self_signed", Provided = "provided" }
);
choice!(
    /// `tls.challenge`.
    ChallengeKind { Dns01 = "dns-01", Http01 = "http-01" }
);
choice!(
    /// `tls.renew`.
    RenewMode { Droplet = "droplet", Plan = "plan" }
);
choice!(
    /// `storage.backend`.
    Backend { Droplet = "droplet", Volume = "volume", Spaces = "spaces" }
);

/// `users.<name>.access`; spellings `push` (default) and `pull`.
pub const ACCESS_ALL: &[&str] = &["push", "pull"];

pub fn parse_access(s: &str) -> Option<Access> {
    match s {
        "push" => Some(Access::Push),
        "pull" => Some(Access::Pull),
        _ => None,
    }
}

pub fn access_str(a: Access) -> &'static str {
    match a {
        Access::Push => "push",
        Access::Pull => "pull",
    }
}

fn access_of(v: &S) -> Access {
    v.as_ref_option()
        .and_then(|s| parse_access(s))
        .unwrap_or(Access::Push)
}

/// The `tls` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub source: TlsSource,
    pub challenge: ChallengeKind,
    pub key_type: KeyType,
    pub email: Option<String>,
    pub renew_before_days: u32,
    pub revoke_on_destroy: bool,
    pub caa: bool,
    /// Who renews an ACME certificate: the droplet (default) or the plan.
    pub renew: RenewMode,
    /// How often the droplet checks.
    pub renew_interval: Duration,
    /// With `provided`.
    pub certificate_pem: Option<String>,
    pub private_key_pem: Option<Secret>,
}

/// The `storage` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    pub backend: Backend,
    pub size_gib: Option<u64>,
    pub bucket: Option<String>,
    pub force_destroy: bool,
    pub spaces_redirect: bool,
    /// After an import with droplet-disk storage: replacing the droplet may lose its images.
    pub accept_image_loss: bool,
    /// `spaces_access_id` and `spaces_secret_key` of the block, when both are set: they manage
    /// the bucket instead of the provider's.
    pub spaces_keys: Option<(Secret, Secret)>,
    /// `volume` only: the snapshot a new volume starts from.
    pub volume_snapshot_id: Option<String>,
    /// `spaces` only: days noncurrent object versions are kept; `None`: no versioning asked.
    pub keep_deleted_days: Option<u32>,
}

/// The `garbage_collection` block; None without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gc {
    pub schedule: Option<String>,
    pub delete_untagged: bool,
    pub run: Option<i64>,
    /// The `retention` blocks, in order.
    pub retention: Vec<crate::retention::Rule>,
}

/// The `backups` block with its defaults filled in; None without it (backups off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backups {
    /// `daily` (default) or `weekly`.
    pub plan: String,
    /// Weekly plans only: `SUN` (default) to `SAT`.
    pub weekday: Option<String>,
    /// Start of the 4-hour window, UTC: 0 (default), 4, 8, 12, 16 or 20.
    pub hour: u32,
}

pub const BACKUP_PLANS: &[&str] = &["daily", "weekly"];
pub const BACKUP_WEEKDAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
pub const BACKUP_HOURS: &[i64] = &[0, 4, 8, 12, 16, 20];

impl Backups {
    /// The policy as DigitalOcean takes it, every field explicit, so that what DigitalOcean
    /// picks for an omitted one never differs from what the plan shows.
    pub fn policy(&self) -> crate::do_api::BackupPolicy {
        crate::do_api::BackupPolicy {
            plan: self.plan.clone(),
            weekday: self.weekday.clone(),
            hour: Some(self.hour),
        }
    }

    /// The block as DigitalOcean reports it, in the model's terms (for drift).
    pub fn from_policy(p: &crate::do_api::BackupPolicy) -> Backups {
        let weekly = p.plan == "weekly";
        Backups {
            plan: p.plan.clone(),
            weekday: if weekly {
                Some(p.weekday.clone().unwrap_or_else(|| "SUN".into()))
            } else {
                None
            },
            hour: p.hour.unwrap_or(0),
        }
    }
}

/// One entry of `users`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub access: Access,
    /// The plaintext when the provider knows it: given, or generated (once applied).
    pub password: Option<Secret>,
}

/// The `timeouts` block, each parsed and clamped to [`MAX_TIMEOUT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub create: Duration,
    pub update: Duration,
    pub delete: Duration,
}

/// The registry's configuration, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    pub name: String,
    pub region: String,
    pub size: String,
    pub image: String,
    pub fqdn: String,
    pub ssh_key_fingerprints: Vec<String>,
    pub ssh_allowed_cidrs: Vec<String>,
    pub anonymous_pull: bool,
    /// Serve the web page.
    pub ui: bool,
    /// A reserved IP holds the registry's address.
    pub reserved_ip: bool,
    /// How many droplets serve the registry (at least 1).
    pub replicas: u32,
    pub tags: Vec<String>,
    pub users: Vec<User>,
    pub tls: Tls,
    pub storage: Storage,
    pub timeouts: Timeouts,
    pub gc: Option<Gc>,
    pub backups: Option<Backups>,
}

impl Model {
    /// The retention rules; empty without any.
    pub fn retention_rules(&self) -> &[crate::retention::Rule] {
        self.gc
            .as_ref()
            .map(|g| g.retention.as_slice())
            .unwrap_or_default()
    }
}

fn strings(v: &tf_provider::value::Value<Vec<S>>) -> Vec<String> {
    v.as_ref_option()
        .map(|l| {
            l.iter()
                .filter_map(|x| x.as_ref_option().cloned())
                .collect()
        })
        .unwrap_or_default()
}

fn timeout(v: Option<&S>, default: Duration) -> Duration {
    v.and_then(|v| v.as_ref_option())
        .and_then(|v| super::validate::parse_duration(v).ok())
        .unwrap_or(default)
        .min(MAX_TIMEOUT)
}

impl Model {
    /// The view of `st`; see the module notes for unknown and bad values.
    pub fn of(st: &RegistryState) -> Model {
        let t = st.tls.as_ref_option().cloned().unwrap_or_default();
        let b = st.storage.as_ref_option().cloned().unwrap_or_default();
        let to = st.timeouts.as_ref_option();
        let generated = st.generated_passwords.as_ref_option();
        let users = st
            .users
            .as_ref_option()
            .map(|users| {
                users
                    .iter()
                    .filter_map(|(name, u)| {
                        let u = u.as_ref_option()?;
                        // Given, else generated (known once applied).
                        let password = u
                            .password
                            .as_ref_option()
                            .or_else(|| generated?.get(name)?.as_ref_option());
                        Some(User {
                            name: name.clone(),
                            access: access_of(&u.access),
                            password: password.map(Secret::new),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let ssh_allowed_cidrs = if st.ssh_allowed_cidrs.is_null() {
            DEFAULT_CIDRS.iter().map(|c| c.to_string()).collect()
        } else {
            strings(&st.ssh_allowed_cidrs)
        };
        Model {
            name: known(&st.name).unwrap_or_default().to_owned(),
            region: known(&st.region).unwrap_or_default().to_owned(),
            size: known(&st.size).unwrap_or(DEFAULT_SIZE).to_owned(),
            image: known(&st.image).unwrap_or(DEFAULT_IMAGE).to_owned(),
            fqdn: known(&st.fqdn).unwrap_or_default().to_owned(),
            ssh_key_fingerprints: strings(&st.ssh_key_fingerprints),
            ssh_allowed_cidrs,
            anonymous_pull: st.anonymous_pull.as_ref_option().copied().unwrap_or(false),
            ui: st.ui.as_ref_option().copied().unwrap_or(false),
            reserved_ip: st.reserved_ip.as_ref_option().copied().unwrap_or(false),
            replicas: st
                .replicas
                .as_ref_option()
                .map(|n| (*n).clamp(1, MAX_REPLICAS as i64) as u32)
                .unwrap_or(1),
            tags: strings(&st.tags),
            users,
            tls: Tls {
                source: TlsSource::of(&t.source),
                challenge: ChallengeKind::of(&t.challenge),
                key_type: t
                    .key_type
                    .as_ref_option()
                    .and_then(|k| k.parse().ok())
                    .unwrap_or_default(),
                email: t.email.as_ref_option().cloned(),
                renew_before_days: t
                    .renew_before_days
                    .as_ref_option()
                    .copied()
                    .unwrap_or(DEFAULT_RENEW_BEFORE_DAYS)
                    .clamp(0, 3650) as u32,
                revoke_on_destroy: t
                    .revoke_on_destroy
                    .as_ref_option()
                    .copied()
                    .unwrap_or(false),
                caa: t.caa.as_ref_option().copied().unwrap_or(false),
                renew: RenewMode::of(&t.renew),
                renew_interval: t
                    .renew_interval
                    .as_ref_option()
                    .and_then(|v| super::validate::parse_duration(v).ok())
                    .unwrap_or(Duration::from_secs(12 * 3600))
                    .clamp(MIN_RENEW_INTERVAL, MAX_TIMEOUT),
                certificate_pem: t.certificate_pem.as_ref_option().cloned(),
                private_key_pem: t.private_key_pem.as_ref_option().map(Secret::new),
            },
            storage: Storage {
                backend: Backend::of(&b.backend),
                size_gib: b.size_gib.as_ref_option().map(|n| (*n).max(0) as u64),
                bucket: b.bucket.as_ref_option().cloned(),
                force_destroy: b.force_destroy.as_ref_option().copied().unwrap_or(false),
                spaces_redirect: b.spaces_redirect.as_ref_option().copied().unwrap_or(false),
                accept_image_loss: b
                    .accept_image_loss
                    .as_ref_option()
                    .copied()
                    .unwrap_or(false),
                spaces_keys: match (known(&b.spaces_access_id), known(&b.spaces_secret_key)) {
                    (Some(id), Some(key)) => Some((Secret::new(id), Secret::new(key))),
                    _ => None,
                },
                volume_snapshot_id: known(&b.volume_snapshot_id).map(str::to_owned),
                keep_deleted_days: b
                    .keep_deleted_days
                    .as_ref_option()
                    .map(|d| (*d).clamp(0, u32::MAX as i64) as u32),
            },
            timeouts: Timeouts {
                create: timeout(to.map(|t| &t.create), DEFAULT_CREATE_TIMEOUT),
                update: timeout(to.map(|t| &t.update), DEFAULT_UPDATE_TIMEOUT),
                delete: timeout(to.map(|t| &t.delete), DEFAULT_DELETE_TIMEOUT),
            },
            gc: st.garbage_collection.as_ref_option().map(|g| Gc {
                schedule: g.schedule.as_ref_option().cloned(),
                delete_untagged: g.delete_untagged.as_ref_option().copied().unwrap_or(false),
                run: g.run.as_ref_option().copied(),
                retention: g
                    .retention
                    .as_ref_option()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_ref_option())
                    .map(|r| crate::retention::Rule {
                        repositories: strings(&r.repositories),
                        keep_last: r
                            .keep_last
                            .as_ref_option()
                            .map(|n| (*n).clamp(0, u32::MAX as i64) as u32),
                        older_than_days: r
                            .older_than_days
                            .as_ref_option()
                            .map(|n| (*n).clamp(0, u32::MAX as i64) as u32),
                        keep_tags: strings(&r.keep_tags),
                        allow_delete_all: r
                            .allow_delete_all
                            .as_ref_option()
                            .copied()
                            .unwrap_or(false),
                    })
                    .collect(),
            }),
            backups: st.backups.as_ref_option().map(|b| {
                let plan = b
                    .plan
                    .as_ref_option()
                    .cloned()
                    .unwrap_or_else(|| "daily".into());
                let weekday = (plan == "weekly").then(|| {
                    b.weekday
                        .as_ref_option()
                        .cloned()
                        .unwrap_or_else(|| "SUN".into())
                });
                Backups {
                    plan,
                    weekday,
                    hour: b
                        .hour
                        .as_ref_option()
                        .map_or(0, |h| (*h).clamp(0, 23) as u32),
                }
            }),
        }
    }

    /// The volume's name: `<name>-registry-data`.
    pub fn volume_name(&self) -> String {
        let name = if self.name.is_empty() {
            "registry"
        } else {
            &self.name
        };
        format!("{name}-registry-data")
    }

    /// The registry's own Spaces key is listed under this name.
    pub fn spaces_key_name(&self) -> String {
        let name = if self.name.is_empty() {
            "registry"
        } else {
            &self.name
        };
        format!("{name}-registry")
    }

    /// A user who may push and whose password is known: proves authenticated access.
    pub fn push_credentials(&self) -> Option<(String, Secret)> {
        self.users
            .iter()
            .find(|u| u.access == Access::Push && u.password.is_some())
            .map(|u| (u.name.clone(), u.password.clone().unwrap_or_default()))
    }
}

/// `now + timeout`, never past what `Instant` can hold.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + MAX_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::state::{StorageState, TimeoutsState, TlsState};
    use tf_provider::value::Value;

    fn s(v: &str) -> S {
        Value::Value(v.to_owned())
    }

    #[test]
    fn defaults_for_null_and_unknown() {
        let m = Model::of(&RegistryState::default());
        assert_eq!(m.tls.source, TlsSource::Acme);
        assert_eq!(m.tls.challenge, ChallengeKind::Dns01);
        assert_eq!(m.tls.key_type, KeyType::EcdsaP256);
        assert_eq!(m.tls.renew_before_days, 30);
        assert_eq!(m.storage.backend, Backend::Droplet);
        assert_eq!(m.size, DEFAULT_SIZE);
        assert_eq!(m.image, DEFAULT_IMAGE);
        assert_eq!(m.ssh_allowed_cidrs, DEFAULT_CIDRS);
        assert_eq!(m.timeouts.create, DEFAULT_CREATE_TIMEOUT);
        assert_eq!(m.timeouts.delete, DEFAULT_DELETE_TIMEOUT);
        let unknown = RegistryState {
            tls: Value::Value(TlsState {
                source: Value::Unknown,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(Model::of(&unknown).tls.source, TlsSource::Acme);
    }

    #[test]
    fn choices_parse_their_spellings_only() {
        assert_eq!(TlsSource::ALL, ["acme", "self_signed", "provided"]);
        assert_eq!(ChallengeKind::ALL, ["dns-01", "http-01"]);
        assert_eq!(Backend::ALL, ["droplet", "volume", "spaces"]);
        for s in Backend::ALL {
            assert_eq!(Backend::parse(s).unwrap().as_str(), *s);
        }
        assert_eq!(Backend::parse("Volume"), None);
        assert_eq!(parse_access("pull"), Some(Access::Pull));
        assert_eq!(parse_access("admin"), None);
        let st = RegistryState {
            storage: Value::Value(StorageState {
                backend: s("spaces"),
                bucket: s("b"),
                ..Default::default()
            }),
            tls: Value::Value(TlsState {
                source: s("self_signed"),
                challenge: s("http-01"),
                key_type: s("rsa-4096"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = Model::of(&st);
        assert_eq!(m.storage.backend, Backend::Spaces);
        assert_eq!(m.storage.bucket.as_deref(), Some("b"));
        assert_eq!(m.tls.source, TlsSource::SelfSigned);
        assert_eq!(m.tls.challenge, ChallengeKind::Http01);
        assert_eq!(m.tls.key_type, KeyType::Rsa4096);
    }

    #[test]
    fn huge_timeouts_are_clamped_and_deadlines_never_overflow() {
        let st = RegistryState {
            timeouts: Value::Value(TimeoutsState {
                create: s("99999999999999999999999h"),
                update: s("1e400h"),
                delete: s("168h"),
            }),
            ..Default::default()
        };
        let m = Model::of(&st);
        // Too long (validation says so at plan time) falls back to the default; the longest
        // accepted is kept.
        assert_eq!(m.timeouts.create, DEFAULT_CREATE_TIMEOUT);
        assert_eq!(m.timeouts.update, DEFAULT_UPDATE_TIMEOUT);
        assert_eq!(m.timeouts.delete, MAX_TIMEOUT);
        let _ = deadline_after(Duration::MAX);
        assert!(deadline_after(Duration::from_secs(60)) > Instant::now());
    }
}
