//! Transparent interception on one node, as root: the kernel programs send a meshed workload's
//! connections to cheops, which forwards them to the service's local instance. Each test makes
//! its own network namespace and cgroup, and removes them even when it fails.
use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use interceptor::config::{Service, ServiceProtocol, Workload};

use cheops_tests::{
    agent::{config_text, meshed_service, site_config},
    apps::{assert_bad_requests_answered, client_script, echo_server, HttpServer, Sshd},
    node::{
        body, kernel_redirected, resident_kib, service, start_node, start_node_with, Node, SITE,
    },
    process::wait_until,
    require_root,
};

#[test]
fn a_workload_request_is_answered_through_cheops_and_other_clients_are_untouched() {
    let node = start_node(&[service(0)]);
    let (answer, ok) = node.curl(true, "http://198.18.0.10/whoami");
    assert!(ok, "meshed client failed: {answer}");
    assert_eq!(
        body(&answer),
        "svc0",
        "meshed client should reach the local instance: {answer}"
    );
    assert!(
        answer
            .to_lowercase()
            .contains(&format!("x-cheops-site: {}", SITE.to_lowercase())),
        "{answer}"
    );

    let (answer, ok) = node.curl(false, "http://198.18.0.10/whoami");
    assert!(ok, "client outside the workload failed: {answer}");
    assert_eq!(
        body(&answer),
        "direct-svc0",
        "a client outside the workload must not be redirected"
    );
    assert!(!answer.to_lowercase().contains("x-cheops-site"));

    let status = node.agent.status();
    assert_eq!(kernel_redirected(&status), 1, "{status:?}");
    assert_eq!(status.proxy.http_requests, 1, "{status:?}");
    assert!(
        wait_until(Duration::from_secs(2), || node.agent.log_text().contains(
            "service=svc0 method=GET path=/whoami collaboration=local status=200"
        )),
        "the agent's log should show the request:\n{}",
        node.agent.log_text()
    );
    assert!(
        node.attached_programs().contains("inet4_connect"),
        "{}",
        node.attached_programs()
    );
}

#[test]
fn original_destinations_are_exact_for_200_concurrent_connections_to_4_services() {
    let services: Vec<_> = (0..4).map(service).collect();
    let node = start_node(&services);
    let mut args = vec![
        client_script("concurrent_connections.py")
            .display()
            .to_string(),
        "200".into(),
    ];
    args.extend(services.iter().map(|(_, address, _)| address.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = node.run(true, "python3", &args);
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let names: HashMap<String, String> = services
        .iter()
        .map(|(name, address, _)| (address.to_string(), name.clone()))
        .collect();
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 200);
    for line in &lines {
        let (dialled, answered) = line.split_once('\t').expect("address<TAB>body");
        assert_eq!(
            answered, names[dialled],
            "a connection to {dialled} reached the wrong service"
        );
    }
    assert_eq!(kernel_redirected(&node.agent.status()), 200);
}

#[test]
fn ipv6_and_ipv4_mapped_destinations_are_redirected() {
    let v6 = (
        "svc6".to_owned(),
        "[2001:db8::10]:80".parse().unwrap(),
        "127.0.0.1:8006".parse().unwrap(),
    );
    let node = start_node(&[service(0), v6]);
    let (answer, _) = node.curl(true, "http://[2001:db8::10]/whoami");
    assert_eq!(body(&answer), "svc6", "IPv6 destination: {answer}");
    let (answer, _) = node.curl(true, "http://[::ffff:198.18.0.10]/whoami");
    assert_eq!(body(&answer), "svc0", "IPv4-mapped destination: {answer}");
    let (answer, _) = node.curl(false, "http://[2001:db8::10]/whoami");
    assert_eq!(body(&answer), "direct-svc6");
    assert_eq!(kernel_redirected(&node.agent.status()), 2);
}

#[test]
fn after_kill_9_the_workload_reaches_its_destination_directly_within_a_second() {
    let mut node = start_node(&[service(0)]);
    let (answer, _) = node.curl(true, "http://198.18.0.10/whoami");
    assert_eq!(body(&answer), "svc0");

    node.agent.process.kill_9();
    let killed = Instant::now();
    let direct = wait_until(Duration::from_secs(1), || {
        body(&node.curl(true, "http://198.18.0.10/whoami").0) == "direct-svc0"
    });
    let elapsed = killed.elapsed();
    println!("after kill -9, the workload reached its destination directly in {elapsed:?}");
    assert!(
        direct,
        "the workload did not reach its destination directly within 1 s of kill -9"
    );
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let attached = node.attached_programs();
    assert!(
        !attached.contains("connect") && !attached.contains("sock_ops"),
        "programs remain attached:\n{attached}"
    );
}

#[test]
fn a_stopped_agent_detaches_its_programs() {
    let mut node = start_node(&[service(0)]);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(node.agent.process.pid() as i32, libc::SIGTERM) };
    assert!(
        wait_until(Duration::from_secs(5), || node
            .agent
            .process
            .exited()
            .is_some()),
        "the agent did not stop on SIGTERM"
    );
    assert!(
        node.agent.log_text().contains("shutting down"),
        "{}",
        node.agent.log_text()
    );
    assert_eq!(
        node.attached_programs()
            .trim()
            .lines()
            .filter(|l| l.contains("connect") || l.contains("sock_ops"))
            .count(),
        0
    );
    assert_eq!(
        body(&node.curl(true, "http://198.18.0.10/whoami").0),
        "direct-svc0"
    );
}

