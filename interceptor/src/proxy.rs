//! The transparent proxy. Each accepted connection was redirected by the kernel programs; the
//! proxy asks which service the client meant (`OriginalDestinations`), then serves HTTP/1.1
//! through hyper: it reads the request's scope (`carriers`), turns its plan into the sites to
//! try (`collaborate`), and sends the request to the local instance (pooled upstream, streamed
//! bodies) or to a peer (`peer`). Anything that is not HTTP is relayed untouched, locally.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::{
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    http::request::Parts,
    HeaderMap, Request, Response, StatusCode, Uri, Version,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::{
    carriers,
    collaborate::{self, Next, Outcome, Route},
    config::{CarrierSettings, ProxySettings, Service},
    exchange::{Answer, Call, Message},
    metrics::{Collaboration, Metrics, RequestLabels},
    peer::{self, Peers, FORWARDED_BY, FORWARDED_SERVICE, NOT_DELIVERED},
    peer_sites::{PeerSites, REPLICATION_PATH},
    replicator::Replicator,
    token_scopes::TokenScopes,
    workload_scopes::WorkloadScopes,
};

/// Which service a redirected client dialled, and from which workload cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intercepted {
    pub service: SocketAddr,
    pub cgroup_id: u64,
}

/// The seam between the kernel and the proxy: the eBPF maps in production, a plain map in tests.
pub trait OriginalDestinations: Send + Sync + 'static {
    /// The original destination of `connection`, accepted from `client`; asked once.
    fn take(&self, connection: &TcpStream, client: SocketAddr) -> Option<Intercepted>;
}

/// The response header naming the site whose instance answered.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-cheops-site");

/// How long a new connection may stay silent before it is taken for a protocol where the
/// server speaks first, and relayed as plain TCP.
const SNIFF_TIMEOUT: Duration = Duration::from_millis(300);

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

#[derive(Debug, Default, Serialize)]
pub struct ProxyCounters {
    pub connections: AtomicU64,
    pub not_redirected: AtomicU64,
    pub http_requests: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub tcp_relays: AtomicU64,
}

