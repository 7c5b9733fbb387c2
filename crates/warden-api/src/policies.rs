//! The policies in force: the policy directory plus API-managed bundles, compiled into one
//! [`Engine`] that is swapped atomically, with each tenant's bundle mode and shadow bundle.
//!
//! **How the two sources combine.** A tenant's bundle comes from exactly one place. A tenant
//! that has a folder in the policy directory (`POLICIES/<tenant>/`, even an empty one) is
//! managed there (GitOps): every change of its files that loads becomes a new version with
//! author `directory`, and the API refuses to change its bundle (409) so that a file and an
//! API write can never silently disagree. Every other tenant is managed through the API.
//!
//! A change that does not parse or validate never replaces the set in force: the previous good
//! set keeps deciding, and the errors are reported (logs, `/readyz`, an audit event).
//!
//! **Modes.** A bundle in `warn` mode decides as if enforced, then lets the action through
//! and reports what it would have decided as warnings; a bundle in `off` mode is not
//! evaluated at all (no policies: every request of the tenant is denied). A **shadow**
//! bundle is evaluated beside the one in force on live traffic; only the one in force acts.
//! Without modes or shadows nothing but one emptiness check is added to a decision.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use warden_core::{Decision, DecisionRequest, NamespacePath, Obligation, Outcome, PolicyRef};
use warden_policy::bundle::FileKind;
use warden_policy::testing::TEST_FILE_SUFFIX;
use warden_policy::{Bundle, BundleMode, Engine, PolicyError, PolicySource};

/// The optional schema extension at the root of the policy directory.
pub const SCHEMA_EXTENSION_FILE: &str = "schema.cedarschema";

#[derive(Clone, Debug, Default)]
pub struct DirSnapshot {
    pub sources: Vec<PolicySource>,
    /// Policy test files (`*.test.yaml`), by path relative to the directory.
    pub tests: BTreeMap<String, String>,
    pub schema_extension: Option<String>,
    /// Top-level folders that name a tenant: these tenants are directory-managed.
    pub tenant_folders: BTreeSet<String>,
    pub fingerprint: u64,
}

impl DirSnapshot {
    pub fn tenants(&self) -> BTreeSet<String> {
        let mut t = self.tenant_folders.clone();
        t.extend(
            self.sources
                .iter()
                .map(|s| s.namespace.tenant().as_str().to_owned()),
        );
        t
    }

    /// The directory's files of one tenant, as a bundle.
    pub fn bundle(&self, tenant: &str) -> Bundle {
        let mut files: BTreeMap<String, String> = self
            .sources
            .iter()
            .filter(|s| s.namespace.tenant().as_str() == tenant)
            .map(|s| (s.origin.clone(), s.text.clone()))
            .collect();
        let prefix = format!("{tenant}/");
        files.extend(
            self.tests
                .iter()
                .filter(|(p, _)| p.starts_with(&prefix))
                .map(|(p, t)| (p.clone(), t.clone())),
        );
        Bundle::new(files)
    }
}

/// Reads every `*.cedar` and `*.test.yaml` file below `dir`. A file's namespace is its
/// folder's path relative to `dir`. Problems are reported together, each with its file.
pub fn read_dir(dir: &Path) -> Result<DirSnapshot, Vec<String>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    walk(dir, dir, &mut files, &mut errors);
    files.sort();
    let mut snap = DirSnapshot {
        fingerprint: fingerprint(dir),
        tenant_folders: tenant_folders(dir),
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
            Ok(_) if rel_str.ends_with(TEST_FILE_SUFFIX) => {
                snap.tests.insert(rel_str, text);
            }
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

fn tenant_folders(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|t| !t.starts_with('.') && warden_core::TenantId::parse(t).is_ok())
        .collect()
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
        } else if (FileKind::of(&name.to_string_lossy()).is_some() || name == SCHEMA_EXTENSION_FILE)
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_path_buf());
        }
    }
}

