//! What a running agent may take from a changed configuration file, and what needs a restart:
//! sockets it listens on, the store it holds open, the site's own name, the TLS files (reloaded
//! by their own path), and which services the kernel hands over from other machines.
use std::collections::BTreeMap;

use super::{Config, ConfigError};

/// The top-level keys a running agent keeps: a change to any key under them is refused.
const RESTART_ONLY: [&str; 6] = ["site", "proxy", "admin", "replication", "tls", "peer_api"];

/// Refuses `new` when it changes a setting that only a restart applies, naming the key.
pub fn check_live_change(running: &Config, new: &Config) -> Result<(), ConfigError> {
    let (running_value, new_value) = (as_table(running)?, as_table(new)?);
    for key in RESTART_ONLY {
        if let Some(changed) = first_difference(key, running_value.get(key), new_value.get(key)) {
            return Err(ConfigError::NeedsRestart {
                key: format!("`{changed}`"),
            });
        }
    }
    let inbound = |config: &Config| -> BTreeMap<String, toml::Value> {
        services_where(config, |s| s.inbound)
    };
    if let Some(name) = changed_service(inbound(running), inbound(new)) {
        return Err(ConfigError::NeedsRestart {
            key: format!("service '{name}' with `inbound = true`"),
        });
    }
    Ok(())
}

/// The services that `keep` selects, each as its whole table.
fn services_where(
    config: &Config,
    keep: impl Fn(&super::Service) -> bool,
) -> BTreeMap<String, toml::Value> {
    config
        .services
        .iter()
        .filter(|s| keep(s))
        .map(|s| {
            let value = toml::Value::try_from(s).unwrap_or(toml::Value::Boolean(false));
            (s.name.clone(), value)
        })
        .collect()
}

/// The name of a service added, removed or changed between `before` and `after`.
fn changed_service(
    before: BTreeMap<String, toml::Value>,
    after: BTreeMap<String, toml::Value>,
) -> Option<String> {
    before
        .keys()
        .chain(after.keys())
        .find(|name| before.get(*name) != after.get(*name))
        .cloned()
}

fn as_table(config: &Config) -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(config).map_err(|err| ConfigError::Unserialisable(err.to_string()))
}

/// The dotted name of the first key under `key` whose value differs, if any.
fn first_difference(
    key: &str,
    running: Option<&toml::Value>,
    new: Option<&toml::Value>,
) -> Option<String> {
    match (running, new) {
        (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => a
            .keys()
            .chain(b.keys())
            .find_map(|sub| first_difference(&format!("{key}.{sub}"), a.get(sub), b.get(sub))),
        (a, b) if a == b => None,
        _ => Some(key.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = r#"
        site = "Paris"
        [proxy]
        port = 15001
        [[service]]
        name = "catalog"
        address = "198.18.0.10:80"
        local = "127.0.0.1:3000"
    "#;

    fn change(new: &str) -> Result<(), ConfigError> {
        check_live_change(
            &Config::parse(RUNNING).unwrap(),
            &Config::parse(new).unwrap(),
        )
    }

    #[test]
    fn services_workloads_and_carriers_change_live() {
        let new = r#"
            site = "Paris"
            [carriers]
            read = ["header"]
            [[service]]
            name = "front"
            address = "198.18.0.11:80"
            local = "127.0.0.1:3001"
            [[workload]]
            cgroup = "shop"
        "#;
        change(new).unwrap();
    }

    #[test]
    fn a_port_the_site_or_an_inbound_service_needs_a_restart_named_by_key() {
        let port = RUNNING.replace("port = 15001", "port = 15002");
        let err = change(&port).unwrap_err().to_string();
        assert!(err.contains("`proxy.port`"), "{err}");
        let site = RUNNING.replace("Paris", "Nantes");
        let err = change(&site).unwrap_err().to_string();
        assert!(err.contains("`site`"), "{err}");
        let store = format!("{RUNNING}\n[replication]\nstore = \"/tmp/other.redb\"\n");
        let err = change(&store).unwrap_err().to_string();
        assert!(err.contains("`replication.store`"), "{err}");
        let inbound = format!("{RUNNING}\ninbound = true\n");
        let err = change(&inbound).unwrap_err().to_string();
        assert!(
            err.contains("service 'catalog' with `inbound = true`"),
            "{err}"
        );
    }
}
