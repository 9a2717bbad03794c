//! Peer links and the TLS material. When it is reloaded, each link opens a new connection with
//! it and moves new requests there; the requests in flight on the old connection finish on it,
//! and it closes once the last is answered (hyper ends an HTTP/2 connection whose every sender
//! is gone when its streams are done). A peer certificate out of its validity is refused by
//! the verifier; here it is logged, naming the peer and the certificate's dates, and counted.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::encoding::EncodeLabelSet;
use tracing::{info, warn};

use super::{PeerLink, Peers};
use crate::tls::OutOfValidity;

/// Which end presented a refused certificate.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// A peer connecting to this site's peer API.
    Inbound,
    /// A peer's API, to this site's link.
    Outbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// A refused certificate is logged again at most this often for one peer and direction (each
/// heartbeat would otherwise log it); every refusal is counted.
const LOGGED_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// When each peer's refused certificate was last logged, by peer and direction.
#[derive(Default)]
pub struct RefusalsLogged(Mutex<HashMap<CertificateLabels, Instant>>);

impl RefusalsLogged {
    /// Whether a refusal of `labels` is to be logged now.
    fn due(&self, labels: &CertificateLabels) -> bool {
        let mut logged = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match logged.get(labels) {
            Some(last) if now.duration_since(*last) < LOGGED_AGAIN_AFTER => false,
            _ => {
                logged.insert(labels.clone(), now);
                true
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub peer: String,
    /// `inbound` (a peer connecting here) or `outbound` (a peer's API).
    pub direction: &'static str,
}

impl Peers {
    /// Logs and counts the certificate that `peer` at `address` presented, refused for being
    /// out of its validity.
    pub fn refuse_out_of_validity(
        &self,
        peer: &str,
        address: SocketAddr,
        direction: Direction,
        dated: &OutOfValidity,
    ) {
        let labels = CertificateLabels {
            peer: peer.to_owned(),
            direction: direction.as_str(),
        };
        self.out_of_validity.get_or_create(&labels).inc();
        if self.refusals_logged.due(&labels) {
            let direction = direction.as_str();
            warn!(%peer, %address, direction, "refused peer {peer} at {address}: {dated}");
        }
    }

    /// Moves every link to the TLS material of each new generation.
    pub fn spawn_renewals(self: &Arc<Self>) {
        let Some(tls) = &self.tls else {
            return;
        };
        let mut changes = tls.changes();
        let peers = self.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let generation = changes.borrow_and_update().number;
                for link in peers.links.load().iter() {
                    tokio::spawn(peers.clone().renew(link.clone(), generation));
                }
            }
        });
    }

    /// Gives `link` a connection made with material `generation`, when its open connection
    /// is older; requests in flight stay on the old one, which closes once they are answered.
    async fn renew(self: Arc<Self>, link: Arc<PeerLink>, generation: u64) {
        let stale = |connection: &Option<super::Connection>| {
            connection
                .as_ref()
                .is_some_and(|c| c.generation < generation && !c.sender.is_closed())
        };
        if !stale(&*link.connection.lock().await) {
            // None open: the next request connects with the material in use then.
            return;
        }
        match self.connect_within(&link).await {
            Ok(renewed) => {
                let mut connection = link.connection.lock().await;
                if stale(&connection) {
                    *connection = Some(renewed);
                    info!(peer = %link.name, address = %link.address, tls_generation = generation,
                        "peer link re-established with the new TLS material; the old connection closes once its requests are answered");
                }
            }
            Err(err) => {
                warn!(peer = %link.name, address = %link.address, tls_generation = generation,
                "could not re-establish the peer link with the new TLS material, it keeps its connection: {err}")
            }
        }
    }
}
