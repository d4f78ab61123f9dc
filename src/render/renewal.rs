//! The files that let the droplet renew its own certificate: the renewal driver and its
//! config, the registry's ACME account, a systemd timer, and for DNS-01 a BIND instance that
//! answers only for `_acme-challenge.<fqdn>` (which the provider delegates to the droplet).

use std::fmt::Write as _;
use std::time::Duration;

use super::{check_plain, paths, RenderError};
use crate::secret::Secret;

/// The driver (Python: the droplet has python3 for cloud-init, and certbot's cryptography).
pub const DRIVER: &str = include_str!("renew.py");

/// Where the renewal's files live on the droplet.
pub mod renewal_paths {
    pub const DRIVER: &str = "/usr/local/lib/registry-renew/renew.py";
    pub const CONFIG: &str = "/etc/registry-renew/config.json";
    /// The registry's ACME account (key included): root only.
    pub const ACCOUNT: &str = "/etc/registry-renew/account.json";
    /// The provider's extra roots for the ACME directory (test or private CAs), when set.
    pub const CA_BUNDLE: &str = "/etc/registry-renew/ca.pem";
    pub const SERVICE: &str = "/etc/systemd/system/registry-renew.service";
    pub const TIMER: &str = "/etc/systemd/system/registry-renew.timer";
    /// What the last run did (JSON, no secret): read by the provider at refresh.
    pub const STATUS: &str = "/var/lib/registry-renew/status.json";
    /// DNS-01: named's configuration of ours, and the drop-in that makes named use it.
    pub const NAMED_CONF: &str = "/etc/bind/registry-renew.conf";
    pub const NAMED_DROPIN: &str = "/etc/systemd/system/named.service.d/registry-renew.conf";
    /// The challenge zone; named rewrites it (dynamic updates), so it is seeded, not managed.
    pub const ZONE: &str = "/var/lib/bind/registry-renew.zone";
    /// Held (flock, exclusive) while a renewal swaps the certificate and its key; the
    /// provider reads both, and every managed file's digest, under it (shared), so that a
    /// refresh never pairs one renewal's chain with the digests of another's.
    pub const INSTALL_LOCK: &str = "/run/registry-renew.install.lock";
}

/// The challenge the droplet answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewChallenge {
    Http01,
    Dns01,
}

/// Everything the droplet's renewal is rendered from (all of it from the provider's state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalSpec {
    pub directory_url: String,
    pub challenge: RenewChallenge,
    /// `ecdsa-p256`, `rsa-2048` or `rsa-4096`.
    pub key_type: String,
    pub renew_before_days: u32,
    /// How often the timer runs the driver.
    pub interval: Duration,
    /// instant-acme's account credentials JSON: the registry's own account.
    pub account_json: Secret,
    /// Extra PEM roots for the directory, when the provider has some.
    pub ca_certificates_pem: Option<String>,
}

impl RenewalSpec {
    /// The name delegated to the droplet for DNS-01.
    pub fn challenge_zone(fqdn: &str) -> String {
        format!("_acme-challenge.{}", fqdn.trim_end_matches('.'))
    }
}

/// The driver's configuration.
pub fn renewal_config(
    fqdn: &str,
    spec: &RenewalSpec,
    tls_cert: &str,
    tls_key: &str,
    webroot: &str,
) -> Result<String, RenderError> {
    check_plain("fqdn", fqdn)?;
    let config = serde_json::json!({
        "fqdn": fqdn,
        "directory": spec.directory_url,
        "challenge": match spec.challenge {
            RenewChallenge::Http01 => "http-01",
            RenewChallenge::Dns01 => "dns-01",
        },
        "key_type": spec.key_type,
        "renew_before_days": spec.renew_before_days,
        "cert": tls_cert,
        "key": tls_key,
        "webroot": webroot,
        "ca_bundle": spec.ca_certificates_pem.as_ref().map(|_| renewal_paths::CA_BUNDLE),
    });
    let mut text = serde_json::to_string_pretty(&config).expect("JSON of plain values");
    text.push('\n');
    Ok(text)
}

pub fn renewal_service() -> String {
    format!(
        "# Managed by terraform-provider-docker.\n\
         [Unit]\n\
         Description=Renew the registry's certificate when it is due (ACME ARI, else renew_before_days)\n\
         After=network-online.target nginx.service\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart=/usr/bin/python3 {}\n\
         # The journal and the status file say what happened; certbot's log has the rest.\n\
         TimeoutStartSec=15min\n",
        paths_driver_run()
    )
}

fn paths_driver_run() -> String {
    format!("{} run", renewal_paths::DRIVER)
}

/// Every `interval`; the first run soon after the timer starts. A random delay of a tenth of
/// the interval (at most an hour) spreads many registries' requests to the CA.
pub fn renewal_timer(interval: Duration) -> String {
    let secs = interval.as_secs().max(1);
    let first = secs.min(60);
    let spread = (secs / 10).min(3600);
    // systemd's default accuracy is a minute; short test intervals need better.
    let accuracy = if secs < 600 { 1 } else { 60 };
    let mut t = String::from(
        "# Managed by terraform-provider-docker.\n[Unit]\nDescription=Check the registry's certificate for renewal\n\n[Timer]\n",
    );
    let _ = writeln!(t, "OnActiveSec={first}s");
    let _ = writeln!(t, "OnBootSec={first}s");
    let _ = writeln!(t, "OnUnitActiveSec={secs}s");
    let _ = writeln!(t, "RandomizedDelaySec={spread}s");
    let _ = writeln!(t, "AccuracySec={accuracy}s");
    t.push_str("\n[Install]\nWantedBy=timers.target\n");
    t
}

