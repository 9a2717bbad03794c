//! Loads the kernel programs, tells them which addresses are meshed services and where the
//! proxy listens, attaches them to the workload cgroups and, for inbound services, to this
//! network namespace. The programs are attached through bpf links owned by this process:
//! dropping `Interception`, or the process dying in any way, detaches them, so nothing stays
//! redirected to a proxy that is gone.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, SockMap},
    programs::{
        cgroup_sock_addr::CgroupSockAddrLinkId, sock_ops::SockOpsLinkId, CgroupAttachMode,
        CgroupSockAddr, SkLookup, SockOps, TracePoint,
    },
    Ebpf,
};
use interceptor_ebpf::{
    ConnectionKey, Counter, OriginalDestination, ProxyListener, SocketAddress,
    CGROUP_ATTACH_PROGRAM, CONNECT4_PROGRAM, CONNECT6_PROGRAM, COUNTERS_MAP, INBOUND_IPV4,
    INBOUND_IPV6, INBOUND_LISTENERS_MAP, INBOUND_SERVICES_MAP, LISTENER_MAP, MESHED_NAMESPACES_MAP,
    NAMESPACE_EVENTS_MAP, NAMESPACE_SWITCH_PROGRAM, NAMESPACE_TRACEPOINTS,
    ORIGINAL_DESTINATIONS_MAP, SERVICES_MAP, SK_LOOKUP_PROGRAM, SOCK_OPS_PROGRAM,
};
use serde::Serialize;
use tokio::{
    io::{unix::AsyncFd, Interest},
    net::TcpListener,
};

use super::{namespace_events::NamespaceEvents, Intercepted};

