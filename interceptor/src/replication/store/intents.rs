//! A replica's intents: what it is about to send to its instance, recorded first so that an
//! operation is applied once across crashes. The mappings of the leader's log that travel with
//! an operation (`exchange::Mapping`) are recorded as applied in the same step: a create that
//! carries the last create's mapping then commits twice here (its intent, its result) rather
//! than three times, and a commit is a disk flush on the create's path.
use super::{Store, StoreError, INTENTS};
use crate::replication::records::{Applied, Replicant};

/// A mapping carried by an operation, not applied at this site yet.
#[derive(Debug)]
pub struct Carried {
    pub op_id: String,
    pub replicant: Replicant,
}

impl Store {
    /// Records, durably, that `op_id` is about to be sent to this site's instance, and the
    /// `carried` mappings as applied, in one step: if its result is never recorded, the next
    /// copy of the operation asks the instance first (and finds the mappings applied).
    pub fn record_intent(&self, op_id: &str, carried: &[Carried]) -> Result<(), StoreError> {
        self.write(|txn| {
            self.record_carried_in(txn, carried)?;
            txn.open_table(INTENTS)?.insert(op_id, ())?;
            Ok(())
        })
    }

    /// Whether `op_id` was sent to this site's instance without its result being recorded.
    pub fn intended(&self, op_id: &str) -> Result<bool, StoreError> {
        self.read(|txn| Ok(txn.open_table(INTENTS)?.get(op_id)?.is_some()))
    }

    /// Records the `carried` mappings as applied, in a step of their own (none when there are
    /// none): for an operation that records no intent.
    pub fn record_carried(&self, carried: &[Carried]) -> Result<(), StoreError> {
        if carried.is_empty() {
            return Ok(());
        }
        self.write(|txn| self.record_carried_in(txn, carried))
    }

    fn record_carried_in(
        &self,
        txn: &redb::WriteTransaction,
        carried: &[Carried],
    ) -> Result<(), StoreError> {
        let mapped = Applied {
            status: 204,
            local_id: None,
        };
        for mapping in carried {
            self.record_replicant_in(txn, &mapping.replicant, None, None)?;
            self.mark_applied_in(txn, &mapping.op_id, &mapped)?;
        }
        Ok(())
    }
}
