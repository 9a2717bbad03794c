//! Replication (`&`) and cross (`%`) end to end, as root: three sites, each with its own
//! json-server (cheops_tests::replicated). The clients are curl in each site's workload cgroup;
//! the truth is each site's json-server, read directly.
use cheops_tests::replicated::{
    assert_local_ids_are_free_again, assert_ok, created_meta, direct, direct_pods, json_of, mesh,
    request, seed_count, ALL, SITES,
};
use serde_json::{json, Value};

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
