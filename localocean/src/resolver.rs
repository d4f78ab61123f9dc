//! A recursive resolver over the API's zones, as the internet's resolvers are over the root:
//! it answers from the zones and follows NS referrals (and CNAMEs) to the servers they name.
//!
//! Pebble and the tests ask it, so that a name delegated to a droplet (`_acme-challenge.<fqdn>`
//! NS <fqdn>) resolves through the droplet's own DNS server, as it would for a public CA.
//! Nothing is cached: a test's record is visible the moment it exists. Names outside every
//! zone are refused, as there is no internet behind it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dns::{self, DnsServer, Outcome};
use crate::model::ZoneSource;

/// Referrals and CNAMEs followed for one question before giving up (a loop, a lame chain).
const MAX_STEPS: usize = 12;
/// One query to one delegated server; the next server is tried after it.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Where delegated servers are asked. Port 53 everywhere but in tests, whose servers cannot
/// all own port 53.
#[derive(Clone, Copy, Debug)]
pub struct Upstream {
    pub port: u16,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream { port: 53 }
    }
}

/// Serves recursive answers over `zones` on UDP and TCP at each of `addrs` (port 0: a free
/// port, the same for UDP and TCP).
pub async fn serve(
    addrs: Vec<SocketAddr>,
    zones: Arc<dyn ZoneSource>,
    upstream: Upstream,
) -> anyhow::Result<DnsServer> {
    dns::listen(addrs, Recursor { zones, upstream }, "DNS resolver").await
}

struct Recursor {
    zones: Arc<dyn ZoneSource>,
    upstream: Upstream,
}

#[async_trait::async_trait]
impl RequestHandler for Recursor {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(req_edns) = request.edns() {
            let mut e = Edns::new();
            e.set_max_payload(req_edns.max_payload().max(512));
            e.set_version(0);
            builder.edns(e);
        }
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            let resp = builder.error_msg(request.header(), ResponseCode::NotImp);
            return send(&mut response_handle, resp).await;
        }
        let query = request.query().original();
        let outcome = self.recurse(query.name(), query.query_type()).await;
        tracing::debug!(
            src = %request.src(),
            name = %query.name(),
            qtype = %query.query_type(),
            rcode = %outcome.rcode,
            answers = outcome.answers.len(),
            "DNS recursive query"
        );
        let mut header = Header::response_from_request(request.header());
        header.set_response_code(outcome.rcode);
        header.set_authoritative(false);
        header.set_recursion_available(true);
        let resp = builder.build(
            header,
            outcome.answers.iter(),
            std::iter::empty(),
            outcome.authority.iter(),
            std::iter::empty(),
        );
        send(&mut response_handle, resp).await
    }
}

async fn send<'q, 'a, R, A, N, S, D>(
    handle: &mut R,
    response: hickory_server::authority::MessageResponse<'q, 'a, A, N, S, D>,
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
            tracing::warn!(error = %e, "sending DNS resolver response failed");
            let mut header = Header::new();
            header.set_response_code(ResponseCode::ServFail);
            header.into()
        }
    }
}

/// What a delegated server said, reduced to what the iteration needs.
struct Reply {
    rcode: ResponseCode,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additional: Vec<Record>,
}

impl Recursor {
    /// The final answer to `qname`/`qtype`: CNAMEs met on the way first, as resolvers send them.
    async fn recurse(&self, qname: &Name, qtype: RecordType) -> Outcome {
        let mut chain: Vec<Record> = Vec::new();
        let mut name = qname.clone();
        // Servers to ask for `name`; `None` means start from the zones themselves.
        let mut servers: Option<Vec<IpAddr>> = None;
        for _ in 0..MAX_STEPS {
            let reply = match &servers {
                None => {
                    let o = dns::resolve(&self.zones.zones(), &name, qtype);
                    if o.rcode == ResponseCode::Refused {
                        return finish(chain, o.rcode, vec![]);
                    }
                    Reply {
                        rcode: o.rcode,
                        answers: o.answers,
                        authority: o.authority,
                        additional: o.additional,
                    }
                }
                Some(addrs) => match self.ask_any(addrs, &name, qtype).await {
                    Some(r) => r,
                    None => return finish(chain, ResponseCode::ServFail, vec![]),
                },
            };
            let referral = reply.answers.is_empty()
                && reply.rcode == ResponseCode::NoError
                && reply
                    .authority
                    .iter()
                    .any(|r| r.record_type() == RecordType::NS);
            if referral {
                let addrs = self.name_server_addresses(&reply).await;
                if addrs.is_empty() {
                    return finish(chain, ResponseCode::ServFail, vec![]);
                }
                servers = Some(addrs);
                continue;
            }
            let wanted = reply
                .answers
                .iter()
                .any(|r| r.record_type() == qtype || qtype == RecordType::ANY);
            let last_cname = reply.answers.iter().rev().find_map(|r| match r.data() {
                Some(RData::CNAME(t)) if r.record_type() == RecordType::CNAME => Some(t.0.clone()),
                _ => None,
            });
            chain.extend(reply.answers);
            match last_cname {
                Some(target) if !wanted && qtype != RecordType::CNAME => {
                    // Follow the alias from the top, as a resolver does for a target it has
                    // no delegation for yet.
                    name = target;
                    servers = None;
                }
                _ => {
                    let soa: Vec<Record> = reply
                        .authority
                        .into_iter()
                        .filter(|r| r.record_type() == RecordType::SOA)
                        .collect();
                    return finish(chain, reply.rcode, soa);
                }
            }
        }
        finish(chain, ResponseCode::ServFail, vec![])
    }

