//! `switchyard-control serve`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use switchyard_config::GwDuration;
use switchyard_control::daemon::Control;
use switchyard_control::tokens::Tokens;
use tokio::net::TcpListener;

use super::{LogFormat, ServeArgs};

const EXIT_USAGE: u8 = 64;

pub(super) fn run(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(failure) => fail(&anyhow::anyhow!("cannot start the runtime: {failure}")),
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let setup = async {
        let duration = |text: &str, flag: &str| {
            text.parse::<GwDuration>()
                .map(GwDuration::get)
                .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
        };
        let drift = duration(&args.drift_threshold, "drift-threshold")?;
        let watch_interval = duration(&args.watch_interval, "watch-interval")?;
        let tokens = Tokens::load(&args.tokens)?;
        raise_descriptor_limit();
        let control = Arc::new(Control::open(&args.data, tokens, drift)?);
        let address: SocketAddr = args
            .listen
            .parse()
            .map_err(|e| anyhow::anyhow!("--listen {:?}: {e}", args.listen))?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(switchyard_control::tls::server_config(
                cert,
                key,
                args.client_ca.as_deref(),
            )?),
            _ => None,
        };
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
        anyhow::Ok((control, listener, watch_interval, tls))
    };
    let (control, listener, watch_interval, tls) = match setup.await {
        Ok(ready) => ready,
        Err(failure) => return fail(&failure),
    };
    if let Ok(address) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%address, scheme, data = %args.data.display(), "control plane listening");
    }
    if let Some(directory) = args.watch {
        tokio::spawn(switchyard_control::gitops::watch(
            control.clone(),
            directory,
            watch_interval,
        ));
    }
    switchyard_control::server::serve(listener, control, shutdown_signal(), tls).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Each subscribed proxy holds a connection: lift the soft descriptor limit
/// to the hard one (as nginx's `worker_rlimit_nofile` does).
fn raise_descriptor_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "descriptor limit"),
        Err(failure) => tracing::warn!(error = %failure, "cannot raise the descriptor limit"),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

fn fail(failure: &anyhow::Error) -> ExitCode {
    eprintln!("switchyard-control: {failure:#}");
    ExitCode::from(EXIT_USAGE)
}
