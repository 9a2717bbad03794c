//! One request from a workload: its scope decides the plan (`decide`), a service with resource
//! rules goes to the replicator, any other plan becomes a chain of attempts; each request is
//! counted and logged in one line.
use std::{sync::atomic::Ordering, sync::Arc, time::Instant};

use hyper::{
    body::Incoming,
    header::{HeaderName, HeaderValue},
    http::request::Parts,
    HeaderMap, Method, Request, Response, StatusCode, Uri,
};
use tracing::info;

use super::{
    chain::{Chain, RequestBody},
    content,
    grpc::{self, CallEnd},
    plan::{self, Route},
    upstream::OwnedUpstream,
};
use crate::{
    config::{CarrierSettings, Service},
    http::{
        error_response, remove_headers, remove_hop_by_hop_headers, HeaderTable, ProxyBody,
        SERVED_BY,
    },
    intercept::NO_WORKLOAD,
    metrics::{Collaboration, Metrics, ProxyCounters, RequestHistograms},
    peer::{
        wire::{FORWARDED_BY, FORWARDED_SERVICE, INSTANCE_HTTP2, NOT_DELIVERED},
        Peers,
    },
    replication::{
        codec::{call_of, response_of},
        replicator::ContentRoute,
        sites::PeerSites,
        Replicator,
    },
    scope::{
        carriers,
        policy::{self, Breach, PolicyOf},
        tokens::TokenScopes,
        workloads::{CgroupDefaults, WorkloadScopes},
    },
};

/// The headers with which sites speak to one another, which no workload may send.
static PEER_MARKERS: [HeaderName; 4] = [
    FORWARDED_BY,
    FORWARDED_SERVICE,
    NOT_DELIVERED,
    INSTANCE_HTTP2,
];

/// Removes from a workload's request what does not go on: the headers of its hop, and those
/// with which sites speak to one another (only the peer API takes forwarded requests: a
/// workload cannot pose as a site).
pub(super) fn strip_for_instance(headers: &mut impl HeaderTable) {
    remove_hop_by_hop_headers(headers);
    remove_headers(headers, &PEER_MARKERS);
}

/// What serving a workload's requests takes.
pub struct WorkloadRequests {
    pub site: String,
    pub carriers: CarrierSettings,
    pub peers: Arc<Peers>,
    pub workload_scopes: Arc<WorkloadScopes>,
    /// What the scopes of inbound requests (from other machines) may ask for, if limited.
    pub inbound_policy: Option<Arc<PolicyOf>>,
    pub token_scopes: Arc<TokenScopes>,
    /// Replication and cross, when a service has resource rules.
    pub replicator: Option<Arc<Replicator<PeerSites>>>,
    pub chain: Arc<Chain>,
    pub counters: Arc<ProxyCounters>,
    pub metrics: Arc<Metrics>,
}

/// Why a request's scope cannot be used: unreadable or naming an unknown site (answered 400),
/// or asking what its workload may not (answered 403).
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Carrier(#[from] carriers::CarrierError),
    #[error("the scope of this request cannot be used: {0}")]
    UnknownSite(dsl::ScopeError),
    #[error(
        "{who} may not send service '{service}' where its scope {scope} says: {breach} \
         (see docs/security.md)"
    )]
    Policy {
        who: String,
        service: String,
        scope: String,
        breach: Breach,
    },
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Policy { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
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

/// When a request came, whether it is a gRPC call (read before its headers go on), and the
/// histograms of its connection.
#[derive(Clone, Copy)]
struct Received<'a> {
    at: Instant,
    grpc: bool,
    histograms: &'a Arc<RequestHistograms>,
}

/// What a request's log line and metrics say of it: nothing is copied for the log line unless
/// `info` is enabled, and what is kept is shared, not copied (a gRPC call's is written when
/// the call ends).
pub(super) struct RequestLine {
    pub service: Arc<Service>,
    pub collaboration: Collaboration,
    /// The site that served, as the answer names it (`none` when none did).
    pub served_by: HeaderValue,
    pub method: Method,
    /// Its target: `None` only when it is not logged (`info` off) and not a gRPC call.
    pub uri: Option<Uri>,
    pub scope: Option<String>,
    pub status: u16,
    pub started: Instant,
    pub histograms: Arc<RequestHistograms>,
}

