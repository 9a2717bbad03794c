//! gRPC through the proxy: a call is told by its content type; cheops's own answers to it take
//! gRPC's form (HTTP 200, `grpc-status`, `grpc-message`), which gRPC clients report as the
//! status it is, where a plain 502 reads as a protocol error; the call's deadline bounds the
//! wait for an answer; and the status a call ends with is read off its trailers for the log.
use std::{borrow::Cow, task::Poll, time::Duration};

use http_body_util::BodyExt;
use hyper::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap, Response, StatusCode,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::hooked::{BodyHook, Hooked, Polled};
use crate::http::{empty_body, is_text, CheopsAnswer, ProxyBody, SERVED_BY};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The gRPC status codes cheops answers with or acts on.
mod code {
    pub const UNKNOWN: u32 = 2;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const UNAVAILABLE: u32 = 14;
}

/// What gRPC's spec says to percent-encode in `grpc-message`: anything but printable ASCII,
/// and `%` itself.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Whether a request (or answer) with these headers is a gRPC call: `application/grpc`, with
/// or without a `+proto`-style suffix or parameters.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    is_grpc_type(headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes))
}

/// Whether a request's (first) `Content-Type` is gRPC's.
pub fn is_grpc_type(content_type: Option<&[u8]>) -> bool {
    content_type.filter(|v| is_text(v)).is_some_and(|v| {
        v.strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";"))
    })
}

/// The status in `headers` (trailers, or the head of a trailers-only answer).
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// The gRPC status of one of cheops's own HTTP answers, as gRPC maps HTTP statuses.
fn code_of(status: StatusCode) -> u32 {
    match status {
        StatusCode::BAD_REQUEST => code::INVALID_ARGUMENT,
        StatusCode::FORBIDDEN => code::PERMISSION_DENIED,
        StatusCode::NOT_FOUND | StatusCode::NOT_IMPLEMENTED => code::UNIMPLEMENTED,
        StatusCode::PAYLOAD_TOO_LARGE => code::RESOURCE_EXHAUSTED,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => code::UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT => code::DEADLINE_EXCEEDED,
        _ => code::UNKNOWN,
    }
}

/// `response` in gRPC form when cheops made it (a trailers-only answer: HTTP 200, the status
/// and the same sentence in headers, no body); an instance's answer is left as it is.
pub fn in_grpc_form(response: Response<ProxyBody>) -> Response<ProxyBody> {
    let Some(CheopsAnswer(message)) = response.extensions().get::<CheopsAnswer>().cloned() else {
        return response;
    };
    let code = code_of(response.status());
    let (mut parts, _) = response.into_parts();
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    parts.headers.insert(GRPC_STATUS, HeaderValue::from(code));
    let message = utf8_percent_encode(&format!("cheops: {message}"), MESSAGE_ESCAPES).to_string();
    if let Ok(message) = HeaderValue::from_str(&message) {
        parts.headers.insert(GRPC_MESSAGE, message);
    }
    Response::from_parts(parts, empty_body())
}

/// The call's own deadline (`grpc-timeout`), which bounds the wait for its answer instead of
/// `proxy.response_timeout`: a streaming call may rightly wait long for its first message.
pub fn deadline(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// An answer in which the service itself (it names its site) said UNAVAILABLE before any
/// response message (a trailers-only answer): its message, or `None` for any other answer.
/// Another site's cheops's own answers are left out: that site names what happened, and a
/// call that may have run there is not sent on.
pub fn unavailable_before_any_message(response: &Response<ProxyBody>) -> Option<String> {
    let headers = response.headers();
    // The status first: an answer's head seldom has one (it comes in the trailers).
    let unavailable = status_of(headers) == Some(code::UNAVAILABLE);
    (unavailable && headers.contains_key(SERVED_BY)).then(|| {
        headers
            .get(GRPC_MESSAGE)
            .and_then(|v| v.to_str().ok())
            .map(|m| {
                percent_encoding::percent_decode_str(m)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default()
    })
}

/// How a gRPC call ended, for its log line and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// The status its trailers (or trailers-only head) carried.
    Status(u32),
    /// The answer ended with no status, or broke off.
    NoStatus,
    /// The client went away before the end.
    Cancelled,
}

/// The labels of gRPC's status codes (0 to 16), made once rather than per call.
const CODE_LABELS: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

impl CallEnd {
    pub fn label(self) -> Cow<'static, str> {
        match self {
            CallEnd::Status(code) => match CODE_LABELS.get(code as usize) {
                Some(label) => Cow::Borrowed(label),
                None => Cow::Owned(code.to_string()),
            },
            CallEnd::NoStatus => Cow::Borrowed("none"),
            CallEnd::Cancelled => Cow::Borrowed("cancelled"),
        }
    }
}

/// What watches a gRPC answer's body, relayed as it is: it calls `on_end` once with how the
/// call ended: at its trailers, at its end, or when it is dropped before (the client
/// cancelled). `on_end` is held in place, not boxed apart from the body.
struct Watched<F> {
    on_end: Option<F>,
}

impl<F: FnOnce(CallEnd)> Watched<F> {
    fn end(&mut self, end: CallEnd) {
        if let Some(on_end) = self.on_end.take() {
            on_end(end);
        }
    }
}

impl<F: FnOnce(CallEnd) + Unpin> BodyHook<ProxyBody> for Watched<F> {
    fn polled(&mut self, polled: &Polled<ProxyBody>) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let end = status_of(trailers).map_or(CallEnd::NoStatus, CallEnd::Status);
                    self.end(end);
                }
            }
            Poll::Ready(Some(Err(_)) | None) => self.end(CallEnd::NoStatus),
            Poll::Pending => {}
        }
    }

    fn dropped(&mut self, _body: &ProxyBody) {
        self.end(CallEnd::Cancelled);
    }
}

