//! The chain of attempts: a request tried at each site of its route in turn, at this site's
//! instance (over the workload connection's own connection, or the pooled client) or at a
//! peer through its cheops, until one serves or
//! `plan::after` says to stop.
use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    http::request::Parts,
    HeaderMap, Request, Response, StatusCode, Uri, Version,
};

use super::{
    grpc,
    outcome::{Failed, InstanceError, InstanceOf, NotDelivered, Outcome},
    plan::{self, Next},
    replay::Replayable,
    upstream::OwnedUpstream,
};
use crate::{
    config::{CarrierSettings, ProxySettings, Service},
    http::{
        empty_body, error_response, full_body, remove_hop_by_hop_headers, within, InstanceClient,
        ProxyBody, SERVED_BY,
    },
    limits,
    metrics::ProxyCounters,
    peer::{
        wire::{header_value, INSTANCE_HTTP2, NOT_DELIVERED},
        PeerError, Peers,
    },
    scope::tokens::TokenScopes,
};

/// One attempt at one site: how it went, and the answer to give if it is the one given.
pub struct Attempt {
    pub outcome: Outcome,
    pub response: Option<Response<ProxyBody>>,
}

impl Attempt {
    fn failed(outcome: Outcome) -> Attempt {
        Attempt {
            outcome,
            response: None,
        }
    }
}

/// A request body that is sent once (streamed), kept to be sent again at the next site, or
/// streamed and sent again from what was read (a gRPC call along a chain).
pub enum RequestBody {
    Streamed(Option<Incoming>),
    Kept(Bytes),
    Replayable(Replayable),
}

impl RequestBody {
    /// The body for the next attempt; `None` when it cannot be sent again.
    fn next(&mut self) -> Option<ProxyBody> {
        match self {
            RequestBody::Streamed(body) => {
                Some(body.take().map_or_else(empty_body, BodyExt::boxed))
            }
            RequestBody::Kept(bytes) => Some(full_body(bytes.clone())),
            RequestBody::Replayable(body) => body.attempt(),
        }
    }
}

/// What the attempts need: this site's name, its instances' client, the peers, the timeouts.
pub struct Chain {
    pub site: String,
    /// `site` as the header value that names the site which served (made once).
    pub site_header: HeaderValue,
    pub upstream: InstanceClient,
    /// For requests whose client spoke HTTP/2 to the service (gRPC).
    pub upstream_http2: InstanceClient,
    pub peers: Arc<Peers>,
    pub settings: ProxySettings,
    pub carriers: CarrierSettings,
    pub token_scopes: Arc<TokenScopes>,
    pub counters: Arc<ProxyCounters>,
}

