//! Workloads in network namespaces of their own (containers, pods). The connect hooks send a
//! workload's connection to the proxy port on 127.0.0.1 *of the caller's namespace*, so cheops
//! opens a listener inside each namespace where a workload process runs, as Istio's ztunnel
//! does with in-pod sockets: the container needs no route to cheops and nothing in it changes.
//! The workload cgroups (and every cgroup below them) are scanned whenever the kernel tells of a
//! change that may have made a new one (`namespace_events`), and every
//! `proxy.workload_scan_every` in any case; a namespace whose processes are all gone loses its
//! listener and its kernel map entries.
use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::{
        fd::{AsRawFd, RawFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::{ebpf::Interception, Intercepted, OriginalDestinations};

/// How deep below a workload cgroup processes are looked for (podman's `libpod-<id>`, a pod's
/// containers, `cheops exec`'s transient cgroups).
const MAX_DEPTH: usize = 8;

/// The least time between two scans that kernel events asked for.
const EVENT_SCAN_GAP: Duration = Duration::from_millis(10);

/// The network namespace of an accepted connection, by its cookie: the seam for one listener.
pub struct NamespaceDestinations {
    pub interception: Arc<Interception>,
    pub netns_cookie: u64,
}

impl OriginalDestinations for NamespaceDestinations {
    fn take(&self, _connection: &tokio::net::TcpStream, client: SocketAddr) -> Option<Intercepted> {
        self.interception.take(self.netns_cookie, client)
    }
}

/// Starts serving a listener (not registered with any runtime yet) with the seam that names
/// its namespace; the handle stops it.
pub type ServeListener = Box<
    dyn Fn(std::net::TcpListener, Arc<dyn OriginalDestinations>) -> io::Result<AbortHandle>
        + Send
        + Sync,
>;

/// A workload namespace that cheops listens in, as `cheops status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeshedNamespace {
    /// The namespace's inode number (`ls -i /proc/PID/ns/net`, `lsns -t net`).
    pub inode: u64,
    /// A process of the namespace, and the cgroup it was found in.
    pub pid: u32,
    pub cgroup: PathBuf,
    /// Why cheops could not listen there, if it could not (the workload then fails open).
    pub error: Option<String>,
}

struct Listening {
    shown: MeshedNamespace,
    /// When cheops opened its listener there, or failed to.
    tried_at: Instant,
    netns_cookie: Option<u64>,
    serving: Vec<AbortHandle>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.serving.iter().for_each(AbortHandle::abort);
    }
}

pub struct WorkloadNamespaces {
    roots: Mutex<Vec<PathBuf>>,
    own_inode: u64,
    proxy_port: u16,
    interception: Arc<Interception>,
    serve: ServeListener,
    listening: Mutex<HashMap<u64, Listening>>,
}

impl WorkloadNamespaces {
    /// `roots`: the workload cgroups' directories. Namespaces other than cheops's own found
    /// there get a proxy listener on `proxy_port`, served through `serve`.
    pub fn new(
        roots: Vec<PathBuf>,
        proxy_port: u16,
        interception: Arc<Interception>,
        serve: ServeListener,
    ) -> io::Result<WorkloadNamespaces> {
        Ok(WorkloadNamespaces {
            roots: Mutex::new(roots),
            own_inode: std::fs::metadata("/proc/self/ns/net")?.ino(),
            proxy_port,
            interception,
            serve,
            listening: Mutex::new(HashMap::new()),
        })
    }

    /// Scans now, then whenever the kernel tells of a cgroup or namespace change (or of a
    /// connection that failed open for want of a listener), and every `every` in any case, on
    /// a thread of its own, for as long as the scanner is held. The scan is a few small reads
    /// and entering a namespace blocks; a thread that waits wakes only for a scan, where a
    /// timer on the runtime woke a thread twice a scan (tokio's wheel moves a long timer down
    /// a level before it fires).
    pub fn start_scanning(self: &Arc<Self>, every: Duration) -> io::Result<()> {
        let scanner = Arc::downgrade(self);
        let mut events = self.interception.take_namespace_events();
        std::thread::Builder::new()
            .name("cheops-scan".into())
            .spawn(move || {
                let mut woken_by_an_event = false;
                while let Some(scanner) = scanner.upgrade() {
                    // Namespaces where cheops could not listen are tried again once a
                    // periodic interval has passed, however many events come.
                    scanner.scan(every);
                    drop(scanner);
                    if woken_by_an_event {
                        // A burst of events (a node starting many processes) gets one scan.
                        std::thread::sleep(EVENT_SCAN_GAP);
                    }
                    woken_by_an_event = match &mut events {
                        Some(events) => events.wait(every),
                        None => {
                            std::thread::sleep(every);
                            false
                        }
                    };
                }
            })?;
        Ok(())
    }

    /// Listens in the namespaces new since the last scan, and in those where it could not
    /// listen `retry_after` ago or more; forgets those gone.
    fn scan(&self, retry_after: Duration) {
        let new = self.forget_gone_and_find_new(retry_after);
        if !new.is_empty() {
            let opened = self.open(new);
            self.serve_opened(opened);
        }
    }

