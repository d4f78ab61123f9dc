//! The `ssh_refused` fault for real machines: a TCP reset rule inside the droplet's
//! network namespace, removed after the requested time.

use std::time::Duration;

use async_trait::async_trait;

use super::Nspawn;

#[async_trait]
impl crate::faults::SshFaults for Nspawn {
    async fn refuse_ssh(&self, droplet_id: u64, seconds: u64) -> anyhow::Result<()> {
        if self.load(droplet_id)?.is_none() {
            anyhow::bail!("droplet ({droplet_id}) has no machine");
        }
        Ok(Nspawn::refuse_ssh(self, droplet_id, Duration::from_secs(seconds)).await?)
    }
}
