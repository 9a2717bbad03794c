//! OpenStack at every site of a mesh, as the tests and the demo run it: Glance as the `image`
//! service and, with identity, Keystone as `identity`; Glance then runs in the site's workload
//! and checks every token at the `identity` service, through cheops.
use interceptor::config::Service;

use crate::{
    agent::meshed_service,
    glance::{self, image_rule, venv_bin, Auth, GlanceSite},
    gunicorn::Gunicorn,
    keystone::{self, KeystoneSite, ADMIN_PASSWORD},
    mesh::Mesh,
    sites::Site,
};

/// What clients dial for images (the catalog's image endpoint), and where Glance listens.
pub const IMAGE: &str = "198.18.1.30:80";
pub const IMAGE_LOCAL: &str = "127.0.0.1:9292";
/// What clients (and Glance) dial for identity, and where Keystone listens.
pub const IDENTITY: &str = "198.18.1.35:80";
pub const IDENTITY_LOCAL: &str = "127.0.0.1:5000";

/// The services a site meshes: `image`, with Glance's resource rule, and `identity` when
/// Keystone runs.
pub fn services(with_keystone: bool) -> Vec<Service> {
    let mut image = meshed_service(
        "image",
        IMAGE.parse().unwrap(),
        IMAGE_LOCAL.parse().unwrap(),
    );
    image.resources = vec![image_rule()];
    let identity = meshed_service(
        "identity",
        IDENTITY.parse().unwrap(),
        IDENTITY_LOCAL.parse().unwrap(),
    );
    match with_keystone {
        true => vec![image, identity],
        false => vec![image],
    }
}

/// The OpenStack services of every site; dropped, they stop.
pub struct OpenStack {
    pub glances: Vec<Gunicorn>,
    pub keystones: Vec<Gunicorn>,
}

impl OpenStack {
    /// Starts Glance (and, `with_keystone`, Keystone first) at every site of `mesh`, whose
    /// agents mesh `services(with_keystone)`.
    pub fn start(mesh: &Mesh, with_keystone: bool) -> OpenStack {
        let sites: Vec<&str> = mesh.sites.iter().map(|s| s.name.as_str()).collect();
        OpenStack::start_at(mesh, &sites, with_keystone)
    }

    /// `start`, at `names` only.
    pub fn start_at(mesh: &Mesh, names: &[&str], with_keystone: bool) -> OpenStack {
        let at: Vec<&Site> = names.iter().map(|name| mesh.topology.site(name)).collect();
        for site in &at {
            site.netns.add_loopback_address("198.18.1.30/32");
            if with_keystone {
                site.netns.add_loopback_address("198.18.1.35/32");
            }
        }
        let keystones = match with_keystone {
            true => {
                let sites: Vec<KeystoneSite> = at
                    .iter()
                    .map(|site| KeystoneSite {
                        netns: &site.netns,
                        name: &site.name,
                        local: IDENTITY_LOCAL.parse().unwrap(),
                    })
                    .collect();
                keystone::start_each(&sites, IDENTITY.parse().unwrap(), IMAGE.parse().unwrap())
            }
            false => Vec::new(),
        };
        let sites: Vec<GlanceSite> = at
            .iter()
            .map(|site| GlanceSite {
                netns: &site.netns,
                address: IMAGE_LOCAL.parse().unwrap(),
                // Its calls to Keystone go through cheops.
                workload: with_keystone.then(|| &mesh.site(&site.name).workload),
            })
            .collect();
        let auth = match with_keystone {
            true => Auth::Keystone {
                identity: IDENTITY.parse().unwrap(),
            },
            false => Auth::Nobody,
        };
        let glances = glance::start_each(&sites, auth);
        OpenStack { glances, keystones }
    }
}

/// The `openstack` client, logged in as `admin` with its password at the meshed `identity`
/// service, before its own arguments.
pub fn openstack_with_password() -> Vec<String> {
    let program = venv_bin("openstack").to_string_lossy().into_owned();
    let auth_url = format!("http://{IDENTITY}/v3");
    let args = [
        "--os-auth-url",
        &auth_url,
        "--os-identity-api-version",
        "3",
        "--os-username",
        "admin",
        "--os-password",
        ADMIN_PASSWORD,
        "--os-project-name",
        "admin",
        "--os-user-domain-id",
        "default",
        "--os-project-domain-id",
        "default",
    ];
    std::iter::once(program)
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}
