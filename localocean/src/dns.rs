//! The authoritative DNS server for the domains the API holds (what ns1.digitalocean.com is
//! for real domains): UDP and TCP, answers read from the `ZoneSource` at every query; an NS
//! record below a zone's apex delegates that name, answered with a referral.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, NULL, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use sha2::{Digest, Sha256};

use crate::model::{DomainRecord, Zone, ZoneSource};

/// The name servers DigitalOcean puts in every domain, used when a zone lists none itself.
const DEFAULT_NAME_SERVERS: [&str; 3] = [
    "ns1.digitalocean.com.",
    "ns2.digitalocean.com.",
    "ns3.digitalocean.com.",
];
/// SOA timers as DigitalOcean publishes them (refresh, retry, expire).
const SOA_REFRESH: i32 = 10800;
const SOA_RETRY: i32 = 3600;
const SOA_EXPIRE: i32 = 604800;
/// DigitalOcean publishes 1800 here. Resolvers cache a miss for this long, and in tests a
/// record routinely appears seconds after a droplet or Pebble first asked for it, so the
/// negative TTL is kept short on purpose.
const SOA_MINIMUM: u32 = 30;
/// Bound on CNAME chains followed inside our own zones, so a loop cannot hang a query.
const MAX_CNAME_CHAIN: usize = 8;
/// How long an idle TCP client may hold its connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running DNS server: the authoritative one (`serve`) or the resolver
/// (`resolver::serve`). Dropping it aborts the listener tasks; `shutdown` also waits for them.
pub struct DnsServer {
    server: Box<dyn Shutdown>,
    local_addrs: Vec<SocketAddr>,
    what: &'static str,
}

/// A `ServerFuture` whatever its handler, so both servers are one type to their owners.
#[async_trait::async_trait]
trait Shutdown: Send {
    async fn shutdown_gracefully(&mut self) -> Result<(), hickory_proto::error::ProtoError>;
}

#[async_trait::async_trait]
impl<H: RequestHandler> Shutdown for ServerFuture<H> {
    async fn shutdown_gracefully(&mut self) -> Result<(), hickory_proto::error::ProtoError> {
        ServerFuture::shutdown_gracefully(self).await
    }
}

impl DnsServer {
    /// The addresses actually bound (port 0 replaced by the chosen port); UDP and TCP share each.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Stops accepting queries and waits for the listener tasks to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.server
            .shutdown_gracefully()
            .await
            .with_context(|| format!("stopping the {}", self.what))
    }
}

/// Serves every zone of `zones` on UDP and TCP at each of `addrs`. A port of 0 picks a free
/// port that is then the same for UDP and TCP on that address.
pub async fn serve(
    addrs: Vec<SocketAddr>,
    zones: Arc<dyn ZoneSource>,
) -> anyhow::Result<DnsServer> {
    listen(addrs, ZoneHandler { zones }, "DNS server").await
}

/// `handler` on UDP and TCP at each of `addrs` (port 0: a free port, the same for both).
pub(crate) async fn listen<H: RequestHandler>(
    addrs: Vec<SocketAddr>,
    handler: H,
    what: &'static str,
) -> anyhow::Result<DnsServer> {
    anyhow::ensure!(!addrs.is_empty(), "{what} needs at least one address");
    let mut server = ServerFuture::new(handler);
    let mut local_addrs = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let (udp, tcp) = bind_pair(addr).await?;
        local_addrs.push(udp.local_addr()?);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT);
    }
    tracing::info!(addrs = ?local_addrs, "{what} listening (UDP and TCP)");
    Ok(DnsServer {
        server: Box::new(server),
        local_addrs,
        what,
    })
}

