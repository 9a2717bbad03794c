//! The transparent proxy. Each accepted connection was redirected by the kernel programs; the
//! proxy asks which service the client meant (`OriginalDestinations`), tells its protocol
//! (`sniff`) and serves HTTP/1.1 through hyper, each request in turn (`request`: its scope, its
//! plan, the chain of attempts in `chain`), or HTTP/2 (`http2`), each stream a request; gRPC's
//! specifics are in `grpc`. Anything that is not HTTP is relayed untouched (`relay`). What
//! other sites ask of this one arrives through the peer API (`inbound`).
mod chain;
mod content;
mod fast;
mod grpc;
mod hooked;
mod http2;
mod in_connection_task;
mod inbound;
mod linger;
mod outcome;
mod park;
pub mod plan;
mod relay;
mod replay;
mod replayed;
mod request;
mod routes;
mod sniff;
mod timer;
mod upstream;
mod upstream_http2;
mod workers;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::{
    accept::next_connection,
    config::{ProxySettings, Service, ServiceProtocol},
    intercept::{Intercepted, OriginalDestinations},
    limits::{self, Slot, Slots},
    metrics::{Metrics, ProxyCounters, RequestHistograms},
    peer::Peers,
    scope::{tokens::TokenScopes, workloads::WorkloadScopes},
    tls::SiteTls,
};
use replayed::Replayed;
pub use routes::Routing;
use routes::{Lasting, Routes};
use sniff::{sniff, Protocol};
use upstream::OwnedUpstream;
pub use workers::Workers;

pub struct Proxy {
    /// What the running configuration routes with; replaced whole by a reload.
    routes: Arc<ArcSwap<Routes>>,
    /// What serves requests in the running configuration, shared by every connection.
    requests: http2::CurrentRequests,
    /// What routes are built from and what outlives a reload.
    lasting: Lasting,
    settings: ProxySettings,
    counters: Arc<ProxyCounters>,
    /// Per workload cgroup: its open connections, its requests in flight.
    connections: Arc<Slots<u64>>,
    in_flight: Arc<Slots<u64>>,
    workers: Workers,
}

/// What a proxy serves with, besides its own settings.
pub struct ProxyParts {
    pub site: String,
    pub settings: ProxySettings,
    pub peers: Arc<Peers>,
    pub workload_scopes: Arc<WorkloadScopes>,
    /// The scopes of the tokens that reached this site's instances (the replicator's calls to
    /// them leave theirs here too).
    pub token_scopes: Arc<TokenScopes>,
    pub counters: Arc<ProxyCounters>,
    pub metrics: Arc<Metrics>,
    pub routing: Routing,
    /// The threads that serve workload connections.
    pub workers: Workers,
}

/// Serves this site's peer API on `listener`: TLS with a certificate of the mesh's CA required,
/// then a check that the certificate names a configured peer, then HTTP/2.
pub async fn serve_peer_api(listener: TcpListener, tls: Arc<SiteTls>, proxy: Arc<Proxy>) {
    let routes = proxy.routes.clone();
    inbound::serve(listener, tls, move || routes.load().peer_api.clone()).await
}

impl Proxy {
    pub fn new(parts: ProxyParts) -> Proxy {
        let ProxyParts {
            site,
            settings,
            peers,
            workload_scopes,
            token_scopes,
            counters,
            metrics,
            routing,
            workers,
        } = parts;
        let lasting = Lasting {
            site,
            peers,
            workload_scopes,
            token_scopes,
            metrics,
        };
        let routes = Arc::new(ArcSwap::from_pointee(
            lasting.routes(routing, &settings, &counters),
        ));
        let current = routes.clone();
        Proxy {
            requests: Arc::new(move || current.load().requests.clone()),
            routes,
            lasting,
            connections: Slots::new(settings.max_connections_per_workload),
            in_flight: Slots::new(settings.max_requests_per_workload),
            settings,
            counters,
            workers,
        }
    }

    /// Routes the requests that start from now on by `routing`; those under way keep theirs.
    pub fn reroute(&self, routing: Routing) {
        let routes = self.lasting.routes(routing, &self.settings, &self.counters);
        self.routes.store(Arc::new(routes));
    }

