//! Three replicating sites for the replication tests (tests/tests/replication*.rs): network
//! namespaces joined through a hub, each running cheops with a durable store and an unmodified
//! json-server as the `catalog` service, whose `/pods` are resources; curl in each site's
//! workload cgroup as the client, and each site's json-server, read directly, as the truth.
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use interceptor::config::ReplicationSettings;
use serde_json::{json, Value};

use crate::{
    mesh::{pod_rule, Answer, Mesh, MeshOptions, CATALOG, CATALOG_LOCAL},
    process::wait_until,
    sites::Topology,
};
pub const SITES: [&str; 3] = ["Site1", "Site2", "Site3"];
pub const ALL: &str = "{catalog: Site1 & Site2 & Site3}";

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

pub fn seed_count(site: &str) -> usize {
    seeds()[site]["pods"].as_array().unwrap().len()
}

/// How long a write waits for its leader (`[replication] leader_wait`).
const LEADER_WAIT: Duration = Duration::from_secs(30);

pub fn mesh() -> Mesh {
    mesh_replaying_every(Duration::from_millis(500))
}

/// Three sites whose logs are offered again every `replay_every` (and when a site is back).
pub fn mesh_replaying_every(replay_every: Duration) -> Mesh {
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
pub fn request(
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

pub fn json_of(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.raw))
}

pub fn created_meta(answer: &Answer) -> String {
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
pub fn direct(mesh: &Mesh, site: &str, path: &str) -> (u16, Value) {
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
pub fn direct_pods(mesh: &Mesh, site: &str) -> BTreeMap<String, Value> {
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
pub fn converged(
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

pub fn assert_ok(answer: &Answer) {
    assert!(
        (200..300).contains(&answer.status),
        "expected a success: {}",
        answer.raw
    );
}
/// of that site alone, which cheops must show and update under that ID, not as the deleted one.
pub fn assert_local_ids_are_free_again(mesh: &Mesh, locals: &[(&str, u32)]) {
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
pub fn expected_pod(meta: &str, n: usize, updates: impl IntoIterator<Item = usize>) -> Value {
    let mut pod = json!({"id": meta, "n": n});
    for update in updates {
        pod[format!("u{update}")] = json!(true);
        pod["last"] = json!(update);
    }
    pod
}

/// Creates `count` pods at every site, led by Site1 and Site2 in turn; their meta-IDs.
pub fn create_everywhere(mesh: &Mesh, count: usize, leaders: &[&str]) -> Vec<String> {
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
