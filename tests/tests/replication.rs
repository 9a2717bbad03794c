//! Replication (`&`) and cross (`%`) end to end, as root: three sites (network namespaces
//! joined through a hub), each running cheops with a durable store and an unmodified
//! json-server as the `catalog` service, whose `/pods` are resources. The clients are curl
//! in each site's workload cgroup; the truth is each site's json-server, read directly.
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use cheops_tests::{
    mesh::{pod_rule, Answer, Mesh, MeshOptions, CATALOG, CATALOG_LOCAL},
    process::{wait_until, Process},
    sites::Topology,
};
use interceptor::config::ReplicationSettings;
use serde_json::{json, Value};

const SITES: [&str; 3] = ["Site1", "Site2", "Site3"];
const ALL: &str = "{catalog: Site1 & Site2 & Site3}";

/// json-server gives the next pod the highest ID plus one: 101 at Site1, 201 at Site2, 301 at
/// Site3. Site2 and Site3 also hold bystanders under the IDs the other sites give, which
/// nothing of a replicated resource may touch.
fn seeds() -> HashMap<String, Value> {
    let pod = |id: u32, name: &str| json!({"id": id, "name": name});
    [
        ("Site1", vec![pod(100, "seed of Site1")]),
        (
            "Site2",
            vec![pod(101, "bystander"), pod(200, "seed of Site2")],
        ),
        (
            "Site3",
            vec![
                pod(101, "bystander"),
                pod(201, "bystander"),
                pod(300, "seed of Site3"),
            ],
        ),
    ]
    .into_iter()
    .map(|(site, pods)| (site.to_owned(), json!({ "pods": pods })))
    .collect()
}

fn seed_count(site: &str) -> usize {
    seeds()[site]["pods"].as_array().unwrap().len()
}

/// How long a write waits for its leader (`[replication] leader_wait`).
const LEADER_WAIT: Duration = Duration::from_secs(30);

fn mesh() -> Mesh {
    mesh_replaying_every(Duration::from_millis(500))
}

/// Three sites whose logs are offered again every `replay_every` (and when a site is back).
fn mesh_replaying_every(replay_every: Duration) -> Mesh {
    let options = MeshOptions {
        catalog_resources: vec![pod_rule()],
        replication: ReplicationSettings {
            replica_timeout: Duration::from_secs(2),
            replay_every,
            leader_wait: LEADER_WAIT,
            ..ReplicationSettings::default()
        },
        catalog_data: seeds(),
        // A write forwarded to its leader waits for the leader's replicas too.
        request_timeout: Duration::from_secs(10),
        ..MeshOptions::default()
    };
    Mesh::start_with(Topology::create(&SITES), &HashMap::new(), &options)
}

/// `method` on the catalog's `path` from `site`'s workload, through cheops.
fn request(
    mesh: &Mesh,
    site: &str,
    method: &str,
    path: &str,
    scope: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut args = vec![
        "-sS".to_owned(),
        "-i".into(),
        "-m".into(),
        "30".into(),
        "-X".into(),
        method.into(),
    ];
    if let Some(scope) = scope {
        args.extend(["-H".into(), format!("X-Scope: {scope}")]);
    }
    if let Some(body) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data".into(),
            body.to_string(),
        ]);
    }
    args.push(format!("http://{CATALOG}{path}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Answer::from(mesh.run_at(site, true, "curl", &args))
}

fn json_of(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.raw))
}

fn created_meta(answer: &Answer) -> String {
    assert_eq!(answer.status, 201, "{}", answer.raw);
    let meta = answer
        .header("x-cheops-meta-id")
        .unwrap_or_else(|| panic!("no meta-ID: {}", answer.raw))
        .to_owned();
    assert!(meta.starts_with("CHEOPS_"), "{}", answer.raw);
    assert_eq!(json_of(answer)["id"], meta.as_str(), "{}", answer.raw);
    meta
}

