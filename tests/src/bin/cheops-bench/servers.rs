//! The servers of the benchmark, each with its own configuration in a temporary directory
//! (never the system's services): the origin (nginx serving a 1 KiB file), and the forwarding
//! proxies compared: cheops (eBPF or NAT interception), HAProxy and nginx. Every proxy listens
//! on the same port and forwards to the same origin over kept-alive connections, logs no
//! request (cheops runs with RUST_LOG=warn), and uses one worker thread.
use std::{net::SocketAddr, process::Command, time::Duration};

use cheops_tests::{
    agent::{meshed_service, meshed_workload, site_config, Agent},
    apps::wait_for_listener_within,
    cgroup::Cgroup,
    netns::Netns,
    process::Process,
};
use interceptor::config::{InterceptionMode, Workload};

use crate::bodies::{LARGE_BYTES, LARGE_PATH};

/// What applications dial: the service address, which the origin also serves directly.
pub const SERVICE: &str = "198.18.0.10:80";
/// The service's local instance, where every proxy forwards.
pub const ORIGIN: &str = "127.0.0.1:8080";
/// Where every proxy listens, and where interception sends the application's connections.
pub const PROXY_PORT: u16 = 15001;
pub const BODY_PATH: &str = "/1k";
pub const BODY_BYTES: usize = 1024;

/// The proxies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    CheopsEbpf,
    CheopsNat,
    Haproxy,
    Nginx,
}

impl Proxy {
    /// The response header by which a request shows it went through this proxy.
    pub fn marker(self) -> &'static str {
        match self {
            Proxy::CheopsEbpf | Proxy::CheopsNat => "x-cheops-site: bench",
            Proxy::Haproxy => "x-forwarded-by: haproxy",
            Proxy::Nginx => "x-forwarded-by: nginx",
        }
    }
}

/// A running server and what it needs to keep running (its directory, its agent).
pub struct Server {
    pub pid: u32,
    _running: Running,
}

enum Running {
    Cheops {
        _agent: Agent,
        _wrapper: tempfile::TempDir,
    },
    Process {
        _process: Process,
        _dir: tempfile::TempDir,
    },
}

/// nginx serving `BODY_PATH` (1 KiB) at `ORIGIN` and at `SERVICE` (for the direct path).
pub fn origin(netns: &Netns) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::create_dir(dir.path().join("www")).expect("creating the web root");
    std::fs::write(
        dir.path().join("www").join(&BODY_PATH[1..]),
        vec![b'x'; BODY_BYTES],
    )
    .expect("writing the 1 KiB answer");
    // The large body: a sparse file, served from the page cache.
    std::fs::File::create(dir.path().join("www").join(&LARGE_PATH[1..]))
        .and_then(|file| file.set_len(LARGE_BYTES))
        .expect("writing the large answer");
    let http = format!(
        "server {{ listen {ORIGIN}; listen {SERVICE}; root {}/www; location / {{ }} }}",
        dir.path().display()
    );
    nginx(
        netns,
        netns.command("nginx"),
        "nginx origin",
        dir,
        &http,
        ORIGIN,
    )
}

/// Starts `proxy`, under the command `under` when not empty (valgrind); cheops with eBPF
/// intercepts the processes of `workload`.
pub fn proxy(netns: &Netns, proxy: Proxy, workload: &Cgroup, under: &[String]) -> Server {
    match proxy {
        Proxy::CheopsEbpf => cheops(
            netns,
            InterceptionMode::Ebpf,
            vec![meshed_workload(workload)],
            under,
        ),
        Proxy::CheopsNat => cheops(netns, InterceptionMode::Nat, Vec::new(), under),
        Proxy::Haproxy => haproxy(netns, under),
        Proxy::Nginx => {
            let http = format!(
                "upstream origin {{ server {ORIGIN}; keepalive 32; keepalive_requests 1000000; }}\n\
                 server {{ listen 127.0.0.1:{PROXY_PORT}; location / {{\n\
                   proxy_pass http://origin; proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\"; add_header X-Forwarded-By nginx;\n\
                 }}\n\
                 location {LARGE_PATH} {{\n\
                   proxy_pass http://origin; proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\"; proxy_buffering off;\n\
                 }} }}"
            );
            let dir = tempfile::tempdir().expect("temporary directory");
            let command = program(netns, under, "nginx");
            nginx(netns, command, "nginx proxy", dir, &http, &proxy_address())
        }
    }
}

