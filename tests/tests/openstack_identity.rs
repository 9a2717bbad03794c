//! Keystone at the edge, end to end, as root: two sites (Paris, Nantes), each running cheops, an
//! unmodified Keystone 30 as the `identity` service and an unmodified Glance 33 as `image`,
//! whose keystonemiddleware validates every token at the `identity` service, through cheops.
//! Driven by the unmodified `openstack` client, with password auth at a site's Keystone.
//! The identity collaboration (OpenStackoïd's): a token of Paris's Keystone used at Nantes's
//! Glance under `{image: Nantes, identity: Paris}` is validated at Paris.
use std::{collections::HashMap, process::Output, time::Duration};

use cheops_tests::{
    keystone::SERVICE_TOKEN,
    mesh::{Answer, Mesh, MeshOptions},
    openstack::{self, openstack_with_password, IDENTITY_LOCAL, IMAGE},
    sites::Topology,
};
use interceptor::config::ReplicationSettings;
use serde_json::Value;

const SITES: [&str; 2] = ["Paris", "Nantes"];

struct OpenStack {
    mesh: Mesh,
    // Dropped after the mesh: nothing calls them any more.
    services: openstack::OpenStack,
    files: tempfile::TempDir,
}

fn start() -> OpenStack {
    cheops_tests::require_root();
    let options = MeshOptions {
        services: openstack::services(true),
        replication: ReplicationSettings {
            replica_timeout: Duration::from_secs(20),
            ..ReplicationSettings::default()
        },
        request_timeout: Duration::from_secs(120),
        response_timeout: Duration::from_secs(120),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(Topology::create(&SITES), &HashMap::new(), &options);
    let services = openstack::OpenStack::start(&mesh, true);
    OpenStack {
        mesh,
        services,
        files: tempfile::tempdir().unwrap(),
    }
}

impl OpenStack {
    /// `openstack ARGS` at `site`, logged in with a password at the `identity` service:
    /// from its workload, or under `cheops exec --scope` when `scope` is given.
    fn openstack(&self, site: &str, scope: Option<&str>, args: &[&str]) -> Output {
        let login = openstack_with_password();
        let mut all: Vec<&str> = login.iter().map(String::as_str).collect();
        all.extend(args);
        if matches!(args.get(1), Some(&"list" | &"show" | &"create" | &"issue")) {
            all.extend(["-f", "json"]);
        }
        match scope {
            None => self.mesh.run_at(site, true, all[0], &all[1..]),
            Some(scope) => self.mesh.run_scoped(site, scope, all[0], &all[1..]),
        }
    }

    /// `openstack ARGS -f json` that must succeed: its JSON.
    fn ok(&self, site: &str, scope: Option<&str>, args: &[&str]) -> Value {
        let output = self.openstack(site, scope, args);
        assert!(
            output.status.success(),
            "openstack {args:?} at {site} under {scope:?}: {}\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    /// The image names that `openstack image list` shows at `site` under `scope`.
    fn names(&self, site: &str, scope: Option<&str>) -> Vec<String> {
        let list = self.ok(site, scope, &["image", "list"]);
        let mut names: Vec<String> = list
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {list}"))
            .iter()
            .map(|i| i["Name"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    }

    /// `GET /v2/images` at `site`'s workload through cheops, with `token` as `X-Auth-Token`.
    fn list_with_token(&self, site: &str, token: &str) -> Answer {
        let url = format!("http://{IMAGE}/v2/images");
        let header = format!("X-Auth-Token: {token}");
        let args = ["-sS", "-i", "-m", "30", "-H", &header, &url];
        Answer::from(self.mesh.run_at(site, true, "curl", &args))
    }

    /// Whether `site`'s own Keystone (asked outside the mesh) knows `token`.
    fn issued_at(&self, site: &str, token: &str) -> bool {
        let url = format!("http://{IDENTITY_LOCAL}/v3/auth/tokens");
        let auth = format!("X-Auth-Token: {SERVICE_TOKEN}");
        let subject = format!("X-Subject-Token: {token}");
        let args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "20"];
        let mut all = args.to_vec();
        all.extend(["-H", &auth, "-H", &subject, &url]);
        let output = self.mesh.run_at(site, false, "curl", &all);
        String::from_utf8_lossy(&output.stdout) == "200"
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for (site, keystone) in SITES.iter().zip(&self.services.keystones) {
            let cheops = self.mesh.site(site).agent.log_text();
            let keystone = keystone.log_text();
            let tail = |t: &str| t.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            text += &format!(
                "--- cheops at {site}:\n{}\n--- Keystone at {site} (last lines, newest first):\n{}\n",
                tail(&cheops),
                tail(&keystone)
            );
        }
        text
    }
}

#[test]
fn a_glance_validates_tokens_at_the_keystone_the_scope_names() {
    let os = start();
    let raw = ["--disk-format", "raw", "--container-format", "bare"];
    // No scope: each site on its own, its Glance checking tokens at its own Keystone.
    for site in SITES {
        let name = format!("{}-own", site.to_lowercase());
        let mut args = vec!["image", "create"];
        args.extend(raw);
        args.push(&name);
        os.ok(site, None, &args);
    }
    assert_eq!(os.names("Paris", None), ["paris-own"]);
    assert_eq!(os.names("Nantes", None), ["nantes-own"]);

    // From Paris, with Paris's password: Nantes's images, Nantes's Glance checking the Paris
    // token at Paris.
    let both = Some("{image: Nantes, identity: Paris}");
    assert_eq!(os.names("Paris", both), ["nantes-own"]);
    // Without the identity entry, Nantes checks the Paris token at its own Keystone: refused.
    let refused = os.openstack("Paris", Some("{image: Nantes}"), &["image", "list"]);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && text.contains("401"),
        "a Paris token at Nantes without {{identity: Paris}}: {refused:?}"
    );

    // A token issued by Paris's Keystone (logged in at Nantes under {identity: Paris}) ...
    let issued = os.ok("Nantes", Some("{identity: Paris}"), &["token", "issue"]);
    let token = issued["id"].as_str().expect("a token").to_owned();
    assert!(os.issued_at("Paris", &token) && !os.issued_at("Nantes", &token));
    // ... used at Nantes: refused without the scope ...
    let bare = os.list_with_token("Nantes", &token);
    assert_eq!(bare.status, 401, "{}", bare.raw);
    // ... taken with {identity: Paris} on the token ...
    let scoped = format!("{token}!SCOPE!{{image: Nantes, identity: Paris}}");
    let listed = os.list_with_token("Nantes", &scoped);
    assert_eq!(listed.status, 200, "{}\n{}", listed.raw, os.logs());
    assert!(listed.body.contains("nantes-own"), "{}", listed.raw);
    // ... and remembered for the bare token afterwards, as every token scope is (10 minutes).
    let again = os.list_with_token("Nantes", &token);
    assert_eq!(again.status, 200, "{}", again.raw);

    // Replication under Paris's identity: each site's Glance takes the Paris token.
    let file = os.files.path().join("disk.raw");
    std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
    let mut args = vec!["image", "create"];
    args.extend(raw);
    args.extend(["--file", file.to_str().unwrap(), "replicated"]);
    let scope = Some("{image: Paris & Nantes, identity: Paris}");
    let created = os.ok("Paris", scope, &args);
    let meta = created["id"].as_str().expect("an ID").to_owned();
    for site in SITES {
        let shown = os.ok(site, None, &["image", "show", &meta]);
        assert_eq!(shown["name"], "replicated", "{site}: {shown}");
        assert_eq!(shown["status"], "active", "{site}: {shown}");
    }
    // Without the identity entry, Nantes refuses its part: only Paris's replica is made.
    let scope = Some("{image: Paris & Nantes}");
    let mut args = vec!["image", "create"];
    args.extend(raw);
    args.push("half");
    os.ok("Paris", scope, &args);
    assert!(os.names("Paris", None).contains(&"half".to_owned()));
    assert!(!os.names("Nantes", None).contains(&"half".to_owned()));
}
