//! The checker, after every fault is healed and the sites converged: the truth is each site's
//! json-server, read directly (not through cheops), and each agent's log. Every acknowledged
//! create is at each site of its scope exactly once, every replica equals the others, every
//! acknowledged delete is gone everywhere; no panic or error line the faults do not explain.
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    time::Duration,
};

use serde_json::Value;

use super::{
    faults::Convergence,
    load::{Create, Deletion, Ledger},
    SoakSettings, FULL_STORE_SITE, SITES,
};
use crate::{
    mesh::{Mesh, CATALOG_LOCAL},
    node::resident_kib,
};

#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub duration: Duration,
    pub sent: u64,
    pub acknowledged: u64,
    pub refused: BTreeMap<u16, u64>,
    /// Acknowledged creates checked (replicated, cross) and acknowledged deletes.
    pub creates_acknowledged: (u64, u64),
    pub deletes_acknowledged: u64,
    /// Error lines that a fault explains (the full store's).
    pub explained_log_lines: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub lost: u64,
    pub applied_twice: u64,
    pub wrong_site: u64,
    pub undeleted: u64,
    pub diverged: u64,
    pub unexplained_log_lines: Vec<String>,
    pub convergence_p50: Option<Duration>,
    pub convergence_max: Option<Duration>,
    /// `None`: the sites did not converge within the bound at the end.
    pub final_convergence: Option<Duration>,
    pub rss_kib: Vec<(String, u64)>,
    /// What each failed check found, one line each.
    pub problems: Vec<String>,
    /// Where a failed run left each site's agent log, store and json-server data.
    pub evidence: Option<std::path::PathBuf>,
}

impl Summary {
    /// Why the run failed; empty when it did not.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = self.problems.clone();
        failures.extend(self.unexplained_log_lines.iter().cloned());
        if self.final_convergence.is_none() {
            failures.push("the sites did not converge after the last heal".into());
        }
        if self.acknowledged == 0 {
            failures.push("nothing was acknowledged".into());
        }
        failures
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{} ms", d.as_millis()));
        writeln!(
            f,
            "soak summary (seed {}, {} s)",
            self.seed,
            self.duration.as_secs()
        )?;
        writeln!(f, "  requests sent         {}", self.sent)?;
        writeln!(f, "  acknowledged          {}", self.acknowledged)?;
        writeln!(
            f,
            "  refused, by status    {:?} (0: no HTTP answer)",
            self.refused
        )?;
        writeln!(
            f,
            "  checked               {} replicated and {} cross creates, {} deletes (acknowledged)",
            self.creates_acknowledged.0, self.creates_acknowledged.1, self.deletes_acknowledged
        )?;
        writeln!(f, "  faults, by kind       {:?}", self.faults)?;
        writeln!(f, "  lost                  {}", self.lost)?;
        writeln!(f, "  applied twice         {}", self.applied_twice)?;
        writeln!(f, "  from a wrong site     {}", self.wrong_site)?;
        writeln!(f, "  deletes undone        {}", self.undeleted)?;
        writeln!(f, "  replicas diverged     {}", self.diverged)?;
        writeln!(
            f,
            "  log lines: unexplained {}, explained by a fault {}",
            self.unexplained_log_lines.len(),
            self.explained_log_lines
        )?;
        writeln!(
            f,
            "  convergence after heals: p50 {}, max {}; at the end {}",
            ms(self.convergence_p50),
            ms(self.convergence_max),
            ms(self.final_convergence)
        )?;
        writeln!(f, "  agents' RSS (KiB)     {:?}", self.rss_kib)?;
        for problem in self.failures() {
            writeln!(f, "  FAILED: {problem}")?;
        }
        if let Some(evidence) = &self.evidence {
            writeln!(f, "  evidence kept in    {}", evidence.display())?;
        }
        Ok(())
    }
}

/// Each site's pods as its json-server holds them, by name; what the site answered instead, if
/// it gave no list.
fn pods_by_name(mesh: &Mesh, site: &str) -> Result<HashMap<String, Vec<Value>>, String> {
    let url = format!("http://{CATALOG_LOCAL}/pods");
    let output = mesh.run_at(site, false, "curl", &["-sS", "-m", "10", &url]);
    let pods: Vec<Value> = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "site {site}'s json-server gave no list of pods ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let mut by_name: HashMap<String, Vec<Value>> = HashMap::new();
    for mut pod in pods {
        let name = pod["name"].as_str().unwrap_or_default().to_owned();
        if let Some(fields) = pod.as_object_mut() {
            fields.remove("id");
        }
        by_name.entry(name).or_default().push(pod);
    }
    Ok(by_name)
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * p).round() as usize).copied()
}