/// Cheap change detector: names, sizes and modification times of the relevant files, and
/// the tenant folders (an empty new folder changes who manages a tenant).
pub fn fingerprint(dir: &Path) -> u64 {
    let mut files = Vec::new();
    walk(dir, dir, &mut files, &mut Vec::new());
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tenant_folders(dir).hash(&mut h);
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

/// An API-managed tenant's bundle in force.
#[derive(Clone, Debug)]
pub struct ApiBundle {
    pub bundle: Bundle,
    pub mode: BundleMode,
    pub version: i64,
}

/// A candidate bundle evaluated beside the one in force.
pub struct Shadow {
    /// The candidate's policies only (the tenant's), compiled with the directory's schema
    /// extension.
    pub engine: Engine,
    pub bundle: Bundle,
    pub sha256: String,
    pub author: String,
    pub message: Option<String>,
    /// The version in force when the shadow was started.
    pub based_on: i64,
    pub since: chrono::DateTime<chrono::Utc>,
}

/// What decisions look at besides the engine: tenants in `warn` mode and shadow bundles.
/// Both maps are empty for most deployments, and then cost one check per decision.
#[derive(Default)]
struct Overlay {
    warn: BTreeSet<String>,
    shadows: HashMap<String, Arc<Shadow>>,
}

/// How the shadow bundle decided a request the bundle in force decided differently.
#[derive(Clone, Debug)]
pub struct Disagreement {
    /// The shadow bundle's content hash.
    pub shadow_sha256: String,
    /// The shadow bundle's decision.
    pub shadow: Decision,
}

impl Disagreement {
    /// The policies to which the disagreement is counted: those that determined the shadow
    /// decision, or `(none)` when nothing in the shadow bundle matched (its default deny).
    pub fn policies(&self) -> Vec<String> {
        if self.shadow.reasons.is_empty() {
            vec!["(none)".into()]
        } else {
            self.shadow.reasons.iter().map(|r| r.id.clone()).collect()
        }
    }
}

#[derive(Default)]
struct Inputs {
    dir: DirSnapshot,
    /// API-managed bundles by tenant.
    api: BTreeMap<String, ApiBundle>,
    last_error: Option<Vec<String>>,
}

/// The engine in force and what it was built from.
pub struct PolicyRuntime {
    pub dir: Option<PathBuf>,
    engine: ArcSwap<Engine>,
    overlay: ArcSwap<Overlay>,
    inputs: Mutex<Inputs>,
    hash: ArcSwap<String>,
    /// Held across validate → store → put in force of an API change, so that changes are
    /// put in force in the order they were stored.
    pub changes: tokio::sync::Mutex<()>,
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
            overlay: ArcSwap::from_pointee(Overlay::default()),
            inputs: Mutex::new(Inputs::default()),
            hash: ArcSwap::from_pointee(String::new()),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Decides with the bundle in force, in the tenant's bundle mode; and, when the tenant
    /// has a shadow bundle whose decision differs, how the shadow decided.
    pub fn decide(&self, req: &DecisionRequest) -> (Decision, Option<Disagreement>) {
        self.decide_with(&self.engine.load(), req)
    }

    /// [`PolicyRuntime::decide`] with a given engine (one loaded by the caller, e.g. to
    /// explain with the same one).
    pub fn decide_with(
        &self,
        engine: &Engine,
        req: &DecisionRequest,
    ) -> (Decision, Option<Disagreement>) {
        let d = engine.decide(req);
        let overlay = self.overlay.load();
        if overlay.warn.is_empty() && overlay.shadows.is_empty() {
            return (d, None);
        }
        let tenant = req.tenant.as_str();
        let d = if overlay.warn.contains(tenant) {
            warned(d, tenant)
        } else {
            d
        };
        let disagreement = overlay.shadows.get(tenant).and_then(|s| {
            let shadow = s.engine.decide(req);
            (shadow.outcome != d.outcome).then(|| Disagreement {
                shadow_sha256: s.sha256.clone(),
                shadow,
            })
        });
        (d, disagreement)
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

    /// The directory-managed tenants and their bundles as last loaded.
    pub fn dir_bundles(&self) -> BTreeMap<String, Bundle> {
        let inputs = self.inputs.lock().expect("policy inputs");
        inputs
            .dir
            .tenants()
            .into_iter()
            .map(|t| {
                let b = inputs.dir.bundle(&t);
                (t, b)
            })
            .collect()
    }

    /// The API-managed bundle in force for a tenant.
    pub fn api_bundle(&self, tenant: &str) -> Option<ApiBundle> {
        self.inputs
            .lock()
            .expect("policy inputs")
            .api
            .get(tenant)
            .cloned()
    }

    pub fn shadow(&self, tenant: &str) -> Option<Arc<Shadow>> {
        self.overlay.load().shadows.get(tenant).cloned()
    }

    fn all_sources(dir: &DirSnapshot, api: &BTreeMap<String, ApiBundle>) -> Vec<PolicySource> {
        let dir_tenants = dir.tenants();
        let mut all = dir.sources.clone();
        for (tenant, b) in api {
            if !dir_tenants.contains(tenant) && b.mode != BundleMode::Off {
                all.extend(b.bundle.sources());
            }
        }
        all
    }

    fn compile(sources: &[PolicySource], ext: Option<&str>) -> Result<Engine, Vec<String>> {
        Engine::build(sources.to_vec(), ext)
            .map_err(|errs| errs.iter().map(PolicyError::to_string).collect())
    }

    /// Compiles one tenant's bundle on its own (with the directory's schema extension), to
    /// validate it and run its tests, without putting anything in force. A tenant's
    /// policies never interact with another's (policy ids are per tenant, requests carry one
    /// tenant), so what compiles alone compiles with the rest.
    pub fn compile_bundle(&self, tenant: &str, bundle: &Bundle) -> Result<Engine, Vec<String>> {
        bundle
            .check_paths(tenant)
            .map_err(|e| e.iter().map(PolicyError::to_string).collect::<Vec<_>>())?;
        let ext = self
            .inputs
            .lock()
            .expect("policy inputs")
            .dir
            .schema_extension
            .clone();
        Self::compile(&bundle.sources(), ext.as_deref())
    }

    /// Sets the API-managed bundles (at start, from the store) and rebuilds.
    pub fn set_api_bundles(&self, api: BTreeMap<String, ApiBundle>) -> Result<(), Vec<String>> {
        let mut inputs = self.inputs.lock().expect("policy inputs");
        self.install(&mut inputs, api)
    }

    /// Puts a tenant's API-managed bundle in force (after it was stored).
    pub fn apply_api_bundle(&self, tenant: &str, bundle: ApiBundle) -> Result<(), Vec<String>> {
        let mut inputs = self.inputs.lock().expect("policy inputs");
        let mut api = inputs.api.clone();
        api.insert(tenant.to_owned(), bundle);
        self.install(&mut inputs, api)
    }

    /// Compiles the directory plus `api` and, only if that succeeds, puts it in force.
    fn install(
        &self,
        inputs: &mut Inputs,
        api: BTreeMap<String, ApiBundle>,
    ) -> Result<(), Vec<String>> {
        let ext = inputs.dir.schema_extension.as_deref();
        let all = Self::all_sources(&inputs.dir, &api);
        let engine = Self::compile(&all, ext)?;
        self.hash.store(Arc::new(content_hash(&all, ext)));
        self.engine.store(Arc::new(engine));
        inputs.api = api;
        self.refresh_overlay(inputs, None);
        Ok(())
    }

    /// Rebuilds the overlay from the bundles' modes, keeping the shadows (or changing one).
    fn refresh_overlay(&self, inputs: &Inputs, shadow: Option<(&str, Option<Arc<Shadow>>)>) {
        let dir_tenants = inputs.dir.tenants();
        let warn = inputs
            .api
            .iter()
            .filter(|(t, b)| b.mode == BundleMode::Warn && !dir_tenants.contains(*t))
            .map(|(t, _)| t.clone())
            .collect();
        let mut shadows = self.overlay.load().shadows.clone();
        if let Some((tenant, s)) = shadow {
            match s {
                Some(s) => shadows.insert(tenant.to_owned(), s),
                None => shadows.remove(tenant),
            };
        }
        self.overlay.store(Arc::new(Overlay { warn, shadows }));
    }

    /// Starts (or with `None`, stops) evaluating a shadow bundle for a tenant.
    pub fn set_shadow(&self, tenant: &str, shadow: Option<Shadow>) -> Option<Arc<Shadow>> {
        let inputs = self.inputs.lock().expect("policy inputs");
        let previous = self.shadow(tenant);
        self.refresh_overlay(&inputs, Some((tenant, shadow.map(Arc::new))));
        previous
    }

    /// Re-reads the policy directory; with `force` even when nothing seems to have changed.
    pub fn reload_dir(&self, force: bool) -> Reload {
        let Some(dir) = &self.dir else {
            return Reload::Unchanged;
        };
        let fp = fingerprint(dir);
        {
            let inputs = self.inputs.lock().expect("policy inputs");
            if !force && fp == inputs.dir.fingerprint {
                return Reload::Unchanged;
            }
        }
        let snap = match read_dir(dir) {
            Ok(s) => s,
            Err(errors) => return self.refuse(fp, errors),
        };
        // The tests of each tenant must parse as well; they are run by `warden policy
        // test` in the checkout's pipeline, not here.
        let test_errors: Vec<String> = snap
            .tenants()
            .iter()
            .filter_map(|t| snap.bundle(t).tests().err())
            .flatten()
            .map(|e| e.to_string())
            .collect();
        if !test_errors.is_empty() {
            return self.refuse(fp, test_errors);
        }
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
                self.refresh_overlay(&inputs, None);
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
        if let Some(dir) = &self.dir {
            tenants.extend(tenant_folders(dir));
        }
        Reload::Failed { errors, tenants }
    }
}

/// A decision of a bundle in `warn` mode: what it would have done becomes warnings, and
/// the action goes through.
fn warned(mut d: Decision, tenant: &str) -> Decision {
    if d.outcome == Outcome::Allow {
        return d;
    }
    let would = d.outcome;
    let mut reasons = std::mem::take(&mut d.reasons);
    if reasons.is_empty() {
        // Nothing permitted the request: the default deny has no policy to name.
        reasons.push(PolicyRef {
            id: "(no permit)".into(),
            namespace: tenant.to_owned(),
            origin: "bundle".into(),
            line: 0,
            reason: Some("no policy of the bundle permits this request".into()),
        });
    }
    for policy in reasons {
        if !d.warnings.iter().any(|w| w.policy.id == policy.id) {
            d.warnings.push(warden_core::Warning { policy, would });
        }
    }
    d.obligations
        .retain(|o| !matches!(o, Obligation::Approval { .. }));
    d.outcome = Outcome::Allow;
    d
}
