//! Default scopes and policies of workload cgroups: scopes configured per workload, or
//! registered for a transient child cgroup by `cheops exec`; a policy per workload. A connection
//! gets the scope of its own cgroup or else of its nearest ancestor that has one (the kernel
//! programs apply to a cgroup's descendants too), and the policy of its workload. Where a cgroup
//! stands is found once, off the data path, and kept in a bounded table.
use std::{
    collections::{HashMap, VecDeque},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use serde::Deserialize;

use super::policy::PolicyOf;
use crate::config::ScopePolicy;

/// How deep under a workload cgroup connections' cgroups are looked for.
const MAX_DEPTH: usize = 8;
/// The most cgroups whose place is kept: past it, the longest kept is forgotten (and found
/// again if it connects again).
const MAX_LOCATED: usize = 4096;

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

/// A configured workload, as the agent finds it.
pub struct WorkloadCgroup {
    /// Its directory.
    pub dir: PathBuf,
    pub default_scope: Option<dsl::Scope>,
    pub policy: ScopePolicy,
}

/// What a connection's cgroup gives its requests.
#[derive(Default)]
pub struct CgroupDefaults {
    pub scope: Option<dsl::Scope>,
    /// The workload's policy, when it limits anything.
    pub policy: Option<Arc<PolicyOf>>,
}

pub struct WorkloadScopes {
    /// The configured workloads; replaced whole when the configuration changes.
    configured: RwLock<Arc<Configured>>,
    /// Scopes registered by `cheops exec`, by cgroup id (the cgroup directory's inode number,
    /// as the kernel reports it); they win over configured ones.
    registered: RwLock<HashMap<u64, dsl::Scope>>,
    /// The lineage of each cgroup id seen, itself first then its ancestors inside a workload
    /// (`None`: outside every workload).
    located: RwLock<Located>,
}

/// The workloads of one configuration.
struct Configured {
    /// The workload cgroups' directories, where connections' cgroups are looked for.
    roots: Vec<PathBuf>,
    /// Each root's policy, by index; `None` where it allows everything.
    policies: Vec<Option<Arc<PolicyOf>>>,
    /// Their default scopes, by cgroup id.
    scopes: HashMap<u64, dsl::Scope>,
}

impl Configured {
    fn new(workloads: Vec<WorkloadCgroup>) -> Result<Configured, WorkloadScopeError> {
        let mut scopes = HashMap::new();
        for workload in &workloads {
            if let Some(scope) = &workload.default_scope {
                scopes.insert(cgroup_id(&workload.dir)?, scope.clone());
            }
        }
        let policies = workloads
            .iter()
            .map(|w| PolicyOf::limiting(format!("workload {}", w.dir.display()), w.policy.clone()))
            .collect();
        Ok(Configured {
            roots: workloads.into_iter().map(|w| w.dir).collect(),
            policies,
            scopes,
        })
    }
}

/// Where a cgroup stands: the index of its workload, and the cgroup ids of itself and its
/// ancestors inside that workload, nearest first.
struct Place {
    root: usize,
    ids: Box<[u64]>,
}

type Lineage = Option<Arc<Place>>;

/// Lineages of the cgroups seen, the oldest forgotten first past `MAX_LOCATED`.
#[derive(Default)]
struct Located {
    lineages: HashMap<u64, Lineage>,
    order: VecDeque<u64>,
}

impl Located {
    fn insert(&mut self, id: u64, lineage: Lineage) {
        if self.lineages.insert(id, lineage).is_some() {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > MAX_LOCATED {
            if let Some(oldest) = self.order.pop_front() {
                self.lineages.remove(&oldest);
            }
        }
    }
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
    pub fn new(workloads: Vec<WorkloadCgroup>) -> Result<WorkloadScopes, WorkloadScopeError> {
        Ok(WorkloadScopes {
            configured: RwLock::new(Arc::new(Configured::new(workloads)?)),
            registered: RwLock::default(),
            located: RwLock::new(Located::default()),
        })
    }

    /// Takes a changed list of workloads: their default scopes and policies apply to the
    /// requests that start from now on. Scopes registered by `cheops exec` stay.
    pub fn apply(&self, workloads: Vec<WorkloadCgroup>) -> Result<(), WorkloadScopeError> {
        let configured = Arc::new(Configured::new(workloads)?);
        // Places are indexes into the roots: found again under the new ones.
        let mut located = self.located.write().unwrap();
        *self.configured.write().unwrap() = configured;
        *located = Located::default();
        Ok(())
    }

    pub fn roots(&self) -> Vec<PathBuf> {
        self.configured().roots.clone()
    }

    fn configured(&self) -> Arc<Configured> {
        self.configured.read().unwrap().clone()
    }

    /// Gives `cgroup` (inside a workload) a default scope, or takes it away (`None`).
    pub fn register(
        &self,
        cgroup: &Path,
        scope: Option<dsl::Scope>,
    ) -> Result<(), WorkloadScopeError> {
        if !self.roots().iter().any(|root| cgroup.starts_with(root)) {
            return Err(WorkloadScopeError::NotInWorkload(cgroup.to_owned()));
        }
        let id = cgroup_id(cgroup)?;
        let mut scopes = self.registered.write().unwrap();
        match scope {
            Some(scope) => scopes.insert(id, scope),
            None => scopes.remove(&id),
        };
        Ok(())
    }

    /// The default scope and the policy for a connection from cgroup `id`. The first
    /// connection from a cgroup looks for it in the filesystem on the blocking pool; later ones
    /// only read tables.
    pub async fn for_cgroup(&self, id: u64) -> CgroupDefaults {
        let configured = self.configured();
        let no_policies = configured.policies.iter().all(Option::is_none);
        {
            let registered = self.registered.read().unwrap();
            if no_policies {
                if let Some(scope) = registered.get(&id).or(configured.scopes.get(&id)) {
                    return CgroupDefaults {
                        scope: Some(scope.clone()),
                        policy: None,
                    };
                }
                if registered.is_empty() && configured.scopes.is_empty() {
                    return CgroupDefaults::default();
                }
            }
        }
        let known = self.located.read().unwrap().lineages.get(&id).cloned();
        let lineage = match known {
            Some(lineage) => lineage,
            None => {
                let roots = configured.roots.clone();
                // A failed lookup (the runtime shutting down) is not kept.
                let Ok(lineage) = tokio::task::spawn_blocking(move || lineage_of(&roots, id)).await
                else {
                    return CgroupDefaults::default();
                };
                self.located.write().unwrap().insert(id, lineage.clone());
                lineage
            }
        };
        let Some(place) = lineage else {
            return CgroupDefaults::default();
        };
        let registered = self.registered.read().unwrap();
        CgroupDefaults {
            scope: place
                .ids
                .iter()
                .find_map(|dir| registered.get(dir).or(configured.scopes.get(dir)))
                .cloned(),
            policy: configured.policies.get(place.root).cloned().flatten(),
        }
    }
}

/// The cgroup ids of the directory whose id is `id` and of its ancestors inside a workload,
/// nearest first (inode numbers elsewhere are not cgroup ids); `None` outside every workload.
fn lineage_of(roots: &[PathBuf], id: u64) -> Lineage {
    let (root, path) = roots
        .iter()
        .enumerate()
        .find_map(|(index, root)| Some((index, find(root, id, MAX_DEPTH)?)))?;
    let ids = path
        .ancestors()
        .take_while(|dir| roots.iter().any(|root| dir.starts_with(root)))
        .filter_map(|dir| cgroup_id(dir).ok())
        .collect();
    Some(Arc::new(Place { root, ids }))
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

    #[tokio::test]
    async fn a_directory_gets_the_scope_of_its_nearest_registered_ancestor() {
        let root = std::env::temp_dir().join(format!("cheops-ws-test-{}", std::process::id()));
        let child = root.join("exec-1");
        let grandchild = child.join("inner");
        std::fs::create_dir_all(&grandchild).unwrap();
        let policy = ScopePolicy {
            allow_sites: Some(vec!["A".into()]),
            allow: None,
        };
        let scopes = WorkloadScopes::new(vec![WorkloadCgroup {
            dir: root.clone(),
            default_scope: Some(dsl::parse("{catalog: A}").unwrap()),
            policy: policy.clone(),
        }])
        .unwrap();
        scopes
            .register(&child, Some(dsl::parse("{catalog: B}").unwrap()))
            .unwrap();
        let id = |p: &Path| cgroup_id(p).unwrap();
        let found = |p: &Path| {
            let id = id(p);
            let scopes = &scopes;
            async move { scopes.for_cgroup(id).await.scope.map(|s| s.to_string()) }
        };
        assert_eq!(found(&grandchild).await.as_deref(), Some("{catalog: B}"));
        let of_grandchild = scopes.for_cgroup(id(&grandchild)).await.policy;
        assert_eq!(of_grandchild.map(|p| p.policy.clone()), Some(policy));
        assert!(scopes
            .for_cgroup(id(Path::new("/tmp")))
            .await
            .policy
            .is_none());
        assert_eq!(found(&root).await.as_deref(), Some("{catalog: A}"));
        scopes.register(&child, None).unwrap();
        assert_eq!(found(&child).await.as_deref(), Some("{catalog: A}"));
        assert!(matches!(
            scopes.register(Path::new("/tmp"), None),
            Err(WorkloadScopeError::NotInWorkload(_))
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn workloads_applied_live_replace_the_configured_ones_and_keep_registrations() {
        let base = std::env::temp_dir().join(format!("cheops-ws-apply-{}", std::process::id()));
        let (old, new) = (base.join("old"), base.join("new"));
        let child = old.join("exec-1");
        std::fs::create_dir_all(&child).unwrap();
        std::fs::create_dir_all(&new).unwrap();
        let workload = |dir: &Path, scope: &str| WorkloadCgroup {
            dir: dir.to_owned(),
            default_scope: Some(dsl::parse(scope).unwrap()),
            policy: ScopePolicy {
                allow_sites: Some(Vec::new()),
                allow: None,
            },
        };
        let scopes = WorkloadScopes::new(vec![workload(&old, "{catalog: A}")]).unwrap();
        scopes
            .register(&child, Some(dsl::parse("{catalog: B}").unwrap()))
            .unwrap();
        let id = |p: &Path| cgroup_id(p).unwrap();
        assert!(scopes.for_cgroup(id(&old)).await.policy.is_some());
        scopes
            .apply(vec![
                workload(&old, "{catalog: C}"),
                workload(&new, "{catalog: D}"),
            ])
            .unwrap();
        let scope_of = |p: &Path| {
            let id = id(p);
            let scopes = &scopes;
            async move { scopes.for_cgroup(id).await.scope.map(|s| s.to_string()) }
        };
        assert_eq!(scope_of(&old).await.as_deref(), Some("{catalog: C}"));
        assert_eq!(scope_of(&new).await.as_deref(), Some("{catalog: D}"));
        assert_eq!(scope_of(&child).await.as_deref(), Some("{catalog: B}"));
        assert_eq!(scopes.roots(), [old.clone(), new.clone()]);
        scopes.apply(vec![workload(&new, "{catalog: D}")]).unwrap();
        let outside = scopes.for_cgroup(id(&old)).await;
        assert!(outside.policy.is_none() && outside.scope.is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
