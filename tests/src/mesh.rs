//! A mesh of sites that each run cheops and the same unmodified applications: json-server as
//! the `catalog` service (its data names its site) and nginx as the `front` service, which
//! calls the catalog through `proxy_pass`. Clients run inside a site's workload cgroup.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use interceptor::{
    config::{Config, Peer, PeerApiSettings, ReplicationSettings, Service},
    resources::ResourceRule,
    tls::TlsFiles,
};

use crate::{
    agent::{meshed_service, meshed_workload, site_config, Agent},
    apps::{JsonServer, Nginx},
    cgroup::Cgroup,
    cheops_bin,
    netns::run,
    process::wait_until,
    sites::Topology,
    unique_name,
};

pub const CATALOG: &str = "198.18.1.10:80";
pub const CATALOG_LOCAL: &str = "127.0.0.1:3000";
pub const FRONT: &str = "198.18.1.20:80";
pub const FRONT_LOCAL: &str = "127.0.0.1:8080";
pub const PEER_PORT: u16 = 15443;

pub struct MeshSite {
    pub name: String,
    pub agent: Agent,
    pub catalog: JsonServer,
    _front: Nginx,
    // Dropped after the processes in it.
    pub workload: Cgroup,
}

pub struct Mesh {
    pub sites: Vec<MeshSite>,
    /// Each site's durable store (`<site>.redb`), kept across restarts of its agent.
    pub state: tempfile::TempDir,
    pub certs: tempfile::TempDir,
    pub topology: Topology,
}

/// What a mesh's sites run besides the defaults.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// The catalog service's `[[service.resource]]` rules.
    pub catalog_resources: Vec<ResourceRule>,
    /// Each site's `[replication]` settings; its `store` is replaced: always `<site>.redb` in
    /// the mesh's state directory.
    pub replication: ReplicationSettings,
    /// json-server's data at each site, by site name; a site not named here gets one product
    /// that names its site.
    pub catalog_data: HashMap<String, serde_json::Value>,
    /// `[peer_api] request_timeout`.
    pub request_timeout: Duration,
    /// `[proxy] response_timeout`: how long an instance may take to answer (a big upload's
    /// answer comes once its whole body was sent).
    pub response_timeout: Duration,
    /// More meshed services at every site, besides `catalog` and `front`; their instances are
    /// the test's to start.
    pub services: Vec<Service>,
    /// The catalog is an inbound service: reached by other machines at `<site address>:3000`,
    /// where json-server itself listens too (on every address).
    pub inbound_catalog: bool,
    /// Changes each site's configuration last, before its agent starts (policies and the like).
    pub adjust: fn(&mut Config),
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            catalog_resources: Vec::new(),
            replication: ReplicationSettings::default(),
            catalog_data: HashMap::new(),
            request_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(5),
            services: Vec::new(),
            inbound_catalog: false,
            adjust: |_| {},
        }
    }
}

/// Where other machines reach `site`'s catalog when it is inbound (`MeshOptions::inbound_catalog`).
pub fn inbound_catalog(site: std::net::Ipv4Addr) -> SocketAddr {
    SocketAddr::from((site, 3000))
}

/// The catalog's pods, a replicated resource whose ID is the `id` field of its JSON.
pub fn pod_rule() -> ResourceRule {
    ResourceRule::parse("/pods", "/pods/{id}", "json:id").expect("a valid resource rule")
}

/// Writes a CA and certificates for `sites` into `dir` with `cheops certs`.
pub fn generate_certs(dir: &Path, sites: &[&str]) {
    run(std::process::Command::new(cheops_bin())
        .arg("certs")
        .arg("--out")
        .arg(dir)
        .arg("--sites")
        .arg(sites.join(",")));
}

/// A site's certificate and key files in a `cheops certs` directory.
pub fn cert_files(dir: &Path, site: &str) -> (PathBuf, PathBuf) {
    let (cert, key) =
        interceptor::tls::site_files(site).expect("a site name fit for a certificate");
    (dir.join(cert), dir.join(key))
}