    /// Scans `roots` from the next scan on; namespaces found only under the roots left lose
    /// their listener then (connections already accepted go on).
    pub fn set_roots(&self, roots: Vec<PathBuf>) {
        *self.roots.lock().unwrap() = roots;
    }

    /// The namespaces cheops listens in now, by inode.
    pub fn meshed(&self) -> Vec<MeshedNamespace> {
        let listening = self.listening.lock().unwrap();
        let mut shown: Vec<_> = listening.values().map(|l| l.shown.clone()).collect();
        shown.sort_by_key(|n| n.inode);
        shown
    }

    /// Forgets the namespaces that are gone, and gives those to listen in: each namespace's
    /// inode, with a process in it and that process's cgroup, and why cheops could not listen
    /// there last time, if it tried. Reads /proc and the cgroups.
    fn forget_gone_and_find_new(&self, retry_after: Duration) -> Vec<ToListenIn> {
        let roots = self.roots.lock().unwrap().clone();
        let found = workload_namespaces(&roots, self.own_inode);
        let mut listening = self.listening.lock().unwrap();
        listening.retain(|inode, gone| {
            let keep = found.contains_key(inode);
            if !keep {
                info!(
                    inode,
                    pid = gone.shown.pid,
                    "a workload network namespace is gone: closing its listener"
                );
                if let Some(cookie) = gone.netns_cookie {
                    self.interception.forget_namespace(cookie);
                }
            }
            keep
        });
        found
            .into_iter()
            .filter_map(|(inode, (pid, cgroup))| {
                let failed = match listening.get(&inode) {
                    None => None,
                    Some(entry) => match &entry.shown.error {
                        Some(error) if entry.tried_at.elapsed() >= retry_after => {
                            Some(error.clone())
                        }
                        _ => return None,
                    },
                };
                Some(ToListenIn {
                    inode,
                    pid,
                    cgroup,
                    failed,
                })
            })
            .collect()
    }

    /// Opens listeners in the `new` namespaces (blocking: enters each), handed back to be
    /// served on the runtime.
    fn open(&self, new: Vec<ToListenIn>) -> Vec<(u64, Opened)> {
        let mut opened = Vec::new();
        for ToListenIn {
            inode,
            pid,
            cgroup,
            failed,
        } in new
        {
            let shown = MeshedNamespace {
                inode,
                pid,
                cgroup,
                error: None,
            };
            let listened = match namespace_of(pid, inode) {
                Ok(Some(netns)) => listen_in(&netns, self.proxy_port),
                Ok(None) => {
                    // A runtime's process that has just entered its container's namespace,
                    // or ended: the event of its move asks for another scan.
                    debug!(
                        inode,
                        pid, "the process left the namespace before cheops entered it"
                    );
                    continue;
                }
                Err(err) => Err(err),
            };
            // Told to the kernel programs before the namespace shows as meshed: from then on
            // its connections wait in the listeners' backlog until they are served.
            let listened = listened.and_then(|listeners| {
                self.interception
                    .mesh_namespace(listeners.netns_cookie)
                    .map_err(|err| io::Error::other(format!("{:#}", anyhow::Error::new(err))))?;
                Ok(listeners)
            });
            let (shown, netns_cookie) = match listened {
                Ok(listeners) => {
                    info!(inode, pid, cgroup = %shown.cgroup.display(), "listening in a workload network namespace");
                    let netns_cookie = listeners.netns_cookie;
                    opened.push((inode, listeners));
                    (shown, Some(netns_cookie))
                }
                Err(err) => {
                    let error = err.to_string();
                    if failed.as_ref() == Some(&error) {
                        debug!(
                            inode,
                            pid, "still cannot listen in a workload's network namespace: {error}"
                        );
                    } else {
                        warn!(inode, pid, "cannot listen in a workload's network namespace, its connections fail open (tried again every proxy.workload_scan_every): {error}");
                    }
                    let shown = MeshedNamespace {
                        error: Some(error),
                        ..shown
                    };
                    (shown, None)
                }
            };
            let entry = Listening {
                shown,
                tried_at: Instant::now(),
                netns_cookie,
                serving: Vec::new(),
            };
            self.listening.lock().unwrap().insert(inode, entry);
        }
        opened
    }

    fn serve_opened(&self, opened: Vec<(u64, Opened)>) {
        let mut listening = self.listening.lock().unwrap();
        for (inode, opened) in opened {
            let Some(entry) = listening.get_mut(&inode) else {
                continue;
            };
            let seam: Arc<dyn OriginalDestinations> = Arc::new(NamespaceDestinations {
                interception: self.interception.clone(),
                netns_cookie: opened.netns_cookie,
            });
            for listener in opened.listeners {
                let served = listener
                    .set_nonblocking(true)
                    .and_then(|()| (self.serve)(listener, seam.clone()));
                match served {
                    Ok(serving) => entry.serving.push(serving),
                    Err(err) => warn!(inode, "cannot serve a workload namespace's listener: {err}"),
                }
            }
        }
    }
}

