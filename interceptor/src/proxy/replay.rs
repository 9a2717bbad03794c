//! A streamed request body that can be sent again. A gRPC call along an otherwise chain streams
//! to the first site at once (a bidirectional call never ends its request by itself, so it
//! cannot be read whole first); what that site read is kept, up to a limit, so that the call
//! can still go to the next site when the first did not serve it.
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{
    body::{Body, Frame},
    HeaderMap,
};

use crate::http::ProxyBody;

struct Source {
    body: ProxyBody,
    /// What attempts read so far, in order, while it stays within `limit`.
    read: Vec<Bytes>,
    read_bytes: usize,
    trailers: Option<HeaderMap>,
    limit: usize,
    /// More than `limit` was read, or reading failed: what was read is gone.
    lost: bool,
    /// The attempt that reads now; an earlier one may still be polled by a connection that
    /// failed, and must not take what belongs to the next site.
    current: u64,
}

/// The body of a request, read by one attempt at a time.
pub struct Replayable(Arc<Mutex<Source>>);

impl Replayable {
    pub fn new(body: ProxyBody, limit: usize) -> Replayable {
        Replayable(Arc::new(Mutex::new(Source {
            body,
            read: Vec::new(),
            read_bytes: 0,
            trailers: None,
            limit,
            lost: false,
            current: 0,
        })))
    }

    /// The body for the next attempt: what earlier attempts read, then the rest as it comes;
    /// `None` when what they read could not be kept.
    pub fn attempt(&self) -> Option<ProxyBody> {
        let mut source = self.0.lock().unwrap();
        if source.lost {
            return None;
        }
        source.current += 1;
        Some(
            Attempt {
                source: self.0.clone(),
                number: source.current,
                next: 0,
                trailers_sent: false,
            }
            .boxed(),
        )
    }
}

struct Attempt {
    source: Arc<Mutex<Source>>,
    number: u64,
    /// The next kept chunk to send again.
    next: usize,
    trailers_sent: bool,
}

impl Body for Attempt {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let source = self.source.clone();
        let mut source = source.lock().unwrap();
        if source.current != self.number {
            // A later attempt took over; this one's connection failed and goes away.
            return Poll::Pending;
        }
        if let Some(chunk) = source.read.get(self.next).cloned() {
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = source.trailers.clone() {
            return if std::mem::replace(&mut self.trailers_sent, true) {
                Poll::Ready(None)
            } else {
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            };
        }
        let polled = Pin::new(&mut source.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if source.read_bytes + data.len() <= source.limit && !source.lost {
                        source.read_bytes += data.len();
                        source.read.push(data.clone());
                        self.next = source.read.len();
                    } else {
                        source.lost = true;
                        source.read = Vec::new();
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    source.trailers = Some(trailers.clone());
                    self.trailers_sent = true;
                }
            }
            Poll::Ready(Some(Err(_))) => source.lost = true,
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::full_body;

    async fn read_all(body: ProxyBody) -> Bytes {
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn the_next_attempt_gets_what_the_first_read_then_the_rest() {
        let body = Replayable::new(full_body("a call's messages"), 1024);
        let mut first = body.attempt().unwrap();
        // The first site read some of it, then failed.
        let read = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(read, "a call's messages");
        let second = body.attempt().unwrap();
        assert_eq!(read_all(second).await, "a call's messages");
        // The failed attempt can no longer take anything.
        let stale = futures_poll(&mut first);
        assert!(stale.is_pending());
    }

    #[tokio::test]
    async fn a_body_read_beyond_the_limit_cannot_be_sent_again() {
        let body = Replayable::new(full_body("more than four bytes"), 4);
        assert_eq!(
            read_all(body.attempt().unwrap()).await,
            "more than four bytes"
        );
        assert!(body.attempt().is_none());
    }

    fn futures_poll(body: &mut ProxyBody) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let waker = std::task::Waker::noop();
        Pin::new(body).poll_frame(&mut Context::from_waker(waker))
    }
}
