//! Configuration that reloads live, as root: peers and services added and removed from running
//! agents with `cheops reload` (and SIGHUP), while a client loop (real curl, through nginx)
//! keeps being served; an invalid file refused with its error, and nothing changed.
use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use cheops_tests::{
    agent::{config_text, meshed_service, meshed_workload},
    apps::JsonServer,
    cgroup::Cgroup,
    mesh::{pod_rule, Answer, Mesh, MeshOptions, CATALOG, FRONT, PEER_PORT},
    process::wait_until,
    sites::Topology,
    unique_name,
};

/// curl in a loop from a site's workload, until `stop`: every answer's status code, one a line.
struct ClientLoop {
    child: Child,
    stop_file: tempfile::NamedTempFile,
    codes: tempfile::NamedTempFile,
}

impl ClientLoop {
    /// `curl` of `url` with `header`, again and again, from `site`'s workload cgroup.
    fn start(mesh: &Mesh, site: &str, url: &str, header: &str) -> ClientLoop {
        let stop_file = tempfile::NamedTempFile::new().expect("a stop file");
        let stop: PathBuf = stop_file.path().into();
        std::fs::remove_file(&stop).expect("removing the stop file");
        let script = format!(
            "while [ ! -e '{}' ]; do curl -sS -m 10 -o /dev/null -w '%{{http_code}}\\n' \
             -H '{header}' '{url}'; sleep 0.02; done",
            stop.display()
        );
        let codes = tempfile::NamedTempFile::new().expect("a file for the loop's output");
        let mut command = mesh.topology.site(site).netns.command("bash");
        command
            .args(["-c", &script])
            .stdout(codes.reopen().expect("the loop's output"))
            .stderr(Stdio::inherit());
        mesh.site(site).workload.enter(&mut command);
        let child = command.spawn().expect("starting the client loop");
        let client = ClientLoop {
            child,
            stop_file,
            codes,
        };
        client.wait_for_more(2);
        client
    }

    /// The status codes it got so far, in order.
    fn codes(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.codes.path()).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }

    /// Waits until the loop got `more` answers than it had: requests ran after what was done.
    fn wait_for_more(&self, more: usize) {
        let had = self.codes().len();
        let ran = wait_until(Duration::from_secs(20), || self.codes().len() >= had + more);
        assert!(ran, "the client loop is stuck: {:?}", self.codes());
    }

    /// Stops the loop: the status codes it got, in order.
    fn stop(mut self) -> Vec<String> {
        std::fs::write(self.stop_file.path(), "").expect("writing the stop file");
        self.child.wait().expect("waiting for the loop");
        self.codes()
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        let _ = std::fs::write(self.stop_file.path(), "");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every request of the loop was answered 200.
fn assert_all_served(codes: &[String]) {
    eprintln!("client loop: {} requests", codes.len());
    let failed: Vec<_> = codes.iter().filter(|code| *code != "200").collect();
    assert!(
        failed.is_empty(),
        "requests failed during reloads: {failed:?} of {codes:?}"
    );
}

/// `cheops reload` at `site` succeeded and says the generation it runs.
fn reload_applies(mesh: &Mesh, site: &str, generation: u64) {
    let agent = &mesh.site(site).agent;
    let started = std::time::Instant::now();
    let output = agent.reload();
    eprintln!("cheops reload at {site}: {:?}", started.elapsed());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "reload at {site} failed: {output:?}\n{}",
        agent.log_text()
    );
    assert!(
        stdout.contains(&format!("generation {generation}")),
        "{stdout}"
    );
    assert_eq!(agent.status().config.generation, generation);
}

fn catalog_scoped(mesh: &Mesh, from: &str, to: &str) -> Answer {
    let scope = format!("X-Scope: {{catalog: {to}}}");
    mesh.curl(from, &format!("http://{FRONT}/products"), &[&scope])
}

