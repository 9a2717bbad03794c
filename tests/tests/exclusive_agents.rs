//! One agent per workload cgroup, as root: a second agent on the same node meshing the same
//! cgroup, or an ancestor or a descendant of the first's, refuses to start, naming the cgroup
//! and the first agent (its pid and command), and `cheops check` says the same; the first
//! keeps serving.
use std::{path::Path, process::ExitStatus, time::Duration};

use interceptor::config::Config;

use cheops_tests::{
    agent::{config_text, meshed_service, meshed_workload, site_config, Agent},
    apps::HttpServer,
    cgroup::Cgroup,
    cheops_bin,
    netns::Netns,
    process::{wait_until, Process},
    require_root, unique_name,
};

const SERVICE: &str = "198.18.0.10:80";
const INSTANCE: &str = "127.0.0.1:8000";

struct Node {
    first: Agent,
    /// The cgroup the first agent meshes.
    meshed: Cgroup,
    _instance: HttpServer,
    netns: Netns,
    dir: tempfile::TempDir,
}

/// A namespace with one service, and the first agent meshing `meshed`.
fn node_with_first_agent(meshed: Cgroup) -> Node {
    require_root();
    let netns = Netns::create(&unique_name("ex"));
    netns.add_loopback_address("198.18.0.10/32");
    let instance = HttpServer::start(&netns, INSTANCE.parse().unwrap(), "instance");
    let first = Agent::start(&netns, &config_meshing(&meshed));
    Node {
        first,
        meshed,
        _instance: instance,
        netns,
        dir: tempfile::tempdir().expect("temporary directory"),
    }
}

fn config_meshing(cgroup: &Cgroup) -> Config {
    let mut config = site_config("Here");
    config.services = vec![meshed_service(
        "svc",
        SERVICE.parse().unwrap(),
        INSTANCE.parse().unwrap(),
    )];
    config.workloads = vec![meshed_workload(cgroup)];
    config
}

impl Node {
    /// The second agent's configuration, meshing `cgroup` on ports of its own (both agents
    /// could bind, so that only meshing the same cgroups can stop it).
    fn second_config(&self, cgroup: &Cgroup) -> std::path::PathBuf {
        let mut config = config_meshing(cgroup);
        config.proxy.port = 15101;
        config.admin.port = 15100;
        let path = self.dir.path().join(format!("{}.toml", unique_name("cfg")));
        std::fs::write(&path, config_text(&config)).expect("writing the configuration");
        path
    }

