//! Proxy settings that do not come from the table.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Changes the log filter at runtime (`POST /log-level`); the binary
/// provides it, since it owns the log subscriber.
#[derive(Clone)]
pub struct LogLevel(Arc<SetDirectives>);

/// Applies log directives, or says why they are invalid.
type SetDirectives = dyn Fn(&str) -> Result<(), String> + Send + Sync;

impl LogLevel {
    /// A setter that applies `EnvFilter`-style directives (`debug`,
    /// `switchyard_proxy=debug,info`).
    pub fn new(set: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(set))
    }

    /// Applies `directives`, or says why they are invalid.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        (self.0)(directives)
    }
}

impl fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogLevel(..)")
    }
}

/// Behaviour knobs of the data plane, set from flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Limit for establishing an upstream TCP connection.
    pub connect_timeout: Duration,
    /// Limit for reading a request's headers (slowloris).
    pub header_read_timeout: Duration,
    /// Add `x-switchyard-backend: NAME` to responses (testers, demos).
    pub expose_backend: bool,
    /// Send `x-switchyard-decision: NAME` upstream so the next proxy can keep
    /// the request on the same version.
    pub set_decision_header: bool,
    /// Honour an incoming `x-switchyard-decision` when the split can send
    /// there (for proxies behind another Switchyard; never on an edge).
    pub trust_decision_header: bool,
    /// Also append an RFC 7239 `forwarded` header.
    pub forwarded_header: bool,
    /// Keep an incoming `x-request-id` (a sidecar, or a gateway behind a
    /// trusted hop); when false, every request gets a fresh id.
    pub trust_request_id: bool,
    /// Bearer token required by `POST /table` on the admin listener; the
    /// endpoint is disabled without one.
    pub admin_token: Option<String>,
    /// Count and time every request (`switchyard_http_requests_total` and
    /// the duration histogram); off only to measure what they cost.
    pub request_metrics: bool,
    /// Access log on stdout, with the share of requests logged (0..=1);
    /// `None` turns it off.
    pub access_log_sample_rate: Option<f64>,
    /// After SIGTERM, how long to keep accepting while `/ready` already
    /// fails, so load balancers stop sending first (match a `preStop` sleep).
    pub drain_delay: Duration,
    /// After the drain delay, how long open connections may finish.
    pub shutdown_grace: Duration,
    /// Runtime log level control for `POST /log-level`, when available.
    pub log_level: Option<LogLevel>,
    /// When a backend's share falls, tunnels beyond its new share are
    /// closed one by one over this window.
    pub tunnel_rebalance_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
            expose_backend: false,
            set_decision_header: false,
            trust_decision_header: false,
            forwarded_header: false,
            trust_request_id: true,
            admin_token: None,
            request_metrics: true,
            access_log_sample_rate: None,
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(10),
            tunnel_rebalance_window: crate::backend::DEFAULT_REBALANCE_WINDOW,
            log_level: None,
        }
    }
}
