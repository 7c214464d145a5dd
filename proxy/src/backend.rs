//! The backend registry: backends by identity, outside any one table.
//!
//! A table swap keeps the endpoints (and so the pooled connections) of every
//! backend that stays, creates those that are new and retires those that
//! left: their idle connections close at once, in-flight requests finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_config::spec::{BackendTlsSpec, Protocol};
use switchyard_config::{CompiledTable, InvalidTable, Problem};

use crate::upstream::Endpoint;
use crate::upstream_tls::UpstreamTls;

mod drain;

pub use drain::DrainStatus;
pub(crate) use drain::{Drain, TunnelGuard};

/// One backend (a version of a service) and its endpoints.
#[derive(Debug)]
pub struct Backend {
    name: String,
    protocol: Protocol,
    tls: Option<Arc<UpstreamTls>>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Requests and tunnels running on the backend.
    in_flight: AtomicI64,
    drain: Drain,
}

/// Backends by identity (name and protocol).
#[derive(Debug, Default)]
pub struct Registry {
    backends: Mutex<HashMap<BackendKey, Arc<Backend>>>,
    /// Each backend's share in the table before the last swap.
    shares: Mutex<HashMap<(String, Protocol), f64>>,
    /// Window over which tunnels beyond a lowered share are closed.
    rebalance_window_ms: AtomicU64,
}

/// What makes a backend the same across tables: a changed protocol or TLS
/// setting makes a new one (new connections), anything else is updated in
/// place.
type BackendKey = (String, Protocol, Option<BackendTlsSpec>);

/// Default window for closing tunnels after a backend's share falls.
pub const DEFAULT_REBALANCE_WINDOW: Duration = Duration::from_secs(30);

// === impl Backend ===

impl Backend {
    fn new(name: String, protocol: Protocol, tls: Option<Arc<UpstreamTls>>) -> Self {
        Self {
            name,
            protocol,
            tls,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            in_flight: AtomicI64::new(0),
            drain: Drain::default(),
        }
    }

    /// Backend name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Upstream protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Requests and tunnels running on this backend.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight_add(&self, delta: i64) {
        let now = self.in_flight.fetch_add(delta, Ordering::AcqRel) + delta;
        if now == 0 && delta < 0 {
            self.check_drained();
        }
    }

    /// Current endpoints.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Power of two choices on in-flight requests, passing over endpoints
    /// that could not be connected to lately (unless every one is such:
    /// then trying beats refusing); `avoid` (a failed endpoint) is skipped
    /// when there is another.
    pub(crate) fn pick_endpoint(
        &self,
        random: u64,
        avoid: Option<&Arc<Endpoint>>,
    ) -> Option<Arc<Endpoint>> {
        let endpoints = self.endpoints.load();
        let skip = avoid
            .filter(|_| endpoints.len() > 1)
            .and_then(|avoid| endpoints.iter().position(|e| Arc::ptr_eq(e, avoid)));
        // Candidates are the endpoints without `skip`, indexed 0..n.
        let n = endpoints.len() - usize::from(skip.is_some());
        let candidate = |i: usize| match skip {
            Some(skipped) if i >= skipped => &endpoints[i + 1],
            _ => &endpoints[i],
        };
        match n {
            0 => None,
            1 => Some(candidate(0).clone()),
            n => {
                let first = (random % n as u64) as usize;
                let offset = 1 + ((random >> 32) % (n as u64 - 1)) as usize;
                let (a, b) = (candidate(first), candidate((first + offset) % n));
                let picked = match (a.is_ejected(), b.is_ejected()) {
                    (false, false) if b.in_flight() < a.in_flight() => b,
                    (false, _) => a,
                    (true, false) => b,
                    // Rare: look for any endpoint in service.
                    (true, true) => (0..n).map(candidate).find(|e| !e.is_ejected()).unwrap_or(a),
                };
                Some(picked.clone())
            }
        }
    }

    fn set_endpoints(&self, addrs: &[String]) {
        let current = self.endpoints.load_full();
        let mut next = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let existing = current.iter().find(|e| e.addr() == addr);
            next.push(match existing {
                Some(endpoint) => endpoint.clone(),
                None => Arc::new(Endpoint::new(addr.clone(), self.protocol, self.tls.clone())),
            });
        }
        for old in current.iter() {
            if !addrs.iter().any(|a| a == old.addr()) {
                old.retire();
            }
        }
        self.endpoints.store(Arc::new(next));
    }

    fn retire(&self) {
        for endpoint in self.endpoints.load().iter() {
            endpoint.retire();
        }
    }
}

