//! The policies in force: the policy directory plus API-managed policies, compiled into one
//! [`Engine`] that is swapped atomically.
//!
//! **How the two sources combine.** A tenant's policies come from exactly one place. A tenant
//! that has a folder in the policy directory (`POLICIES/<tenant>/…`) is managed there
//! (GitOps); the API refuses to change its policies (409) so that a file and an API write can
//! never silently disagree. Every other tenant is managed through the API.
//!
//! A change that does not parse or validate never replaces the set in force: the previous good
//! set keeps deciding, and the errors are reported (logs, `/readyz`, an audit event).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash as _, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use warden_core::NamespacePath;
use warden_policy::{Engine, PolicyError, PolicySource};

/// The optional schema extension at the root of the policy directory.
pub const SCHEMA_EXTENSION_FILE: &str = "schema.cedarschema";

#[derive(Clone, Debug, Default)]
pub struct DirSnapshot {
    pub sources: Vec<PolicySource>,
    pub schema_extension: Option<String>,
    pub fingerprint: u64,
}

impl DirSnapshot {
    pub fn tenants(&self) -> BTreeSet<String> {
        self.sources
            .iter()
            .map(|s| s.namespace.tenant().as_str().to_owned())
            .collect()
    }
}

/// Reads every `*.cedar` file below `dir`. A file's namespace is its folder's path relative to
/// `dir`. Problems are reported together, each with its file.
pub fn read_dir(dir: &Path) -> Result<DirSnapshot, Vec<String>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    walk(dir, dir, &mut files, &mut errors);
    files.sort();
    let mut snap = DirSnapshot {
        fingerprint: fingerprint(dir),
        ..Default::default()
    };
    for rel in files {
        let path = dir.join(&rel);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: cannot read: {e}", rel.display()));
                continue;
            }
        };
        let rel_str = rel.to_string_lossy().replace('\\', "/");
        if rel_str == SCHEMA_EXTENSION_FILE {
            snap.schema_extension = Some(text);
            continue;
        }
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            errors.push(format!(
                "{rel_str}: policy files must sit in a namespace folder, e.g. <tenant>/{rel_str}"
            ));
            continue;
        };
        match NamespacePath::parse(&parent.to_string_lossy().replace('\\', "/")) {
            Ok(namespace) => snap.sources.push(PolicySource {
                namespace,
                origin: rel_str,
                text,
            }),
            Err(e) => errors.push(format!("{rel_str}: folder is not a valid namespace: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(snap)
    } else {
        Err(errors)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(format!("{}: cannot list: {e}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        // Editors' swap files and hidden folders (.git in a GitOps checkout) are not policies.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out, errors);
        } else if (path.extension().is_some_and(|e| e == "cedar") || name == SCHEMA_EXTENSION_FILE)
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_path_buf());
        }
    }
}

/// Cheap change detector: names, sizes and modification times of the relevant files.
pub fn fingerprint(dir: &Path) -> u64 {
    let mut files = Vec::new();
    walk(dir, dir, &mut files, &mut Vec::new());
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        if let Ok(m) = std::fs::metadata(dir.join(&f)) {
            m.len().hash(&mut h);
            m.modified().ok().hash(&mut h);
        }
    }
    h.finish()
}

/// A stable digest of a set of sources, to name what is in force.
pub fn content_hash(sources: &[PolicySource], schema_extension: Option<&str>) -> String {
    let mut h = Sha256::new();
    let mut sorted: Vec<&PolicySource> = sources.iter().collect();
    sorted.sort_by(|a, b| a.origin.cmp(&b.origin));
    for s in sorted {
        h.update(s.origin.as_bytes());
        h.update([0]);
        h.update(s.text.as_bytes());
        h.update([0]);
    }
    if let Some(x) = schema_extension {
        h.update(x.as_bytes());
    }
    hex::encode(h.finalize())
}

#[derive(Default)]
struct Inputs {
    dir: DirSnapshot,
    /// API-managed texts by namespace.
    api: BTreeMap<String, PolicySource>,
    last_error: Option<Vec<String>>,
}

/// The engine in force and what it was built from.
pub struct PolicyRuntime {
    pub dir: Option<PathBuf>,
    engine: ArcSwap<Engine>,
    inputs: Mutex<Inputs>,
    hash: ArcSwap<String>,
}

pub enum Reload {
    Unchanged,
    Applied {
        files: usize,
        policies: usize,
        hash: String,
        tenants: BTreeSet<String>,
    },
    Failed {
        errors: Vec<String>,
        tenants: BTreeSet<String>,
    },
}

impl PolicyRuntime {
    pub fn new(dir: Option<PathBuf>) -> PolicyRuntime {
        PolicyRuntime {
            dir,
            engine: ArcSwap::from_pointee(Engine::empty()),
            inputs: Mutex::new(Inputs::default()),
            hash: ArcSwap::from_pointee(String::new()),
        }
    }

    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    pub fn content_hash(&self) -> String {
        self.hash.load().as_ref().clone()
    }

    /// Errors of the last refused change, if the set in force is older than the directory.
    pub fn last_error(&self) -> Option<Vec<String>> {
        self.inputs
            .lock()
            .expect("policy inputs")
            .last_error
            .clone()
    }

