//! Turns cheops-bench's raw results into what is reported: one row per scenario, the latency
//! each adds over direct, the ratios of cheops (eBPF) to the other paths, where the issue's
//! targets stand, and the connect() cost; printed as a terminal table, JSON and Markdown.
mod across;
mod bodies;
mod costs;
mod cpu_profile;
mod grpc;
mod idle;
mod markdown;
mod targets;
mod text;

use anyhow::{bail, Context};
use serde_json::Value;

use across::Across;
use bodies::Large;
use costs::Cost;
use grpc::Grpc;
use idle::Idle;

/// The scenario every other one is compared against, and the product path.
const DIRECT: &str = "direct";
const CHEOPS: &str = "cheops-ebpf";
/// The proxies people already run, which cheops's targets are set against.
const PEERS: [&str; 2] = ["nginx-nat", "haproxy-nat"];

pub struct Row {
    pub name: String,
    pub title: String,
    /// p50, p90, p99, max at the fixed rate, µs.
    pub latency: [f64; 4],
    /// (percentile, µs) points of the latency distribution.
    pub distribution: Vec<[f64; 2]>,
    /// p50 and p99 (µs) in each of the short interleaved rounds after the long runs.
    pub rounds: Vec<[f64; 2]>,
    pub throughput: f64,
    pub proxy: Option<ProxyCost>,
}

pub struct ProxyCost {
    pub cpu_us_per_request: f64,
    pub rss_mib: f64,
    /// The share of its core the proxy used at saturation (1.0: it was the limit).
    pub saturation_cpu_share: f64,
    pub requests_per_cpu_second: Option<f64>,
}

pub struct Summary {
    pub quick: bool,
    /// Why the numbers are noisy, when the machine was busy before the run.
    pub busy: Option<String>,
    pub rows: Vec<Row>,
    /// (what, p50 µs, p99 µs) of connect().
    pub connect: Vec<(&'static str, f64, f64)>,
    /// Replicated creates and gathered lists, one per mesh size.
    pub across: Vec<Across>,
    /// Instructions and system calls per request, by proxy.
    pub costs: Vec<Cost>,
    /// The same per gRPC unary call: by proxy, and of the gRPC origin alone.
    pub grpc_costs: Vec<Cost>,
    /// The large download, by path.
    pub bodies: Vec<Large>,
    /// The large upload, by path.
    pub uploads: Vec<Large>,
    /// Idle keep-alive connections, by proxy.
    pub idle: Vec<Idle>,
    /// gRPC unary calls, by path.
    pub grpc: Vec<Grpc>,
    /// Medians of the scope language's parse + resolve and of its serde_json baseline (ns).
    pub scope_language: Option<[f64; 2]>,
}

impl Summary {
    pub fn from_results(raw: &Value) -> anyhow::Result<Summary> {
        let scenarios = raw["scenarios"]
            .as_array()
            .context("the results have no scenarios")?;
        let rows = scenarios
            .iter()
            .map(row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !rows.iter().any(|r| r.name == DIRECT) {
            bail!("the results have no `{DIRECT}` scenario to compare against");
        }
        let connect_case = |key: &str| -> anyhow::Result<(f64, f64)> {
            let report = &raw["connect"][key];
            Ok((
                number(report, "/latency_us/p50")?,
                number(report, "/latency_us/p99")?,
            ))
        };
        let mut connect = Vec::new();
        for (key, what) in [
            (
                "passed_outside",
                "to the origin, outside the workload (no hook)",
            ),
            (
                "passed_inside",
                "to the origin, inside the workload (hook lets it pass)",
            ),
            (
                "proxy_outside",
                "to cheops's port, outside the workload (no hook)",
            ),
            (
                "redirected_inside",
                "to the service, inside the workload (hook redirects to cheops)",
            ),
        ] {
            let (p50, p99) = connect_case(key)?;
            connect.push((what, p50, p99));
        }
        let across = raw["across_sites"]["meshes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Across::from_raw)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Summary {
            quick: raw["quick"].as_bool().unwrap_or(false),
            busy: busy(&raw["machine"]),
            rows,
            connect,
            across,
            costs: costs::from_raw(raw, "costs")?,
            grpc_costs: costs::from_raw(raw, "grpc_costs")?,
            bodies: bodies::from_raw(raw, "large_bodies")?,
            uploads: bodies::from_raw(raw, "large_uploads")?,
            idle: idle::from_raw(raw)?,
            grpc: grpc::from_raw(raw)?,
            scope_language: raw["scope_language"]["parse_and_resolve_ns"]
                .as_f64()
                .zip(raw["scope_language"]["baseline_ns"].as_f64())
                .map(|(ns, baseline)| [ns, baseline]),
        })
    }

