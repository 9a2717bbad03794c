//! Replication under faults, as root: three sites (cheops_tests::replicated) where one is cut
//! off and healed, or the leader is killed in a burst of updates; nothing acknowledged is lost
//! and each operation reaches each site's json-server once.
use std::time::{Duration, Instant};

use cheops_tests::{
    mesh::CATALOG,
    process::{wait_until, Process},
    replicated::{
        assert_ok, converged, create_everywhere, direct_pods, expected_pod, mesh,
        mesh_replaying_every, request, seed_count, SITES,
    },
};
use serde_json::json;

#[test]
fn a_partitioned_site_gets_every_missed_update_and_delete_once_when_healed() {
    const PODS: usize = 12;
    // Replayed only when a site is back: the timer would come too late.
    let mesh = mesh_replaying_every(Duration::from_secs(3600));
    let metas = create_everywhere(&mesh, PODS, &["Site1", "Site2"]);
    mesh.topology.cut("Site3");
    mesh.wait_for_peers("Site1", 1);
    mesh.wait_for_peers("Site2", 1);
    for update in 0..50 {
        let site = ["Site1", "Site2"][update % 2];
        let path = format!("/pods/{}", metas[update % PODS]);
        let body = json!({format!("u{update}"): true, "last": update});
        let answer = request(&mesh, site, "PATCH", &path, None, Some(body));
        assert_ok(&answer);
        let replicas = answer.header("x-cheops-replicas").unwrap_or_default();
        assert!(
            replicas.contains("Site1=ok, Site2=ok, Site3=") && !replicas.contains("Site3=ok"),
            "{}",
            answer.raw
        );
    }
    for (n, meta) in metas[..10].iter().enumerate() {
        let site = ["Site2", "Site1"][n % 2];
        let answer = request(&mesh, site, "DELETE", &format!("/pods/{meta}"), None, None);
        assert_ok(&answer);
    }
    // Cut off, Site3 still serves its own, stale, copies.
    assert_eq!(
        direct_pods(&mesh, "Site3").len(),
        seed_count("Site3") + PODS
    );
    assert_eq!(mesh.site("Site3").catalog.requests("PATCH", "/pods/"), 0);
    let started = Instant::now();
    mesh.topology.heal("Site3");
    // The deletes too: each instance holds its seeds and the two pods left, no more.
    let state = converged(&mesh, Duration::from_secs(120), |state| {
        state.len() == 2
            && SITES
                .iter()
                .all(|site| direct_pods(&mesh, site).len() == seed_count(site) + 2)
    });
    eprintln!("converged {:?} after the heal", started.elapsed());
    for n in [10, 11] {
        let updates = (0..50).filter(|u| u % PODS == n);
        assert_eq!(state[&metas[n]], expected_pod(&metas[n], n, updates));
    }
    for site in SITES {
        let pods = direct_pods(&mesh, site);
        assert_eq!(pods.len(), seed_count(site) + 2, "{site}: {pods:#?}");
        // Each update and each delete reached each site's instance exactly once.
        let catalog = &mesh.site(site).catalog;
        assert_eq!(catalog.requests("PATCH", "/pods/"), 50, "{site}");
        assert_eq!(catalog.requests("DELETE", "/pods/"), 10, "{site}");
    }
}

#[test]
fn the_leader_killed_in_a_burst_of_updates_loses_no_acknowledged_update() {
    const PODS: usize = 3;
    const UPDATES: usize = 40;
    let mut mesh = mesh();
    let metas = create_everywhere(&mesh, PODS, &["Site1"]);
    // The burst: one client at Site2 updating Site1's pods one after the other, each answer's
    // status written down.
    let results = mesh.state.path().join("burst");
    let mut script = String::new();
    for update in 0..UPDATES {
        let body = json!({format!("u{update}"): true, "last": update});
        script += &format!(
            "code=$(curl -s -o /dev/null -w '%{{http_code}}' -m 90 -X PATCH \
             -H 'Content-Type: application/json' --data '{body}' http://{CATALOG}/pods/{meta})\n\
             echo {update} $code >> {results}\n",
            meta = metas[update % PODS],
            results = results.display(),
        );
    }
    let mut command = mesh.topology.site("Site2").netns.command("bash");
    command.args(["-c", &script]);
    mesh.site("Site2").workload.enter(&mut command);
    let mut burst = Process::spawn("burst of updates", command, None);
    let answered = || {
        std::fs::read_to_string(&results)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (update, code) = line.split_once(' ')?;
                Some((update.parse::<usize>().ok()?, code.parse::<u16>().ok()?))
            })
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(60), || answered().len() >= 10),
        "the burst is stuck: {:?}",
        answered()
    );
    mesh.site_mut("Site1").agent.process.kill_9();
    let killed_after = answered().len();
    mesh.wait_for_peers("Site2", 1);
    mesh.restart_agent("Site1");
    assert!(
        wait_until(Duration::from_secs(300), || burst.exited().is_some()),
        "the burst did not end: {:?}",
        answered()
    );
    let answered = answered();
    eprintln!("killed after {killed_after} answers; answers: {answered:?}");
    assert_eq!(answered.len(), UPDATES, "{answered:?}");
    let acknowledged: Vec<usize> = answered
        .iter()
        .filter(|(_, code)| (200..300).contains(code))
        .map(|(update, _)| *update)
        .collect();
    // Updates were acknowledged on both sides of the crash; the others waited for the leader
    // to be back, all but the one it may have been ordering when it died.
    assert!(
        acknowledged.iter().any(|u| *u < killed_after),
        "{answered:?}"
    );
    assert!(acknowledged.contains(&(UPDATES - 1)), "{answered:?}");
    assert!(acknowledged.len() >= UPDATES - 1, "{answered:?}");

    let state = converged(&mesh, Duration::from_secs(120), |_| true);
    assert_eq!(state.len(), PODS, "{state:#?}");
    let mut applied = 0;
    for (n, meta) in metas.iter().enumerate() {
        let pod = &state[meta];
        for update in (0..UPDATES).filter(|u| u % PODS == n) {
            let there = pod.get(format!("u{update}")).is_some();
            assert!(
                there || !acknowledged.contains(&update),
                "acknowledged update {update} is lost: {pod}"
            );
            applied += usize::from(there);
        }
        let last = (0..UPDATES).filter(|u| u % PODS == n && pod.get(format!("u{u}")).is_some());
        assert_eq!(pod["last"], json!(last.max()), "{pod}");
    }
    // Every operation in the log reached each replica once; the crashed leader's own instance
    // may have got the one it was applying when it died a second time (see docs/replication.md).
    for site in ["Site2", "Site3"] {
        let patches = mesh.site(site).catalog.requests("PATCH", "/pods/");
        assert_eq!(patches, applied, "{site}");
    }
    let patches = mesh.site("Site1").catalog.requests("PATCH", "/pods/");
    assert!(
        patches == applied || patches == applied + 1,
        "Site1: {patches} updates for {applied}"
    );
}
