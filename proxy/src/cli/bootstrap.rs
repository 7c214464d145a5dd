//! The static bootstrap file and the settings it resolves to with flags.

mod control_plane;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchyard_config::GwDuration;
use switchyard_proxy::Settings;
use switchyard_proxy::control_plane::ControlPlane;
use switchyard_proxy::tls::TlsSettings;

use super::{EncodedSlashesArg, RunArgs};
use control_plane::control_plane_settings;
use tls::tls_settings;

/// The bootstrap file (YAML). Every field is optional; flags win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    table: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    admin: Option<String>,
    #[serde(default)]
    outbound: Vec<String>,
    inbound: Option<String>,
    app_port: Option<u16>,
    outbound_detect_timeout: Option<GwDuration>,
    workers: Option<usize>,
    connect_timeout: Option<GwDuration>,
    endpoint_ejection: Option<GwDuration>,
    header_read_timeout: Option<GwDuration>,
    shutdown_grace: Option<GwDuration>,
    drain_delay: Option<GwDuration>,
    tunnel_rebalance_window: Option<GwDuration>,
    reload_poll_interval: Option<GwDuration>,
    #[serde(default)]
    expose_backend: bool,
    #[serde(default)]
    set_decision_header: bool,
    #[serde(default)]
    trust_decision_header: bool,
    #[serde(default)]
    forwarded_header: bool,
    #[serde(default)]
    replace_request_id: bool,
    #[serde(default)]
    access_log: bool,
    access_log_sample_rate: Option<f64>,
    admin_token_file: Option<PathBuf>,
    control_plane: Option<String>,
    group: Option<String>,
    node_id: Option<String>,
    token_file: Option<PathBuf>,
    table_cache: Option<PathBuf>,
    report_interval: Option<GwDuration>,
    max_table_bytes: Option<usize>,
    control_plane_ca: Option<PathBuf>,
    control_plane_cert: Option<PathBuf>,
    control_plane_key: Option<PathBuf>,
    max_uri_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_header_bytes: Option<usize>,
    max_request_body_bytes: Option<u64>,
    request_body_idle_timeout: Option<GwDuration>,
    encoded_slashes: Option<EncodedSlashesArg>,
    max_connections: Option<usize>,
    max_requests: Option<usize>,
    max_requests_per_backend: Option<usize>,
    #[serde(default)]
    trust_forwarded_from: Vec<String>,
    idle_timeout: Option<GwDuration>,
    response_write_timeout: Option<GwDuration>,
    otlp_endpoint: Option<String>,
    otlp_sample_rate: Option<f64>,
    #[serde(default)]
    tls_listen: Vec<String>,
    #[serde(default)]
    tls_certificates: Vec<CertificateFilesFile>,
    #[serde(default)]
    tls_require_sni: bool,
    tls_handshake_timeout: Option<GwDuration>,
    tls_reload_interval: Option<GwDuration>,
}

/// `tls_certificates:` entries of the bootstrap file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateFilesFile {
    cert: PathBuf,
    key: PathBuf,
}

/// Where tables come from.
#[derive(Debug)]
pub(super) enum Source {
    /// A file, watched.
    File(PathBuf),
    /// A control plane.
    ControlPlane(Box<ControlPlane>),
}

/// Everything `run` needs, resolved.
#[derive(Debug)]
pub(super) struct Resolved {
    pub(super) source: Source,
    pub(super) listen: Vec<String>,
    pub(super) tls_listen: Vec<String>,
    pub(super) tls: Option<TlsSettings>,
    pub(super) outbound: Vec<String>,
    /// The inbound listener and the local application's port.
    pub(super) inbound: Option<(String, u16)>,
    pub(super) admin: String,
    pub(super) workers: Option<usize>,
    pub(super) reload_poll_interval: Duration,
    pub(super) settings: Settings,
}

