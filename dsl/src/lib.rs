//! scope-lang (in progress)