impl Chain {
    /// The whole body, up to `proxy.retry_body_limit`: to send it to several sites, or to
    /// read and rewrite it.
    pub async fn keep(&self, body: RequestBody) -> Result<Bytes, Response<ProxyBody>> {
        let body = match body {
            RequestBody::Kept(bytes) => return Ok(bytes),
            RequestBody::Streamed(None) => return Ok(Bytes::new()),
            RequestBody::Streamed(Some(body)) => body.boxed(),
            RequestBody::Replayable(body) => body.attempt().unwrap_or_else(empty_body),
        };
        match Limited::new(body, self.settings.retry_body_limit)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is over {} bytes (`proxy.retry_body_limit`), too large to \
                     keep for another site or for rewriting",
                    self.settings.retry_body_limit
                ),
            )),
            Err(err) => Err(error_response(
                StatusCode::BAD_REQUEST,
                format!("reading the request body failed: {err}"),
            )),
        }
    }

    /// Tries `sites` in order until one serves, as `plan::after` decides; this site's instance
    /// through `owned` when the workload connection has one. The last attempt takes the
    /// request's headers rather than a copy: `parts.headers` is empty after.
    pub async fn run(
        &self,
        parts: &mut Parts,
        body: RequestBody,
        service: &Service,
        sites: &[String],
        owned: Option<&OwnedUpstream>,
        grpc: bool,
    ) -> Response<ProxyBody> {
        let mut body = match body {
            // A gRPC call may stream both ways for ever: it streams to the first site at once.
            RequestBody::Streamed(Some(body)) if sites.len() > 1 && grpc => {
                RequestBody::Replayable(Replayable::new(
                    body.boxed(),
                    self.settings.retry_body_limit,
                ))
            }
            // The next site needs the body again: keep it.
            body if sites.len() > 1 => match self.keep(body).await {
                Ok(kept) => RequestBody::Kept(kept),
                Err(response) => return response,
            },
            body => body,
        };
        let mut tried = Vec::new();
        for (at, site) in sites.iter().enumerate() {
            let Some(next_body) = body.next() else {
                let limit = self.settings.retry_body_limit;
                let outcome = Outcome::NotDelivered(NotDelivered::NotReplayable { limit });
                tried.push((site.clone(), outcome));
                break;
            };
            let last = at + 1 == sites.len();
            let request = request_for_attempt(parts, next_body, last);
            let mut attempt = if *site == self.site {
                self.attempt_local(request, service, owned, grpc).await
            } else {
                // Boxed: the peer link's exchange is large, and would make every request's
                // future (copied whole when its task is spawned) as large.
                Box::pin(self.attempt_peer(site, request, service)).await
            };
            let unavailable = match (&attempt.outcome, &attempt.response) {
                (Outcome::Answered(_), Some(response)) if grpc => {
                    grpc::unavailable_before_any_message(response)
                }
                _ => None,
            };
            if let Some(message) = unavailable {
                attempt.outcome = Outcome::Unavailable(message);
            }
            match (
                plan::after(&attempt.outcome, &parts.method, !last),
                attempt.response,
            ) {
                (Next::Answer, Some(response)) => return response,
                (Next::FallBack, _) => tried.push((site.clone(), attempt.outcome)),
                (Next::Answer | Next::GiveUp, _) => {
                    tried.push((site.clone(), attempt.outcome));
                    break;
                }
            }
        }
        let message = plan::none_served(&service.name, &tried);
        // Only caps stood in the way: the sites are there, and may take it in a moment.
        if !tried.is_empty() && tried.iter().all(|(_, outcome)| outcome.is_busy()) {
            return limits::refused(message);
        }
        error_response(StatusCode::BAD_GATEWAY, message)
    }

    /// Sends `request` to this site's instance of `service`: over `owned`, the workload
    /// connection's own (HTTP/1.1, or HTTP/2 shared by its streams), else through the pooled
    /// clients.
    pub async fn attempt_local(
        &self,
        mut request: Request<ProxyBody>,
        service: &Service,
        owned: Option<&OwnedUpstream>,
        grpc: bool,
    ) -> Attempt {
        self.token_scopes
            .remember_passed_on(request.headers_mut(), &self.carriers);
        let limit = answer_limit(request.headers(), grpc, self.settings.response_timeout);
        let answer = match owned {
            // The workload connection's own HTTP/2 connection, shared by its streams.
            Some(owned) if request.version() == Version::HTTP_2 => {
                let sent = owned
                    .http2
                    .send(request, service.local, self.settings.connect_timeout);
                within(limit, sent).await.map(|answer| {
                    answer
                        .map(|response| response.map(BodyExt::boxed))
                        .map_err(|error| (error.is_connect(), InstanceError::from(error)))
                })
            }
            Some(owned) => {
                // Origin-form, as the pooled client would send it.
                let path_and_query = request.uri().path_and_query().cloned();
                *request.uri_mut() =
                    path_and_query.map_or_else(|| Uri::from_static("/"), Uri::from);
                *request.version_mut() = Version::HTTP_11;
                if !request.headers().contains_key(header::HOST) {
                    request
                        .headers_mut()
                        .insert(header::HOST, header_value(&service.local.to_string()));
                }
                // Boxed: the timeout below and this attempt then move a pointer, not the
                // whole exchange's state, from future to future.
                let sent =
                    Box::pin(owned.send(request, service.local, self.settings.connect_timeout));
                owned.answer_timer.within(limit, sent).await.map(|answer| {
                    answer.map_err(|error| (error.is_connect(), InstanceError::from(error)))
                })
            }
            None => {
                let path_and_query = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                *request.uri_mut() = match format!("http://{}{}", service.local, path_and_query)
                    .parse::<Uri>()
                {
                    Ok(uri) => uri,
                    Err(err) => return Attempt::failed(Outcome::Failed(Failed::BadTarget(err))),
                };
                let client = if request.version() == Version::HTTP_2 {
                    &self.upstream_http2
                } else {
                    *request.version_mut() = Version::HTTP_11;
                    &self.upstream
                };
                within(limit, client.request(request)).await.map(|answer| {
                    answer
                        .map(|response| response.map(BodyExt::boxed))
                        .map_err(|error| (error.is_connect(), InstanceError::from(error)))
                })
            }
        };
        let failed = match answer {
            Ok(Ok(mut response)) => {
                remove_hop_by_hop_headers(response.headers_mut());
                response
                    .headers_mut()
                    .insert(SERVED_BY, self.site_header.clone());
                return Attempt {
                    outcome: Outcome::Answered(response.status()),
                    response: Some(response),
                };
            }
            Ok(Err(failed)) => Ok(failed),
            Err(after) => Err(after),
        };
        let outcome = instance_failure(service, failed);
        self.counters
            .upstream_errors
            .fetch_add(1, Ordering::Relaxed);
        Attempt::failed(outcome)
    }

    /// Sends `request` to `site`, whose cheops executes it against its own instance.
    pub(super) async fn attempt_peer(
        &self,
        site: &str,
        mut request: Request<ProxyBody>,
        service: &Service,
    ) -> Attempt {
        if request.version() == Version::HTTP_2 {
            request
                .headers_mut()
                .insert(INSTANCE_HTTP2, HeaderValue::from_static("1"));
        }
        *request.version_mut() = Version::HTTP_2;
        let forwarded = if grpc::is_grpc(request.headers()) {
            let limit = grpc::deadline(request.headers());
            self.peers
                .forward_within(site, &service.name, request, limit)
                .await
        } else {
            self.peers.forward(site, &service.name, request).await
        };
        match forwarded {
            Ok(response) => {
                let status = response.status();
                let outcome = if response.headers().contains_key(NOT_DELIVERED) {
                    Outcome::NotDelivered(NotDelivered::PeerInstance {
                        service: service.name.clone(),
                    })
                } else {
                    Outcome::Answered(status)
                };
                Attempt {
                    outcome,
                    response: Some(response.map(BodyExt::boxed)),
                }
            }
            Err(PeerError::MaybeDelivered(cause)) => Attempt::failed(Outcome::Failed(cause.into())),
            Err(PeerError::NotDelivered(cause)) => {
                Attempt::failed(Outcome::NotDelivered(cause.into()))
            }
        }
    }
}

