//! Wiring: listeners, handlers and shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::Admin;
use crate::listen;
use crate::server::Proxy;
use crate::settings::Settings;
use crate::state::Applier;

/// Bound sockets, ready to accept.
#[derive(Debug)]
pub struct Listeners {
    /// Proxy listeners (HTTP/1.1 and HTTP/2 on each).
    pub proxy: Vec<TcpListener>,
    /// The admin listener, if any.
    pub admin: Option<TcpListener>,
}

/// Serves until `shutdown` completes, then stops accepting and lets open
/// connections finish for up to `settings.shutdown_grace`.
pub async fn run(
    listeners: Listeners,
    applier: Applier,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) {
    let settings = Arc::new(settings);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let proxy = Arc::new(Proxy::new(applier.state().clone(), settings.clone()));
    for listener in listeners.proxy {
        let proxy = proxy.clone();
        let handler = move |request, peer| {
            let proxy = proxy.clone();
            async move { proxy.handle(request, peer).await }
        };
        tasks.spawn(listen::serve(
            "proxy",
            listener,
            handler,
            settings.header_read_timeout,
            stop_rx.clone(),
            settings.shutdown_grace,
        ));
    }
    if let Some(listener) = listeners.admin {
        let admin = Arc::new(Admin::new(applier, settings.admin_token.clone()));
        let handler = move |request, _peer| {
            let admin = admin.clone();
            async move { admin.handle(request).await }
        };
        tasks.spawn(listen::serve(
            "admin",
            listener,
            handler,
            settings.header_read_timeout,
            stop_rx.clone(),
            settings.shutdown_grace,
        ));
    }
    shutdown.await;
    stop_tx.send_replace(true);
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = result {
            tracing::error!(%error, "listener task failed");
        }
    }
}
