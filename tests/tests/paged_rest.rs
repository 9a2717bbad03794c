//! Replication on a paged REST API, end to end, as root: two sites each running cheops and an
//! unmodified json-server 1.x (lists answered page by page as `{"data": [...], "next": 2}`)
//! as the `pages` service. A client that walks the pages of a replicated list sees every
//! resource, and each replicated one once; updates and deletes by meta-ID reach both sites,
//! also after one was cut off.
use std::{collections::HashMap, net::SocketAddr, time::Duration};

use cheops_tests::{
    agent::meshed_service,
    apps::wait_for_listener,
    mesh::{Answer, Mesh, MeshOptions},
    netns::Netns,
    process::{wait_until, Process},
    sites::Topology,
};
use interceptor::{config::ReplicationSettings, resources::ResourceRule};
use serde_json::{json, Value};

const SITES: [&str; 2] = ["S1", "S2"];
const PAGES: &str = "198.18.1.40:80";
const PAGES_LOCAL: &str = "127.0.0.1:3100";
const BOTH: &str = "X-Scope: {pages: S1 & S2}";
/// json-server 1.x, installed beside the 0.17 of the other tests by the setup script.
const JSON_SERVER_1: &str = "/opt/cheops-json-server-1/node_modules/.bin/json-server";

struct JsonServer1 {
    _process: Process,
    _dir: tempfile::TempDir,
}

impl JsonServer1 {
    fn start(netns: &Netns, data: &Value) -> JsonServer1 {
        assert!(
            std::path::Path::new(JSON_SERVER_1).exists(),
            "{JSON_SERVER_1} is missing: run scripts/setup-toolchain.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.json");
        std::fs::write(&db, data.to_string()).unwrap();
        let address: SocketAddr = PAGES_LOCAL.parse().unwrap();
        let mut command = netns.command(JSON_SERVER_1);
        command
            .arg(&db)
            .args(["--host", "127.0.0.1", "--port", "3100"]);
        let process = Process::spawn("json-server 1.x", command, None);
        wait_for_listener(netns, address);
        JsonServer1 {
            _process: process,
            _dir: dir,
        }
    }
}

fn pods_rule() -> ResourceRule {
    ResourceRule::parse("/pods", "/pods/{id}", "json:id")
        .and_then(|rule| rule.listed_at("json:data", Some("json:next")))
        .unwrap()
}

fn request(
    mesh: &Mesh,
    site: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<Value>,
) -> Answer {
    let url = format!("http://{PAGES}{path}");
    let body = body.map(|b| b.to_string());
    let mut args = vec![
        "-sS",
        "-i",
        "-m",
        "20",
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
    ];
    for header in headers {
        args.extend(["-H", header]);
    }
    if let Some(body) = &body {
        args.extend(["--data", body]);
    }
    args.push(&url);
    Answer::from(mesh.run_at(site, true, "curl", &args))
}

fn json_of(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.raw))
}

/// Every page of the pods, as a client walks them (`_page` until `next` is null), from `site`.
fn walk(mesh: &Mesh, site: &str, headers: &[&str]) -> Vec<Value> {
    let mut items = Vec::new();
    let mut page = Some(1);
    while let Some(n) = page {
        let answer = request(
            mesh,
            site,
            "GET",
            &format!("/pods?_page={n}&_per_page=2"),
            headers,
            None,
        );
        assert_eq!(answer.status, 200, "{}", answer.raw);
        let body = json_of(&answer);
        items.extend(
            body["data"]
                .as_array()
                .unwrap_or_else(|| panic!("{body}"))
                .iter()
                .cloned(),
        );
        page = body["next"].as_u64();
        assert!(n < 20, "the pages never end: {body}");
    }
    items
}