    /// True when the tenant's policies are managed in the policy directory.
    pub fn dir_manages(&self, tenant: &str) -> bool {
        self.inputs
            .lock()
            .expect("policy inputs")
            .dir
            .tenants()
            .contains(tenant)
    }

    fn all_sources(dir: &DirSnapshot, api: &BTreeMap<String, PolicySource>) -> Vec<PolicySource> {
        let dir_tenants = dir.tenants();
        let mut all = dir.sources.clone();
        all.extend(
            api.values()
                .filter(|s| !dir_tenants.contains(s.namespace.tenant().as_str()))
                .cloned(),
        );
        all
    }

    fn compile(sources: &[PolicySource], ext: Option<&str>) -> Result<Engine, Vec<String>> {
        Engine::build(sources.to_vec(), ext)
            .map_err(|errs| errs.iter().map(PolicyError::to_string).collect())
    }

    /// Sets the API-managed sources (at start, from the store) and rebuilds.
    pub fn set_api_sources(&self, api: Vec<PolicySource>) -> Result<(), Vec<String>> {
        let mut inputs = self.inputs.lock().expect("policy inputs");
        let api = api
            .into_iter()
            .map(|s| (s.namespace.as_str().to_owned(), s))
            .collect();
        self.install_api(&mut inputs, api)
    }

    /// Compiles the directory plus `api` and, only if that succeeds, puts it in force.
    fn install_api(
        &self,
        inputs: &mut Inputs,
        api: BTreeMap<String, PolicySource>,
    ) -> Result<(), Vec<String>> {
        let ext = inputs.dir.schema_extension.as_deref();
        let all = Self::all_sources(&inputs.dir, &api);
        let engine = Self::compile(&all, ext)?;
        self.hash.store(Arc::new(content_hash(&all, ext)));
        self.engine.store(Arc::new(engine));
        inputs.api = api;
        Ok(())
    }

    /// Compiles the set that would result from replacing (or with `None`, removing) one
    /// namespace's API-managed text, without putting it in force.
    pub fn try_api_change(
        &self,
        namespace: &NamespacePath,
        text: Option<&str>,
    ) -> Result<(), Vec<String>> {
        let inputs = self.inputs.lock().expect("policy inputs");
        let mut api = inputs.api.clone();
        apply_change(&mut api, namespace, text);
        Self::compile(
            &Self::all_sources(&inputs.dir, &api),
            inputs.dir.schema_extension.as_deref(),
        )
        .map(|_| ())
    }

    /// Puts an API change in force (after it was stored).
    pub fn apply_api_change(
        &self,
        namespace: &NamespacePath,
        text: Option<&str>,
    ) -> Result<(), Vec<String>> {
        let mut inputs = self.inputs.lock().expect("policy inputs");
        let mut api = inputs.api.clone();
        apply_change(&mut api, namespace, text);
        self.install_api(&mut inputs, api)
    }

    /// Re-reads the policy directory; with `force` even when nothing seems to have changed.
    pub fn reload_dir(&self, force: bool) -> Reload {
        let Some(dir) = &self.dir else {
            return Reload::Unchanged;
        };
        let fp = fingerprint(dir);
        {
            let inputs = self.inputs.lock().expect("policy inputs");
            if !force && fp == inputs.dir.fingerprint && inputs.last_error.is_none() {
                return Reload::Unchanged;
            }
            if !force && inputs.last_error.is_some() && fp == inputs.dir.fingerprint {
                return Reload::Unchanged;
            }
        }
        let snap = match read_dir(dir) {
            Ok(s) => s,
            Err(errors) => return self.refuse(fp, errors),
        };
        let mut inputs = self.inputs.lock().expect("policy inputs");
        let all = Self::all_sources(&snap, &inputs.api);
        match Self::compile(&all, snap.schema_extension.as_deref()) {
            Ok(engine) => {
                let hash = content_hash(&all, snap.schema_extension.as_deref());
                let policies = engine.policy_count();
                let files = snap.sources.len();
                let tenants = snap.tenants();
                self.hash.store(Arc::new(hash.clone()));
                self.engine.store(Arc::new(engine));
                inputs.dir = snap;
                inputs.last_error = None;
                Reload::Applied {
                    files,
                    policies,
                    hash,
                    tenants,
                }
            }
            Err(errors) => {
                drop(inputs);
                self.refuse(fp, errors)
            }
        }
    }

    fn refuse(&self, fp: u64, errors: Vec<String>) -> Reload {
        let mut inputs = self.inputs.lock().expect("policy inputs");
        // Remember the fingerprint so the same bad state is reported once, not every poll.
        inputs.dir.fingerprint = fp;
        inputs.last_error = Some(errors.clone());
        let mut tenants = inputs.dir.tenants();
        if let Some(dir) = &self.dir
            && let Ok(rd) = std::fs::read_dir(dir)
        {
            tenants.extend(
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        tenants.retain(|t| warden_core::TenantId::parse(t).is_ok());
        Reload::Failed { errors, tenants }
    }
}

fn apply_change(
    api: &mut BTreeMap<String, PolicySource>,
    namespace: &NamespacePath,
    text: Option<&str>,
) {
    match text {
        Some(t) => {
            api.insert(
                namespace.as_str().to_owned(),
                PolicySource {
                    namespace: namespace.clone(),
                    origin: format!("api:{namespace}"),
                    text: t.to_owned(),
                },
            );
        }
        None => {
            api.remove(namespace.as_str());
        }
    }
}
