//! The Cheops demo: three sites on this machine (Paris, Nantes, Rennes), each a network
//! namespace running the same unmodified applications (json-server as `catalog`, nginx as
//! `front`, which calls the catalog) and cheops. It walks through what sites can do together,
//! showing each request, its scope and the site that served it, then removes everything it
//! made, also when interrupted with Ctrl-C. With `--openstack`, Keystone and Glance join in
//! (`openstack.rs`).
mod openstack;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use interceptor::config::ReplicationSettings;
use serde_json::json;

use cheops_tests::{
    cheops_bin,
    mesh::{pod_rule, Answer, Mesh, MeshOptions, CATALOG, FRONT},
    openstack as openstack_sites,
    process::wait_until,
    sites::Topology,
};

const SITES: [&str; 3] = ["Paris", "Nantes", "Rennes"];

/// One step of the walk-through.
struct Step {
    title: &'static str,
    why: &'static str,
    run: fn(&Mesh),
}

const STEPS: &[Step] = &[
    Step {
        title: "No scope: every call stays at the site where it arrived",
        why: "A client at Paris asks nginx (front) for products; nginx calls the catalog.",
        run: |mesh| show(mesh, "Paris", FRONT, "/products", &[]),
    },
    Step {
        title: "Sharing: {catalog: Nantes}",
        why: "The same unmodified nginx at Paris; cheops sends its catalog call to Nantes.",
        run: |mesh| {
            show(
                mesh,
                "Paris",
                FRONT,
                "/products",
                &["X-Scope: {catalog: Nantes}"],
            )
        },
    },
    Step {
        title: "The scope in W3C baggage, as OpenTelemetry services forward it",
        why: "baggage: scope={catalog: Rennes}, percent-encoded.",
        run: |mesh| {
            show(
                mesh,
                "Paris",
                FRONT,
                "/products",
                &["baggage: scope=%7Bcatalog%3A%20Rennes%7D"],
            )
        },
    },
    Step {
        title: "The scope on an auth token (OpenStack-style), stripped before nginx sees it",
        why: "X-Auth-Token: s3cret!SCOPE!{catalog: Nantes}",
        run: |mesh| {
            show(
                mesh,
                "Paris",
                FRONT,
                "/products",
                &["X-Auth-Token: s3cret!SCOPE!{catalog: Nantes}"],
            )
        },
    },
    Step {
        title: "Otherwise: {catalog: Rennes ; Nantes}, with Rennes cut off",
        why: "Rennes is partitioned (its link is down): the call falls back to Nantes.",
        run: |mesh| {
            mesh.topology.cut("Rennes");
            show(
                mesh,
                "Paris",
                FRONT,
                "/products",
                &["X-Scope: {catalog: Rennes ; Nantes}"],
            );
            mesh.topology.heal("Rennes");
            println!("   (Rennes's link is healed)");
        },
    },
    Step {
        title: "A partition: Paris cut from every other site",
        why: "Requests with no scope need nothing remote: Paris keeps serving them.",
        run: |mesh| {
            mesh.topology.cut("Paris");
            show(mesh, "Paris", FRONT, "/products", &[]);
            show(
                mesh,
                "Paris",
                CATALOG,
                "/products/1",
                &["X-Scope: {catalog: Nantes}"],
            );
            mesh.topology.heal("Paris");
            mesh.wait_for_peers("Paris", SITES.len() - 1);
            println!("   (Paris's links are healed; it sees its peers again)");
            show(
                mesh,
                "Paris",
                CATALOG,
                "/products/1",
                &["X-Scope: {catalog: Nantes}"],
            );
        },
    },
    Step {
        title: "Replication: {catalog: Paris & Nantes}",
        why: "A pod created at Paris is created at both sites under one meta-ID; each json-server gives it its own local ID.",
        run: |mesh| {
            let created = send(mesh, "Paris", "POST", CATALOG, "/pods", &["X-Scope: {catalog: Paris & Nantes}"], Some(r#"{"name": "purple"}"#));
            let Some(meta_id) = created.header("x-cheops-meta-id") else {
                return;
            };
            println!("   Nantes reads its own replica, by the meta-ID, with no scope:");
            show(mesh, "Nantes", CATALOG, &format!("/pods/{meta_id}"), &[]);
            println!("   $ cheops replicas      (at Paris)");
            let replicas = mesh.run_at("Paris", false, &cheops_bin().display().to_string(), &["replicas"]);
            for line in String::from_utf8_lossy(&replicas.stdout).lines() {
                println!("     {line}");
            }
        },
    },
    Step {
        title: "Updates go through the leader's log; a partitioned replica catches up",
        why: "A pod replicated at all three sites; Rennes is cut off while Nantes updates it (no scope needed).",
        run: |mesh| {
            let created = send(mesh, "Paris", "POST", CATALOG, "/pods", &["X-Scope: {catalog: Paris & Nantes & Rennes}"], Some(r#"{"name": "violet", "size": 1}"#));
            let Some(meta_id) = created.header("x-cheops-meta-id").map(str::to_owned) else {
                return;
            };
            let pod = format!("/pods/{meta_id}");
            mesh.topology.cut("Rennes");
            println!("   (Rennes is cut off)");
            send(mesh, "Nantes", "PATCH", CATALOG, &pod, &[], Some(r#"{"size": 2}"#));
            mesh.topology.heal("Rennes");
            println!("   (Rennes's link is healed: Paris, the leader, replays what Rennes missed)");
            wait_until(Duration::from_secs(15), || {
                let args = ["-s", "-m", "5", &format!("http://{CATALOG}{pod}")];
                String::from_utf8_lossy(&mesh.run_at("Rennes", true, "curl", &args).stdout).contains("\"size\": 2")
            });
            show(mesh, "Rennes", CATALOG, &pod, &[]);
        },
    },
    Step {
        title: "Cross: {catalog: Paris % Rennes}",
        why: "One collection spread over two sites: a pod lives at the prime site (the first, Paris); lists at either site show every pod once.",
        run: |mesh| {
            send(mesh, "Rennes", "POST", CATALOG, "/pods", &["X-Scope: {catalog: Paris % Rennes}"], Some(r#"{"name": "teal"}"#));
            show(mesh, "Rennes", CATALOG, "/pods", &["X-Scope: {catalog: Paris % Rennes}"]);
        },
    },
    Step {
        title: "A bad scope is refused with a message that points at the culprit",
        why: "X-Scope: {catalog: (Nantes & Rennes}",
        run: |mesh| {
            show(
                mesh,
                "Paris",
                CATALOG,
                "/products",
                &["X-Scope: {catalog: (Nantes & Rennes}"],
            )
        },
    },
];

fn main() {
    let with_openstack = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--openstack") => true,
        Some(other) => {
            eprintln!("cheops-demo: unknown argument {other:?} (the one option is --openstack)");
            std::process::exit(2);
        }
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .expect("installing the Ctrl-C handler");

    println!(
        "Cheops demo: three sites on this machine ({})\n",
        SITES.join(", ")
    );
    let started = Instant::now();
    println!("[1/3] creating the sites: network namespaces joined by a bridge, 198.18.0.0/24");
    let topology = Topology::create(&SITES);
    println!("[2/3] starting json-server (catalog), nginx (front) and cheops at each site");
    let mesh = Mesh::start_with(topology, &HashMap::new(), &demo_options(with_openstack));
    println!("[3/3] the sites see each other over mutual TLS (round trips from Paris):");
    for (peer, round_trip_us) in mesh.peers_up("Paris") {
        println!("      {peer}: {:.2} ms", round_trip_us as f64 / 1000.0);
    }
    let agents: Vec<String> = mesh
        .sites
        .iter()
        .map(|site| format!("{} (pid {})", site.name, site.agent.process.pid()))
        .collect();
    println!("      cheops agents: {}", agents.join(", "));
    println!("      ready in {:.1} s\n", started.elapsed().as_secs_f64());

    walk(STEPS, 1, &mesh, &interrupted);
    let openstack =
        (with_openstack && !interrupted.load(Ordering::SeqCst)).then(|| openstack::start(&mesh));
    if openstack.is_some() {
        walk(openstack::STEPS, STEPS.len() + 1, &mesh, &interrupted);
    }

    if !interrupted.load(Ordering::SeqCst) {
        println!(
            "── What Paris's cheops counted (Prometheus, http://127.0.0.1:15000/metrics at Paris)"
        );
        let metrics = mesh
            .site("Paris")
            .agent
            .admin("/metrics")
            .unwrap_or_default();
        for line in metrics.lines().filter(|l| {
            l.starts_with("cheops_request_duration_seconds_count")
                || l.starts_with("cheops_kernel_redirected_total")
                || l.starts_with("cheops_peer_up")
                || l.starts_with("cheops_peer_round_trip_seconds")
        }) {
            println!("   {line}");
        }
        println!("\n── `cheops status` at Paris");
        let status = mesh.run_at(
            "Paris",
            false,
            &cheops_bin().display().to_string(),
            &["status"],
        );
        for line in String::from_utf8_lossy(&status.stdout).lines() {
            println!("   {line}");
        }
    }
    // OpenStack's servers first: they run in the sites' workloads and namespaces.
    drop(openstack);
    drop(mesh);
    println!("\nremoved every namespace, cgroup and process the demo made");
}

/// Runs `steps`, numbered from `first`, until the end or a Ctrl-C.
fn walk(steps: &[Step], first: usize, mesh: &Mesh, interrupted: &AtomicBool) {
    for (number, step) in steps.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            println!("\ninterrupted: cleaning up");
            return;
        }
        println!("── {}. {}", first + number, step.title);
        println!("   {}", step.why);
        (step.run)(mesh);
        println!();
    }
}

/// Each site's catalog holds one product naming the site, and pods, a replicated resource whose
/// local IDs differ per site (json-server gives the next pod the highest ID plus one); with
/// OpenStack, the sites mesh `image` and `identity` too.
fn demo_options(with_openstack: bool) -> MeshOptions {
    let catalog_data = SITES
        .iter()
        .zip([100, 200, 300])
        .map(|(site, seed)| {
            let data = json!({
                "products": [{"id": 1, "name": format!("widget of {site}"), "site": site}],
                "pods": [{"id": seed, "name": format!("seed of {site}")}],
            });
            (site.to_string(), data)
        })
        .collect();
    MeshOptions {
        catalog_resources: vec![pod_rule()],
        replication: ReplicationSettings {
            replica_timeout: Duration::from_secs(2),
            ..ReplicationSettings::default()
        },
        catalog_data,
        services: match with_openstack {
            true => openstack_sites::services(true),
            false => Vec::new(),
        },
        // An image's file is uploaded to every replica before the answer.
        request_timeout: Duration::from_secs(match with_openstack {
            true => 120,
            false => 10,
        }),
        ..MeshOptions::default()
    }
}

/// Sends one request from `site`'s workload (an unmodified curl) and prints what happened.
fn show(mesh: &Mesh, site: &str, service: &str, path: &str, headers: &[&str]) {
    send(mesh, site, "GET", service, path, headers, None);
}

/// Sends `method` with an optional JSON `body` from `site`'s workload and prints what happened.
fn send(
    mesh: &Mesh,
    site: &str,
    method: &str,
    service: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> Answer {
    let mut args = vec!["-sS", "-i", "-m", "30"];
    let mut shown = String::from("curl");
    if method != "GET" {
        args.extend(["-X", method]);
        shown += &format!(" -X {method}");
    }
    for header in headers {
        args.extend(["-H", header]);
        shown += &format!(" -H '{header}'");
    }
    if let Some(body) = body {
        args.extend(["-H", "Content-Type: application/json", "--data", body]);
        shown += &format!(" -d '{body}'");
    }
    let url = format!("http://{service}{path}");
    args.push(&url);
    println!("   $ {shown} {url}      (at {site})");
    let answer = Answer::from(mesh.run_at(site, true, "curl", &args));
    println!("   → {}", outcome(&answer));
    answer
}

fn outcome(answer: &Answer) -> String {
    if answer.status >= 400 {
        // Errors are shown whole: their caret lines point at the culprit.
        return format!(
            "{}:\n     {}",
            answer.status,
            answer.body.trim_end().replace('\n', "\n     ")
        );
    }
    let body: String = answer.body.split_whitespace().collect::<Vec<_>>().join(" ");
    let body = if body.chars().count() > 110 {
        format!("{}…", body.chars().take(110).collect::<String>())
    } else {
        body
    };
    let served_by = answer
        .header("x-catalog-site")
        .map(|site| format!(", catalog served by {site}"))
        .or_else(|| {
            answer
                .header("x-cheops-site")
                .map(|site| format!(", served by {site}"))
        })
        .unwrap_or_default();
    let replicas = answer
        .header("x-cheops-replicas")
        .map(|replicas| format!(" [{replicas}]"))
        .unwrap_or_default();
    format!("{}{served_by}{replicas}: {body}", answer.status)
}
