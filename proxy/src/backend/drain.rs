//! Per-backend drain: state, deadline and cutting what is still running.
//!
//! Draining is declared in the table. The first table that marks a backend
//! `drain` starts its clock; from then on the backend gets no new requests
//! (soft mode: except cohorts already on it, until the deadline). It becomes
//! `drained` when nothing runs on it any more. At the deadline, whatever
//! still runs is cut: its upstream connections and tunnels are aborted, so
//! HTTP/1.1 responses end early, HTTP/2 streams are reset and tunnels close;
//! each cut is counted.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use switchyard_config::spec::{DrainMode, DrainSpec};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::Backend;

/// Drain bookkeeping of one backend.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    phase: Mutex<Phase>,
    /// Mirrors `Phase::Draining`, so the request path (every time in-flight
    /// work reaches zero) checks a flag instead of taking the lock.
    draining: AtomicBool,
    tunnels: Mutex<Vec<AbortHandle>>,
    open_tunnels: AtomicI64,
    cut_requests: AtomicU64,
    cut_tunnels: AtomicU64,
}

#[derive(Debug, Default)]
enum Phase {
    #[default]
    Active,
    Draining {
        spec: DrainSpec,
        since: SystemTime,
        deadline: Instant,
        timer: Option<AbortHandle>,
    },
    Drained {
        spec: DrainSpec,
        since: SystemTime,
        at: SystemTime,
    },
}

/// What `GET /backends` shows of a backend's drain.
#[derive(Debug, Clone, Serialize)]
pub struct DrainStatus {
    /// `active`, `draining` or `drained`.
    pub state: &'static str,
    /// Drain mode when draining or drained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<DrainMode>,
    /// Unix time (seconds) the drain began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<f64>,
    /// Seconds left before what still runs is cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_in_seconds: Option<f64>,
    /// Unix time (seconds) nothing ran on it any more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained_at: Option<f64>,
    /// Open tunnels (WebSockets and other upgrades).
    pub open_tunnels: i64,
    /// Requests cut at a drain deadline, all time.
    pub cut_requests: u64,
    /// Tunnels cut at a drain deadline, all time.
    pub cut_tunnels: u64,
}

// === impl Backend (drain) ===

impl Backend {
    /// Applies the table's drain instruction (or its absence) to this backend.
    pub(crate) fn set_drain(self: &Arc<Self>, spec: Option<&DrainSpec>) {
        let mut phase = lock(&self.drain.phase);
        match (spec, &*phase) {
            (None, Phase::Active) => {}
            (None, _) => {
                if let Phase::Draining {
                    timer: Some(timer), ..
                } = &*phase
                {
                    timer.abort();
                }
                *phase = Phase::Active;
                self.drain.draining.store(false, Ordering::Release);
            }
            // The same instruction again: the clock keeps running.
            (
                Some(spec),
                Phase::Draining { spec: current, .. } | Phase::Drained { spec: current, .. },
            ) if current == spec => {}
            (Some(spec), _) => {
                if let Phase::Draining {
                    timer: Some(timer), ..
                } = &*phase
                {
                    timer.abort();
                }
                let deadline = Instant::now() + spec.deadline.get();
                let timer = tokio::runtime::Handle::try_current().ok().map(|runtime| {
                    let backend = Arc::downgrade(self);
                    runtime
                        .spawn(async move {
                            tokio::time::sleep_until(deadline).await;
                            if let Some(backend) = backend.upgrade() {
                                backend.cut();
                                // Soft drains with nothing left running end here.
                                backend.check_drained();
                            }
                        })
                        .abort_handle()
                });
                self.drain.draining.store(true, Ordering::Release);
                *phase = Phase::Draining {
                    spec: spec.clone(),
                    since: SystemTime::now(),
                    deadline,
                    timer,
                };
                drop(phase);
                for endpoint in self.endpoints().iter() {
                    endpoint.close_idle();
                }
                self.check_drained();
            }
        }
    }

    /// Whether the backend takes no new requests.
    pub fn is_draining(&self) -> bool {
        !matches!(*lock(&self.drain.phase), Phase::Active)
    }

    /// Whether a sticky cohort already on this backend may still use it
    /// (soft drain, before the deadline).
    pub fn soft_drain_open(&self) -> bool {
        match &*lock(&self.drain.phase) {
            Phase::Draining { spec, deadline, .. } => {
                spec.mode == DrainMode::Soft && Instant::now() < *deadline
            }
            _ => false,
        }
    }

    /// Marks the backend drained once nothing runs on it.
    pub(crate) fn check_drained(&self) {
        if !self.drain.draining.load(Ordering::Acquire) || self.in_flight() > 0 {
            return;
        }
        let mut phase = lock(&self.drain.phase);
        if let Phase::Draining {
            spec,
            since,
            timer,
            deadline,
        } = &*phase
        {
            // A soft drain keeps serving its sticky cohorts until the deadline.
            if spec.mode == DrainMode::Soft && Instant::now() < *deadline {
                return;
            }
            if let Some(timer) = timer {
                timer.abort();
            }
            tracing::info!(backend = self.name(), "backend drained");
            self.drain.draining.store(false, Ordering::Release);
            *phase = Phase::Drained {
                spec: spec.clone(),
                since: *since,
                at: SystemTime::now(),
            };
        }
    }

