//! The instance's private network: a host bridge owning one /24 of 198.18.0.0/15 per slot,
//! and per droplet a network namespace joined to it by a veth pair. No NAT, no way out.

use std::net::Ipv4Addr;

use crate::machines::sys::{self, SysResult};

/// Slots index the 512 /24 networks of 198.18.0.0/15.
pub const MAX_SLOTS: u16 = 512;

/// One localocean instance's network (`198.18.<slot>.0/24` for slots below 256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub slot: u16,
}

impl Subnet {
    pub fn new(slot: u16) -> Self {
        assert!(slot < MAX_SLOTS, "slot {slot} out of range");
        Subnet { slot }
    }

    /// The `n`th address of the /24 (1 is the bridge, droplets use 2..=254).
    pub fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(
            198,
            18 + (self.slot / 256) as u8,
            (self.slot % 256) as u8,
            n,
        )
    }

    pub fn bridge_ip(&self) -> Ipv4Addr {
        self.host(1)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::new(255, 255, 255, 0)
    }

    pub fn bridge_name(&self) -> String {
        format!("lo-br{}", self.slot)
    }

    pub fn netns_name(&self, droplet_id: u64) -> String {
        format!("lo{}-d{}", self.slot, droplet_id)
    }

    /// Host end of the droplet's veth; interface names are limited to 15 bytes, so long
    /// droplet ids fall back to a hash that is still unique per (slot, id).
    pub fn veth_name(&self, droplet_id: u64) -> String {
        let name = format!("lo{}v{}", self.slot, droplet_id);
        if name.len() <= 15 {
            return name;
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}:{}", self.slot, droplet_id));
        format!("lov{}", &hex::encode(digest)[..12])
    }

    fn nft_table(&self) -> String {
        format!("localocean{}", self.slot)
    }
}

/// Creates the bridge with its address (idempotent) and forbids forwarding out of it, so
/// droplets reach only the host services and each other.
pub async fn ensure_bridge(net: Subnet) -> SysResult<()> {
    let br = net.bridge_name();
    if !link_exists(&br).await {
        sys::run("ip", &["link", "add", br.as_str(), "type", "bridge"]).await?;
    }
    let cidr = format!("{}/24", net.bridge_ip());
    let addrs = sys::run("ip", &["-o", "-4", "addr", "show", "dev", br.as_str()]).await?;
    if !addrs.contains(&format!(" {cidr} ")) {
        sys::run("ip", &["addr", "add", cidr.as_str(), "dev", br.as_str()]).await?;
    }
    sys::run("ip", &["link", "set", br.as_str(), "up"]).await?;

    let table = net.nft_table();
    // Recreate the table so a rerun never stacks duplicate rules.
    sys::run_quiet("nft", &["delete", "table", "inet", table.as_str()]).await;
    let script = format!(
        "add table inet {table}\n\
         add chain inet {table} forward {{ type filter hook forward priority 0 ; policy accept ; }}\n\
         add rule inet {table} forward iifname \"{br}\" oifname != \"{br}\" drop\n\
         add rule inet {table} forward oifname \"{br}\" iifname != \"{br}\" drop\n"
    );
    nft_script(None, &script).await
}

/// Removes the bridge and its firewall table; succeeds when they are already gone.
pub async fn delete_bridge(net: Subnet) {
    let br = net.bridge_name();
    if link_exists(&br).await {
        sys::run_quiet("ip", &["link", "del", br.as_str()]).await;
    }
    let table = net.nft_table();
    sys::run_quiet("nft", &["delete", "table", "inet", table.as_str()]).await;
}

pub async fn link_exists(name: &str) -> bool {
    sys::run("ip", &["link", "show", "dev", name]).await.is_ok()
}