/// Binds UDP and TCP on the same port. With port 0 the kernel picks the UDP port, which may
/// already be taken for TCP, so that case retries with a fresh port; a given port held by
/// another socket is waited for ([`crate::net::bind_tcp_patiently`]).
pub(crate) async fn bind_pair(
    addr: SocketAddr,
) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let udp = crate::net::bind_udp_patiently(addr)
            .await
            .with_context(|| format!("binding DNS UDP socket on {addr}"))?;
        let bound = udp.local_addr()?;
        let tcp = if addr.port() == 0 {
            tokio::net::TcpListener::bind(bound).await
        } else {
            crate::net::bind_tcp_patiently(bound).await
        };
        match tcp {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_err = Some(e),
        }
    }
    let err = last_err.expect("at least one attempt");
    Err(anyhow::Error::new(err).context(format!("binding DNS TCP listener on {addr}")))
}

struct ZoneHandler {
    zones: Arc<dyn ZoneSource>,
}

#[async_trait::async_trait]
impl RequestHandler for ZoneHandler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut edns = None;
        if let Some(req_edns) = request.edns() {
            let mut resp_edns = Edns::new();
            resp_edns.set_max_payload(req_edns.max_payload().max(512));
            resp_edns.set_version(0);
            if req_edns.version() > 0 {
                let mut header = Header::response_from_request(request.header());
                header.set_response_code(ResponseCode::BADVERS);
                resp_edns.set_rcode_high(ResponseCode::BADVERS.high());
                let mut builder = builder;
                builder.edns(resp_edns);
                return send(
                    &mut response_handle,
                    builder.build_no_records(header),
                    request,
                )
                .await;
            }
            edns = Some(resp_edns);
        }
        let mut builder = builder;
        if let Some(e) = edns {
            builder.edns(e);
        }

        if request.message_type() != MessageType::Query {
            let resp = builder.error_msg(request.header(), ResponseCode::FormErr);
            return send(&mut response_handle, resp, request).await;
        }
        if request.op_code() != OpCode::Query {
            let resp = builder.error_msg(request.header(), ResponseCode::NotImp);
            return send(&mut response_handle, resp, request).await;
        }

        let query = request.query().original();
        let zones = self.zones.zones();
        let outcome = resolve(&zones, query.name(), query.query_type());
        tracing::debug!(
            src = %request.src(),
            name = %query.name(),
            qtype = %query.query_type(),
            rcode = %outcome.rcode,
            answers = outcome.answers.len(),
            "DNS query"
        );

        let mut header = Header::response_from_request(request.header());
        header.set_response_code(outcome.rcode);
        header.set_authoritative(outcome.authoritative);
        header.set_recursion_available(false);
        let resp = builder.build(
            header,
            outcome.answers.iter(),
            outcome.authority.iter(),
            std::iter::empty(),
            outcome.additional.iter(),
        );
        send(&mut response_handle, resp, request).await
    }
}

async fn send<'q, 'a, R, A, N, S, D>(
    handle: &mut R,
    response: hickory_server::authority::MessageResponse<'q, 'a, A, N, S, D>,
    request: &Request,
) -> ResponseInfo
where
    R: ResponseHandler,
    A: Iterator<Item = &'a Record> + Send + 'a,
    N: Iterator<Item = &'a Record> + Send + 'a,
    S: Iterator<Item = &'a Record> + Send + 'a,
    D: Iterator<Item = &'a Record> + Send + 'a,
{
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(src = %request.src(), error = %e, "sending DNS response failed");
            let mut header = Header::response_from_request(request.header());
            header.set_response_code(ResponseCode::ServFail);
            header.into()
        }
    }
}

/// What a query resolves to, independent of the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    /// The zone's SOA for negative answers (NXDOMAIN and NODATA), as RFC 2308 asks; the
    /// delegation's NS records in a referral.
    pub authority: Vec<Record>,
    /// Glue: addresses of a referral's name servers that live below the delegation.
    pub additional: Vec<Record>,
    /// False for a referral (RFC 1034 4.3.2: the data below a cut is not ours).
    pub authoritative: bool,
}

impl Outcome {
    fn refused() -> Self {
        Outcome {
            rcode: ResponseCode::Refused,
            answers: vec![],
            authority: vec![],
            additional: vec![],
            authoritative: false,
        }
    }

