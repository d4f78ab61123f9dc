//! Is the challenge TXT record visible yet? Asks each authoritative server directly (the
//! domain's NS by default, or an explicit list such as localocean's DNS) until all answer it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};
use hickory_resolver::error::ResolveErrorKind;
use hickory_resolver::TokioAsyncResolver;

/// Pause between two rounds of queries.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// One query to one server; a server that does not answer in time counts as "not yet".
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("finding the name servers of {domain}: {message}")]
    NameServers { domain: String, message: String },
    #[error("not visible after {}s", .waited.as_secs())]
    NotVisible { waited: Duration },
}

pub(super) fn describe(servers: &[SocketAddr]) -> String {
    let list: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    list.join(", ")
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// The addresses (port 53) of `domain`'s NS records, through the system resolver.
pub(super) async fn authoritative_servers(domain: &str) -> Result<Vec<SocketAddr>, DnsError> {
    let err = |message: String| DnsError::NameServers {
        domain: domain.to_owned(),
        message,
    };
    let resolver = TokioAsyncResolver::tokio_from_system_conf().map_err(|e| err(e.to_string()))?;
    let ns = resolver
        .ns_lookup(fqdn(domain))
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for name in ns.iter() {
        let ips = resolver
            .lookup_ip(name.0.to_ascii())
            .await
            .map_err(|e| err(format!("resolving {}: {e}", name.0)))?;
        out.extend(ips.iter().map(|ip| SocketAddr::new(ip, 53)));
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(err("no NS record has an address".into()));
    }
    Ok(out)
}

/// Whether `server` answers `value` among the TXT records of `record` right now.
async fn answers(server: SocketAddr, record: &str, value: &str) -> bool {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
    let mut opts = ResolverOpts::default();
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 1;
    opts.cache_size = 1;
    opts.use_hosts_file = false;
    opts.ndots = 0;
    // A fresh resolver per round: no cached "no such record" from the previous round.
    let resolver = TokioAsyncResolver::tokio(config, opts);
    match resolver.txt_lookup(fqdn(record)).await {
        Ok(txt) => txt.iter().any(|t| {
            let joined: Vec<u8> = t
                .txt_data()
                .iter()
                .flat_map(|d| d.iter().copied())
                .collect();
            joined == value.as_bytes()
        }),
        Err(e) => {
            if !matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) {
                tracing::debug!(%server, record, "TXT query failed: {e}");
            }
            false
        }
    }
}

/// Waits until every server answers `value` for `record`, or `timeout` passes.
pub(super) async fn wait_for_txt(
    record: &str,
    value: &str,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<(), DnsError> {
    let started = Instant::now();
    let mut pending: Vec<SocketAddr> = servers.to_vec();
    loop {
        let results =
            futures::future::join_all(pending.iter().map(|s| answers(*s, record, value))).await;
        pending = pending
            .into_iter()
            .zip(results)
            .filter_map(|(s, ok)| (!ok).then_some(s))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if started.elapsed() + POLL_INTERVAL > timeout {
            return Err(DnsError::NotVisible {
                waited: started.elapsed(),
            });
        }
        tracing::debug!(record, waiting_on = %describe(&pending), "TXT record not visible yet");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
