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
/// The state's shape; `upgrade` brings older states to it.
pub const SCHEMA_VERSION: i64 = 2;

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

fn strings_map() -> T {
    T::Map(Box::new(T::String))
}

pub fn schema() -> Schema {
    // Nothing inside a user is marked sensitive: `users` is, as a whole (see its description
    // in the attributes below for why).
    let user = map(vec![
        ("password", a(T::String, C::Optional, false, "Plaintext password (12 to 72 bytes). The provider hashes it with bcrypt; only the hash reaches the droplet. At most one of `password` and `password_bcrypt`; with neither, the provider generates one (see `generated_passwords`).")),
        ("password_bcrypt", a(T::String, C::Optional, false, "A bcrypt hash (`$2y$`, `$2b$` or `$2a$`), for passwords you do not want in state. At most one of `password` and `password_bcrypt`.")),
        ("access", a(T::String, C::Optional, false, "`push` (pull and push; what an unset `access` means) or `pull` (pull only). The effective value of every user is in `user_access`.")),
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
                "renew",
                a(
                    T::String,
                    C::OptionalComputed,
                    false,
                    "`droplet` (default): the droplet renews its ACME certificate itself (a systemd timer runs Debian's certbot when the CA's renewal information, or else `renew_before_days`, says so) with no DigitalOcean credential on it, and the provider takes the renewed certificate into state at refresh. With `dns-01` the provider delegates `_acme-challenge.<fqdn>` to the droplet (an NS record), whose DNS server answers for that one name on port 53. `plan`: renewal only through `tofu plan`/`apply`.",
                ),
            ),
            (
                "renew_interval",
                a(
                    T::String,
                    C::OptionalComputed,
                    false,
                    "How often the droplet checks whether to renew, as a Go duration (default `12h`, at least `5s`).",
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
            ("accept_image_loss", a(T::Bool, C::Optional, false, "`droplet` only, after `tofu import`: let the next apply replace the imported droplet although the images on its disk are lost with it (the provider cannot reach a droplet it did not make to carry them over). Without it, that plan fails. Has no other effect.")),
            ("spaces_redirect", a(T::Bool, C::OptionalComputed, false, "`spaces` only: redirect pulls to Spaces instead of proxying blobs through the droplet (default false).")),
            ("spaces_access_id", a(T::String, C::Optional, true, "`spaces` only: a Spaces access key used instead of the provider's `spaces_access_id` to create, check and empty this registry's bucket. Set with `spaces_secret_key`. The registry itself still gets its own key for its bucket only; changing these keys recreates nothing.")),
            ("spaces_secret_key", a(T::String, C::Optional, true, "`spaces` only: the secret of `storage.spaces_access_id`.")),
            ("keep_deleted_days", a(T::Number, C::Optional, false, "`spaces` only: keep what is overwritten or deleted in the bucket for this many days (1 to 3650), so that a wrong delete or a garbage collector's mistake can be undone with any S3 tool (list the object versions, delete the delete markers). Sets the bucket's versioning on and its lifecycle configuration to one rule that expires noncurrent versions after these days (and delete markers left with none); refused when the bucket has lifecycle rules of its own. Kept versions count toward the bucket's size and bill. Removing it suspends versioning (S3 cannot turn it off); the rule stays, so the versions kept so far still expire. A force-destroy deletes every version.")),
            ("volume_snapshot_id", a(T::String, C::Optional, false, "`volume` only: a volume snapshot (`docker_registry_snapshot.<name>.id`) the registry's new volume starts from, with its images; `size_gib` must be at least the snapshot's `min_disk_size`. Read when the volume is created: changing it later changes nothing on a registry whose volume exists (its images are never replaced behind your back; the plan warns).")),
        ],
    );
    let monitoring = block(
        "A DigitalOcean uptime check of `https://<fqdn>` with alerts by e-mail: when the served certificate expires within `ssl_expiry_days` (so a renewal that keeps failing is noticed before users are), and when the registry is down. Removing the block, or `uptime_check = false`, deletes the check and its alerts.",
        vec![
            ("uptime_check", a(T::Bool, C::Optional, false, "Make the uptime check (type `https`, target `https://<fqdn>`) and its alerts (default false).")),
            ("alert_emails", a(strings(), C::Optional, false, "Who the alerts mail; required with `uptime_check = true`. DigitalOcean mails only addresses verified on the account.")),
            ("ssl_expiry_days", a(T::Number, C::Optional, false, "Alert when the served certificate expires within this many days (default 14, 1 to 365). With ACME, keep it below `tls.renew_before_days`, so that the alert means renewal failed.")),
            ("down_alert", a(T::Bool, C::Optional, false, "Also alert when the check finds the registry down in any of its regions (default true).")),
            ("regions", a(strings(), C::Optional, false, "Where DigitalOcean checks from: `us_east`, `us_west`, `eu_west`, `se_asia` (default all four).")),
        ],
    );
    let retention = block(
        "A retention rule: which tags of which repositories a collection asked for through `run` deletes first. Several rules may apply to one repository: a tag is deleted only when every rule that applies selects it (keep wins); a repository no rule applies to loses nothing. Tags are dated by their image's `created` (an index: its first image's); a tag without one is never deleted. The registry deletes by digest, so a tag whose image another kept tag also points at (or that a kept index names) is kept. What the rules select now is in `retention_preview`, and an apply deletes exactly that (a tag pushed again since is skipped). Scheduled collections apply no rules: deletion happens only in an apply whose plan showed it.",
        vec![
            ("repositories", a(strings(), C::Required, false, "Repository globs the rule applies to: `*` and `?` within one path segment, `**` across segments (`team/*`, `team/**`, `**` for all).")),
            ("keep_last", a(T::Number, C::Optional, false, "Keep this many newest tags of each repository (by image creation date; a tie goes to the tag whose name sorts last), not counting `keep_tags`. At least 0.")),
            ("older_than_days", a(T::Number, C::Optional, false, "Select only tags whose image was created more than this many days ago. At least 0.")),
            ("keep_tags", a(strings(), C::Optional, false, "Tag globs this rule never selects (`latest`, `v*`, `release-*`); `*` and `?`.")),
            ("allow_delete_all", a(T::Bool, C::Optional, false, "A rule without `keep_last` or `older_than_days` (or with both 0) selects every tag of its repositories but `keep_tags`: it needs `allow_delete_all = true` (default false).")),
        ],
    );
    let mut garbage_collection = block(
        "Garbage collection on the droplet: a run frees the space of blobs no manifest references any more (after tags or manifests were deleted) with no failed pull. During a run nginx answers pushes and deletes `503` with `Retry-After` while pulls go on; uploads in flight get up to 5 minutes to finish first (else the run collects nothing and says so); the registry restarts afterwards (its cache would serve deleted blobs) with a standby process answering meanwhile. `retention` blocks delete tags before a run asked for through `run`. Without this block: no collection.",
        vec![
            ("schedule", a(T::String, C::Optional, false, "When to collect, as a systemd `OnCalendar` expression (`daily`, `Sun 03:00`, `*-*-* 04:30:00 UTC`); checked at plan time for the common forms (weekdays, `YYYY-MM-DD`, `HH:MM[:SS]` with `*`, lists, ranges `..` and repetitions `/`). Without it, collections run only when `run` changes.")),
            ("delete_untagged", a(T::Bool, C::Optional, false, "Also delete manifests no tag points at (`garbage-collect --delete-untagged`; default false). Images pushed by digest only are then lost at the next run.")),
            ("run", a(T::Number, C::Optional, false, "Change it (a counter, like `droplet_generation`) to run one collection during the next apply; the result shows in `garbage_collection_last_run` and `garbage_collection_freed_bytes`. With `retention` rules, that apply first deletes the tags of `retention_preview` as planned (the plan shows each one leaving the preview). A plan that changes the rules cannot also change `run`: the new rules' preview is shown first.")),
        ],
    );
    garbage_collection
        .blocks
        .insert("retention".to_owned(), NestedBlock::List(retention));
    let backups = block(
        "DigitalOcean's automated backups of the droplet's disk (a backup is an image of the whole disk, kept 7 days for daily plans and 4 weeks for weekly ones; DigitalOcean bills them). With the block: on; removing it turns them off. Changes apply in place through the droplet's backup actions. A volume or Spaces bucket is not part of a droplet backup: see `docker_registry_snapshot` for volumes.",
        vec![
            ("plan", a(T::String, C::Optional, false, "`daily` (default) or `weekly`.")),
            ("weekday", a(T::String, C::Optional, false, "Weekly plans only: the day of the backup window, `SUN` (default), `MON`, `TUE`, `WED`, `THU`, `FRI` or `SAT`.")),
            ("hour", a(T::Number, C::Optional, false, "When the 4-hour backup window starts, UTC: 0 (default), 4, 8, 12, 16 or 20.")),
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
        ("image", a(T::String, C::OptionalComputed, false, "Droplet image: a slug (default `debian-12-x64`, a Debian 12 image) or the numeric id of a Droplet snapshot or custom image made from one, for example with the packages installed already (the first boot then installs nothing). A change replaces the droplet inside an update; stored images stay when storage is a volume or Spaces.")),
        ("droplet_generation", a(T::Number, C::Optional, false, "Bump to replace the droplet in place (fresh machine, same registry, same storage).")),
        ("fqdn", a(T::String, C::Required, false, "The registry's name, e.g. `registry.example.com`. Its domain must be managed in this DigitalOcean account. Changing it replaces the registry.")),
        ("ssh_key_fingerprints", a(strings(), C::Optional, false, "Fingerprints of DigitalOcean SSH keys allowed to log in as root, for people. The provider's own management key is separate.")),
        ("ssh_allowed_cidrs", a(strings(), C::OptionalComputed, false, "Who may reach port 22 (DigitalOcean firewall). Default: anywhere.")),
        ("users", Attribute {
            attr_type: T::AttributeMap(user),
            description: Description::markdown("Registry users by name: `{ password = ... }`, `{ password_bcrypt = ... }` or `{}` (a generated password), each with an optional `access`. Changes apply on the running registry with no restart. Sensitive as a whole: OpenTofu marks every sensitive attribute inside a map element on its own, and its cost grows with the square of the number of users (about 4 s of every plan at 1,000 users); plans show who is added, removed or changes access in `user_access`."),
            constraint: C::Optional,
            sensitive: true,
            deprecated: false,
        }),
        ("anonymous_pull", a(T::Bool, C::OptionalComputed, false, "Let anyone pull without credentials (default false). Pushing still needs a `push` user.")),
        ("ui", a(T::Bool, C::OptionalComputed, false, "Serve a web page at `https://<fqdn>/` (default false): repositories, their tags with digest, size, platforms and creation time, and the `docker pull` command to copy. People sign in with their registry user (the password stays in the browser tab's memory); with `anonymous_pull`, a repository opens by name without signing in. Push users can delete a tag there, after a confirmation: the registry accepts deletes (of a manifest, by digest) from push users, as docker's API does.")),
        ("reserved_ip", a(T::Bool, C::OptionalComputed, false, "Give the registry a DigitalOcean reserved IP (default false): the A record points at it, and a droplet replacement (`image`, `droplet_generation`) moves it to the new droplet once that is verified, with no DNS change and no wait for caches: no client is left with an old address. Turning it on or off changes the record in place (and, with `self_signed`, issues the certificate again from the same CA: it names the reserved IP); destroy deletes the reserved IP.")),
        ("tags", a(strings(), C::Optional, false, "Tags for the droplets.")),
        ("replicas", a(T::Number, C::OptionalComputed, false, "How many droplets serve the registry (default 1, at most 10). With 2 or more (which needs `storage.backend = \"spaces\"`), the droplets stand behind a DigitalOcean load balancer that the A record points at: TLS passes through to the droplets (443), HTTP too (80), and the balancer checks each droplet's registry at `/healthz` on port 80. Every droplet holds the same certificate, users, `http_secret` and Spaces key; every change reaches each one and is verified on it. A change adds droplets (each verified before the balancer sends it requests) or removes them (taken out of the balancer and drained first); a new `image` or `droplet_generation` replaces them one at a time, so pulls never fail. With 2 or more, `reserved_ip` is not needed (the balancer's address stays), the certificate is renewed by the plan (`tls.renew = \"plan\"`, the default then), and garbage is collected through the plan only (`garbage_collection.run`; no `schedule`): writes are held on every droplet while the first collects, then each other droplet's registry restarts out of the balancer.")),
        ("http_secret", a(T::String, C::OptionalComputed, true, "The registry's `http.secret` (it signs upload state, and the provider derives the key that signs the registry's tokens from it): set it when several servers must share one, 16 to 256 printable ASCII characters without spaces. Unset: a random one generated once and kept across applies and droplet replacements. Removing it from the configuration returns to a newly generated one. A change rewrites the registry's configuration and restarts it (uploads in progress and tokens issued before fail once).")),
        // Computed.
        ("id", a(T::String, C::Computed, false, "The registry's id: its fqdn.")),
        ("droplet_id", a(T::Number, C::Computed, false, "Id of the droplet that serves the registry (with `replicas`, the first of `droplet_ids`).")),
        ("ipv4_address", a(T::String, C::Computed, false, "Public IPv4 address of the droplet (with `replicas`, the first of `ipv4_addresses`).")),
        ("ipv6_address", a(T::String, C::Computed, false, "Public IPv6 address of the droplet, when it has one.")),
        ("droplet_ids", a(T::List(Box::new(T::Number)), C::Computed, false, "Ids of every droplet that serves the registry (`replicas` of them), `droplet_id` first.")),
        ("ipv4_addresses", a(strings(), C::Computed, false, "Public IPv4 addresses of the droplets, in the order of `droplet_ids`.")),
        ("load_balancer_id", a(T::String, C::Computed, false, "With `replicas` of 2 or more: id of the DigitalOcean load balancer in front of the droplets.")),
        ("load_balancer_ip", a(T::String, C::Computed, false, "With `replicas` of 2 or more: the load balancer's address, where the A record points.")),
        ("reserved_ip_address", a(T::String, C::Computed, false, "The reserved IP the A record points at, with `reserved_ip = true`.")),
        ("url", a(T::String, C::Computed, false, "`https://<fqdn>`.")),
        ("domain", a(T::String, C::Computed, false, "The DigitalOcean domain that holds the registry's records.")),
        ("record_id", a(T::Number, C::Computed, false, "Id of the A record for the fqdn.")),
        ("caa_record_id", a(T::Number, C::Computed, false, "Id of the CAA record, with `tls.caa = true`.")),
        ("aaaa_record_id", a(T::Number, C::Computed, false, "Id of the AAAA record, when the droplet has IPv6.")),
        ("firewall_id", a(T::String, C::Computed, false, "Id of the DigitalOcean firewall in front of the droplet.")),
        ("host_key_fingerprint", a(T::String, C::Computed, false, "SSH host key fingerprint of the droplet (`SHA256:…`): the registry's own key, the same on every droplet of the registry, installed right after the droplet's first boot; the provider accepts no other.")),
        ("user_data_host_key_fingerprint", a(T::String, C::Computed, false, "Fingerprint of the throwaway SSH host key the droplet was born with. Its user data carries that key, and any process on the droplet can read user data from the metadata service, so right after the first connection the provider installs the registry's own key (`host_key_fingerprint`) and refuses this one.")),
        ("certificate_pem", a(T::String, C::Computed, false, "The certificate the registry serves.")),
        ("certificate_not_after", a(T::String, C::Computed, false, "When the certificate expires (RFC 3339).")),
        ("ca_certificate_pem", a(T::String, C::Computed, false, "With `self_signed`: the CA to put in `/etc/docker/certs.d/<fqdn>/ca.crt`.")),
        ("certificate_renew_at", a(T::String, C::Computed, false, "When the certificate is due for renewal (RFC 3339): a moment in the CA's suggested window (ACME Renewal Information, RFC 9773) when the CA offers one, else `renew_before_days` before expiry. The droplet and the plan use the same rule.")),
        ("renewal_status", a(T::String, C::Computed, false, "What the droplet's last renewal check did (JSON: `result` waiting, renewed or failed, `checked_at`, `renew_at`, and a short `message` when it failed), as last read.")),
        ("acme_delegation_record_id", a(T::Number, C::Computed, false, "With `renew = \"droplet\"` and `dns-01`: id of the NS record that delegates `_acme-challenge.<fqdn>` to the droplet.")),
        ("uptime_check_id", a(T::String, C::Computed, false, "With `monitoring.uptime_check`: id of the DigitalOcean uptime check.")),
        ("uptime_alert_ids", a(strings_map(), C::Computed, false, "With `monitoring.uptime_check`: ids of the check's alerts by type (`ssl_expiry`, `down`).")),
        ("garbage_collection_last_run", a(T::String, C::Computed, false, "When the droplet's last garbage collection finished (RFC 3339), as last read; null before the first.")),
        ("garbage_collection_freed_bytes", a(T::Number, C::Computed, false, "What the last garbage collection freed, in bytes, as last read (null with Spaces, whose bucket is not measured).")),
        ("retention_preview", a(strings_map(), C::Computed, false, "With `garbage_collection.retention` rules: the tags they select now, `\"<repository>:<tag>\" = \"<digest>\"`, as last read from the registry (and evaluated again by a plan that changes the rules). An apply that runs a collection (`run` changed) deletes exactly these, each only while its tag still points at that digest, and the plan shows them leaving the preview.")),
        ("retention_deleted", a(strings_map(), C::Computed, false, "What the last apply's retention deleted, `\"<repository>:<tag>\" = \"<digest>\"`: the planned preview less the tags pushed again (or deleted) since the plan.")),
        ("acme_ca_certificates", a(T::String, C::Computed, false, "The provider's `acme_ca_certificates` as last read: the extra roots the droplet trusts for the ACME directory when it renews.")),
        ("registry_version", a(T::String, C::Computed, false, "Version of the registry running on the droplet.")),
        ("docker_config_json", a(T::String, C::Computed, true, "A docker `config.json` with credentials for one user (docker keeps one per registry): the first push user by name whose password the provider knows (given or generated), else the first such pull user.")),
        ("user_access", a(strings_map(), C::Computed, false, "Every user's effective access (`push` or `pull`) by name: what plans show of `users`, which is sensitive.")),
        ("generated_passwords", a(strings_map(), C::Computed, true, "The passwords the provider generated, by user name: one for each user given neither `password` nor `password_bcrypt` (32 random letters and digits), kept until that user sets a password or is removed.")),
        ("bcrypt_hashes", a(strings_map(), C::Computed, true, "The bcrypt hash of each user, as written to the droplet: `password_bcrypt`, or a hash the provider made, kept until the password changes.")),
        ("docker_config_jsons", a(strings_map(), C::Computed, true, "A docker `config.json` per user whose password the provider knows (given or generated), by user name: `{\"auths\": {\"<fqdn>\": {\"auth\": \"<base64 of user:password>\"}}}`, as `docker login` writes it. Docker, podman and skopeo (`--authfile`) read it, and it is the `.dockerconfigjson` of a Kubernetes image pull secret as it is: the kubernetes provider's `data` takes it unencoded; a Secret manifest's `data` takes `base64encode()` of it.")),
        ("storage_used_bytes", a(T::Number, C::Computed, false, "How much the registry stores, as last read.")),
        ("volume_id", a(T::String, C::Computed, false, "Id of the volume, with `backend = \"volume\"`.")),
        ("spaces_endpoint", a(T::String, C::Computed, false, "With `backend = \"spaces\"`: the S3 endpoint the registry uses.")),
        ("spaces_key_id", a(T::String, C::Computed, false, "With `backend = \"spaces\"`: the access key the registry holds: readwrite on its bucket only, never the provider's own credentials.")),
        ("bucket_created", a(T::Bool, C::Computed, false, "With `backend = \"spaces\"`: whether this registry created the bucket. A bucket that existed before is adopted, and destroy never empties nor deletes it, even with `force_destroy`.")),
        ("retired_droplet_ids", a(T::List(Box::new(T::Number)), C::Computed, false, "Droplets this registry replaced and could not delete yet (an API failure): the next apply, or destroy, deletes them.")),
        ("files_digest", a(strings_map(), C::Computed, false, "sha256 of each file the provider manages on the droplet; a hand edit shows up here in the plan and the next apply restores the file.")),
        ("management_private_key", a(T::String, C::Computed, true, "The provider's own SSH key for the droplet (OpenSSH format).")),
        ("management_public_key", a(T::String, C::Computed, false, "Public half of the management key.")),
        ("host_private_key", a(T::String, C::Computed, true, "The droplet's SSH host key, derived by the provider from the management key; never in user data.")),
        ("host_public_key", a(T::String, C::Computed, false, "Public half of the droplet's SSH host key.")),
        ("tls_private_key_pem", a(T::String, C::Computed, true, "Private key of the served certificate.")),
        ("ca_private_key_pem", a(T::String, C::Computed, true, "With `self_signed`: the private CA's key.")),
        ("acme_account_key", a(T::String, C::Computed, true, "The ACME account's credentials, made once per registry.")),
        ("spaces_secret_key", a(T::String, C::Computed, true, "Secret of `spaces_key_id`.")),
    ]);

    let mut blocks = HashMap::new();
    blocks.insert("tls".to_owned(), NestedBlock::Optional(tls));
    blocks.insert("storage".to_owned(), NestedBlock::Optional(storage));
    blocks.insert("timeouts".to_owned(), NestedBlock::Optional(timeouts));
    blocks.insert("monitoring".to_owned(), NestedBlock::Optional(monitoring));
    blocks.insert(
        "garbage_collection".to_owned(),
        NestedBlock::Optional(garbage_collection),
    );
    blocks.insert("backups".to_owned(), NestedBlock::Optional(backups));
    Schema {
        // 2: users lost `bcrypt_hash` (now `bcrypt_hashes`); see `upgrade`.
        version: SCHEMA_VERSION,
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

/// True when an attribute (at any depth) of that name is sensitive: what `Debug` of the state
/// types hides whatever the name says.
pub fn is_sensitive(name: &str) -> bool {
    fn in_block(b: &Block, name: &str) -> bool {
        b.attributes.iter().any(|(n, a)| {
            (n == name && a.sensitive)
                || matches!(&a.attr_type, T::AttributeMap(m) | T::AttributeSingle(m) | T::AttributeList(m) | T::AttributeSet(m)
                    if m.iter().any(|(n, a)| n == name && a.sensitive))
        }) || b.blocks.values().any(|nb| match nb {
            NestedBlock::Single(b)
            | NestedBlock::List(b)
            | NestedBlock::Set(b)
            | NestedBlock::Map(b)
            | NestedBlock::Group(b)
            | NestedBlock::Optional(b) => in_block(b, name),
        })
    }
    in_block(&schema().block, name)
}
