//! gRPC between services, as root: three sites each run cheops and the same gRPC service
//! (grpcio, tests/clients/grpc_service.py), whose answers name their site. A gRPC client at
//! site A (grpcio too) calls it in a workload cgroup: each call, each stream, goes where its
//! own `x-scope` metadata says, with HTTP/2 end to end and trailers intact.
use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use cheops_tests::{
    agent::meshed_service,
    grpc::{client_args, echo_service, GRPC_PYTHON},
    mesh::{Mesh, MeshOptions, CATALOG},
    node::resident_kib,
    process::Process,
    sites::Topology,
};
use serde_json::Value;

/// What the client dials: the echo service's address, intercepted by cheops.
const ECHO: &str = "198.18.1.30:80";
/// Where each site's instance of the echo service listens.
const ECHO_LOCAL: &str = "127.0.0.1:50051";

/// Three sites, each with its echo service running.
fn three_sites() -> (Mesh, Vec<Process>) {
    let options = MeshOptions {
        services: vec![meshed_service(
            "echo",
            ECHO.parse().unwrap(),
            ECHO_LOCAL.parse().unwrap(),
        )],
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(
        Topology::create(&["A", "B", "C"]),
        &HashMap::new(),
        &options,
    );
    let services = mesh
        .topology
        .sites
        .iter()
        .map(|site| echo_service(&site.netns, ECHO_LOCAL.parse().unwrap(), &site.name))
        .collect();
    (mesh, services)
}

/// Runs the gRPC client with `args` at site A, in its workload cgroup: what it printed.
fn client(mesh: &Mesh, args: &[&str]) -> Value {
    let args = client_args(args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = mesh.run_at("A", true, GRPC_PYTHON, &args);
    assert!(
        output.status.success(),
        "the gRPC client failed: {}\nA's log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        mesh.site("A").agent.log_text()
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}

/// Every answer of the four kinds of call came from `site`, the trailers too.
fn assert_served_by(kinds: &Value, site: &str) {
    let of = |what: &str| format!("{site}:{what}");
    assert_eq!(kinds["unary"], of("hello"), "{kinds}");
    assert_eq!(
        kinds["server_streaming"],
        serde_json::json!([of("0"), of("1"), of("2")]),
        "{kinds}"
    );
    assert_eq!(
        kinds["server_streaming_trailers"]["x-served-by"], site,
        "{kinds}"
    );
    assert_eq!(kinds["client_streaming"], of("1024"), "{kinds}");
    assert_eq!(
        kinds["client_streaming_trailers"]["x-served-by"], site,
        "{kinds}"
    );
    assert_eq!(
        kinds["bidi_streaming"],
        serde_json::json!([of("one"), of("two")]),
        "{kinds}"
    );
    // A call that fails after one message: its status, message and trailers arrive intact.
    let failed = &kinds["failed"];
    assert_eq!(failed["received"], serde_json::json!([of("0")]), "{kinds}");
    assert_eq!(failed["code"], 10, "ABORTED expected: {kinds}");
    assert_eq!(
        failed["details"],
        format!("stopped after one message at {site}"),
        "{kinds}"
    );
    assert_eq!(failed["trailers"]["x-served-by"], site, "{kinds}");
}

#[test]
fn grpc_calls_of_every_kind_and_each_stream_go_where_their_scope_says() {
    let (mesh, _services) = three_sites();
    assert_served_by(&client(&mesh, &["kinds", ECHO]), "A");
    assert_served_by(&client(&mesh, &["kinds", ECHO, "{echo: B}"]), "B");

    let before = mesh.site("A").agent.status().proxy;
    let streams = client(&mesh, &["streams", ECHO, "{echo: B}", "{echo: C}"]);
    let after = mesh.site("A").agent.status().proxy;
    let all_from =
        |site: &str| serde_json::json!([0, 1, 2].iter().map(|_| site).collect::<Vec<_>>());
    let sites_of = |answers: &Value| {
        serde_json::json!(answers
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().split(':').next().unwrap())
            .collect::<Vec<_>>())
    };
    assert_eq!(sites_of(&streams["first"]), all_from("B"), "{streams}");
    assert_eq!(sites_of(&streams["second"]), all_from("C"), "{streams}");
    assert_eq!(
        after.connections - before.connections,
        1,
        "the two streams share one connection"
    );
    assert_eq!(after.tcp_relays, 0, "gRPC was relayed as opaque TCP");

    // The per-call log line and the metrics name the method and the status it ended with.
    let log = mesh.site("A").agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("service=echo")
            && l.contains("grpc_method=/cheops.test.Echo/Count")
            && l.contains("grpc_status=10")
            && l.contains("served_by=B")),
        "{log}"
    );
    let metrics = mesh.site("A").agent.admin("/metrics").unwrap();
    assert!(
        metrics.contains(
            "cheops_grpc_call_duration_seconds_count{service=\"echo\",method=\"/cheops.test.Echo/Unary\",collaboration=\"sharing\",site=\"B\",grpc_status=\"0\"}"
        ),
        "{metrics}"
    );
}

