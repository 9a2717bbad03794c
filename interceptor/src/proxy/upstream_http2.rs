//! This site's instance over one HTTP/2 connection owned by one workload HTTP/2 connection:
//! the workload's streams (its gRPC calls) go on it as they come, so no call checks a
//! connection out of a pool. It is opened at the first call, opened again if it closed, and
//! closes with the workload's connection. Its streams are concurrent, as the workload's are,
//! so the connection is driven by a task of its own, one per connection rather than per call.
use std::{net::SocketAddr, time::Duration};

use hyper::{
    body::Incoming,
    client::conn::http2::{self, SendRequest},
    http::uri::{Authority, Scheme},
    Request, Response, Uri,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::Mutex};
use tracing::debug;

use super::{in_connection_task::InConnectionTask, outcome::UpstreamError};
use crate::http::ProxyBody;

/// The kept connection: where it goes, and what sends on it.
struct Open {
    address: SocketAddr,
    /// `address` as the `:authority` of the requests sent on it, made once.
    authority: Authority,
    sender: SendRequest<ProxyBody>,
}

/// The HTTP/2 connection to the instance of one workload connection, kept between its calls.
#[derive(Default)]
pub struct OwnedHttp2 {
    open: std::sync::Mutex<Option<Open>>,
    /// Held across a connect, so that calls arriving together share one connection.
    connecting: Mutex<()>,
}

/// What a call is sent with: the connection's sender, its `:authority`, and whether it was
/// opened for this call.
type Sending = (SendRequest<ProxyBody>, Authority, bool);

impl OwnedHttp2 {
    /// Sends `request` (its path taken, its `:authority` set to `address`, as the pooled
    /// client sends it) to the instance at `address`, on the kept connection when it is still
    /// open, else on a new one; a call that the kept connection closed on before sending it
    /// goes once more on a new one.
    pub async fn send(
        &self,
        mut request: Request<ProxyBody>,
        address: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // Opening is boxed: the handshake's state is large, and every call's future (copied
        // whole when its task is spawned) would carry it.
        let (mut sender, authority, mut fresh) = match self.kept(address) {
            Some(kept) => kept,
            None => Box::pin(self.opened(address, connect_timeout)).await?,
        };
        *request.uri_mut() = on_instance(request.uri(), authority)?;
        loop {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if !fresh => {
                        debug!("the instance's HTTP/2 connection closed: sending on a new one");
                        request = unsent;
                        self.open.lock().expect("never poisoned").take();
                        (sender, _, fresh) =
                            Box::pin(self.opened(address, connect_timeout)).await?;
                    }
                    _ => return Err(UpstreamError::Http(error.into_error())),
                },
            }
        }
    }

    /// The kept connection to `address`, if it is still open.
    fn kept(&self, address: SocketAddr) -> Option<Sending> {
        let open = self.open.lock().expect("never poisoned");
        let kept = open
            .as_ref()
            .filter(|o| o.address == address && !o.sender.is_closed())?;
        Some((kept.sender.clone(), kept.authority.clone(), false))
    }

    /// The kept connection to `address`, opened unless another call just did.
    async fn opened(
        &self,
        address: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Sending, UpstreamError> {
        let _connecting = self.connecting.lock().await;
        if let Some(kept) = self.kept(address) {
            return Ok(kept);
        }
        let opened = connect(address, connect_timeout).await?;
        let sending = (opened.sender.clone(), opened.authority.clone(), true);
        *self.open.lock().expect("never poisoned") = Some(opened);
        Ok(sending)
    }
}

/// `uri`'s path and query, on the instance `authority`, in plain HTTP.
fn on_instance(uri: &Uri, authority: Authority) -> Result<Uri, UpstreamError> {
    let mut parts = hyper::http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).map_err(|err| UpstreamError::BadTarget(err.into()))
}

