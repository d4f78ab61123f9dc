//! The plugin binary OpenTofu/Terraform starts. It speaks tfplugin6 through tf-provider.

use terraform_provider_docker::{logging, DockerProvider, PROVIDER_NAME};

const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
const MAGIC_COOKIE_VALUE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

fn main() -> anyhow::Result<()> {
    // tf-provider appends a stack trace to every diagnostic when backtraces are enabled; a
    // user's RUST_BACKTRACE must not turn plan errors into pages of frames. Panics keep theirs.
    // Set before any thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // tf-provider would write an unfiltered trace log of every crate, world-readable, to
    // PLUGIN_LOG_FILE: ours writes it instead (logging::init), so tf-provider must not see it.
    let plugin_log = std::env::var_os("PLUGIN_LOG_FILE").map(std::path::PathBuf::from);
    std::env::remove_var("PLUGIN_LOG_FILE");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(plugin_log))
}

async fn serve(plugin_log: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    if std::env::var(MAGIC_COOKIE_KEY).as_deref() != Ok(MAGIC_COOKIE_VALUE) {
        eprintln!(
            "This binary is a plugin for OpenTofu/Terraform, not a command to run by hand.\n\
             Use it from a configuration with `source = \"anchorage/docker\"` (see README.md)."
        );
        std::process::exit(1);
    }
    logging::init(plugin_log.as_deref());
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting provider");
    tf_provider::serve(PROVIDER_NAME, DockerProvider::default()).await
}
