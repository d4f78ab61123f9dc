//! Pure renderers for every file the provider places on the droplet: data in, text out.
//! No I/O here; `remote::converge` writes what these functions return.

pub mod cloud_init;
pub mod firewall;
pub mod gc;
pub mod htpasswd;
pub mod nginx;
pub mod registry;
pub mod renewal;
pub mod snapshot;
pub mod token;
pub mod ui;

#[cfg(test)]
pub(crate) mod golden;

pub use cloud_init::user_data;
pub use htpasswd::{hash_password, htpasswd, htpasswd_push};
pub use nginx::nginx_site;
pub use registry::{registry_config, registry_dropin};
pub use token::{token_key, TokenKey, TOKEN_JS, TOKEN_PATH};

use crate::secret::Secret;

/// Where things live on the droplet. One place, so the renderers, the converge script and the
/// digest read agree on every path.
pub mod paths {
    /// In `conf.d/` rather than `sites-enabled/`: Debian's nginx.conf includes both, and a plain
    /// file needs no symlink to keep in step.
    pub const NGINX_SITE: &str = "/etc/nginx/conf.d/docker-registry.conf";
    /// Debian's stock site listens on :80 as default_server and would clash with ours.
    pub const NGINX_DEFAULT_SITE: &str = "/etc/nginx/sites-enabled/default";
    /// Every user: nginx checks a token request's password against it (auth_basic).
    pub const HTPASSWD: &str = "/etc/nginx/registry/htpasswd";
    /// Push users only: the token endpoint grants push to the names listed here.
    pub const HTPASSWD_PUSH: &str = "/etc/nginx/registry/htpasswd-push";
    /// The njs token endpoint.
    pub const TOKEN_JS: &str = "/etc/nginx/registry/token.js";
    /// The token signing key: nginx workers (www-data) read it, nothing else.
    pub const TOKEN_KEY: &str = "/etc/nginx/registry/token-key.pem";
    /// The signing key's certificate, the registry's `rootcertbundle` (public).
    pub const TOKEN_CERT: &str = "/etc/docker/registry/token-signer.crt";
    pub const TLS_CERT_CHAIN: &str = "/etc/nginx/registry/tls/fullchain.pem";
    pub const TLS_PRIVATE_KEY: &str = "/etc/nginx/registry/tls/privkey.pem";
    pub const ACME_HTTP01_DIR: &str = "/var/www/acme-challenge";
    /// Not Debian's `/etc/docker/registry/config.yml`: that one is a dpkg conffile, and
    /// rewriting it would make a later package upgrade stop at a conffile prompt.
    pub const REGISTRY_CONFIG: &str = "/etc/docker/registry/provider.yml";
    pub const REGISTRY_DROPIN: &str =
        "/etc/systemd/system/docker-registry.service.d/terraform-provider.conf";
    /// Debian's package creates it owned by docker-registry.
    pub const DROPLET_STORAGE: &str = "/var/lib/docker-registry";
    pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";
    /// The web page (`ui = true`): static files nginx serves, public.
    pub const UI_DIR: &str = "/var/www/registry-ui";
    pub const UI_INDEX: &str = "/var/www/registry-ui/index.html";
    pub const UI_SCRIPT: &str = "/var/www/registry-ui/app.js";
    pub const UI_STYLE: &str = "/var/www/registry-ui/app.css";
    /// While it exists nginx refuses every write (destroy measures stored images meanwhile).
    pub const WRITES_STOPPED: &str = "/etc/nginx/registry/writes-stopped";
    /// Our nftables rules (not Debian's /etc/nftables.conf, a conffile that flushes every
    /// other table when loaded).
    pub const FIREWALL_RULES: &str = "/etc/nftables.d/terraform-provider-docker.nft";
    pub const FIREWALL_UNIT: &str = "/etc/systemd/system/terraform-provider-firewall.service";
}

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Tokens that allow pull only.
    Pull,
    /// Tokens that allow pull, push and delete.
    Push,
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// `$2y$`/`$2b$` bcrypt, computed once by the resource layer (see `hash_password`) and
    /// kept in state: re-hashing on every apply would change the file's digest each time.
    pub bcrypt_hash: String,
    pub access: Access,
}

// A bcrypt hash can be cracked offline: `Debug` leaves it out.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("bcrypt_hash", &crate::secret::REDACTED)
            .field("access", &self.access)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The droplet's own disk: images die with the droplet.
    Droplet,
    /// A DO volume mounted at `mount_path`: images outlive the droplet.
    Volume { mount_path: String },
    /// A Spaces bucket through the registry's S3 driver.
    Spaces {
        bucket: String,
        region: String,
        /// e.g. `https://nyc3.digitaloceanspaces.com`
        endpoint: String,
        access_key: String,
        secret_key: Secret,
        /// Let clients fetch blobs straight from Spaces through presigned URLs.
        redirect: bool,
    },
}

