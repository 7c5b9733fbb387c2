//! Tenant ids and namespace paths: the two coordinates every record is filed under.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Longest namespace path accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 255;
/// Deepest namespace accepted.
pub const MAX_NAMESPACE_DEPTH: usize = 16;
const MAX_SEGMENT_LEN: usize = 64;

/// A tenant (organisation). Its id is also the first segment of each of its namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, Error> {
        validate_segment(s)
            .map_err(|why| Error::invalid(format!("invalid tenant id {s:?}: {why}")))?;
        Ok(TenantId(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The tenant's root namespace (same name as the tenant).
    pub fn root_namespace(&self) -> NamespacePath {
        NamespacePath(self.0.clone())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A namespace: `acme`, `acme/platform`, `acme/platform/api`. The first segment is the tenant.
/// Policies attached to a namespace apply to it and to everything below it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacePath(String);

impl NamespacePath {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::invalid(format!("invalid namespace path {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > MAX_NAMESPACE_LEN {
            return Err(bad(&format!("longer than {MAX_NAMESPACE_LEN} bytes")));
        }
        let segments: Vec<&str> = s.split('/').collect();
        if segments.len() > MAX_NAMESPACE_DEPTH {
            return Err(bad(&format!("deeper than {MAX_NAMESPACE_DEPTH} levels")));
        }
        for seg in segments {
            validate_segment(seg).map_err(|why| bad(&why))?;
        }
        Ok(NamespacePath(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant this namespace belongs to (its first segment).
    pub fn tenant(&self) -> TenantId {
        TenantId(self.0.split('/').next().unwrap_or_default().to_owned())
    }

    /// This namespace and its ancestors, root first: `acme`, `acme/platform`, `acme/platform/api`.
    pub fn chain(&self) -> impl Iterator<Item = &str> {
        let s = self.0.as_str();
        s.match_indices('/')
            .map(move |(i, _)| &s[..i])
            .chain(std::iter::once(s))
    }

    pub fn parent(&self) -> Option<NamespacePath> {
        self.0
            .rfind('/')
            .map(|i| NamespacePath(self.0[..i].to_owned()))
    }

    /// True when `self` is `other` or lies below it.
    pub fn is_within(&self, other: &NamespacePath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }
}

fn validate_segment(seg: &str) -> Result<(), String> {
    if seg.is_empty() {
        return Err("empty segment (doubled, leading or trailing '/')".into());
    }
    if seg == "." || seg == ".." {
        return Err(format!("segment {seg:?} is not allowed"));
    }
    if seg.len() > MAX_SEGMENT_LEN {
        return Err(format!("segment longer than {MAX_SEGMENT_LEN} bytes"));
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "segment {seg:?} may only contain letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

impl fmt::Display for NamespacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                String::schema()
            }
        }
        impl utoipa::ToSchema for $t {}
    };
}
string_serde!(TenantId);
string_serde!(NamespacePath);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_chain_lists_ancestors_root_first() {
        let ns = NamespacePath::parse("acme/platform/api").unwrap();
        assert_eq!(
            ns.chain().collect::<Vec<_>>(),
            ["acme", "acme/platform", "acme/platform/api"]
        );
        assert_eq!(ns.tenant().as_str(), "acme");
        assert_eq!(ns.parent().unwrap().as_str(), "acme/platform");
    }

    #[test]
    fn namespace_rejects_traversal_empty_and_overlong() {
        for bad in [
            "",
            "acme//x",
            "/acme",
            "acme/",
            "acme/../x",
            "acme/./x",
            "acme/sp ace",
        ] {
            assert!(NamespacePath::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("acme/{}", "a/".repeat(200));
        assert!(NamespacePath::parse(&long).is_err());
    }

    #[test]
    fn within_respects_segment_boundaries() {
        let a = NamespacePath::parse("acme/plat").unwrap();
        let b = NamespacePath::parse("acme/platform").unwrap();
        let c = NamespacePath::parse("acme/platform/api").unwrap();
        assert!(c.is_within(&b));
        assert!(b.is_within(&b));
        assert!(!b.is_within(&a));
    }
}