#[test]
fn a_peer_removed_then_added_live_while_a_shared_request_loop_runs_unharmed() {
    let mesh = Mesh::start(Topology::create(&["A", "B", "C"]), &HashMap::new());
    let before = |site: &str| mesh.site(site).agent.config();
    let (a_config, c_config) = (before("A"), before("C"));
    let shared = ClientLoop::start(
        &mesh,
        "A",
        &format!("http://{FRONT}/products"),
        "X-Scope: {catalog: B}",
    );

    // A and C forget each other.
    let without = |config: &interceptor::config::Config, peer: &str| {
        let mut config = config.clone();
        config.peers.retain(|p| p.name != peer);
        config
    };
    mesh.site("A").agent.write_config(&without(&a_config, "C"));
    mesh.site("C").agent.write_config(&without(&c_config, "A"));
    reload_applies(&mesh, "A", 2);
    reload_applies(&mesh, "C", 2);
    let peers = |site: &str| -> Vec<String> {
        let status = mesh.site(site).agent.status();
        status.peers.into_iter().map(|p| p.name).collect()
    };
    assert_eq!(peers("A"), ["B"]);
    assert_eq!(peers("C"), ["B"]);
    let refused = catalog_scoped(&mesh, "A", "C");
    assert_eq!(refused.status, 400, "{}", refused.raw);
    assert!(refused.body.contains("unknown site 'C'"), "{}", refused.raw);
    shared.wait_for_more(3);

    // And meet again: a new link, heartbeats, requests both ways.
    mesh.site("A").agent.write_config(&a_config);
    mesh.site("C").agent.write_config(&c_config);
    reload_applies(&mesh, "A", 3);
    reload_applies(&mesh, "C", 3);
    mesh.wait_for_peers("A", 2);
    mesh.wait_for_peers("C", 2);
    let shared_with_c = catalog_scoped(&mesh, "A", "C");
    assert_eq!(shared_with_c.status, 200, "{}", shared_with_c.raw);
    assert_eq!(shared_with_c.header("x-catalog-site"), Some("C"));
    let shared_with_a = catalog_scoped(&mesh, "C", "A");
    assert_eq!(shared_with_a.header("x-catalog-site"), Some("A"));
    shared.wait_for_more(3);
    assert_all_served(&shared.stop());
}

