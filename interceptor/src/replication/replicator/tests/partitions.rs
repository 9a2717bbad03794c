//! Partitions and restarts: a replica cut off or a leader restarted gets every operation it
//! missed, once, and the sites end in the same state.
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_gets_every_missed_operation_once_even_across_a_leader_restart() {
    let test = Test::new();
    let mut metas = Vec::new();
    for n in 0..10 {
        let leader = SITES[n % 2];
        let created = test
            .request(leader, all_of(&SITES), "POST", "/pods", json!({"n": n}))
            .await;
        metas.push(meta_of(&created));
    }
    test.cut("Site3");
    for update in 0..50 {
        let meta = &metas[update % 10];
        let site = ["Site1", "Site2"][update % 2];
        let answer = test
            .unscoped(
                site,
                "PATCH",
                &format!("/pods/{meta}"),
                json!({"v": update}),
            )
            .await;
        assert!(answer.is_success(), "{answer:?}");
        assert!(
            answer
                .header(REPLICAS_HEADER)
                .unwrap()
                .contains("Site3=unreachable"),
            "{answer:?}"
        );
    }
    for meta in &metas[..10] {
        let answer = test
            .unscoped("Site2", "DELETE", &format!("/pods/{meta}"), json!(null))
            .await;
        assert!(answer.is_success(), "{answer:?}");
    }
    // Site3 still serves its own (stale) copies while cut off.
    assert_eq!(test.state("Site3").len(), 10);
    // The leader of half of them crashes and comes back: its log is still there.
    test.stop("Site1").await;
    test.start("Site1");
    test.heal("Site3");
    test.converge().await;
    for site in SITES {
        assert!(
            test.state(site).is_empty(),
            "{site}: {:?}",
            test.state(site)
        );
    }
    assert_eq!(test.received("Site3", "PATCH"), 50);
    assert_eq!(test.received("Site3", "DELETE"), 10);
    assert_eq!(test.received("Site1", "PATCH"), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_into_the_same_state_everywhere() {
    let test = Test::new();
    let mut metas = Vec::new();
    for n in 0..5 {
        let created = test
            .request("Site1", all_of(&SITES), "POST", "/pods", json!({"n": n}))
            .await;
        metas.push(meta_of(&created));
    }
    test.cut("Site3");
    // Created while Site3 is away: it gets the create first, then the updates.
    let late = test
        .request("Site1", all_of(&SITES), "POST", "/pods", json!({"n": 5}))
        .await;
    assert_eq!(
        late.header(REPLICAS_HEADER),
        Some("Site1=ok, Site2=ok, Site3=unreachable")
    );
    metas.push(meta_of(&late));
    for (update, meta) in metas.iter().enumerate() {
        test.unscoped(
            "Site2",
            "PATCH",
            &format!("/pods/{meta}"),
            json!({"v": update}),
        )
        .await;
    }
    test.unscoped(
        "Site1",
        "DELETE",
        &format!("/pods/{}", metas[0]),
        json!(null),
    )
    .await;
    test.heal("Site3");
    test.converge().await;
    let expected = test.state("Site1");
    assert_eq!(expected.len(), 5);
    assert_eq!(test.state("Site2"), expected);
    assert_eq!(test.state("Site3"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_delivered_twice_is_applied_once() {
    let test = Test::new();
    let created = test
        .request(
            "Site1",
            all_of(&["Site1", "Site2"]),
            "POST",
            "/pods",
            json!({}),
        )
        .await;
    let meta = MetaId::parse(&meta_of(&created)).unwrap();
    let replicant = test.at("Site1").store.replicant(&meta).unwrap();
    let call = Call {
        service: "pods".into(),
        method: "PATCH".into(),
        target: format!("/pods/{meta}"),
        headers: vec![],
        body: json!({"v": 1}).to_string(),
    };
    for _ in 0..2 {
        let message = Message::Apply {
            op_id: "Site1#99".into(),
            replicant: replicant.clone(),
            change: Change::Write(call.clone()),
            mappings: Vec::new(),
        };
        test.at("Site2").handle(message).await.unwrap();
    }
    assert_eq!(test.received("Site2", "PATCH"), 1);
}
