//! The usage report: how many decisions were made, by outcome, per agent, tool, user,
//! namespace or outcome, over a time window. The system of record answers it in SQL
//! ([`crate::Store::usage_report`]); the analytics database (ClickHouse) answers the same
//! question from its copy, and both fold their rows here so that the same request gives the
//! same answer whichever of them answered.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use warden_core::{Error, NamespacePath};

/// What the report groups decisions by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroupBy {
    /// The acting agent (`actor.agent`).
    Agent,
    /// The tool: the resource id of decisions on a `Tool` resource, none otherwise.
    Tool,
    /// The user the agent acted for (`actor.on_behalf_of`).
    User,
    Namespace,
    Outcome,
}

impl UsageGroupBy {
    pub const ALL: [UsageGroupBy; 5] = [
        UsageGroupBy::Agent,
        UsageGroupBy::Tool,
        UsageGroupBy::User,
        UsageGroupBy::Namespace,
        UsageGroupBy::Outcome,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageGroupBy::Agent => "agent",
            UsageGroupBy::Tool => "tool",
            UsageGroupBy::User => "user",
            UsageGroupBy::Namespace => "namespace",
            UsageGroupBy::Outcome => "outcome",
        }
    }

    pub fn parse(s: &str) -> Result<UsageGroupBy, Error> {
        UsageGroupBy::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "group_by must be agent, tool, user, namespace or outcome, not {s:?}"
                ))
            })
    }

    /// The group key as an SQL expression over the `audit_events` columns of the system of
    /// record (the same text works on SQLite and PostgreSQL). A missing value is the empty
    /// string, which the report shows as `null`.
    pub fn store_sql(self) -> &'static str {
        match self {
            UsageGroupBy::Agent => "COALESCE(agent, '')",
            UsageGroupBy::Tool => {
                "CASE WHEN resource_type = 'Tool' THEN COALESCE(resource_id, '') ELSE '' END"
            }
            UsageGroupBy::User => "COALESCE(on_behalf_of, '')",
            UsageGroupBy::Namespace => "namespace",
            UsageGroupBy::Outcome => "outcome",
        }
    }
}

/// One usage report request, already confined to a tenant by the caller.
#[derive(Clone, Debug)]
pub struct UsageQuery {
    /// Decisions at or after this time.
    pub from: DateTime<Utc>,
    /// Decisions before this time.
    pub to: DateTime<Utc>,
    /// The namespace and everything below it; `None`: the whole tenant.
    pub namespace: Option<NamespacePath>,
    pub group_by: UsageGroupBy,
}

/// The decisions of one group, by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// The group's value (agent, tool, user, namespace or outcome); `null` for decisions
    /// that have none (a decision on something other than a tool, by a principal that is not
    /// an agent, for no user).
    pub key: Option<String>,
    pub allow: u64,
    pub deny: u64,
    pub approval_required: u64,
    pub total: u64,
}

/// Folds `(key, outcome, count)` rows into one [`UsageRow`] per key, ordered by key (no key
/// first). Both the system of record and the analytics database answer through this, so their
/// answers compare equal.
pub fn fold_usage(rows: impl IntoIterator<Item = (String, String, u64)>) -> Vec<UsageRow> {
    let mut groups: BTreeMap<String, UsageRow> = BTreeMap::new();
    for (key, outcome, n) in rows {
        let row = groups.entry(key).or_default();
        match outcome.as_str() {
            "allow" => row.allow += n,
            "deny" => row.deny += n,
            "approval_required" => row.approval_required += n,
            // An outcome this version does not know still counts in the total.
            _ => {}
        }
        row.total += n;
    }
    groups
        .into_iter()
        .map(|(key, mut row)| {
            row.key = (!key.is_empty()).then_some(key);
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fold_by_key_with_the_empty_key_as_none() {
        let rows = fold_usage([
            ("b".to_owned(), "allow".to_owned(), 2),
            ("".to_owned(), "deny".to_owned(), 1),
            ("b".to_owned(), "approval_required".to_owned(), 3),
            ("a".to_owned(), "deny".to_owned(), 4),
        ]);
        assert_eq!(
            rows,
            vec![
                UsageRow {
                    key: None,
                    deny: 1,
                    total: 1,
                    ..Default::default()
                },
                UsageRow {
                    key: Some("a".into()),
                    deny: 4,
                    total: 4,
                    ..Default::default()
                },
                UsageRow {
                    key: Some("b".into()),
                    allow: 2,
                    approval_required: 3,
                    total: 5,
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn group_by_parses_its_names_only() {
        for g in UsageGroupBy::ALL {
            assert_eq!(UsageGroupBy::parse(g.as_str()).unwrap(), g);
        }
        assert!(UsageGroupBy::parse("server").is_err());
    }
}
