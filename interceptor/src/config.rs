//! The node's configuration (TOML): this site and its peers, the meshed services (the address
//! applications dial and where the local instance listens), the workload cgroups, which scope
//! carriers are read, and the proxy's limits.
//! Loading checks everything it can up front, so that a bad file fails with one clear sentence.
use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use hyper::header::HeaderName;
use serde::{Deserialize, Serialize};

mod access;
mod live;

pub use access::{AdminSettings, Collaborating, ScopePolicy, DEFAULT_CONTROL_SOCKET};
pub use live::check_live_change;

use crate::{
    resources::{self, ResourceRule},
    tls::{self, TlsError, TlsFiles},
};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the configuration {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the configuration {path} is not valid: {cause}")]
    Invalid { path: PathBuf, cause: ConfigError },
}

/// What is wrong with a configuration, naming the key and the culprit.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("`site` must name this site")]
    NoSite,
    #[error("`proxy.max_header_bytes` must be at least 8192")]
    HeaderLimitTooSmall,
    #[error(
        "`proxy.park_idle_after` must be shorter than `proxy.header_read_timeout` ({timeout:?}): \
         a connection waiting for a request longer than that is closed, never parked"
    )]
    ParkAfterTimeout { timeout: Duration },
    #[error("`{key}` must be at least 1: with 0 nothing would ever be served")]
    ZeroCap { key: &'static str },
    #[error(
        "`[[workload]]` cgroups select what the eBPF programs intercept; with \
         `proxy.interception = \"nat\"` the REDIRECT rule selects it: remove them"
    )]
    WorkloadsWithNat,
    #[error(
        "service '{service}': `inbound = true` needs the eBPF programs (`sk_lookup`), not \
         `proxy.interception = \"nat\"`"
    )]
    InboundWithNat { service: String },
    #[error(
        "service '{service}': inbound address {address} is this site's peer API \
         (`peer_api.listen`): other sites' cheops would be steered to the service"
    )]
    InboundIsPeerApi {
        service: String,
        address: SocketAddr,
    },
    #[error("`proxy.inbound_port` must differ from `proxy.port` ({port})")]
    InboundPortTaken { port: u16 },
    #[error("the service at {address} has an empty name")]
    UnnamedService { address: SocketAddr },
    #[error("service '{service}' is configured twice")]
    ServiceTwice { service: String },
    #[error("service '{service}': address {address} is already taken by another service")]
    AddressTaken {
        service: String,
        address: SocketAddr,
    },
    #[error(
        "service '{service}': `local` must differ from `address` ({address}), or every call \
         would be sent back to cheops"
    )]
    LoopsBack {
        service: String,
        address: SocketAddr,
    },
    #[error("service '{service}': {why}")]
    Resource { service: String, why: String },
    #[error(
        "service '{service}': `protocol = \"tcp\"` relays its connections byte for byte, so its \
         resource rules (HTTP paths) would never apply: remove one or the other"
    )]
    ResourcesOverTcp { service: String },
    #[error("peer '{peer}' is configured twice, or is this site")]
    PeerTwice { peer: String },
    #[error(transparent)]
    UnnameablePeer(TlsError),
    #[error("peers are configured, so `[tls]` (ca, cert, key) is required")]
    NoTls,
    #[error("peers are configured, so `peer_api.listen` is required")]
    NoPeerApiListen,
    #[error("{who}: `allow_sites` names '{site}', neither this site nor a configured peer")]
    PolicySite { who: String, site: String },
    #[error(
        "peer '{peer}': `allow_services` names '{service}', which is not a configured service"
    )]
    PolicyService { peer: String, service: String },
    #[error("{key} cannot change while the agent runs: restart it to apply this file")]
    NeedsRestart { key: String },
    #[error("the configuration cannot be compared with the running one: {0}")]
    Unserialisable(String),
    #[error("the default scope of workload {}: {cause}", cgroup.display())]
    DefaultScope {
        cgroup: PathBuf,
        cause: Box<dsl::ScopeError>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The name of this site, as other sites and scopes call it.
    pub site: String,
    #[serde(default)]
    pub proxy: ProxySettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub replication: ReplicationSettings,
    #[serde(rename = "service", default)]
    pub services: Vec<Service>,
    #[serde(rename = "workload", default)]
    pub workloads: Vec<Workload>,
    /// The other sites this one may forward to, and accepts forwarded requests from.
    #[serde(rename = "peer", default)]
    pub peers: Vec<Peer>,
    /// This site's credentials for talking to its peers (required when peers are configured).
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub peer_api: PeerApiSettings,
    #[serde(default)]
    pub carriers: CarrierSettings,
    /// What the scopes of requests from other machines to inbound services may ask for.
    #[serde(default)]
    pub inbound: ScopePolicy,
}

