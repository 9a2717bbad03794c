//! A cgroup v2 directory made for one test or site, removed when dropped (its processes are
//! killed first, through `cgroup.kill`).
use std::{
    os::unix::{ffi::OsStringExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

pub struct Cgroup {
    path: PathBuf,
}

/// Where cgroup v2 is mounted (read from /proc/self/mounts, never assumed).
pub fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("reading /proc/self/mounts");
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
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
        let procs =
            std::ffi::CString::new(self.path.join("cgroup.procs").into_os_string().into_vec())
                .expect("cgroup path without NUL");
        // SAFETY: between fork and exec only async-signal-safe calls (open, write, close), and
        // no allocation: the path was made before the fork.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), b"1");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}