#[test]
fn a_100_mib_response_streams_through_with_flat_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let node = start_node(&[service(0)]);
    std::fs::File::create(node.instances[0].dir().join("big"))
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let pid = node.agent.process.pid();
    let before = resident_kib(pid);
    let mut command = node.netns.command("curl");
    command.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        "--limit-rate",
        "40M",
        "http://198.18.0.10/big",
    ]);
    node.workload.enter(&mut command);
    let client = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = before;
    let sampler = std::thread::scope(|scope| {
        let sampling = scope.spawn(|| {
            let child = client.wait_with_output().unwrap();
            String::from_utf8_lossy(&child.stdout).into_owned()
        });
        while !sampling.is_finished() {
            peak = peak.max(resident_kib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        sampling.join().unwrap()
    });
    assert_eq!(
        sampler.trim(),
        SIZE.to_string(),
        "the whole body must arrive"
    );
    let growth_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    println!("proxy resident memory: {before} KiB before, {peak} KiB at peak (+{growth_mib:.1} MiB) for a 100 MiB body");
    assert!(
        growth_mib < 16.0,
        "the proxy's memory grew by {growth_mib:.1} MiB while streaming 100 MiB"
    );
}

#[test]
fn bad_requests_get_clear_errors_and_leave_other_connections_alone() {
    let mut config = site_config(SITE);
    config.proxy.header_read_timeout = Duration::from_secs(1);
    config.proxy.park_idle_after = Duration::from_millis(500);
    let node = start_node_with(&[service(0)], config, false);
    let mut command = node.netns.command("python3");
    command
        .arg(client_script("bad_requests.py"))
        .args(["198.18.0.10:80", "5"]);
    node.workload.enter(&mut command);
    let bad_client = std::thread::spawn(move || command.output().expect("running the bad client"));
    // While the bad client stalls its last request, a good client is served.
    std::thread::sleep(Duration::from_millis(500));
    let (answer, ok) = node.curl(true, "http://198.18.0.10/whoami");
    assert!(
        ok && body(&answer) == "svc0",
        "a good request failed beside bad ones: {answer}"
    );
    let results = assert_bad_requests_answered(&bad_client.join().unwrap());
    let after: f64 = results["stalled-after"].parse().unwrap();
    assert!(
        after < 4.0,
        "the stalled client was cut off after {after} s, the timeout is 1 s"
    );
    assert_eq!(
        body(&node.curl(true, "http://198.18.0.10/whoami").0),
        "svc0"
    );
}

/// A node whose workload is meshed with one service, `name` at `address`, and no instance yet.
fn node_with_one_service(name: &str, address: SocketAddr, local: SocketAddr) -> Node {
    let mut config = site_config(SITE);
    config.services.push(meshed_service(name, address, local));
    start_node_with(&[], config, false)
}

#[test]
fn a_connection_that_is_not_http_is_relayed_as_plain_tcp() {
    let address: SocketAddr = "198.18.0.30:7000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let node = node_with_one_service("echo", address, local);
    let _echo = echo_server(&node.netns, local);
    let script = client_script("echo_client.py").display().to_string();
    let output = node.run(true, "python3", &[&script, &address.to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "same",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(node.agent.status().proxy.tcp_relays, 1);
}

#[test]
fn a_protocol_where_the_server_speaks_first_is_relayed_to_its_instance() {
    let address: SocketAddr = "198.18.0.31:22".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:7022".parse().unwrap();
    let node = node_with_one_service("ssh", address, local);
    let sshd = Sshd::start(&node.netns, local);
    let host = address.ip().to_string();
    let output = node.run(true, "ssh-keyscan", &["-T", "10", "-t", "ed25519", &host]);
    let scanned = String::from_utf8_lossy(&output.stdout);
    assert!(
        scanned.contains(&sshd.host_key()),
        "ssh-keyscan through cheops should get sshd's host key {}: {scanned}{}",
        sshd.host_key(),
        String::from_utf8_lossy(&output.stderr)
    );
    let status = node.agent.status();
    assert_eq!(status.proxy.tcp_relays, 1, "{status:?}");
    assert_eq!(kernel_redirected(&status), 1, "{status:?}");
}

/// `protocol = "tcp"`: connections are relayed as soon as they are accepted, never sniffed.
/// sshd's banner comes without the sniffing's wait, and an HTTP request is relayed as bytes,
/// unscoped (no `x-cheops-site`), where the sniffing would have served it as HTTP.
#[test]
fn a_service_declared_tcp_is_relayed_at_once_without_sniffing() {
    let ssh: SocketAddr = "198.18.0.32:22".parse().unwrap();
    let ssh_local: SocketAddr = "127.0.0.1:7023".parse().unwrap();
    let web: SocketAddr = "198.18.0.33:80".parse().unwrap();
    let web_local: SocketAddr = "127.0.0.1:7080".parse().unwrap();
    let mut config = site_config(SITE);
    for (name, address, local) in [("ssh", ssh, ssh_local), ("web", web, web_local)] {
        config.services.push(Service {
            protocol: ServiceProtocol::Tcp,
            ..meshed_service(name, address, local)
        });
    }
    let node = start_node_with(&[], config, false);
    let sshd = Sshd::start(&node.netns, ssh_local);
    let _web = HttpServer::start(&node.netns, web_local, "web");

    let started = Instant::now();
    let ssh_host = ssh.ip().to_string();
    let output = node.run(
        true,
        "ssh-keyscan",
        &["-T", "10", "-t", "ed25519", &ssh_host],
    );
    println!("ssh-keyscan through a tcp service: {:?}", started.elapsed());
    let scanned = String::from_utf8_lossy(&output.stdout);
    assert!(
        scanned.contains(&sshd.host_key()),
        "ssh-keyscan through cheops should get sshd's host key: {scanned}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (answer, ok) = node.curl(true, &format!("http://{web}/whoami"));
    assert!(ok, "{answer}");
    assert_eq!(body(&answer), "web", "{answer}");
    assert!(
        !answer.to_lowercase().contains("x-cheops-site"),
        "a tcp service's HTTP must be relayed as bytes, not served: {answer}"
    );
    let status = node.agent.status();
    assert_eq!(status.proxy.tcp_relays, 2, "{status:?}");
    assert_eq!(kernel_redirected(&status), 2, "{status:?}");
}

#[test]
fn an_http_client_silent_at_first_is_still_served_as_http() {
    let node = start_node(&[service(0)]);
    let script = client_script("silent_then_http.py").display().to_string();
    // Past the sniffing's wait (300 ms): cheops then waits for whichever side speaks first.
    let output = node.run(
        true,
        "python3",
        &[&script, "198.18.0.10:80", "1", "/whoami"],
    );
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
        "{answer}{output:?}"
    );
    assert_eq!(body(&answer), "svc0", "{answer}");
    assert!(
        answer.to_lowercase().contains("x-cheops-site"),
        "a late request must be served as HTTP, not relayed unscoped: {answer}"
    );
    let status = node.agent.status();
    assert_eq!(status.proxy.tcp_relays, 0, "{status:?}");
    assert_eq!(status.proxy.http_requests, 1, "{status:?}");
}

#[test]
fn cheops_never_intercepts_its_own_connections() {
    // svc0's instance is at svc1's service address, where svc1's direct server answers
    // (`direct-svc1`), and cheops runs inside the meshed cgroup: its own connection to
    // 198.18.0.11:80 must reach that server, not loop back into cheops (which would answer
    // with svc1's instance, `svc1`).
    let (name, address, _) = service(0);
    let svc0 = (name, address, service(1).1);
    let (name1, address1, _) = service(1);
    let svc1 = (name1, address1, "127.0.0.1:8001".parse().unwrap());
    let node = start_node_with(&[svc1, svc0], site_config(SITE), true);
    let agent_cgroup =
        std::fs::read_to_string(format!("/proc/{}/cgroup", node.agent.process.pid())).unwrap();
    assert!(
        agent_cgroup.contains(&node.workload.relative_path().display().to_string()),
        "{agent_cgroup}"
    );
    let (answer, ok) = node.curl(true, "http://198.18.0.10/whoami");
    assert!(ok, "{answer}");
    assert_eq!(
        body(&answer),
        "direct-svc1",
        "cheops's own connection was intercepted: {answer}"
    );
    assert_eq!(kernel_redirected(&node.agent.status()), 1);
}

/// Without tracefs (as in a container that does not mount the host's), the check says what
/// that costs and how to mount it.
#[test]
fn check_warns_when_tracefs_is_not_mounted() {
    require_root();
    // In a mount namespace of its own, so that the node's tracefs stays mounted.
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "umount -l /sys/kernel/debug/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
             umount -l /sys/kernel/tracing && exec \"$0\" check",
        )
        .arg(cheops_tests::cheops_bin())
        .output()
        .expect("running cheops check without tracefs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "a missing tracefs is a warning, not a failure:\n{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("warn  tracefs with the tracepoints cgroup/cgroup_attach_task")
            && text.contains("mount -t tracefs nodev /sys/kernel/tracing"),
        "{text}"
    );
}

#[test]
fn check_names_what_is_missing() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cheops.toml");
    let mut checked = site_config("A");
    checked.services.push(meshed_service(
        "catalog",
        "198.18.0.10:80".parse().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
    ));
    // An inbound address on loopback, where nothing listens: no packet leaves the machine.
    let mut inbound = meshed_service(
        "front",
        "127.0.0.1:19".parse().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
    );
    inbound.inbound = true;
    checked.services.push(inbound);
    checked.workloads.push(Workload {
        cgroup: "cheops-no-such-cgroup".into(),
        default_scope: None,
        allow_sites: None,
        allow: None,
    });
    std::fs::write(&config, config_text(&checked)).unwrap();
    let output = Command::new(cheops_tests::cheops_bin())
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "check should fail:\n{text}");
    assert!(
        text.contains("ok    the kernel accepts cheops's eBPF programs"),
        "{text}"
    );
    assert!(
        text.contains("ok    tracepoints under /sys/kernel/tracing"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  workload cgroup")
            && text.contains("cheops-no-such-cgroup does not exist"),
        "{text}"
    );
    assert!(
        text.contains("warn  service 'catalog': local instance 127.0.0.1:9 does not answer"),
        "{text}"
    );
    assert!(
        text.contains("warn  service 'front': inbound address 127.0.0.1:19 is not bound by anyone"),
        "{text}"
    );
}
