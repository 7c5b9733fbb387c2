//! Proposed categories and risk for a discovered tool, so a reviewer starts from a
//! suggestion instead of a blank form. A proposal is marked as such and never takes effect
//! by itself: a person confirms (or corrects) it when approving the tool.
//!
//! Annotations come first (`readOnlyHint` → read, `destructiveHint` → delete and write,
//! `openWorldHint` → network), then words of the tool's name and description. Both are
//! combined rather than letting annotations overrule names: annotations are the server's
//! own claims, and a server that calls `drop_table` read-only is exactly the one a reviewer
//! should look at twice. Words are whole tokens (`snake_case`, `camelCase`, `kebab-case` and
//! prose are split; simple inflections such as "deletes", "deleted", "deleting" count), so
//! "keyboard" does not mean "key".
//!
//! Risk follows the categories: `critical` for execute or secrets, `high` for delete,
//! `medium` for write or network, otherwise `low`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Category, RiskLevel};
use crate::pin::ToolDefinition;

/// Warden's suggestion for a tool's categories and risk, with the reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proposal {
    pub categories: BTreeSet<Category>,
    pub risk: RiskLevel,
    /// Why, one line per finding: `annotation destructiveHint=true`, `name contains "delete"`.
    pub basis: Vec<String>,
    /// Always true: this is a proposal, not a reviewed fact.
    pub proposed: bool,
}

/// Words and the category each suggests. Checked in this order, so the basis reads in the
/// same order for every tool.
const WORDS: &[(Category, &[&str])] = &[
    (Category::Delete, &["delete", "remove", "drop", "destroy"]),
    (
        Category::Write,
        &[
            "write", "create", "update", "edit", "set", "push", "move", "rename",
        ],
    ),
    (
        Category::Execute,
        &["exec", "execute", "run", "shell", "command", "eval"],
    ),
    (
        Category::Network,
        &[
            "fetch", "http", "https", "url", "web", "browse", "download", "request",
        ],
    ),
    (
        Category::Secrets,
        &["secret", "token", "password", "credential", "key", "vault"],
    ),
    (
        Category::Pii,
        &["email", "phone", "address", "ssn", "person", "user"],
    ),
    (
        Category::Read,
        &["get", "list", "read", "search", "query", "describe"],
    ),
];

/// Proposes categories and risk for a tool definition.
pub fn propose(def: &ToolDefinition) -> Proposal {
    let mut categories = BTreeSet::new();
    let mut basis = Vec::new();

    let hint = |k: &str| {
        def.annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .and_then(Value::as_bool)
            == Some(true)
    };
    if hint("readOnlyHint") {
        categories.insert(Category::Read);
        basis.push("annotation readOnlyHint=true".to_owned());
    }
    if hint("destructiveHint") {
        categories.insert(Category::Delete);
        categories.insert(Category::Write);
        basis.push("annotation destructiveHint=true".to_owned());
    }
    if hint("openWorldHint") {
        categories.insert(Category::Network);
        basis.push("annotation openWorldHint=true".to_owned());
    }

    for (field, text) in [
        ("name", Some(def.name.as_str())),
        ("description", def.description.as_deref()),
    ] {
        let Some(text) = text else { continue };
        let tokens = tokens(text);
        for (category, words) in WORDS {
            for word in *words {
                if tokens.iter().any(|t| matches_word(t, word)) {
                    categories.insert(*category);
                    basis.push(format!("{field} contains {word:?}"));
                }
            }
        }
    }

    let risk = risk_of(&categories);
    if basis.is_empty() {
        basis.push("no annotation or word suggested a category".to_owned());
    }
    Proposal {
        categories,
        risk,
        basis,
        proposed: true,
    }
}