    fn find(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// The title of scenario `name`, or its name when it has no row.
    pub fn title<'a>(&'a self, name: &'a str) -> &'a str {
        self.find(name).map_or(name, |row| &row.title)
    }

    /// What `row` adds over direct at p50, p90, p99 and max.
    pub fn added(&self, row: &Row) -> [f64; 4] {
        let direct = self.find(DIRECT).expect("checked when built").latency;
        std::array::from_fn(|i| row.latency[i] - direct[i])
    }

    /// What `row` adds over direct at p50 and p99, compared within each interleaved round
    /// (direct ran in the same round): the median over the rounds. Without rounds (results of
    /// an older run), what its long run added.
    pub fn added_in_rounds(&self, row: &Row) -> [f64; 2] {
        let direct = &self.find(DIRECT).expect("checked when built").rounds;
        if row.rounds.is_empty() || row.rounds.len() != direct.len() {
            let added = self.added(row);
            return [added[0], added[2]];
        }
        std::array::from_fn(|i| median(row.rounds.iter().zip(direct).map(|(r, d)| r[i] - d[i])))
    }

    /// cheops (eBPF) against `other`: added p50, added p99 (over the interleaved rounds),
    /// requests per CPU-second, CPU per request, memory. `None` where a ratio means nothing (a
    /// denominator not above zero).
    fn ratios(&self, other: &str) -> Option<[Option<f64>; 5]> {
        let (cheops, other) = (self.find(CHEOPS)?, self.find(other)?);
        let (a, b) = (self.added_in_rounds(cheops), self.added_in_rounds(other));
        let (cp, op) = (cheops.proxy.as_ref(), other.proxy.as_ref());
        Some([
            added_ratio(a[0], b[0]),
            added_ratio(a[1], b[1]),
            ratio(
                cp.and_then(|c| c.requests_per_cpu_second)?,
                op.and_then(|o| o.requests_per_cpu_second)?,
            ),
            ratio(cp?.cpu_us_per_request, op?.cpu_us_per_request),
            ratio(cp?.rss_mib, op?.rss_mib),
        ])
    }

    /// The connect hook's cost at p50: inside minus outside the workload, for a connection it
    /// lets pass and for one it redirects (against dialling cheops's port directly).
    fn hook_cost(&self) -> String {
        let p50 = |index: usize| self.connect[index].1;
        format!(
            "connect hook at p50: {:+.1} µs on a connection it lets pass, {:+.1} µs on one it \
             redirects",
            p50(1) - p50(0),
            p50(3) - p50(2)
        )
    }
}

/// Other work before the run (a 1-minute load average of half the CPUs or more) competes with
/// the benchmark for the cores it pins; say so wherever the numbers are shown.
fn busy(machine: &Value) -> Option<String> {
    let load = machine["load_average_before"].as_f64()?;
    let cpus = machine["cpus"].as_f64()?;
    (load >= cpus / 2.0).then(|| {
        format!(
            "the load average was {load:.2} on {cpus} CPUs before the run: other work competed \
             for the cores, so these numbers are noisy, the tails (p99, max) most of all"
        )
    })
}

fn row(scenario: &Value) -> anyhow::Result<Row> {
    let name = scenario["name"]
        .as_str()
        .context("a scenario without a name")?;
    let context = || format!("scenario {name}");
    let latency = &scenario["latency"];
    let proxy = &scenario["proxy"];
    Ok(Row {
        name: name.to_owned(),
        title: scenario["title"].as_str().unwrap_or(name).to_owned(),
        latency: [
            number(latency, "/latency_us/p50").with_context(context)?,
            number(latency, "/latency_us/p90").with_context(context)?,
            number(latency, "/latency_us/p99").with_context(context)?,
            number(latency, "/latency_us/max").with_context(context)?,
        ],
        distribution: serde_json::from_value(latency["distribution"].clone())
            .with_context(context)?,
        rounds: match &scenario["latency_rounds"] {
            Value::Null => Vec::new(),
            rounds => serde_json::from_value(rounds.clone()).with_context(context)?,
        },
        throughput: number(&scenario["saturation"], "/per_second").with_context(context)?,
        proxy: if proxy.is_null() {
            None
        } else {
            Some(ProxyCost {
                cpu_us_per_request: number(proxy, "/cpu_us_per_request").with_context(context)?,
                rss_mib: number(proxy, "/rss_kib").with_context(context)? / 1024.0,
                saturation_cpu_share: number(proxy, "/saturation_cpu_share")
                    .with_context(context)?,
                requests_per_cpu_second: proxy["requests_per_cpu_second"].as_f64(),
            })
        },
    })
}

fn number(value: &Value, pointer: &str) -> anyhow::Result<f64> {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .with_context(|| format!("the results have no number at {pointer}"))
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() % 2 {
        0 => (values[middle - 1] + values[middle]) / 2.0,
        _ => values[middle],
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// A ratio of two added latencies; noise can make one zero or negative (faster than direct),
/// and then no ratio means anything.
fn added_ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0).then(|| ratio(a, b)).flatten()
}

fn times(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.2}x"))
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Raw results as cheops-bench writes them, with p50 = p90 = p99 = max = `micros`.
    fn results(scenarios: &[(&str, f64, Option<f64>)]) -> Value {
        let report = |micros: f64| {
            json!({"latency_us": {"p50": micros, "p90": micros, "p99": micros, "max": micros},
                   "distribution": [[50.0, micros]], "per_second": 1000.0})
        };
        let connect: serde_json::Map<String, Value> = [
            "passed_outside",
            "passed_inside",
            "proxy_outside",
            "redirected_inside",
        ]
        .iter()
        .map(|key| (key.to_string(), report(10.0)))
        .collect();
        json!({
            "quick": true,
            "scenarios": scenarios.iter().map(|(name, micros, per_cpu_second)| json!({
                "name": name,
                "latency": report(*micros),
                "saturation": report(*micros),
                "proxy": per_cpu_second.map(|r| json!({"cpu_us_per_request": 50.0,
                    "rss_kib": 8192, "saturation_cpu_share": 0.5, "requests_per_cpu_second": r})),
            })).collect::<Vec<_>>(),
            "connect": connect,
        })
    }

