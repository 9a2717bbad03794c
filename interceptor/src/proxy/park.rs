//! Parking: an HTTP/1.1 connection that the fast path served, idle for `proxy.park_idle_after`
//! with nothing read of its next request, leaves its task and tokio's poller (a task and a
//! registration are most of what an idle connection holds) for its thread's parker: its socket
//! in one epoll set per thread, and what resumes it (its workload's parts, its connection slot)
//! in a map by descriptor. Once the socket is readable or hung up, the parker registers it
//! with the runtime again and spawns its task anew, which goes on waiting for the head; the
//! wait that started at its last answer still ends at the same deadline, past which the
//! parker closes it, as the task would have. Freed tasks leave freed memory that glibc keeps;
//! the parker gives it back to the system, at most once a second, after connections parked.
use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    io,
    net::Shutdown,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    pin::pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::Duration,
};

use tokio::{
    io::{unix::AsyncFd, Interest},
    net::TcpStream,
    sync::Notify,
    time::{sleep_until, Instant},
};
use tracing::warn;

/// What resumes a parked connection: given its socket back, registered with this thread's
/// runtime, it spawns the connection's task again.
pub type Resume = Box<dyn FnOnce(TcpStream) + Send>;

/// How long after connections parked the memory their tasks freed is given back, and so how
/// often at most: a trim walks every free chunk of the heap.
const TRIM_AFTER: Duration = Duration::from_secs(1);
/// The readiness events taken from the epoll set at once.
const EVENTS: usize = 64;

struct Parked {
    stream: std::net::TcpStream,
    resume: Resume,
    /// Which parking of its descriptor this is, told apart in `deadlines` from a later one
    /// of the same descriptor (reused once closed).
    turn: u64,
}

#[derive(Default)]
struct Lot {
    parked: HashMap<RawFd, Parked>,
    /// Each parking's deadline, descriptor and turn, in the order they parked: their deadlines
    /// are all the same span after their last answer, so in that order too.
    deadlines: VecDeque<(Instant, RawFd, u64)>,
    turns: u64,
    /// When the memory freed by the tasks of parked connections is given back.
    trim_at: Option<Instant>,
}

/// One thread's parked connections.
pub struct Parker {
    epoll: AsyncFd<OwnedFd>,
    lot: Mutex<Lot>,
    /// Told when its next wake-up may be earlier than the one it waits for.
    changed: Notify,
}

thread_local! {
    /// This thread's parker, owned by its task: it goes, closing what it holds, when the
    /// runtime does (the daemon's shutdown).
    static PARKER: RefCell<Weak<Parker>> = const { RefCell::new(Weak::new()) };
}

/// Parks `stream` until it is readable or `deadline` passed: then `resume` gets it back or it
/// is closed. A connection that cannot be parked is resumed at once.
pub fn park(stream: TcpStream, deadline: Instant, resume: Resume) {
    let parker = match this_threads_parker() {
        Ok(parker) => parker,
        Err(error) => {
            warn!("no parker for idle connections on this thread: {error}");
            return resume(stream);
        }
    };
    // Out of tokio's poller: its registration is freed.
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let fd = stream.as_raw_fd();
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: fd as u64,
    };
    // SAFETY: both descriptors are open; `event` is valid for the call.
    let added = unsafe {
        libc::epoll_ctl(
            parker.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            &mut event,
        )
    };
    if added != 0 {
        warn!(
            "parking an idle connection failed: {}",
            io::Error::last_os_error()
        );
        if let Ok(stream) = TcpStream::from_std(stream) {
            resume(stream);
        }
        return;
    }
    let mut lot = parker.lot();
    lot.turns += 1;
    let turn = lot.turns;
    lot.parked.insert(
        fd,
        Parked {
            stream,
            resume,
            turn,
        },
    );
    lot.deadlines.push_back((deadline, fd, turn));
    let first = lot.deadlines.len() == 1;
    let trim_now = lot.trim_at.is_none();
    if trim_now {
        lot.trim_at = Some(Instant::now() + TRIM_AFTER);
    }
    drop(lot);
    if first || trim_now {
        parker.changed.notify_one();
    }
}

