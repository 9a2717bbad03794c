//! Between HTTP and the replication layer's calls and answers, in one place.
use bytes::Bytes;
use hyper::{
    header::{HeaderName, HeaderValue},
    http::request::Parts,
    Response, StatusCode,
};

use super::call::{Answer, Call};
use crate::http::{error_response, full_body, ProxyBody};
/// The request as a replication call: its body must be text (JSON, in practice), since it is
/// kept in the log and rewritten.
pub fn call_of(
    parts: &Parts,
    service: &str,
    body: &Bytes,
) -> Result<Call, Box<Response<ProxyBody>>> {
    let body = String::from_utf8(body.to_vec()).map_err(|_| {
        Box::new(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a request to service '{service}' that replication or cross handles must have a UTF-8 (JSON) body"),
        ))
    })?;
    Ok(Call {
        service: service.to_owned(),
        method: parts.method.as_str().to_owned(),
        target: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
        body,
    })
}

/// An answer of the replicator as an HTTP response (its length set anew: bodies are rewritten).
pub fn response_of(answer: Answer) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in answer.headers {
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
