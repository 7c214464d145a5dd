//! HTTP/1.1 exchanges run in the request's own task.
//!
//! hyper's client drives each connection from a task of its own and hands
//! it requests over a channel, with a second channel for the response: for
//! the usual proxied request that is two more task wake-ups and both
//! channels' slots per request, on a request path where the client
//! connection's task had 11.5 % of the proxy's CPU samples in user space.
//! This module serves the common case itself: a request without a body to
//! an HTTP/1.1 backend, in cleartext or TLS. It writes the request head,
//! reads the response head with httparse and the body as the downstream
//! side polls for it; when the body ended cleanly the connection goes back
//! to the endpoint's pool. Requests with a body, upgrades and HTTP/2 stay
//! on hyper's client.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use crate::body::RequestBody;
use crate::upstream_tls::UpstreamIo;

mod chunked;
mod fields;
mod head;

use super::is_disconnect;
use chunked::Chunked;
pub(crate) use fields::RelayedFields;
use head::{Head, parse_head, too_large};

/// Most headers read in a response head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Longest response head accepted, and longest chunk-size line or trailer
/// section: past it the response is refused rather than buffered.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Room made in the read buffer before a read, at first.
const READ_CHUNK: usize = 8 * 1024;
/// Most room made before a read: a read that fills the room doubles it, so
/// a large body is read in fewer system calls (hyper's client adapts too).
const MAX_READ_CHUNK: usize = 512 * 1024;

/// An HTTP/1.1 connection to an endpoint, idle or in use.
#[derive(Debug)]
pub(crate) struct Conn {
    io: UpstreamIo,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// Room to make in `buf` before the next read.
    read_size: usize,
    /// Head of the request being written; its capacity is kept.
    head: Vec<u8>,
    /// The last response's end-to-end fields, until they are relayed:
    /// here rather than in the [`Body`], which every response future
    /// carries, as the connection is boxed already.
    relayed: RelayedFields,
    cut: Arc<Cut>,
}

/// Lets the endpoint end a connection's exchange at a drain deadline: the
/// connection has no task of its own to abort.
#[derive(Debug, Default)]
pub(crate) struct Cut {
    cut: AtomicBool,
    waker: AtomicWaker,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// The connection closed or reset before any byte of a response.
    Unanswered(String),
    /// Anything else: a malformed response, a close part way, a drain cut.
    Failed(String),
}

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304), or the body has been read.
    Ended,
    /// `Content-Length`: this many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the server closes the connection.
    UntilClose,
}

/// A response body read from a [`Conn`].
#[derive(Debug)]
pub(crate) struct Body {
    /// Boxed once per connection, so the body, which every response
    /// future and downstream body carries, stays small.
    conn: Option<Box<Conn>>,
    framing: Framing,
    /// The connection may serve another request once the body ended.
    keep_alive: bool,
}

// === impl Cut ===

impl Cut {
    /// Ends the connection's exchange, now or at its next read.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    fn poll_cut(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.is_cut()
    }
}

// === impl Conn ===

impl Conn {
    pub(crate) fn new(io: UpstreamIo, cut: Arc<Cut>) -> Box<Self> {
        Box::new(Self {
            io,
            buf: BytesMut::new(),
            read_size: READ_CHUNK,
            head: Vec::new(),
            relayed: RelayedFields::default(),
            cut,
        })
    }

