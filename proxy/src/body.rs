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
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access_log::{AccessLog, Pending};
use crate::state::Snapshot;
use crate::upstream::Lease;

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
    inner: Incoming,
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
    pub(crate) fn upstream(inner: Incoming, lease: Lease) -> Self {
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

    /// Finishes `timer` when the streamed body ends; a body made by the
    /// proxy is complete, so the timer finishes now.
    pub(crate) fn attach(&mut self, timer: Timer) {
        match self {
            Self::Upstream(body) => body.timer = Some(timer),
            Self::Full(_) => timer.finish(self.full_len()),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Upstream(body) => {
                let polled = Pin::new(&mut body.inner).poll_frame(cx);
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
            lease.release(reusable);
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
    }
}

/// A request body on its way upstream, counting its bytes when the request
/// is access-logged.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    received: Option<Arc<AtomicU64>>,
}

// === impl RequestBody ===

impl RequestBody {
    /// Wraps a downstream body; `received` (if any) counts its data bytes.
    pub(crate) fn new(inner: Incoming, received: Option<Arc<AtomicU64>>) -> Self {
        Self { inner, received }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Some(counter), Poll::Ready(Some(Ok(frame)))) = (&this.received, &polled)
            && let Some(data) = frame.data_ref()
        {
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
