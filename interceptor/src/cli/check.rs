//! `cheops check`: a preflight that says in plain words what this node lacks to run the agent
//! (root, BPF, BTF, cgroup v2, free ports, reachable local instances), and how to fix it.
use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use interceptor_ebpf::NAMESPACE_TRACEPOINTS;

use crate::{
    config::Config,
    intercept::{cgroup, ebpf as loader, exclusive, namespaces},
    tls,
};

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// The agent would still start, but something will not work.
    Warn,
    Fail,
}

pub struct Finding {
    pub verdict: Verdict,
    pub message: String,
}

/// Where aya looks for tracefs, to attach the tracepoint programs.
const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn finding(verdict: Verdict, message: impl Into<String>) -> Finding {
    Finding {
        verdict,
        message: message.into(),
    }
}

/// Runs every check; `config` adds the checks of one agent's configuration.
pub fn run(config: Option<&Path>) -> Vec<Finding> {
    let mut findings = Vec::new();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    findings.push(if root {
        finding(Verdict::Ok, "running as root")
    } else {
        finding(
            Verdict::Fail,
            "not running as root: loading eBPF programs needs root (or CAP_BPF and CAP_NET_ADMIN)",
        )
    });
    findings.push(if Path::new("/sys/kernel/btf/vmlinux").exists() {
        finding(Verdict::Ok, "kernel BTF present (/sys/kernel/btf/vmlinux)")
    } else {
        finding(Verdict::Warn, "no kernel BTF at /sys/kernel/btf/vmlinux: our programs do not need it, but debugging tools (bpftool) will say less")
    });
    let mount = match cgroup::cgroup2_mount() {
        Ok(mount) => {
            findings.push(finding(
                Verdict::Ok,
                format!("cgroup v2 mounted at {}", mount.display()),
            ));
            Some(mount)
        }
        Err(err) => {
            findings.push(finding(
                Verdict::Fail,
                format!("{err}: mount it with `mount -t cgroup2 none /sys/fs/cgroup`"),
            ));
            None
        }
    };
    findings.push(check_tracepoints());
    if root {
        findings.push(match loader::verify_programs() {
            Ok(()) => finding(Verdict::Ok, "the kernel accepts cheops's eBPF programs (cgroup/connect4, cgroup/connect6, sock_ops, sk_lookup, tracepoints)"),
            Err(err) => finding(Verdict::Fail, format!("the kernel refuses cheops's eBPF programs: {:#}", anyhow::Error::from(err))),
        });
    }
    if let Some(path) = config {
        findings.extend(check_config(path, mount.as_deref()));
    }
    findings
}

fn check_config(path: &Path, mount: Option<&Path>) -> Vec<Finding> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => return vec![finding(Verdict::Fail, err.to_string())],
    };
    let mut findings = vec![finding(
        Verdict::Ok,
        format!(
            "configuration {} is valid: site {}, {} services, {} workload cgroups",
            path.display(),
            config.site,
            config.services.len(),
            config.workloads.len()
        ),
    )];
    if let Some(mount) = mount {
        let mut dirs = Vec::new();
        for workload in &config.workloads {
            findings.push(match cgroup::workload_dir(mount, &workload.cgroup) {
                Ok(dir) => {
                    let found = finding(
                        Verdict::Ok,
                        format!("workload cgroup {} exists", dir.display()),
                    );
                    dirs.push(dir);
                    found
                }
                Err(err) => finding(Verdict::Fail, err.to_string()),
            });
        }
        if !dirs.is_empty() {
            findings.push(match exclusive::refuse_if_meshed_elsewhere(&dirs) {
                Ok(()) => finding(
                    Verdict::Ok,
                    "no other cheops agent meshes these workload cgroups",
                ),
                Err(err) => finding(Verdict::Fail, format!("{:#}", anyhow::Error::from(err))),
            });
        }
        findings.extend(check_namespaces(&dirs));
    }
    if let Some(files) = &config.tls {
        findings.extend(check_certificates(files));
    }
    let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut ports = vec![("proxy.port", loopback(config.proxy.port))];
    if let Some(admin) = config.admin.tcp_address() {
        ports.push(("admin.port", admin));
    }
    if config.services.iter().any(|s| s.inbound) {
        ports.push(("proxy.inbound_port", loopback(config.proxy.inbound_port)));
    }
    for (key, address) in ports {
        findings.push(match TcpListener::bind(address) {
            Ok(_) => finding(Verdict::Ok, format!("port {address} (`{key}`) is free")),
            Err(err) => finding(Verdict::Fail, format!("port {address} (`{key}`) is not free ({err}): is another cheops running? change `{key}`")),
        });
    }
    for service in config.services.iter().filter(|s| s.inbound) {
        // Over loopback, which the kernel never steers: this reaches the application itself.
        findings.push(match TcpStream::connect_timeout(&service.address, Duration::from_secs(1)) {
            Ok(_) => finding(Verdict::Ok, format!("service '{}': inbound address {} is bound by the application", service.name, service.address)),
            Err(err) => finding(Verdict::Warn, format!("service '{}': inbound address {} is not bound by anyone ({err}): without cheops, clients from other machines would be refused", service.name, service.address)),
        });
    }
    for service in &config.services {
        findings.push(match TcpStream::connect_timeout(&service.local, Duration::from_secs(1)) {
            Ok(_) => finding(Verdict::Ok, format!("service '{}': local instance {} answers", service.name, service.local)),
            Err(err) => finding(Verdict::Warn, format!("service '{}': local instance {} does not answer ({err}); requests to it will get 502", service.name, service.local)),
        });
    }
    findings
}

