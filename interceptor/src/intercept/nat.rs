//! Original destinations of connections sent to the proxy by a NAT REDIRECT rule (nftables or
//! iptables), the way sidecar meshes intercept: connection tracking remembers the address the
//! client dialled, and `SO_ORIGINAL_DST` reads it from the accepted socket. No eBPF involved;
//! kept so that benchmarks can compare the two paths through the same proxy.
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;
use tracing::debug;

use super::{Intercepted, OriginalDestinations};

pub struct NatRedirect;

impl OriginalDestinations for NatRedirect {
    fn take(&self, connection: &TcpStream, client: SocketAddr) -> Option<Intercepted> {
        let socket = SockRef::from(connection);
        let original = match client {
            SocketAddr::V4(_) => socket.original_dst_v4(),
            SocketAddr::V6(_) => socket.original_dst_v6(),
        };
        let original = match original.map(|address| address.as_socket()) {
            Ok(Some(address)) => address,
            Ok(None) => return None,
            Err(err) => {
                // ENOENT: connection tracking has no entry, so nothing redirected it here.
                debug!(%client, "no original destination (SO_ORIGINAL_DST): {err}");
                return None;
            }
        };
        // Without NAT, conntrack's original destination is the proxy itself: not redirected.
        if connection.local_addr().ok() == Some(original) {
            return None;
        }
        Some(Intercepted {
            service: original,
            // A REDIRECT rule does not say which workload connected.
            cgroup_id: 0,
        })
    }
}
