//! The instance's private network: a host bridge owning one /24 of 198.18.0.0/15 per slot,
//! and per droplet a network namespace joined to it by a veth pair. No NAT, no way out.

use std::net::Ipv4Addr;

use crate::machines::sys::{self, SysResult};

/// Slots index the 512 /24 networks of 198.18.0.0/15.
pub const MAX_SLOTS: u16 = 512;

/// DigitalOcean's metadata service: the same link-local address on every droplet.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Where the instance serves it, on its bridge address (`api::metadata`).
pub const METADATA_PORT: u16 = 80;

/// Host numbers of each /24: droplets take the low ones, load balancers the next, reserved
/// IPs the top ones, so an address held by the account is never handed to a new droplet.
pub const DROPLET_HOSTS: std::ops::RangeInclusive<u8> = 2..=149;
pub const LOAD_BALANCER_HOSTS: std::ops::RangeInclusive<u8> = 150..=199;
pub const RESERVED_IP_HOSTS: std::ops::RangeInclusive<u8> = 200..=254;

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

    /// The `n`th address of the /24 (1 is the bridge, droplets use [`DROPLET_HOSTS`], load
    /// balancers [`LOAD_BALANCER_HOSTS`], reserved IPs [`RESERVED_IP_HOSTS`]).
    pub fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(
            198,
            18 + (self.slot / 256) as u8,
            (self.slot % 256) as u8,
            n,
        )
    }

    /// The addresses reserved IPs are made from, lowest first.
    pub fn reserved_ips(&self) -> Vec<Ipv4Addr> {
        RESERVED_IP_HOSTS.map(|n| self.host(n)).collect()
    }

    /// The addresses load balancers are given, lowest first.
    pub fn load_balancer_ips(&self) -> Vec<Ipv4Addr> {
        LOAD_BALANCER_HOSTS.map(|n| self.host(n)).collect()
    }

    /// A load balancer's namespace and the host end of its veth, named by its address
    /// (unique in the instance; `lo511b199` fits the 15 bytes of an interface name).
    pub fn balancer_netns_name(&self, ip: Ipv4Addr) -> String {
        format!("lo{}-b{}", self.slot, ip.octets()[3])
    }

    pub fn balancer_veth_name(&self, ip: Ipv4Addr) -> String {
        format!("lo{}b{}", self.slot, ip.octets()[3])
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
/// droplets reach only the host services and each other; their 169.254.169.254:80 goes to
/// this instance's metadata service on the bridge address (the source address, which names
/// the droplet, is kept).
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
         add rule inet {table} forward oifname \"{br}\" iifname != \"{br}\" drop\n\
         add chain inet {table} metadata {{ type nat hook prerouting priority dstnat ; policy accept ; }}\n\
         add rule inet {table} metadata iifname \"{br}\" ip daddr {METADATA_IP} tcp dport 80 dnat ip to {gw}:{METADATA_PORT}\n",
        gw = net.bridge_ip()
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
    let r = create_ns(net, &ns, &veth, ip).await;
    if r.is_err() {
        delete_droplet_net(net, droplet_id).await;
    }
    r
}

/// A load balancer's namespace: `eth0` at its address on the bridge, as a droplet's, with
/// nothing else in it but HAProxy.
pub async fn create_balancer_net(net: Subnet, ip: Ipv4Addr) -> SysResult<()> {
    delete_balancer_net(net, ip).await;
    let r = create_ns(
        net,
        &net.balancer_netns_name(ip),
        &net.balancer_veth_name(ip),
        ip,
    )
    .await;
    if r.is_err() {
        delete_balancer_net(net, ip).await;
    }
    r
}

/// Removes the load balancer's namespace and veth; succeeds when they are already gone.
pub async fn delete_balancer_net(net: Subnet, ip: Ipv4Addr) {
    delete_ns(&net.balancer_netns_name(ip), &net.balancer_veth_name(ip)).await;
}