// === impl Registry ===

impl Registry {
    /// Sets the window over which tunnels beyond a lowered share are closed.
    pub fn set_rebalance_window(&self, window: Duration) {
        self.rebalance_window_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
    }

    fn rebalance_window(&self) -> Duration {
        match self.rebalance_window_ms.load(Ordering::Relaxed) {
            0 => DEFAULT_REBALANCE_WINDOW,
            ms => Duration::from_millis(ms),
        }
    }

    /// Tunnels pinned to a backend whose share fell are closed in proportion
    /// (share 0.5 -> 0.25: half of them), one at a time over the window, so
    /// clients reconnect gradually instead of all at once or never.
    fn rebalance_tunnels(&self, table: &CompiledTable, indexed: &[Arc<Backend>]) {
        let new_shares = table.backend_shares();
        let mut shares = match self.shares.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let window = self.rebalance_window();
        let mut next = HashMap::with_capacity(indexed.len());
        for (backend, new_share) in indexed.iter().zip(new_shares) {
            let key = (backend.name().to_owned(), backend.protocol());
            if let Some(old_share) = shares.get(&key).copied()
                && new_share < old_share
                && !backend.is_draining()
            {
                let open = backend.open_tunnels().max(0) as f64;
                let excess = (open * (1.0 - new_share / old_share)).round() as usize;
                let closing = backend.close_tunnels_gradually(excess, window);
                if closing > 0 {
                    tracing::info!(
                        backend = backend.name(),
                        closing,
                        ?window,
                        "share fell; closing tunnels gradually"
                    );
                }
            }
            next.insert(key, new_share);
        }
        *shares = next;
    }

    /// Open tunnels across all backends.
    pub fn open_tunnels(&self) -> i64 {
        let backends = match self.backends.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        backends.values().map(|b| b.open_tunnels()).sum()
    }

    /// Closes every tunnel of every backend (the end of a shutdown: hyper
    /// no longer tracks upgraded connections, so the proxy does).
    pub fn close_all_tunnels(&self) {
        let backends = match self.backends.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for backend in backends.values() {
            backend.close_tunnels_now();
        }
    }

    /// Makes the registry match `table` and returns its backends indexed
    /// like [`CompiledTable::backends`].
    /// A backend whose TLS files cannot be used fails the whole table, with
    /// the field's path, and nothing changes.
    pub fn sync(&self, table: &CompiledTable) -> Result<Box<[Arc<Backend>]>, InvalidTable> {
        let mut backends = match self.backends.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // TLS clients of new backends first: reading their files can fail.
        let mut clients = HashMap::new();
        let mut problems = Vec::new();
        for compiled in table.backends() {
            let key = (
                compiled.name.clone(),
                compiled.protocol,
                compiled.tls.clone(),
            );
            if let Some(spec) = &compiled.tls
                && !backends.contains_key(&key)
            {
                match UpstreamTls::load(spec, compiled.protocol) {
                    Ok(client) => {
                        clients.insert(compiled.name.clone(), Arc::new(client));
                    }
                    Err((field, reason)) => problems.push(Problem::new(
                        format!("backends.{}.tls.{field}", compiled.name),
                        reason,
                    )),
                }
            }
        }
        if !problems.is_empty() {
            return Err(InvalidTable { problems });
        }
        let mut next = HashMap::with_capacity(table.backends().len());
        let mut indexed = Vec::with_capacity(table.backends().len());
        for compiled in table.backends() {
            let key = (
                compiled.name.clone(),
                compiled.protocol,
                compiled.tls.clone(),
            );
            let backend = backends.remove(&key).unwrap_or_else(|| {
                Arc::new(Backend::new(
                    compiled.name.clone(),
                    compiled.protocol,
                    clients.remove(&compiled.name),
                ))
            });
            backend.set_endpoints(&compiled.endpoints);
            backend.set_drain(compiled.drain.as_ref());
            indexed.push(backend.clone());
            next.insert(key, backend);
        }
        for (_, left) in backends.drain() {
            left.retire();
        }
        *backends = next;
        drop(backends);
        self.rebalance_tunnels(table, &indexed);
        Ok(indexed.into_boxed_slice())
    }
}
