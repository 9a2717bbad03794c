//! Settling replicas' answers in the leader's log, several in one transaction.
use std::collections::BTreeMap;

use redb::ReadableTable;

use super::{encode, Store, StoreError, LOG, PENDING, REPLICANTS};
use crate::replication::records::{Applied, Change, Operation, ReplicaState, Replicant};

impl Store {
    /// Records that each `(seq, site, applied)`'s site applied operation `seq` with `applied`,
    /// and what that teaches about the replicant (the replica's local ID after a create), all
    /// in one durable step: answers that arrive together share one commit, and an operation
    /// answered by several sites is read and written once.
    pub fn settle_all(&self, settled: &[(u64, &str, &Applied)]) -> Result<(), StoreError> {
        let mut by_seq: BTreeMap<u64, Vec<(&str, &Applied)>> = BTreeMap::new();
        for &(seq, site, applied) in settled {
            by_seq.entry(seq).or_default().push((site, applied));
        }
        self.write(|txn| {
            for (seq, answers) in &by_seq {
                self.settle_in(txn, *seq, answers)?;
            }
            Ok(())
        })
    }

    fn settle_in(
        &self,
        txn: &redb::WriteTransaction,
        seq: u64,
        answers: &[(&str, &Applied)],
    ) -> Result<(), StoreError> {
        let mut log = txn.open_table(LOG)?;
        let mut operation: Operation = {
            let bytes = log
                .get(seq)?
                .ok_or_else(|| StoreError::NoOperation { seq })?;
            self.decode(seq, bytes.value())?
        };
        let mut pending = txn.open_table(PENDING)?;
        for &(site, applied) in answers {
            operation
                .applied
                .insert(site.to_owned(), Some(applied.status));
            pending.remove((site, seq))?;
        }
        let bytes = encode(seq, &operation)?;
        log.insert(seq, bytes.as_slice())?;
        drop(log);
        drop(pending);
        if let Change::Create(_) = operation.change {
            let table = txn.open_table(REPLICANTS)?;
            let found = table
                .get(operation.meta_id.as_str())?
                .map(|bytes| self.decode::<Replicant>(&operation.meta_id, bytes.value()))
                .transpose()?;
            drop(table);
            if let Some(mut replicant) = found {
                for &(site, applied) in answers {
                    if let Some(replica) = replicant.replica_mut(site) {
                        match &applied.local_id {
                            Some(local_id) => {
                                replica.local_id = Some(local_id.clone());
                                replica.state = ReplicaState::Ok;
                            }
                            None => replica.state = ReplicaState::Failed(applied.status),
                        }
                    }
                }
                // The sites that answered with a local ID: their instance just gave it.
                let created: Vec<&str> = answers
                    .iter()
                    .filter(|(_, applied)| applied.local_id.is_some())
                    .map(|(site, _)| *site)
                    .collect();
                self.put_replicant_in(txn, &replicant, &created)?;
            }
        }
        Ok(())
    }
}
