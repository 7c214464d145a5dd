//! Plain HTTP/1.1 requests served without hyper.
//!
//! hyper's HTTP/1.1 server (its dispatcher, head parsing and response
//! encoding) was about 40 % of the proxy's user-space instructions for a
//! proxied GET, by callgrind. Most requests through a proxy are plain: a
//! method, an origin-form target, headers, no body. Every HTTP/1.1
//! connection starts on this loop, which serves such requests itself when
//! their head is whole in the bytes at hand. At the first request it does
//! not take (a body, an upgrade, `Expect`, HTTP/1.0, `Connection: close`,
//! a head arriving in pieces, anything malformed) it hands the connection,
//! with every byte read so far, to hyper, which answers from then on
//! exactly as it did before this loop existed, until the connection parks.
//!
//! Bodiless heads with neither `Content-Length` nor `Transfer-Encoding`
//! have no body in HTTP/1.1 (RFC 9112 section 6.3), so the boundary of the
//! next request is never in doubt between this loop and hyper.

mod request;
mod response;

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt as _;
use futures_util::future::Map;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Shared;
use super::connection::{ConnectionState, TrackedBody};
use super::dormant::Dormant;
use super::http1::{ClientStream, PARK_AFTER, idle_check, silence_limit};
use crate::body::ClientBody;
use request::{Limits, Parsed, parse_request};

/// The first read of a request, and each read after that when more is
/// needed.
const READ_SIZE: usize = 4096;

/// A read goes into the room left in the buffer when there is at least
/// this much. A request's head is split off the buffer and shared with the
/// request, so the buffer cannot take its allocation back while the
/// request lives; reserving READ_SIZE before every read allocated a new
/// buffer for nearly every request (about 400 instructions and a fresh
/// 4 KiB for the kernel to write into). With this, one allocation serves
/// the requests that fit in it.
const MIN_READ_ROOM: usize = 1024;

/// How long a closing connection may take to send its TLS close_notify.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Answers a request: the proxy's handler with the connection's
/// bookkeeping, shared with the hyper service of the same connection.
pub(crate) trait Respond {
    type Answer: Future<Output = Response<TrackedBody>> + Send;
    fn respond(&self, request: Request<ClientBody>) -> Self::Answer;
}

impl<F, A> Respond for F
where
    F: Fn(Request<ClientBody>) -> A,
    A: Future<Output = Response<TrackedBody>> + Send,
{
    type Answer = A;
    fn respond(&self, request: Request<ClientBody>) -> A {
        self(request)
    }
}

/// hyper's service over a connection's [`Respond`]: the fast path and
/// hyper answer through this one copy of it, which the connection keeps
/// while parked (a second copy was 80 of a parked task's 464 bytes, and
/// put the task in the next allocation size up).
pub(crate) struct Answering<R>(pub(crate) R);

type Answered = Result<Response<TrackedBody>, Infallible>;

impl<R: Respond> Service<Request<Incoming>> for Answering<R> {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    // `map` rather than an async block around the answer: that would hold
    // a second copy of the request's future state.
    type Future = Map<R::Answer, fn(Response<TrackedBody>) -> Answered>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.0
            .respond(request.map(ClientBody::Hyper))
            .map(for_hyper as fn(_) -> Answered)
    }
}

/// The response with every field in its map, where hyper reads them.
fn for_hyper(response: Response<TrackedBody>) -> Answered {
    // Taken apart, as a response cannot lend its body and its map at once
    // (taking the map out and back measured more instructions).
    let (mut parts, mut body) = response.into_parts();
    if let Some(relayed) = body.relayed_mut() {
        relayed.move_into(&mut parts.headers);
    }
    Ok(Response::from_parts(parts, body))
}

/// How the loop left the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The connection is over (the client left, shutdown, a timeout, an
    /// error, or a response that closes it).
    Closed,
    /// Idle at a request boundary for [`PARK_AFTER`]: park it.
    Idle,
    /// A request this loop does not serve: every byte read and not yet
    /// served was put back in front of the socket, for hyper.
    HandOver,
}

