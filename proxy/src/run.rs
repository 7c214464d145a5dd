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
use crate::sidecar::Outbound;
use crate::state::Applier;
use crate::tls::{CertStore, TlsSettings};

/// How often shutdown checks whether tunnels are still open.
const TUNNEL_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Bound sockets, ready to accept.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Proxy listeners (HTTP/1.1 and HTTP/2 on each).
    pub proxy: Vec<TcpListener>,
    /// The admin listener, if any.
    pub admin: Option<TcpListener>,
    /// TLS listeners and what they serve.
    pub tls: Option<TlsListeners>,
    /// Sidecar outbound listeners (connections redirected by iptables).
    pub outbound: Vec<TcpListener>,
    /// The sidecar inbound listener; its requests go to the local
    /// application that [`State::with_local_app`](crate::State::with_local_app) names.
    pub inbound: Option<TcpListener>,
}

/// TLS listeners with their certificates.
#[derive(Debug)]
pub struct TlsListeners {
    /// Listeners (HTTP/1.1 and HTTP/2 by ALPN on each).
    pub listeners: Vec<TcpListener>,
    /// Certificates, loaded (see [`CertStore::load`]).
    pub store: Arc<CertStore>,
    /// Handshake timeout and reload interval.
    pub settings: TlsSettings,
}

/// Serves until `shutdown` completes; then, as Kubernetes expects: `/ready`
/// fails at once, accepting goes on for `settings.drain_delay` (a `preStop`
/// sleep), then listeners close, HTTP/2 connections get GOAWAY and HTTP/1.1
/// responses `Connection: close`, idle connections close, and open work gets
/// up to `settings.shutdown_grace`; tunnels still open then are closed.
pub async fn run(
    listeners: Listeners,
    applier: Applier,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) {
    applier
        .state()
        .registry()
        .set_rebalance_window(settings.tunnel_rebalance_window);
    let settings = Arc::new(settings);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let applier_state = applier.state().clone();
    let proxy = Arc::new(Proxy::new(applier.state().clone(), settings.clone()));
    // Plain and TLS proxy listeners run the same handler.
    let serve_proxy = |tasks: &mut JoinSet<()>,
                       name: &'static str,
                       listener: TcpListener,
                       kind: listen::ListenerKind| {
        let proxy = proxy.clone();
        let handler = move |request, peer| proxy.handle(request, peer);
        tasks.spawn(listen::serve(
            name,
            listener,
            handler,
            settings.clone(),
            stop_rx.clone(),
            applier_state.metrics().downstream(name),
            kind,
        ));
    };
    for listener in listeners.proxy {
        serve_proxy(&mut tasks, "proxy", listener, listen::ListenerKind::Plain);
    }
    let outbound = Arc::new(Outbound {
        state: applier_state.clone(),
        detect_timeout: settings.outbound_detect_timeout,
        connect_timeout: settings.connect_timeout,
    });
    for listener in listeners.outbound {
        let kind = listen::ListenerKind::Outbound(outbound.clone());
        serve_proxy(&mut tasks, "outbound", listener, kind);
    }
    if let Some(listener) = listeners.inbound {
        if applier_state.local_app().is_none() {
            tracing::error!("inbound listener not started: no local application port");
        } else {
            serve_proxy(
                &mut tasks,
                "inbound",
                listener,
                listen::ListenerKind::Inbound,
            );
        }
    }
    if let Some(tls) = listeners.tls {
        match tls.store.server_config() {
            Ok(config) => {
                let listener_tls = Arc::new(listen::TlsListener {
                    acceptor: tokio_rustls::TlsAcceptor::from(config),
                    store: tls.store.clone(),
                    handshake_timeout: tls.settings.handshake_timeout,
                });
                tokio::spawn(crate::tls::watch_certificates(
                    tls.store.clone(),
                    tls.settings.reload_interval,
                    stop_rx.clone(),
                ));
                for listener in tls.listeners {
                    serve_proxy(
                        &mut tasks,
                        "proxy-tls",
                        listener,
                        listen::ListenerKind::Tls(listener_tls.clone()),
                    );
                }
            }
            Err(error) => tracing::error!(%error, "TLS listeners not started"),
        }
    }
    if let Some(listener) = listeners.admin {
        let admin = Arc::new(Admin::new(
            applier,
            settings.admin_token.clone(),
            settings.log_level.clone(),
        ));
        let handler = move |request, _peer| {
            let admin = admin.clone();
            async move { admin.handle(request).await }
        };
        tasks.spawn(listen::serve(
            "admin",
            listener,
            handler,
            settings.clone(),
            stop_rx.clone(),
            applier_state.metrics().downstream("admin"),
            listen::ListenerKind::Plain,
        ));
    }
    shutdown.await;
    let state = applier_state.clone();
    state.begin_shutdown();
    if !settings.drain_delay.is_zero() {
        tracing::info!(delay = ?settings.drain_delay, "readiness fails; still accepting during the drain delay");
        tokio::time::sleep(settings.drain_delay).await;
    }
    stop_tx.send_replace(true);
    let deadline = tokio::time::Instant::now() + settings.shutdown_grace;
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = result {
            tracing::error!(%error, "listener task failed");
        }
    }
    // Tunnels left hyper's tracking when they were upgraded: give them the
    // rest of the grace period, then close them.
    while state.registry().open_tunnels() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(TUNNEL_POLL).await;
    }
    state.registry().close_all_tunnels();
}
