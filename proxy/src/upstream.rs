//! Upstream connections: one pool per endpoint.
//!
//! HTTP/1.1 endpoints keep stacks of idle keep-alive connections, one for
//! the in-task client that sends requests without a body (`h1`,
//! `in_task`) and one for hyper's client, which sends the rest; a
//! connection returns to its stack only once its response body was read to
//! the end.
//! HTTP/2 endpoints share one multiplexed connection. A request that never
//! left the proxy (connect failure, or a pooled connection that turned out to
//! be closed) comes back to the caller intact so it can be retried.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use switchyard_config::spec::Protocol;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::body::RequestBody;
use crate::upstream_tls::{UpstreamIo, UpstreamTls};

mod h1;
mod health;
mod in_task;
mod pooled;

pub(crate) use h1::RelayedFields;
use health::Health;
pub(crate) use in_task::Received;

/// Most idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 512;

/// An idle pooled connection older than this is closed instead of reused:
/// shorter than the usual server keep-alive timeouts (nginx 75s, Node 5s is
/// the outlier), so a request rarely meets a connection the server is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One address of a backend, with its connections.
#[derive(Debug)]
pub struct Endpoint {
    addr: String,
    protocol: Protocol,
    /// The backend's TLS client, when it speaks TLS.
    tls: Option<Arc<UpstreamTls>>,
    /// Idle connections, most recently used last, with when they went idle.
    idle: Mutex<Vec<(http1::SendRequest<RequestBody>, Instant)>>,
    /// Idle connections of the in-task client (`h1`), likewise.
    idle_in_task: Mutex<Vec<(Box<h1::Conn>, Instant)>>,
    /// The in-task client's connections, so a drain deadline can cut them.
    in_task_cuts: Mutex<Vec<Weak<h1::Cut>>>,
    shared_h2: tokio::sync::Mutex<Option<http2::SendRequest<RequestBody>>>,
    in_flight: AtomicUsize,
    /// Set when the endpoint left the table: nothing goes back to its pool.
    retired: AtomicBool,
    /// Connection tasks, so a drain deadline can cut them.
    connections: Mutex<Vec<AbortHandle>>,
    /// Connect failures, which make the endpoint pick pass it over.
    health: Health,
}

/// How upstream connections are opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectPolicy {
    /// Limit for the TCP connect and the TLS handshake.
    pub(crate) timeout: Duration,
    /// How long a first connect failure passes an endpoint over (see the
    /// `health` module); zero turns passive health off.
    pub(crate) ejection: Duration,
}

/// What a request holds while it is in flight: counts, and the HTTP/1.1
/// connection to give back to its pool when the response has been read.
#[derive(Debug)]
pub(crate) struct Lease {
    endpoint: Arc<Endpoint>,
    backend: Arc<Backend>,
    connection: Option<http1::SendRequest<RequestBody>>,
}

/// A failed send.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Nothing reached the upstream: the request may be sent elsewhere.
    NotSent {
        /// Boxed: failures are rare, and the error stays small on the happy path.
        request: Box<Request<RequestBody>>,
        reason: String,
        connect: bool,
    },
    /// Sent by the in-task client, and the upstream closed or reset the
    /// connection before any answer. The request comes back untouched (it
    /// has no body): an idempotent one may be sent again.
    Unanswered {
        request: Box<Request<RequestBody>>,
        reason: String,
    },
    /// The request was (at least partly) sent.
    Failed {
        reason: String,
        /// The upstream closed or refused the exchange without answering:
        /// an idempotent request without a body may be sent again.
        unanswered: bool,
    },
}

// === impl Endpoint ===

impl Endpoint {
    pub(crate) fn new(addr: String, protocol: Protocol, tls: Option<Arc<UpstreamTls>>) -> Self {
        Self {
            addr,
            protocol,
            tls,
            idle: Mutex::new(Vec::new()),
            idle_in_task: Mutex::new(Vec::new()),
            in_task_cuts: Mutex::new(Vec::new()),
            shared_h2: tokio::sync::Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            health: Health::default(),
        }
    }

    /// The endpoint's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Requests in flight on this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Open connections (pooled or in use; HTTP/2 counts one).
    pub fn open_connections(&self) -> usize {
        let tasks = self
            .connections
            .lock()
            .map_or(0, |c| c.iter().filter(|t| !t.is_finished()).count());
        let in_task = self
            .in_task_cuts
            .lock()
            .map_or(0, |c| c.iter().filter(|cut| cut.strong_count() > 0).count());
        tasks + in_task
    }

    /// Whether the endpoint pick passes this endpoint over for now, after
    /// it could not be connected to.
    pub fn is_ejected(&self) -> bool {
        self.health.is_ejected()
    }

    /// Connect failures in a row (0 once a connection opened).
    pub fn connect_failures(&self) -> u32 {
        self.health.failures()
    }

