//! `run` and `demo`: runtime, binding, signals.

use std::net::SocketAddr;
use std::process::ExitCode;

use switchyard_proxy::tls::{CertStore, TlsSettings};
use switchyard_proxy::{
    Applier, Listeners, LogLevel, Settings, State, TlsListeners, control_plane, demo, source,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::bootstrap::{self, Source};
use super::{EXIT_USAGE, LogFormat, RunArgs};

pub(super) fn run(args: RunArgs) -> ExitCode {
    let log_level = init_logging(args.log_format == LogFormat::Json);
    let resolved = match bootstrap::resolve(args) {
        Ok(resolved) => resolved,
        Err(error) => return usage_error(&error),
    };
    let runtime = match build_runtime(resolved.workers) {
        Ok(runtime) => runtime,
        Err(error) => return usage_error(&error),
    };
    runtime.block_on(async move {
        let state = match &resolved.inbound {
            Some((_, app_port)) => State::with_local_app(*app_port),
            None => State::new(),
        };
        let applier = Applier::new(state);
        let (stop_tx, stop_rx) = watch::channel(false);
        let follow_source = match resolved.source {
            Source::File(path) => {
                let initial = match source::load_initial(&applier, &path) {
                    Ok(bytes) => bytes,
                    Err(error) => return usage_error(&error),
                };
                let watcher = source::watch_file(
                    path,
                    applier.clone(),
                    initial,
                    resolved.reload_poll_interval,
                    stop_rx,
                );
                tokio::spawn(watcher)
            }
            Source::ControlPlane(plane) => {
                control_plane::load_cache(&plane, &applier);
                tokio::spawn(control_plane::follow(*plane, applier.clone(), stop_rx))
            }
        };
        let bound = async {
            let mut listeners = bind(&resolved.listen, &resolved.admin).await?;
            for address in &resolved.outbound {
                listeners.outbound.push(bind_one(address).await?);
            }
            if let Some((address, _)) = &resolved.inbound {
                listeners.inbound = Some(bind_one(address).await?);
            }
            anyhow::Ok(listeners)
        };
        let listeners = match bound.await {
            Ok(listeners) => listeners,
            Err(error) => {
                follow_source.abort();
                return usage_error(&error);
            }
        };
        let listeners = match bind_tls(listeners, &resolved.tls_listen, resolved.tls).await {
            Ok(listeners) => listeners,
            Err(error) => {
                follow_source.abort();
                return usage_error(&error);
            }
        };
        log_addresses(&listeners);
        if !listeners.outbound.is_empty() && effective_uid() == Some(0) {
            tracing::warn!(
                "the outbound listener runs as root: interception rules exempt the proxy by uid, and root's own traffic is intercepted like the app's, so upstream connections may loop back into the proxy; run it as its own uid (2102 in deploy/)"
            );
        }
        let settings = Settings {
            log_level,
            ..resolved.settings
        };
        switchyard_proxy::run(listeners, applier, settings, shutdown_signal()).await;
        stop_tx.send_replace(true);
        ExitCode::SUCCESS
    })
}

pub(super) fn demo(listen: &str, admin: &str) -> ExitCode {
    let log_level = init_logging(false);
    let runtime = match build_runtime(None) {
        Ok(runtime) => runtime,
        Err(error) => return usage_error(&error),
    };
    runtime.block_on(async move {
        let (blue, green) = match (
            TcpListener::bind("127.0.0.1:0").await,
            TcpListener::bind("127.0.0.1:0").await,
        ) {
            (Ok(blue), Ok(green)) => (blue, green),
            (Err(e), _) | (_, Err(e)) => {
                return usage_error(&anyhow::anyhow!("cannot bind a demo backend: {e}"));
            }
        };
        let addresses = (blue.local_addr(), green.local_addr());
        let (Ok(blue_addr), Ok(green_addr)) = addresses else {
            return usage_error(&anyhow::anyhow!("demo backends have no local address"));
        };
        tokio::spawn(demo::serve_backend(blue, "blue"));
        tokio::spawn(demo::serve_backend(green, "green"));
        let applier = Applier::new(State::new());
        if let Err(invalid) =
            applier.apply_logged(demo::table(blue_addr, green_addr).as_bytes(), "demo")
        {
            return usage_error(&anyhow::anyhow!("demo table: {invalid}"));
        }
        let listeners = match bind(&[listen.to_owned()], admin).await {
            Ok(listeners) => listeners,
            Err(error) => return usage_error(&error),
        };
        let proxy_addr = listeners.proxy[0].local_addr().ok();
        let admin_addr = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
        if let (Some(proxy_addr), Some(admin_addr)) = (proxy_addr, admin_addr) {
            print!("{}", demo::instructions(proxy_addr, admin_addr));
        }
        let settings = Settings {
            expose_backend: true,
            log_level,
            ..Settings::default()
        };
        switchyard_proxy::run(listeners, applier, settings, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

fn build_runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        // One worker: a current-thread runtime does the same work without the
        // cross-thread scheduler's atomics and wake-ups.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(0) => anyhow::bail!("--workers must be at least 1"),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(builder.enable_all().build()?)
}

async fn bind(listen: &[String], admin: &str) -> anyhow::Result<Listeners> {
    let mut proxy = Vec::with_capacity(listen.len());
    for address in listen {
        proxy.push(bind_one(address).await?);
    }
    Ok(Listeners {
        proxy,
        admin: Some(bind_one(admin).await?),
        ..Listeners::default()
    })
}

/// Loads the certificates (a bad one is a usage error, exit 64) and binds
/// the TLS listeners.
async fn bind_tls(
    mut listeners: Listeners,
    addresses: &[String],
    settings: Option<TlsSettings>,
) -> anyhow::Result<Listeners> {
    let Some(settings) = settings else {
        return Ok(listeners);
    };
    let store = CertStore::load(&settings)?;
    let mut bound = Vec::with_capacity(addresses.len());
    for address in addresses {
        bound.push(bind_one(address).await?);
    }
    listeners.tls = Some(TlsListeners {
        listeners: bound,
        store,
        settings,
    });
    Ok(listeners)
}

async fn bind_one(address: &str) -> anyhow::Result<TcpListener> {
    let parsed: SocketAddr = address
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid listen address {address:?}: {e}"))?;
    TcpListener::bind(parsed)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

fn log_addresses(listeners: &Listeners) {
    for listener in &listeners.proxy {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "proxy listening");
        }
    }
    for listener in &listeners.outbound {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "sidecar outbound listening");
        }
    }
    if let Some(address) = listeners.inbound.as_ref().and_then(|l| l.local_addr().ok()) {
        tracing::info!(%address, "sidecar inbound listening");
    }
    if let Some(address) = listeners.admin.as_ref().and_then(|l| l.local_addr().ok()) {
        tracing::info!(%address, "admin listening");
    }
}

/// The process's effective uid, from `/proc` (Linux; `None` elsewhere).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Real, effective, saved, filesystem.
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Completes on SIGTERM or SIGINT; a second signal exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutting down: finishing open connections (signal again to exit now)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Installs the log subscriber (text or JSON lines on stderr) with a filter
/// that `POST /log-level` can change at runtime.
fn init_logging(json: bool) -> Option<LogLevel> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt, reload};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    installed.ok()?;
    Some(LogLevel::new(move |directives| {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

fn usage_error(error: &anyhow::Error) -> ExitCode {
    eprintln!("switchyard-proxy: {error:#}");
    ExitCode::from(EXIT_USAGE)
}