    /// The addresses of a referral's name servers: glue first, else their A records, looked
    /// up from the top.
    async fn name_server_addresses(&self, reply: &Reply) -> Vec<IpAddr> {
        let targets: Vec<Name> = reply
            .authority
            .iter()
            .filter_map(|r| match r.data() {
                Some(RData::NS(t)) => Some(t.0.clone()),
                _ => None,
            })
            .collect();
        let mut addrs: Vec<IpAddr> = reply
            .additional
            .iter()
            .filter(|r| targets.iter().any(|t| t == r.name()))
            .filter_map(|r| r.data().and_then(RData::ip_addr))
            .collect();
        if addrs.is_empty() {
            for t in &targets {
                // From the zones only: a name server's address behind a second delegation
                // would need the glue its parent should have sent.
                let o = dns::resolve(&self.zones.zones(), t, RecordType::A);
                addrs.extend(
                    o.answers
                        .iter()
                        .filter_map(|r| r.data().and_then(RData::ip_addr)),
                );
            }
        }
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// The first usable answer of `servers` (a lame or silent server is skipped).
    async fn ask_any(&self, servers: &[IpAddr], name: &Name, qtype: RecordType) -> Option<Reply> {
        for ip in servers {
            let addr = SocketAddr::new(*ip, self.upstream.port);
            match query(addr, name, qtype).await {
                Ok(m)
                    if matches!(
                        m.response_code(),
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
                {
                    return Some(Reply {
                        rcode: m.response_code(),
                        answers: m.answers().to_vec(),
                        authority: m.name_servers().to_vec(),
                        additional: m.additionals().to_vec(),
                    });
                }
                Ok(m) => {
                    tracing::debug!(%addr, %name, rcode = %m.response_code(), "delegated server refused")
                }
                Err(e) => tracing::debug!(%addr, %name, "delegated server did not answer: {e:#}"),
            }
        }
        None
    }
}

fn finish(answers: Vec<Record>, rcode: ResponseCode, authority: Vec<Record>) -> Outcome {
    Outcome {
        rcode,
        answers,
        authority,
        additional: vec![],
        authoritative: false,
    }
}

/// One question to one server: UDP, then TCP when the answer was truncated.
async fn query(server: SocketAddr, name: &Name, qtype: RecordType) -> anyhow::Result<Message> {
    let mut msg = Message::new();
    let id: u16 = rand::random();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false)
        .add_query(Query::query(name.clone(), qtype));
    let bytes = msg.to_bytes()?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 65535];
    let reply = loop {
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf))
            .await
            .context("timed out")??;
        let m = Message::from_bytes(&buf[..n])?;
        // A stray datagram (an old answer) is not ours.
        if m.id() == id {
            break m;
        }
    };
    if !reply.truncated() {
        return Ok(reply);
    }
    let mut stream = tokio::time::timeout(UPSTREAM_TIMEOUT, tokio::net::TcpStream::connect(server))
        .await
        .context("TCP connect timed out")??;
    stream.write_u16(bytes.len() as u16).await?;
    stream.write_all(&bytes).await?;
    let len = tokio::time::timeout(UPSTREAM_TIMEOUT, stream.read_u16())
        .await
        .context("TCP answer timed out")??;
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await?;
    Ok(Message::from_bytes(&buf)?)
}
