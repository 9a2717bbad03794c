//! A `cheops agent` running inside a network namespace, with its configuration and log in a
//! temporary directory; stopped (SIGKILL) when dropped.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use interceptor::{
    admin::api::{ReplicasView, Status, REPLICAS_PAGE, STATUS_PAGE},
    config::{Config, Service, Workload, DEFAULT_CONTROL_SOCKET},
};

use crate::{
    cgroup::Cgroup,
    cheops_bin,
    netns::{command_in, Netns},
    process::Process,
};

pub const ADMIN: &str = "127.0.0.1:15000";

pub struct Agent {
    pub process: Process,
    netns: String,
    pub log: PathBuf,
    config: PathBuf,
    /// Where `cheops exec` and other commands that change the agent reach it.
    pub control: PathBuf,
    /// Whether the read-only TCP admin endpoint is on (else the control socket is read).
    tcp: bool,
    /// Started inside a cgroup of its own: `restart` does not know how to do that again.
    in_cgroup: bool,
    _dir: tempfile::TempDir,
}

/// A configuration of `site` with every default: a test sets the fields it needs.
pub fn site_config(site: &str) -> Config {
    Config {
        site: site.to_owned(),
        proxy: Default::default(),
        admin: Default::default(),
        replication: Default::default(),
        services: Vec::new(),
        workloads: Vec::new(),
        peers: Vec::new(),
        tls: None,
        peer_api: Default::default(),
        carriers: Default::default(),
        inbound: Default::default(),
    }
}

/// A meshed service with no resource rules.
pub fn meshed_service(name: &str, address: SocketAddr, local: SocketAddr) -> Service {
    Service {
        name: name.to_owned(),
        address,
        local,
        resources: Vec::new(),
        inbound: false,
        protocol: Default::default(),
    }
}

/// The processes of `cgroup` meshed, with no default scope.
pub fn meshed_workload(cgroup: &Cgroup) -> Workload {
    Workload {
        cgroup: cgroup.relative_path().to_owned(),
        default_scope: None,
        allow_sites: None,
        allow: None,
    }
}

/// `config` as the TOML file the agent reads.
pub fn config_text(config: &Config) -> String {
    toml::to_string(config).expect("a configuration writes as TOML")
}

impl Agent {
    /// Starts the agent in `netns` with `config` and waits until its admin endpoint answers;
    /// fails the test with the agent's log if it does not start.
    pub fn start(netns: &Netns, config: &Config) -> Agent {
        Agent::launch(netns, config, None)
    }

    /// Like `start`, with the agent itself inside `cgroup` (to check it never intercepts itself).
    pub fn start_in_cgroup(netns: &Netns, config: &Config, cgroup: &Cgroup) -> Agent {
        Agent::launch(netns, config, Some(cgroup))
    }

    fn launch(netns: &Netns, config: &Config, cgroup: Option<&Cgroup>) -> Agent {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("cheops.toml");
        // Agents of one test share the filesystem: each gets its control socket of its own.
        let mut config = config.clone();
        if config.admin.control == Path::new(DEFAULT_CONTROL_SOCKET) {
            config.admin.control = dir.path().join("control.sock");
        }
        std::fs::write(&config_path, config_text(&config))
            .expect("writing the agent configuration");
        let log = dir.path().join("agent.log");
        let mut command = agent_command(netns.name(), &config_path);
        if let Some(cgroup) = cgroup {
            cgroup.enter(&mut command);
        }
        let mut agent = Agent {
            process: Process::spawn("cheops agent", command, Some(&log)),
            netns: netns.name().to_owned(),
            log,
            config: config_path,
            control: config.admin.control.clone(),
            tcp: config.admin.tcp,
            in_cgroup: cgroup.is_some(),
            _dir: dir,
        };
        agent.wait_until_ready();
        agent
    }

