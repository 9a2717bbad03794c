//! The node-level benchmark's measurements (run by `cargo xtask bench`, which reports them).
//! One network namespace holds an origin (nginx, 1 KiB answers) and, one at a time, each
//! forwarding path compared: none (direct), cheops behind eBPF, and cheops, HAProxy and nginx
//! behind an nftables REDIRECT rule. For each, `cheops-load` measures latency at a fixed rate
//! with every process on one core, then throughput at saturation with the proxy moved to a
//! core of its own; /proc gives the proxy's CPU time and memory; then every path again in short
//! interleaved rounds (`latency`). Then a 300 MiB download
//! and a 300 MiB upload through each path (`bodies`), 10,000 idle keep-alive connections
//! through each proxy (`idle`: memory per connection), gRPC unary calls at a fixed rate
//! (`grpc`), and what each proxy spends per request, counted rather than timed (`cost`:
//! instructions, system calls). Last, a connect() loop in and out of the
//! workload cgroup prices the connect hook. Then, across sites (`across`): replicated
//! creates and gathered lists over meshes of 2 to 16 sites with an emulated WAN round trip.
//! Writes raw results as one JSON file.
mod across;
mod bodies;
mod callgrind;
mod cost;
mod cpu_profile;
mod grpc;
mod idle;
mod latency;
mod perf;
mod procfs;
mod servers;

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context};
use cheops_tests::{cgroup::Cgroup, nat::NatRedirect, netns::Netns, require_root, unique_name};
use clap::Parser;
use serde_json::{json, Value};
use servers::{
    Proxy, Server, BODY_BYTES, BODY_PATH, GRPC_SERVICE, ORIGIN, PROXY_PORT, SERVICE, UPLOAD_SERVICE,
};

#[derive(Parser)]
#[command(name = "cheops-bench")]
struct Cli {
    /// A reduced run (short durations) to check the harness: well under 90 seconds.
    #[arg(long)]
    quick: bool,
    /// Only one part, to compare builds quickly: `costs` (instructions and system calls per
    /// request), `bodies` (the large download), `upload` (the large upload), `idle` (idle
    /// keep-alive connections), `grpc` (gRPC unary calls) or `across` (replicated creates and
    /// lists over several sites).
    #[arg(long)]
    only: Option<Part>,
    /// The meshes' site counts across sites (2,4,8,16 by default; 2,4 with --quick).
    #[arg(long, value_delimiter = ',')]
    sites: Vec<usize>,
    /// Only these costs (`cheops-nat`, `haproxy-nat`, `nginx-nat`; gRPC unary calls:
    /// `grpc-cheops-nat`, `grpc-nginx-nat`, `grpc-origin`; all by default).
    #[arg(long, value_delimiter = ',')]
    counted: Vec<String>,
    /// Where to write the results (JSON).
    #[arg(long)]
    out: PathBuf,
}

/// A part of the benchmark run on its own.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Part {
    Costs,
    Bodies,
    Upload,
    Idle,
    Grpc,
    Across,
}

/// How long and how hard each measurement runs.
struct Plan {
    rate: u32,
    latency_seconds: f64,
    /// Short runs of every path after the long ones, interleaved (`latency`).
    latency_rounds: usize,
    round_seconds: f64,
    saturation_seconds: f64,
    saturation_connections: usize,
    connects: u32,
    warmup_seconds: f64,
    idle_connections: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        Plan {
            rate: 1000,
            latency_seconds: if quick { 3.0 } else { 20.0 },
            latency_rounds: if quick { 1 } else { 4 },
            round_seconds: if quick { 2.0 } else { 5.0 },
            saturation_seconds: if quick { 2.0 } else { 10.0 },
            saturation_connections: 16,
            // Four cases, and cheops's relays for the redirected one, all within TIME_WAIT's
            // 60 s: 10,000 each stays under the namespace's 55,000 ephemeral ports.
            connects: if quick { 2000 } else { 10000 },
            warmup_seconds: 0.5,
            idle_connections: if quick { 2000 } else { 10_000 },
        }
    }
}

