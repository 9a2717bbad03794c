//! gRPC applications for the tests: a service and a client on grpcio (tests/clients, run by
//! the virtualenv that scripts/setup-toolchain.sh makes), and etcd from Debian, whose own
//! client `etcdctl` talks gRPC to it.
use std::{net::SocketAddr, path::Path, process::Command};

use crate::{
    apps::{client_script, wait_for_listener},
    netns::Netns,
    process::Process,
};

/// The Python that has grpcio (scripts/setup-toolchain.sh).
pub const GRPC_PYTHON: &str = "/opt/cheops-venv/bin/python";

/// The gRPC test service (tests/clients/grpc_service.py) at `address` in `netns`; its answers
/// name `site`.
pub fn echo_service(netns: &Netns, address: SocketAddr, site: &str) -> Process {
    assert!(
        Path::new(GRPC_PYTHON).exists(),
        "{GRPC_PYTHON} is missing: run scripts/setup-toolchain.sh"
    );
    let mut command = netns.command(GRPC_PYTHON);
    command
        .arg(client_script("grpc_service.py"))
        .arg(address.to_string())
        .arg(site);
    let process = Process::spawn(&format!("gRPC service at {site}"), command, None);
    wait_for_listener(netns, address);
    process
}

/// The arguments that run the gRPC test client (tests/clients/grpc_client.py) with `args`.
pub fn client_args(args: &[&str]) -> Vec<String> {
    let script = client_script("grpc_client.py");
    let mut all = vec![script.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

/// etcd (Debian's `etcd-server`), a one-member cluster named `site` with its client API at
/// `client` in `netns` and its data in a temporary directory.
pub struct Etcd {
    _process: Process,
    _data: tempfile::TempDir,
}

impl Etcd {
    pub fn start(netns: &Netns, client: SocketAddr, peer: SocketAddr, site: &str) -> Etcd {
        let data = tempfile::tempdir().expect("temporary directory");
        let client_url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        let mut command = netns.command("etcd");
        command
            .args(["--name", site])
            .arg("--data-dir")
            .arg(data.path().join("etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{site}={peer_url}")]);
        let process = Process::spawn(
            &format!("etcd at {site}"),
            command,
            Some(&data.path().join("log")),
        );
        wait_for_listener(netns, client);
        Etcd {
            _process: process,
            _data: data,
        }
    }
}

/// `etcdctl` (v3 API) with `args` against `endpoint`, in `netns`.
pub fn etcdctl(netns: &Netns, endpoint: SocketAddr, args: &[&str]) -> Command {
    let mut command = netns.command("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoint.to_string(),
            "--command-timeout=10s",
        ])
        .args(args);
    command
}
