//! Large bodies: one download, then one upload, of `LARGE_BYTES` through each path, the proxy
//! on a core of its own (as for throughput), with the proxy's resident memory before it and at
//! its peak during it (the peak is reset just before: cheops's start, which loads its eBPF
//! programs, does not count). Uploads go to a sink (`cheops-load sink`) that reads each body
//! to its end before answering, so that the time counts every byte reaching the origin.
use anyhow::ensure;
use serde_json::{json, Value};

use crate::{
    procfs,
    servers::{self, Proxy, SERVICE, SINK, UPLOAD_PATH, UPLOAD_SERVICE},
    Stage,
};

/// The large file the origin serves, and its size.
pub const LARGE_PATH: &str = "/large";
pub const LARGE_BYTES: u64 = 300 * 1024 * 1024;

/// The paths a large body is measured through.
pub const PATHS: [(&str, Option<Proxy>); 4] = [
    ("direct", None),
    ("cheops-ebpf", Some(Proxy::CheopsEbpf)),
    ("haproxy-nat", Some(Proxy::Haproxy)),
    ("nginx-nat", Some(Proxy::Nginx)),
];

/// Which way the body goes.
#[derive(Clone, Copy)]
pub enum Direction {
    Download,
    Upload,
}

/// The upload through every path, the sink started for them; a path that fails says why in
/// its entry and the others are still measured.
pub fn uploads(stage: &Stage) -> anyhow::Result<Vec<Value>> {
    let args = ["sink", "--listen", SINK, "--listen", UPLOAD_SERVICE];
    let _sink = procfs::on_cpu(stage.cores.shared, || {
        servers::load_program(&stage.netns, "sink", &stage.load_bin, &args, SINK, &[])
    })?;
    Ok(PATHS
        .into_iter()
        .map(|(name, proxy)| {
            eprintln!("bench: a {} MiB upload, {name}", LARGE_BYTES >> 20);
            measure(stage, name, proxy, Direction::Upload)
                .unwrap_or_else(|e| json!({"name": name, "error": format!("{e:#}")}))
        })
        .collect())
}

/// The body through `proxy` (none: direct).
pub fn measure(
    stage: &Stage,
    name: &str,
    proxy: Option<Proxy>,
    direction: Direction,
) -> anyhow::Result<Value> {
    let server = match proxy {
        Some(proxy) => Some(procfs::on_cpu(stage.cores.own, || {
            servers::proxy(&stage.netns, proxy, &stage.workload, &[])
        })?),
        None => None,
    };
    let (mode, service, path) = match direction {
        Direction::Download => ("download", SERVICE, LARGE_PATH),
        Direction::Upload => ("upload", UPLOAD_SERVICE, UPLOAD_PATH),
    };
    let _rule = stage.redirect_service(proxy, service);
    let before = server
        .as_ref()
        .map(|s| {
            procfs::reset_peak_rss(s.pid)?;
            procfs::usage(s.pid)
        })
        .transpose()?;
    let bytes = LARGE_BYTES.to_string();
    let report = stage.load(
        true,
        &[
            mode,
            "--address",
            service,
            "--path",
            path,
            "--bytes",
            &bytes,
        ],
        &[],
    )?;
    if let Direction::Upload = direction {
        check_marks(&report, proxy)?;
    }
    let rss_peak = server
        .as_ref()
        .map(|s| procfs::peak_rss_kib(s.pid))
        .transpose()?;
    // The share of its core the proxy used: near 1, it was the limit.
    let cpu_seconds = match (&server, before) {
        (Some(server), Some(before)) => {
            Some(procfs::usage(server.pid)?.cpu_seconds - before.cpu_seconds)
        }
        _ => None,
    };
    Ok(json!({
        "name": name,
        "bytes": LARGE_BYTES,
        "mib_per_second": report["mib_per_second"],
        "seconds": report["seconds"],
        "proxy_cpu_seconds": cpu_seconds,
        "rss_before_kib": before.map(|u| u.rss_kib),
        "rss_peak_kib": rss_peak,
    }))
}

/// The answer's `x-` headers (`marks` in a `cheops-load` report) must show it went through
/// `proxy`, or through no proxy for the direct path: otherwise the numbers are of another path.
pub fn check_marks(report: &Value, proxy: Option<Proxy>) -> anyhow::Result<()> {
    let marks: Vec<String> = report["marks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|mark| Some(mark.as_str()?.to_lowercase()))
        .collect();
    let through = match proxy {
        Some(proxy) => marks.iter().any(|mark| mark == proxy.marker()),
        None => marks.is_empty(),
    };
    ensure!(
        through,
        "the answer did not take the path measured ({proxy:?}): its headers {marks:?}"
    );
    Ok(())
}
