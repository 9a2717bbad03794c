//! The transparent proxy. Each accepted connection was redirected by the kernel programs; the
//! proxy asks which service the client meant (`OriginalDestinations`), tells its protocol
//! (`sniff`), serves HTTP/1.1 through hyper: it reads the request's scope (`scope`), turns its
//! plan into the sites to try (`plan`), and sends the request to the local instance (pooled
//! upstream, streamed bodies) or to a peer (`peer`). Anything that is not HTTP is relayed
//! untouched (`relay`). What other sites ask of this one arrives through `inbound`.
mod inbound;
pub mod plan;
mod relay;
mod sniff;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::{
    body::Incoming, http::request::Parts, HeaderMap, Request, Response, StatusCode, Uri, Version,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

pub use inbound::serve_peer_api;

use crate::{
    config::{CarrierSettings, ProxySettings, Service},
    http::{
        empty_body, error_response, full_body, instance_client, remove_hop_by_hop_headers,
        InstanceClient, ProxyBody, SERVED_BY,
    },
    intercept::OriginalDestinations,
    metrics::{Collaboration, Metrics, ProxyCounters, RequestLabels},
    peer::{
        wire::{header_value, FORWARDED_BY, FORWARDED_SERVICE, NOT_DELIVERED},
        Peers,
    },
    replication::{
        codec::{call_of, response_of},
        sites::PeerSites,
        Replicator,
    },
    scope::{carriers, tokens::TokenScopes, workloads::WorkloadScopes},
};
use plan::{Next, Outcome, Route};
use sniff::{sniff, Protocol};

pub struct Proxy {
    site: String,
    services: Vec<Arc<Service>>,
    settings: ProxySettings,
    carriers: CarrierSettings,
    destinations: Arc<dyn OriginalDestinations>,
    peers: Arc<Peers>,
    workload_scopes: Arc<WorkloadScopes>,
    token_scopes: TokenScopes,
    upstream: InstanceClient,
    /// Replication and cross, when a service has resource rules.
    replicator: Option<Arc<Replicator<PeerSites>>>,
    counters: Arc<ProxyCounters>,
    metrics: Arc<Metrics>,
}

/// What a proxy serves with, besides its own settings.
pub struct ProxyParts {
    pub site: String,
    pub services: Vec<Service>,
    pub settings: ProxySettings,
    pub carriers: CarrierSettings,
    pub destinations: Arc<dyn OriginalDestinations>,
    pub peers: Arc<Peers>,
    pub workload_scopes: Arc<WorkloadScopes>,
    pub counters: Arc<ProxyCounters>,
    pub metrics: Arc<Metrics>,
    pub replicator: Option<Arc<Replicator<PeerSites>>>,
}

/// One attempt at one site: how it went, and the answer to give if it is the one given.
struct Attempt {
    outcome: Outcome,
    response: Option<Response<ProxyBody>>,
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
enum RequestBody {
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

impl Proxy {
    pub fn new(parts: ProxyParts) -> Proxy {
        let ProxyParts {
            site,
            services,
            settings,
            carriers,
            destinations,
            peers,
            workload_scopes,
            counters,
            metrics,
            replicator,
        } = parts;
        let upstream = instance_client(settings.connect_timeout);
        Proxy {
            site,
            services: services.into_iter().map(Arc::new).collect(),
            settings,
            carriers,
            destinations,
            peers,
            workload_scopes,
            token_scopes: TokenScopes::default(),
            upstream,
            counters,
            metrics,
            replicator,
        }
    }

    /// Accepts connections on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, client)) => {
                    tokio::spawn(self.clone().handle_connection(stream, client));
                }
                Err(err) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!("accepting a connection failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle_connection(self: Arc<Self>, stream: TcpStream, client: SocketAddr) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        let Some(intercepted) = self.destinations.take(&stream, client) else {
            self.counters.not_redirected.fetch_add(1, Ordering::Relaxed);
            warn!(%client, "closing a connection that was not redirected by the kernel programs");
            return;
        };
        let Some(service) = self
            .services
            .iter()
            .find(|s| s.address == intercepted.service)
        else {
            self.counters.not_redirected.fetch_add(1, Ordering::Relaxed);
            warn!(%client, dialled = %intercepted.service, "closing a redirected connection to an address that is no configured service");
            return;
        };
        let service = service.clone();
        let _ = stream.set_nodelay(true);
        match sniff(&stream).await {
            Protocol::Http1 => {
                self.serve_http(stream, service, intercepted.cgroup_id)
                    .await
            }
            Protocol::Opaque => self.relay_tcp(stream, &service).await,
        }
    }