    /// Idle pooled HTTP/1.1 connections.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
            + self.idle_in_task.lock().map_or(0, |idle| idle.len())
    }

    /// Stops pooling and closes idle connections; requests in flight finish.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.close_idle();
    }

    /// Closes idle connections (in-flight ones are untouched).
    pub(crate) fn close_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        if let Ok(mut idle) = self.idle_in_task.lock() {
            idle.clear();
        }
        if let Ok(mut shared) = self.shared_h2.try_lock() {
            shared.take();
        }
    }

    /// Aborts every connection task: whatever runs on them fails at once
    /// (HTTP/1.1 responses end early, HTTP/2 streams are reset).
    pub(crate) fn abort_connections(&self) {
        self.close_idle();
        if let Ok(mut connections) = self.connections.lock() {
            for connection in connections.drain(..) {
                connection.abort();
            }
        }
        if let Ok(mut cuts) = self.in_task_cuts.lock() {
            for cut in cuts.drain(..).filter_map(|cut| cut.upgrade()) {
                cut.cut();
            }
        }
    }

    fn track_connection(&self, task: AbortHandle) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.retain(|c| !c.is_finished());
            connections.push(task);
        }
    }

    /// Sends `request`, counting it in flight from now until the returned
    /// lease is dropped.
    pub(crate) async fn send(
        self: &Arc<Self>,
        backend: &Arc<Backend>,
        request: Box<Request<RequestBody>>,
        policy: ConnectPolicy,
    ) -> Result<(Response<Received>, Lease), SendError> {
        let lease = Lease::new(self.clone(), backend.clone());
        if self.sends_in_task(&request) {
            return self.send_in_task(request, policy).await.map(|r| (r, lease));
        }
        // Boxed: hyper's send futures would be most of this one's state,
        // which every request's future holds and copies when it moves, and
        // they serve only requests with a body and HTTP/2 backends.
        Box::pin(self.send_with_hyper(request, policy, lease)).await
    }

    async fn connect(&self, policy: ConnectPolicy) -> Result<UpstreamIo, String> {
        let result = self.open(policy.timeout).await;
        match &result {
            Ok(_) => self.health.connected(),
            Err(reason) => {
                let ejection = self.health.connect_failed(policy.ejection);
                if !ejection.is_zero() {
                    tracing::warn!(endpoint = %self.addr, %reason, ?ejection, "could not connect; passing the endpoint over");
                }
            }
        }
        result
    }

    async fn open(&self, timeout: Duration) -> Result<UpstreamIo, String> {
        let connecting = async {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| e.to_string())?;
            // Small requests and responses: do not wait to coalesce segments.
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            match &self.tls {
                None => Ok(UpstreamIo::Plain(stream)),
                Some(tls) => Ok(UpstreamIo::Tls(Box::new(
                    tls.connect(&self.addr, stream).await?,
                ))),
            }
        };
        // The connect timeout covers the TLS handshake too.
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err(format!("connect timed out after {timeout:?}")),
        }
    }
}

// === impl Lease ===

impl Lease {
    fn new(endpoint: Arc<Endpoint>, backend: Arc<Backend>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        backend.in_flight_add(1);
        Self {
            endpoint,
            backend,
            connection: None,
        }
    }

    /// The address of the endpoint serving the request.
    pub(crate) fn endpoint_addr(&self) -> &str {
        self.endpoint.addr()
    }

    /// Ends the lease; a fully read HTTP/1.1 connection goes back to its pool.
    pub(crate) fn release(mut self, reusable: bool) {
        if let Some(connection) = self.connection.take()
            && reusable
        {
            self.endpoint.give_back(connection);
        }
    }

    /// Ends the lease of an in-task exchange whose body handed back its
    /// connection for reuse.
    pub(crate) fn release_in_task(self, connection: Box<h1::Conn>) {
        self.endpoint.give_back_in_task(connection);
    }

    /// Keeps the connection out of the pool (it was upgraded to a tunnel).
    pub(crate) fn detach_connection(&mut self) {
        self.connection = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.backend.in_flight_add(-1);
    }
}

/// The connection just opened, with the request to send on it; or, when
/// it could not be opened, the error that gives the request back for
/// another endpoint.
fn or_not_sent<C>(
    connected: Result<C, String>,
    request: Box<Request<RequestBody>>,
) -> Result<(C, Box<Request<RequestBody>>), SendError> {
    match connected {
        Ok(connection) => Ok((connection, request)),
        Err(reason) => Err(SendError::NotSent {
            request,
            reason,
            connect: true,
        }),
    }
}

// === impl SendError ===

impl SendError {
    fn from_try(mut error: hyper::client::conn::TrySendError<Request<RequestBody>>) -> Self {
        let reason = error.error().to_string();
        match error.take_message() {
            Some(request) => Self::NotSent {
                request: Box::new(request),
                reason,
                connect: false,
            },
            None => Self::Failed {
                reason,
                unanswered: closed_unanswered(error.error()),
            },
        }
    }
}

/// Whether a send failed because the upstream closed the connection (or,
/// on HTTP/2, refused the stream or went away) before any response: a
/// server closing an idle keep-alive connection as a request arrives on it,
/// or one shutting down. Timeouts and malformed responses are not in this
/// class; nor is anything after the response head (the send succeeded).
fn closed_unanswered(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return is_disconnect(io);
        }
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote())
                || h2.get_io().is_some_and(is_disconnect);
        }
        source = cause.source();
    }
    false
}

/// Whether an I/O error means the peer closed or reset the connection.
fn is_disconnect(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}
