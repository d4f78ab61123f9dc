//! Compiles the tfplugin6 protocol for the test-side gRPC client (tests/protocol): client
//! stubs only; the provider itself is served by the tf-provider crate. Bundles the registry's
//! web page (ui/, with esbuild from ui/node_modules) into OUT_DIR/ui, which src/render/ui.rs
//! embeds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=proto/tfplugin6.proto");
    tonic_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/tfplugin6.proto"], &["proto"])
        .unwrap_or_else(|e| panic!("compiling proto/tfplugin6.proto failed ({e}); is protoc installed? run scripts/setup"));
    bundle_ui();
}

/// The page is built here rather than committed: its sources are what gets reviewed, and
/// the bundle can never be stale. esbuild's output is the same bytes for the same sources and
/// lockfile, so the files' digests on the droplet only change when the page does.
fn bundle_ui() {
    for input in [
        "ui/build.mjs",
        "ui/index.html",
        "ui/src",
        "ui/package-lock.json",
    ] {
        println!("cargo:rerun-if-changed={input}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("ui");
    if !Path::new("ui/node_modules/esbuild").is_dir() {
        panic!("ui/node_modules is missing: run scripts/setup (it runs `npm ci` in ui/)");
    }
    let status = Command::new("node")
        .arg("ui/build.mjs")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "running node ui/build.mjs failed ({e}); is Node.js installed? run scripts/setup"
            )
        });
    if !status.success() {
        panic!(
            "node ui/build.mjs {} failed ({status}): the web page does not build",
            out.display()
        );
    }
}
