//! Containers from a real runtime (podman, Debian's), as root. A container's processes live in
//! a network namespace of their own, inside a site's workload cgroup: their calls to a service
//! address are meshed by the site's cheops like a host process's. And cheops itself runs as a
//! container, the way a Kubernetes DaemonSet runs it, meshing the node's workloads.
use std::{collections::HashMap, os::unix::fs::MetadataExt, path::Path, time::Duration};

use interceptor::config::ProxySettings;

use cheops_tests::{
    agent::{admin_page, config_text, meshed_service, meshed_workload, site_config},
    apps::JsonServer,
    cgroup::{cgroup2_mount, Cgroup},
    container::{Container, ContainerNetwork, Image, Network},
    mesh::{cert_files, generate_certs, Answer, Mesh, CATALOG, CATALOG_LOCAL, PEER_PORT},
    netns::{command_in, run, Netns},
    process::wait_until,
    sites::Topology,
    unique_name,
};

/// The documented bound (docs/deploying.md): cheops listens inside a container's network
/// namespace as soon as the kernel tells it of the container's set-up, and at most
/// `proxy.workload_scan_every` (the mesh's agents keep the default) after it in any case; it
/// stops at most that long after the container is gone. The margin, one more interval,
/// covers the scan itself and a loaded machine.
fn meshing_bound() -> Duration {
    ProxySettings::default().workload_scan_every * 2
}

/// The catalog of `site` answered, through cheops at `site` (json-server's data names its site).
fn assert_served_by(answer: &Answer, site: &str, log: &str) {
    assert_eq!(answer.status, 200, "{}\nagent log:\n{log}", answer.raw);
    assert!(
        answer.body.contains(&format!("\"site\": \"{site}\"")),
        "expected the catalog of {site}: {}",
        answer.raw
    );
    assert_eq!(
        answer.header("x-cheops-site"),
        Some(site),
        "{}\nagent log:\n{log}",
        answer.raw
    );
}

#[test]
fn containers_in_a_workload_cgroup_are_meshed_and_share_with_another_site() {
    let mesh = Mesh::start(Topology::create(&["A", "B"]), &HashMap::new());
    let site_a = mesh.topology.site("A");
    let workload = &mesh.site("A").workload;
    let image = Image::busybox();
    let network = Network::create();
    let url = format!("http://{CATALOG}/products");
    let log = || mesh.site("A").agent.log_text();

    // In the node's namespace (`--network host`), a container is meshed like a host process.
    let on_node = Container::sleeping_in(&image, ContainerNetwork::Node(&site_a.netns), workload);
    assert_served_by(&on_node.wget(&url, &[]), "A", &log());
    assert_served_by(&on_node.wget(&url, &["X-Scope: {catalog: B}"]), "B", &log());

    // In a namespace of its own, started after the agent: cheops must find it by itself,
    // without a restart, and listen inside it.
    let own_network = ContainerNetwork::Own {
        network: &network,
        node: &site_a.netns,
    };
    let own = Container::sleeping_in(&image, own_network, workload);
    let site_namespace = std::fs::metadata(format!("/run/netns/{}", site_a.netns.name()))
        .expect("the site's network namespace")
        .ino();
    assert_ne!(
        own.network_namespace(),
        site_namespace,
        "the container must have a network namespace of its own"
    );
    let container_namespace = own.network_namespace();
    let meshed = |inode| {
        mesh.site("A")
            .agent
            .status()
            .namespaces
            .iter()
            .any(|n| n.inode == inode && n.error.is_none())
    };
    assert!(
        wait_until(meshing_bound(), || meshed(container_namespace)),
        "A's status does not show the container's namespace: {:?}",
        mesh.site("A").agent.status().namespaces
    );
    assert_served_by(&own.wget(&url, &[]), "A", &log());
    assert_served_by(&own.wget(&url, &["X-Scope: {catalog: B}"]), "B", &log());
    assert_eq!(
        mesh.site("B").catalog.requests("GET", "/products"),
        2,
        "B's catalog served each container's shared request once"
    );

    // A container that goes away leaves nothing behind in cheops.
    drop(own);
    assert!(
        wait_until(meshing_bound(), || !meshed(container_namespace)),
        "the removed container's namespace is still meshed: {:?}",
        mesh.site("A").agent.status().namespaces
    );
}