    /// Accepts connections on `listener` until the task is dropped; `destinations` says what
    /// each one dialled (the seam of this listener's network namespace, or the inbound door).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        destinations: Arc<dyn OriginalDestinations>,
    ) {
        loop {
            let (stream, client) = next_connection(&listener, "a connection").await;
            let intercepted = destinations.take(&stream, client);
            self.counters.connections.fetch_add(1, Ordering::Relaxed);
            let Some((service, cgroup_id)) = self.dialled(client, intercepted) else {
                continue;
            };
            let proxy = self.clone();
            self.workers.serve(stream, move |stream| {
                proxy.handle_connection(stream, service, cgroup_id)
            });
        }
    }

    /// The service a redirected connection dialled, and its workload's cgroup; `None` (it is
    /// closed) when it was not redirected, or to no configured service.
    fn dialled(
        &self,
        client: SocketAddr,
        intercepted: Option<Intercepted>,
    ) -> Option<(Arc<Service>, u64)> {
        let Some(intercepted) = intercepted else {
            self.counters.not_redirected.fetch_add(1, Ordering::Relaxed);
            warn!(%client, "closing a connection that was not redirected by the kernel programs");
            return None;
        };
        let routes = self.routes.load();
        let dialled = routes
            .services
            .iter()
            .find(|s| s.address == intercepted.service);
        if dialled.is_none() {
            self.counters.not_redirected.fetch_add(1, Ordering::Relaxed);
            warn!(%client, dialled = %intercepted.service, "closing a redirected connection to an address that is no configured service");
        }
        Some((dialled?.clone(), intercepted.cgroup_id))
    }

    /// Serves a connection to its end. Not an `async fn`, which would hold its arguments
    /// twice: the task of every connection, idle or not, is the size of this future.
    fn handle_connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        service: Arc<Service>,
        cgroup_id: u64,
    ) -> impl Future<Output = ()> + Send {
        let _ = stream.set_nodelay(true);
        async move {
            let Some(slot) = self.connections.try_take(cgroup_id) else {
                return Box::pin(self.refuse_connection(stream, &service)).await;
            };
            // Each protocol but the fast path's is boxed: the task's size is its largest state.
            // So is the sniffing, whose wait for the first bytes (a readiness future and a timer)
            // is larger than the fast path's idle state, and is over once they came.
            let sniffed = match service.protocol {
                ServiceProtocol::Tcp => Some(Protocol::Opaque),
                ServiceProtocol::Detect => Box::pin(sniff(&stream)).await,
            };
            let protocol = match sniffed {
                Some(protocol) => protocol,
                None => {
                    let timeout = self.settings.connect_timeout;
                    let relays = &self.counters.tcp_relays;
                    let heard = relay::unless_the_client_speaks_http(
                        &mut stream,
                        &service,
                        timeout,
                        relays,
                    );
                    match Box::pin(heard).await {
                        Some(protocol) => protocol,
                        None => return,
                    }
                }
            };
            match protocol {
                Protocol::Http1 => {
                    // HTTP/1.1: one request after another. The fast path (`fast`) serves them
                    // while it can; from the first it leaves, hyper serves the rest of the
                    // connection, which then owns its own connection to the instance
                    // (`upstream`); after an upgrade to HTTP/2, the streams share the pooled
                    // one. A service with resource rules is served by hyper throughout. An idle
                    // connection is parked (`park_http1`). Not a function of its own, whose
                    // future would keep the stream once more.
                    let workload = self.workload(service, cgroup_id);
                    let (stream, read) = if workload.service.resources.is_empty() {
                        match fast::serve(stream, &workload, &self.settings, None).await {
                            fast::Served::Closed => return,
                            fast::Served::ToHyper(handed) => (handed.stream, handed.read),
                            fast::Served::Idle(stream, deadline) => {
                                return self.park_http1(stream, workload, slot, deadline)
                            }
                        }
                    } else {
                        (stream, Bytes::new())
                    };
                    // Boxed: a connection the fast path serves does not hold hyper's state too.
                    Box::pin(self.serve_with_hyper(stream, read, workload)).await
                }
                Protocol::Http2 => {
                    let workload = self.workload(service, cgroup_id);
                    Box::pin(http2::serve(stream, workload, &self.settings, true)).await
                }
                Protocol::Opaque => {
                    self.counters.tcp_relays.fetch_add(1, Ordering::Relaxed);
                    let timeout = self.settings.connect_timeout;
                    Box::pin(relay::relay_tcp(stream, &service, timeout)).await
                }
            }
        }
    }

    /// Parks an idle HTTP/1.1 connection (`park`) with its workload's parts and its connection
    /// `slot`, held until it closes; once it sends, the fast path serves it again from its wait
    /// for a head, which ends at `deadline`.
    fn park_http1(
        self: Arc<Self>,
        stream: TcpStream,
        workload: http2::WorkloadConnection,
        slot: Slot<u64>,
        deadline: tokio::time::Instant,
    ) {
        let resume = move |stream| {
            tokio::spawn(self.resume_http1(stream, workload, slot, deadline));
        };
        park::park(stream, deadline, Box::new(resume));
    }

    /// A parked connection's task: as `handle_connection`'s for HTTP/1.1, from its wait for a
    /// head. Not an `async fn`, which would hold its arguments twice.
    #[allow(clippy::manual_async_fn)]
    fn resume_http1(
        self: Arc<Self>,
        stream: TcpStream,
        workload: http2::WorkloadConnection,
        slot: Slot<u64>,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let (stream, read) =
                match fast::serve(stream, &workload, &self.settings, Some(deadline)).await {
                    fast::Served::Closed => return,
                    fast::Served::ToHyper(handed) => (handed.stream, handed.read),
                    fast::Served::Idle(stream, deadline) => {
                        return self.park_http1(stream, workload, slot, deadline)
                    }
                };
            Box::pin(self.serve_with_hyper(stream, read, workload)).await
        }
    }

    /// A connection past its workload's cap: an HTTP/1 client is answered `503` with
    /// `Retry-After` once its request arrived; any other is closed.
    async fn refuse_connection(&self, stream: TcpStream, service: &Service) {
        let max = self.connections.max();
        debug!(service = %service.name, "refusing a connection: its workload holds {max}");
        if sniff(&stream).await != Some(Protocol::Http1) {
            return;
        }
        let answer = limits::refused_connection_bytes(&service.name, max);
        linger::answer_then_close(stream, &answer, self.settings.header_read_timeout).await
    }

    /// A workload connection's parts; no connection to the instance of its own yet.
    fn workload(&self, service: Arc<Service>, cgroup_id: u64) -> http2::WorkloadConnection {
        http2::WorkloadConnection {
            requests: self.requests.clone(),
            in_flight: self.in_flight.of(cgroup_id),
            histograms: RequestHistograms::of_this_thread(&service.name),
            service,
            cgroup_id,
            owned: None,
        }
    }

    /// The rest of an HTTP/1.1 connection, `read` the bytes already read of it, with hyper.
    async fn serve_with_hyper(
        &self,
        stream: TcpStream,
        read: Bytes,
        mut workload: http2::WorkloadConnection,
    ) {
        workload.owned = Some(Arc::new(OwnedUpstream::default()));
        // Lent to hyper: back once hyper drops it, to close it gracefully if hyper ends it on
        // an error (a 431) as the client still sends.
        let (stream, lender) = linger::lend(stream);
        // Shared by its requests: one pointer copied per request, not each of its parts.
        let shared = Arc::new((workload, self.settings.clone()));
        let handler = hyper::service::service_fn(move |request| {
            let shared = shared.clone();
            async move {
                let (workload, settings) = &*shared;
                if let Some(first_stream) = http2::h2c_request(&request) {
                    let workload = http2::WorkloadConnection {
                        owned: None,
                        ..workload.clone()
                    };
                    let settings = settings.clone();
                    let response = http2::upgrade(request, first_stream, workload, settings);
                    return Ok::<_, Infallible>(response);
                }
                Ok(workload.handle(request).await)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(timer::KeptTimer::default())
            .header_read_timeout(self.settings.header_read_timeout)
            .max_buf_size(self.settings.max_header_bytes)
            .keep_alive(true)
            .serve_connection(TokioIo::new(Replayed::new(read, stream)), handler)
            .with_upgrades();
        // Awaited apart: the connection (and the stream hyper holds) is dropped by then.
        let served = connection.await;
        if let Err(err) = served {
            debug!("client connection ended: {err}");
            linger::close_gracefully(lender.take_back()).await;
        }
    }
}

#[cfg(test)]
mod park_tests;
#[cfg(test)]
mod tests;
