//! Idle keep-alive connections held through each proxy: the memory each costs it, cheops
//! against nginx and HAProxy.
use serde_json::Value;

use super::{number, ratio, times, Summary, CHEOPS};

pub struct Idle {
    pub name: String,
    pub connections: f64,
    /// Resident memory before the connections and with all of them open (KiB).
    pub rss_kib: [f64; 2],
    pub kib_per_connection: f64,
    /// Open files per connection: 2 when the proxy keeps an upstream connection for each.
    pub files_per_connection: f64,
}

pub fn from_raw(raw: &Value) -> anyhow::Result<Vec<Idle>> {
    raw["idle_connections"]
        .as_array()
        .into_iter()
        .flatten()
        // A proxy whose run failed says why in the raw results, and has no row.
        .filter(|idle| idle["error"].is_null())
        .map(|idle| {
            Ok(Idle {
                name: idle["name"].as_str().unwrap_or("?").to_owned(),
                connections: number(idle, "/connections")?,
                rss_kib: [
                    number(idle, "/rss_before_kib")?,
                    number(idle, "/rss_idle_kib")?,
                ],
                kib_per_connection: number(idle, "/kib_per_connection")?,
                files_per_connection: number(idle, "/files_per_connection")?,
            })
        })
        .collect()
}

impl Summary {
    fn idle_of(&self, name: &str) -> Option<&Idle> {
        self.idle.iter().find(|i| i.name == name)
    }

    /// (target, measured, met) of the idle connections; none when they were not measured.
    pub fn idle_targets(&self) -> Vec<(String, String, Option<bool>)> {
        let (Some(cheops), Some(nginx)) = (self.idle_of(CHEOPS), self.idle_of("nginx-nat")) else {
            return Vec::new();
        };
        vec![(
            format!(
                "{:.0} idle keep-alive connections: cheops's memory per connection <= nginx's",
                cheops.connections
            ),
            format!(
                "{:.1} KiB / {:.1} KiB: {}",
                cheops.kib_per_connection,
                nginx.kib_per_connection,
                times(ratio(cheops.kib_per_connection, nginx.kib_per_connection))
            ),
            Some(cheops.kib_per_connection <= nginx.kib_per_connection),
        )]
    }

    pub fn idle_text(&self) -> String {
        self.idle
            .iter()
            .map(|idle| {
                format!(
                    "{:.0} idle connections, {:<28} {:>6.1} KiB each\n",
                    idle.connections,
                    self.title(&idle.name),
                    idle.kib_per_connection
                )
            })
            .collect()
    }

    pub fn idle_markdown(&self) -> String {
        let Some(first) = self.idle.first() else {
            return String::new();
        };
        let mut md = format!(
            "\n## {:.0} idle keep-alive connections, the proxy on its own core\n\n\
             `cheops-load idle` opens the connections (64 at a time) through each proxy to the \
             1 KiB origin, sends one request on each, and holds them all idle; the proxy's \
             VmRSS before and once all are open (and a second later), divided by their number, \
             is what one idle connection costs it. Every connection must still be open at the \
             end. Open files per connection: 2 when the proxy keeps an upstream connection for \
             each client connection, about 1 when it pools them. Limits raised for this part \
             only: cheops's `max_connections_per_workload`, nginx's `worker_connections`, \
             HAProxy's `maxconn`, and the open files limit.\n\n\
             | proxy | memory before (MiB) | with the connections (MiB) | KiB per connection | open files per connection |\n\
             |---|---:|---:|---:|---:|\n",
            first.connections
        );
        for idle in &self.idle {
            md += &format!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
                self.title(&idle.name),
                idle.rss_kib[0] / 1024.0,
                idle.rss_kib[1] / 1024.0,
                idle.kib_per_connection,
                idle.files_per_connection
            );
        }
        md
    }
}