    async fn serve_http(self: Arc<Self>, stream: TcpStream, service: Arc<Service>, cgroup_id: u64) {
        let proxy = self.clone();
        let handler = hyper::service::service_fn(move |request| {
            let proxy = proxy.clone();
            let service = service.clone();
            async move { Ok::<_, Infallible>(proxy.handle(request, &service, cgroup_id).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.settings.header_read_timeout)
            .max_buf_size(self.settings.max_header_bytes)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), handler);
        if let Err(err) = connection.await {
            debug!("client connection ended: {err}");
        }
    }

    /// One request from a workload: its scope decides where it runs.
    async fn handle(
        &self,
        request: Request<Incoming>,
        service: &Service,
        cgroup_id: u64,
    ) -> Response<ProxyBody> {
        self.counters.http_requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        remove_hop_by_hop_headers(&mut parts.headers);
        // Only the peer API takes forwarded requests: a workload cannot pose as a site.
        for marker in [FORWARDED_BY, FORWARDED_SERVICE, NOT_DELIVERED] {
            parts.headers.remove(marker);
        }
        let (plan, scope) = match self.decide(&mut parts.headers, service, cgroup_id).await {
            Ok(decision) => decision,
            Err(refusal) => {
                let response = error_response(StatusCode::BAD_REQUEST, refusal);
                return self.log_request(
                    &parts,
                    service,
                    None,
                    Collaboration::Refused,
                    started,
                    response,
                );
            }
        };
        let mut body = RequestBody::Streamed(Some(body));
        if let Some(replicator) = self
            .replicator
            .as_ref()
            .filter(|_| !service.resources.is_empty())
        {
            let refused = |response| {
                self.log_request(
                    &parts,
                    service,
                    scope.as_ref(),
                    Collaboration::Refused,
                    started,
                    response,
                )
            };
            let kept = match self.keep(body).await {
                Ok(kept) => kept,
                Err(response) => return refused(response),
            };
            let call = match call_of(&parts, &service.name, &kept) {
                Ok(call) => call,
                Err(response) => return refused(*response),
            };
            if let Some(answer) = replicator.serve(&plan, call).await {
                let collaboration = match plan {
                    dsl::Plan::SpreadOver { .. } => Collaboration::Cross,
                    _ => Collaboration::Replication,
                };
                return self.log_request(
                    &parts,
                    service,
                    scope.as_ref(),
                    collaboration,
                    started,
                    response_of(answer),
                );
            }
            body = RequestBody::Kept(kept);
        }
        let (collaboration, response) = match plan::route(&plan) {
            Route::NotYet(what) => (
                Collaboration::Refused,
                error_response(
                    StatusCode::NOT_IMPLEMENTED,
                    Unavailable::of(&plan, what, &service.name).to_string(),
                ),
            ),
            Route::Try(sites) => {
                let collaboration = match sites.as_slice() {
                    [only] if *only == self.site => Collaboration::Local,
                    [_] => Collaboration::Sharing,
                    _ => Collaboration::Otherwise,
                };
                (
                    collaboration,
                    self.run_chain(&parts, body, service, &sites).await,
                )
            }
        };
        self.log_request(
            &parts,
            service,
            scope.as_ref(),
            collaboration,
            started,
            response,
        )
    }

    /// Counts the request in the metrics and logs its one line.
    fn log_request(
        &self,
        parts: &Parts,
        service: &Service,
        scope: Option<&dsl::Scope>,
        collaboration: Collaboration,
        started: Instant,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let served_by = response
            .headers()
            .get(SERVED_BY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        let labels = RequestLabels::new(
            &service.name,
            collaboration,
            served_by,
            response.status().as_u16(),
        );
        self.metrics.record_request(&labels, started.elapsed());
        info!(
            service = %service.name,
            method = %parts.method,
            path = %parts.uri.path(),
            scope = scope.map(tracing::field::display),
            collaboration = %collaboration.as_str(),
            status = response.status().as_u16(),
            served_by = %served_by,
            elapsed_us = started.elapsed().as_micros() as u64,
            "request"
        );
        response
    }

    /// The plan for this request and the scope it came with (none: local), with its scope
    /// rewritten for the next hop; why the scope cannot be used, if it cannot (answered 400).
    async fn decide(
        &self,
        headers: &mut HeaderMap,
        service: &Service,
        cgroup_id: u64,
    ) -> Result<(dsl::Plan, Option<dsl::Scope>), String> {
        let workload_default = self.workload_scopes.for_cgroup(cgroup_id).await;
        let known = carriers::Known {
            workload_default: workload_default.as_ref(),
            token_scope: &|token| self.token_scopes.scope_of(token),
        };
        let found =
            carriers::extract(headers, &known, &self.carriers).map_err(|err| err.to_string())?;
        let Some(found) = found else {
            return Ok((dsl::Plan::Site(self.site.clone()), None));
        };
        found
            .scope
            .check_sites(|name| self.peers.knows_site(name))
            .map_err(|err| format!("the scope of this request cannot be used: {err}"))?;
        let plan = dsl::resolve(
            &found.scope,
            &service.name,
            &self.site,
            &self.peers.round_trips(),
        );
        carriers::pass_on(headers, &found, &service.name, &self.carriers);
        Ok((plan, Some(found.scope)))
    }

    /// The whole body, up to `proxy.retry_body_limit`: to send it to several sites, or to
    /// read and rewrite it.
    async fn keep(&self, body: RequestBody) -> Result<Bytes, Response<ProxyBody>> {
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

    /// Tries `sites` in order until one serves, as `collaborate` decides.
    async fn run_chain(
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
    async fn attempt_local(&self, mut request: Request<ProxyBody>, service: &Service) -> Attempt {
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
                Err(err) => {
                    return Attempt::failed(Outcome::Failed(format!("bad request target: {err}")))
                }
            };
        *request.version_mut() = Version::HTTP_11;
        let instance = format!("its instance of '{}' ({})", service.name, service.local);
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
            Ok(Err(err)) if err.is_connect() => Outcome::NotDelivered(format!(
                "{instance} could not be reached: {:#}",
                anyhow::Error::from(err)
            )),
            Ok(Err(err)) => {
                Outcome::Failed(format!("{instance} failed: {:#}", anyhow::Error::from(err)))
            }
            Err(_) => Outcome::Failed(format!(
                "{instance} did not answer within {:?}",
                self.settings.response_timeout
            )),
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
                    Outcome::NotDelivered(format!(
                        "its instance of '{}' could not be reached",
                        service.name
                    ))
                } else {
                    Outcome::Answered(status)
                };
                Attempt {
                    outcome,
                    response: Some(response.map(BodyExt::boxed)),
                }
            }
            Err(failure) if failure.reached => Attempt::failed(Outcome::Failed(failure.why)),
            Err(failure) => Attempt::failed(Outcome::NotDelivered(failure.why)),
        }
    }
}

/// Why a plan cannot be carried out (answered 501).
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error(
        "the scope asks {what} for service '{service}', which has no resource rules: configure \
         `[[service.resource]]` rules for service '{service}' (see docs/configuration.md)"
    )]
    NeedsResourceRules { what: &'static str, service: String },
    #[error("the scope asks {what} for service '{service}', which is not available yet")]
    NotYet { what: &'static str, service: String },
}

impl Unavailable {
    fn of(plan: &dsl::Plan, what: &'static str, service: &str) -> Unavailable {
        let service = service.to_owned();
        match plan {
            // With resource rules, the replicator serves `&` and `%` at the top of a plan.
            dsl::Plan::AllOf(_) | dsl::Plan::SpreadOver { .. } => {
                Unavailable::NeedsResourceRules { what, service }
            }
            dsl::Plan::Site(_) | dsl::Plan::FirstOf(_) => Unavailable::NotYet { what, service },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercept::Intercepted;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Every connection "dialled" `service`: the kernel's part, replaced.
    struct Dialled(SocketAddr);

    impl OriginalDestinations for Dialled {
        fn take(&self, _connection: &TcpStream, _client: SocketAddr) -> Option<Intercepted> {
            Some(Intercepted {
                service: self.0,
                cgroup_id: 1,
            })
        }
    }

    /// A proxy on an ephemeral loopback port for one service whose instance is at `local`.
    async fn proxy_for(local: SocketAddr) -> SocketAddr {
        let service = Service {
            name: "catalog".into(),
            address: "198.18.0.10:80".parse().unwrap(),
            local,
            resources: Vec::new(),
        };
        let settings = ProxySettings {
            response_timeout: Duration::from_secs(2),
            ..ProxySettings::default()
        };
        let counters = Arc::new(ProxyCounters::default());
        let metrics = Arc::new(Metrics::new(None, counters.clone(), None));
        let peers = Peers::new("Paris".into(), &[], None, Default::default()).unwrap();
        let proxy = Arc::new(Proxy::new(ProxyParts {
            site: "Paris".into(),
            services: vec![service.clone()],
            settings,
            carriers: CarrierSettings::default(),
            destinations: Arc::new(Dialled(service.address)),
            peers: Arc::new(peers),
            workload_scopes: Arc::new(WorkloadScopes::new(Vec::new()).unwrap()),
            counters,
            metrics,
            replicator: None,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(proxy.serve(listener));
        address
    }

    async fn exchange(proxy: SocketAddr, request: &str) -> String {
        let mut client = TcpStream::connect(proxy).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn forwards_to_the_local_instance_and_names_the_site() {
        let instance = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = instance.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = instance.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let len = stream.read(&mut request).await.unwrap();
            let request = String::from_utf8_lossy(&request[..len]).to_string();
            let body = if request.starts_with("GET /items?x=1 HTTP/1.1")
                && request.contains("x-scope: {a: Paris}")
            {
                "seen"
            } else {
                "wrong request"
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        let proxy = proxy_for(local).await;
        let answer = exchange(proxy, "GET /items?x=1 HTTP/1.1\r\nhost: catalog\r\nx-scope: {a: Paris}\r\nconnection: close\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("x-cheops-site: Paris"), "{answer}");
        assert!(answer.ends_with("seen"), "{answer}");
    }

    #[tokio::test]
    async fn an_unreachable_instance_gets_a_502_naming_the_service_and_site() {
        // Bind then drop: nothing listens on this port any more.
        let local = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = proxy_for(local).await;
        let answer = exchange(
            proxy,
            "GET / HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(
            answer.contains("service 'catalog': site Paris:"),
            "{answer}"
        );
    }
}
