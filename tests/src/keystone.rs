//! OpenStack Keystone 30, unmodified, as a site's `identity` service: each with its own sqlite
//! database and its own fernet and credential keys (a token of one site means nothing to
//! another), run by gunicorn inside the site's namespace. Installed by
//! `scripts/setup-toolchain.sh` into a virtualenv of its own.
use std::{net::SocketAddr, path::Path, process::Command};

use serde_json::Value;

use crate::{
    gunicorn::{venv_program, Gunicorn},
    netns::Netns,
};

/// The virtualenv that the setup script fills.
pub const VENV: &str = "/opt/cheops-keystone";
/// The password of each site's `admin` user (in project `admin`).
pub const ADMIN_PASSWORD: &str = "cheops-admin";
/// What every site's Keystone takes as `[DEFAULT] admin_token`, and what each site's Glance
/// validates tokens with: a credential that every site's Keystone accepts, so that a token
/// validation sent to another site is allowed there (docs/openstack.md says why).
pub const SERVICE_TOKEN: &str = "cheops-shared-service-token";

/// One site's Keystone: where it runs, and what its catalog says.
pub struct KeystoneSite<'a> {
    pub netns: &'a Netns,
    pub name: &'a str,
    /// Where Keystone listens (the `identity` service's local address).
    pub local: SocketAddr,
}

/// Starts a Keystone at each site, all at once, with an `admin` user and project
/// (`keystone-manage bootstrap`) and a catalog naming the meshed addresses that clients
/// dial: `identity` (its own API) and `image`. Waits until each answers.
pub fn start_each(
    sites: &[KeystoneSite<'_>],
    identity: SocketAddr,
    image: SocketAddr,
) -> Vec<Gunicorn> {
    let dirs: Vec<tempfile::TempDir> = sites.iter().map(|_| configured(identity)).collect();
    // The schema is the same everywhere: made once (seconds), copied.
    let first = dirs.first().expect("at least one site");
    manage(first.path(), &["db_sync"]);
    for dir in &dirs[1..] {
        std::fs::copy(
            first.path().join("keystone.sqlite"),
            dir.path().join("keystone.sqlite"),
        )
        .expect("copying Keystone's database");
    }
    std::thread::scope(|threads| {
        for (site, dir) in sites.iter().zip(&dirs) {
            threads.spawn(move || {
                let root = ["--keystone-user", "root", "--keystone-group", "root"];
                for setup in ["fernet_setup", "credential_setup"] {
                    let mut args = vec![setup];
                    args.extend(root);
                    manage(dir.path(), &args);
                }
                let url = format!("http://{identity}/v3");
                manage(
                    dir.path(),
                    &[
                        "bootstrap",
                        "--bootstrap-password",
                        ADMIN_PASSWORD,
                        "--bootstrap-public-url",
                        &url,
                        "--bootstrap-internal-url",
                        &url,
                        "--bootstrap-region-id",
                        site.name,
                    ],
                );
            });
        }
    });
    let keystones: Vec<Gunicorn> = sites
        .iter()
        .zip(dirs)
        .map(|(site, dir)| {
            let gunicorn = venv_program(VENV, "gunicorn");
            // Keystone reads its own options from the command line: gunicorn gets all of
            // its own from gunicorn.conf.py in the working directory, and no arguments.
            let settings = format!(
                "bind = \"{}\"\nworkers = 1\ntimeout = 120\n\
                     # Several gunicorns on one machine: no shared control socket.\n\
                     control_socket_disable = True\n\
                     wsgi_app = \"keystone.wsgi.api:application\"\n",
                site.local
            );
            std::fs::write(dir.path().join("gunicorn.conf.py"), settings)
                .expect("gunicorn.conf.py");
            let mut command = site.netns.command(gunicorn.to_str().unwrap());
            command
                .current_dir(dir.path())
                .env("OS_KEYSTONE_CONFIG_DIR", dir.path());
            Gunicorn::spawn("Keystone", command, dir)
        })
        .collect();
    for (site, keystone) in sites.iter().zip(&keystones) {
        keystone.wait_until_answering(site.netns, site.local, "/v3");
        add_image_endpoint(keystone, site, image);
    }
    keystones
}

/// Puts the image service at `image` into the site's catalog, where the `openstack` client
/// finds Glance.
fn add_image_endpoint(keystone: &Gunicorn, site: &KeystoneSite<'_>, image: SocketAddr) {
    let service = admin_call(
        keystone,
        site,
        "/v3/services",
        r#"{"service": {"type": "image", "name": "glance"}}"#,
    );
    let id = service["service"]["id"].as_str().expect("a service ID");
    let endpoint = serde_json::json!({"endpoint": {
        "service_id": id, "interface": "public", "region_id": site.name,
        "url": format!("http://{image}"),
    }});
    admin_call(keystone, site, "/v3/endpoints", &endpoint.to_string());
}

/// A POST of `body` to `path` of a site's Keystone, outside the mesh, as the service token.
fn admin_call(keystone: &Gunicorn, site: &KeystoneSite<'_>, path: &str, body: &str) -> Value {
    let url = format!("http://{}{path}", site.local);
    let token = format!("X-Auth-Token: {SERVICE_TOKEN}");
    let mut curl = site.netns.command("curl");
    curl.args(["-sS", "-m", "20", "-H", &token]).args([
        "-H",
        "Content-Type: application/json",
        "--data",
        body,
        &url,
    ]);
    let output = curl.output().expect("running curl");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "POST {path} at {}'s Keystone ({e}): {output:?}\n{}",
            site.name,
            keystone.log_text()
        )
    })
}

/// `keystone-manage ARGS` on the Keystone configured in `dir`, failing loudly.
fn manage(dir: &Path, args: &[&str]) {
    let output = Command::new(venv_program(VENV, "keystone-manage"))
        .arg("--config-file")
        .arg(dir.join("keystone.conf"))
        .args(args)
        .output()
        .expect("running keystone-manage");
    assert!(
        output.status.success(),
        "keystone-manage {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A directory with Keystone's configuration: its database, fernet tokens, credential keys,
/// the shared service token, and the public address its documents name (`identity`).
fn configured(identity: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let d = dir.path().display();
    for keys in ["fernet-keys", "credential-keys"] {
        std::fs::create_dir(dir.path().join(keys)).expect("a key directory");
    }
    let config = format!(
        "[DEFAULT]\nadmin_token = {SERVICE_TOKEN}\npublic_endpoint = http://{identity}/\n\
         [database]\nconnection = sqlite:///{d}/keystone.sqlite\n\
         [token]\nprovider = fernet\n\
         [fernet_tokens]\nkey_repository = {d}/fernet-keys\n\
         [fernet_receipts]\nkey_repository = {d}/fernet-keys\n\
         [credential]\nkey_repository = {d}/credential-keys\n\
         # bcrypt's fewest rounds: a password check takes milliseconds, not a quarter second.\n\
         [identity]\npassword_hash_rounds = 4\n"
    );
    std::fs::write(dir.path().join("keystone.conf"), config).expect("keystone.conf");
    dir
}
