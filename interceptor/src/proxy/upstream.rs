//! This site's instance over a connection owned by one workload connection (HTTP/1.1). Its
//! requests come one after another, so the connection to the instance is driven inside the
//! workload connection's own task, while a request waits for its answer and while the answer's
//! body streams back: no pool to check a connection out of, and no other task to wake, per
//! request. A workload connection in HTTP/2 owns an HTTP/2 connection instead
//! (`upstream_http2`). The pooled client (`http::instance_client`) serves every other case.
use std::{
    future::{poll_fn, Future},
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::{
    body::{Body, Incoming},
    client::conn::{http1, TrySendError},
    Request, Response,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{
    hooked::{BodyHook, Hooked, Polled},
    outcome::UpstreamError,
    timer::KeptTimer,
    upstream_http2::OwnedHttp2,
};
use crate::http::ProxyBody;

type Connection = http1::Connection<TokioIo<TcpStream>, ProxyBody>;

/// A kept-alive connection to the instance: the sender of its requests and the connection
/// itself, which whoever holds it drives.
struct Open {
    sender: http1::SendRequest<ProxyBody>,
    /// `None` once it ended.
    connection: Option<Pin<Box<Connection>>>,
    /// Whether the connection took all of the last request's body.
    body_sent: Arc<AtomicBool>,
}

/// The connection to the instance of one workload connection, kept between its requests.
#[derive(Default)]
pub struct OwnedUpstream {
    idle: Arc<Mutex<Option<Open>>>,
    /// What bounds the wait for each answer.
    pub answer_timer: KeptTimer,
    /// For a workload connection in HTTP/2 (whose HTTP/1.1 parts above are then unused): the
    /// HTTP/2 connection its streams share.
    pub http2: OwnedHttp2,
}

impl OwnedUpstream {
    /// Sends `request` (origin-form, with a Host header) to the instance at `address`, on the
    /// kept connection when it is still open, else on a new one; a request that the kept
    /// connection closed on before sending it goes once more on a new one.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        address: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let kept = self.idle.lock().expect("never poisoned").take();
        let kept = match kept {
            Some(mut open) => open.still_open().await.then_some(open),
            None => None,
        };
        let reused = kept.is_some();
        let (mut open, mut reused) = match kept {
            Some(open) => (open, reused),
            None => (connect(address, connect_timeout).await?, false),
        };
        let mut request = request;
        loop {
            match open.send(request).await {
                Ok(response) => {
                    let driving = Driving {
                        open: Mutex::new(Some(open)),
                        ended: false,
                        idle: self.idle.clone(),
                    };
                    return Ok(response.map(|body| ProxyBody::new(Hooked::new(body, driving))));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        open = connect(address, connect_timeout).await?;
                        reused = false;
                    }
                    _ => return Err(UpstreamError::Http(error.into_error())),
                },
            }
        }
    }
}

async fn connect(address: SocketAddr, limit: Duration) -> Result<Open, UpstreamError> {
    let stream = match tokio::time::timeout(limit, TcpStream::connect(address)).await {
        Ok(connected) => connected.map_err(UpstreamError::Connect)?,
        Err(_) => return Err(UpstreamError::ConnectTimeout(limit)),
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Http)?;
    Ok(Open {
        sender,
        connection: Some(Box::pin(connection)),
        body_sent: Arc::new(AtomicBool::new(false)),
    })
}

impl Open {
    /// Drives the connection once (it reads the instance closing it, if it did); whether it can
    /// still carry a request.
    async fn still_open(&mut self) -> bool {
        poll_fn(|cx| {
            self.drive(cx);
            Poll::Ready(())
        })
        .await;
        self.connection.is_some() && !self.sender.is_closed()
    }

    /// Polls the connection: it writes requests, reads answers and hands their bodies over.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(connection) = &mut self.connection {
            if connection.as_mut().poll(cx).is_ready() {
                self.connection = None;
            }
        }
    }

    /// Sends `request` once the connection can take it, driving the connection meanwhile.
    async fn send(
        &mut self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ProxyBody>>> {
        // A connection that closed meanwhile fails below, with the request given back.
        let _ = poll_fn(|cx| {
            self.drive(cx);
            self.sender.poll_ready(cx)
        })
        .await;
        self.body_sent.store(false, Ordering::Relaxed);
        let sent = Sent(self.body_sent.clone());
        let request = request.map(|body| ProxyBody::new(Hooked::new(body, sent)));
        let mut answer = std::pin::pin!(self.sender.try_send_request(request));
        poll_fn(|cx| {
            self.drive(cx);
            answer.as_mut().poll(cx)
        })
        .await
    }
}

/// What an answer's body from an owned connection does as it is read: it drives the
/// connection, and gives it back for the next request once the body was read to the end.
struct Driving {
    /// Never locked: only reached through `&mut self` (`get_mut`); the mutex makes the body
    /// `Sync`, as the proxy's body type must be, which the connection is not.
    open: Mutex<Option<Open>>,
    ended: bool,
    idle: Arc<Mutex<Option<Open>>>,
}

impl BodyHook<Incoming> for Driving {
    fn before_poll(&mut self, cx: &mut Context<'_>) {
        if let Some(open) = self.open.get_mut().expect("never poisoned") {
            open.drive(cx);
        }
    }

    fn polled(&mut self, polled: &Polled<Incoming>) {
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
    }

    /// A body read to the end leaves its connection for the next request; one dropped before
    /// (the client went away) closes it, as the instance is still sending. An answer that came
    /// before the request's body was all sent (an early 413, a server that discards uploads)
    /// leaves the connection sending it, in a task of its own until it is done.
    fn dropped(&mut self, body: &Incoming) {
        if !(self.ended || body.is_end_stream()) {
            return;
        }
        let open = self.open.get_mut().expect("never poisoned").take();
        let Some(mut open) = open.filter(|o| o.connection.is_some()) else {
            return;
        };
        if open.body_sent.load(Ordering::Relaxed) {
            *self.idle.lock().expect("never poisoned") = Some(open);
            return;
        }
        let idle = self.idle.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let ready = poll_fn(|cx| {
                    open.drive(cx);
                    open.sender.poll_ready(cx)
                })
                .await;
                if ready.is_ok() && open.connection.is_some() {
                    *idle.lock().expect("never poisoned") = Some(open);
                }
            });
        }
    }
}

/// What a request's body tells: when the connection took all of it.
struct Sent(Arc<AtomicBool>);

impl BodyHook<ProxyBody> for Sent {
    fn polled(&mut self, polled: &Polled<ProxyBody>) {
        if let Poll::Ready(None) = polled {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    fn end_asked(&self, end: bool) {
        if end {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}