    fn status(summary: &Summary, target: &str) -> String {
        let targets = summary.targets();
        let found = targets.into_iter().find(|t| t.target.contains(target));
        found.unwrap().status
    }

    #[test]
    fn targets_compare_what_each_path_adds_over_direct() {
        let raw = results(&[
            ("direct", 100.0, None),
            (CHEOPS, 130.0, Some(70_000.0)),
            ("nginx-nat", 150.0, Some(50_000.0)),
            ("haproxy-nat", 140.0, Some(54_000.0)),
        ]);
        let summary = Summary::from_results(&raw).unwrap();
        // cheops adds 30 µs, HAProxy 40: 0.75x of the worse peer ratio, so met.
        assert_eq!(status(&summary, "at p50"), "met");
        // 70,000 against HAProxy's 54,000 is 1.30x.
        assert_eq!(status(&summary, "CPU-second"), "met");
        // The same CPU per request as the others: 1.0x.
        assert_eq!(status(&summary, "CPU per request"), "not met");
        assert_eq!(status(&summary, "memory"), "met");
        assert!(status(&summary, "16 sites").starts_with("not measured"));
    }

    #[test]
    fn the_create_over_16_sites_is_counted_in_round_trips() {
        let mut raw = results(&[("direct", 100.0, None)]);
        let mesh = |sites: u64, create: f64| {
            json!({"sites": sites, "round_trip_us": 20_000.0,
                   "create": {"p50_us": create, "p90_us": create},
                   "list": {"p50_us": 21_000.0, "p90_us": 22_000.0}})
        };
        raw["across_sites"] = json!({"meshes": [mesh(2, 21_000.0), mesh(16, 23_000.0)]});
        let summary = Summary::from_results(&raw).unwrap();
        // 23 ms over a 20 ms round trip: 1.15x.
        assert_eq!(status(&summary, "16 sites"), "met");
        raw["across_sites"] = json!({"meshes": [mesh(16, 25_000.0)]});
        let summary = Summary::from_results(&raw).unwrap();
        assert_eq!(status(&summary, "16 sites"), "not met");
    }

