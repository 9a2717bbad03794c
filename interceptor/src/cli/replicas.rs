//! `cheops replicas`: this site's replicants and cross resources, and each replica's state.
use std::net::SocketAddr;

use crate::admin::client;

pub fn run(admin: SocketAddr, json: bool) -> anyhow::Result<()> {
    let view = client::replicas(admin)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    println!("site {}", view.site);
    for replicant in &view.replicants {
        let replicas: Vec<String> = replicant
            .replicas
            .iter()
            .map(|r| {
                let local_id = r
                    .local_id
                    .as_ref()
                    .map_or("-".to_owned(), |id| id.to_string());
                format!("{}={local_id} ({})", r.site, r.state)
            })
            .collect();
        let deleted = if replicant.deleted { "  deleted" } else { "" };
        println!(
            "{}  {}  leader {}  {}{deleted}",
            replicant.meta_id,
            replicant.service,
            replicant.leader,
            replicas.join(", ")
        );
    }
    for cross in &view.cross {
        println!(
            "{}  {}  cross, at {} as {}",
            cross.meta_id, cross.service, cross.site, cross.local_id
        );
    }
    for (site, count) in &view.pending {
        println!("site {site} has {count} operation(s) of this site's log to apply");
    }
    Ok(())
}
