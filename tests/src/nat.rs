//! An nftables REDIRECT rule inside a namespace, the way sidecar meshes intercept: locally made
//! connections to one service address go to a proxy port on loopback instead. Removed when
//! dropped (deleting the namespace would remove it too; this keeps runs within one namespace
//! independent).
use std::{io::Write, net::SocketAddr, process::Stdio};

use crate::netns::{command_in, Netns};

pub struct NatRedirect {
    netns: String,
    table: String,
}

impl NatRedirect {
    /// Redirects TCP connections made in `netns` to `service` towards `proxy_port`.
    pub fn add(netns: &Netns, service: SocketAddr, proxy_port: u16) -> NatRedirect {
        let (family, address) = match service {
            SocketAddr::V4(_) => ("ip", "ip daddr"),
            SocketAddr::V6(_) => ("ip6", "ip6 daddr"),
        };
        let table = format!("{family} cheops_redirect");
        let rules = format!(
            "table {table} {{\n  chain output {{\n    type nat hook output priority -100;\n    \
             {address} {} tcp dport {} redirect to :{proxy_port}\n  }}\n}}\n",
            service.ip(),
            service.port()
        );
        load_rules(netns, &rules);
        NatRedirect {
            netns: netns.name().to_owned(),
            table,
        }
    }
}

impl Drop for NatRedirect {
    fn drop(&mut self) {
        let _ = command_in(&self.netns, "nft")
            .args(["delete", "table"])
            .args(self.table.split_whitespace())
            .output();
    }
}

/// Loads `rules` (an nft script) into the namespace, failing loudly.
fn load_rules(netns: &Netns, rules: &str) {
    let mut child = netns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running nft (Debian package nftables): {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(rules.as_bytes())
        .expect("writing the nft rules");
    drop(stdin);
    let output = child.wait_with_output().expect("waiting for nft");
    assert!(
        output.status.success(),
        "nft could not load a REDIRECT rule in namespace {}: {}\n{rules}",
        netns.name(),
        String::from_utf8_lossy(&output.stderr)
    );
}
