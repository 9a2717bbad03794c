//! Events that may have brought a workload process into a network namespace cheops does not
//! listen in yet. Each is a wake-up for cheops's scan of the workload cgroups, which finds out
//! what changed: the programs do not filter by cgroup or namespace type, since these events
//! are rare on a node (a process moved between cgroups, a `setns` or `unshare`).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::RingBuf,
    programs::TracePointContext,
};
use interceptor_ebpf::{NamespaceEvent, NamespaceEventKind};

/// Room for a burst of 256 events; when full, events are dropped, which is harmless: one
/// unread event already wakes the scan.
#[map(name = "NAMESPACE_EVENTS")]
static NAMESPACE_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Offset of `ret` in the `syscalls:sys_exit_*` tracepoints' records
/// (`/sys/kernel/tracing/events/syscalls/sys_exit_setns/format`).
const SYSCALL_RETURN_OFFSET: usize = 16;

/// `cgroup:cgroup_attach_task`: a process was moved into a cgroup (by a write to
/// `cgroup.procs`, as container runtimes and `cheops exec` do).
#[tracepoint]
pub fn notice_cgroup_attach(_ctx: TracePointContext) -> u32 {
    notify(NamespaceEventKind::CgroupAttach);
    0
}

/// `syscalls:sys_exit_setns` and `sys_exit_unshare`: a process entered or made namespaces (a
/// container runtime's set-up, `ip netns exec`). At the exit, so the switch is done when the
/// scan looks.
#[tracepoint]
pub fn notice_namespace_switch(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset is that of `ret`, a `long`, in every sys_exit record.
    if let Ok(0) = unsafe { ctx.read_at::<i64>(SYSCALL_RETURN_OFFSET) } {
        notify(NamespaceEventKind::NamespaceSwitch);
    }
    0
}

#[inline(always)]
pub fn notify(kind: NamespaceEventKind) {
    let event = NamespaceEvent {
        kind: kind as u32,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
    };
    // A full ring drops the event: the ones in it already wake the scan.
    let _ = NAMESPACE_EVENTS.output::<NamespaceEvent>(&event, 0);
}
