//! Retention of audit events: rules per namespace subtree, legal holds, and the record a
//! retention run leaves in the log.
//!
//! A payload purge keeps the event's header (which commits to the payload's digest); a header
//! expiry deletes the event's row and keeps only its Merkle leaf hash. Both are explained by an
//! `audit.retention.applied` event ([`RetentionRecord`]) appended before the deletion, naming
//! the sequence ranges it may touch, so that `warden audit verify` tells a removal retention
//! made from one made behind Warden's back.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, NamespacePath, TenantId};

/// Longest retention accepted, in days (a thousand years: anything longer is "forever").
pub const MAX_DAYS: u32 = 365_000;

/// Event types that retention never removes: the records that explain its own deletions.
pub fn is_exempt(event_type: &str) -> bool {
    event_type == crate::catalog::AUDIT_RETENTION_APPLIED
}

/// How long one namespace subtree keeps its events. `None` keeps forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRule {
    pub tenant: TenantId,
    /// The subtree the rule covers; the tenant root for the tenant-wide rule.
    pub namespace: NamespacePath,
    pub payload_days: Option<u32>,
    pub header_days: Option<u32>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// Checks a rule's numbers: positive, bounded, and a header kept at least as long as its
/// payload (a header is what proves the payload existed).
pub fn validate_days(payload_days: Option<u32>, header_days: Option<u32>) -> Result<(), Error> {
    for (name, v) in [("payload_days", payload_days), ("header_days", header_days)] {
        if let Some(d) = v
            && (d == 0 || d > MAX_DAYS)
        {
            return Err(Error::invalid(format!(
                "{name} must be a whole number of days from 1 to {MAX_DAYS} (absent keeps forever), not {d}"
            )));
        }
    }
    match (payload_days, header_days) {
        (Some(p), Some(h)) if h < p => Err(Error::invalid(format!(
            "header_days ({h}) must be at least payload_days ({p}): the header is what proves the payload existed"
        ))),
        _ => Ok(()),
    }
}

/// The rule for an event in `namespace`: the most specific rule whose subtree holds it.
pub fn rule_for<'a>(rules: &'a [RetentionRule], namespace: &str) -> Option<&'a RetentionRule> {
    rules
        .iter()
        .filter(|r| covers(r.namespace.as_str(), namespace))
        .max_by_key(|r| r.namespace.as_str().len())
}

/// True when `namespace` is `subtree` or lies below it.
pub fn covers(subtree: &str, namespace: &str) -> bool {
    namespace == subtree
        || (namespace.starts_with(subtree)
            && namespace.as_bytes().get(subtree.len()) == Some(&b'/'))
}

/// A legal hold: while active, no event it covers loses its payload or its header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    pub id: uuid::Uuid,
    pub tenant: TenantId,
    /// The subtree held; `None` holds the whole tenant.
    pub namespace: Option<NamespacePath>,
    /// Events at or after this time (open when absent).
    pub from: Option<DateTime<Utc>>,
    /// Events before this time (open when absent).
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub released_by: Option<String>,
    pub released_reason: Option<String>,
    pub released_at: Option<DateTime<Utc>>,
}

impl LegalHold {
    pub fn is_active(&self) -> bool {
        self.released_at.is_none()
    }

    /// True when this hold, if active, covers an event of `namespace` at `time`.
    pub fn covers(&self, namespace: &str, time: DateTime<Utc>) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| covers(ns.as_str(), namespace))
            && self.from.is_none_or(|f| time >= f)
            && self.to.is_none_or(|t| time < t)
    }
}

/// What retention does to one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    PurgePayload,
    DeleteHeader,
}

/// What the rule says for an event of `time`, at `now`, ignoring holds.
pub fn verdict(rule: Option<&RetentionRule>, time: DateTime<Utc>, now: DateTime<Utc>) -> Verdict {
    let Some(rule) = rule else {
        return Verdict::Keep;
    };
    let past = |days: Option<u32>| days.is_some_and(|d| time < now - Duration::days(d as i64));
    if past(rule.header_days) {
        Verdict::DeleteHeader
    } else if past(rule.payload_days) {
        Verdict::PurgePayload
    } else {
        Verdict::Keep
    }
}

/// An inclusive range of sequence numbers.
pub type SeqRange = [u64; 2];

