//! The site's durable store (redb, crash-safe: a committed transaction survives `kill -9`):
//! replicants and the local IDs that name them, cross registrations, the leader's operation
//! log with what each replica still has to apply, and the operations this site applied.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{PoisonError, RwLock},
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    ids::{LocalId, MetaId},
    records::{Applied, Change, CrossRecord, Operation, ReplicaState, Replicant},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store failed: {0}")]
    Database(#[from] redb::Error),
    #[error("the store holds an unreadable record {key}: {cause}")]
    Record {
        key: String,
        cause: serde_json::Error,
    },
    /// Nothing is committed: a record that cannot be encoded fails its write, rather than
    /// leaving an empty record behind.
    #[error("the store cannot encode record {key}: {cause}")]
    Encoding {
        key: String,
        cause: serde_json::Error,
    },
    #[error("the store {} stopped before it recorded an answer", store.display())]
    Interrupted { store: PathBuf },
    #[error("the store's log has no operation {seq}, yet a site is said to miss it")]
    NoOperation { seq: u64 },
    #[error(
        "the store {} is open in another process (another cheops agent?); give each agent a \
         store of its own ([replication] store)",
        store.display()
    )]
    InUse { store: PathBuf },
    #[error("the store {} cannot be reopened after an I/O error: {cause}", store.display())]
    Unavailable {
        store: PathBuf,
        cause: Box<redb::Error>,
    },
}

impl StoreError {
    /// The file failed under redb (I/O error, disk full): redb refuses every later access
    /// to that database until it is reopened.
    fn is_io(&self) -> bool {
        matches!(
            self,
            StoreError::Database(redb::Error::Io(_) | redb::Error::PreviousIo)
        )
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> StoreError {
                StoreError::Database(error.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

const REPLICANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("replicants");
const CROSS: TableDefinition<&str, &[u8]> = TableDefinition::new("cross");
/// `service / site / local ID (as JSON)` -> meta-ID, for replicas and cross resources.
const LOCAL_IDS: TableDefinition<&str, &str> = TableDefinition::new("local_ids");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// `(site, seq)`: operations of the log that `site` has not applied yet.
const PENDING: TableDefinition<(&str, u64), ()> = TableDefinition::new("pending");
/// Operations this site applied, by op id.
const APPLIED: TableDefinition<&str, &[u8]> = TableDefinition::new("applied");
/// Operations this site sent to its instance and has not recorded as applied yet, by op id:
/// after a crash, what may have taken effect without its record.
const INTENTS: TableDefinition<&str, ()> = TableDefinition::new("intents");

pub struct Store {
    path: PathBuf,
    /// `None` after an I/O error, until it is reopened: the next access opens it again, so
    /// that reads go on when only writes fail (a full disk), and writes come back with space.
    db: RwLock<Option<Database>>,
}

fn local_key(service: &str, site: &str, local_id: &LocalId) -> Result<String, StoreError> {
    let id = serde_json::to_string(local_id).map_err(|cause| StoreError::Encoding {
        key: format!("{service}/{site}/{local_id}"),
        cause,
    })?;
    Ok(format!("{service}\u{1f}{site}\u{1f}{id}"))
}

/// A record as the store keeps it (JSON).
fn encode<T: Serialize>(key: impl ToString, record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|cause| StoreError::Encoding {
        key: key.to_string(),
        cause,
    })
}

/// redb's page cache ceiling (its default is 1 GiB): the store's working set (the log's tail,
/// the replicants being written) fits in far less, and an agent's memory must stay small.
const STORE_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Opens the redb file at `path`; one that another process holds is refused at once, naming it.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    match redb::Builder::new()
        .set_cache_size(STORE_CACHE_BYTES)
        .create(path)
    {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::InUse {
            store: path.to_owned(),
        }),
        Err(cause) => Err(cause.into()),
    }
}

impl Store {
    /// Opens the store at `path`, creating it (and its folder) if needed.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(redb::Error::Io)?;
        }
        let store = Store {
            path: path.to_owned(),
            db: RwLock::new(Some(open_database(path)?)),
        };
        // Every table exists from the start, so that readers never meet a missing one.
        store.write(|txn| {
            txn.open_table(REPLICANTS)?;
            txn.open_table(CROSS)?;
            txn.open_table(LOCAL_IDS)?;
            txn.open_table(LOG)?;
            txn.open_table(PENDING)?;
            txn.open_table(APPLIED)?;
            txn.open_table(INTENTS)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        key: impl ToString,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|cause| StoreError::Record {
            key: key.to_string(),
            cause,
        })
    }

