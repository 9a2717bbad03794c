//! Sites that collaborate, as root: three sites (network namespaces joined through a hub), each
//! running cheops, json-server as `catalog` and nginx as `front`. A client at site A asks
//! nginx at A; the scope decides which site's json-server serves nginx's call to the catalog.
use std::{collections::HashMap, time::Duration};

use cheops_tests::{
    cheops_bin,
    mesh::{cert_files, generate_certs, Answer, Mesh, CATALOG, FRONT, PEER_PORT},
    sites::Topology,
};

fn three_sites() -> Mesh {
    Mesh::start(Topology::create(&["A", "B", "C"]), &HashMap::new())
}

fn products_via_front(mesh: &Mesh, headers: &[&str]) -> Answer {
    mesh.curl("A", &format!("http://{FRONT}/products"), headers)
}

/// The answer came from `site`'s json-server, through nginx at A.
fn assert_catalog_of(answer: &Answer, site: &str) {
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert!(
        answer.body.contains(&format!("\"site\": \"{site}\"")),
        "expected the catalog of {site}: {}",
        answer.raw
    );
    assert_eq!(
        answer.header("x-catalog-site"),
        Some(site),
        "{}",
        answer.raw
    );
    assert_eq!(answer.header("x-cheops-site"), Some("A"), "{}", answer.raw);
}

#[test]
fn a_scope_in_x_scope_sends_the_catalog_call_to_the_named_site() {
    let mesh = three_sites();
    assert_catalog_of(&products_via_front(&mesh, &[]), "A");
    assert_catalog_of(&products_via_front(&mesh, &["X-Scope: {catalog: B}"]), "B");
    assert_catalog_of(&products_via_front(&mesh, &["X-Scope: {catalog: C}"]), "C");
    // Straight to the catalog, the answer names the site that served it.
    let direct = mesh.curl(
        "A",
        &format!("http://{CATALOG}/products/1"),
        &["X-Scope: {catalog: B}"],
    );
    assert_eq!(direct.header("x-cheops-site"), Some("B"), "{}", direct.raw);
    let b = mesh.site("B").agent.status();
    assert!(b.proxy.served_for_peers >= 2, "{b:?}");
    // One log line per request, with its scope, collaboration and serving site.
    let log = mesh.site("A").agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("service=catalog")
            && l.contains("scope={catalog: B}")
            && l.contains("collaboration=sharing")
            && l.contains("served_by=B")),
        "{log}"
    );
}

#[test]
fn scopes_in_baggage_and_in_a_token_suffix_are_read_and_the_suffix_is_stripped() {
    let mesh = three_sites();
    let baggage = products_via_front(&mesh, &["baggage: user=7,scope=%7Bcatalog%3A%20B%7D"]);
    assert_catalog_of(&baggage, "B");
    let token = products_via_front(&mesh, &["X-Auth-Token: s3cret!SCOPE!{catalog: C}"]);
    assert_catalog_of(&token, "C");
    assert_eq!(
        token.header("x-front-saw-token"),
        Some("s3cret"),
        "{}",
        token.raw
    );
}

#[test]
fn a_bad_scope_is_answered_400_with_its_column_or_the_unknown_site() {
    let mesh = three_sites();
    let url = format!("http://{CATALOG}/products");
    let malformed = mesh.curl("A", &url, &["X-Scope: {catalog: B &}"]);
    assert_eq!(malformed.status, 400, "{}", malformed.raw);
    assert!(malformed.body.contains("column"), "{}", malformed.raw);
    let unknown = mesh.curl("A", &url, &["X-Scope: {catalog: Lyon}"]);
    assert_eq!(unknown.status, 400, "{}", unknown.raw);
    assert!(unknown.body.contains("Lyon"), "{}", unknown.raw);
    let replicated = mesh.curl("A", &url, &["X-Scope: {catalog: B & C}"]);
    assert_eq!(replicated.status, 501, "{}", replicated.raw);
}