    fn answer(rcode: ResponseCode, answers: Vec<Record>, authority: Vec<Record>) -> Self {
        Outcome {
            rcode,
            answers,
            authority,
            additional: vec![],
            authoritative: true,
        }
    }

    /// A referral: no answer of ours, the NS records of the cut (and glue) to ask next.
    pub fn is_referral(&self) -> bool {
        !self.authoritative
            && self.rcode == ResponseCode::NoError
            && self
                .authority
                .iter()
                .any(|r| r.record_type() == RecordType::NS)
    }
}

/// Answers one question from the zones: the core of the server, free of any I/O.
pub fn resolve(zones: &[Zone], qname: &Name, qtype: RecordType) -> Outcome {
    let Some(zone) = find_zone(zones, qname) else {
        return Outcome::refused();
    };
    let mut answers = Vec::new();
    let mut seen = HashSet::new();
    let mut current_zone = zone;
    let mut name = qname.clone();
    for _ in 0..MAX_CNAME_CHAIN {
        if !seen.insert(fqdn_lower(&name)) {
            break;
        }
        let entries = zone_entries(current_zone);
        if let Some(referral) = delegation(&entries, &apex_of(current_zone), &name, qtype) {
            if answers.is_empty() {
                return referral;
            }
            // A CNAME into a delegated name: the client's resolver follows it there.
            break;
        }
        match lookup(&entries, &name) {
            Lookup::NxDomain => {
                // Per RFC 6604 the rcode speaks for the last name in the chain.
                return Outcome::answer(
                    ResponseCode::NXDomain,
                    answers,
                    vec![negative_soa(current_zone)],
                );
            }
            Lookup::Found(records) => {
                let matching: Vec<Record> = records
                    .iter()
                    .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                    .cloned()
                    .collect();
                if !matching.is_empty() {
                    answers.extend(matching);
                    return Outcome::answer(ResponseCode::NoError, answers, vec![]);
                }
                let cname = records
                    .iter()
                    .find(|r| r.record_type() == RecordType::CNAME)
                    .cloned();
                let Some(cname) = cname else {
                    return Outcome::answer(
                        ResponseCode::NoError,
                        answers,
                        vec![negative_soa(current_zone)],
                    );
                };
                let target = match cname.data() {
                    Some(RData::CNAME(t)) => t.0.clone(),
                    _ => unreachable!("a CNAME record holds CNAME data"),
                };
                answers.push(cname);
                // A target outside our zones is for the client's resolver to follow.
                let Some(next_zone) = find_zone(zones, &target) else {
                    break;
                };
                current_zone = next_zone;
                name = target;
            }
        }
    }
    Outcome::answer(ResponseCode::NoError, answers, vec![])
}

/// The referral for `qname` when it is at or below an NS record other than the apex's: the
/// closest such cut wins. A DS query at the cut itself belongs to the parent (RFC 4035 3.1.4.1)
/// and is answered here as usual.
fn delegation(entries: &[Entry], apex: &str, qname: &Name, qtype: RecordType) -> Option<Outcome> {
    let q = fqdn_lower(qname);
    let mut cut = None;
    let mut name = Some(q.clone());
    while let Some(n) = name {
        if n == apex || !n.ends_with(&format!(".{apex}")) {
            break;
        }
        let has_ns = entries
            .iter()
            .any(|e| e.owner == n && e.record.record_type() == RecordType::NS);
        if has_ns && !(n == q && qtype == RecordType::DS) {
            // Keep looking upwards: the cut closest to the apex hides everything below it.
            cut = Some(n.clone());
        }
        name = parent(&n);
    }
    let cut = cut?;
    let ns: Vec<Record> = entries
        .iter()
        .filter(|e| e.owner == cut && e.record.record_type() == RecordType::NS)
        .map(|e| e.record.clone())
        .collect();
    let glue = ns
        .iter()
        .filter_map(|r| match r.data() {
            Some(RData::NS(target)) => Some(fqdn_lower(&target.0)),
            _ => None,
        })
        .filter(|t| t == &cut || t.ends_with(&format!(".{cut}")))
        .flat_map(|t| {
            entries
                .iter()
                .filter(move |e| {
                    e.owner == t
                        && matches!(e.record.record_type(), RecordType::A | RecordType::AAAA)
                })
                .map(|e| e.record.clone())
        })
        .collect();
    Some(Outcome {
        rcode: ResponseCode::NoError,
        answers: vec![],
        authority: ns,
        additional: glue,
        authoritative: false,
    })
}

