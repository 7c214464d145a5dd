//! Command line: `serve` runs the daemon; every other command is a client
//! of it (kubectl / argo style, `-o table|json|yaml` on every read).

mod commands;
mod output;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Switchyard control plane: table history, push to proxies, fleet status.
#[derive(Debug, Parser)]
#[command(name = "switchyard-control", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Make a table file the group's desired table.
    Apply {
        /// Table file (native YAML/JSON or Gateway API HTTPRoute).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Why (recorded in the history).
        #[arg(long, short = 'm', default_value = "")]
        message: String,
        /// Validate and show the diff only.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Show what applying a table file would change (exit 1 if anything).
    Diff {
        /// Table file.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Set the weights of a route's splits: `set-weights web blue=90 green=10`.
    SetWeights {
        /// Route name.
        route: String,
        /// `BACKEND=WEIGHT` pairs; backends not named get 0.
        #[arg(required = true)]
        weights: Vec<String>,
        /// Why.
        #[arg(long, short = 'm', default_value = "")]
        message: String,
        #[command(flatten)]
        common: Common,
    },
    /// Drain a backend: no new requests; in-flight work gets until the deadline.
    Drain {
        /// Backend name.
        backend: String,
        /// How long in-flight work may run.
        #[arg(long, default_value = "30s")]
        deadline: String,
        /// `soft` keeps sticky cohorts already on it until the deadline.
        #[arg(long, value_enum, default_value = "hard")]
        mode: Mode,
        /// Why.
        #[arg(long, short = 'm', default_value = "")]
        message: String,
        #[command(flatten)]
        common: Common,
    },
    /// Clear a backend's drain.
    Undrain {
        /// Backend name.
        backend: String,
        /// Why.
        #[arg(long, short = 'm', default_value = "")]
        message: String,
        #[command(flatten)]
        common: Common,
    },
    /// Fleet status of a group; `-w` waits until its change is live.
    Status {
        /// Wait until every connected proxy runs the desired version.
        #[arg(short = 'w', long)]
        watch: bool,
        /// How long `-w` waits, like `60s`.
        #[arg(long, default_value = "60s")]
        timeout: String,
        #[command(flatten)]
        common: Common,
    },
    /// Changes of a group, newest first.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Re-apply an earlier version exactly (default: the one before the latest change).
    Rollback {
        /// Version (`sha256:…`, or a unique prefix of at least 8 hex digits).
        version: Option<String>,
        /// Why.
        #[arg(long, short = 'm', default_value = "")]
        message: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    /// Directory of the durable store.
    #[arg(long)]
    data: PathBuf,
    /// Tokens file: `NAME ROLE SECRET` per line (role `admin` or `proxy`).
    #[arg(long)]
    tokens: PathBuf,
    /// Apply `GROUP.yaml` files of this directory when they change (GitOps).
    #[arg(long)]
    watch: Option<PathBuf>,
    /// How often the watched directory is read.
    #[arg(long, default_value = "1s")]
    watch_interval: String,
    /// A proxy off the desired version for longer than this is drifting.
    #[arg(long, default_value = "60s")]
    drift_threshold: String,
    /// Operational log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS, on top of tokens).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

/// Flags every client command takes.
#[derive(Debug, Args)]
pub(crate) struct Common {
    /// Control plane URL.
    #[arg(
        long,
        env = "SWITCHYARD_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,
    /// File holding the bearer token.
    #[arg(long, env = "SWITCHYARD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Group of proxies.
    #[arg(long, short = 'g', env = "SWITCHYARD_GROUP", default_value = "default")]
    group: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
    /// CA bundle to verify an `https://` server (default: the system's roots).
    #[arg(long, env = "SWITCHYARD_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate for a server that requires one; needs --client-key.
    #[arg(long, env = "SWITCHYARD_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert.
    #[arg(long, env = "SWITCHYARD_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON as the API answers.
    Json,
    /// The same as YAML.
    Yaml,
}

/// Drain modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Everyone moves at once.
    Hard,
    /// Sticky cohorts stay until the deadline.
    Soft,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Runs the command; the exit status is 0 on success, 1 when the control
/// plane refused or a wait timed out, 64 for bad input on this side.
pub(crate) fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        command => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(failure) => {
                    eprintln!("switchyard-control: cannot start: {failure}");
                    return ExitCode::from(70);
                }
            };
            runtime.block_on(commands::run(command))
        }
    }
}
