//! A timer kept for one purpose (a connection's wait for a request's head, a thread's waits for
//! the instance's answers), set again for each wait rather than made anew: a timer pushed later
//! stays in the runtime's timer wheel, one atomic operation, while a new one is registered in
//! the wheel and taken out of it again, under the driver's lock, each time (and one set earlier
//! than the driver's next wake-up wakes the driver, a system call). A kept timer is not even
//! pushed later for each wait (`KeptSleep`): it goes off at the deadline of an earlier wait, and
//! only then is it set to the wait's own, once in a span rather than once a wait.
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use tokio::time::Sleep;

type Kept = Arc<Mutex<Vec<Pin<Box<Sleep>>>>>;

/// Timers for one purpose. Each wait takes the one given back last and gives it back when
/// done; a wait that starts while every one is held gets a timer of its own, kept after it.
#[derive(Clone, Default)]
pub struct KeptTimer {
    kept: Kept,
}

/// A wait on a `KeptTimer`, which gives the timer back when dropped. Its timer may be set
/// earlier than `deadline` (for a wait before): when it goes off then, it is set to `deadline`.
pub struct KeptSleep {
    sleep: Option<Pin<Box<Sleep>>>,
    deadline: tokio::time::Instant,
    kept: Kept,
}

impl KeptTimer {
    /// This thread's timers for the waits for the instance's answers, shared by its HTTP/1.1
    /// connections, so that an idle one holds none. Every wait is of the same span, so the
    /// timer a wait takes is always pushed later, never earlier.
    pub fn for_answers_on_this_thread() -> KeptTimer {
        thread_local! {
            static ANSWERS: KeptTimer = KeptTimer::default();
        }
        ANSWERS.with(KeptTimer::clone)
    }

    /// A wait until `deadline`. The timer taken is set again only when it would go off after
    /// `deadline` (a shorter wait than the one before): one set earlier is left as it is.
    pub fn sleep_until(&self, deadline: tokio::time::Instant) -> KeptSleep {
        let taken = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let sleep = match taken {
            Some(mut sleep) => {
                if sleep.deadline() > deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        KeptSleep {
            sleep: Some(sleep),
            deadline,
            kept: self.kept.clone(),
        }
    }

    /// `work`, given up after `limit` (counted from now) when there is one: `Err(limit)` then
    /// (as `tokio::time::timeout`, `work` is polled first).
    pub fn within<F: Future>(&self, limit: Option<Duration>, work: F) -> Within<F> {
        self.within_from(Instant::now(), limit, work)
    }

    /// `work`, given up after `limit` counted from `start` (a time read already: the clock is
    /// not read again), as `within`.
    pub fn within_from<F: Future>(
        &self,
        start: Instant,
        limit: Option<Duration>,
        work: F,
    ) -> Within<F> {
        let start = tokio::time::Instant::from_std(start);
        Within {
            work,
            sleep: limit.map(|limit| (self.sleep_until(start + limit), limit)),
        }
    }
}

pin_project_lite::pin_project! {
    /// What `KeptTimer::within` gives: a future of its own rather than an `async fn`'s, which
    /// would hold `work` twice (as its argument and as the value it pins), in every
    /// connection's task.
    pub struct Within<F> {
        #[pin]
        work: F,
        sleep: Option<(KeptSleep, Duration)>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Duration>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.work.poll(cx) {
            return Poll::Ready(Ok(done));
        }
        match this.sleep {
            Some((sleep, limit)) => Pin::new(sleep).poll(cx).map(|()| Err(*limit)),
            None => Poll::Pending,
        }
    }
}

impl Future for KeptSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let Some(sleep) = &mut self.sleep else {
            return Poll::Ready(());
        };
        loop {
            ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            // Gone off at an earlier wait's deadline: this wait's own is later.
            sleep.as_mut().reset(deadline);
        }
    }
}

impl Drop for KeptSleep {
    fn drop(&mut self) {
        if let Some(sleep) = self.sleep.take() {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            kept.push(sleep);
        }
    }
}

impl hyper::rt::Sleep for KeptSleep {}

impl hyper::rt::Timer for KeptTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.sleep_until(tokio::time::Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(KeptTimer::sleep_until(self, deadline.into()))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<KeptSleep>() {
            Some(kept) => {
                let kept = kept.get_mut();
                kept.deadline = new_deadline.into();
                if let Some(sleep) = &mut kept.sleep {
                    sleep.as_mut().reset(kept.deadline);
                }
            }
            None => *sleep = hyper::rt::Timer::sleep_until(self, new_deadline),
        }
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(30);
    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_kept_timer_bounds_each_wait_by_its_own_deadline() {
        let timer = KeptTimer::default();
        assert_eq!(timer.within(Some(LONG), async { 7 }).await, Ok(7));
        // The timer given back was set for a minute: the next wait is not held to that.
        let started = Instant::now();
        let late = timer.within(Some(SHORT), tokio::time::sleep(LONG)).await;
        assert_eq!(late, Err(SHORT));
        assert!(started.elapsed() >= SHORT, "fired before its deadline");
        let started = Instant::now();
        hyper::rt::Timer::sleep(&timer, SHORT).await;
        assert!(started.elapsed() >= SHORT, "fired before its deadline");
    }

    #[tokio::test]
    async fn a_timer_left_at_an_earlier_deadline_does_not_end_a_later_wait() {
        let timer = KeptTimer::default();
        assert_eq!(timer.within(Some(SHORT), async { 7 }).await, Ok(7));
        // The timer kept goes off at the first wait's deadline, well before this one's.
        let started = Instant::now();
        let work = tokio::time::sleep(SHORT * 3);
        assert_eq!(timer.within(Some(SHORT * 6), work).await, Ok(()));
        let late = timer.within_from(started, Some(SHORT * 4), tokio::time::sleep(LONG));
        assert_eq!(late.await, Err(SHORT * 4));
        assert!(started.elapsed() >= SHORT * 4, "fired before its deadline");
    }

    #[tokio::test]
    async fn a_wait_while_the_timer_is_held_gets_its_own() {
        let timer = KeptTimer::default();
        let now = tokio::time::Instant::now();
        let long = timer.sleep_until(now + LONG);
        timer.sleep_until(now + SHORT).await;
        drop(long);
        let answered = timer.within(Some(SHORT), tokio::time::sleep(LONG)).await;
        assert_eq!(answered, Err(SHORT));
    }
}
