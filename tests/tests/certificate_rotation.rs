//! Certificates that rotate, as root: a site's certificate replaced under load (the files
//! rewritten in place, then another site's by a rename and SIGHUP) fails no request, and the
//! new certificate is the one presented afterwards; a peer's expired certificate is refused,
//! with its dates in the log and in `cheops_peer_certificates_out_of_validity_total`.
use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use cheops_tests::{
    mesh::{cert_files, Mesh, CATALOG, PEER_PORT},
    netns::run,
    process::wait_until,
    sites::Topology,
};
use interceptor::tls::{self, Validity, CA_FILE, CA_KEY_FILE};

/// Issues `site`'s certificate from the mesh's CA into `out`, valid as `validity` says (the
/// default of `cheops certs` when `None`): the certificate and key files written.
fn issue(mesh: &Mesh, out: &Path, site: &str, validity: Option<Validity>) -> [Vec<u8>; 2] {
    let ca = mesh.certs.path();
    tls::issue(
        out,
        &ca.join(CA_FILE),
        &ca.join(CA_KEY_FILE),
        &[site.to_owned()],
        validity,
    )
    .expect("issuing a certificate from the mesh's CA");
    let (cert, key) = cert_files(out, site);
    [std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()]
}

/// The SHA-256 fingerprint of the certificate that `site`'s peer API presents to a new
/// connection, as `openssl s_client` (from `from`, with `from`'s certificate) sees it.
fn presented_fingerprint(mesh: &Mesh, site: &str, from: &str) -> String {
    let ca = mesh.certs.path();
    let (cert, key) = cert_files(ca, from);
    let address = format!("{}:{PEER_PORT}", mesh.topology.site(site).address);
    let script = format!(
        "openssl s_client -connect {address} -CAfile {} -cert {} -key {} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
        ca.join(CA_FILE).display(),
        cert.display(),
        key.display()
    );
    let output = mesh
        .topology
        .site(from)
        .netns
        .command("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What `openssl x509 -noout OPTION` says of the certificate in `pem`, after its `=`.
fn openssl_x509(pem: &[u8], option: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("certificate.pem");
    std::fs::write(&path, pem).unwrap();
    let output = Command::new("openssl")
        .args(["x509", "-noout"])
        .args(option)
        .arg("-in")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().rsplit('=').next().unwrap().to_owned()
}

/// Shared requests from `site` to site B's catalog, with curl, in batches, until `stop`: each
/// answer's status code.
fn shared_requests(mesh: &Mesh, site: &str, stop: &AtomicBool) -> Vec<String> {
    let mut codes = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // curl expands `[1-20]` into twenty requests on one kept-alive connection; the
        // fragment is not sent.
        let output = mesh.run_at(
            site,
            true,
            "curl",
            &[
                "-sS",
                "-m",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}\\n",
                "-H",
                "X-Scope: {catalog: B}",
                &format!("http://{CATALOG}/products#[1-20]"),
            ],
        );
        let text = String::from_utf8_lossy(&output.stdout);
        codes.extend(text.lines().map(str::to_owned));
        let errors = String::from_utf8_lossy(&output.stderr);
        codes.extend(errors.lines().map(|line| format!("curl: {line}")));
    }
    codes
}