/// Where nginx finds the certificate; defaults to `paths::TLS_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert_chain: String,
    pub private_key: String,
}

impl Default for TlsPaths {
    fn default() -> Self {
        Self {
            cert_chain: paths::TLS_CERT_CHAIN.to_owned(),
            private_key: paths::TLS_PRIVATE_KEY.to_owned(),
        }
    }
}

/// Everything the droplet's configuration is rendered from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySpec {
    pub fqdn: String,
    pub users: Vec<User>,
    pub anonymous_pull: bool,
    pub storage: Storage,
    /// Signs the registry's upload state; must stay stable across restarts of one registry.
    pub http_secret: Secret,
    pub tls: TlsPaths,
    /// Files named after HTTP-01 tokens, served under `/.well-known/acme-challenge/`.
    pub acme_http01_dir: String,
    /// Serve the web page at `https://<fqdn>/` (see `ui`).
    pub ui: bool,
    /// Answer a load balancer's health check at [`nginx::HEALTH_PATH`] on port 80 (several
    /// droplets behind a balancer).
    pub health_check: bool,
    /// The droplet renews its certificate itself (`tls.renew = "droplet"` with ACME).
    pub renewal: Option<renewal::RenewalSpec>,
    /// Garbage collection on the droplet (`garbage_collection`), when configured.
    pub gc: Option<gc::GcSpec>,
}

impl RegistrySpec {
    /// A spec with the default paths.
    pub fn new(fqdn: impl Into<String>, storage: Storage, http_secret: Secret) -> Self {
        Self {
            fqdn: fqdn.into(),
            users: Vec::new(),
            anonymous_pull: false,
            storage,
            http_secret,
            tls: TlsPaths::default(),
            acme_http01_dir: paths::ACME_HTTP01_DIR.to_owned(),
            ui: false,
            health_check: false,
            renewal: None,
            gc: None,
        }
    }

    /// The directory the filesystem driver stores into, if the storage is on a disk.
    pub fn storage_root(&self) -> Option<&str> {
        match &self.storage {
            Storage::Droplet => Some(paths::DROPLET_STORAGE),
            Storage::Volume { mount_path } => Some(mount_path),
            Storage::Spaces { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("user name {0:?} is not usable in an htpasswd file: it must be non-empty and hold no ':' or control characters")]
    InvalidUserName(String),
    #[error("the password hash of user {0:?} is not a bcrypt hash ($2y$/$2b$/$2a$)")]
    InvalidHash(String),
    #[error("user {0:?} is listed twice")]
    DuplicateUser(String),
    #[error("hashing a password failed: {0}")]
    Hash(String),
    /// Names the step (encoding, certificate); never the key.
    #[error("preparing the token signing key failed: {0}")]
    TokenKey(String),
    #[error(
        "{field} {value:?} may not hold whitespace, quotes, ';', braces or control characters"
    )]
    UnsafeValue { field: &'static str, value: String },
}

/// Refuses values that would break out of an nginx directive or a systemd line. The fqdn and
/// paths come from the user's HCL, so they are checked rather than trusted.
pub(crate) fn check_plain(field: &'static str, value: &str) -> Result<(), RenderError> {
    let bad = value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'`;{}$\\#".contains(c));
    if bad {
        return Err(RenderError::UnsafeValue {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn users() -> Vec<User> {
        vec![
            User {
                name: "ci".into(),
                bcrypt_hash: "$2y$08$abcdefghijklmnopqrstuu5UmCkrG5qkWh4Tlr2ct8ErgEjCJwDpu".into(),
                access: Access::Push,
            },
            User {
                name: "alice".into(),
                bcrypt_hash: "$2y$08$0123456789012345678901u7PLXyQ4KxxgIh/1E6k5o8fVoeR2sKi".into(),
                access: Access::Pull,
            },
        ]
    }

    pub fn spec(storage: Storage) -> RegistrySpec {
        let mut spec = RegistrySpec::new(
            "registry.example.com",
            storage,
            Secret::new("http-secret-0123456789"),
        );
        spec.users = users();
        spec
    }

    pub fn spaces() -> Storage {
        Storage::Spaces {
            bucket: "my-images".into(),
            region: "nyc3".into(),
            endpoint: "https://nyc3.digitaloceanspaces.com".into(),
            access_key: "DO00EXAMPLEACCESS".into(),
            secret_key: Secret::new("spaces-secret-key-value"),
            redirect: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_pass_and_injections_fail() {
        assert!(check_plain("fqdn", "registry.example.com").is_ok());
        for bad in ["", "a b", "a;b", "a}", "a\nb", "x\"y", "$host"] {
            assert!(check_plain("fqdn", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn spec_debug_hides_secrets() {
        let spec = fixtures::spec(fixtures::spaces());
        let dbg = format!("{spec:?}");
        assert!(!dbg.contains("http-secret-0123456789"));
        assert!(!dbg.contains("spaces-secret-key-value"));
    }
}
