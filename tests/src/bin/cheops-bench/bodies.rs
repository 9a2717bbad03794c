//! Large bodies: one download of `LARGE_BYTES` through each path, the proxy on a core of its
//! own (as for throughput), with the proxy's resident memory before it and at its peak during
//! it (the peak is reset just before: cheops's start, which loads its eBPF programs, does not
//! count).
use serde_json::{json, Value};

use crate::{
    procfs,
    servers::{self, Proxy, SERVICE},
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

/// The download through `proxy` (none: direct).
pub fn measure(stage: &Stage, name: &str, proxy: Option<Proxy>) -> anyhow::Result<Value> {
    let server = match proxy {
        Some(proxy) => Some(procfs::on_cpu(stage.cores.own, || {
            servers::proxy(&stage.netns, proxy, &stage.workload, &[])
        })?),
        None => None,
    };
    let _rule = stage.redirect(proxy);
    let rss_before = server
        .as_ref()
        .map(|s| {
            procfs::reset_peak_rss(s.pid)?;
            procfs::usage(s.pid).map(|u| u.rss_kib)
        })
        .transpose()?;
    let bytes = LARGE_BYTES.to_string();
    let report = stage.load(
        true,
        &[
            "download",
            "--address",
            SERVICE,
            "--path",
            LARGE_PATH,
            "--bytes",
            &bytes,
        ],
        &[],
    )?;
    let rss_peak = server
        .as_ref()
        .map(|s| procfs::peak_rss_kib(s.pid))
        .transpose()?;
    Ok(json!({
        "name": name,
        "bytes": LARGE_BYTES,
        "mib_per_second": report["mib_per_second"],
        "rss_before_kib": rss_before,
        "rss_peak_kib": rss_peak,
    }))
}
