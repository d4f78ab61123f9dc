//! The HTTP forwarders in front of Garage's S3 port: clients reach Garage only through them, so
//! `stop` can close every client connection at once, and `spaces` faults answer in its place.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use super::grants::{Activity, Grants};
use super::versioning::{box_err, Body, Upstream, Versioning};
use crate::faults::{Faults, SpacesFault};

/// Where the forwarders look for armed faults; empty until the API registers its faults.
pub(super) type FaultSlot = Arc<RwLock<Option<Arc<Faults>>>>;

/// Forwards every connection accepted on `listener` to `target`, request by request over a
/// connection of its own to Garage. Connection tasks live in the accept loop's set, so
/// aborting the returned task closes them all.
pub(super) fn spawn(
    listener: tokio::net::TcpListener,
    target: SocketAddr,
    faults: FaultSlot,
    activity: Arc<Activity>,
    grants: std::sync::Weak<Grants>,
    versioning: Arc<Versioning>,
) -> JoinHandle<()> {
    crate::net::spawn_accept_loop(listener, "Spaces forwarder", move |inbound| {
        forward(
            inbound,
            target,
            faults.clone(),
            activity.clone(),
            grants.clone(),
            versioning.clone(),
        )
    })
}

/// A `PUT` of a bucket itself (`/<bucket>`, no object key): a CreateBucket, or a change to a
/// bucket's own settings. Path-style, as the S3 clients here send them.
fn is_bucket_put(req: &Request<Incoming>) -> bool {
    req.method() == hyper::Method::PUT && req.uri().path().trim_matches('/').split('/').count() <= 1
}

/// Serves one client connection: each request is answered by an armed fault or sent on to
/// Garage unchanged (headers included: they are signed), its answer streamed back.
async fn forward(
    inbound: tokio::net::TcpStream,
    target: SocketAddr,
    faults: FaultSlot,
    activity: Arc<Activity>,
    grants: std::sync::Weak<Grants>,
    versioning: Arc<Versioning>,
) -> anyhow::Result<()> {
    let outbound = match tokio::net::TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Spaces forwarder cannot reach garage");
            return Ok(());
        }
    };
    outbound.set_nodelay(true).ok();
    inbound.set_nodelay(true).ok();
    let (sender, upstream) = hyper::client::conn::http1::handshake(TokioIo::new(outbound)).await?;
    let sender = Arc::new(Upstream(tokio::sync::Mutex::new(sender)));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (sender, faults, activity, grants, versioning) = (
            sender.clone(),
            faults.clone(),
            activity.clone(),
            grants.clone(),
            versioning.clone(),
        );
        async move {
            // Grants are polled for while requests come in (a CreateBucket among them).
            activity.touch();
            let fault = faults
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|f| f.take_spaces(req.method().as_str(), req.uri().path()));
            if let Some(fault) = fault {
                tracing::info!(status = fault.status, path = %req.uri().path(), "spaces fault fired");
                let resp = fault_response(&fault, &req);
                // A body already on its way is read, so that the client gets the answer
                // rather than a reset; one that waits for `100 Continue` is never asked for.
                if !req.headers().contains_key(hyper::header::EXPECT) {
                    req.into_body().collect().await?;
                }
                return Ok::<_, hyper::Error>(resp);
            }
            let bucket_put = is_bucket_put(&req);
            let req = req.map(|b| b.map_err(box_err).boxed());
            let resp = versioning.route_owned(req, sender.clone()).await?;
            activity.touch();
            // A bucket Garage just made is named for its creating key only; Spaces names are
            // global. It is made global (and given its keys' grants) before the client hears
            // of it: converged later, a DeleteBucket that came between the loop's two alias
            // changes removed only an alias and left the bucket (seen under load).
            if bucket_put && resp.status().is_success() {
                if let Some(g) = grants.upgrade() {
                    if let Err(e) = g.converge().await {
                        tracing::warn!(error = %format!("{e:#}"), "converging a new bucket's name and grants");
                    }
                }
            }
            Ok(resp)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(inbound), service);
    // Either side closing ends both, as the byte copy did.
    tokio::select! {
        r = served => r?,
        r = upstream => r?,
    }
    Ok(())
}

/// S3's error answer, as Spaces gives it: an XML `Error` (none for HEAD) with a request id.
fn fault_response(fault: &SpacesFault, req: &Request<Incoming>) -> Response<Body> {
    let request_id = format!("tx{:016x}-localocean", rand::random::<u64>());
    let body = if req.method() == hyper::Method::HEAD {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{request_id}</RequestId></Error>",
            fault.code,
            fault.message,
            req.uri().path()
        )
    };
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(fault.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE))
        .header("content-type", "application/xml")
        .header("x-amz-request-id", request_id);
    if let Some(s) = fault.retry_after {
        resp = resp.header("retry-after", s.to_string());
    }
    resp.body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .unwrap_or_else(|_| Response::new(Empty::new().map_err(|e| match e {}).boxed()))
}
