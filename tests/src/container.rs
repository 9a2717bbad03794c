//! Containers from a real runtime, podman (Debian's), for the tests: an image built on the
//! machine (no registry is reachable), a network of the test's own, and containers whose
//! processes sit in a workload cgroup. Each removes itself when dropped, also when a test
//! panics. What podman 4.3 needs on these machines: `--runtime runc` (crun refuses the hybrid
//! cgroup layout), explicit `nofile`/`nproc` limits, and the cgroupfs manager.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{
    cgroup::{cgroup2_mount, Cgroup},
    cheops_bin,
    mesh::Answer,
    netns::{command_in, run, Netns},
    process::wait_until,
    unique_name, workspace_dir,
};

/// The applets the busybox image links to `/bin/busybox`.
const BUSYBOX_APPLETS: &[&str] = &["sh", "wget", "timeout", "sleep", "cat", "ls", "ip"];

/// `podman` with the options this machine needs, run inside the network namespace `netns` when
/// given.
pub fn podman(netns: Option<&str>) -> Command {
    let mut command = match netns {
        Some(netns) => command_in(netns, "podman"),
        None => Command::new("podman"),
    };
    command.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    command
}

/// What every `podman run` needs here: podman asks for open-file and process limits above
/// this machine's hard limits (1048576 open files, against 20000), which runc is not allowed
/// to raise ("error setting rlimit type 7: operation not permitted").
const RUN_LIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// An image in podman's local storage, removed when dropped.
pub struct Image {
    name: String,
}

impl Image {
    /// An image whose root file system holds Debian's `busybox-static` as `/bin/busybox`, with
    /// its applets (`sh`, `wget`, `sleep`...) as symbolic links, imported from a tarball.
    pub fn busybox() -> Image {
        crate::require_root();
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: install Debian's busybox-static (scripts/setup-toolchain.sh does)"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("creating the image's /bin");
        std::fs::copy(busybox, bin.join("busybox")).expect("copying busybox");
        for applet in BUSYBOX_APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("linking an applet");
        }
        let tarball = dir.path().join("rootfs.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(dir.path().join("rootfs"))
            .arg("-cf")
            .arg(&tarball)
            .arg("."));
        let image = Image::named(&unique_name("bbox"));
        run(podman(None).arg("import").arg(&tarball).arg(&image.name));
        image
    }

    /// cheops itself as an OCI image (`interceptor/Containerfile`, as `cargo xtask image`
    /// builds it), from the binary under test.
    pub fn cheops() -> Image {
        crate::require_root();
        let image = Image::named(&unique_name("chp"));
        if let Err(err) = xtask::image::build(&workspace_dir(), &cheops_bin(), image.name()) {
            panic!("building the cheops image: {err:#}");
        }
        image
    }

    /// A test-unique name; the image is removed when dropped, even if making it failed.
    fn named(prefix: &str) -> Image {
        Image {
            name: format!("localhost/cheops-test-{prefix}:latest"),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(None)
            .args(["rmi", "--force", "--ignore", &self.name])
            .output();
    }
}

/// A podman bridge network on a /24 of 198.19.0.0/16 of its own, removed when dropped. Its
/// bridge lives in the network namespace podman runs in (`ContainerNetwork::Own`).
pub struct Network {
    name: String,
}

impl Network {
    pub fn create() -> Network {
        crate::require_root();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!("cheops-test-{}", unique_name("net"));
        // Another test process may hold the /24 derived first: podman refuses a subnet that
        // an existing network uses, so try the next ones.
        let mut refusals = Vec::new();
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let third = (std::process::id().wrapping_mul(31).wrapping_add(n * 7)) % 254 + 1;
            let subnet = format!("198.19.{third}.0/24");
            let output = podman(None)
                .args(["network", "create", "--subnet", &subnet, &name])
                .output()
                .expect("running podman network create");
            if output.status.success() {
                return Network { name };
            }
            refusals.push(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        panic!("podman network create refused every subnet tried: {refusals:#?}");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = podman(None)
            .args(["network", "rm", "--force", &self.name])
            .output();
    }
}

/// Where a container's network namespace comes from.
pub enum ContainerNetwork<'a> {
    /// A namespace of its own on `network`, whose bridge sits in the namespace of `node`.
    Own {
        network: &'a Network,
        node: &'a Netns,
    },
    /// The namespace of the node itself (a site's), as `--network host` is on a real node.
    Node(&'a Netns),
}

impl ContainerNetwork<'_> {
    /// `podman run`'s option.
    pub fn option(&self) -> String {
        match self {
            ContainerNetwork::Own { network, .. } => format!("--network={}", network.name),
            ContainerNetwork::Node(node) => format!("--network=ns:/run/netns/{}", node.name()),
        }
    }

    /// Where podman runs: in the node's namespace for a network of its own, so that its bridge
    /// and firewall rules live there and never on the host; else where the test runs (runc
    /// refuses podman's default sysctls in a container that shares podman's own namespace).
    fn podman_netns(&self) -> Option<&str> {
        match self {
            ContainerNetwork::Own { node, .. } => Some(node.name()),
            ContainerNetwork::Node(_) => None,
        }
    }
}

/// A container, removed (with the cgroups podman made for it) when dropped.
pub struct Container {
    name: String,
    /// The network namespace podman ran in, where it also removes the container.
    netns: Option<String>,
    /// `--cgroup-parent`, relative to the cgroup mounts.
    cgroup_parent: Option<PathBuf>,
}