    /// Whether an idle connection can take a request: nothing arrived on it
    /// since its last response. A server closing it, or sending anything
    /// unasked, makes it readable; the readiness is tokio's, known from the
    /// last poll of the reactor, so the check costs no system call. Over
    /// TLS it is the socket's: a close_notify or stray record counts too.
    /// (A TLS 1.3 server's session tickets follow the handshake, and are
    /// read with the first response.)
    pub(crate) fn idle_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let socket = match &self.io {
            UpstreamIo::Plain(socket) => socket,
            UpstreamIo::Tls(tls) => tls.get_ref().0,
        };
        self.buf.is_empty() && !self.cut.is_cut() && socket.poll_read_ready(&mut cx).is_pending()
    }

    /// Sends `request` (which has no body) and reads the response head.
    pub(crate) async fn exchange(
        mut self: Box<Self>,
        request: &Request<RequestBody>,
    ) -> Result<Response<Body>, ExchangeError> {
        encode_head(&mut self.head, request);
        // The flush sends what TLS may still hold; on TCP it does nothing.
        let written = match self.io.write_all(&self.head).await {
            Ok(()) => self.io.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            return Err(ExchangeError::Unanswered(format!(
                "writing the request failed: {e}"
            )));
        }
        let head_request = request.method() == Method::HEAD;
        loop {
            let head = loop {
                if let Some(head) = parse_head(&mut self.buf, head_request, &mut self.relayed)? {
                    break head;
                }
                if self.buf.len() > MAX_HEAD_BYTES {
                    return Err(too_large());
                }
                let nothing_yet = self.buf.is_empty();
                match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                    Ok(0) if nothing_yet => {
                        return Err(ExchangeError::Unanswered(
                            "connection closed before message completed".to_owned(),
                        ));
                    }
                    Ok(0) => {
                        return Err(ExchangeError::Failed(
                            "connection closed in the middle of the response head".to_owned(),
                        ));
                    }
                    Ok(_) => {}
                    // A drain cut is not the upstream's doing: not retried.
                    Err(e) if nothing_yet && is_disconnect(&e) && !self.cut.is_cut() => {
                        return Err(ExchangeError::Unanswered(e.to_string()));
                    }
                    Err(e) => return Err(ExchangeError::Failed(e.to_string())),
                }
            };
            // Interim responses (100 Continue, 103 Early Hints) are not
            // relayed; the final one follows on the same connection.
            let Head {
                response,
                framing,
                keep_alive,
            } = head;
            let status = response.status();
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            let body = Body {
                conn: Some(self),
                framing,
                keep_alive,
            };
            return Ok(response.map(|()| body));
        }
    }

    /// Reads more into the buffer: `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.cut.poll_cut(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection was cut at the drain deadline",
            )));
        }
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        if read == room && self.read_size < MAX_READ_CHUNK {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(read))
    }

    /// Readies the connection for the pool: a buffer grown for a large
    /// body is let go rather than kept while idle.
    fn rest(mut self: Box<Self>) -> Box<Self> {
        if self.buf.capacity() > 2 * READ_CHUNK {
            self.buf = BytesMut::new();
        }
        self.read_size = READ_CHUNK;
        // Fields never relayed (the client went away) let the head go.
        self.relayed.clear();
        self
    }
}

/// Writes the request line and headers into `head` (cleared first). The
/// request has no body, so there are no framing headers to add: hyper's
/// client writes none for an empty body either.
fn encode_head(head: &mut Vec<u8>, request: &Request<RequestBody>) {
    head.clear();
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        crate::headers::append_field(head, name.as_str().as_bytes(), value.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
}

// === impl Body ===

impl Body {
    /// The response's end-to-end fields, to be written or moved into its
    /// map (see [`RelayedFields`]); `None` once the body let its
    /// connection go.
    pub(crate) fn relayed_mut(&mut self) -> Option<&mut RelayedFields> {
        self.conn.as_mut().map(|conn| &mut conn.relayed)
    }

    /// The connection, if the body was read to its end and the connection
    /// can serve another request.
    pub(crate) fn take_reusable(&mut self) -> Option<Box<Conn>> {
        let done = matches!(self.framing, Framing::Ended);
        let conn = self.conn.take()?;
        (done && self.keep_alive && conn.buf.is_empty()).then(|| conn.rest())
    }

    fn fail(&mut self, message: &'static str) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.conn = None;
        self.framing = Framing::Ended;
        self.keep_alive = false;
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            message,
        ))))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Ended => return Poll::Ready(None),
                Framing::Length(remaining) => {
                    if !conn.buf.is_empty() {
                        let take = conn
                            .buf
                            .len()
                            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                        *remaining -= take as u64;
                        let data = conn.buf.split_to(take).freeze();
                        if *remaining == 0 {
                            this.framing = Framing::Ended;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(chunked) => match chunked.decode(&mut conn.buf) {
                    Ok(Some(chunked::Decoded::Data(data))) => {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Some(chunked::Decoded::End(trailers))) => {
                        this.framing = Framing::Ended;
                        if let Some(trailers) = trailers {
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        return Poll::Ready(None);
                    }
                    Ok(None) => {
                        if conn.buf.len() > MAX_HEAD_BYTES {
                            return this.fail("chunk header or trailers too long");
                        }
                    }
                    Err(reason) => return this.fail(reason),
                },
            }
            // Nothing buffered to hand out: read more.
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.framing = Framing::Ended;
                    this.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("connection closed before the response body ended"),
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Ended;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Ended)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Ended => SizeHint::with_exact(0),
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
