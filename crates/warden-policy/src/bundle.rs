//! Policy bundles: the whole set of one tenant's policy files and policy tests, as one unit
//! that is versioned, compared, tested and applied (or refused) together.
//!
//! A bundle is a map from file path to text. Paths are relative to the policy directory, as
//! in a GitOps checkout: `acme/platform/tools.cedar` holds policies of namespace
//! `acme/platform`, `acme/platform/tools.test.yaml` holds policy tests. Every path of a
//! tenant's bundle starts with the tenant's folder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warden_core::NamespacePath;

use crate::testing::{TEST_FILE_SUFFIX, TestFile};
use crate::{PolicyError, PolicySource};

/// The suffix of policy files.
pub const POLICY_FILE_SUFFIX: &str = ".cedar";

/// How a tenant's bundle acts on decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleMode {
    /// Decisions are the bundle's.
    #[default]
    Enforce,
    /// Decided as if enforced; what would be denied or held is reported as a warning and let
    /// through.
    Warn,
    /// Not evaluated: the tenant has no policies in force, so every request is denied
    /// (Warden fails closed).
    Off,
}

impl BundleMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BundleMode::Enforce => "enforce",
            BundleMode::Warn => "warn",
            BundleMode::Off => "off",
        }
    }

    pub fn parse(s: &str) -> Option<BundleMode> {
        match s {
            "enforce" => Some(BundleMode::Enforce),
            "warn" => Some(BundleMode::Warn),
            "off" => Some(BundleMode::Off),
            _ => None,
        }
    }
}

/// One tenant's policy files and policy tests, by path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub files: BTreeMap<String, String>,
}

/// What kind of file a bundle path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Policies,
    Tests,
}

impl FileKind {
    pub fn of(path: &str) -> Option<FileKind> {
        if path.ends_with(TEST_FILE_SUFFIX) {
            Some(FileKind::Tests)
        } else if path.ends_with(POLICY_FILE_SUFFIX) {
            Some(FileKind::Policies)
        } else {
            None
        }
    }
}

impl Bundle {
    pub fn new(files: BTreeMap<String, String>) -> Bundle {
        Bundle { files }
    }

