//! A body passed on as it is, frame by frame, with a hook told what happens to it: what each
//! poll gave, when it was asked whether it ended, when it is dropped. The proxy's bodies that
//! watch what goes through them (a gRPC call's end, a request's body all sent, an answer that
//! drives its connection) are this with a hook of their own.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use hyper::body::{Body, Frame, SizeHint};

/// What one poll of a body `B` gave.
pub type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

/// What a `Hooked` body tells of `B`; each has a default that does nothing.
pub trait BodyHook<B: Body>: Unpin {
    /// Before each poll of the body.
    fn before_poll(&mut self, _cx: &mut Context<'_>) {}

    /// What a poll of the body gave.
    fn polled(&mut self, _polled: &Polled<B>) {}

    /// The body was asked whether it ended, and said `end`.
    fn end_asked(&self, _end: bool) {}

    /// The body is being dropped.
    fn dropped(&mut self, _body: &B) {}
}

/// `body`, relayed as it is, telling `hook`.
pub struct Hooked<B: Body + Unpin, H: BodyHook<B>> {
    body: B,
    hook: H,
}

impl<B: Body + Unpin, H: BodyHook<B>> Hooked<B, H> {
    pub fn new(body: B, hook: H) -> Self {
        Hooked { body, hook }
    }
}

impl<B: Body + Unpin, H: BodyHook<B>> Body for Hooked<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<B> {
        let this = self.get_mut();
        this.hook.before_poll(cx);
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        this.hook.polled(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.body.is_end_stream();
        self.hook.end_asked(end);
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: Body + Unpin, H: BodyHook<B>> Drop for Hooked<B, H> {
    fn drop(&mut self) {
        self.hook.dropped(&self.body);
    }
}