/// The kernel programs, built by build.rs from `interceptor-ebpf`.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(env!("CHEOPS_EBPF_OBJECT"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the eBPF object failed")]
    Object(#[source] aya::EbpfError),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("eBPF program {program}")]
    Program {
        program: &'static str,
        #[source]
        cause: aya::programs::ProgramError,
    },
    #[error("attaching {program} to workload cgroup {cgroup}")]
    Attach {
        program: &'static str,
        cgroup: PathBuf,
        #[source]
        cause: aya::programs::ProgramError,
    },
    #[error("eBPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        cause: aya::maps::MapError,
    },
    #[error(transparent)]
    MeshedElsewhere(#[from] super::exclusive::MeshedElsewhere),
    #[error("opening workload cgroup {cgroup}")]
    Cgroup {
        cgroup: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("attaching {SK_LOOKUP_PROGRAM} to this network namespace (for inbound services)")]
    AttachInbound(#[source] aya::programs::ProgramError),
    #[error("opening this network namespace (for inbound services)")]
    Netns(#[source] std::io::Error),
    #[error("handing the inbound listener to the kernel")]
    InboundListener(#[source] aya::maps::MapError),
}

/// The workload cgroups the programs are attached to, and the locks that keep other agents off.
struct Workloads {
    locks: super::exclusive::WorkloadLocks,
    attached: BTreeMap<PathBuf, Attached>,
}

/// One workload cgroup's links: connect4, connect6, sock_ops.
struct Attached {
    connect: Vec<(&'static str, CgroupSockAddrLinkId)>,
    sock_ops: SockOpsLinkId,
}

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KernelCounters {
    pub redirected: u64,
    pub passed_through: u64,
    pub failed_open: u64,
    /// Connections from other machines to inbound services, handed to cheops.
    #[serde(default)]
    pub steered_inbound: u64,
}

/// What the kernel programs steer: the meshed services' addresses, the inbound ones among
/// them, the workload cgroups, and the proxy's port.
pub struct Steering<'a> {
    pub services: Vec<SocketAddr>,
    pub inbound_services: Vec<SocketAddr>,
    pub workload_cgroups: &'a [PathBuf],
    pub proxy_port: u16,
}

pub struct Interception {
    // Owns the programs and their links: dropping it detaches them.
    ebpf: Mutex<Ebpf>,
    workloads: Mutex<Workloads>,
    /// The meshed services' addresses, changed in place when the configuration changes.
    services: Mutex<HashMap<MapData, SocketAddress, u32>>,
    listener: Mutex<Array<MapData, ProxyListener>>,
    original_destinations: Mutex<HashMap<MapData, ConnectionKey, OriginalDestination>>,
    /// The network namespaces where cheops listens, by cookie: the only ones redirected.
    meshed_namespaces: Mutex<HashMap<MapData, u64, u32>>,
    inbound_listeners: Mutex<SockMap<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    /// Until the scan of workload namespaces takes it.
    namespace_events: Mutex<Option<NamespaceEvents>>,
}

impl Interception {
    /// Loads the programs and attaches them to the workload cgroups; connections from there to
    /// the services go to the proxy on its port (127.0.0.1 and ::1 of the caller's network
    /// namespace) from then on. With inbound services, connections from other machines to
    /// them go to the inbound listeners once `set_inbound_listeners` has handed them over.
    pub fn start(steering: Steering) -> Result<Interception, LoadError> {
        let Steering {
            services,
            inbound_services,
            workload_cgroups,
            proxy_port,
        } = steering;
        let workload_locks = super::exclusive::lock_workloads(workload_cgroups)?;
        super::exclusive::refuse_if_meshed_elsewhere(workload_cgroups)?;
        let mut ebpf = Ebpf::load(PROGRAMS).map_err(LoadError::Object)?;
        forward_kernel_logs(&mut ebpf);

        let services = fill_address_map(&mut ebpf, SERVICES_MAP, &services)?;
        // Held until the programs are loaded: a map whose descriptor is closed is gone.
        let _inbound_services =
            fill_address_map(&mut ebpf, INBOUND_SERVICES_MAP, &inbound_services)?;
        let mut listener: Array<_, ProxyListener> =
            Array::try_from(take_map(&mut ebpf, LISTENER_MAP)?).map_err(map_error(LISTENER_MAP))?;
        let proxy = ProxyListener {
            ipv4: u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets()),
            ipv6: SocketAddress::from_octets(Ipv6Addr::LOCALHOST.octets(), 0).ip,
            port: u32::from(proxy_port),
            pid: std::process::id(),
        };
        listener.set(0, proxy, 0).map_err(map_error(LISTENER_MAP))?;
        let original_destinations =
            HashMap::try_from(take_map(&mut ebpf, ORIGINAL_DESTINATIONS_MAP)?)
                .map_err(map_error(ORIGINAL_DESTINATIONS_MAP))?;
        let meshed_namespaces = HashMap::try_from(take_map(&mut ebpf, MESHED_NAMESPACES_MAP)?)
            .map_err(map_error(MESHED_NAMESPACES_MAP))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, COUNTERS_MAP)?)
            .map_err(map_error(COUNTERS_MAP))?;
        let inbound_listeners = SockMap::try_from(take_map(&mut ebpf, INBOUND_LISTENERS_MAP)?)
            .map_err(map_error(INBOUND_LISTENERS_MAP))?;
        let namespace_events = RingBuf::try_from(take_map(&mut ebpf, NAMESPACE_EVENTS_MAP)?)
            .map_err(map_error(NAMESPACE_EVENTS_MAP))?;

        load_programs(&mut ebpf)?;
        if let Err(err) = attach_namespace_tracepoints(&mut ebpf) {
            tracing::warn!(
                "cannot follow the kernel's cgroup and namespace changes (tracefs must be \
                 mounted at /sys/kernel/tracing; in a container, mount the host's): new workload \
                 network namespaces are found by the periodic scan (proxy.workload_scan_every) \
                 or by their first connection, which fails open: {:#}",
                anyhow::Error::new(err)
            );
        }
        let mut attached = BTreeMap::new();
        for path in workload_cgroups {
            attached.insert(path.clone(), attach_workload(&mut ebpf, path)?);
        }
        if !inbound_services.is_empty() {
            let netns = std::fs::File::open("/proc/self/ns/net").map_err(LoadError::Netns)?;
            let sk_lookup: &mut SkLookup = program(&mut ebpf, SK_LOOKUP_PROGRAM)?;
            sk_lookup.attach(netns).map_err(LoadError::AttachInbound)?;
        }

        release_loading_memory();
        Ok(Interception {
            ebpf: Mutex::new(ebpf),
            workloads: Mutex::new(Workloads {
                locks: workload_locks,
                attached,
            }),
            services: Mutex::new(services),
            listener: Mutex::new(listener),
            original_destinations: Mutex::new(original_destinations),
            meshed_namespaces: Mutex::new(meshed_namespaces),
            inbound_listeners: Mutex::new(inbound_listeners),
            counters,
            namespace_events: Mutex::new(Some(NamespaceEvents::new(namespace_events))),
        })
    }

    /// Makes `services` the meshed services: connections to an address added are redirected
    /// from now on, to one removed pass untouched; connections already made are not touched.
    pub fn set_services(&self, services: &[SocketAddr]) -> Result<(), LoadError> {
        let mut map = self.services.lock().unwrap();
        let wanted: Vec<SocketAddress> = services.iter().map(|a| kernel_address(*a)).collect();
        let gone: Vec<SocketAddress> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !wanted.contains(key))
            .collect();
        for key in gone {
            map.remove(&key).map_err(map_error(SERVICES_MAP))?;
        }
        for key in wanted {
            map.insert(key, 1, 0).map_err(map_error(SERVICES_MAP))?;
        }
        Ok(())
    }

    /// Makes `cgroups` the workload cgroups: the programs are attached to those added (as at
    /// start: refused when another agent meshes one) and detached from those removed, the
    /// others untouched. On an error nothing has changed.
    pub fn set_workloads(&self, cgroups: &[PathBuf]) -> Result<(), LoadError> {
        let mut workloads = self.workloads.lock().unwrap();
        let added: Vec<PathBuf> = cgroups
            .iter()
            .filter(|c| !workloads.attached.contains_key(*c))
            .cloned()
            .collect();
        let removed: Vec<PathBuf> = workloads
            .attached
            .keys()
            .filter(|c| !cgroups.contains(c))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        super::exclusive::refuse_if_meshed_elsewhere(&added)?;
        let running: Vec<PathBuf> = workloads.attached.keys().cloned().collect();
        // A directory's lock would conflict with this process's own: the old set is let go
        // first, and taken back if the new one cannot be had.
        workloads.locks = super::exclusive::lock_workloads(&[])?;
        workloads.locks = match super::exclusive::lock_workloads(cgroups) {
            Ok(locks) => locks,
            Err(refused) => {
                workloads.locks = super::exclusive::lock_workloads(&running)?;
                return Err(refused.into());
            }
        };
        let mut ebpf = self.ebpf.lock().unwrap();
        let mut attached_now = Vec::new();
        for path in &added {
            match attach_workload(&mut ebpf, path) {
                Ok(links) => attached_now.push((path.clone(), links)),
                Err(err) => {
                    for (_, links) in attached_now {
                        detach_workload(&mut ebpf, links);
                    }
                    workloads.locks = super::exclusive::lock_workloads(&running)?;
                    return Err(err);
                }
            }
        }
        workloads.attached.extend(attached_now);
        for path in removed {
            if let Some(links) = workloads.attached.remove(&path) {
                detach_workload(&mut ebpf, links);
            }
        }
        Ok(())
    }

    /// Hands the inbound listeners to the `sk_lookup` program: from now on, connections from
    /// other machines to inbound services are accepted on them.
    pub fn set_inbound_listeners(
        &self,
        ipv4: &TcpListener,
        ipv6: Option<&TcpListener>,
    ) -> Result<(), LoadError> {
        let mut map = self.inbound_listeners.lock().unwrap();
        map.set(INBOUND_IPV4, &ipv4.as_fd(), 0)
            .map_err(LoadError::InboundListener)?;
        if let Some(ipv6) = ipv6 {
            map.set(INBOUND_IPV6, &ipv6.as_fd(), 0)
                .map_err(LoadError::InboundListener)?;
        }
        Ok(())
    }

    /// The original destination of a connection accepted from `client` by a listener in the
    /// network namespace whose cookie is `netns_cookie`; asked once.
    pub fn take(&self, netns_cookie: u64, client: SocketAddr) -> Option<Intercepted> {
        let key = ConnectionKey {
            netns_cookie,
            client: kernel_address(client),
            _padding: 0,
        };
        let mut map = self.original_destinations.lock().unwrap();
        let original = map.get(&key, 0).ok()?;
        // The entry served its purpose; the LRU map would evict it anyway, this keeps it small.
        let _ = map.remove(&key);
        Some(Intercepted {
            service: socket_address(&original.service),
            cgroup_id: original.cgroup_id,
        })
    }

    /// Connections from the network namespace whose cookie is `netns_cookie` go to the proxy's
    /// listener there from now on: cheops listens there.
    pub fn mesh_namespace(&self, netns_cookie: u64) -> Result<(), LoadError> {
        let mut map = self.meshed_namespaces.lock().unwrap();
        map.insert(netns_cookie, 1, 0)
            .map_err(map_error(MESHED_NAMESPACES_MAP))
    }

    /// Forgets a network namespace that is gone (a container that ended), or where cheops no
    /// longer listens: its connections pass untouched, and nothing of it stays in the kernel
    /// maps.
    pub fn forget_namespace(&self, netns_cookie: u64) {
        let _ = self.meshed_namespaces.lock().unwrap().remove(&netns_cookie);
        let mut map = self.original_destinations.lock().unwrap();
        let gone: Vec<ConnectionKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.netns_cookie == netns_cookie)
            .collect();
        for key in gone {
            let _ = map.remove(&key);
        }
    }

    /// Tells the programs that no proxy listens any more: from now on, connections pass
    /// untouched (fail open), even before the programs are detached.
    pub fn stop_redirecting(&self) {
        let mut listener = self.listener.lock().unwrap();
        if let Err(err) = listener.set(0, ProxyListener::default(), 0) {
            tracing::warn!("could not tell the kernel programs to stop redirecting: {err}");
        }
        let mut inbound = self.inbound_listeners.lock().unwrap();
        for slot in [INBOUND_IPV4, INBOUND_IPV6] {
            // An empty slot (no IPv6, or no inbound service) is already what is wanted.
            let _ = inbound.clear_index(&slot);
        }
    }

    /// The kernel's word of possibly new workload namespaces, for the one scan that waits on it.
    pub fn take_namespace_events(&self) -> Option<NamespaceEvents> {
        self.namespace_events.lock().unwrap().take()
    }

    pub fn counters(&self) -> KernelCounters {
        let sum = |counter: Counter| -> u64 {
            self.counters
                .get(&(counter as u32), 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        KernelCounters {
            redirected: sum(Counter::Redirected),
            passed_through: sum(Counter::PassedThrough),
            failed_open: sum(Counter::FailedOpen),
            steered_inbound: sum(Counter::SteeredInbound),
        }
    }
}

/// Attaches connect4, connect6 and sock_ops to the workload cgroup at `path`.
fn attach_workload(ebpf: &mut Ebpf, path: &Path) -> Result<Attached, LoadError> {
    let cgroup = std::fs::File::open(path).map_err(|cause| LoadError::Cgroup {
        cgroup: path.to_owned(),
        cause,
    })?;
    let mut connect = Vec::new();
    for name in [CONNECT4_PROGRAM, CONNECT6_PROGRAM] {
        let program: &mut CgroupSockAddr = program(ebpf, name)?;
        match program.attach(&cgroup, CgroupAttachMode::Single) {
            Ok(link) => connect.push((name, link)),
            Err(cause) => {
                detach_connect(ebpf, connect);
                return Err(attach_error(name, path)(cause));
            }
        }
    }
    let sock_ops: &mut SockOps = program(ebpf, SOCK_OPS_PROGRAM)?;
    match sock_ops.attach(&cgroup, CgroupAttachMode::Single) {
        Ok(sock_ops) => Ok(Attached { connect, sock_ops }),
        Err(cause) => {
            detach_connect(ebpf, connect);
            Err(attach_error(SOCK_OPS_PROGRAM, path)(cause))
        }
    }
}

fn detach_workload(ebpf: &mut Ebpf, links: Attached) {
    detach_connect(ebpf, links.connect);
    if let Ok(sock_ops) = program::<SockOps>(ebpf, SOCK_OPS_PROGRAM) {
        if let Err(err) = sock_ops.detach(links.sock_ops) {
            tracing::warn!("detaching {SOCK_OPS_PROGRAM} from a workload cgroup: {err}");
        }
    }
}

fn detach_connect(ebpf: &mut Ebpf, links: Vec<(&'static str, CgroupSockAddrLinkId)>) {
    for (name, link) in links {
        if let Ok(program) = program::<CgroupSockAddr>(ebpf, name) {
            if let Err(err) = program.detach(link) {
                tracing::warn!("detaching {name} from a workload cgroup: {err}");
            }
        }
    }
}

/// Puts `addresses` into the address set `name` (`SocketAddress -> 1`).
fn fill_address_map(
    ebpf: &mut Ebpf,
    name: &'static str,
    addresses: &[SocketAddr],
) -> Result<HashMap<MapData, SocketAddress, u32>, LoadError> {
    let mut map: HashMap<_, SocketAddress, u32> =
        HashMap::try_from(take_map(ebpf, name)?).map_err(map_error(name))?;
    for address in addresses {
        map.insert(kernel_address(*address), 1, 0)
            .map_err(map_error(name))?;
    }
    Ok(map)
}

/// Loading parses the kernel's BTF: about 20 MiB of heap, all freed once the programs are in.
/// glibc keeps freed heap for reuse rather than returning it, so the agent would carry it as
/// resident memory for its whole life; hand it back now.
fn release_loading_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Loads the programs into the kernel, which runs its verifier on them, without attaching them.
pub fn verify_programs() -> Result<(), LoadError> {
    load_programs(&mut Ebpf::load(PROGRAMS).map_err(LoadError::Object)?)
}

fn load_programs(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for name in [CONNECT4_PROGRAM, CONNECT6_PROGRAM] {
        let program: &mut CgroupSockAddr = program(ebpf, name)?;
        program.load().map_err(program_error(name))?;
    }
    let sock_ops: &mut SockOps = program(ebpf, SOCK_OPS_PROGRAM)?;
    sock_ops.load().map_err(program_error(SOCK_OPS_PROGRAM))?;
    let sk_lookup: &mut SkLookup = program(ebpf, SK_LOOKUP_PROGRAM)?;
    sk_lookup.load().map_err(program_error(SK_LOOKUP_PROGRAM))?;
    for name in [CGROUP_ATTACH_PROGRAM, NAMESPACE_SWITCH_PROGRAM] {
        let tracepoint: &mut TracePoint = program(ebpf, name)?;
        tracepoint.load().map_err(program_error(name))?;
    }
    Ok(())
}

/// Attaches the namespace event programs to the kernel's tracepoints; the links live as long
/// as `ebpf`. Without tracefs (`/sys/kernel/tracing`, absent from a container unless mounted)
/// this fails, and only failed-open connections and the periodic scan find new namespaces.
fn attach_namespace_tracepoints(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for (category, name, program_name) in NAMESPACE_TRACEPOINTS {
        let tracepoint: &mut TracePoint = program(ebpf, program_name)?;
        tracepoint
            .attach(category, name)
            .map_err(program_error(program_name))?;
    }
    Ok(())
}

/// The kernel's form of an address: IPv6, with IPv4 as `::ffff:a.b.c.d`.
fn kernel_address(address: SocketAddr) -> SocketAddress {
    let ip = match address.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    SocketAddress::from_octets(ip.octets(), address.port())
}

fn socket_address(address: &SocketAddress) -> SocketAddr {
    let ip = Ipv6Addr::from(address.octets());
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    SocketAddr::new(ip, address.port as u16)
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or(LoadError::Missing(name))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::Missing(name))?
        .try_into()
        .map_err(program_error(name))
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |cause| LoadError::Map { map, cause }
}

fn program_error(program: &'static str) -> impl Fn(aya::programs::ProgramError) -> LoadError {
    move |cause| LoadError::Program { program, cause }
}

fn attach_error<'a>(
    program: &'static str,
    cgroup: &'a std::path::Path,
) -> impl Fn(aya::programs::ProgramError) -> LoadError + 'a {
    move |cause| LoadError::Attach {
        program,
        cgroup: cgroup.to_owned(),
        cause,
    }
}

/// Sends what the kernel programs log (aya-log) to our `tracing` output.
fn forward_kernel_logs(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(err) => {
            tracing::warn!("kernel program logs are not available: {err}");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer's descriptor, which stays open as long as it lives.
    let Ok(mut logger) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) })
    else {
        tracing::warn!("kernel program logs are not available: cannot poll their ring buffer");
        return;
    };
    tokio::spawn(async move {
        while let Ok(mut ready) = logger.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_their_family_through_the_kernel_form() {
        for text in ["198.18.0.10:80", "[2001:db8::1]:8080", "127.0.0.1:15001"] {
            let address: SocketAddr = text.parse().unwrap();
            assert_eq!(socket_address(&kernel_address(address)), address);
        }
        let v4 = kernel_address("198.18.0.10:80".parse().unwrap());
        assert!(v4.is_ipv4_mapped());
        assert_eq!(
            v4,
            SocketAddress::from_ipv4_word(u32::from_ne_bytes([198, 18, 0, 10]), 80)
        );
    }
}