pub async fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Creates the droplet's namespace with `eth0` at `ip` and a default route via the bridge;
/// anything left from an earlier attempt is removed first.
pub async fn create_droplet_net(net: Subnet, droplet_id: u64, ip: Ipv4Addr) -> SysResult<()> {
    delete_droplet_net(net, droplet_id).await;
    let ns = net.netns_name(droplet_id);
    let veth = net.veth_name(droplet_id);
    let br = net.bridge_name();
    let cidr = format!("{ip}/24");
    let gw = net.bridge_ip().to_string();
    sys::run("ip", &["netns", "add", ns.as_str()]).await?;
    let r = async {
        sys::run(
            "ip",
            &[
                "link",
                "add",
                veth.as_str(),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.as_str(),
            ],
        )
        .await?;
        sys::run("ip", &["link", "set", veth.as_str(), "master", br.as_str()]).await?;
        sys::run("ip", &["link", "set", veth.as_str(), "up"]).await?;
        let n = ns.as_str();
        sys::run("ip", &["-n", n, "link", "set", "lo", "up"]).await?;
        sys::run(
            "ip",
            &["-n", n, "addr", "add", cidr.as_str(), "dev", "eth0"],
        )
        .await?;
        sys::run("ip", &["-n", n, "link", "set", "eth0", "up"]).await?;
        sys::run(
            "ip",
            &["-n", n, "route", "add", "default", "via", gw.as_str()],
        )
        .await?;
        Ok(())
    }
    .await;
    if r.is_err() {
        delete_droplet_net(net, droplet_id).await;
    }
    r
}

/// Removes the namespace and the veth; succeeds when they are already gone.
pub async fn delete_droplet_net(net: Subnet, droplet_id: u64) {
    let ns = net.netns_name(droplet_id);
    let veth = net.veth_name(droplet_id);
    if link_exists(&veth).await {
        sys::run_quiet("ip", &["link", "del", veth.as_str()]).await;
    }
    if netns_exists(&ns).await {
        sys::run_quiet("ip", &["netns", "del", ns.as_str()]).await;
    }
}

const FAULT_TABLE: &str = "localocean_fault";

/// Makes the droplet refuse SSH (TCP reset on port 22) from inside its own namespace, as
/// a crashed sshd or a cloud firewall would look from outside.
pub async fn reject_ssh(net: Subnet, droplet_id: u64) -> SysResult<()> {
    let ns = net.netns_name(droplet_id);
    allow_ssh(net, droplet_id).await;
    let script = format!(
        "add table inet {FAULT_TABLE}\n\
         add chain inet {FAULT_TABLE} input {{ type filter hook input priority -10 ; policy accept ; }}\n\
         add rule inet {FAULT_TABLE} input tcp dport 22 reject with tcp reset\n"
    );
    nft_script(Some(&ns), &script).await
}

pub async fn allow_ssh(net: Subnet, droplet_id: u64) {
    let ns = net.netns_name(droplet_id);
    sys::run_quiet(
        "ip",
        &[
            "netns",
            "exec",
            ns.as_str(),
            "nft",
            "delete",
            "table",
            "inet",
            FAULT_TABLE,
        ],
    )
    .await;
}

async fn nft_script(netns: Option<&str>, script: &str) -> SysResult<()> {
    // nft reads a whole ruleset atomically from a file; a temp file avoids piping stdin.
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "localocean-nft-{}-{}.nft",
        std::process::id(),
        rand::random::<u32>()
    ));
    sys::write_atomic(&path, script.as_bytes(), 0o600)?;
    let p = path.to_string_lossy().into_owned();
    let r = match netns {
        Some(ns) => sys::run("ip", &["netns", "exec", ns, "nft", "-f", p.as_str()]).await,
        None => sys::run("nft", &["-f", p.as_str()]).await,
    };
    let _ = std::fs::remove_file(&path);
    r.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_per_slot() {
        let s = Subnet::new(0);
        assert_eq!(s.bridge_ip(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(s.bridge_name(), "lo-br0");
        let s = Subnet::new(300);
        assert_eq!(s.host(7), Ipv4Addr::new(198, 19, 44, 7));
        assert_eq!(s.veth_name(12), "lo300v12");
        let long = s.veth_name(u64::MAX);
        assert!(long.len() <= 15 && long.starts_with("lov"));
        assert_ne!(long, Subnet::new(301).veth_name(u64::MAX));
    }
}
