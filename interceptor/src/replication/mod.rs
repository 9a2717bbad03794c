//! Replication (`&`) and cross (`%`) for services with resource rules. Read in this order: the
//! rules (`rules`: which requests address which resources), IDs (`ids`), what sites exchange
//! (`exchange`) and its HTTP form (`codec`), the decisions (`decide`), the durable records
//! (`store`), the network seam (`sites`) and the replicator that carries it all out.
pub mod codec;
pub mod decide;
pub mod exchange;
pub mod ids;
pub mod replicator;
pub mod rules;
pub mod sites;
pub mod store;

pub use replicator::Replicator;