/// Serves plain requests on `io` until the connection closes, idles long
/// enough to park, or needs hyper.
pub(crate) async fn serve<T, R>(
    io: &mut ClientStream<T>,
    state: &Arc<ConnectionState>,
    shared: &Shared,
    respond: &R,
) -> Exit
where
    T: AsyncRead + AsyncWrite + Unpin,
    R: Respond,
{
    let settings = &shared.settings;
    let limits = Limits {
        max_headers: settings.max_headers,
        max_head_bytes: settings.max_header_bytes,
    };
    let silence = silence_limit(settings);
    let mut check = idle_check(silence);
    let mut shutdown = shared.shutdown.clone();
    // Built once per visit to this loop: each holds an allocation.
    let mut aborted = Dormant::new(state.abort.notified());
    let mut stopping = Dormant::new(crate::state::stopped(&mut shutdown));
    let mut closing = false;
    let mut buf = BytesMut::new();
    loop {
        // A request head, whole.
        let request = loop {
            if !buf.is_empty() {
                match parse_request(&mut buf, limits) {
                    Parsed::Request(request) => break request,
                    Parsed::NotOurs => return hand_over(io, buf, state),
                    Parsed::Partial => {}
                }
            } else if closing {
                return close(io).await;
            }
            let at_boundary = buf.is_empty();
            tokio::select! {
                biased;
                () = &mut aborted => return Exit::Closed,
                _ = &mut stopping, if !closing => closing = true,
                read = read_more(io, &mut buf, at_boundary) => match read {
                    Ok(Some(0)) | Err(_) => return Exit::Closed,
                    Ok(Some(_)) => {}
                    // A head arriving in pieces: hyper reads the rest, under
                    // its header read timeout.
                    Ok(None) => return hand_over(io, buf, state),
                },
                _ = check.tick(), if at_boundary => {
                    let idle = state.idle_for();
                    if silence.is_some_and(|limit| idle >= limit) {
                        return close(io).await;
                    }
                    if idle >= PARK_AFTER && state.parkable() {
                        return Exit::Idle;
                    }
                }
            }
        };
        let head_request = request.method() == Method::HEAD;
        // The answer, while the client is watched for leaving.
        let mut answer = std::pin::pin!(respond.respond(request));
        let response = loop {
            tokio::select! {
                biased;
                response = answer.as_mut() => break response,
                () = &mut aborted => return Exit::Closed,
                _ = &mut stopping, if !closing => closing = true,
                gone = client_gone(io, &mut buf, limits.max_head_bytes) => if gone {
                    return Exit::Closed;
                },
            }
        };
        let written = tokio::select! {
            biased;
            written = response::write_response(io, response, head_request, closing) => written,
            () = &mut aborted => return Exit::Closed,
        };
        match written {
            Ok(true) => {}
            Ok(false) => return close(io).await,
            // The socket failed, or the client stopped reading: nothing
            // more can be written to it, not even a close_notify.
            Err(_) => return Exit::Closed,
        }
    }
}

/// Closes the connection as hyper does: a TLS connection sends its
/// close_notify (TCP shuts down its write side) before the socket drops;
/// a client that reads nothing for [`CLOSE_WAIT`] does not get it.
async fn close<T: AsyncWrite + Unpin>(io: &mut ClientStream<T>) -> Exit {
    let _ = tokio::time::timeout(CLOSE_WAIT, io.shutdown()).await;
    Exit::Closed
}

/// Puts the unserved bytes back in front of the socket for hyper.
fn hand_over<T>(io: &mut ClientStream<T>, buf: BytesMut, state: &ConnectionState) -> Exit {
    state.handed_over();
    io.put_back(buf.freeze());
    Exit::HandOver
}

/// Reads more of a request into `buf`: `Some(0)` when the client closed,
/// `None` when nothing is at hand and `wait` is false.
async fn read_more<T: AsyncRead + Unpin>(
    io: &mut ClientStream<T>,
    buf: &mut BytesMut,
    wait: bool,
) -> io::Result<Option<usize>> {
    poll_fn(|cx| {
        if buf.capacity() - buf.len() < MIN_READ_ROOM {
            buf.reserve(READ_SIZE);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            std::task::Poll::Ready(read) => std::task::Poll::Ready(read.map(Some)),
            std::task::Poll::Pending if wait => std::task::Poll::Pending,
            std::task::Poll::Pending => std::task::Poll::Ready(Ok(None)),
        }
    })
    .await
}

/// Completes with `true` when the client closed (or its socket failed)
/// while its request is being answered; bytes it sends meanwhile (the next
/// pipelined request) are kept, up to the head size limit, after which the
/// socket is left unread until the answer is written.
async fn client_gone<T: AsyncRead + Unpin>(
    io: &mut ClientStream<T>,
    buf: &mut BytesMut,
    limit: usize,
) -> bool {
    loop {
        if buf.len() >= limit {
            return std::future::pending().await;
        }
        match read_more(io, buf, true).await {
            Ok(Some(0)) | Err(_) => return true,
            _ => {}
        }
    }
}
