//! Where a server, tool or agent may be used: its effective status in one namespace.
//!
//! Namespaces form a tree per tenant (`acme` ⊃ `acme/platform` ⊃ `acme/platform/api`), and
//! scope entries attach to its nodes, as groups and projects work:
//!
//! 1. **A block is final.** A `block` entry at the namespace or at any ancestor (within the
//!    tenant) makes the item blocked there — an `enable` further down cannot undo it, and no
//!    entry may be added below it (`can_change_scope`): the block is read-only below. The
//!    team that owns `acme/platform/secret-project` cannot re-enable what security blocked
//!    at `acme/platform`.
//! 2. **Enabling is inherited.** Otherwise the item is enabled where an `enable` entry sits
//!    at the namespace or an ancestor: enabling at a group enables every project below it.
//!    With neither, the item is `not_enabled`.
//! 3. **Global state still counts.** A server or tool also needs the global state `approved`
//!    or `deprecated` to be usable; global `blocked` blocks everywhere, whatever the scopes
//!    say, and `pending_review` is reported as such wherever it is looked at.
//! 4. **A tool is as usable as its server allows.** A tool's status combines its server's
//!    and its own, the worse winning (`blocked > pending_review > not_enabled > deprecated >
//!    approved`). A tool with no `enable` entry of its own follows its server's enablement;
//!    one with `enable` entries is enabled only where they (and the server's) apply, so a
//!    dangerous tool of an otherwise enabled server can be limited to one project.
//!
//! Agents have no global state: they are enabled and blocked by scopes alone
//! (`effective_agent`), and an enabled agent reports `approved`.

use serde::{Deserialize, Serialize};
use warden_core::NamespacePath;

use crate::model::{ScopeEffect, ScopeEntry, State, Tool, ToolServer};

/// The status of an item in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Effective {
    Approved,
    Deprecated,
    PendingReview,
    /// `at`: the namespace whose block applies, or `None` when the item is blocked globally.
    Blocked {
        at: Option<String>,
    },
    NotEnabled,
}

impl Effective {
    pub fn as_str(&self) -> &'static str {
        match self {
            Effective::Approved => "approved",
            Effective::Deprecated => "deprecated",
            Effective::PendingReview => "pending_review",
            Effective::Blocked { .. } => "blocked",
            Effective::NotEnabled => "not_enabled",
        }
    }

    /// May an agent use the item here? (Policies still decide each call.)
    pub fn usable(&self) -> bool {
        matches!(self, Effective::Approved | Effective::Deprecated)
    }

    /// Higher is worse.
    fn severity(&self) -> u8 {
        match self {
            Effective::Approved => 0,
            Effective::Deprecated => 1,
            Effective::NotEnabled => 2,
            Effective::PendingReview => 3,
            Effective::Blocked { .. } => 4,
        }
    }
}

/// The block that applies at `namespace`: the topmost `block` entry on its chain (the one
/// that makes the others moot), as its namespace path.
fn block_above<'a>(scopes: &'a [ScopeEntry], namespace: &NamespacePath) -> Option<&'a str> {
    namespace.chain().find_map(|ns| {
        scopes
            .iter()
            .find(|e| e.effect == ScopeEffect::Block && e.namespace.as_str() == ns)
            .map(|e| e.namespace.as_str())
    })
}

fn enabled(scopes: &[ScopeEntry], namespace: &NamespacePath) -> bool {
    namespace.chain().any(|ns| {
        scopes
            .iter()
            .any(|e| e.effect == ScopeEffect::Enable && e.namespace.as_str() == ns)
    })
}

/// The status of an item with global `state` and `scopes` in `namespace` (rules 1-3).
pub fn effective(state: State, scopes: &[ScopeEntry], namespace: &NamespacePath) -> Effective {
    evaluate(state, scopes, namespace, true)
}

