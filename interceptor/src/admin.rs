//! The admin endpoint on 127.0.0.1: `/status` (JSON) and `/metrics` (Prometheus text). It runs
//! on its own thread and runtime, off the data plane, so a slow scrape never delays a request.
use std::{convert::Infallible, net::SocketAddr, sync::atomic::Ordering, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::{
    loader::{Interception, KernelCounters},
    proxy::Proxy,
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub site: String,
    /// `None` with NAT interception: no kernel programs to count anything.
    pub kernel: Option<KernelCounters>,
    pub proxy: ProxySnapshot,
}

#[derive(Debug, Serialize)]
pub struct ProxySnapshot {
    pub connections: u64,
    pub not_redirected: u64,
    pub http_requests: u64,
    pub upstream_errors: u64,
    pub tcp_relays: u64,
}

#[derive(Clone)]
pub struct Admin {
    pub site: String,
    pub proxy: Arc<Proxy>,
    pub interception: Option<Arc<Interception>>,
}

impl Admin {
    fn status(&self) -> Status {
        let c = &self.proxy.counters;
        Status {
            site: self.site.clone(),
            kernel: self.interception.as_ref().map(|i| i.counters()),
            proxy: ProxySnapshot {
                connections: c.connections.load(Ordering::Relaxed),
                not_redirected: c.not_redirected.load(Ordering::Relaxed),
                http_requests: c.http_requests.load(Ordering::Relaxed),
                upstream_errors: c.upstream_errors.load(Ordering::Relaxed),
                tcp_relays: c.tcp_relays.load(Ordering::Relaxed),
            },
        }
    }

    fn metrics(&self) -> String {
        let status = self.status();
        let site = &status.site;
        let mut text = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{site=\"{site}\"}} {value}\n"
            ));
        };
        if let Some(kernel) = status.kernel {
            counter(
                "cheops_kernel_redirected_total",
                "Connections to meshed services redirected to the proxy by the kernel programs.",
                kernel.redirected,
            );
            counter(
                "cheops_kernel_passed_through_total",
                "Connections from workloads to other addresses, left untouched.",
                kernel.passed_through,
            );
            counter(
                "cheops_kernel_failed_open_total",
                "Connections to meshed services left untouched because no proxy listened.",
                kernel.failed_open,
            );
        }
        counter(
            "cheops_proxy_connections_total",
            "Connections accepted by the proxy.",
            status.proxy.connections,
        );
        counter(
            "cheops_proxy_http_requests_total",
            "HTTP requests forwarded by the proxy.",
            status.proxy.http_requests,
        );
        counter(
            "cheops_proxy_upstream_errors_total",
            "Requests whose destination failed or timed out.",
            status.proxy.upstream_errors,
        );
        counter(
            "cheops_proxy_tcp_relays_total",
            "Non-HTTP connections relayed as plain TCP.",
            status.proxy.tcp_relays,
        );
        text
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match request.uri().path() {
            "/status" => (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&self.status()).expect("status serialises"),
            ),
            "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", self.metrics()),
            "/ready" => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
            other => (
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("no admin page {other}; try /status, /metrics or /ready\n"),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    }

    /// Binds `address` now (so a taken port is reported at start-up) and serves it on a
    /// thread of its own.
    pub fn spawn(self, address: SocketAddr) -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("cheops-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let admin = Arc::new(self);
                    while let Ok((stream, _)) = listener.accept().await {
                        let admin = admin.clone();
                        tokio::spawn(async move {
                            let handler = hyper::service::service_fn(move |request| {
                                let admin = admin.clone();
                                async move { Ok::<_, Infallible>(admin.answer(request).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), handler)
                                .await;
                        });
                    }
                })
            })?;
        Ok(())
    }
}
