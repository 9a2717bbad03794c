//! The types that the kernel programs and the `cheops` daemon share through eBPF maps.
//! Every address is kept in IPv6 form (IPv4 as `::ffff:a.b.c.d`) so that one key type serves
//! `connect4`, `connect6`, `sock_ops` and `sk_lookup`, whatever the socket family.
#![no_std]

/// Name of the map of meshed service addresses: `SocketAddress -> u32` (unused value, 1).
pub const SERVICES_MAP: &str = "SERVICES";
/// Name of the one-entry array holding the `ProxyListener`.
pub const LISTENER_MAP: &str = "LISTENER";
/// Name of the map from a client's `ConnectionKey` to the `OriginalDestination` it dialled.
pub const ORIGINAL_DESTINATIONS_MAP: &str = "ORIGINAL_DESTINATIONS";
/// Name of the set of network namespaces where cheops listens: netns cookie `u64 -> u32`
/// (unused value, 1).
pub const MESHED_NAMESPACES_MAP: &str = "MESHED_NAMESPACES";
/// Name of the map of service addresses steered when connections arrive from other machines:
/// `SocketAddress -> u32` (unused value, 1).
pub const INBOUND_SERVICES_MAP: &str = "INBOUND_SERVICES";
/// Name of the socket map holding cheops's inbound listeners (`INBOUND_IPV4`, `INBOUND_IPV6`).
pub const INBOUND_LISTENERS_MAP: &str = "INBOUND_LISTENERS";
/// Slots of `INBOUND_LISTENERS`, by the family of the arriving connection.
pub const INBOUND_IPV4: u32 = 0;
pub const INBOUND_IPV6: u32 = 1;
/// Name of the per-CPU counters array, indexed by `Counter`.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the ring buffer of `NamespaceEvent`s: what may have brought a workload into a
/// network namespace cheops does not listen in yet.
pub const NAMESPACE_EVENTS_MAP: &str = "NAMESPACE_EVENTS";

/// The kernel programs, by the names userspace loads them under.
pub const CONNECT4_PROGRAM: &str = "redirect_connect4";
pub const CONNECT6_PROGRAM: &str = "redirect_connect6";
pub const SOCK_OPS_PROGRAM: &str = "record_client_address";
pub const SK_LOOKUP_PROGRAM: &str = "steer_inbound";
pub const CGROUP_ATTACH_PROGRAM: &str = "notice_cgroup_attach";
pub const NAMESPACE_SWITCH_PROGRAM: &str = "notice_namespace_switch";

/// The kernel's tracepoints that the event programs are attached to: (category, name, program).
pub const NAMESPACE_TRACEPOINTS: [(&str, &str, &str); 3] = [
    ("cgroup", "cgroup_attach_task", CGROUP_ATTACH_PROGRAM),
    ("syscalls", "sys_exit_setns", NAMESPACE_SWITCH_PROGRAM),
    ("syscalls", "sys_exit_unshare", NAMESPACE_SWITCH_PROGRAM),
];

/// An IP address and TCP port. `ip` holds the 16 address bytes in network order, read as
/// four native-endian words (the layout of `bpf_sock_addr.user_ip6`); `port` is in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketAddress {
    pub ip: [u32; 4],
    pub port: u32,
}

impl SocketAddress {
    /// Words 0..2 of an IPv4-mapped IPv6 address: `::ffff:`.
    pub const V4_MAPPED_PREFIX: [u32; 3] = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff])];

    pub fn from_octets(octets: [u8; 16], port: u16) -> Self {
        let word =
            |i: usize| u32::from_ne_bytes([octets[i], octets[i + 1], octets[i + 2], octets[i + 3]]);
        SocketAddress {
            ip: [word(0), word(4), word(8), word(12)],
            port: port as u32,
        }
    }

    pub fn octets(&self) -> [u8; 16] {
        let mut octets = [0u8; 16];
        for (chunk, word) in octets.chunks_exact_mut(4).zip(self.ip) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        octets
    }

    /// `ipv4` is in network order read as a native word, as in `bpf_sock_addr.user_ip4`.
    pub fn from_ipv4_word(ipv4: u32, port: u16) -> Self {
        let [a, b, c] = Self::V4_MAPPED_PREFIX;
        SocketAddress {
            ip: [a, b, c, ipv4],
            port: port as u32,
        }
    }

    pub fn is_ipv4_mapped(&self) -> bool {
        self.ip[..3] == Self::V4_MAPPED_PREFIX
    }
}

/// What a redirected client originally dialled, from which cgroup (the workload) and which
/// network namespace (its cookie: the host's, or a container's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDestination {
    pub service: SocketAddress,
    /// Explicit padding: the verifier rejects map values with uninitialised bytes.
    pub _padding: u32,
    pub cgroup_id: u64,
    pub netns_cookie: u64,
}

/// A redirected connection as the proxy sees it: the client's address and port inside its
/// network namespace. Two containers may use the same addresses, so the namespace is part of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    pub netns_cookie: u64,
    pub client: SocketAddress,
    /// Explicit padding: the verifier rejects keys with uninitialised bytes.
    pub _padding: u32,
}

/// Where the cheops proxy listens, and who it is. `port == 0` means no proxy: fail open.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyListener {
    /// IPv4 listening address, network order read as a native word (127.0.0.1).
    pub ipv4: u32,
    /// IPv6 listening address (::1), as in `SocketAddress::ip`.
    pub ipv6: [u32; 4],
    pub port: u32,
    /// Process id (tgid) of the daemon: its own connections are never redirected.
    pub pid: u32,
}

/// Indexes into the per-CPU counters array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A connection to a meshed service, sent to the proxy.
    Redirected = 0,
    /// A connection to anything that is not a meshed service, untouched.
    PassedThrough = 1,
    /// A connection to a meshed service left untouched because no proxy listened (fail open).
    FailedOpen = 2,
    /// A connection from another machine to an inbound service, handed to cheops.
    SteeredInbound = 3,
}

impl Counter {
    pub const ALL: [Counter; 4] = [
        Counter::Redirected,
        Counter::PassedThrough,
        Counter::FailedOpen,
        Counter::SteeredInbound,
    ];
}

/// Something that may have put a workload process in a network namespace of its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceEvent {
    /// A `NamespaceEventKind`.
    pub kind: u32,
    /// The process that caused it (for a cgroup attach, the one that wrote `cgroup.procs`).
    pub pid: u32,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceEventKind {
    /// A process was moved into a cgroup (any cgroup: the programs do not tell which).
    CgroupAttach = 0,
    /// A process entered or made namespaces (`setns`, `unshare`).
    NamespaceSwitch = 1,
    /// A workload dialled a meshed service from a namespace where cheops does not listen.
    FailedOpen = 2,
}

impl NamespaceEventKind {
    pub const ALL: [NamespaceEventKind; 3] =
        [Self::CgroupAttach, Self::NamespaceSwitch, Self::FailedOpen];

    pub fn from_raw(kind: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|known| *known as u32 == kind)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with no padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::SocketAddress {}
    unsafe impl aya::Pod for super::OriginalDestination {}
    unsafe impl aya::Pod for super::ConnectionKey {}
    unsafe impl aya::Pod for super::ProxyListener {}
}
