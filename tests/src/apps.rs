//! Real, unmodified applications for the tests, started inside a namespace: Python's
//! `http.server` serving a directory, a TCP echo server (a service that is not HTTP), OpenSSH's
//! sshd (one where the server speaks first).
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use crate::{netns::Netns, process::Process};

pub struct HttpServer {
    _process: Process,
    dir: tempfile::TempDir,
}

impl HttpServer {
    /// Serves, at `address` in `netns`, a directory whose file `whoami` holds `name`.
    pub fn start(netns: &Netns, address: SocketAddr, name: &str) -> HttpServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("whoami"), name).expect("writing whoami");
        let mut command = netns.command("python3");
        command
            .arg(client_script("http_server.py"))
            .arg(address.ip().to_string())
            .arg(address.port().to_string())
            .arg(dir.path());
        let process = Process::spawn(&format!("http.server {name}"), command, None);
        wait_for_listener(netns, address);
        HttpServer {
            _process: process,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A TCP echo server at `address` in `netns`.
pub fn echo_server(netns: &Netns, address: SocketAddr) -> Process {
    let mut command = netns.command("python3");
    command
        .arg(client_script("echo_server.py"))
        .arg(address.to_string());
    let process = Process::spawn("echo server", command, None);
    wait_for_listener(netns, address);
    process
}

/// OpenSSH's sshd at `address` in `netns`: a protocol where the server speaks first (its
/// version line). Only its host key is of use (`ssh-keyscan` fetches it); it lets no one in.
pub struct Sshd {
    _process: Process,
    dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start(netns: &Netns, address: SocketAddr) -> Sshd {
        let dir = tempfile::tempdir().expect("temporary directory");
        let key = dir.path().join("host_key");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("running ssh-keygen (package openssh-client)");
        assert!(made.success(), "ssh-keygen failed");
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        let mut command = netns.command("/usr/sbin/sshd");
        command
            .args(["-D", "-e", "-f", "/dev/null", "-h"])
            .arg(&key)
            .args(["-o", &format!("ListenAddress={address}")])
            .args([
                "-o",
                "PidFile=none",
                "-o",
                "AuthenticationMethods=publickey",
            ]);
        let process = Process::spawn("sshd", command, None);
        wait_for_listener(netns, address);
        Sshd {
            _process: process,
            dir,
        }
    }

    /// The host key, as `ssh-keyscan` prints it after the host: `ssh-ed25519 AAAA...`.
    pub fn host_key(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("host_key.pub"))
            .expect("reading the host key");
        public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The path of one of the scripts in tests/clients.
pub fn client_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Checks what `bad_requests.py` printed: malformed requests got 400, an oversized head 431,
/// and the stalled client was cut off. Returns every case's result, by case.
pub fn assert_bad_requests_answered(output: &std::process::Output) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(&output.stdout);
    let results: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(case, result)| (case.to_owned(), result.to_owned()))
        .collect();
    let result = |case: &str| results.get(case).map(String::as_str);
    assert_eq!(result("malformed"), Some("400"), "{text}");
    assert_eq!(result("oversized"), Some("431"), "{text}");
    assert_eq!(result("bad-version"), Some("400"), "{text}");
    assert!(
        matches!(result("stalled"), Some("closed") | Some("408")),
        "a stalled client must be cut off: {text}"
    );
    results
}

/// Waits until something accepts TCP connections at `address` inside `netns`.
/// Up to 30 s: a Python or Node server takes seconds to start on a loaded machine.
pub fn wait_for_listener(netns: &Netns, address: SocketAddr) {
    wait_for_listener_within(netns, address, Duration::from_secs(30));
}

