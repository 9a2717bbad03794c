//! scope-lang: the language in which a request says where each service should run
//! (`{compute: Nantes, image: Paris & Nantes}`). Parse, check, print in canonical form,
//! explain, and resolve into a plan for one call. No I/O.
//!
//! Read in this order: `tree` (what a scope is), `token`, `lexer`, `duration` and `parser`
//! (reading one), `usual` (reading the usual one faster), `check` and `hints` (refusing bad
//! ones), `print`, `resolve`, `explain`.
#![forbid(unsafe_code)]

mod check;
mod duration;
mod error;
mod explain;
mod hints;
mod json;
mod lexer;
mod parser;
mod print;
mod resolve;
mod token;
mod tree;
mod usual;

pub use error::{ErrorKind, ScopeError};
pub use explain::{explain, words, Explanation, ServicePlan};
pub use parser::{parse, MAX_NESTING};
pub use resolve::{resolve, Plan, RoundTripTable, RoundTrips};
pub use tree::{Entry, LocExpr, Name, Op, Scope, Site, Span};
