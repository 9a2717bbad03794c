//! What a proxy spends per request, counted rather than timed, so that the machine's load
//! cannot move it: instructions (valgrind's callgrind, the proxy running under it) and system
//! calls (perf's `raw_syscalls:sys_enter` tracepoint, the proxy running as usual). Each is
//! counted over two runs of different lengths on a warm proxy, and the difference divided by
//! the difference in requests: start-up, the client's connection and idle timers cancel.
use std::{
    path::Path,
    process::{Command, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Map, Value};

use crate::{
    callgrind, cpu_profile, grpc, perf,
    servers::{self, Proxy, BODY_BYTES, BODY_PATH, GRPC_SERVICE, SERVICE},
    Stage, INTERRUPTED,
};

/// The CPU profile runs over this many times the longer count's requests, for enough samples.
const PROFILED_RUNS: u32 = 4;

/// How many requests each count runs over.
pub struct Plan {
    warmup: u32,
    short: u32,
    long: u32,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                warmup: 100,
                short: 200,
                long: 1000,
            }
        } else {
            Plan {
                warmup: 200,
                short: 500,
                long: 2500,
            }
        }
    }
}

/// What the counted requests are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// GETs of the 1 KiB body, HTTP/1.1.
    Http1,
    /// gRPC unary calls (`cheops-load grpc-count`) to the gRPC origin, HTTP/2.
    GrpcUnary,
}

/// One process counted: a proxy on the path of `calls`, or, with no proxy, the gRPC origin
/// itself (the direct path: what serving the calls costs without a proxy).
pub struct Counted {
    pub name: &'static str,
    pub proxy: Option<Proxy>,
    pub calls: Calls,
}

/// What is counted; the proxies all reached through the same nftables REDIRECT rule: cheops's
/// per-request path is the same under eBPF (whose lookup is per connection, and whose loader
/// valgrind does not follow).
pub const COUNTED: [Counted; 6] = [
    Counted {
        name: "cheops-nat",
        proxy: Some(Proxy::CheopsNat),
        calls: Calls::Http1,
    },
    Counted {
        name: "haproxy-nat",
        proxy: Some(Proxy::Haproxy),
        calls: Calls::Http1,
    },
    Counted {
        name: "nginx-nat",
        proxy: Some(Proxy::Nginx),
        calls: Calls::Http1,
    },
    Counted {
        name: "grpc-cheops-nat",
        proxy: Some(Proxy::CheopsNat),
        calls: Calls::GrpcUnary,
    },
    Counted {
        name: "grpc-nginx-nat",
        proxy: Some(Proxy::Nginx),
        calls: Calls::GrpcUnary,
    },
    Counted {
        name: "grpc-origin",
        proxy: None,
        calls: Calls::GrpcUnary,
    },
];

/// The counts `selected` names (all of `COUNTED` when empty): HTTP/1.1's and gRPC's apart,
/// by name; one that fails says why in its entry. cheops's callgrind dumps are kept beside
/// `out`.
pub fn measure_selected(
    stage: &Stage,
    quick: bool,
    selected: &[String],
    out: &Path,
) -> anyhow::Result<(Map<String, Value>, Map<String, Value>)> {
    let plan = Plan::new(quick);
    let (mut costs, mut grpc_costs) = (Map::new(), Map::new());
    let chosen = COUNTED
        .iter()
        .filter(|counted| selected.is_empty() || selected.iter().any(|c| c == counted.name));
    for counted in chosen {
        let name = counted.name;
        ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted (Ctrl-C)");
        eprintln!("bench: instructions and system calls per request, {name}");
        let profile_out = out.with_file_name(format!("callgrind.{name}.out"));
        let cost = measure(stage, counted, &plan, &profile_out)
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        match counted.calls {
            Calls::Http1 => costs.insert(name.to_owned(), cost),
            Calls::GrpcUnary => grpc_costs.insert(name.to_owned(), cost),
        };
    }
    Ok((costs, grpc_costs))
}

/// Instructions and system calls per request of what `counted` names; cheops's callgrind dump
/// of the longer run is kept as `profile` (for `callgrind_annotate`).
pub fn measure(
    stage: &Stage,
    counted: &Counted,
    plan: &Plan,
    profile_out: &Path,
) -> anyhow::Result<Value> {
    let service = match counted.calls {
        Calls::Http1 => SERVICE,
        Calls::GrpcUnary => GRPC_SERVICE,
    };
    let _rule = stage.redirect_service(counted.proxy, service);
    // The gRPC origin behind the proxy counted (when it is not the one counted).
    let _origin = match counted {
        Counted {
            proxy: Some(_),
            calls: Calls::GrpcUnary,
            ..
        } => Some(grpc::start_origin(stage, &[])?),
        _ => None,
    };
    let mut profile = (Vec::new(), Vec::new());
    let (syscalls, cpu_profile) = {
        let server = stage.start(counted, &[])?;
        stage.count(counted.calls, plan.warmup)?;
        let short = syscalls_over(stage, counted.calls, server.pid, plan.short)?;
        let long = syscalls_over(stage, counted.calls, server.pid, plan.long)?;
        let requests = plan.long * PROFILED_RUNS;
        let cpu_profile = cpu_profile::sampled(server.pid, requests, || {
            stage.count(counted.calls, requests)
        })?;
        (per_request(short, long, plan), cpu_profile)
    };
    let instructions = {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("callgrind.out");
        let valgrind = [
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            // Every dump names its functions in full (not by ids defined in an earlier dump).
            "--compress-strings=no".to_owned(),
            "--compress-pos=no".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
        ];
        let server = stage.start(counted, &valgrind)?;
        stage.count(counted.calls, plan.warmup)?;
        dump(server.pid, dir.path())?;
        stage.count(counted.calls, plan.short)?;
        let short = dump(server.pid, dir.path())?;
        stage.count(counted.calls, plan.long)?;
        let long = dump(server.pid, dir.path())?;
        if matches!(counted.proxy, Some(Proxy::CheopsNat | Proxy::CheopsEbpf)) {
            let dump = newest_dump(dir.path())?;
            std::fs::copy(&dump, profile_out).with_context(|| {
                format!("copying {} to {}", dump.display(), profile_out.display())
            })?;
            profile = top_functions(&dump, plan.long)?;
        }
        per_request(short, long, plan)
    };
    Ok(json!({
        "instructions_per_request": instructions,
        "syscalls_per_request": syscalls,
        "requests": [plan.short, plan.long],
        "profile": profile.0,
        "profile_by_crate": profile.1,
        "cpu_profile": cpu_profile,
    }))
}

