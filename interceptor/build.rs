//! Builds the kernel programs (`interceptor-ebpf`) for `bpfel-unknown-none` and hands the object
//! to the daemon, which embeds it. eBPF needs `-Z build-std=core`, which the stable toolchain
//! cannot do, so this uses Debian's rustc-web (see ../shared/docs/ebpf-toolchain.md and
//! scripts/setup-toolchain.sh, which installs it and bpf-linker).
use std::{env, path::PathBuf, process::Command};

const EBPF_RUSTC: &str = "/usr/bin/rustc";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let ebpf_crate = manifest_dir.join("../interceptor-ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("ebpf-target");
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_crate.join("src").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_crate.join("Cargo.toml").display()
    );

    if !PathBuf::from(EBPF_RUSTC).exists() {
        panic!(
            "building the eBPF programs needs Debian's rustc-web at {EBPF_RUSTC} and bpf-linker: \
             run `scripts/setup-toolchain.sh` (as root) first"
        );
    }
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&ebpf_crate)
        .args(["build", "--release", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--features", "programs"])
        .args(["--bin", "interceptor-ebpf", "--target-dir"])
        .arg(&target_dir)
        .env("RUSTC", EBPF_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1");
    // What the outer cargo set for the host build must not leak into the eBPF build
    // (clippy's wrapper, host rustflags, the outer build's jobserver).
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME"
            || key.starts_with("RUSTC_")
            || key.contains("RUSTFLAGS")
        {
            cargo.env_remove(key.as_ref());
        }
    }
    cargo.env("RUSTC_BOOTSTRAP", "1");
    let status = cargo
        .status()
        .expect("could not run cargo to build the eBPF programs");
    assert!(
        status.success(),
        "building the eBPF programs failed (see above)"
    );

    let object = target_dir.join("bpfel-unknown-none/release/interceptor-ebpf");
    println!("cargo:rustc-env=CHEOPS_EBPF_OBJECT={}", object.display());
}
