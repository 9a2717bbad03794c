//! The inbound door: connections from other machines to a service marked `inbound = true`.
//! The kernel's `sk_lookup` program hands them to cheops's inbound listener while the
//! application stays bound to the same address; the accepted socket's local address is the
//! one the client dialled, so it is the original destination. No workload sent them: only the
//! request's own carriers give them a scope.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

use super::{Intercepted, OriginalDestinations, NO_WORKLOAD};

/// Connections that arrived at one inbound service, as `cheops status` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InboundService {
    pub service: String,
    pub address: SocketAddr,
    pub connections: u64,
}

/// The inbound services by address, each counting the connections steered to it.
pub struct InboundDoor {
    services: BTreeMap<SocketAddr, (String, AtomicU64)>,
}

impl InboundDoor {
    /// `services`: (name, address) of each inbound service.
    pub fn new(services: impl IntoIterator<Item = (String, SocketAddr)>) -> InboundDoor {
        InboundDoor {
            services: services
                .into_iter()
                .map(|(name, address)| (address, (name, AtomicU64::new(0))))
                .collect(),
        }
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.services.keys().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn counts(&self) -> Vec<InboundService> {
        self.services
            .iter()
            .map(|(address, (service, count))| InboundService {
                service: service.clone(),
                address: *address,
                connections: count.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl OriginalDestinations for InboundDoor {
    fn take(&self, connection: &TcpStream, _client: SocketAddr) -> Option<Intercepted> {
        let dialled = connection.local_addr().ok()?;
        let dialled = SocketAddr::new(dialled.ip().to_canonical(), dialled.port());
        let (_, count) = self.services.get(&dialled)?;
        count.fetch_add(1, Ordering::Relaxed);
        Some(Intercepted {
            service: dialled,
            cgroup_id: NO_WORKLOAD,
        })
    }
}

/// The inbound listeners: on loopback, where nothing else can reach them, since the kernel
/// hands them their connections whatever address they are bound to. IPv6 only where it is up.
pub async fn bind_inbound(port: u16) -> std::io::Result<(TcpListener, Option<TcpListener>)> {
    let ipv4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    let ipv6 = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
        .await
        .ok();
    Ok((ipv4, ipv6))
}
