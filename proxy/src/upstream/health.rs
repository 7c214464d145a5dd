//! Passive health of an endpoint: one that could not be connected to (a
//! refused or timed-out connect, a failed TLS handshake) is passed over by
//! the endpoint pick for a while, as nginx does after `max_fails` (1 by
//! default) for `fail_timeout`. The first failure passes it over for the
//! base time; a failure of the first try after that time doubles it, up to
//! [`MAX_EJECTION`]; a connection that opens clears it. Failures while the
//! endpoint is passed over (connects that started before, all failing at
//! once when a server dies) change nothing. When the time is up, real
//! requests probe the endpoint again: a failed connect is always retried
//! on another endpoint, so probing loses nothing.
//!
//! Failures after a connection opened (timeouts, resets, bad responses)
//! do not count: they say more about one request than about the endpoint.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest an endpoint is passed over, however many failures in a row.
pub(crate) const MAX_EJECTION: Duration = Duration::from_secs(30);

/// An endpoint's connect failures, and until when it is passed over.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Connect failures since a connection last opened.
    failures: AtomicU32,
    /// Times in a row the endpoint was passed over: the backoff's exponent.
    ejections: AtomicU32,
    /// Milliseconds since [`now_ms`]'s epoch; 0 when the endpoint is not
    /// passed over (so the common check reads one atomic and no clock).
    ejected_until_ms: AtomicU64,
}

impl Health {
    /// Whether the endpoint pick should pass this endpoint over now.
    pub(crate) fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Connect failures since a connection last opened.
    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// A connect failed: returns for how long the endpoint is now passed
    /// over, or zero when this failure changed nothing (already passed
    /// over, or `base` zero: passive health off).
    pub(crate) fn connect_failed(&self, base: Duration) -> Duration {
        self.connect_failed_at(now_ms(), base)
    }

    fn connect_failed_at(&self, now: u64, base: Duration) -> Duration {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if base.is_zero() || (until != 0 && now < until) {
            return Duration::ZERO;
        }
        let earlier = self.ejections.load(Ordering::Relaxed);
        let ejection = base
            .saturating_mul(1 << earlier.min(16))
            .min(MAX_EJECTION.max(base));
        let next = now.saturating_add(millis(ejection)).max(1);
        // One of several failures at the same moment ejects (and counts).
        if self
            .ejected_until_ms
            .compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Duration::ZERO;
        }
        self.ejections.fetch_add(1, Ordering::Relaxed);
        ejection
    }

    /// A connection opened: the endpoint is healthy again.
    pub(crate) fn connected(&self) {
        // Read first: written only after a failure, so the cache line stays
        // shared between threads while all is well.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    fn is_ejected_at(&self, now: u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now < until
    }
}

/// Milliseconds since the first call in this process.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    millis(EPOCH.get_or_init(Instant::now).elapsed())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Fails a connect at `now` (ms), and again each time the ejection ends.
    fn fail_on_every_probe(health: &Health, mut now: u64, times: usize) -> Vec<u64> {
        (0..times)
            .map(|_| {
                let ejection = health.connect_failed_at(now, SECOND).as_secs();
                assert!(health.is_ejected_at(now));
                now += ejection * 1000;
                assert!(!health.is_ejected_at(now), "over after {ejection} s");
                ejection
            })
            .collect()
    }

    #[test]
    fn failed_probes_double_the_ejection_up_to_its_cap() {
        let health = Health::default();
        assert!(!health.is_ejected_at(5));
        assert_eq!(
            fail_on_every_probe(&health, 5, 8),
            [1, 2, 4, 8, 16, 30, 30, 30]
        );
        assert_eq!(health.failures(), 8);
        health.connected();
        assert!(!health.is_ejected_at(5));
        assert_eq!(health.failures(), 0);
        assert_eq!(fail_on_every_probe(&health, 500_000, 2), [1, 2]);
    }

    #[test]
    fn failures_while_passed_over_change_nothing() {
        // A server dies under many connects: they all fail at once.
        let health = Health::default();
        assert_eq!(health.connect_failed_at(10, SECOND), SECOND);
        for now in [10, 10, 500, 1009] {
            assert_eq!(health.connect_failed_at(now, SECOND), Duration::ZERO);
        }
        assert!(!health.is_ejected_at(1010));
        assert_eq!(health.failures(), 5);
        // The first probe after the ejection fails: twice as long.
        assert_eq!(health.connect_failed_at(1010, SECOND), 2 * SECOND);
    }

    #[test]
    fn a_zero_base_never_ejects_and_a_long_base_is_not_capped_below_itself() {
        let off = Health::default();
        assert_eq!(off.connect_failed(Duration::ZERO), Duration::ZERO);
        assert!(!off.is_ejected());
        assert_eq!(off.failures(), 1);
        let long = Health::default();
        let hour = Duration::from_secs(3600);
        assert_eq!(long.connect_failed_at(0, hour), hour);
        assert_eq!(long.connect_failed_at(3_600_000, hour), hour);
    }
}
