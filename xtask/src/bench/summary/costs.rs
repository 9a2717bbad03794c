//! What each proxy spends per request, counted (instructions by callgrind, system calls by
//! the raw_syscalls tracepoint): the figures the machine's load cannot move.
use serde_json::{json, Value};

use super::{cpu_profile::CpuProfile, number};

pub struct Cost {
    /// The scenario whose proxy was counted (`cheops-nat`, `nginx-nat`, ...).
    pub name: String,
    pub instructions: f64,
    pub syscalls: f64,
    /// The two request counts whose difference was divided by.
    pub requests: [u64; 2],
    /// perf's samples while the proxy served, when it took them.
    pub cpu_profile: Option<CpuProfile>,
}

/// The counts under `key` in the raw results (`costs`: HTTP/1.1 requests, `grpc_costs`: gRPC
/// unary calls), if any were made.
pub fn from_raw(raw: &Value, key: &str) -> anyhow::Result<Vec<Cost>> {
    let Some(costs) = raw[key].as_object() else {
        return Ok(Vec::new());
    };
    costs
        .iter()
        // A proxy whose count failed says why in the raw results, and has no row.
        .filter(|(_, cost)| cost["error"].is_null())
        .map(|(name, cost)| {
            let request_count = |i: usize| cost["requests"][i].as_u64().unwrap_or(0);
            Ok(Cost {
                name: name.clone(),
                instructions: number(cost, "/instructions_per_request")?,
                syscalls: number(cost, "/syscalls_per_request")?,
                requests: [request_count(0), request_count(1)],
                cpu_profile: CpuProfile::from_raw(cost)?,
            })
        })
        .collect()
}

impl Cost {
    /// Its line in the terminal summary.
    pub fn text_line(&self, title: &str) -> String {
        format!(
            "  {title:<28} {:>10.0} instructions {:>6.2} system calls\n",
            self.instructions, self.syscalls
        )
    }

    /// Its entry in the summary's JSON.
    pub fn json(&self) -> Value {
        json!({
            "proxy": self.name,
            "instructions": self.instructions,
            "system_calls": self.syscalls,
            "requests_counted": self.requests,
            "cpu_profile": self.cpu_profile.as_ref().map(CpuProfile::json),
        })
    }
}