pub fn check(
    mesh: &mut Mesh,
    ledger: Ledger,
    convergence: Convergence,
    settings: &SoakSettings,
) -> Summary {
    let mut after_heals = convergence.after_heals.clone();
    after_heals.sort();
    let mut summary = Summary {
        seed: settings.seed,
        duration: settings.duration,
        sent: ledger.sent,
        acknowledged: ledger.acknowledged,
        refused: ledger.refused.clone(),
        faults: convergence.faults.clone(),
        convergence_p50: percentile(&after_heals, 0.5),
        convergence_max: after_heals.last().copied(),
        final_convergence: convergence.at_end,
        ..Summary::default()
    };
    summary.wrong_site += ledger.wrong_sites.len() as u64;
    summary.problems.extend(ledger.wrong_sites.iter().cloned());
    // A site that gives no list is a failure of its own; the creates are checked at the others.
    let mut pods: HashMap<&str, HashMap<String, Vec<Value>>> = HashMap::new();
    for site in SITES {
        match pods_by_name(mesh, site) {
            Ok(by_name) => {
                pods.insert(site, by_name);
            }
            Err(problem) => summary.problems.push(problem),
        }
    }
    for create in &ledger.creates {
        if create.meta.is_some() {
            match create.prime {
                Some(_) => summary.creates_acknowledged.1 += 1,
                None => summary.creates_acknowledged.0 += 1,
            }
        }
        if create.deletion == Deletion::Acknowledged {
            summary.deletes_acknowledged += 1;
        }
        check_create(&mut summary, create, &pods);
    }
    for site in SITES {
        let agent = &mut mesh.site_mut(site).agent;
        for line in agent.log_text().lines() {
            let explained = site == FULL_STORE_SITE && line.contains("store");
            let error = line.contains("ERROR");
            if line.contains("panicked") || (error && !explained) {
                summary
                    .unexplained_log_lines
                    .push(format!("{site}: {line}"));
            } else if error {
                summary.explained_log_lines += 1;
            }
        }
        let rss = agent.pid().map_or(0, resident_kib);
        summary.rss_kib.push((site.to_owned(), rss));
    }
    summary
}

fn check_create(
    summary: &mut Summary,
    create: &Create,
    pods: &HashMap<&str, HashMap<String, Vec<Value>>>,
) {
    let token = &create.token;
    let held = |site: &str| -> &[Value] { pods[site].get(token).map_or(&[], Vec::as_slice) };
    let mut problem = |what: String| summary.problems.push(format!("{token}: {what}"));
    let mut copies = Vec::new();
    let listed: Vec<&str> = SITES
        .into_iter()
        .filter(|site| pods.contains_key(site))
        .collect();
    for &site in &listed {
        let count = held(site).len();
        let allowed = match create.prime {
            Some(prime) => site == prime,
            None => create.sites.contains(&site),
        };
        if count > 0 && !allowed {
            summary.wrong_site += 1;
            problem(format!(
                "{count} at {site}, which its scope {:?} does not name",
                create.sites
            ));
        }
        if count > 1 {
            summary.applied_twice += count as u64 - 1;
            problem(format!("{count} copies at {site}"));
        }
        if allowed {
            copies.push((site, count));
        }
    }
    let acknowledged = create.meta.is_some();
    match create.deletion {
        Deletion::Acknowledged => {
            let left: usize = listed.iter().map(|site| held(site).len()).sum();
            if left > 0 {
                summary.undeleted += 1;
                problem(format!("deleted (acknowledged), still {left} copies"));
            }
        }
        Deletion::Attempted => {}
        Deletion::None => {
            let missing: Vec<&str> = copies
                .iter()
                .filter(|(_, c)| *c == 0)
                .map(|(s, _)| *s)
                .collect();
            if acknowledged && !missing.is_empty() {
                summary.lost += 1;
                problem(format!(
                    "acknowledged ({:?}), missing at {missing:?}",
                    create.meta
                ));
            } else if !acknowledged && !missing.is_empty() && missing.len() < copies.len() {
                // Not acknowledged: all or nothing, never some replicas.
                summary.diverged += 1;
                problem(format!(
                    "not acknowledged, yet only some sites hold it (missing at {missing:?})"
                ));
            }
            let states: Vec<&Value> = copies
                .iter()
                .filter_map(|(site, _)| held(site).first())
                .collect();
            if states.windows(2).any(|pair| pair[0] != pair[1]) {
                summary.diverged += 1;
                problem(format!("replicas differ: {states:?}"));
            }
        }
    }
}