/// A namespace to listen in: its inode, a process in it and that process's cgroup, and why
/// cheops could not listen there last time, if it tried.
struct ToListenIn {
    inode: u64,
    pid: u32,
    cgroup: PathBuf,
    failed: Option<String>,
}

/// Listeners opened inside one namespace, and its cookie (what the kernel programs record).
struct Opened {
    listeners: Vec<std::net::TcpListener>,
    netns_cookie: u64,
}

/// The network namespaces of the processes in `roots` and their descendant cgroups, other than
/// `own_inode`: inode -> (a process, its cgroup).
fn workload_namespaces(roots: &[PathBuf], own_inode: u64) -> BTreeMap<u64, (u32, PathBuf)> {
    let mut found = BTreeMap::new();
    for root in roots {
        visit(root, MAX_DEPTH, &mut |cgroup, pid| {
            let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
                return; // The process has just ended.
            };
            if meta.ino() != own_inode {
                found
                    .entry(meta.ino())
                    .or_insert_with(|| (pid, cgroup.to_owned()));
            }
        });
    }
    found
}

/// Calls `each(cgroup, pid)` for every process of `dir` and of the cgroups below it.
fn visit(dir: &Path, depth: usize, each: &mut impl FnMut(&Path, u32)) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|line| line.parse().ok()) {
            each(dir, pid);
        }
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            visit(&entry.path(), depth - 1, each);
        }
    }
}

/// The workload namespaces that this process cannot enter (so cannot listen in): each with a
/// process of it, its cgroup, and why. For `cheops check`.
pub fn unenterable(roots: &[PathBuf]) -> io::Result<Vec<(u32, PathBuf, io::Error)>> {
    let own_inode = std::fs::metadata("/proc/self/ns/net")?.ino();
    let mut problems = Vec::new();
    for (pid, cgroup) in workload_namespaces(roots, own_inode).into_values() {
        let entered = File::open(format!("/proc/{pid}/ns/net")).and_then(|netns| {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| enter_network_namespace(netns.as_raw_fd()))
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("the thread entering it panicked")))
            })
        });
        if let Err(err) = entered {
            problems.push((pid, cgroup, err));
        }
    }
    Ok(problems)
}

/// The network namespace of `pid`, if it is still the one numbered `inode`: between a scan's
/// reading and its entering, a process may have moved to another (a container runtime's does,
/// right after it joins the cgroup), and a listener opened there would be filed under the
/// wrong namespace. `None` too if the process has ended.
fn namespace_of(pid: u32, inode: u64) -> io::Result<Option<File>> {
    let netns = match File::open(format!("/proc/{pid}/ns/net")) {
        Ok(netns) => netns,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    Ok((netns.metadata()?.ino() == inode).then_some(netns))
}

/// Opens the proxy's listeners (127.0.0.1, and ::1 where IPv6 is up) inside the network
/// namespace `netns`. A socket belongs to the namespace it was made in, so a short-lived
/// thread enters the namespace, makes them, and ends; the rest of cheops never moves.
fn listen_in(netns: &File, port: u16) -> io::Result<Opened> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_network_namespace(netns.as_raw_fd())?;
                let ipv4 = listen_on(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
                let netns_cookie = netns_cookie(&ipv4)?;
                let mut listeners = vec![ipv4];
                if let Ok(ipv6) = listen_on(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
                    listeners.push(ipv6);
                }
                Ok(Opened {
                    listeners,
                    netns_cookie,
                })
            })
            .join()
            .unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the thread entering the namespace panicked",
                ))
            })
    })
}

/// A listener on `address` with the backlog of the one in cheops's own namespace (tokio's
/// 1,024), not the standard library's 128: a container that opens many connections at once
/// has them queued rather than its SYNs dropped, each costing it a second before the retry.
fn listen_on(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn enter_network_namespace(netns: RawFd) -> io::Result<()> {
    // SAFETY: setns on an open namespace descriptor changes only the calling thread's
    // namespace, and this thread ends right after making its sockets.
    let result = unsafe { libc::setns(netns, libc::CLONE_NEWNET) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The cookie of the network namespace a socket lives in, as `bpf_get_netns_cookie` gives it.
pub fn netns_cookie(socket: &impl AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `cookie`, which outlives the call.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_processes_in_cgroups_below_the_workload() {
        let root = tempfile_dir();
        let nested = root.join("libpod_parent/libpod-1");
        std::fs::create_dir_all(&nested).unwrap();
        let me = std::process::id();
        std::fs::write(nested.join("cgroup.procs"), format!("{me}\n")).unwrap();
        let mut seen = Vec::new();
        visit(&root, MAX_DEPTH, &mut |cgroup, pid| {
            seen.push((cgroup.to_owned(), pid))
        });
        assert_eq!(seen, vec![(nested, me)]);
        // This process shares the test's own namespace: it is not a workload namespace.
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert!(workload_namespaces(std::slice::from_ref(&root), own).is_empty());
        assert_eq!(
            workload_namespaces(std::slice::from_ref(&root), own + 1).len(),
            1
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cheops-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
