//! One agent per workload cgroup. Two agents meshing the same cgroup (or an ancestor and a
//! descendant) would both attach their connect programs; the kernel runs them in attach order,
//! and every other start, each agent's check for a live listener sees the other's rewrite and
//! the workload's connections are closed. So before attaching, each agent locks its cgroups
//! (`lock_workloads`: two agents starting at the same instant cannot both pass), and asks the
//! kernel which programs already act on them (a leftover pinned program, an agent of another
//! version), refusing in either case, naming the agent that holds them.
use std::{
    collections::BTreeMap,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use interceptor_ebpf::CONNECT4_PROGRAM;

/// The kernel keeps the first 15 bytes of a program's name (`BPF_OBJ_NAME_LEN` is 16, NUL
/// included): our connect program is known to it as `redirect_connec`.
const KERNEL_NAME_LEN: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum MeshedElsewhere {
    #[error(
        "workload cgroup {cgroup} is already meshed by another cheops agent ({holder}), \
         its connect program attached at {attached_at}: two agents must not mesh the same \
         cgroup, nor one an ancestor of the other's; stop that agent or mesh another cgroup"
    )]
    Meshed {
        cgroup: PathBuf,
        attached_at: PathBuf,
        holder: Holder,
    },
    #[error(
        "workload cgroup {cgroup} is already meshed by another cheops agent ({holder}), which \
         holds {locked_at}: two agents must not mesh the same cgroup, nor one an ancestor of \
         the other's; stop that agent or mesh another cgroup"
    )]
    Locked {
        cgroup: PathBuf,
        locked_at: PathBuf,
        holder: Holder,
    },
    #[error("cannot lock workload cgroup {cgroup}")]
    Lock {
        cgroup: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("cannot ask the kernel which programs act on cgroup {cgroup} (it needs CAP_NET_ADMIN and CAP_SYS_ADMIN)")]
    Query {
        cgroup: PathBuf,
        #[source]
        cause: std::io::Error,
    },
}

/// Who keeps a program attached: the process holding a descriptor of it or of its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Process {
        pid: u32,
        command: String,
    },
    /// No process holds it: a pinned link (bpffs) keeps it, or the holder cannot be seen
    /// (another PID namespace, or no CAP_SYS_PTRACE to read other processes' descriptors).
    Unknown {
        program_id: u32,
    },
    /// A lock's holder that this agent cannot see (another PID namespace).
    Unseen,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Process { pid, command } => write!(f, "pid {pid}: {command}"),
            Holder::Unknown { program_id } => write!(
                f,
                "program id {program_id}, held by no process this agent can see (pinned, or in another PID namespace)"
            ),
            Holder::Unseen => write!(f, "a process this agent cannot see, in another PID namespace"),
        }
    }
}

/// Locks on the workload cgroups, held for the agent's life: exclusive on each workload cgroup,
/// shared on its ancestors up to the mount, so that an agent meshing the same cgroup, an
/// ancestor or a descendant cannot take its own. The kernel drops them when the process ends,
/// however it ends.
pub struct WorkloadLocks {
    _held: Vec<File>,
}

pub fn lock_workloads(workload_cgroups: &[PathBuf]) -> Result<WorkloadLocks, MeshedElsewhere> {
    // One lock per directory (a descriptor's lock would conflict with another of the same
    // process): exclusive wins where a workload is also an ancestor of another.
    let mut wanted: BTreeMap<&Path, (&Path, bool)> = BTreeMap::new();
    for cgroup in workload_cgroups {
        for ancestor in cgroup.ancestors().skip(1) {
            if !ancestor.join("cgroup.procs").exists() {
                break;
            }
            wanted.entry(ancestor).or_insert((cgroup, false));
        }
        wanted.insert(cgroup, (cgroup, true));
    }
    let mut held = Vec::new();
    for (dir, (cgroup, exclusive)) in wanted {
        let lock_error = |cause| MeshedElsewhere::Lock {
            cgroup: cgroup.to_owned(),
            cause,
        };
        let file = File::open(dir).map_err(lock_error)?;
        let operation = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } != 0 {
            let cause = std::io::Error::last_os_error();
            if cause.kind() != std::io::ErrorKind::WouldBlock {
                return Err(lock_error(cause));
            }
            return Err(MeshedElsewhere::Locked {
                cgroup: cgroup.to_owned(),
                locked_at: dir.to_owned(),
                holder: lock_holder(dir),
            });
        }
        held.push(file);
    }
    Ok(WorkloadLocks { _held: held })
}

/// The process holding a lock on `dir`, from /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 4242 00:1e:1234 0 EOF`).
fn lock_holder(dir: &Path) -> Holder {
    let inode = std::fs::metadata(dir).map(|m| m.ino()).unwrap_or_default();
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let own = std::process::id();
    locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let pid: u32 = fields.get(4)?.parse().ok()?;
            let lock_inode: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
            (fields.get(1) == Some(&"FLOCK") && lock_inode == inode && pid != own).then_some(pid)
        })
        .next()
        .map_or(Holder::Unseen, |pid| Holder::Process {
            pid,
            command: command_line(pid),
        })
}

/// Refuses when cheops's connect program already acts on one of `workload_cgroups`: attached
/// to it or to an ancestor (the kernel's effective list), or attached to a descendant.
/// Programs held by this very process do not count.
pub fn refuse_if_meshed_elsewhere(workload_cgroups: &[PathBuf]) -> Result<(), MeshedElsewhere> {
    for cgroup in workload_cgroups {
        let effective = connect_programs(cgroup, Query::Effective)?;
        if let Some(meshed) = held_elsewhere(&effective) {
            let attached_at = attach_point(cgroup, meshed.0)?;
            return Err(meshed.into_error(cgroup, attached_at));
        }
        for descendant in descendants(cgroup) {
            let attached = connect_programs(&descendant, Query::AttachedHere)?;
            if let Some(meshed) = held_elsewhere(&attached) {
                return Err(meshed.into_error(cgroup, descendant));
            }
        }
    }
    Ok(())
}