#[test]
fn site_certificates_rotated_under_load_fail_no_request_and_are_presented_afterwards() {
    let mesh = Mesh::start(Topology::create(&["A", "B"]), &HashMap::new());
    let before = [
        presented_fingerprint(&mesh, "A", "B"),
        presented_fingerprint(&mesh, "B", "A"),
    ];
    assert_eq!(
        before[0],
        mesh.site("A")
            .agent
            .status()
            .tls_generation
            .unwrap()
            .fingerprint
    );
    let renewed = tempfile::tempdir().unwrap();
    let [a_cert, a_key] = issue(&mesh, &renewed.path().join("a"), "A", None);
    let [b_cert, b_key] = issue(&mesh, &renewed.path().join("b"), "B", None);

    let stop = Arc::new(AtomicBool::new(false));
    let codes = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| shared_requests(&mesh, "A", &stop)))
            .collect();
        std::thread::sleep(Duration::from_secs(2));

        // A's files rewritten in place (the key after the certificate, as a copy does): its
        // watch reloads them, and its link to B moves to the new certificate.
        let (cert, key) = cert_files(mesh.certs.path(), "A");
        std::fs::write(&cert, &a_cert).unwrap();
        std::fs::write(&key, &a_key).unwrap();
        let a_renewed = wait_until(Duration::from_secs(10), || {
            mesh.site("A").agent.status().tls_generation.unwrap().number > 1
        });
        assert!(a_renewed, "{}", mesh.site("A").agent.log_text());
        std::thread::sleep(Duration::from_secs(2));

        // B's files put in place by a rename, then SIGHUP.
        let (cert, key) = cert_files(mesh.certs.path(), "B");
        for (path, bytes) in [(&cert, &b_cert), (&key, &b_key)] {
            let next = path.with_extension("next");
            std::fs::write(&next, bytes).unwrap();
            std::fs::rename(&next, path).unwrap();
        }
        let pid = mesh.site("B").agent.process.pid().to_string();
        run(Command::new("kill").args(["-HUP", &pid]));
        let b_renewed = wait_until(Duration::from_secs(10), || {
            mesh.site("B").agent.status().tls_generation.unwrap().number > 1
        });
        assert!(b_renewed, "{}", mesh.site("B").agent.log_text());
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect::<Vec<_>>()
    });
    let failed: Vec<&String> = codes.iter().filter(|code| *code != "200").collect();
    assert!(
        codes.len() >= 40 && failed.is_empty(),
        "{} requests, failed: {failed:?}\nA's log:\n{}",
        codes.len(),
        mesh.site("A").agent.log_text()
    );
    eprintln!(
        "{} shared requests through the rotations, none failed",
        codes.len()
    );

    // The new certificates are the ones presented, and the ones the status names.
    for (site, other, pem, old) in [
        ("A", "B", &a_cert, &before[0]),
        ("B", "A", &b_cert, &before[1]),
    ] {
        let presented = presented_fingerprint(&mesh, site, other);
        assert_eq!(
            presented,
            openssl_x509(pem, &["-fingerprint", "-sha256"]),
            "site {site}"
        );
        assert_ne!(&presented, old, "site {site}");
        let generation = mesh.site(site).agent.status().tls_generation.unwrap();
        assert_eq!(generation.fingerprint, presented, "site {site}");
        assert_eq!(
            generation.serial,
            openssl_x509(pem, &["-serial"]),
            "site {site}"
        );
        // `cheops status` names the generation in use, and the certificate it presents.
        let cli = mesh.site(site).agent.status_text();
        let expected = format!(
            "site certificate serial {}, SHA-256 {presented}",
            generation.serial
        );
        assert!(
            cli.lines()
                .any(|l| l.starts_with("tls          generation 2 since") && l.contains(&expected)),
            "{cli}"
        );
    }
    let a_log = mesh.site("A").agent.log_text();
    assert!(
        a_log.contains("peer link re-established with the new TLS material"),
        "{a_log}"
    );
    let b_log = mesh.site("B").agent.log_text();
    assert!(
        b_log.contains("SIGHUP: reloading the configuration file and the TLS material"),
        "{b_log}"
    );
    // Both still reach each other on links made with the new material.
    assert_eq!(mesh.peers_up("A").len(), 1);
    let served = mesh.curl(
        "B",
        &format!("http://{CATALOG}/products"),
        &["X-Scope: {catalog: A}"],
    );
    assert_eq!(served.status, 200, "{}", served.raw);
}

#[test]
fn an_expired_peer_certificate_is_refused_with_its_dates_in_the_log() {
    let mut mesh = Mesh::start(Topology::create(&["A", "B"]), &HashMap::new());
    let day = Duration::from_secs(24 * 3600);
    // Whole seconds, as certificates hold them.
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    let past = Validity {
        not_before: now - 30 * day,
        not_after: now - day,
    };
    let expired = tempfile::tempdir().unwrap();
    let [cert, key] = issue(&mesh, expired.path(), "B", Some(past));
    let (cert_path, key_path) = cert_files(mesh.certs.path(), "B");
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    let dates = [past.not_before, past.not_after]
        .map(|time| humantime::format_rfc3339_seconds(time).to_string());
    let b_address = mesh.topology.site("B").address.to_string();
    let refused_with_dates = |log: &str, direction: &str| {
        log.lines().any(|line| {
            line.contains("refused peer B at")
                && line.contains(&b_address)
                && line.contains(direction)
                && line.contains("has expired")
                && line.contains(&format!(
                    "valid from {} (notBefore) to {} (notAfter)",
                    dates[0], dates[1]
                ))
        })
    };

    // B takes the expired certificate, and its link to A presents it: A's peer API refuses.
    let refused = wait_until(Duration::from_secs(10), || {
        refused_with_dates(&mesh.site("A").agent.log_text(), "inbound")
    });
    assert!(refused, "A's log:\n{}", mesh.site("A").agent.log_text());
    let metrics = mesh.site("A").agent.admin("/metrics").unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "cheops_peer_certificates_out_of_validity_total{peer=\"B\",direction=\"inbound\"}"
        )),
        "{metrics}"
    );

    // A connecting anew to B: B's peer API presents the expired certificate, A's link refuses.
    mesh.site_mut("A").agent.restart();
    let refused = wait_until(Duration::from_secs(10), || {
        refused_with_dates(&mesh.site("A").agent.log_text(), "outbound")
    });
    assert!(refused, "A's log:\n{}", mesh.site("A").agent.log_text());
    let status = mesh.site("A").agent.status();
    let b = status.peers.iter().find(|p| p.name == "B").unwrap();
    assert!(!b.up, "{b:?}");
    assert!(
        b.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("has expired"),
        "{b:?}"
    );
}
