//! The state model of `docker_registry_snapshot`: a plain serde struct over tf-provider's
//! `Value` (value, null, unknown), apart from the logic that fills it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tf_provider::value::Value;

use crate::resource::state::{N, S};

#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct SnapshotState {
    // Arguments.
    pub name: S,
    pub volume_id: S,
    pub droplet_address: S,
    pub ssh_private_key: S,
    pub host_public_key: S,
    pub triggers: Value<BTreeMap<String, S>>,

    // Computed.
    pub id: S,
    pub size_gigabytes: Value<Number>,
    pub min_disk_size: N,
    pub created_at: S,
    pub quiesce: S,
}

/// A Number attribute that need not be whole. OpenTofu sends a number that is not exactly a
/// float64 (a fraction read back from the JSON state, as `2.34`) as its decimal string in
/// msgpack: read as any of the three.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Number(pub f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Number, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, or a number as a string")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Number, E> {
                v.trim().parse().map(Number).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl SnapshotState {
    /// What apply fills in, unknown in a plan that creates.
    pub fn unknown_computed(&mut self) {
        self.id = Value::Unknown;
        self.size_gigabytes = Value::Unknown;
        self.min_disk_size = Value::Unknown;
        self.created_at = Value::Unknown;
        self.quiesce = Value::Unknown;
    }

    /// The snapshot as DigitalOcean describes it.
    pub fn take(&mut self, s: &crate::do_api::Snapshot) {
        self.id = Value::Value(s.id.clone());
        self.name = Value::Value(s.name.clone());
        if !s.resource_id.is_empty() {
            self.volume_id = Value::Value(s.resource_id.clone());
        }
        self.size_gigabytes = Value::Value(Number(s.size_gigabytes));
        self.min_disk_size = Value::Value(s.min_disk_size as i64);
        self.created_at = s.created_at.clone().map_or(Value::Null, Value::Value);
    }
}

// Never printed with the key: `Debug` names the snapshot only.
impl std::fmt::Debug for SnapshotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotState")
            .field("id", &self.id.as_ref_option())
            .field("name", &self.name.as_ref_option())
            .field("volume_id", &self.volume_id.as_ref_option())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fraction_reads_as_opentofu_sends_it() {
        for (json, want) in [("2.34", 2.34), ("\"2.34\"", 2.34), ("3", 3.0)] {
            let n: Value<Number> = serde_json::from_str(json).unwrap();
            assert_eq!(n, Value::Value(Number(want)), "{json}");
        }
        let mp = rmp_serde::to_vec(&"0.01").unwrap();
        let n: Value<Number> = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(n, Value::Value(Number(0.01)));
    }
}
