//! The response body the proxy sends downstream.
//!
//! One enum instead of a boxed trait object: no allocation per request, and
//! every variant is `Unpin`, so polling needs no pin projection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http::header::{HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access_log::{AccessLog, Pending};
use crate::listen::BodyWatch;
use crate::state::Snapshot;
use crate::upstream::{Lease, Received, RelayedFields};

mod client;
pub use client::ClientBody;

/// A downstream response body.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from an upstream response.
    Upstream(UpstreamBody),
    /// Made by the proxy (errors, direct responses, admin).
    Full(Option<Bytes>),
}

/// An upstream response body with what must happen when it ends: the
/// connection goes back to its pool, in-flight counts go down.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Received,
    /// Released when the body ends (or is dropped).
    lease: Option<Lease>,
    /// Records the request's duration when the body ends (or is dropped).
    timer: Option<Timer>,
    /// Data bytes sent downstream so far.
    sent: u64,
}

/// Observes a request's duration into its (route, backend) histogram.
#[derive(Debug)]
pub(crate) struct Timer {
    /// Whether to record the duration (`--no-request-metrics` turns it off).
    pub(crate) observe: bool,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) pair: Option<(usize, usize)>,
    pub(crate) start: Instant,
    /// The access log line to write when the body ends, if sampled.
    pub(crate) log: Option<(Arc<AccessLog>, Box<Pending>)>,
    /// Counts the request against `--max-requests` until the body ends.
    pub(crate) _in_flight: Option<InFlight>,
    /// The request's span, exported when the body ends.
    #[cfg(feature = "otlp")]
    pub(crate) span: Option<Box<crate::otlp::Span>>,
}