    fn wait_until_ready(&mut self) {
        let ready = crate::process::wait_until(Duration::from_secs(15), || {
            self.process.exited().is_none() && self.admin("/ready").is_some()
        });
        assert!(
            ready,
            "cheops agent did not become ready; its log:\n{}",
            self.log_text()
        );
    }

    /// Starts the agent again on the same configuration (and so the same store), its output
    /// appended to the same log, after it was stopped (`process.kill_9()`) or to crash it now.
    pub fn restart(&mut self) {
        assert!(!self.in_cgroup, "restart of an agent started in a cgroup");
        self.process.kill_9();
        let command = agent_command(&self.netns, &self.config);
        self.process = Process::spawn("cheops agent", command, Some(&self.log));
        self.wait_until_ready();
    }

    /// Kills the agent (`kill -9`), as a crash would; `restart` starts it again.
    pub fn crash(&mut self) {
        self.process.kill_9();
    }

    /// The agent's process id while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        self.process.exited().is_none().then(|| self.process.pid())
    }

    /// GETs an admin page from inside the namespace (through the control socket when the TCP
    /// endpoint is off); `None` if the agent does not answer.
    pub fn admin(&self, page: &str) -> Option<String> {
        match self.tcp {
            true => admin_page(&self.netns, page),
            false => curl_page(
                command_in(&self.netns, "curl")
                    .arg("--unix-socket")
                    .arg(&self.control),
                page,
            ),
        }
    }

    pub fn status(&self) -> Status {
        let text = self
            .admin(STATUS_PAGE)
            .expect("the agent's /status answers");
        serde_json::from_str(&text).expect("/status is the admin API's Status")
    }

    /// What `cheops status` prints for this agent, run in its namespace.
    pub fn status_text(&self) -> String {
        let output = command_in(&self.netns, cheops_bin().to_str().expect("UTF-8 path"))
            .arg("status")
            .output()
            .expect("running cheops status");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn replicas(&self) -> ReplicasView {
        let text = self
            .admin(REPLICAS_PAGE)
            .expect("the agent's /replicas answers");
        serde_json::from_str(&text).expect("/replicas is the admin API's ReplicasView")
    }

    /// The configuration file the agent was started with (or was last given).
    pub fn config(&self) -> Config {
        Config::load(&self.config).expect("the agent's configuration loads")
    }

    /// Writes `text` as the agent's configuration file, for a reload to apply.
    pub fn write_config_text(&self, text: &str) {
        std::fs::write(&self.config, text).expect("writing the agent configuration");
    }

    /// Writes `config` as the agent's configuration file, for a reload to apply.
    pub fn write_config(&self, config: &Config) {
        self.write_config_text(&config_text(config));
    }

    /// `cheops reload` through the agent's control socket, from inside its namespace.
    pub fn reload(&self) -> std::process::Output {
        command_in(&self.netns, cheops_bin().to_str().expect("UTF-8 path"))
            .arg("reload")
            .arg("--control")
            .arg(&self.control)
            .output()
            .expect("running cheops reload")
    }

    /// Sends the agent SIGHUP (a reload of its file).
    pub fn hang_up(&mut self) {
        let pid = self.pid().expect("the agent runs");
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -HUP {pid} failed");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// GETs a page of the admin endpoint of the agent in the network namespace `netns`, however it
/// was started; `None` if none answers.
pub fn admin_page(netns: &str, page: &str) -> Option<String> {
    curl_page(&mut command_in(netns, "curl"), page)
}

/// `page` of the admin endpoint that `curl` (with its options to reach it) reaches.
fn curl_page(curl: &mut std::process::Command, page: &str) -> Option<String> {
    let output = curl
        .args(["-sf", "-m", "2"])
        .arg(format!("http://{ADMIN}{page}"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn agent_command(netns: &str, config: &std::path::Path) -> std::process::Command {
    let mut command = command_in(netns, cheops_bin().to_str().expect("UTF-8 path"));
    command
        .arg("agent")
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1");
    command
}
