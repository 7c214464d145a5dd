//! Per-table metric handles: what the request path touches.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use rustc_hash::FxHashMap;

use super::{RequestLabels, RouteBackendLabels};

/// Metric handles of one table, resolved at apply time.
#[derive(Debug)]
pub struct TableMetrics {
    pub(super) by_pair: FxHashMap<(u32, u32), PairMetrics>,
    /// Requests answered before a backend was chosen (no route, no table,
    /// direct responses, drained): route and backend labels are empty or
    /// name the route only.
    pub(super) unrouted: PairMetrics,
}

/// The counters (one per status class) and histogram of a (route, backend).
#[derive(Debug, Clone)]
pub struct PairMetrics {
    pub(super) by_class: [Counter; 5],
    pub(super) duration: Histogram,
}

pub(super) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The handles of a (route, backend) pair, created in the families if new.
pub(super) fn pair_handles(
    requests: &Family<RequestLabels, Counter>,
    duration: &Family<RouteBackendLabels, Histogram>,
    route: &str,
    backend: &str,
) -> PairMetrics {
    let by_class = CLASSES.map(|status_class| {
        requests.get_or_create_owned(&RequestLabels {
            route: route.to_owned(),
            backend: backend.to_owned(),
            status_class,
        })
    });
    let duration = duration.get_or_create_owned(&RouteBackendLabels {
        route: route.to_owned(),
        backend: backend.to_owned(),
    });
    PairMetrics { by_class, duration }
}

// === impl TableMetrics ===

impl TableMetrics {
    /// The handles of a (route, backend) pair, or of unrouted requests.
    pub fn pair(&self, route: Option<usize>, backend: Option<usize>) -> &PairMetrics {
        match (route, backend) {
            (Some(route), Some(backend)) => self
                .by_pair
                .get(&(route as u32, backend as u32))
                .unwrap_or(&self.unrouted),
            _ => &self.unrouted,
        }
    }
}

impl TableMetrics {
    /// Responses so far of every (route, backend) pair by index: all of
    /// them, and the 5xx ones. Zero when request metrics are off.
    pub fn pair_totals(&self) -> impl Iterator<Item = ((u32, u32), u64, u64)> + '_ {
        self.by_pair.iter().map(|(pair, metrics)| {
            let all = metrics.by_class.iter().map(Counter::get).sum();
            (*pair, all, metrics.by_class[4].get())
        })
    }
}

// === impl PairMetrics ===

impl PairMetrics {
    /// Counts a response by its status class.
    pub fn count(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
    }

    /// Records a request's duration in seconds.
    pub fn observe(&self, seconds: f64) {
        self.duration.observe(seconds);
    }
}
