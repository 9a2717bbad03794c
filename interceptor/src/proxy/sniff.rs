//! What protocol a new connection speaks, told from its first bytes without consuming them.
use std::time::Duration;

use tokio::net::TcpStream;

/// How long a new connection may stay silent before it is taken for a protocol where the
/// server speaks first, and relayed as plain TCP.
const SNIFF_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
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

/// Looks at the first bytes without consuming them: an HTTP/1 request line starts with a method.
pub async fn sniff(stream: &TcpStream) -> Protocol {
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    let mut first = [0u8; 8];
    loop {
        let read = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await;
        let Ok(Ok(len)) = read else {
            return Protocol::Opaque;
        };
        if len == 0 {
            return Protocol::Opaque;
        }
        if let Some(protocol) = classify(&first[..len]) {
            return protocol;
        }
        // Only part of a method arrived: wait for the rest, briefly.
        if tokio::time::Instant::now() >= deadline {
            return Protocol::Opaque;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `None` while the bytes are still a prefix of some method.
fn classify(first: &[u8]) -> Option<Protocol> {
    let mut undecided = false;
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

    #[test]
    fn http_is_recognised_by_its_method_and_anything_else_is_relayed() {
        assert_eq!(classify(b"GET / HT"), Some(Protocol::Http1));
        assert_eq!(classify(b"DELETE /"), Some(Protocol::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Opaque));
        assert_eq!(classify(b"PRI * HT"), Some(Protocol::Opaque));
        assert_eq!(classify(b"get / "), Some(Protocol::Opaque));
    }
}
