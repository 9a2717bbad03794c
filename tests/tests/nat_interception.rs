//! NAT interception, as root: with `proxy.interception = "nat"`, cheops loads no eBPF and an
//! nftables REDIRECT rule sends connections to it; it finds the service the client dialled
//! through `SO_ORIGINAL_DST`. This is the baseline the benchmarks compare eBPF against, so it
//! must really forward to the right service, and refuse what no rule redirected.
use cheops_tests::{
    agent::{meshed_service, site_config, Agent},
    apps::HttpServer,
    nat::NatRedirect,
    netns::Netns,
    require_root, unique_name,
};
use interceptor::config::InterceptionMode;

const PROXY_PORT: u16 = 15001;

fn curl(netns: &Netns, url: &str) -> String {
    let output = netns
        .command("curl")
        .args(["-sS", "-i", "-m", "5", url])
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn body(answer: &str) -> &str {
    answer.split("\r\n\r\n").nth(1).unwrap_or("").trim()
}

#[test]
fn a_redirected_connection_reaches_the_service_it_dialled_through_cheops() {
    require_root();
    let netns = Netns::create(&unique_name("nat"));
    // Two services, so that forwarding to the wrong one (or the first one) shows.
    let mut config = site_config("Natsite");
    config.proxy.interception = InterceptionMode::Nat;
    let mut servers = Vec::new();
    for n in 0..2u16 {
        let address = format!("198.18.0.{}:80", 20 + n).parse().unwrap();
        let local = format!("127.0.0.1:{}", 8100 + n).parse().unwrap();
        netns.add_loopback_address(&format!("198.18.0.{}/32", 20 + n));
        servers.push(HttpServer::start(&netns, local, &format!("svc{n}")));
        servers.push(HttpServer::start(&netns, address, &format!("direct{n}")));
        config
            .services
            .push(meshed_service(&format!("svc{n}"), address, local));
    }
    let agent = Agent::start(&netns, &config);

    assert_eq!(body(&curl(&netns, "http://198.18.0.21/whoami")), "direct1");
    let rules: Vec<_> = (0..2)
        .map(|n| {
            let service = format!("198.18.0.{}:80", 20 + n).parse().unwrap();
            NatRedirect::add(&netns, service, PROXY_PORT)
        })
        .collect();
    for n in [1, 0] {
        let answer = curl(&netns, &format!("http://198.18.0.{}/whoami", 20 + n));
        assert_eq!(body(&answer), format!("svc{n}"), "{answer}");
        assert!(
            answer.to_lowercase().contains("x-cheops-site: natsite"),
            "{answer}"
        );
    }

    // Dialled directly, the proxy's own address is no service: closed, and counted as such.
    let answer = curl(&netns, &format!("http://127.0.0.1:{PROXY_PORT}/whoami"));
    assert!(body(&answer).is_empty(), "{answer}");
    let status = agent.status();
    assert!(status.kernel.is_none(), "{status:?}");
    assert_eq!(status.proxy.http_requests, 2, "{status:?}");
    assert_eq!(status.proxy.not_redirected, 1, "{status:?}");
    assert!(
        agent.log_text().contains("was not redirected"),
        "{}",
        agent.log_text()
    );

    drop(rules);
    assert_eq!(body(&curl(&netns, "http://198.18.0.20/whoami")), "direct0");
}
