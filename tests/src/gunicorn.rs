//! A Python WSGI service (Glance, Keystone) run by gunicorn inside a site's namespace, from a
//! virtualenv that `scripts/setup-toolchain.sh` fills: its configuration directory, its log,
//! and the whole process group killed when dropped (gunicorn's workers are its children).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    apps::wait_for_listener,
    netns::Netns,
    process::{wait_until, Process},
};

/// `program` of the virtualenv at `venv`, checked to be there.
pub fn venv_program(venv: &str, program: &str) -> PathBuf {
    let path = Path::new(venv).join("bin").join(program);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-toolchain.sh (it installs Glance, Keystone and the OpenStack clients)",
        path.display()
    );
    path
}

pub struct Gunicorn {
    server: Process,
    dir: tempfile::TempDir,
}

impl Gunicorn {
    /// Starts `command` (a gunicorn), its output in `gunicorn.log` of `dir`, which it keeps.
    pub fn spawn(name: &str, command: Command, dir: tempfile::TempDir) -> Gunicorn {
        let log = dir.path().join("gunicorn.log");
        let server = Process::spawn(name, command, Some(&log));
        Gunicorn { server, dir }
    }

    /// The gunicorn master's process ID (its workers are in its process group).
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Waits until `path` at `address` answers with a success: gunicorn listens at once, but
    /// its worker loads the application before it answers anything.
    pub fn wait_until_answering(&self, netns: &Netns, address: SocketAddr, path: &str) {
        wait_for_listener(netns, address);
        let url = format!("http://{address}{path}");
        let ready = wait_until(Duration::from_secs(120), || {
            let mut curl = netns.command("curl");
            curl.args(["-sf", "-m", "5", &url]);
            curl.output().is_ok_and(|o| o.status.success())
        });
        assert!(
            ready,
            "{} at {address} never answered: {}",
            self.server.name(),
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gunicorn.log")).unwrap_or_default()
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let group = self.server.pid() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the group is gunicorn's own (`Process`
        // gives every child a process group of its own).
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}
