//! The heads of the fast path, read once with `httparse` and written as hyper writes them,
//! from the fields where they lie in the read buffer (`fields`): a request the fast path
//! takes (`parse_request`, which writes what goes on to the instance), the instance's answer
//! (`parse_answer`, which has the head the client gets written by `answer`).
use std::{mem::MaybeUninit, time::Instant};

use bytes::Bytes;
use hyper::{
    header::{HeaderName, HeaderValue},
    HeaderMap, Method, StatusCode, Uri,
};

use super::{
    answer::{encode_answer, write_field, Answer, BodyLength, Framing},
    buffers,
    fields::{content_length, Fields, MAX_HEADERS},
    names::{same_name, Known},
};
use crate::{
    http::{remove_hop_by_hop_headers, value_tokens, SERVED_BY},
    proxy::{grpc, request::strip_for_instance},
    scope::carriers::CARRIER_HEADERS,
};

/// The longest request target hyper takes (longer ones it answers 414).
const MAX_TARGET_LEN: usize = u16::MAX as usize - 1;
/// The longest header name `HeaderName` takes.
const MAX_NAME_LEN: usize = u16::MAX as usize;

/// A request the fast path serves: HTTP/1.1, origin-form, no upgrade nor expectation, a body
/// absent or of a `Content-Length`.
pub struct RequestHead {
    pub method: Method,
    /// Its target, made only for the log line (when `info` is on).
    pub uri: Option<Uri>,
    pub fields: RequestFields,
    /// The length of the head, in bytes; the body follows.
    pub len: usize,
    pub body_len: u64,
    /// The client asked to close the connection after this request.
    pub close: bool,
}

/// A request's header fields, as the decisions on it need them.
pub enum RequestFields {
    /// A request that carries no scope: the head for the instance written up to the fields
    /// that the decisions add (its own, without those `strip_for_instance` removes).
    Written { head: Vec<u8>, host: bool },
    /// A request with a header that carries a scope, which the decisions read and rewrite;
    /// the head for the instance written up to its fields.
    Map { headers: HeaderMap, head: Vec<u8> },
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

/// The request in `bytes`; `token_header`: the header the auth token (a scope carrier) is in;
/// `body_room`: at most the room to keep after the instance's head for the body.
pub fn parse_request(bytes: &[u8], token_header: &HeaderName, body_room: u64) -> Parsed {
    // Left unset: httparse sets those it reads, and filling all of them first costs more
    // than reading a head.
    let mut fields = [MaybeUninit::uninit(); MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(bytes, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotFast,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::NotFast;
    };
    if !plain_target(target) || target.len() > MAX_TARGET_LEN {
        return Parsed::NotFast;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::NotFast;
    };
    if method == Method::CONNECT || !names_fit(request.headers) {
        return Parsed::NotFast;
    }
    let mut fields = Fields::new(request.headers);
    fields.index();
    let not_fast = [Known::TransferEncoding, Known::Expect, Known::Upgrade];
    if not_fast.into_iter().any(|known| fields.has(known))
        || grpc::is_grpc_type(fields.known_values(Known::ContentType).next())
    {
        return Parsed::NotFast;
    }
    let mut lengths = fields.known_values(Known::ContentLength);
    let body_len = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some(length), None) => match content_length(length) {
            Some(length) => length,
            None => return Parsed::NotFast,
        },
        (Some(_), Some(_)) => return Parsed::NotFast,
    };
    let mut close = false;
    for token in fields
        .known_values(Known::Connection)
        .flat_map(value_tokens)
    {
        if token.eq_ignore_ascii_case(b"upgrade") {
            return Parsed::NotFast;
        }
        close |= token.eq_ignore_ascii_case(b"close");
    }
    // Not a chain of the two: its iterator costs more than the looks.
    let carries = |name: &HeaderName| fields.contains(name.as_str().as_bytes());
    let carried = CARRIER_HEADERS.iter().any(carries) || carries(token_header);
    // The log line's path, as hyper's path logs it (a plain target always makes a `Uri`);
    // nothing when it is not logged.
    let uri = tracing::enabled!(tracing::Level::INFO)
        .then(|| Uri::from_maybe_shared(Bytes::copy_from_slice(target.as_bytes())).ok())
        .flatten();
    let carried_map = if carried {
        // The decisions read a scope: they take a map, as hyper's path gives them.
        let Some(headers) = header_map(request.headers, &Shared::new(bytes, len)) else {
            return Parsed::NotFast;
        };
        Some(headers)
    } else {
        strip_for_instance(&mut fields);
        None
    };
    let room = body_len.min(body_room) as usize;
    let mut head = buffers::take(len + 256 + room);
    request_line(&mut head, &method, target);
    let fields = match carried_map {
        Some(headers) => RequestFields::Map { headers, head },
        None => {
            for (name, value) in fields.iter() {
                write_field(&mut head, name, value, bytes);
            }
            let host = fields.has(Known::Host);
            RequestFields::Written { head, host }
        }
    };
    Parsed::Fast(RequestHead {
        method,
        uri,
        fields,
        len,
        body_len,
        close,
    })
}

