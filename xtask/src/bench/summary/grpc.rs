//! gRPC unary calls at a fixed rate through each path: the latency each proxy adds over
//! direct, and its CPU time per call, cheops against nginx's `grpc_pass`.
use serde_json::Value;

use super::{added_ratio, number, optional, ratio, times, Summary, CHEOPS, DIRECT};

/// The peer cheops's gRPC targets are set against.
const NGINX: &str = "nginx-nat";

pub struct Grpc {
    pub name: String,
    /// p50, p90, p99, max, µs.
    pub latency: [f64; 4],
    /// (percentile, µs) points of the latency distribution.
    pub distribution: Vec<[f64; 2]>,
    pub cpu_us_per_call: Option<f64>,
}

pub fn from_raw(raw: &Value) -> anyhow::Result<Vec<Grpc>> {
    raw["grpc_unary"]["paths"]
        .as_array()
        .into_iter()
        .flatten()
        // A path whose calls failed says why in the raw results, and has no row.
        .filter(|path| path["error"].is_null())
        .map(|path| {
            let latency = &path["latency"];
            Ok(Grpc {
                name: path["name"].as_str().unwrap_or("?").to_owned(),
                latency: [
                    number(latency, "/latency_us/p50")?,
                    number(latency, "/latency_us/p90")?,
                    number(latency, "/latency_us/p99")?,
                    number(latency, "/latency_us/max")?,
                ],
                distribution: serde_json::from_value(latency["distribution"].clone())?,
                cpu_us_per_call: path["proxy"]["cpu_us_per_call"].as_f64(),
            })
        })
        .collect()
}

impl Summary {
    fn grpc_of(&self, name: &str) -> Option<&Grpc> {
        self.grpc.iter().find(|g| g.name == name)
    }

    /// What the path `name` adds over direct at p50, p90, p99 and max.
    pub fn grpc_added(&self, name: &str) -> Option<[f64; 4]> {
        let (path, direct) = (self.grpc_of(name)?, self.grpc_of(DIRECT)?);
        Some(std::array::from_fn(|i| path.latency[i] - direct.latency[i]))
    }

    /// (target, measured, met) of the gRPC calls; none when they were not measured.
    pub fn grpc_targets(&self) -> Vec<(String, String, Option<bool>)> {
        let (Some(cheops), Some(nginx)) = (self.grpc_added(CHEOPS), self.grpc_added(NGINX)) else {
            return Vec::new();
        };
        let mut targets: Vec<_> = [(0, "p50"), (2, "p99")]
            .into_iter()
            .map(|(index, percentile)| {
                let r = added_ratio(cheops[index], nginx[index]);
                (
                    format!(
                        "gRPC unary latency cheops adds at {percentile} (1,000 calls/s) <= 0.8x \
                         what nginx's grpc_pass adds"
                    ),
                    times(r),
                    r.map(|r| r <= 0.8),
                )
            })
            .collect();
        let cpu = |name: &str| self.grpc_of(name).and_then(|g| g.cpu_us_per_call);
        let r = cpu(CHEOPS).zip(cpu(NGINX)).and_then(|(c, n)| ratio(c, n));
        targets.push((
            "gRPC unary proxy CPU per call <= 0.8x nginx's grpc_pass".to_owned(),
            times(r),
            r.map(|r| r <= 0.8),
        ));
        targets
    }

    pub fn grpc_text(&self) -> String {
        self.grpc
            .iter()
            .map(|path| {
                format!(
                    "gRPC unary, {:<28} p50 {:>7.1} µs  p99 {:>7.1} µs  CPU/call {:>6} µs\n",
                    self.title(&path.name),
                    path.latency[0],
                    path.latency[2],
                    optional(path.cpu_us_per_call, 1)
                )
            })
            .collect()
    }

    pub fn grpc_markdown(&self, raw: &Value) -> String {
        if self.grpc.is_empty() {
            return self.grpc_costs_markdown();
        }
        let unary = &raw["grpc_unary"];
        let mut md = format!(
            "\n## gRPC unary calls at {} per second, every process on one core\n\n\
             `cheops-load grpc` calls `/cheops.bench.Echo/Unary` with a {}-byte message on \
             one HTTP/2 connection (cleartext, prior knowledge) at a fixed rate for {} s, each \
             call checked (status 200, the message echoed, `grpc-status: 0` in the trailers), \
             to a gRPC origin (`cheops-load grpc-origin`, hyper's HTTP/2 server); nginx \
             forwards with `grpc_pass` over kept-alive upstream connections. Latency counts \
             from when each call was due (no coordinated omission); +: added over direct.\n\n\
             | path | p50 µs | p90 µs | p99 µs | max µs | +p50 | +p99 | proxy CPU µs per call |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
            unary["rate"], unary["message_bytes"], unary["seconds"]
        );
        for path in &self.grpc {
            let added = self.grpc_added(&path.name).filter(|_| path.name != DIRECT);
            let [p50, p90, p99, max] = path.latency;
            md += &format!(
                "| {} | {p50:.1} | {p90:.1} | {p99:.1} | {max:.1} | {} | {} | {} |\n",
                self.title(&path.name),
                optional(added.map(|a| a[0]), 1),
                optional(added.map(|a| a[2]), 1),
                optional(path.cpu_us_per_call, 1),
            );
        }
        md + &self.grpc_costs_markdown()
    }

    /// The instructions and system calls per call, counted as per HTTP/1.1 request.
    fn grpc_costs_markdown(&self) -> String {
        let Some(first) = self.grpc_costs.first() else {
            return String::new();
        };
        let [short, long] = first.requests;
        let nginx = self
            .grpc_costs
            .iter()
            .find(|c| c.name == COUNTED_NGINX)
            .map(|c| c.instructions);
        let mut md = format!(
            "\nCounted per call, as per HTTP/1.1 request below (callgrind and the \
             raw_syscalls tracepoint; {short} calls, then {long}, on one HTTP/2 connection, the \
             difference divided by the {} calls between them); cheops and nginx behind the same \
             nftables REDIRECT rule, and the gRPC origin counted alone for reference (one HTTP/2 \
             server; a proxy is an HTTP/2 server and a client):\n\n\
             | counted | instructions per call | system calls per call | instructions / nginx |\n\
             |---|---:|---:|---:|\n",
            long.saturating_sub(short)
        );
        for cost in &self.grpc_costs {
            md += &format!(
                "| {} | {:.0} | {:.2} | {} |\n",
                counted_title(&cost.name),
                cost.instructions,
                cost.syscalls,
                times(nginx.and_then(|n| ratio(cost.instructions, n))),
            );
        }
        md
    }
}

/// nginx's `grpc_pass` among the gRPC counts.
const COUNTED_NGINX: &str = "grpc-nginx-nat";

/// What each gRPC count (`cheops-bench --counted`) was of.
pub fn counted_title(name: &str) -> &str {
    match name {
        "grpc-cheops-nat" => "cheops, nftables REDIRECT",
        COUNTED_NGINX => "nginx grpc_pass, nftables REDIRECT",
        "grpc-origin" => "the gRPC origin alone (no proxy)",
        other => other,
    }
}