/// `site`'s json-server itself, without cheops: the status and body of GET `path`.
fn direct(mesh: &Mesh, site: &str, path: &str) -> (u16, Value) {
    let url = format!("http://{CATALOG_LOCAL}{path}");
    let output = mesh.run_at(
        site,
        false,
        "curl",
        &["-sS", "-m", "10", "-w", "\n%{http_code}", &url],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// The pods at `site`'s json-server, by their local ID.
fn direct_pods(mesh: &Mesh, site: &str) -> BTreeMap<String, Value> {
    let (status, pods) = direct(mesh, site, "/pods");
    assert_eq!(status, 200, "{site}'s json-server does not list its pods");
    pods.as_array()
        .unwrap()
        .iter()
        .map(|pod| (pod["id"].to_string(), pod.clone()))
        .collect()
}

/// The replicated pods at `site`, by meta-ID: its own instance's list through cheops, without
/// scope (cheops names each known resource by its meta-ID). `None` if it does not answer.
fn replicated_state(mesh: &Mesh, site: &str) -> Option<BTreeMap<String, Value>> {
    let answer = request(mesh, site, "GET", "/pods", None, None);
    if answer.status != 200 {
        return None;
    }
    let pods: Value = serde_json::from_str(&answer.body).ok()?;
    Some(
        pods.as_array()?
            .iter()
            .filter_map(|pod| {
                let id = pod["id"].as_str()?;
                id.starts_with("CHEOPS_")
                    .then(|| (id.to_owned(), pod.clone()))
            })
            .collect(),
    )
}

/// Waits (at most `limit`) until every site holds the same replicated pods and `also` holds;
/// returns that state, or fails with every site's state.
fn converged(
    mesh: &Mesh,
    limit: Duration,
    mut also: impl FnMut(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let mut last = Vec::new();
    let same = wait_until(limit, || {
        last = SITES.iter().map(|s| replicated_state(mesh, s)).collect();
        last.iter().all(|s| s.is_some() && *s == last[0]) && also(last[0].as_ref().unwrap())
    });
    assert!(
        same,
        "the sites did not converge in {limit:?}: {last:#?}\nSite1's log:\n{}",
        mesh.site("Site1").agent.log_text()
    );
    last.swap_remove(0).unwrap()
}

fn assert_ok(answer: &Answer) {
    assert!(
        (200..300).contains(&answer.status),
        "expected a success: {}",
        answer.raw
    );
}

#[test]
fn the_thesis_check_purple_and_violet_are_read_at_both_sites_under_one_meta_id() {
    let mesh = mesh();
    let both = Some("{Site1 & Site2}");
    let purple = request(
        &mesh,
        "Site1",
        "POST",
        "/pods",
        both,
        Some(json!({"id": "purple", "color": "purple"})),
    );
    let violet = request(
        &mesh,
        "Site2",
        "POST",
        "/pods",
        both,
        Some(json!({"id": "violet", "color": "violet"})),
    );
    for answer in [&purple, &violet] {
        assert_eq!(
            answer.header("x-cheops-replicas"),
            Some("Site1=ok, Site2=ok"),
            "{}",
            answer.raw
        );
    }
    let (purple, violet) = (created_meta(&purple), created_meta(&violet));
    assert_ne!(purple, violet);
    for (meta, name) in [(&purple, "purple"), (&violet, "violet")] {
        for site in ["Site1", "Site2"] {
            // By meta-ID and by the name the client gave, without any scope: one resource.
            for path in [format!("/pods/{meta}"), format!("/pods/{name}")] {
                let read = request(&mesh, site, "GET", &path, None, None);
                assert_eq!(read.status, 200, "{site} {path}: {}", read.raw);
                let pod = json_of(&read);
                assert_eq!(pod["id"], meta.as_str(), "{site} {path}: {}", read.raw);
                assert_eq!(pod["color"], name, "{site} {path}: {}", read.raw);
            }
            let (status, pod) = direct(&mesh, site, &format!("/pods/{name}"));
            assert_eq!((status, &pod["color"]), (200, &json!(name)), "{site}");
        }
        // Site3 was not in the expression: it holds neither, and knows neither.
        let read = request(&mesh, "Site3", "GET", &format!("/pods/{meta}"), None, None);
        assert_eq!(read.status, 404, "{}", read.raw);
    }
    let site3 = direct_pods(&mesh, "Site3");
    assert_eq!(site3.len(), seed_count("Site3"), "{site3:?}");
    // A list over both sites holds each once, under its meta-ID, and every seed.
    let list = json_of(&request(&mesh, "Site1", "GET", "/pods", both, None));
    let ids: Vec<&Value> = list.as_array().unwrap().iter().map(|p| &p["id"]).collect();
    assert_eq!(
        ids.len(),
        2 + seed_count("Site1") + seed_count("Site2"),
        "{list}"
    );
    for meta in [&purple, &violet] {
        assert_eq!(ids.iter().filter(|id| **id == meta).count(), 1, "{list}");
    }
}

#[test]
fn updates_and_deletes_by_meta_id_reach_each_sites_own_local_id() {
    let mesh = mesh();
    let created = request(
        &mesh,
        "Site1",
        "POST",
        "/pods",
        Some(ALL),
        Some(json!({"name": "a"})),
    );
    assert_eq!(
        created.header("x-cheops-replicas"),
        Some("Site1=ok, Site2=ok, Site3=ok"),
        "{}",
        created.raw
    );
    let meta = created_meta(&created);
    let locals = [("Site1", 101), ("Site2", 201), ("Site3", 301)];
    for (site, local) in locals {
        let (status, pod) = direct(&mesh, site, &format!("/pods/{local}"));
        assert_eq!((status, &pod["name"]), (200, &json!("a")), "{site}");
    }
    let replicas = mesh.site("Site1").agent.replicas();
    assert!(
        replicas
            .replicants
            .iter()
            .any(|r| r.meta_id.to_string() == meta)
            || replicas.cross.iter().any(|c| c.meta_id.to_string() == meta),
        "{replicas:?}"
    );

    // An update without scope at a site that is not the leader: every site's own pod.
    let updated = request(
        &mesh,
        "Site3",
        "PATCH",
        &format!("/pods/{meta}"),
        None,
        Some(json!({"name": "b"})),
    );
    assert_ok(&updated);
    assert_eq!(json_of(&updated)["id"], meta.as_str(), "{}", updated.raw);
    assert_eq!(
        updated.header("x-cheops-replicas"),
        Some("Site1=ok, Site2=ok, Site3=ok"),
        "{}",
        updated.raw
    );
    for (site, local) in locals {
        let (status, pod) = direct(&mesh, site, &format!("/pods/{local}"));
        assert_eq!((status, &pod["name"]), (200, &json!("b")), "{site}");
    }
    let bystanders = [("Site2", 101), ("Site3", 101), ("Site3", 201)];
    for (site, local) in bystanders {
        let (status, pod) = direct(&mesh, site, &format!("/pods/{local}"));
        assert_eq!((status, &pod["name"]), (200, &json!("bystander")), "{site}");
    }

    let deleted = request(
        &mesh,
        "Site2",
        "DELETE",
        &format!("/pods/{meta}"),
        None,
        None,
    );
    assert_ok(&deleted);
    for (site, local) in locals {
        let (status, _) = direct(&mesh, site, &format!("/pods/{local}"));
        assert_eq!(status, 404, "{site}'s pod {local} is still there");
    }
    for (site, local) in bystanders {
        let (status, pod) = direct(&mesh, site, &format!("/pods/{local}"));
        assert_eq!((status, &pod["name"]), (200, &json!("bystander")), "{site}");
    }
    let again = request(
        &mesh,
        "Site1",
        "DELETE",
        &format!("/pods/{meta}"),
        None,
        None,
    );
    assert_eq!(again.status, 404, "{}", again.raw);
    assert_local_ids_are_free_again(&mesh, &locals);
}

/// Each site's json-server gives the ID of the deleted pod (its highest) to its next pod: a pod
/// of that site alone, which cheops must show and update under that ID, not as the deleted one.
fn assert_local_ids_are_free_again(mesh: &Mesh, locals: &[(&str, u32)]) {
    for (site, local) in locals {
        let created = request(
            mesh,
            site,
            "POST",
            "/pods",
            None,
            Some(json!({"name": "mine"})),
        );
        assert_eq!(created.status, 201, "{}", created.raw);
        assert_eq!(json_of(&created)["id"], *local, "{site}: {}", created.raw);
        let path = format!("/pods/{local}");
        let renamed = json!({"name": "mine, renamed"});
        let updated = request(mesh, site, "PATCH", &path, None, Some(renamed));
        assert_eq!(updated.status, 200, "{site}: {}", updated.raw);
        assert_eq!(json_of(&updated)["id"], *local, "{site}: {}", updated.raw);
        let (status, pod) = direct(mesh, site, &path);
        assert_eq!(
            (status, &pod["name"]),
            (200, &json!("mine, renamed")),
            "{site}"
        );
    }
}

/// The pod that updates `updates` made, after it was created with `n`.
fn expected_pod(meta: &str, n: usize, updates: impl IntoIterator<Item = usize>) -> Value {
    let mut pod = json!({"id": meta, "n": n});
    for update in updates {
        pod[format!("u{update}")] = json!(true);
        pod["last"] = json!(update);
    }
    pod
}

/// Creates `count` pods at every site, led by Site1 and Site2 in turn; their meta-IDs.
fn create_everywhere(mesh: &Mesh, count: usize, leaders: &[&str]) -> Vec<String> {
    (0..count)
        .map(|n| {
            let site = leaders[n % leaders.len()];
            let created = request(
                mesh,
                site,
                "POST",
                "/pods",
                Some(ALL),
                Some(json!({"n": n})),
            );
            assert_eq!(
                created.header("x-cheops-replicas"),
                Some("Site1=ok, Site2=ok, Site3=ok"),
                "{}",
                created.raw
            );
            created_meta(&created)
        })
        .collect()
}

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

#[test]
fn cross_pods_are_listed_once_from_either_site_and_served_where_they_live() {
    let mesh = mesh();
    let cross = "{catalog: Site1 % Site2}";
    let at_site2 = "{catalog: Site1 % Site2, prime: Site2}";
    // (created at, scope, lives at)
    let plan = [
        ("Site1", cross, "Site1"),
        ("Site2", cross, "Site1"),
        ("Site1", at_site2, "Site2"),
        ("Site2", at_site2, "Site2"),
    ];
    let mut pods = Vec::new();
    for (n, (site, scope, lives)) in plan.into_iter().enumerate() {
        let name = format!("cross {n}");
        let created = request(
            &mesh,
            site,
            "POST",
            "/pods",
            Some(scope),
            Some(json!({ "name": name })),
        );
        pods.push((created_meta(&created), name, lives));
    }
    for site in SITES {
        let extra = plan.iter().filter(|(_, _, lives)| *lives == site).count();
        let held = direct_pods(&mesh, site);
        assert_eq!(held.len(), seed_count(site) + extra, "{site}: {held:#?}");
    }
    let listed = |site: &str| -> Vec<Value> {
        let answer = request(&mesh, site, "GET", "/pods", Some(cross), None);
        assert_eq!(answer.status, 200, "{}", answer.raw);
        json_of(&answer).as_array().unwrap().clone()
    };
    for site in ["Site1", "Site2"] {
        let list = listed(site);
        assert_eq!(
            list.len(),
            seed_count("Site1") + seed_count("Site2") + pods.len(),
            "{site}: {list:#?}"
        );
        for (meta, name, _) in &pods {
            let found: Vec<&Value> = list.iter().filter(|p| p["id"] == meta.as_str()).collect();
            assert_eq!(found.len(), 1, "{site}: {list:#?}");
            assert_eq!(found[0]["name"], name.as_str());
        }
    }
    for (meta, name, lives) in &pods {
        let path = format!("/pods/{meta}");
        let elsewhere = if *lives == "Site1" { "Site2" } else { "Site1" };
        for site in ["Site1", "Site2"] {
            let read = request(&mesh, site, "GET", &path, None, None);
            assert_eq!(read.status, 200, "{}", read.raw);
            assert_eq!(json_of(&read)["name"], name.as_str(), "{}", read.raw);
        }
        let renamed = format!("{name}, renamed");
        let updated = request(
            &mesh,
            elsewhere,
            "PATCH",
            &path,
            None,
            Some(json!({ "name": renamed })),
        );
        assert_ok(&updated);
        let at_home = direct_pods(&mesh, lives);
        assert!(
            at_home.values().any(|p| p["name"] == renamed.as_str()),
            "{lives}: {at_home:#?}"
        );
        let away = direct_pods(&mesh, elsewhere);
        assert!(
            away.values().all(|p| p["name"] != renamed.as_str()),
            "{elsewhere}: {away:#?}"
        );
        // Site3 is not in the expression: it knows nothing of it.
        let read = request(&mesh, "Site3", "GET", &path, None, None);
        assert_eq!(read.status, 404, "{}", read.raw);
        let deleted = request(&mesh, elsewhere, "DELETE", &path, None, None);
        assert_ok(&deleted);
        let at_home = direct_pods(&mesh, lives);
        assert!(
            at_home.values().all(|p| p["name"] != renamed.as_str()),
            "{lives}: {at_home:#?}"
        );
    }
    for site in ["Site1", "Site2"] {
        let list = listed(site);
        assert_eq!(
            list.len(),
            seed_count("Site1") + seed_count("Site2"),
            "{list:#?}"
        );
    }
    // Both sites gave a cross pod their next ID, 101 and 201, and deleted it.
    assert_local_ids_are_free_again(&mesh, &[("Site1", 101), ("Site2", 201)]);
}
