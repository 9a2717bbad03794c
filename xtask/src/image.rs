//! cheops as an OCI image, the way a Kubernetes DaemonSet runs it: `interceptor/Containerfile`
//! (FROM scratch) over a root file system holding the `cheops` binary and the shared libraries
//! it links, as `ldd` lists them. Nothing else: the eBPF programs are inside the binary.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

/// The Containerfile, relative to the workspace.
pub const CONTAINERFILE: &str = "interceptor/Containerfile";
/// Where the binary sits in the image (the Containerfile's entry point).
const BINARY_IN_IMAGE: &str = "usr/local/bin/cheops";

/// Builds the image `tag` with `podman build` from `binary`.
pub fn build(workspace: &Path, binary: &Path, tag: &str) -> anyhow::Result<()> {
    let context = tempfile::tempdir().context("creating the image's build context")?;
    let rootfs = context.path().join("rootfs");
    copy_into(&rootfs, binary, Path::new(BINARY_IN_IMAGE))?;
    for library in shared_libraries(binary)? {
        let inside = library.strip_prefix("/").unwrap_or(&library);
        copy_into(&rootfs, &library, inside)?;
    }
    let output = Command::new("podman")
        .args(["build", "--quiet", "--file"])
        .arg(workspace.join(CONTAINERFILE))
        .args(["--tag", tag])
        .arg(context.path())
        .output()
        .context("running podman build (install podman: scripts/setup-toolchain.sh)")?;
    if !output.status.success() {
        bail!(
            "podman build of {tag} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Copies `file` to `inside` the root file system (following symbolic links: the image
/// gets the library itself under the name the loader asks for).
fn copy_into(rootfs: &Path, file: &Path, inside: &Path) -> anyhow::Result<()> {
    let target = rootfs.join(inside);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(file, &target)
        .with_context(|| format!("copying {} into the image", file.display()))?;
    Ok(())
}

/// The shared libraries and the loader that `binary` needs, as absolute paths.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    if !output.status.success() {
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let listed = String::from_utf8_lossy(&output.stdout);
    if let Some(missing) = listed.lines().find(|line| line.contains("not found")) {
        bail!(
            "{} needs a library this machine lacks: {}",
            binary.display(),
            missing.trim()
        );
    }
    Ok(libraries_in(&listed))
}

/// The paths in `ldd`'s output: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and the loader
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file and no path.
fn libraries_in(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_and_the_loader_are_read_from_ldd_and_the_vdso_is_left_out() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            libraries_in(ldd),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }
}
