//! Between HTTP and the replication layer's calls and answers, in one place: requests from
//! clients become calls and answers become responses (the proxy's side); calls become requests
//! to this site's instance and its responses become answers (the instance's side).
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{
    body::Incoming,
    header::{HeaderName, HeaderValue},
    http::request::Parts,
    HeaderMap, Method, Request, Response, StatusCode, Uri,
};

use super::call::{Answer, Call};
use crate::http::{error_response, full_body, is_framing_header, ProxyBody};

/// Why a call cannot be sent as an HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum Unsendable {
    #[error("bad request target {target}: {cause}")]
    Target {
        target: String,
        cause: hyper::http::uri::InvalidUri,
    },
    #[error("bad method {method}: {cause}")]
    Method {
        method: String,
        cause: hyper::http::method::InvalidMethod,
    },
    #[error("the request cannot be built: {0}")]
    Request(#[from] hyper::http::Error),
}

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
        headers: pairs_of(&parts.headers),
        body,
    })
}

/// An answer of the replicator as an HTTP response.
pub fn response_of(answer: Answer) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    put_headers(answer.headers, response.headers_mut());
    response
}

/// `call` as a request to the instance listening at `authority` (`host:port`).
pub fn request_of(call: Call, authority: &str) -> Result<Request<ProxyBody>, Unsendable> {
    let uri: Uri = format!("http://{authority}{}", call.target)
        .parse()
        .map_err(|cause| Unsendable::Target {
            target: call.target.clone(),
            cause,
        })?;
    let method =
        Method::from_bytes(call.method.as_bytes()).map_err(|cause| Unsendable::Method {
            method: call.method.clone(),
            cause,
        })?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(full_body(call.body))?;
    // The client's host is not the instance's: the URI names the instance.
    let headers = call
        .headers
        .into_iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"));
    put_headers(headers, request.headers_mut());
    Ok(request)
}

/// The instance's response as an answer, its body read whole.
pub async fn answer_of(response: Response<Incoming>) -> Result<Answer, hyper::Error> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: pairs_of(&parts.headers),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The headers that are text, as pairs.
fn pairs_of(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// The one place where framing headers are left out: bodies are rewritten (IDs) and a call
/// may come from a log written long ago, so hyper sets the length of what is sent anew.
fn put_headers(pairs: impl IntoIterator<Item = (String, String)>, headers: &mut HeaderMap) {
    for (name, value) in pairs {
        if is_framing_header(&name) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
}
