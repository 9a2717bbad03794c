//! What `cargo xtask` does that the end-to-end tests also need: building cheops's image.
pub mod image;
