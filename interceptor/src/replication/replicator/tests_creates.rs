//! Creates that some or every site refuses, and the mapping every replica holds, on the
//! three in-process sites of `tests`.
use serde_json::{json, Value};

use super::tests::{all_of, body, meta_of, Test};
use super::*;
use crate::replication::records::ReplicaState;

const SITES: [&str; 3] = ["Site1", "Site2", "Site3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_refused_everywhere_records_nothing_and_answers_as_the_application() {
    let test = Test::new();
    let refused = test
        .request(
            "Site1",
            all_of(&["Site1", "Site2"]),
            "POST",
            "/pods",
            json!({"refused_by": [100, 200]}),
        )
        .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(body(&refused), json!({"error": "bad pod"}));
    assert_eq!(refused.header(META_ID_HEADER), None);
    assert_eq!(refused.header(REPLICAS_HEADER), None);
    for site in SITES {
        let view = test.at(site).view().unwrap();
        assert!(view.replicants.is_empty(), "{site}: {:?}", view.replicants);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_refused_by_some_keeps_the_replicas_made_and_says_which_failed() {
    let test = Test::new();
    let created = test
        .request(
            "Site1",
            all_of(&["Site1", "Site2", "Site3"]),
            "POST",
            "/pods",
            json!({"refused_by": [200]}),
        )
        .await;
    let meta = meta_of(&created);
    assert_eq!(
        created.header(REPLICAS_HEADER),
        Some("Site1=ok, Site2=failed (400), Site3=ok")
    );
    test.converge().await;
    for site in ["Site1", "Site3"] {
        let replicant = test.at(site).view().unwrap().replicants;
        let sites: Vec<&str> = replicant[0]
            .replicas
            .iter()
            .map(|r| r.site.as_str())
            .collect();
        assert_eq!(sites, ["Site1", "Site3"], "{site}");
    }
    assert!(test.at("Site2").view().unwrap().replicants.is_empty());
    // An update reaches the replicas that exist, and is not waiting for the one that refused.
    let patched = test
        .unscoped(
            "Site3",
            "PATCH",
            &format!("/pods/{meta}"),
            json!({"size": 2}),
        )
        .await;
    assert_eq!(patched.header(REPLICAS_HEADER), Some("Site1=ok, Site3=ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_holds_the_whole_mapping_also_after_catching_up() {
    let test = Test::new();
    test.cut("Site3");
    let created = test
        .request(
            "Site1",
            all_of(&["Site1", "Site2", "Site3"]),
            "POST",
            "/pods",
            json!({"name": "m"}),
        )
        .await;
    let meta = MetaId::parse(&meta_of(&created)).unwrap();
    test.heal("Site3");
    test.converge().await;
    let leader = test.at("Site1").store.replicant(&meta).unwrap().unwrap();
    assert!(leader
        .replicas
        .iter()
        .all(|r| r.state == ReplicaState::Ok && r.local_id.is_some()));
    for site in SITES {
        let held = test.at(site).store.replicant(&meta).unwrap().unwrap();
        assert_eq!(held.replicas, leader.replicas, "{site}");
    }
    // A delete marks it deleted everywhere.
    let deleted = test
        .unscoped("Site2", "DELETE", &format!("/pods/{meta}"), Value::Null)
        .await;
    assert!(deleted.is_success(), "{deleted:?}");
    test.converge().await;
    for site in SITES {
        assert!(
            test.at(site)
                .store
                .replicant(&meta)
                .unwrap()
                .unwrap()
                .deleted,
            "{site}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_travels_with_the_next_create_in_one_message() {
    let test = Test::new();
    let scope = all_of(&["Site1", "Site2", "Site3"]);
    let create = |name: &str| {
        let scope = scope.clone();
        let body = json!({ "name": name });
        let test = &test;
        async move { test.request("Site1", scope, "POST", "/pods", body).await }
    };
    let first = MetaId::parse(&meta_of(&create("m1").await)).unwrap();
    let second = MetaId::parse(&meta_of(&create("m2").await)).unwrap();
    // The first create, then the second with the first's mapping: two messages, not three.
    assert_eq!(test.applies("Site2"), 2);
    assert_eq!(test.applies("Site3"), 2);
    // The second's mapping goes on its own, once no operation came to carry it.
    test.converge().await;
    assert_eq!(test.applies("Site2"), 3);
    for meta in [&first, &second] {
        let leader = test.at("Site1").store.replicant(meta).unwrap().unwrap();
        for site in SITES {
            let held = test.at(site).store.replicant(meta).unwrap().unwrap();
            assert_eq!(held.replicas, leader.replicas, "{site}");
        }
    }
}
