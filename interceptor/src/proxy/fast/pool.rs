//! Idle connections to this site's instances, kept by each data-plane thread for the fast
//! path's next request (as nginx's upstream `keepalive`): a workload connection takes one for
//! a request and gives it back once the answer was read whole, so an idle workload connection
//! holds none, and one connection to the instance serves the requests of many. Each thread
//! keeps its own: a socket is served by the thread whose runtime registered it, and taking one
//! or giving it back is a pop or a push on that thread, under no lock.
use std::{
    cell::RefCell,
    collections::VecDeque,
    io::ErrorKind,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::net::TcpStream;

/// The most idle connections one thread keeps to one instance; past it, the one idle longest
/// is closed.
const MOST_IDLE: usize = 256;
/// How long a connection is kept after the request that last used it started (hyper's pool's
/// default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often each thread closes its kept connections that the instance closed or that were
/// idle too long (`sweep`), which would otherwise stay open (in CLOSE_WAIT, for one the
/// instance closed) until the thread next takes or gives back one to the same instance.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

struct Idle {
    stream: TcpStream,
    /// `IDLE_TIMEOUT` after the request that last used it started: computed once when it is
    /// given back, so that the check when it is taken is a comparison.
    expires: Instant,
}

impl Idle {
    /// Whether it has been kept past `IDLE_TIMEOUT` at `now`.
    fn too_long_at(&self, now: Instant) -> bool {
        now > self.expires
    }
}

thread_local! {
    /// Per instance address, its idle connections, the one given back last at the back.
    static IDLE: RefCell<Vec<(SocketAddr, VecDeque<Idle>)>> = const { RefCell::new(Vec::new()) };
}

/// The connection to `instance` given back last that is still open, for a request that
/// starts `now`, if any: those found closed meanwhile, or idle too long, are dropped.
pub fn take(instance: SocketAddr, now: Instant) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|idle| {
        let (_, kept) = idle.iter_mut().find(|(address, _)| *address == instance)?;
        while let Some(idle) = kept.pop_back() {
            if idle.too_long_at(now) {
                // The others were given back before it: they have been idle as long.
                kept.clear();
                return None;
            }
            if still_open(&idle.stream) {
                return Some(idle.stream);
            }
        }
        None
    })
}

/// Keeps `stream`, whose last answer was read whole and which the instance keeps alive, for
/// the next request to `instance` on this thread; `used`: when its last request started.
pub fn give_back(instance: SocketAddr, stream: TcpStream, used: Instant) {
    IDLE.with_borrow_mut(|idle| {
        let at = match idle.iter().position(|(address, _)| *address == instance) {
            Some(at) => at,
            None => {
                idle.push((instance, VecDeque::new()));
                idle.len() - 1
            }
        };
        let kept = &mut idle[at].1;
        while kept
            .front()
            .is_some_and(|oldest| kept.len() >= MOST_IDLE || oldest.too_long_at(used))
        {
            kept.pop_front();
        }
        let expires = used + IDLE_TIMEOUT;
        kept.push_back(Idle { stream, expires });
    })
}

/// Closes this thread's kept connections that the instance closed, or that were idle too long
/// at `now`.
fn sweep(now: Instant) {
    IDLE.with_borrow_mut(|idle| {
        for (_, kept) in idle.iter_mut() {
            kept.retain(|idle| !idle.too_long_at(now) && still_open(&idle.stream));
        }
    })
}

/// Sweeps the kept connections of the thread whose runtime runs it, every `SWEEP_EVERY`, for as
/// long as that runtime runs.
pub async fn sweep_regularly() {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        sweep(Instant::now());
    }
}

