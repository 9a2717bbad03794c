//! The durable store under faults, as root: a store on a full file system refuses writes with
//! an error naming it, keeps answering reads, and everything it acknowledged survives a
//! reopen; writes come back once there is room. A second opener is refused at once. The same
//! through an agent: `503` naming the store, reads and local traffic served.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use interceptor::replication::{
    call::Call,
    ids::MetaId,
    records::{Change, Replica, ReplicaState, Replicant},
    store::{Store, StoreError},
};

use cheops_tests::{
    mesh::{pod_rule, Answer, Mesh, MeshOptions, CATALOG},
    process::wait_until,
    sites::Topology,
    tmpfs::Tmpfs,
};
use interceptor::{config::ReplicationSettings, resources::MetaIdShape};

const SITES: [&str; 2] = ["Site1", "Site2"];

fn create(store: &Store, body_len: usize) -> Result<MetaId, StoreError> {
    let meta_id = MetaId::generate(MetaIdShape::Cheops);
    let replicant = Replicant {
        meta_id: meta_id.clone(),
        service: "pods".into(),
        leader: "Site1".into(),
        replicas: SITES
            .map(|site| Replica {
                site: site.into(),
                local_id: None,
                state: ReplicaState::Pending,
            })
            .into(),
        deleted: false,
    };
    let call = Call {
        service: "pods".into(),
        method: "POST".into(),
        target: "/pods".into(),
        headers: vec![],
        body: "x".repeat(body_len),
    };
    let sites = SITES.map(String::from);
    store.append(Some(&replicant), &meta_id, Change::Create(call), &sites)?;
    Ok(meta_id)
}

#[test]
fn a_full_store_refuses_writes_naming_itself_and_keeps_what_it_acknowledged() {
    let tmpfs = Tmpfs::mount(4096);
    let path = tmpfs.path().join("Site1.redb");
    let mut acknowledged = Vec::new();
    {
        let store = Store::open(&path).expect("opening the store");
        for _ in 0..20 {
            acknowledged.push(create(&store, 2000).expect("a write with room"));
        }
        let filler = tmpfs.fill();
        // Writes fail as soon as redb needs room; whatever it acknowledged before stays.
        let refusal = loop {
            match create(&store, 20_000) {
                Ok(meta_id) => acknowledged.push(meta_id),
                Err(refusal) => break refusal,
            }
            assert!(
                acknowledged.len() < 2000,
                "a full tmpfs never refused a write"
            );
        };
        let message = refusal.to_string();
        assert!(
            message.contains("space") || message.contains("I/O"),
            "{message}"
        );
        // Reads go on (the store is reopened after the I/O error).
        for meta_id in &acknowledged {
            let replicant = store.replicant(meta_id).expect("a read of a full store");
            assert!(
                replicant.is_some(),
                "{meta_id} acknowledged, then not found"
            );
        }
        assert_eq!(
            store.pending_by_site().expect("a read")["Site2"],
            acknowledged.len()
        );
        // Still full: still refused.
        assert!(create(&store, 20_000).is_err(), "a write to a full store");
        std::fs::remove_file(filler).expect("freeing the space");
        acknowledged.push(create(&store, 2000).expect("a write once there is room again"));
    }
    let store = Store::open(&path).expect("reopening the store");
    for meta_id in &acknowledged {
        assert!(
            store.replicant(meta_id).expect("a read").is_some(),
            "{meta_id} was acknowledged, and lost across a reopen"
        );
    }
    assert_eq!(
        store.pending("Site2", usize::MAX).expect("a read").len(),
        acknowledged.len(),
        "every acknowledged operation is in the log, once"
    );
}

#[test]
fn a_second_opener_is_refused_at_once_naming_the_store() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("Site1.redb");
    let _first = Store::open(&path).expect("opening the store");
    let started = Instant::now();
    let refusal = match Store::open(&path) {
        Ok(_) => panic!("a second opener of {} was let in", path.display()),
        Err(refusal) => refusal,
    };
    assert!(started.elapsed() < Duration::from_secs(2), "refused late");
    let message = refusal.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("another"), "{message}");
}

/// `method URL` with `scope` and a JSON `body` from `site`'s workload.
fn call(mesh: &Mesh, site: &str, method: &str, url: &str, body: Option<&str>) -> Answer {
    let scope = "x-scope: {catalog: Site1 & Site2}";
    let mut args = vec!["-sS", "-i", "-m", "20", "-X", method, "-H", scope];
    if let Some(body) = body {
        args.extend(["-H", "content-type: application/json", "-d", body]);
    }
    args.push(url);
    Answer::from(mesh.run_at(site, true, "curl", &args))
}

#[test]
fn an_agent_whose_store_is_full_refuses_writes_with_503_and_keeps_serving() {
    let options = MeshOptions {
        catalog_resources: vec![pod_rule()],
        replication: ReplicationSettings {
            replica_timeout: Duration::from_secs(2),
            leader_wait: Duration::from_secs(2),
            ..ReplicationSettings::default()
        },
        catalog_data: ["Site1", "Site2"]
            .map(|site| {
                let data = serde_json::json!({"pods": [], "products": [{"id": 1, "name": site}]});
                (site.to_owned(), data)
            })
            .into(),
        ..MeshOptions::default()
    };
    let mut mesh = Mesh::start_with(
        Topology::create(&["Site1", "Site2"]),
        &HashMap::new(),
        &options,
    );
    let tmpfs = Tmpfs::mount(8 * 1024);
    mesh.move_store("Site1", tmpfs.path());
    let pods = format!("http://{CATALOG}/pods");
    let filler = tmpfs.fill();
    // redb keeps some room in its file: writes go on until it needs more.
    let mut acknowledged = Vec::new();
    let refused = loop {
        let body = format!(
            r#"{{"name": "kept {}", "pad": "{}"}}"#,
            acknowledged.len(),
            "x".repeat(20_000)
        );
        let answer = call(&mesh, "Site1", "POST", &pods, Some(&body));
        // 202: in the leader's log (durable), not applied anywhere yet.
        if !matches!(answer.status, 201 | 202) {
            break answer;
        }
        let meta = answer.header("x-cheops-meta-id").expect("a meta-ID");
        acknowledged.push(meta.to_owned());
        assert!(
            acknowledged.len() < 200,
            "a full store never refused a write"
        );
    };
    assert_eq!(refused.status, 503, "{}", refused.raw);
    assert_eq!(refused.header("retry-after"), Some("1"), "{}", refused.raw);
    assert!(refused.body.contains("Site1.redb"), "{}", refused.raw);
    // Reads and local traffic go on.
    let listed = call(&mesh, "Site1", "GET", &pods, None);
    assert_eq!(listed.status, 200, "{}", listed.raw);
    let products = mesh.curl("Site1", &format!("http://{CATALOG}/products"), &[]);
    assert_eq!(products.status, 200, "{}", products.raw);
    // Room again, and a restart on the same store: what was acknowledged is there.
    std::fs::remove_file(filler).expect("freeing the space");
    mesh.restart_agent("Site1");
    for meta in &acknowledged {
        let item = format!("{pods}/{meta}");
        let at_both = wait_until(Duration::from_secs(20), || {
            ["Site1", "Site2"]
                .iter()
                .all(|site| call(&mesh, site, "GET", &item, None).status == 200)
        });
        assert!(at_both, "{meta} was acknowledged, and is not at both sites");
    }
    let created = call(&mesh, "Site1", "POST", &pods, Some(r#"{"name": "room"}"#));
    assert_eq!(created.status, 201, "{}", created.raw);
}
