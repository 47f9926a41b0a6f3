//! Serving an HTTP router on a TCP listener with bounds, so that no client can take a listener (or the
//! node's descriptors) down by opening connections and never finishing a request.
//!
//! `axum::serve` has neither a header-read timeout nor connection caps, so this is a small accept loop
//! over hyper's HTTP/1 connection, which provides the header-read timeout (it also closes idle
//! keep-alive connections: hyper starts it whenever it waits for a request's head). Around it:
//! - a cap on open connections, and one per client IP address: connections over a cap are closed as
//!   soon as they are accepted, so a flood costs one descriptor for a moment, never one each;
//! - a cap on requests in progress (503 with `Retry-After`), and a time limit per request (408), both
//!   answered in the node's JSON refusal shape;
//! - the TLS handshake (when configured) under the header-read timeout too.
//!
//! Each request carries `ConnectInfo<SocketAddr>` (the client's address) for handlers that want it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounterVec, IntGaugeVec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::HttpLimits;
use crate::metrics::Metrics;
use crate::relay::Refusal;

/// One listener's bounds and counters, shared by its connections.
struct Bounds {
    name: &'static str,
    header_timeout: Duration,
    request_timeout: Duration,
    per_client: usize,
    connections: Arc<Semaphore>,
    clients: Mutex<HashMap<IpAddr, usize>>,
    requests: Arc<Semaphore>,
    closed: IntCounterVec,
    refused_requests: IntCounterVec,
    open: IntGaugeVec,
}

/// What a connection holds while it is open: its place under both caps, given back on drop.
struct Slot {
    bounds: Arc<Bounds>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut clients = self.bounds.clients.lock().expect("client counts");
        if let Some(n) = clients.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.ip);
            }
        }
        self.bounds.open.with_label_values(&[self.bounds.name]).dec();
    }
}

impl Bounds {
    /// A place for a new connection from `ip`, or the reason there is none.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let permit = self.connections.clone().try_acquire_owned().map_err(|_| "max-connections")?;
        let mut clients = self.clients.lock().expect("client counts");
        let n = clients.entry(ip).or_insert(0);
        if *n >= self.per_client {
            return Err("max-connections-per-client");
        }
        *n += 1;
        self.open.with_label_values(&[self.name]).inc();
        Ok(Slot { bounds: self.clone(), ip, _permit: permit })
    }

    fn closed(&self, reason: &str) {
        self.closed.with_label_values(&[self.name, reason]).inc();
    }
}

/// Serves `router` on `listener` (`name`: `agency` or `admin`, for metrics and logs) until `stop`,
/// then lets requests in progress finish.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let bounds = Arc::new(Bounds {
        name,
        header_timeout: Duration::from_secs(limits.header_timeout_secs),
        request_timeout: Duration::from_secs(limits.request_timeout_secs),
        per_client: limits.max_connections_per_client,
        connections: Arc::new(Semaphore::new(limits.max_connections)),
        clients: Mutex::new(HashMap::new()),
        requests: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
        closed: metrics.http_connections_closed.clone(),
        refused_requests: metrics.http_requests_refused.clone(),
        open: metrics.http_connections_open.clone(),
    });
    for reason in ["max-connections", "max-connections-per-client", "header-timeout", "tls-handshake"] {
        bounds.closed.with_label_values(&[name, reason]).inc_by(0);
    }
    for reason in ["busy", "request-timeout"] {
        bounds.refused_requests.with_label_values(&[name, reason]).inc_by(0);
    }
    bounds.open.with_label_values(&[name]).set(0);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or similar: back off rather than spin.
                    tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match bounds.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                bounds.closed(reason);
                tracing::debug!(listener = name, client = %peer, reason, "connection refused");
                continue;
            }
        };
        tasks.spawn(connection(stream, peer, slot, router.clone(), tls.clone(), stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => http(stream, peer, slot, router, stop).await,
        Some(acceptor) => match tokio::time::timeout(slot.bounds.header_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => http(stream, peer, slot, router, stop).await,
            Ok(Err(e)) => {
                slot.bounds.closed("tls-handshake");
                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
            }
            Err(_) => slot.bounds.closed("tls-handshake"),
        },
    }
}

/// HTTP/1 on one connection, until the client closes it, a timeout does, or the node stops.
async fn http<IO>(io: IO, peer: SocketAddr, slot: Slot, router: Router, stop: CancellationToken)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let bounds = slot.bounds.clone();
    let service = {
        let bounds = bounds.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| request(bounds.clone(), router.clone(), peer, req))
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(bounds.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            bounds.closed("header-timeout");
        }
        tracing::debug!(listener = bounds.name, client = %peer, error = %e, "connection ended");
    }
    drop(slot);
}

/// One request: under the cap on requests in progress and the time limit.
async fn request(bounds: Arc<Bounds>, router: Router, peer: SocketAddr, mut req: Request<Incoming>) -> Result<Response, Infallible> {
    let Ok(_permit) = bounds.requests.clone().try_acquire_owned() else {
        bounds.refused_requests.with_label_values(&[bounds.name, "busy"]).inc();
        let mut response =
            Refusal::new("busy", 503, "the node has as many requests in progress as it takes (max_concurrent_requests); retry shortly")
                .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(response);
    };
    req.extensions_mut().insert(ConnectInfo(peer));
    match tokio::time::timeout(bounds.request_timeout, router.oneshot(req.map(axum::body::Body::new))).await {
        Ok(response) => response,
        Err(_) => {
            bounds.refused_requests.with_label_values(&[bounds.name, "request-timeout"]).inc();
            Ok(Refusal::new(
                "request-timeout",
                408,
                format!(
                    "the request took longer than this node allows ({} s, request_timeout_secs); send the body without pauses",
                    bounds.request_timeout.as_secs()
                ),
            )
            .into_response())
        }
    }
}