fn evaluate(
    state: State,
    scopes: &[ScopeEntry],
    namespace: &NamespacePath,
    needs_enable: bool,
) -> Effective {
    if state == State::Blocked {
        return Effective::Blocked { at: None };
    }
    if let Some(at) = block_above(scopes, namespace) {
        return Effective::Blocked {
            at: Some(at.to_owned()),
        };
    }
    if state == State::PendingReview {
        return Effective::PendingReview;
    }
    if needs_enable && !enabled(scopes, namespace) {
        return Effective::NotEnabled;
    }
    match state {
        State::Deprecated => Effective::Deprecated,
        _ => Effective::Approved,
    }
}

/// The worse of two statuses (rule 4). Of two blocks, the first one's location is kept
/// when it has one.
pub fn combine(a: Effective, b: Effective) -> Effective {
    match (a, b) {
        (Effective::Blocked { at: None }, Effective::Blocked { at }) => Effective::Blocked { at },
        (a, b) if b.severity() > a.severity() => b,
        (a, _) => a,
    }
}

/// A tool's status in `namespace`: its server's combined with its own (rule 4).
pub fn effective_tool(server: &ToolServer, tool: &Tool, namespace: &NamespacePath) -> Effective {
    let own_enables = tool.scopes.iter().any(|e| e.effect == ScopeEffect::Enable);
    combine(
        effective(server.state, &server.scopes, namespace),
        evaluate(tool.state, &tool.scopes, namespace, own_enables),
    )
}

/// An agent's status in `namespace`: scopes alone decide; enabled agents are `approved`.
pub fn effective_agent(scopes: &[ScopeEntry], namespace: &NamespacePath) -> Effective {
    effective(State::Approved, scopes, namespace)
}

/// May a scope entry be set (or removed) at `namespace`? Not below a block: a block is
/// read-only below the namespace it was set on. The block itself may be changed at its own
/// namespace (or above, by whoever may act there).
pub fn can_change_scope(scopes: &[ScopeEntry], namespace: &NamespacePath) -> Result<(), String> {
    let parent_chain = namespace.parent();
    let Some(parent) = parent_chain else {
        return Ok(());
    };
    match block_above(scopes, &parent) {
        Some(at) => Err(format!(
            "blocked at {at}: a block is final and read-only below the namespace it is set on, \
             so no scope can be set at {namespace}; change the block at {at} instead"
        )),
        None => Ok(()),
    }
}

/// Sets `entry` in `scopes`, replacing an entry at the same namespace (one entry per
/// namespace), after `can_change_scope`.
pub fn set_scope(scopes: &mut Vec<ScopeEntry>, entry: ScopeEntry) -> Result<(), String> {
    can_change_scope(scopes, &entry.namespace)?;
    scopes.retain(|e| e.namespace != entry.namespace);
    scopes.push(entry);
    scopes.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    Ok(())
}