    #[test]
    fn uploads_idle_connections_and_grpc_calls_have_targets_against_nginx() {
        let mut raw = results(&[("direct", 100.0, None)]);
        let upload = |name: &str, mib: f64| {
            json!({"name": name, "mib_per_second": mib, "rss_before_kib": 8192,
                   "rss_peak_kib": 9216})
        };
        raw["large_uploads"] = json!([
            upload("direct", 1000.0),
            upload(CHEOPS, 900.0),
            upload("nginx-nat", 500.0),
        ]);
        let idle = |name: &str, kib: f64| {
            json!({"name": name, "connections": 10000, "rss_before_kib": 8192,
                   "rss_idle_kib": 8192.0 + kib * 10000.0, "kib_per_connection": kib,
                   "files_per_connection": 1.0})
        };
        raw["idle_connections"] = json!([idle(CHEOPS, 3.0), idle("nginx-nat", 2.5)]);
        let call = |name: &str, micros: f64, cpu: Option<f64>| {
            json!({"name": name, "latency": {"latency_us": {"p50": micros, "p90": micros,
                   "p99": micros, "max": micros}, "distribution": [[50.0, micros]]},
                   "proxy": cpu.map(|cpu| json!({"cpu_us_per_call": cpu}))})
        };
        raw["grpc_unary"] = json!({"paths": [
            call("direct", 100.0, None),
            call(CHEOPS, 120.0, Some(20.0)),
            call("nginx-nat", 150.0, Some(40.0)),
        ]});
        let counted = |instructions: f64| {
            json!({"instructions_per_request": instructions, "syscalls_per_request": 4.0,
                   "requests": [200, 1000]})
        };
        raw["costs"] = json!({
            "cheops-nat": {"instructions_per_request": 14_000.0, "syscalls_per_request": 6.5,
                "requests": [500, 2500], "cpu_profile": {"samples": 1000, "frequency": 4999,
                "requests": 10_000, "kernel_share": 0.8, "switch_in_share": 0.5,
                "top": [[0.5, "kernel", "finish_task_switch"]]}},
        });
        raw["grpc_costs"] = json!({
            "grpc-cheops-nat": counted(60_000.0),
            "grpc-nginx-nat": counted(40_000.0),
        });
        let summary = Summary::from_results(&raw).unwrap();
        // 900 against 1000 and 500 MiB/s: 0.9x direct, but only 1.8x nginx.
        assert_eq!(
            status(&summary, "upload through cheops >= 0.8x direct"),
            "met"
        );
        assert_eq!(
            status(&summary, "upload through cheops >= 2x nginx"),
            "not met"
        );
        assert_eq!(status(&summary, "during the upload"), "met");
        assert_eq!(status(&summary, "memory per connection"), "not met");
        // cheops adds 20 µs, nginx 50: 0.4x; half nginx's CPU per call.
        assert_eq!(
            status(&summary, "gRPC unary latency cheops adds at p50"),
            "met"
        );
        assert_eq!(status(&summary, "gRPC unary proxy CPU"), "met");
        let md = summary.markdown(&raw, "cargo xtask bench", "plot.svg");
        // Markdown reads an indented line as code: the source's line breaks must not show,
        // at a line's start or within it.
        let indented = md
            .lines()
            .find(|line| line.starts_with("  ") || line.contains("     "));
        assert_eq!(indented, None, "{md}");
        for section in [
            "## A 300 MiB upload",
            "## 10000 idle keep-alive connections",
            "## gRPC unary calls",
        ] {
            assert!(md.contains(section), "{section} in {md}");
        }
        // Its KiB per idle connection, and its gRPC latency, added latency and CPU per call.
        assert!(
            md.contains("| cheops-ebpf | 8.0 | 37.3 | 3.0 | 1.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| cheops-ebpf | 120.0 | 120.0 | 120.0 | 120.0 | 20.0 | 20.0 | 20.0 |"),
            "{md}"
        );
        // Its instructions per gRPC call, against nginx's grpc_pass.
        assert!(
            md.contains("| cheops, nftables REDIRECT | 60000 | 4.00 | 1.50x |"),
            "{md}"
        );
        // perf's samples: 1,000 at 4,999 a second over 10,000 requests, 80% in the kernel.
        assert!(
            md.contains("| cheops-nat | 1000 | 20.0 | 80% | 50% | 20% |"),
            "{md}"
        );
        assert!(
            md.contains("| 50.0% | kernel | `finish_task_switch` |"),
            "{md}"
        );
        let svg = crate::bench::plot::latency_distributions(&summary);
        assert!(svg.contains("gRPC, cheops-ebpf"), "{svg}");
    }

