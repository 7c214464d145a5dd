//! Command-line interface of `switchyard-proxy`.

mod bootstrap;
mod check;
mod runner;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// `EX_USAGE`: a bad command line or configuration.
pub(crate) const EXIT_USAGE: u8 = 64;

/// Switchyard data plane: an L7 proxy that splits traffic between versions.
#[derive(Debug, Parser)]
#[command(name = "switchyard-proxy", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy with a table file (reloaded on change and on SIGHUP) or
    /// tables from a control plane.
    Run(Box<RunArgs>),
    /// Validate table files without starting anything (like `nginx -t`).
    Check {
        /// Table files (native YAML/JSON or Gateway API HTTPRoute).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the proxy with two built-in demo backends and an example table.
    Demo {
        /// Proxy address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
}

/// Flags of `run`; each overrides the same setting of `--bootstrap`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Bootstrap file (YAML): listeners, admin address, table path, settings.
    #[arg(long)]
    bootstrap: Option<PathBuf>,
    /// Table file.
    #[arg(long)]
    table: Option<PathBuf>,
    /// Proxy listener address; repeat for several listeners.
    #[arg(long)]
    listen: Vec<String>,
    /// Admin listener address (loopback by default).
    #[arg(long)]
    admin: Option<String>,
    /// Sidecar outbound listener (connections redirected by iptables, like
    /// `0.0.0.0:15001`): routed by the table when a route is scoped to the
    /// original destination or names the Host, else passed through.
    #[arg(long)]
    outbound: Vec<String>,
    /// Sidecar inbound listener (like `0.0.0.0:15006`), in front of the
    /// local application on `127.0.0.1:--app-port`.
    #[arg(long, requires = "app_port")]
    inbound: Option<String>,
    /// The local application's port, for `--inbound`.
    #[arg(long, requires = "inbound")]
    app_port: Option<u16>,
    /// How long the outbound listener waits for a client's first bytes
    /// before passing the connection through undetected, like `500ms`.
    #[arg(long)]
    outbound_detect_timeout: Option<String>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Upstream connect timeout, like `5s`.
    #[arg(long)]
    connect_timeout: Option<String>,
    /// How long an endpoint that could not be connected to is passed over,
    /// like `1s`; doubled, up to 30s, when the next try fails too (`0s`
    /// turns passive health off).
    #[arg(long)]
    endpoint_ejection: Option<String>,
    /// Limit for reading a request's headers, which also closes idle
    /// HTTP/1.1 keep-alive connections, like `30s` (`0s` disables it).
    #[arg(long)]
    header_read_timeout: Option<String>,
    /// After SIGTERM, keep accepting this long while /ready fails, like `5s`
    /// (match the pod's preStop sleep).
    #[arg(long)]
    drain_delay: Option<String>,
    /// Window over which tunnels beyond a lowered share are closed, like `30s`.
    #[arg(long)]
    tunnel_rebalance_window: Option<String>,
    /// Time open connections get to finish at shutdown, like `10s`.
    #[arg(long)]
    shutdown_grace: Option<String>,
    /// How often to poll the table file as a fallback to file events.
    #[arg(long)]
    reload_poll_interval: Option<String>,
    /// Add `x-switchyard-backend: NAME` to responses.
    #[arg(long)]
    expose_backend: bool,
    /// Send `x-switchyard-decision: NAME` upstream (for a next Switchyard hop).
    #[arg(long)]
    set_decision_header: bool,
    /// Honour an incoming `x-switchyard-decision` (only behind a trusted proxy).
    #[arg(long)]
    trust_decision_header: bool,
    /// Also append an RFC 7239 `forwarded` header.
    #[arg(long)]
    forwarded_header: bool,
    /// Do not count or time requests in /metrics (to measure what that costs).
    #[arg(long)]
    no_request_metrics: bool,
    /// Serve every HTTP/1.1 request with hyper, never with the proxy's own
    /// loop for plain bodiless requests (to compare, or to rule it out).
    #[arg(long)]
    no_http1_fast_path: bool,
    /// Write a JSON access log line per request on stdout.
    #[arg(long)]
    access_log: bool,
    /// Share of requests the access log records, 0 to 1 (default 1).
    #[arg(long)]
    access_log_sample_rate: Option<f64>,
    /// Replace incoming `x-request-id`s instead of keeping them (an
    /// internet-facing gateway).
    #[arg(long)]
    replace_request_id: bool,
    /// Operational log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// File holding the bearer token for `POST /table` on the admin API.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Take tables from this control plane (`http://host:port`) instead of a file.
    #[arg(long)]
    control_plane: Option<String>,
    /// Group of proxies this one belongs to (with --control-plane).
    #[arg(long)]
    group: Option<String>,
    /// This proxy's name in fleet status (default: the host name).
    #[arg(long)]
    node_id: Option<String>,
    /// File holding the bearer token for the control plane.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Keep the last good table from the control plane in this file, and
    /// start from it when the control plane is down at boot.
    #[arg(long)]
    table_cache: Option<PathBuf>,
    /// How often to report to the control plane, like `5s`.
    #[arg(long)]
    report_interval: Option<String>,
    /// Refuse (NACK) pushed tables larger than this many bytes.
    #[arg(long)]
    max_table_bytes: Option<usize>,
    /// CA bundle to verify an `https://` control plane (default: system roots).
    #[arg(long)]
    control_plane_ca: Option<PathBuf>,
    /// Client certificate for a control plane that requires one (mutual TLS).
    #[arg(long, requires = "control_plane_key")]
    control_plane_cert: Option<PathBuf>,
    /// The private key of --control-plane-cert.
    #[arg(long, requires = "control_plane_cert")]
    control_plane_key: Option<PathBuf>,
    /// Longest request target accepted, in bytes (414 above; default 8192).
    #[arg(long)]
    max_uri_bytes: Option<usize>,
    /// Most header fields in an HTTP/1.1 request (431 above; default 100).
    #[arg(long)]
    max_headers: Option<usize>,
    /// Most bytes of request headers (431 above; default 65536).
    #[arg(long)]
    max_header_bytes: Option<usize>,
    /// Largest request body in bytes (413 above; default 0, no limit).
    #[arg(long)]
    max_request_body_bytes: Option<u64>,
    /// Longest pause in a request body, like `60s` (408; `0s` disables).
    #[arg(long)]
    request_body_idle_timeout: Option<String>,
    /// What `%2F` and `%5C` in a request path do (default reject: 400).
    #[arg(long, value_enum)]
    encoded_slashes: Option<EncodedSlashesArg>,
    /// Open client connections per listener (more are closed; default 16384).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Requests in flight in the whole proxy (503 above; default 10000, 0: none).
    #[arg(long)]
    max_requests: Option<usize>,
    /// Requests in flight per backend (503 above; default 4096, 0: none).
    #[arg(long)]
    max_requests_per_backend: Option<usize>,
    /// Keep and append to forwarding headers from clients in this range
    /// (CIDR, repeat for several); others' are replaced.
    #[arg(long, value_parser = parse_ip_range)]
    trust_forwarded_from: Vec<ipnet::IpNet>,
    /// Close connections with nothing in progress after this, like `300s`
    /// (HTTP/2 GOAWAY; `0s` disables).
    #[arg(long)]
    idle_timeout: Option<String>,
    /// Disconnect a client that reads none of its response for this long,
    /// like `60s` (`0s` disables).
    #[arg(long)]
    response_write_timeout: Option<String>,
    /// Export a span per request to this OTLP/HTTP collector,
    /// `http://host:4318` (needs a build with `--features otlp`).
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Share of new traces that get a span, 0 to 1 (default 1).
    #[arg(long)]
    otlp_sample_rate: Option<f64>,
    /// TLS listener address (HTTP/1.1 and HTTP/2 by ALPN); repeat for several.
    #[arg(long)]
    tls_listen: Vec<String>,
    /// A certificate chain and key as `CERT.pem:KEY.pem`; repeat for several
    /// (chosen by SNI; the first also serves clients without SNI).
    #[arg(long)]
    tls_cert: Vec<String>,
    /// Refuse TLS clients that send no SNI.
    #[arg(long)]
    tls_require_sni: bool,
    /// Longest TLS handshake, like `10s`.
    #[arg(long)]
    tls_handshake_timeout: Option<String>,
    /// How often certificate files are checked for changes, like `2s`
    /// (SIGHUP also reloads them).
    #[arg(long)]
    tls_reload_interval: Option<String>,
}

/// A CIDR range, or a single address as a range of one.
pub(crate) fn parse_ip_range(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither an address nor a CIDR range"))
}

/// `--encoded-slashes` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EncodedSlashesArg {
    /// Answer 400: backends disagree on what an encoded slash means.
    Reject,
    /// Keep them encoded, as part of a segment.
    Keep,
    /// Decode them into separators.
    Decode,
}

impl EncodedSlashesArg {
    pub(crate) fn into_setting(self) -> switchyard_config::path::EncodedSlashes {
        use switchyard_config::path::EncodedSlashes;
        match self {
            Self::Reject => EncodedSlashes::Reject,
            Self::Keep => EncodedSlashes::Keep,
            Self::Decode => EncodedSlashes::Decode,
        }
    }
}

/// Operational log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

// === impl Cli ===

impl Cli {
    pub(crate) fn execute(self) -> ExitCode {
        match self.command {
            Command::Check { files } => check::check(&files),
            Command::Run(args) => runner::run(*args),
            Command::Demo { listen, admin } => runner::demo(&listen, &admin),
        }
    }
}
