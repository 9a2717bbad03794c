//! The admin endpoint of an agent: its server (given the parts it shows, never the proxy), the
//! typed API both sides share, and the small client the CLI uses to ask a running agent.
pub mod api;
pub mod client;
mod control;
mod server;

pub use control::ControlSocket;

pub use server::Admin;
