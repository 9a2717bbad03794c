//! Closing a client's connection without resetting it under its answer. A socket closed with
//! bytes of the client's still unread is reset (RFC 1122): the client, still sending (an
//! oversized head, a body nobody reads), loses the answer it was sent (a 431, a 400) and sees
//! only "connection reset". So, as nginx's `lingering_close`, the connection's sending side is
//! shut down after the answer and what the client still sends is read and dropped, for a
//! while and up to a size, before the socket is closed.
use std::{
    os::fd::{AsFd, OwnedFd},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The most read and dropped from a client after its answer, and for how long at most.
const MAX_DROPPED: usize = 64 * 1024 * 1024;
const LINGERING: Duration = Duration::from_secs(5);

/// A second handle on `stream`'s socket: the socket stays open while it lives, even once
/// whatever owns `stream` (hyper) dropped it. `None` if the process is out of file handles.
pub fn second_handle(stream: &TcpStream) -> Option<OwnedFd> {
    stream.as_fd().try_clone_to_owned().ok()
}

/// Closes the connection of `handle` gracefully: no more is sent, and what the client still
/// sends (within `LINGERING`, up to `MAX_DROPPED`) is read and dropped first.
pub async fn close_gracefully(handle: Option<OwnedFd>) {
    if let Some(Ok(stream)) = handle.map(|fd| TcpStream::from_std(fd.into())) {
        close(stream).await
    }
}

/// Sends `answer` once the client sent its request (what one read brings, or nothing after
/// `wait`), then closes the connection gracefully.
pub async fn answer_then_close(mut stream: TcpStream, answer: &[u8], wait: Duration) {
    let mut request = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(wait, stream.read(&mut request)).await;
    if stream.write_all(answer).await.is_ok() {
        close(stream).await
    }
}

async fn close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGERING, drop_what_comes(&mut stream)).await;
}

/// Reads and drops what `stream` brings until its end, an error or `MAX_DROPPED` bytes.
async fn drop_what_comes(stream: &mut TcpStream) {
    let mut dropped = 0;
    let mut buffer = vec![0u8; 16 * 1024];
    while dropped < MAX_DROPPED {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => dropped += read,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{
        config::ProxySettings,
        proxy::tests::{catalog, nothing_listening, proxy_serving},
    };

    /// As a client that sends its whole request before it reads (Python's `sendall`, then
    /// `recv`): an oversized head gets its 431, not a reset, on every try.
    #[tokio::test]
    async fn a_client_sending_an_oversized_head_whole_reads_its_431() {
        let proxy =
            proxy_serving(catalog(nothing_listening().await), ProxySettings::default()).await;
        let head = format!(
            "GET / HTTP/1.1\r\nHost: catalog\r\nX-Large: {}\r\n\r\n",
            "x".repeat(16 * 1024 * 1024)
        );
        for _ in 0..5 {
            let mut client = TcpStream::connect(proxy).await.unwrap();
            client.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        }
    }
}
