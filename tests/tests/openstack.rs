//! OpenStack Glance at the edge, end to end, as root: three sites (Paris, Nantes, Rennes), each
//! running cheops and an unmodified Glance 33 (own database and file store) as the `image`
//! service, driven by the unmodified `openstack` and `glance` clients from each site's workload
//! cgroup. The truth is each site's Glance, asked directly (outside the mesh).
use std::{collections::HashMap, process::Output, time::Duration};

use cheops_tests::{
    cheops_bin,
    glance::venv_bin,
    mesh::{Answer, Mesh, MeshOptions},
    openstack::{self, IMAGE, IMAGE_LOCAL},
    process::wait_until,
    sites::Topology,
};
use interceptor::{config::ReplicationSettings, replication::records::ReplicaState};
use serde_json::Value;

const SITES: [&str; 3] = ["Paris", "Nantes", "Rennes"];
const BOTH: &str = "{image: Paris & Nantes}";

struct OpenStack {
    mesh: Mesh,
    // Dropped after the mesh: nothing calls them any more.
    _glances: openstack::OpenStack,
    files: tempfile::TempDir,
}

fn start() -> OpenStack {
    cheops_tests::require_root();
    let options = MeshOptions {
        services: openstack::services(false),
        replication: ReplicationSettings {
            replica_timeout: Duration::from_secs(5),
            replay_every: Duration::from_millis(500),
            leader_wait: Duration::from_secs(20),
            ..ReplicationSettings::default()
        },
        // A big upload's answer comes after its whole body (CHEOPS_BIG_IMAGE_MIB=1024 on a busy
        // machine: minutes).
        request_timeout: Duration::from_secs(600),
        response_timeout: Duration::from_secs(600),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(Topology::create(&SITES), &HashMap::new(), &options);
    let glances = openstack::OpenStack::start(&mesh, false);
    OpenStack {
        mesh,
        _glances: glances,
        files: tempfile::tempdir().unwrap(),
    }
}

impl OpenStack {
    /// `openstack image create --file FILE NAME` (a raw image) at `site` under `scope`.
    fn create_with_file(&self, site: &str, scope: &str, file: &str, name: &str) -> Value {
        let format = ["--disk-format", "raw", "--container-format", "bare"];
        let mut args = vec!["image", "create"];
        args.extend(format);
        args.extend(["--file", file, name]);
        self.openstack(site, Some(scope), &args)
    }

    /// `openstack ARGS -f json` at `site` through cheops: from its workload, or under
    /// `cheops exec --scope` when `scope` is given.
    fn openstack(&self, site: &str, scope: Option<&str>, args: &[&str]) -> Value {
        let endpoint = format!("http://{IMAGE}");
        let output = self.client(site, scope, "openstack", &endpoint, args);
        self.json(site, "openstack", args, &output)
    }

    /// `method` on `path` of `site`'s own Glance (outside the mesh) with a JSON `body`.
    fn direct(&self, site: &str, method: &str, path: &str, body: &str) -> Value {
        let url = format!("http://{IMAGE_LOCAL}{path}");
        let content = "Content-Type: application/json";
        let args = [
            "-sS", "-m", "20", "-X", method, "-H", content, "--data", body, &url,
        ];
        let output = self.mesh.run_at(site, false, "curl", &args);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{method} {path} at {site}'s Glance ({e}): {output:?}"))
    }

    /// `method` on `path` of the image API at `site`'s workload, through cheops.
    fn meshed(&self, site: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
        let url = format!("http://{IMAGE}{path}");
        let mut args = vec!["-sS", "-i", "-m", "20", "-X", method];
        for header in headers {
            args.extend(["-H", header]);
        }
        if !body.is_empty() {
            args.extend(["--data", body]);
        }
        args.push(&url);
        Answer::from(self.mesh.run_at(site, true, "curl", &args))
    }

    fn client(
        &self,
        site: &str,
        scope: Option<&str>,
        program: &str,
        endpoint: &str,
        args: &[&str],
    ) -> Output {
        let program = venv_bin(program);
        let mut all: Vec<&str> = match program.ends_with("openstack") {
            true => vec!["--os-auth-type", "none", "--os-endpoint", endpoint],
            false => vec!["--os-image-url", endpoint],
        };
        all.extend(args);
        // Only the commands that print something take a format.
        let prints = matches!(args.get(1), Some(&"list" | &"show" | &"create"));
        if program.ends_with("openstack") && prints {
            all.extend(["-f", "json"]);
        }
        match scope {
            None => self
                .mesh
                .run_at(site, true, program.to_str().unwrap(), &all),
            Some(scope) => self
                .mesh
                .run_scoped(site, scope, program.to_str().unwrap(), &all),
        }
    }

    fn json(&self, site: &str, what: &str, args: &[&str], output: &Output) -> Value {
        assert!(
            output.status.success(),
            "{what} {args:?} at {site}: {}\n{}\n--- cheops at {site}:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.mesh.site(site).agent.log_text()
        );
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    /// The image named `name` at `site`'s own Glance (its API, outside the mesh), if any.
    fn held(&self, site: &str, name: &str) -> Option<Value> {
        let url = format!("http://{IMAGE_LOCAL}/v2/images?name={name}");
        let output = self
            .mesh
            .run_at(site, false, "curl", &["-sS", "-m", "10", &url]);
        let listed: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{site}'s Glance answered no list ({e}): {output:?}"));
        let images = listed["images"].as_array()?;
        assert!(images.len() <= 1, "{site} holds several {name}: {listed}");
        images.first().cloned()
    }

    /// A file of `size` bytes, its content depending on `seed`.
    fn file(&self, name: &str, size: usize, seed: u8) -> String {
        use std::io::Write;
        let path = self.files.path().join(name);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut written = 0;
        let mut block: Vec<u8> = (0..65536u32)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect();
        while written < size {
            let n = block.len().min(size - written);
            out.write_all(&block[..n]).unwrap();
            written += n;
            block[written % 251] ^= seed;
        }
        out.flush().unwrap();
        path.to_string_lossy().into_owned()
    }
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| i["Name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

fn ids_by_name(list: &Value) -> HashMap<String, String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["Name"].as_str().unwrap().to_owned(),
                i["ID"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A create request's body for a raw image named `name`.
fn image(name: &str) -> String {
    format!(r#"{{"name": "{name}", "disk_format": "raw", "container_format": "bare"}}"#)
}

const JSON: &str = "Content-Type: application/json";
const PATCH: &str = "Content-Type: application/openstack-images-v2.1-json-patch";

fn is_uuid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}

#[test]
fn glance_images_are_shared_and_replicated_with_the_openstack_and_glance_clients() {
    let os = start();
    let paris_own = os.direct("Paris", "POST", "/v2/images", &image("paris-own"));
    os.direct("Nantes", "POST", "/v2/images", &image("nantes-own"));

    // No scope: local only, list and show.
    assert_eq!(
        names(&os.openstack("Paris", None, &["image", "list"])),
        ["paris-own"]
    );
    let id = paris_own["id"].as_str().unwrap();
    assert_eq!(
        os.openstack("Paris", None, &["image", "show", id])["name"],
        "paris-own"
    );

    // Sharing: cheops exec, the token suffix (literal and percent-encoded) and X-Scope.
    let nantes = Some("{image: Nantes}");
    assert_eq!(
        names(&os.openstack("Paris", nantes, &["image", "list"])),
        ["nantes-own"]
    );
    for header in [
        "X-Auth-Token: x!SCOPE!{image: Nantes}",
        "X-Auth-Token: x%21SCOPE%21%7Bimage%3A%20Nantes%7D",
        "X-Scope: {image: Nantes}",
    ] {
        let listed = os.meshed("Paris", "GET", "/v2/images", &[header], "");
        assert_eq!(listed.status, 200, "{header}: {}", listed.raw);
        assert!(
            listed.body.contains("nantes-own") && !listed.body.contains("paris-own"),
            "{header}: {}",
            listed.raw
        );
    }
    // glanceclient sends the token as it was given, percent-encoding it on the way.
    let glance = os.client(
        "Paris",
        None,
        "glance",
        &format!("http://{IMAGE}"),
        &["--os-auth-token", "x!SCOPE!{image: Nantes}", "image-list"],
    );
    let text = String::from_utf8_lossy(&glance.stdout);
    assert!(
        glance.status.success() && text.contains("nantes-own") && !text.contains("paris-own"),
        "{glance:?}"
    );

    // Replication: `image create --file` under {image: Paris & Nantes}, by both clients.
    let file = os.file("replicated.raw", 3 * 1024 * 1024 + 17, 7);
    let created = os.create_with_file("Paris", BOTH, &file, "rep-openstack");
    let meta = created["id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&meta), "{created}");
    let glance = os.client(
        "Nantes",
        Some(BOTH),
        "glance",
        &format!("http://{IMAGE}"),
        &[
            "--os-auth-token",
            "x",
            "image-create",
            "--name",
            "rep-glance",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--file",
            &file,
        ],
    );
    assert!(
        glance.status.success(),
        "{glance:?}\n{}",
        os.mesh.site("Nantes").agent.log_text()
    );
    let mut checksums = Vec::new();
    for site in ["Paris", "Nantes"] {
        for name in ["rep-openstack", "rep-glance"] {
            let held = os
                .held(site, name)
                .unwrap_or_else(|| panic!("{site} holds no {name}"));
            assert_eq!(held["status"], "active", "{site}: {held}");
            assert_ne!(held["id"], meta.as_str(), "a local ID is not the meta-ID");
            checksums.push(held["checksum"].clone());
        }
        // Shown under the meta-ID, by show and list, at each site, without scope.
        assert_eq!(
            os.openstack(site, None, &["image", "show", &meta])["id"],
            meta.as_str()
        );
        let listed = ids_by_name(&os.openstack(site, None, &["image", "list"]));
        assert_eq!(listed["rep-openstack"], meta, "{site}: {listed:?}");
        assert!(is_uuid(&listed["rep-glance"]), "{listed:?}");
    }
    assert!(checksums.windows(2).all(|w| w[0] == w[1]), "{checksums:?}");
    assert!(os.held("Rennes", "rep-openstack").is_none());
    // A replicated list shows each replicated image once.
    let both = names(&os.openstack("Rennes", Some(BOTH), &["image", "list"]));
    assert_eq!(
        both,
        ["nantes-own", "paris-own", "rep-glance", "rep-openstack"]
    );

    // Every involved site holds the full mapping, in words.
    for site in ["Paris", "Nantes"] {
        let view = os.mesh.site(site).agent.replicas();
        let replicant = view
            .replicants
            .iter()
            .find(|r| r.meta_id.as_str() == meta)
            .unwrap();
        assert_eq!(replicant.replicas.len(), 2, "{site}: {replicant:?}");
        for replica in &replicant.replicas {
            assert_eq!(replica.state, ReplicaState::Ok, "{site}: {replicant:?}");
            assert!(replica.local_id.is_some(), "{site}: {replicant:?}");
        }
        let text = os
            .mesh
            .run_at(site, false, cheops_bin().to_str().unwrap(), &["replicas"]);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains(&meta) && text.contains("Nantes=") && text.contains("(ok)"),
            "{text}"
        );
    }

    // Update and delete by meta-ID without scope, from a site that does not lead.
    os.openstack(
        "Nantes",
        None,
        &["image", "set", "--property", "color=blue", &meta],
    );
    for site in ["Paris", "Nantes"] {
        assert_eq!(
            os.held(site, "rep-openstack").unwrap()["color"],
            "blue",
            "{site}"
        );
    }
    let scope = format!("X-Scope: {BOTH}");
    let doomed = os.meshed(
        "Paris",
        "POST",
        "/v2/images",
        &[&scope, JSON],
        &image("rep-doomed"),
    );
    assert_eq!(doomed.status, 201, "{}", doomed.raw);
    let doomed: Value = serde_json::from_str(&doomed.body).unwrap();
    let doomed = doomed["id"].as_str().unwrap().to_owned();
    assert!(os.held("Nantes", "rep-doomed").is_some());

    // Nantes cut off during an update and a delete (of images Paris leads): it catches up
    // after the heal.
    os.mesh.topology.cut("Nantes");
    let red = r#"[{"op": "add", "path": "/color", "value": "red"}]"#;
    let set = os.meshed(
        "Paris",
        "PATCH",
        &format!("/v2/images/{meta}"),
        &[PATCH],
        red,
    );
    assert_eq!(set.status, 200, "{}", set.raw);
    let gone = os.meshed("Paris", "DELETE", &format!("/v2/images/{doomed}"), &[], "");
    assert_eq!(gone.status, 204, "{}", gone.raw);
    assert!(os.held("Paris", "rep-doomed").is_none());
    assert_eq!(os.held("Nantes", "rep-openstack").unwrap()["color"], "blue");
    assert!(os.held("Nantes", "rep-doomed").is_some());
    os.mesh.topology.heal("Nantes");
    let caught_up = wait_until(Duration::from_secs(30), || {
        os.held("Nantes", "rep-openstack").unwrap()["color"] == "red"
            && os.held("Nantes", "rep-doomed").is_none()
    });
    assert!(caught_up, "{}", os.mesh.site("Paris").agent.log_text());

    // The image the glance client made, led by Nantes, deleted from Paris by its meta-ID.
    let rep_glance =
        ids_by_name(&os.openstack("Paris", None, &["image", "list"]))["rep-glance"].clone();
    os.openstack("Paris", None, &["image", "delete", &rep_glance]);
    for site in ["Paris", "Nantes"] {
        assert!(os.held(site, "rep-glance").is_none(), "{site}");
    }

    // A create refused everywhere: the application's own answer, and no replicant anywhere.
    let before: Vec<usize> = SITES
        .iter()
        .map(|s| os.mesh.site(s).agent.replicas().replicants.len())
        .collect();
    let refused = os.meshed(
        "Paris",
        "POST",
        "/v2/images",
        &[&scope, JSON],
        r#"{"name": 5}"#,
    );
    assert_eq!(refused.status, 400, "{}", refused.raw);
    assert_eq!(refused.header("x-cheops-meta-id"), None, "{}", refused.raw);
    let after: Vec<usize> = SITES
        .iter()
        .map(|s| os.mesh.site(s).agent.replicas().replicants.len())
        .collect();
    assert_eq!(before, after);

    // Delete by meta-ID reaches every replica.
    os.openstack("Nantes", None, &["image", "delete", &meta]);
    for site in ["Paris", "Nantes"] {
        assert!(os.held(site, "rep-openstack").is_none(), "{site}");
    }

    // A big image into three sites at once: the agent's memory stays flat.
    let mib: usize = std::env::var("CHEOPS_BIG_IMAGE_MIB")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(200);
    let big = os.file("big.raw", mib << 20, 11);
    let agent = os.mesh.site("Paris").agent.process.pid();
    let (rss_before, peak_before) = memory_kib(agent);
    let all = "{image: Paris & Nantes & Rennes}";
    let created = os.create_with_file("Paris", all, &big, "big");
    let (rss_after, peak_after) = memory_kib(agent);
    eprintln!(
        "agent at Paris, a {mib} MiB image into 3 sites: VmRSS {rss_before} KiB before, {rss_after} KiB after; \
         VmHWM {peak_before} KiB before, {peak_after} KiB after"
    );
    assert!(is_uuid(created["id"].as_str().unwrap()), "{created}");
    let sums: Vec<Value> = SITES
        .iter()
        .map(|site| {
            let held = os
                .held(site, "big")
                .unwrap_or_else(|| panic!("{site} holds no big image"));
            assert_eq!(held["status"], "active", "{site}: {held}");
            assert_eq!(held["size"], mib << 20, "{site}: {held}");
            held["checksum"].clone()
        })
        .collect();
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
    let grown_mib = peak_after.saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 64,
        "the agent's memory grew by {grown_mib} MiB for a {mib} MiB upload"
    );
}

/// A process's resident memory and its peak so far, in KiB (`VmRSS`, `VmHWM`).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}
