//! The proxy served on loopback, the kernel's part replaced by a plain value.
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

pub(super) async fn proxy_with(local: SocketAddr, settings: ProxySettings) -> SocketAddr {
    proxy_serving(catalog(local), settings).await
}

/// A connected pair on loopback: the client's end, and the end cheops would have accepted.
pub(super) async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    (client, listener.accept().await.unwrap().0)
}

/// The service the tests' workloads dial, whose instance is at `local`.
pub(super) fn catalog(local: SocketAddr) -> Service {
    Service {
        name: "catalog".into(),
        address: "198.18.0.10:80".parse().unwrap(),
        local,
        resources: Vec::new(),
        inbound: false,
        protocol: Default::default(),
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
    listening(proxy_of(&service, settings), &service).await
}

/// `proxy` serving on an ephemeral loopback port, where every connection dialled `service`.
pub(super) async fn listening(proxy: Arc<Proxy>, service: &Service) -> SocketAddr {
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
pub(super) async fn instance(stalled: bool) -> SocketAddr {
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
pub(super) async fn ask(client: &mut TcpStream) -> String {
    ask_with(client, b"GET /items HTTP/1.1\r\nhost: catalog\r\n\r\n").await
}

/// Sends `request` on `client` and reads its answer's head.
pub(super) async fn ask_with(client: &mut TcpStream, request: &[u8]) -> String {
    client.write_all(request).await.unwrap();
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