fn per_request(short: u64, long: u64, plan: &Plan) -> f64 {
    (long as f64 - short as f64) / f64::from(plan.long - plan.short)
}

impl Stage {
    /// Starts what `counted` names (under `under`) on the shared core, as for the latency
    /// runs: one worker.
    fn start(&self, counted: &Counted, under: &[String]) -> anyhow::Result<servers::Server> {
        match (counted.proxy, counted.calls) {
            (None, _) => grpc::start_origin(self, under),
            (Some(Proxy::Nginx), Calls::GrpcUnary) => {
                crate::procfs::on_cpu(self.cores.shared, || {
                    servers::nginx_grpc(&self.netns, under)
                })
            }
            (Some(proxy), _) => crate::procfs::on_cpu(self.cores.shared, || {
                servers::proxy(&self.netns, proxy, &self.workload, under)
            }),
        }
    }

    /// `requests` one after another on one connection from the workload cgroup, all answered.
    fn count(&self, calls: Calls, requests: u32) -> anyhow::Result<()> {
        let (mode, address, path, body_bytes) = match calls {
            Calls::Http1 => ("count", SERVICE, BODY_PATH, BODY_BYTES),
            Calls::GrpcUnary => (
                "grpc-count",
                GRPC_SERVICE,
                grpc::METHOD,
                grpc::MESSAGE_BYTES,
            ),
        };
        let requests = requests.to_string();
        let body_bytes = body_bytes.to_string();
        self.load(
            true,
            &[
                mode,
                "--address",
                address,
                "--path",
                path,
                "--body-bytes",
                &body_bytes,
                "--requests",
                &requests,
            ],
            &[],
        )
        .map(drop)
    }
}

/// The system calls `pid`'s threads make while `requests` are served.
fn syscalls_over(stage: &Stage, calls: Calls, pid: u32, requests: u32) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("perf.csv");
    perf::over(
        &["stat", "-x", ",", "-e", "raw_syscalls:sys_enter"],
        pid,
        &out,
        || stage.count(calls, requests),
    )?;
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    text.lines()
        .find(|line| line.contains("raw_syscalls:sys_enter"))
        .and_then(|line| line.split(',').next()?.trim().parse().ok())
        .with_context(|| format!("no system call count in perf's output: {text}"))
}

/// Where the instructions of `requests` went, from a callgrind dump: (instructions per
/// request, name) of the functions with the most instructions of their own, and of every
/// crate.
fn top_functions(
    dump: &Path,
    requests: u32,
) -> anyhow::Result<(callgrind::Profile, callgrind::Profile)> {
    let text =
        std::fs::read_to_string(dump).with_context(|| format!("reading {}", dump.display()))?;
    let costs = callgrind::self_costs(&text);
    let crates = callgrind::by_crate(&costs);
    Ok((
        callgrind::per_request(costs, requests, 25),
        callgrind::per_request(crates, requests, 12),
    ))
}

/// The last dump callgrind wrote in `dir`.
fn newest_dump(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    dumps(dir)?
        .into_iter()
        .max_by_key(|path| {
            path.extension()
                .and_then(|n| n.to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .context("no callgrind dump")
}

/// Has callgrind in `pid` write what it counted since its last dump (and start again from
/// zero): the instructions in that file.
fn dump(pid: u32, dir: &Path) -> anyhow::Result<u64> {
    let before = dumps(dir)?;
    let status = Command::new("callgrind_control")
        .arg("--dump")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running callgrind_control (Debian package valgrind)")?;
    ensure!(status.success(), "callgrind_control --dump {pid} failed");
    let written = cheops_tests::process::wait_until(Duration::from_secs(30), || {
        dumps(dir).is_ok_and(|now| now.len() > before.len())
    });
    ensure!(written, "callgrind wrote no dump for process {pid}");
    let newest = dumps(dir)?
        .into_iter()
        .find(|path| !before.contains(path))
        .context("the new dump")?;
    let text = std::fs::read_to_string(&newest)
        .with_context(|| format!("reading {}", newest.display()))?;
    match text.lines().find_map(|line| line.strip_prefix("summary:")) {
        Some(total) => Ok(total.split_whitespace().next().unwrap_or("").parse()?),
        None => bail!("{} has no summary line", newest.display()),
    }
}

fn dumps(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("callgrind.out."))
        })
        .collect())
}
