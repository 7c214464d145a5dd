//! Prometheus metrics (OpenMetrics text on the admin listener's `/metrics`).
//!
//! Names follow the conventions: `switchyard_` prefix, base units, `_total`
//! counters; labels are bounded (route and backend names from the table,
//! status class, result). The request path never touches a metric family:
//! each table apply resolves the counters and histograms of every
//! (route, backend) pair once, and a request only increments atomics on the
//! handles of its pair. Series of routes and backends that left the table
//! are removed on the swap. Per-backend gauges (in flight, draining, weight)
//! are read from the live state when `/metrics` is scraped.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use rustc_hash::FxHashMap;
use switchyard_config::compile::Action;
use switchyard_config::{CompiledTable, Target};

use crate::backend::Backend;

mod connections;
mod pairs;

use connections::ConnectionFamilies;
pub use connections::{ConnectionProtocol, Downstream};
use pairs::{CLASSES, pair_handles};
pub use pairs::{PairMetrics, TableMetrics};

/// Latency buckets in seconds: the OpenTelemetry defaults plus two
/// sub-millisecond edges. SLO thresholds should sit on these edges.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// OpenMetrics content type for `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    backend: String,
    status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteBackendLabels {
    route: String,
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    backend: String,
    error: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlingLabels {
    handling: &'static str,
}

/// Values of the `handling` label of
/// `switchyard_outbound_connections_total`.
pub const OUTBOUND_HANDLING: [&str; 4] = ["routed", "passthrough", "passthrough_failed", "refused"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric of the proxy.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteBackendLabels, Histogram>,
    weight: Family<BackendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    in_flight: Family<BackendLabels, Gauge>,
    draining: Family<BackendLabels, Gauge>,
    table_info: Family<VersionLabels, Gauge>,
    applies: Family<ResultLabels, Counter>,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Answers made before a backend was chosen (empty route and backend).
    unrouted: PairMetrics,
    access_log_dropped: Counter,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    upstream_retries: Family<BackendLabels, Counter>,
    upstream_connections: Family<BackendLabels, Gauge>,
    ejected_endpoints: Family<BackendLabels, Gauge>,
    errors: Family<ErrorLabels, Counter>,
    connections: ConnectionFamilies,
    outbound: Family<HandlingLabels, Counter>,
    /// Label sets of the current table, to remove those that leave it.
    current: Mutex<CurrentSeries>,
}

#[derive(Debug, Default)]
struct CurrentSeries {
    pairs: HashSet<(String, String)>,
    backends: HashSet<String>,
    version: Option<String>,
}

/// Values of the `error` label of `switchyard_upstream_errors_total`.
pub const UPSTREAM_ERRORS: [&str; 3] = ["connect_failed", "failed", "timeout"];

fn new_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

// === impl Metrics ===

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "switchyard_http_requests",
            "HTTP requests answered, by route, backend and status class",
            requests.clone(),
        );
        let duration = Family::<RouteBackendLabels, Histogram>::new_with_constructor(
            new_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "switchyard_http_request_duration",
            "From the first request byte to the end of the response, by route and backend",
            Unit::Seconds,
            duration.clone(),
        );
        let weight = Family::default();
        registry.register(
            "switchyard_backend_weight",
            "Desired share of traffic of each backend (0 to 1), the largest over the rules naming it",
            weight.clone(),
        );
        let in_flight = Family::default();
        registry.register(
            "switchyard_backend_in_flight_requests",
            "Requests and tunnels running on each backend",
            in_flight.clone(),
        );
        let draining = Family::default();
        registry.register(
            "switchyard_backend_draining",
            "1 while a backend is draining or drained, else 0",
            draining.clone(),
        );
        let table_info = Family::default();
        registry.register(
            "switchyard_table_info",
            "The table version in force (one series, value 1)",
            table_info.clone(),
        );
        let applies = Family::default();
        registry.register(
            "switchyard_table_applies",
            "Table applies, accepted (ack) or rejected (nack)",
            applies.clone(),
        );
        let last_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "switchyard_config_last_reload_success_timestamp",
            "Unix time of the last accepted table",
            Unit::Seconds,
            last_success.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "switchyard_build_info",
            "Build information (value 1)",
            build,
        );
        let unrouted = pair_handles(&requests, &duration, "", "");
        let access_log_dropped = Counter::default();
        registry.register(
            "switchyard_access_log_dropped_lines",
            "Access log lines dropped because the writer could not keep up",
            access_log_dropped.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            "switchyard_upstream_errors",
            "Requests that failed upstream, by backend and error (connect_failed, failed, timeout)",
            upstream_errors.clone(),
        );
        let upstream_retries = Family::default();
        registry.register(
            "switchyard_upstream_retries",
            "Requests sent again because the first attempt never reached the upstream, or the upstream closed or refused it unanswered",
            upstream_retries.clone(),
        );
        let upstream_connections = Family::default();
        registry.register(
            "switchyard_upstream_connections_open",
            "Open upstream connections (pooled and in use), by backend",
            upstream_connections.clone(),
        );
        let ejected_endpoints = Family::default();
        registry.register(
            "switchyard_upstream_endpoints_ejected",
            "Endpoints passed over for now after a failed connect (passive health), by backend",
            ejected_endpoints.clone(),
        );
        let errors = Family::default();
        registry.register(
            "switchyard_http_errors",
            "Requests the proxy answered itself with an error, by reason (the x-switchyard-error value)",
            errors.clone(),
        );
        let connections = ConnectionFamilies::register(&mut registry);
        let outbound = Family::<HandlingLabels, Counter>::default();
        registry.register(
            "switchyard_outbound_connections",
            "Connections intercepted by the sidecar's outbound listener, by handling: routed by the table, passed through to their original destination (or failing to connect there), refused (no original destination, or a loop to the proxy itself)",
            outbound.clone(),
        );
        for handling in OUTBOUND_HANDLING {
            outbound
                .get_or_create(&HandlingLabels { handling })
                .inc_by(0);
        }
        Self {
            registry,
            connections,
            outbound,
            access_log_dropped,
            upstream_errors,
            upstream_retries,
            upstream_connections,
            ejected_endpoints,
            errors,
            requests,
            duration,
            weight,
            in_flight,
            draining,
            table_info,
            applies,
            last_success,
            unrouted,
            current: Mutex::new(CurrentSeries::default()),
        }
    }

    /// Counts an intercepted outbound connection (`handling` is one of
    /// [`OUTBOUND_HANDLING`]).
    pub fn count_outbound(&self, handling: &'static str) {
        self.outbound
            .get_or_create(&HandlingLabels { handling })
            .inc();
    }

    /// Counts an apply attempt.
    pub fn count_apply(&self, accepted: bool) {
        let result = if accepted { "ack" } else { "nack" };
        self.applies.get_or_create(&ResultLabels { result }).inc();
        if accepted {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.last_success.set(now);
        }
    }

    /// Resolves the handles of a new table and removes the series of routes,
    /// backends and versions that left.
    pub fn for_table(&self, table: &CompiledTable) -> TableMetrics {
        let mut pairs: HashSet<(String, String)> = HashSet::new();
        let mut by_pair = FxHashMap::default();
        for rule in table.rules() {
            let route = rule.route as u32;
            let targets: Vec<u32> = match &rule.action {
                Action::Backend(id) => vec![id.0],
                Action::Split(split) => split
                    .choices()
                    .iter()
                    .filter_map(|c| match c.target {
                        Target::Backend(id) => Some(id.0),
                        Target::Unresolved => None,
                    })
                    .collect(),
                Action::DirectResponse { .. } => Vec::new(),
            };
            for backend in targets {
                let names = (
                    table.routes()[route as usize].name.clone(),
                    table.backends()[backend as usize].name.clone(),
                );
                by_pair
                    .entry((route, backend))
                    .or_insert_with(|| self.pair(&names.0, &names.1));
                pairs.insert(names);
            }
        }
        let backends: HashSet<String> = table.backends().iter().map(|b| b.name.clone()).collect();
        let version = table.version().to_string();

        let mut current = match self.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (route, backend) in current.pairs.difference(&pairs) {
            for status_class in CLASSES {
                self.requests.remove(&RequestLabels {
                    route: route.clone(),
                    backend: backend.clone(),
                    status_class,
                });
            }
            self.duration.remove(&RouteBackendLabels {
                route: route.clone(),
                backend: backend.clone(),
            });
        }
        for backend in current.backends.difference(&backends) {
            let labels = BackendLabels {
                backend: backend.clone(),
            };
            self.weight.remove(&labels);
            self.in_flight.remove(&labels);
            self.draining.remove(&labels);
            self.upstream_retries.remove(&labels);
            self.upstream_connections.remove(&labels);
            self.ejected_endpoints.remove(&labels);
            for error in UPSTREAM_ERRORS {
                self.upstream_errors.remove(&UpstreamErrorLabels {
                    backend: backend.clone(),
                    error,
                });
            }
        }
        if let Some(old) = current.version.take()
            && old != version
        {
            self.table_info.remove(&VersionLabels { version: old });
        }
        self.table_info
            .get_or_create(&VersionLabels {
                version: version.clone(),
            })
            .set(1);
        for (compiled, share) in table.backends().iter().zip(table.backend_shares()) {
            self.weight
                .get_or_create(&BackendLabels {
                    backend: compiled.name.clone(),
                })
                .set(share);
        }
        *current = CurrentSeries {
            pairs,
            backends,
            version: Some(version),
        };
        TableMetrics {
            by_pair,
            unrouted: self.unrouted.clone(),
        }
    }

    fn pair(&self, route: &str, backend: &str) -> PairMetrics {
        pair_handles(&self.requests, &self.duration, route, backend)
    }

    /// Counts a request that failed upstream (`error` is one of
    /// [`UPSTREAM_ERRORS`]). Failures are rare, so the family lookup is fine.
    pub fn count_upstream_error(&self, backend: &str, error: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                backend: backend.to_owned(),
                error,
            })
            .inc();
    }

    /// Counts a retry on `backend`.
    pub fn count_retry(&self, backend: &str) {
        self.upstream_retries
            .get_or_create(&BackendLabels {
                backend: backend.to_owned(),
            })
            .inc();
    }

    /// Counts an error answer made by the proxy, by its reason code.
    pub fn count_error(&self, error: &'static str) {
        self.errors.get_or_create(&ErrorLabels { error }).inc();
    }

    /// The connection metrics of a listener.
    pub fn downstream(&self, listener: &'static str) -> Downstream {
        self.connections.downstream(listener)
    }

    /// The counter of dropped access log lines.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// Handles for answers made before a backend was chosen.
    pub fn unrouted(&self) -> &PairMetrics {
        &self.unrouted
    }

    /// Renders every metric as OpenMetrics text, reading the per-backend
    /// gauges from `backends` first.
    pub fn render(&self, backends: &[std::sync::Arc<Backend>]) -> String {
        for backend in backends {
            let labels = BackendLabels {
                backend: backend.name().to_owned(),
            };
            self.in_flight
                .get_or_create(&labels)
                .set(backend.in_flight());
            self.draining
                .get_or_create(&labels)
                .set(i64::from(backend.is_draining()));
            let endpoints = backend.endpoints();
            let connections: usize = endpoints.iter().map(|e| e.open_connections()).sum();
            self.upstream_connections
                .get_or_create(&labels)
                .set(connections as i64);
            let ejected = endpoints.iter().filter(|e| e.is_ejected()).count();
            self.ejected_endpoints
                .get_or_create(&labels)
                .set(ejected as i64);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
