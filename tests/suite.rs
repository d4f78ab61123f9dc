//! The provider's integration tests, in one binary (one link): select a group by its module,
//! e.g. `cargo test --test suite -- protocol::`.
//!
//! - `protocol`: the provider binary over tfplugin6 gRPC, no OpenTofu, no machines.
//! - `services`: the provider's ACME and Spaces clients against Pebble and Garage, no machines.
//! - `acceptance`: OpenTofu + localocean (real droplets) + Pebble + skopeo.

mod support;

mod acceptance;
mod protocol;
mod services;
