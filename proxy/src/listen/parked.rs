//! The parked HTTP/1.1 connections of one listener, watched together.
//!
//! A parked connection waits in a task of its own, and everything that task
//! holds is paid for by every idle connection (issue #8). So instead of a
//! timer and a shutdown watch in each parked task (232 bytes of futures,
//! enough to move the task into a larger allocation), the listener keeps
//! one list of them, checks their deadlines once a second and, at
//! shutdown, closes them all. A parked task waits only for its client's
//! next bytes and for its connection's `abort` notification.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use slab::Slab;
use tokio::time::Instant;

use super::connection::ConnectionState;

/// How often the listener looks for parked connections past their
/// deadline: a parked connection closes up to this late. A connection
/// parks only after a second of silence, so its limit is longer than that.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Every parked connection of a listener.
#[derive(Debug, Default)]
pub(crate) struct ParkedConnections {
    lot: Mutex<Lot>,
}

#[derive(Debug, Default)]
struct Lot {
    parked: Slab<Parked>,
    /// Shutdown began: nothing parks any more.
    closing: bool,
}

#[derive(Debug)]
struct Parked {
    connection: Arc<ConnectionState>,
    /// When the connection has been silent for too long; `None` for never.
    deadline: Option<Instant>,
}

impl ParkedConnections {
    /// Registers a parked connection until the returned place is dropped;
    /// `None` when shutdown began and the connection should close instead.
    ///
    /// The connection's `abort` is notified (with `notify_waiters`, so no
    /// permit outlives the parking) at `deadline` and at shutdown: create
    /// the `Notified` future before parking, and it cannot miss either.
    pub(crate) fn park(
        &self,
        connection: &Arc<ConnectionState>,
        deadline: Option<Instant>,
    ) -> Option<ParkingPlace<'_>> {
        let mut lot = self.lot();
        if lot.closing {
            return None;
        }
        let key = lot.parked.insert(Parked {
            connection: connection.clone(),
            deadline,
        });
        Some(ParkingPlace { lot: self, key })
    }

    /// Closes every connection whose deadline has passed.
    pub(crate) fn sweep(&self, now: Instant) {
        let mut lot = self.lot();
        for (_, parked) in &mut lot.parked {
            if parked.deadline.is_some_and(|deadline| deadline <= now) {
                // Notified once: the connection leaves the list as it closes.
                parked.deadline = None;
                parked.connection.abort.notify_waiters();
            }
        }
    }

    /// Shutdown: closes every parked connection, and no more may park.
    pub(crate) fn close_all(&self) {
        let mut lot = self.lot();
        lot.closing = true;
        for (_, parked) in &lot.parked {
            parked.connection.abort.notify_waiters();
        }
    }

    /// Connections parked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lot().parked.len()
    }

    fn lot(&self) -> MutexGuard<'_, Lot> {
        // Nothing panics while holding the lock; if something ever did,
        // the list itself would still be whole.
        self.lot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's place in the list, given up when dropped (the
/// connection resumed or closed).
#[derive(Debug)]
pub(crate) struct ParkingPlace<'a> {
    lot: &'a ParkedConnections,
    key: usize,
}

impl Drop for ParkingPlace<'_> {
    fn drop(&mut self) {
        self.lot.lot().parked.remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Downstream;

    fn connection() -> Arc<ConnectionState> {
        ConnectionState::new(Arc::new(Downstream::default()))
    }

    #[tokio::test]
    async fn a_connection_past_its_deadline_is_aborted_once_and_others_are_not() {
        let parked = ParkedConnections::default();
        let (late, early, forever) = (connection(), connection(), connection());
        let now = Instant::now();
        let late_aborted = late.abort.notified();
        let early_aborted = early.abort.notified();
        let forever_aborted = forever.abort.notified();
        let _late = parked.park(&late, Some(now + Duration::from_secs(10)));
        let _early = parked.park(&early, Some(now + Duration::from_secs(1)));
        let _forever = parked.park(&forever, None);

        parked.sweep(now + Duration::from_secs(2));
        let mut early_aborted = std::pin::pin!(early_aborted);
        let mut late_aborted = std::pin::pin!(late_aborted);
        let mut forever_aborted = std::pin::pin!(forever_aborted);
        assert!(futures_ready(early_aborted.as_mut()));
        assert!(!futures_ready(late_aborted.as_mut()));
        assert!(!futures_ready(forever_aborted.as_mut()));
        assert_eq!(parked.len(), 3, "a connection leaves when it closes");

        // Still in the list until it closes, it is not notified again.
        let early_again = early.abort.notified();
        parked.sweep(now + Duration::from_secs(3));
        assert!(!futures_ready(std::pin::pin!(early_again)));
    }

    #[tokio::test]
    async fn shutdown_aborts_every_parked_connection_and_refuses_new_ones() {
        let parked = ParkedConnections::default();
        let (first, second) = (connection(), connection());
        let first_aborted = first.abort.notified();
        let second_aborted = second.abort.notified();
        let first_place = parked.park(&first, None);
        let second_place = parked.park(&second, Some(Instant::now()));
        parked.close_all();
        assert!(futures_ready(std::pin::pin!(first_aborted)));
        assert!(futures_ready(std::pin::pin!(second_aborted)));
        assert!(parked.park(&connection(), None).is_none());
        drop((first_place, second_place));
        assert_eq!(parked.len(), 0);
    }

    #[tokio::test]
    async fn no_abort_outlives_a_parking() {
        let parked = ParkedConnections::default();
        let resumed = connection();
        let place = parked.park(&resumed, Some(Instant::now()));
        drop(place);
        parked.sweep(Instant::now() + Duration::from_secs(1));
        parked.close_all();
        // Waiting on abort now (the connection serving again) must not
        // see a notification meant for its parking.
        assert!(!futures_ready(std::pin::pin!(resumed.abort.notified())));
    }

    /// Whether `future` is ready on its first poll.
    fn futures_ready<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        future.poll(&mut context).is_ready()
    }
}
