//! A replica's daemon that dies between its instance's answer and the record of it: the
//! operation, offered again after the restart, is not applied again.
use super::*;

impl Test {
    fn crash_after_instance(&self, site: &str) {
        lock(&self.mesh.crashing).insert(site.to_owned());
    }

    /// Restarts `site` on its store, and replays until every site has everything.
    async fn restart_and_converge(&self, site: &str) {
        self.stop(site).await;
        self.start(site);
        self.heal(site);
        self.converge().await;
    }

    /// `{"name": "a"}` created at every site, led by Site1: its meta-ID.
    async fn create_a(&self) -> String {
        let created = self
            .request(
                "Site1",
                all_of(&SITES),
                "POST",
                "/pods",
                json!({"name": "a"}),
            )
            .await;
        meta_of(&created)
    }

    /// Each site holds the leader's state; `site` got `method` once per operation.
    fn assert_applied_once(&self, site: &str, method: &str, times: usize) {
        assert_eq!(self.received(site, method), times, "{method}s at {site}");
        for other in SITES {
            assert_eq!(self.state(other), self.state("Site1"), "{other}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_between_its_instance_and_its_record_applies_each_operation_once() {
    let test = Test::new();
    // A create whose ID the instance gives, then one whose ID the client chose.
    test.crash_after_instance("Site2");
    let meta = test.create_a().await;
    test.restart_and_converge("Site2").await;
    test.assert_applied_once("Site2", "POST", 1);
    test.crash_after_instance("Site2");
    let purple = json!({"id": "purple", "name": "p"});
    test.request("Site1", all_of(&SITES), "POST", "/pods", purple)
        .await;
    test.restart_and_converge("Site2").await;
    test.assert_applied_once("Site2", "POST", 2);

    // An update from a site that is not the leader, then a delete.
    test.crash_after_instance("Site2");
    let target = format!("/pods/{meta}");
    let updated = test
        .unscoped("Site3", "PATCH", &target, json!({"name": "b"}))
        .await;
    assert!(updated.is_success(), "{updated:?}");
    test.restart_and_converge("Site2").await;
    test.assert_applied_once("Site2", "PATCH", 1);
    assert_eq!(test.state("Site2")[&meta]["name"], "b");
    test.crash_after_instance("Site2");
    let deleted = test.unscoped("Site1", "DELETE", &target, Value::Null).await;
    assert!(deleted.is_success(), "{deleted:?}");
    test.restart_and_converge("Site2").await;
    test.assert_applied_once("Site2", "DELETE", 1);
    assert!(!test.state("Site2").contains_key(&meta));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_before_its_instance_got_the_call_applies_it_after_the_restart() {
    let test = Test::new();
    let meta = test.create_a().await;
    // The update's intent is recorded at Site2, then its instance is never reached.
    test.cut("Site2");
    let target = format!("/pods/{meta}");
    test.unscoped("Site1", "PATCH", &target, json!({"name": "b"}))
        .await;
    let pending = test.at("Site1").store.pending("Site2", 10).unwrap();
    let patch = pending
        .iter()
        .find(
            |operation| matches!(&operation.change, Change::Write(call) if call.method == "PATCH"),
        )
        .expect("the update waits in Site1's log for Site2");
    let op_id = &patch.op_id("Site1");
    test.at("Site2").store.record_intent(op_id, &[]).unwrap();
    test.restart_and_converge("Site2").await;
    test.assert_applied_once("Site2", "PATCH", 1);
    assert_eq!(test.state("Site2")[&meta]["name"], "b");
    assert!(!test.at("Site2").store.intended(op_id).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_offered_again_after_its_id_was_given_to_another_resource_leaves_that_one() {
    let test = Test::new();
    let a = test.create_pod("Site1", &["Site1", "Site2"], "a").await;
    // Site2's instance deletes `a`, then its daemon dies before recording it; Site1's log
    // keeps the delete for Site2, and Site1 is cut off before Site2 is back.
    test.crash_after_instance("Site2");
    let target = format!("/pods/{a}");
    let deleted = test.unscoped("Site1", "DELETE", &target, Value::Null).await;
    assert!(deleted.is_success(), "{deleted:?}");
    test.cut("Site1");
    test.stop("Site2").await;
    test.start("Site2");
    test.heal("Site2");
    // Back, Site2 first gets a create from another leader: its instance gives it the ID that
    // `a` had (the highest plus one).
    let b = test.create_pod("Site3", &["Site2", "Site3"], "b").await;
    test.heal("Site1");
    test.converge().await;
    let held = test.state("Site2");
    assert!(
        held.contains_key(&b),
        "the delete of {a} took {b} instead: {held:?}"
    );
    assert!(!held.contains_key(&a), "{held:?}");
    assert_eq!(
        test.received("Site2", "DELETE"),
        1,
        "the delete reached the instance once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_carried_by_a_create_is_recorded_with_its_intent_and_survives_a_crash() {
    let test = Test::new();
    let first = test.create_pod("Site1", &["Site1", "Site2"], "a").await;
    // The first create's mapping waits in Site1's log and travels with the second create,
    // after which Site2's daemon dies before recording that create's result.
    test.crash_after_instance("Site2");
    test.create_pod("Site1", &["Site1", "Site2"], "b").await;
    let pending = test.at("Site1").store.pending("Site2", 10).unwrap();
    let op_id = |wanted: fn(&Change) -> bool| {
        let operation = pending.iter().find(|operation| wanted(&operation.change));
        operation.expect("waiting in Site1's log").op_id("Site1")
    };
    let mapping = op_id(|change| matches!(change, Change::Map));
    let create = op_id(|change| matches!(change, Change::Create(_)));
    let site2 = test.at("Site2");
    assert!(site2.store.intended(&create).unwrap(), "{create} intended");
    let mapped = site2.store.applied(&mapping).unwrap();
    assert_eq!(mapped.map(|applied| applied.status), Some(204), "{mapping}");
    let known = site2.store.replicant(&MetaId::parse(&first).unwrap());
    let at_site1 = known
        .unwrap()
        .and_then(|known| known.replica("Site1").cloned());
    assert!(at_site1.and_then(|replica| replica.local_id).is_some());
    // Let go of Site2's replicator, which the restart stops.
    drop(site2);
    test.restart_and_converge("Site2").await;
    let posts = test.received("Site2", "POST");
    assert_eq!(posts, 2, "each create reached Site2's instance once");
    assert_eq!(test.state("Site2"), test.state("Site1"));
}
