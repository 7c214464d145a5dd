//! Accept loops: one per listener, HTTP/1.1 and HTTP/2 (prior knowledge)
//! auto-detected on every connection, per-connection limits, graceful
//! shutdown.

mod boxed;
mod connection;
mod dormant;
mod fast_path;
mod http1;
mod parked;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use crate::body::{ClientBody, ProxyBody};
use crate::metrics::Downstream;
use crate::settings::Settings;
use crate::sidecar::{Intercepted, Outbound, Prefixed};
use crate::tls::{CertStore, TlsConnection};
pub(crate) use connection::BodyWatch;
use connection::{ClientIo, ConnectionState, LiveConnections, OpenConnection};
use dormant::Dormant;
use http1::ClientStream;

/// HTTP/2 streams a client may have open at once (nginx: 128).
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams reset by the client before the server accepted them; past this
/// the connection gets GOAWAY (CVE-2023-44487, "rapid reset").
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server resets for protocol errors; past this, GOAWAY.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
/// A silent HTTP/2 peer is pinged this often and dropped when a ping goes
/// unanswered for the timeout.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The header-field limit hyper applies to HTTP/1.1 when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// How long to pause accepting after an accept error (such as EMFILE), so
/// the loop never spins while the process is out of descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What a listener does with the connections it accepts.
#[derive(Debug, Clone)]
pub(crate) enum ListenerKind {
    /// HTTP/1.1 and HTTP/2 in the clear.
    Plain,
    /// TLS, then HTTP/1.1 or HTTP/2 by ALPN.
    Tls(Arc<TlsListener>),
    /// Sidecar outbound: connections redirected by iptables, routed by the
    /// table or passed through to their original destination.
    Outbound(Arc<Outbound>),
    /// Sidecar inbound: every request goes to the local application.
    Inbound,
}

/// What a request carries about its connection, for the handler.
#[derive(Debug, Clone)]
enum RequestContext {
    Plain,
    Tls(TlsConnection),
    Intercepted(Intercepted),
}

/// Serves `listener` with `handler` until `shutdown` turns true, then lets
/// open connections finish (HTTP/2 GOAWAY, `Connection: close`) for up to
/// the shutdown grace.
pub(crate) async fn serve<H, Fut>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    settings: Arc<Settings>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Downstream,
    kind: ListenerKind,
) where
    H: Fn(Request<ClientBody>, SocketAddr) -> Fut + Clone + Send + Sync + Unpin + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let shared = Arc::new(Shared::new(settings.clone(), shutdown.clone()));
    let metrics = Arc::new(metrics);
    let grace = settings.shutdown_grace;
    let live = Arc::new(LiveConnections::default());
    let local = listener.local_addr().ok();
    let mut sweep = tokio::time::interval(parked::SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = sweep.tick() => {
                shared.parked.sweep(tokio::time::Instant::now());
                continue;
            }
            _ = crate::state::stopped(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(listener = name, %error, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if live.count() >= settings.max_connections {
            // Closing at once (rather than not accepting) keeps the backlog
            // moving and tells the client now instead of after a timeout.
            metrics.rejected.inc();
            drop(stream);
            continue;
        }
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let open = OpenConnection::new(ConnectionState::new(metrics.clone()), live.opened());
        let connection = Connection {
            shared: shared.clone(),
            handler: handler.clone(),
            open,
            peer,
        };
        let kind = kind.clone();
        tokio::spawn(async move {
            // Boxed below: the TLS and sidecar futures are much larger, and
            // inline they would size every plain connection's task.
            match kind {
                ListenerKind::Plain => connection.serve(stream, RequestContext::Plain).await,
                ListenerKind::Tls(tls) => {
                    if let Some((stream, served)) = Box::pin(tls.handshake(stream, peer)).await {
                        Box::pin(connection.serve(stream, RequestContext::Tls(served))).await;
                    }
                }
                ListenerKind::Outbound(outbound) => {
                    if let Some((stream, destination)) = Box::pin(outbound.take(stream, peer)).await
                    {
                        let context =
                            RequestContext::Intercepted(Intercepted::Outbound(destination));
                        Box::pin(connection.serve(stream, context)).await;
                    }
                }
                ListenerKind::Inbound => {
                    let context = RequestContext::Intercepted(Intercepted::Inbound);
                    Box::pin(connection.serve(stream, context)).await;
                }
            }
        });
    }
    drop(listener);
    shared.parked.close_all();
    tracing::info!(listener = name, address = ?local, open = live.count(), "stopped accepting; draining connections");
    if tokio::time::timeout(grace, live.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open after the grace period; closing"
        );
    }
}

