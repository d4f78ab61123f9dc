//! Compiles the tfplugin6 protocol for the test-side gRPC client (tests/protocol): client
//! stubs only; the provider itself is served by the tf-provider crate.

fn main() {
    println!("cargo:rerun-if-changed=proto/tfplugin6.proto");
    tonic_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/tfplugin6.proto"], &["proto"])
        .unwrap_or_else(|e| panic!("compiling proto/tfplugin6.proto failed ({e}); is protoc installed? run scripts/setup"));
}