/// The connections parked on this thread now.
#[cfg(test)]
pub fn parked_here() -> usize {
    PARKER.with(|parker| {
        parker
            .borrow()
            .upgrade()
            .map_or(0, |p| p.lot().parked.len())
    })
}

fn this_threads_parker() -> io::Result<Arc<Parker>> {
    PARKER.with(|kept| {
        if let Some(parker) = kept.borrow().upgrade() {
            return Ok(parker);
        }
        // SAFETY: no pointer is passed; the descriptor returned is owned below.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epoll` was just opened, and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        // SAFETY: the descriptor stays open, and the same, as long as the `AsyncFd` owns it.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }?;
        let parker = Arc::new(Parker {
            epoll,
            lot: Mutex::default(),
            changed: Notify::new(),
        });
        *kept.borrow_mut() = Arc::downgrade(&parker);
        tokio::spawn(parker.clone().serve());
        Ok(parker)
    })
}

impl Parker {
    fn lot(&self) -> MutexGuard<'_, Lot> {
        self.lot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resumes the connections that became readable, closes those past their deadline, and
    /// gives freed memory back, for the life of the runtime.
    async fn serve(self: Arc<Self>) {
        let mut timer = pin!(sleep_until(Instant::now()));
        loop {
            let next = {
                let lot = self.lot();
                let deadline = lot.deadlines.front().map(|(deadline, ..)| *deadline);
                deadline.into_iter().chain(lot.trim_at).min()
            };
            let waits_on_timer = next.is_some();
            if let Some(next) = next {
                timer.as_mut().reset(next);
            }
            tokio::select! {
                ready = self.epoll.readable() => match ready {
                    Ok(mut ready) => {
                        if self.resume_readable() {
                            ready.clear_ready();
                        }
                    }
                    Err(error) => return warn!("the parker of idle connections failed: {error}"),
                },
                () = &mut timer, if waits_on_timer => self.sweep(Instant::now()),
                () = self.changed.notified() => {}
            }
        }
    }

    /// Resumes every parked connection the epoll set reports; whether it reported all.
    fn resume_readable(&self) -> bool {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // SAFETY: `events` holds `EVENTS` entries; a timeout of 0 does not block.
        let count = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as i32,
                0,
            )
        };
        for event in &events[..count.max(0) as usize] {
            let fd = event.u64 as RawFd;
            let Some(parked) = self.lot().parked.remove(&fd) else {
                continue;
            };
            // SAFETY: `fd` is open (its stream is held here); no event is passed.
            let _ = unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                )
            };
            // Registered with this thread's runtime: its task is spawned on it.
            if let Ok(stream) = TcpStream::from_std(parked.stream) {
                (parked.resume)(stream);
            }
        }
        (count as usize) < EVENTS
    }

    /// Closes the connections whose deadline passed by `now` (their slot is given back with
    /// what resumes them), and gives freed memory back once due.
    fn sweep(&self, now: Instant) {
        let mut closed = Vec::new();
        let mut lot = self.lot();
        while let Some(&(deadline, fd, turn)) = lot.deadlines.front() {
            if deadline > now {
                break;
            }
            lot.deadlines.pop_front();
            if lot
                .parked
                .get(&fd)
                .is_some_and(|parked| parked.turn == turn)
            {
                closed.extend(lot.parked.remove(&fd));
            }
        }
        let trim = lot.trim_at.is_some_and(|at| at <= now);
        if trim {
            lot.trim_at = None;
        }
        drop(lot);
        for parked in closed {
            // As an idle task closes it when its head's wait ends; closing the socket takes it
            // out of the epoll set.
            let _ = parked.stream.shutdown(Shutdown::Write);
        }
        if trim {
            give_back_freed_memory();
        }
    }
}

/// Gives the heap's free pages back to the system: glibc keeps them (and those amid the heap)
/// after the tasks of parked connections were freed.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
