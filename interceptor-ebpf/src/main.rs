//! Cheops kernel programs. `connect4`/`connect6` send connections from meshed workloads to
//! meshed services to the cheops listener of the caller's own network namespace, remembering
//! what was dialled; `sock_ops` files that memory under the client's namespace and address once
//! the connection is established, the one key the proxy can see on the socket it accepts.
//! `sk_lookup` hands connections arriving from other machines at an inbound service's address
//! to cheops's inbound listener, while the application stays bound to that address.
//! `namespace_events` tells cheops when a workload may have entered a network namespace of its
//! own, so that it listens there at once rather than at its next periodic scan.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        bpf_sock_tuple, sk_action::SK_PASS, BPF_F_CURRENT_NETNS, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
    },
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_netns_cookie,
        bpf_get_socket_cookie, bpf_sk_lookup_tcp, bpf_sk_release,
    },
    macros::{cgroup_sock_addr, map, sk_lookup, sock_ops},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, SockMap},
    programs::{SkLookupContext, SockAddrContext, SockOpsContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use interceptor_ebpf::{
    ConnectionKey, Counter, NamespaceEventKind, OriginalDestination, ProxyListener, SocketAddress,
    INBOUND_IPV4, INBOUND_IPV6,
};

mod namespace_events;

/// Let the connection proceed (the only verdict these hooks give).
const ALLOW: i32 = 1;
const MAX_SERVICES: u32 = 4096;
const MAX_CONNECTIONS: u32 = 65536;
const MAX_NAMESPACES: u32 = 16384;

#[map(name = "SERVICES")]
static SERVICES: HashMap<SocketAddress, u32> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map(name = "LISTENER")]
static LISTENER: Array<ProxyListener> = Array::with_max_entries(1, 0);

/// Socket cookie -> original destination, from `connect` until the connection is established.
#[map(name = "PENDING")]
static PENDING: LruHashMap<u64, OriginalDestination> =
    LruHashMap::with_max_entries(MAX_CONNECTIONS, 0);

/// Client (namespace, address) -> original destination; the proxy reads and deletes each entry.
#[map(name = "ORIGINAL_DESTINATIONS")]
static ORIGINAL_DESTINATIONS: LruHashMap<ConnectionKey, OriginalDestination> =
    LruHashMap::with_max_entries(MAX_CONNECTIONS, 0);

/// Network namespaces where cheops listens, by cookie: a connection from any other passes
/// untouched, even when something else listens at the proxy's address there.
#[map(name = "MESHED_NAMESPACES")]
static MESHED_NAMESPACES: HashMap<u64, u32> = HashMap::with_max_entries(MAX_NAMESPACES, 0);

#[map(name = "INBOUND_SERVICES")]
static INBOUND_SERVICES: HashMap<SocketAddress, u32> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Cheops's inbound listeners, at `INBOUND_IPV4` and `INBOUND_IPV6`; empty when it is gone.
#[map(name = "INBOUND_LISTENERS")]
static INBOUND_LISTENERS: SockMap = SockMap::with_max_entries(2, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::ALL.len() as u32, 0);

#[cgroup_sock_addr(connect4)]
pub fn redirect_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands this program a valid `bpf_sock_addr`.
    let addr = unsafe { &mut *ctx.sock_addr };
    let dialled = SocketAddress::from_ipv4_word(addr.user_ip4, port_of(addr.user_port));
    if let Some(listener) = proxy_for(&ctx, &dialled) {
        addr.user_ip4 = listener.ipv4;
        addr.user_port = u32::from((listener.port as u16).to_be());
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn redirect_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands this program a valid `bpf_sock_addr`.
    let addr = unsafe { &mut *ctx.sock_addr };
    let dialled = SocketAddress {
        ip: read_words(&addr.user_ip6),
        port: u32::from(port_of(addr.user_port)),
    };
    if let Some(listener) = proxy_for(&ctx, &dialled) {
        // An IPv6 socket dialling an IPv4-mapped address makes an IPv4 connection: keep it one.
        let proxy = if dialled.is_ipv4_mapped() {
            SocketAddress::from_ipv4_word(listener.ipv4, 0).ip
        } else {
            listener.ipv6
        };
        write_words(&mut addr.user_ip6, proxy);
        addr.user_port = u32::from((listener.port as u16).to_be());
    }
    ALLOW
}

/// The listener to redirect `dialled` to, having recorded the original destination; `None`
/// leaves the connection untouched (not a meshed service, cheops itself, or no proxy).
#[inline(always)]
fn proxy_for(ctx: &SockAddrContext, dialled: &SocketAddress) -> Option<ProxyListener> {
    if SERVICES.get_ptr(dialled).is_none() {
        count(Counter::PassedThrough);
        return None;
    }
    let listener = *LISTENER.get(0)?;
    let caller_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if caller_pid == listener.pid {
        count(Counter::PassedThrough);
        return None;
    }
    // SAFETY: the context pointer is the socket address this program was called for.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    if listener.port == 0
        || MESHED_NAMESPACES.get_ptr(&netns_cookie).is_none()
        || !is_listening(ctx, &listener, dialled.is_ipv4_mapped())
    {
        count(Counter::FailedOpen);
        namespace_events::notify(NamespaceEventKind::FailedOpen);
        warn!(
            ctx,
            "no cheops proxy listens on port {}: a connection to a meshed service passes untouched",
            listener.port
        );
        return None;
    }
    let original = OriginalDestination {
        service: *dialled,
        _padding: 0,
        // SAFETY: a helper with no arguments, allowed in cgroup programs.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        netns_cookie,
    };
    // SAFETY: the context pointer is the socket address this program was called for.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if PENDING.insert(cookie, original, 0).is_err() {
        count(Counter::FailedOpen);
        return None;
    }
    count(Counter::Redirected);
    Some(listener)
}

