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
mod inbound;
mod linger;
mod outcome;
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
    config::{ProxySettings, Service},
    intercept::{Intercepted, OriginalDestinations},
    limits::{self, Slots},
    metrics::{Metrics, ProxyCounters},
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
        let routes = lasting.routes(routing, &settings, &counters);
        Proxy {
            routes: Arc::new(ArcSwap::from_pointee(routes)),
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
            let proxy = self.clone();
            self.workers.serve(stream, move |stream| {
                proxy.handle_connection(stream, client, intercepted)
            });
        }
    }

    async fn handle_connection(
        self: Arc<Self>,
        stream: TcpStream,
        client: SocketAddr,
        intercepted: Option<Intercepted>,
    ) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        let Some(intercepted) = intercepted else {
            self.counters.not_redirected.fetch_add(1, Ordering::Relaxed);
            warn!(%client, "closing a connection that was not redirected by the kernel programs");
            return;
        };
        let routes = self.routes.load_full();
        let Some(service) = routes
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
        let Some(_connection) = self.connections.try_take(intercepted.cgroup_id) else {
            return self.refuse_connection(stream, &service).await;
        };
        match sniff(&stream).await {
            Protocol::Http1 => {
                self.serve_http(stream, service, intercepted.cgroup_id)
                    .await
            }
            Protocol::Http2 => {
                let workload = self.workload(service, intercepted.cgroup_id);
                Box::pin(http2::serve(stream, workload, &self.settings, true)).await
            }
            Protocol::Opaque => {
                self.counters.tcp_relays.fetch_add(1, Ordering::Relaxed);
                relay::relay_tcp(stream, &service, self.settings.connect_timeout).await
            }
        }
    }

    /// A connection past its workload's cap: an HTTP/1 client is answered `503` with
    /// `Retry-After` once its request arrived; any other is closed.
    async fn refuse_connection(&self, stream: TcpStream, service: &Service) {
        let max = self.connections.max();
        debug!(service = %service.name, "refusing a connection: its workload holds {max}");
        if sniff(&stream).await != Protocol::Http1 {
            return;
        }
        let answer = limits::refused_connection_bytes(&service.name, max);
        linger::answer_then_close(stream, &answer, self.settings.header_read_timeout).await
    }

    /// A workload connection's parts; no connection to the instance of its own yet.
    fn workload(&self, service: Arc<Service>, cgroup_id: u64) -> http2::WorkloadConnection {
        let routes = self.routes.clone();
        http2::WorkloadConnection {
            requests: Arc::new(move || routes.load().requests.clone()),
            in_flight: self.in_flight.of(cgroup_id),
            service,
            cgroup_id,
            owned: None,
            histograms: Arc::default(),
        }
    }

    /// HTTP/1.1: one request after another. The fast path (`fast`) serves them while it can;
    /// from the first it leaves, hyper serves the rest of the connection, which then owns its
    /// own connection to the instance (`upstream`); after an upgrade to HTTP/2, the streams
    /// share the pooled one. A service with resource rules is served by hyper throughout.
    async fn serve_http(&self, stream: TcpStream, service: Arc<Service>, cgroup_id: u64) {
        let workload = self.workload(service, cgroup_id);
        let (stream, read) = if workload.service.resources.is_empty() {
            match fast::serve(stream, &workload, &self.settings).await {
                Some(handed) => (handed.stream, handed.read),
                None => return,
            }
        } else {
            (stream, Bytes::new())
        };
        // Boxed: a connection the fast path serves does not hold hyper's state as well.
        Box::pin(self.serve_with_hyper(stream, read, workload)).await
    }

    /// The rest of an HTTP/1.1 connection, `read` the bytes already read of it, with hyper.
    async fn serve_with_hyper(
        &self,
        stream: TcpStream,
        read: Bytes,
        mut workload: http2::WorkloadConnection,
    ) {
        workload.owned = Some(Arc::new(OwnedUpstream::default()));
        // To close it gracefully if hyper ends it on an error (a 431) as the client still sends.
        let handle = linger::second_handle(&stream);
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
        if let Err(err) = connection.await {
            debug!("client connection ended: {err}");
            linger::close_gracefully(handle).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use super::*;
    use crate::config::CarrierSettings;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{
        body::Incoming,
        header::{self, HeaderValue},
        HeaderMap, Request, Response, StatusCode,
    };
    use hyper_util::rt::TokioExecutor;
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
        let settings = ProxySettings {
            response_timeout: Duration::from_secs(2),
            ..ProxySettings::default()
        };
        proxy_with(local, settings).await
    }

    async fn proxy_with(local: SocketAddr, settings: ProxySettings) -> SocketAddr {
        proxy_serving(catalog(local), settings).await
    }

    /// The service the tests' workloads dial, whose instance is at `local`.
    pub(super) fn catalog(local: SocketAddr) -> Service {
        Service {
            name: "catalog".into(),
            address: "198.18.0.10:80".parse().unwrap(),
            local,
            resources: Vec::new(),
            inbound: false,
        }
    }

    /// A proxy at site Paris for `service` alone, with no peers nor workload scopes.
    pub(super) fn proxy_of(service: &Service, settings: ProxySettings) -> Arc<Proxy> {
        let counters = Arc::new(ProxyCounters::default());
        let metrics = Arc::new(Metrics::new(None, counters.clone(), None));
        let peers = Peers::new("Paris".into(), &[], None, Default::default()).unwrap();
        Arc::new(Proxy::new(ProxyParts {
            site: "Paris".into(),
            settings,
            peers: Arc::new(peers),
            workload_scopes: Arc::new(WorkloadScopes::new(Vec::new()).unwrap()),
            token_scopes: Arc::new(TokenScopes::default()),
            counters,
            metrics,
            routing: Routing {
                services: vec![service.clone()],
                carriers: CarrierSettings::default(),
                inbound_policy: None,
                peer_services: HashMap::new(),
                replicator: None,
            },
            workers: Workers::inline(),
        }))
    }

    /// `proxy_of` serving on an ephemeral loopback port, where every connection dialled
    /// `service`.
    pub(super) async fn proxy_serving(service: Service, settings: ProxySettings) -> SocketAddr {
        let proxy = proxy_of(&service, settings);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(proxy.serve(listener, Arc::new(Dialled(service.address))));
        address
    }

    /// A loopback address where nothing listens: bound, then dropped.
    pub(super) async fn nothing_listening() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
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

    /// An instance that speaks HTTP/2 only (prior knowledge, as gRPC servers): each call is
    /// answered with its own body, then trailers that say which `te` it came with.
    async fn http2_instance() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let answer = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let te = request.headers().get(header::TE).cloned();
                    let body = request.into_body().collect().await?.to_bytes();
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    trailers.insert("x-te", te.unwrap_or(HeaderValue::from_static("none")));
                    let body = Full::new(body)
                        .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
                    Ok::<_, hyper::Error>(Response::new(body))
                });
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), answer);
                tokio::spawn(connection);
            }
        });
        address
    }

    /// A gRPC-style call over HTTP/2 with prior knowledge: the answer's head, body and trailers.
    async fn http2_call(proxy: SocketAddr) -> (hyper::http::response::Parts, Bytes, HeaderMap) {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::post("http://198.18.0.10/pkg.Service/Call")
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .body(Full::new(Bytes::from_static(b"message")))
            .unwrap();
        let (head, body) = sender.send_request(request).await.unwrap().into_parts();
        let body = body.collect().await.unwrap();
        let trailers = body.trailers().cloned().unwrap_or_default();
        (head, body.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn an_http2_call_reaches_an_http2_instance_and_its_trailers_come_back() {
        let proxy = proxy_for(http2_instance().await).await;
        let (head, body, trailers) = http2_call(proxy).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers["x-cheops-site"], "Paris");
        assert_eq!(body, "message");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-te"], "trailers");
    }

    #[tokio::test]
    async fn a_grpc_call_that_cannot_be_served_gets_a_grpc_status_naming_the_site() {
        let local = nothing_listening().await;
        let (head, body, _) = http2_call(proxy_for(local).await).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers["grpc-status"], "14");
        let message = head.headers["grpc-message"].to_str().unwrap();
        assert!(
            message.contains("service 'catalog': site Paris:"),
            "{message}"
        );
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_instance_gets_a_502_naming_the_service_and_site() {
        let local = nothing_listening().await;
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

    /// An instance that answers every request `200 ok` on keep-alive connections, or never
    /// answers at all (`stalled`).
    async fn instance(stalled: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = hyper::service::service_fn(move |_request| async move {
                    if stalled {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), answer),
                );
            }
        });
        address
    }

    /// Sends one keep-alive request on `client` and reads its answer's head.
    async fn ask(client: &mut TcpStream) -> String {
        client
            .write_all(b"GET /items HTTP/1.1\r\nhost: catalog\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let len = tokio::time::timeout(Duration::from_secs(2), client.read(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap();
        String::from_utf8_lossy(&answer[..len]).into_owned()
    }

    #[tokio::test]
    async fn a_connection_past_the_workload_cap_gets_503_with_retry_after_and_others_go_on() {
        let settings = ProxySettings {
            max_connections_per_workload: 2,
            ..ProxySettings::default()
        };
        let proxy = proxy_with(instance(false).await, settings).await;
        let mut first = TcpStream::connect(proxy).await.unwrap();
        let mut second = TcpStream::connect(proxy).await.unwrap();
        assert!(ask(&mut first).await.starts_with("HTTP/1.1 200"));
        assert!(ask(&mut second).await.starts_with("HTTP/1.1 200"));
        let refused = ask(&mut TcpStream::connect(proxy).await.unwrap()).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("retry-after: 1"), "{refused}");
        assert!(
            refused.contains("`proxy.max_connections_per_workload`"),
            "{refused}"
        );
        // The connections held keep being served; one closed frees its slot.
        assert!(ask(&mut first).await.starts_with("HTTP/1.1 200"));
        drop(second);
        let mut again = None;
        for _ in 0..50 {
            let mut third = TcpStream::connect(proxy).await.unwrap();
            if ask(&mut third).await.starts_with("HTTP/1.1 200") {
                again = Some(third);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            again.is_some(),
            "a closed connection's slot was not given back"
        );
    }

    #[tokio::test]
    async fn requests_past_the_workload_cap_are_refused_at_once_while_others_hang() {
        let settings = ProxySettings {
            max_requests_per_workload: 2,
            response_timeout: Duration::from_secs(30),
            ..ProxySettings::default()
        };
        let proxy = proxy_with(instance(true).await, settings).await;
        let mut hanging = Vec::new();
        for _ in 0..2 {
            let mut client = TcpStream::connect(proxy).await.unwrap();
            client
                .write_all(b"GET /items HTTP/1.1\r\nhost: catalog\r\n\r\n")
                .await
                .unwrap();
            hanging.push(client);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let refused = ask(&mut TcpStream::connect(proxy).await.unwrap()).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("retry-after: 1"), "{refused}");
        assert!(
            refused.contains("`proxy.max_requests_per_workload`"),
            "{refused}"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "refused late");
    }
}