#[test]
fn a_large_client_stream_crosses_sites_without_growing_cheops() {
    let (mesh, _services) = three_sites();
    // Warm up: connections, pools and buffers exist before the baseline.
    client(&mesh, &["upload", ECHO, "1", "{echo: B}"]);
    let pids = [
        mesh.site("A").agent.process.pid(),
        mesh.site("B").agent.process.pid(),
    ];
    let baseline = pids.map(resident_kib);
    let peaks: [AtomicU64; 2] = Default::default();
    let done = AtomicBool::new(false);
    let upload = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                for (pid, peak) in pids.iter().zip(&peaks) {
                    peak.fetch_max(resident_kib(*pid), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let upload = client(&mesh, &["upload", ECHO, "50", "{echo: B}"]);
        done.store(true, Ordering::Relaxed);
        upload
    });
    assert_eq!(upload["answer"], "B:52428800", "{upload}");
    for ((site, before), peak) in ["A", "B"].iter().zip(baseline).zip(&peaks) {
        let peak = peak.load(Ordering::Relaxed);
        println!("cheops at {site}: RSS {before} KiB before the 50 MiB upload, {peak} KiB at most during it");
        assert!(
            peak < before + 16 * 1024,
            "cheops at {site} grew from {before} KiB to {peak} KiB during a 50 MiB upload"
        );
    }
}

#[test]
fn grpc_errors_are_grpc_statuses_naming_the_culprit_and_otherwise_falls_back() {
    let (mesh, _services) = three_sites();
    let unknown = client(&mesh, &["unary", ECHO, "{echo: Lyon}"]);
    assert_eq!(unknown["code"], 3, "INVALID_ARGUMENT expected: {unknown}");
    assert!(
        unknown["details"].as_str().unwrap().contains("Lyon"),
        "{unknown}"
    );
    // An HTTP/1.1 client may upgrade to HTTP/2 (h2c): still scoped, the instance still HTTP/1.1.
    let url = format!("http://{CATALOG}/products");
    let upgraded = mesh.run_at(
        "A",
        true,
        "curl",
        &[
            "-sS",
            "-i",
            "-m",
            "10",
            "--http2",
            "-H",
            "x-scope: {catalog: B}",
            &url,
        ],
    );
    let upgraded = String::from_utf8_lossy(&upgraded.stdout);
    assert!(
        upgraded.contains("101 Switching Protocols") && upgraded.contains("HTTP/2 200"),
        "{upgraded}"
    );
    assert!(upgraded.contains("\"site\": \"B\""), "{upgraded}");

    let otherwise = ["unary", ECHO, "{echo: B ; C}"];
    assert_eq!(client(&mesh, &otherwise)["answer"], "B:hello");
    // B's service answers UNAVAILABLE before any message: C serves; alone, B's status is the
    // answer, unchanged.
    let draining = client(&mesh, &["unary", ECHO, "{echo: B ; C}", "unavailable at B"]);
    assert_eq!(draining["answer"], "C:unavailable at B", "{draining}");
    let draining = client(&mesh, &["unary", ECHO, "{echo: B}", "unavailable at B"]);
    assert_eq!(draining["code"], 14, "{draining}");
    assert_eq!(draining["details"], "B is draining", "{draining}");
    mesh.topology.cut("B");
    mesh.wait_for_peers("A", 1);
    assert_eq!(client(&mesh, &otherwise)["answer"], "C:hello");
    let cut_off = client(&mesh, &["unary", ECHO, "{echo: B}"]);
    assert_eq!(cut_off["code"], 14, "UNAVAILABLE expected: {cut_off}");
    assert!(
        cut_off["details"].as_str().unwrap().contains("site B"),
        "{cut_off}"
    );
    // A streaming call along the chain streams at once, and goes on to C too.
    let kinds = client(&mesh, &["kinds", ECHO, "{echo: B ; C}"]);
    assert_served_by(&kinds, "C");
}
