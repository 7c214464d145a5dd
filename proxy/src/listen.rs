//! Accept loops: one per listener, HTTP/1.1 and HTTP/2 (prior knowledge)
//! auto-detected on every connection, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::ProxyBody;

/// How long to pause accepting after an accept error (such as EMFILE), so
/// the loop never spins while the process is out of descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `listener` with `handler` until `shutdown` turns true, then lets
/// open connections finish (HTTP/2 GOAWAY, `Connection: close`) for up to
/// `grace`.
pub(crate) async fn serve<H, Fut>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    header_read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    (accepted_total, open_now): (Counter, Gauge),
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    // Zero disables the limit (as a zero timeout does in Gateway API).
    if !header_read_timeout.is_zero() {
        builder.http1().header_read_timeout(header_read_timeout);
    }
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
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
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(request, peer).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        accepted_total.inc();
        open_now.inc();
        let open = open_now.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            open.dec();
        });
    }
    drop(listener);
    tracing::info!(listener = name, address = ?local, open = graceful.count(), "stopped accepting; draining connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open after the grace period; closing"
        );
    }
}
