//! The response body the proxy sends downstream.
//!
//! One enum instead of a boxed trait object: no allocation per request, and
//! every variant is `Unpin`, so polling needs no pin projection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
}

/// Observes a request's duration into its (route, backend) histogram.
#[derive(Debug)]
pub(crate) struct Timer {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) route: usize,
    pub(crate) backend: usize,
    pub(crate) start: Instant,
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
    pub(crate) fn upstream(inner: Incoming, lease: Lease, timer: Timer) -> Self {
        Self::Upstream(UpstreamBody {
            inner,
            lease: Some(lease),
            timer: Some(timer),
        })
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
            timer.finish();
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
    pub(crate) fn finish(self) {
        self.snapshot
            .metrics
            .pair(Some(self.route), Some(self.backend))
            .observe(self.start.elapsed().as_secs_f64());
    }
}
