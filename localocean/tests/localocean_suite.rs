//! localocean's integration tests, in one binary: select a group by its module, e.g.
//! `cargo test -p localocean --test localocean_suite -- api::`. Each group's name says what it needs.
//!
//! - `api`: the API served in-process with a null hypervisor; no machines, no Garage.
//! - `dns`: the DNS server served in-process on loopback.
//! - `spaces`: Spaces on a real Garage (scripts/setup installs it).
//! - `machines`: real droplets on this host (root, systemd-nspawn, the droplet image) and the
//!   `localocean` binary's up / down / restart.

mod api;
mod dns;
mod machines;
mod spaces;
