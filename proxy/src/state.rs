//! The current table and the one place that changes it.
//!
//! A [`Snapshot`] holds a compiled table together with the backends it
//! resolves to, so that everything a request needs agrees (one `ArcSwap`,
//! never two stores kept in step). The [`Applier`] is the only writer:
//! validate, compile, sync the registry, publish. A rejected table leaves the
//! current one serving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use switchyard_config::{CompiledTable, InvalidTable, Problem, Version, parse_table};
use tokio::sync::watch;

use crate::backend::{Backend, Registry};
use crate::metrics::{Metrics, TableMetrics};

/// A table and its backends: what one request runs on from start to end.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled table.
    pub table: CompiledTable,
    /// Backends, indexed like `table.backends()`.
    pub backends: Box<[Arc<Backend>]>,
    /// When it was applied.
    pub applied_at: SystemTime,
    /// Where it came from (`file /etc/table.yaml`, `admin`, ...).
    pub origin: String,
    /// Metric handles of this table's (route, backend) pairs.
    pub metrics: TableMetrics,
}

/// Shared proxy state: the current snapshot and the backend registry.
#[derive(Debug)]
pub struct State {
    current: ArcSwapOption<Snapshot>,
    registry: Registry,
    /// Serializes appliers (file watcher, signal, admin API).
    apply_lock: Mutex<()>,
    applied: watch::Sender<Option<Version>>,
    metrics: Metrics,
    /// Set at shutdown: `/ready` fails from then on.
    shutting_down: AtomicBool,
    /// Set by `POST /healthcheck/fail`, cleared by `POST /healthcheck/ok`.
    health_failed: AtomicBool,
    /// The sidecar's local application port: every table gets a route to
    /// `127.0.0.1:PORT` for the inbound listener.
    local_app: Option<u16>,
}

/// The outcome of a successful apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The version now serving.
    pub version: Version,
    /// Whether it differs from the version before.
    pub changed: bool,
    /// Warnings of the table.
    pub warnings: Vec<Problem>,
}

/// Validates, compiles and publishes tables.
#[derive(Debug, Clone)]
pub struct Applier {
    state: Arc<State>,
}

// === impl State ===

impl State {
    /// Empty state: no table yet.
    pub fn new() -> Arc<Self> {
        Self::build(None)
    }

    /// Empty state of a sidecar whose inbound listener serves the local
    /// application on `127.0.0.1:port`.
    pub fn with_local_app(port: u16) -> Arc<Self> {
        Self::build(Some(port))
    }

    fn build(local_app: Option<u16>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwapOption::empty(),
            registry: Registry::default(),
            apply_lock: Mutex::new(()),
            applied: watch::channel(None).0,
            metrics: Metrics::new(),
            shutting_down: AtomicBool::new(false),
            health_failed: AtomicBool::new(false),
            local_app,
        })
    }

    /// The local application's port, in a sidecar with an inbound listener.
    pub fn local_app(&self) -> Option<u16> {
        self.local_app
    }

    /// The current snapshot; a request keeps this `Arc` until it ends.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Why the proxy is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if self.health_failed.load(Ordering::Relaxed) {
            Some("health check failed by POST /healthcheck/fail")
        } else if self.current.load().is_none() {
            Some("no table loaded")
        } else {
            None
        }
    }

    /// Starts shutdown: readiness fails from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Forces readiness to fail (`true`) or restores it (`false`).
    pub fn set_health_failed(&self, failed: bool) {
        self.health_failed.store(failed, Ordering::Relaxed);
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The backend registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Notified with each newly applied version.
    pub fn subscribe(&self) -> watch::Receiver<Option<Version>> {
        self.applied.subscribe()
    }
}

// === impl Applier ===

impl Applier {
    /// The applier of `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// The state it writes.
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Parses, validates, compiles and publishes `bytes`. On any error the
    /// current table keeps serving and every problem is returned.
    pub fn apply(&self, bytes: &[u8], origin: &str) -> Result<Applied, InvalidTable> {
        let result = self.apply_counted(bytes, origin);
        self.state.metrics.count_apply(result.is_ok());
        result
    }

    fn apply_counted(&self, bytes: &[u8], origin: &str) -> Result<Applied, InvalidTable> {
        let table = parse_table(bytes)?;
        let _one_at_a_time = match self.state.apply_lock.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let warnings = table.warnings().to_vec();
        let version = table.version().clone();
        if let Some(current) = self.state.current.load().as_ref()
            && *current.table.version() == version
        {
            return Ok(Applied {
                version,
                changed: false,
                warnings,
            });
        }
        let mut compiled = CompiledTable::compile(table)?;
        if let Some(port) = self.state.local_app {
            compiled = compiled.with_local_app(port);
        }
        let backends = self.state.registry.sync(&compiled)?;
        let metrics = self.state.metrics.for_table(&compiled);
        self.state.current.store(Some(Arc::new(Snapshot {
            table: compiled,
            backends,
            applied_at: SystemTime::now(),
            origin: origin.to_owned(),
            metrics,
        })));
        self.state.applied.send_replace(Some(version.clone()));
        Ok(Applied {
            version,
            changed: true,
            warnings,
        })
    }

    /// [`Applier::apply`] with the outcome logged.
    pub fn apply_logged(&self, bytes: &[u8], origin: &str) -> Result<Applied, InvalidTable> {
        let result = self.apply(bytes, origin);
        match &result {
            Ok(applied) if applied.changed => {
                tracing::info!(version = %applied.version, origin, "table applied");
                for warning in &applied.warnings {
                    tracing::warn!(origin, %warning, "table warning");
                }
            }
            Ok(applied) => {
                tracing::debug!(version = %applied.version, origin, "table unchanged")
            }
            Err(invalid) => {
                for problem in &invalid.problems {
                    tracing::error!(origin, %problem, "table rejected; the last good table keeps serving");
                }
            }
        }
        result
    }
}

/// Completes once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here so callers
    // can select on this in spawned tasks.
    let _ = stop.wait_for(|stop| *stop).await;
}
