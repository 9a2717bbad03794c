//! Default scopes of workload cgroups: configured per workload, or registered for a transient
//! child cgroup by `cheops exec`. A connection gets the scope of its own cgroup or else of its
//! nearest ancestor that has one (the kernel programs apply to a cgroup's descendants too).
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Mutex, RwLock},
};

use serde::Deserialize;

/// How deep under a workload cgroup connections' cgroups are looked for.
const MAX_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadScopeError {
    #[error("cgroup {0} is not inside a workload cgroup of this agent")]
    NotInWorkload(PathBuf),
    #[error("cgroup {path} cannot be read: {cause}")]
    Unreadable {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// What `cheops exec` registers through the admin endpoint.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Registration {
    pub cgroup: PathBuf,
    /// `None` to remove the registration.
    pub scope: Option<String>,
}

pub struct WorkloadScopes {
    /// The workload cgroups' directories, where connections' cgroups are looked for.
    roots: Vec<PathBuf>,
    /// Scopes by cgroup id (the cgroup directory's inode number, as the kernel reports it).
    scopes: RwLock<HashMap<u64, dsl::Scope>>,
    /// Where each cgroup id seen was found (`None`: outside every workload).
    located: Mutex<HashMap<u64, Option<PathBuf>>>,
}

fn cgroup_id(path: &Path) -> Result<u64, WorkloadScopeError> {
    std::fs::metadata(path)
        .map(|metadata| metadata.ino())
        .map_err(|cause| WorkloadScopeError::Unreadable {
            path: path.to_owned(),
            cause,
        })
}

impl WorkloadScopes {
    /// `workloads`: each workload cgroup's directory and its configured default scope.
    pub fn new(
        workloads: Vec<(PathBuf, Option<dsl::Scope>)>,
    ) -> Result<WorkloadScopes, WorkloadScopeError> {
        let mut scopes = HashMap::new();
        for (dir, scope) in &workloads {
            if let Some(scope) = scope {
                scopes.insert(cgroup_id(dir)?, scope.clone());
            }
        }
        Ok(WorkloadScopes {
            roots: workloads.into_iter().map(|(dir, _)| dir).collect(),
            scopes: RwLock::new(scopes),
            located: Mutex::new(HashMap::new()),
        })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Gives `cgroup` (inside a workload) a default scope, or takes it away (`None`).
    pub fn register(
        &self,
        cgroup: &Path,
        scope: Option<dsl::Scope>,
    ) -> Result<(), WorkloadScopeError> {
        if !self.roots.iter().any(|root| cgroup.starts_with(root)) {
            return Err(WorkloadScopeError::NotInWorkload(cgroup.to_owned()));
        }
        let id = cgroup_id(cgroup)?;
        let mut scopes = self.scopes.write().unwrap();
        match scope {
            Some(scope) => scopes.insert(id, scope),
            None => scopes.remove(&id),
        };
        Ok(())
    }

    /// The default scope for a connection from cgroup `id`.
    pub fn for_cgroup(&self, id: u64) -> Option<dsl::Scope> {
        let scopes = self.scopes.read().unwrap();
        if let Some(scope) = scopes.get(&id) {
            return Some(scope.clone());
        }
        if scopes.is_empty() {
            return None;
        }
        let path = self.locate(id)?;
        // Only directories inside a workload: inode numbers elsewhere are not cgroup ids.
        path.ancestors()
            .take_while(|dir| self.roots.iter().any(|root| dir.starts_with(root)))
            .find_map(|dir| scopes.get(&cgroup_id(dir).ok()?))
            .cloned()
    }

    fn locate(&self, id: u64) -> Option<PathBuf> {
        let mut located = self.located.lock().unwrap();
        located
            .entry(id)
            .or_insert_with(|| self.roots.iter().find_map(|root| find(root, id, MAX_DEPTH)))
            .clone()
    }
}

/// The directory under `dir` (or `dir` itself) whose cgroup id is `id`.
fn find(dir: &Path, id: u64, depth: usize) -> Option<PathBuf> {
    if cgroup_id(dir).ok()? == id {
        return Some(dir.to_owned());
    }
    if depth == 0 {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|entry| find(&entry.path(), id, depth - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_gets_the_scope_of_its_nearest_registered_ancestor() {
        let root = std::env::temp_dir().join(format!("cheops-ws-test-{}", std::process::id()));
        let child = root.join("exec-1");
        let grandchild = child.join("inner");
        std::fs::create_dir_all(&grandchild).unwrap();
        let scopes = WorkloadScopes::new(vec![(
            root.clone(),
            Some(dsl::parse("{catalog: A}").unwrap()),
        )])
        .unwrap();
        scopes
            .register(&child, Some(dsl::parse("{catalog: B}").unwrap()))
            .unwrap();
        let id = |p: &Path| cgroup_id(p).unwrap();
        let found = |p: &Path| scopes.for_cgroup(id(p)).map(|s| s.to_string());
        assert_eq!(found(&grandchild).as_deref(), Some("{catalog: B}"));
        assert_eq!(found(&root).as_deref(), Some("{catalog: A}"));
        scopes.register(&child, None).unwrap();
        assert_eq!(found(&child).as_deref(), Some("{catalog: A}"));
        assert!(matches!(
            scopes.register(Path::new("/tmp"), None),
            Err(WorkloadScopeError::NotInWorkload(_))
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