/// One forwarding path: the proxy in it (none for direct) and how connections reach it.
struct Scenario {
    name: &'static str,
    title: &'static str,
    proxy: Option<Proxy>,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "direct",
        title: "direct (no proxy)",
        proxy: None,
    },
    Scenario {
        name: "cheops-ebpf",
        title: "cheops, eBPF redirect",
        proxy: Some(Proxy::CheopsEbpf),
    },
    Scenario {
        name: "cheops-nat",
        title: "cheops, nftables REDIRECT",
        proxy: Some(Proxy::CheopsNat),
    },
    Scenario {
        name: "haproxy-nat",
        title: "HAProxy, nftables REDIRECT",
        proxy: Some(Proxy::Haproxy),
    },
    Scenario {
        name: "nginx-nat",
        title: "nginx, nftables REDIRECT",
        proxy: Some(Proxy::Nginx),
    },
];

/// The cores used: `shared` runs the client and the origin (and the proxy, for latency);
/// `own` is the proxy's own core for throughput.
#[derive(Clone, Copy)]
struct Cores {
    shared: usize,
    own: usize,
}

/// What every scenario shares; fields drop in order, the namespace last.
struct Stage {
    _origin: Server,
    workload: Cgroup,
    netns: Netns,
    load_bin: PathBuf,
    cores: Cores,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    require_root();
    // Proxies log no request in this benchmark; the cheops agents inherit this.
    std::env::set_var("RUST_LOG", "warn");
    survive_ctrl_c();
    let across_plan = across::Plan::new(cli.quick, &cli.sites);
    if cli.only == Some(Part::Across) {
        let part = json!({"across_sites": across_sites(&across_plan)?});
        std::fs::write(&cli.out, serde_json::to_string_pretty(&part)?)?;
        return Ok(());
    }
    let open_files = idle::raise_open_files_limit()?;
    let plan = Plan::new(cli.quick);
    let machine_before = procfs::machine()?;
    let stage = Stage::new()?;
    let cores = stage.cores;
    let mut scenarios = Vec::new();
    let runs = |part: Part| cli.only.is_none_or(|only| only == part);
    for scenario in SCENARIOS.iter().filter(|_| cli.only.is_none()) {
        ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted (Ctrl-C)");
        eprintln!("bench: {}", scenario.title);
        scenarios.push(
            stage
                .run(scenario, &plan)
                .with_context(|| format!("scenario {}", scenario.name))?,
        );
    }
    if cli.only.is_none() {
        let rounds = stage.latency_rounds(&plan)?;
        for (scenario, rounds) in scenarios.iter_mut().zip(rounds) {
            scenario["latency_rounds"] = json!(rounds);
        }
    }
    let mut large_bodies = Vec::new();
    for (name, proxy) in bodies::PATHS.into_iter().filter(|_| runs(Part::Bodies)) {
        ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted (Ctrl-C)");
        eprintln!(
            "bench: a {} MiB download, {name}",
            bodies::LARGE_BYTES >> 20
        );
        // A failure here is reported, not fatal: the rest of the run still says something.
        large_bodies.push(
            bodies::measure(&stage, name, proxy, bodies::Direction::Download)
                .unwrap_or_else(|e| json!({"name": name, "error": format!("{e:#}")})),
        );
    }
    let uploads = match runs(Part::Upload) {
        true => bodies::uploads(&stage)?,
        false => Vec::new(),
    };
    let idle = match runs(Part::Idle) {
        true => {
            let connections = idle::connections_within(plan.idle_connections, open_files);
            idle::measure_all(&stage, connections)
        }
        false => Vec::new(),
    };
    let grpc_plan = grpc::Plan::new(cli.quick);
    let grpc = match runs(Part::Grpc) {
        true => grpc::measure_all(&stage, &grpc_plan)?,
        false => Vec::new(),
    };
    let (costs, grpc_costs) = match runs(Part::Costs) {
        true => cost::measure_selected(&stage, cli.quick, &cli.counted, &cli.out)?,
        false => Default::default(),
    };
    if cli.only.is_some() {
        let part = json!({
            "costs": costs,
            "grpc_costs": grpc_costs,
            "large_bodies": large_bodies,
            "large_uploads": uploads,
            "idle_connections": idle,
            "grpc_unary": grpc,
        });
        std::fs::write(&cli.out, serde_json::to_string_pretty(&part)?)?;
        return Ok(());
    }
    eprintln!("bench: connect() with and without the connect hook");
    let connect = stage.connect_cost(&plan).context("measuring connect()")?;
    drop(stage);
    let across_sites = across_sites(&across_plan)?;
    let results = json!({
        "quick": cli.quick,
        "finished_unix": SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        "machine": machine_before,
        "load_average_after": procfs::load_average()?,
        "plan": {
            "rate": plan.rate,
            "latency_seconds": plan.latency_seconds,
            "latency_rounds": plan.latency_rounds,
            "round_seconds": plan.round_seconds,
            "saturation_seconds": plan.saturation_seconds,
            "saturation_connections": plan.saturation_connections,
            "connects": plan.connects,
            "warmup_seconds": plan.warmup_seconds,
            "body_bytes": BODY_BYTES,
            "origin": ORIGIN,
            "service": SERVICE,
            "shared_cpu": cores.shared,
            "proxy_cpu": cores.own,
        },
        "scenarios": scenarios,
        "connect": connect,
        "costs": costs,
        "grpc_costs": grpc_costs,
        "large_bodies": large_bodies,
        "large_uploads": uploads,
        "idle_connections": idle,
        "grpc_unary": {
            "rate": grpc_plan.rate,
            "seconds": grpc_plan.seconds,
            "message_bytes": grpc::MESSAGE_BYTES,
            "paths": grpc,
        },
        "across_sites": across_sites,
        "not_measured": [
            {
                "name": "sockmap acceleration",
                "why": "tried and not kept (no gain in cheops's CPU, and answers not yet read \
                        are lost when the map goes with cheops: see above); no sk_msg program \
                        between the application and cheops",
            },
        ],
    });
    std::fs::write(&cli.out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", cli.out.display()))?;
    Ok(())
}

/// Replicated creates and lists over meshes of each of `plan`'s site counts.
fn across_sites(plan: &across::Plan) -> anyhow::Result<Value> {
    let mut meshes = Vec::new();
    for &sites in &plan.site_counts {
        ensure!(sites >= 2, "--sites {sites}: a mesh needs at least 2 sites");
        ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted (Ctrl-C)");
        eprintln!("bench: replicated creates and lists over {sites} sites");
        meshes.push(across::measure(sites, plan).with_context(|| format!("across {sites} sites"))?);
    }
    Ok(json!({
        "emulated_round_trip_ms": across::ROUND_TRIP.as_millis(),
        "warmup_creates": across::WARMUP,
        "creates": plan.creates,
        "lists": plan.lists,
        "meshes": meshes,
    }))
}

impl Stage {
    fn new() -> anyhow::Result<Stage> {
        let cpus = procfs::allowed_cpus()?;
        let [shared, own, ..] = cpus[..] else {
            bail!("the benchmark needs two CPUs (a shared one and one for the proxy); this process may use {cpus:?}");
        };
        let netns = Netns::create(&unique_name("bench"));
        for service in [SERVICE, UPLOAD_SERVICE, GRPC_SERVICE] {
            let service: std::net::SocketAddr = service.parse()?;
            netns.add_loopback_address(&format!("{}/32", service.ip()));
        }
        // The connect() loops open tens of thousands of connections: let TIME_WAIT ports be
        // reused rather than run out. None is given cheops's ports (admin, proxy, inbound) or
        // the gRPC origin's, which a connection left in TIME_WAIT would keep from binding.
        let sysctl = netns
            .command("sysctl")
            .args(["-q", "-w", "net.ipv4.ip_local_port_range=10000 65000"])
            .args(["-w", "net.ipv4.ip_local_reserved_ports=15000-15010,50051"])
            .args(["-w", "net.ipv4.tcp_tw_reuse=1"])
            .status()?;
        ensure!(
            sysctl.success(),
            "setting the namespace's port range failed"
        );
        let workload = Cgroup::create(&unique_name("bench"));
        let origin = procfs::on_cpu(shared, || servers::origin(&netns))?;
        let load_bin = std::env::current_exe()?
            .parent()
            .context("the benchmark binary's directory")?
            .join("cheops-load");
        ensure!(
            load_bin.exists(),
            "{} is missing: build the tests crate's binaries",
            load_bin.display()
        );
        Ok(Stage {
            _origin: origin,
            workload,
            netns,
            load_bin,
            cores: Cores { shared, own },
        })
    }

