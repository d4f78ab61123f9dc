//! The shared test harness: localocean instances, Pebble, OpenTofu, registry clients and the
//! tfplugin6 client. Every test group of the `suite` binary uses these modules.

#![allow(dead_code)]

pub mod baked;
pub mod browser;
pub mod docker;
pub mod localocean;
pub mod pebble;
pub mod registry_client;
pub mod tfplugin;
pub mod tofu;
