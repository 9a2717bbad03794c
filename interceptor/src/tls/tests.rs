//! Certificate names, reloads that refuse bad material and keep the running one, and peer
//! certificates refused with their dates.
use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

fn temporary_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cheops-tls-{what}-{}", ulid::Ulid::generate()))
}

fn files(dir: &Path, site: &str) -> TlsFiles {
    let (cert, key) = site_files(site).unwrap();
    TlsFiles {
        ca: dir.join(CA_FILE),
        cert: dir.join(cert),
        key: dir.join(key),
        expiry_margin: DEFAULT_EXPIRY_MARGIN,
    }
}

#[test]
fn site_names_become_certificate_names() {
    assert_eq!(site_dns_name("New York").unwrap(), "new-york.cheops");
    assert_eq!(site_dns_name("Site #1").unwrap(), "site--1.cheops");
    assert!(matches!(site_dns_name("##"), Err(TlsError::Unnameable(_))));
}

#[test]
fn generated_certificates_load_and_name_their_site() {
    let dir = temporary_dir("load");
    let sites = vec!["Paris".to_owned(), "Nantes".to_owned()];
    generate(&dir, &sites, None).unwrap();
    let files = files(&dir, "Paris");
    let tls = SiteTls::load(&files).unwrap();
    let certificate = read_certificates("site certificate", &files.cert).unwrap();
    let found = certificate_site(&certificate[0], ["Nantes", "Paris"].into_iter());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found, Some("Paris"));
    assert_eq!(tls.generation().number, 1);
    assert_eq!(tls.certificates()[1].serial, tls.generation().serial);
}

#[test]
fn a_reload_refuses_half_written_files_and_a_foreign_key_and_keeps_the_running_material() {
    let dir = temporary_dir("reload");
    generate(&dir, &["Paris".to_owned()], None).unwrap();
    let files = files(&dir, "Paris");
    let tls = SiteTls::load(&files).unwrap();
    let first = tls.generation();
    let mut changes = tls.changes();
    let renewed = dir.join("renewed");
    issue(
        &renewed,
        &files.ca,
        &dir.join(CA_KEY_FILE),
        &["Paris".to_owned()],
        None,
    )
    .unwrap();
    let new_cert = std::fs::read(renewed.join("paris.pem")).unwrap();
    let new_key = std::fs::read(renewed.join("paris.key")).unwrap();

    std::fs::write(&files.cert, &new_cert[..new_cert.len() / 2]).unwrap();
    let half = tls.reload();
    assert!(matches!(half, Err(TlsError::Read { .. })), "{half:?}");
    std::fs::write(&files.cert, &new_cert).unwrap();
    let foreign = tls.reload();
    assert!(
        matches!(foreign, Err(TlsError::KeyMismatch { .. })),
        "{foreign:?}"
    );
    assert_eq!(tls.generation(), first, "refused material came into use");
    assert!(!changes.has_changed().unwrap());

    std::fs::write(&files.key, &new_key).unwrap();
    let second = tls.reload().unwrap();
    assert_eq!(second.number, 2);
    assert_ne!(second.fingerprint, first.fingerprint);
    assert_ne!(second.serial, first.serial);
    assert_eq!(tls.generation(), second);
    assert_eq!(*changes.borrow_and_update(), second);
    // The same files again make no new generation.
    assert_eq!(tls.reload().unwrap(), second);
    assert!(!changes.has_changed().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The errors of both ends of a handshake between a peer API (`server`) and a peer link
/// (with TLS 1.3, the link may finish before the API refuses its certificate).
async fn handshake(
    server: &SiteTls,
    client: &SiteTls,
    server_site: &str,
) -> [Option<std::io::Error>; 2] {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server.current().server.clone());
    let connector = TlsConnector::from(client.current().client.clone());
    let name = server_name(server_site).unwrap();
    let (accepted, connected) = tokio::join!(
        acceptor.accept(server_end),
        connector.connect(name, client_end)
    );
    [accepted.err(), connected.err()]
}

#[tokio::test]
async fn an_expired_peer_certificate_is_refused_naming_its_dates_at_both_ends() {
    let dir = temporary_dir("expired");
    generate(&dir, &["Here".to_owned()], None).unwrap();
    let day = Duration::from_secs(24 * 3600);
    let past = Validity {
        not_before: SystemTime::now() - 10 * day,
        not_after: SystemTime::now() - day,
    };
    let expired_site = ["Gone".to_owned()];
    issue(
        &dir,
        &dir.join(CA_FILE),
        &dir.join(CA_KEY_FILE),
        &expired_site,
        Some(past),
    )
    .unwrap();
    let here = SiteTls::load(&files(&dir, "Here")).unwrap();
    let gone = SiteTls::load(&files(&dir, "Gone")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    // Gone connects to Here: Here's peer API refuses Gone's certificate.
    let [refused, _] = handshake(&here, &gone, "Here").await;
    let refused = refused.expect("Here's peer API accepted an expired certificate");
    let dated = out_of_validity(&refused).unwrap_or_else(|| panic!("{refused}"));
    assert_eq!(dated.state, "expired");
    let unix = |time: SystemTime| {
        time.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    assert_eq!(dated.not_after_unix as u64, unix(past.not_after));
    assert_eq!(dated.not_before_unix as u64, unix(past.not_before));
    assert_eq!(
        certificate_site(&dated.certificate, ["Gone", "Here"].into_iter()),
        Some("Gone")
    );
    let said = dated.to_string();
    assert!(
        said.contains("notAfter") && said.contains("CN=Gone"),
        "{said}"
    );

    // Here connects to Gone: Here's link refuses the certificate Gone's API presents.
    let [_, refused] = handshake(&gone, &here, "Gone").await;
    let refused = refused.expect("Here's link accepted an expired certificate");
    let dated = out_of_validity(&refused).unwrap_or_else(|| panic!("{refused}"));
    assert_eq!(dated.state, "expired");
}