/// Whether `target` is a path (and query) of the bytes that need no encoding in either, which
/// hyper's `Uri` takes as they are (nothing cut, nothing to refuse): the fast path leaves any
/// other target to hyper, which tells how it reads it, without making a `Uri` of each.
fn plain_target(target: &str) -> bool {
    target.starts_with('/')
        && target
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"/?-._~%!$&'()*+,;=:@".contains(&byte))
}

/// Whether every name is one `HeaderName` takes (httparse takes the same letters).
fn names_fit(fields: &[httparse::Header<'_>]) -> bool {
    fields.iter().all(|field| field.name.len() <= MAX_NAME_LEN)
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

/// Whether a comma-separated header value (`Connection`) holds `token`.
fn has_token(value: &[u8], token: &str) -> bool {
    // The most common value, `keep-alive` alone, told without splitting it (a word at a time).
    if same_name(value, b"keep-alive") {
        return token.eq_ignore_ascii_case("keep-alive");
    }
    value_tokens(value).any(|part| part.eq_ignore_ascii_case(token.as_bytes()))
}

/// The request line sent to the instance: origin-form.
pub fn request_line(dst: &mut Vec<u8>, method: &Method, target: &str) {
    for part in [method.as_str(), " ", target, " HTTP/1.1\r\n"] {
        dst.extend_from_slice(part.as_bytes());
    }
}

/// `headers` as they are, after a request line (hyper's client adds nothing to a request
/// whose framing is its `Content-Length` or no body), and the head's end.
pub fn end_request(dst: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        write_field(dst, name.as_str().as_bytes(), value.as_bytes(), &[]);
    }
    dst.extend_from_slice(b"\r\n");
}

/// An instance's answer, and the head the client gets of it.
pub struct AnswerHead {
    pub status: StatusCode,
    /// How its body comes; `None`: it has none.
    pub body: Option<Framing>,
    /// Whether the instance keeps the connection open after it.
    pub keep_alive: bool,
    pub len: usize,
    /// The head the client gets.
    pub head: Vec<u8>,
    /// How the client gets its body.
    pub to: Framing,
    /// When it was read (the end of the request's time, and the client's `date`).
    pub at: Instant,
}

/// What the bytes read of an answer hold.
pub enum AnswerRead {
    /// Part of a head: read on.
    Partial,
    /// An interim (1xx) answer of this length, passed over as hyper's client does.
    Interim(usize),
    Final(AnswerHead),
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

/// What the client's head says besides the answer: the request's method, the site that
/// served (`x-cheops-site`), whether the client's connection closes after it.
#[derive(Clone, Copy)]
pub struct AnswerTo<'a> {
    pub method: &'a Method,
    pub served_by: &'a HeaderValue,
    pub close: bool,
}

/// The answer in `bytes`, read `at`, and the head the client gets of it.
pub fn parse_answer(bytes: &[u8], to: &AnswerTo<'_>, at: Instant) -> Result<AnswerRead, BadAnswer> {
    let served_by = SERVED_BY;
    // Left unset, as the request's.
    let mut fields = [MaybeUninit::uninit(); MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut answer,
        bytes,
        &mut fields,
    );
    let len = match parsed? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(AnswerRead::Partial),
    };
    let status = StatusCode::from_u16(answer.code.unwrap_or_default())
        .map_err(|_| BadAnswer::Parse(httparse::Error::Status))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(BadAnswer::Switching);
    }
    if !names_fit(answer.headers) {
        return Err(BadAnswer::Field);
    }
    if status.is_informational() {
        return Ok(AnswerRead::Interim(len));
    }
    let reason = answer
        .reason
        .filter(|reason| Some(*reason) != status.canonical_reason())
        .map(str::as_bytes);
    let http11 = answer.version == Some(1);
    let mut fields = Fields::new(answer.headers);
    fields.index();
    let connection = || fields.known_values(Known::Connection);
    let keep_alive = if http11 {
        !connection().any(|value| has_token(value, "close"))
    } else {
        connection().any(|value| has_token(value, "keep-alive"))
    };
    let has_body = !(*to.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let body = match fields.known_values(Known::TransferEncoding).last() {
        _ if !has_body => None,
        Some(last) if has_token_last(last, "chunked") => Some(Framing::Chunked),
        Some(_) => Some(Framing::UntilClose),
        None => answer_length(&fields)?.map_or(Some(Framing::UntilClose), |length| {
            (length > 0).then_some(Framing::Length(length))
        }),
    };
    remove_hop_by_hop_headers(&mut fields);
    fields.set(served_by.as_str().as_bytes(), to.served_by.as_bytes());
    if to.close {
        fields.set(b"connection", b"close");
    }
    // Room for what came of the body too, which is gathered after the head.
    let mut head = buffers::take(bytes.len() + 128);
    let client = Answer {
        status,
        reason,
        http11,
        has_date: fields.has(Known::Date),
        at,
        body: body.map(|framing| match framing {
            Framing::Length(len) => BodyLength::Known(len),
            Framing::Chunked | Framing::UntilClose => BodyLength::Unknown,
        }),
    };
    let framing = encode_answer(&mut head, &client, fields.iter(), to.method, bytes);
    Ok(AnswerRead::Final(AnswerHead {
        status,
        body,
        keep_alive,
        len,
        head,
        to: framing,
        at,
    }))
}

