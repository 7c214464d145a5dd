//! Proxy settings that do not come from the table.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

/// Where weighted splits draw the random number of a key-less request.
#[derive(Clone, Default)]
pub enum SplitRandom {
    /// Each worker thread's generator, seeded by the OS.
    #[default]
    Thread,
    /// One generator with a fixed seed, shared by every connection behind a
    /// lock, so that a run's picks are the same numbers whatever the thread
    /// interleaving: the shares of N requests are exactly reproducible. For
    /// tests and reproducible embedding; the lock costs contention.
    Seeded(Arc<Mutex<StdRng>>),
}

impl SplitRandom {
    /// A shared generator seeded with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self::Seeded(Arc::new(Mutex::new(StdRng::seed_from_u64(seed))))
    }

    /// The next uniform 64-bit number.
    pub(crate) fn next_u64(&self) -> u64 {
        match self {
            Self::Thread => rand::random(),
            // A panic while holding the lock cannot leave a generator
            // half-updated in a way that matters: keep drawing.
            Self::Seeded(rng) => rng.lock().unwrap_or_else(PoisonError::into_inner).random(),
        }
    }
}

impl fmt::Debug for SplitRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Thread => f.write_str("SplitRandom::Thread"),
            Self::Seeded(_) => f.write_str("SplitRandom::Seeded(..)"),
        }
    }
}

/// Behaviour knobs of the data plane, set from flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Limit for establishing an upstream TCP connection.
    pub connect_timeout: Duration,
    /// How long an endpoint that could not be connected to is passed over
    /// by the endpoint pick; doubled when the next try fails too (at most
    /// 30 s, or this if longer). Zero turns passive health off.
    pub endpoint_ejection: Duration,
    /// Sidecar outbound: how long to wait for a connection's first bytes
    /// before passing it through undetected (server-speaks-first protocols).
    pub outbound_detect_timeout: Duration,
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
    /// Serve plain bodiless HTTP/1.1 requests with the proxy's own loop
    /// rather than hyper's server (which still takes every other request).
    pub http1_fast_path: bool,
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
    /// Longest request target (path and query, plus authority) accepted; 414 above.
    pub max_uri_bytes: usize,
    /// Most header fields in a request (HTTP/1.1); 431 above.
    pub max_headers: usize,
    /// Most bytes of request headers (HTTP/1.1 read buffer, HTTP/2 header
    /// list); 431 above.
    pub max_header_bytes: usize,
    /// Largest request body; 413 (from `Content-Length` before anything is
    /// sent, or when a chunked body passes it). `None`: no limit.
    pub max_request_body_bytes: Option<u64>,
    /// Longest pause while the client sends its body (slow POST); 408.
    /// Zero disables it.
    pub request_body_idle_timeout: Duration,
    /// What `%2F` and `%5C` in a path do.
    pub encoded_slashes: switchyard_config::path::EncodedSlashes,
    /// Open client connections per listener; more are closed at accept.
    pub max_connections: usize,
    /// Requests in flight in the whole proxy; more get 503 at once. Zero: no limit.
    pub max_requests: usize,
    /// Requests (and tunnels) in flight per backend; more get 503 at once.
    /// Zero: no limit.
    pub max_requests_per_backend: usize,
    /// Clients whose `x-forwarded-*` and `forwarded` headers are kept and
    /// appended to (proxies in front of this one). Everyone else's are
    /// replaced. Empty: nobody is trusted (an internet-facing gateway).
    pub trusted_forwarders: Vec<ipnet::IpNet>,
    /// A connection with nothing in progress for this long is closed
    /// gracefully (HTTP/2 GOAWAY). Zero disables it. HTTP/1.1 keep-alive
    /// connections are also closed by the header read timeout.
    pub idle_timeout: Duration,
    /// A client that accepts no response bytes for this long is
    /// disconnected (slow read). Zero disables it.
    pub response_write_timeout: Duration,
    /// OTLP/HTTP collector for request spans (cargo feature `otlp`).
    pub otlp_endpoint: Option<String>,
    /// Share of new traces (requests without a sampled `traceparent`) that
    /// get a span, 0 to 1.
    pub otlp_sample_rate: f64,
    /// The random numbers behind weighted picks (a fixed seed in tests).
    pub split_random: SplitRandom,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            endpoint_ejection: Duration::from_secs(1),
            outbound_detect_timeout: Duration::from_millis(500),
            header_read_timeout: Duration::from_secs(30),
            expose_backend: false,
            set_decision_header: false,
            trust_decision_header: false,
            forwarded_header: false,
            trust_request_id: true,
            admin_token: None,
            request_metrics: true,
            http1_fast_path: true,
            access_log_sample_rate: None,
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(10),
            tunnel_rebalance_window: crate::backend::DEFAULT_REBALANCE_WINDOW,
            log_level: None,
            max_uri_bytes: 8 * 1024,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            max_request_body_bytes: None,
            request_body_idle_timeout: Duration::from_secs(60),
            encoded_slashes: switchyard_config::path::EncodedSlashes::Reject,
            max_connections: 16 * 1024,
            max_requests: 10_000,
            max_requests_per_backend: 4_096,
            trusted_forwarders: Vec::new(),
            idle_timeout: Duration::from_secs(300),
            response_write_timeout: Duration::from_secs(60),
            otlp_endpoint: None,
            otlp_sample_rate: 1.0,
            split_random: SplitRandom::Thread,
        }
    }
}
