//! Where the kernel meets the proxy: the seam (`OriginalDestinations`, which answers which
//! service an accepted connection dialled), the eBPF programs that steer workloads'
//! connections (`ebpf`), one agent per workload cgroup (`exclusive`), the listeners inside
//! workloads' own network namespaces (`namespaces`) and the kernel's word of new ones
//! (`namespace_events`), the door for connections from other machines (`inbound`), the
//! nftables baseline (`nat`) and the cgroup v2 mount (`cgroup`).
use std::net::SocketAddr;

use tokio::net::TcpStream;

pub mod cgroup;
pub mod ebpf;
pub mod exclusive;
pub mod inbound;
pub mod namespace_events;
pub mod namespaces;
pub mod nat;

/// The `cgroup_id` of a connection that no workload of this node made (it came from another
/// machine): no cgroup has id 0.
pub const NO_WORKLOAD: u64 = 0;

/// Which service a redirected client dialled, and from which workload cgroup (`NO_WORKLOAD`
/// for a connection from another machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intercepted {
    pub service: SocketAddr,
    pub cgroup_id: u64,
}

/// The seam between the kernel and the proxy, one per listener: the eBPF maps for a network
/// namespace's listener, the accepted socket's own address for the inbound door, the NAT
/// table, or a plain value in tests.
pub trait OriginalDestinations: Send + Sync + 'static {
    /// The original destination of `connection`, accepted from `client`; asked once.
    fn take(&self, connection: &TcpStream, client: SocketAddr) -> Option<Intercepted>;
}
