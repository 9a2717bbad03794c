//! A network namespace made for one test or site, deleted when dropped. Addresses inside come
//! from 198.18.0.0/15 (and 2001:db8::/32 for IPv6) and exist only in namespaces made here.
use std::process::{Command, Output};

pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace with its loopback up.
    pub fn create(name: &str) -> Netns {
        run(Command::new("ip").args(["netns", "add", name]));
        let netns = Netns {
            name: name.to_owned(),
        };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace. It enters the network namespace
    /// only (`nsenter`), unlike `ip netns exec`, which also remounts /sys and so hides the
    /// cgroup v2 mount on hosts where it lives under /sys/fs/cgroup/unified.
    pub fn command(&self, program: &str) -> Command {
        command_in(&self.name, program)
    }

    /// Runs `ip ARGS` inside the namespace, failing the test if it fails.
    pub fn ip(&self, args: &[&str]) -> Output {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Adds `address` (CIDR) to the loopback: something in the namespace can then listen there.
    pub fn add_loopback_address(&self, address: &str) {
        self.ip(&["address", "add", address, "dev", "lo"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A command that runs `program` inside the network namespace called `netns`.
pub fn command_in(netns: &str, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(program);
    command
}

/// Runs `command`, failing the test with its output if it fails.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