/// Another site: its name (as scopes and its certificate say it) and its peer API address.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    pub address: SocketAddr,
    /// The services this peer may ask this site to run (absent: every service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_services: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerApiSettings {
    /// Where this site's peer API listens (required when peers are configured).
    pub listen: Option<SocketAddr>,
    /// How often each peer's round trip is measured.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A heartbeat unanswered for this long is missed.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// This many missed heartbeats in a row mark the peer down (one slow beat does not).
    pub heartbeat_misses: u32,
    /// How long connecting (TCP and TLS) to a peer may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a peer may take to start answering a forwarded request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests in flight to one peer at most; more are refused at once (the next site of an
    /// otherwise chain is tried), so a stalled peer holds no more than this.
    pub max_requests_per_peer: usize,
}

impl Default for PeerApiSettings {
    fn default() -> Self {
        PeerApiSettings {
            listen: None,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(2),
            heartbeat_misses: 3,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            max_requests_per_peer: 256,
        }
    }
}

/// Where a request's scope may come from; read in the configured order, the first found wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Carrier {
    /// The `X-Scope` header.
    Header,
    /// The `scope` member of the W3C `baggage` header.
    Baggage,
    /// A `!SCOPE!<scope>` suffix on the auth token header (or the scope its bare token had).
    Token,
    /// The scope of the token named by `X-Subject-Token` (Keystone's token validation, which a
    /// service such as Glance makes with its own token about a user's).
    Subject,
    /// The default scope of the caller's workload cgroup.
    Workload,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CarrierSettings {
    /// The carriers read, in order.
    pub read: Vec<Carrier>,
    /// The header holding the auth token that may end in `!SCOPE!<scope>`.
    pub token_header: String,
    /// `token_header` as a header name, made at its first use rather than at every request.
    #[serde(skip)]
    pub(crate) token_header_name: OnceLock<HeaderName>,
}

impl Default for CarrierSettings {
    fn default() -> Self {
        CarrierSettings {
            read: vec![
                Carrier::Header,
                Carrier::Baggage,
                Carrier::Token,
                Carrier::Subject,
                Carrier::Workload,
            ],
            token_header: "X-Auth-Token".into(),
            token_header_name: OnceLock::new(),
        }
    }
}

impl CarrierSettings {
    /// The token header's name; the default one when the configured name is not a header name.
    pub fn token_header_name(&self) -> &HeaderName {
        self.token_header_name.get_or_init(|| {
            HeaderName::from_bytes(self.token_header.as_bytes())
                .unwrap_or(HeaderName::from_static("x-auth-token"))
        })
    }
}

/// A meshed service: applications dial `address`; the local instance listens at `local`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub address: SocketAddr,
    pub local: SocketAddr,
    /// The resources that replication and cross know how to name (`[[service.resource]]`).
    #[serde(rename = "resource", default)]
    pub resources: Vec<ResourceRule>,
    /// Whether clients on other machines reach this service at `address` through cheops: the
    /// kernel hands their connections to cheops while the application stays bound there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inbound: bool,
    /// How its connections' protocol is known.
    #[serde(default, skip_serializing_if = "ServiceProtocol::is_detected")]
    pub protocol: ServiceProtocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    /// Told by the client's first bytes: HTTP/1.1 and HTTP/2 are served and scoped, anything
    /// else relayed; a client silent for a while (a protocol where the server speaks first)
    /// is relayed once its instance speaks.
    #[default]
    Detect,
    /// Relayed byte for byte to this site's instance as soon as it is accepted, with no wait
    /// for the client's first bytes: for protocols where the server speaks first (MySQL,
    /// SMTP, SSH), which otherwise wait out the sniffing.
    Tcp,
}

