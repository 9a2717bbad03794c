//! The node's configuration (TOML): this site, the meshed services (the address applications
//! dial and where the local instance listens), the workload cgroups, and the proxy's limits.
//! Loading checks everything it can up front, so that a bad file fails with one clear sentence.
use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the configuration {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The name of this site, as other sites and scopes call it.
    pub site: String,
    #[serde(default)]
    pub proxy: ProxySettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(rename = "service", default)]
    pub services: Vec<Service>,
    #[serde(rename = "workload", default)]
    pub workloads: Vec<Workload>,
}

/// A meshed service: applications dial `address`; the local instance listens at `local`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub address: SocketAddr,
    pub local: SocketAddr,
}

/// A cgroup whose processes are meshed. `cgroup` is a path relative to the cgroup v2 mount,
/// or an absolute path under it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub cgroup: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// The port the proxy listens on, on 127.0.0.1 and ::1 only.
    pub port: u16,
    /// How connections reach the proxy: the eBPF programs, or a NAT redirect rule set up by
    /// someone else (sidecar-style, kept as a baseline to measure eBPF against).
    pub interception: InterceptionMode,
    /// How long a client may take to send a request's headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// How long the local instance may take to connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long the local instance may take to start answering.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            port: 15001,
            interception: InterceptionMode::Ebpf,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterceptionMode {
    /// cgroup/connect programs redirect the workloads' connections (the product path).
    Ebpf,
    /// An nftables or iptables REDIRECT rule sends connections here; no eBPF is loaded and
    /// the original destination comes from the kernel's connection tracking.
    Nat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// The port of the admin endpoint (status, metrics), on 127.0.0.1 only.
    pub port: u16,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings { port: 15000 }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.site.trim().is_empty() {
            return Err("`site` must name this site".into());
        }
        if self.proxy.max_header_bytes < 8192 {
            return Err("`proxy.max_header_bytes` must be at least 8192".into());
        }
        if self.proxy.interception == InterceptionMode::Nat && !self.workloads.is_empty() {
            return Err(
                "`[[workload]]` cgroups select what the eBPF programs intercept; with \
                        `proxy.interception = \"nat\"` the REDIRECT rule selects it: remove them"
                    .into(),
            );
        }
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        for service in &self.services {
            if service.name.trim().is_empty() {
                return Err(format!(
                    "the service at {} has an empty name",
                    service.address
                ));
            }
            if !names.insert(&service.name) {
                return Err(format!("service '{}' is configured twice", service.name));
            }
            if !addresses.insert(service.address) {
                return Err(format!(
                    "service '{}': address {} is already taken by another service",
                    service.name, service.address
                ));
            }
            if service.address == service.local {
                return Err(format!(
                    "service '{}': `local` must differ from `address` ({}), or every call would be \
                     sent back to cheops",
                    service.name, service.address
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        site = "Paris"
        [proxy]
        port = 16001
        header_read_timeout = "3s"
        [[service]]
        name = "catalog"
        address = "198.18.0.10:80"
        local = "127.0.0.1:3000"
        [[workload]]
        cgroup = "cheops/paris"
    "#;

    #[test]
    fn reads_a_full_configuration_with_defaults_for_the_rest() {
        let config = Config::parse(EXAMPLE).unwrap();
        assert_eq!(config.site, "Paris");
        assert_eq!(config.proxy.port, 16001);
        assert_eq!(config.proxy.header_read_timeout, Duration::from_secs(3));
        assert_eq!(config.proxy.max_header_bytes, 64 * 1024);
        assert_eq!(config.admin.port, 15000);
        assert_eq!(config.proxy.interception, InterceptionMode::Ebpf);
        let catalog = &config.services[0];
        assert_eq!(catalog.address, "198.18.0.10:80".parse().unwrap());
        assert_eq!(catalog.local, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(config.workloads[0].cgroup, Path::new("cheops/paris"));
    }

    #[test]
    fn names_the_service_configured_twice() {
        let text = format!(
            "{EXAMPLE}\n[[service]]\nname = \"catalog\"\naddress = \"198.18.0.11:80\"\nlocal = \"127.0.0.1:3001\"\n"
        );
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err, "service 'catalog' is configured twice");
    }

    #[test]
    fn refuses_a_service_that_would_loop_back_to_cheops() {
        let text = "site = \"A\"\n[[service]]\nname = \"s\"\naddress = \"127.0.0.1:80\"\nlocal = \"127.0.0.1:80\"\n";
        assert!(Config::parse(text).unwrap_err().contains("service 's'"));
    }

    #[test]
    fn nat_interception_needs_no_workload_cgroups_and_refuses_them() {
        let nat = "site = \"A\"\n[proxy]\ninterception = \"nat\"\n";
        assert_eq!(
            Config::parse(nat).unwrap().proxy.interception,
            InterceptionMode::Nat
        );
        let err = Config::parse(&format!("{nat}[[workload]]\ncgroup = \"w\"\n")).unwrap_err();
        assert!(err.contains("[[workload]]"), "{err}");
        let err =
            Config::parse("site = \"A\"\n[proxy]\ninterception = \"iptables\"\n").unwrap_err();
        assert!(err.contains("iptables"), "{err}");
    }

    #[test]
    fn names_an_unknown_key() {
        let err = Config::parse("site = \"A\"\n[proxy]\nprot = 1\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
    }
}
