//! What the proxy routes with under one configuration (`Routes`), built from the part of the
//! configuration that changes live (`Routing`) and what outlives a reload (`Lasting`). A reload
//! builds new routes; requests under way keep the ones they started with.
use std::{collections::HashMap, sync::Arc};

use super::{chain::Chain, inbound::PeerApi, request::WorkloadRequests};
use crate::{
    config::{CarrierSettings, ProxySettings, Service},
    http::{http2_instance_client, instance_client},
    metrics::{Metrics, ProxyCounters},
    peer::Peers,
    replication::{sites::PeerSites, Replicator},
    scope::{policy::PolicyOf, tokens::TokenScopes, workloads::WorkloadScopes},
};

/// The part of the configuration that the proxy takes live (`Proxy::reroute`).
pub struct Routing {
    pub services: Vec<Service>,
    pub carriers: CarrierSettings,
    /// What the scopes of requests from other machines may ask for, if limited.
    pub inbound_policy: Option<Arc<PolicyOf>>,
    /// The services each limited peer may ask this site to run.
    pub peer_services: HashMap<String, Vec<String>>,
    pub replicator: Option<Arc<Replicator<PeerSites>>>,
}

/// One configuration's way of serving: a request reads it once and keeps it to its end.
pub(super) struct Routes {
    pub(super) services: Vec<Arc<Service>>,
    pub(super) requests: Arc<WorkloadRequests>,
    pub(super) peer_api: Arc<PeerApi>,
}

/// What every configuration's routes share.
pub(super) struct Lasting {
    pub(super) site: String,
    pub(super) peers: Arc<Peers>,
    pub(super) workload_scopes: Arc<WorkloadScopes>,
    pub(super) token_scopes: Arc<TokenScopes>,
    pub(super) metrics: Arc<Metrics>,
}

impl Lasting {
    pub(super) fn routes(
        &self,
        routing: Routing,
        settings: &ProxySettings,
        counters: &Arc<ProxyCounters>,
    ) -> Routes {
        let Routing {
            services,
            carriers,
            inbound_policy,
            peer_services,
            replicator,
        } = routing;
        let services: Vec<Arc<Service>> = services.into_iter().map(Arc::new).collect();
        let chain = Arc::new(Chain {
            site_header: crate::peer::wire::header_value(&self.site),
            site: self.site.clone(),
            upstream: instance_client(settings.connect_timeout),
            upstream_http2: http2_instance_client(settings.connect_timeout),
            peers: self.peers.clone(),
            settings: settings.clone(),
            carriers: carriers.clone(),
            token_scopes: self.token_scopes.clone(),
            counters: counters.clone(),
        });
        let peer_api = Arc::new(PeerApi {
            site: self.site.clone(),
            services: services.clone(),
            peers: self.peers.clone(),
            chain: chain.clone(),
            replicator: replicator.clone(),
            peer_services,
            metrics: self.metrics.clone(),
        });
        let requests = Arc::new(WorkloadRequests {
            site: self.site.clone(),
            carriers,
            peers: self.peers.clone(),
            workload_scopes: self.workload_scopes.clone(),
            inbound_policy,
            token_scopes: self.token_scopes.clone(),
            replicator,
            chain,
            counters: counters.clone(),
            metrics: self.metrics.clone(),
        });
        Routes {
            services,
            requests,
            peer_api,
        }
    }
}