/// One request counted in flight; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    /// Counts one more request, unless `limit` (non-zero) is reached.
    pub(crate) fn try_new(
        counter: &Arc<std::sync::atomic::AtomicUsize>,
        limit: usize,
    ) -> Option<Self> {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if limit != 0 && before >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(counter.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl ProxyBody ===

impl ProxyBody {
    /// A body with the given bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }

    /// A body streamed from upstream, holding `lease` until it ends.
    pub(crate) fn upstream(inner: Received, lease: Lease) -> Self {
        Self::Upstream(UpstreamBody {
            inner,
            lease: Some(lease),
            timer: None,
            sent: 0,
        })
    }

    /// Data bytes of a body made by the proxy.
    pub(crate) fn full_len(&self) -> u64 {
        match self {
            Self::Full(Some(bytes)) => bytes.len() as u64,
            _ => 0,
        }
    }

    /// The end-to-end fields of an HTTP/1.1 upstream's response head, which
    /// are not in the response's map (see [`RelayedFields`]).
    pub(crate) fn relayed_mut(&mut self) -> Option<&mut RelayedFields> {
        match self {
            Self::Upstream(body) => body.inner.relayed_mut(),
            Self::Full(_) => None,
        }
    }

    /// Sets `name` on `response`, replacing any field of that name the
    /// backend sent. On a response whose fields are relayed (see
    /// [`RelayedFields`]) it is kept with them, and the response's map, in
    /// which it would often be the only field, is never allocated.
    pub(crate) fn set_header(response: &mut Response<Self>, name: HeaderName, value: HeaderValue) {
        // A name already in the map is set there (no caller puts one there
        // first), so it is never in both; the backend's go either way.
        let in_map = crate::headers::has(response.headers(), &name);
        let unplaced = match response.body_mut().relayed_mut() {
            Some(relayed) if !in_map => relayed.set(name, value),
            Some(relayed) => {
                relayed.remove(&name);
                Some((name, value))
            }
            None => Some((name, value)),
        };
        if let Some((name, value)) = unplaced {
            response.headers_mut().insert(name, value);
        }
    }

    /// Finishes `timer` when the streamed body ends; a body made by the
    /// proxy is complete, so the timer finishes now.
    pub(crate) fn attach(&mut self, timer: Timer) {
        match self {
            Self::Upstream(body) => body.timer = Some(timer),
            Self::Full(_) => timer.finish(self.full_len()),
        }
    }
}

/// Why a streamed response body failed.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Upstream(body) => {
                let polled = match &mut body.inner {
                    Received::Hyper(inner) => {
                        Pin::new(inner).poll_frame(cx).map_err(BodyError::from)
                    }
                    Received::InTask(inner) => {
                        Pin::new(inner).poll_frame(cx).map_err(BodyError::from)
                    }
                };
                if let Poll::Ready(Some(Ok(frame))) = &polled
                    && let Some(data) = frame.data_ref()
                {
                    body.sent += data.len() as u64;
                }
                match &polled {
                    // The whole response was read: the connection can serve
                    // another request.
                    Poll::Ready(None) => body.finish(true),
                    Poll::Ready(Some(Err(_))) => body.finish(false),
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Upstream(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Upstream(body) => body.inner.size_hint(),
        }
    }
}

// === impl UpstreamBody ===

impl UpstreamBody {
    fn finish(&mut self, reusable: bool) {
        if let Some(lease) = self.lease.take() {
            match &mut self.inner {
                Received::InTask(body) => match body.take_reusable() {
                    Some(connection) if reusable => lease.release_in_task(connection),
                    _ => lease.release(false),
                },
                Received::Hyper(_) => lease.release(reusable),
            }
        }
        if let Some(timer) = self.timer.take() {
            timer.finish(self.sent);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Dropped before its end (client went away): the connection is in an
        // unknown state, so it is not reused.
        let reusable = self.inner.is_end_stream();
        self.finish(reusable);
    }
}

// === impl Timer ===

impl Timer {
    pub(crate) fn finish(self, bytes_sent: u64) {
        if self.observe {
            let (route, backend) = (self.pair.map(|p| p.0), self.pair.map(|p| p.1));
            self.snapshot
                .metrics
                .pair(route, backend)
                .observe(self.start.elapsed().as_secs_f64());
        }
        if let Some((log, pending)) = self.log {
            log.finish(&pending, bytes_sent);
        }
        #[cfg(feature = "otlp")]
        if let Some(span) = self.span {
            span.end();
        }
    }
}

/// A request body on its way upstream: counts its bytes when the request
/// is access-logged, and enforces the body size limit and the idle timeout
/// (slow POST). Why it failed is left in a `BodyVerdict` for the handler.
#[derive(Debug)]
pub struct RequestBody {
    /// `None`: a request sent again after its upstream dropped it, which is
    /// only done for requests without a body (see `server::send`).
    inner: Option<Incoming>,
    received: Option<Arc<AtomicU64>>,
    limit: Option<u64>,
    seen: u64,
    idle: Option<IdleTimer>,
    verdict: BodyVerdict,
    /// Told when the body was read to its end (HTTP/1.1 connection parking).
    watch: Option<BodyWatch>,
}

#[derive(Debug)]
struct IdleTimer {
    timeout: std::time::Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// A wait for the next frame is under way (its deadline is armed).
    waiting: bool,
}

/// Why the proxy cut a request body, shared with the handler. A bodiless
/// request (most of them) has nothing to cut, and no shared cell.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyVerdict(Option<Arc<std::sync::atomic::AtomicU8>>);

const VERDICT_TOO_LARGE: u8 = 1;
const VERDICT_IDLE: u8 = 2;

/// A request body error: the client's, or a limit of ours.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// Reading from the client failed.
    #[error("reading the request body failed: {0}")]
    Client(#[from] hyper::Error),
    /// The body passed `--max-request-body-bytes`.
    #[error("the request body passed the size limit")]
    TooLarge,
    /// The client paused longer than `--request-body-idle-timeout`.
    #[error("the client stopped sending its request body")]
    Idle,
}

// === impl BodyVerdict ===

impl BodyVerdict {
    /// The error to answer with, if the proxy cut the body.
    pub(crate) fn error(&self) -> Option<crate::error::ProxyError> {
        match self.0.as_ref()?.load(Ordering::Acquire) {
            VERDICT_TOO_LARGE => Some(crate::error::ProxyError::BodyTooLarge),
            VERDICT_IDLE => Some(crate::error::ProxyError::BodyTimeout),
            _ => None,
        }
    }
}

// === impl RequestBody ===

impl RequestBody {
    /// Wraps a downstream body; `received` (if any) counts its data bytes,
    /// `watch` (if any) is told when the body was read to its end.
    pub(crate) fn new(
        inner: ClientBody,
        received: Option<Arc<AtomicU64>>,
        limit: Option<u64>,
        idle_timeout: std::time::Duration,
        watch: Option<BodyWatch>,
    ) -> (Self, BodyVerdict) {
        let Some(inner) = inner.into_incoming() else {
            return (Self::empty(), BodyVerdict::default());
        };
        // Bodiless requests (most GETs) need no timer.
        let idle = (!idle_timeout.is_zero() && !inner.is_end_stream()).then(|| IdleTimer {
            timeout: idle_timeout,
            sleep: Box::pin(tokio::time::sleep(idle_timeout)),
            waiting: false,
        });
        let verdict = BodyVerdict((!inner.is_end_stream()).then(Arc::default));
        let body = Self {
            inner: Some(inner),
            received,
            limit,
            seen: 0,
            idle,
            verdict: verdict.clone(),
            watch,
        };
        (body, verdict)
    }

    /// A body with nothing in it, for a request sent a second time.
    pub(crate) fn empty() -> Self {
        Self {
            inner: None,
            received: None,
            limit: None,
            seen: 0,
            idle: None,
            verdict: BodyVerdict::default(),
            watch: None,
        }
    }

    fn finished(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.finished();
        }
    }

    fn fail(
        &mut self,
        verdict: u8,
        error: RequestBodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        if let Some(shared) = &self.verdict.0 {
            shared.store(verdict, Ordering::Release);
        }
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        if let Some(idle) = &mut this.idle
            && !idle.waiting
        {
            // The wait starts now, not when the last frame came: the
            // upstream may have been slow to ask for more.
            let deadline = tokio::time::Instant::now() + idle.timeout;
            idle.sleep.as_mut().reset(deadline);
            idle.waiting = true;
        }
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        let polled = match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Pending => {
                if let Some(idle) = &mut this.idle
                    && idle.sleep.as_mut().poll(cx).is_ready()
                {
                    return this.fail(VERDICT_IDLE, RequestBodyError::Idle);
                }
                return Poll::Pending;
            }
            Poll::Ready(polled) => polled,
        };
        if let Some(idle) = &mut this.idle {
            idle.waiting = false;
        }
        let frame = match polled {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => {
                this.finished();
                return Poll::Ready(None);
            }
        };
        // The upstream may stop polling once the body says it has ended.
        if this.inner.as_ref().is_some_and(Body::is_end_stream) {
            this.finished();
        }
        if let Some(data) = frame.data_ref() {
            let length = data.len() as u64;
            this.seen += length;
            if this.limit.is_some_and(|limit| this.seen > limit) {
                return this.fail(VERDICT_TOO_LARGE, RequestBodyError::TooLarge);
            }
            if let Some(counter) = &this.received {
                counter.fetch_add(length, Ordering::Relaxed);
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
