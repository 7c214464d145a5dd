//! A future that is polled only after its own waker fired.
//!
//! `tokio::select!` polls every branch whenever the task wakes. A serving
//! connection's task wakes several times per request for its sockets, and
//! each time it also polled the shutdown watch and the abort notification,
//! both of which take a mutex on every poll (the watch's is shared by every
//! connection of the process): about 1,100 instructions per HTTP/1.1
//! request, by callgrind. Wrapped in [`Dormant`], they are polled only when
//! something woke them; otherwise a poll costs an uncontended lock and a
//! flag.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Polls `F` on the first poll and then only after `F`'s waker fired.
pub(crate) struct Dormant<F> {
    future: Pin<Box<F>>,
    signal: Arc<Signal>,
    /// The waker `F` is polled with: it marks `signal` and wakes the task.
    waker: Waker,
}

/// Whether the inner future was woken, and the task to wake then.
struct Signal {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl<F: Future> Dormant<F> {
    pub(crate) fn new(future: F) -> Self {
        let signal = Arc::new(Signal {
            // Polled once at first, so the inner future registers itself.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Self {
            future: Box::pin(future),
            waker: Waker::from(signal.clone()),
            signal,
        }
    }
}

impl<F: Future> Future for Dormant<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // The task's waker is stored before the flag is read: a wake in
        // between either sets the flag first or finds this waker.
        {
            let mut task = this
                .signal
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // Woken outside the lock: the task may poll at once, on this thread.
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls and keeps the last waker; ready once `done`.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        waker: Mutex<Option<Waker>>,
        done: AtomicBool,
    }

    struct Probed(Arc<Probe>);

    impl Future for Probed {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.0.done.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn polls_the_inner_future_only_once_woken_and_wakes_the_task() {
        let probe = Arc::new(Probe::default());
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut dormant = Box::pin(Dormant::new(Probed(probe.clone())));

        for _ in 0..5 {
            assert!(dormant.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            probe.polls.load(Ordering::SeqCst),
            1,
            "polled once to register"
        );

        // The inner future's waker fires (a notification): the task wakes
        // and the next poll reaches the inner future.
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "task woken");
        assert!(dormant.as_mut().poll(&mut cx).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);

        probe.done.store(true, Ordering::SeqCst);
        assert!(dormant.as_mut().poll(&mut cx).is_pending(), "not woken yet");
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert!(dormant.as_mut().poll(&mut cx).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 3);
    }
}
