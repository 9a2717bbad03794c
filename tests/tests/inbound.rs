//! Clients on other machines: a namespace outside every site reaches a site's catalog at the
//! site's own address over the bridge, never loopback. json-server stays bound to that address;
//! the kernel's `sk_lookup` program hands the connections to cheops, which reads each request's
//! scope and runs its collaboration. With cheops gone, json-server gets them itself.
use std::{
    collections::HashMap,
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    process::Command,
    time::{Duration, Instant},
};

use cheops_tests::{
    apps::client_script,
    mesh::{inbound_catalog, pod_rule, Answer, Mesh, MeshOptions},
    process::wait_until,
    sites::{Machine, Topology},
};

const PARIS: &str = "Paris";
const NANTES: &str = "Nantes";

/// Paris and Nantes with an inbound catalog, and a remote machine.
fn start(options: MeshOptions) -> (Mesh, Machine, SocketAddr) {
    let topology = Topology::create(&[PARIS, NANTES]);
    let remote = topology.machine(200);
    let paris = inbound_catalog(topology.site(PARIS).address);
    let options = MeshOptions {
        inbound_catalog: true,
        ..options
    };
    let mesh = Mesh::start_with(topology, &HashMap::new(), &options);
    (mesh, remote, paris)
}

/// `curl -i` from the remote machine, with extra arguments.
fn remote_curl(remote: &Machine, url: &str, args: &[&str]) -> Answer {
    let mut command = remote.netns.command("curl");
    command.args(["-sS", "-i", "-m", "10"]).args(args).arg(url);
    Answer::from(command.output().expect("running curl"))
}

/// Whether an `sk_lookup` link is attached to the network namespace of `site`.
fn sk_lookup_attached(mesh: &Mesh, site: &str) -> bool {
    let netns = mesh.topology.site(site).netns.name();
    let inode = std::fs::metadata(format!("/run/netns/{netns}"))
        .expect("the site's namespace")
        .ino();
    let output = Command::new("bpftool")
        .args(["--json", "link", "show"])
        .output()
        .expect("running bpftool");
    let links: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("bpftool's JSON list of links");
    links
        .iter()
        .any(|link| link["attach_type"] == "sk_lookup" && link["netns_ino"].as_u64() == Some(inode))
}

#[test]
fn a_client_on_another_machine_is_served_by_the_site_its_scope_names_and_directly_without_cheops() {
    let (mut mesh, remote, paris) = start(MeshOptions::default());
    let url = format!("http://{paris}/products");

    let local = remote_curl(&remote, &url, &[]);
    assert_eq!(local.status, 200, "{}", local.raw);
    assert_eq!(local.header("x-cheops-site"), Some(PARIS), "{}", local.raw);
    assert!(local.body.contains("widget of Paris"), "{}", local.raw);

    let shared = remote_curl(&remote, &url, &["-H", "X-Scope: {catalog: Nantes}"]);
    assert_eq!(shared.status, 200, "{}", shared.raw);
    assert_eq!(
        shared.header("x-cheops-site"),
        Some(NANTES),
        "{}",
        shared.raw
    );
    assert!(shared.body.contains("widget of Nantes"), "{}", shared.raw);

    let status = mesh.site(PARIS).agent.status();
    let inbound = &status.inbound;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(
        (inbound[0].service.as_str(), inbound[0].address),
        ("catalog", paris)
    );
    assert_eq!(inbound[0].connections, 2, "{inbound:?}");
    assert_eq!(status.kernel.expect("eBPF counters").steered_inbound, 2);
    assert!(sk_lookup_attached(&mesh, PARIS));

    mesh.site_mut(PARIS).agent.process.kill_9();
    let killed = Instant::now();
    let direct = wait_until(Duration::from_secs(1), || {
        let answer = remote_curl(&remote, &url, &["-H", "X-Scope: {catalog: Nantes}"]);
        answer.status == 200
            && answer.header("x-cheops-site").is_none()
            && answer.body.contains("widget of Paris")
    });
    println!(
        "after kill -9, the remote client reached json-server directly in {:?}",
        killed.elapsed()
    );
    assert!(
        direct,
        "the remote client did not reach json-server directly within 1 s of kill -9"
    );
    assert!(
        !sk_lookup_attached(&mesh, PARIS),
        "the sk_lookup program stayed attached"
    );
}

#[test]
fn a_remote_create_with_a_replication_scope_creates_at_both_sites() {
    let (mesh, remote, paris) = start(MeshOptions {
        catalog_resources: vec![pod_rule()],
        catalog_data: [PARIS, NANTES]
            .iter()
            .map(|site| (site.to_string(), serde_json::json!({"pods": []})))
            .collect(),
        ..MeshOptions::default()
    });
    let created = remote_curl(
        &remote,
        &format!("http://{paris}/pods"),
        &[
            "-H",
            "X-Scope: {catalog: Paris & Nantes}",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"name": "from afar"}"#,
        ],
    );
    assert_eq!(created.status, 201, "{}", created.raw);
    assert!(
        created.header("x-cheops-meta-id").is_some(),
        "{}",
        created.raw
    );
    for site in [PARIS, NANTES] {
        // Each site's own json-server, asked directly (outside the workload).
        let output = mesh.run_at(site, false, "curl", &["-sS", "http://127.0.0.1:3000/pods"]);
        let pods = String::from_utf8_lossy(&output.stdout);
        assert!(
            pods.contains("from afar"),
            "site {site} has no replica: {pods}"
        );
    }
}

#[test]
fn bad_input_at_the_inbound_door_gets_clear_errors_and_leaves_others_alone() {
    let (_mesh, remote, paris) = start(MeshOptions::default());
    let mut command = remote.netns.command("python3");
    command
        .arg(client_script("bad_requests.py"))
        .args([&paris.to_string(), "15"]);
    let bad_client = std::thread::spawn(move || command.output().expect("running the bad client"));
    // While the bad client stalls its last request, a good client is served.
    std::thread::sleep(Duration::from_millis(500));
    let good = remote_curl(&remote, &format!("http://{paris}/products"), &[]);
    assert_eq!(
        good.status, 200,
        "a good request failed beside bad ones: {}",
        good.raw
    );
    let output = bad_client.join().unwrap();
    let output = String::from_utf8_lossy(&output.stdout).into_owned();
    let results: HashMap<&str, &str> = output.lines().filter_map(|l| l.split_once('\t')).collect();
    assert_eq!(results.get("malformed"), Some(&"400"), "{output}");
    assert_eq!(results.get("oversized"), Some(&"431"), "{output}");
    assert_eq!(results.get("bad-version"), Some(&"400"), "{output}");
    assert!(
        matches!(results.get("stalled"), Some(&"closed") | Some(&"408")),
        "a stalled client must be cut off: {output}"
    );
}
