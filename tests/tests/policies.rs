//! Scope policies, as root, on three sites: a workload at A limited to its own site is refused
//! (403, naming the rule and the workload) a scope that sends its catalog call to B, and served
//! for one that keeps it at A; site C lets peer B ask it for `front` only, so a catalog call
//! forwarded by B is refused (403, naming the rule and the peer). Both are counted.
use std::collections::HashMap;

use cheops_tests::{
    mesh::{Mesh, MeshOptions, CATALOG},
    sites::Topology,
};
use interceptor::config::Config;

fn limited(config: &mut Config) {
    match config.site.as_str() {
        "A" => config.workloads[0].allow_sites = Some(vec!["A".into()]),
        "C" => {
            let b = config.peers.iter_mut().find(|p| p.name == "B").unwrap();
            b.allow_services = Some(vec!["front".into()]);
        }
        _ => {}
    }
}

/// How many requests `site`'s metrics count as refused by `rule` of `who`.
fn refusals(mesh: &Mesh, site: &str, rule: &str, who: &str) -> u64 {
    let metrics = mesh.site(site).agent.admin("/metrics").unwrap();
    let series = format!("cheops_policy_refusals_total{{rule=\"{rule}\",who=\"{who}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |count| count.trim().parse().unwrap())
}

#[test]
fn a_scope_or_a_peer_beyond_its_policy_is_refused_naming_the_rule() {
    let options = MeshOptions {
        adjust: limited,
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(
        Topology::create(&["A", "B", "C"]),
        &HashMap::new(),
        &options,
    );
    let url = format!("http://{CATALOG}/products");
    let workload = format!("workload {}", mesh.site("A").workload.path().display());

    let refused = mesh.curl("A", &url, &["X-Scope: {catalog: B}"]);
    assert_eq!(refused.status, 403, "{}", refused.raw);
    assert!(
        refused.body.contains("allow_sites") && refused.body.contains(&workload),
        "{}",
        refused.raw
    );
    let served = mesh.curl("A", &url, &["X-Scope: {catalog: A}"]);
    assert_eq!(served.status, 200, "{}", served.raw);
    assert_eq!(served.header("x-cheops-site"), Some("A"), "{}", served.raw);
    assert_eq!(refusals(&mesh, "A", "allow_sites", &workload), 1);

    // B may reach C, but C runs only `front` for B.
    let refused = mesh.curl("B", &url, &["X-Scope: {catalog: C}"]);
    assert_eq!(refused.status, 403, "{}", refused.raw);
    assert!(
        refused.body.contains("allow_services") && refused.body.contains("site B"),
        "{}",
        refused.raw
    );
    assert_eq!(refusals(&mesh, "C", "allow_services", "peer B"), 1);
    let served = mesh.curl("A", &url, &["X-Scope: {catalog: C}"]);
    assert_eq!(
        served.status, 403,
        "A's workload may not reach C: {}",
        served.raw
    );
    let from_c = mesh.curl("C", &url, &["X-Scope: {catalog: B}"]);
    assert_eq!(from_c.status, 200, "{}", from_c.raw);
    assert_eq!(from_c.header("x-cheops-site"), Some("B"), "{}", from_c.raw);
}
