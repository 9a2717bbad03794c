//! A cgroup v2 directory made for one test or site, removed when dropped (its processes are
//! killed first, through `cgroup.kill`).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use interceptor::intercept::cgroup::{enter_on_exec, kill_and_remove};

pub struct Cgroup {
    path: PathBuf,
}

/// Where cgroup v2 is mounted (read from /proc/self/mounts, never assumed).
pub fn cgroup2_mount() -> PathBuf {
    interceptor::intercept::cgroup::cgroup2_mount()
        .expect("no cgroup v2 mount on this machine: these tests need one")
}

impl Cgroup {
    /// Creates `<cgroup2 mount>/<name>`.
    pub fn create(name: &str) -> Cgroup {
        let path = cgroup2_mount().join(name);
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        Cgroup { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path relative to the cgroup v2 mount, as cheops's configuration names it.
    pub fn relative_path(&self) -> &Path {
        self.path
            .strip_prefix(cgroup2_mount())
            .expect("cgroup under the mount")
    }

    /// Makes `command` start inside this cgroup (the child moves itself in before exec).
    pub fn enter(&self, command: &mut Command) {
        enter_on_exec(command, &self.path).expect("entering the test cgroup");
    }

    /// Moves the running process `pid` into this cgroup, as a container runtime does.
    pub fn move_in(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.path.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !kill_and_remove(&self.path) {
            eprintln!("warning: could not remove cgroup {}", self.path.display());
        }
    }
}
