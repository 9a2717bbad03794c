//! A cross resource deleted where it lives is forgotten by every site of its expression, a
//! site cut off at the time too, once it is back.
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_resource_deleted_where_it_lives_is_forgotten_by_every_site_of_its_expression() {
    let test = Test::new();
    let cross = Plan::SpreadOver {
        parts: SITES.iter().map(|site| Plan::site(site)).collect(),
        prime: "Site2".into(),
    };
    let created = test
        .request("Site1", cross, "POST", "/pods", json!({"name": "x"}))
        .await;
    let meta = meta_of(&created);
    let meta_id = MetaId::parse(&meta).unwrap();
    for site in SITES {
        assert!(
            test.at(site).store.cross(&meta_id).unwrap().is_some(),
            "{site}"
        );
    }
    test.cut("Site3");
    // Deleted from a site where it does not live: done where it does.
    let target = format!("/pods/{meta}");
    let deleted = test.unscoped("Site1", "DELETE", &target, Value::Null).await;
    assert!(deleted.is_success(), "{deleted:?}");
    assert!(test.state("Site2").is_empty());
    for site in ["Site1", "Site2"] {
        assert!(
            test.at(site).store.cross(&meta_id).unwrap().is_none(),
            "{site}"
        );
        let read = test.unscoped(site, "GET", &target, Value::Null).await;
        assert_eq!(read.status, 404, "{site}: {read:?}");
    }
    // Site3 forgets it when it is back.
    assert!(test.at("Site3").store.cross(&meta_id).unwrap().is_some());
    test.heal("Site3");
    test.converge().await;
    assert!(test.at("Site3").store.cross(&meta_id).unwrap().is_none());
}