/// A cheops connect program (its id) and who holds it.
struct Found(u32, Holder);

impl Found {
    fn into_error(self, cgroup: &Path, attached_at: PathBuf) -> MeshedElsewhere {
        MeshedElsewhere::Meshed {
            cgroup: cgroup.to_owned(),
            attached_at,
            holder: self.1,
        }
    }
}

fn held_elsewhere(program_ids: &[u32]) -> Option<Found> {
    let own = std::process::id();
    program_ids.iter().find_map(|&id| match holder(id) {
        Holder::Process { pid, .. } if pid == own => None,
        holder => Some(Found(id, holder)),
    })
}

/// The directory, from `cgroup` up to the mount, where program `id` is attached itself.
fn attach_point(cgroup: &Path, id: u32) -> Result<PathBuf, MeshedElsewhere> {
    for dir in cgroup.ancestors() {
        if !dir.join("cgroup.procs").exists() {
            break;
        }
        if connect_programs(dir, Query::AttachedHere)?.contains(&id) {
            return Ok(dir.to_owned());
        }
    }
    Ok(cgroup.to_owned())
}

/// Every cgroup below `cgroup`, depth first.
fn descendants(cgroup: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![cgroup.to_owned()];
    while let Some(dir) = pending.pop() {
        // A cgroup removed while we walk has no programs left: skipping it is right.
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(entry.path());
                pending.push(entry.path());
            }
        }
    }
    found
}

#[derive(Clone, Copy)]
enum Query {
    /// What runs for the cgroup's processes: its own programs and its ancestors'.
    Effective,
    /// Only what is attached to this cgroup itself.
    AttachedHere,
}

/// The ids of cheops connect programs that act on `cgroup` for IPv4 connects (`connect6` is
/// always attached alongside).
fn connect_programs(cgroup: &Path, query: Query) -> Result<Vec<u32>, MeshedElsewhere> {
    let query_error = |cause| MeshedElsewhere::Query {
        cgroup: cgroup.to_owned(),
        cause,
    };
    let dir = match File::open(cgroup) {
        Ok(dir) => dir,
        // A cgroup removed since it was listed (a container gone) runs nothing any more.
        Err(cause) if cause.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(cause) => return Err(query_error(cause)),
    };
    let ids = prog_query(&dir, query).map_err(query_error)?;
    if ids.is_empty() {
        return Ok(ids);
    }
    let connect_name = &CONNECT4_PROGRAM.as_bytes()[..KERNEL_NAME_LEN];
    let mut cheops_programs = Vec::new();
    let mut listed_any = false;
    for program in aya::programs::loaded_programs() {
        match program {
            Ok(program) => {
                listed_any = true;
                if ids.contains(&program.id()) && program.name() == connect_name {
                    cheops_programs.push(program.id());
                }
            }
            // A program unloaded while we list is no longer attached: skip it. Listing
            // nothing at all is the kernel refusing (no CAP_SYS_ADMIN), not an empty node.
            Err(_) if listed_any => {}
            Err(cause) => return Err(query_error(std::io::Error::other(cause))),
        }
    }
    Ok(cheops_programs)
}

/// `BPF_PROG_QUERY` for `BPF_CGROUP_INET4_CONNECT` (aya 0.14 only offers it for other
/// program types): the ids of the programs attached.
fn prog_query(cgroup: &File, query: Query) -> std::io::Result<Vec<u32>> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_CGROUP_INET4_CONNECT: u32 = 10;
    const BPF_F_QUERY_EFFECTIVE: u32 = 1;
    // A cgroup runs at most 64 programs per attach type (BPF_CGROUP_MAX_PROGS).
    let mut ids = [0u32; 64];
    // The `query` member of `union bpf_attr` (linux/bpf.h), up to `prog_cnt`; the kernel
    // reads the rest of the union as zero.
    #[repr(C)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
    }
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_INET4_CONNECT,
        query_flags: match query {
            Query::Effective => BPF_F_QUERY_EFFECTIVE,
            Query::AttachedHere => 0,
        },
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_PROG_QUERY and outlives the call;
    // `prog_ids` points at `ids`, room for `prog_cnt` u32s, which the kernel fills and then
    // writes the count back into `prog_cnt`; `cgroup` keeps the descriptor open.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut QueryAttr,
            std::mem::size_of::<QueryAttr>() as libc::c_uint,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let count = (attr.prog_cnt as usize).min(ids.len());
    Ok(ids[..count].to_vec())
}

/// The process holding program `id` or a link to it: the one whose descriptor's fdinfo says
/// `prog_id: id` (bpf-prog and bpf_link descriptors both do).
fn holder(id: u32) -> Holder {
    let wanted = format!("prog_id:\t{id}");
    let pids = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for entry in pids {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let is_bpf = std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("anon_inode:bpf"));
            let fdinfo = entry.path().join("fdinfo").join(fd.file_name());
            if is_bpf
                && std::fs::read_to_string(fdinfo)
                    .is_ok_and(|info| info.lines().any(|line| line == wanted))
            {
                return Holder::Process {
                    pid,
                    command: command_line(pid),
                };
            }
        }
    }
    Holder::Unknown { program_id: id }
}

fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "command unknown (it has exited)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_by_its_command_line() {
        let command = command_line(std::process::id());
        assert!(command.contains("interceptor"), "{command}");
    }
}
