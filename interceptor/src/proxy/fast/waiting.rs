//! The wait for a request's head on a connection the fast path serves: read by hand, with no
//! buffer until bytes come, bounded by the connection's head timer, and cut short to park a
//! connection idle with nothing read (`super::super::park`).
use std::{
    future::{poll_fn, Future},
    io::ErrorKind,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use tokio::{
    net::TcpStream,
    time::{self, Sleep},
};

use super::{
    buffers,
    head::{self, Parsed, RequestHead},
    Connection, MAX_BODY, READS,
};
use crate::proxy::request::WorkloadRequests;

// Moved once per request: a box would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub(super) enum ReadHead {
    /// With what serves it (read once per request: a reload applies from the next).
    Fast(RequestHead, Arc<WorkloadRequests>),
    ToHyper,
    Closed,
}

/// How a wait for a head ended.
// Moved once per request, as `ReadHead`.
#[allow(clippy::large_enum_variant)]
pub(super) enum Waited {
    Head(ReadHead),
    /// Its deadline passed.
    TimedOut,
    /// Nothing read for `park_idle_after`: its wait ends at the deadline given.
    Idle(time::Instant),
}

/// Reads until `read` holds a whole head, or what hyper must answer (more than
/// `proxy.max_header_bytes` without one, a malformed one, one the fast path leaves), until
/// `until`: the wait's deadline, or, when it `parks`, `park_idle_after` into it, where a
/// connection with nothing read is idle, and one with part of a head waits on to the deadline.
/// `timer` may be set earlier than `until` (an earlier wait's deadline, left as it was rather
/// than pushed later for each request): when it goes off then, it is set to `until`, once in
/// a span rather than once a request. Polled by hand: no state is kept in the connection's
/// task but these references and flags, while it waits for the next request.
pub(super) fn wait_for_head<'a>(
    connection: &'a Connection<'_>,
    read: &'a mut Vec<u8>,
    mut timer: Pin<&'a mut Sleep>,
    mut until: time::Instant,
    mut parks: bool,
) -> impl Future<Output = Waited> + Send + 'a {
    if timer.deadline() > until {
        timer.as_mut().reset(until);
    }
    // Whether `read` holds bytes not parsed yet.
    let mut unparsed = !read.is_empty();
    poll_fn(move |cx| {
        if let Poll::Ready(head) = poll_head(connection, read, &mut unparsed, cx) {
            return Poll::Ready(Waited::Head(head));
        }
        loop {
            ready!(timer.as_mut().poll(cx));
            if timer.deadline() < until {
                // Gone off at an earlier wait's deadline: this wait's own is later.
                timer.as_mut().reset(until);
                continue;
            }
            if !parks {
                return Poll::Ready(Waited::TimedOut);
            }
            let settings = connection.settings;
            let waited_since = until - settings.park_idle_after;
            until = waited_since + settings.header_read_timeout;
            if read.is_empty() {
                return Poll::Ready(Waited::Idle(until));
            }
            parks = false;
            timer.as_mut().reset(until);
        }
    })
}

/// Reads until `read` holds a whole head, or what hyper must answer; `unparsed`: whether
/// `read` holds bytes not parsed yet.
fn poll_head(
    connection: &Connection<'_>,
    read: &mut Vec<u8>,
    unparsed: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<ReadHead> {
    loop {
        let Connection {
            client,
            workload,
            settings,
        } = connection;
        let limit = settings.max_header_bytes;
        if *unparsed {
            *unparsed = false;
            let requests = (workload.requests)();
            let token_header = requests.carriers.token_header_name();
            match head::parse_request(read, token_header, MAX_BODY) {
                // Past the limit, hyper answers 431 (it never reads that much for one head).
                Parsed::Fast(head) if head.len > limit => return Poll::Ready(ReadHead::ToHyper),
                Parsed::Fast(head) => return Poll::Ready(ReadHead::Fast(head, requests)),
                Parsed::NotFast => return Poll::Ready(ReadHead::ToHyper),
                Parsed::Partial if read.len() >= limit => return Poll::Ready(ReadHead::ToHyper),
                Parsed::Partial => {}
            }
        }
        let head = match ready!(poll_read_more(client, read, cx)) {
            Ok(0) if read.is_empty() => ReadHead::Closed,
            Ok(0) => ReadHead::ToHyper,
            Ok(_) => {
                *unparsed = true;
                continue;
            }
            Err(_) => ReadHead::Closed,
        };
        return Poll::Ready(head);
    }
}

/// Reads what the client sent into `read`, taking a buffer only once something came: the
/// readiness left from the last request often finds nothing, and the wait that follows may
/// last as long as the connection is idle.
fn poll_read_more(
    client: &TcpStream,
    read: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    loop {
        ready!(client.poll_read_ready(cx))?;
        let done = if read.is_empty() {
            read_first(client, read)
        } else {
            if read.capacity() - read.len() < READS / 2 {
                read.reserve(READS.max(read.len()));
            }
            client.try_read_buf(read)
        };
        match done {
            Err(error) if error.kind() == ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

/// Reads into the empty `read` through a buffer of this thread's (`buffers`), which `read`
/// keeps only once something came.
fn read_first(client: &TcpStream, read: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut buffer = buffers::take(READS);
    let came = client.try_read_buf(&mut buffer);
    match came {
        Ok(len) if len > 0 => *read = buffer,
        _ => buffers::give_back(buffer),
    }
    came
}
