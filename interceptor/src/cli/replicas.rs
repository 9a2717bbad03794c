//! `cheops replicas`: this site's replicants and cross resources, and each replica's state.
use std::net::SocketAddr;

use crate::admin;

pub fn run(admin: SocketAddr, json: bool) -> anyhow::Result<()> {
    let (_, body) = admin::request(admin, "GET", "/replicas", "")?;
    let view: serde_json::Value =
        serde_json::from_str(&body).map_err(|_| anyhow::anyhow!("{}", body.trim()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!("site {}", text(&view["site"]));
    for replicant in view["replicants"].as_array().into_iter().flatten() {
        let replicas: Vec<String> = replicant["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{}={} ({})",
                    text(&r["site"]),
                    text(&r["local_id"]),
                    text(&r["state"])
                )
            })
            .collect();
        let deleted = if replicant["deleted"] == true {
            "  deleted"
        } else {
            ""
        };
        println!(
            "{}  {}  leader {}  {}{deleted}",
            text(&replicant["meta_id"]),
            text(&replicant["service"]),
            text(&replicant["leader"]),
            replicas.join(", ")
        );
    }
    for cross in view["cross"].as_array().into_iter().flatten() {
        println!(
            "{}  {}  cross, at {} as {}",
            text(&cross["meta_id"]),
            text(&cross["service"]),
            text(&cross["site"]),
            text(&cross["local_id"])
        );
    }
    for (site, count) in view["pending"].as_object().into_iter().flatten() {
        println!("site {site} has {count} operation(s) of this site's log to apply");
    }
    Ok(())
}
