//! The large download and upload through each path: throughput against direct and nginx, and
//! whether cheops's memory stayed flat while the body went through.
use serde_json::Value;

use super::{number, optional, ratio, times, Summary, CHEOPS, DIRECT};

/// The proxy's memory may grow by this much during a large body and still count as flat: a
/// few buffers, not the body.
const FLAT_KIB: f64 = 16.0 * 1024.0;

pub struct Large {
    pub name: String,
    pub mib_per_second: f64,
    /// The proxy's resident memory before the download, and its peak (KiB).
    pub rss_kib: Option<[f64; 2]>,
    /// The share of its core the proxy used meanwhile (near 1: it was the limit).
    pub cpu_share: Option<f64>,
}

/// The large bodies under `key` of the raw results (`large_bodies`: downloads,
/// `large_uploads`).
pub fn from_raw(raw: &Value, key: &str) -> anyhow::Result<Vec<Large>> {
    raw[key]
        .as_array()
        .into_iter()
        .flatten()
        // A path whose download failed says why in the raw results, and has no row.
        .filter(|large| large["error"].is_null())
        .map(|large| {
            let before = large["rss_before_kib"].as_f64();
            let peak = large["rss_peak_kib"].as_f64();
            Ok(Large {
                name: large["name"].as_str().unwrap_or("?").to_owned(),
                mib_per_second: number(large, "/mib_per_second")?,
                rss_kib: before.zip(peak).map(|(b, p)| [b, p]),
                cpu_share: large["proxy_cpu_seconds"]
                    .as_f64()
                    .zip(large["seconds"].as_f64())
                    .and_then(|(cpu, wall)| ratio(cpu, wall)),
            })
        })
        .collect()
}

fn large<'a>(bodies: &'a [Large], name: &str) -> Option<&'a Large> {
    bodies.iter().find(|l| l.name == name)
}

impl Summary {
    /// (target, measured, met) of the large download and upload; none for one not measured.
    pub fn body_targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut targets = large_targets(&self.bodies, "download");
        targets.extend(large_targets(&self.uploads, "upload"));
        targets
    }

    /// The large download and upload as Markdown sections.
    pub fn bodies_markdown(&self) -> String {
        let download = "One GET of a 300 MiB file on a new connection; the origin sends it \
            from the page cache to every path, as the benchmark reads the file through once when \
            it makes it (before that, the first path measured, direct, filled the cache while it \
            was timed: 139 MiB/s direct against 1661 through cheops, measured second, in the \
            report of 2 December). nginx as a proxy with `proxy_buffering off` for it \
            (otherwise it spools the body to disk).";
        let upload = "One POST of a 300 MiB body (zeros, in 64 KiB chunks) on a new connection, \
            timed to the answer, which the origin (`cheops-load sink`, a small hyper server) sends \
            once it has read the whole body; nginx as a proxy with `proxy_request_buffering off` \
            for it (otherwise it spools the body to disk first), HAProxy as it is.";
        self.large_markdown(&self.bodies, "download", download)
            + &self.large_markdown(&self.uploads, "upload", upload)
    }

    fn large_markdown(&self, bodies: &[Large], what: &str, how: &str) -> String {
        if bodies.is_empty() {
            return String::new();
        }
        let mut md = format!(
            "\n## A 300 MiB {what}, the proxy on its own core\n\n\
             {how} Memory: the proxy's VmRSS before, and its VmHWM after, reset just before the \
             {what} (`5` written to /proc/PID/clear_refs) so that start-up, when cheops loads \
             its eBPF programs, does not count. Proxy CPU: the share of its core it used \
             (utime+stime over the wall time): near 1, the proxy was the limit; well below, \
             the client and origin on the shared core were.\n\n\
             | path | MiB/s | / direct | proxy memory before (MiB) | proxy peak (MiB) | proxy CPU |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        let direct = large(bodies, DIRECT).map(|d| d.mib_per_second);
        for body in bodies {
            let mib = |kib: f64| format!("{:.1}", kib / 1024.0);
            md += &format!(
                "| {} | {:.0} | {} | {} | {} | {} |\n",
                self.title(&body.name),
                body.mib_per_second,
                times(direct.and_then(|d| ratio(body.mib_per_second, d))),
                body.rss_kib
                    .map_or("-".to_owned(), |[before, _]| mib(before)),
                body.rss_kib.map_or("-".to_owned(), |[_, peak]| mib(peak)),
                optional(body.cpu_share, 2),
            );
        }
        md
    }
}

/// (target, measured, met) of one large body (`what`: download or upload).
fn large_targets(bodies: &[Large], what: &str) -> Vec<(String, String, Option<bool>)> {
    let Some(cheops) = large(bodies, CHEOPS) else {
        return Vec::new();
    };
    let against = |name: &str| {
        large(bodies, name).and_then(|other| ratio(cheops.mib_per_second, other.mib_per_second))
    };
    let direct = against(DIRECT);
    let nginx = against("nginx-nat");
    let growth = cheops.rss_kib.map(|[before, peak]| peak - before);
    vec![
        (
            format!("300 MiB {what} through cheops >= 0.8x direct"),
            times(direct),
            direct.map(|r| r >= 0.8),
        ),
        (
            format!("300 MiB {what} through cheops >= 2x nginx"),
            times(nginx),
            nginx.map(|r| r >= 2.0),
        ),
        (
            format!(
                "cheops's resident memory flat during the {what} (peak within 16 MiB of before)"
            ),
            growth.map_or("n/a".to_owned(), |g| format!("+{:.1} MiB", g / 1024.0)),
            growth.map(|g| g <= FLAT_KIB),
        ),
    ]
}
