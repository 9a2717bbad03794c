//! Where hyper's HTTP/2 client runs what it spawns (the connection, and per call a future that
//! sends it and one that pipes its body when not all of it is there): inside the connection's
//! own task, beside it, rather than each in a tokio task of its own (a task made, scheduled
//! and freed, per call).
use std::{
    future::{poll_fn, Future},
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::{
    future::FusedFuture, stream::FuturesUnordered, task::AtomicWaker, FutureExt, StreamExt,
};

type Given = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How many times one poll of the task goes round the connection and what runs beside it
/// while they wake one another, before it lets the thread's other tasks run.
const ROUNDS_PER_POLL: usize = 4;

/// The executor given to hyper's HTTP/2 client: what hyper gives it waits for `drive` to run
/// it.
#[derive(Clone, Default)]
pub(super) struct InConnectionTask {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    given: Mutex<Vec<Given>>,
    task: AtomicWaker,
    /// Whether the connection was woken since it was last polled: what runs beside it and
    /// wakes alone (the HTTP/2 connection's own work, a call's sending) leaves it unpolled, as
    /// each poll of hyper's client connection goes through its queue of calls and the state
    /// of its streams.
    connection_woken: AtomicBool,
}

/// The connection's waker.
impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.connection_woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for InConnectionTask {
    fn execute(&self, future: F) {
        self.shared
            .given
            .lock()
            .expect("never poisoned")
            .push(Box::pin(future));
        self.shared.task.wake();
    }
}

impl InConnectionTask {
    /// Runs `connection` and what hyper gives this executor, until all are done; each is
    /// polled when it was woken only.
    pub(super) async fn drive(self, connection: impl Future<Output = ()>) {
        let shared = &*self.shared;
        let connection_waker = Waker::from(self.shared.clone());
        let mut connection = pin!(connection.fuse());
        let mut running = FuturesUnordered::new();
        shared.connection_woken.store(true, Ordering::Relaxed);
        poll_fn(|cx| {
            shared.task.register(cx.waker());
            for _ in 0..ROUNDS_PER_POLL {
                let woken = shared.connection_woken.swap(false, Ordering::Acquire);
                if woken && !connection.is_terminated() {
                    let _ = connection
                        .as_mut()
                        .poll(&mut Context::from_waker(&connection_waker));
                }
                // What polling gives (a call's sending, then its body's piping) is
                // polled at once.
                // Drained, not taken: the list keeps its room for the next call's.
                running.extend(shared.given.lock().expect("never poisoned").drain(..));
                while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
                let given = !shared.given.lock().expect("never poisoned").is_empty();
                if !given && !shared.connection_woken.load(Ordering::Acquire) {
                    break;
                }
            }
            if connection.is_terminated() && running.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}