    #[test]
    fn added_latency_is_compared_with_direct_within_each_round() {
        let mut raw = results(&[
            ("direct", 100.0, None),
            (CHEOPS, 90.0, Some(1.0)),
            ("nginx-nat", 150.0, Some(1.0)),
            ("haproxy-nat", 140.0, Some(1.0)),
        ]);
        // The long runs say cheops added nothing (noise); the rounds, where every path met the
        // same noise (the second round's), that it adds 30 µs, HAProxy 40 and nginx 50.
        let rounds = [
            json!([[100, 200], [300, 900], [100, 200]]),
            json!([[130, 230], [330, 930], [125, 500]]),
            json!([[150, 250], [350, 950], [150, 250]]),
            json!([[140, 240], [340, 940], [140, 240]]),
        ];
        for (scenario, rounds) in raw["scenarios"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .zip(rounds)
        {
            scenario["latency_rounds"] = rounds;
        }
        let summary = Summary::from_results(&raw).unwrap();
        assert_eq!(
            summary.added_in_rounds(summary.find(CHEOPS).unwrap()),
            [30.0, 30.0]
        );
        assert_eq!(status(&summary, "cheops adds at p50"), "met");
        assert_eq!(status(&summary, "cheops adds at p99"), "met");
        let md = summary.markdown(&raw, "cargo xtask bench", "plot.svg");
        assert!(
            md.contains("| cheops-ebpf | 30, 30, 25 | 30 | 30, 30, 300 | 30 |"),
            "{md}"
        );
    }

    #[test]
    fn no_ratio_is_claimed_when_noise_makes_an_added_latency_negative() {
        let raw = results(&[
            ("direct", 100.0, None),
            (CHEOPS, 90.0, Some(1.0)),
            ("nginx-nat", 150.0, Some(1.0)),
            ("haproxy-nat", 140.0, Some(1.0)),
        ]);
        let summary = Summary::from_results(&raw).unwrap();
        assert!(status(&summary, "at p50").starts_with("n/a"));
        assert_eq!(status(&summary, "CPU-second"), "not met");
    }
}
