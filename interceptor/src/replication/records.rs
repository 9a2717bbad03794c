//! The records that sites keep and exchange: replicants and their replicas, cross resources,
//! the entries of a leader's log and what a site recorded when it applied one.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    call::Call,
    ids::{LocalId, MetaId},
};

/// A replicated resource: who orders its writes, and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicant {
    pub meta_id: MetaId,
    pub service: String,
    /// The site that received the create, and orders every write in its log.
    pub leader: String,
    pub replicas: Vec<Replica>,
    /// A delete was ordered: the resource is gone, or going, everywhere.
    pub deleted: bool,
}

impl Replicant {
    /// A resource just created over `sites` and led by `leader`: no replica holds it yet.
    pub fn created(
        meta_id: MetaId,
        service: String,
        leader: String,
        sites: &[String],
    ) -> Replicant {
        Replicant {
            meta_id,
            service,
            leader,
            replicas: sites
                .iter()
                .map(|site| Replica {
                    site: site.clone(),
                    local_id: None,
                    state: ReplicaState::Pending,
                })
                .collect(),
            deleted: false,
        }
    }

    pub fn replica(&self, site: &str) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.site == site)
    }

    pub fn replica_mut(&mut self, site: &str) -> Option<&mut Replica> {
        self.replicas.iter_mut().find(|r| r.site == site)
    }

    /// The sites of its replicas but `site` (its leader's, for the mapping).
    pub fn sites_but(&self, site: &str) -> Vec<String> {
        self.replicas
            .iter()
            .map(|r| r.site.clone())
            .filter(|other| other != site)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub site: String,
    pub local_id: Option<LocalId>,
    pub state: ReplicaState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// The create has not reached this replica yet.
    Pending,
    Ok,
    /// The site's instance refused the create, with this status.
    Failed(u16),
}

/// In words, as `cheops replicas` shows it.
impl std::fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaState::Pending => f.write_str("pending: the create has not reached it yet"),
            ReplicaState::Ok => f.write_str("ok"),
            ReplicaState::Failed(status) => write!(f, "refused by its instance ({status})"),
        }
    }
}

/// A cross resource: it lives at one site, and every site of the expression knows where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossRecord {
    pub meta_id: MetaId,
    pub service: String,
    pub site: String,
    pub local_id: LocalId,
    /// Every site of its expression, to tell them when it is deleted (none in records made
    /// before this was kept).
    #[serde(default)]
    pub sites: Vec<String>,
}

/// What one entry of a leader's log changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Create the replica (the call is the POST on the collection).
    Create(Call),
    /// Update or delete the replica (the call's path names it by its meta-ID).
    Write(Call),
    /// Record where a cross resource lives.
    Register(CrossRecord),
    /// Record the leader's mapping of the replicant (every replica's local ID and state), which
    /// travels with the operation: each replica holds the whole mapping, not only its own part.
    Map,
    /// Forget a cross resource deleted where it lived.
    Forget(CrossRecord),
}

/// One entry of the leader's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub seq: u64,
    pub meta_id: MetaId,
    pub change: Change,
    /// Per site: `None` until applied there, then the status its instance answered.
    pub applied: BTreeMap<String, Option<u16>>,
}

impl Operation {
    /// The name by which replicas recognise an operation they already applied.
    pub fn op_id(&self, leader: &str) -> String {
        format!("{leader}#{}", self.seq)
    }
}

/// What a site recorded when it applied an operation, to give the same reply again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub status: u16,
    pub local_id: Option<LocalId>,
}