impl Container {
    /// `podman run --detach` of `image` with `options`, running `args`; podman itself runs in
    /// `netns` when given, and puts the container under `cgroup_parent` when given.
    pub fn start(
        netns: Option<&str>,
        options: &[String],
        cgroup_parent: Option<&Cgroup>,
        image: &Image,
        args: &[&str],
    ) -> Container {
        crate::require_root();
        // Known before podman runs: a run that fails half-way leaves cgroups to remove too.
        let container = Container {
            name: format!("cheops-test-{}", unique_name("ctr")),
            netns: netns.map(str::to_owned),
            cgroup_parent: cgroup_parent.map(|cgroup| cgroup.relative_path().to_owned()),
        };
        let mut command = container.podman();
        command
            .args(["run", "--detach", "--name", &container.name])
            .args(RUN_LIMITS)
            .args(options);
        if let Some(parent) = &container.cgroup_parent {
            command.arg(format!(
                "--cgroup-parent={}",
                Path::new("/").join(parent).display()
            ));
        }
        run(command.arg(image.name()).args(args));
        container
    }

    /// A container of the busybox image that sleeps, in `network`, its processes under
    /// `workload`: podman makes the cgroup v2 directory `<workload>/libpod-<id>`, a
    /// descendant, which the workload's programs cover. Here `--cgroup-parent` places it
    /// exactly, so no process has to be moved by hand as a cgroup manager would.
    pub fn sleeping_in(image: &Image, network: ContainerNetwork, workload: &Cgroup) -> Container {
        let container = Container::start(
            network.podman_netns(),
            &[network.option()],
            Some(workload),
            image,
            &["/bin/sleep", "3600"],
        );
        let cgroup = container.cgroup();
        assert!(
            cgroup.starts_with(workload.path()),
            "podman put container {} in {}, not under the workload cgroup {}",
            container.name,
            cgroup.display(),
            workload.path().display()
        );
        container
    }

    fn podman(&self) -> Command {
        podman(self.netns.as_deref())
    }

    /// Kills the container's processes (SIGKILL), as a crash or `podman kill` would.
    pub fn kill(&mut self) {
        run(self.podman().args(["kill", &self.name]));
    }

    /// What the container wrote to its standard output and error.
    pub fn logs(&self) -> String {
        let output = self.podman().args(["logs", &self.name]).output();
        output.map_or_else(
            |e| format!("podman logs failed: {e}"),
            |o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            },
        )
    }

    /// Runs `args` inside the container (`podman exec`, which joins its namespaces and cgroup).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.podman()
            .args(["exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("podman exec in {}: {e}", self.name))
    }

    /// busybox `wget -S -O- url` inside the container, with extra `headers`, for 10 s at most.
    pub fn wget(&self, url: &str, headers: &[&str]) -> Answer {
        // Debian's busybox-static 1.35 crashes on `wget -T`: the time limit is `timeout`'s.
        let mut args = vec!["timeout", "10", "wget", "-S", "-O-"];
        for header in headers {
            args.extend(["--header", header]);
        }
        args.push(url);
        wget_answer(self.exec(&args))
    }

    /// The process id of the container's first process, on the host.
    pub fn pid(&self) -> u32 {
        let output = run(self
            .podman()
            .args(["inspect", "--format", "{{.State.Pid}}", &self.name]));
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("podman inspect gives the container's pid")
    }

    /// The container's cgroup v2 directory, read from its first process.
    pub fn cgroup(&self) -> PathBuf {
        let pid = self.pid();
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .expect("reading the container's cgroups");
        let path = cgroups
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .expect("the container's process has a cgroup v2 path");
        cgroup2_mount().join(path.trim_start_matches('/'))
    }

    /// The inode of the network namespace of the container's processes.
    pub fn network_namespace(&self) -> u64 {
        std::fs::metadata(format!("/proc/{}/ns/net", self.pid()))
            .expect("reading the container's network namespace")
            .ino()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self
            .podman()
            .args(["rm", "--force", "--time", "0", &self.name])
            .output();
        // On a hybrid host podman also makes the parent in every cgroup v1 hierarchy, plus a
        // `conmon` cgroup there, and leaves both behind: remove them (the cgroup v2 side,
        // `libpod-<id>`, goes with `podman rm`). conmon exits just after `podman rm` returns,
        // so its cgroup empties a little later.
        let Some(cgroup_parent) = &self.cgroup_parent else {
            return;
        };
        let parents: Vec<PathBuf> = cgroup_v1_mounts()
            .iter()
            .map(|hierarchy| hierarchy.join(cgroup_parent))
            .collect();
        let removed = wait_until(Duration::from_secs(3), || {
            parents.iter().all(|parent| {
                let _ = std::fs::remove_dir(parent.join("conmon"));
                // Another container of the test may still use it: its own drop removes it.
                let _ = std::fs::remove_dir(parent);
                !parent.join("conmon").exists()
            })
        });
        if !removed {
            eprintln!(
                "warning: podman's cgroups under {} stay behind",
                cgroup_parent.display()
            );
        }
    }
}

/// Where each cgroup v1 hierarchy is mounted (none on a pure cgroup v2 host).
fn cgroup_v1_mounts() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup")).then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

/// busybox wget's output as an answer: `-S` writes the response head to stderr, each line
/// indented by two spaces; `-O-` writes the body to stdout.
fn wget_answer(output: Output) -> Answer {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let body = String::from_utf8_lossy(&output.stdout).into_owned();
    let head = stderr.lines().filter_map(|line| line.strip_prefix("  "));
    Answer::from_parts(head, body.clone(), format!("{stderr}{body}"))
}
