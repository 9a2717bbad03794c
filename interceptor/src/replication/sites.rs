//! The `Sites` seam over the network: calls to this site's instances through a plain HTTP
//! client, and replication messages to other sites' cheops through the peer connections
//! (mutual TLS), on the peer API's `/cheops/replication` path.
use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use http_body_util::BodyExt;
use hyper::{header, Request};

use crate::{
    config::CarrierSettings,
    http::{full_body, instance_client, InstanceClient},
    peer::{
        wire::{REPLICATION_PATH, REPLICATION_SERVICE},
        Peers,
    },
    replication::{
        call::{Answer, Call},
        codec::{answer_of, request_of},
        exchange::{Message, Reply, Sites, Unreached},
    },
    scope::tokens::TokenScopes,
};

pub struct PeerSites {
    site: String,
    /// Where this site's instance of each service listens, by service name; replaced whole
    /// when the configuration changes.
    instances: ArcSwap<HashMap<String, SocketAddr>>,
    peers: Arc<Peers>,
    /// Where the tokens of calls to this site's instances leave their scope, as the proxy's
    /// own calls to them do, and how a scope is carried (replaced with the configuration).
    token_scopes: Arc<TokenScopes>,
    carriers: ArcSwap<CarrierSettings>,
    upstream: InstanceClient,
    response_timeout: Duration,
}

impl PeerSites {
    pub fn new(
        site: String,
        instances: HashMap<String, SocketAddr>,
        peers: Arc<Peers>,
        token_scopes: (Arc<TokenScopes>, CarrierSettings),
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> PeerSites {
        PeerSites {
            site,
            instances: ArcSwap::from_pointee(instances),
            peers,
            token_scopes: token_scopes.0,
            carriers: ArcSwap::from_pointee(token_scopes.1),
            upstream: instance_client(connect_timeout),
            response_timeout,
        }
    }

    /// How scopes are carried, for the calls that start from now on.
    pub fn set_carriers(&self, carriers: CarrierSettings) {
        self.carriers.store(Arc::new(carriers));
    }

    /// Where this site's instances listen, for the calls that start from now on.
    pub fn set_instances(&self, instances: HashMap<String, SocketAddr>) {
        self.instances.store(Arc::new(instances));
    }

    async fn call_instance(&self, call: Call) -> Result<Answer, Unreached> {
        let unreachable = |why: String| Unreached::Unreachable {
            site: self.site.clone(),
            why,
        };
        let service = call.service.clone();
        let local = *self
            .instances
            .load()
            .get(&service)
            .ok_or_else(|| unreachable(format!("no service '{service}' is configured here")))?;
        let mut request =
            request_of(call, &local.to_string()).map_err(|err| unreachable(err.to_string()))?;
        self.token_scopes
            .remember_passed_on(request.headers_mut(), &self.carriers.load());
        let response = tokio::time::timeout(self.response_timeout, self.upstream.request(request))
            .await
            .map_err(|_| Unreached::Timeout {
                site: self.site.clone(),
                after: self.response_timeout,
            })?
            .map_err(|err| unreachable(format!("its instance of '{service}' ({local}): {err}")))?;
        answer_of(response)
            .await
            .map_err(|err| unreachable(format!("reading the answer of '{service}' failed: {err}")))
    }

    async fn send(&self, site: &str, message: Message) -> Result<Reply, Unreached> {
        let unreachable = |why: String| Unreached::Unreachable {
            site: site.to_owned(),
            why,
        };
        let body = serde_json::to_vec(&message).map_err(|err| unreachable(err.to_string()))?;
        let request = Request::post(REPLICATION_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full_body(body))
            .map_err(|err| unreachable(err.to_string()))?;
        let response = self
            .peers
            .forward(site, REPLICATION_SERVICE, request)
            .await
            .map_err(|failure| match failure {
                crate::peer::PeerError::MaybeDelivered(cause) => unreachable(cause.to_string()),
                crate::peer::PeerError::NotDelivered(cause) => Unreached::NotDelivered {
                    site: site.to_owned(),
                    why: cause.to_string(),
                },
            })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| unreachable(format!("reading its reply failed: {err}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(unreachable(format!(
                "it refused ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|err| unreachable(format!("its reply is unreadable: {err}")))
    }
}

impl Sites for PeerSites {
    fn instance(&self, call: Call) -> impl Future<Output = Result<Answer, Unreached>> + Send {
        self.call_instance(call)
    }

    fn deliver(
        &self,
        site: &str,
        message: Message,
    ) -> impl Future<Output = Result<Reply, Unreached>> + Send {
        self.send(site, message)
    }
}
