//! Connections that are not HTTP: relayed byte for byte to this site's instance.
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::sniff::{sniff, Protocol};
use crate::config::Service;

/// Relays `stream` to `service`'s local instance until either side closes.
pub async fn relay_tcp(mut stream: TcpStream, service: &Service, connect_timeout: Duration) {
    if let Some(mut upstream) = connect(service, connect_timeout).await {
        relay(&mut stream, &mut upstream, service).await;
    }
}

/// A connection silent for the whole of the sniffing's wait: its protocol may be one where the
/// server speaks first (SMTP, MySQL, SSH...), or its client may be slow to send (a pool that
/// opens connections ahead of its requests). Connects to `service`'s instance and waits for
/// whichever side speaks first. The instance: relayed byte for byte, as is a client whose
/// first bytes are not HTTP; `None` once the relay ends. A client whose first bytes are HTTP:
/// its protocol, to be served as such (never relayed unscoped); the instance's connection is
/// closed unused. An instance that closes without a word (as an HTTP server does a connection
/// idle too long), or that cannot be reached, speaks no such protocol: the client's first
/// bytes tell, whenever they come, so that an HTTP client still gets an answer that names the
/// service.
pub async fn unless_the_client_speaks_http(
    stream: &mut TcpStream,
    service: &Service,
    connect_timeout: Duration,
    relays: &AtomicU64,
) -> Option<Protocol> {
    let Some(mut upstream) = connect(service, connect_timeout).await else {
        return http_once_the_client_speaks(stream).await;
    };
    // Peeks, not readiness, which may come with nothing to read.
    let (mut client_byte, mut instance_byte) = ([0u8; 1], [0u8; 1]);
    let first = tokio::select! {
        biased;
        _ = stream.peek(&mut client_byte) => First::Client,
        peeked = upstream.peek(&mut instance_byte) => match peeked {
            Ok(len) if len > 0 => First::Instance,
            _ => First::InstanceClosed,
        },
    };
    if first != First::Instance {
        if let Some(http) = http_once_the_client_speaks(stream).await {
            return Some(http);
        }
        if first == First::InstanceClosed {
            upstream = connect(service, connect_timeout).await?;
        }
    }
    relays.fetch_add(1, Ordering::Relaxed);
    relay(stream, &mut upstream, service).await;
    None
}

/// Waits for the client's first bytes: its protocol if it is HTTP; `None` for anything else,
/// or if it closes first.
async fn http_once_the_client_speaks(stream: &mut TcpStream) -> Option<Protocol> {
    let _ = stream.peek(&mut [0u8; 1]).await;
    match sniff(stream).await {
        Some(Protocol::Opaque) | None => None,
        http => http,
    }
}

/// Which side of a silent connection spoke first.
#[derive(PartialEq, Eq)]
enum First {
    Client,
    Instance,
    /// The instance closed its connection without a byte.
    InstanceClosed,
}

async fn connect(service: &Service, connect_timeout: Duration) -> Option<TcpStream> {
    let upstream = tokio::time::timeout(connect_timeout, TcpStream::connect(service.local)).await;
    match upstream {
        Ok(Ok(upstream)) => {
            let _ = upstream.set_nodelay(true);
            Some(upstream)
        }
        Ok(Err(err)) => {
            warn!(service = %service.name, "relaying a non-HTTP connection: {} is unreachable: {err}", service.local);
            None
        }
        Err(_) => {
            warn!(service = %service.name, "relaying a non-HTTP connection: {} did not accept in time", service.local);
            None
        }
    }
}

async fn relay(stream: &mut TcpStream, upstream: &mut TcpStream, service: &Service) {
    if let Err(err) = tokio::io::copy_bidirectional(stream, upstream).await {
        debug!(service = %service.name, "non-HTTP relay ended: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::{catalog, pair};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// An instance that does `serve` with each connection it accepts; its service.
    async fn instance<F>(serve: impl Fn(TcpStream) -> F + Send + 'static) -> Service
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = catalog(listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
        service
    }

    /// Runs `unless_the_client_speaks_http` on the accepted end of a new connection to
    /// `service`: the client's end, and what it gave with the relays it counted.
    fn silent(
        service: Service,
        accepted: TcpStream,
    ) -> tokio::task::JoinHandle<(Option<Protocol>, u64)> {
        tokio::spawn(async move {
            let mut accepted = accepted;
            let relays = AtomicU64::new(0);
            let timeout = Duration::from_secs(5);
            let told = unless_the_client_speaks_http(&mut accepted, &service, timeout, &relays);
            let told = tokio::time::timeout(Duration::from_secs(10), told).await;
            (
                told.expect("still relaying"),
                relays.load(Ordering::Relaxed),
            )
        })
    }

    #[tokio::test]
    async fn an_instance_that_speaks_first_is_relayed_both_ways() {
        let service = instance(|mut stream| async move {
            stream.write_all(b"SSH-2.0-test\r\n").await.unwrap();
            let mut echoed = [0u8; 5];
            stream.read_exact(&mut echoed).await.unwrap();
            stream.write_all(&echoed).await.unwrap();
        })
        .await;
        let (mut client, accepted) = pair().await;
        let relaying = silent(service, accepted);
        let mut banner = [0u8; 14];
        client.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"SSH-2.0-test\r\n");
        client.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"hello");
        drop(client);
        assert_eq!(relaying.await.unwrap(), (None, 1));
    }

    #[tokio::test]
    async fn a_client_that_speaks_http_late_is_served_as_http_and_the_instance_left_unused() {
        let (unused, closed) = tokio::sync::oneshot::channel();
        let unused = std::sync::Mutex::new(Some(unused));
        let service = instance(move |mut stream| {
            let unused = unused.lock().unwrap().take();
            async move {
                let read = stream.read(&mut [0u8; 64]).await.unwrap();
                let _ = unused.unwrap().send(read);
            }
        })
        .await;
        let (mut client, accepted) = pair().await;
        let telling = silent(service, accepted);
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(telling.await.unwrap(), (Some(Protocol::Http1), 0));
        assert_eq!(closed.await.unwrap(), 0, "the instance got bytes");
    }

    #[tokio::test]
    async fn an_instance_that_closes_a_silent_connection_leaves_the_client_to_tell() {
        let service = instance(|stream| async move { drop(stream) }).await;
        let (mut client, accepted) = pair().await;
        let telling = silent(service, accepted);
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"POST /items HTTP/1.1\r\n").await.unwrap();
        assert_eq!(telling.await.unwrap(), (Some(Protocol::Http1), 0));
    }

    #[tokio::test]
    async fn an_http_client_silent_at_first_is_served_as_http_though_its_instance_is_down() {
        let down = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = catalog(down.local_addr().unwrap());
        drop(down);
        let (mut client, accepted) = pair().await;
        let telling = silent(service, accepted);
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"GET /items HTTP/1.1\r\n").await.unwrap();
        assert_eq!(telling.await.unwrap(), (Some(Protocol::Http1), 0));
    }
}
