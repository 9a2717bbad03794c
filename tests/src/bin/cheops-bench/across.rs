//! Across sites: a mesh of N sites (cheops, json-server as the `catalog` service, whose
//! `/pods` are replicated resources) in which S1 reaches every other site, and every other
//! site reaches S1, through a WAN relay adding `ROUND_TRIP`. From S1's workload, curl times
//! creates replicated at all N sites (S1 leads them) and lists gathered from all N: the
//! fan-out should cost about one round trip, not one per site.
use std::{collections::HashMap, time::Duration};

use anyhow::{ensure, Context};
use cheops_tests::{
    mesh::{pod_rule, Answer, Mesh, MeshOptions, CATALOG, PEER_PORT},
    sites::{Relay, Topology},
};
use interceptor::{
    config::{PeerApiSettings, ReplicationSettings},
    peer::ROUND_TRIP_SAMPLES,
};
use serde_json::{json, Value};

/// The emulated round trip between S1 and each other site.
pub const ROUND_TRIP: Duration = Duration::from_millis(20);
/// Creates sent before timing: the first connections to each peer are set up then.
pub const WARMUP: usize = 2;
/// Heartbeats answered after the timed requests before S1's round trips are read: more than
/// half of those its median is taken over, so that the median is a quiet heartbeat's, not the
/// first one's (which paid for the TLS set-up) nor one slowed by the creates.
const QUIET_HEARTBEATS: usize = ROUND_TRIP_SAMPLES / 2 + 1;
/// The first relay's port in the hub; each other site uses two (to it, and back to S1).
const FIRST_RELAY_PORT: u16 = 16000;

/// How many sites, and how many requests of each kind are timed.
pub struct Plan {
    pub site_counts: Vec<usize>,
    pub creates: usize,
    pub lists: usize,
}

impl Plan {
    /// `sites`: the site counts to measure; empty for the default ones.
    pub fn new(quick: bool, sites: &[usize]) -> Plan {
        let default: &[usize] = if quick { &[2, 4] } else { &[2, 4, 8, 16] };
        Plan {
            site_counts: if sites.is_empty() { default } else { sites }.to_vec(),
            creates: 20,
            lists: 10,
        }
    }
}

/// One mesh of `sites` sites, measured then torn down.
pub fn measure(sites: usize, plan: &Plan) -> anyhow::Result<Value> {
    let names: Vec<String> = (1..=sites).map(|i| format!("S{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let topology = Topology::create(&names);
    let mut relays: Vec<Relay> = Vec::new();
    let mut paths = HashMap::new();
    for (i, &site) in names.iter().enumerate().skip(1) {
        let port = FIRST_RELAY_PORT + 2 * i as u16;
        for (from, to, port) in [("S1", site, port), (site, "S1", port + 1)] {
            let relay = topology.relay(port, to, PEER_PORT, ROUND_TRIP);
            paths.insert((from, to), relay.address);
            relays.push(relay);
        }
    }
    let options = MeshOptions {
        catalog_resources: vec![pod_rule()],
        replication: ReplicationSettings {
            replica_timeout: Duration::from_secs(5),
            ..ReplicationSettings::default()
        },
        catalog_data: names
            .iter()
            .map(|&site| (site.to_owned(), json!({"pods": []})))
            .collect(),
        request_timeout: Duration::from_secs(10),
        // Heartbeats as cheops's defaults have them, not the tests' fast ones (every 200 ms):
        // at 16 sites those would be 1,200 a second on the sites' 2 cores.
        adjust: |config| {
            let defaults = PeerApiSettings::default();
            config.peer_api.heartbeat_interval = defaults.heartbeat_interval;
            config.peer_api.heartbeat_timeout = defaults.heartbeat_timeout;
        },
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(topology, &paths, &options);
    let scope = format!("X-Scope: {{catalog: {}}}", names.join(" & "));
    for i in 0..WARMUP {
        let answer = Answer::from(curl(&mesh, &create(&scope, i, &["-i"])));
        let replicas = answer.header("x-cheops-replicas").unwrap_or_default();
        ensure!(
            answer.status == 201 && replicas.matches("=ok").count() == sites,
            "a create over {sites} sites was not replicated at all of them: {}",
            answer.raw
        );
    }
    let timed = ["-o", "/dev/null", "-w", "%{http_code} %{time_total}"];
    let creates = (0..plan.creates)
        .map(|i| time(&mesh, &create(&scope, WARMUP + i, &timed), 201))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let list = request(&scope, "GET", &timed, None);
    let lists = (0..plan.lists)
        .map(|_| time(&mesh, &list, 200))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The round trip is read last, once S1 has had quiet heartbeats enough (and half an
    // interval more, for the last one's answer).
    let interval = PeerApiSettings::default().heartbeat_interval;
    std::thread::sleep(interval * QUIET_HEARTBEATS as u32 + interval / 2);
    let round_trips: Vec<f64> = mesh.peers_up("S1").values().map(|&us| us as f64).collect();
    ensure!(
        round_trips
            .iter()
            .all(|&us| us >= 0.9 * ROUND_TRIP.as_micros() as f64),
        "S1's measured round trips are not the emulated {ROUND_TRIP:?}: {round_trips:?} µs"
    );
    let round_trip_us = median(round_trips);
    drop(relays);
    drop(mesh);
    Ok(json!({
        "sites": sites,
        "round_trip_us": round_trip_us,
        "create": stats(creates, round_trip_us),
        "list": stats(lists, round_trip_us),
    }))
}

/// curl's arguments for `method` on /pods with the scope header, `extra` options and `body`.
fn request(scope: &str, method: &str, extra: &[&str], body: Option<Value>) -> Vec<String> {
    let mut args: Vec<String> = ["-sS", "-m", "30", "-X", method, "-H", scope]
        .iter()
        .chain(extra)
        .map(|&a| a.to_owned())
        .collect();
    if let Some(body) = body {
        args.extend(["-H", "Content-Type: application/json", "--data"].map(str::to_owned));
        args.push(body.to_string());
    }
    args.push(format!("http://{CATALOG}/pods"));
    args
}

/// curl's arguments to create pod `index`, with `extra` options.
fn create(scope: &str, index: usize, extra: &[&str]) -> Vec<String> {
    request(
        scope,
        "POST",
        extra,
        Some(json!({"name": format!("pod {index}")})),
    )
}

/// curl at S1's workload with `args`.
fn curl(mesh: &Mesh, args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mesh.run_at("S1", true, "curl", &args)
}

/// Runs curl at S1 with `args` (which write "STATUS SECONDS"), expecting `status`: the
/// request's duration in µs, as curl measured it.
fn time(mesh: &Mesh, args: &[String], status: u16) -> anyhow::Result<f64> {
    let output = curl(mesh, args);
    let text = String::from_utf8_lossy(&output.stdout);
    let (code, seconds) = text.split_once(' ').context("curl wrote no timing")?;
    ensure!(
        code == status.to_string(),
        "expected {status}, got {code}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(seconds.trim().parse::<f64>()? * 1e6)
}

/// Median and p90 of `samples` (µs), and the median in round trips.
fn stats(mut samples: Vec<f64>, round_trip_us: f64) -> Value {
    samples.sort_by(f64::total_cmp);
    let p90 = samples[(samples.len() * 9).div_ceil(10) - 1];
    let p50 = median(samples);
    json!({"p50_us": p50, "p90_us": p90, "round_trips": p50 / round_trip_us})
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
