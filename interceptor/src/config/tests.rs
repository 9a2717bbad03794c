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
fn a_configuration_written_out_reads_back_the_same() {
    let text = format!(
        "{EXAMPLE}default_scope = \"{{catalog: Paris}}\"\n\
         [[service.resource]]\ncollection = \"/pods\"\nitem = \"/pods/{{id}}\"\nid = \"json:id\"\n\
         [[peer]]\nname = \"Nantes\"\naddress = \"198.18.0.2:15443\"\n\
         [tls]\nca = \"ca.pem\"\ncert = \"p.pem\"\nkey = \"p.key\"\n\
         [peer_api]\nlisten = \"198.18.0.1:15443\"\nheartbeat_interval = \"200ms\"\n\
         [carriers]\nread = [\"token\", \"header\"]\n"
    );
    let config = Config::parse(&text).unwrap();
    let written = toml::to_string(&config).unwrap();
    let again = Config::parse(&written).unwrap_or_else(|err| panic!("{err}:\n{written}"));
    assert_eq!(format!("{again:?}"), format!("{config:?}"), "{written}");
}

#[test]
fn names_the_service_configured_twice() {
    let text = format!(
        "{EXAMPLE}\n[[service]]\nname = \"catalog\"\naddress = \"198.18.0.11:80\"\nlocal = \"127.0.0.1:3001\"\n"
    );
    let err = Config::parse(&text).unwrap_err().to_string();
    assert_eq!(err, "service 'catalog' is configured twice");
}

#[test]
fn parks_idle_connections_only_before_their_wait_for_a_head_ends() {
    let parks = EXAMPLE.replace(
        "header_read_timeout = \"3s\"",
        "park_idle_after = \"2s\"\n    header_read_timeout = \"3s\"",
    );
    assert_eq!(
        Config::parse(&parks).unwrap().proxy.park_idle_after,
        Duration::from_secs(2)
    );
    let never = EXAMPLE.replace(
        "header_read_timeout = \"3s\"",
        "header_read_timeout = \"1s\"",
    );
    let err = Config::parse(&never).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "`proxy.park_idle_after` must be shorter than `proxy.header_read_timeout` (1s)"
        ),
        "{err}"
    );
}

#[test]
fn refuses_a_service_that_would_loop_back_to_cheops() {
    let text = "site = \"A\"\n[[service]]\nname = \"s\"\naddress = \"127.0.0.1:80\"\nlocal = \"127.0.0.1:80\"\n";
    assert!(Config::parse(text)
        .unwrap_err()
        .to_string()
        .contains("service 's'"));
}

#[test]
fn an_inbound_service_may_be_bound_at_its_address_but_not_at_the_peer_api() {
    let inbound = "site = \"A\"\n[peer_api]\nlisten = \"198.18.0.1:15443\"\n\
                   [[service]]\nname = \"s\"\naddress = \"198.18.0.1:3000\"\n\
                   local = \"198.18.0.1:3000\"\ninbound = true\n";
    assert!(Config::parse(inbound).unwrap().services[0].inbound);
    let err = Config::parse(&inbound.replace(":3000", ":15443"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("service 's': inbound address 198.18.0.1:15443 is this site's peer API"),
        "{err}"
    );
    let nat = inbound.replace("[peer_api]", "[proxy]\ninterception = \"nat\"\n[peer_api]");
    let err = Config::parse(&nat).unwrap_err().to_string();
    assert!(
        err.contains("`inbound = true` needs the eBPF programs"),
        "{err}"
    );
}

#[test]
fn reads_resource_rules_and_names_the_service_of_a_bad_one() {
    let text = format!(
        "{EXAMPLE}\n[[service.resource]]\ncollection = \"/pods\"\nitem = \"/pods/{{id}}\"\nid = \"json:id\"\n"
    );
    let config = Config::parse(&text).unwrap();
    assert_eq!(config.services[0].resources[0].collection, "/pods");
    let bad = text.replace("json:id", "header");
    let err = Config::parse(&bad).unwrap_err().to_string();
    assert!(err.contains("json:FIELD"), "{err}");
    let bad = text.replace("collection = \"/pods\"", "collection = \"pods\"");
    let err = Config::parse(&bad).unwrap_err().to_string();
    assert!(err.starts_with("service 'catalog': resource"), "{err}");
}

#[test]
fn nat_interception_needs_no_workload_cgroups_and_refuses_them() {
    let nat = "site = \"A\"\n[proxy]\ninterception = \"nat\"\n";
    assert_eq!(
        Config::parse(nat).unwrap().proxy.interception,
        InterceptionMode::Nat
    );
    let err = Config::parse(&format!("{nat}[[workload]]\ncgroup = \"w\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[[workload]]"), "{err}");
    let err = Config::parse("site = \"A\"\n[proxy]\ninterception = \"iptables\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("iptables"), "{err}");
}

#[test]
fn names_an_unknown_key() {
    let err = Config::parse("site = \"A\"\n[proxy]\nprot = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("prot"), "{err}");
}

#[test]
fn peers_need_credentials_and_a_listener() {
    let text = format!("{EXAMPLE}\n[[peer]]\nname = \"Nantes\"\naddress = \"198.18.0.2:15443\"\n");
    assert!(Config::parse(&text)
        .unwrap_err()
        .to_string()
        .contains("[tls]"));
    let text = format!(
        "{text}[tls]\nca = \"ca.pem\"\ncert = \"p.pem\"\nkey = \"p.key\"\n[peer_api]\nlisten = \"198.18.0.1:15443\"\n"
    );
    let config = Config::parse(&text).unwrap();
    assert!(config.knows_site("Nantes") && config.knows_site("Paris"));
    assert!(!config.knows_site("Lyon"));
    assert_eq!(config.carriers.token_header, "X-Auth-Token");
    assert_eq!(config.carriers.read.len(), 5);
}

#[test]
fn a_default_scope_naming_an_unknown_site_is_refused_with_the_workload() {
    let text = format!("{EXAMPLE}default_scope = \"{{catalog: Lyon}}\"\n");
    let err = Config::parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("cheops/paris") && err.contains("Lyon"),
        "{err}"
    );
}

#[test]
fn a_service_relayed_as_tcp_reads_back_and_cannot_have_resource_rules() {
    let tcp = EXAMPLE.replace(
        "local = \"127.0.0.1:3000\"",
        "local = \"127.0.0.1:3000\"\n    protocol = \"tcp\"",
    );
    let config = Config::parse(&tcp).unwrap();
    assert_eq!(config.services[0].protocol, ServiceProtocol::Tcp);
    let written = toml::to_string(&config).unwrap();
    assert!(written.contains("protocol = \"tcp\""), "{written}");
    assert_eq!(
        Config::parse(EXAMPLE).unwrap().services[0].protocol,
        ServiceProtocol::Detect
    );

    let with_rules = tcp.replace(
        "[[workload]]",
        "[[service.resource]]\n    collection = \"/pods\"\n    item = \"/pods/{id}\"\n    \
         id = \"json:id\"\n    [[workload]]",
    );
    let err = Config::parse(&with_rules).unwrap_err().to_string();
    assert!(
        err.starts_with("service 'catalog': `protocol = \"tcp\"` relays its connections"),
        "{err}"
    );
    let unknown = EXAMPLE.replace(
        "local = \"127.0.0.1:3000\"",
        "local = \"127.0.0.1:3000\"\n    protocol = \"udp\"",
    );
    let err = Config::parse(&unknown).unwrap_err().to_string();
    assert!(err.contains("unknown variant `udp`"), "{err}");
}
