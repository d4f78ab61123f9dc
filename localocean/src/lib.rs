//! localocean: a local DigitalOcean for tests and the quickstart. The API (axum) follows
//! DigitalOcean's OpenAPI spec; droplets are real systemd-nspawn machines; DNS and Spaces are real servers.

pub mod api;
pub mod balancer;
pub mod clock;
pub mod dns;
pub mod faults;
pub mod garage;
pub mod hypervisor;
pub mod image;
pub mod instance;
pub mod machines;
pub mod model;
pub mod net;
pub mod process;
pub mod resolver;
pub mod spaces;
pub mod store;
#[doc(hidden)]
pub mod testkit;