impl Mesh {
    /// Starts cheops, json-server and nginx at every site of `topology`. A site reaches a peer
    /// at `peer_addresses[(site, peer)]` when given (a relay), else at the peer's own address.
    pub fn start(topology: Topology, peer_addresses: &HashMap<(&str, &str), SocketAddr>) -> Mesh {
        Mesh::start_with(topology, peer_addresses, &MeshOptions::default())
    }

    /// `start`, with `options`.
    pub fn start_with(
        topology: Topology,
        peer_addresses: &HashMap<(&str, &str), SocketAddr>,
        options: &MeshOptions,
    ) -> Mesh {
        let certs = tempfile::tempdir().expect("temporary directory");
        let state = tempfile::tempdir().expect("temporary directory");
        let names: Vec<&str> = topology.sites.iter().map(|s| s.name.as_str()).collect();
        generate_certs(certs.path(), &names);
        let mut sites = Vec::new();
        for site in &topology.sites {
            let netns = &site.netns;
            netns.add_loopback_address("198.18.1.10/32");
            netns.add_loopback_address("198.18.1.20/32");
            let workload = Cgroup::create(&unique_name("chs"));
            let data = options.catalog_data.get(&site.name).cloned().unwrap_or_else(|| {
                serde_json::json!({
                    "products": [{"id": 1, "name": format!("widget of {}", site.name), "site": site.name}]
                })
            });
            let catalog_local: SocketAddr = CATALOG_LOCAL.parse().unwrap();
            let catalog = if options.inbound_catalog {
                let everywhere = SocketAddr::from(([0, 0, 0, 0], catalog_local.port()));
                JsonServer::start(netns, everywhere, &data)
            } else {
                JsonServer::start(netns, catalog_local, &data)
            };
            let front = Nginx::start(
                netns,
                &workload,
                FRONT_LOCAL.parse().unwrap(),
                CATALOG.parse().unwrap(),
            );
            let mut config = site_config(&site.name);
            config.proxy.response_timeout = options.response_timeout;
            config.peer_api = PeerApiSettings {
                listen: Some(SocketAddr::from((site.address, PEER_PORT))),
                heartbeat_interval: Duration::from_millis(200),
                heartbeat_timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(1),
                request_timeout: options.request_timeout,
                ..PeerApiSettings::default()
            };
            let (cert, key) = cert_files(certs.path(), &site.name);
            config.tls = Some(TlsFiles {
                ca: certs.path().join(interceptor::tls::CA_FILE),
                cert,
                key,
                expiry_margin: interceptor::tls::DEFAULT_EXPIRY_MARGIN,
            });
            let mut catalog_service =
                meshed_service("catalog", CATALOG.parse().unwrap(), catalog_local);
            catalog_service.resources = options.catalog_resources.clone();
            if options.inbound_catalog {
                catalog_service.address = inbound_catalog(site.address);
                catalog_service.inbound = true;
            }
            config.services = vec![
                catalog_service,
                meshed_service(
                    "front",
                    FRONT.parse().unwrap(),
                    FRONT_LOCAL.parse().unwrap(),
                ),
            ];
            config.services.extend(options.services.iter().cloned());
            config.replication = ReplicationSettings {
                store: state.path().join(format!("{}.redb", site.name)),
                ..options.replication.clone()
            };
            config.workloads = vec![meshed_workload(&workload)];
            config.peers = topology
                .sites
                .iter()
                .filter(|p| p.name != site.name)
                .map(|peer| Peer {
                    name: peer.name.clone(),
                    address: peer_addresses
                        .get(&(site.name.as_str(), peer.name.as_str()))
                        .copied()
                        .unwrap_or(SocketAddr::from((peer.address, PEER_PORT))),
                    allow_services: None,
                })
                .collect();
            (options.adjust)(&mut config);
            let agent = Agent::start(netns, &config);
            sites.push(MeshSite {
                name: site.name.clone(),
                agent,
                catalog,
                _front: front,
                workload,
            });
        }
        let mesh = Mesh {
            sites,
            state,
            certs,
            topology,
        };
        for site in &mesh.sites {
            let peers = mesh.sites.len() - 1;
            mesh.wait_for_peers(&site.name, peers);
        }
        mesh
    }

    pub fn site(&self, name: &str) -> &MeshSite {
        self.sites
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no site {name} in this mesh"))
    }

