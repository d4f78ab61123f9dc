//! The registry's config.yml (YAML is a superset of JSON, so it is written as JSON) and the
//! systemd drop-in that points Debian's docker-registry unit at it.

use serde::Serialize;

use super::nginx::{token_issuer, token_realm};
use super::{check_plain, paths, RegistrySpec, RenderError, Storage};
use crate::secret::Secret;

/// Listen address: loopback only, nginx is the one door in.
pub const REGISTRY_ADDR: &str = "127.0.0.1:5000";

/// S3 part size. Each part is held in memory while it uploads, so it stays at the driver's
/// default (10 MiB) rather than larger; 10,000 parts still allow a ~100 GB layer.
const S3_CHUNK_SIZE: u64 = 10 * 1024 * 1024;

// Structs, not `json!`: field order is the declaration order whatever serde_json features
// other crates turn on, so the rendered file (and its digest) never changes by accident.

#[derive(Serialize)]
struct Config<'a> {
    // The only config schema version distribution 2.x knows.
    version: &'static str,
    log: Log,
    storage: StorageConfig<'a>,
    http: Http<'a>,
    health: Health,
    auth: Auth<'a>,
}

#[derive(Serialize)]
struct Auth<'a> {
    // The registry verifies a signed token on every request (a signature check, cheap) and
    // knows no users: passwords are checked once per token by nginx (see render::token).
    token: TokenAuth<'a>,
}

#[derive(Serialize)]
struct TokenAuth<'a> {
    // Where the Bearer challenge sends clients for a token.
    realm: String,
    // The token's `aud` must be this.
    service: &'a str,
    // The token's `iss` must be this.
    issuer: String,
    // The signing key's certificate: tokens whose `kid` names its key are trusted.
    rootcertbundle: &'static str,
}

#[derive(Serialize)]
struct Log {
    // With token auth the registry logs "authorized request" at info on every request: a
    // journald write per manifest GET, which cost a third of the request rate on a small
    // droplet. nginx logs each request already; warnings and errors still reach journald.
    level: &'static str,
    // nginx already logs each request; the registry's own access log only doubles journald.
    accesslog: Disabled,
    fields: LogFields,
}

#[derive(Serialize)]
struct Disabled {
    disabled: bool,
}

#[derive(Serialize)]
struct LogFields {
    service: &'static str,
}

#[derive(Serialize)]
struct StorageConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    filesystem: Option<Filesystem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3: Option<S3<'a>>,
    // Lets users delete manifests and blobs through the API (and garbage-collect later);
    // without it a DELETE answers 405.
    delete: Enabled,
    // Blob descriptors are immutable, so an in-process cache is always safe and saves storage
    // round trips (they cost most on Spaces).
    cache: Cache,
    // With S3, the registry would otherwise answer blob GETs with a redirect to a presigned
    // Spaces URL: only wanted when the user asked for it, since clients then need to reach
    // Spaces directly. Ignored by the filesystem driver.
    redirect: Redirect,
    maintenance: Maintenance,
}

#[derive(Serialize)]
struct Filesystem<'a> {
    rootdirectory: &'a str,
}

#[derive(Serialize)]
struct S3<'a> {
    accesskey: &'a str,
    secretkey: &'a Secret,
    // Spaces signs with the region slug (nyc3); the driver skips its AWS region list check
    // because `regionendpoint` is set.
    region: &'a str,
    // Setting an endpoint also makes distribution 2.8 use path-style requests (it has no
    // `forcepathstyle` key), which Spaces and S3-compatible test servers both accept.
    regionendpoint: &'a str,
    bucket: &'a str,
    secure: bool,
    // Spaces only accepts SigV4.
    v4auth: bool,
    chunksize: u64,
    // The bucket belongs to this registry; storing at its root keeps the empty-check on
    // destroy a plain "any object?" question.
    rootdirectory: &'static str,
}

#[derive(Serialize)]
struct Enabled {
    enabled: bool,
}

#[derive(Serialize)]
struct Cache {
    blobdescriptor: &'static str,
}

#[derive(Serialize)]
struct Redirect {
    disable: bool,
}

#[derive(Serialize)]
struct Maintenance {
    // Abandoned uploads (an interrupted push) otherwise stay on disk or in the bucket forever.
    uploadpurging: UploadPurging,
}