    fn run(&self, scenario: &Scenario, plan: &Plan) -> anyhow::Result<Value> {
        let Cores { own, .. } = self.cores;
        let serving = self.serve(scenario)?;
        let server = serving.server.as_ref();
        let (latency, at_rate) = self.at_rate(server, plan, plan.latency_seconds)?;
        if let Some(server) = server {
            procfs::move_to_cpu(server.pid, own)?;
        }
        let connections = plan.saturation_connections.to_string();
        let (saturation, saturated) = self.load_measuring(
            server,
            true,
            &["saturate", "--connections", &connections],
            &target(plan, plan.saturation_seconds),
        )?;

        let proxy = match (at_rate, saturated) {
            (Some(at_rate), Some(saturated)) => {
                // Warm-up requests count in the CPU time as well: divide by all requests sent.
                let latency_requests =
                    f64::from(plan.rate) * (plan.latency_seconds + plan.warmup_seconds);
                let saturation_wall = plan.saturation_seconds + plan.warmup_seconds;
                let saturation_requests =
                    saturation["per_second"].as_f64().unwrap_or(0.0) * saturation_wall;
                json!({
                    "cpu_us_per_request": at_rate.cpu_seconds * 1e6 / latency_requests,
                    "rss_kib": at_rate.rss_kib,
                    "saturation_cpu_share": saturated.cpu_seconds / saturation_wall,
                    "requests_per_cpu_second": (saturated.cpu_seconds > 0.0)
                        .then(|| saturation_requests / saturated.cpu_seconds),
                })
            }
            _ => Value::Null,
        };
        Ok(json!({
            "name": scenario.name,
            "title": scenario.title,
            "latency": latency,
            "saturation": saturation,
            "proxy": proxy,
        }))
    }