/// Why this site's instance of `service` did not serve: `Err(after)` when it did not answer
/// in time, else whether the request never reached it, and the cause.
pub(super) fn instance_failure(
    service: &Service,
    failed: Result<(bool, InstanceError), Duration>,
) -> Outcome {
    let instance = InstanceOf {
        service: service.name.clone(),
        address: service.local,
    };
    match failed {
        Ok((true, cause)) => Outcome::NotDelivered(NotDelivered::Instance { instance, cause }),
        Ok((false, cause)) => Outcome::Failed(Failed::Instance { instance, cause }),
        Err(after) => Outcome::Failed(Failed::Timeout { instance, after }),
    }
}

/// How long to wait for an instance's answer: a gRPC call as long as its own deadline, if it
/// has one; any other request up to `configured`.
fn answer_limit(headers: &HeaderMap, grpc: bool, configured: Duration) -> Option<Duration> {
    if grpc {
        grpc::deadline(headers)
    } else {
        Some(configured)
    }
}

/// The request described by `parts`, with `body`, for one attempt: its headers copied, or
/// taken from `parts` for the `last` attempt.
fn request_for_attempt(parts: &mut Parts, body: ProxyBody, last: bool) -> Request<ProxyBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = if last {
        std::mem::take(&mut parts.headers)
    } else {
        parts.headers.clone()
    };
    request
}