/// `podman run` of cheops's image as a DaemonSet would run it on the node that `node` stands
/// for: privileged, in the node's network and PID namespaces (its pid is the one the kernel
/// programs compare with, so that its own connections are never redirected), with the cgroup v2
/// mount, /sys/fs/bpf and tracefs at the host's paths, and its configuration and certificates
/// mounted.
fn run_cheops_container(image: &Image, node: &Netns, mounts: &[(&Path, &str)]) -> Container {
    let mut options: Vec<String> = ["--privileged", "--pid=host", "--cgroupns=host"]
        .map(str::to_owned)
        .into();
    options.push(ContainerNetwork::Node(node).option());
    for (host, inside) in mounts {
        options.push(format!("--volume={}:{inside}", host.display()));
    }
    Container::start(None, &options, None, image, &[])
}

/// The programs `bpftool` shows attached to `cgroup` and below it: its lines that start with
/// a program id (the others are titles and cgroup paths).
fn attached_programs(cgroup: &Path) -> Vec<String> {
    let output = run(std::process::Command::new("bpftool")
        .args(["cgroup", "tree"])
        .arg(cgroup));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|id| id.parse::<u32>().is_ok())
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn cheops_as_a_privileged_container_meshes_the_node_like_the_bare_binary() {
    let topology = Topology::create(&["A"]);
    let site = &topology.sites[0];
    site.netns
        .add_loopback_address(&format!("{}/32", CATALOG.split(':').next().unwrap()));
    let workload = Cgroup::create(&unique_name("chc"));
    let _catalog = JsonServer::start(
        &site.netns,
        CATALOG_LOCAL.parse().unwrap(),
        &serde_json::json!({"products": [{"id": 1, "site": "A"}]}),
    );
    let certs = tempfile::tempdir().expect("temporary directory");
    generate_certs(certs.path(), &["A"]);
    let config_dir = tempfile::tempdir().expect("temporary directory");
    let mut config = site_config("A");
    config.services = vec![meshed_service(
        "catalog",
        CATALOG.parse().unwrap(),
        CATALOG_LOCAL.parse().unwrap(),
    )];
    config.workloads = vec![meshed_workload(&workload)];
    config.peer_api.listen = Some((site.address, PEER_PORT).into());
    let (cert, key) = cert_files(certs.path(), "A");
    config.tls = Some(interceptor::tls::TlsFiles {
        ca: certs.path().join(interceptor::tls::CA_FILE),
        cert,
        key,
        expiry_margin: interceptor::tls::DEFAULT_EXPIRY_MARGIN,
    });
    std::fs::write(config_dir.path().join("cheops.toml"), config_text(&config))
        .expect("writing the configuration");

    let image = Image::cheops();
    // The DaemonSet's hostPath volumes: its state (the default store, /var/lib/cheops) too.
    let state = tempfile::tempdir().expect("temporary directory");
    let mount = cgroup2_mount();
    let certs_path = certs.path().display().to_string();
    let mut agent = run_cheops_container(
        &image,
        &site.netns,
        &[
            (&mount, &mount.display().to_string()),
            (Path::new("/sys/fs/bpf"), "/sys/fs/bpf"),
            (Path::new("/sys/kernel/tracing"), "/sys/kernel/tracing"),
            (config_dir.path(), "/etc/cheops:ro"),
            (certs.path(), &format!("{certs_path}:ro")),
            (state.path(), "/var/lib/cheops"),
        ],
    );
    let ready = wait_until(Duration::from_secs(15), || {
        admin_page(site.netns.name(), "/ready").is_some()
    });
    assert!(
        ready,
        "cheops in its container did not become ready:\n{}",
        agent.logs()
    );
    assert!(
        attached_programs(workload.path())
            .iter()
            .any(|line| line.contains("redirect_connec")),
        "the containerised agent attached nothing to {}",
        workload.path().display()
    );

    let mut client = command_in(site.netns.name(), "curl");
    client.args([
        "-sS",
        "-i",
        "-m",
        "10",
        &format!("http://{CATALOG}/products"),
    ]);
    workload.enter(&mut client);
    let answer = Answer::from(client.output().expect("running curl in the workload"));
    assert_served_by(&answer, "A", &agent.logs());
    assert!(
        !agent
            .logs()
            .contains("cannot follow the kernel's cgroup and namespace changes"),
        "with tracefs mounted, the containerised agent must follow the kernel's events:\n{}",
        agent.logs()
    );

    agent.kill();
    let detached = wait_until(Duration::from_secs(2), || {
        attached_programs(workload.path()).is_empty()
    });
    assert!(
        detached,
        "programs stay attached after podman kill: {:?}",
        attached_programs(workload.path())
    );
}
