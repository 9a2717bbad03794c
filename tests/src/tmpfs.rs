//! A small tmpfs mounted by a test on a folder of its own, unmounted when dropped (also when
//! the test panics): a file system that fills up on demand.
use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

use crate::{netns::run, require_root};

pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `kib` KiB.
    pub fn mount(kib: u64) -> Tmpfs {
        require_root();
        let dir = tempfile::tempdir().expect("a folder to mount a tmpfs on");
        run(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "cheops-test"])
            .arg(dir.path()));
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the file system is full; returns it, to free the space by
    /// removing it.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = File::create(&path).expect("creating the filler file");
        let block = vec![0xa5u8; 4096];
        loop {
            if file.write_all(&block).is_err() || file.sync_all().is_err() {
                return path;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "could not unmount the tmpfs at {}",
                self.dir.path().display()
            );
        }
    }
}
