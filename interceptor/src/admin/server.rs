//! The admin endpoint: `/status` (JSON), `/replicas` (JSON), `/metrics` (Prometheus text),
//! `/ready`, and `/workload-scope` where `cheops exec` registers a cgroup's default scope. The
//! read-only pages are served on TCP loopback to anyone; the pages that change state only on
//! the control socket (`control.rs`). It runs on its own thread and runtime, off the data plane,
//! so a slow scrape never delays a request.
use std::{
    convert::Infallible, net::SocketAddr, sync::atomic::Ordering, sync::Arc, time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tracing::warn;

use anyhow::Context;

use super::api::{
    ConfigStatus, ProxySnapshot, Registration, Reloaded, ReplicationSummary, Status, RELOAD_PAGE,
    REPLICAS_PAGE, STATUS_PAGE, WORKLOAD_SCOPE_PAGE,
};
use super::control::ControlSocket;
use crate::{
    accept::next_connection,
    intercept::{ebpf::Interception, inbound::InboundDoor, namespaces::WorkloadNamespaces},
    metrics::{Metrics, ProxyCounters},
    peer::Peers,
    reload::{ConfigGeneration, ReloadHandle},
    replication::{sites::PeerSites, Replicator},
    scope::workloads::WorkloadScopes,
    tls::SiteTls,
};

/// The parts of the agent that admin shows or changes; never the proxy itself.
#[derive(Clone)]
pub struct Admin {
    pub site: String,
    pub counters: Arc<ProxyCounters>,
    pub peers: Arc<Peers>,
    pub workload_scopes: Arc<WorkloadScopes>,
    pub replicator: Option<Arc<Replicator<PeerSites>>>,
    pub interception: Option<Arc<Interception>>,
    /// The workloads' own network namespaces that cheops listens in (none with NAT).
    pub namespaces: Option<Arc<WorkloadNamespaces>>,
    pub inbound: Arc<InboundDoor>,
    pub metrics: Arc<Metrics>,
    /// Where changes are taken, and from whom.
    pub control: ControlSocket,
    /// The TLS material of the peer API and links (none without peers).
    pub tls: Option<Arc<SiteTls>>,
    /// Where `cheops reload` is asked.
    pub reload: ReloadHandle,
    pub generation: Arc<ConfigGeneration>,
}

impl Admin {
    fn status(&self) -> Status {
        let c = &self.counters;
        let p = &self.peers.counters;
        Status {
            site: self.site.clone(),
            kernel: self.interception.as_ref().map(|i| i.counters()),
            proxy: ProxySnapshot {
                connections: c.connections.load(Ordering::Relaxed),
                not_redirected: c.not_redirected.load(Ordering::Relaxed),
                http_requests: c.http_requests.load(Ordering::Relaxed),
                upstream_errors: c.upstream_errors.load(Ordering::Relaxed),
                tcp_relays: c.tcp_relays.load(Ordering::Relaxed),
                forwarded_to_peers: p.forwarded.load(Ordering::Relaxed),
                served_for_peers: p.served_for_peers.load(Ordering::Relaxed),
                refused_peer_connections: p.refused_connections.load(Ordering::Relaxed),
            },
            peers: self.peers.status(),
            workloads: self.workload_scopes.roots(),
            namespaces: self
                .namespaces
                .as_ref()
                .map(|n| n.meshed())
                .unwrap_or_default(),
            inbound: self.inbound.counts(),
            certificates: self
                .tls
                .as_ref()
                .map(|tls| tls.certificates())
                .unwrap_or_default(),
            tls_generation: self.tls.as_ref().map(|tls| tls.generation()),
            config: ConfigStatus {
                generation: self.generation.generation(),
                loaded_at_unix: self.generation.loaded_at_unix(),
            },
            replication: self
                .replicator
                .as_ref()
                .map(|replicator| match replicator.view() {
                    Ok(view) => ReplicationSummary {
                        replicants: view.replicants.len(),
                        cross_resources: view.cross.len(),
                        pending: view.pending,
                        error: None,
                    },
                    Err(cause) => ReplicationSummary {
                        replicants: 0,
                        cross_resources: 0,
                        pending: Default::default(),
                        error: Some(cause.to_string()),
                    },
                }),
        }
    }

    /// Registers (or removes) a cgroup's default scope, checked like any request's scope.
    async fn register(&self, request: Request<hyper::body::Incoming>) -> (StatusCode, String) {
        let body = match Limited::new(request.into_body(), 64 * 1024).collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("reading the body: {err}\n"),
                )
            }
        };
        let registration: Registration = match serde_json::from_slice(&body) {
            Ok(registration) => registration,
            Err(err) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("not a registration: {err}\n"),
                )
            }
        };
        let scope = match registration.scope.as_deref().map(|text| {
            crate::config::parse_scope_of_known_sites(text, |site| self.peers.knows_site(site))
        }) {
            Some(Err(err)) => return (StatusCode::BAD_REQUEST, format!("{err}\n")),
            Some(Ok(scope)) => Some(scope),
            None => None,
        };
        match self.workload_scopes.register(&registration.cgroup, scope) {
            Ok(()) => (StatusCode::OK, "registered\n".to_owned()),
            Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")),
        }
    }

    /// Answers one admin request; `steering`: it came through the control socket from a caller
    /// allowed to change the agent.
    pub(super) async fn answer(
        &self,
        request: Request<hyper::body::Incoming>,
        steering: Steering,
    ) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match steering {
            Steering::Refused(why) => (StatusCode::FORBIDDEN, "text/plain", format!("{why}\n")),
            Steering::Allowed => self.page(request, true).await,
            Steering::ReadOnly => self.page(request, false).await,
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    }

    /// The status, content type and body of an admin page; `may_change`: pages that change
    /// the agent are served, not refused.
    async fn page(
        &self,
        request: Request<hyper::body::Incoming>,
        may_change: bool,
    ) -> (StatusCode, &'static str, String) {
        let changing = matches!(
            (request.method(), request.uri().path()),
            (&hyper::Method::PUT, WORKLOAD_SCOPE_PAGE) | (&hyper::Method::POST, RELOAD_PAGE)
        );
        if changing && !may_change {
            return (
                StatusCode::FORBIDDEN,
                "text/plain",
                format!(
                    "the TCP admin endpoint is read-only: {} changes the agent, so it is served \
                     only on the control socket {} (root{})\n",
                    request.uri().path(),
                    self.control.path.display(),
                    match &self.control.group {
                        Some((name, _)) => format!(" and group {name}"),
                        None => String::new(),
                    }
                ),
            );
        }
        match request.uri().path() {
            WORKLOAD_SCOPE_PAGE if changing => {
                let (status, text) = self.register(request).await;
                (status, "text/plain", text)
            }
            RELOAD_PAGE if changing => match self.reload.reload().await {
                Ok(generation) => (
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string(&Reloaded { generation }).unwrap_or_default(),
                ),
                Err(why) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "text/plain",
                    format!("{why}\n"),
                ),
            },
            STATUS_PAGE => (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&self.status()).expect("status serialises"),
            ),
            "/metrics" => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.render(),
            ),
            REPLICAS_PAGE => match self.replicator.as_ref().map(|r| r.view()) {
                None => (
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!(
                        "site {} has no resource rules, hence no replicas\n",
                        self.site
                    ),
                ),
                Some(Ok(view)) => (
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string_pretty(&view).unwrap_or_default(),
                ),
                Some(Err(cause)) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{cause}\n"),
                ),
            },
            "/ready" => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
            other => (
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("no admin page {other}; try /status, /metrics or /ready\n"),
            ),
        }
    }

    /// Binds the control socket and, unless turned off, the read-only TCP endpoint now (so a
    /// taken port is reported at start-up) and serves them on a thread of its own.
    pub fn spawn(self, tcp: Option<SocketAddr>) -> anyhow::Result<()> {
        let listener = tcp
            .map(|address| {
                let listener = std::net::TcpListener::bind(address).with_context(|| {
                    format!("binding the admin endpoint {address} (see `admin.port`)")
                })?;
                listener.set_nonblocking(true)?;
                anyhow::Ok(listener)
            })
            .transpose()?;
        let control = self.control.bind()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("cheops-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let admin = Arc::new(self);
                    tokio::spawn(serve_control(control, admin.clone()));
                    let Some(listener) = listener else {
                        return std::future::pending().await;
                    };
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        let (stream, _) = next_connection(&listener, "an admin connection").await;
                        tokio::spawn(serve_connection(stream, admin.clone(), Steering::ReadOnly));
                    }
                })
            })?;
        Ok(())
    }
}