/// Whether a kept connection to the instance can carry a request: the instance did not close
/// it nor send anything since. Looked at without a system call while nothing came (`try_read`
/// reads only once the runtime saw the socket readable), and without leaving a waker with it.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(error) if error.kind() == ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// A connection to `listener`, and the listener's side of it.
    async fn connected(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let near = TcpStream::connect(listener.local_addr().unwrap());
        let (near, far) = tokio::join!(near, listener.accept());
        (near.unwrap(), far.unwrap().0)
    }

    #[tokio::test]
    async fn the_connection_given_back_last_is_taken_first_and_each_only_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let instance = listener.local_addr().unwrap();
        let (first, _first_far) = connected(&listener).await;
        let (second, _second_far) = connected(&listener).await;
        let (first_address, second_address) =
            (first.local_addr().unwrap(), second.local_addr().unwrap());
        let now = Instant::now();
        give_back(instance, first, now);
        give_back(instance, second, now);
        assert_eq!(
            take(instance, now).unwrap().local_addr().unwrap(),
            second_address
        );
        assert_eq!(
            take(instance, now).unwrap().local_addr().unwrap(),
            first_address
        );
        assert!(take(instance, now).is_none());
        let elsewhere = "127.0.0.1:9".parse().unwrap();
        assert!(take(elsewhere, now).is_none());
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_or_wrote_to_while_idle_is_not_taken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let instance = listener.local_addr().unwrap();
        let (open, _open_far) = connected(&listener).await;
        let (closed, closed_far) = connected(&listener).await;
        let (written, mut written_far) = connected(&listener).await;
        let open_address = open.local_addr().unwrap();
        let now = Instant::now();
        give_back(instance, open, now);
        give_back(instance, closed, now);
        give_back(instance, written, now);
        drop(closed_far);
        written_far
            .write_all(b"HTTP/1.1 408\r\n\r\n")
            .await
            .unwrap();
        // The reactor sees the close and the bytes on its next turn.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        assert_eq!(
            take(instance, now).unwrap().local_addr().unwrap(),
            open_address
        );
        assert!(take(instance, now).is_none());
    }

    #[tokio::test]
    async fn connections_past_the_most_kept_or_idle_too_long_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let instance = listener.local_addr().unwrap();
        let start = Instant::now();
        let (stale, _stale_far) = connected(&listener).await;
        give_back(instance, stale, start);
        let later = start + IDLE_TIMEOUT + Duration::from_secs(1);
        let (fresh, _fresh_far) = connected(&listener).await;
        let fresh_address = fresh.local_addr().unwrap();
        give_back(instance, fresh, later);
        assert_eq!(
            take(instance, later).unwrap().local_addr().unwrap(),
            fresh_address
        );
        assert!(
            take(instance, later).is_none(),
            "one idle too long was kept"
        );

        // Found idle too long when a request would take it, with none given back since.
        let (forgotten, _forgotten_far) = connected(&listener).await;
        give_back(instance, forgotten, start);
        assert!(
            take(instance, later).is_none(),
            "one idle too long was taken"
        );
        assert!(
            take(instance, start).is_none(),
            "one idle too long was kept"
        );

        let mut far_ends = Vec::new();
        let mut first = None;
        for _ in 0..MOST_IDLE + 1 {
            let (near, far) = connected(&listener).await;
            first.get_or_insert_with(|| near.local_addr().unwrap());
            far_ends.push(far);
            give_back(instance, near, start);
        }
        let mut taken = Vec::new();
        while let Some(stream) = take(instance, start) {
            taken.push(stream);
        }
        assert_eq!(taken.len(), MOST_IDLE);
        // The one given back first, idle longest, was closed.
        assert!(taken
            .iter()
            .all(|t| t.local_addr().unwrap() != first.unwrap()));
    }

    #[tokio::test]
    async fn a_sweep_closes_kept_connections_the_instance_closed_or_idle_too_long() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let instance = listener.local_addr().unwrap();
        let (open, mut open_far) = connected(&listener).await;
        let (closed, closed_far) = connected(&listener).await;
        let open_address = open.local_addr().unwrap();
        let now = Instant::now();
        give_back(instance, open, now);
        give_back(instance, closed, now);
        drop(closed_far);
        // The reactor sees the close on its next turn.
        tokio::time::sleep(Duration::from_millis(50)).await;
        sweep(now);
        let kept = |instance| {
            IDLE.with_borrow(|idle| {
                let found = idle.iter().find(|(address, _)| *address == instance);
                found.map_or(0, |(_, kept)| kept.len())
            })
        };
        assert_eq!(kept(instance), 1, "the one the instance closed was kept");
        let open = take(instance, now).unwrap();
        assert_eq!(open.local_addr().unwrap(), open_address);
        give_back(instance, open, now);

        // The open one is kept until it was idle too long, then closed.
        sweep(now + IDLE_TIMEOUT);
        assert_eq!(
            kept(instance),
            1,
            "one idle for no longer than allowed was closed"
        );
        sweep(now + IDLE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(kept(instance), 0, "one idle too long was kept");
        let mut byte = [0u8; 1];
        assert_eq!(open_far.read(&mut byte).await.unwrap(), 0, "still open");
    }
}