impl RequestLine {
    /// `grpc`: how the gRPC call ended, its method being the path; `ended`: when the request's
    /// time ended (its answer's head came, or its call ended).
    pub fn write(self, metrics: &Metrics, grpc: Option<CallEnd>, ended: Instant) {
        let elapsed = ended.saturating_duration_since(self.started);
        let site = self.served_by.to_str().unwrap_or("none");
        let service = self.service.name.as_str();
        metrics.record_request(
            &self.histograms,
            service,
            self.collaboration,
            site,
            self.status,
            elapsed,
        );
        let grpc_status = grpc.map(CallEnd::label);
        let path = self.uri.as_ref().map_or("", Uri::path);
        if let Some(status) = &grpc_status {
            metrics.record_grpc_call(
                &self.histograms,
                service,
                self.collaboration,
                site,
                path,
                status,
                elapsed,
            );
        }
        info!(
            service = %service,
            method = %self.method,
            path = %path,
            scope = self.scope.as_deref().map(tracing::field::display),
            collaboration = %self.collaboration.as_str(),
            status = self.status,
            grpc_method = grpc_status.as_ref().map(|_| tracing::field::display(path)),
            grpc_status = grpc_status.as_deref().map(tracing::field::display),
            served_by = %site,
            elapsed_us = elapsed.as_micros() as u64,
            "request"
        );
    }
}