#[test]
fn a_request_in_flight_to_a_peer_removed_is_answered_before_its_link_closes() {
    let topology = Topology::create(&["A", "C"]);
    // A reaches C through a slow WAN: an answer takes 800 ms to come back.
    let relay = topology.relay(16011, "C", PEER_PORT, Duration::from_millis(1600));
    let options = MeshOptions {
        request_timeout: Duration::from_secs(10),
        adjust: |config| {
            config.peer_api.connect_timeout = Duration::from_secs(10);
            config.peer_api.heartbeat_timeout = Duration::from_secs(5);
        },
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(
        topology,
        &HashMap::from([(("A", "C"), relay.address)]),
        &options,
    );
    let url = format!("http://{CATALOG}/products");
    let mut slow = mesh.topology.site("A").netns.command("curl");
    slow.args(["-sS", "-i", "-m", "20", "-H", "X-Scope: {catalog: C}", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    mesh.site("A").workload.enter(&mut slow);
    let slow = slow.spawn().expect("starting curl");
    // C's instance answered: the answer is on its way back over the slow link.
    let catalog = &mesh.site("C").catalog;
    assert!(
        wait_until(Duration::from_secs(20), || catalog
            .requests("GET", "/products")
            >= 1),
        "the request never reached C"
    );
    let agent = &mesh.site("A").agent;
    let mut without_c = agent.config();
    without_c.peers.clear();
    agent.write_config(&without_c);
    reload_applies(&mesh, "A", 2);
    let answer = Answer::from(slow.wait_with_output().expect("curl's answer"));
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(answer.header("x-cheops-site"), Some("C"), "{}", answer.raw);
    let refused = mesh.curl("A", &url, &["X-Scope: {catalog: C}"]);
    assert_eq!(refused.status, 400, "{}", refused.raw);
}

#[test]
fn a_resource_rule_added_live_replicates_its_collection() {
    let data = |site: &str| {
        serde_json::json!({
            "products": [{"id": 1, "name": format!("widget of {site}"), "site": site}],
            "pods": [],
            "orders": [],
        })
    };
    let options = MeshOptions {
        catalog_resources: vec![pod_rule()],
        catalog_data: HashMap::from([("A".into(), data("A")), ("B".into(), data("B"))]),
        request_timeout: Duration::from_secs(10),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(Topology::create(&["A", "B"]), &HashMap::new(), &options);
    let create = || {
        let url = format!("http://{CATALOG}/orders");
        let args = [
            "-sS",
            "-i",
            "-m",
            "20",
            "-X",
            "POST",
            "-H",
            "X-Scope: {catalog: A & B}",
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"name": "first order"}"#,
            &url,
        ];
        Answer::from(mesh.run_at("A", true, "curl", &args))
    };
    let before = create();
    assert_eq!(before.header("x-cheops-meta-id"), None, "{}", before.raw);
    let orders_rule =
        interceptor::resources::ResourceRule::parse("/orders", "/orders/{id}", "json:id")
            .expect("a valid rule");
    for site in ["A", "B"] {
        let agent = &mesh.site(site).agent;
        let mut config = agent.config();
        config.services[0].resources.push(orders_rule.clone());
        agent.write_config(&config);
        reload_applies(&mesh, site, 2);
    }
    let after = create();
    assert_eq!(after.status, 201, "{}", after.raw);
    let meta = after.header("x-cheops-meta-id").unwrap_or_default();
    assert!(meta.starts_with("CHEOPS_"), "{}", after.raw);
    let at_b = mesh.run_at("B", false, "curl", &["-sS", "http://127.0.0.1:3000/orders"]);
    let at_b = String::from_utf8_lossy(&at_b.stdout);
    assert!(
        at_b.contains("first order"),
        "B's instance has no replica: {at_b}"
    );
}

#[test]
fn a_service_added_is_intercepted_and_one_removed_is_not_without_a_restart() {
    let mut mesh = Mesh::start(Topology::create(&["A"]), &HashMap::new());
    let stock_address = "198.18.1.30:80";
    let netns = &mesh.topology.site("A").netns;
    netns.add_loopback_address("198.18.1.30/32");
    let stock_data = serde_json::json!({"items": [{"id": 1, "name": "bolt"}]});
    let _stock = JsonServer::start(netns, "127.0.0.1:3001".parse().unwrap(), &stock_data);
    let local = ClientLoop::start(
        &mesh,
        "A",
        &format!("http://{CATALOG}/products"),
        "X-Scope: {catalog: A}",
    );
    let stock_url = format!("http://{stock_address}/items/1");
    // Not meshed: nothing listens at the service's address.
    let before = mesh.curl("A", &stock_url, &[]);
    assert_eq!(before.status, 0, "{}", before.raw);

    // Added by SIGHUP.
    let agent = &mesh.site("A").agent;
    let running = agent.config();
    let mut with_stock = running.clone();
    with_stock.services.push(meshed_service(
        "stock",
        stock_address.parse().unwrap(),
        "127.0.0.1:3001".parse().unwrap(),
    ));
    agent.write_config(&with_stock);
    let redirected = agent.status().kernel.expect("eBPF").redirected;
    mesh.site_mut("A").agent.hang_up();
    let agent = &mesh.site("A").agent;
    assert!(
        wait_until(Duration::from_secs(5), || agent.status().config.generation
            == 2),
        "SIGHUP applied no reload: {}",
        agent.log_text()
    );
    let meshed = mesh.curl("A", &stock_url, &[]);
    assert_eq!(meshed.status, 200, "{}", meshed.raw);
    assert!(meshed.body.contains("bolt"), "{}", meshed.raw);
    assert_eq!(meshed.header("x-cheops-site"), Some("A"), "{}", meshed.raw);
    assert!(agent.status().kernel.expect("eBPF").redirected > redirected);
    local.wait_for_more(3);

    // Removed by cheops reload: the connection passes untouched again.
    agent.write_config(&running);
    reload_applies(&mesh, "A", 3);
    let after = mesh.curl("A", &stock_url, &[]);
    assert_eq!(after.status, 0, "{}", after.raw);
    local.wait_for_more(3);
    assert_all_served(&local.stop());
}

/// `curl -i URL` from `cgroup` at `site`.
fn curl_from(mesh: &Mesh, site: &str, cgroup: &Cgroup, url: &str) -> Answer {
    let mut command = mesh.topology.site(site).netns.command("curl");
    command.args(["-sS", "-i", "-m", "10", url]);
    cgroup.enter(&mut command);
    Answer::from(command.output().expect("running curl"))
}

#[test]
fn a_workload_added_is_meshed_and_one_removed_is_not_without_a_restart() {
    let mesh = Mesh::start(Topology::create(&["A"]), &HashMap::new());
    let agent = &mesh.site("A").agent;
    let batch = Cgroup::create(&unique_name("chb"));
    let url = format!("http://{CATALOG}/products");
    // Outside every workload: nothing listens at the service's address.
    assert_eq!(curl_from(&mesh, "A", &batch, &url).status, 0);
    let running = agent.config();
    let mut with_batch = running.clone();
    with_batch.workloads.push(meshed_workload(&batch));
    agent.write_config(&with_batch);
    reload_applies(&mesh, "A", 2);
    let meshed = curl_from(&mesh, "A", &batch, &url);
    assert_eq!(meshed.status, 200, "{}", meshed.raw);
    assert_eq!(meshed.header("x-cheops-site"), Some("A"), "{}", meshed.raw);
    assert!(agent.status().workloads.contains(&batch.path().to_owned()));
    agent.write_config(&running);
    reload_applies(&mesh, "A", 3);
    assert_eq!(curl_from(&mesh, "A", &batch, &url).status, 0);
    // The first workload was never detached.
    let still = mesh.curl("A", &url, &[]);
    assert_eq!(still.header("x-cheops-site"), Some("A"), "{}", still.raw);
}

#[test]
fn an_invalid_reload_is_refused_with_its_error_and_nothing_changes() {
    let mesh = Mesh::start(Topology::create(&["A", "B"]), &HashMap::new());
    let agent = &mesh.site("A").agent;
    let running = agent.config();
    let loop_to_b = ClientLoop::start(
        &mesh,
        "A",
        &format!("http://{FRONT}/products"),
        "X-Scope: {catalog: B}",
    );
    let mut unknown_site = running.clone();
    unknown_site.workloads[0].allow_sites = Some(vec!["Lyon".into()]);
    let mut new_port = running.clone();
    new_port.proxy.port += 1;
    let mut bad_scope = running.clone();
    bad_scope.workloads[0].default_scope = Some("{catalog: B &}".into());
    let mut inbound_limited = running.clone();
    inbound_limited.inbound.allow_sites = Some(Vec::new());
    let cases = [
        (
            "site = 'A'\n[[service]]\nname = 'catalog'\n".to_owned(),
            "address",
        ),
        (config_text(&unknown_site), "`allow_sites` names 'Lyon'"),
        (config_text(&new_port), "`proxy.port`"),
        (config_text(&bad_scope), "default scope"),
    ];
    for (text, named) in &cases {
        agent.write_config_text(text);
        let output = agent.reload();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "an invalid reload was applied: {text}"
        );
        assert!(stderr.contains("refused the reload"), "{stderr}");
        assert!(
            stderr.contains(named),
            "the error does not name {named}: {stderr}"
        );
    }
    let status = agent.status();
    assert_eq!(status.config.generation, 1);
    assert_eq!(status.peers.len(), 1);
    let metrics = agent.admin("/metrics").expect("metrics");
    assert!(
        metrics.contains("cheops_config_reloads_refused_total 4"),
        "{metrics}"
    );
    assert!(metrics.contains("cheops_config_generation 1"), "{metrics}");
    let served = catalog_scoped(&mesh, "A", "B");
    assert_eq!(served.header("x-catalog-site"), Some("B"), "{}", served.raw);
    // The read-only TCP endpoint does not reload.
    let tcp = mesh.run_at(
        "A",
        false,
        "curl",
        &["-sS", "-X", "POST", "http://127.0.0.1:15000/reload"],
    );
    assert!(
        String::from_utf8_lossy(&tcp.stdout).contains("served only on the control socket"),
        "{tcp:?}"
    );
    // A valid file still applies afterwards.
    agent.write_config(&inbound_limited);
    reload_applies(&mesh, "A", 2);
    loop_to_b.wait_for_more(3);
    assert_all_served(&loop_to_b.stop());
}
