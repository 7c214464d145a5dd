//! A request body as it came from the client.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The body of a request from a client: hyper's, or none at all for a
/// request read by the proxy's own HTTP/1.1 loop, which takes only
/// requests without a body (see `listen::fast_path`).
#[derive(Debug)]
pub enum ClientBody {
    /// Read by hyper.
    Hyper(Incoming),
    /// The request has no body.
    Empty,
}

impl ClientBody {
    /// hyper's body, if there is one to read.
    pub(crate) fn into_incoming(self) -> Option<Incoming> {
        match self {
            Self::Hyper(incoming) => Some(incoming),
            Self::Empty => None,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Hyper(incoming) => Pin::new(incoming).poll_frame(cx),
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(incoming) => incoming.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(incoming) => incoming.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}
