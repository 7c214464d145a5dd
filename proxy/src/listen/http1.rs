//! HTTP/1.1 connections that give their buffers back while idle.
//!
//! hyper holds an 8 KiB read and an 8 KiB write buffer (and its connection
//! state) for as long as an HTTP/1.1 connection lives, idle or not: about
//! 26 KiB per idle keep-alive connection, where nginx needs under 1 KiB. So
//! a keep-alive connection idle for [`PARK_AFTER`] is *parked*: hyper is
//! asked to finish (it has nothing in progress), hands back the socket and
//! any bytes it had read ahead, and the connection waits for the client's
//! next bytes with no buffer at all. Those bytes start a new hyper
//! connection on the same socket; the client sees one keep-alive
//! connection throughout.
//!
//! Only a connection known to sit at a request boundary is parked (every
//! request body read to its end, nobody asked to close; see
//! [`ConnectionState::parkable`]): parking one in the middle of a request
//! body would read the rest of that body as a new request.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::Shared;
use super::connection::{ClientIo, ConnectionState, OpenConnection, TrackedBody};
use super::dormant::Dormant;
use super::fast_path::{self, Answering, Exit, Respond};
use crate::settings::Settings;
use crate::sidecar::Prefixed;

/// How long an HTTP/1.1 connection stays idle before it is parked. Long
/// enough that a client sending requests back to back never pays for a new
/// hyper connection; short enough that idle connections cost little.
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(1);

/// What a client sends first on an HTTP/2 (prior knowledge) connection.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The client socket as hyper reads it: bytes read ahead (the protocol
/// sniff, read-ahead handed back at parking) are replayed first.
pub(crate) type ClientStream<T> = Prefixed<ClientIo<T>>;

/// Reads the first bytes and tells whether they are the HTTP/2 preface
/// (they are put back either way); `None` when the client closed or failed
/// before sending anything.
pub(crate) async fn sniff_http2<T: AsyncRead + Unpin>(io: &mut ClientStream<T>) -> Option<bool> {
    let mut head = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    let is_http2 = loop {
        match io.read(&mut head[len..]).await {
            Ok(0) if len == 0 => return None,
            // A short first message: hyper's HTTP/1.1 parser answers it.
            Ok(0) => break false,
            Ok(read) => len += read,
            Err(_) => return None,
        }
        if head[..len] != H2_PREFACE[..len] {
            break false;
        }
        if len == H2_PREFACE.len() {
            break true;
        }
    };
    io.put_back(Bytes::copy_from_slice(&head[..len]));
    Some(is_http2)
}

/// How long a connection may stay silent before it closes, waiting for a
/// request: the header read timeout or the idle timeout, whichever is
/// shorter (zero turns either off); `None` when both are off.
pub(crate) fn silence_limit(settings: &Settings) -> Option<Duration> {
    [settings.header_read_timeout, settings.idle_timeout]
        .into_iter()
        .filter(|limit| !limit.is_zero())
        .min()
}

/// The timer an HTTP/1.1 connection looks at its idleness by: a few times
/// per `limit` (the silence that closes it; `None` for none), at most
/// every 10 ms, and at least every [`PARK_AFTER`], so that it parks in
/// time. The first look is one period from now.
pub(crate) fn idle_check(limit: Option<Duration>) -> tokio::time::Interval {
    let every = limit.map_or(PARK_AFTER, |limit| {
        (limit / 4).clamp(Duration::from_millis(10), PARK_AFTER)
    });
    let mut check = tokio::time::interval_at(Instant::now() + every, every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check
}

type Connection<T, S> = http1::UpgradeableConnection<TokioIo<ClientStream<T>>, S>;
type Parts<T, S> = http1::Parts<TokioIo<ClientStream<T>>, S>;

/// An HTTP/1.1 connection between two hyper connections: everything it
/// keeps while parked.
pub(crate) struct Http1Connection<T, R> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) io: ClientStream<T>,
    /// hyper's service, and what serves the requests the fast path takes
    /// (see [`fast_path`]).
    pub(crate) service: Answering<R>,
    pub(crate) peer: SocketAddr,
    pub(crate) open: OpenConnection,
}

/// Serves HTTP/1.1 on the connection until it ends (`None`) or idles at a
/// request boundary for [`PARK_AFTER`] (`Some`, parked: hand it to
/// [`stay_parked`] in a task of its own, so that the serving task and all
/// its state are freed). The fast path serves first; hyper takes over at
/// the first request it leaves, until the connection parks.
pub(crate) async fn serve<T, R>(
    mut connection: Http1Connection<T, R>,
) -> Option<Http1Connection<T, R>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Respond + Unpin,
{
    loop {
        if connection.shared.settings.http1_fast_path {
            let exit = fast_path::serve(
                &mut connection.io,
                &connection.open.state,
                &connection.shared,
                &connection.service.0,
            )
            .await;
            match exit {
                Exit::Closed => return None,
                Exit::Idle => return Some(connection),
                Exit::HandOver => {}
            }
        }
        // Boxed, as is the future driving it: they are freed at parking.
        let hyper_connection = Box::new(
            connection
                .shared
                .http1
                .serve_connection(TokioIo::new(connection.io), connection.service)
                .with_upgrades(),
        );
        let driven = Box::pin(drive(
            hyper_connection,
            &connection.open.state,
            &connection.shared,
            connection.peer,
        ));
        let parts = driven.await?;
        connection.io = parts.io.into_inner();
        connection.service = parts.service;
        connection.io.put_back(parts.read_buf);
        let state = &connection.open.state;
        state.keep_open.store(false, Ordering::Release);
        // With bytes read ahead (a pipelined request), serve them at once.
        if connection.io.prefix_is_empty() {
            return Some(connection);
        }
    }
}