    /// `scenario`'s proxy started (on the shared core) and its connections steered to it, the
    /// path checked. The client runs in the workload cgroup in every scenario, so that all are
    /// scheduled alike; the eBPF programs are attached to it only while cheops with eBPF runs.
    fn serve(&self, scenario: &Scenario) -> anyhow::Result<Serving> {
        let server = match scenario.proxy {
            Some(proxy) => Some(procfs::on_cpu(self.cores.shared, || {
                servers::proxy(&self.netns, proxy, &self.workload, &[])
            })?),
            None => None,
        };
        let serving = Serving {
            _rule: self.redirect(scenario.proxy),
            server,
        };
        self.check_path(scenario.proxy)?;
        Ok(serving)
    }

    /// Requests at the plan's fixed rate for `seconds` (latency), and what `server` used.
    fn at_rate(
        &self,
        server: Option<&Server>,
        plan: &Plan,
        seconds: f64,
    ) -> anyhow::Result<(Value, Option<procfs::Usage>)> {
        let rate = plan.rate.to_string();
        self.load_measuring(
            server,
            true,
            &["rate", "--rate", &rate],
            &target(plan, seconds),
        )
    }

    /// The nftables REDIRECT rule that sends the service's connections to `proxy`, for the
    /// proxies reached that way.
    fn redirect(&self, proxy: Option<Proxy>) -> Option<NatRedirect> {
        self.redirect_service(proxy, SERVICE)
    }

    /// The same for the connections to `service`.
    fn redirect_service(&self, proxy: Option<Proxy>, service: &str) -> Option<NatRedirect> {
        matches!(
            proxy,
            Some(Proxy::CheopsNat | Proxy::Haproxy | Proxy::Nginx)
        )
        .then(|| {
            NatRedirect::add(
                &self.netns,
                service.parse().expect("an address"),
                PROXY_PORT,
            )
        })
    }

    /// One request by curl, from where the load generator runs (the workload cgroup), must go
    /// through `proxy` (its response header shows it), or through no proxy at all for the
    /// direct path; and the eBPF programs must be attached only for cheops with eBPF (both
    /// cheops paths show the same header). Otherwise the numbers would be of another path.
    fn check_path(&self, proxy: Option<Proxy>) -> anyhow::Result<()> {
        let mut curl = self.netns.command("curl");
        curl.args(["-sS", "-i", "-m", "5"])
            .arg(format!("http://{SERVICE}{BODY_PATH}"));
        self.workload.enter(&mut curl);
        let output = curl.output().context("running curl")?;
        let answer = String::from_utf8_lossy(&output.stdout).to_lowercase();
        ensure!(
            answer.starts_with("http/1.1 200"),
            "a request to {SERVICE} failed: {answer}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let through = match proxy {
            Some(proxy) => answer.contains(proxy.marker()),
            None => !answer.contains("x-cheops-site") && !answer.contains("x-forwarded-by"),
        };
        ensure!(
            through,
            "a request to {SERVICE} did not take the path measured ({proxy:?}): {answer}"
        );
        let attached = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(self.workload.path())
            .output()
            .context("running bpftool (Debian package bpftool)")?;
        let attached = String::from_utf8_lossy(&attached.stdout);
        ensure!(
            attached.contains("inet4_connect") == (proxy == Some(Proxy::CheopsEbpf)),
            "eBPF programs attached to the workload cgroup do not match the path measured \
             ({proxy:?}): {attached}"
        );
        Ok(())
    }

