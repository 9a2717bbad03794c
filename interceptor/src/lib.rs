//! Cheops, the node daemon: it intercepts a workload's calls in the kernel, reads their scope and
//! makes the sites collaborate. Read top to bottom, the request path is: `intercept` (the kernel
//! programs and the seam) -> `proxy` (accept, sniff, the request) -> `scope` (the request's
//! scope) -> `proxy::plan` (the sites to try) -> this site's instance, or `peer` (another site),
//! whose `proxy::inbound` executes it; `replication` handles services with resource rules.
pub mod accept;
pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod intercept;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod proxy;
pub mod reload;
pub mod replication;
pub mod resources;
pub mod scope;
pub mod tls;