/// The payload of `audit.retention.applied`: what one run was allowed to remove, and why.
///
/// The ranges are written before anything is deleted; `warden audit verify` accepts a purged
/// payload or a deleted header only at a position one of them names, in a record that comes
/// later in the same log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRecord {
    pub payloads_purged: u64,
    pub headers_deleted: u64,
    /// Positions whose payloads the run purges.
    pub purged_ranges: Vec<SeqRange>,
    /// Positions whose rows the run deletes (leaf hashes are kept).
    pub deleted_ranges: Vec<SeqRange>,
    /// Active holds that kept events the rules would have removed, with how many.
    pub blocked_by_holds: Vec<BlockedBy>,
    /// The rules in force for the run.
    pub rules: Vec<RuleSummary>,
    pub now: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockedBy {
    pub hold: uuid::Uuid,
    pub events: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSummary {
    pub namespace: String,
    pub payload_days: Option<u32>,
    pub header_days: Option<u32>,
}

impl RetentionRecord {
    /// True when `seq` lies in one of `ranges`.
    pub fn names(ranges: &[SeqRange], seq: u64) -> bool {
        ranges.iter().any(|[a, b]| *a <= seq && seq <= *b)
    }
}

/// Appends `seq` to `ranges`, extending the last range when `seq` follows it directly.
pub fn push_seq(ranges: &mut Vec<SeqRange>, seq: u64) {
    match ranges.last_mut() {
        Some([_, end]) if *end + 1 == seq => *end = seq,
        _ => ranges.push([seq, seq]),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn rule(ns: &str, p: Option<u32>, h: Option<u32>) -> RetentionRule {
        RetentionRule {
            tenant: TenantId::parse("acme").unwrap(),
            namespace: NamespacePath::parse(ns).unwrap(),
            payload_days: p,
            header_days: h,
            updated_by: "t".into(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let rules = [
            rule("acme", Some(30), Some(365)),
            rule("acme/hr", Some(7), None),
            rule("acme/hr/payroll", None, None),
        ];
        assert_eq!(
            rule_for(&rules, "acme/dev").unwrap().namespace.as_str(),
            "acme"
        );
        assert_eq!(
            rule_for(&rules, "acme/hr").unwrap().namespace.as_str(),
            "acme/hr"
        );
        assert_eq!(
            rule_for(&rules, "acme/hrx").unwrap().namespace.as_str(),
            "acme"
        );
        assert_eq!(
            rule_for(&rules, "acme/hr/payroll/x")
                .unwrap()
                .namespace
                .as_str(),
            "acme/hr/payroll"
        );
        assert!(rule_for(&rules[1..], "acme/dev").is_none());
    }

    #[test]
    fn verdicts_follow_the_days() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let r = rule("acme", Some(30), Some(365));
        let days_ago = |d| now - Duration::days(d);
        assert_eq!(verdict(Some(&r), days_ago(1), now), Verdict::Keep);
        assert_eq!(verdict(Some(&r), days_ago(31), now), Verdict::PurgePayload);
        assert_eq!(verdict(Some(&r), days_ago(400), now), Verdict::DeleteHeader);
        assert_eq!(verdict(None, days_ago(4000), now), Verdict::Keep);
    }

    #[test]
    fn days_are_validated() {
        assert!(validate_days(Some(30), Some(30)).is_ok());
        assert!(validate_days(None, None).is_ok());
        assert!(validate_days(Some(30), None).is_ok());
        assert!(validate_days(Some(0), None).is_err());
        assert!(validate_days(Some(30), Some(7)).is_err());
        assert!(validate_days(None, Some(7)).is_ok());
        assert!(validate_days(Some(MAX_DAYS + 1), None).is_err());
    }

    #[test]
    fn holds_cover_subtree_and_time() {
        let t = |d| Utc.with_ymd_and_hms(2026, 1, d, 0, 0, 0).unwrap();
        let hold = LegalHold {
            id: uuid::Uuid::nil(),
            tenant: TenantId::parse("acme").unwrap(),
            namespace: Some(NamespacePath::parse("acme/hr").unwrap()),
            from: Some(t(5)),
            to: Some(t(10)),
            reason: "case".into(),
            created_by: "t".into(),
            created_at: t(1),
            released_by: None,
            released_reason: None,
            released_at: None,
        };
        assert!(hold.covers("acme/hr/x", t(5)));
        assert!(!hold.covers("acme/hr/x", t(10)));
        assert!(!hold.covers("acme/dev", t(6)));
        let mut ranges = Vec::new();
        for s in [1, 2, 3, 5, 7, 8] {
            push_seq(&mut ranges, s);
        }
        assert_eq!(ranges, vec![[1, 3], [5, 5], [7, 8]]);
    }
}
