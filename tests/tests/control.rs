//! Who may steer an agent, as root: changes go through the control socket, for root and the
//! configured group only (its file mode, and the caller's credentials checked again by the
//! agent); the TCP admin endpoint answers the read-only pages to anyone and refuses changes.
//! Unprivileged callers are this test's processes with a dropped UID (`setpriv`).
use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use cheops_tests::{
    agent::{site_config, ADMIN},
    cgroup::Cgroup,
    cheops_bin,
    node::{service, start_node_with, Node},
    process::wait_until,
    unique_name,
};

/// The unprivileged user the test runs callers as.
const NOBODY: &str = "65534";

/// A group made for one test, deleted when dropped.
struct TestGroup {
    name: String,
    gid: u32,
}

impl TestGroup {
    fn create() -> TestGroup {
        let name = unique_name("chg");
        let output = Command::new("groupadd").arg(&name).output().unwrap();
        assert!(output.status.success(), "groupadd {name}: {output:?}");
        let output = Command::new("getent")
            .args(["group", &name])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut group = TestGroup { name, gid: 0 };
        // Dropped (deleted) if the line cannot be read.
        group.gid = line
            .split(':')
            .nth(2)
            .and_then(|gid| gid.parse().ok())
            .unwrap_or_else(|| panic!("no gid for {}: {line}", group.name));
        group
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

/// `program ARGS` in the node's namespace as uid 65534 with primary group `gid` and the
/// supplementary `groups` only.
fn as_nobody(node: &Node, gid: &str, groups: &[u32], program: &str, args: &[&str]) -> Output {
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    let mut command = node.netns.command("setpriv");
    command.args(["--reuid", NOBODY, "--regid", gid]);
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        command.args(["--groups", &groups.join(",")]);
    }
    command.arg("--").arg(program).args(args);
    command.output().expect("running setpriv")
}

/// `curl ARGS` PUTting a registration of `cgroup`'s scope on the control socket `socket`.
fn put_registration(socket: &Path, cgroup: &Path, scope: &str) -> Vec<String> {
    let body = serde_json::json!({ "cgroup": cgroup, "scope": scope }).to_string();
    [
        "-sS",
        "-i",
        "-m",
        "5",
        "--unix-socket",
        socket.to_str().unwrap(),
        "-X",
        "PUT",
        "--data",
        &body,
        "http://cheops/workload-scope",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `cheops exec` through `socket` of `command` with the scope `{svc1: Testsite}`.
fn exec_args<'a>(socket: &'a Path, command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "exec",
        "--control",
        socket.to_str().unwrap(),
        "--scope",
        "{svc1: Testsite}",
        "--",
    ];
    args.extend(command);
    args
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn only_root_and_the_control_group_steer_and_tcp_admin_is_read_only() {
    let group = TestGroup::create();
    // A directory anyone may traverse: the socket's own mode and the agent decide.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("control.sock");
    let mut config = site_config("Testsite");
    config.admin.control = socket.clone();
    config.admin.control_group = Some(group.name.clone());
    let node = start_node_with(&[service(1)], config, false);
    let meta = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, group.gid, 0o660)
    );

    // A child cgroup of the workload whose scope the callers try to set; its requests' log
    // lines say whether a scope was registered.
    let child = Cgroup::create(&format!(
        "{}/steered",
        node.workload.relative_path().display()
    ));
    // The paths asked for, which the local instance serves.
    for path in ["after-refusals", "after-group", "by-root"] {
        std::fs::write(node.instances[0].dir().join(path), path).unwrap();
    }
    let request_from_child = |path: &str| {
        let mut curl = node.netns.command("curl");
        curl.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"])
            .arg(format!("http://198.18.0.11{path}"));
        child.enter(&mut curl);
        let output = curl.output().unwrap();
        assert_eq!(text(&output), "200", "{output:?}");
    };
    let logged_with_scope = |path: &str| {
        let line = format!("path={path} scope={{svc1: Testsite}}");
        let any = format!("path={path} ");
        assert!(
            wait_until(Duration::from_secs(3), || node
                .agent
                .log_text()
                .contains(&any)),
            "no log line for {path}:\n{}",
            node.agent.log_text()
        );
        node.agent.log_text().contains(&line)
    };
    let cheops = cheops_bin();
    let cheops = cheops.to_str().unwrap();

    // Outside the group: the socket's mode refuses the connection, for exec as for curl.
    let exec = as_nobody(&node, NOBODY, &[], cheops, &exec_args(&socket, &["true"]));
    assert!(!exec.status.success(), "{}", text(&exec));
    assert!(text(&exec).contains("control socket"), "{}", text(&exec));
    let put = put_registration(&socket, child.path(), "{svc1: Testsite}");
    let put: Vec<&str> = put.iter().map(String::as_str).collect();
    let refused = as_nobody(&node, NOBODY, &[], "curl", &put);
    assert!(!refused.status.success(), "{}", text(&refused));
    // A mode loosened by mistake: the agent itself still refuses, and says why.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = as_nobody(&node, NOBODY, &[], "curl", &put);
    let answer = text(&refused);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains(&format!("uid {NOBODY}")) && answer.contains(&group.name),
        "{answer}"
    );
    assert!(node.agent.log_text().contains("control connection refused"));
    // Over TCP, the change is refused and the read-only pages answer anyone.
    let body = serde_json::json!({ "cgroup": child.path(), "scope": "{svc1: Testsite}" });
    let tcp_put = as_nobody(
        &node,
        NOBODY,
        &[],
        "curl",
        &[
            "-sS",
            "-i",
            "-X",
            "PUT",
            "--data",
            &body.to_string(),
            &format!("http://{ADMIN}/workload-scope"),
        ],
    );
    let answer = text(&tcp_put);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains(socket.to_str().unwrap()), "{answer}");
    for page in ["/status", "/metrics", "/ready"] {
        let read = as_nobody(
            &node,
            NOBODY,
            &[],
            "curl",
            &["-sSf", "-o", "/dev/null", &format!("http://{ADMIN}{page}")],
        );
        assert!(read.status.success(), "{page}: {}", text(&read));
    }
    request_from_child("/after-refusals");
    assert!(!logged_with_scope("/after-refusals"));

    // A member of the group (a supplementary group, as `usermod -aG` makes) may steer.
    let accepted = as_nobody(&node, NOBODY, &[group.gid], "curl", &put);
    assert!(
        text(&accepted).starts_with("HTTP/1.1 200"),
        "{}",
        text(&accepted)
    );
    request_from_child("/after-group");
    assert!(logged_with_scope("/after-group"));

    // Root may steer: `cheops exec` through the socket.
    let exec = node.run(
        false,
        cheops,
        &exec_args(
            &socket,
            &["curl", "-sSf", "-m", "5", "http://198.18.0.11/by-root"],
        ),
    );
    assert!(exec.status.success(), "{}", text(&exec));
    assert!(logged_with_scope("/by-root"));
}

#[test]
fn the_tcp_admin_endpoint_can_be_turned_off() {
    let mut config = site_config("Testsite");
    config.admin.tcp = false;
    let dir = tempfile::tempdir().unwrap();
    config.admin.control = dir.path().join("control.sock");
    let node = start_node_with(&[service(2)], config, false);
    let status = node.run(
        false,
        cheops_bin().to_str().unwrap(),
        &["status", "--control", node.agent.control.to_str().unwrap()],
    );
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("Testsite"), "{}", text(&status));
    let tcp = node.run(false, "curl", &["-sS", &format!("http://{ADMIN}/ready")]);
    assert!(!tcp.status.success(), "{}", text(&tcp));
}