    /// `load`, also giving what `server` used meanwhile: its CPU time during the run, and its
    /// resident memory at the end.
    fn load_measuring(
        &self,
        server: Option<&Server>,
        meshed: bool,
        mode: &[&str],
        target: &[String],
    ) -> anyhow::Result<(Value, Option<procfs::Usage>)> {
        let usage = || server.map(|s| procfs::usage(s.pid)).transpose();
        let before = usage()?;
        let report = self.load(meshed, mode, target)?;
        let during = usage()?.zip(before).map(|(after, before)| procfs::Usage {
            cpu_seconds: after.cpu_seconds - before.cpu_seconds,
            rss_kib: after.rss_kib,
        });
        Ok((report, during))
    }

    /// Runs `cheops-load MODE TARGET` on the shared core (in the workload cgroup when
    /// `meshed`), and returns its report, which must count no error.
    fn load(&self, meshed: bool, mode: &[&str], target: &[String]) -> anyhow::Result<Value> {
        let mut command = self
            .netns
            .command(self.load_bin.to_str().context("UTF-8 path")?);
        command.args(mode).args(target);
        if meshed {
            self.workload.enter(&mut command);
        }
        let output = procfs::on_cpu(self.cores.shared, || command.output())?
            .with_context(|| format!("running {}", self.load_bin.display()))?;
        ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted (Ctrl-C)");
        ensure!(
            output.status.success(),
            "cheops-load {} failed ({}): {}",
            mode.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value =
            serde_json::from_slice(&output.stdout).context("cheops-load's report is not JSON")?;
        let errors = report["errors"].as_u64().unwrap_or(0);
        ensure!(
            errors == 0,
            "cheops-load {}: {errors} requests failed",
            mode.join(" ")
        );
        Ok(report)
    }

    /// connect()+close() from inside the workload cgroup (where the hook runs) and from
    /// outside, to an address the hook lets pass and to one it redirects to cheops.
    fn connect_cost(&self, plan: &Plan) -> anyhow::Result<Value> {
        // cheops on its own core, so that serving the connections does not slow the loop.
        let _cheops = procfs::on_cpu(self.cores.own, || {
            servers::proxy(&self.netns, Proxy::CheopsEbpf, &self.workload, &[])
        })?;
        let count = plan.connects.to_string();
        let proxy = format!("127.0.0.1:{PROXY_PORT}");
        let mut results = serde_json::Map::new();
        for (name, meshed, address) in [
            ("passed_outside", false, ORIGIN),
            ("passed_inside", true, ORIGIN),
            ("proxy_outside", false, proxy.as_str()),
            ("redirected_inside", true, SERVICE),
        ] {
            let report = self.load(
                meshed,
                &["connect", "--address", address, "--count", &count],
                &[],
            )?;
            results.insert(name.to_owned(), report);
        }
        Ok(Value::Object(results))
    }
}

/// A scenario's proxy while it serves; the rule goes before the proxy.
struct Serving {
    _rule: Option<NatRedirect>,
    server: Option<Server>,
}

/// cheops-load's target: the service's 1 KiB answer, for `seconds` after the warm-up.
fn target(plan: &Plan, seconds: f64) -> [String; 10] {
    [
        "--address".to_owned(),
        SERVICE.to_owned(),
        "--path".to_owned(),
        BODY_PATH.to_owned(),
        "--body-bytes".to_owned(),
        BODY_BYTES.to_string(),
        "--seconds".to_owned(),
        seconds.to_string(),
        "--warmup".to_owned(),
        plan.warmup_seconds.to_string(),
    ]
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C reaches the whole foreground process group: the servers and the load generator stop
/// by themselves, and this process must live on to remove the namespace, cgroup and rules
/// (the guards' Drop), so it only notes the interruption. A handler, not SIG_IGN, because the
/// children would inherit an ignored signal and could not be stopped.
fn survive_ctrl_c() {
    extern "C" fn note(_signal: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, note as *const () as libc::sighandler_t) };
}
