//! Objects shared between the API, the DNS server and the machines. JSON shapes follow
//! DigitalOcean's API v2 (`shared/do-openapi.yaml`).

use serde::{Deserialize, Serialize};

/// A domain record as DigitalOcean returns it (`domain_record` in the spec).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub id: u64,
    #[serde(rename = "type")]
    pub record_type: String,
    /// Relative to the domain; `@` is the apex.
    pub name: String,
    pub data: String,
    pub priority: Option<u32>,
    pub port: Option<u32>,
    pub ttl: u32,
    pub weight: Option<u32>,
    pub flags: Option<u32>,
    pub tag: Option<String>,
}

/// A domain and its records, as the DNS server serves it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub name: String,
    pub ttl: u32,
    pub records: Vec<DomainRecord>,
}

/// Read access to the zones the API holds; the DNS server answers from it on every query,
/// so a change through the API is visible at once.
pub trait ZoneSource: Send + Sync + 'static {
    fn zones(&self) -> Vec<Zone>;
}
