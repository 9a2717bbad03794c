//! What collaborating sites exchange: the messages between cheops daemons, their replies, and `Sites`, the seam through which they travel. The peer layer implements
//! `Sites` over the network; tests implement it in-process.
use std::{future::Future, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    call::{Answer, Call},
    ids::{LocalId, MetaId},
    records::{Change, Replicant},
};

/// What one cheops asks another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Message {
    /// Serve this call as if it had arrived here without a scope, without asking any other
    /// site for the resource (the sender already chose this site).
    Execute(Call),
    /// To a leader: order this write of one of your replicants in your log.
    Write { meta_id: MetaId, call: Call },
    /// To a prime site: create this cross resource here, under this meta-ID.
    CreateCross {
        meta_id: MetaId,
        call: Call,
        /// Every site of the expression (to tell them when it is deleted).
        #[serde(default)]
        sites: Vec<String>,
    },
    /// From a leader: apply operation `op_id` of its log, exactly once.
    Apply {
        op_id: String,
        replicant: Option<Replicant>,
        change: Change,
        /// The mappings (`Change::Map`) just before it in the log, applied first, in order:
        /// they travel with the next operation instead of a round trip of their own.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mappings: Vec<Mapping>,
    },
}

/// A mapping of the leader's log that travels with a later operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mapping {
    pub op_id: String,
    pub replicant: Option<Replicant>,
}

/// A site's answer to a message; `local_id` is the ID its instance gave a created resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub answer: Answer,
    pub local_id: Option<LocalId>,
}

/// Why a site gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreached {
    #[error("site {site} did not answer within {after:?}")]
    Timeout { site: String, after: Duration },
    #[error("site {site} cannot be reached: {why}")]
    Unreachable { site: String, why: String },
    /// The message surely never reached the site (it is known to be down, or no connection
    /// to it could be made): sending it again cannot make it count twice.
    #[error("site {site} cannot be reached: {why}")]
    NotDelivered { site: String, why: String },
}

impl Unreached {
    /// The site surely never got the message.
    pub fn not_delivered(&self) -> bool {
        matches!(self, Unreached::NotDelivered { .. })
    }
}

/// The seam between collaborations and the network.
pub trait Sites: Send + Sync + 'static {
    /// Sends `call` to this site's own instance of `call.service`, as it is.
    fn instance(&self, call: Call) -> impl Future<Output = Result<Answer, Unreached>> + Send;

    /// Delivers `message` to the cheops of `site` (another site), which hands it to its
    /// collaboration layer, and brings back the reply.
    fn deliver(
        &self,
        site: &str,
        message: Message,
    ) -> impl Future<Output = Result<Reply, Unreached>> + Send;
}

/// Delivering a message to a site, this one included: the one call that goes back up, from
/// the parts of replication to the replicator that handles messages, passed down to them.
pub trait Deliver: Send + Sync + 'static {
    /// `message` to `site` (handled here when it is this site), answered within `limit`.
    fn deliver(
        self: &Arc<Self>,
        site: &str,
        message: Message,
        limit: Duration,
    ) -> impl Future<Output = Result<Reply, Unreached>> + Send;
}
