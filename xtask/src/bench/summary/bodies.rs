//! The large download through each path: throughput against direct and nginx, and whether
//! cheops's memory stayed flat while the body went through.
use serde_json::Value;

use super::{number, ratio, times, Summary, CHEOPS, DIRECT};

/// The proxy's memory may grow by this much during a large body and still count as flat: a
/// few buffers, not the body.
const FLAT_KIB: f64 = 16.0 * 1024.0;

pub struct Large {
    pub name: String,
    pub mib_per_second: f64,
    /// The proxy's resident memory before the download, and its peak (KiB).
    pub rss_kib: Option<[f64; 2]>,
}

pub fn from_raw(raw: &Value) -> anyhow::Result<Vec<Large>> {
    raw["large_bodies"]
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
            })
        })
        .collect()
}

impl Summary {
    fn large(&self, name: &str) -> Option<&Large> {
        self.bodies.iter().find(|l| l.name == name)
    }

    /// (target, measured, met) of the large download; `None` when it was not measured.
    pub fn body_targets(&self) -> Vec<(String, String, Option<bool>)> {
        let Some(cheops) = self.large(CHEOPS) else {
            return Vec::new();
        };
        let against = |name: &str| {
            self.large(name)
                .and_then(|other| ratio(cheops.mib_per_second, other.mib_per_second))
        };
        let direct = against(DIRECT);
        let nginx = against("nginx-nat");
        let growth = cheops.rss_kib.map(|[before, peak]| peak - before);
        vec![
            (
                "300 MiB download through cheops >= 0.8x direct".to_owned(),
                times(direct),
                direct.map(|r| r >= 0.8),
            ),
            (
                "300 MiB download through cheops >= 2x nginx".to_owned(),
                times(nginx),
                nginx.map(|r| r >= 2.0),
            ),
            (
                "cheops's resident memory flat during the download (peak within 16 MiB of before)"
                    .to_owned(),
                growth.map_or("n/a".to_owned(), |g| format!("+{:.1} MiB", g / 1024.0)),
                growth.map(|g| g <= FLAT_KIB),
            ),
        ]
    }

    /// The large download as a Markdown section.
    pub fn bodies_markdown(&self) -> String {
        if self.bodies.is_empty() {
            return String::new();
        }
        let mut md = String::from(
            "\n## A 300 MiB download, the proxy on its own core\n\n\
             One GET of a 300 MiB file (the origin sends it from the page cache) on a new \
             connection; nginx as a proxy with `proxy_buffering off` for it (otherwise it \
             spools the body to disk). Memory: the proxy's VmRSS before, and its VmHWM after, \
             reset just before the download (`5` written to /proc/PID/clear_refs) so that \
             start-up, when cheops loads its eBPF programs, does not count.\n\n\
             | path | MiB/s | / direct | proxy memory before (MiB) | proxy peak (MiB) |\n\
             |---|---:|---:|---:|---:|\n",
        );
        let direct = self.large(DIRECT).map(|d| d.mib_per_second);
        for large in &self.bodies {
            let mib = |kib: f64| format!("{:.1}", kib / 1024.0);
            md += &format!(
                "| {} | {:.0} | {} | {} | {} |\n",
                self.title(&large.name),
                large.mib_per_second,
                times(direct.and_then(|d| ratio(large.mib_per_second, d))),
                large
                    .rss_kib
                    .map_or("-".to_owned(), |[before, _]| mib(before)),
                large.rss_kib.map_or("-".to_owned(), |[_, peak]| mib(peak)),
            );
        }
        md
    }
}
