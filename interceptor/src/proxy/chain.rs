//! The chain of attempts: a request tried at each site of its route in turn, at this site's
//! instance through the pooled client or at a peer through its cheops, until one serves or
//! `plan::after` says to stop.
use std::sync::{atomic::Ordering, Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::{body::Incoming, http::request::Parts, Request, Response, StatusCode, Uri, Version};

use super::{
    outcome::{Failed, InstanceOf, NotDelivered, Outcome},
    plan::{self, Next},
};
use crate::{
    config::{CarrierSettings, ProxySettings, Service},
    http::{
        empty_body, error_response, full_body, remove_hop_by_hop_headers, InstanceClient,
        ProxyBody, SERVED_BY,
    },
    metrics::ProxyCounters,
    peer::{
        wire::{header_value, NOT_DELIVERED},
        PeerError, Peers,
    },
    scope::{carriers, tokens::TokenScopes},
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

/// A request body that is sent once (streamed), or kept to be sent again at the next site.
pub enum RequestBody {
    Streamed(Option<Incoming>),
    Kept(Bytes),
}

impl RequestBody {
    fn next(&mut self) -> ProxyBody {
        match self {
            RequestBody::Streamed(body) => body.take().map_or_else(empty_body, BodyExt::boxed),
            RequestBody::Kept(bytes) => full_body(bytes.clone()),
        }
    }
}

/// What the attempts need: this site's name, its instances' client, the peers, the timeouts.
pub struct Chain {
    pub site: String,
    pub upstream: InstanceClient,
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
            RequestBody::Streamed(Some(body)) => body,
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

    /// Tries `sites` in order until one serves, as `plan::after` decides.
    pub async fn run(
        &self,
        parts: &Parts,
        body: RequestBody,
        service: &Service,
        sites: &[String],
    ) -> Response<ProxyBody> {
        let mut body = if sites.len() > 1 {
            // The next site needs the body again: keep it.
            match self.keep(body).await {
                Ok(kept) => RequestBody::Kept(kept),
                Err(response) => return response,
            }
        } else {
            body
        };
        let mut tried = Vec::new();
        for (at, site) in sites.iter().enumerate() {
            let request = copy_request(parts, body.next());
            let attempt = if *site == self.site {
                self.attempt_local(request, service).await
            } else {
                self.attempt_peer(site, request, service).await
            };
            match (
                plan::after(&attempt.outcome, &parts.method, at + 1 < sites.len()),
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
        error_response(
            StatusCode::BAD_GATEWAY,
            plan::none_served(&service.name, &tried),
        )
    }

    /// Sends `request` to this site's instance of `service`.
    pub async fn attempt_local(
        &self,
        mut request: Request<ProxyBody>,
        service: &Service,
    ) -> Attempt {
        if let Some((token, scope)) =
            carriers::strip_token_suffix(request.headers_mut(), &self.carriers)
        {
            // The service will pass the bare token on: its next calls get the scope from here.
            if let Ok(scope) = dsl::parse(&scope) {
                self.token_scopes.remember(&token, scope);
            }
        }
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() =
            match format!("http://{}{}", service.local, path_and_query).parse::<Uri>() {
                Ok(uri) => uri,
                Err(err) => return Attempt::failed(Outcome::Failed(Failed::BadTarget(err))),
            };
        *request.version_mut() = Version::HTTP_11;
        let instance = || InstanceOf {
            service: service.name.clone(),
            address: service.local,
        };
        let answer = tokio::time::timeout(
            self.settings.response_timeout,
            self.upstream.request(request),
        )
        .await;
        let outcome = match answer {
            Ok(Ok(response)) => {
                let mut response = response.map(BodyExt::boxed);
                remove_hop_by_hop_headers(response.headers_mut());
                response
                    .headers_mut()
                    .insert(SERVED_BY, header_value(&self.site));
                return Attempt {
                    outcome: Outcome::Answered(response.status()),
                    response: Some(response),
                };
            }
            Ok(Err(cause)) if cause.is_connect() => Outcome::NotDelivered(NotDelivered::Instance {
                instance: instance(),
                cause,
            }),
            Ok(Err(cause)) => Outcome::Failed(Failed::Instance {
                instance: instance(),
                cause,
            }),
            Err(_) => Outcome::Failed(Failed::Timeout {
                instance: instance(),
                after: self.settings.response_timeout,
            }),
        };
        self.counters
            .upstream_errors
            .fetch_add(1, Ordering::Relaxed);
        Attempt::failed(outcome)
    }

    /// Sends `request` to `site`, whose cheops executes it against its own instance.
    async fn attempt_peer(
        &self,
        site: &str,
        mut request: Request<ProxyBody>,
        service: &Service,
    ) -> Attempt {
        *request.version_mut() = Version::HTTP_2;
        match self.peers.forward(site, &service.name, request).await {
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

/// A copy of the request described by `parts`, with `body`, for one attempt.
fn copy_request(parts: &Parts, body: ProxyBody) -> Request<ProxyBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}