/// A new HTTP/2 connection (prior knowledge) to `address`, driven by a task of its own until
/// every sender is dropped and its streams ended.
async fn connect(address: SocketAddr, limit: Duration) -> Result<Open, UpstreamError> {
    let stream = match tokio::time::timeout(limit, TcpStream::connect(address)).await {
        Ok(connected) => connected.map_err(UpstreamError::Connect)?,
        Err(_) => return Err(UpstreamError::ConnectTimeout(limit)),
    };
    let _ = stream.set_nodelay(true);
    let executor = InConnectionTask::default();
    let (sender, connection) = http2::Builder::new(executor.clone())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(executor.drive(async move {
        if let Err(err) = connection.await {
            debug!("the instance's HTTP/2 connection ended: {err}");
        }
    }));
    let authority = Authority::try_from(address.to_string())
        .map_err(|err| UpstreamError::BadTarget(err.into()))?;
    Ok(Open {
        address,
        authority,
        sender,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::{header::HeaderValue, Method};
    use hyper_util::rt::TokioExecutor;
    use tokio::{net::TcpListener, task::JoinHandle};

    use super::*;
    use crate::http::full_body;

    /// An HTTP/2 instance answering each call with the `:authority` it came with; it counts
    /// the connections it accepted, and keeps their tasks so that a test can cut them.
    struct Instance {
        address: SocketAddr,
        accepted: Arc<AtomicUsize>,
        connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    }

    async fn instance() -> Instance {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (counted, kept) = (accepted.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let authority = request.uri().authority().map(ToString::to_string);
                    let body = full_body(authority.unwrap_or_default());
                    Ok::<_, hyper::Error>(Response::new(body))
                });
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), answer);
                let task = tokio::spawn(async move { drop(connection.await) });
                kept.lock().unwrap().push(task);
            }
        });
        Instance {
            address,
            accepted,
            connections,
        }
    }

    /// One call on `owned` to `address`: the authority the instance saw.
    async fn call(owned: &OwnedHttp2, address: SocketAddr) -> Result<Bytes, UpstreamError> {
        let mut request = Request::new(full_body("message"));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_static("http://198.18.0.10/pkg.Service/Call");
        *request.version_mut() = hyper::Version::HTTP_2;
        request
            .headers_mut()
            .insert("te", HeaderValue::from_static("trailers"));
        let response = owned.send(request, address, Duration::from_secs(2)).await?;
        Ok(response.into_body().collect().await.unwrap().to_bytes())
    }

    #[tokio::test]
    async fn calls_share_one_connection_on_which_the_instance_is_the_authority() {
        let instance = instance().await;
        let owned = OwnedHttp2::default();
        let authority = instance.address.to_string();
        assert_eq!(call(&owned, instance.address).await.unwrap(), authority);
        let (a, b) = tokio::join!(
            call(&owned, instance.address),
            call(&owned, instance.address)
        );
        assert_eq!(a.unwrap(), authority);
        assert_eq!(b.unwrap(), authority);
        assert_eq!(instance.accepted.load(Ordering::SeqCst), 1);
        // It closes with its owner (the workload's connection): nothing is left running.
        drop(owned);
        let closed = async {
            while !instance.connections.lock().unwrap()[0].is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), closed)
            .await
            .expect("the instance's connection closes when its owner is dropped");
    }

    #[tokio::test]
    async fn a_body_that_comes_after_the_call_was_sent_is_piped_to_the_instance() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let echo = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let body = request.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>(Response::new(full_body(body)))
            });
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), echo);
            drop(connection.await);
        });
        let (sending, parts) = tokio::sync::mpsc::channel::<Bytes>(1);
        let frames = futures_util::stream::unfold(parts, |mut parts| async move {
            let part = parts.recv().await?;
            Some((Ok::<_, hyper::Error>(hyper::body::Frame::data(part)), parts))
        });
        let mut request = Request::new(BodyExt::boxed(http_body_util::StreamBody::new(frames)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_static("http://198.18.0.10/pkg.Service/Stream");
        let owned = OwnedHttp2::default();
        let answer = owned.send(request, address, Duration::from_secs(2));
        let late = async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sending.send(Bytes::from_static(b"late ")).await.unwrap();
            sending.send(Bytes::from_static(b"parts")).await.unwrap();
        };
        let (answer, ()) = tokio::join!(answer, late);
        let echoed = answer.unwrap().into_body().collect().await.unwrap();
        assert_eq!(echoed.to_bytes(), "late parts");
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_is_opened_again() {
        let instance = instance().await;
        let owned = OwnedHttp2::default();
        call(&owned, instance.address).await.unwrap();
        for connection in instance.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        call(&owned, instance.address).await.unwrap();
        assert_eq!(instance.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_instance_that_is_not_there_is_a_call_never_delivered() {
        let address = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let error = call(&OwnedHttp2::default(), address).await.unwrap_err();
        assert!(error.is_connect(), "{error}");
    }
}