enum Lookup {
    NxDomain,
    /// The records owned by the name (possibly none: an empty non-terminal), with the owner
    /// already set to the queried name (relevant for wildcards).
    Found(Vec<Record>),
}

/// One record of a zone with its owner in lowercase presentation form (ending in a dot),
/// the form every comparison here uses.
struct Entry {
    owner: String,
    record: Record,
}

fn lookup(entries: &[Entry], qname: &Name) -> Lookup {
    let q = fqdn_lower(qname);
    let exact: Vec<Record> = entries
        .iter()
        .filter(|e| e.owner == q)
        .map(|e| e.record.clone())
        .collect();
    if !exact.is_empty() {
        return Lookup::Found(exact);
    }
    if exists_below(entries, &q) {
        return Lookup::Found(vec![]);
    }
    // RFC 4592: the wildcard at the closest encloser, if any, stands for the missing name.
    let mut encloser = parent(&q);
    while let Some(enc) = encloser {
        let exists = entries.iter().any(|e| e.owner == enc) || exists_below(entries, &enc);
        if exists {
            let wildcard = format!("*.{enc}");
            let synthesized: Vec<Record> = entries
                .iter()
                .filter(|e| e.owner == wildcard)
                .map(|e| {
                    let mut r = e.record.clone();
                    r.set_name(qname.clone());
                    r
                })
                .collect();
            if synthesized.is_empty() {
                return Lookup::NxDomain;
            }
            return Lookup::Found(synthesized);
        }
        encloser = parent(&enc);
    }
    Lookup::NxDomain
}

fn exists_below(entries: &[Entry], name: &str) -> bool {
    let suffix = format!(".{name}");
    entries.iter().any(|e| e.owner.ends_with(&suffix))
}

fn parent(name: &str) -> Option<String> {
    let (_, rest) = name.split_once('.')?;
    if rest.is_empty() {
        None
    } else {
        Some(rest.to_string())
    }
}

fn fqdn_lower(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn apex_of(zone: &Zone) -> String {
    let mut apex = zone.name.trim_end_matches('.').to_ascii_lowercase();
    apex.push('.');
    apex
}

/// The zone with the longest apex that contains `qname`, so a delegated-in-API subzone
/// (both `example.com` and `sub.example.com` registered) wins over its parent.
fn find_zone<'z>(zones: &'z [Zone], qname: &Name) -> Option<&'z Zone> {
    let q = fqdn_lower(qname);
    zones
        .iter()
        .filter(|z| {
            let apex = apex_of(z);
            q == apex || q.ends_with(&format!(".{apex}"))
        })
        .max_by_key(|z| apex_of(z).len())
}