/// The same, up to `limit` (a server under valgrind starts slowly).
pub fn wait_for_listener_within(netns: &Netns, address: SocketAddr, limit: Duration) {
    let target = format!("/dev/tcp/{}/{}", address.ip(), address.port());
    let listening = crate::process::wait_until(limit, || {
        netns
            .command("bash")
            .args(["-c", &format!("exec 3<>{target}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        listening,
        "nothing listens at {address} in namespace {}",
        netns.name()
    );
}

/// json-server (npm), the REST service of the tests: serves `db.json` made from `data`, and
/// logs each request it serves (`requests` counts them).
pub struct JsonServer {
    process: Process,
    dir: tempfile::TempDir,
}

impl JsonServer {
    pub fn start(netns: &Netns, address: SocketAddr, data: &serde_json::Value) -> JsonServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("db.json"), data.to_string()).expect("writing db.json");
        let process = JsonServer::spawn(netns, address, dir.path());
        JsonServer { process, dir }
    }

    /// json-server through `json_server.js`, which saves `db.json` before each answer, as an
    /// instance killed on purpose must not lose what it acknowledged.
    fn spawn(netns: &Netns, address: SocketAddr, dir: &Path) -> Process {
        let mut command = netns.command("node");
        command
            .env("NODE_PATH", global_node_modules())
            .arg(client_script("json_server.js"))
            .arg(address.ip().to_string())
            .arg(address.port().to_string())
            .arg(dir.join("db.json"))
            .current_dir(dir);
        let process = Process::spawn("json-server", command, Some(&dir.join("log")));
        wait_for_listener(netns, address);
        process
    }

    /// Starts it again after `stop`, on the data it had written (`db.json`, saved before each
    /// answer).
    pub fn start_again(&mut self, netns: &Netns, address: SocketAddr) {
        self.process.kill_9();
        self.process = JsonServer::spawn(netns, address, self.dir.path());
    }

    /// How many `method` requests whose path starts with `path_prefix` it has served, as its
    /// request log says (`PATCH /pods/3 200 4.1 ms - 52`).
    pub fn requests(&self, method: &str, path_prefix: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let wanted = format!("{method} {path_prefix}");
        log.lines().filter(|line| line.contains(&wanted)).count()
    }

    /// Its folder: `db.json` and its request log `log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops it, as a crashed instance would be.
    pub fn stop(&mut self) {
        self.process.kill_9();
    }
}

/// Where npm installs global packages (json-server), asked once.
fn global_node_modules() -> &'static str {
    static ROOT: OnceLock<String> = OnceLock::new();
    ROOT.get_or_init(|| {
        let output = Command::new("npm")
            .args(["root", "-g"])
            .output()
            .expect("npm, to find json-server (scripts/setup-toolchain.sh installs both)");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    })
}

/// nginx (Debian) as a front service: listens at `listen` and sends every request to
/// `upstream` through its ordinary `proxy_pass`, in `cgroup` so that its calls are meshed.
/// Its own configuration, pid and temporary files live in a temporary directory.
pub struct Nginx {
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(
        netns: &Netns,
        cgroup: &crate::cgroup::Cgroup,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Nginx {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().display().to_string();
        // The catalog's answer says who served it; nginx shows it, and the token it saw, to
        // the client (the headers an unmodified front would not show, for the tests to read).
        let config = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {path}/nginx.pid;\n\
             error_log {path}/error.log warn;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {path}/body;\n\
             proxy_temp_path {path}/proxy;\n  fastcgi_temp_path {path}/fastcgi;\n\
             uwsgi_temp_path {path}/uwsgi;\n  scgi_temp_path {path}/scgi;\n\
             server {{\n    listen {listen};\n    location / {{\n\
             proxy_pass http://{upstream};\n\
             add_header X-Catalog-Site $upstream_http_x_cheops_site always;\n\
             add_header X-Front-Saw-Token $http_x_auth_token always;\n    }}\n  }}\n}}\n"
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).expect("writing nginx.conf");
        let mut command = netns.command("nginx");
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&config_path);
        cgroup.enter(&mut command);
        let process = Process::spawn("nginx", command, Some(&dir.path().join("out.log")));
        wait_for_listener(netns, listen);
        Nginx {
            _process: process,
            _dir: dir,
        }
    }
}