#[test]
fn cheops_exec_gives_an_unmodified_command_its_scope() {
    let mesh = three_sites();
    let url = format!("http://{FRONT}/products");
    let output = mesh.run_at(
        "A",
        false,
        cheops_bin().to_str().unwrap(),
        &[
            "exec",
            "--scope",
            "{catalog: B}",
            "--",
            "curl",
            "-sS",
            "-i",
            "-m",
            "10",
            &url,
        ],
    );
    assert!(output.status.success(), "{output:?}");
    assert_catalog_of(&Answer::from(output), "B");
    // The transient cgroup is gone, and requests outside it are local again.
    let workload = mesh.site("A").workload.path().to_owned();
    let left: Vec<_> = std::fs::read_dir(&workload)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("cheops-exec-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_catalog_of(&products_via_front(&mesh, &[]), "A");
    let refused = mesh.run_at(
        "A",
        false,
        cheops_bin().to_str().unwrap(),
        &["exec", "--scope", "{catalog: Lyon}", "--", "true"],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Lyon"),
        "{refused:?}"
    );
}

#[test]
fn otherwise_falls_back_to_the_next_site_and_names_every_failed_one() {
    let mesh = three_sites();
    let scope = ["X-Scope: {catalog: B ; C}"];
    assert_catalog_of(&products_via_front(&mesh, &scope), "B");
    mesh.topology.cut("B");
    mesh.wait_for_peers("A", 1);
    assert_catalog_of(&products_via_front(&mesh, &scope), "C");
    mesh.topology.cut("C");
    mesh.wait_for_peers("A", 0);
    let failed = products_via_front(&mesh, &scope);
    assert_eq!(failed.status, 502, "{}", failed.raw);
    assert!(
        failed.body.contains("site B:") && failed.body.contains("site C:"),
        "{}",
        failed.raw
    );
    mesh.topology.heal("B");
    mesh.wait_for_peers("A", 1);
    assert_catalog_of(&products_via_front(&mesh, &scope), "B");
}

#[test]
fn around_picks_the_nearest_reachable_site_from_measured_round_trips() {
    let topology = Topology::create(&["A", "B", "C"]);
    // A reaches B through a 50 ms WAN and C through a 5 ms one (both ways): far enough apart
    // that a loaded machine's noise cannot swap them.
    let relays = [
        topology.relay(16001, "B", PEER_PORT, Duration::from_millis(50)),
        topology.relay(16002, "A", PEER_PORT, Duration::from_millis(50)),
        topology.relay(16003, "C", PEER_PORT, Duration::from_millis(5)),
        topology.relay(16004, "A", PEER_PORT, Duration::from_millis(5)),
    ];
    let paths = HashMap::from([
        (("A", "B"), relays[0].address),
        (("B", "A"), relays[1].address),
        (("A", "C"), relays[2].address),
        (("C", "A"), relays[3].address),
    ]);
    let mut mesh = Mesh::start(topology, &paths);
    // Round trips are the median of the last 8 heartbeats (200 ms apart): let 8 be taken.
    std::thread::sleep(Duration::from_secs(2));
    let measured = mesh.peers_up("A");
    assert!(
        measured["B"] >= 50_000 && measured["C"] >= 5_000 && measured["C"] < measured["B"],
        "{measured:?}"
    );
    let scope = ["X-Scope: {catalog: around(A, 150ms)}"];
    // A itself comes first while its instance answers.
    assert_catalog_of(&products_via_front(&mesh, &scope), "A");
    mesh.site_mut("A").catalog.stop();
    assert_catalog_of(&products_via_front(&mesh, &scope), "C");
    mesh.topology.cut("C");
    mesh.wait_for_peers("A", 1);
    assert_catalog_of(&products_via_front(&mesh, &scope), "B");
    // Out of range: B is farther than 10 ms from A, so only A is tried, and it is down.
    let near = products_via_front(&mesh, &["X-Scope: {catalog: around(A, 10ms)}"]);
    assert_eq!(near.status, 502, "{}", near.raw);
    drop(relays);
}

#[test]
fn a_peer_with_a_certificate_of_another_ca_is_refused_and_reaches_no_service() {
    let mesh = three_sites();
    let rogue = tempfile::tempdir().unwrap();
    generate_certs(rogue.path(), &["B", "D"]);
    let a = mesh.topology.site("A").address;
    let post = |certs: &std::path::Path, site: &str, name: &str| {
        let (cert, key) = cert_files(certs, site);
        let output = mesh.run_at(
            "B",
            false,
            "curl",
            &[
                "-sS",
                "-m",
                "5",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                mesh.certs
                    .path()
                    .join(interceptor::tls::CA_FILE)
                    .to_str()
                    .unwrap(),
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "--resolve",
                &format!("a.cheops:{PEER_PORT}:{a}"),
                "-H",
                &format!("x-cheops-forwarded-by: {site}"),
                "-H",
                "x-cheops-service: catalog",
                "-H",
                "content-type: application/json",
                "-d",
                &format!("{{\"name\": \"{name}\"}}"),
                &format!("https://a.cheops:{PEER_PORT}/products"),
            ],
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let impostor = post(rogue.path(), "B", "from the impostor");
    assert_ne!(impostor, "201", "a certificate of another CA was accepted");
    let listing = mesh.curl("A", &format!("http://{CATALOG}/products"), &[]);
    assert!(!listing.body.contains("impostor"), "{}", listing.raw);
    let status = mesh.site("A").agent.status();
    assert!(status.proxy.refused_peer_connections >= 1, "{status:?}");
    assert_eq!(status.proxy.served_for_peers, 0, "{status:?}");
    // The real B, with the same request, is served: the refusal was the certificate's doing.
    assert_eq!(post(mesh.certs.path(), "B", "from B"), "201");
    let listing = mesh.curl("A", &format!("http://{CATALOG}/products"), &[]);
    assert!(listing.body.contains("from B"), "{}", listing.raw);
}

#[test]
fn a_partitioned_site_keeps_serving_its_unscoped_requests() {
    let mesh = three_sites();
    mesh.topology.cut("A");
    assert_catalog_of(&products_via_front(&mesh, &[]), "A");
    mesh.wait_for_peers("A", 0);
    for _ in 0..3 {
        assert_catalog_of(&products_via_front(&mesh, &[]), "A");
    }
    let scoped = products_via_front(&mesh, &["X-Scope: {catalog: B}"]);
    assert_eq!(scoped.status, 502, "{}", scoped.raw);
    assert!(scoped.body.contains("site B"), "{}", scoped.raw);
}