/// named as an authoritative server for the one delegated name: no recursion, no transfers,
/// updates only from this machine (`nsupdate -l`, the session key named makes at start).
pub fn named_conf(fqdn: &str) -> Result<String, RenderError> {
    check_plain("fqdn", fqdn)?;
    let zone = RenewalSpec::challenge_zone(fqdn);
    Ok(format!(
        "// Managed by terraform-provider-docker: answers for {zone} only.\n\
         options {{\n\
         \tdirectory \"/var/cache/bind\";\n\
         \tlisten-on {{ any; }};\n\
         \tlisten-on-v6 {{ any; }};\n\
         \trecursion no;\n\
         \tallow-query {{ any; }};\n\
         \tallow-transfer {{ none; }};\n\
         \tnotify no;\n\
         \tversion none;\n\
         \thostname none;\n\
         \tserver-id none;\n\
         \tdnssec-validation no;\n\
         }};\n\
         \n\
         zone \"{zone}\" {{\n\
         \ttype primary;\n\
         \tfile \"{}\";\n\
         \tupdate-policy local;\n\
         }};\n",
        renewal_paths::ZONE
    ))
}

/// Debian's named.service with our configuration, in the foreground, and /run/named for the
/// session key (named drops to the bind user before writing it).
pub fn named_dropin() -> String {
    format!(
        "# Managed by terraform-provider-docker.\n\
         [Service]\n\
         Type=simple\n\
         ExecStartPre=/usr/bin/install -d -o bind -g bind -m 0775 /run/named\n\
         ExecStart=\n\
         ExecStart=/usr/sbin/named -f -u bind -c {}\n\
         ExecReload=\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         ExecStop=\n",
        renewal_paths::NAMED_CONF
    )
}

/// The challenge zone as first written: SOA and NS (the fqdn, whose A record the parent zone
/// holds). A 30 s TTL everywhere, so a resolver forgets a miss quickly.
pub fn zone_seed(fqdn: &str) -> Result<String, RenderError> {
    check_plain("fqdn", fqdn)?;
    let fqdn = fqdn.trim_end_matches('.');
    Ok(format!(
        "$TTL 30\n@ IN SOA {fqdn}. hostmaster.{fqdn}. 1 300 60 600 30\n@ IN NS {fqdn}.\n"
    ))
}

/// The default place the webroot answers are written (nginx serves it on port 80).
pub fn webroot() -> &'static str {
    paths::ACME_HTTP01_DIR
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::golden::assert_golden;

    fn spec(challenge: RenewChallenge) -> RenewalSpec {
        RenewalSpec {
            directory_url: "https://acme.example.net/directory".into(),
            challenge,
            key_type: "ecdsa-p256".into(),
            renew_before_days: 30,
            interval: Duration::from_secs(12 * 3600),
            account_json: Secret::new("{\"id\":\"x\",\"key_pkcs8\":\"ACCOUNT-KEY-SECRET\"}"),
            ca_certificates_pem: None,
        }
    }

    #[test]
    fn config_names_the_challenge_and_no_secret() {
        let text = renewal_config(
            "registry.example.com",
            &spec(RenewChallenge::Dns01),
            paths::TLS_CERT_CHAIN,
            paths::TLS_PRIVATE_KEY,
            webroot(),
        )
        .unwrap();
        assert_golden("renew-config.json", &text);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["challenge"], "dns-01");
        assert_eq!(v["ca_bundle"], serde_json::Value::Null);
        assert!(!text.contains("ACCOUNT-KEY-SECRET"));
    }

    #[test]
    fn the_timer_is_short_for_tests_and_spread_in_production() {
        let prod = renewal_timer(Duration::from_secs(12 * 3600));
        assert_golden("registry-renew.timer", &prod);
        assert!(prod.contains("OnUnitActiveSec=43200s"));
        assert!(prod.contains("RandomizedDelaySec=3600s"));
        let test = renewal_timer(Duration::from_secs(5));
        assert!(test.contains("OnUnitActiveSec=5s") && test.contains("AccuracySec=1s"));
        assert!(test.contains("OnActiveSec=5s"));
    }

    #[test]
    fn the_driver_uses_the_paths_the_provider_reads() {
        for (name, path) in [
            ("CONFIG", renewal_paths::CONFIG),
            ("ACCOUNT", renewal_paths::ACCOUNT),
            ("INSTALL_LOCK", renewal_paths::INSTALL_LOCK),
        ] {
            assert!(
                DRIVER.contains(&format!("\n{name} = \"{path}\"\n")),
                "renew.py's {name} is not {path}"
            );
        }
        assert!(DRIVER.contains("STATUS = STATE_DIR + \"/status.json\""));
        assert_eq!(renewal_paths::STATUS, "/var/lib/registry-renew/status.json");
    }

    #[test]
    fn named_answers_only_the_challenge_zone() {
        let conf = named_conf("registry.example.com").unwrap();
        assert_golden("registry-renew-named.conf", &conf);
        assert!(conf.contains("recursion no;"));
        assert!(conf.contains("zone \"_acme-challenge.registry.example.com\""));
        assert!(conf.contains("update-policy local;"));
        assert!(named_conf("a;b").is_err());
        let zone = zone_seed("registry.example.com").unwrap();
        assert!(zone.contains("@ IN NS registry.example.com."));
        assert!(named_dropin().contains("-c /etc/bind/registry-renew.conf"));
    }
}