/// The risk the categories imply.
pub fn risk_of(categories: &BTreeSet<Category>) -> RiskLevel {
    let has = |c| categories.contains(&c);
    if has(Category::Execute) || has(Category::Secrets) {
        RiskLevel::Critical
    } else if has(Category::Delete) {
        RiskLevel::High
    } else if has(Category::Write) || has(Category::Network) {
        RiskLevel::Medium
    } else {
        RiskLevel::Low
    }
}

/// Splits into lowercase word tokens: at anything not a letter or digit, and at camelCase
/// boundaries (`getUserEmail` → get, user, email; `HTTPRequest` → http, request).
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in text.split(|c: char| !c.is_alphanumeric()) {
        let chars: Vec<char> = chunk.chars().collect();
        let mut start = 0;
        for i in 1..chars.len() {
            let (prev, cur) = (chars[i - 1], chars[i]);
            let next_lower = chars.get(i + 1).is_some_and(|c| c.is_lowercase());
            let boundary = (prev.is_lowercase() && cur.is_uppercase())
                || (prev.is_uppercase() && cur.is_uppercase() && next_lower)
                || (prev.is_alphabetic() && cur.is_numeric())
                || (prev.is_numeric() && cur.is_alphabetic());
            if boundary {
                out.push(chars[start..i].iter().collect::<String>().to_lowercase());
                start = i;
            }
        }
        if start < chars.len() {
            out.push(chars[start..].iter().collect::<String>().to_lowercase());
        }
    }
    out
}

