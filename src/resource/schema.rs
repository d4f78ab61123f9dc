//! The schema of `docker_registry`: every argument and computed attribute with its
//! description, which also feeds the generated docs.

use std::collections::HashMap;

use tf_provider::schema::{
    Attribute, AttributeConstraint as C, AttributeType as T, Block, Description, NestedBlock,
    Schema,
};

pub const DEFAULT_SIZE: &str = "s-1vcpu-1gb";
pub const DEFAULT_IMAGE: &str = "debian-12-x64";
pub const DEFAULT_ACCESS: &str = "push";
pub const DEFAULT_CIDRS: [&str; 2] = ["0.0.0.0/0", "::/0"];

fn a(ty: T, c: C, sensitive: bool, desc: &str) -> Attribute {
    Attribute {
        attr_type: ty,
        description: Description::markdown(desc),
        constraint: c,
        sensitive,
        deprecated: false,
    }
}

fn map(items: Vec<(&str, Attribute)>) -> HashMap<String, Attribute> {
    items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn block(desc: &str, attributes: Vec<(&str, Attribute)>) -> Block {
    Block {
        version: 1,
        attributes: map(attributes),
        blocks: HashMap::new(),
        description: Description::markdown(desc),
        deprecated: false,
    }
}

fn strings() -> T {
    T::List(Box::new(T::String))
}

pub fn schema() -> Schema {
    let user = map(vec![
        ("password", a(T::String, C::Optional, true, "Plaintext password (12 characters or more). The provider hashes it with bcrypt; only the hash reaches the droplet. Exactly one of `password` and `password_bcrypt`.")),
        ("password_bcrypt", a(T::String, C::Optional, true, "A bcrypt hash (`$2y$`, `$2b$` or `$2a$`), for passwords you do not want in state. Exactly one of `password` and `password_bcrypt`.")),
        ("access", a(T::String, C::OptionalComputed, false, "`push` (default: pull and push) or `pull` (GET and HEAD only).")),
        ("bcrypt_hash", a(T::String, C::Computed, true, "The hash written to the droplet; kept until the password changes.")),
    ]);
    let tls = block(
        "Where the registry's certificate comes from. Without this block: `acme`.",
        vec![
            (
                "source",
                a(
                    T::String,
                    C::OptionalComputed,
                    false,
                    "`acme` (default), `self_signed` or `provided`.",
                ),
            ),
            (
                "email",
                a(
                    T::String,
                    C::Optional,
                    false,
                    "Contact e-mail of the ACME account.",
                ),
            ),
            (
                "challenge",
                a(
                    T::String,
                    C::OptionalComputed,
                    false,
                    "`dns-01` (default, through DigitalOcean DNS) or `http-01`.",
                ),
            ),
            (
                "key_type",
                a(
                    T::String,
                    C::OptionalComputed,
                    false,
                    "`ecdsa-p256` (default), `rsa-2048` or `rsa-4096`.",
                ),
            ),
            (
                "renew_before_days",
                a(
                    T::Number,
                    C::OptionalComputed,
                    false,
                    "Renew when the certificate expires within this many days (default 30).",
                ),
            ),
            (
                "revoke_on_destroy",
                a(
                    T::Bool,
                    C::OptionalComputed,
                    false,
                    "Revoke an ACME certificate on destroy (default false).",
                ),
            ),
            (
                "caa",
                a(
                    T::Bool,
                    C::OptionalComputed,
                    false,
                    "Manage a CAA record that allows only the ACME CA (default false).",
                ),
            ),
            (
                "certificate_pem",
                a(
                    T::String,
                    C::Optional,
                    false,
                    "With `source = \"provided\"`: the certificate chain, leaf first.",
                ),
            ),
            (
                "private_key_pem",
                a(
                    T::String,
                    C::Optional,
                    true,
                    "With `source = \"provided\"`: the certificate's private key.",
                ),
            ),
        ],
    );
    let storage = block(
        "Where images are stored. Without this block: the droplet's disk.",
        vec![
            ("backend", a(T::String, C::OptionalComputed, false, "`droplet` (default), `volume` or `spaces`. Changing it replaces the registry; images are not migrated.")),
            ("size_gib", a(T::Number, C::Optional, false, "`volume` only: the volume's size in GiB (1 to 16384); it can grow in place, never shrink.")),
            ("bucket", a(T::String, C::Optional, false, "`spaces` only: the bucket, in the registry's region; created if missing.")),
            ("force_destroy", a(T::Bool, C::OptionalComputed, false, "Let destroy delete a volume or bucket that still holds images (default false).")),
            ("spaces_redirect", a(T::Bool, C::OptionalComputed, false, "`spaces` only: redirect pulls to Spaces instead of proxying blobs through the droplet (default false).")),
        ],
    );
    let timeouts = block(
        "How long each operation may take, as Go durations (`20m`, `1h30m`).",
        vec![
            ("create", a(T::String, C::Optional, false, "Default `20m`.")),
            ("update", a(T::String, C::Optional, false, "Default `20m`.")),
            ("delete", a(T::String, C::Optional, false, "Default `10m`.")),
        ],
    );

    let attributes = map(vec![
        // Arguments.
        ("name", a(T::String, C::Required, false, "The droplet's name: a lowercase DNS label (a-z, 0-9, `-`; at most 63).")),
        ("region", a(T::String, C::Required, false, "DigitalOcean region slug, e.g. `ams3`. Changing it replaces the whole registry.")),
        ("size", a(T::String, C::OptionalComputed, false, "Droplet size slug (default `s-1vcpu-1gb`). Changes in place with a resize, which powers the droplet off for a moment.")),
        ("image", a(T::String, C::OptionalComputed, false, "Droplet image slug (default `debian-12-x64`). A change replaces the droplet inside an update; stored images stay when storage is a volume or Spaces.")),
        ("droplet_generation", a(T::Number, C::Optional, false, "Bump to replace the droplet in place (fresh machine, same registry, same storage).")),
        ("fqdn", a(T::String, C::Required, false, "The registry's name, e.g. `registry.example.com`. Its domain must be managed in this DigitalOcean account. Changing it replaces the registry.")),
        ("ssh_key_fingerprints", a(strings(), C::Optional, false, "Fingerprints of DigitalOcean SSH keys allowed to log in as root, for people. The provider's own management key is separate.")),
        ("ssh_allowed_cidrs", a(strings(), C::OptionalComputed, false, "Who may reach port 22 (DigitalOcean firewall). Default: anywhere.")),
        ("users", Attribute {
            attr_type: T::AttributeMap(user),
            description: Description::markdown("Registry users by name. Changes apply on the running registry with no restart."),
            constraint: C::Optional,
            sensitive: false,
            deprecated: false,
        }),
        ("anonymous_pull", a(T::Bool, C::OptionalComputed, false, "Let anyone pull without credentials (default false). Pushing still needs a `push` user.")),
        ("tags", a(strings(), C::Optional, false, "Tags for the droplet.")),
        // Computed.
        ("id", a(T::String, C::Computed, false, "The registry's id: its fqdn.")),
        ("droplet_id", a(T::Number, C::Computed, false, "Id of the droplet that serves the registry.")),
        ("ipv4_address", a(T::String, C::Computed, false, "Public IPv4 address of the droplet.")),
        ("ipv6_address", a(T::String, C::Computed, false, "Public IPv6 address of the droplet, when it has one.")),
        ("url", a(T::String, C::Computed, false, "`https://<fqdn>`.")),
        ("domain", a(T::String, C::Computed, false, "The DigitalOcean domain that holds the registry's records.")),
        ("record_id", a(T::Number, C::Computed, false, "Id of the A record for the fqdn.")),
        ("caa_record_id", a(T::Number, C::Computed, false, "Id of the CAA record, with `tls.caa = true`.")),
        ("aaaa_record_id", a(T::Number, C::Computed, false, "Id of the AAAA record, when the droplet has IPv6.")),
        ("firewall_id", a(T::String, C::Computed, false, "Id of the DigitalOcean firewall in front of the droplet.")),
        ("host_key_fingerprint", a(T::String, C::Computed, false, "SSH host key fingerprint of the droplet (`SHA256:…`); the provider installs this key and accepts no other.")),
        ("certificate_pem", a(T::String, C::Computed, false, "The certificate the registry serves.")),
        ("certificate_not_after", a(T::String, C::Computed, false, "When the certificate expires (RFC 3339).")),
        ("ca_certificate_pem", a(T::String, C::Computed, false, "With `self_signed`: the CA to put in `/etc/docker/certs.d/<fqdn>/ca.crt`.")),
        ("registry_version", a(T::String, C::Computed, false, "Version of the registry running on the droplet.")),
        ("docker_config_json", a(T::String, C::Computed, true, "A docker `config.json` with an `auths` entry for each user that has a plaintext password.")),
        ("storage_used_bytes", a(T::Number, C::Computed, false, "How much the registry stores, as last read.")),
        ("volume_id", a(T::String, C::Computed, false, "Id of the volume, with `backend = \"volume\"`.")),
        ("spaces_endpoint", a(T::String, C::Computed, false, "With `backend = \"spaces\"`: the S3 endpoint the registry uses.")),
        ("spaces_key_id", a(T::String, C::Computed, false, "With `backend = \"spaces\"`: the access key the registry holds: readwrite on its bucket only, never the provider's own credentials.")),
        ("files_digest", a(T::Map(Box::new(T::String)), C::Computed, false, "sha256 of each file the provider manages on the droplet; a hand edit shows up here in the plan and the next apply restores the file.")),
        ("management_private_key", a(T::String, C::Computed, true, "The provider's own SSH key for the droplet (OpenSSH format).")),
        ("management_public_key", a(T::String, C::Computed, false, "Public half of the management key.")),
        ("host_private_key", a(T::String, C::Computed, true, "The droplet's SSH host key, generated by the provider.")),
        ("host_public_key", a(T::String, C::Computed, false, "Public half of the droplet's SSH host key.")),
        ("tls_private_key_pem", a(T::String, C::Computed, true, "Private key of the served certificate.")),
        ("ca_private_key_pem", a(T::String, C::Computed, true, "With `self_signed`: the private CA's key.")),
        ("acme_account_key", a(T::String, C::Computed, true, "The ACME account's credentials, made once per registry.")),
        ("spaces_secret_key", a(T::String, C::Computed, true, "Secret of `spaces_key_id`.")),
        ("http_secret", a(T::String, C::Computed, true, "The registry's `http.secret`.")),
    ]);

    let mut blocks = HashMap::new();
    blocks.insert("tls".to_owned(), NestedBlock::Optional(tls));
    blocks.insert("storage".to_owned(), NestedBlock::Optional(storage));
    blocks.insert("timeouts".to_owned(), NestedBlock::Optional(timeouts));
    Schema {
        version: 1,
        block: Block {
            version: 1,
            attributes,
            blocks,
            description: Description::markdown(
                "A private Docker registry on DigitalOcean: droplet, firewall, DNS record, TLS certificate, storage and users, converged over SSH.",
            ),
            deprecated: false,
        },
    }
}