/// All records served for a zone: the synthesised SOA and NS at the apex plus every record
/// of the list that can be encoded. Records the API accepted but that make no sense on the
/// wire (an A record with a bad address) are skipped, not fatal for the whole zone.
fn zone_entries(zone: &Zone) -> Vec<Entry> {
    let apex = apex_of(zone);
    let Ok(apex_name) = Name::from_ascii(&apex) else {
        return vec![];
    };
    let mut entries = Vec::with_capacity(zone.records.len() + 4);
    entries.push(Entry {
        owner: apex.clone(),
        record: soa_record(zone, &apex_name, zone.ttl),
    });
    let has_apex_ns = zone
        .records
        .iter()
        .any(|r| r.record_type.eq_ignore_ascii_case("NS") && owner_of(r, &apex) == apex);
    if !has_apex_ns {
        for ns in DEFAULT_NAME_SERVERS {
            let target = Name::from_ascii(ns).expect("constant name server is valid");
            entries.push(Entry {
                owner: apex.clone(),
                record: Record::from_rdata(apex_name.clone(), zone.ttl, RData::NS(NS(target))),
            });
        }
    }
    for rec in &zone.records {
        let owner = owner_of(rec, &apex);
        let Ok(owner_name) = Name::from_ascii(&owner) else {
            tracing::debug!(name = %rec.name, "skipping DNS record with an invalid name");
            continue;
        };
        let ttl = if rec.ttl > 0 { rec.ttl } else { zone.ttl };
        match record_data(rec, &apex) {
            Ok(Some(rdata)) => entries.push(Entry {
                owner,
                record: Record::from_rdata(owner_name, ttl, rdata),
            }),
            Ok(None) => {}
            Err(reason) => tracing::debug!(
                id = rec.id,
                record_type = %rec.record_type,
                %reason,
                "skipping DNS record that cannot be encoded"
            ),
        }
    }
    entries
}

fn owner_of(rec: &DomainRecord, apex: &str) -> String {
    absolute_name(&rec.name, apex)
}

/// DigitalOcean's convention for record names: `@` is the apex, a trailing dot makes a name
/// absolute, anything else is relative to the zone.
fn absolute_name(name: &str, apex: &str) -> String {
    let name = name.trim();
    if name.is_empty() || name == "@" {
        apex.to_string()
    } else if name.ends_with('.') {
        name.to_ascii_lowercase()
    } else {
        format!("{}.{apex}", name.to_ascii_lowercase())
    }
}

/// A host name in record data (CNAME, MX, NS, SRV targets): `@` is the apex, anything else
/// is fully qualified with or without the final dot. DigitalOcean refuses dotless targets
/// for records it is sent, yet lists its own NS records as "ns1.digitalocean.com".
fn target_name(data: &str, apex: &str) -> Result<Name, String> {
    let data = data.trim();
    let fqdn = if data == "@" {
        apex.to_string()
    } else if data.ends_with('.') {
        data.to_string()
    } else {
        format!("{data}.")
    };
    Name::from_ascii(&fqdn).map_err(|e| format!("invalid name {data:?}: {e}"))
}

/// The wire form of one API record; `Ok(None)` for types served elsewhere (SOA).
fn record_data(rec: &DomainRecord, apex: &str) -> Result<Option<RData>, String> {
    let data = rec.data.as_str();
    let rdata = match rec.record_type.to_ascii_uppercase().as_str() {
        "A" => RData::A(A(data
            .parse()
            .map_err(|e| format!("invalid IPv4 address: {e}"))?)),
        "AAAA" => RData::AAAA(AAAA(
            data.parse()
                .map_err(|e| format!("invalid IPv6 address: {e}"))?,
        )),
        "CNAME" => RData::CNAME(CNAME(target_name(data, apex)?)),
        "NS" => RData::NS(NS(target_name(data, apex)?)),
        "MX" => RData::MX(MX::new(
            u16_field(rec.priority, "priority")?,
            target_name(data, apex)?,
        )),
        "SRV" => RData::SRV(SRV::new(
            u16_field(rec.priority, "priority")?,
            u16_field(rec.weight, "weight")?,
            u16_field(rec.port, "port")?,
            target_name(data, apex)?,
        )),
        "TXT" => RData::TXT(txt_data(data)),
        "CAA" => caa_data(rec)?,
        "SOA" => return Ok(None),
        other => return Err(format!("unsupported record type {other}")),
    };
    Ok(Some(rdata))
}

fn u16_field(value: Option<u32>, field: &str) -> Result<u16, String> {
    u16::try_from(value.unwrap_or(0)).map_err(|_| format!("{field} out of range"))
}

/// A TXT record is a list of strings of at most 255 bytes each; a longer value (a DKIM key)
/// is split, and resolvers join the pieces back.
fn txt_data(data: &str) -> TXT {
    let bytes = data.as_bytes();
    if bytes.is_empty() {
        return TXT::from_bytes(vec![b"".as_slice()]);
    }
    TXT::from_bytes(bytes.chunks(255).collect())
}

