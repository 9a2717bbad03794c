//! Several sites on one machine: each site a network namespace with one address in
//! 198.18.0.0/24, joined by a veth pair to a bridge in a hub namespace. The hub also runs the
//! WAN relays that add latency between two sites, and a site's link can be cut and healed.
use std::{net::Ipv4Addr, time::Duration};

use crate::{netns::Netns, unique_name, wan::WanRelay};

/// The hub's address on the bridge, where relays listen.
pub const HUB_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

pub struct Site {
    pub name: String,
    pub address: Ipv4Addr,
    pub netns: Netns,
    /// The hub's end of the site's veth pair: down means the site is cut off.
    hub_end: String,
}

pub struct Topology {
    pub sites: Vec<Site>,
    // Declared last: dropped after the sites' namespaces, whose veth pairs go with them.
    hub: Netns,
}

/// A relay in the hub that delays a site-to-site path; stopped when dropped.
pub struct Relay {
    _relay: WanRelay,
    pub address: std::net::SocketAddr,
}

/// A machine outside every site (a remote user, an orchestrator) on the sites' network.
pub struct Machine {
    pub address: Ipv4Addr,
    pub netns: Netns,
}

impl Topology {
    /// Creates the hub and one namespace per site, site `i` at 198.18.0.`i+1`.
    pub fn create(names: &[&str]) -> Topology {
        crate::require_root();
        let hub = Netns::create(&unique_name("hub"));
        hub.ip(&["link", "add", "br0", "type", "bridge"]);
        hub.ip(&["address", "add", &format!("{HUB_ADDRESS}/24"), "dev", "br0"]);
        hub.ip(&["link", "set", "br0", "up"]);
        let mut topology = Topology {
            sites: Vec::new(),
            hub,
        };
        for (i, name) in names.iter().enumerate() {
            let netns = Netns::create(&unique_name("site"));
            let address = Ipv4Addr::new(198, 18, 0, i as u8 + 1);
            let hub_end = topology.join(&netns, address);
            topology.sites.push(Site {
                name: name.to_string(),
                address,
                netns,
                hub_end,
            });
        }
        topology
    }

    /// A machine outside the sites at 198.18.0.`host`, reaching them over the bridge, never
    /// over loopback.
    pub fn machine(&self, host: u8) -> Machine {
        let netns = Netns::create(&unique_name("mach"));
        let address = Ipv4Addr::new(198, 18, 0, host);
        self.join(&netns, address);
        Machine { address, netns }
    }

    /// Joins `netns` to the bridge at `address` by a veth pair; returns the hub's end.
    fn join(&self, netns: &Netns, address: Ipv4Addr) -> String {
        let hub_end = unique_name("vh");
        let site_end = unique_name("vs");
        crate::netns::run(std::process::Command::new("ip").args([
            "link", "add", &hub_end, "type", "veth", "peer", "name", &site_end,
        ]));
        crate::netns::run(std::process::Command::new("ip").args([
            "link",
            "set",
            &site_end,
            "netns",
            netns.name(),
        ]));
        crate::netns::run(std::process::Command::new("ip").args([
            "link",
            "set",
            &hub_end,
            "netns",
            self.hub.name(),
        ]));
        self.hub
            .ip(&["link", "set", &hub_end, "master", "br0", "up"]);
        netns.ip(&["address", "add", &format!("{address}/24"), "dev", &site_end]);
        netns.ip(&["link", "set", &site_end, "up"]);
        hub_end
    }

    pub fn site(&self, name: &str) -> &Site {
        self.sites
            .iter()
            .find(|site| site.name == name)
            .unwrap_or_else(|| panic!("no site {name} in this topology"))
    }

    /// Cuts every link of site `name` (a partition), until `heal`.
    pub fn cut(&self, name: &str) {
        let site = self.site(name);
        self.hub.ip(&["link", "set", &site.hub_end, "down"]);
    }

    pub fn heal(&self, name: &str) {
        let site = self.site(name);
        self.hub.ip(&["link", "set", &site.hub_end, "up"]);
    }

    /// A relay at the hub's `port` to `target`'s `target_port` that adds `round_trip` to every
    /// round trip through it. Sites reach the target through it when configured to.
    pub fn relay(&self, port: u16, target: &str, target_port: u16, round_trip: Duration) -> Relay {
        let address = std::net::SocketAddr::from((HUB_ADDRESS, port));
        let target = std::net::SocketAddr::from((self.site(target).address, target_port));
        Relay {
            _relay: WanRelay::start(self.hub.name(), address, target, round_trip),
            address,
        }
    }
}
