//! Idle keep-alive connections: many connections, each with one request answered (so that
//! whatever a proxy keeps for a kept-alive connection, its upstream side included, exists),
//! then held without a byte until stdin closes. The first report, printed when all are open,
//! is the moment to measure a proxy's memory; the last says how many stayed open meanwhile.
use std::{io::Write, time::Instant};

use anyhow::Context;
use serde_json::json;
use tokio::{io::AsyncReadExt, task::JoinSet};

use crate::{open, request, Target};

/// Connections opened at once: enough to be quick, few enough for the listeners' backlogs.
const OPENING_AT_ONCE: usize = 64;

pub fn idle(target: &Target, connections: usize) -> anyhow::Result<serde_json::Value> {
    crate::runtime()?.block_on(async {
        let started = Instant::now();
        let mut opening = JoinSet::new();
        let mut held = Vec::with_capacity(connections);
        let mut errors = 0u64;
        for index in 0..connections + OPENING_AT_ONCE {
            if opening.len() >= OPENING_AT_ONCE || index >= connections {
                let Some(opened) = opening.join_next().await else {
                    break;
                };
                let (sender, ok): (_, bool) = opened??;
                errors += u64::from(!ok);
                held.push(sender);
            }
            if index < connections {
                let target = target.clone();
                opening.spawn(async move {
                    let mut sender = open(&target).await?;
                    let ok = request(&mut sender, &target).await;
                    anyhow::Ok((sender, ok))
                });
            }
        }
        let opened = json!({
            "connections": held.len(),
            "errors": errors,
            "seconds": started.elapsed().as_secs_f64(),
        });
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{opened}").and_then(|()| stdout.flush())?;
        let mut rest = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut rest)
            .await
            .context("waiting for stdin to close")?;
        let still_open = held.iter().filter(|sender| !sender.is_closed()).count();
        Ok(json!({
            "connections": held.len(),
            "still_open": still_open,
            "errors": errors,
        }))
    })
}