fn names(items: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// The pods of `site`'s json-server itself, by name.
fn held(mesh: &Mesh, site: &str) -> HashMap<String, Value> {
    let url = format!("http://{PAGES_LOCAL}/pods");
    let output = mesh.run_at(site, false, "curl", &["-sS", "-m", "10", &url]);
    let pods: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"));
    pods.as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
        .collect()
}

#[test]
fn a_paged_list_shows_each_replicated_resource_once_and_writes_reach_every_replica() {
    cheops_tests::require_root();
    let mut pages = meshed_service(
        "pages",
        PAGES.parse().unwrap(),
        PAGES_LOCAL.parse().unwrap(),
    );
    pages.resources = vec![pods_rule()];
    let options = MeshOptions {
        services: vec![pages],
        replication: ReplicationSettings {
            replay_every: Duration::from_millis(500),
            leader_wait: Duration::from_secs(10),
            ..ReplicationSettings::default()
        },
        request_timeout: Duration::from_secs(10),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(Topology::create(&SITES), &HashMap::new(), &options);
    let pod = |name: &str| json!({"id": name, "name": name});
    let seeds = [
        json!({"pods": [pod("a1"), pod("a2"), pod("a3")]}),
        json!({"pods": [pod("b1"), pod("b2")]}),
    ];
    let _servers: Vec<JsonServer1> = SITES
        .iter()
        .zip(&seeds)
        .map(|(site, seed)| {
            let netns = &mesh.topology.site(site).netns;
            netns.add_loopback_address("198.18.1.40/32");
            JsonServer1::start(netns, seed)
        })
        .collect();

    let metas: Vec<String> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| {
            let created = request(
                &mesh,
                "S1",
                "POST",
                "/pods",
                &[BOTH],
                Some(json!({"name": name})),
            );
            assert_eq!(created.status, 201, "{}", created.raw);
            assert_eq!(
                created.header("x-cheops-replicas"),
                Some("S1=ok, S2=ok"),
                "{}",
                created.raw
            );
            json_of(&created)["id"].as_str().unwrap().to_owned()
        })
        .collect();

    // Walking a replicated list page by page: every pod, each replicated one once.
    let all = walk(&mesh, "S2", &[BOTH]);
    assert_eq!(
        names(&all),
        ["a1", "a2", "a3", "b1", "b2", "r1", "r2", "r3"],
        "{all:?}"
    );
    for (meta, name) in metas.iter().zip(["r1", "r2", "r3"]) {
        let shown: Vec<&Value> = all.iter().filter(|i| i["name"] == name).collect();
        assert_eq!(shown[0]["id"], meta.as_str(), "{shown:?}");
    }
    // Without scope, one site's pages, its replicas under their meta-IDs.
    let local = walk(&mesh, "S2", &[]);
    assert_eq!(names(&local), ["b1", "b2", "r1", "r2", "r3"]);
    assert!(local
        .iter()
        .filter(|i| i["name"].as_str().unwrap().starts_with('r'))
        .all(|i| metas.contains(&i["id"].as_str().unwrap().to_owned())));

    // Every site holds the whole mapping: the last create's travels on its own 100 ms after
    // it, when no operation came to carry it (docs/replication.md).
    let whole = |site: &str| {
        let view = mesh.site(site).agent.replicas();
        let mapped = view.replicants.len() == 3
            && view
                .replicants
                .iter()
                .all(|replicant| replicant.replicas.iter().all(|r| r.local_id.is_some()));
        (mapped, view)
    };
    for site in SITES {
        let mapped = wait_until(Duration::from_secs(5), || whole(site).0);
        assert!(mapped, "{site}: {:?}", whole(site).1);
    }

    // An update by meta-ID, without scope, from the site that does not lead.
    let patched = request(
        &mesh,
        "S2",
        "PATCH",
        &format!("/pods/{}", metas[0]),
        &[],
        Some(json!({"size": 1})),
    );
    assert_eq!(patched.status, 200, "{}", patched.raw);
    for site in SITES {
        assert_eq!(held(&mesh, site)["r1"]["size"], 1, "{site}");
    }

    // S2 cut off during an update and a delete: it catches up after the heal.
    mesh.topology.cut("S2");
    let patched = request(
        &mesh,
        "S1",
        "PATCH",
        &format!("/pods/{}", metas[1]),
        &[],
        Some(json!({"size": 2})),
    );
    assert_eq!(patched.status, 200, "{}", patched.raw);
    let deleted = request(
        &mesh,
        "S1",
        "DELETE",
        &format!("/pods/{}", metas[2]),
        &[],
        None,
    );
    assert_eq!(deleted.status, 200, "{}", deleted.raw);
    assert!(held(&mesh, "S2").contains_key("r3"));
    mesh.topology.heal("S2");
    let caught_up = wait_until(Duration::from_secs(20), || {
        let pods = held(&mesh, "S2");
        pods["r2"]["size"] == 2 && !pods.contains_key("r3")
    });
    assert!(caught_up, "{:?}", held(&mesh, "S2"));

    // A delete by meta-ID reaches both sites; the seeds stay.
    let deleted = request(
        &mesh,
        "S2",
        "DELETE",
        &format!("/pods/{}", metas[0]),
        &[],
        None,
    );
    assert_eq!(deleted.status, 200, "{}", deleted.raw);
    for (site, own) in SITES.iter().zip([vec!["a1", "a2", "a3"], vec!["b1", "b2"]]) {
        let mut left: Vec<String> = held(&mesh, site).into_keys().collect();
        left.sort();
        let mut expected: Vec<String> = own.iter().map(|s| s.to_string()).collect();
        expected.push("r2".into());
        assert_eq!(left, expected, "{site}");
    }
}