/// Each certificate this site uses: valid, expiring within `tls.expiry_margin`, or not valid.
fn check_certificates(files: &tls::TlsFiles) -> Vec<Finding> {
    let certificates = match tls::files_validity(files) {
        Ok(certificates) => certificates,
        Err(err) => return vec![finding(Verdict::Fail, err.to_string())],
    };
    let margin = files.expiry_margin;
    certificates
        .into_iter()
        .map(|c| {
            let what = format!("the {} certificate {} ({})", c.role, c.path.display(), c.subject);
            match c.remaining() {
                _ if !c.has_begun() => finding(Verdict::Fail, format!("{what} is not valid yet: {}", c.dates())),
                None => finding(Verdict::Fail, format!("{what} has expired: {}", c.dates())),
                Some(left) if left < margin => finding(Verdict::Warn, format!(
                    "{what} expires in {} (under `tls.expiry_margin`, {}): {}; issue a new one (`cheops certs --ca`)",
                    humantime::format_duration(Duration::from_secs(left.as_secs())),
                    humantime::format_duration(margin),
                    c.dates()
                )),
                Some(_) => finding(Verdict::Ok, format!("{what} is {}", c.dates())),
            }
        })
        .collect()
}

/// Whether the kernel's tracepoints that tell of new workload namespaces can be attached to.
fn check_tracepoints() -> Finding {
    let has_all = |tracefs: &&&str| {
        NAMESPACE_TRACEPOINTS.iter().all(|(category, name, _)| {
            Path::new(tracefs)
                .join(format!("events/{category}/{name}/id"))
                .exists()
        })
    };
    if let Some(tracefs) = TRACEFS_PATHS.iter().find(has_all) {
        return finding(
            Verdict::Ok,
            format!("tracepoints under {tracefs}: containers started later are meshed at once"),
        );
    }
    let wanted: Vec<String> = NAMESPACE_TRACEPOINTS
        .iter()
        .map(|(category, name, _)| format!("{category}/{name}"))
        .collect();
    finding(
        Verdict::Warn,
        format!(
            "tracefs with the tracepoints {} is not mounted at {}: containers started after the agent are meshed only by the periodic scan (proxy.workload_scan_every) or on their first connection, which fails open; mount it (`mount -t tracefs nodev {}`; in a container, the host's)",
            wanted.join(", "),
            TRACEFS_PATHS[0],
            TRACEFS_PATHS[0]
        ),
    )
}

/// Whether cheops can listen in the network namespaces where workload processes run.
fn check_namespaces(workload_dirs: &[PathBuf]) -> Vec<Finding> {
    match namespaces::unenterable(workload_dirs) {
        Err(err) => vec![finding(
            Verdict::Warn,
            format!("cannot read this process's network namespace: {err}"),
        )],
        Ok(problems) => problems
            .into_iter()
            .map(|(pid, cgroup, err)| {
                finding(
                    Verdict::Warn,
                    format!(
                        "workload process {pid} (cgroup {}) sits in a network namespace cheops cannot enter ({err}): its connections will not be meshed",
                        cgroup.display()
                    ),
                )
            })
            .collect(),
    }
}

/// Prints the findings; true when none failed.
pub fn report(findings: &[Finding]) -> bool {
    for f in findings {
        let tag = match f.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        println!("{tag}  {}", f.message);
    }
    let failed = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .count();
    if failed == 0 {
        println!("\nthis node can run the cheops agent");
    } else {
        println!("\n{failed} check(s) failed: fix them before starting `cheops agent`");
    }
    failed == 0
}