fn proxy_address() -> String {
    format!("127.0.0.1:{PROXY_PORT}")
}

/// `program` in `netns`, run by `under` when not empty.
fn program(netns: &Netns, under: &[String], program: &str) -> Command {
    match under {
        [] => netns.command(program),
        [runner, args @ ..] => {
            let mut command = netns.command(runner);
            command.args(args).arg(program);
            command
        }
    }
}

fn cheops(
    netns: &Netns,
    interception: InterceptionMode,
    workloads: Vec<Workload>,
    under: &[String],
) -> Server {
    let mut config = site_config("bench");
    config.proxy.port = PROXY_PORT;
    config.proxy.interception = interception;
    config.services.push(meshed_service(
        "origin",
        SERVICE.parse().expect("an address"),
        ORIGIN.parse().expect("an address"),
    ));
    config.workloads = workloads;
    // The agent is started as CHEOPS_BIN says: a script that runs it under `under`.
    let wrapper = tempfile::tempdir().expect("temporary directory");
    let binary = cheops_tests::cheops_bin();
    if !under.is_empty() {
        let script = wrapper.path().join("cheops");
        let text = format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            under.join(" "),
            binary.display()
        );
        std::fs::write(&script, text).expect("writing the wrapper script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("making the wrapper script executable");
        std::env::set_var("CHEOPS_BIN", &script);
    }
    let agent = Agent::start(netns, &config);
    std::env::set_var("CHEOPS_BIN", &binary);
    Server {
        pid: agent.process.pid(),
        _running: Running::Cheops {
            _agent: agent,
            _wrapper: wrapper,
        },
    }
}

/// nginx as one process (no master: the process started is the one serving, and killing it
/// leaves no orphaned worker), no access log, and `http` as its http block's content.
fn nginx(
    netns: &Netns,
    mut command: Command,
    name: &str,
    dir: tempfile::TempDir,
    http: &str,
    listen: &str,
) -> Server {
    let conf = format!(
        "daemon off; master_process off; user root;\n\
         pid {dir}/nginx.pid; error_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_timeout 300s; keepalive_requests 1000000;\n\
         client_body_temp_path {dir}; proxy_temp_path {dir};\n{http}\n}}\n",
        dir = dir.path().display()
    );
    command.arg("-p").arg(dir.path()).arg("-c");
    start(netns, name, command, dir, "nginx.conf", &conf, listen)
}

fn haproxy(netns: &Netns, under: &[String]) -> Server {
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 8192\n\
         defaults\n  mode http\n  option http-keep-alive\n  http-reuse always\n\
         \x20 timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n\
         frontend mesh\n  bind {}\n  default_backend origin\n\
         \x20 http-response set-header X-Forwarded-By haproxy\n\
         backend origin\n  server local {ORIGIN}\n",
        proxy_address()
    );
    let mut command = program(netns, under, "haproxy");
    command.arg("-db").arg("-f");
    let dir = tempfile::tempdir().expect("temporary directory");
    start(
        netns,
        "haproxy",
        command,
        dir,
        "haproxy.cfg",
        &conf,
        &proxy_address(),
    )
}

/// Writes `conf` as `file` in `dir`, starts `command` with that file as its last argument,
/// and waits until it accepts connections at `listen`.
fn start(
    netns: &Netns,
    name: &str,
    mut command: Command,
    dir: tempfile::TempDir,
    file: &str,
    conf: &str,
    listen: &str,
) -> Server {
    let path = dir.path().join(file);
    std::fs::write(&path, conf).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    command.arg(&path);
    let log = dir.path().join("output.log");
    let process = Process::spawn(name, command, Some(&log));
    let address: SocketAddr = listen.parse().expect("a socket address");
    // Long enough for a server under valgrind on a busy machine; a running one answers at once.
    wait_for_listener_within(netns, address, Duration::from_secs(60));
    Server {
        pid: process.pid(),
        _running: Running::Process {
            _process: process,
            _dir: dir,
        },
    }
}
