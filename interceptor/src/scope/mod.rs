//! Where a request's scope comes from: its carriers (the `x-scope` header, `baggage`, a suffix
//! on the token), the scopes remembered for tokens, and the default scopes of workload cgroups;
//! and the policies that limit what a scope may ask for.
pub mod carriers;
pub mod policy;
pub mod tokens;
pub mod workloads;