/// CAA (RFC 8659) encoded by hand: hickory 0.24 would write the issuer name with a trailing
/// dot ("letsencrypt.org."), which a CA compares byte for byte against its own domain and
/// so would refuse to issue. The value goes out exactly as the API stored it.
fn caa_data(rec: &DomainRecord) -> Result<RData, String> {
    let tag = rec.tag.as_deref().unwrap_or("").trim();
    if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("invalid CAA tag {tag:?}"));
    }
    let flags = u8::try_from(rec.flags.unwrap_or(0)).map_err(|_| "CAA flags out of range")?;
    let value = rec.data.trim().trim_matches('"');
    let mut raw = Vec::with_capacity(2 + tag.len() + value.len());
    raw.push(flags);
    raw.push(tag.len() as u8);
    raw.extend_from_slice(tag.as_bytes());
    raw.extend_from_slice(value.as_bytes());
    Ok(RData::Unknown {
        code: RecordType::CAA,
        rdata: NULL::with(raw),
    })
}

fn soa_record(zone: &Zone, apex: &Name, ttl: u32) -> Record {
    let mname = Name::from_ascii(DEFAULT_NAME_SERVERS[0]).expect("constant name is valid");
    let rname =
        Name::from_ascii(format!("hostmaster.{}", apex_of(zone))).unwrap_or_else(|_| apex.clone());
    let soa = SOA::new(
        mname,
        rname,
        zone_serial(zone),
        SOA_REFRESH,
        SOA_RETRY,
        SOA_EXPIRE,
        SOA_MINIMUM,
    );
    Record::from_rdata(apex.clone(), ttl, RData::SOA(soa))
}

/// The SOA sent with negative answers: RFC 2308 caches a miss for min(TTL, MINIMUM), so the
/// record's TTL is capped to the minimum.
fn negative_soa(zone: &Zone) -> Record {
    let apex = Name::from_ascii(apex_of(zone)).unwrap_or_else(|_| Name::root());
    soa_record(zone, &apex, zone.ttl.min(SOA_MINIMUM))
}