    /// `cheops ARGS` inside the node's namespace, which must exit within 15 s.
    fn cheops(&self, args: &[&str], config: &Path) -> (ExitStatus, String) {
        let log = self.dir.path().join(format!("{}.log", unique_name("log")));
        let mut command = self
            .netns
            .command(cheops_bin().to_str().expect("UTF-8 path"));
        command
            .args(args)
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1");
        let mut process = Process::spawn("second cheops", command, Some(&log));
        let mut status = None;
        let exited = wait_until(Duration::from_secs(15), || {
            status = process.exited();
            status.is_some()
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(exited, "`cheops {args:?}` is still running:\n{text}");
        (status.expect("it exited"), text)
    }

    /// A second agent meshing `cgroup` is refused, and `cheops check` says why; the message
    /// names the cgroup and the first agent.
    fn assert_second_agent_refused(&self, cgroup: &Cgroup) {
        let config = self.second_config(cgroup);
        let first_pid = format!("pid {}", self.first.process.pid());
        for verb in [&["agent"][..], &["check"][..]] {
            let (status, text) = self.cheops(verb, &config);
            assert!(!status.success(), "`cheops {verb:?}` succeeded:\n{text}");
            let refusal = text
                .lines()
                .find(|line| line.contains("already meshed by another cheops agent"))
                .unwrap_or_else(|| panic!("`cheops {verb:?}` does not say why:\n{text}"));
            assert!(
                refusal.contains(&cgroup.path().display().to_string())
                    && refusal.contains(&first_pid)
                    && refusal.contains("cheops agent --config"),
                "the refusal must name {} and the first agent ({first_pid}): {refusal}",
                cgroup.path().display()
            );
        }
        self.assert_first_serves();
    }

    fn assert_first_serves(&self) {
        let mut client = self.netns.command("curl");
        client.args(["-sS", "-i", "-m", "5", &format!("http://{SERVICE}/whoami")]);
        self.meshed.enter(&mut client);
        let output = client.output().expect("running curl");
        let answer = String::from_utf8_lossy(&output.stdout).to_lowercase();
        assert!(
            answer.contains("x-cheops-site: here") && answer.ends_with("instance"),
            "the first agent no longer serves its workload: {answer}\n{}",
            self.first.log_text()
        );
    }
}

#[test]
fn a_second_agent_on_the_same_cgroup_or_below_it_refuses_to_start() {
    let node = node_with_first_agent(Cgroup::create(&unique_name("exa")));
    node.assert_first_serves();
    node.assert_second_agent_refused(&node.meshed);
    let below = Cgroup::create(
        node.meshed
            .relative_path()
            .join("below")
            .to_str()
            .expect("UTF-8 path"),
    );
    node.assert_second_agent_refused(&below);
}

#[test]
fn a_second_agent_on_an_ancestor_of_the_first_ones_cgroup_refuses_to_start() {
    let above = Cgroup::create(&unique_name("exb"));
    let meshed = Cgroup::create(
        above
            .relative_path()
            .join("meshed")
            .to_str()
            .expect("UTF-8 path"),
    );
    let node = node_with_first_agent(meshed);
    node.assert_second_agent_refused(&above);
}

#[test]
fn of_two_agents_started_at_the_same_instant_on_one_cgroup_exactly_one_runs() {
    let node = node_with_first_agent(Cgroup::create(&unique_name("exc")));
    let contested = Cgroup::create(&unique_name("exd"));
    for round in 0..3 {
        let configs: Vec<_> = (0..2)
            .map(|i| {
                let mut config = config_meshing(&contested);
                config.proxy.port = 15201 + i;
                config.proxy.inbound_port = 15211 + i;
                config.admin.port = 15221 + i;
                let path = node.dir.path().join(format!("{}.toml", unique_name("cfg")));
                std::fs::write(&path, config_text(&config)).expect("writing the configuration");
                path
            })
            .collect();
        let logs: Vec<_> = (0..2)
            .map(|i| node.dir.path().join(format!("race-{round}-{i}.log")))
            .collect();
        let mut agents: Vec<Process> = configs
            .iter()
            .zip(&logs)
            .map(|(config, log)| {
                let mut command = node
                    .netns
                    .command(cheops_bin().to_str().expect("UTF-8 path"));
                command
                    .arg("agent")
                    .arg("--config")
                    .arg(config)
                    .env("NO_COLOR", "1");
                Process::spawn("racing cheops", command, Some(log))
            })
            .collect();
        let read = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
        let settled = wait_until(Duration::from_secs(15), || {
            logs.iter().all(|log| {
                let text = read(log);
                text.contains("cheops agent ready") || text.contains("already meshed")
            })
        });
        let texts: Vec<String> = logs.iter().map(|log| read(log)).collect();
        assert!(
            settled,
            "round {round}: the agents did not settle:\n{texts:#?}"
        );
        let ready = texts
            .iter()
            .filter(|t| t.contains("cheops agent ready"))
            .count();
        assert_eq!(
            ready, 1,
            "round {round}: exactly one agent must run:\n{texts:#?}"
        );
        let refused = agents.iter_mut().filter_map(|a| a.exited()).count();
        assert_eq!(
            refused, 1,
            "round {round}: the other must have exited:\n{texts:#?}"
        );
    }
}
