//! Workloads in network namespaces of their own, as containers and pods run, without a
//! container runtime: each "container" is a namespace made by the test (loopback up, a veth to
//! the node, the same address in every container) whose first process sits in the node's
//! workload cgroup. Nothing in it is configured for cheops: its connections to a service
//! address reach cheops only because cheops opens its listener inside the namespace.
use std::{
    collections::HashMap,
    process::Output,
    time::{Duration, Instant},
};

use cheops_tests::{
    agent::site_config,
    apps::{client_script, HttpServer},
    netns::{run, Netns},
    node::{body, kernel_redirected, service, start_node, start_node_with, Node, SITE},
    process::{wait_until, Process},
    unique_name,
};
use interceptor::config::ProxySettings;

/// A container: its namespace, its first process (in the workload cgroup), and at each
/// service address on its own loopback a server answering `direct-<name>-<container>`, which
/// it reaches only when cheops does not intercept it.
struct Container {
    name: String,
    init: Process,
    _direct: Vec<HttpServer>,
    netns: Netns,
}

/// The first of the source ports both containers' clients use, below the ephemeral range
/// (32768 and up) so that no earlier connection's TIME_WAIT holds one of them.
const FIXED_SOURCE_PORTS: &str = "21000";

/// Every container has this address on its veth, as pods on separate networks may.
const CONTAINER_ADDRESS: &str = "198.18.9.2/24";

/// When a container's first process joins the workload cgroup.
#[derive(Clone, Copy)]
enum Joining {
    /// Before it enters the container's namespace (`setns`), as runc's set-up does.
    BeforeEnteringTheNamespace,
    /// Once in the namespace: moved in by a write to `cgroup.procs`, as crun does.
    InTheNamespace,
}

impl Container {
    fn start(
        node: &Node,
        name: &str,
        services: &[(String, std::net::SocketAddr, std::net::SocketAddr)],
    ) -> Container {
        Self::start_joining(
            node,
            name,
            services,
            Joining::BeforeEnteringTheNamespace,
            |_| (),
        )
    }

    /// A container whose first process joins the workload cgroup as `joining` says, once
    /// `set_up` has run in its namespace.
    fn start_joining(
        node: &Node,
        name: &str,
        services: &[(String, std::net::SocketAddr, std::net::SocketAddr)],
        joining: Joining,
        set_up: impl FnOnce(&Netns),
    ) -> Container {
        let netns = Netns::create(&unique_name("ct"));
        let (outside, inside) = (unique_name("vn"), unique_name("vc"));
        run(std::process::Command::new("ip").args([
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]));
        run(std::process::Command::new("ip").args([
            "link",
            "set",
            &outside,
            "netns",
            node.netns.name(),
        ]));
        run(std::process::Command::new("ip").args(["link", "set", &inside, "netns", netns.name()]));
        node.netns.ip(&["link", "set", &outside, "up"]);
        netns.ip(&["address", "add", CONTAINER_ADDRESS, "dev", &inside]);
        netns.ip(&["link", "set", &inside, "up"]);
        let mut direct = Vec::new();
        for (service, address, _) in services {
            netns.add_loopback_address(&format!("{}/32", address.ip()));
            direct.push(HttpServer::start(
                &netns,
                *address,
                &format!("direct-{service}-{name}"),
            ));
        }
        set_up(&netns);
        let mut command = netns.command("sleep");
        command.arg("3600");
        if let Joining::BeforeEnteringTheNamespace = joining {
            node.workload.enter(&mut command);
        }
        let init = Process::spawn(&format!("container {name}"), command, None);
        if let Joining::InTheNamespace = joining {
            let in_namespace = wait_until(Duration::from_secs(5), || {
                std::fs::read_link(format!("/proc/{}/exe", init.pid()))
                    .is_ok_and(|exe| exe.ends_with("sleep"))
            });
            assert!(in_namespace, "container {name}'s process never started");
            node.workload.move_in(init.pid());
        }
        Container {
            name: name.to_owned(),
            init,
            _direct: direct,
            netns,
        }
    }

