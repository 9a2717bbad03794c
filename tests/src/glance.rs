//! OpenStack Glance 33, unmodified, as a site's `image` service: each with its own database and
//! file store, run by gunicorn inside the site's namespace (Glance runs only under a WSGI
//! server), without Keystone (the no-auth pipeline, every caller an administrator). Installed
//! by `scripts/setup-toolchain.sh` into its own virtualenv, with the `openstack` and `glance`
//! clients.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use interceptor::resources::{ItemPattern, MetaIdShape, ResourceRule};

use crate::{
    apps::wait_for_listener,
    netns::Netns,
    process::{wait_until, Process},
};

/// The virtualenv that the setup script fills.
pub const VENV: &str = "/opt/cheops-glance";

/// A program of the virtualenv (`openstack`, `glance`, `gunicorn`), checked to be there.
pub fn venv_bin(program: &str) -> PathBuf {
    let path = Path::new(VENV).join("bin").join(program);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-toolchain.sh (it installs Glance and the OpenStack clients)",
        path.display()
    );
    path
}

/// Glance's images as replication sees them: a UUID for every meta-ID (clients check IDs),
/// lists inside `{"images": [...], "next": "/v2/images?marker=..."}`, and the image's file a
/// binary content streamed to every replica.
pub fn image_rule() -> ResourceRule {
    let mut rule = ResourceRule::parse("/v2/images", "/v2/images/{id}", "json:id")
        .and_then(|rule| rule.listed_at("json:images", Some("json:next")))
        .expect("a valid resource rule");
    rule.content = Some(ItemPattern::parse("/v2/images/{id}/file").expect("a valid pattern"));
    rule.meta_id = MetaIdShape::Uuid;
    rule
}

pub struct Glance {
    server: Process,
    dir: tempfile::TempDir,
}

impl Glance {
    /// Starts one Glance in each `(namespace, address)`, all at once (their databases are made
    /// first, in parallel: each takes seconds), and waits until each accepts connections.
    pub fn start_each(sites: &[(&Netns, SocketAddr)]) -> Vec<Glance> {
        let dirs: Vec<tempfile::TempDir> = sites
            .iter()
            .map(|(_, address)| configured(*address))
            .collect();
        let syncs: Vec<_> = dirs
            .iter()
            .map(|dir| {
                Command::new(venv_bin("glance-manage"))
                    .arg("--config-file")
                    .arg(dir.path().join("glance-api.conf"))
                    .arg("db_sync")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("starting glance-manage db_sync")
            })
            .collect();
        for sync in syncs {
            let output = sync.wait_with_output().expect("glance-manage db_sync");
            assert!(output.status.success(), "glance-manage db_sync: {output:?}");
        }
        let glances: Vec<Glance> = sites
            .iter()
            .zip(dirs)
            .map(|((netns, address), dir)| {
                let mut command = netns.command(venv_bin("gunicorn").to_str().unwrap());
                command
                    .env("OS_GLANCE_CONFIG_DIR", dir.path())
                    // Several gunicorns on one machine: no shared control socket.
                    .args(["--no-control-socket", "--workers", "1", "--timeout", "300"])
                    .args(["--bind", &address.to_string()])
                    .arg("glance.wsgi.api:application");
                let log = dir.path().join("gunicorn.log");
                let server = Process::spawn("glance", command, Some(&log));
                Glance { server, dir }
            })
            .collect();
        // gunicorn listens at once, but its worker loads Glance before it answers anything.
        for ((netns, address), glance) in sites.iter().zip(&glances) {
            wait_for_listener(netns, *address);
            let url = format!("http://{address}/healthcheck");
            let ready = wait_until(Duration::from_secs(120), || {
                let mut curl = netns.command("curl");
                curl.args(["-sf", "-m", "5", &url]);
                curl.output().is_ok_and(|o| o.status.success())
            });
            assert!(
                ready,
                "Glance at {address} never answered: {}",
                glance.log_text()
            );
        }
        glances
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gunicorn.log")).unwrap_or_default()
    }
}

/// gunicorn's workers are its children: the whole process group goes.
impl Drop for Glance {
    fn drop(&mut self) {
        let group = self.server.pid() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the group is gunicorn's own (`Process`
        // gives every child a process group of its own).
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// A directory with Glance's configuration for an API at `address`: its database, its file
/// store, the staging and tasks stores, and a policy that makes the no-auth caller an admin.
fn configured(address: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let at = dir.path();
    for store in ["images", "staging", "tasks"] {
        std::fs::create_dir(at.join(store)).expect("a store directory");
    }
    let paste = Path::new(VENV).join("etc/glance/glance-api-paste.ini");
    std::fs::copy(&paste, at.join("glance-api-paste.ini"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", paste.display()));
    std::fs::write(at.join("policy.json"), r#"{"context_is_admin": ""}"#).expect("policy");
    let d = at.display();
    let config = format!(
        "[DEFAULT]\nenabled_backends = fs:file\nworker_self_reference_url = http://{address}\n\
         [database]\nconnection = sqlite:///{d}/glance.sqlite\n\
         [fs]\nfilesystem_store_datadir = {d}/images\n\
         [glance_store]\ndefault_backend = fs\n\
         [os_glance_staging_store]\nfilesystem_store_datadir = {d}/staging\n\
         [os_glance_tasks_store]\nfilesystem_store_datadir = {d}/tasks\n\
         [paste_deploy]\nconfig_file = {d}/glance-api-paste.ini\n\
         [oslo_policy]\npolicy_file = {d}/policy.json\n"
    );
    std::fs::write(at.join("glance-api.conf"), config).expect("glance-api.conf");
    dir
}
