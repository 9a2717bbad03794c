//! `cheops status`: a running agent's peers, counters and replication, from its admin endpoint.
use std::net::SocketAddr;

use anyhow::Context;

use crate::admin;

pub fn run(admin: SocketAddr, json: bool) -> anyhow::Result<()> {
    let (_, body) = admin::request(admin, "GET", "/status", "")?;
    let status: serde_json::Value =
        serde_json::from_str(&body).context("the agent's status is not JSON")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("site         {}", status["site"].as_str().unwrap_or("?"));
    if status["kernel"].is_null() {
        println!("kernel       no eBPF programs (NAT interception)");
    } else {
        println!(
            "kernel       redirected {}  passed through {}  failed open {}",
            status["kernel"]["redirected"],
            status["kernel"]["passed_through"],
            status["kernel"]["failed_open"]
        );
    }
    println!(
        "proxy        connections {}  HTTP requests {}  upstream errors {}  TCP relays {}",
        status["proxy"]["connections"],
        status["proxy"]["http_requests"],
        status["proxy"]["upstream_errors"],
        status["proxy"]["tcp_relays"]
    );
    for peer in status["peers"].as_array().into_iter().flatten() {
        let state = match (peer["up"].as_bool(), peer["round_trip_us"].as_u64()) {
            (Some(true), Some(us)) => format!("up, round trip {us} us"),
            _ => format!("down: {}", peer["last_error"].as_str().unwrap_or("?")),
        };
        println!(
            "peer         {} ({}) {state}",
            peer["name"].as_str().unwrap_or("?"),
            peer["address"].as_str().unwrap_or("?")
        );
    }
    let replication = &status["replication"];
    if let Some(error) = replication["error"].as_str() {
        println!("replication  the store cannot be read: {error}");
    } else if replication.is_object() {
        let pending: Vec<String> = replication["pending"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(site, count)| format!("{site} {count}"))
            .collect();
        println!(
            "replication  {} replicants, {} cross resources, replays pending: {}",
            replication["replicants"],
            replication["cross_resources"],
            if pending.is_empty() {
                "none".to_owned()
            } else {
                pending.join(", ")
            }
        );
    }
    Ok(())
}
