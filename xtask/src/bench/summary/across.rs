//! One mesh of the cross-site measurement, as reported: creates and lists in round trips.
use anyhow::Context;
use serde_json::Value;

use super::number;

/// One mesh of the cross-site measurement: creates and lists from S1 over all its sites.
pub struct Across {
    pub sites: u64,
    /// S1's measured round trip to the other sites, µs.
    pub round_trip_us: f64,
    /// p50 and p90, µs.
    pub create: [f64; 2],
    pub list: [f64; 2],
}

impl Across {
    pub fn from_raw(mesh: &Value) -> anyhow::Result<Across> {
        let pair = |key: &str| -> anyhow::Result<[f64; 2]> {
            Ok([
                number(mesh, &format!("/{key}/p50_us"))?,
                number(mesh, &format!("/{key}/p90_us"))?,
            ])
        };
        Ok(Across {
            sites: mesh["sites"].as_u64().context("a mesh without its size")?,
            round_trip_us: number(mesh, "/round_trip_us")?,
            create: pair("create")?,
            list: pair("list")?,
        })
    }

    /// A median in round trips.
    pub fn round_trips(&self, micros: f64) -> f64 {
        micros / self.round_trip_us
    }

    /// (sites, round trip, create p50, p90, in round trips, list p50, p90, in round trips),
    /// ms and ratios as text.
    pub fn cells(&self) -> [String; 8] {
        let ms = |us: f64| format!("{:.1}", us / 1000.0);
        [
            self.sites.to_string(),
            ms(self.round_trip_us),
            ms(self.create[0]),
            ms(self.create[1]),
            format!("{:.2}x", self.round_trips(self.create[0])),
            ms(self.list[0]),
            ms(self.list[1]),
            format!("{:.2}x", self.round_trips(self.list[0])),
        ]
    }
}

pub const ACROSS_HEADER: [&str; 8] = [
    "sites",
    "round trip (ms)",
    "create p50 (ms)",
    "create p90 (ms)",
    "create p50 / round trip",
    "list p50 (ms)",
    "list p90 (ms)",
    "list p50 / round trip",
];
