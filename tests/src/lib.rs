//! Building blocks for Cheops's end-to-end tests, benchmarks and demo: network namespaces,
//! cgroups and processes that remove themselves when dropped (also when a test panics), and a
//! `cheops agent` started inside a namespace. Everything here needs root and says so loudly.
pub mod agent;
pub mod apps;
pub mod cgroup;
pub mod container;
pub mod glance;
pub mod grpc;
pub mod gunicorn;
pub mod keystone;
pub mod mesh;
pub mod nat;
pub mod netns;
pub mod node;
pub mod openstack;
pub mod process;
pub mod replicated;
pub mod sites;
pub mod soak;
pub mod tmpfs;
pub mod wan;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

/// Fails the calling test with a clear message when it cannot run here: privileged tests are
/// never skipped silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, cgroups, eBPF): run it as root, e.g. `sudo cargo xtask test`"
    );
}

/// A name no other test (or other run) uses at the same time, short enough for an interface
/// name (15 bytes): `prefix` (at most 5 bytes), this process's id and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    assert!(
        prefix.len() <= 5,
        "prefix {prefix:?} is too long for an interface name"
    );
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}x{n:x}", std::process::id() % 0x10_0000)
}

/// The `cheops` binary under test: `$CHEOPS_BIN`, else the workspace's debug build.
pub fn cheops_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CHEOPS_BIN") {
        return PathBuf::from(path);
    }
    let path = workspace_dir().join("target/debug/cheops");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p interceptor`, or run the tests through `cargo xtask test`)",
        path.display()
    );
    path
}

pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
