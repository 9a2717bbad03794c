//! The heads of the fast path, read once with `httparse` and written as hyper writes them: a
//! request the fast path takes (`parse_request`), the head it sends to the instance
//! (`encode_request`), the instance's answer (`parse_answer`) and the head the client gets
//! (`encode_answer`, hyper's server encoding of the same answer: names in lower case, its
//! framing header, `date` when the answer has none).
use std::{cell::RefCell, time::SystemTime};

use bytes::Bytes;
use hyper::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap, Method, StatusCode, Uri,
};

use crate::proxy::grpc;

/// As many header fields as hyper's HTTP/1 parser takes.
const MAX_HEADERS: usize = 100;
/// The longest request target hyper takes (longer ones it answers 414).
const MAX_TARGET_LEN: usize = u16::MAX as usize - 1;

/// A request the fast path serves: HTTP/1.1, origin-form, no upgrade nor expectation, a body
/// absent or of a `Content-Length`.
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The length of the head, in bytes; the body follows.
    pub len: usize,
    pub body_len: u64,
    /// The client asked to close the connection after this request.
    pub close: bool,
}

/// What the bytes read so far hold.
// Moved once per request: a box would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Part of a head: read on.
    Partial,
    /// A head the fast path leaves to hyper (hyper also tells malformed ones).
    NotFast,
    Fast(RequestHead),
}

pub fn parse_request(bytes: &[u8]) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotFast,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::NotFast;
    };
    if !target.starts_with('/') || target.len() > MAX_TARGET_LEN {
        return Parsed::NotFast;
    }
    // The head copied once: the target and the header values are slices of it.
    let head = Shared::new(bytes, len);
    let (Ok(method), Ok(uri)) = (
        Method::from_bytes(method.as_bytes()),
        Uri::from_maybe_shared(head.slice(target.as_bytes())),
    ) else {
        return Parsed::NotFast;
    };
    if method == Method::CONNECT {
        return Parsed::NotFast;
    }
    let Some(headers) = header_map(request.headers, &head) else {
        return Parsed::NotFast;
    };
    let not_fast = [header::TRANSFER_ENCODING, header::EXPECT, header::UPGRADE];
    if not_fast.iter().any(|name| headers.contains_key(name)) || grpc::is_grpc(&headers) {
        return Parsed::NotFast;
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let body_len = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some(length), None) => match content_length(length) {
            Some(length) => length,
            None => return Parsed::NotFast,
        },
        (Some(_), Some(_)) => return Parsed::NotFast,
    };
    let connection = headers.get_all(header::CONNECTION);
    if connection.iter().any(|value| has_token(value, "upgrade")) {
        return Parsed::NotFast;
    }
    let close = connection.iter().any(|value| has_token(value, "close"));
    Parsed::Fast(RequestHead {
        method,
        uri,
        headers,
        len,
        body_len,
        close,
    })
}

/// A head read into a buffer, copied once so that its parts share the copy, as hyper's do.
struct Shared<'a> {
    read: &'a [u8],
    copy: Bytes,
}

impl Shared<'_> {
    fn new(read: &[u8], len: usize) -> Shared<'_> {
        Shared {
            read,
            copy: Bytes::copy_from_slice(&read[..len]),
        }
    }

    /// `part`, a slice of the buffer the head was read into, as the same bytes of the copy.
    fn slice(&self, part: &[u8]) -> Bytes {
        let at = part.as_ptr() as usize - self.read.as_ptr() as usize;
        self.copy.slice(at..at + part.len())
    }
}

fn header_map(fields: &[httparse::Header<'_>], head: &Shared<'_>) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(field.value)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// A `Content-Length` as hyper reads it: digits only.
fn content_length(value: &HeaderValue) -> Option<u64> {
    let digits = value.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether a comma-separated header value (`Connection`) holds `token`.
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|text| {
        text.split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    })
}

/// The head sent to the instance: origin-form, `headers` as they are (hyper's client adds
/// nothing to a request whose framing is its `Content-Length` or no body).
pub fn encode_request(dst: &mut Vec<u8>, method: &Method, uri: &Uri, headers: &HeaderMap) {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    for part in [method.as_str(), " ", target, " HTTP/1.1\r\n"] {
        dst.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        write_field(dst, name.as_str(), value.as_bytes());
    }
    dst.extend_from_slice(b"\r\n");
}

/// How a body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Up to the end of the connection.
    UntilClose,
}

/// An instance's answer.
pub struct AnswerHead {
    pub status: StatusCode,
    /// Its reason phrase when it is not the status's own (hyper relays it).
    pub reason: Option<Bytes>,
    pub http11: bool,
    pub headers: HeaderMap,
    /// How its body comes; `None`: it has none.
    pub body: Option<Framing>,
    /// Whether the instance keeps the connection open after it.
    pub keep_alive: bool,
    pub len: usize,
}

/// Why an answer cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BadAnswer {
    #[error("{0}")]
    Parse(#[from] httparse::Error),
    #[error("a header field that HTTP does not allow")]
    Field,
    #[error("its content-length")]
    Length,
    #[error("101 Switching Protocols to a request that asked for none")]
    Switching,
}

