//! A replica's instance that loses a resource it acknowledged: json-server answers a create
//! before its file is written (lowdb's asynchronous adapter), so a `kill -9` in between
//! forgets the resource, and its ID (the highest plus one) goes to the next create.
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_resource_its_instance_lost_never_reach_the_one_given_its_id() {
    let test = Test::new();
    let a = test.create_pod("Site3", &["Site3", "Site2"], "a").await;
    // Site2's instance loses `a` (201, the first ID it gives), as json-server killed before
    // its file write does.
    let lost = lock(&test.mesh.apps)
        .get_mut("Site2")
        .unwrap()
        .items
        .remove("201");
    assert_eq!(lost.map(|item| item["name"].clone()), Some(json!("a")));
    // The next create at Site2 gets `a`'s ID there.
    let b = test.create_pod("Site2", &["Site2", "Site3"], "b").await;
    // Read at Site2, `a` comes from Site3, which still holds it, not from the ID given to `b`.
    let read = test
        .unscoped("Site2", "GET", &format!("/pods/{a}"), Value::Null)
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    let read: Value = serde_json::from_str(&read.body).unwrap();
    assert_eq!(read["name"], "a", "{read}");
    // `a` is gone at Site2: its update is answered 404 there and must leave `b` alone; so
    // must its delete. `b`'s own update reaches `b` at Site2.
    write(&test, "Site3", &a, "PATCH", json!({"v": 1})).await;
    write(&test, "Site2", &b, "PATCH", json!({"v": 2})).await;
    write(&test, "Site3", &a, "PATCH", json!({"v": 3})).await;
    write(&test, "Site3", &a, "DELETE", Value::Null).await;
    test.converge().await;
    let held = lock(&test.mesh.apps)["Site2"].items.get("201").cloned();
    assert_eq!(
        held,
        Some(json!({"id": 201, "name": "b", "v": 2})),
        "Site2's {b} after writes to the lost {a}"
    );
    let b_at_site2 = test.state("Site2").remove(&b);
    assert_eq!(b_at_site2, Some(json!({"name": "b", "v": 2})));
}

/// `method` on `meta` from `site`, unscoped; it must succeed.
async fn write(test: &Test, site: &str, meta: &str, method: &str, fields: Value) {
    let target = format!("/pods/{meta}");
    let answer = test.unscoped(site, method, &target, fields).await;
    assert!(answer.is_success(), "{method} {target}: {answer:?}");
}
