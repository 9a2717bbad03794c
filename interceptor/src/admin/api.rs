//! The admin API's types, one definition for both sides: the server writes them as JSON and
//! the CLI and the tests read them back typed, so a renamed field is a compile error. Types
//! that lower layers own are re-exported here (those layers never import admin).
use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::{
    intercept::{ebpf::KernelCounters, inbound::InboundService, namespaces::MeshedNamespace},
    peer::PeerStatus,
    replication::replicator::ReplicasView,
    scope::workloads::Registration,
    tls::{CertificateValidity, Generation},
};

/// The page where default scopes of workload cgroups are registered (PUT, JSON `Registration`).
pub const WORKLOAD_SCOPE_PAGE: &str = "/workload-scope";
/// The page that answers a `Status`.
pub const STATUS_PAGE: &str = "/status";
/// The page that reloads the configuration file (POST): `Reloaded`, or 422 and why not.
pub const RELOAD_PAGE: &str = "/reload";
/// The page that answers a `ReplicasView`, or 404 when the site has no resource rules.
pub const REPLICAS_PAGE: &str = "/replicas";

/// What `/status` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub site: String,
    /// `None` with NAT interception: no kernel programs to count anything.
    pub kernel: Option<KernelCounters>,
    pub proxy: ProxySnapshot,
    pub peers: Vec<PeerStatus>,
    /// The workload cgroups' directories.
    pub workloads: Vec<PathBuf>,
    /// The network namespaces of their own (containers) where workload processes run, each
    /// with a cheops listener inside.
    pub namespaces: Vec<MeshedNamespace>,
    /// The services reachable from other machines through cheops, and their connections.
    pub inbound: Vec<InboundService>,
    /// Absent when no service has resource rules.
    pub replication: Option<ReplicationSummary>,
    /// The CA's and this site's certificates in use (none without peers).
    #[serde(default)]
    pub certificates: Vec<CertificateValidity>,
    /// Which TLS material is in use: its generation, site certificate and when it was loaded.
    #[serde(default)]
    pub tls_generation: Option<Generation>,
    /// Which configuration runs.
    pub config: ConfigStatus,
}

/// The running configuration: 1 at start, one more per reload applied.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub generation: u64,
    /// When it was loaded, in seconds since the Unix epoch.
    pub loaded_at_unix: u64,
}

/// What an applied reload answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reloaded {
    pub generation: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicationSummary {
    pub replicants: usize,
    pub cross_resources: usize,
    /// Per site, the operations of this site's log it has yet to apply (replays pending).
    pub pending: BTreeMap<String, usize>,
    /// Why the store could not be read, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProxySnapshot {
    pub connections: u64,
    pub not_redirected: u64,
    pub http_requests: u64,
    pub upstream_errors: u64,
    pub tcp_relays: u64,
    pub forwarded_to_peers: u64,
    pub served_for_peers: u64,
    pub refused_peer_connections: u64,
}
