//! The store across reopening: the log, what each site has to apply, applied operations.
use std::path::PathBuf;

use super::*;
use crate::replication::call::Call;
use crate::resources::MetaIdShape;

fn replicant(meta_id: &MetaId) -> Replicant {
    let sites = ["Site1".to_owned(), "Site2".to_owned()];
    Replicant::created(meta_id.clone(), "pods".into(), "Site1".into(), &sites)
}

fn call(method: &str, target: &str) -> Call {
    Call {
        service: "pods".into(),
        method: method.into(),
        target: target.into(),
        headers: vec![],
        body: "{}".into(),
    }
}

#[test]
fn the_log_survives_reopening_and_keeps_what_each_site_has_to_apply() {
    let dir = tempdir();
    let path = dir.join("store.redb");
    let meta = MetaId::generate(MetaIdShape::Cheops);
    let sites = ["Site1".to_owned(), "Site2".to_owned()];
    {
        let store = Store::open(&path).unwrap();
        let create = store
            .append(
                Some(&replicant(&meta)),
                &meta,
                Change::Create(call("POST", "/pods")),
                &sites,
            )
            .unwrap();
        assert_eq!(create.seq, 1);
        let write = Change::Write(call("PATCH", &format!("/pods/{meta}")));
        assert_eq!(store.append(None, &meta, write, &sites).unwrap().seq, 2);
        let applied = Applied {
            status: 201,
            local_id: Some(LocalId::Number(4)),
        };
        store.settle_all(&[(1, "Site2", &applied)]).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let seqs = |site| -> Vec<u64> {
        store
            .pending(site, 10)
            .unwrap()
            .iter()
            .map(|o| o.seq)
            .collect()
    };
    assert_eq!(seqs("Site1"), [1, 2]);
    assert_eq!(seqs("Site2"), [2]);
    let replicant = store.replicant(&meta).unwrap().unwrap();
    assert_eq!(
        replicant.replica("Site2").unwrap().local_id,
        Some(LocalId::Number(4))
    );
    assert_eq!(replicant.replica("Site2").unwrap().state, ReplicaState::Ok);
    assert_eq!(
        store.meta_of("pods", "Site2", &LocalId::Number(4)).unwrap(),
        Some(meta.clone())
    );
    assert_eq!(
        store
            .meta_of("pods", "Site2", &LocalId::Text("4".into()))
            .unwrap(),
        None
    );
    assert_eq!(store.pending_by_site().unwrap()["Site1"], 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_applied_operation_is_remembered_with_the_local_id_it_gave() {
    let dir = tempdir();
    let store = Store::open(&dir.join("s.redb")).unwrap();
    let meta = MetaId::generate(MetaIdShape::Cheops);
    let mut mine = replicant(&meta);
    mine.replicas[1].local_id = Some(LocalId::Text("k".into()));
    let applied = Applied {
        status: 201,
        local_id: Some(LocalId::Text("k".into())),
    };
    store
        .record_applied("Site1#1", &applied, Some(&mine), None, None, Some("Site2"))
        .unwrap();
    assert_eq!(store.applied("Site1#1").unwrap(), Some(applied));
    assert_eq!(store.applied("Site1#2").unwrap(), None);
    // The leader's later view, which does not know the local ID yet, does not erase it.
    let write = Change::Write(call("PATCH", &format!("/pods/{meta}")));
    store
        .append(Some(&replicant(&meta)), &meta, write, &[])
        .unwrap();
    let known = store.replicant(&meta).unwrap().unwrap();
    assert_eq!(
        known.replica("Site2").unwrap().local_id,
        Some(LocalId::Text("k".into()))
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_settled_create_takes_over_the_local_id_its_replica_gave_and_nothing_else_takes_it_back() {
    let dir = tempdir();
    let store = Store::open(&dir.join("s.redb")).unwrap();
    let sites = ["Site1".to_owned(), "Site2".to_owned()];
    let created = |local_id| Applied {
        status: 201,
        local_id: Some(LocalId::Number(local_id)),
    };
    // Creates `meta`, its answers settled together: `at_site1` at Site1, and 4 at Site2.
    let create = |meta: &MetaId, at_site1| {
        let change = Change::Create(call("POST", "/pods"));
        let replicant = replicant(meta);
        let seq = store
            .append(Some(&replicant), meta, change, &sites)
            .unwrap()
            .seq;
        let answers = [
            (seq, "Site1", &created(at_site1)),
            (seq, "Site2", &created(4)),
        ];
        store.settle_all(&answers).unwrap();
    };
    let named = || store.meta_of("pods", "Site2", &LocalId::Number(4)).unwrap();
    let lost = MetaId::generate(MetaIdShape::Cheops);
    create(&lost, 7);
    assert_eq!(named(), Some(lost.clone()));
    // Site2's instance lost it, and gave its ID to the next create.
    let next = MetaId::generate(MetaIdShape::Cheops);
    create(&next, 8);
    assert_eq!(named(), Some(next.clone()));
    // The lost one's records (a mapping, a write's) no longer take the ID back.
    let known = store.replicant(&lost).unwrap().unwrap();
    store
        .append(Some(&known), &lost, Change::Map, &sites[1..])
        .unwrap();
    assert_eq!(named(), Some(next));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn carried_mappings_are_applied_in_the_step_that_records_the_intent_or_in_their_own() {
    let dir = tempdir();
    let path = dir.join("s.redb");
    let (first, second) = (
        MetaId::generate(MetaIdShape::Cheops),
        MetaId::generate(MetaIdShape::Cheops),
    );
    let carried = |op_id: &str, meta: &MetaId| Carried {
        op_id: op_id.into(),
        replicant: replicant(meta),
    };
    {
        let store = Store::open(&path).unwrap();
        store
            .record_intent("Site1#3", &[carried("Site1#2", &first)])
            .unwrap();
        store
            .record_carried(&[carried("Site1#4", &second)])
            .unwrap();
        store.record_carried(&[]).unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(store.intended("Site1#3").unwrap());
    for (op_id, meta) in [("Site1#2", &first), ("Site1#4", &second)] {
        let applied = store.applied(op_id).unwrap().expect("the mapping applied");
        assert_eq!((applied.status, applied.local_id), (204, None), "{op_id}");
        assert_eq!(store.replicant(meta).unwrap(), Some(replicant(meta)));
    }
    assert_eq!(store.applied("Site1#3").unwrap(), None);
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cheops-store-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
