//! Where each proxy's CPU goes, from perf's samples while it served the counted requests: the
//! kernel's share and the functions with the most samples, timed (so load moves them) but
//! sampled in the same run for every proxy.
use serde_json::{json, Value};

use super::number;

pub struct CpuProfile {
    pub samples: f64,
    /// perf's sampling frequency: samples per CPU-second.
    pub frequency: f64,
    pub requests: f64,
    pub kernel_share: f64,
    /// The share at switching the proxy back in (`finish_task_switch`).
    pub switch_in_share: f64,
    /// `(share, in the kernel, function)`, most samples first.
    pub top: Vec<(f64, bool, String)>,
}

impl CpuProfile {
    /// The profile in a cost's raw entry, if perf took one.
    pub fn from_raw(cost: &Value) -> anyhow::Result<Option<CpuProfile>> {
        let profile = &cost["cpu_profile"];
        if profile.is_null() {
            return Ok(None);
        }
        let top = profile["top"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                (
                    entry[0].as_f64().unwrap_or(0.0),
                    entry[1] == "kernel",
                    entry[2].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        Ok(Some(CpuProfile {
            samples: number(profile, "/samples")?,
            frequency: number(profile, "/frequency")?,
            requests: number(profile, "/requests")?,
            kernel_share: number(profile, "/kernel_share")?,
            switch_in_share: number(profile, "/switch_in_share")?,
            top,
        }))
    }

    /// The CPU per request that the samples add up to (µs).
    pub fn sampled_us_per_request(&self) -> f64 {
        self.samples / self.frequency / self.requests * 1e6
    }

    pub fn json(&self) -> Value {
        json!({
            "samples": self.samples,
            "sampled_us_per_request": self.sampled_us_per_request(),
            "kernel_share": self.kernel_share,
            "switch_in_share": self.switch_in_share,
        })
    }

    /// The functions with the most samples, as a table.
    pub fn top_markdown(&self) -> String {
        let mut md = String::from("| share of the samples | where | function |\n|---:|---|---|\n");
        for (share, in_kernel, function) in &self.top {
            let side = if *in_kernel { "kernel" } else { "own code" };
            md += &format!("| {:.1}% | {side} | `{function}` |\n", share * 100.0);
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_give_the_cpu_per_request_and_the_share_at_switching_in() {
        let raw = json!({"cpu_profile": {"samples": 4999, "frequency": 4999, "requests": 10_000,
            "kernel_share": 0.8, "switch_in_share": 0.5,
            "top": [[0.5, "kernel", "finish_task_switch.isra.0"], [0.1, "user", "httparse::x"],
                    [0.05, "kernel", "tcp_ack"]]}});
        let profile = CpuProfile::from_raw(&raw).unwrap().unwrap();
        // 4,999 samples at 4,999 a second: one CPU-second over 10,000 requests.
        assert!((profile.sampled_us_per_request() - 100.0).abs() < 1e-9);
        assert!((profile.switch_in_share - 0.5).abs() < 1e-9);
        let table = profile.top_markdown();
        assert!(
            table.contains("| 10.0% | own code | `httparse::x` |"),
            "{table}"
        );
        assert!(CpuProfile::from_raw(&json!({})).unwrap().is_none());
    }
}