/// An answer to a request of `method` in `bytes`: `None` while its head is incomplete.
pub fn parse_answer(bytes: &[u8], method: &Method) -> Result<Option<AnswerHead>, BadAnswer> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut fields);
    let len = match answer.parse(bytes)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = StatusCode::from_u16(answer.code.unwrap_or_default())
        .map_err(|_| BadAnswer::Parse(httparse::Error::Status))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(BadAnswer::Switching);
    }
    let reason = answer
        .reason
        .filter(|reason| Some(*reason) != status.canonical_reason())
        .map(|reason| Bytes::copy_from_slice(reason.as_bytes()));
    let http11 = answer.version == Some(1);
    let headers = header_map(answer.headers, &Shared::new(bytes, len)).ok_or(BadAnswer::Field)?;
    let connection = headers.get_all(header::CONNECTION);
    let keep_alive = if http11 {
        !connection.iter().any(|value| has_token(value, "close"))
    } else {
        connection
            .iter()
            .any(|value| has_token(value, "keep-alive"))
    };
    let has_body = !(method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let body = match headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        _ if !has_body => None,
        Some(last) if has_token_last(last, "chunked") => Some(Framing::Chunked),
        Some(_) => Some(Framing::UntilClose),
        None => answer_length(&headers)?.map_or(Some(Framing::UntilClose), |length| {
            (length > 0).then_some(Framing::Length(length))
        }),
    };
    Ok(Some(AnswerHead {
        status,
        reason,
        http11,
        headers,
        body,
        keep_alive,
        len,
    }))
}

/// Whether the last of a comma-separated value is `token` (`Transfer-Encoding`).
fn has_token_last(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|text| {
        text.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case(token))
    })
}

/// An answer's `Content-Length`, every one alike, or none.
fn answer_length(headers: &HeaderMap) -> Result<Option<u64>, BadAnswer> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let length = content_length(value).ok_or(BadAnswer::Length)?;
        if found.is_some_and(|found| found != length) {
            return Err(BadAnswer::Length);
        }
        found = Some(length);
    }
    Ok(found)
}

/// How hyper's server sends an answer's body: its length known, or not (a chunked or
/// close-delimited answer from the instance); `None`: no body at all.
#[derive(Clone, Copy)]
pub enum BodyLength {
    Known(u64),
    Unknown,
}

/// What the client gets in answer to a request of `method`.
pub struct Answer<'a> {
    pub status: StatusCode,
    pub reason: Option<&'a [u8]>,
    pub http11: bool,
    pub headers: &'a HeaderMap,
    pub body: Option<BodyLength>,
}

/// Writes the answer's head as hyper's HTTP/1 server does, and tells how its body goes;
/// `Length(0)` when it has none.
pub fn encode_answer(dst: &mut Vec<u8>, answer: &Answer<'_>, method: &Method) -> Framing {
    let status = answer.status;
    dst.extend_from_slice(if answer.http11 {
        b"HTTP/1.1 "
    } else {
        b"HTTP/1.0 "
    });
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    let reason = answer
        .reason
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("<none>").as_bytes());
    dst.extend_from_slice(reason);
    dst.extend_from_slice(b"\r\n");
    let head = *method == Method::HEAD;
    let no_content = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let can_chunk = answer.http11 && !head && !no_content;
    let mut framing = None;
    let mut previous = None;
    for (name, value) in answer.headers {
        let again = previous == Some(name);
        previous = Some(name);
        if name == header::CONTENT_LENGTH {
            // As hyper: with a body, its first length stands; without, only HEAD keeps them.
            match answer.body {
                Some(_) if again => continue,
                Some(BodyLength::Known(len)) => framing = Some(Framing::Length(len)),
                Some(BodyLength::Unknown) => match content_length(value) {
                    Some(len) => framing = Some(Framing::Length(len)),
                    None => continue,
                },
                None if head => framing = Some(Framing::Length(0)),
                None => continue,
            }
        }
        write_field(dst, name.as_str(), value.as_bytes());
    }
    let framing = framing.unwrap_or_else(|| match answer.body {
        Some(BodyLength::Unknown) if can_chunk => {
            dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
        Some(BodyLength::Unknown) => Framing::UntilClose,
        Some(BodyLength::Known(len)) if !no_content && len > 0 => {
            write_field(dst, "content-length", len.to_string().as_bytes());
            Framing::Length(len)
        }
        _ => {
            if !head && !no_content {
                dst.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Length(0)
        }
    });
    let headers = answer.headers;
    if !headers.contains_key(header::DATE) {
        write_field(dst, "date", &now_as_http_date());
    }
    dst.extend_from_slice(b"\r\n");
    if head || no_content {
        return Framing::Length(0);
    }
    framing
}

fn write_field(dst: &mut Vec<u8>, name: &str, value: &[u8]) {
    dst.extend_from_slice(name.as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// Now as an HTTP date, formatted once a second per thread (as hyper keeps its own).
fn now_as_http_date() -> [u8; 29] {
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            cached.1.copy_from_slice(&text.as_bytes()[..29]);
            cached.0 = second;
        }
        cached.1
    })
}