    /// Where the store lives, to name it in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the database, reopened first if an I/O error closed it; an I/O error
    /// in `work` closes it.
    fn with_db<T>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let closed = self
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none();
        if closed {
            let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
            if db.is_none() {
                *db = Some(open_database(&self.path).map_err(|cause| match cause {
                    StoreError::Database(cause) => StoreError::Unavailable {
                        store: self.path.clone(),
                        cause: Box::new(cause),
                    },
                    other => other,
                })?);
            }
        }
        let result = {
            let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
            match db.as_ref() {
                Some(db) => work(db),
                // Closed again by another caller's I/O error in between.
                None => Err(StoreError::Database(redb::Error::PreviousIo)),
            }
        };
        if let Err(cause) = &result {
            if cause.is_io() {
                tracing::error!(store = %self.path.display(), "{cause}; reopening the store");
                *self.db.write().unwrap_or_else(PoisonError::into_inner) = None;
            }
        }
        result
    }

    /// Runs `work` in one write transaction, committed (durably) only if it succeeds.
    fn write<T>(
        &self,
        work: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            let value = work(&txn)?;
            txn.commit()?;
            Ok(value)
        })
    }

    /// Runs `work` in one read transaction.
    fn read<T>(
        &self,
        work: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_db(|db| work(&db.begin_read()?))
    }

    /// Writes `replicant`, and the local IDs that name it. A local ID that names another
    /// resource already keeps naming it, unless its site is one of `claiming`: that site's
    /// instance has just given the ID to this resource (a create's answer), so the other one
    /// is gone from it. Anything else that carries a local ID (a mapping, the record of a
    /// write) may be older than what the ID names now.
    fn put_replicant_in(
        &self,
        txn: &redb::WriteTransaction,
        replicant: &Replicant,
        claiming: &[&str],
    ) -> Result<(), StoreError> {
        let bytes = encode(&replicant.meta_id, replicant)?;
        let mut replicants = txn.open_table(REPLICANTS)?;
        replicants.insert(replicant.meta_id.as_str(), bytes.as_slice())?;
        let mut local_ids = txn.open_table(LOCAL_IDS)?;
        let meta_id = replicant.meta_id.as_str();
        for replica in &replicant.replicas {
            // A deleted resource's local IDs are forgotten, site by site, as each applies the
            // delete (`record_applied`): never named again.
            let (Some(local_id), false) = (&replica.local_id, replicant.deleted) else {
                continue;
            };
            let key = local_key(&replicant.service, &replica.site, local_id)?;
            let named = local_ids.get(key.as_str())?.map(|m| m.value().to_owned());
            if let Some(other) = named.filter(|other| other != meta_id) {
                if !claiming.contains(&replica.site.as_str()) {
                    continue;
                }
                tracing::warn!(site = %replica.site, %local_id, "the instance gave the local ID of {other} to {meta_id}: {other} is gone from it (deleted before a crash, or lost by the instance)");
            }
            local_ids.insert(key.as_str(), meta_id)?;
        }
        Ok(())
    }

    /// Forgets that `site`'s `local_id` names `meta_id` (unless it names another resource
    /// already): the instance deleted it, and may give its ID to a new resource.
    fn forget_local_in(
        &self,
        txn: &redb::WriteTransaction,
        service: &str,
        site: &str,
        local_id: &LocalId,
        meta_id: &MetaId,
    ) -> Result<(), StoreError> {
        let mut local_ids = txn.open_table(LOCAL_IDS)?;
        let key = local_key(service, site, local_id)?;
        let ours = local_ids
            .get(key.as_str())?
            .is_some_and(|meta| meta.value() == meta_id.as_str());
        if ours {
            local_ids.remove(key.as_str())?;
        }
        Ok(())
    }

    /// Forgets a cross resource that was deleted where it lives: its local ID may name a new
    /// resource from now on.
    pub fn forget_cross(&self, record: &CrossRecord) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(CROSS)?.remove(record.meta_id.as_str())?;
            self.forget_local_in(
                txn,
                &record.service,
                &record.site,
                &record.local_id,
                &record.meta_id,
            )
        })
    }

    fn put_cross_in(
        &self,
        txn: &redb::WriteTransaction,
        record: &CrossRecord,
    ) -> Result<(), StoreError> {
        let bytes = encode(&record.meta_id, record)?;
        let mut cross = txn.open_table(CROSS)?;
        cross.insert(record.meta_id.as_str(), bytes.as_slice())?;
        let mut local_ids = txn.open_table(LOCAL_IDS)?;
        let key = local_key(&record.service, &record.site, &record.local_id)?;
        local_ids.insert(key.as_str(), record.meta_id.as_str())?;
        Ok(())
    }

    fn merged(
        &self,
        txn: &redb::WriteTransaction,
        replicant: &Replicant,
    ) -> Result<Replicant, StoreError> {
        let table = txn.open_table(REPLICANTS)?;
        let known = table
            .get(replicant.meta_id.as_str())?
            .map(|bytes| self.decode::<Replicant>(&replicant.meta_id, bytes.value()))
            .transpose()?;
        let mut merged = replicant.clone();
        if let Some(known) = known {
            merged.deleted |= known.deleted;
            for replica in &mut merged.replicas {
                if let Some(old) = known.replica(&replica.site) {
                    if replica.local_id.is_none() && old.local_id.is_some() {
                        replica.local_id = old.local_id.clone();
                        replica.state = old.state.clone();
                    }
                }
            }
        }
        Ok(merged)
    }

    pub fn replicant(&self, meta_id: &MetaId) -> Result<Option<Replicant>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(REPLICANTS)?;
            let found = table.get(meta_id.as_str())?;
            found
                .map(|bytes| self.decode(meta_id, bytes.value()))
                .transpose()
        })
    }

    pub fn replicants(&self) -> Result<Vec<Replicant>, StoreError> {
        self.all(REPLICANTS)
    }

    pub fn cross(&self, meta_id: &MetaId) -> Result<Option<CrossRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(CROSS)?;
            let found = table.get(meta_id.as_str())?;
            found
                .map(|bytes| self.decode(meta_id, bytes.value()))
                .transpose()
        })
    }

    pub fn crosses(&self) -> Result<Vec<CrossRecord>, StoreError> {
        self.all(CROSS)
    }

    pub fn put_cross(&self, record: &CrossRecord) -> Result<(), StoreError> {
        self.write(|txn| self.put_cross_in(txn, record))
    }

    fn all<T: DeserializeOwned>(
        &self,
        definition: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(definition)?;
            let mut all = Vec::new();
            for entry in table.iter()? {
                let (key, bytes) = entry?;
                all.push(self.decode(key.value(), bytes.value())?);
            }
            Ok(all)
        })
    }

    /// The meta-ID of the resource that `site`'s instance of `service` calls `local_id`.
    pub fn meta_of(
        &self,
        service: &str,
        site: &str,
        local_id: &LocalId,
    ) -> Result<Option<MetaId>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(LOCAL_IDS)?;
            let found = table.get(local_key(service, site, local_id)?.as_str())?;
            Ok(found.and_then(|meta| MetaId::parse(meta.value())))
        })
    }

    /// Appends `change` to the log, to be applied at each of `sites`, in one durable step with
    /// `replicant` (the record a create makes, or a delete marks).
    pub fn append(
        &self,
        replicant: Option<&Replicant>,
        meta_id: &MetaId,
        change: Change,
        sites: &[String],
    ) -> Result<Operation, StoreError> {
        self.write(|txn| {
            if let Some(replicant) = replicant {
                let merged = self.merged(txn, replicant)?;
                self.put_replicant_in(txn, &merged, &[])?;
            }
            self.append_in(txn, meta_id, change, sites)
        })
    }

    fn append_in(
        &self,
        txn: &redb::WriteTransaction,
        meta_id: &MetaId,
        change: Change,
        sites: &[String],
    ) -> Result<Operation, StoreError> {
        let mut log = txn.open_table(LOG)?;
        let seq = log.last()?.map_or(1, |(seq, _)| seq.value() + 1);
        let operation = Operation {
            seq,
            meta_id: meta_id.clone(),
            change,
            applied: sites.iter().map(|site| (site.clone(), None)).collect(),
        };
        let bytes = encode(seq, &operation)?;
        log.insert(seq, bytes.as_slice())?;
        let mut pending = txn.open_table(PENDING)?;
        for site in sites {
            pending.insert((site.as_str(), seq), ())?;
        }
        Ok(operation)
    }

    /// Up to `limit` operations that `site` has yet to apply, in log order.
    pub fn pending(&self, site: &str, limit: usize) -> Result<Vec<Operation>, StoreError> {
        self.read(|txn| {
            let pending = txn.open_table(PENDING)?;
            let log = txn.open_table(LOG)?;
            let mut operations = Vec::new();
            for entry in pending.range((site, 0)..=(site, u64::MAX))?.take(limit) {
                let (key, _) = entry?;
                let seq = key.value().1;
                let bytes = log
                    .get(seq)?
                    .ok_or_else(|| StoreError::NoOperation { seq })?;
                operations.push(self.decode(seq, bytes.value())?);
            }
            Ok(operations)
        })
    }

    /// Whether `site` has yet to apply operation `seq`.
    pub fn is_pending(&self, site: &str, seq: u64) -> Result<bool, StoreError> {
        self.read(|txn| Ok(txn.open_table(PENDING)?.get((site, seq))?.is_some()))
    }

    /// Every site that has operations to apply, with how many.
    pub fn pending_by_site(&self) -> Result<BTreeMap<String, usize>, StoreError> {
        self.read(|txn| {
            let pending = txn.open_table(PENDING)?;
            let mut counts = BTreeMap::new();
            for entry in pending.iter()? {
                let (key, _) = entry?;
                *counts.entry(key.value().0.to_owned()).or_insert(0) += 1;
            }
            Ok(counts)
        })
    }

    /// Drops the replicas whose instance refused the create, in one step with reading them:
    /// a create that every replica refused leaves no replicant (`None`), one that some refused
    /// keeps the replicas that exist or may still be made (pending), and, in the same step,
    /// appends the mapping (`Change::Map`) for each of them but `leader` (`None` if there is
    /// no other).
    pub fn drop_refused(
        &self,
        meta_id: &MetaId,
        leader: &str,
    ) -> Result<Option<Option<Operation>>, StoreError> {
        self.write(|txn| {
            let found = txn
                .open_table(REPLICANTS)?
                .get(meta_id.as_str())?
                .map(|bytes| self.decode::<Replicant>(meta_id, bytes.value()))
                .transpose()?;
            let Some(mut replicant) = found else {
                return Ok(None);
            };
            replicant
                .replicas
                .retain(|r| !matches!(r.state, ReplicaState::Failed(_)));
            if replicant.replicas.is_empty() {
                txn.open_table(REPLICANTS)?.remove(meta_id.as_str())?;
                return Ok(None);
            }
            self.put_replicant_in(txn, &replicant, &[])?;
            let others = replicant.sites_but(leader);
            if others.is_empty() {
                return Ok(Some(None));
            }
            Ok(Some(Some(self.append_in(
                txn,
                meta_id,
                Change::Map,
                &others,
            )?)))
        })
    }

    /// What this site recorded when it applied `op_id`, if it did.
    pub fn applied(&self, op_id: &str) -> Result<Option<Applied>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(APPLIED)?;
            let found = table.get(op_id)?;
            found
                .map(|bytes| self.decode(op_id, bytes.value()))
                .transpose()
        })
    }

    /// Records that this site applied `op_id`, with the replicant or cross registration it
    /// changed, in one durable step: a later copy of the same operation is then not applied.
    /// `forget`: the (site, local ID) of `replicant` that the operation deleted. `created`:
    /// this site, when its instance has just given `replicant` its local ID here.
    pub fn record_applied(
        &self,
        op_id: &str,
        applied: &Applied,
        replicant: Option<&Replicant>,
        cross: Option<&CrossRecord>,
        forget: Option<(&str, &LocalId)>,
        created: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(|txn| {
            if let Some(replicant) = replicant {
                self.record_replicant_in(txn, replicant, forget, created)?;
            }
            if let Some(record) = cross {
                self.put_cross_in(txn, record)?;
            }
            self.mark_applied_in(txn, op_id, applied)
        })
    }

    /// What an applied operation teaches about `replicant`, merged into what this site knows
    /// (`record_applied`).
    fn record_replicant_in(
        &self,
        txn: &redb::WriteTransaction,
        replicant: &Replicant,
        forget: Option<(&str, &LocalId)>,
        created: Option<&str>,
    ) -> Result<(), StoreError> {
        let merged = self.merged(txn, replicant)?;
        self.put_replicant_in(txn, &merged, created.as_slice())?;
        if let Some((site, local_id)) = forget {
            let meta_id = &replicant.meta_id;
            self.forget_local_in(txn, &replicant.service, site, local_id, meta_id)?;
        }
        Ok(())
    }

    /// Records that `op_id` was applied, with `applied`, and is no longer only intended.
    fn mark_applied_in(
        &self,
        txn: &redb::WriteTransaction,
        op_id: &str,
        applied: &Applied,
    ) -> Result<(), StoreError> {
        let bytes = encode(op_id, applied)?;
        txn.open_table(APPLIED)?.insert(op_id, bytes.as_slice())?;
        txn.open_table(INTENTS)?.remove(op_id)?;
        Ok(())
    }
}

mod intents;
mod settle;
pub use intents::Carried;
#[cfg(test)]
mod tests;
