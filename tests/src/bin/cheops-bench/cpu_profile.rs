//! Where a proxy's CPU time goes, the kernel's and its own apart: perf samples on the
//! cpu-clock event (these virtual machines have no hardware counters) while the proxy serves
//! requests one after another on one connection, every process on the shared core as in the
//! latency runs. What runs in the kernel on the proxy's behalf (its system calls, the loopback
//! delivery its sends do, switching it in and out) is sampled as its own.
use std::process::Command;

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use crate::perf;

/// Samples a second on each CPU: below perf's default, to disturb the proxy little.
const FREQUENCY: u32 = 4999;
/// The functions kept, by share of the samples.
const TOP: usize = 15;
/// The kernel function that switches a task back in, where a virtual machine's sampling timer
/// also lands for the time spent with interrupts off around a switch.
const SWITCH_IN: &str = "finish_task_switch";

/// One function's samples, as `perf report` prints them.
struct Sampled {
    samples: u64,
    in_kernel: bool,
    function: String,
}

/// The profile of `pid` while `serve` serves `requests`: its samples and their frequency, the
/// shares of them in the kernel and at switching it in, and the functions with the most
/// (`[share, "kernel"|"user", name]`).
pub fn sampled(
    pid: u32,
    requests: u32,
    serve: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("perf.data");
    perf::over(
        &[
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            &FREQUENCY.to_string(),
        ],
        pid,
        &data,
        serve,
    )?;
    let report = Command::new("perf")
        .args(["report", "--stdio", "--quiet", "--sort", "sym", "-n", "-i"])
        .arg(&data)
        .output()
        .context("running perf report")?;
    ensure!(
        report.status.success(),
        "perf report failed: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    summarise(&String::from_utf8_lossy(&report.stdout), requests)
        .with_context(|| format!("perf sampled nothing of process {pid}"))
}

/// What `perf report --sort sym -n` says of `requests`, as `sampled` gives it; `None` when it
/// has no samples.
fn summarise(report: &str, requests: u32) -> Option<Value> {
    let functions: Vec<Sampled> = report.lines().filter_map(parse_line).collect();
    let total: u64 = functions.iter().map(|f| f.samples).sum();
    if total == 0 {
        return None;
    }
    let share = |samples: u64| samples as f64 / total as f64;
    let samples_of = |kept: fn(&Sampled) -> bool| -> u64 {
        functions
            .iter()
            .filter(|f| kept(f))
            .map(|f| f.samples)
            .sum()
    };
    let kernel_share = share(samples_of(|f| f.in_kernel));
    let switch_in_share = share(samples_of(|f| {
        f.in_kernel && f.function.starts_with(SWITCH_IN)
    }));
    let top: Vec<Value> = functions
        .iter()
        .take(TOP)
        .map(|f| {
            let side = if f.in_kernel { "kernel" } else { "user" };
            json!([share(f.samples), side, f.function])
        })
        .collect();
    Some(json!({
        "samples": total,
        "frequency": FREQUENCY,
        "requests": requests,
        "kernel_share": kernel_share,
        "switch_in_share": switch_in_share,
        "top": top,
    }))
}

/// `   12.50%     125  [k] finish_task_switch`: the samples, where, and the function.
fn parse_line(line: &str) -> Option<Sampled> {
    let mut words = line.split_whitespace();
    words.next()?.strip_suffix('%')?;
    let samples = words.next()?.parse().ok()?;
    let in_kernel = match words.next()? {
        "[k]" => true,
        "[.]" => false,
        _ => return None,
    };
    let function = words.collect::<Vec<_>>().join(" ");
    Some(Sampled {
        samples,
        in_kernel,
        function,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_report_lines_are_read_and_headers_skipped() {
        let kernel = parse_line("    12.50%           125  [k] finish_task_switch.isra.0").unwrap();
        assert_eq!(
            (kernel.samples, kernel.in_kernel, kernel.function.as_str()),
            (125, true, "finish_task_switch.isra.0")
        );
        let user =
            parse_line("     0.10%             1  [.] tokio::runtime::park (inlined)").unwrap();
        assert_eq!(
            (user.samples, user.in_kernel, user.function.as_str()),
            (1, false, "tokio::runtime::park (inlined)")
        );
        assert!(parse_line("# Samples: 916  of event 'cpu-clock'").is_none());
        assert!(parse_line("").is_none());
    }

    #[test]
    fn shares_are_taken_over_every_function_sampled() {
        let report = "    50.00%   50  [k] finish_task_switch.isra.0\n\
                      30.00%   30  [.] httparse::parse\n\
                      20.00%   20  [k] tcp_ack\n";
        let profile = summarise(report, 10).unwrap();
        assert_eq!(profile["samples"], 100);
        assert_eq!(profile["frequency"], FREQUENCY);
        assert_eq!(profile["kernel_share"], 0.7);
        assert_eq!(profile["switch_in_share"], 0.5);
        assert_eq!(profile["top"][1], json!([0.3, "user", "httparse::parse"]));
        assert_eq!(summarise("# no samples\n", 10), None);
    }
}
