//! gRPC unary calls: `cheops-load grpc` calls at a fixed rate on one HTTP/2 connection, every
//! process on the shared core (as for HTTP/1 latency), through each path to a gRPC origin
//! (`cheops-load grpc-origin`, which echoes each message): direct, cheops with eBPF, and nginx
//! with `grpc_pass` behind an nftables REDIRECT rule. The latency each proxy adds is its
//! percentile minus direct's; its CPU time per call comes from /proc.
use serde_json::{json, Value};

use crate::{
    bodies::check_marks,
    procfs,
    servers::{self, Proxy, Server, GRPC_ORIGIN, GRPC_SERVICE},
    Stage,
};

/// The paths compared; nginx is configured for gRPC (`grpc_pass`).
pub const PATHS: [(&str, Option<Proxy>); 3] = [
    ("direct", None),
    ("cheops-ebpf", Some(Proxy::CheopsEbpf)),
    ("nginx-nat", Some(Proxy::Nginx)),
];

/// The method called, and the size of each message (request and answer).
pub const METHOD: &str = "/cheops.bench.Echo/Unary";
pub const MESSAGE_BYTES: usize = 128;

/// How hard and how long the calls run.
pub struct Plan {
    pub rate: u32,
    pub seconds: f64,
    pub warmup_seconds: f64,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        Plan {
            rate: 1000,
            seconds: if quick { 3.0 } else { 15.0 },
            warmup_seconds: 0.5,
        }
    }
}

/// The calls through every path, the gRPC origin started for them; a path that fails says
/// why in its entry and the others are still measured.
pub fn measure_all(stage: &Stage, plan: &Plan) -> anyhow::Result<Vec<Value>> {
    let _origin = start_origin(stage, &[])?;
    Ok(PATHS
        .into_iter()
        .map(|(name, proxy)| {
            eprintln!(
                "bench: gRPC unary calls at {} per second, {name}",
                plan.rate
            );
            measure(stage, name, proxy, plan)
                .unwrap_or_else(|e| json!({"name": name, "error": format!("{e:#}")}))
        })
        .collect())
}

/// The gRPC origin on the shared core, at its own address and at the service's (the direct
/// path), run by `under` when not empty (valgrind).
pub fn start_origin(stage: &Stage, under: &[String]) -> anyhow::Result<Server> {
    let args = [
        "grpc-origin",
        "--listen",
        GRPC_ORIGIN,
        "--listen",
        GRPC_SERVICE,
    ];
    procfs::on_cpu(stage.cores.shared, || {
        servers::load_program(
            &stage.netns,
            "gRPC origin",
            &stage.load_bin,
            &args,
            GRPC_ORIGIN,
            under,
        )
    })
}

fn measure(stage: &Stage, name: &str, proxy: Option<Proxy>, plan: &Plan) -> anyhow::Result<Value> {
    let server = match proxy {
        Some(Proxy::Nginx) => Some(procfs::on_cpu(stage.cores.shared, || {
            servers::nginx_grpc(&stage.netns, &[])
        })?),
        Some(proxy) => Some(procfs::on_cpu(stage.cores.shared, || {
            servers::proxy(&stage.netns, proxy, &stage.workload, &[])
        })?),
        None => None,
    };
    let _rule = stage.redirect_service(proxy, GRPC_SERVICE);
    let target = [
        "--address".to_owned(),
        GRPC_SERVICE.to_owned(),
        "--path".to_owned(),
        METHOD.to_owned(),
        "--body-bytes".to_owned(),
        MESSAGE_BYTES.to_string(),
        "--seconds".to_owned(),
        plan.seconds.to_string(),
        "--warmup".to_owned(),
        plan.warmup_seconds.to_string(),
    ];
    let rate = plan.rate.to_string();
    let (latency, used) =
        stage.load_measuring(server.as_ref(), true, &["grpc", "--rate", &rate], &target)?;
    check_marks(&latency, proxy)?;
    // Warm-up calls count in the CPU time as well: divide by all calls made.
    let calls = f64::from(plan.rate) * (plan.seconds + plan.warmup_seconds);
    Ok(json!({
        "name": name,
        "latency": latency,
        "proxy": used.map(|used| json!({
            "cpu_us_per_call": used.cpu_seconds * 1e6 / calls,
            "rss_kib": used.rss_kib,
        })),
    }))
}