    /// Registers a tunnel so the drain deadline (or a weight drop) can close it.
    pub(crate) fn track_tunnel(&self, tunnel: AbortHandle) {
        let mut tunnels = lock(&self.drain.tunnels);
        tunnels.retain(|t| !t.is_finished());
        tunnels.push(tunnel);
    }

    /// Counts a tunnel as open until the guard drops. Taken before the
    /// tunnel's task is spawned, not in it: a shutdown that finds no open
    /// tunnel closes the tracked ones at once, so a tunnel whose task had
    /// not run yet would lose its grace period.
    pub(crate) fn tunnel_opened(self: &Arc<Self>) -> TunnelGuard {
        self.drain.open_tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelGuard {
            backend: self.clone(),
        }
    }

    /// Open tunnels on this backend.
    pub fn open_tunnels(&self) -> i64 {
        self.drain.open_tunnels.load(Ordering::Relaxed)
    }

    /// Closes up to `count` open tunnels, spread over `window` (used when
    /// the backend's share falls); returns how many it will close.
    pub(crate) fn close_tunnels_gradually(
        self: &Arc<Self>,
        count: usize,
        window: Duration,
    ) -> usize {
        let chosen: Vec<AbortHandle> = {
            let mut tunnels = lock(&self.drain.tunnels);
            tunnels.retain(|t| !t.is_finished());
            let count = count.min(tunnels.len());
            tunnels.drain(..count).collect()
        };
        if chosen.is_empty() {
            return 0;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return 0;
        };
        let total = chosen.len();
        let step = window / total as u32;
        let backend = self.clone();
        runtime.spawn(async move {
            for tunnel in chosen {
                tokio::time::sleep(step).await;
                if !tunnel.is_finished() {
                    tunnel.abort();
                    backend.drain.cut_tunnels.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        total
    }

    /// Closes every tunnel at once.
    pub(crate) fn close_tunnels_now(&self) {
        for tunnel in lock(&self.drain.tunnels).drain(..) {
            tunnel.abort();
        }
    }

    /// At the deadline: abort the upstream connections and tunnels of
    /// whatever still runs, and count it.
    fn cut(&self) {
        let tunnels: Vec<AbortHandle> = lock(&self.drain.tunnels).drain(..).collect();
        let open_tunnels = tunnels.iter().filter(|t| !t.is_finished()).count() as u64;
        let requests = (self.in_flight() - self.open_tunnels()).max(0) as u64;
        for tunnel in tunnels {
            tunnel.abort();
        }
        for endpoint in self.endpoints().iter() {
            endpoint.abort_connections();
        }
        self.drain
            .cut_requests
            .fetch_add(requests, Ordering::Relaxed);
        self.drain
            .cut_tunnels
            .fetch_add(open_tunnels, Ordering::Relaxed);
        if requests + open_tunnels > 0 {
            tracing::warn!(
                backend = self.name(),
                requests,
                tunnels = open_tunnels,
                "drain deadline passed; cut what was still running"
            );
        }
    }

    /// The drain part of `GET /backends`.
    pub fn drain_status(&self) -> DrainStatus {
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let mut status = DrainStatus {
            state: "active",
            mode: None,
            draining_since: None,
            deadline_in_seconds: None,
            drained_at: None,
            open_tunnels: self.open_tunnels(),
            cut_requests: self.drain.cut_requests.load(Ordering::Relaxed),
            cut_tunnels: self.drain.cut_tunnels.load(Ordering::Relaxed),
        };
        match &*lock(&self.drain.phase) {
            Phase::Active => {}
            Phase::Draining {
                spec,
                since,
                deadline,
                ..
            } => {
                status.state = "draining";
                status.mode = Some(spec.mode);
                status.draining_since = Some(unix(*since));
                status.deadline_in_seconds = Some(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64(),
                );
            }
            Phase::Drained { spec, since, at } => {
                status.state = "drained";
                status.mode = Some(spec.mode);
                status.draining_since = Some(unix(*since));
                status.drained_at = Some(unix(*at));
            }
        }
        status
    }
}

/// Counts a tunnel as open while it lives.
#[derive(Debug)]
pub(crate) struct TunnelGuard {
    backend: Arc<Backend>,
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.backend
            .drain
            .open_tunnels
            .fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::spec::Protocol;

    #[test]
    fn a_tunnel_counts_as_open_from_its_guard_until_the_guard_drops() {
        let backend = Arc::new(Backend::new("green".to_owned(), Protocol::Http1, None));
        // Counted as soon as the guard exists, before a task that will hold
        // it is spawned, let alone run: the count a shutdown checks.
        let first = backend.tunnel_opened();
        let second = backend.tunnel_opened();
        assert_eq!(backend.open_tunnels(), 2);
        drop(first);
        assert_eq!(backend.open_tunnels(), 1);
        drop(second);
        assert_eq!(backend.open_tunnels(), 0);
    }
}