    pub fn site_mut(&mut self, name: &str) -> &mut MeshSite {
        self.sites
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no site {name} in this mesh"))
    }

    /// Crashes `site`'s agent (`kill -9`) if it runs, starts it again on the same configuration
    /// and store, and waits until it sees every other site up.
    pub fn restart_agent(&mut self, site: &str) {
        self.site_mut(site).agent.restart();
        self.wait_for_peers(site, self.sites.len() - 1);
    }

    /// Moves `site`'s store into `dir` (a file system a test can fill up), its agent crashed
    /// and started again meanwhile; the state directory keeps a link to it.
    pub fn move_store(&mut self, site: &str, dir: &Path) {
        let store = self.state.path().join(format!("{site}.redb"));
        let moved = dir.join(format!("{site}.redb"));
        self.site_mut(site).agent.crash();
        std::fs::copy(&store, &moved).expect("copying the store");
        std::fs::remove_file(&store).expect("removing the store");
        std::os::unix::fs::symlink(&moved, &store).expect("linking the store");
        self.restart_agent(site);
    }

    /// The peers that `site` sees up, with their round trips in microseconds.
    pub fn peers_up(&self, site: &str) -> HashMap<String, u64> {
        let status = self.site(site).agent.status();
        status
            .peers
            .into_iter()
            .filter(|p| p.up)
            .map(|p| (p.name, p.round_trip_us.unwrap_or_default()))
            .collect()
    }

    /// Waits until `site` sees exactly `count` peers up; fails the test with its log if not.
    pub fn wait_for_peers(&self, site: &str, count: usize) {
        let seen = wait_until(Duration::from_secs(15), || {
            self.peers_up(site).len() == count
        });
        assert!(
            seen,
            "site {site} does not see {count} peers up: {:?}\n{}",
            self.peers_up(site),
            self.site(site).agent.log_text()
        );
    }

    /// Runs `program ARGS` at `site`, inside its workload cgroup when `meshed`.
    pub fn run_at(&self, site: &str, meshed: bool, program: &str, args: &[&str]) -> Output {
        let at = self.topology.site(site);
        let mut command = at.netns.command(program);
        command.args(args);
        if meshed {
            self.site(site).workload.enter(&mut command);
        }
        command
            .output()
            .unwrap_or_else(|e| panic!("running {program} at {site}: {e}"))
    }

    /// Runs `program ARGS` at `site` under `cheops exec --scope SCOPE`: in a workload of its
    /// own whose default scope is `scope`.
    pub fn run_scoped(&self, site: &str, scope: &str, program: &str, args: &[&str]) -> Output {
        let control = self.site(site).agent.control.to_string_lossy().into_owned();
        let mut exec = vec![
            "exec",
            "--control",
            &control,
            "--scope",
            scope,
            "--",
            program,
        ];
        exec.extend(args);
        let cheops = crate::cheops_bin();
        self.run_at(site, false, cheops.to_str().unwrap(), &exec)
    }

    /// `curl -i` from `site`'s workload with extra `headers`: the whole answer as text.
    pub fn curl(&self, site: &str, url: &str, headers: &[&str]) -> Answer {
        let mut args = vec!["-sS", "-i", "-m", "10"];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(url);
        Answer::from(self.run_at(site, true, "curl", &args))
    }
}

/// A client's view of one HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub raw: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_lowercase()).map(String::as_str)
    }
}

impl Answer {
    /// The answer whose head is `head` (the status line, then the header lines) and whose
    /// body is `body`; `raw` is all the client printed, for failure messages.
    pub fn from_parts<'a>(
        mut head: impl Iterator<Item = &'a str>,
        body: String,
        raw: String,
    ) -> Answer {
        let status = head
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let headers = head
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body,
            raw,
        }
    }
}

/// `curl -i`'s output: the head and the body on standard output.
impl From<Output> for Answer {
    fn from(output: Output) -> Answer {
        let raw = String::from_utf8_lossy(&output.stdout).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        Answer::from_parts(
            head.lines(),
            body.to_owned(),
            format!("{raw}{}", String::from_utf8_lossy(&output.stderr)),
        )
    }
}
