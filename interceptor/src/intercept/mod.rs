//! Where the kernel meets the proxy: the seam (`OriginalDestinations`, which answers which
//! service an accepted connection dialled), the eBPF programs that steer workloads'
//! connections (`ebpf`), one agent per workload cgroup (`exclusive`), the nftables baseline
//! (`nat`) and the cgroup v2 mount (`cgroup`).
use std::net::SocketAddr;

use tokio::net::TcpStream;

pub mod cgroup;
pub mod ebpf;
pub mod exclusive;
pub mod nat;

/// Which service a redirected client dialled, and from which workload cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intercepted {
    pub service: SocketAddr,
    pub cgroup_id: u64,
}

/// The seam between the kernel and the proxy: the eBPF maps in production, a plain map in tests.
pub trait OriginalDestinations: Send + Sync + 'static {
    /// The original destination of `connection`, accepted from `client`; asked once.
    fn take(&self, connection: &TcpStream, client: SocketAddr) -> Option<Intercepted>;
}