    /// The namespace's inode, as `cheops status` names it.
    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.netns.name()))
            .expect("the container's namespace")
            .ino()
    }

    /// `program ARGS` inside the container, in the workload cgroup like its first process.
    fn run(&self, node: &Node, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.netns.command(program);
        command.args(args).envs(env.iter().copied());
        node.workload.enter(&mut command);
        command
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }

    fn curl(&self, node: &Node, url: &str) -> String {
        let output = self.run(node, "curl", &["-sS", "-i", "-m", "5", url], &[]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Whether anything listens on the proxy's port inside the container.
    fn proxy_port_open(&self) -> bool {
        proxy_port_open(&self.netns)
    }
}

/// Whether anything listens on the proxy's port inside `netns`.
fn proxy_port_open(netns: &Netns) -> bool {
    let output = netns
        .command("ss")
        .args(["-ltnH"])
        .output()
        .expect("running ss");
    let port = format!(":{}", ProxySettings::default().port);
    String::from_utf8_lossy(&output.stdout).contains(&port)
}

/// Waits until cheops listens in `container`'s namespace; fails the test if it does not
/// `within` that long, or if it could not.
fn wait_meshed(node: &Node, container: &Container, within: Duration) {
    let inode = container.inode();
    let listening = || {
        node.agent
            .status()
            .namespaces
            .iter()
            .any(|n| n.inode == inode && n.error.is_none())
    };
    assert!(
        wait_until(within, listening),
        "container {} was not meshed within {within:?}: {:?}\n{}",
        container.name,
        node.agent.status().namespaces,
        node.agent.log_text()
    );
}

/// A few periodic scans, with a margin for a loaded machine.
const MESHED_WITHIN: Duration = Duration::from_secs(5);

fn meshed_namespaces(node: &Node) -> Vec<u64> {
    node.agent
        .status()
        .namespaces
        .iter()
        .map(|n| n.inode)
        .collect()
}

/// The documented bound for a namespace whose processes are all gone: the next periodic scan;
/// the margin, one more interval, covers the scan and a loaded machine.
fn unmeshing_bound() -> Duration {
    ProxySettings::default().workload_scan_every * 2
}

/// How soon the kernel's word meshes a new container (it takes milliseconds; the margin is for
/// a loaded machine).
const MESHED_ON_EVENTS_WITHIN: Duration = Duration::from_secs(2);

/// A node whose agent scans the workload cgroups only on the kernel's events (and at start).
fn node_with_the_periodic_scan_an_hour_away(
    services: &[(String, std::net::SocketAddr, std::net::SocketAddr)],
) -> Node {
    let mut config = site_config(SITE);
    config.proxy.workload_scan_every = Duration::from_secs(3600);
    start_node_with(services, config, false)
}

/// With the periodic scan an hour away, only the kernel's events can mesh a container started
/// after the agent, whichever of its runtime's steps comes last: joining the cgroup or
/// entering the namespace.
#[test]
fn a_container_started_after_the_agent_is_meshed_at_once_on_the_kernels_word() {
    let services = [service(0)];
    let node = node_with_the_periodic_scan_an_hour_away(&services);
    let containers = [
        ("a", Joining::BeforeEnteringTheNamespace),
        ("b", Joining::InTheNamespace),
    ]
    .map(|(name, joining)| {
        let container = Container::start_joining(&node, name, &services, joining, |_| ());
        // Its last step is done: it is in the workload cgroup and in its namespace.
        let started = Instant::now();
        wait_meshed(&node, &container, MESHED_ON_EVENTS_WITHIN);
        println!(
            "container {name} was meshed {:?} after it started",
            started.elapsed()
        );
        container
    });
    for container in &containers {
        let answer = container.curl(&node, "http://198.18.0.10/whoami");
        assert_eq!(
            body(&answer),
            "svc0",
            "container {}'s call must reach the service through cheops: {answer}",
            container.name
        );
        assert!(answer.to_lowercase().contains("x-cheops-site"), "{answer}");
        let status = node.agent.status();
        let shown = status
            .namespaces
            .iter()
            .find(|n| n.inode == container.inode())
            .unwrap();
        assert_eq!(shown.cgroup, node.workload.path(), "{shown:?}");
        assert_eq!(shown.error, None);
    }
    assert_eq!(kernel_redirected(&node.agent.status()), 2);
    let cli = node.agent.status_text();
    assert!(
        cli.contains("2 network namespaces of their own")
            && containers
                .iter()
                .all(|c| cli.contains(&format!("net:[{}]", c.inode()))),
        "{cli}"
    );
}

/// A process that clones itself into a new network namespace (as crun, LXC and bubblewrap
/// do) passes no tracepoint that cheops follows. Its first connection, failing open for want
/// of a listener there, is the kernel's word; with the periodic scan an hour away, the next
/// ones are meshed. (Without that word it gets no answer in 10 s.)
#[test]
fn a_namespace_made_by_clone_is_meshed_on_its_first_connection() {
    let services = [service(0)];
    let node = node_with_the_periodic_scan_an_hour_away(&services);
    let mut command = node.netns.command("python3");
    command
        .arg(client_script("cloned_namespace_client.py"))
        .args(["198.18.0.10", "80", "/whoami", "10"]);
    node.workload.enter(&mut command);
    let output = command.output().expect("running the cloning client");
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{answer}{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        node.agent.log_text()
    );
    assert_eq!(body(&answer), "svc0", "{answer}");
    assert!(answer.to_lowercase().contains("x-cheops-site"), "{answer}");
    let failed_before: u32 = answer
        .lines()
        .find_map(|line| line.strip_prefix("failed before: "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of failed connections: {answer}"));
    // Run alone it is 1 or more; beside other tests, their own events may mesh it sooner.
    println!("{failed_before} connections failed open before the namespace was meshed");
    let kernel = node.agent.status().kernel.expect("kernel counters");
    assert!(kernel.failed_open >= u64::from(failed_before), "{kernel:?}");
    assert_eq!(kernel.redirected, 1, "{kernel:?}");
}

#[test]
fn two_containers_with_the_same_addresses_get_exact_original_destinations() {
    let services: Vec<_> = (0..4).map(service).collect();
    let node = start_node(&services);
    let containers = [
        Container::start(&node, "a", &services),
        Container::start(&node, "b", &services),
    ];
    for container in &containers {
        wait_meshed(&node, container, MESHED_WITHIN);
    }
    let script = client_script("concurrent_connections.py")
        .display()
        .to_string();
    let mut args = vec![script.as_str(), "200"];
    let addresses: Vec<String> = services.iter().map(|(_, a, _)| a.to_string()).collect();
    args.extend(addresses.iter().map(String::as_str));
    // Both containers make their connections from the same ports of the same address
    // (127.0.0.1 inside each), to different services: only the namespace tells them apart.
    let outputs: Vec<Output> = std::thread::scope(|scope| {
        let clients: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, container)| {
                let (node, args) = (&node, &args);
                scope.spawn(move || {
                    let offset = i.to_string();
                    container.run(
                        node,
                        "python3",
                        args,
                        &[
                            ("SOURCE_PORT_BASE", FIXED_SOURCE_PORTS),
                            ("ADDRESS_OFFSET", &offset),
                        ],
                    )
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let names: HashMap<String, String> = services
        .iter()
        .map(|(name, address, _)| (address.to_string(), name.clone()))
        .collect();
    for (container, output) in containers.iter().zip(&outputs) {
        assert!(
            output.status.success(),
            "client in {} failed: {}",
            container.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 200, "{stdout}");
        for line in lines {
            let (dialled, answered) = line.split_once('\t').expect("address<TAB>body");
            assert_eq!(
                answered, names[dialled],
                "container {}: a connection to {dialled} reached the wrong service",
                container.name
            );
        }
    }
    assert_eq!(kernel_redirected(&node.agent.status()), 400);
}

#[test]
fn a_container_that_ends_leaves_no_listener_behind() {
    let services = [service(0)];
    let node = start_node(&services);
    let mut container = Container::start(&node, "a", &services);
    let inode = container.inode();
    wait_meshed(&node, &container, MESHED_WITHIN);
    assert!(
        container.proxy_port_open(),
        "cheops should listen inside the container"
    );
    assert_eq!(
        body(&container.curl(&node, "http://198.18.0.10/whoami")),
        "svc0"
    );

    container.init.kill_9();
    assert!(
        wait_until(unmeshing_bound(), || !meshed_namespaces(&node)
            .contains(&inode)),
        "the ended container is still meshed: {:?}",
        node.agent.status().namespaces
    );
    assert!(
        wait_until(Duration::from_secs(1), || !container.proxy_port_open()),
        "cheops still listens inside the ended container's namespace"
    );
    assert!(node
        .agent
        .log_text()
        .contains("a workload network namespace is gone"));
}

/// A container where cheops could not listen, because a process of its own held cheops's port
/// there, fails open rather than to that process, is tried again at the periodic scans, and is
/// meshed once the port is free.
#[test]
fn a_container_where_cheops_could_not_listen_is_meshed_once_it_can() {
    let services = [service(0)];
    let node = start_node(&services);
    let mut squatter = None;
    let container =
        Container::start_joining(&node, "a", &services, Joining::InTheNamespace, |netns| {
            let mut command = netns.command("python3");
            command.args([
                "-c",
                &format!(
                    "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', {}))\n\
                     s.listen()\ntime.sleep(3600)",
                    ProxySettings::default().port
                ),
            ]);
            squatter = Some(Process::spawn("squatter", command, None));
            assert!(
                wait_until(Duration::from_secs(5), || proxy_port_open(netns)),
                "the squatter never held the port"
            );
        });
    let inode = container.inode();
    let error = || {
        let namespaces = node.agent.status().namespaces;
        namespaces.into_iter().find(|n| n.inode == inode)?.error
    };
    assert!(
        wait_until(MESHED_WITHIN, || error().is_some()),
        "cheops should have found the container and failed to listen there: {:?}",
        node.agent.status().namespaces
    );
    assert!(error().unwrap().contains("in use"), "{:?}", error());
    // The kernel programs redirect only where cheops listens, not to whatever holds its port.
    assert_eq!(
        body(&container.curl(&node, "http://198.18.0.10/whoami")),
        "direct-svc0-a",
        "until cheops listens, the container's connections fail open"
    );

    // A periodic scan tries again, and fails again, with the same error.
    std::thread::sleep(ProxySettings::default().workload_scan_every + Duration::from_millis(500));
    assert!(
        error().is_some_and(|e| e.contains("in use")),
        "{:?}",
        error()
    );

    drop(squatter);
    wait_meshed(&node, &container, unmeshing_bound());
    let answer = container.curl(&node, "http://198.18.0.10/whoami");
    assert_eq!(body(&answer), "svc0", "{answer}");
    let log = node.agent.log_text();
    assert_eq!(
        log.matches("cannot listen in a workload's network namespace, its connections fail open")
            .count(),
        1,
        "one warning for one error, however often it was tried:\n{log}"
    );
}

#[test]
fn after_kill_9_each_container_reaches_its_own_destination() {
    let services = [service(0)];
    let mut node = start_node(&services);
    let containers = [
        Container::start(&node, "a", &services),
        Container::start(&node, "b", &services),
    ];
    for container in &containers {
        wait_meshed(&node, container, MESHED_WITHIN);
        assert_eq!(
            body(&container.curl(&node, "http://198.18.0.10/whoami")),
            "svc0"
        );
    }
    node.agent.process.kill_9();
    let killed = Instant::now();
    for container in &containers {
        let direct = format!("direct-svc0-{}", container.name);
        assert!(
            wait_until(Duration::from_secs(1), || body(
                &container.curl(&node, "http://198.18.0.10/whoami")
            ) == direct),
            "container {} did not reach its own destination within 1 s of kill -9",
            container.name
        );
        assert!(
            !container.proxy_port_open(),
            "a listener outlived cheops in container {}",
            container.name
        );
    }
    println!(
        "after kill -9, both containers reached their own destinations in {:?}",
        killed.elapsed()
    );
    let attached = node.attached_programs();
    assert!(
        !attached.contains("connect") && !attached.contains("sock_ops"),
        "programs remain attached:\n{attached}"
    );
}