/// Whether a socket listens at the proxy's address in the caller's network namespace.
#[inline(always)]
fn is_listening(ctx: &SockAddrContext, listener: &ProxyListener, ipv4: bool) -> bool {
    // SAFETY: an all-zero tuple is valid; only the destination fields are set below.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let port = (listener.port as u16).to_be();
    let size = if ipv4 {
        // SAFETY: writing plain integers into the union's IPv4 variant.
        unsafe {
            tuple.__bindgen_anon_1.ipv4.daddr = listener.ipv4;
            tuple.__bindgen_anon_1.ipv4.dport = port;
            core::mem::size_of_val(&tuple.__bindgen_anon_1.ipv4)
        }
    } else {
        // SAFETY: writing plain integers into the union's IPv6 variant.
        unsafe {
            tuple.__bindgen_anon_1.ipv6.daddr = listener.ipv6;
            tuple.__bindgen_anon_1.ipv6.dport = port;
            core::mem::size_of_val(&tuple.__bindgen_anon_1.ipv6)
        }
    };
    // SAFETY: the tuple lives on this stack frame; a found socket is released right away.
    unsafe {
        let sock = bpf_sk_lookup_tcp(
            ctx.as_ptr(),
            &mut tuple,
            size as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        );
        if sock.is_null() {
            return false;
        }
        bpf_sk_release(sock as *mut _);
    }
    true
}

#[sock_ops]
pub fn record_client_address(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 0;
    }
    // SAFETY: the context pointer is the socket this program was called for.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(original) = PENDING.get_ptr(cookie) else {
        return 0;
    };
    // SAFETY: the pointer comes from a successful lookup and is read once, right away.
    let original = unsafe { *original };
    let client = if ctx.family() == AF_INET {
        SocketAddress::from_ipv4_word(ctx.local_ip4(), ctx.local_port() as u16)
    } else {
        SocketAddress {
            // SAFETY: the kernel hands this program a valid `bpf_sock_ops`.
            ip: read_words(unsafe { &(*ctx.ops).local_ip6 }),
            port: ctx.local_port(),
        }
    };
    let key = ConnectionKey {
        netns_cookie: original.netns_cookie,
        client,
        _padding: 0,
    };
    let _ = ORIGINAL_DESTINATIONS.insert(key, original, 0);
    let _ = PENDING.remove(cookie);
    0
}

/// A connection arriving at an inbound service's address from another machine goes to cheops's
/// inbound listener. Loopback is left alone: that is how cheops reaches the local instance, and
/// local workloads are steered by `connect4`/`connect6` instead. With no listener in the map
/// (cheops gone), the usual lookup finds the application's own socket: fail open.
#[sk_lookup]
pub fn steer_inbound(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel hands this program a valid `bpf_sk_lookup`.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != IPPROTO_TCP || lookup.ingress_ifindex == LOOPBACK_IFINDEX {
        return SK_PASS;
    }
    let (local, slot) = if lookup.family == AF_INET {
        let local = SocketAddress::from_ipv4_word(lookup.local_ip4, lookup.local_port as u16);
        (local, INBOUND_IPV4)
    } else {
        let local = SocketAddress {
            ip: read_words(&lookup.local_ip6),
            port: lookup.local_port,
        };
        (local, INBOUND_IPV6)
    };
    if INBOUND_SERVICES.get_ptr(&local).is_none() {
        return SK_PASS;
    }
    if INBOUND_LISTENERS.redirect_sk_lookup(&ctx, slot, 0).is_ok() {
        count(Counter::SteeredInbound);
    } else {
        count(Counter::FailedOpen);
    }
    SK_PASS
}

const AF_INET: u32 = 2;
const IPPROTO_TCP: u32 = 6;
/// The loopback device's index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// The verifier allows only 32-bit accesses to the address words of a context.
#[inline(always)]
fn read_words(words: &[u32; 4]) -> [u32; 4] {
    // SAFETY: each pointer is to a field of a valid context.
    core::array::from_fn(|i| unsafe { core::ptr::read_volatile(&words[i]) })
}

#[inline(always)]
fn write_words(words: &mut [u32; 4], value: [u32; 4]) {
    for (word, value) in words.iter_mut().zip(value) {
        // SAFETY: each pointer is to a field of a valid context.
        unsafe { core::ptr::write_volatile(word, value) }
    }
}

/// `user_port` holds the port in network order in its low 16 bits.
#[inline(always)]
fn port_of(user_port: u32) -> u16 {
    u16::from_be(user_port as u16)
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, so no other CPU writes it concurrently.
        unsafe { *value += 1 }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
