//! Per-connection bookkeeping the protocol libraries leave to us: streams
//! in progress (for the idle timeout), streams the client abandoned (the
//! premature-reset check), and a write timeout for clients that stop
//! reading.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::body::ProxyBody;
use crate::metrics::{ConnectionProtocol, Downstream};

/// Streams abandoned by the client before their response, past which a
/// connection is closed when they are also half of its streams (Envoy's
/// premature-reset check): each costs us a route, a pick and often an
/// upstream request, and costs the client one frame.
const PREMATURE_RESET_LIMIT: u32 = 100;

/// What one connection is doing.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    metrics: Arc<Downstream>,
    /// A [`ConnectionProtocol`], set by the first request.
    protocol: AtomicU8,
    born: Instant,
    started: AtomicU32,
    premature: AtomicU32,
    active: AtomicU32,
    /// Nanoseconds after `born` when `active` last fell to zero.
    idle_since: AtomicU64,
    /// Notified when the connection must be closed now.
    pub(crate) abort: Notify,
    /// HTTP/1.1 request bodies not yet read to their end.
    unfinished_bodies: AtomicU32,
    /// A request body was dropped before its end, or a request or response
    /// asked for the connection to close: the byte stream may not be at a
    /// request boundary once idle, so the connection is never parked.
    unparkable: AtomicBool,
    /// Set while the HTTP/1.1 connection is being parked: the socket stays
    /// open when hyper lets go of it.
    pub(crate) keep_open: AtomicBool,
}

impl ConnectionState {
    /// A connection just accepted (counted open, protocol unknown).
    pub(crate) fn new(metrics: Arc<Downstream>) -> Arc<Self> {
        metrics.opened();
        Arc::new(Self {
            metrics,
            protocol: AtomicU8::new(ConnectionProtocol::None as u8),
            born: Instant::now(),
            started: AtomicU32::new(0),
            premature: AtomicU32::new(0),
            active: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            abort: Notify::new(),
            unfinished_bodies: AtomicU32::new(0),
            unparkable: AtomicBool::new(false),
            keep_open: AtomicBool::new(false),
        })
    }

    /// A stream starts; the guard ends it.
    pub(crate) fn stream_started(self: &Arc<Self>, version: http::Version) -> StreamGuard {
        if self.started.fetch_add(1, Ordering::Relaxed) == 0 {
            let protocol = if version == http::Version::HTTP_2 {
                ConnectionProtocol::Http2
            } else {
                ConnectionProtocol::Http1
            };
            self.protocol.store(protocol as u8, Ordering::Relaxed);
            self.metrics.identified(protocol);
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            connection: Some(self.clone()),
        }
    }

    fn stream_ended(&self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.idle_since.store(now, Ordering::Relaxed);
        }
    }

    /// The HTTP/1.1 fast path handed the connection to hyper.
    pub(crate) fn handed_over(&self) {
        self.metrics.handed_over.inc();
    }

    /// The connection is parked (`true`) or resumes (`false`).
    pub(crate) fn set_parked(&self, parked: bool) {
        if parked {
            self.metrics.parked.inc();
        } else {
            self.metrics.parked.dec();
        }
    }

    /// The connection has closed: count it out.
    pub(crate) fn closed(&self) {
        let protocol = match self.protocol.load(Ordering::Relaxed) {
            1 => ConnectionProtocol::Http1,
            2 => ConnectionProtocol::Http2,
            _ => ConnectionProtocol::None,
        };
        self.metrics.closed(protocol);
    }

    /// How long nothing has been in progress (zero while something is).
    pub(crate) fn idle_for(&self) -> Duration {
        if self.active.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let since = Duration::from_nanos(self.idle_since.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(since)
    }

    /// Watches an HTTP/1.1 request body until it is read to its end.
    pub(crate) fn watch_body(self: &Arc<Self>) -> BodyWatch {
        self.unfinished_bodies.fetch_add(1, Ordering::AcqRel);
        BodyWatch(Arc::new(WatchedBody {
            connection: self.clone(),
            finished: AtomicBool::new(false),
        }))
    }

    /// A request or response said `Connection: close` (or the client
    /// speaks HTTP/1.0): hyper closes after it, and parking must not
    /// keep the socket open instead.
    pub(crate) fn closes_after_exchange(&self) {
        self.unparkable.store(true, Ordering::Release);
    }

    /// Whether an idle HTTP/1.1 connection is known to sit at a request
    /// boundary: every request body was read to its end and nobody asked
    /// to close.
    pub(crate) fn parkable(&self) -> bool {
        self.protocol.load(Ordering::Relaxed) == ConnectionProtocol::Http1 as u8
            && self.unfinished_bodies.load(Ordering::Acquire) == 0
            && !self.unparkable.load(Ordering::Acquire)
    }

    fn abandoned(&self) {
        let premature = self.premature.fetch_add(1, Ordering::Relaxed) + 1;
        let started = self.started.load(Ordering::Relaxed);
        if premature >= PREMATURE_RESET_LIMIT && premature.saturating_mul(2) >= started {
            tracing::warn!(
                premature,
                started,
                "closing a connection whose client abandons most of its streams"
            );
            self.abort.notify_one();
        }
    }
}

