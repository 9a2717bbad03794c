//! Who may do what: where the agent is read and where it is steered (the control socket), and
//! the policies that limit what a request's scope may ask for, per workload, for inbound
//! requests, and per peer.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// Where the agent is read and steered. Reading (status, metrics, readiness) is open to any
/// local process over TCP; anything that changes the agent goes through the control socket,
/// which the kernel restricts by file mode and the agent by the caller's credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Whether the read-only admin pages are served over TCP at all.
    pub tcp: bool,
    /// The address of the read-only admin pages (status, metrics, readiness).
    pub address: IpAddr,
    /// The port of the read-only admin pages.
    pub port: u16,
    /// The control socket: every admin page, and the ones that change state, for root only
    /// (mode 0600), or root and `control_group` (mode 0660).
    pub control: PathBuf,
    /// A group whose members may use the control socket besides root.
    pub control_group: Option<String>,
}

/// Where the control socket is unless configured otherwise (and where the CLI looks for it).
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/cheops/control.sock";

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            tcp: true,
            address: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: 15000,
            control: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            control_group: None,
        }
    }
}

impl AdminSettings {
    /// The read-only admin pages' address, unless they are turned off.
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp.then_some(SocketAddr::new(self.address, self.port))
    }
}

/// A collaboration that a scope may ask for (a request served here needs none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Collaborating {
    /// One other site (`{svc: B}`).
    Sharing,
    /// A chain of sites (`;`, `around`).
    Otherwise,
    /// Every site of an `&`.
    Replication,
    /// Spread over the sites of a `%`.
    Cross,
}

impl Collaborating {
    pub fn as_str(self) -> &'static str {
        match self {
            Collaborating::Sharing => "sharing",
            Collaborating::Otherwise => "otherwise",
            Collaborating::Replication => "replication",
            Collaborating::Cross => "cross",
        }
    }
}

/// Which other sites a request's scope may name and which collaborations it may use; each
/// list absent allows everything (this site itself is always allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScopePolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_sites: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<Collaborating>>,
}

impl ScopePolicy {
    pub fn allows_everything(&self) -> bool {
        self.allow_sites.is_none() && self.allow.is_none()
    }
}

/// Policies name only known sites and services: a typo never allows or refuses nothing.
pub(super) fn validate_policies(config: &Config) -> Result<(), ConfigError> {
    let policies = config
        .workloads
        .iter()
        .map(|w| (format!("workload {}", w.cgroup.display()), w.policy()))
        .chain([("`[inbound]`".to_owned(), config.inbound.clone())]);
    for (who, policy) in policies {
        let sites = policy.allow_sites.iter().flatten();
        if let Some(site) = sites.into_iter().find(|site| !config.knows_site(site)) {
            return Err(ConfigError::PolicySite {
                who,
                site: site.clone(),
            });
        }
    }
    for peer in &config.peers {
        let services = peer.allow_services.iter().flatten();
        if let Some(service) = services
            .into_iter()
            .find(|name| !config.services.iter().any(|s| &&s.name == name))
        {
            return Err(ConfigError::PolicyService {
                peer: peer.name.clone(),
                service: service.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SITES: &str = r#"
        site = "Paris"
        [[service]]
        name = "catalog"
        address = "198.18.0.10:80"
        local = "127.0.0.1:3000"
        [[peer]]
        name = "Nantes"
        address = "198.18.0.2:15443"
        [tls]
        ca = "ca.pem"
        cert = "p.pem"
        key = "p.key"
        [peer_api]
        listen = "198.18.0.1:15443"
    "#;

    #[test]
    fn policies_read_and_default_to_allowing_everything() {
        let config = Config::parse(TWO_SITES).unwrap();
        assert!(config.inbound.allows_everything());
        assert_eq!(config.peers[0].allow_services, None);
        let text = format!(
            "{TWO_SITES}[inbound]\nallow_sites = [\"Nantes\"]\nallow = [\"sharing\", \"cross\"]\n"
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.inbound.allow_sites, Some(vec!["Nantes".to_owned()]));
        assert_eq!(
            config.inbound.allow,
            Some(vec![Collaborating::Sharing, Collaborating::Cross])
        );
    }

    #[test]
    fn a_policy_naming_an_unknown_site_or_service_is_refused_with_its_owner() {
        let text = format!("{TWO_SITES}[[workload]]\ncgroup = \"app\"\nallow_sites = [\"Lyon\"]\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("workload app") && err.contains("Lyon"),
            "{err}"
        );
        let text = TWO_SITES.replace(
            "address = \"198.18.0.2:15443\"",
            "address = \"198.18.0.2:15443\"\nallow_services = [\"catalgo\"]",
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("peer 'Nantes'") && err.contains("catalgo"),
            "{err}"
        );
        let text = format!("{TWO_SITES}[inbound]\nallow = [\"spreading\"]\n");
        assert!(Config::parse(&text).is_err());
    }
}
