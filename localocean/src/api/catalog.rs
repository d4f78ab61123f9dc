//! The fixed catalogue: regions, sizes (DigitalOcean's real prices and shapes) and the images
//! the machines can boot; plus the account. Served read-only.

use serde_json::{json, Value};

pub struct Region {
    pub slug: &'static str,
    pub name: &'static str,
}

pub const REGIONS: &[Region] = &[
    Region {
        slug: "ams3",
        name: "Amsterdam 3",
    },
    Region {
        slug: "blr1",
        name: "Bangalore 1",
    },
    Region {
        slug: "fra1",
        name: "Frankfurt 1",
    },
    Region {
        slug: "lon1",
        name: "London 1",
    },
    Region {
        slug: "nyc3",
        name: "New York 3",
    },
    Region {
        slug: "sfo3",
        name: "San Francisco 3",
    },
    Region {
        slug: "sgp1",
        name: "Singapore 1",
    },
    Region {
        slug: "syd1",
        name: "Sydney 1",
    },
    Region {
        slug: "tor1",
        name: "Toronto 1",
    },
];

/// Regions where DigitalOcean offers Spaces. DO's region listing has no feature flag for
/// Spaces, so this is exported for callers rather than invented in the JSON.
pub const SPACES_REGIONS: &[&str] = &[
    "nyc3", "ams3", "sfo3", "sgp1", "fra1", "syd1", "blr1", "lon1", "tor1",
];

pub struct Size {
    pub slug: &'static str,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub disk_gib: u32,
    pub transfer_tib: f64,
    pub price_monthly: f64,
    pub price_hourly: f64,
}

pub const SIZES: &[Size] = &[
    Size {
        slug: "s-1vcpu-512mb-10gb",
        memory_mib: 512,
        vcpus: 1,
        disk_gib: 10,
        transfer_tib: 0.5,
        price_monthly: 4.0,
        price_hourly: 0.00595,
    },
    Size {
        slug: "s-1vcpu-1gb",
        memory_mib: 1024,
        vcpus: 1,
        disk_gib: 25,
        transfer_tib: 1.0,
        price_monthly: 6.0,
        price_hourly: 0.00893,
    },
    Size {
        slug: "s-1vcpu-2gb",
        memory_mib: 2048,
        vcpus: 1,
        disk_gib: 50,
        transfer_tib: 2.0,
        price_monthly: 12.0,
        price_hourly: 0.01786,
    },
    Size {
        slug: "s-2vcpu-2gb",
        memory_mib: 2048,
        vcpus: 2,
        disk_gib: 60,
        transfer_tib: 3.0,
        price_monthly: 18.0,
        price_hourly: 0.02679,
    },
    Size {
        slug: "s-2vcpu-4gb",
        memory_mib: 4096,
        vcpus: 2,
        disk_gib: 80,
        transfer_tib: 4.0,
        price_monthly: 24.0,
        price_hourly: 0.03571,
    },
    Size {
        slug: "s-4vcpu-8gb",
        memory_mib: 8192,
        vcpus: 4,
        disk_gib: 160,
        transfer_tib: 5.0,
        price_monthly: 48.0,
        price_hourly: 0.07143,
    },
];

pub struct Image {
    pub id: u64,
    pub slug: &'static str,
    pub name: &'static str,
    pub distribution: &'static str,
    pub min_disk_size: u32,
    pub size_gigabytes: f64,
}

/// Only what the machines can really boot: one Debian 12 root file system.
pub const IMAGES: &[Image] = &[Image {
    id: 148_174_574,
    slug: "debian-12-x64",
    name: "12 x64",
    distribution: "Debian",
    min_disk_size: 10,
    size_gigabytes: 0.95,
}];

const IMAGE_CREATED_AT: &str = "2023-06-13T19:33:40Z";

pub fn region(slug: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.slug == slug)
}

pub fn size(slug: &str) -> Option<&'static Size> {
    SIZES.iter().find(|s| s.slug == slug)
}

/// By slug or by numeric id, as DO accepts either.
pub fn image(key: &str) -> Option<&'static Image> {
    IMAGES
        .iter()
        .find(|i| i.slug == key || i.id.to_string() == key)
}

pub fn region_json(slug: &str) -> Value {
    let name = region(slug).map(|r| r.name).unwrap_or(slug);
    json!({
        "name": name,
        "slug": slug,
        "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"],
        "available": true,
        "sizes": SIZES.iter().map(|s| s.slug).collect::<Vec<_>>(),
    })
}

pub fn size_json(s: &Size) -> Value {
    json!({
        "slug": s.slug,
        "memory": s.memory_mib,
        "vcpus": s.vcpus,
        "disk": s.disk_gib,
        "transfer": s.transfer_tib,
        "price_monthly": s.price_monthly,
        "price_hourly": s.price_hourly,
        "regions": REGIONS.iter().map(|r| r.slug).collect::<Vec<_>>(),
        "available": true,
        "description": "Basic",
        "disk_info": [{"type": "local", "size": {"amount": s.disk_gib, "unit": "gib"}}],
    })
}

pub fn image_json(i: &Image) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "type": "base",
        "distribution": i.distribution,
        "slug": i.slug,
        "public": true,
        "regions": REGIONS.iter().map(|r| r.slug).collect::<Vec<_>>(),
        "created_at": IMAGE_CREATED_AT,
        "min_disk_size": i.min_disk_size,
        "size_gigabytes": i.size_gigabytes,
        "description": format!("{} {}", i.distribution, i.name),
        "tags": [],
        "status": "available",
        "error_message": "",
    })
}

/// The account's email, verified (uptime alerts mail only verified addresses).
pub const ACCOUNT_EMAIL: &str = "localocean@localhost";

pub fn account_json(droplet_limit: u32) -> Value {
    json!({
        "droplet_limit": droplet_limit,
        "floating_ip_limit": 3,
        "volume_limit": 100,
        "email": ACCOUNT_EMAIL,
        "name": "localocean",
        "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
        "email_verified": true,
        "status": "active",
        "status_message": "",
    })
}