/// Tracks one HTTP/1.1 request body (a request extension, taken by the
/// proxy's request body): dropped before [`BodyWatch::finished`], the body
/// was abandoned part way and the connection is never parked.
#[derive(Debug, Clone)]
pub(crate) struct BodyWatch(Arc<WatchedBody>);

#[derive(Debug)]
struct WatchedBody {
    connection: Arc<ConnectionState>,
    finished: AtomicBool,
}

impl BodyWatch {
    /// The body was read to its end.
    pub(crate) fn finished(&self) {
        if !self.0.finished.swap(true, Ordering::AcqRel) {
            self.0
                .connection
                .unfinished_bodies
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if !*self.finished.get_mut() {
            self.connection.unparkable.store(true, Ordering::Release);
            self.connection
                .unfinished_bodies
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One stream in progress. Dropped before [`StreamGuard::answered`], the
/// client abandoned it (an HTTP/2 reset, or a closed connection).
#[derive(Debug)]
pub(crate) struct StreamGuard {
    connection: Option<Arc<ConnectionState>>,
}

impl StreamGuard {
    /// The response asked for the connection to close after it.
    pub(crate) fn closes_after_exchange(&self) {
        if let Some(connection) = &self.connection {
            connection.closes_after_exchange();
        }
    }

    /// The response is ready: the stream stays active until its body ends.
    pub(crate) fn answered(mut self, response: ProxyBody) -> TrackedBody {
        TrackedBody {
            inner: response,
            connection: self.connection.take(),
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.abandoned();
            connection.stream_ended();
        }
    }
}

/// A response body that ends its stream when it ends (or is dropped).
#[derive(Debug)]
pub(crate) struct TrackedBody {
    inner: ProxyBody,
    connection: Option<Arc<ConnectionState>>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.stream_ended();
        }
    }
}

impl TrackedBody {
    /// See [`ProxyBody::relayed_mut`].
    pub(crate) fn relayed_mut(&mut self) -> Option<&mut crate::upstream::RelayedFields> {
        self.inner.relayed_mut()
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Connections of a listener still open, for the shutdown wait.
#[derive(Debug, Default)]
pub(crate) struct LiveConnections {
    count: AtomicUsize,
    none_left: Notify,
}

impl LiveConnections {
    pub(crate) fn opened(self: &Arc<Self>) -> LiveGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        LiveGuard(self.clone())
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Completes when every connection has closed.
    pub(crate) async fn all_closed(&self) {
        loop {
            let notified = self.none_left.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub(crate) struct LiveGuard(Arc<LiveConnections>);

/// One open client connection, counted in the listener's live set and in
/// the metrics until dropped. It moves with the connection from task to
/// task (a parked HTTP/1.1 connection waits in a task of its own), so
/// whichever task ends the connection counts it closed.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    pub(crate) state: Arc<ConnectionState>,
    _live: LiveGuard,
}

impl OpenConnection {
    pub(crate) fn new(state: Arc<ConnectionState>, live: LiveGuard) -> Self {
        Self { state, _live: live }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.state.closed();
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// A client socket under hyper. Its writes fail with `TimedOut` when the
/// peer accepts no bytes for `timeout` (a client that stops reading its
/// response), and its shutdown is skipped while the connection is being
/// parked (hyper finishes, the socket stays open).
#[derive(Debug)]
pub(crate) struct ClientIo<T> {
    inner: T,
    connection: Arc<ConnectionState>,
    timeout: Option<Duration>,
    /// Armed while a write waits; allocated on the first wait only.
    stalled: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<T> ClientIo<T> {
    pub(crate) fn new(inner: T, timeout: Duration, connection: Arc<ConnectionState>) -> Self {
        Self {
            inner,
            connection,
            timeout: (!timeout.is_zero()).then_some(timeout),
            stalled: None,
            waiting: false,
        }
    }

    /// Frees the write-stall timer, if a write ever waited: a parked
    /// connection writes nothing until it resumes.
    pub(crate) fn release_stall_timer(&mut self) {
        self.stalled = None;
        self.waiting = false;
    }

    /// Checks the write deadline after the inner write returned `Pending`.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        let deadline = Instant::now() + timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            sleep.as_mut().reset(deadline);
            self.waiting = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the response write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.check_stall(cx).map_ok(|()| 0),
            ready => {
                this.waiting = false;
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.check_stall(cx).map_ok(|()| 0),
            ready => {
                this.waiting = false;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.check_stall(cx),
            ready => {
                this.waiting = false;
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.connection.keep_open.load(Ordering::Acquire) {
            // hyper finished because we parked it: the socket stays open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
