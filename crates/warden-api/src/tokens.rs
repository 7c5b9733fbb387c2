//! API tokens: minted from 32 random bytes, shown once, stored only as SHA-256.
//!
//! Looking a token up costs a database read, so live tokens are cached briefly. Revocation
//! through this process drops the cache entry at once; a revocation made by another process
//! (the CLI, another node) takes effect within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use warden_core::{Actor, AuditEvent, Error, NamespacePath, Result, Role, TenantId, catalog};
use warden_store::{Store, TokenRecord};

pub const TOKEN_PREFIX: &str = "wdn_";
pub const CACHE_TTL: Duration = Duration::from_secs(2);
const CACHE_MAX: usize = 100_000;

pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_base62(n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).expect("the operating system's random source works");
        // Rejection sampling keeps every character equally likely.
        for b in buf {
            if (b as usize) < 62 * 4 && out.len() < n {
                out.push(ALPHABET[(b as usize) % 62] as char);
            }
        }
    }
    out
}

/// What a new token is for.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    pub tenant: TenantId,
    pub role: Role,
    pub agent: Option<String>,
    pub on_behalf_of: Option<String>,
    pub namespace: Option<NamespacePath>,
    pub ttl: Option<Duration>,
    pub description: Option<String>,
}

impl TokenSpec {
    pub fn validate(&self) -> Result<()> {
        if self.role == Role::Agent && self.agent.as_deref().is_none_or(str::is_empty) {
            return Err(Error::invalid(
                "an agent token needs the agent it stands for (--agent / \"agent\")",
            ));
        }
        if self.role != Role::Agent && (self.agent.is_some() || self.on_behalf_of.is_some()) {
            return Err(Error::invalid(
                "agent and on-behalf-of belong to agent tokens only",
            ));
        }
        if let Some(ns) = &self.namespace
            && ns.tenant() != self.tenant
        {
            return Err(Error::invalid(format!(
                "namespace {ns} does not belong to tenant {}",
                self.tenant
            )));
        }
        for v in [&self.agent, &self.on_behalf_of].into_iter().flatten() {
            if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
                return Err(Error::invalid(format!("invalid agent or user id {v:?}")));
            }
        }
        Ok(())
    }
}

/// A freshly minted token: the record to store and the secret to show once.
pub struct MintedToken {
    pub record: TokenRecord,
    pub secret: String,
}

pub fn mint(spec: &TokenSpec, now: DateTime<Utc>) -> Result<MintedToken> {
    spec.validate()?;
    let secret = format!("{TOKEN_PREFIX}{}", random_base62(43));
    let id = format!("tok_{}", uuid::Uuid::now_v7().simple());
    let expires_at = match spec.ttl {
        Some(d) => Some(
            now + chrono::Duration::from_std(d).map_err(|_| Error::invalid("ttl is too long"))?,
        ),
        None => None,
    };
    Ok(MintedToken {
        record: TokenRecord {
            id,
            tenant: spec.tenant.clone(),
            secret_sha256: secret_hash(&secret),
            role: spec.role,
            agent: spec.agent.clone(),
            on_behalf_of: spec.on_behalf_of.clone(),
            namespace: spec.namespace.clone(),
            description: spec.description.clone(),
            created_at: now,
            expires_at,
            revoked_at: None,
        },
        secret,
    })
}

/// The audit event for a token's creation or revocation. The secret never appears in it.
pub fn token_event(event_type: &str, record: &TokenRecord, by: Actor, source: &str) -> AuditEvent {
    let ns = record
        .namespace
        .clone()
        .unwrap_or_else(|| record.tenant.root_namespace());
    let payload = serde_json::json!({
        "token": {
            "id": record.id,
            "role": record.role,
            "agent": record.agent,
            "on_behalf_of": record.on_behalf_of,
            "namespace": record.namespace,
            "description": record.description,
            "expires_at": record.expires_at,
        }
    });
    let mut e = AuditEvent::new(
        record.tenant.as_str(),
        ns.as_str(),
        event_type,
        source,
        by,
        payload,
    );
    e.header.action = Some(
        if event_type == catalog::TOKEN_REVOKED {
            "revoke"
        } else {
            "create"
        }
        .into(),
    );
    e.header.resource = Some(warden_core::ResourceRef {
        resource_type: "Token".into(),
        id: record.id.clone(),
    });
    e
}

/// Token lookups with a short-lived cache of live tokens.
#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<String, (TokenRecord, Instant)>>,
}

impl TokenCache {
    pub async fn authenticate(&self, store: &dyn Store, secret: &str) -> Result<TokenRecord> {
        let hash = secret_hash(secret);
        let now = Utc::now();
        let cached = self.entries.read().expect("cache lock").get(&hash).cloned();
        let record = match cached {
            Some((rec, at)) if at.elapsed() < CACHE_TTL => rec,
            _ => {
                let rec = store.token_by_secret_hash(&hash).await?.ok_or_else(|| {
                    Error::unauthenticated("unknown token; create one with `warden token create`")
                })?;
                let mut map = self.entries.write().expect("cache lock");
                if map.len() >= CACHE_MAX {
                    map.clear();
                }
                map.insert(hash, (rec.clone(), Instant::now()));
                rec
            }
        };
        if record.revoked_at.is_some() {
            return Err(Error::unauthenticated("this token has been revoked"));
        }
        if !record.is_live(now) {
            return Err(Error::unauthenticated(
                "this token has expired; create a new one",
            ));
        }
        Ok(record)
    }

    pub fn forget(&self, token_id: &str) {
        self.entries
            .write()
            .expect("cache lock")
            .retain(|_, (r, _)| r.id != token_id);
    }
}

/// Creates the tenant if needed, stores a new token, and records both as audit events
/// directly in the store (used by the CLI, which has no pipeline).
pub async fn create_token(
    store: &dyn Store,
    spec: &TokenSpec,
    by: Actor,
    source: &str,
) -> Result<MintedToken> {
    let minted = mint(spec, Utc::now())?;
    if store.ensure_tenant(&spec.tenant).await? {
        let root = spec.tenant.root_namespace();
        let e = AuditEvent::new(
            spec.tenant.as_str(),
            root.as_str(),
            catalog::TENANT_CREATED,
            source,
            by.clone(),
            serde_json::json!({}),
        );
        warden_store::append_one(store, e).await?;
    }
    store.insert_token(&minted.record).await?;
    warden_store::append_one(
        store,
        token_event(catalog::TOKEN_CREATED, &minted.record, by, source),
    )
    .await?;
    Ok(minted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_random_and_only_hashed() {
        let spec = TokenSpec {
            tenant: TenantId::parse("acme").unwrap(),
            role: Role::Auditor,
            agent: None,
            on_behalf_of: None,
            namespace: None,
            ttl: None,
            description: None,
        };
        let a = mint(&spec, Utc::now()).unwrap();
        let b = mint(&spec, Utc::now()).unwrap();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(TOKEN_PREFIX) && a.secret.len() == 47);
        assert_eq!(a.record.secret_sha256, secret_hash(&a.secret));
        assert!(!format!("{:?}", a.record).contains(&a.secret));
    }

    #[test]
    fn agent_tokens_need_an_agent() {
        let spec = TokenSpec {
            tenant: TenantId::parse("acme").unwrap(),
            role: Role::Agent,
            agent: None,
            on_behalf_of: Some("alice".into()),
            namespace: None,
            ttl: None,
            description: None,
        };
        assert!(mint(&spec, Utc::now()).is_err());
    }
}
