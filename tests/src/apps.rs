//! Real, unmodified applications for the tests, started inside a namespace: Python's
//! `http.server` serving a directory, and a TCP echo server (a service that is not HTTP).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{netns::Netns, process::Process};

pub struct HttpServer {
    _process: Process,
    dir: tempfile::TempDir,
}

impl HttpServer {
    /// Serves, at `address` in `netns`, a directory whose file `whoami` holds `name`.
    pub fn start(netns: &Netns, address: SocketAddr, name: &str) -> HttpServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("whoami"), name).expect("writing whoami");
        let mut command = netns.command("python3");
        command
            .args(["-m", "http.server", "--bind", &address.ip().to_string()])
            .arg("--directory")
            .arg(dir.path())
            .arg(address.port().to_string());
        let process = Process::spawn(&format!("http.server {name}"), command, None);
        wait_for_listener(netns, address);
        HttpServer {
            _process: process,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A TCP echo server at `address` in `netns`.
pub fn echo_server(netns: &Netns, address: SocketAddr) -> Process {
    let mut command = netns.command("python3");
    command
        .arg(client_script("echo_server.py"))
        .arg(address.to_string());
    let process = Process::spawn("echo server", command, None);
    wait_for_listener(netns, address);
    process
}

/// The path of one of the Python clients in tests/clients.
pub fn client_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Waits until something accepts TCP connections at `address` inside `netns`.
pub fn wait_for_listener(netns: &Netns, address: SocketAddr) {
    let target = format!("/dev/tcp/{}/{}", address.ip(), address.port());
    let listening = crate::process::wait_until(Duration::from_secs(10), || {
        netns
            .command("bash")
            .args(["-c", &format!("exec 3<>{target}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        listening,
        "nothing listens at {address} in namespace {}",
        netns.name()
    );
}