    /// SHA-256 over every path and text (length-prefixed, in path order): equal bundles have
    /// equal hashes, whoever wrote them and however often.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        for (path, text) in &self.files {
            for field in [path.as_bytes(), text.as_bytes()] {
                h.update((field.len() as u64).to_be_bytes());
                h.update(field);
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks that every path belongs to `tenant`, sits in a namespace folder and names a
    /// policy or test file. Every problem is reported, each naming its path.
    pub fn check_paths(&self, tenant: &str) -> Result<(), Vec<PolicyError>> {
        let errors: Vec<PolicyError> = self
            .files
            .keys()
            .filter_map(|path| {
                check_path(tenant, path).err().map(|message| PolicyError {
                    origin: path.clone(),
                    line: 1,
                    column: 1,
                    message,
                })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The policy files, each attached to its folder's namespace. Call after `check_paths`.
    pub fn sources(&self) -> Vec<PolicySource> {
        self.files
            .iter()
            .filter(|(p, _)| FileKind::of(p) == Some(FileKind::Policies))
            .filter_map(|(p, t)| {
                Some(PolicySource::new(
                    folder_namespace(p)?,
                    p.clone(),
                    t.clone(),
                ))
            })
            .collect()
    }

    /// The policy tests, parsed; every problem of every file reported.
    pub fn tests(&self) -> Result<Vec<TestFile>, Vec<PolicyError>> {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for (path, text) in &self.files {
            if FileKind::of(path) != Some(FileKind::Tests) {
                continue;
            }
            match TestFile::parse(path, folder_namespace(path).as_ref(), text) {
                Ok(f) => files.push(f),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(files)
        } else {
            Err(errors)
        }
    }
}

fn check_path(tenant: &str, path: &str) -> Result<(), String> {
    if FileKind::of(path).is_none() {
        return Err(format!(
            "not a policy file ({POLICY_FILE_SUFFIX}) or a policy test file ({TEST_FILE_SUFFIX})"
        ));
    }
    let Some((folder, name)) = path.rsplit_once('/') else {
        return Err(format!(
            "policy files sit in a namespace folder, e.g. {tenant}/{path}"
        ));
    };
    if name.starts_with('.') || path.split('/').any(|seg| seg.is_empty() || seg == "..") {
        return Err("the path must be relative, without empty, `..` or hidden parts".into());
    }
    let ns = NamespacePath::parse(folder)
        .map_err(|e| format!("folder {folder:?} is not a valid namespace: {e}"))?;
    if ns.tenant().as_str() != tenant {
        return Err(format!(
            "the path is outside tenant {tenant:?}: every path starts with {tenant}/"
        ));
    }
    Ok(())
}

fn folder_namespace(path: &str) -> Option<NamespacePath> {
    let (folder, _) = path.rsplit_once('/')?;
    NamespacePath::parse(folder).ok()
}

/// How one file differs between two bundles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileDiff {
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub status: &'static str,
    /// A unified diff (3 lines of context) from the old text to the new one.
    pub diff: String,
}

/// How two bundles differ, file by file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BundleDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub files: Vec<FileDiff>,
}

impl BundleDiff {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The changes that turn `from` into `to`, in path order.
pub fn diff(from: &Bundle, to: &Bundle) -> BundleDiff {
    let mut d = BundleDiff::default();
    let paths: std::collections::BTreeSet<&String> =
        from.files.keys().chain(to.files.keys()).collect();
    for path in paths {
        let (old, new, status) = match (from.files.get(path), to.files.get(path)) {
            (None, Some(new)) => ("", new.as_str(), "added"),
            (Some(old), None) => (old.as_str(), "", "removed"),
            (Some(old), Some(new)) if old != new => (old.as_str(), new.as_str(), "changed"),
            _ => continue,
        };
        match status {
            "added" => d.added.push(path.clone()),
            "removed" => d.removed.push(path.clone()),
            _ => d.changed.push(path.clone()),
        }
        let (a, b) = match status {
            "added" => ("/dev/null".to_owned(), format!("b/{path}")),
            "removed" => (format!("a/{path}"), "/dev/null".to_owned()),
            _ => (format!("a/{path}"), format!("b/{path}")),
        };
        let text = similar::TextDiff::from_lines(old, new)
            .unified_diff()
            .context_radius(3)
            .header(&a, &b)
            .to_string();
        d.files.push(FileDiff {
            path: path.clone(),
            status,
            diff: text,
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, &str)]) -> Bundle {
        Bundle::new(
            files
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        )
    }

    #[test]
    fn hash_depends_on_paths_and_texts_only() {
        let a = bundle(&[("acme/a.cedar", "x"), ("acme/b.cedar", "y")]);
        let b = bundle(&[("acme/b.cedar", "y"), ("acme/a.cedar", "x")]);
        assert_eq!(a.content_hash(), b.content_hash());
        let moved = bundle(&[("acme/a.cedar", "xacme/b.cedar"), ("acme/c.cedar", "y")]);
        assert_ne!(a.content_hash(), moved.content_hash());
        assert_eq!(a.content_hash().len(), 64);
    }

    #[test]
    fn paths_must_belong_to_the_tenant_and_name_policy_or_test_files() {
        let b = bundle(&[
            ("acme/ok.cedar", ""),
            ("acme/ops/ok.test.yaml", ""),
            ("other/x.cedar", ""),
            ("top.cedar", ""),
            ("acme/readme.md", ""),
            ("acme/../other/x.cedar", ""),
        ]);
        let errors = b.check_paths("acme").unwrap_err();
        let bad: Vec<&str> = errors.iter().map(|e| e.origin.as_str()).collect();
        assert_eq!(
            bad,
            [
                "acme/../other/x.cedar",
                "acme/readme.md",
                "other/x.cedar",
                "top.cedar"
            ]
        );
        assert!(errors[2].message.contains("outside tenant"));
    }

    #[test]
    fn sources_take_their_folder_as_namespace() {
        let b = bundle(&[("acme/ops/a.cedar", "permit(principal, action, resource);")]);
        let s = b.sources();
        assert_eq!(s[0].namespace.as_str(), "acme/ops");
        assert_eq!(s[0].origin, "acme/ops/a.cedar");
    }

    #[test]
    fn diff_lists_added_removed_and_changed_files_with_unified_diffs() {
        let from = bundle(&[("acme/a.cedar", "one\ntwo\n"), ("acme/gone.cedar", "x\n")]);
        let to = bundle(&[("acme/a.cedar", "one\nthree\n"), ("acme/new.cedar", "y\n")]);
        let d = diff(&from, &to);
        assert_eq!(d.added, ["acme/new.cedar"]);
        assert_eq!(d.removed, ["acme/gone.cedar"]);
        assert_eq!(d.changed, ["acme/a.cedar"]);
        let changed = &d.files[0];
        assert!(
            changed.diff.contains("--- a/acme/a.cedar"),
            "{}",
            changed.diff
        );
        assert!(changed.diff.contains("-two\n+three\n"), "{}", changed.diff);
        assert!(d.files[2].diff.contains("+++ b/acme/new.cedar"));
        assert!(diff(&to, &to).is_empty());
    }
}