/// A serial that changes whenever the zone's content changes, without keeping state.
fn zone_serial(zone: &Zone) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(zone.name.as_bytes());
    hasher.update(zone.ttl.to_be_bytes());
    for r in &zone.records {
        hasher.update(serde_json::to_vec(r).expect("a domain record always serialises to JSON"));
    }
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, t: &str, name: &str, data: &str) -> DomainRecord {
        DomainRecord {
            id,
            record_type: t.into(),
            name: name.into(),
            data: data.into(),
            priority: None,
            port: None,
            ttl: 300,
            weight: None,
            flags: None,
            tag: None,
        }
    }

    fn zone() -> Zone {
        Zone {
            name: "example.com".into(),
            ttl: 1800,
            records: vec![
                rec(1, "A", "@", "198.18.0.10"),
                rec(2, "A", "a.b", "198.18.0.11"),
                rec(3, "CNAME", "www", "@"),
                rec(8, "NS", "@", "ns1.digitalocean.com"),
                rec(4, "A", "*.wild", "198.18.0.12"),
                rec(5, "CNAME", "out", "elsewhere.example.net."),
                rec(6, "CNAME", "loop1", "loop2.example.com."),
                rec(7, "CNAME", "loop2", "loop1.example.com"),
            ],
        }
    }

    fn q(name: &str, t: RecordType) -> Outcome {
        resolve(&[zone()], &Name::from_ascii(name).unwrap(), t)
    }

    #[test]
    fn apex_a_and_synthesised_ns_soa() {
        let o = q("Example.COM.", RecordType::A);
        assert_eq!(o.rcode, ResponseCode::NoError);
        assert_eq!(o.answers.len(), 1);
        // The zone's own NS record replaces the three defaults; its dotless data is absolute.
        let ns = q("example.com.", RecordType::NS);
        assert_eq!(ns.answers.len(), 1);
        match ns.answers[0].data() {
            Some(RData::NS(n)) => assert_eq!(n.0.to_ascii(), "ns1.digitalocean.com."),
            other => panic!("expected NS, got {other:?}"),
        }
        assert_eq!(q("example.com.", RecordType::SOA).answers.len(), 1);
    }

    #[test]
    fn empty_non_terminal_is_nodata_not_nxdomain() {
        let o = q("b.example.com.", RecordType::A);
        assert_eq!(o.rcode, ResponseCode::NoError);
        assert!(o.answers.is_empty());
        assert_eq!(o.authority[0].record_type(), RecordType::SOA);
        assert_eq!(
            q("c.example.com.", RecordType::A).rcode,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn cname_is_followed_inside_the_zone_and_not_outside() {
        let o = q("www.example.com.", RecordType::A);
        assert_eq!(o.answers.len(), 2);
        assert_eq!(o.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(o.answers[1].record_type(), RecordType::A);
        let o = q("out.example.com.", RecordType::A);
        assert_eq!(o.answers.len(), 1);
        let o = q("loop1.example.com.", RecordType::A);
        assert_eq!(o.rcode, ResponseCode::NoError);
        assert_eq!(o.answers.len(), 2);
    }

    #[test]
    fn wildcard_answers_with_the_query_name() {
        let o = q("x.wild.example.com.", RecordType::A);
        assert_eq!(o.answers.len(), 1);
        assert_eq!(o.answers[0].name().to_ascii(), "x.wild.example.com.");
    }

    #[test]
    fn outside_zones_is_refused() {
        assert_eq!(
            q("example.org.", RecordType::A).rcode,
            ResponseCode::Refused
        );
        assert_eq!(
            q("notexample.com.", RecordType::A).rcode,
            ResponseCode::Refused
        );
    }

    #[test]
    fn an_ns_record_below_the_apex_delegates_with_a_referral() {
        let mut z = zone();
        z.records.extend([
            rec(20, "NS", "_acme-challenge.reg", "reg.example.com."),
            // Hidden by the cut: the delegated server answers for it.
            rec(21, "TXT", "_acme-challenge.reg", "stale"),
            rec(22, "A", "reg", "198.18.0.20"),
            rec(23, "NS", "sub", "ns.sub.example.com."),
            rec(24, "A", "ns.sub", "198.18.0.21"),
        ]);
        let ask = |name: &str, t| resolve(&[z.clone()], &Name::from_ascii(name).unwrap(), t);
        let o = ask("_acme-challenge.reg.example.com.", RecordType::TXT);
        assert!(o.is_referral(), "{o:?}");
        assert!(o.answers.is_empty() && !o.authoritative);
        assert_eq!(o.authority.len(), 1);
        assert_eq!(o.authority[0].record_type(), RecordType::NS);
        // The name server is outside the cut: no glue, the resolver looks it up.
        assert!(o.additional.is_empty());
        // Below the cut too; the parent still answers for the name server itself.
        assert!(ask("x._acme-challenge.reg.example.com.", RecordType::A).is_referral());
        let a = ask("reg.example.com.", RecordType::A);
        assert!(a.authoritative && a.answers.len() == 1);
        // Glue for a name server inside the delegated zone.
        let o = ask("www.sub.example.com.", RecordType::A);
        assert!(o.is_referral());
        assert_eq!(o.additional.len(), 1);
        assert_eq!(o.additional[0].name().to_ascii(), "ns.sub.example.com.");
        // DS at the cut belongs to the parent: answered (no data), not referred.
        let ds = ask("sub.example.com.", RecordType::DS);
        assert!(!ds.is_referral() && ds.authoritative);
        // The apex's own NS records are no delegation.
        assert!(!ask("example.com.", RecordType::NS).is_referral());
    }

    #[test]
    fn long_txt_is_split() {
        let long = "x".repeat(600);
        let txt = txt_data(&long);
        let lens: Vec<usize> = txt.txt_data().iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![255, 255, 90]);
    }
}