async fn create_ns(net: Subnet, ns: &str, veth: &str, ip: Ipv4Addr) -> SysResult<()> {
    let br = net.bridge_name();
    let cidr = format!("{ip}/24");
    let gw = net.bridge_ip().to_string();
    sys::run("ip", &["netns", "add", ns]).await?;
    sys::run(
        "ip",
        &[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )
    .await?;
    sys::run("ip", &["link", "set", veth, "master", br.as_str()]).await?;
    sys::run("ip", &["link", "set", veth, "up"]).await?;
    let n = ns;
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
    // As on a droplet, the metadata service's link-local address has a route of its own.
    let metadata = METADATA_IP.to_string();
    sys::run(
        "ip",
        &[
            "-n",
            n,
            "route",
            "add",
            metadata.as_str(),
            "via",
            gw.as_str(),
            "dev",
            "eth0",
        ],
    )
    .await?;
    Ok(())
}

/// Removes the namespace and the veth; succeeds when they are already gone.
pub async fn delete_droplet_net(net: Subnet, droplet_id: u64) {
    delete_ns(&net.netns_name(droplet_id), &net.veth_name(droplet_id)).await;
}

async fn delete_ns(ns: &str, veth: &str) {
    if link_exists(veth).await {
        sys::run_quiet("ip", &["link", "del", veth]).await;
    }
    if netns_exists(ns).await {
        sys::run_quiet("ip", &["netns", "del", ns]).await;
    }
}

/// Puts a reserved IP on the droplet's `eth0` as a /32 beside its own address (which stays
/// its source address), so the bridge reaches the machine on both.
pub async fn add_reserved_ip(net: Subnet, droplet_id: u64, ip: Ipv4Addr) -> SysResult<()> {
    let ns = net.netns_name(droplet_id);
    let cidr = format!("{ip}/32");
    sys::run(
        "ip",
        &[
            "-n",
            ns.as_str(),
            "addr",
            "replace",
            cidr.as_str(),
            "dev",
            "eth0",
        ],
    )
    .await
    .map(|_| ())
}

/// Takes a reserved IP off the droplet; succeeds when it (or the namespace) is already gone.
pub async fn remove_reserved_ip(net: Subnet, droplet_id: u64, ip: Ipv4Addr) {
    let ns = net.netns_name(droplet_id);
    if !netns_exists(&ns).await {
        return;
    }
    let cidr = format!("{ip}/32");
    sys::run_quiet(
        "ip",
        &[
            "-n",
            ns.as_str(),
            "addr",
            "del",
            cidr.as_str(),
            "dev",
            "eth0",
        ],
    )
    .await;
}

/// Drops what the host and every machine of this network cached as the link address of
/// `ip`: after a reserved IP moved, the next packet asks the bridge again and only the
/// machine that holds it now answers (a cached entry would keep sending to the old one).
pub async fn forget_neighbour(net: Subnet, ip: Ipv4Addr) {
    let ip = ip.to_string();
    let br = net.bridge_name();
    sys::run_quiet(
        "ip",
        &["neigh", "flush", "to", ip.as_str(), "dev", br.as_str()],
    )
    .await;
    // Droplets' (`lo<slot>-d…`) and load balancers' (`lo<slot>-b…`) namespaces.
    let prefix = format!("lo{}-", net.slot);
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            sys::run_quiet(
                "ip",
                &["-n", name.as_str(), "neigh", "flush", "to", ip.as_str()],
            )
            .await;
        }
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

/// How long a bind of one of the instance's own ports waits while another socket holds it:
/// a restarted localocean found a slot port held for some seconds (its Spaces port, then its
/// DNS port, after a `kill -9` and restart, under load), free again moments later.
const BIND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds TCP `addr`, waiting up to [`BIND_PATIENCE`] while another socket holds it. A port
/// still held then fails with the sockets that hold it (from `ss`), to name the holder.
pub async fn bind_tcp_patiently(
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpListener> {
    patiently(addr, || tokio::net::TcpListener::bind(addr)).await
}

/// [`bind_tcp_patiently`] for UDP.
pub async fn bind_udp_patiently(
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::UdpSocket> {
    patiently(addr, || tokio::net::UdpSocket::bind(addr)).await
}

async fn patiently<T, F, Fut>(addr: std::net::SocketAddr, bind: F) -> std::io::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let deadline = std::time::Instant::now() + BIND_PATIENCE;
    let mut logged = false;
    loop {
        match bind().await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
                // The holders are listed for the first wait's log line and the final error
                // only, not at every retry.
                if std::time::Instant::now() >= deadline {
                    let held_by = port_holders(addr.port()).await;
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{e}; sockets on port {}:\n{held_by}", addr.port()),
                    ));
                }
                if !logged {
                    let held_by = port_holders(addr.port()).await;
                    tracing::warn!(%addr, %held_by, "address in use; waiting for it");
                    logged = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// Every socket of this network namespace on local `port`, any state, with its process
/// (`ss`'s own words), or why that could not be listed.
async fn port_holders(port: u16) -> String {
    let filter = format!("sport = :{port}");
    match tokio::process::Command::new("ss")
        .args(["-tuanpe", filter.as_str()])
        .output()
        .await
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
        Err(e) => format!("(ss: {e})"),
    }
}

/// Accepts connections on `listener` until the returned task is aborted, each served by
/// `serve` in a task of its own that ends with the accept loop (an abort closes them all).
/// `what` names the listener in the log.
pub(crate) fn spawn_accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    what: &'static str,
    serve: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (inbound, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            while conns.try_join_next().is_some() {}
            let served = serve(inbound);
            conns.spawn(async move {
                if let Err(e) = served.await {
                    tracing::debug!(%peer, error = %e, "{what}: connection ended");
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_port_is_waited_for_until_its_holder_lets_go() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        let released = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(600));
            drop(holder);
        });
        let t0 = std::time::Instant::now();
        let bound = bind_tcp_patiently(addr).await.expect("bound once released");
        assert_eq!(bound.local_addr().unwrap(), addr);
        assert!(t0.elapsed() >= std::time::Duration::from_millis(500));
        released.join().unwrap();
    }

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
        let reserved = s.reserved_ips();
        assert_eq!(reserved.first(), Some(&Ipv4Addr::new(198, 19, 44, 200)));
        assert_eq!(reserved.last(), Some(&Ipv4Addr::new(198, 19, 44, 254)));
        assert!(!DROPLET_HOSTS.contains(&200));
        let lbs = s.load_balancer_ips();
        assert_eq!(lbs.first(), Some(&Ipv4Addr::new(198, 19, 44, 150)));
        assert!(lbs
            .iter()
            .all(|ip| !reserved.contains(ip) && !DROPLET_HOSTS.contains(&ip.octets()[3])));
        assert_eq!(s.balancer_netns_name(lbs[0]), "lo300-b150");
        assert!(Subnet::new(511).balancer_veth_name(lbs[49]).len() <= 15);
    }
}
