//! The Cheops demo (grown issue by issue): for now, one site intercepting an unmodified client.
fn main() {
    eprintln!("the multi-site demo is being written; run `cargo xtask test` meanwhile");
    std::process::exit(1);
}
