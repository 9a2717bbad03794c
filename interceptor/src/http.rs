//! HTTP plumbing that every part shares: the body type the proxy sends, its constructors, the
//! answers cheops gives itself, the headers that belong to one hop only, and the pooled client
//! to this site's instances.
use std::{future::Future, time::Duration};

use bytes::Bytes;
use futures_util::{future::Either, FutureExt};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap, Response, StatusCode,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use tracing::warn;

/// The response header naming the site whose instance answered.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-cheops-site");

/// Every body the proxy sends: streamed from a client or an instance, or made here.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The pooled client to this site's instances.
pub type InstanceClient = Client<HttpConnector, ProxyBody>;

pub fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A client that keeps connections to this site's instances open between requests.
pub fn instance_client(connect_timeout: Duration) -> InstanceClient {
    pooled_client(connect_timeout, false)
}

/// The same, speaking HTTP/2 with prior knowledge: for clients that spoke it to the service
/// (gRPC), so the service speaks it too; one connection carries every stream.
pub fn http2_instance_client(connect_timeout: Duration) -> InstanceClient {
    pooled_client(connect_timeout, true)
}

fn pooled_client(connect_timeout: Duration, http2_only: bool) -> InstanceClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .http2_only(http2_only)
        .build(connector)
}

/// `work`, given up after `limit` when there is one: `Err(limit)` then. Not an `async fn`,
/// which would hold `work` twice (its argument, and the timeout made of it): a request's
/// future is copied whole when its task is spawned.
pub fn within<F: Future>(
    limit: Option<Duration>,
    work: F,
) -> impl Future<Output = Result<F::Output, Duration>> {
    match limit {
        Some(limit) => {
            Either::Left(tokio::time::timeout(limit, work).map(move |done| done.map_err(|_| limit)))
        }
        None => Either::Right(work.map(Ok)),
    }
}

/// Marks an answer made by cheops itself, with its sentence: a gRPC call gets it in gRPC form.
#[derive(Clone, Debug)]
pub struct CheopsAnswer(pub String);

/// An answer made by cheops itself: `status` and one sentence of plain text, logged too.
pub fn error_response(status: StatusCode, message: String) -> Response<ProxyBody> {
    warn!("{message}");
    let mut response = Response::new(full_body(format!("cheops: {message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.extensions_mut().insert(CheopsAnswer(message));
    response
}

/// Headers that describe how a body is framed on the wire: a body that is rewritten or sent
/// again gets them anew from hyper.
pub fn is_framing_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(header::CONTENT_LENGTH.as_str())
        || name.eq_ignore_ascii_case(header::TRANSFER_ENCODING.as_str())
}

/// The names of `HOP_BY_HOP`, compared with a header's tokens without making names of them.
const HOP_BY_HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Connection-level headers belong to one hop; the proxy's connections have their own.
pub static HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static(HOP_BY_HOP_NAMES[0]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[1]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[2]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[3]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[4]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[5]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[6]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[7]),
];

/// Where `connection` and `te` are in `HOP_BY_HOP`.
const CONNECTION_AT: usize = 0;
const TE_AT: usize = 4;

/// A head's header fields as the rules on which ones go on need them: a `HeaderMap`, or the
/// fast path's fields read in place (`proxy::fast`), so that one piece of code decides for
/// both.
pub trait HeaderTable {
    /// Which of `HOP_BY_HOP` the head carries: bit `i` for `HOP_BY_HOP[i]`.
    fn hop_by_hop_present(&self) -> u32 {
        self.present_among(&HOP_BY_HOP)
    }
    /// The values of `HOP_BY_HOP[at]`, in order.
    fn hop_by_hop_values(&self, at: usize) -> impl Iterator<Item = &[u8]> {
        self.values(&HOP_BY_HOP[at])
    }
    /// Removes every field of `HOP_BY_HOP[at]`.
    fn remove_hop_by_hop(&mut self, at: usize) {
        self.remove(&HOP_BY_HOP[at]);
    }
    /// Which of `names` (at most 32) the head carries: bit `i` for `names[i]`.
    fn present_among(&self, names: &[HeaderName]) -> u32;
    /// The values of `name`, in order.
    fn values(&self, name: &HeaderName) -> impl Iterator<Item = &[u8]>;
    /// Removes every field of `name`.
    fn remove(&mut self, name: &HeaderName);
    /// Sets `name` to `value` alone.
    fn insert(&mut self, name: &'static HeaderName, value: &'static str);
}

impl HeaderTable for HeaderMap {
    fn present_among(&self, names: &[HeaderName]) -> u32 {
        // Most names present are none of `names`, and their length alone tells them apart:
        // cheaper than comparing each with every one of `names`.
        let lengths = names.iter().fold(0, |bits, n| bits | length_bit(n));
        self.keys().fold(0, |bits, name| {
            if lengths & length_bit(name) == 0 {
                return bits;
            }
            names
                .iter()
                .position(|n| n == name)
                .map_or(bits, |i| bits | 1 << i)
        })
    }

    fn values(&self, name: &HeaderName) -> impl Iterator<Item = &[u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }

    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }

    fn insert(&mut self, name: &'static HeaderName, value: &'static str) {
        HeaderMap::insert(self, name, HeaderValue::from_static(value));
    }
}

