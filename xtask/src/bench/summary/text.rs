//! The summary as a table on the terminal and as JSON (target/bench/summary.json).
use serde_json::{json, Value};

use super::{
    across::{Across, ACROSS_HEADER},
    optional,
    targets::Target,
    Cost, Summary, CHEOPS, PEERS,
};

impl Summary {
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
        for (what, bodies) in [("download", &self.bodies), ("upload", &self.uploads)] {
            for large in bodies {
                text += &format!(
                    "300 MiB {what}, {:<28} {:>8.0} MiB/s\n",
                    self.title(&large.name),
                    large.mib_per_second
                );
            }
        }
        text += &self.idle_text();
        text += &self.grpc_text();
        if !self.costs.is_empty() {
            text += "\ncounted per request (the machine's load does not move these)\n";
            for cost in &self.costs {
                text += &cost.text_line(self.title(&cost.name));
            }
        }
        if !self.grpc_costs.is_empty() {
            text += "\ncounted per gRPC unary call\n";
            for cost in &self.grpc_costs {
                text += &cost.text_line(super::grpc::counted_title(&cost.name));
            }
        }
        text += "\ntargets (cheops eBPF against nginx and HAProxy, same run)\n";
        for Target {
            target,
            measured,
            status,
        } in self.targets()
        {
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
                let in_rounds = self.added_in_rounds(row);
                json!({
                    "name": row.name,
                    "title": row.title,
                    "latency_us_one_core": {"p50": row.latency[0], "p90": row.latency[1], "p99": row.latency[2], "max": row.latency[3]},
                    "added_over_direct_us": {"p50": added[0], "p90": added[1], "p99": added[2], "max": added[3]},
                    "added_over_direct_in_rounds_us": {"p50": in_rounds[0], "p99": in_rounds[1]},
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
            .map(|t| json!({"target": t.target, "measured": t.measured, "status": t.status}))
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
            "large_download": large_json(&self.bodies),
            "large_upload": large_json(&self.uploads),
            "idle_connections": self.idle.iter().map(|i| json!({
                "proxy": i.name,
                "connections": i.connections,
                "proxy_rss_kib_before_and_idle": i.rss_kib,
                "kib_per_connection": i.kib_per_connection,
                "open_files_per_connection": i.files_per_connection,
            })).collect::<Vec<_>>(),
            "grpc_unary": self.grpc.iter().map(|g| {
                let added = self.grpc_added(&g.name);
                json!({
                    "path": g.name,
                    "latency_us": {"p50": g.latency[0], "p90": g.latency[1], "p99": g.latency[2], "max": g.latency[3]},
                    "added_over_direct_us": added.map(|a| json!({"p50": a[0], "p99": a[2]})),
                    "proxy_cpu_us_per_call": g.cpu_us_per_call,
                })
            }).collect::<Vec<_>>(),
            "costs_per_request": self.costs.iter().map(Cost::json).collect::<Vec<_>>(),
            "costs_per_grpc_call": self.grpc_costs.iter().map(Cost::json).collect::<Vec<_>>(),
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
}

fn large_json(bodies: &[super::Large]) -> Vec<Value> {
    bodies
        .iter()
        .map(|l| {
            json!({
                "path": l.name,
                "mib_per_second": l.mib_per_second,
                "proxy_rss_kib_before_and_peak": l.rss_kib,
            })
        })
        .collect()
}
