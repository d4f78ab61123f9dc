//! The schema of `docker_registry_snapshot`, with the descriptions the docs are made from.

use std::collections::HashMap;

use tf_provider::schema::{
    Attribute, AttributeConstraint as C, AttributeType as T, Block, Description, Schema,
};

fn a(ty: T, c: C, sensitive: bool, desc: &str) -> Attribute {
    Attribute {
        attr_type: ty,
        description: Description::markdown(desc),
        constraint: c,
        sensitive,
        deprecated: false,
    }
}

/// Arguments whose change takes a new snapshot (the old one is deleted after it).
pub const REPLACING: &[&str] = &["name", "volume_id", "triggers"];

pub fn schema() -> Schema {
    let attributes: HashMap<String, Attribute> = [
        ("name", a(T::String, C::Required, false, "The snapshot's name in DigitalOcean (1 to 255 characters). Changing it takes a new snapshot.")),
        ("volume_id", a(T::String, C::Required, false, "The registry's volume: `docker_registry.<name>.volume_id` (a registry with `storage { backend = \"volume\" }`). Changing it takes a new snapshot.")),
        ("droplet_address", a(T::String, C::Required, false, "Where the registry's droplet answers SSH: `docker_registry.<name>.ipv4_address`. Used only while a snapshot is taken; a change is stored, nothing is taken again.")),
        ("ssh_private_key", a(T::String, C::Required, true, "The registry's management key: `docker_registry.<name>.management_private_key`. The provider logs in with it to pause writes and freeze the file system while the snapshot is taken.")),
        ("host_public_key", a(T::String, C::Required, false, "The droplet's SSH host key: `docker_registry.<name>.host_public_key`; no other key is accepted.")),
        ("triggers", a(T::Map(Box::new(T::String)), C::Optional, false, "Arbitrary values; changing any takes a new snapshot (and deletes this one), e.g. `{ day = formatdate(\"YYYY-MM-DD\", plantimestamp()) }` for one snapshot a day, or a value your scheduler bumps.")),
        ("id", a(T::String, C::Computed, false, "The snapshot's DigitalOcean id: what `storage.volume_snapshot_id` of a new registry takes, and what `tofu import` takes.")),
        ("size_gigabytes", a(T::Number, C::Computed, false, "The data the snapshot holds, in GB, as DigitalOcean bills it.")),
        ("min_disk_size", a(T::Number, C::Computed, false, "The smallest volume, in GiB, that can be made from it: the volume's size when it was taken.")),
        ("created_at", a(T::String, C::Computed, false, "When the snapshot was taken (RFC 3339).")),
        ("quiesce", a(T::String, C::Computed, false, "How the file system was made consistent before the snapshot: `fsfreeze` (frozen: nothing in flight) or `sync` (the kernel refused a freeze, so the data was synced with writes refused; still consistent for the registry, which was not writing). Null for an imported snapshot.")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Schema {
        version: 1,
        block: Block {
            version: 1,
            attributes,
            blocks: HashMap::new(),
            description: Description::markdown(
                "A snapshot of a `docker_registry`'s volume, taken consistently: while it is taken nginx answers pushes and deletes `503` with `Retry-After` (pulls go on), uploads in flight are let land, the file system is synced and frozen, and DigitalOcean's volume snapshot is made; writes resume whatever happens (and by themselves on the droplet after 15 minutes if the provider never comes back). Destroy deletes the snapshot. A new registry starts from it with `storage { volume_snapshot_id = ... }`. Schedule snapshots with `triggers`.",
            ),
            deprecated: false,
        },
    }
}