/// `response` with `on_end` called once when the call ends; a trailers-only answer has ended
/// already.
pub fn when_ended(
    response: Response<ProxyBody>,
    on_end: impl FnOnce(CallEnd) + Send + Sync + Unpin + 'static,
) -> Response<ProxyBody> {
    if let Some(code) = status_of(response.headers()) {
        on_end(CallEnd::Status(code));
        return response;
    }
    let watched = Watched {
        on_end: Some(on_end),
    };
    response.map(|body| Hooked::new(body, watched).boxed())
}

#[cfg(test)]
mod tests {
    use std::{pin::Pin, task::Context};

    use bytes::Bytes;
    use hyper::body::{Body, Frame};

    use super::*;
    use crate::http::error_response;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        assert!(is_grpc(&headers(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&headers(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(!is_grpc(&headers(&[(
            "content-type",
            "application/grpc-web"
        )])));
        assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
    }

    #[test]
    fn a_calls_end_is_labelled_by_its_code_or_how_it_ended() {
        assert_eq!(CallEnd::Status(0).label(), "0");
        assert_eq!(CallEnd::Status(14).label(), "14");
        assert_eq!(CallEnd::Status(99).label(), "99");
        assert_eq!(CallEnd::NoStatus.label(), "none");
        assert_eq!(CallEnd::Cancelled.label(), "cancelled");
    }

    #[test]
    fn deadlines_are_read_in_every_unit() {
        let of = |v| deadline(&headers(&[("grpc-timeout", v)]));
        assert_eq!(of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(of("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(of("10x"), None);
        assert_eq!(of(""), None);
        assert_eq!(deadline(&HeaderMap::new()), None);
    }

    #[test]
    fn cheops_own_answers_become_grpc_statuses_naming_the_culprit() {
        let answer = in_grpc_form(error_response(
            StatusCode::BAD_GATEWAY,
            "no site served service 'kv': site B: down (100%)".into(),
        ));
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(status_of(answer.headers()), Some(code::UNAVAILABLE));
        assert_eq!(
            answer.headers()[GRPC_MESSAGE],
            "cheops: no site served service 'kv': site B: down (100%25)"
        );
        assert!(answer.body().is_end_stream());
        let refused = in_grpc_form(error_response(StatusCode::BAD_REQUEST, "Lyon".into()));
        assert_eq!(status_of(refused.headers()), Some(code::INVALID_ARGUMENT));
        // An instance's own answer is its own business.
        let mut instance = Response::new(empty_body());
        *instance.status_mut() = StatusCode::BAD_GATEWAY;
        assert_eq!(in_grpc_form(instance).status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn only_the_services_own_unavailable_before_any_message_lets_a_call_go_on() {
        let answer = |pairs| {
            let mut response = Response::new(empty_body());
            *response.headers_mut() = headers(pairs);
            unavailable_before_any_message(&response)
        };
        assert_eq!(
            answer(&[
                ("x-cheops-site", "B"),
                ("grpc-status", "14"),
                ("grpc-message", "B%20is%20draining")
            ]),
            Some("B is draining".into())
        );
        assert_eq!(
            answer(&[("x-cheops-site", "B"), ("grpc-status", "13")]),
            None
        );
        // Another site's cheops saying its instance failed, maybe after the call ran there.
        assert_eq!(answer(&[("grpc-status", "14")]), None);
    }

    #[tokio::test]
    async fn the_end_of_a_call_is_read_off_its_trailers_or_its_cancellation() {
        let (sender, receiver) = std::sync::mpsc::channel();
        let ended = move |end| sender.send(end).unwrap();
        let finished = Response::new(frames(vec![
            Frame::data(Bytes::from_static(b"\0\0\0\0\x01a")),
            Frame::trailers(headers(&[("grpc-status", "5")])),
        ]));
        let collected = when_ended(finished, ended.clone())
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(status_of(collected.trailers().unwrap()), Some(5));
        assert_eq!(receiver.recv().unwrap(), CallEnd::Status(5));
        let streaming = Response::new(frames(vec![Frame::data(Bytes::from_static(b"x"))]));
        drop(when_ended(streaming, ended));
        assert_eq!(receiver.recv().unwrap(), CallEnd::Cancelled);
    }

    /// A body of `frames`, all ready.
    fn frames(frames: Vec<Frame<Bytes>>) -> ProxyBody {
        Frames(frames.into()).boxed()
    }

    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = hyper::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
}