/// What a TLS listener needs per connection.
pub(crate) struct TlsListener {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) store: Arc<CertStore>,
    pub(crate) handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// The handshake, bounded in time; `None` when it failed (logged).
    async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, TlsConnection)> {
        let accepted =
            tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await;
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        };
        // The same choice the resolver made: the SNI's certificate, else the default.
        let certificate = stream
            .get_ref()
            .1
            .server_name()
            .and_then(|name| self.store.index_for(name))
            .or(Some(0));
        let served = TlsConnection {
            certificate,
            store: self.store.clone(),
        };
        Some((stream, served))
    }
}

/// One accepted connection, before its protocol is known.
struct Connection<H> {
    shared: Arc<Shared>,
    handler: H,
    /// Dropped with the connection, by whichever task holds it last.
    open: OpenConnection,
    peer: SocketAddr,
}

impl<H, Fut> Connection<H>
where
    H: Fn(Request<ClientBody>, SocketAddr) -> Fut + Clone + Send + Sync + Unpin + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    /// Serves HTTP on `io`; requests carry what `context` says of it.
    async fn serve<I>(self, io: I, context: RequestContext)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            shared,
            handler,
            open,
            peer,
        } = self;
        let state = &open.state;
        let service_state = state.clone();
        // One way to answer a request, whether hyper read it or the fast path.
        let respond = move |mut request: Request<ClientBody>| {
            let stream = service_state.stream_started(request.version());
            let http1 = request.version() != http::Version::HTTP_2;
            if http1 {
                note_http1_request(&mut request, &service_state);
            }
            match &context {
                RequestContext::Plain => {}
                RequestContext::Tls(tls) => {
                    request.extensions_mut().insert(tls.clone());
                }
                RequestContext::Intercepted(intercepted) => {
                    request.extensions_mut().insert(*intercepted);
                }
            }
            // Called here and its future mapped: an async block calling the
            // handler would hold the request beside the future it becomes.
            handler(request, peer).map(move |response| {
                if http1 && crate::headers::connection_has(response.headers(), "close") {
                    stream.closes_after_exchange();
                }
                response.map(|body| stream.answered(body))
            })
        };
        let service = fast_path::Answering(respond);
        let mut io = Prefixed::new(
            Bytes::new(),
            ClientIo::new(io, shared.settings.response_write_timeout, state.clone()),
        );
        let Some(is_http2) = first_bytes(&mut io, state, &shared).await else {
            return;
        };
        if is_http2 {
            serve_http2(&shared, io, boxed::BoxedFutures(service), state, peer).await;
            return;
        }
        let connection = http1::Http1Connection {
            shared,
            io,
            service,
            peer,
            open,
        };
        if let Some(parked) = http1::serve(connection).await {
            // This task, sized for every stage of a connection, ends here;
            // the parked connection waits in a task sized for waiting.
            tokio::spawn(http1::stay_parked(parked));
        }
    }
}

/// Serves HTTP/2 on `io`. Boxed (built outside the caller's state
/// machine): inline, HTTP/2's connection state would size every
/// connection's task, parked HTTP/1.1 ones included.
fn serve_http2<'a, I, S>(
    shared: &Shared,
    io: ClientStream<I>,
    service: S,
    state: &'a ConnectionState,
    peer: SocketAddr,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    <S::ResBody as http_body::Body>::Data: Send,
    S::Future: Send + 'static,
{
    let connection = shared.http2.serve_connection(TokioIo::new(io), service);
    Box::pin(drive(
        connection,
        state,
        shared.shutdown.clone(),
        shared.settings.idle_timeout,
        peer,
    ))
}

