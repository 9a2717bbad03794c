//! How one attempt at one site went, and why it did not serve: typed causes that the chain's
//! decisions (`plan`) read by kind and the client's answer names in one sentence.
use std::{error::Error, fmt, net::SocketAddr, time::Duration};

use hyper::{http::uri::InvalidUri, StatusCode};
use hyper_util::client::legacy;

use crate::peer;

/// How one attempt at one site went.
#[derive(Debug)]
pub enum Outcome {
    /// The site's instance answered with this status.
    Answered(StatusCode),
    /// The site answered a gRPC call UNAVAILABLE (with this message) before any response
    /// message: the client saw nothing of it yet, so the next site may serve the call.
    Unavailable(String),
    /// The request never reached the service there (site down, connection refused).
    NotDelivered(NotDelivered),
    /// The request may have reached the service, then went wrong (timeout, broken connection).
    Failed(Failed),
}

impl Outcome {
    /// The site was not tried because a cap was reached: the client may retry soon.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            Outcome::NotDelivered(NotDelivered::Peer(peer::NotDelivered::Busy { .. }))
        )
    }
}

/// Why the attempt did not serve, as the client's answer says it.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answered(status) => write!(f, "answered {status}"),
            Outcome::Unavailable(message) => write!(f, "answered UNAVAILABLE ({message})"),
            Outcome::NotDelivered(why) => why.fmt(f),
            Outcome::Failed(why) => why.fmt(f),
        }
    }
}

/// This site's instance of a service, as an answer names it.
#[derive(Debug)]
pub struct InstanceOf {
    pub service: String,
    pub address: SocketAddr,
}

impl fmt::Display for InstanceOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "its instance of '{}' ({})", self.service, self.address)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotDelivered {
    #[error("{instance} could not be reached: {}", with_causes(.cause))]
    Instance {
        instance: InstanceOf,
        cause: InstanceError,
    },
    /// The peer's cheops could not reach its own instance.
    #[error("its instance of '{service}' could not be reached")]
    PeerInstance { service: String },
    #[error(transparent)]
    Peer(#[from] peer::NotDelivered),
    /// The call's stream sent to an earlier site was over the limit: it cannot be sent again.
    #[error(
        "not tried: the call had sent over {limit} bytes to the site before \
         (`proxy.retry_body_limit`), too many to send again"
    )]
    NotReplayable { limit: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error("bad request target: {0}")]
    BadTarget(InvalidUri),
    #[error("{instance} failed: {}", with_causes(.cause))]
    Instance {
        instance: InstanceOf,
        cause: InstanceError,
    },
    #[error("{instance} did not answer within {after:?}")]
    Timeout {
        instance: InstanceOf,
        after: Duration,
    },
    #[error(transparent)]
    Peer(#[from] peer::MaybeDelivered),
}

/// Why a request did not get an answer from the instance.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error(transparent)]
    Http(hyper::Error),
    #[error("bad request target: {0}")]
    BadTarget(hyper::http::Error),
    /// The fast path's own exchange (`fast`): as hyper's client would say it.
    #[error("connection closed before message completed")]
    Closed,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("invalid HTTP answer: {0}")]
    BadAnswer(String),
}

impl UpstreamError {
    /// The request never left: the instance could not be reached.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout(_)
        )
    }
}

/// Why this site's instance gave no answer, through the pooled client or the workload
/// connection's own.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(transparent)]
    Pooled(#[from] legacy::Error),
    #[error(transparent)]
    Owned(#[from] UpstreamError),
}

/// An error and its causes, `a: b: c`: the pooled client's own message says little.
fn with_causes(error: &(dyn Error + 'static)) -> String {
    std::iter::successors(Some(error), |error| (*error).source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
