//! Accepting connections so that one failed accept never ends a listener: out of file
//! descriptors and the like is logged and retried after a pause, rather than spinning.
use std::{net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// How long to wait after a failed accept: long enough for descriptors to be freed.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(50);

/// The next connection on `listener`; `what` names the connections in the log line.
pub async fn next_connection(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) => {
                warn!("accepting {what} failed: {err}");
                tokio::time::sleep(PAUSE_AFTER_FAILURE).await;
            }
        }
    }
}