/// A bit for the length of `name` (those of 63 bytes and more share the last).
fn length_bit(name: &HeaderName) -> u64 {
    1 << name.as_str().len().min(63)
}

/// Whether a header value is text (`HeaderValue::to_str`: visible ASCII and tabs).
pub fn is_text(value: &[u8]) -> bool {
    value.iter().all(|b| *b == b'\t' || (32..127).contains(b))
}

/// The comma-separated parts of a header value that is text (`Connection`), trimmed.
pub fn value_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let parts = is_text(value).then(|| value.split(|b| *b == b','));
    parts.into_iter().flatten().map(<[u8]>::trim_ascii)
}

/// Removes the hop-by-hop headers, and those the `Connection` header names.
/// `te: trailers` stays: gRPC servers require it, and every hop of cheops relays trailers.
pub fn remove_hop_by_hop_headers(headers: &mut impl HeaderTable) {
    // Most messages carry none, or only `connection: keep-alive`: one look at the names
    // present costs less than a removal (a hash and a probe) of each name.
    let present = headers.hop_by_hop_present();
    if present == 0 {
        return;
    }
    let is_present = |at: usize| present & (1 << at) != 0;
    let (trailers_accepted, te_once) = match is_present(TE_AT) {
        true => {
            let mut values = headers.hop_by_hop_values(TE_AT);
            let first = values.next();
            (
                first == Some(b"trailers".as_slice()),
                values.next().is_none(),
            )
        }
        false => (false, false),
    };
    // `te: trailers` alone (every gRPC call's): nothing to remove, nor to put back.
    if present == 1 << TE_AT && trailers_accepted && te_once {
        return;
    }
    if is_present(CONNECTION_AT) {
        // Gathered first, as removing fields changes those of `Connection` read.
        let mut named_in_connection = Vec::new();
        for value in headers.hop_by_hop_values(CONNECTION_AT) {
            // The most common value, one hop-by-hop name, told without splitting it.
            if value.eq_ignore_ascii_case(b"keep-alive") {
                continue;
            }
            for name in value_tokens(value) {
                // Those are removed below anyway (`keep-alive`, most often).
                let hop_by_hop = HOP_BY_HOP_NAMES
                    .iter()
                    .any(|n| n.as_bytes().eq_ignore_ascii_case(name));
                if hop_by_hop {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(name) {
                    named_in_connection.push(name);
                }
            }
        }
        for name in &named_in_connection {
            headers.remove(name);
        }
    }
    // Those present only, in `HOP_BY_HOP`'s order: the lowest bit left first.
    let mut left = present;
    while left != 0 {
        headers.remove_hop_by_hop(left.trailing_zeros() as usize);
        left &= left - 1;
    }
    if trailers_accepted {
        headers.insert(&HOP_BY_HOP[TE_AT], "trailers");
    }
}

/// Removes every header named in `names`, looking first whether any is there.
pub fn remove_headers(headers: &mut impl HeaderTable, names: &[HeaderName]) {
    if headers.present_among(names) != 0 {
        for name in names {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        assert_eq!(HOP_BY_HOP[CONNECTION_AT], header::CONNECTION);
        assert_eq!(HOP_BY_HOP[TE_AT], header::TE);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-scope", HeaderValue::from_static("{a: B}"));
        remove_hop_by_hop_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-scope"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        remove_hop_by_hop_headers(&mut headers);
        assert_eq!(headers[header::TE], "trailers");
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        remove_hop_by_hop_headers(&mut headers);
        assert!(!headers.contains_key(header::TE));
    }

    #[test]
    fn te_trailers_alone_stays_where_it_was() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        remove_hop_by_hop_headers(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["te", "content-type"]);
    }

    #[test]
    fn names_of_the_same_length_as_those_looked_for_are_not_taken_for_them() {
        let mut headers = HeaderMap::new();
        // As long as `connection` and `keep-alive`, and as `te`.
        headers.insert(header::USER_AGENT, HeaderValue::from_static("grpc-go"));
        headers.insert("xy", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        assert_eq!(headers.hop_by_hop_present(), 1 << 1);
    }

    #[test]
    fn a_connection_of_keep_alive_alone_goes_with_keep_alive_and_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        headers.append(header::CONNECTION, HeaderValue::from_static("x-private"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("x-scope", HeaderValue::from_static("a"));
        remove_hop_by_hop_headers(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-scope"]);
    }
}