pub struct Proxy {
    site: String,
    services: Vec<Arc<Service>>,
    settings: ProxySettings,
    carriers: CarrierSettings,
    destinations: Arc<dyn OriginalDestinations>,
    pub peers: Arc<Peers>,
    pub workload_scopes: Arc<WorkloadScopes>,
    token_scopes: TokenScopes,
    upstream: Client<HttpConnector, ProxyBody>,
    /// Replication and cross, when a service has resource rules.
    pub replicator: Option<Arc<Replicator<PeerSites>>>,
    pub counters: Arc<ProxyCounters>,
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
            RequestBody::Streamed(body) => body.take().map_or_else(
                || Empty::new().map_err(|never| match never {}).boxed(),
                BodyExt::boxed,
            ),
            RequestBody::Kept(bytes) => Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed(),
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
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        let upstream = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
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
        let (plan, scope) = match self.decide(&mut parts.headers, service, cgroup_id) {
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
        let (collaboration, response) = match collaborate::route(&plan) {
            Route::NotYet(what) => (
                Collaboration::Refused,
                error_response(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "the scope asks {what} for service '{}', which is not available yet",
                        service.name
                    ),
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
    fn decide(
        &self,
        headers: &mut HeaderMap,
        service: &Service,
        cgroup_id: u64,
    ) -> Result<(dsl::Plan, Option<dsl::Scope>), String> {
        let workload_default = self.workload_scopes.for_cgroup(cgroup_id);
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
            .check_sites(|name| self.knows_site(name))
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

    /// Whether a scope may name `site`: this site or a configured peer.
    pub fn knows_site(&self, site: &str) -> bool {
        site == self.site || self.peers.names().any(|peer| peer == site)
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
                collaborate::after(&attempt.outcome, &parts.method, at + 1 < sites.len()),
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
            collaborate::none_served(&service.name, &tried),
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
                    .insert(SERVED_BY, peer::header_value(&self.site));
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

    /// A request that `peer` forwarded (or its heartbeat): executed against the local
    /// instance, its scope never read again.
    pub async fn serve_peer(&self, peer: &str, request: Request<Incoming>) -> Response<ProxyBody> {
        if request.uri().path() == peer::HEARTBEAT_PATH {
            let answer = serde_json::to_vec(&self.peers.heartbeat_answer()).unwrap_or_default();
            return Response::new(
                Full::new(Bytes::from(answer))
                    .map_err(|never| match never {})
                    .boxed(),
            );
        }
        let claimed = request
            .headers()
            .get(FORWARDED_BY)
            .and_then(|v| v.to_str().ok());
        if claimed != Some(peer::header_value(peer).to_str().unwrap_or_default()) {
            return error_response(
                StatusCode::FORBIDDEN,
                format!(
                    "a request on site {peer}'s connection claims to be forwarded by {claimed:?}"
                ),
            );
        }
        if request.uri().path() == REPLICATION_PATH {
            return self.serve_replication(peer, request).await;
        }
        let wanted = request
            .headers()
            .get(FORWARDED_SERVICE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(service) = self.services.iter().find(|s| s.name == wanted).cloned() else {
            return error_response(
                StatusCode::NOT_FOUND,
                format!(
                    "site {} has no service '{wanted}' (asked by site {peer})",
                    self.site
                ),
            );
        };
        self.peers
            .counters
            .served_for_peers
            .fetch_add(1, Ordering::Relaxed);
        let (mut parts, body) = request.into_parts();
        parts.headers.remove(FORWARDED_BY);
        parts.headers.remove(FORWARDED_SERVICE);
        if let Some(replicator) = self
            .replicator
            .as_ref()
            .filter(|_| !service.resources.is_empty())
        {
            // Executed here, with this site's IDs rewritten, and never sent on.
            let kept = match self.keep(RequestBody::Streamed(Some(body))).await {
                Ok(kept) => kept,
                Err(response) => return response,
            };
            return match call_of(&parts, &service.name, &kept) {
                Ok(call) => match replicator.handle(Message::Execute(call)).await {
                    Ok(reply) => response_of(reply.answer),
                    Err(refusal) => error_response(StatusCode::BAD_GATEWAY, refusal.to_string()),
                },
                Err(response) => *response,
            };
        }
        let attempt = self
            .attempt_local(Request::from_parts(parts, body.boxed()), &service)
            .await;
        if let Some(response) = attempt.response {
            return response;
        }
        let (why, delivered) = match attempt.outcome {
            Outcome::NotDelivered(why) => (why, false),
            Outcome::Failed(why) => (why, true),
            Outcome::Answered(status) => (format!("answered {status}"), true),
        };
        let mut response = error_response(
            StatusCode::BAD_GATEWAY,
            format!("site {}: {why}", self.site),
        );
        if !delivered {
            response
                .headers_mut()
                .insert(NOT_DELIVERED, HeaderValue::from_static("1"));
        }
        response
    }

    /// A replication message from `peer`.
    async fn serve_replication(
        &self,
        peer: &str,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let Some(replicator) = &self.replicator else {
            return error_response(
                StatusCode::NOT_FOUND,
                format!("site {} has no resource rules: it takes no replication message (from site {peer})", self.site),
            );
        };
        let body = match self
            .keep(RequestBody::Streamed(Some(request.into_body())))
            .await
        {
            Ok(body) => body,
            Err(response) => return response,
        };
        let message: Message = match serde_json::from_slice(&body) {
            Ok(message) => message,
            Err(err) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    format!("an unreadable replication message from site {peer}: {err}"),
                )
            }
        };
        match replicator.handle(message).await {
            Ok(reply) => Response::new(
                Full::new(Bytes::from(serde_json::to_vec(&reply).unwrap_or_default()))
                    .map_err(|never| match never {})
                    .boxed(),
            ),
            Err(refusal) => error_response(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()),
        }
    }

    async fn relay_tcp(&self, mut stream: TcpStream, service: &Service) {
        self.counters.tcp_relays.fetch_add(1, Ordering::Relaxed);
        let upstream = tokio::time::timeout(
            self.settings.connect_timeout,
            TcpStream::connect(service.local),
        )
        .await;
        let mut upstream = match upstream {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(err)) => {
                warn!(service = %service.name, "relaying a non-HTTP connection: {} is unreachable: {err}", service.local);
                return;
            }
            Err(_) => {
                warn!(service = %service.name, "relaying a non-HTTP connection: {} did not accept in time", service.local);
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        if let Err(err) = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
            debug!(service = %service.name, "non-HTTP relay ended: {err}");
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Protocol {
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
async fn sniff(stream: &TcpStream) -> Protocol {
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

/// Connection-level headers belong to one hop; the proxy's connections have their own.
fn remove_hop_by_hop_headers(headers: &mut hyper::HeaderMap) {
    let named_in_connection: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named_in_connection {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
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

/// The request as a replication call: its body must be text (JSON, in practice), since it is
/// kept in the log and rewritten.
fn call_of(parts: &Parts, service: &str, body: &Bytes) -> Result<Call, Box<Response<ProxyBody>>> {
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
fn response_of(answer: Answer) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(answer.body))
            .map_err(|never| match never {})
            .boxed(),
    );
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

pub fn error_response(status: StatusCode, message: String) -> Response<ProxyBody> {
    warn!("{message}");
    let body = Full::new(Bytes::from(format!("cheops: {message}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn http_is_recognised_by_its_method_and_anything_else_is_relayed() {
        assert_eq!(classify(b"GET / HT"), Some(Protocol::Http1));
        assert_eq!(classify(b"DELETE /"), Some(Protocol::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Opaque));
        assert_eq!(classify(b"PRI * HT"), Some(Protocol::Opaque));
        assert_eq!(classify(b"get / "), Some(Protocol::Opaque));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = hyper::HeaderMap::new();
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
    }
}