/// Merges the bootstrap file (if any) and the flags.
pub(super) fn resolve(args: RunArgs) -> anyhow::Result<Resolved> {
    let file = match &args.bootstrap {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read bootstrap {}: {e}", path.display()))?;
            serde_saphyr::from_str::<Bootstrap>(&text)
                .map_err(|e| anyhow::anyhow!("bootstrap {}: {e}", path.display()))?
        }
        None => Bootstrap::default(),
    };
    let defaults = Settings::default();
    let token_file = args
        .admin_token_file
        .clone()
        .or(file.admin_token_file.clone());
    let admin_token = match token_file {
        Some(path) => {
            let token = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read admin token {}: {e}", path.display()))?
                .trim()
                .to_owned();
            anyhow::ensure!(
                !token.is_empty(),
                "admin token file {} is empty",
                path.display()
            );
            Some(token)
        }
        None => None,
    };
    let sample_rate = args.access_log_sample_rate.or(file.access_log_sample_rate);
    if let Some(rate) = sample_rate {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "--access-log-sample-rate must be between 0 and 1, not {rate}"
        );
    }
    let access_log_sample_rate = (args.access_log || file.access_log || sample_rate.is_some())
        .then_some(sample_rate.unwrap_or(1.0));
    let settings = Settings {
        // Set by the runner, which owns the log subscriber.
        log_level: None,
        // A fixed seed is for embedders (tests); the binary's picks are random.
        split_random: defaults.split_random.clone(),
        access_log_sample_rate,
        request_metrics: !args.no_request_metrics,
        http1_fast_path: !args.no_http1_fast_path,
        connect_timeout: duration(
            &args.connect_timeout,
            file.connect_timeout,
            defaults.connect_timeout,
            "connect-timeout",
        )?,
        endpoint_ejection: duration(
            &args.endpoint_ejection,
            file.endpoint_ejection,
            defaults.endpoint_ejection,
            "endpoint-ejection",
        )?,
        outbound_detect_timeout: duration(
            &args.outbound_detect_timeout,
            file.outbound_detect_timeout,
            defaults.outbound_detect_timeout,
            "outbound-detect-timeout",
        )?,
        header_read_timeout: duration(
            &args.header_read_timeout,
            file.header_read_timeout,
            defaults.header_read_timeout,
            "header-read-timeout",
        )?,
        expose_backend: args.expose_backend || file.expose_backend,
        set_decision_header: args.set_decision_header || file.set_decision_header,
        trust_decision_header: args.trust_decision_header || file.trust_decision_header,
        forwarded_header: args.forwarded_header || file.forwarded_header,
        trust_request_id: !(args.replace_request_id || file.replace_request_id),
        admin_token,
        drain_delay: duration(
            &args.drain_delay,
            file.drain_delay,
            defaults.drain_delay,
            "drain-delay",
        )?,
        tunnel_rebalance_window: duration(
            &args.tunnel_rebalance_window,
            file.tunnel_rebalance_window,
            defaults.tunnel_rebalance_window,
            "tunnel-rebalance-window",
        )?,
        shutdown_grace: duration(
            &args.shutdown_grace,
            file.shutdown_grace,
            defaults.shutdown_grace,
            "shutdown-grace",
        )?,
        max_uri_bytes: args
            .max_uri_bytes
            .or(file.max_uri_bytes)
            .unwrap_or(defaults.max_uri_bytes),
        max_headers: args
            .max_headers
            .or(file.max_headers)
            .unwrap_or(defaults.max_headers),
        max_header_bytes: args
            .max_header_bytes
            .or(file.max_header_bytes)
            .unwrap_or(defaults.max_header_bytes),
        // Zero means no limit, as `client_max_body_size 0` does in nginx.
        max_request_body_bytes: args
            .max_request_body_bytes
            .or(file.max_request_body_bytes)
            .map_or(defaults.max_request_body_bytes, |n| (n > 0).then_some(n)),
        request_body_idle_timeout: duration(
            &args.request_body_idle_timeout,
            file.request_body_idle_timeout,
            defaults.request_body_idle_timeout,
            "request-body-idle-timeout",
        )?,
        encoded_slashes: args
            .encoded_slashes
            .or(file.encoded_slashes)
            .map_or(defaults.encoded_slashes, EncodedSlashesArg::into_setting),
        max_connections: args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(defaults.max_connections),
        max_requests: args
            .max_requests
            .or(file.max_requests)
            .unwrap_or(defaults.max_requests),
        max_requests_per_backend: args
            .max_requests_per_backend
            .or(file.max_requests_per_backend)
            .unwrap_or(defaults.max_requests_per_backend),
        trusted_forwarders: if args.trust_forwarded_from.is_empty() {
            file.trust_forwarded_from
                .iter()
                .map(|text| {
                    super::parse_ip_range(text)
                        .map_err(|e| anyhow::anyhow!("trust_forwarded_from: {e}"))
                })
                .collect::<anyhow::Result<_>>()?
        } else {
            args.trust_forwarded_from.clone()
        },
        idle_timeout: duration(
            &args.idle_timeout,
            file.idle_timeout,
            defaults.idle_timeout,
            "idle-timeout",
        )?,
        response_write_timeout: duration(
            &args.response_write_timeout,
            file.response_write_timeout,
            defaults.response_write_timeout,
            "response-write-timeout",
        )?,
        otlp_endpoint: args.otlp_endpoint.clone().or(file.otlp_endpoint.clone()),
        otlp_sample_rate: args
            .otlp_sample_rate
            .or(file.otlp_sample_rate)
            .unwrap_or(defaults.otlp_sample_rate),
    };
    anyhow::ensure!(
        (0.0..=1.0).contains(&settings.otlp_sample_rate),
        "--otlp-sample-rate must be between 0 and 1"
    );
    if let Some(endpoint) = &settings.otlp_endpoint {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?}: {e}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http") && uri.authority().is_some(),
            "--otlp-endpoint {endpoint:?} must be http://host:port[/path]"
        );
    }
    if settings.otlp_endpoint.is_some() && !cfg!(feature = "otlp") {
        anyhow::bail!(
            "--otlp-endpoint: this build has no OTLP export; build with `cargo build --release -p switchyard-proxy --features otlp`"
        );
    }
    anyhow::ensure!(
        settings.max_header_bytes >= 8192,
        "--max-header-bytes must be at least 8192"
    );
    anyhow::ensure!(
        settings.max_headers >= 1,
        "--max-headers must be at least 1"
    );
    let table = args.table.clone().or(file.table.clone());
    let control_plane = args.control_plane.clone().or(file.control_plane.clone());
    let source = match (table, control_plane) {
        (Some(_), Some(_)) => anyhow::bail!(
            "pass either --table or --control-plane, not both: a proxy has one source of tables"
        ),
        (Some(table), None) => Source::File(table),
        (None, Some(url)) => {
            Source::ControlPlane(Box::new(control_plane_settings(&args, &file, &url)?))
        }
        (None, None) => anyhow::bail!(
            "no table: pass --table FILE or --control-plane URL (or `table:` in the bootstrap file)"
        ),
    };
    let listen = if args.listen.is_empty() {
        file.listen.clone()
    } else {
        args.listen.clone()
    };
    let tls_listen = if args.tls_listen.is_empty() {
        file.tls_listen.clone()
    } else {
        args.tls_listen.clone()
    };
    let outbound = if args.outbound.is_empty() {
        file.outbound.clone()
    } else {
        args.outbound.clone()
    };
    let inbound = match (
        args.inbound.clone().or(file.inbound.clone()),
        args.app_port.or(file.app_port),
    ) {
        (Some(address), Some(port)) if port != 0 => Some((address, port)),
        (Some(_), _) => {
            anyhow::bail!("--inbound needs --app-port PORT (1-65535): the local application's port")
        }
        (None, Some(_)) => {
            anyhow::bail!("--app-port without --inbound: no listener would serve it")
        }
        (None, None) => None,
    };
    anyhow::ensure!(
        !listen.is_empty() || !tls_listen.is_empty() || !outbound.is_empty() || inbound.is_some(),
        "no listener: pass --listen ADDR, --tls-listen ADDR, --outbound ADDR or --inbound ADDR (or `listen:` in the bootstrap file)"
    );
    let tls = tls_settings(&args, &file, &tls_listen)?;
    Ok(Resolved {
        source,
        listen,
        tls_listen,
        tls,
        outbound,
        inbound,
        admin: args
            .admin
            .or(file.admin)
            .unwrap_or_else(|| "127.0.0.1:9901".to_owned()),
        workers: args.workers.or(file.workers),
        reload_poll_interval: duration(
            &args.reload_poll_interval,
            file.reload_poll_interval,
            Duration::from_secs(2),
            "reload-poll-interval",
        )?,
        settings,
    })
}

/// A duration from its flag, else the bootstrap file, else `default`; a
/// flag that does not parse is an error naming it.
fn duration(
    flag: &Option<String>,
    from_file: Option<GwDuration>,
    default: Duration,
    name: &str,
) -> anyhow::Result<Duration> {
    match flag {
        Some(text) => text
            .parse::<GwDuration>()
            .map(GwDuration::get)
            .map_err(|e| anyhow::anyhow!("--{name}: {e}")),
        None => Ok(from_file.map_or(default, GwDuration::get)),
    }
}
