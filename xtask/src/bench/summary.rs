//! Turns cheops-bench's raw results into what is reported: one row per scenario, the latency
//! each adds over direct, the ratios of cheops (eBPF) to the other paths, where the issue's
//! targets stand, and the connect() cost; printed as a terminal table, JSON and Markdown.
use anyhow::{bail, Context};
use serde_json::{json, Value};

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
}

/// One mesh of the cross-site measurement: creates and lists from S1 over all its sites.
pub struct Across {
    pub sites: u64,
    /// S1's measured round trip to the other sites, µs.
    pub round_trip_us: f64,
    /// p50 and p90, µs.
    pub create: [f64; 2],
    pub list: [f64; 2],
}

impl Across {
    fn from_raw(mesh: &Value) -> anyhow::Result<Across> {
        let pair = |key: &str| -> anyhow::Result<[f64; 2]> {
            Ok([
                number(mesh, &format!("/{key}/p50_us"))?,
                number(mesh, &format!("/{key}/p90_us"))?,
            ])
        };
        Ok(Across {
            sites: mesh["sites"].as_u64().context("a mesh without its size")?,
            round_trip_us: number(mesh, "/round_trip_us")?,
            create: pair("create")?,
            list: pair("list")?,
        })
    }

    /// A median in round trips.
    fn round_trips(&self, micros: f64) -> f64 {
        micros / self.round_trip_us
    }

    /// (sites, round trip, create p50, p90, in round trips, list p50, p90, in round trips),
    /// ms and ratios as text.
    fn cells(&self) -> [String; 8] {
        let ms = |us: f64| format!("{:.1}", us / 1000.0);
        [
            self.sites.to_string(),
            ms(self.round_trip_us),
            ms(self.create[0]),
            ms(self.create[1]),
            format!("{:.2}x", self.round_trips(self.create[0])),
            ms(self.list[0]),
            ms(self.list[1]),
            format!("{:.2}x", self.round_trips(self.list[0])),
        ]
    }
}

