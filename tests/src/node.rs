//! One node for interception tests: a network namespace, a workload cgroup, cheops, and per
//! service a local instance (answering its name) and, at the service address itself, a
//! "direct" server (answering `direct-<name>`) that only unintercepted clients reach.
use std::{
    net::SocketAddr,
    process::{Command, Output},
};

use interceptor::{admin::api::Status, config::Config};

use crate::{
    agent::{meshed_service, meshed_workload, site_config, Agent},
    apps::HttpServer,
    cgroup::Cgroup,
    netns::Netns,
    require_root, unique_name,
};

/// A node and what runs on it.
pub struct Node {
    pub agent: Agent,
    pub workload: Cgroup,
    pub instances: Vec<HttpServer>,
    _direct: Vec<HttpServer>,
    pub netns: Netns,
}

pub const SITE: &str = "Testsite";

pub fn service(n: u8) -> (String, SocketAddr, SocketAddr) {
    (
        format!("svc{n}"),
        format!("198.18.0.{}:80", 10 + n).parse().unwrap(),
        format!("127.0.0.1:{}", 8000 + u16::from(n))
            .parse()
            .unwrap(),
    )
}

pub fn start_node(services: &[(String, SocketAddr, SocketAddr)]) -> Node {
    start_node_with(services, site_config(SITE), false)
}

/// `config` with `services` and the workload added; `agent_in_workload`: run cheops inside
/// the workload cgroup it meshes.
pub fn start_node_with(
    services: &[(String, SocketAddr, SocketAddr)],
    mut config: Config,
    agent_in_workload: bool,
) -> Node {
    require_root();
    let netns = Netns::create(&unique_name("ic"));
    let workload = Cgroup::create(&unique_name("chw"));
    let mut instances = Vec::new();
    let mut direct = Vec::new();
    for (name, address, local) in services {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        netns.add_loopback_address(&format!("{}/{prefix}", address.ip()));
        instances.push(HttpServer::start(&netns, *local, name));
        direct.push(HttpServer::start(
            &netns,
            *address,
            &format!("direct-{name}"),
        ));
        config.services.push(meshed_service(name, *address, *local));
    }
    config.workloads.push(meshed_workload(&workload));
    let agent = if agent_in_workload {
        Agent::start_in_cgroup(&netns, &config, &workload)
    } else {
        Agent::start(&netns, &config)
    };
    Node {
        agent,
        workload,
        instances,
        _direct: direct,
        netns,
    }
}

impl Node {
    /// Runs `program ARGS` in the namespace, inside the workload cgroup when `meshed`.
    pub fn run(&self, meshed: bool, program: &str, args: &[&str]) -> Output {
        let mut command = self.netns.command(program);
        command.args(args);
        if meshed {
            self.workload.enter(&mut command);
        }
        command
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    /// `curl -i URL` from inside or outside the workload: (headers+body, success).
    pub fn curl(&self, meshed: bool, url: &str) -> (String, bool) {
        let output = self.run(meshed, "curl", &["-sS", "-i", "-g", "-m", "5", url]);
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            output.status.success(),
        )
    }

    pub fn attached_programs(&self) -> String {
        let output = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(self.workload.path())
            .output()
            .expect("running bpftool");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The body of a `curl -i` answer.
pub fn body(answer: &str) -> &str {
    answer.split("\r\n\r\n").nth(1).unwrap_or("").trim()
}

/// How many connections the kernel programs redirected; the agent must run them.
pub fn kernel_redirected(status: &Status) -> u64 {
    status
        .kernel
        .expect("eBPF interception has kernel counters")
        .redirected
}

/// The resident memory of process `pid`, in KiB.
pub fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
