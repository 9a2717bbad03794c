//! Closing a client's connection without resetting it under its answer. A socket closed with
//! bytes of the client's still unread is reset (RFC 1122): the client, still sending (an
//! oversized head, a body nobody reads), loses the answer it was sent (a 431, a 400) and sees
//! only "connection reset". So, as nginx's `lingering_close`, the connection's sending side is
//! shut down after the answer and what the client still sends is read and dropped, for a
//! while and up to a size, before the socket is closed.
use std::{
    io::IoSlice,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};

/// The most read and dropped from a client after its answer, and for how long at most.
const MAX_DROPPED: usize = 64 * 1024 * 1024;
const LINGERING: Duration = Duration::from_secs(5);

/// A client's connection lent to what serves it (hyper), which comes back to its `Lender` once
/// that drops it: so that it can still be closed gracefully after an error, with no second
/// handle on its socket (a `dup` and a `close` for every connection, when few end on one).
pub struct Lent {
    stream: Option<TcpStream>,
    back: Lender,
}

/// Where a `Lent` connection comes back to.
#[derive(Clone)]
pub struct Lender(Arc<Mutex<Option<TcpStream>>>);

/// `stream` lent, and where it comes back to.
pub fn lend(stream: TcpStream) -> (Lent, Lender) {
    let back = Lender(Arc::default());
    let lent = Lent {
        stream: Some(stream),
        back: back.clone(),
    };
    (lent, back)
}

impl Lender {
    /// The connection, once what it was lent to dropped it.
    pub fn take_back(&self) -> Option<TcpStream> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        *self.back.0.lock().unwrap_or_else(PoisonError::into_inner) = self.stream.take();
    }
}

impl Lent {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.stream
                .as_mut()
                .expect("a lent stream is there until it is dropped"),
        )
    }
}

impl AsyncRead for Lent {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lent {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(|stream| stream.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

/// Closes `stream`, if any, gracefully: no more is sent, and what the client still sends
/// (within `LINGERING`, up to `MAX_DROPPED`) is read and dropped first.
pub async fn close_gracefully(stream: Option<TcpStream>) {
    if let Some(stream) = stream {
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

    #[tokio::test]
    async fn a_lent_connection_comes_back_once_dropped_still_open() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap());
        let (near, far) = tokio::join!(near, listener.accept());
        let (mut near, mut far) = (near.unwrap(), far.unwrap().0);
        let (mut lent, lender) = lend(far);
        lent.write_all(b"lent").await.unwrap();
        assert!(lender.take_back().is_none(), "back while still lent");
        drop(lent);
        far = lender.take_back().expect("back once dropped");
        far.write_all(b", back").await.unwrap();
        drop(far);
        let mut came = String::new();
        near.read_to_string(&mut came).await.unwrap();
        assert_eq!(came, "lent, back");
    }

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
