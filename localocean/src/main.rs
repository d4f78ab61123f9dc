//! The `localocean` command: up, down, status, serve, image build.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("localocean: not built yet")
}
