//! Connections that are not HTTP: relayed byte for byte to this site's instance.
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::config::Service;

/// Relays `stream` to `service`'s local instance until either side closes.
pub async fn relay_tcp(mut stream: TcpStream, service: &Service, connect_timeout: Duration) {
    let upstream = tokio::time::timeout(connect_timeout, TcpStream::connect(service.local)).await;
    let mut upstream = match upstream {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(err)) => {
            warn!(service = %service.name, "relaying a non-HTTP connection: {} is unreachable: {err}", service.local);
            return;
        }
        Err(_) => {
            warn!(service = %service.name, "relaying a non-HTTP connection: {} did not accept in time", service.local);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Err(err) = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
        debug!(service = %service.name, "non-HTTP relay ended: {err}");
    }
}
