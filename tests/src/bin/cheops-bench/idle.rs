//! Idle keep-alive connections: `cheops-load idle` opens many connections through each proxy,
//! each with one request answered, and holds them; the proxy's resident memory before and
//! with all of them open and idle for a few seconds (`IDLE_FOR`), divided by their number, is
//! its memory per idle connection. Its open files tell whether it keeps an upstream connection
//! for each.
use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Duration,
};

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use crate::{
    procfs,
    servers::{self, Proxy, BODY_BYTES, BODY_PATH, SERVICE},
    Stage,
};

/// The proxies compared (direct has nothing to measure).
pub const PATHS: [(&str, Proxy); 3] = [
    ("cheops-ebpf", Proxy::CheopsEbpf),
    ("haproxy-nat", Proxy::Haproxy),
    ("nginx-nat", Proxy::Nginx),
];

/// How long the connections are idle, all of them open, when the memory is read: the memory
/// measured is that of connections idle for a few seconds.
const IDLE_FOR: Duration = Duration::from_secs(3);

/// Open files the benchmark's processes may have: a client, a proxy and the origin each hold
/// one per connection, a proxy perhaps two.
const OPEN_FILES: u64 = 65536;

/// Lets this process, and every one it starts, open `OPEN_FILES` files, or as many as its
/// hard limit allows when it may not raise that (no CAP_SYS_RESOURCE, as in some
/// containers); returns the limit set.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        anyhow::bail!(
            "reading the open files limit: {}",
            std::io::Error::last_os_error()
        );
    }
    for wanted in [OPEN_FILES.max(limit.rlim_max), limit.rlim_max] {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted,
        };
        // SAFETY: setrlimit reads a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(wanted);
        }
    }
    anyhow::bail!(
        "raising the open files limit to {}: {}",
        limit.rlim_max,
        std::io::Error::last_os_error()
    )
}

/// The idle connections measured: `wanted`, or fewer when the open files limit would not let
/// a proxy that keeps an upstream connection for each one hold them all.
pub fn connections_within(wanted: usize, open_files: u64) -> usize {
    let most = (open_files.saturating_sub(256) / 2) as usize;
    if most < wanted {
        eprintln!(
            "bench: the open files limit ({open_files}) allows {most} idle connections, not \
             {wanted}: measuring {most}"
        );
    }
    wanted.min(most)
}

/// `connections` idle connections through every proxy; a proxy that fails says why in its
/// entry and the others are still measured.
pub fn measure_all(stage: &Stage, connections: usize) -> Vec<Value> {
    PATHS
        .into_iter()
        .map(|(name, proxy)| {
            eprintln!("bench: {connections} idle keep-alive connections, {name}");
            measure(stage, name, proxy, connections)
                .unwrap_or_else(|e| json!({"name": name, "error": format!("{e:#}")}))
        })
        .collect()
}

fn measure(stage: &Stage, name: &str, proxy: Proxy, connections: usize) -> anyhow::Result<Value> {
    // Room for the check's connection and the proxy's own; nginx also closes idle keep-alive
    // connections once fewer than 1/16 of its `worker_connections` are free.
    let room = match proxy {
        Proxy::Nginx => connections + connections / 8 + 64,
        _ => connections + 64,
    };
    let server = procfs::on_cpu(stage.cores.own, || {
        servers::proxy_holding(&stage.netns, proxy, &stage.workload, &[], room)
    })?;
    let _rule = stage.redirect(Some(proxy));
    stage.check_path(Some(proxy))?;
    let before = held(server.pid)?;
    let mut command = stage
        .netns
        .command(stage.load_bin.to_str().context("UTF-8 path")?);
    command
        .args(["idle", "--address", SERVICE, "--path", BODY_PATH])
        .args(["--body-bytes", &BODY_BYTES.to_string()])
        .args(["--connections", &connections.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    stage.workload.enter(&mut command);
    let mut client = procfs::on_cpu(stage.cores.shared, || command.spawn())?
        .context("starting cheops-load idle")?;
    let mut answers = BufReader::new(client.stdout.take().context("the client's stdout")?);
    let mut opened = String::new();
    answers.read_line(&mut opened)?;
    // Whatever the proxy does once a connection is idle (buffers shrunk, timers set) is done,
    // and so is what it does to one idle for a few seconds: cheops parks a connection idle
    // for `proxy.park_idle_after` (1 s), then gives the memory freed back a second later.
    std::thread::sleep(IDLE_FOR);
    let with_idle = held(server.pid)?;
    drop(client.stdin.take());
    let mut last = String::new();
    answers.read_line(&mut last)?;
    let status = client.wait()?;
    ensure!(status.success(), "cheops-load idle failed ({status})");
    let opened: Value = serde_json::from_str(&opened)
        .with_context(|| format!("cheops-load idle's first report: {opened:?}"))?;
    let last: Value = serde_json::from_str(&last)
        .with_context(|| format!("cheops-load idle's last report: {last:?}"))?;
    ensure!(
        opened["errors"] == 0 && last["still_open"] == connections,
        "of {connections} connections through {name}: {opened} when open, {last} at the end"
    );
    let per_connection =
        |after: u64, before: u64| (after as f64 - before as f64) / connections as f64;
    Ok(json!({
        "name": name,
        "connections": connections,
        "open_seconds": opened["seconds"],
        "rss_before_kib": before.rss_kib,
        "rss_idle_kib": with_idle.rss_kib,
        "kib_per_connection": per_connection(with_idle.rss_kib, before.rss_kib),
        "files_per_connection": per_connection(with_idle.files, before.files),
    }))
}

/// What a process tree holds: resident memory and open files.
struct Held {
    rss_kib: u64,
    files: u64,
}

fn held(pid: u32) -> anyhow::Result<Held> {
    Ok(Held {
        rss_kib: procfs::usage(pid)?.rss_kib,
        files: procfs::open_files(pid)?,
    })
}