/// Whether the last of a comma-separated value is `token` (`Transfer-Encoding`).
fn has_token_last(value: &[u8], token: &str) -> bool {
    value_tokens(value)
        .last()
        .is_some_and(|last| last.eq_ignore_ascii_case(token.as_bytes()))
}

/// An answer's `Content-Length`, every one alike, or none.
fn answer_length(fields: &Fields<'_>) -> Result<Option<u64>, BadAnswer> {
    let mut found = None;
    for value in fields.known_values(Known::ContentLength) {
        let length = content_length(value).ok_or(BadAnswer::Length)?;
        if found.is_some_and(|found| found != length) {
            return Err(BadAnswer::Length);
        }
        found = Some(length);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use hyper::Uri;

    use super::{has_token, plain_target};
    use crate::http::value_tokens;

    #[test]
    fn a_token_is_found_in_a_value_as_when_it_is_split() {
        let values = [
            "keep-alive",
            "Keep-Alive",
            "KEEP-ALIVE",
            " keep-alive",
            "keep-alive, close",
            "close",
            "Close",
            "upgrade, keep-alive",
            "keep-alivf",
            "keep-alive\u{7f}",
            "",
        ];
        for value in values {
            for token in ["close", "keep-alive"] {
                let split = value_tokens(value.as_bytes())
                    .any(|t| t.eq_ignore_ascii_case(token.as_bytes()));
                assert_eq!(
                    has_token(value.as_bytes(), token),
                    split,
                    "{token} in {value:?}"
                );
            }
        }
    }

    #[test]
    fn a_plain_target_is_one_uri_takes_as_it_is() {
        let plain = [
            "/",
            "/1k",
            "/a/b.c?x=1&y=%20z",
            "/~me/(1)*!$';:@,+_-",
            "/a?b?c=d",
        ];
        for target in plain {
            assert!(plain_target(target), "{target}");
            let uri: Uri = target.parse().unwrap();
            assert_eq!(uri.path_and_query().unwrap().as_str(), target);
        }
        let others = [
            "/a#b", "/a b", "/{a}", "/a|b", "/a^b", "/a`b", "/\u{e9}", "*", "a/b", "",
        ];
        for target in others {
            assert!(!plain_target(target), "{target}");
        }
    }
}