/// Keeps a parked connection, the task's whole state, until the client's
/// next bytes, serves them (the serving future boxed, so this task stays
/// small), and parks again, until the connection ends.
///
/// Not an `async fn`: one of those keeps its arguments twice in its future
/// (rust-lang/rust#62958), and the connection is most of this one.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub(crate) fn stay_parked<T, R>(mut connection: Http1Connection<T, R>) -> impl Future<Output = ()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Respond + Unpin,
{
    async move {
        loop {
            connection.io.inner_mut().release_stall_timer();
            connection.open.state.set_parked(true);
            let resumed = next_bytes(
                &mut connection.io,
                &connection.open.state,
                &connection.shared,
            )
            .await;
            connection.open.state.set_parked(false);
            if !resumed {
                return;
            }
            match Box::pin(serve(connection)).await {
                Some(parked) => connection = parked,
                None => return,
            }
        }
    }
}

/// Runs hyper's connection until it ends (`None`) or has been parked
/// (its parts). Also closes it gracefully at shutdown or after the idle
/// timeout, and drops it when the premature-reset check trips.
async fn drive<T, S>(
    mut connection: Box<Connection<T, S>>,
    state: &ConnectionState,
    shared: &Shared,
    peer: SocketAddr,
) -> Option<Parts<T, S>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = TrackedBody> + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let idle_timeout = shared.settings.idle_timeout;
    let mut shutdown = shared.shutdown.clone();
    let mut check = idle_check((!idle_timeout.is_zero()).then_some(idle_timeout));
    let (mut closing, mut parking) = (false, false);
    loop {
        tokio::select! {
            result = std::pin::Pin::new(&mut *connection) => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                    return None;
                }
                // Without parking, hyper has closed the socket (or handed
                // it to an upgrade) and there are no parts to take.
                return if parking { connection.into_parts() } else { None };
            }
            // Dormant: polled only when notified, not at every wake-up.
            () = Dormant::new(state.abort.notified()) => return None,
            _ = Dormant::new(crate::state::stopped(&mut shutdown)), if !closing => {
                // A connection being parked closes for real instead.
                state.keep_open.store(false, Ordering::Release);
                std::pin::Pin::new(&mut *connection).graceful_shutdown();
                (closing, parking) = (true, false);
            }
            _ = check.tick(), if !closing && !parking => {
                let idle = state.idle_for();
                if !idle_timeout.is_zero() && idle >= idle_timeout {
                    tracing::debug!(%peer, "closing an idle connection");
                    std::pin::Pin::new(&mut *connection).graceful_shutdown();
                    closing = true;
                } else if idle >= PARK_AFTER && state.parkable() {
                    state.keep_open.store(true, Ordering::Release);
                    // Idle, hyper stops at once; still flushing a finished
                    // response, it stops once that is written.
                    std::pin::Pin::new(&mut *connection).graceful_shutdown();
                    parking = true;
                }
            }
        }
    }
}

/// Waits, with no buffer, for the parked client's next bytes and puts
/// them back; `false` when the connection should close instead: the
/// client closed, shutdown began, or it stayed idle past the header read
/// timeout or the idle timeout (what would have closed it unparked). The
/// listener's list of parked connections watches the last two and tells
/// the connection through its `abort`.
///
/// This future lives in every parked connection's task, so its size is
/// most of what a parked connection costs (issue #8): it holds no timer,
/// no shutdown watch and no buffer, and is polled by hand rather than
/// with `select!`, which keeps copies of the futures it races.
async fn next_bytes<T: AsyncRead + Unpin>(
    io: &mut ClientStream<T>,
    state: &Arc<ConnectionState>,
    shared: &Shared,
) -> bool {
    // Created before parking, so no notification can be missed.
    let mut aborted = pin!(state.abort.notified());
    let deadline = silence_limit(&shared.settings)
        .map(|limit| Instant::now() + limit.saturating_sub(state.idle_for()));
    let Some(_place) = shared.parked.park(state, deadline) else {
        return false;
    };
    poll_fn(move |cx| {
        if aborted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        // One byte is enough to know the client is back; hyper reads the
        // rest of the request itself. A buffer kept between polls would
        // cost every parked connection its size.
        let mut first = [0u8; 1];
        let mut read = ReadBuf::new(&mut first);
        match Pin::new(io.inner_mut()).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                io.put_back(Bytes::copy_from_slice(read.filled()));
                Poll::Ready(true)
            }
            // The client closed, or the socket failed.
            Poll::Ready(_) => Poll::Ready(false),
        }
    })
    .await
}
