//! The demo, end to end, as root: it runs, shows sites collaborating and its requests counted in
//! the metrics, and removes every namespace, cgroup and process it made; with `--openstack`,
//! Keystone and Glance too.
use std::process::Command;

#[test]
fn the_demo_walks_through_the_collaborations_and_cleans_up_after_itself() {
    let text = run_demo(&[]);
    for expected in [
        "→ 201, served by Paris [Paris=ok, Nantes=ok]",
        "Rennes=unreachable]",
        "leader Paris  Paris=101 (ok), Nantes=201 (ok)",
        "replication  2 replicants, 1 cross resources, replays pending: none",
        "→ 200, catalog served by Paris",
        "→ 200, catalog served by Nantes",
        "→ 200, catalog served by Rennes",
        "removed every namespace, cgroup and process the demo made",
    ] {
        assert!(
            text.contains(expected),
            "the demo's output lacks `{expected}`:\n{text}"
        );
    }
    assert!(
        text.contains("→ 400:"),
        "a bad scope should be refused:\n{text}"
    );
    assert!(text.contains("cheops_peer_up{peer=\"Nantes\"} 1"), "{text}");
    let caught_up = text
        .lines()
        .skip_while(|l| !l.contains("Rennes's link is healed: Paris, the leader"))
        .nth(2)
        .unwrap_or_default();
    assert!(
        caught_up.contains("served by Rennes") && caught_up.contains("\"size\":2"),
        "Rennes should have caught up with the update it missed:\n{text}"
    );
    assert!(
        text.contains("peer         Rennes (198.18.0.3:15443) up, round trip"),
        "`cheops status` should show the peers:\n{text}"
    );
    // The metrics scraped at the end count the demo's requests.
    let count = |labels: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                l.trim().strip_prefix(&format!(
                    "cheops_request_duration_seconds_count{{{labels}}} "
                ))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("service=\"catalog\",collaboration=\"sharing\",site=\"Nantes\",outcome=\"2xx\"") >= 2,
        "{text}"
    );
    assert!(
        count("service=\"front\",collaboration=\"local\",site=\"Paris\",outcome=\"2xx\"") >= 5,
        "{text}"
    );
}

#[test]
fn the_demo_s_openstack_part_shares_refuses_and_replicates_images_by_scope() {
    let text = run_demo(&["--openstack"]);
    // The lines that follow a step's title and tell what came of its commands.
    let outcomes = |step: &str| -> Vec<&str> {
        text.lines()
            .skip_while(|l| !l.contains(step))
            .skip(1)
            .take_while(|l| !l.starts_with("──"))
            .filter_map(|l| l.trim().strip_prefix("→ "))
            .collect()
    };
    let shared = outcomes("Sharing with identity");
    assert!(shared[0].starts_with("images: nantes-cirros ("), "{text}");
    let refused = outcomes("Without the identity entry");
    assert!(
        refused[0].starts_with("refused: HttpException: 401"),
        "{text}"
    );
    let token = outcomes("The scope on the token");
    assert_eq!(token.len(), 3, "{text}");
    assert_eq!(token[1], "401 Unauthorized (Nantes's Glance)", "{text}");
    assert!(token[2].starts_with("200, served by Nantes"), "{text}");
    let replicated = outcomes("Replication with identity");
    assert_eq!(replicated.len(), 2, "{text}");
    for line in &replicated {
        assert!(
            line.starts_with("name=replicated, id=") && line.contains("status=active"),
            "{text}"
        );
    }
    // One ID at both sites: Nantes shows the image by the ID Paris's answer gave.
    let id = |line: &str| line.split(", ").nth(1).map(str::to_owned);
    assert_eq!(id(replicated[0]), id(replicated[1]), "{text}");
    let servers = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("gunicorns: "))
        .expect("the demo names its gunicorns");
    let servers = pids(servers);
    assert_eq!(servers.len(), 4, "{text}");
    for pid in servers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the demo left gunicorn {pid} running"
        );
    }
}

/// The process IDs in a line of `what (pid N)`.
fn pids(line: &str) -> Vec<&str> {
    line.split("(pid ")
        .skip(1)
        .filter_map(|s| s.split(')').next())
        .collect()
}

/// Runs the demo with `args`, checks that it ended well and removed every namespace, cgroup and
/// agent it made, and gives its output.
fn run_demo(args: &[&str]) -> String {
    cheops_tests::require_root();
    let child = Command::new(env!("CARGO_BIN_EXE_cheops-demo"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the demo");
    // Names the demo gives its namespaces and cgroups carry its process id (see unique_name).
    let marker = format!("{:x}x", child.id() % 0x10_0000);
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let namespaces = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !namespaces.contains(&marker),
        "the demo left namespaces behind:\n{namespaces}"
    );
    let cgroups: Vec<String> = std::fs::read_dir(cheops_tests::cgroup::cgroup2_mount())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains(&marker))
        .collect();
    assert!(
        cgroups.is_empty(),
        "the demo left cgroups behind: {cgroups:?}"
    );
    let agents = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("cheops agents: "))
        .expect("the demo names its agents");
    let agents = pids(agents);
    assert_eq!(agents.len(), 3, "{text}");
    for pid in agents {
        let command = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !command.contains("agent"),
            "the demo left cheops agent {pid} running"
        );
    }
    text
}
