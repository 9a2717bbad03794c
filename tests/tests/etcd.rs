//! A real gRPC application that no one here wrote, as root: etcd (Debian's) at each of two
//! sites, driven by its own client `etcdctl` in a workload cgroup at site A. With no scope it
//! reads A's keys; under `cheops exec --scope '{kv: B}'` it reads B's; `etcdctl watch`, a
//! long-lived bidirectional stream, works through cheops, locally and across sites.
use std::{collections::HashMap, net::SocketAddr, path::Path, time::Duration};

use cheops_tests::{
    agent::meshed_service,
    cheops_bin,
    grpc::{etcdctl, Etcd},
    mesh::{Mesh, MeshOptions},
    process::{wait_until, Process},
    sites::Topology,
};

/// What etcdctl dials: the kv service's address, intercepted by cheops.
const KV: &str = "198.18.1.40:2379";
/// Where each site's etcd listens for clients, and for (no) other members.
const KV_LOCAL: &str = "127.0.0.1:2379";
const KV_PEER: &str = "127.0.0.1:2380";

fn kv() -> SocketAddr {
    KV.parse().unwrap()
}

/// Two sites, each with its etcd holding `site` = its name.
fn two_sites() -> (Mesh, Vec<Etcd>) {
    let options = MeshOptions {
        services: vec![meshed_service("kv", kv(), KV_LOCAL.parse().unwrap())],
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(Topology::create(&["A", "B"]), &HashMap::new(), &options);
    let etcds = mesh
        .topology
        .sites
        .iter()
        .map(|site| {
            let etcd = Etcd::start(
                &site.netns,
                KV_LOCAL.parse().unwrap(),
                KV_PEER.parse().unwrap(),
                &site.name,
            );
            put_directly(&mesh, &site.name, "site", &site.name);
            etcd
        })
        .collect();
    (mesh, etcds)
}

/// `etcdctl put` at `site`'s etcd itself, not meshed.
fn put_directly(mesh: &Mesh, site: &str, key: &str, value: &str) {
    let netns = &mesh.topology.site(site).netns;
    let local = KV_LOCAL.parse().unwrap();
    let output = etcdctl(netns, local, &["put", key, value])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// The value of `key` as etcdctl at A reads it through cheops, under `scope` if given.
fn get_at_a(mesh: &Mesh, scope: Option<&str>, key: &str) -> String {
    let mut command = etcdctl(
        &mesh.topology.site("A").netns,
        kv(),
        &["get", key, "--print-value-only"],
    );
    let output = match scope {
        None => {
            mesh.site("A").workload.enter(&mut command);
            command.output().unwrap()
        }
        Some(scope) => scoped(mesh, scope, &command).output().unwrap(),
    };
    assert!(
        output.status.success(),
        "{output:?}\nA's log:\n{}",
        mesh.site("A").agent.log_text()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `command` run at A under `cheops exec --scope SCOPE`.
fn scoped(mesh: &Mesh, scope: &str, command: &std::process::Command) -> std::process::Command {
    let mut exec = mesh
        .topology
        .site("A")
        .netns
        .command(cheops_bin().to_str().unwrap());
    exec.arg("exec")
        .arg("--control")
        .arg(&mesh.site("A").agent.control)
        .args(["--scope", scope, "--"])
        .arg(command.get_program())
        .args(command.get_args())
        .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
    exec
}

/// An `etcdctl watch` running at A, its output in a file.
struct Watch {
    process: Process,
    output: tempfile::NamedTempFile,
}

impl Watch {
    fn saw(&self, text: &str) -> bool {
        std::fs::read_to_string(self.output.path()).is_ok_and(|o| o.contains(text))
    }
}

fn watch_at_a(mesh: &Mesh, scope: Option<&str>, key: &str) -> Watch {
    let output = tempfile::NamedTempFile::new().unwrap();
    let mut command = etcdctl(&mesh.topology.site("A").netns, kv(), &["watch", key]);
    let command = match scope {
        None => {
            mesh.site("A").workload.enter(&mut command);
            command
        }
        Some(scope) => scoped(mesh, scope, &command),
    };
    let process = Process::spawn("etcdctl watch", command, Some(output.path()));
    Watch { process, output }
}

/// Puts `key` at `site` until `watch` sees it (a watch sees only what comes after it started).
fn put_until_seen(mesh: &Mesh, site: &str, key: &str, watch: &Watch) -> bool {
    (0..20).any(|i| {
        put_directly(mesh, site, key, &format!("from-{site}-{i}"));
        wait_until(Duration::from_millis(500), || {
            watch.saw(&format!("from-{site}-"))
        })
    })
}

/// Ends what `cheops exec` runs (its command is in a cgroup of its own under the workload),
/// so that it cleans up as it does when its command ends.
fn end_exec(workload: &Path, exec: &mut Process) {
    let transient = workload.join(format!("cheops-exec-{}", exec.pid()));
    let _ = std::fs::write(transient.join("cgroup.kill"), "1");
    let ended = wait_until(Duration::from_secs(5), || exec.exited().is_some());
    assert!(ended, "cheops exec did not end with its command");
}

#[test]
fn etcdctl_reads_and_watches_the_site_its_scope_names() {
    let (mesh, _etcds) = two_sites();
    assert_eq!(get_at_a(&mesh, None, "site"), "A");
    assert_eq!(get_at_a(&mesh, Some("{kv: B}"), "site"), "B");
    assert_eq!(get_at_a(&mesh, Some("{kv: A}"), "site"), "A");

    let local = watch_at_a(&mesh, None, "greeting");
    let mut across = watch_at_a(&mesh, Some("{kv: B}"), "greeting");
    assert!(
        put_until_seen(&mesh, "B", "greeting", &across),
        "the watch through cheops to B saw nothing\nA's log:\n{}",
        mesh.site("A").agent.log_text()
    );
    assert!(
        put_until_seen(&mesh, "A", "greeting", &local),
        "the local watch through cheops saw nothing\nA's log:\n{}",
        mesh.site("A").agent.log_text()
    );
    // Each watch saw its own site's keys only.
    assert!(!local.saw("from-B-"), "the local watch saw B's keys");
    assert!(!across.saw("from-A-"), "the watch on B saw A's keys");
    end_exec(mesh.site("A").workload.path(), &mut across.process);
    let status = mesh.site("A").agent.status().proxy;
    assert_eq!(status.tcp_relays, 0, "gRPC was relayed as opaque TCP");
}