/// Removes the entry at `namespace`, after `can_change_scope`. Returns whether there was one.
pub fn remove_scope(
    scopes: &mut Vec<ScopeEntry>,
    namespace: &NamespacePath,
) -> Result<bool, String> {
    can_change_scope(scopes, namespace)?;
    let before = scopes.len();
    scopes.retain(|e| &e.namespace != namespace);
    Ok(scopes.len() != before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use chrono::Utc;

    fn ns(s: &str) -> NamespacePath {
        NamespacePath::parse(s).unwrap()
    }

    fn entry(path: &str, effect: ScopeEffect) -> ScopeEntry {
        ScopeEntry {
            namespace: ns(path),
            effect,
            reason: "test".into(),
            by: "alice".into(),
            at: Utc::now(),
        }
    }

    use ScopeEffect::{Block, Enable};

    #[test]
    fn enabling_at_a_group_enables_below_it_only() {
        let scopes = [entry("acme/platform", Enable)];
        let e = |p: &str| effective(State::Approved, &scopes, &ns(p));
        assert_eq!(e("acme/platform"), Effective::Approved);
        assert_eq!(e("acme/platform/api"), Effective::Approved);
        assert_eq!(e("acme/platform/api/v2"), Effective::Approved);
        assert_eq!(e("acme"), Effective::NotEnabled);
        assert_eq!(e("acme/platformx"), Effective::NotEnabled);
        assert_eq!(e("acme/data"), Effective::NotEnabled);
        assert_eq!(e("other/platform"), Effective::NotEnabled);
        assert_eq!(
            effective(State::Approved, &[], &ns("acme")),
            Effective::NotEnabled
        );
    }

    #[test]
    fn a_parent_block_beats_a_child_enable() {
        let scopes = [
            entry("acme", Enable),
            entry("acme/platform/secret-project", Block),
            entry("acme/platform/secret-project/api", Enable),
        ];
        let e = |p: &str| effective(State::Approved, &scopes, &ns(p));
        assert_eq!(e("acme/platform"), Effective::Approved);
        let blocked = Effective::Blocked {
            at: Some("acme/platform/secret-project".into()),
        };
        assert_eq!(e("acme/platform/secret-project"), blocked);
        assert_eq!(e("acme/platform/secret-project/api"), blocked);
        assert_eq!(e("acme/platform/secret-project/api/x"), blocked);
        // The topmost block is the one reported.
        let two = [entry("acme/a/b", Block), entry("acme/a", Block)];
        assert_eq!(
            effective(State::Approved, &two, &ns("acme/a/b/c")),
            Effective::Blocked {
                at: Some("acme/a".into())
            }
        );
        // A block in another tenant never applies.
        let other = [entry("globex", Block), entry("acme", Enable)];
        assert_eq!(
            effective(State::Approved, &other, &ns("acme/x")),
            Effective::Approved
        );
    }

    #[test]
    fn global_state_counts_too() {
        let scopes = [entry("acme", Enable)];
        let at = ns("acme/x");
        assert_eq!(
            effective(State::Approved, &scopes, &at),
            Effective::Approved
        );
        assert_eq!(
            effective(State::Deprecated, &scopes, &at),
            Effective::Deprecated
        );
        assert_eq!(
            effective(State::PendingReview, &scopes, &at),
            Effective::PendingReview
        );
        assert_eq!(
            effective(State::Blocked, &scopes, &at),
            Effective::Blocked { at: None }
        );
        // Pending review outranks not enabled; a scope block outranks pending review.
        assert_eq!(
            effective(State::PendingReview, &[], &at),
            Effective::PendingReview
        );
        assert_eq!(
            effective(State::PendingReview, &[entry("acme", Block)], &at),
            Effective::Blocked {
                at: Some("acme".into())
            }
        );
        assert!(Effective::Approved.usable() && Effective::Deprecated.usable());
        assert!(!Effective::PendingReview.usable() && !Effective::NotEnabled.usable());
        assert!(!Effective::Blocked { at: None }.usable());
    }

    #[test]
    fn combine_takes_the_worse() {
        use Effective::*;
        let order = [
            Approved,
            Deprecated,
            NotEnabled,
            PendingReview,
            Blocked {
                at: Some("acme".into()),
            },
        ];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                let worse = if i >= j { a } else { b };
                assert_eq!(&combine(a.clone(), b.clone()), worse, "{a:?} + {b:?}");
            }
        }
        assert_eq!(
            combine(
                Blocked { at: None },
                Blocked {
                    at: Some("acme".into())
                }
            ),
            Blocked {
                at: Some("acme".into())
            }
        );
        let names: Vec<_> = order.iter().map(Effective::as_str).collect();
        assert_eq!(
            names,
            [
                "approved",
                "deprecated",
                "not_enabled",
                "pending_review",
                "blocked"
            ]
        );
    }

    fn server(state: State, scopes: Vec<ScopeEntry>) -> ToolServer {
        ToolServer {
            name: ServerName::parse("io.github.acme/deploy").unwrap(),
            alias: "deploy".into(),
            title: None,
            description: "d".into(),
            version: "1.0.0".into(),
            owner: None,
            source: Source::default(),
            transport: None,
            state,
            scopes,
            pin_policy: PinPolicy::Block,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn tool(state: State, scopes: Vec<ScopeEntry>) -> Tool {
        let def = crate::pin::ToolDefinition::from_mcp(
            &serde_json::json!({"name": "run", "inputSchema": {"type": "object"}}),
        )
        .unwrap();
        let mut t = Tool::discovered(ServerName::parse("io.github.acme/deploy").unwrap(), &def);
        t.state = state;
        t.scopes = scopes;
        t
    }

    #[test]
    fn a_tool_follows_its_server_and_can_be_narrowed() {
        let srv = server(State::Approved, vec![entry("acme", Enable)]);
        let at = ns("acme/platform");
        assert_eq!(
            effective_tool(&srv, &tool(State::Approved, vec![]), &at),
            Effective::Approved
        );
        assert_eq!(
            effective_tool(&srv, &tool(State::PendingReview, vec![]), &at),
            Effective::PendingReview
        );
        assert_eq!(
            effective_tool(&srv, &tool(State::Deprecated, vec![]), &at),
            Effective::Deprecated
        );
        // Blocked for this tool only in one project.
        let t = tool(State::Approved, vec![entry("acme/platform/secret", Block)]);
        assert_eq!(effective_tool(&srv, &t, &at), Effective::Approved);
        assert_eq!(
            effective_tool(&srv, &t, &ns("acme/platform/secret/x")),
            Effective::Blocked {
                at: Some("acme/platform/secret".into())
            }
        );
        // A tool limited to one project by its own enable entry.
        let t = tool(State::Approved, vec![entry("acme/ops", Enable)]);
        assert_eq!(
            effective_tool(&srv, &t, &ns("acme/ops/x")),
            Effective::Approved
        );
        assert_eq!(effective_tool(&srv, &t, &at), Effective::NotEnabled);
        // The tool cannot be more usable than its server.
        let off = server(State::Approved, vec![]);
        assert_eq!(
            effective_tool(
                &off,
                &tool(State::Approved, vec![entry("acme", Enable)]),
                &at
            ),
            Effective::NotEnabled
        );
        let blocked = server(State::Blocked, vec![entry("acme", Enable)]);
        assert_eq!(
            effective_tool(&blocked, &tool(State::Approved, vec![]), &at),
            Effective::Blocked { at: None }
        );
        let pending = server(State::PendingReview, vec![entry("acme", Enable)]);
        assert_eq!(
            effective_tool(&pending, &tool(State::Approved, vec![]), &at),
            Effective::PendingReview
        );
    }

    #[test]
    fn agents_are_scoped_only() {
        let scopes = [
            entry("acme/platform", Enable),
            entry("acme/platform/prod", Block),
        ];
        assert_eq!(
            effective_agent(&scopes, &ns("acme/platform/dev")),
            Effective::Approved
        );
        assert_eq!(
            effective_agent(&scopes, &ns("acme/data")),
            Effective::NotEnabled
        );
        assert_eq!(
            effective_agent(&scopes, &ns("acme/platform/prod/x")).as_str(),
            "blocked"
        );
    }

    #[test]
    fn nothing_can_be_set_below_a_block() {
        let mut scopes = vec![entry("acme", Enable), entry("acme/platform", Block)];
        assert!(can_change_scope(&scopes, &ns("acme")).is_ok());
        assert!(can_change_scope(&scopes, &ns("acme/platform")).is_ok());
        assert!(can_change_scope(&scopes, &ns("acme/data/x")).is_ok());
        let e = can_change_scope(&scopes, &ns("acme/platform/api")).unwrap_err();
        assert!(e.starts_with("blocked at acme/platform:"), "{e}");
        assert!(set_scope(&mut scopes, entry("acme/platform/api", Enable)).is_err());
        assert!(remove_scope(&mut scopes, &ns("acme/platform/api")).is_err());
        // Replacing the block at its own namespace is allowed: one entry per namespace.
        set_scope(&mut scopes, entry("acme/platform", Enable)).unwrap();
        assert_eq!(scopes.len(), 2);
        assert_eq!(
            effective(State::Approved, &scopes, &ns("acme/platform/api")),
            Effective::Approved
        );
        assert!(remove_scope(&mut scopes, &ns("acme/platform")).unwrap());
        assert!(!remove_scope(&mut scopes, &ns("acme/platform")).unwrap());
    }
}
