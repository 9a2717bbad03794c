//! The kernel's word that a workload may have entered a network namespace of its own: a process
//! moved into a cgroup, a `setns` or `unshare`, a connection that failed open for want of a
//! listener in its namespace (interceptor-ebpf's `namespace_events`). The scan of the workload
//! cgroups waits on these, so a new container is meshed as soon as it exists rather than at the
//! next periodic scan, and an idle agent wakes only when something happens.
use std::{os::fd::AsRawFd, time::Duration};

use aya::maps::{MapData, RingBuf};
use interceptor_ebpf::NamespaceEventKind;
use tracing::debug;

/// The ring buffer the event programs write to (`ebpf` loads and attaches them).
pub struct NamespaceEvents {
    ring: RingBuf<MapData>,
}

impl NamespaceEvents {
    pub fn new(ring: RingBuf<MapData>) -> Self {
        NamespaceEvents { ring }
    }

    /// Blocks until an event comes or `timeout` passes, then reads every event waiting;
    /// whether any came.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let mut poll = [libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one pollfd on a descriptor open as long as `self.ring`. An error (EINTR)
        // reads as a wake-up.
        unsafe { libc::poll(poll.as_mut_ptr(), 1, millis) };
        let mut came = false;
        while let Some(event) = self.ring.next() {
            came = true;
            let word = |at: usize| {
                event
                    .get(at..at + 4)
                    .and_then(|bytes| bytes.try_into().ok())
                    .map(u32::from_ne_bytes)
            };
            let kind = word(0).and_then(NamespaceEventKind::from_raw);
            debug!(
                ?kind,
                pid = word(4),
                "a workload may be in a new network namespace"
            );
        }
        came
    }
}
