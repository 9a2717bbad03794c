//! Certificates, as root: a site added later gets its certificate from the mesh's existing CA
//! (`cheops certs --ca`), its peers trust it, `cheops check` warns of one expiring within
//! `tls.expiry_margin`, and a running agent shows its certificates' expiry in `cheops status`
//! and in `cheops_certificate_expiry_seconds`.
use std::{collections::HashMap, process::Command};

use cheops_tests::{
    agent::{config_text, site_config},
    cheops_bin,
    mesh::{cert_files, Mesh, CATALOG},
    netns::run,
    sites::Topology,
};
use interceptor::{
    config::Peer,
    tls::{TlsFiles, CA_FILE, CA_KEY_FILE, DEFAULT_EXPIRY_MARGIN},
};

/// `cheops certs` for `site` from the CA in `ca_dir`, valid for `valid_for`, into `out`.
fn issue(ca_dir: &std::path::Path, out: &std::path::Path, site: &str, valid_for: &str) {
    run(Command::new(cheops_bin())
        .arg("certs")
        .arg("--out")
        .arg(out)
        .args(["--sites", site, "--valid-for", valid_for])
        .arg("--ca")
        .arg(ca_dir.join(CA_FILE))
        .arg("--ca-key")
        .arg(ca_dir.join(CA_KEY_FILE)));
}

/// What `cheops check` says of a configuration of site `site` with `tls`.
fn check_says(site: &str, tls: TlsFiles) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = site_config(site);
    config.peers.push(Peer {
        name: "A".into(),
        address: "198.18.200.1:15443".parse().unwrap(),
        allow_services: None,
    });
    config.peer_api.listen = Some("198.18.200.2:15443".parse().unwrap());
    config.tls = Some(tls);
    let path = dir.path().join("cheops.toml");
    std::fs::write(&path, config_text(&config)).unwrap();
    let output = Command::new(cheops_bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_site_added_later_uses_the_same_ca_and_expiry_is_shown_and_warned_of() {
    let mesh = Mesh::start(Topology::create(&["A", "B"]), &HashMap::new());
    let ca_dir = mesh.certs.path();
    let later = tempfile::tempdir().unwrap();
    issue(ca_dir, later.path(), "C", "2d");
    issue(ca_dir, &later.path().join("long"), "D", "400d");
    let files = |dir: &std::path::Path, site: &str| {
        let (cert, key) = cert_files(dir, site);
        TlsFiles {
            ca: ca_dir.join(CA_FILE),
            cert,
            key,
            expiry_margin: DEFAULT_EXPIRY_MARGIN,
        }
    };
    // Two days left is under the default margin (30 days); 400 days is not.
    let short = check_says("C", files(later.path(), "C"));
    let site_line = short
        .lines()
        .find(|l| l.contains("site certificate"))
        .unwrap_or_else(|| panic!("{short}"));
    assert!(
        site_line.starts_with("warn") && site_line.contains("tls.expiry_margin"),
        "{short}"
    );
    let long = check_says("D", files(&later.path().join("long"), "D"));
    let site_line = long
        .lines()
        .find(|l| l.contains("site certificate"))
        .unwrap_or_else(|| panic!("{long}"));
    assert!(site_line.starts_with("ok"), "{long}");
    let narrow = TlsFiles {
        expiry_margin: std::time::Duration::from_secs(3600),
        ..files(later.path(), "C")
    };
    assert!(
        check_says("C", narrow)
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("site certificate")),
        "a margin of an hour does not warn of two days"
    );

    // A running agent shows its certificates' expiry, and counts it in its metrics.
    let status = mesh.site("A").agent.status();
    let roles: Vec<&str> = status
        .certificates
        .iter()
        .map(|c| c.role.as_str())
        .collect();
    assert_eq!(roles, ["ca", "site"], "{status:?}");
    let site = &status.certificates[1];
    assert!(site.subject.contains("CN=A"), "{site:?}");
    let metrics = mesh.site("A").agent.admin("/metrics").unwrap();
    let series = format!(
        "cheops_certificate_expiry_seconds{{role=\"site\",subject=\"{}\"}} {}",
        site.subject, site.not_after_unix
    );
    assert!(metrics.contains(&series), "{series}\n{metrics}");
    // The mesh still works with the CA it had.
    let served = mesh.curl(
        "A",
        &format!("http://{CATALOG}/products"),
        &["X-Scope: {catalog: B}"],
    );
    assert_eq!(served.status, 200, "{}", served.raw);
}
