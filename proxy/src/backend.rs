//! The backend registry: backends by identity, outside any one table.
//!
//! A table swap keeps the endpoints (and so the pooled connections) of every
//! backend that stays, creates those that are new and retires those that
//! left: their idle connections close at once, in-flight requests finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use switchyard_config::CompiledTable;
use switchyard_config::spec::Protocol;

use crate::upstream::Endpoint;

/// One backend (a version of a service) and its endpoints.
#[derive(Debug)]
pub struct Backend {
    name: String,
    protocol: Protocol,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    in_flight: AtomicI64,
}

/// Backends by identity (name and protocol).
#[derive(Debug, Default)]
pub struct Registry {
    backends: Mutex<HashMap<(String, Protocol), Arc<Backend>>>,
}

// === impl Backend ===

impl Backend {
    fn new(name: String, protocol: Protocol) -> Self {
        Self {
            name,
            protocol,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            in_flight: AtomicI64::new(0),
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

    /// Requests in flight on this backend.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight_add(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Current endpoints.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Power of two choices on in-flight requests; `avoid` (a failed
    /// endpoint) is skipped when there is another.
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
                Some(if b.in_flight() < a.in_flight() { b } else { a }.clone())
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
                None => Arc::new(Endpoint::new(addr.clone(), self.protocol)),
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
    /// Makes the registry match `table` and returns its backends indexed
    /// like [`CompiledTable::backends`].
    pub fn sync(&self, table: &CompiledTable) -> Box<[Arc<Backend>]> {
        let mut backends = match self.backends.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = HashMap::with_capacity(table.backends().len());
        let mut indexed = Vec::with_capacity(table.backends().len());
        for compiled in table.backends() {
            let key = (compiled.name.clone(), compiled.protocol);
            let backend = backends.remove(&key).unwrap_or_else(|| {
                Arc::new(Backend::new(compiled.name.clone(), compiled.protocol))
            });
            backend.set_endpoints(&compiled.endpoints);
            if compiled.drain.is_some() {
                // TODO(#4): track draining state, deadlines and completion.
                for endpoint in backend.endpoints().iter() {
                    endpoint.close_idle();
                }
            }
            indexed.push(backend.clone());
            next.insert(key, backend);
        }
        for (_, left) in backends.drain() {
            left.retire();
        }
        *backends = next;
        indexed.into_boxed_slice()
    }
}
