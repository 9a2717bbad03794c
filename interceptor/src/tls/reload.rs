//! This site's TLS material as it is now, and its reload without a restart: on demand (SIGHUP)
//! and when its files change. New connections take the material current when they start;
//! a reload that cannot read good material (a file half written, a key that is not the
//! certificate's) is refused with a log line, and the running material stays.
use std::{
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    material::{build, FileBytes, Generation, Material},
    CertificateValidity, TlsError, TlsFiles,
};

/// The shared TLS state of the agent: the peer API and the peer links read it per connection.
pub struct SiteTls {
    files: TlsFiles,
    current: ArcSwap<Material>,
    /// Held while a reload reads and builds, so that two reloads never race.
    reloading: Mutex<()>,
    changes: watch::Sender<Generation>,
}

/// What identifies a file's version without reading it: a rename or a write changes it.
#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl SiteTls {
    /// Generation 1, from `files`.
    pub fn load(files: &TlsFiles) -> Result<SiteTls, TlsError> {
        let material = build(files, &FileBytes::read(files)?, 1)?;
        Ok(SiteTls {
            files: files.clone(),
            changes: watch::channel(material.generation.clone()).0,
            current: ArcSwap::from_pointee(material),
            reloading: Mutex::new(()),
        })
    }

    /// The material in use now: what a connection starting now takes.
    pub fn current(&self) -> Arc<Material> {
        self.current.load_full()
    }

    pub fn generation(&self) -> Generation {
        self.current.load().generation.clone()
    }

    /// The CA's and the site certificate's validity, of the material in use.
    pub fn certificates(&self) -> Vec<CertificateValidity> {
        self.current.load().certificates.clone()
    }

    /// Each new generation, as it comes into use.
    pub fn changes(&self) -> watch::Receiver<Generation> {
        self.changes.subscribe()
    }

    /// Reads the files again and puts them in use when they differ from the running material
    /// and are good: the generation in use afterwards. Refused material is logged, and the
    /// running material stays.
    pub fn reload(&self) -> Result<Generation, TlsError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let running = self.current.load_full();
        let built = FileBytes::read(&self.files).and_then(|bytes| {
            if bytes.digest() == running.digest {
                return Ok(None);
            }
            build(&self.files, &bytes, running.generation.number + 1).map(Some)
        });
        let material = match built {
            Ok(Some(material)) => material,
            Ok(None) => return Ok(running.generation.clone()),
            Err(err) => {
                let kept = &running.generation;
                warn!(
                    "refused the new TLS material: {err}; keeping generation {} (site certificate serial {}, SHA-256 {})",
                    kept.number, kept.serial, kept.fingerprint
                );
                return Err(err);
            }
        };
        let generation = material.generation.clone();
        let site = &material.certificates[1];
        info!(
            generation = generation.number,
            serial = %generation.serial,
            fingerprint = %generation.fingerprint,
            "TLS material reloaded: site certificate {} ({}); new peer connections use it",
            site.subject,
            site.dates()
        );
        if site.remaining().is_none() || !site.has_begun() {
            warn!(
                "this site's new certificate {} is not valid now ({}): peers will refuse it",
                site.subject,
                site.dates()
            );
        }
        self.current.store(Arc::new(material));
        self.changes.send_replace(generation.clone());
        Ok(generation)
    }

    /// Reloads whenever one of the files changes, looking every `every`.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut seen = tls.stamps();
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let now = tls.stamps();
                if now != seen {
                    seen = now;
                    // A refusal is logged; the next change of the files is tried again.
                    let _ = tls.reload();
                }
            }
        });
    }

    fn stamps(&self) -> [Option<FileStamp>; 3] {
        let stamp = |path: &Path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some(FileStamp {
                device: metadata.dev(),
                inode: metadata.ino(),
                size: metadata.size(),
                modified: (metadata.mtime(), metadata.mtime_nsec()),
                changed: (metadata.ctime(), metadata.ctime_nsec()),
            })
        };
        [
            stamp(&self.files.ca),
            stamp(&self.files.cert),
            stamp(&self.files.key),
        ]
    }
}
