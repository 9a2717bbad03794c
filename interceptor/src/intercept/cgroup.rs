//! Finding cgroup v2 directories: the mount point is read from /proc/self/mounts (it is
//! /sys/fs/cgroup on most hosts, /sys/fs/cgroup/unified on hybrid ones), never assumed; and
//! starting a command inside a cgroup.
use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 file system is mounted (looked for `cgroup2` in /proc/self/mounts)")]
    NoCgroup2Mount,
    #[error("cannot read /proc/self/mounts: {0}")]
    Mounts(std::io::Error),
    #[error("workload cgroup {0} does not exist (create it with `mkdir`, then move the workload's processes into it)")]
    Missing(PathBuf),
    #[error("workload cgroup {path} is outside the cgroup v2 mount {mount}")]
    Outside { path: PathBuf, mount: PathBuf },
    #[error("the cgroup path {0} holds a NUL byte")]
    NulInPath(PathBuf),
}

/// Where cgroup v2 is mounted on this host.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(CgroupError::Mounts)?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .next()
        .ok_or(CgroupError::NoCgroup2Mount)
}

/// The directory of a workload cgroup named relative to the mount, or absolute under it.
pub fn workload_dir(mount: &Path, cgroup: &Path) -> Result<PathBuf, CgroupError> {
    let dir = if cgroup.is_absolute() {
        if !cgroup.starts_with(mount) {
            return Err(CgroupError::Outside {
                path: cgroup.to_owned(),
                mount: mount.to_owned(),
            });
        }
        cgroup.to_owned()
    } else {
        mount.join(cgroup)
    };
    if !dir.is_dir() {
        return Err(CgroupError::Missing(dir));
    }
    Ok(dir)
}

/// Makes `command` start inside the cgroup `dir`: the child moves itself in before exec, so
/// that none of its work happens outside.
pub fn enter_on_exec(command: &mut Command, dir: &Path) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    let procs = CString::new(procs.as_os_str().as_bytes())
        .map_err(|_| CgroupError::NulInPath(dir.to_owned()))?;
    // SAFETY: between fork and exec, only async-signal-safe calls (open, write, close) on a
    // path prepared before the fork; nothing is allocated.
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
    Ok(())
}

/// Kills every process of the cgroup `dir` and removes it; `false` if it is still there after
/// two seconds (the kernel removes killed processes asynchronously).
pub fn kill_and_remove(dir: &Path) -> bool {
    let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
    // A cgroup with cgroups below it cannot be removed: those go first (one that a killed
    // `cheops exec` left, for instance).
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                kill_and_remove(&entry.path());
            }
        }
    }
    for _ in 0..200 {
        if std::fs::remove_dir(dir).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_workloads_live_under_the_mount_and_absolute_ones_must() {
        let mount = std::env::temp_dir();
        let inside = mount.join(format!("cheops-cgroup-test-{}", std::process::id()));
        std::fs::create_dir_all(&inside).unwrap();
        let relative = workload_dir(&mount, Path::new(inside.file_name().unwrap()));
        let outside = workload_dir(&inside, Path::new("/proc"));
        let missing = workload_dir(&mount, Path::new("cheops-no-such-cgroup"));
        std::fs::remove_dir(&inside).unwrap();
        assert_eq!(relative.unwrap(), inside);
        assert!(matches!(outside, Err(CgroupError::Outside { .. })));
        assert!(matches!(missing, Err(CgroupError::Missing(_))));
    }
}
