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
/// closed unused.
pub async fn unless_the_client_speaks_http(
    stream: &mut TcpStream,
    service: &Service,
    connect_timeout: Duration,
    relays: &AtomicU64,
) -> Option<Protocol> {
    let mut upstream = connect(service, connect_timeout).await?;
    let client_first = tokio::select! {
        biased;
        client = stream.readable() => client.is_ok(),
        _ = upstream.readable() => false,
    };
    if client_first {
        match sniff(stream).await {
            Some(Protocol::Opaque) | None => {}
            http => return http,
        }
    }
    relays.fetch_add(1, Ordering::Relaxed);
    relay(stream, &mut upstream, service).await;
    None
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