impl ServiceProtocol {
    fn is_detected(&self) -> bool {
        *self == ServiceProtocol::Detect
    }
}

/// A cgroup whose processes are meshed. `cgroup` is a path relative to the cgroup v2 mount,
/// or an absolute path under it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub cgroup: PathBuf,
    /// The scope of this workload's requests that carry none of their own.
    pub default_scope: Option<String>,
    /// The other sites this workload's scopes may name (absent: every site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_sites: Option<Vec<String>>,
    /// The collaborations this workload's scopes may use (absent: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<Collaborating>>,
}

impl Workload {
    pub fn policy(&self) -> ScopePolicy {
        ScopePolicy {
            allow_sites: self.allow_sites.clone(),
            allow: self.allow.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// The port the proxy listens on, on 127.0.0.1 and ::1 only.
    pub port: u16,
    /// How connections reach the proxy: the eBPF programs, or a NAT redirect rule set up by
    /// someone else (sidecar-style, kept as a baseline to measure eBPF against).
    pub interception: InterceptionMode,
    /// How long a client may take to send a request's headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long an HTTP/1.1 connection waits for its next request, with nothing of it read,
    /// before it is parked: its task and its registration with the runtime are freed until it
    /// is readable again. Below `header_read_timeout`.
    #[serde(with = "humantime_serde")]
    pub park_idle_after: Duration,
    /// The largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// How long the local instance may take to connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long the local instance may take to start answering.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// The largest request body kept for a retry at the next site of an otherwise chain.
    pub retry_body_limit: usize,
    /// Where connections from other machines to inbound services are accepted, on 127.0.0.1
    /// and ::1 (the kernel hands them over whatever address the listener has).
    pub inbound_port: u16,
    /// How often the workload cgroups are scanned for processes in network namespaces of their
    /// own (containers) in any case. They are also scanned as soon as the kernel tells of a
    /// process moved between cgroups or entering namespaces, or of a connection that found no
    /// listener in its namespace; a namespace whose processes are all gone loses its listener
    /// at the next scan.
    #[serde(with = "humantime_serde")]
    pub workload_scan_every: Duration,
    /// Connections one workload (cgroup) may hold open at once; more are refused.
    pub max_connections_per_workload: usize,
    /// Requests of one workload in flight at once (HTTP/2 streams count one each); more are
    /// answered 503 with `Retry-After`.
    pub max_requests_per_workload: usize,
    /// Threads serving workload connections, each with a runtime of its own (0: one per CPU
    /// the agent may run on).
    pub workers: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            port: 15001,
            interception: InterceptionMode::Ebpf,
            header_read_timeout: Duration::from_secs(10),
            park_idle_after: Duration::from_secs(1),
            max_header_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            retry_body_limit: 1024 * 1024,
            inbound_port: 15006,
            workload_scan_every: Duration::from_secs(2),
            max_connections_per_workload: 1024,
            max_requests_per_workload: 1024,
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InterceptionMode {
    /// cgroup/connect programs redirect the workloads' connections (the product path).
    Ebpf,
    /// An nftables or iptables REDIRECT rule sends connections here; no eBPF is loaded and
    /// the original destination comes from the kernel's connection tracking.
    Nat,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSettings {
    /// The durable store of replicants, the operation log and cross registrations.
    pub store: PathBuf,
    /// How long a replicated request waits for each replica before answering without it (the
    /// replica still gets the operation later).
    #[serde(with = "humantime_serde")]
    pub replica_timeout: Duration,
    /// How often operations that replicas missed are offered to them again.
    #[serde(with = "humantime_serde")]
    pub replay_every: Duration,
    /// How long a write to a replicated resource waits for its leader when the leader cannot
    /// be reached, before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub leader_wait: Duration,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        ReplicationSettings {
            store: PathBuf::from("/var/lib/cheops/store.redb"),
            replica_timeout: Duration::from_secs(3),
            replay_every: Duration::from_secs(1),
            leader_wait: Duration::from_secs(10),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|cause| LoadError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Config::parse(&text).map_err(|cause| LoadError::Invalid {
            path: path.to_owned(),
            cause,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.site.trim().is_empty() {
            return Err(ConfigError::NoSite);
        }
        if self.proxy.max_header_bytes < 8192 {
            return Err(ConfigError::HeaderLimitTooSmall);
        }
        if self.proxy.park_idle_after >= self.proxy.header_read_timeout {
            return Err(ConfigError::ParkAfterTimeout {
                timeout: self.proxy.header_read_timeout,
            });
        }
        for (key, cap) in [
            (
                "proxy.max_connections_per_workload",
                self.proxy.max_connections_per_workload,
            ),
            (
                "proxy.max_requests_per_workload",
                self.proxy.max_requests_per_workload,
            ),
            (
                "peer_api.max_requests_per_peer",
                self.peer_api.max_requests_per_peer,
            ),
        ] {
            if cap == 0 {
                return Err(ConfigError::ZeroCap { key });
            }
        }
        if self.proxy.inbound_port == self.proxy.port {
            return Err(ConfigError::InboundPortTaken {
                port: self.proxy.port,
            });
        }
        if self.proxy.interception == InterceptionMode::Nat && !self.workloads.is_empty() {
            return Err(ConfigError::WorkloadsWithNat);
        }
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        for service in &self.services {
            let culprit = || service.name.clone();
            if service.name.trim().is_empty() {
                return Err(ConfigError::UnnamedService {
                    address: service.address,
                });
            }
            if !names.insert(&service.name) {
                return Err(ConfigError::ServiceTwice { service: culprit() });
            }
            if !addresses.insert(service.address) {
                return Err(ConfigError::AddressTaken {
                    service: culprit(),
                    address: service.address,
                });
            }
            if service.inbound && self.proxy.interception == InterceptionMode::Nat {
                return Err(ConfigError::InboundWithNat { service: culprit() });
            }
            if service.inbound && Some(service.address) == self.peer_api.listen {
                return Err(ConfigError::InboundIsPeerApi {
                    service: culprit(),
                    address: service.address,
                });
            }
            // An inbound service's application may be bound at its very address: cheops reaches
            // it over loopback, which the kernel never steers, and by pid, which it never redirects.
            if service.address == service.local && !service.inbound {
                return Err(ConfigError::LoopsBack {
                    service: culprit(),
                    address: service.address,
                });
            }
            resources::check(&service.resources).map_err(|why| ConfigError::Resource {
                service: culprit(),
                why,
            })?;
            if service.protocol == ServiceProtocol::Tcp && !service.resources.is_empty() {
                return Err(ConfigError::ResourcesOverTcp { service: culprit() });
            }
        }
        self.validate_peers()?;
        access::validate_policies(self)?;
        for workload in &self.workloads {
            if let Some(scope) = &workload.default_scope {
                self.check_scope(scope)
                    .map_err(|cause| ConfigError::DefaultScope {
                        cgroup: workload.cgroup.clone(),
                        cause: Box::new(cause),
                    })?;
            }
        }
        Ok(())
    }

    fn validate_peers(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::from([&self.site]);
        for peer in &self.peers {
            if !names.insert(&peer.name) {
                return Err(ConfigError::PeerTwice {
                    peer: peer.name.clone(),
                });
            }
            tls::site_dns_name(&peer.name).map_err(ConfigError::UnnameablePeer)?;
        }
        if !self.peers.is_empty() {
            if self.tls.is_none() {
                return Err(ConfigError::NoTls);
            }
            if self.peer_api.listen.is_none() {
                return Err(ConfigError::NoPeerApiListen);
            }
        }
        Ok(())
    }

    /// Whether `name` is this site or a configured peer: the sites a scope may name.
    pub fn knows_site(&self, name: &str) -> bool {
        self.site == name || self.peers.iter().any(|peer| peer.name == name)
    }

    /// Parses `text` as a scope naming only known sites.
    pub fn check_scope(&self, text: &str) -> Result<dsl::Scope, dsl::ScopeError> {
        parse_scope_of_known_sites(text, |name| self.knows_site(name))
    }
}

/// Parses `text` as a scope that names only the sites `is_known` accepts: how configured and
/// registered default scopes are checked.
pub fn parse_scope_of_known_sites(
    text: &str,
    is_known: impl Fn(&str) -> bool,
) -> Result<dsl::Scope, dsl::ScopeError> {
    let scope = dsl::parse(text)?;
    scope.check_sites(is_known)?;
    Ok(scope)
}

#[cfg(test)]
mod tests;
