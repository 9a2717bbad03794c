//! The demo's OpenStack part (`--openstack`): Keystone (identity) and Glance (images) at Paris
//! and Nantes, unmodified, driven by the unmodified `openstack` client logged in with a
//! password; images shared, refused and replicated by scope, and a Glance checking a token at
//! the Keystone the scope names.
use std::time::Instant;

use serde_json::Value;

use cheops_tests::{
    mesh::{Answer, Mesh},
    openstack::{openstack_with_password, OpenStack, IMAGE},
};

use super::Step;

/// Where OpenStack runs (Rennes keeps to the catalog).
pub const SITES: [&str; 2] = ["Paris", "Nantes"];

/// Starts Keystone and Glance at `SITES`, saying so.
pub fn start(mesh: &Mesh) -> OpenStack {
    let started = Instant::now();
    println!(
        "── OpenStack: starting Keystone 30 (identity) and Glance 33 (image) at {}",
        SITES.join(" and ")
    );
    println!(
        "   each with its own database and keys; Glance checks every token with keystonemiddleware"
    );
    println!("   at http://198.18.1.35/v3, the meshed identity service: through cheops");
    let openstack = OpenStack::start_at(mesh, &SITES, true);
    let servers: Vec<String> = (openstack.keystones.iter().map(|k| ("Keystone", k)))
        .chain(openstack.glances.iter().map(|g| ("Glance", g)))
        .zip(SITES.iter().cycle())
        .map(|((what, server), site)| format!("{what} at {site} (pid {})", server.pid()))
        .collect();
    println!("   gunicorns: {}", servers.join(", "));
    println!("   ready in {:.1} s\n", started.elapsed().as_secs_f64());
    openstack
}

pub const STEPS: &[Step] = &[
    Step {
        title: "OpenStack, no scope: each site's own images, its own Keystone",
        why: "`openstack` logs in with a password at the identity service; Glance checks the token at the same site.",
        run: |mesh| {
            for site in SITES {
                let name = format!("{}-cirros", site.to_lowercase());
                openstack(mesh, site, None, &["image", "create", "--disk-format", "raw", "--container-format", "bare", &name]);
            }
            openstack(mesh, "Paris", None, &["image", "list"]);
        },
    },
    Step {
        title: "Sharing with identity: {image: Nantes, identity: Paris}",
        why: "From Paris, logged in at Paris: Nantes's Glance gets a Paris token, and cheops sends its token check to Paris's Keystone.",
        run: |mesh| {
            openstack(mesh, "Paris", Some("{image: Nantes, identity: Paris}"), &["image", "list"]);
        },
    },
    Step {
        title: "Without the identity entry: {image: Nantes}",
        why: "Nantes's Glance checks the Paris token at its own Keystone, which never issued it: 401.",
        run: |mesh| {
            openstack(mesh, "Paris", Some("{image: Nantes}"), &["image", "list"]);
        },
    },
    Step {
        title: "The scope on the token: a Paris token used at Nantes",
        why: "`openstack token issue` under {identity: Paris}, then curl at Nantes, bare and with the suffix.",
        run: |mesh| {
            let issued = openstack(mesh, "Nantes", Some("{identity: Paris}"), &["token", "issue"]);
            let Some(token) = issued.as_ref().and_then(|v| v["id"].as_str()) else {
                return;
            };
            let url = format!("http://{IMAGE}/v2/images");
            for (shown, sent) in [
                ("<token>".to_owned(), token.to_owned()),
                ("<token>!SCOPE!{identity: Paris}".to_owned(), format!("{token}!SCOPE!{{identity: Paris}}")),
            ] {
                println!("   $ curl -H 'X-Auth-Token: {shown}' {url}      (at Nantes)");
                let header = format!("X-Auth-Token: {sent}");
                let answer = Answer::from(mesh.run_at("Nantes", true, "curl", &["-sS", "-i", "-m", "30", "-H", &header, &url]));
                match answer.status {
                    // Glance's refusal is a page of HTML: its title says it.
                    401 => println!("   → 401 Unauthorized (Nantes's Glance)"),
                    _ => println!("   → {}", super::outcome(&answer)),
                }
            }
        },
    },
    Step {
        title: "Replication with identity: {image: Paris & Nantes, identity: Paris}",
        why: "An image and its file made at both sites under one ID, each Glance checking the token at Paris; Nantes then shows it, logged in at Nantes, no scope.",
        run: |mesh| {
            let file = std::env::temp_dir().join(format!("cheops-demo-{}.raw", std::process::id()));
            if std::fs::write(&file, vec![0x42u8; 4 << 20]).is_err() {
                println!("   → could not write {}", file.display());
                return;
            }
            let scope = Some("{image: Paris & Nantes, identity: Paris}");
            let created = openstack(mesh, "Paris", scope, &["image", "create", "--disk-format", "raw", "--container-format", "bare", "--file", &file.to_string_lossy(), "replicated"]);
            let _ = std::fs::remove_file(&file);
            if let Some(id) = created.as_ref().and_then(|v| v["id"].as_str()) {
                openstack(mesh, "Nantes", None, &["image", "show", id]);
            }
        },
    },
];

/// Runs `openstack ARGS` at `site` (under `cheops exec --scope` when `scope` is given), logged
/// in with a password, prints the command and what came of it, and gives its JSON.
fn openstack(mesh: &Mesh, site: &str, scope: Option<&str>, args: &[&str]) -> Option<Value> {
    let login = openstack_with_password();
    let mut all: Vec<&str> = login.iter().map(String::as_str).collect();
    all.extend(args);
    all.extend(["-f", "json"]);
    let exec = scope
        .map(|s| format!("cheops exec --scope '{s}' -- "))
        .unwrap_or_default();
    println!(
        "   $ {exec}openstack --os-auth-url http://198.18.1.35/v3 … {}      (at {site})",
        args.join(" ")
    );
    let output = match scope {
        None => mesh.run_at(site, true, all[0], &all[1..]),
        Some(scope) => mesh.run_scoped(site, scope, all[0], &all[1..]),
    };
    if !output.status.success() {
        let error = String::from_utf8_lossy(&output.stderr);
        let last = error
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no message)");
        println!("   → refused: {}", last.trim());
        return None;
    }
    let value: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    println!("   → {}", summary(&value));
    Some(value)
}

/// One line for what `openstack` printed: the images of a list, or the fields that matter.
fn summary(value: &Value) -> String {
    if let Some(images) = value.as_array() {
        let names: Vec<String> = images
            .iter()
            .map(|i| {
                format!(
                    "{} ({})",
                    i["Name"].as_str().unwrap_or("?"),
                    i["ID"].as_str().unwrap_or("?")
                )
            })
            .collect();
        return format!("images: {}", names.join(", "));
    }
    let field = |name: &str| value[name].as_str().map(|v| format!("{name}={v}"));
    let fields: Vec<String> = ["name", "id", "status", "owner", "project_id", "expires"]
        .iter()
        .filter_map(|name| field(name))
        .collect();
    fields.join(", ")
}