/// Serves the control socket: a caller allowed gets every admin page, any other one a 403
/// that says why, on every page.
async fn serve_control(listener: std::os::unix::net::UnixListener, admin: Arc<Admin>) {
    let listener = UnixListener::from_std(listener).expect("a tokio Unix listener");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                warn!("accepting a control connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let steering = match admin.control.refusal(&stream) {
            None => Steering::Allowed,
            Some(why) => {
                warn!("control connection refused: {why}");
                Steering::Refused(why.into())
            }
        };
        tokio::spawn(serve_connection(stream, admin.clone(), steering));
    }
}

/// What an admin connection may do.
#[derive(Clone)]
pub(super) enum Steering {
    /// Read the read-only pages (TCP).
    ReadOnly,
    /// Read and change (the control socket, root or the control group).
    Allowed,
    /// Nothing at all, and why (the control socket, anyone else).
    Refused(Arc<str>),
}

/// Serves the admin pages on one connection, TCP or the control socket's.
pub(super) async fn serve_connection<S>(stream: S, admin: Arc<Admin>, steering: Steering)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler = hyper::service::service_fn(move |request| {
        let (admin, steering) = (admin.clone(), steering.clone());
        async move { Ok::<_, Infallible>(admin.answer(request, steering).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), handler)
        .await;
}