#[derive(Serialize)]
struct UploadPurging {
    enabled: bool,
    age: &'static str,
    interval: &'static str,
    dryrun: bool,
}

#[derive(Serialize)]
struct Http<'a> {
    addr: &'static str,
    // Absolute URLs in Location headers use this; behind nginx the registry would otherwise
    // guess the scheme from X-Forwarded-Proto alone.
    host: String,
    // Signs upload session state; a random one per start would break uploads across a
    // restart, so the provider keeps one in state.
    secret: &'a Secret,
    // On restart (a config change) in-flight pulls and pushes get this long to finish.
    draintimeout: &'static str,
    headers: Headers,
}

#[derive(Serialize)]
struct Headers {
    #[serde(rename = "X-Content-Type-Options")]
    x_content_type_options: [&'static str; 1],
}

#[derive(Serialize)]
struct Health {
    // While the storage backend fails this check (a detached volume, revoked Spaces keys),
    // the registry answers 503 and /debug/health says why: a clear failure instead of pulls
    // that half work.
    storagedriver: StorageHealth,
}

#[derive(Serialize)]
struct StorageHealth {
    enabled: bool,
    interval: &'static str,
    threshold: u32,
}

/// The registry's configuration file (`paths::REGISTRY_CONFIG`). Holds the http secret and,
/// with Spaces, the secret key: write it 0640 root:docker-registry.
pub fn registry_config(spec: &RegistrySpec) -> Result<String, RenderError> {
    check_plain("fqdn", &spec.fqdn)?;
    let (filesystem, s3, redirect_disabled) = match &spec.storage {
        Storage::Droplet => (
            Some(Filesystem {
                rootdirectory: paths::DROPLET_STORAGE,
            }),
            None,
            true,
        ),
        Storage::Volume { mount_path } => {
            check_plain("volume mount path", mount_path)?;
            (
                Some(Filesystem {
                    rootdirectory: mount_path,
                }),
                None,
                true,
            )
        }
        Storage::Spaces {
            bucket,
            region,
            endpoint,
            access_key,
            secret_key,
            redirect,
        } => (
            None,
            Some(S3 {
                accesskey: access_key,
                secretkey: secret_key,
                region,
                regionendpoint: endpoint,
                bucket,
                secure: !endpoint.starts_with("http://"),
                v4auth: true,
                chunksize: S3_CHUNK_SIZE,
                rootdirectory: "/",
            }),
            !*redirect,
        ),
    };
    let config = Config {
        version: "0.1",
        log: Log {
            level: "warn",
            accesslog: Disabled { disabled: true },
            fields: LogFields {
                service: "registry",
            },
        },
        storage: StorageConfig {
            filesystem,
            s3,
            delete: Enabled { enabled: true },
            cache: Cache {
                blobdescriptor: "inmemory",
            },
            redirect: Redirect {
                disable: redirect_disabled,
            },
            maintenance: Maintenance {
                uploadpurging: UploadPurging {
                    enabled: true,
                    age: "168h",
                    interval: "24h",
                    dryrun: false,
                },
            },
        },
        http: Http {
            addr: REGISTRY_ADDR,
            host: format!("https://{}", spec.fqdn),
            secret: &spec.http_secret,
            draintimeout: "60s",
            headers: Headers {
                x_content_type_options: ["nosniff"],
            },
        },
        health: Health {
            storagedriver: StorageHealth {
                enabled: true,
                interval: "10s",
                threshold: 3,
            },
        },
        auth: Auth {
            token: TokenAuth {
                realm: token_realm(&spec.fqdn),
                service: &spec.fqdn,
                issuer: token_issuer(&spec.fqdn),
                rootcertbundle: paths::TOKEN_CERT,
            },
        },
    };
    let mut text = serde_json::to_string_pretty(&config).expect("config serializes");
    text.push('\n');
    Ok(text)
}

/// The drop-in for Debian's `docker-registry.service` (`paths::REGISTRY_DROPIN`).
pub fn registry_dropin(spec: &RegistrySpec) -> Result<String, RenderError> {
    let mut unit = String::from(
        "# Managed by terraform-provider-docker: hand edits are undone by the next apply.\n",
    );
    if let Storage::Volume { mount_path } = &spec.storage {
        check_plain("volume mount path", mount_path)?;
        // Never start on an unmounted volume: the registry would fill the root disk, and the
        // images would vanish behind the mount once it appears.
        unit.push_str(&format!("[Unit]\nRequiresMountsFor={mount_path}\n\n"));
    }
    unit.push_str(&format!(
        "[Service]
# Debian's unit reads the package's conffile; ours lives beside it (see paths::REGISTRY_CONFIG).
ExecStart=
ExecStart={binary} serve {config}
# The S3 driver fails at start when AWS_CA_BUNDLE is set in its environment.
UnsetEnvironment=AWS_CA_BUNDLE
Restart=on-failure
RestartSec=2s
# Longer than http.draintimeout, so a restart lets in-flight transfers finish.
TimeoutStopSec=75s
",
        binary = paths::REGISTRY_BINARY,
        config = paths::REGISTRY_CONFIG,
    ));
    Ok(unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures;
    use crate::render::golden::assert_golden;

    fn parsed(spec: &RegistrySpec) -> serde_json::Value {
        serde_json::from_str(&registry_config(spec).unwrap()).unwrap()
    }

    #[test]
    fn droplet_disk() {
        let spec = fixtures::spec(Storage::Droplet);
        assert_golden("registry-droplet.yml", &registry_config(&spec).unwrap());
        let v = parsed(&spec);
        assert_eq!(v["version"], "0.1");
        assert_eq!(v["http"]["addr"], "127.0.0.1:5000");
        assert_eq!(v["http"]["secret"], "http-secret-0123456789");
        assert_eq!(
            v["storage"]["filesystem"]["rootdirectory"],
            "/var/lib/docker-registry"
        );
        assert_eq!(v["storage"]["delete"]["enabled"], true);
        // Token authentication: the registry trusts tokens from the fqdn's token endpoint.
        let token = &v["auth"]["token"];
        assert_eq!(token["realm"], "https://registry.example.com/token");
        assert_eq!(token["service"], "registry.example.com");
        assert_eq!(token["issuer"], "https://registry.example.com/token");
        assert_eq!(
            token["rootcertbundle"],
            "/etc/docker/registry/token-signer.crt"
        );
        assert!(v["storage"].get("s3").is_none());
    }

    #[test]
    fn volume() {
        let spec = fixtures::spec(Storage::Volume {
            mount_path: "/mnt/registry".into(),
        });
        assert_golden("registry-volume.yml", &registry_config(&spec).unwrap());
        assert_eq!(
            parsed(&spec)["storage"]["filesystem"]["rootdirectory"],
            "/mnt/registry"
        );
        let unit = registry_dropin(&spec).unwrap();
        assert_golden("docker-registry-volume.conf", &unit);
        assert!(unit.contains("RequiresMountsFor=/mnt/registry\n"));
    }

    #[test]
    fn spaces() {
        let spec = fixtures::spec(fixtures::spaces());
        assert_golden("registry-spaces.yml", &registry_config(&spec).unwrap());
        let v = parsed(&spec);
        let s3 = &v["storage"]["s3"];
        assert_eq!(s3["bucket"], "my-images");
        assert_eq!(s3["region"], "nyc3");
        assert_eq!(s3["regionendpoint"], "https://nyc3.digitaloceanspaces.com");
        assert_eq!(s3["secretkey"], "spaces-secret-key-value");
        assert_eq!(s3["v4auth"], true);
        assert_eq!(s3["secure"], true);
        assert_eq!(v["storage"]["redirect"]["disable"], true);
        assert!(v["storage"].get("filesystem").is_none());
    }

    #[test]
    fn spaces_redirect_only_when_asked() {
        let mut storage = fixtures::spaces();
        if let Storage::Spaces { redirect, .. } = &mut storage {
            *redirect = true;
        }
        let v = parsed(&fixtures::spec(storage));
        assert_eq!(v["storage"]["redirect"]["disable"], false);
    }

    #[test]
    fn droplet_dropin() {
        let unit = registry_dropin(&fixtures::spec(Storage::Droplet)).unwrap();
        assert_golden("docker-registry-droplet.conf", &unit);
        assert!(unit.contains(
            "ExecStart=\nExecStart=/usr/bin/docker-registry serve /etc/docker/registry/provider.yml\n"
        ));
        assert!(unit.contains("UnsetEnvironment=AWS_CA_BUNDLE\n"));
        assert!(!unit.contains("RequiresMountsFor"));
    }
}
