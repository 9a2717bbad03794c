//! The transparent proxy. Each accepted connection was redirected by the kernel programs; the
//! proxy asks which service the client meant (`OriginalDestinations`), then serves HTTP/1.1
//! through hyper, forwarding each request to the service's local instance with streamed bodies
//! and a pooled upstream, or, for anything that is not HTTP, relays the bytes untouched.
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
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    Request, Response, StatusCode, Uri,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::{
    config::{ProxySettings, Service},
    metrics::{Collaboration, Metrics, RequestLabels},
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
    destinations: Arc<dyn OriginalDestinations>,
    upstream: Client<HttpConnector, Incoming>,
    counters: Arc<ProxyCounters>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(
        site: String,
        services: Vec<Service>,
        settings: ProxySettings,
        destinations: Arc<dyn OriginalDestinations>,
        counters: Arc<ProxyCounters>,
        metrics: Arc<Metrics>,
    ) -> Proxy {
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
            destinations,
            upstream,
            counters,
            metrics,
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
            Protocol::Http1 => self.serve_http(stream, service).await,
            Protocol::Opaque => self.relay_tcp(stream, &service).await,
        }
    }

    async fn serve_http(self: Arc<Self>, stream: TcpStream, service: Arc<Service>) {
        let proxy = self.clone();
        let handler = hyper::service::service_fn(move |request| {
            let proxy = proxy.clone();
            let service = service.clone();
            async move { Ok::<_, Infallible>(proxy.forward(request, &service).await) }
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

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        service: &Service,
    ) -> Response<ProxyBody> {
        self.counters.http_requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() =
            match format!("http://{}{}", service.local, path_and_query).parse::<Uri>() {
                Ok(uri) => uri,
                Err(err) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        format!("bad request target: {err}"),
                    )
                }
            };
        remove_hop_by_hop_headers(request.headers_mut());

        let answer = tokio::time::timeout(
            self.settings.response_timeout,
            self.upstream.request(request),
        )
        .await;
        let response = match answer {
            Ok(Ok(response)) => {
                let mut response = response.map(|body| body.boxed());
                remove_hop_by_hop_headers(response.headers_mut());
                if let Ok(site) = HeaderValue::from_str(&self.site) {
                    response.headers_mut().insert(SERVED_BY, site);
                }
                response
            }
            Ok(Err(err)) => {
                self.counters
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                let why = if err.is_connect() {
                    "could not be reached"
                } else {
                    "failed"
                };
                error_response(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "the instance of service '{}' at site {} ({}) {why}: {:#}",
                        service.name,
                        self.site,
                        service.local,
                        anyhow::Error::from(err)
                    ),
                )
            }
            Err(_) => {
                self.counters
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "the instance of service '{}' at site {} ({}) did not answer within {:?}",
                        service.name, self.site, service.local, self.settings.response_timeout
                    ),
                )
            }
        };
        let elapsed = started.elapsed();
        let labels = RequestLabels::new(
            &service.name,
            Collaboration::Local,
            &self.site,
            response.status().as_u16(),
        );
        self.metrics.record_request(&labels, elapsed);
        info!(
            service = %service.name,
            %method,
            path = %path,
            status = response.status().as_u16(),
            site = %self.site,
            elapsed_us = elapsed.as_micros() as u64,
            "request"
        );
        response
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
        };
        let settings = ProxySettings {
            response_timeout: Duration::from_secs(2),
            ..ProxySettings::default()
        };
        let counters = Arc::new(ProxyCounters::default());
        let metrics = Arc::new(Metrics::new(None, counters.clone()));
        let proxy = Arc::new(Proxy::new(
            "Paris".into(),
            vec![service.clone()],
            settings,
            Arc::new(Dialled(service.address)),
            counters,
            metrics,
        ));
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
                && request.contains("x-scope: {a: B}")
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
        let answer = exchange(proxy, "GET /items?x=1 HTTP/1.1\r\nhost: catalog\r\nx-scope: {a: B}\r\nconnection: close\r\n\r\n").await;
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
            answer.contains("service 'catalog' at site Paris"),
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
