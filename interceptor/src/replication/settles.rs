//! The leader settles each replica's answer (records it in its log) durably before the request
//! waiting for it hears of it. Answers that arrive together are settled in one write
//! transaction, so one commit (one fsync) instead of one per replica: a group commit. The
//! commit runs on tokio's blocking pool, never on an async worker.
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::{
    records::Applied,
    store::{Store, StoreError},
};

/// Answers of one site to record: it applied each operation `seq` with its `Applied`.
struct Settle {
    site: String,
    answers: Vec<(u64, Applied)>,
    recorded: oneshot::Sender<Result<(), StoreError>>,
}

pub struct Settles {
    store: Arc<Store>,
    /// Answers waiting for the next commit.
    queue: mpsc::UnboundedSender<Settle>,
    /// The queue's other end, held by the one settle that commits what is queued; the others
    /// wait their turn behind it.
    committing: Mutex<mpsc::UnboundedReceiver<Settle>>,
}

impl Settles {
    pub fn new(store: Arc<Store>) -> Settles {
        let (queue, queued) = mpsc::unbounded_channel();
        Settles {
            store,
            queue,
            committing: Mutex::new(queued),
        }
    }

    /// Records that `site` applied each operation `seq` of `answers` with its `Applied`;
    /// returns once that is durable, committed with whatever other answers were queued by then.
    pub async fn settle(&self, site: &str, answers: Vec<(u64, Applied)>) -> Result<(), StoreError> {
        let (recorded, result) = oneshot::channel();
        // The receiver lives as long as `self`, so the queue is open.
        let _ = self.queue.send(Settle {
            site: site.to_owned(),
            answers,
            recorded,
        });
        {
            let mut queued = self.committing.lock().await;
            let mut batch = Vec::new();
            // Empty when the turn before this one committed this answer already.
            while let Ok(settle) = queued.try_recv() {
                batch.push(settle);
            }
            if !batch.is_empty() {
                let store = self.store.clone();
                // Answered through each settle's channel; a commit that did not run (the
                // runtime shuts down) drops them, which the wait below reports.
                let _ = tokio::task::spawn_blocking(move || commit(&store, batch)).await;
            }
        }
        result.await.unwrap_or_else(|_| {
            Err(StoreError::Interrupted {
                store: self.store.path().to_owned(),
            })
        })
    }
}

/// Commits `batch` in one transaction. If that fails, each settle is tried on its own, so that
/// one that cannot be recorded (its operation is gone) does not hold back the others.
fn commit(store: &Store, batch: Vec<Settle>) {
    let all: Vec<(u64, &str, &Applied)> = batch.iter().flat_map(Settle::answers).collect();
    let together = store.settle_all(&all);
    for settle in batch {
        let result = match &together {
            Ok(()) => Ok(()),
            Err(_) => store.settle_all(&settle.answers().collect::<Vec<_>>()),
        };
        let _ = settle.recorded.send(result);
    }
}

impl Settle {
    fn answers(&self) -> impl Iterator<Item = (u64, &str, &Applied)> {
        let site = self.site.as_str();
        self.answers
            .iter()
            .map(move |(seq, applied)| (*seq, site, applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{
        call::Call,
        ids::{LocalId, MetaId},
        records::{Change, ReplicaState, Replicant},
    };
    use crate::resources::MetaIdShape;

    fn applied(local_id: i64) -> Applied {
        Applied {
            status: 201,
            local_id: Some(LocalId::Number(local_id)),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_settled_together_are_all_recorded_and_one_bad_one_fails_alone() {
        let dir = std::env::temp_dir().join(format!("cheops-settles-{}", ulid::Ulid::generate()));
        let store = Arc::new(Store::open(&dir.join("s.redb")).unwrap());
        let meta = MetaId::generate(MetaIdShape::Cheops);
        let sites: Vec<String> = (1..=16).map(|i| format!("S{i}")).collect();
        let replicant = Replicant::created(meta.clone(), "pods".into(), "S1".into(), &sites);
        let call = Call {
            service: "pods".into(),
            method: "POST".into(),
            target: "/pods".into(),
            headers: Vec::new(),
            body: "{}".into(),
        };
        let operation = store
            .append(Some(&replicant), &meta, Change::Create(call), &sites)
            .unwrap();
        let settles = Arc::new(Settles::new(store.clone()));
        let mut answers = Vec::new();
        for (i, site) in sites.iter().enumerate() {
            let settles = settles.clone();
            let site = site.clone();
            answers.push(tokio::spawn(async move {
                let answers = vec![(operation.seq, applied(i as i64))];
                settles.settle(&site, answers).await
            }));
        }
        // An answer to an operation the log does not hold.
        let missing = settles
            .settle("S1", vec![(operation.seq + 1, applied(0))])
            .await;
        assert!(
            matches!(missing, Err(StoreError::NoOperation { .. })),
            "{missing:?}"
        );
        for answer in answers {
            answer.await.unwrap().unwrap();
        }
        assert!(store.pending_by_site().unwrap().is_empty());
        let known = store.replicant(&meta).unwrap().unwrap();
        for (i, replica) in known.replicas.iter().enumerate() {
            assert_eq!(
                replica.local_id,
                Some(LocalId::Number(i as i64)),
                "{replica:?}"
            );
            assert_eq!(replica.state, ReplicaState::Ok);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
