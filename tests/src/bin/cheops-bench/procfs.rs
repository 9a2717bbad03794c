//! What the benchmark reads and sets on processes through /proc and the scheduler: CPU time
//! and resident memory of a whole process tree (nginx works in a child of its master), and
//! which core a process tree, or the next child we start, runs on; and the machine itself
//! (CPU model, kernel, load average) for the report.
use std::{collections::HashMap, path::Path, process::Command};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// CPU time (user + system) and resident memory of a process and all its descendants.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut usage = Usage {
        cpu_seconds: 0.0,
        rss_kib: 0,
    };
    for pid in tree(pid)? {
        let stat = read(&format!("/proc/{pid}/stat"))?;
        let fields = stat_fields(&stat);
        // utime and stime are the 14th and 15th fields of stat(5), in clock ticks.
        let ticks: u64 = [13, 14]
            .iter()
            .map(|&i| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        usage.cpu_seconds += ticks as f64 / ticks_per_second;
        let status = read(&format!("/proc/{pid}/status"))?;
        usage.rss_kib += status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
    }
    Ok(usage)
}

/// Starts the peak resident memory (VmHWM) of a process and all its descendants again from
/// their resident memory now, so that a peak read later is one reached since (not, say, while
/// cheops loaded its eBPF programs at start).
pub fn reset_peak_rss(pid: u32) -> anyhow::Result<()> {
    for pid in tree(pid)? {
        let path = format!("/proc/{pid}/clear_refs");
        std::fs::write(&path, "5").with_context(|| format!("writing 5 to {path}"))?;
    }
    Ok(())
}

/// The peak resident memory (VmHWM) of a process and all its descendants.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let mut peak = 0;
    for pid in tree(pid)? {
        let status = read(&format!("/proc/{pid}/status"))?;
        peak += status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
    }
    Ok(peak)
}

/// The open files (sockets included) of a process and all its descendants.
pub fn open_files(pid: u32) -> anyhow::Result<u64> {
    let mut files = 0;
    for pid in tree(pid)? {
        let listing = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .with_context(|| format!("listing the open files of process {pid}"))?;
        files += listing.count() as u64;
    }
    Ok(files)
}

/// Moves every thread of `pid` and of its descendants onto `cpu`.
pub fn move_to_cpu(pid: u32, cpu: usize) -> anyhow::Result<()> {
    for pid in tree(pid)? {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .with_context(|| format!("listing the threads of process {pid}"))?
        {
            let tid: i32 = task?.file_name().to_string_lossy().parse()?;
            set_affinity(tid, cpu).with_context(|| format!("moving thread {tid} to CPU {cpu}"))?;
        }
    }
    Ok(())
}

/// Runs `start` with this thread pinned to `cpu`, so that the processes it starts (which
/// inherit the affinity) are pinned from their first instruction, worker pools sized to one
/// core included; the thread's previous affinity is restored afterwards.
pub fn on_cpu<T>(cpu: usize, start: impl FnOnce() -> T) -> anyhow::Result<T> {
    let previous = affinity(0)?;
    set_affinity(0, cpu)?;
    let started = start();
    // SAFETY: `previous` is a valid cpu set read from the kernel just before.
    let restored =
        unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&previous), &previous) };
    if restored != 0 {
        bail!(
            "restoring this thread's CPU affinity: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(started)
}

/// The CPUs this process may run on, lowest first.
pub fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    let set = affinity(0)?;
    // SAFETY: CPU_ISSET reads a bit of a valid set.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

fn affinity(tid: i32) -> anyhow::Result<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set, filled in by the kernel.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(tid, std::mem::size_of_val(&set), &mut set) } != 0 {
        bail!("reading CPU affinity: {}", std::io::Error::last_os_error());
    }
    Ok(set)
}

fn set_affinity(tid: i32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; CPU_SET writes one bit of it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a cpu_set_t of the size given.
    if unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) } != 0 {
        bail!("setting CPU affinity: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// `pid` and its descendants, from the parent ids in /proc/*/stat.
fn tree(pid: u32) -> anyhow::Result<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(child) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // Processes may end while we look: skip those.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if let Some(parent) = stat_fields(&stat).get(3).and_then(|f| f.parse().ok()) {
            children.entry(parent).or_default().push(child);
        }
    }
    if !Path::new(&format!("/proc/{pid}")).exists() {
        bail!("process {pid} is gone");
    }
    let mut all = vec![pid];
    let mut next = 0;
    while next < all.len() {
        all.extend(children.get(&all[next]).into_iter().flatten());
        next += 1;
    }
    Ok(all)
}

/// The fields of /proc/PID/stat, numbered from 0 as in stat(5) minus one; the command name
/// (field 1) may hold spaces and parentheses, so splitting starts after its last ')'.
fn stat_fields(stat: &str) -> Vec<&str> {
    let (head, rest) = stat.rsplit_once(')').unwrap_or((stat, ""));
    let pid = head.split_whitespace().next().unwrap_or("");
    [pid, "(comm)"]
        .into_iter()
        .chain(rest.split_whitespace())
        .collect()
}

fn read(path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

/// The machine, for the report: noise on a shared machine shows in its load average.
pub fn machine() -> anyhow::Result<Value> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned());
    let version = |program: &str, arg: &str| {
        Command::new(program).arg(arg).output().ok().map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
    };
    Ok(json!({
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        "cpu_model": model,
        "cpus": std::thread::available_parallelism()?.get(),
        "load_average_before": load_average()?,
        "nginx": version("nginx", "-v"),
        "haproxy": version("haproxy", "-v"),
    }))
}

/// The 1-minute load average.
pub fn load_average() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    Ok(text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 7 42 42 0 -1 0 0 0 0 0 250 30 0 0";
        let fields = stat_fields(stat);
        assert_eq!(fields[0], "42");
        assert_eq!(fields[3], "7");
        assert_eq!((fields[13], fields[14]), ("250", "30"));
    }
}
