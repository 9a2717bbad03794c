//! Replication (`&`) and cross (`%`) for services with resource rules. Read in this order: the
//! rules (`rules`: which requests address which resources), IDs (`ids`), calls to a service
//! (`call`) and their HTTP form (`codec`), the records (`records`), what sites exchange
//! (`exchange`), the decisions (`decide`), the durable store (`store`), the network seam
//! (`sites`), this site's instance (`instance`), the leader's log (`log`, the replicas' answers
//! recorded together by `settles`), gathering from several sites (`gather`, with lists merged
//! and followed page by page in `lists`) and the replicator that carries it all out.
pub mod call;
pub mod codec;
pub mod decide;
pub mod exchange;
pub mod gather;
pub mod ids;
pub mod instance;
pub mod lists;
pub mod log;
pub mod reconcile;
pub mod records;
pub mod replicator;
pub mod settles;
pub mod sites;
pub mod store;

pub use replicator::Replicator;