impl WorkloadRequests {
    /// One request from a workload: its scope decides where it runs.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        service: &Arc<Service>,
        cgroup_id: u64,
        owned: Option<&OwnedUpstream>,
        histograms: &Arc<RequestHistograms>,
    ) -> Response<ProxyBody> {
        self.counters.http_requests.fetch_add(1, Ordering::Relaxed);
        let at = Instant::now();
        let (mut parts, body) = request.into_parts();
        strip_for_instance(&mut parts.headers);
        let received = Received {
            at,
            grpc: grpc::is_grpc(&parts.headers),
            histograms,
        };
        let (plan, scope) = match self.decide(&mut parts.headers, service, cgroup_id).await {
            Ok(Some((plan, scope))) => (plan, Some(scope)),
            Ok(None) => (dsl::Plan::site(&self.site), None),
            Err(refusal) => {
                if let Refusal::Policy { who, breach, .. } = &refusal {
                    self.metrics.record_policy_refusal(breach.rule(), who);
                }
                let response = error_response(refusal.status(), refusal.to_string());
                return self.log_request(
                    &parts,
                    service,
                    None,
                    Collaboration::Refused,
                    received,
                    response,
                );
            }
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let content = match self.replicator.as_ref() {
            Some(replicator) if !service.resources.is_empty() => {
                replicator.content_route(&service.name, parts.method.as_str(), target)
            }
            _ => ContentRoute::AsRouted,
        };
        if let ContentRoute::Replicas { meta_id, targets } = content {
            // Boxed, as the replicator's work below: their states are large, and would make
            // every request's future (copied whole when its task is spawned) as large.
            let response = Box::pin(content::to_replicas(
                &self.chain,
                &parts,
                body,
                service,
                meta_id.as_str(),
                targets,
            ))
            .await;
            return self.log_request(
                &parts,
                service,
                scope.as_ref(),
                Collaboration::Replication,
                received,
                response,
            );
        }
        let mut body = RequestBody::Streamed(Some(body));
        if let Some(replicator) = self
            .replicator
            .as_ref()
            .filter(|_| content == ContentRoute::NotContent)
        {
            let refused = |response| {
                self.log_request(
                    &parts,
                    service,
                    scope.as_ref(),
                    Collaboration::Refused,
                    received,
                    response,
                )
            };
            let kept = match self.chain.keep(body).await {
                Ok(kept) => kept,
                Err(response) => return refused(response),
            };
            let call = match call_of(&parts, &service.name, &kept) {
                Ok(call) => call,
                Err(response) => return refused(*response),
            };
            if let Some(answer) = Box::pin(replicator.serve(&plan, call)).await {
                let collaboration = match plan {
                    dsl::Plan::SpreadOver { .. } => Collaboration::Cross,
                    _ => Collaboration::Replication,
                };
                return self.log_request(
                    &parts,
                    service,
                    scope.as_ref(),
                    collaboration,
                    received,
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
                    self.chain
                        .run(&mut parts, body, service, &sites, owned, received.grpc)
                        .await,
                )
            }
        };
        self.log_request(
            &parts,
            service,
            scope.as_ref(),
            collaboration,
            received,
            response,
        )
    }

    /// Counts the request in the metrics and logs its one line; a gRPC call's when it ends,
    /// with the status it ended with, and with cheops's own answer in gRPC form. `parts`'s
    /// headers may be gone (given to the instance): what is needed of them is in `received`.
    fn log_request(
        &self,
        parts: &Parts,
        service: &Arc<Service>,
        scope: Option<&dsl::Scope>,
        collaboration: Collaboration,
        received: Received,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let Received {
            at: started,
            grpc,
            histograms,
        } = received;
        let response = if grpc {
            grpc::in_grpc_form(response)
        } else {
            response
        };
        let status = response.status().as_u16();
        let served_by = response
            .headers()
            .get(SERVED_BY)
            .cloned()
            .unwrap_or(HeaderValue::from_static("none"));
        let line = RequestLine {
            service: service.clone(),
            collaboration,
            served_by,
            histograms: histograms.clone(),
            method: parts.method.clone(),
            uri: Some(parts.uri.clone()),
            scope: scope
                .filter(|_| tracing::enabled!(tracing::Level::INFO))
                .map(ToString::to_string),
            status,
            started,
        };
        if !grpc {
            line.write(&self.metrics, None, Instant::now());
            return response;
        }
        let metrics = self.metrics.clone();
        grpc::when_ended(response, move |end| {
            line.write(&metrics, Some(end), Instant::now())
        })
    }

    /// When the scope in `headers` plans this site alone, the scope it came with (none:
    /// local), rewritten in `headers` for the instance; `None` for any other plan or a scope
    /// that cannot be used, which `handle` serves.
    pub(super) async fn local_plan(
        &self,
        headers: &mut HeaderMap,
        service: &Service,
        cgroup_id: u64,
    ) -> Option<Option<dsl::Scope>> {
        match self.decide(headers, service, cgroup_id).await {
            Ok(None) => Some(None),
            Ok(Some((dsl::Plan::Site(site), scope))) if site.as_str() == self.site => {
                Some(Some(scope))
            }
            _ => None,
        }
    }

    /// The plan for this request and the scope it came with, with its scope rewritten for the
    /// next hop (`None`: it came with none, and this site serves it); why the scope cannot be
    /// used, if it cannot (answered 400).
    async fn decide(
        &self,
        headers: &mut HeaderMap,
        service: &Service,
        cgroup_id: u64,
    ) -> Result<Option<(dsl::Plan, dsl::Scope)>, Refusal> {
        let defaults = match cgroup_id {
            NO_WORKLOAD => CgroupDefaults {
                scope: None,
                policy: self.inbound_policy.clone(),
            },
            workload => self.workload_scopes.for_cgroup(workload).await,
        };
        let known = carriers::Known {
            workload_default: defaults.scope.as_ref(),
            token_scope: &|token| self.token_scopes.scope_of(token),
        };
        let Some(found) = carriers::extract(headers, &known, &self.carriers)? else {
            return Ok(None);
        };
        found
            .scope
            .check_sites(|name| self.peers.knows_site(name))
            .map_err(Refusal::UnknownSite)?;
        let plan = dsl::resolve(
            &found.scope,
            &service.name,
            &self.site,
            &self.peers.round_trips(),
        );
        // Nested collaborations run on the sites that are up now.
        let plan = plan::settle(plan, &|site| self.peers.is_up(site));
        if let Some(limits) = &defaults.policy {
            policy::check(&limits.policy, &plan, &self.site).map_err(|breach| Refusal::Policy {
                who: limits.who.clone(),
                service: service.name.clone(),
                scope: found.scope.to_string(),
                breach,
            })?;
        }
        carriers::pass_on(headers, &found, &service.name, &self.carriers);
        Ok(Some((plan, found.scope)))
    }
}
