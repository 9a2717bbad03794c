//! The servers of the benchmark, each with its own configuration in a temporary directory
//! (never the system's services): the origin (nginx serving a 1 KiB file), and the forwarding
//! proxies compared: cheops (eBPF or NAT interception), HAProxy and nginx. Every proxy listens
//! on the same port and forwards to the same origin over kept-alive connections, logs no
//! request (cheops runs with RUST_LOG=warn), and uses one worker thread.
use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

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
/// Where uploads go: a service of its own, whose local instance reads bodies to their end.
pub const UPLOAD_SERVICE: &str = "198.18.0.11:80";
pub const SINK: &str = "127.0.0.1:8081";
pub const UPLOAD_PATH: &str = "/upload";
/// The gRPC service, and its local instance.
pub const GRPC_SERVICE: &str = "198.18.0.12:50051";
pub const GRPC_ORIGIN: &str = "127.0.0.1:50051";
/// Connections each proxy may hold at once, unless a scenario needs more.
pub const CONNECTIONS: usize = 4096;
/// Connections the origin may hold: a proxy may hold one to it per idle client connection.
const ORIGIN_CONNECTIONS: usize = 16384;

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
    // The large body: a sparse file, read through once here so that the origin serves it from
    // the page cache to every path. Otherwise the first path measured (direct) paid for
    // filling the cache: 139 MiB/s direct against 1661 through cheops, measured second.
    let large = dir.path().join("www").join(&LARGE_PATH[1..]);
    std::fs::File::create(&large)
        .and_then(|file| file.set_len(LARGE_BYTES))
        .and_then(|()| std::io::copy(&mut std::fs::File::open(&large)?, &mut std::io::sink()))
        .expect("writing the large answer and reading it into the page cache");
    let http = format!(
        "server {{ listen {ORIGIN}; listen {SERVICE}; root {}/www; location / {{ }} }}",
        dir.path().display()
    );
    let command = netns.command("nginx");
    let listen = ORIGIN;
    nginx(
        netns,
        command,
        "nginx origin",
        dir,
        &http,
        listen,
        ORIGIN_CONNECTIONS,
    )
}

/// `cheops-load ARGS` as a server (the upload sink, the gRPC origin) listening at `listen`,
/// run by `under` when not empty (valgrind).
pub fn load_program(
    netns: &Netns,
    name: &str,
    load_bin: &Path,
    args: &[&str],
    listen: &str,
    under: &[String],
) -> Server {
    let mut command = program(netns, under, load_bin.to_str().expect("a UTF-8 path"));
    command.args(args);
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = dir.path().join("output.log");
    let process = Process::spawn(name, command, Some(&log));
    // Long enough under valgrind on a busy machine; a running one answers at once.
    wait_for_listener_within(
        netns,
        listen.parse().expect("an address"),
        Duration::from_secs(60),
    );
    Server {
        pid: process.pid(),
        _running: Running::Process {
            _process: process,
            _dir: dir,
        },
    }
}

/// Starts `proxy`, under the command `under` when not empty (valgrind); cheops with eBPF
/// intercepts the processes of `workload`.
pub fn proxy(netns: &Netns, proxy: Proxy, workload: &Cgroup, under: &[String]) -> Server {
    proxy_holding(netns, proxy, workload, under, CONNECTIONS)
}

/// `proxy`, allowed to hold `connections` client connections at once.
pub fn proxy_holding(
    netns: &Netns,
    proxy: Proxy,
    workload: &Cgroup,
    under: &[String],
    connections: usize,
) -> Server {
    match proxy {
        Proxy::CheopsEbpf => cheops(
            netns,
            InterceptionMode::Ebpf,
            vec![meshed_workload(workload)],
            under,
            connections,
        ),
        Proxy::CheopsNat => cheops(netns, InterceptionMode::Nat, Vec::new(), under, connections),
        Proxy::Haproxy => haproxy(netns, under, connections),
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
                 }}\n\
                 location {UPLOAD_PATH} {{\n\
                   proxy_pass http://{SINK}; proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\"; proxy_request_buffering off;\n\
                   client_max_body_size 0; add_header X-Forwarded-By nginx;\n\
                 }} }}"
            );
            let dir = tempfile::tempdir().expect("temporary directory");
            let command = program(netns, under, "nginx");
            let listen = proxy_address();
            nginx(
                netns,
                command,
                "nginx proxy",
                dir,
                &http,
                &listen,
                connections,
            )
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

/// nginx forwarding gRPC (`grpc_pass`) to the gRPC origin over kept-alive connections, run by
/// `under` when not empty (valgrind).
pub fn nginx_grpc(netns: &Netns, under: &[String]) -> Server {
    let http = format!(
        "upstream grpc_origin {{ server {GRPC_ORIGIN}; keepalive 32; keepalive_requests 1000000; }}\n\
         server {{ listen {} http2; http2_max_requests 1000000; location / {{\n\
           grpc_pass grpc://grpc_origin; add_header X-Forwarded-By nginx;\n\
         }} }}",
        proxy_address()
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let command = program(netns, under, "nginx");
    let listen = proxy_address();
    nginx(
        netns,
        command,
        "nginx gRPC proxy",
        dir,
        &http,
        &listen,
        CONNECTIONS,
    )
}

fn cheops(
    netns: &Netns,
    interception: InterceptionMode,
    workloads: Vec<Workload>,
    under: &[String],
    connections: usize,
) -> Server {
    let mut config = site_config("bench");
    config.proxy.port = PROXY_PORT;
    config.proxy.interception = interception;
    config.proxy.max_connections_per_workload = connections;
    // Idle keep-alive connections stay open as long as nginx's and HAProxy's (300 s below).
    config.proxy.header_read_timeout = Duration::from_secs(300);
    for (name, address, local) in [
        ("origin", SERVICE, ORIGIN),
        ("sink", UPLOAD_SERVICE, SINK),
        ("grpc", GRPC_SERVICE, GRPC_ORIGIN),
    ] {
        config.services.push(meshed_service(
            name,
            address.parse().expect("an address"),
            local.parse().expect("an address"),
        ));
    }
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
    connections: usize,
) -> Server {
    // Its open files limit is the benchmark's, raised for all it starts.
    let conf = format!(
        "daemon off; master_process off; user root;\n\
         pid {dir}/nginx.pid; error_log {dir}/error.log warn;\n\
         events {{ worker_connections {connections}; }}\n\
         http {{ access_log off; keepalive_timeout 300s; keepalive_requests 1000000;\n\
         client_body_temp_path {dir}; proxy_temp_path {dir};\n{http}\n}}\n",
        dir = dir.path().display()
    );
    command.arg("-p").arg(dir.path()).arg("-c");
    start(netns, name, command, dir, "nginx.conf", &conf, listen)
}

fn haproxy(netns: &Netns, under: &[String], connections: usize) -> Server {
    let conf = format!(
        "global\n  nbthread 1\n  maxconn {}\n\
         defaults\n  mode http\n  option http-keep-alive\n  http-reuse always\n\
         \x20 timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n\
         frontend mesh\n  bind {}\n  default_backend origin\n\
         \x20 use_backend sink if {{ path_beg {UPLOAD_PATH} }}\n\
         \x20 http-response set-header X-Forwarded-By haproxy\n\
         backend origin\n  server local {ORIGIN}\n\
         backend sink\n  server local {SINK}\n",
        connections,
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