/// Whether a token is `word` or a simple inflection of it: -s, -es, -d, -ed, -ing (also with
/// a final e dropped or a consonant doubled: "writing", "running").
fn matches_word(token: &str, word: &str) -> bool {
    if token == word {
        return true;
    }
    let Some(rest) = token.strip_prefix(word) else {
        // "writing" = "writ" + "ing" for "write"; "deleted" = "delete" + "d".
        return word
            .strip_suffix('e')
            .and_then(|stem| token.strip_prefix(stem))
            .is_some_and(|rest| matches!(rest, "ing" | "ed"));
    };
    match rest {
        "s" | "es" | "d" | "ed" | "ing" | "er" | "ers" => true,
        // "browser", "writers": a final e takes -r.
        "r" | "rs" => word.ends_with('e'),
        // "running", "setting", "dropped": doubled final consonant.
        _ => {
            let last = word.chars().last();
            rest.chars().next() == last
                && matches!(&rest[last.map_or(0, char::len_utf8)..], "ing" | "ed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Proposal {
        propose(&ToolDefinition::from_mcp(&v).unwrap())
    }

    fn cats(p: &Proposal) -> Vec<&'static str> {
        p.categories.iter().map(|c| c.as_str()).collect()
    }

    #[test]
    fn tokens_split_every_naming_style() {
        assert_eq!(tokens("get_user_email"), ["get", "user", "email"]);
        assert_eq!(tokens("getUserEmail"), ["get", "user", "email"]);
        assert_eq!(tokens("HTTPRequest"), ["http", "request"]);
        assert_eq!(tokens("delete-branch v2"), ["delete", "branch", "v", "2"]);
        assert_eq!(
            tokens("Runs a shell command."),
            ["runs", "a", "shell", "command"]
        );
    }

    #[test]
    fn words_match_whole_tokens_and_inflections_only() {
        for (t, w) in [
            ("deletes", "delete"),
            ("deleted", "delete"),
            ("deleting", "delete"),
            ("writing", "write"),
            ("running", "run"),
            ("keys", "key"),
            ("addresses", "address"),
            ("credentials", "credential"),
            ("pushed", "push"),
            ("users", "user"),
            ("browser", "browse"),
        ] {
            assert!(matches_word(t, w), "{t} should match {w}");
        }
        for (t, w) in [
            ("keyboard", "key"),
            ("settings", "set"),
            ("dropdown", "drop"),
            ("target", "get"),
            ("runtime", "run"),
            ("username", "user"),
        ] {
            assert!(!matches_word(t, w), "{t} should not match {w}");
        }
    }

    #[test]
    fn annotations_propose_first() {
        let r = p(json!({"name": "x", "inputSchema": {}, "annotations": {"readOnlyHint": true}}));
        assert_eq!(cats(&r), ["read"]);
        assert_eq!(r.risk, RiskLevel::Low);
        assert_eq!(r.basis, ["annotation readOnlyHint=true"]);
        assert!(r.proposed);

        let r = p(json!({"name": "x", "inputSchema": {},
            "annotations": {"destructiveHint": true, "openWorldHint": true}}));
        assert_eq!(cats(&r), ["write", "delete", "network"]);
        assert_eq!(r.risk, RiskLevel::High);

        // `false` hints suggest nothing.
        let r = p(json!({"name": "x", "inputSchema": {},
            "annotations": {"readOnlyHint": false, "destructiveHint": false}}));
        assert!(r.categories.is_empty());
        assert_eq!(r.risk, RiskLevel::Low);
        assert_eq!(r.basis, ["no annotation or word suggested a category"]);
    }

    #[test]
    fn names_and_descriptions_propose_too() {
        let r = p(json!({"name": "delete_repository", "inputSchema": {},
            "description": "Permanently removes a repository.",
            "annotations": {"destructiveHint": true}}));
        assert_eq!(cats(&r), ["write", "delete"]);
        assert_eq!(r.risk, RiskLevel::High);
        assert_eq!(
            r.basis,
            [
                "annotation destructiveHint=true",
                "name contains \"delete\"",
                "description contains \"remove\""
            ]
        );

        let r = p(json!({"name": "run_shell_command", "inputSchema": {}}));
        assert_eq!(cats(&r), ["execute"]);
        assert_eq!(r.risk, RiskLevel::Critical);

        let r = p(json!({"name": "getSecretValue", "inputSchema": {}}));
        assert_eq!(cats(&r), ["read", "secrets"]);
        assert_eq!(r.risk, RiskLevel::Critical);

        let r = p(json!({"name": "fetch", "inputSchema": {},
            "description": "Fetches a URL from the internet."}));
        assert_eq!(cats(&r), ["network"]);
        assert_eq!(r.risk, RiskLevel::Medium);

        let r = p(json!({"name": "create_issue", "inputSchema": {}}));
        assert_eq!((cats(&r), r.risk), (vec!["write"], RiskLevel::Medium));

        let r = p(json!({"name": "search_users", "inputSchema": {},
            "description": "Find people by email address."}));
        assert_eq!(cats(&r), ["read", "pii"]);
        assert_eq!(r.risk, RiskLevel::Low);

        // Not substrings: "keyboard", "settings" and "target" suggest nothing.
        let r = p(json!({"name": "keyboard_layout", "inputSchema": {},
            "description": "Shows keyboard settings for the target."}));
        assert!(r.categories.is_empty(), "{:?}", r.basis);

        // A read-only claim does not hide what the name says.
        let r = p(json!({"name": "drop_table", "inputSchema": {},
            "annotations": {"readOnlyHint": true}}));
        assert_eq!(cats(&r), ["read", "delete"]);
        assert_eq!(r.risk, RiskLevel::High);
    }

    #[test]
    fn risk_follows_the_categories() {
        let r = |cs: &[Category]| risk_of(&cs.iter().copied().collect());
        assert_eq!(r(&[]), RiskLevel::Low);
        assert_eq!(r(&[Category::Read, Category::Pii]), RiskLevel::Low);
        assert_eq!(r(&[Category::Write]), RiskLevel::Medium);
        assert_eq!(r(&[Category::Network]), RiskLevel::Medium);
        assert_eq!(r(&[Category::Delete, Category::Write]), RiskLevel::High);
        assert_eq!(r(&[Category::Execute]), RiskLevel::Critical);
        assert_eq!(r(&[Category::Secrets, Category::Read]), RiskLevel::Critical);
    }
}
