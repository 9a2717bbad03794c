//! What protocol a new connection speaks, told from its first bytes without consuming them.
use std::{
    io::{self, ErrorKind},
    os::fd::AsRawFd,
    time::Duration,
};

use tokio::{io::Interest, net::TcpStream};

/// How long a new connection may stay silent before it may be one where the server speaks
/// first (`relay::unless_the_client_speaks_http`).
const SNIFF_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge: the connection preface, as every plaintext gRPC client sends.
    Http2,
    /// Anything else: relayed byte for byte.
    Opaque,
}

const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
];

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113, 3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Looks at the first bytes without consuming them: an HTTP/1 request line starts with a
/// method, an HTTP/2 connection with its preface. `None`: nothing came for `SNIFF_TIMEOUT`.
pub async fn sniff(stream: &TcpStream) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    let mut closed = false;
    let mut came = false;
    loop {
        // Peeking inside `try_io`: when only part of a method arrived, "would block" clears the
        // readiness this peek saw, so the wait below lasts until more bytes come (readiness that
        // came since is kept). A plain peek would leave it set, and the wait would spin.
        match stream.try_io(Interest::READABLE, || peek_protocol(stream, &mut came)) {
            Ok(protocol) => return Some(protocol),
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return Some(Protocol::Opaque),
        }
        if closed {
            // The client stopped sending with only part of a method sent.
            return Some(Protocol::Opaque);
        }
        match tokio::time::timeout_at(deadline, stream.ready(Interest::READABLE)).await {
            Ok(Ok(ready)) => closed = ready.is_read_closed(),
            Ok(Err(_)) => return Some(Protocol::Opaque),
            // Part of a method, then nothing: no HTTP client sends so.
            Err(_) if came => return Some(Protocol::Opaque),
            Err(_) => return None,
        }
    }
}

/// The protocol told by the bytes received so far; "would block" while they are too few.
/// `came`: whether any came.
fn peek_protocol(stream: &TcpStream, came: &mut bool) -> io::Result<Protocol> {
    let mut first = [0u8; HTTP2_PREFACE.len()];
    // SAFETY: `first` is valid for writes of its length, and the descriptor stays open while
    // `stream` is borrowed. MSG_DONTWAIT: never block a worker thread.
    let len = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            first.as_mut_ptr().cast(),
            first.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let len = usize::try_from(len).map_err(|_| io::Error::last_os_error())?;
    if len == 0 {
        return Ok(Protocol::Opaque);
    }
    *came = true;
    classify(&first[..len]).ok_or_else(|| ErrorKind::WouldBlock.into())
}

/// `None` while the bytes are still a prefix of some method or of the HTTP/2 preface.
fn classify(first: &[u8]) -> Option<Protocol> {
    if first.starts_with(HTTP2_PREFACE) {
        return Some(Protocol::Http2);
    }
    let mut undecided = HTTP2_PREFACE.starts_with(first);
    for method in HTTP_METHODS {
        if first.starts_with(method) {
            return Some(Protocol::Http1);
        }
        undecided |= method.starts_with(first);
    }
    (!undecided).then_some(Protocol::Opaque)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::pair;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_method_split_over_two_writes_is_waited_for() {
        let (mut client, server) = pair().await;
        client.write_all(b"GE").await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&server).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(sniffing.await.unwrap(), Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn the_http2_preface_is_told_apart_from_a_request_line() {
        let (mut client, server) = pair().await;
        client.write_all(&HTTP2_PREFACE[..10]).await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&server).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(&HTTP2_PREFACE[10..]).await.unwrap();
        assert_eq!(sniffing.await.unwrap(), Some(Protocol::Http2));
    }

    #[tokio::test]
    async fn a_client_that_stops_mid_method_is_relayed_without_waiting_out_the_deadline() {
        let (mut client, server) = pair().await;
        client.write_all(b"PO").await.unwrap();
        client.shutdown().await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(sniff(&server).await, Some(Protocol::Opaque));
        assert!(started.elapsed() < SNIFF_TIMEOUT, "{:?}", started.elapsed());
    }

    #[test]
    fn http_is_recognised_by_its_method_and_anything_else_is_relayed() {
        assert_eq!(classify(b"GET / HT"), Some(Protocol::Http1));
        assert_eq!(classify(b"DELETE /"), Some(Protocol::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Opaque));
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(HTTP2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"get / "), Some(Protocol::Opaque));
    }
}