/// What an HTTP/1.x request tells connection parking: whether the
/// connection will close after it, and a watch on its body, if it has one.
fn note_http1_request(request: &mut Request<ClientBody>, state: &Arc<ConnectionState>) {
    if request.version() != http::Version::HTTP_11
        || crate::headers::connection_has(request.headers(), "close")
    {
        state.closes_after_exchange();
    }
    if !http_body::Body::is_end_stream(request.body()) {
        let watch = state.watch_body();
        request.extensions_mut().insert(watch);
    }
}

/// Waits for the client's first bytes (at most the header read timeout,
/// else the idle timeout) and tells whether they open HTTP/2; `None` when
/// the connection should close instead.
async fn first_bytes<I>(
    io: &mut ClientStream<I>,
    state: &ConnectionState,
    shared: &Shared,
) -> Option<bool>
where
    I: tokio::io::AsyncRead + Unpin,
{
    let mut shutdown = shared.shutdown.clone();
    let expired = async {
        match http1::silence_limit(&shared.settings) {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        sniffed = http1::sniff_http2(io) => sniffed,
        () = expired => None,
        () = state.abort.notified() => None,
        _ = crate::state::stopped(&mut shutdown) => None,
    }
}

/// Runs one connection to its end: at shutdown or after `idle_timeout`
/// with nothing in progress it closes gracefully (GOAWAY, `Connection:
/// close`); when the premature-reset check trips it is dropped at once.
async fn drive<C>(
    connection: C,
    state: &ConnectionState,
    mut shutdown: watch::Receiver<bool>,
    idle_timeout: Duration,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), hyper::Error>> + GracefulConnection,
{
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    // The idle check runs a few times per timeout; zero disables it.
    let check_every = (idle_timeout / 4).max(Duration::from_millis(10));
    let mut idle_check = tokio::time::interval(check_every);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            // Dormant: polled only when notified, not at every wake-up.
            () = Dormant::new(state.abort.notified()) => return,
            _ = Dormant::new(crate::state::stopped(&mut shutdown)), if !closing => {
                connection.as_mut().close_gracefully();
                closing = true;
            }
            _ = idle_check.tick(), if !closing && !idle_timeout.is_zero() => {
                if state.idle_for() >= idle_timeout {
                    tracing::debug!(%peer, "closing an idle connection");
                    connection.as_mut().close_gracefully();
                    closing = true;
                }
            }
        }
    }
}

/// A connection that can be asked to finish what it has and close.
trait GracefulConnection {
    fn close_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulConnection for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn close_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// What every connection of a listener shares: its settings, the HTTP/1.1
/// and HTTP/2 builders (the limits set explicitly rather than left to
/// library defaults that can change), the shutdown signal and the list of
/// parked connections.
struct Shared {
    settings: Arc<Settings>,
    http1: hyper::server::conn::http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// Turns true at shutdown. Each connection waits on a clone of its own,
    /// taken when it needs one (a clone starts with this one's view).
    shutdown: watch::Receiver<bool>,
    parked: parked::ParkedConnections,
}

impl Shared {
    fn new(settings: Arc<Settings>, shutdown: watch::Receiver<bool>) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .keep_alive(true)
            .max_buf_size(settings.max_header_bytes);
        // Left unset, hyper parses into an uninitialised stack array of 100
        // fields, the same limit; set, it fills two vectors of that many
        // slots for every request head (3.9 % of the proxy's user-space
        // instructions per request, by callgrind).
        if settings.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            http1.max_headers(settings.max_headers);
        }
        // Zero disables the limit (as a zero timeout does in Gateway API).
        if !settings.header_read_timeout.is_zero() {
            http1.header_read_timeout(settings.header_read_timeout);
        }
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            // Streams the client resets before we accept them (rapid reset).
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
            // Streams we reset for the client's protocol errors.
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        Self {
            settings,
            http1,
            http2,
            shutdown,
            parked: parked::ParkedConnections::default(),
        }
    }
}
