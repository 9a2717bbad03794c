//! The command line's verbs besides the agent itself: clients of a running agent's admin API
//! (`status`, `replicas`, `exec`), the node check, and scope-lang without privileges.
pub mod check;
pub mod exec;
pub mod replicas;
pub mod scope;
pub mod status;
