//! The annotations through which Warden policies say more than permit or forbid.

use cedar_policy::{Effect, Policy};
use warden_core::PolicyMode;

/// What a policy's annotations ask of Warden.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Annotations {
    /// `@id`.
    pub id: Option<String>,
    /// `@reason`.
    pub reason: Option<String>,
    /// `@effect("ask")`: a permit that needs a person's approval.
    pub ask: bool,
    /// `@mode`.
    pub mode: PolicyMode,
    /// `@redact("args.token, args.password")`.
    pub redact: Vec<String>,
}

/// An annotation value Warden cannot use; `key` lets the caller point at the annotation.
pub(crate) struct AnnotationError {
    pub key: &'static str,
    pub message: String,
}

const KEYS: [&str; 5] = ["id", "reason", "effect", "mode", "redact"];

pub(crate) fn read(policy: &Policy) -> Result<Annotations, AnnotationError> {
    // `Policy::annotation(key)` parses `key` on every call; walking them once does not.
    let mut found: [Option<&str>; 5] = [None; 5];
    for (k, v) in policy.annotations() {
        if let Some(i) = KEYS.iter().position(|key| *key == k) {
            found[i] = Some(v);
        }
    }
    let [id, reason, effect, mode, redact] = found;
    let mut a = Annotations::default();
    if let Some(id) = id {
        if id.trim().is_empty() {
            return Err(AnnotationError {
                key: "id",
                message: "@id must not be empty".into(),
            });
        }
        a.id = Some(id.to_owned());
    }
    a.reason = reason.map(str::to_owned);
    if let Some(effect) = effect {
        match (effect, policy.effect()) {
            ("ask", Effect::Permit) => a.ask = true,
            ("ask", Effect::Forbid) => {
                return Err(AnnotationError {
                    key: "effect",
                    message: "@effect(\"ask\") only applies to a permit: a forbid always denies"
                        .into(),
                });
            }
            (other, _) => {
                return Err(AnnotationError {
                    key: "effect",
                    message: format!(
                        "unknown @effect({other:?}); the only value is \"ask\" (on a permit)"
                    ),
                });
            }
        }
    }
    if let Some(mode) = mode {
        a.mode = match mode {
            "enforce" => PolicyMode::Enforce,
            "warn" => PolicyMode::Warn,
            "off" => PolicyMode::Off,
            other => {
                return Err(AnnotationError {
                    key: "mode",
                    message: format!(
                        "unknown @mode({other:?}); expected \"enforce\", \"warn\" or \"off\""
                    ),
                });
            }
        };
    }
    if let Some(paths) = redact {
        for path in paths.split(',').map(str::trim) {
            if path.is_empty()
                || path
                    .split('.')
                    .any(|seg| seg.trim().is_empty() || seg != seg.trim())
            {
                return Err(AnnotationError {
                    key: "redact",
                    message: format!(
                        "@redact({paths:?}): expected comma-separated context paths such as \"args.token\""
                    ),
                });
            }
            if !a.redact.iter().any(|p| p == path) {
                a.redact.push(path.to_owned());
            }
        }
    }
    Ok(a)
}
