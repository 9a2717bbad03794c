//! OpenStack Glance 33, unmodified, as a site's `image` service: each with its own database and
//! file store, run by gunicorn inside the site's namespace (Glance runs only under a WSGI
//! server), either without Keystone (the no-auth pipeline, every caller an administrator) or
//! checking every token with keystonemiddleware against the `identity` service, through
//! cheops. Installed by `scripts/setup-toolchain.sh` into its own virtualenv, with the
//! `openstack` and `glance` clients.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use interceptor::resources::{ItemPattern, MetaIdShape, ResourceRule};

use crate::{
    cgroup::Cgroup,
    gunicorn::{venv_program, Gunicorn},
    keystone::SERVICE_TOKEN,
    netns::Netns,
};

/// The virtualenv that the setup script fills.
pub const VENV: &str = "/opt/cheops-glance";

/// A program of the virtualenv (`openstack`, `glance`, `gunicorn`), checked to be there.
pub fn venv_bin(program: &str) -> PathBuf {
    venv_program(VENV, program)
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

/// Who Glance lets in.
#[derive(Clone, Copy)]
pub enum Auth {
    /// Everyone, as an administrator (the no-auth pipeline).
    Nobody,
    /// The holders of a token that keystonemiddleware validates at `identity` (the meshed
    /// address of the site's Keystone): the validation call goes through cheops, which routes
    /// it by the scope of the token it names.
    Keystone { identity: SocketAddr },
}

/// Where one Glance runs.
pub struct GlanceSite<'a> {
    pub netns: &'a Netns,
    pub address: SocketAddr,
    /// The workload cgroup it runs in, whose calls cheops intercepts (Glance's own calls to
    /// Keystone); none: outside the mesh.
    pub workload: Option<&'a Cgroup>,
}

/// Starts one Glance at each site, all at once (their databases are made first, in parallel:
/// each takes seconds), and waits until each answers.
pub fn start_each(sites: &[GlanceSite<'_>], auth: Auth) -> Vec<Gunicorn> {
    let dirs: Vec<tempfile::TempDir> = sites
        .iter()
        .map(|site| configured(site.address, auth))
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
    let glances: Vec<Gunicorn> = sites
        .iter()
        .zip(dirs)
        .map(|(site, dir)| {
            let mut command = site.netns.command(venv_bin("gunicorn").to_str().unwrap());
            if let Some(workload) = site.workload {
                workload.enter(&mut command);
            }
            command
                .env("OS_GLANCE_CONFIG_DIR", dir.path())
                // Several gunicorns on one machine: no shared control socket.
                .args(["--no-control-socket", "--workers", "1", "--timeout", "300"])
                .args(["--bind", &site.address.to_string()])
                .arg("glance.wsgi.api:application");
            Gunicorn::spawn("Glance", command, dir)
        })
        .collect();
    for (site, glance) in sites.iter().zip(&glances) {
        glance.wait_until_answering(site.netns, site.address, "/healthcheck");
    }
    glances
}

/// A directory with Glance's configuration for an API at `address`: its database, its file
/// store, the staging and tasks stores, and either a policy that makes the no-auth caller an
/// admin or keystonemiddleware's settings.
fn configured(address: SocketAddr, auth: Auth) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let at = dir.path();
    for store in ["images", "staging", "tasks"] {
        std::fs::create_dir(at.join(store)).expect("a store directory");
    }
    let paste = Path::new(VENV).join("etc/glance/glance-api-paste.ini");
    std::fs::copy(&paste, at.join("glance-api-paste.ini"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", paste.display()));
    let d = at.display();
    // The paste pipeline's flavor, and the sections that go with it.
    let (flavor, auth) = match auth {
        Auth::Nobody => {
            std::fs::write(at.join("policy.json"), r#"{"context_is_admin": ""}"#).expect("policy");
            (
                "",
                format!("[oslo_policy]\npolicy_file = {d}/policy.json\n"),
            )
        }
        // Validation with a token that every site's Keystone accepts (`admin_token`), so that
        // a validation routed to another site is allowed there; no cache, so each request's
        // own scope decides where its token is checked.
        Auth::Keystone { identity } => (
            "flavor = keystone\n",
            format!(
                "[keystone_authtoken]\nauth_type = admin_token\nendpoint = http://{identity}/v3\n\
                 token = {SERVICE_TOKEN}\nwww_authenticate_uri = http://{identity}/v3\n\
                 token_cache_time = -1\n"
            ),
        ),
    };
    let config = format!(
        "[DEFAULT]\nenabled_backends = fs:file\nworker_self_reference_url = http://{address}\n\
         [database]\nconnection = sqlite:///{d}/glance.sqlite\n\
         [fs]\nfilesystem_store_datadir = {d}/images\n\
         [glance_store]\ndefault_backend = fs\n\
         [os_glance_staging_store]\nfilesystem_store_datadir = {d}/staging\n\
         [os_glance_tasks_store]\nfilesystem_store_datadir = {d}/tasks\n\
         [paste_deploy]\nconfig_file = {d}/glance-api-paste.ini\n{flavor}{auth}"
    );
    std::fs::write(at.join("glance-api.conf"), config).expect("glance-api.conf");
    dir
}
