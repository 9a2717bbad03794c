//! The inbound peer API: what other sites ask of this one. A request forwarded by a peer is
//! executed against this site's instance, its scope never read again; a replication message
//! goes to the replicator; a heartbeat gets this site's own measurements.
use std::{collections::HashMap, sync::atomic::Ordering, sync::Arc, time::Duration};

use http_body_util::BodyExt;
use hyper::{body::Incoming, header::HeaderValue, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::{
    chain::{Chain, RequestBody},
    grpc,
    outcome::Outcome,
};
use crate::{
    accept::next_connection,
    config::Service,
    http::{error_response, full_body, ProxyBody},
    metrics::Metrics,
    peer::wire::{
        header_value, FORWARDED_BY, FORWARDED_SERVICE, HEARTBEAT_PATH, INSTANCE_HTTP2,
        NOT_DELIVERED, REPLICATION_PATH,
    },
    peer::{Direction, Peers},
    replication::{
        codec::{call_of, response_of},
        exchange::Message,
        sites::PeerSites,
        Replicator,
    },
    resources::content_of,
    tls::{self, SiteTls},
};

/// What serving other sites takes: this site's services, run through the chain's local
/// attempt (never sent on), or through the replicator for services with resource rules.
pub struct PeerApi {
    pub site: String,
    pub services: Vec<Arc<Service>>,
    pub peers: Arc<Peers>,
    pub chain: Arc<Chain>,
    pub replicator: Option<Arc<Replicator<PeerSites>>>,
    /// The services each limited peer may ask this site to run (`[[peer]] allow_services`).
    pub peer_services: HashMap<String, Vec<String>>,
    pub metrics: Arc<Metrics>,
}

/// Serves the peer API on `listener`: TLS with a certificate of the mesh's CA required (the
/// material in use when the connection starts), then a check that the certificate names a
/// configured peer, then HTTP/2. `current` gives the API of the running configuration, read
/// once per request.
pub async fn serve<F>(listener: TcpListener, tls: Arc<SiteTls>, current: F)
where
    F: Fn() -> Arc<PeerApi> + Clone + Send + Sync + 'static,
{
    loop {
        let (stream, client) = next_connection(&listener, "a peer connection").await;
        // An answer goes out in several writes (HTTP/2 frames in TLS records): with Nagle's
        // algorithm on, each after the first waits for the peer to acknowledge the one before,
        // up to its delayed acknowledgement (40 ms), far more than the answer took.
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.current().server.clone());
        let current = current.clone();
        tokio::spawn(async move {
            let api = current();
            let refused = |why: String| {
                api.peers
                    .counters
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                warn!(%client, "refused a peer connection: {why}");
            };
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    if let Some(dated) = tls::out_of_validity(&err) {
                        let names = api.peers.names();
                        let site = tls::certificate_site(
                            &dated.certificate,
                            names.iter().map(String::as_str),
                        );
                        let peer = site.unwrap_or("(no configured site)");
                        let counters = &api.peers.counters;
                        counters.refused_connections.fetch_add(1, Ordering::Relaxed);
                        return api.peers.refuse_out_of_validity(
                            peer,
                            client,
                            Direction::Inbound,
                            dated,
                        );
                    }
                    return refused(format!("TLS handshake failed: {err}"));
                }
                Err(_) => return refused("TLS handshake took over 10s".into()),
            };
            let site = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|certificate| {
                    let names = api.peers.names();
                    tls::certificate_site(certificate, names.iter().map(String::as_str))
                        .map(str::to_owned)
                });
            let Some(site) = site else {
                return refused("its certificate names no configured peer".into());
            };
            debug!(%client, peer = %site, "peer connected");
            let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                let api = current();
                let site = site.clone();
                let grpc = grpc::is_grpc(request.headers());
                async move {
                    let response = api.serve_peer(&site, request).await;
                    // The calling site relays this answer as it is: a gRPC call's in gRPC form.
                    let response = if grpc {
                        grpc::in_grpc_form(response)
                    } else {
                        response
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            if let Err(err) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tls), handler)
                .await
            {
                debug!(%client, "peer connection ended: {err}");
            }
        });
    }
}

impl PeerApi {
    /// A request that `peer` forwarded (or its heartbeat): executed against the local
    /// instance, its scope never read again.
    async fn serve_peer(&self, peer: &str, request: Request<Incoming>) -> Response<ProxyBody> {
        if !self.peers.knows_site(peer) {
            return error_response(
                StatusCode::FORBIDDEN,
                format!("site {peer} is no longer a peer of site {}", self.site),
            );
        }
        if request.uri().path() == HEARTBEAT_PATH {
            let answer = serde_json::to_vec(&self.peers.heartbeat_answer()).unwrap_or_default();
            return Response::new(full_body(answer));
        }
        let claimed = request
            .headers()
            .get(FORWARDED_BY)
            .and_then(|v| v.to_str().ok());
        if claimed != Some(header_value(peer).to_str().unwrap_or_default()) {
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
        if let Some(allowed) = self
            .peer_services
            .get(peer)
            .filter(|allowed| !allowed.iter().any(|s| s == wanted))
        {
            self.metrics
                .record_policy_refusal("allow_services", &format!("peer {peer}"));
            warn!(
                peer,
                service = wanted,
                "refused a forwarded request: not in the peer's `allow_services`"
            );
            return error_response(
                StatusCode::FORBIDDEN,
                format!(
                    "site {peer} may not ask site {} to run service '{wanted}': it is not in \
                     peer {peer}'s `allow_services` [{}] (see docs/security.md)",
                    self.site,
                    allowed.join(", ")
                ),
            );
        }
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
        // The instance speaks what the client spoke to the service, not the peer link's HTTP/2.
        parts.version = match parts.headers.remove(INSTANCE_HTTP2) {
            Some(_) => Version::HTTP_2,
            None => Version::HTTP_11,
        };
        // A resource's content is streamed to the instance as it is (its path already names
        // this site's local ID): never kept.
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some(replicator) = self.replicator.as_ref().filter(|_| {
            !service.resources.is_empty() && content_of(&service.resources, target).is_none()
        }) {
            // Executed here, with this site's IDs rewritten, and never sent on.
            let kept = match self.chain.keep(RequestBody::Streamed(Some(body))).await {
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
        let grpc = grpc::is_grpc(&parts.headers);
        let request = Request::from_parts(parts, body.boxed());
        let attempt = self
            .chain
            .attempt_local(request, &service, None, grpc)
            .await;
        if let Some(response) = attempt.response {
            return response;
        }
        let delivered = !matches!(attempt.outcome, Outcome::NotDelivered(_));
        let mut response = error_response(
            StatusCode::BAD_GATEWAY,
            format!("site {}: {}", self.site, attempt.outcome),
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
            .chain
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
            Ok(reply) => Response::new(full_body(serde_json::to_vec(&reply).unwrap_or_default())),
            Err(refusal) => error_response(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()),
        }
    }
}