const ACROSS_HEADER: [&str; 8] = [
    "sites",
    "round trip (ms)",
    "create p50 (ms)",
    "create p90 (ms)",
    "create p50 / round trip",
    "list p50 (ms)",
    "list p90 (ms)",
    "list p50 / round trip",
];

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
        })
    }

    fn find(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// What `row` adds over direct at p50, p90, p99 and max.
    pub fn added(&self, row: &Row) -> [f64; 4] {
        let direct = self.find(DIRECT).expect("checked when built").latency;
        std::array::from_fn(|i| row.latency[i] - direct[i])
    }

    /// cheops (eBPF) against `other`: added p50, added p99, requests per CPU-second, CPU per
    /// request, memory. `None` where a ratio means nothing (a denominator not above zero).
    fn ratios(&self, other: &str) -> Option<[Option<f64>; 5]> {
        let (cheops, other) = (self.find(CHEOPS)?, self.find(other)?);
        let (a, b) = (self.added(cheops), self.added(other));
        let (cp, op) = (cheops.proxy.as_ref(), other.proxy.as_ref());
        Some([
            added_ratio(a[0], b[0]),
            added_ratio(a[2], b[2]),
            ratio(
                cp.and_then(|c| c.requests_per_cpu_second)?,
                op.and_then(|o| o.requests_per_cpu_second)?,
            ),
            ratio(cp?.cpu_us_per_request, op?.cpu_us_per_request),
            ratio(cp?.rss_mib, op?.rss_mib),
        ])
    }

    /// The targets: (target, measured, met).
    fn targets(&self) -> Vec<(String, String, &'static str)> {
        let peer_ratios: Vec<_> = PEERS.iter().filter_map(|p| self.ratios(p)).collect();
        let worst = |index: usize, pick: fn(f64, f64) -> f64| {
            peer_ratios
                .iter()
                .map(|r| r[index])
                .collect::<Option<Vec<f64>>>()
                .filter(|all| all.len() == PEERS.len())
                .and_then(|all| all.into_iter().reduce(pick))
        };
        let verdict = |met: Option<bool>| match met {
            Some(true) => "met",
            Some(false) => "not met",
            None => "n/a (noise: some path added nothing measurable)",
        };
        let mut targets = Vec::new();
        for (index, percentile) in [(0, "p50"), (1, "p99")] {
            let value = worst(index, f64::max);
            targets.push((
                format!("latency cheops adds at {percentile} <= 0.8x what nginx and HAProxy add"),
                times(value),
                verdict(value.map(|v| v <= 0.8)),
            ));
        }
        let value = worst(2, f64::min);
        targets.push((
            "requests per CPU-second >= 1.1x nginx's and HAProxy's".to_owned(),
            times(value),
            verdict(value.map(|v| v >= 1.1)),
        ));
        let memory = self
            .find(CHEOPS)
            .and_then(|c| c.proxy.as_ref())
            .map(|p| p.rss_mib);
        targets.push((
            "cheops resident memory < 20 MiB at 1,000 req/s".to_owned(),
            memory.map_or("n/a".to_owned(), |m| format!("{m:.1} MiB")),
            verdict(memory.map(|m| m < 20.0)),
        ));
        let sixteen = self.across.iter().find(|a| a.sites == 16);
        targets.push((
            "replicated create over 16 sites <= 1.2x one round trip".to_owned(),
            sixteen.map_or("not measured".to_owned(), |a| {
                times(Some(a.round_trips(a.create[0])))
            }),
            match sixteen {
                Some(a) => verdict(Some(a.round_trips(a.create[0]) <= 1.2)),
                None => "not measured (the quick run stops at 4 sites)",
            },
        ));
        targets
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

    pub fn terminal_table(&self) -> String {
        let mut text = format!(
            "{:<28} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>8} {:>9} {:>7} {:>7}\n",
            "latency µs (one core)",
            "p50",
            "p99",
            "max",
            "+p50",
            "+p99",
            "req/s",
            "req/CPU-s",
            "CPU µs",
            "RSS MiB"
        );
        for row in &self.rows {
            let added = self.added(row);
            let proxy = row.proxy.as_ref();
            text += &format!(
                "{:<28} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} | {:>8.0} {:>9} {:>7} {:>7}\n",
                row.title,
                row.latency[0],
                row.latency[2],
                row.latency[3],
                added[0],
                added[2],
                row.throughput,
                optional(proxy.and_then(|p| p.requests_per_cpu_second), 0),
                optional(proxy.map(|p| p.cpu_us_per_request), 1),
                optional(proxy.map(|p| p.rss_mib), 1),
            );
        }
        text += "(latency: everything on one core at 1,000 req/s; req/s: proxy on its own core; \
                 +: added over direct)\n\nconnect() µs                                                       p50      p99\n";
        for (what, p50, p99) in &self.connect {
            text += &format!("{what:<62} {p50:>8.1} {p99:>8.1}\n");
        }
        text += &format!("{}\n", self.hook_cost());
        if !self.across.is_empty() {
            text += "\nacross sites, from S1 (creates replicated at all sites, lists gathered from all)\n";
            for cells in std::iter::once(ACROSS_HEADER.map(str::to_owned))
                .chain(self.across.iter().map(Across::cells))
            {
                let columns = cells.iter().zip(ACROSS_HEADER);
                let line: Vec<String> = columns
                    .map(|(c, header)| format!("{c:>width$}", width = header.len()))
                    .collect();
                text += &format!("  {}\n", line.join("  "));
            }
        }
        text += "\ntargets (cheops eBPF against nginx and HAProxy, same run)\n";
        for (target, measured, status) in self.targets() {
            text += &format!("  {target:<72} {measured:>10}  {status}\n");
        }
        if let Some(busy) = &self.busy {
            text += &format!("\n{busy}\n");
        }
        if self.quick {
            text += "\nquick run: short durations, for checking the harness, not for comparing\n";
        }
        text
    }

    pub fn json(&self) -> anyhow::Result<String> {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let added = self.added(row);
                json!({
                    "name": row.name,
                    "title": row.title,
                    "latency_us_one_core": {"p50": row.latency[0], "p90": row.latency[1], "p99": row.latency[2], "max": row.latency[3]},
                    "added_over_direct_us": {"p50": added[0], "p90": added[1], "p99": added[2], "max": added[3]},
                    "throughput_per_second_proxy_own_core": row.throughput,
                    "proxy": row.proxy.as_ref().map(|p| json!({
                        "cpu_us_per_request": p.cpu_us_per_request,
                        "rss_mib": p.rss_mib,
                        "saturation_cpu_share": p.saturation_cpu_share,
                        "requests_per_cpu_second": p.requests_per_cpu_second,
                    })),
                })
            })
            .collect();
        let ratios: serde_json::Map<String, Value> = ["cheops-nat"]
            .iter()
            .chain(&PEERS)
            .filter_map(|other| {
                let r = self.ratios(other)?;
                Some((
                    format!("{CHEOPS}/{other}"),
                    json!({"added_p50": r[0], "added_p99": r[1], "requests_per_cpu_second": r[2],
                           "cpu_per_request": r[3], "memory": r[4]}),
                ))
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(target, measured, status)| json!({"target": target, "measured": measured, "status": status}))
            .collect();
        let connect: Vec<Value> = self
            .connect
            .iter()
            .map(|(what, p50, p99)| json!({"connect": what, "p50_us": p50, "p99_us": p99}))
            .collect();
        Ok(serde_json::to_string_pretty(&json!({
            "quick": self.quick,
            "scenarios": rows,
            "ratios": ratios,
            "targets": targets,
            "connect": connect,
            "across_sites": self.across.iter().map(|a| json!({
                "sites": a.sites,
                "round_trip_us": a.round_trip_us,
                "create_us": {"p50": a.create[0], "p90": a.create[1]},
                "create_p50_round_trips": a.round_trips(a.create[0]),
                "list_us": {"p50": a.list[0], "p90": a.list[1]},
                "list_p50_round_trips": a.round_trips(a.list[0]),
            })).collect::<Vec<_>>(),
        }))?)
    }

    pub fn markdown(&self, raw: &Value, command: &str, plot: &str) -> String {
        let plan = &raw["plan"];
        let machine = &raw["machine"];
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        let mut md = String::from("# Benchmarks: what interception costs\n\n");
        md += &format!(
            "Generated by `{command}` (as root, from the workspace); do not edit by hand, run it again.\n\n"
        );
        if self.quick {
            md += "> **Quick run**: short durations, to check the harness. Not for comparing: run \
                   `cargo xtask bench` on a quiet machine for the reference numbers.\n\n";
        }
        if let Some(busy) = &self.busy {
            md += &format!("> **Busy machine**: {busy}\n\n");
        }
        md += &format!(
            "## How\n\n\
             - Machine: {} ({} CPUs), Linux {}; {}; {}. Load average (1 min) {} before, {} after: \
             other work on the machine shows as noise.\n\
             - One network namespace. The origin is nginx serving a 1 KiB file at {}. The client \
             (`cheops-load`, tests crate: hyper, one keep-alive HTTP/1.1 connection) dials the \
             service address {}, and each scenario decides where that goes: straight \
             to the origin (direct), to cheops through the eBPF connect hook (client in the \
             workload cgroup), or to cheops, HAProxy or nginx through an nftables REDIRECT rule \
             (how sidecar meshes intercept).\n\
             - **Latency is measured with every process on one core** (CPU {}): {} requests/s, \
             open loop, for {} s after {} s of warm-up; each latency counts from when the \
             request was due, so a late answer also delays those queued behind it. On these \
             virtual machines a wake-up across cores costs more than a proxy does, which is why.\n\
             - **Throughput is measured with the proxy on its own core** (CPU {}), the client \
             ({} connections, closed loop, {} s) and the origin sharing the other. When the \
             proxy used less than all of its core, the client side was the limit, and \
             *requests per proxy CPU-second* is the per-core capacity to compare.\n\
             - CPU per request and memory: the proxy's utime+stime from /proc/PID/stat (10 ms \
             ticks) over the latency run, and its VmRSS at the end of it, at 1,000 requests/s.\n\
             - Same footing for all: no request logs (cheops with RUST_LOG=warn, nginx without \
             access log, HAProxy without log), one worker each, kept-alive connections to the \
             origin. HAProxy and nginx forward to a fixed backend; cheops also looks up which \
             service each connection dialled.\n\n",
            text(&machine["cpu_model"]),
            text(&machine["cpus"]),
            text(&machine["kernel"]),
            text(&machine["nginx"]),
            text(&machine["haproxy"]),
            text(&machine["load_average_before"]),
            text(&raw["load_average_after"]),
            text(&plan["origin"]),
            text(&plan["service"]),
            text(&plan["shared_cpu"]),
            text(&plan["rate"]),
            text(&plan["latency_seconds"]),
            text(&plan["warmup_seconds"]),
            text(&plan["proxy_cpu"]),
            text(&plan["saturation_connections"]),
            text(&plan["saturation_seconds"]),
        );
        let direct = self.find(DIRECT).expect("checked when built").latency;
        md += "## Latency at 1,000 requests/s, everything on one core (µs)\n\n\
               | scenario | p50 | p90 | p99 | max | added p50 | added p99 | p50 / direct | p99 / direct |\n\
               |---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for row in &self.rows {
            let added = self.added(row);
            md += &format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |\n",
                row.title,
                row.latency[0],
                row.latency[1],
                row.latency[2],
                row.latency[3],
                added[0],
                added[2],
                times(ratio(row.latency[0], direct[0])),
                times(ratio(row.latency[2], direct[2])),
            );
        }
        md += &format!("\n![latency distributions]({plot})\n\n");
        md += "## Throughput, the proxy on its own core; CPU and memory at 1,000 requests/s\n\n\
               | scenario | requests/s | proxy's share of its core | requests per proxy CPU-second | proxy CPU µs per request | proxy memory (MiB) |\n\
               |---|---:|---:|---:|---:|---:|\n";
        for row in &self.rows {
            let proxy = row.proxy.as_ref();
            md += &format!(
                "| {} | {:.0} | {} | {} | {} | {} |\n",
                row.title,
                row.throughput,
                proxy.map_or("-".to_owned(), |p| format!(
                    "{:.0}%",
                    p.saturation_cpu_share * 100.0
                )),
                optional(proxy.and_then(|p| p.requests_per_cpu_second), 0),
                optional(proxy.map(|p| p.cpu_us_per_request), 1),
                optional(proxy.map(|p| p.rss_mib), 1),
            );
        }
        md += "\n## cheops with eBPF, as a ratio of the others (same run)\n\n\
               Below 1 is better for latency, CPU and memory; above 1 is better for requests per CPU-second.\n\n\
               | against | added p50 | added p99 | requests per CPU-second | CPU per request | memory |\n\
               |---|---:|---:|---:|---:|---:|\n";
        for other in ["cheops-nat"].iter().chain(&PEERS) {
            if let (Some(r), Some(row)) = (self.ratios(other), self.find(other)) {
                md += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    row.title,
                    times(r[0]),
                    times(r[1]),
                    times(r[2]),
                    times(r[3]),
                    times(r[4])
                );
            }
        }
        if !self.across.is_empty() {
            let across = &raw["across_sites"];
            md += &format!(
                "\n## Across sites: replicated create and gathered list\n\n\
                 A mesh of N sites (network namespaces joined by a hub; cheops, json-server as the \
                 `catalog` service whose `/pods` are replicated resources). S1 reaches every other \
                 site, and every other site reaches S1, through a relay in the hub that adds {} ms \
                 to each round trip; the round trip below is the one S1's heartbeats measured. \
                 From S1's workload, curl times {} creates scoped over all N sites \
                 (`X-Scope: {{catalog: S1 & ... & SN}}`, S1 leading; every one answers 201 after \
                 all replicas) after {} warm-up creates, then {} lists of `/pods` gathered from \
                 all N. If the fan-out is parallel a create costs about one round trip whatever N.\n\n\
                 | {} |\n|{}\n",
                text(&across["emulated_round_trip_ms"]),
                text(&across["creates"]),
                text(&across["warmup_creates"]),
                text(&across["lists"]),
                ACROSS_HEADER.join(" | "),
                "---:|".repeat(ACROSS_HEADER.len()),
            );
            for a in &self.across {
                md += &format!("| {} |\n", a.cells().join(" | "));
            }
        }
        md += "\n## Targets (issue 6)\n\n| target | measured | status |\n|---|---:|---|\n";
        for (target, measured, status) in self.targets() {
            md += &format!("| {target} | {measured} | {status} |\n");
        }
        md += &format!(
            "\n## What the connect hook adds to connect() (µs, {} connect+close each)\n\n\
             | connect() | p50 | p99 |\n|---|---:|---:|\n",
            text(&plan["connects"])
        );
        for (what, p50, p99) in &self.connect {
            md += &format!("| {what} | {p50:.1} | {p99:.1} |\n");
        }
        md += &format!("\n{}\n", self.hook_cost());
        md += "\n## Not measured\n\n";
        for gap in raw["not_measured"].as_array().into_iter().flatten() {
            md += &format!("- {}: {}.\n", text(&gap["name"]), text(&gap["why"]));
        }
        md
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

    fn status(summary: &Summary, target: &str) -> &'static str {
        let targets = summary.targets();
        targets.iter().find(|t| t.0.contains(target)).unwrap().2
    }

    #[test]
    fn targets_compare_what_each_path_adds_over_direct() {
        let raw = results(&[
            ("direct", 100.0, None),
            (CHEOPS, 130.0, Some(60_000.0)),
            ("nginx-nat", 150.0, Some(50_000.0)),
            ("haproxy-nat", 140.0, Some(54_000.0)),
        ]);
        let summary = Summary::from_results(&raw).unwrap();
        // cheops adds 30 µs, HAProxy 40: 0.75x of the worse peer ratio, so met.
        assert_eq!(status(&summary, "at p50"), "met");
        // 60,000 against HAProxy's 54,000 is 1.11x.
        assert_eq!(status(&summary, "CPU-second"), "met");
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
