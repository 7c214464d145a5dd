//! HTTP/2 streams run inside their connection's task.
//!
//! hyper hands every HTTP/2 stream (its request handler and response body)
//! to an executor. With tokio's, each stream is a task of its own: an
//! allocation in tokio's 128-byte-aligned task cells (mimalloc's slow
//! path for aligned memory), a trip through the scheduler's queue, and a
//! wake-up of the connection's task for every frame the stream queues.
//! [`StreamSet`] is an executor that instead keeps a connection's streams
//! in that connection's task, polled by [`WithStreams`] next to the
//! connection itself: the way Envoy and nginx bind a connection, streams
//! included, to one worker.
//!
//! What this changes: one HTTP/2 connection's streams share one thread (a
//! multi-threaded runtime still spreads connections over its workers), and
//! when the connection's future ends, streams still running end with it
//! (the client is gone, or hyper already closed every stream).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor hyper is given for one HTTP/2 connection: what it
/// executes is queued for that connection's [`WithStreams`] to run.
/// Clones share the queue (hyper keeps one in every stream, for upgrades).
#[derive(Clone, Default)]
pub(crate) struct StreamSet {
    queue: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    new: Vec<Stream>,
    /// The connection's task, stored only while it waits: hyper queues
    /// streams while that task polls the connection, and it then picks
    /// them up without waking itself.
    waiting: Option<Waker>,
}

impl std::fmt::Debug for StreamSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSet")
            .field("queued", &self.queue().new.len())
            .finish()
    }
}

impl StreamSet {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock was held left a vector and a waker, both
        // still whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the queued streams to `running`; with none queued, keeps
    /// `waker` to wake when one is, and answers `false`.
    fn take_new(&self, running: &mut FuturesUnordered<Stream>, waker: &Waker) -> bool {
        let mut queue = self.queue();
        if queue.new.is_empty() {
            queue.waiting = Some(waker.clone());
            return false;
        }
        queue.waiting = None;
        running.extend(queue.new.drain(..));
        true
    }
}

impl<F> hyper::rt::Executor<F> for StreamSet
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let mut queue = self.queue();
        queue.new.push(Box::pin(stream));
        if let Some(waker) = queue.waiting.take() {
            waker.wake();
        }
    }
}

/// A connection future and the streams its [`StreamSet`] was given:
/// polling this polls both, and it ends when the connection does.
pub(crate) struct WithStreams<C> {
    connection: Pin<Box<C>>,
    streams: StreamSet,
    running: FuturesUnordered<Stream>,
}

impl<C> WithStreams<C> {
    pub(crate) fn new(connection: C, streams: StreamSet) -> Self {
        Self {
            connection: Box::pin(connection),
            streams,
            running: FuturesUnordered::new(),
        }
    }

    /// The connection itself (to ask it to close gracefully).
    pub(crate) fn connection(&mut self) -> Pin<&mut C> {
        self.connection.as_mut()
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        // The connection first: it reads frames and queues new streams,
        // which then run in this same poll.
        if let Poll::Ready(ended) = this.connection.as_mut().poll(cx) {
            return Poll::Ready(ended);
        }
        loop {
            // Runs every stream that was woken until none is ready; a
            // stream that queues frames wakes this task through the
            // connection's waker, so the connection sends them next poll.
            while let Poll::Ready(Some(())) = this.running.poll_next_unpin(cx) {}
            // A stream may have queued another (an upgrade's tunnel).
            if !this.streams.take_new(&mut this.running, cx.waker()) {
                return Poll::Pending;
            }
        }
    }
}

impl<C> std::fmt::Debug for WithStreams<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithStreams")
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A stream queued while the connection's task waits wakes that task
    /// and runs at its next poll; the set ends with the connection, not
    /// with its streams.
    #[test]
    fn queued_streams_run_in_the_connection_task() {
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let ran = Arc::new(AtomicUsize::new(0));
        let set = StreamSet::default();
        let (end_tx, mut end_rx) = tokio::sync::oneshot::channel::<()>();
        let connection = std::future::poll_fn(move |cx| Pin::new(&mut end_rx).poll(cx).map(|_| ()));
        let mut with = Box::pin(WithStreams::new(connection, set.clone()));

        assert!(with.as_mut().poll(&mut cx).is_pending());
        for _ in 0..3 {
            let ran = ran.clone();
            set.execute(async move {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        // Woken once (the waker is taken), not yet run.
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert!(with.as_mut().poll(&mut cx).is_pending());
        assert_eq!(ran.load(Ordering::SeqCst), 3);

        // A stream that never finishes does not hold the connection open.
        set.execute(std::future::pending::<()>());
        assert!(with.as_mut().poll(&mut cx).is_pending());
        end_tx.send(()).expect("the connection is still waiting");
        assert!(with.as_mut().poll(&mut cx).is_ready());
    }
}
