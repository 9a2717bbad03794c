//! `cheops status`: a running agent's peers, counters and replication, from its admin endpoint.
use crate::admin::client::{self, Endpoint};

pub fn run(admin: &Endpoint, json: bool) -> anyhow::Result<()> {
    let status = client::status(admin)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("site         {}", status.site);
    let loaded =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(status.config.loaded_at_unix);
    println!(
        "config       generation {}, loaded {}",
        status.config.generation,
        humantime::format_rfc3339_seconds(loaded)
    );
    match status.kernel {
        None => println!("kernel       no eBPF programs (NAT interception)"),
        Some(kernel) => println!(
            "kernel       redirected {}  passed through {}  failed open {}  steered inbound {}",
            kernel.redirected, kernel.passed_through, kernel.failed_open, kernel.steered_inbound
        ),
    }
    for workload in &status.workloads {
        let namespaces: Vec<_> = status
            .namespaces
            .iter()
            .filter(|n| n.cgroup.starts_with(workload))
            .collect();
        println!(
            "workload     {}: {} network namespaces of their own",
            workload.display(),
            namespaces.len()
        );
        for namespace in namespaces {
            let state = match &namespace.error {
                None => "meshed".to_owned(),
                Some(error) => format!("NOT meshed (fails open): {error}"),
            };
            println!(
                "  namespace  net:[{}] (pid {}, {}) {state}",
                namespace.inode,
                namespace.pid,
                namespace.cgroup.display()
            );
        }
    }
    for inbound in &status.inbound {
        println!(
            "inbound      {} at {}: {} connections from other machines",
            inbound.service, inbound.address, inbound.connections
        );
    }
    for certificate in &status.certificates {
        let left = match certificate.remaining() {
            Some(left) => format!("expires in {} days", left.as_secs() / 86_400),
            None => "EXPIRED".to_owned(),
        };
        println!(
            "certificate  {} {} ({}): {left}, {}",
            certificate.role,
            certificate.path.display(),
            certificate.subject,
            certificate.dates()
        );
    }
    if let Some(generation) = &status.tls_generation {
        let loaded = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(generation.loaded_unix.max(0) as u64);
        println!(
            "tls          generation {} since {}: site certificate serial {}, SHA-256 {}",
            generation.number,
            humantime::format_rfc3339_seconds(loaded),
            generation.serial,
            generation.fingerprint
        );
    }
    let proxy = &status.proxy;
    println!(
        "proxy        connections {}  HTTP requests {}  upstream errors {}  TCP relays {}",
        proxy.connections, proxy.http_requests, proxy.upstream_errors, proxy.tcp_relays
    );
    for peer in &status.peers {
        let state = match (peer.up, peer.round_trip_us) {
            (true, Some(us)) => format!(
                "up, round trip {us} us (spread {} us, {} missed heartbeats)",
                peer.round_trip_spread_us.unwrap_or_default(),
                peer.missed_heartbeats
            ),
            _ => format!("down: {}", peer.last_error.as_deref().unwrap_or("?")),
        };
        println!("peer         {} ({}) {state}", peer.name, peer.address);
    }
    match &status.replication {
        None => {}
        Some(replication) => match &replication.error {
            Some(error) => println!("replication  the store cannot be read: {error}"),
            None => {
                let pending: Vec<String> = replication
                    .pending
                    .iter()
                    .map(|(site, count)| format!("{site} {count}"))
                    .collect();
                println!(
                    "replication  {} replicants, {} cross resources, replays pending: {}",
                    replication.replicants,
                    replication.cross_resources,
                    if pending.is_empty() {
                        "none".to_owned()
                    } else {
                        pending.join(", ")
                    }
                );
            }
        },
    }
    Ok(())
}
