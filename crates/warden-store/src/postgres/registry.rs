//! The registry in PostgreSQL: servers, tools, agents and their history, with the same
//! statements as the SQLite store's registry module. Conditional updates name the version
//! they read; a concurrent writer of the same row waits for the first one's row lock and then
//! finds the version moved (`Conflict`). Of two concurrent inserts of one name, the second
//! fails on the primary key or the unique alias, also a `Conflict`.

use chrono::Utc;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;
use warden_core::{Error, Result, TenantId};
use warden_registry::model::{State, Tool, ToolServer};
use warden_registry::pin::digest;

use super::{PgStore, append_in, db_err, from_us, us};
use crate::model::EncodedEvent;
use crate::registry::*;

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("registry records serialize")
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::internal(format!("stored {what} does not parse: {e}")))
}

fn server_from_row(r: &PgRow) -> Result<StoredServer> {
    Ok(StoredServer {
        server: from_json(r.get("record"), "server")?,
        version: r.get("version"),
    })
}

fn tool_from_row(r: &PgRow) -> Result<StoredTool> {
    let observed: Option<String> = r.get("observed");
    Ok(StoredTool {
        tool: from_json(r.get("record"), "tool")?,
        observed: observed
            .as_deref()
            .map(|o| from_json(o, "tool definition"))
            .transpose()?,
        observed_sha256: r.get("observed_sha256"),
        version: r.get("version"),
        created_at: from_us(r.get("created_us")),
        updated_at: from_us(r.get("updated_us")),
    })
}

fn agent_from_row(r: &PgRow) -> Result<StoredAgent> {
    Ok(StoredAgent {
        agent: from_json(r.get("record"), "agent")?,
        version: r.get("version"),
    })
}

fn history_from_row(r: &PgRow) -> Result<HistoryEntry> {
    let id: &str = r.get("id");
    let bad = |what: String| Error::internal(format!("stored registry history {id}: {what}"));
    let state = |col: &str| -> Result<Option<State>> {
        let v: Option<&str> = r.get(col);
        v.map(|s| State::parse(s).ok_or_else(|| bad(format!("unknown state {s}"))))
            .transpose()
    };
    let subject_kind: &str = r.get("subject_kind");
    let kind: &str = r.get("kind");
    let event_id: Option<&str> = r.get("event_id");
    Ok(HistoryEntry {
        id: Uuid::parse_str(id).map_err(|e| bad(format!("id: {e}")))?,
        subject_kind: SubjectKind::parse(subject_kind)
            .ok_or_else(|| bad(format!("unknown subject kind {subject_kind}")))?,
        subject: r.get("subject"),
        tool: r.get("tool"),
        kind: ChangeKind::parse(kind).ok_or_else(|| bad(format!("unknown kind {kind}")))?,
        from_state: state("from_state")?,
        to_state: state("to_state")?,
        reason: r.get("reason"),
        by: r.get("changed_by"),
        at: from_us(r.get("at_us")),
        detail: from_json(r.get("detail"), "history detail")?,
        event_id: event_id
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|e| bad(format!("event id: {e}")))?,
    })
}

/// The columns of `registry_servers` beside the record: alias, state, owner.
fn server_columns(s: &ToolServer) -> (&str, &'static str, Option<&str>) {
    (
        s.alias.as_str(),
        s.state.as_str(),
        s.owner.as_ref().map(|o| o.as_str()),
    )
}

/// The columns of `registry_tools` beside the record: state, risk, categories, owner.
fn tool_columns(t: &Tool) -> (&'static str, Option<&'static str>, String, Option<&str>) {
    (
        t.state.as_str(),
        t.risk.map(|r| r.as_str()),
        categories_column(t),
        t.owner.as_ref().map(|o| o.as_str()),
    )
}

/// `column` starts with `prefix` (character-wise, no wildcards, the same on every database).
fn push_prefix(qb: &mut QueryBuilder<Postgres>, column: &str, prefix: &str) {
    qb.push(format!(" AND substr({column}, 1, "))
        .push_bind(prefix.chars().count() as i32)
        .push(") = ")
        .push_bind(prefix.to_owned());
}

pub(super) async fn apply(store: &PgStore, change: &RegistryChange) -> Result<()> {
    let tenant = change.tenant.as_str();
    if let Some(e) = change.events.iter().find(|e| e.header.tenant != tenant) {
        return Err(Error::internal(format!(
            "a registry change of tenant {tenant} carries an event of tenant {}",
            e.header.tenant
        )));
    }
    // Encoded before the write lock is taken, as the audit pipeline does.
    let encoded: Vec<EncodedEvent> = change
        .events
        .iter()
        .map(|e| EncodedEvent::of(e, false))
        .collect();
    let now = us(Utc::now());

    // Any error drops `tx`: nothing applies. The append at the end locks the tenant's Merkle
    // head, like every other append.
    let mut tx = store.pool.begin().await.map_err(db_err)?;
    sqlx::query("INSERT INTO tenants (id, created_us) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(tenant)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    for w in &change.writes {
        write(&mut tx, &change.tenant, w, now).await?;
    }
    for h in &change.history {
        sqlx::query(
            "INSERT INTO registry_history (id, tenant, subject_kind, subject, tool, kind, from_state, \
             to_state, reason, changed_by, at_us, detail, event_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
        )
        .bind(h.id.to_string())
        .bind(tenant)
        .bind(h.subject_kind.as_str())
        .bind(&h.subject)
        .bind(&h.tool)
        .bind(h.kind.as_str())
        .bind(h.from_state.map(State::as_str))
        .bind(h.to_state.map(State::as_str))
        .bind(&h.reason)
        .bind(&h.by)
        .bind(us(h.at))
        .bind(to_json(&h.detail))
        .bind(h.event_id.map(|e| e.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    }
    append_in(&mut tx, encoded).await?;
    tx.commit().await.map_err(db_err)
}

async fn write(
    tx: &mut PgConnection,
    tenant: &TenantId,
    w: &RegistryWrite,
    now: i64,
) -> Result<()> {
    let t = tenant.as_str();
    match w {
        RegistryWrite::InsertServer(s) => {
            check_server_free(tx, tenant, s.name.as_str(), &s.alias, None).await?;
            let (alias, state, owner) = server_columns(s);
            sqlx::query(
                "INSERT INTO registry_servers (tenant, name, alias, state, owner, record, version, \
                 created_us, updated_us) VALUES ($1,$2,$3,$4,$5,$6,1,$7,$8)",
            )
            .bind(t)
            .bind(s.name.as_str())
            .bind(alias)
            .bind(state)
            .bind(owner)
            .bind(to_json(s))
            .bind(us(s.created_at))
            .bind(us(s.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        RegistryWrite::UpdateServer {
            server: s,
            expected_version,
        } => {
            check_server_free(tx, tenant, s.name.as_str(), &s.alias, Some(s.name.as_str())).await?;
            let (alias, state, owner) = server_columns(s);
            let done = sqlx::query(
                "UPDATE registry_servers SET alias = $1, state = $2, owner = $3, record = $4, \
                 version = version + 1, updated_us = $5 WHERE tenant = $6 AND name = $7 AND version = $8",
            )
            .bind(alias)
            .bind(state)
            .bind(owner)
            .bind(to_json(s))
            .bind(us(s.updated_at))
            .bind(t)
            .bind(s.name.as_str())
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            if done.rows_affected() == 0 {
                let current: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM registry_servers WHERE tenant = $1 AND name = $2",
                )
                .bind(t)
                .bind(s.name.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                return Err(stale("server", s.name.as_str(), current));
            }
        }
        RegistryWrite::InsertTool { tool, observed } => {
            let server_exists: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM registry_servers WHERE tenant = $1 AND name = $2",
            )
            .bind(t)
            .bind(tool.server.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if server_exists.is_none() {
                return Err(Error::not_found(format!(
                    "server {} not found in the registry",
                    tool.server
                )));
            }
            let taken: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM registry_tools WHERE tenant = $1 AND server = $2 AND name = $3",
            )
            .bind(t)
            .bind(tool.server.as_str())
            .bind(&tool.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if taken.is_some() {
                return Err(Error::Conflict(format!(
                    "server {} already has a tool named {:?}",
                    tool.server, tool.name
                )));
            }
            let (state, risk, categories, owner) = tool_columns(tool);
            sqlx::query(
                "INSERT INTO registry_tools (tenant, server, name, state, risk, categories, owner, record, \
                 observed, observed_sha256, version, created_us, updated_us) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,1,$11,$12)",
            )
            .bind(t)
            .bind(tool.server.as_str())
            .bind(&tool.name)
            .bind(state)
            .bind(risk)
            .bind(categories)
            .bind(owner)
            .bind(to_json(tool))
            .bind(observed.as_ref().map(to_json))
            .bind(observed.as_ref().map(digest))
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        RegistryWrite::UpdateTool {
            tool,
            observed,
            expected_version,
        } => {
            let (state, risk, categories, owner) = tool_columns(tool);
            let done = sqlx::query(
                "UPDATE registry_tools SET state = $1, risk = $2, categories = $3, owner = $4, record = $5, \
                 observed = $6, observed_sha256 = $7, version = version + 1, updated_us = $8 \
                 WHERE tenant = $9 AND server = $10 AND name = $11 AND version = $12",
            )
            .bind(state)
            .bind(risk)
            .bind(categories)
            .bind(owner)
            .bind(to_json(tool))
            .bind(observed.as_ref().map(to_json))
            .bind(observed.as_ref().map(digest))
            .bind(now)
            .bind(t)
            .bind(tool.server.as_str())
            .bind(&tool.name)
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            if done.rows_affected() == 0 {
                let current: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM registry_tools WHERE tenant = $1 AND server = $2 AND name = $3",
                )
                .bind(t)
                .bind(tool.server.as_str())
                .bind(&tool.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                return Err(stale(
                    "tool",
                    &format!("{} of server {}", tool.name, tool.server),
                    current,
                ));
            }
        }
        RegistryWrite::InsertAgent(a) => {
            let taken: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM registry_agents WHERE tenant = $1 AND name = $2",
            )
            .bind(t)
            .bind(&a.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if taken.is_some() {
                return Err(Error::Conflict(format!(
                    "tenant {tenant} already has an agent named {:?}",
                    a.name
                )));
            }
            sqlx::query(
                "INSERT INTO registry_agents (tenant, name, owner, record, version, created_us, updated_us) \
                 VALUES ($1,$2,$3,$4,1,$5,$6)",
            )
            .bind(t)
            .bind(&a.name)
            .bind(a.owner.as_str())
            .bind(to_json(a))
            .bind(us(a.created_at))
            .bind(us(a.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        RegistryWrite::UpdateAgent {
            agent: a,
            expected_version,
        } => {
            let done = sqlx::query(
                "UPDATE registry_agents SET owner = $1, record = $2, version = version + 1, updated_us = $3 \
                 WHERE tenant = $4 AND name = $5 AND version = $6",
            )
            .bind(a.owner.as_str())
            .bind(to_json(a))
            .bind(us(a.updated_at))
            .bind(t)
            .bind(&a.name)
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            if done.rows_affected() == 0 {
                let current: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM registry_agents WHERE tenant = $1 AND name = $2",
                )
                .bind(t)
                .bind(&a.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                return Err(stale("agent", &a.name, current));
            }
        }
    }
    Ok(())
}

/// Why a conditional update did not apply.
fn stale(what: &str, name: &str, current: Option<i64>) -> Error {
    match current {
        None => Error::not_found(format!("{what} {name} not found in the registry")),
        Some(v) => Error::Conflict(format!(
            "{what} {name} was changed by someone else meanwhile (it is now at version {v}); \
             read it again and repeat the change"
        )),
    }
}

/// Refuses a server name or alias that another server of the tenant already has. `itself`:
/// the server being updated, whose own name and alias do not count.
async fn check_server_free(
    tx: &mut PgConnection,
    tenant: &TenantId,
    name: &str,
    alias: &str,
    itself: Option<&str>,
) -> Result<()> {
    let rows = sqlx::query(
        "SELECT name, alias FROM registry_servers WHERE tenant = $1 AND (name = $2 OR alias = $3)",
    )
    .bind(tenant.as_str())
    .bind(name)
    .bind(alias)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    for r in rows {
        let (other, other_alias): (String, String) = (r.get("name"), r.get("alias"));
        if Some(other.as_str()) == itself {
            continue;
        }
        if other == name {
            return Err(Error::Conflict(format!(
                "tenant {tenant} already has a server named {name}"
            )));
        }
        return Err(Error::Conflict(format!(
            "alias {other_alias:?} is already used by server {other} in tenant {tenant}; agents \
             see tools as <alias>__<tool>, so each server needs its own: choose another alias"
        )));
    }
    Ok(())
}

pub(super) async fn all(store: &PgStore) -> Result<RegistryRows> {
    let tenant = |r: &PgRow| TenantId::parse(r.get::<&str, _>("tenant"));
    let mut rows = RegistryRows::default();
    for r in sqlx::query("SELECT * FROM registry_servers ORDER BY tenant, name")
        .fetch_all(&store.pool)
        .await
        .map_err(db_err)?
    {
        rows.servers.push((tenant(&r)?, server_from_row(&r)?));
    }
    for r in sqlx::query("SELECT * FROM registry_tools ORDER BY tenant, server, name")
        .fetch_all(&store.pool)
        .await
        .map_err(db_err)?
    {
        rows.tools.push((tenant(&r)?, tool_from_row(&r)?));
    }
    for r in sqlx::query("SELECT * FROM registry_agents ORDER BY tenant, name")
        .fetch_all(&store.pool)
        .await
        .map_err(db_err)?
    {
        rows.agents.push((tenant(&r)?, agent_from_row(&r)?));
    }
    Ok(rows)
}

pub(super) async fn stamp(store: &PgStore) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT MAX(id) FROM registry_history")
        .fetch_one(&store.pool)
        .await
        .map_err(db_err)
}

pub(super) async fn get_server(
    store: &PgStore,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<StoredServer>> {
    let row = sqlx::query("SELECT * FROM registry_servers WHERE tenant = $1 AND name = $2")
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(server_from_row).transpose()
}

pub(super) async fn list_servers(
    store: &PgStore,
    tenant: &TenantId,
    f: &ServerFilter,
) -> Result<Vec<StoredServer>> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT * FROM registry_servers WHERE tenant = ");
    qb.push_bind(tenant.as_str().to_owned());
    if let Some(s) = f.state {
        qb.push(" AND state = ").push_bind(s.as_str());
    }
    if let Some(o) = &f.owner {
        qb.push(" AND owner = ").push_bind(o.clone());
    }
    if let Some(p) = &f.name_prefix {
        push_prefix(&mut qb, "name", p);
    }
    if let Some(a) = &f.after {
        qb.push(" AND name > ").push_bind(a.clone());
    }
    qb.push(" ORDER BY name LIMIT ").push_bind(f.limit as i64);
    let rows = qb.build().fetch_all(&store.pool).await.map_err(db_err)?;
    rows.iter().map(server_from_row).collect()
}

pub(super) async fn get_tool(
    store: &PgStore,
    tenant: &TenantId,
    server: &str,
    name: &str,
) -> Result<Option<StoredTool>> {
    let row =
        sqlx::query("SELECT * FROM registry_tools WHERE tenant = $1 AND server = $2 AND name = $3")
            .bind(tenant.as_str())
            .bind(server)
            .bind(name)
            .fetch_optional(&store.pool)
            .await
            .map_err(db_err)?;
    row.as_ref().map(tool_from_row).transpose()
}

pub(super) async fn list_tools(
    store: &PgStore,
    tenant: &TenantId,
    f: &ToolFilter,
) -> Result<Vec<StoredTool>> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT * FROM registry_tools WHERE tenant = ");
    qb.push_bind(tenant.as_str().to_owned());
    if let Some(s) = &f.server {
        qb.push(" AND server = ").push_bind(s.clone());
    }
    if let Some(s) = f.state {
        qb.push(" AND state = ").push_bind(s.as_str());
    }
    if let Some(r) = f.risk {
        qb.push(" AND risk = ").push_bind(r.as_str());
    }
    if let Some(c) = f.category {
        // Category names are fixed words: no LIKE wildcard can sneak in.
        qb.push(" AND categories LIKE ")
            .push_bind(format!("%,{},%", c.as_str()));
    }
    if let Some(o) = &f.owner {
        qb.push(" AND owner = ").push_bind(o.clone());
    }
    if let Some(p) = &f.name_prefix {
        push_prefix(&mut qb, "name", p);
    }
    if let Some((server, name)) = &f.after {
        qb.push(" AND (server > ")
            .push_bind(server.clone())
            .push(" OR (server = ")
            .push_bind(server.clone())
            .push(" AND name > ")
            .push_bind(name.clone())
            .push("))");
    }
    qb.push(" ORDER BY server, name LIMIT ")
        .push_bind(f.limit as i64);
    let rows = qb.build().fetch_all(&store.pool).await.map_err(db_err)?;
    rows.iter().map(tool_from_row).collect()
}

pub(super) async fn get_agent(
    store: &PgStore,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<StoredAgent>> {
    let row = sqlx::query("SELECT * FROM registry_agents WHERE tenant = $1 AND name = $2")
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(agent_from_row).transpose()
}

pub(super) async fn list_agents(
    store: &PgStore,
    tenant: &TenantId,
    f: &AgentFilter,
) -> Result<Vec<StoredAgent>> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT * FROM registry_agents WHERE tenant = ");
    qb.push_bind(tenant.as_str().to_owned());
    if let Some(o) = &f.owner {
        qb.push(" AND owner = ").push_bind(o.clone());
    }
    if let Some(p) = &f.name_prefix {
        push_prefix(&mut qb, "name", p);
    }
    if let Some(a) = &f.after {
        qb.push(" AND name > ").push_bind(a.clone());
    }
    qb.push(" ORDER BY name LIMIT ").push_bind(f.limit as i64);
    let rows = qb.build().fetch_all(&store.pool).await.map_err(db_err)?;
    rows.iter().map(agent_from_row).collect()
}

pub(super) async fn history(
    store: &PgStore,
    tenant: &TenantId,
    f: &HistoryFilter,
) -> Result<Vec<HistoryEntry>> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT * FROM registry_history WHERE tenant = ");
    qb.push_bind(tenant.as_str().to_owned());
    if let Some(k) = f.subject_kind {
        qb.push(" AND subject_kind = ").push_bind(k.as_str());
    }
    if let Some(s) = &f.subject {
        qb.push(" AND subject = ").push_bind(s.clone());
    }
    if let Some(t) = &f.tool {
        qb.push(" AND tool = ").push_bind(t.clone());
    }
    if !f.kinds.is_empty() {
        qb.push(" AND kind IN (");
        let mut sep = qb.separated(", ");
        for k in &f.kinds {
            sep.push_bind(k.as_str());
        }
        qb.push(")");
    }
    if let Some(before) = f.before {
        // Hyphenated lower-case UUIDv7s sort as text in the order they were made.
        qb.push(" AND id < ").push_bind(before.to_string());
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(f.limit as i64);
    let rows = qb.build().fetch_all(&store.pool).await.map_err(db_err)?;
    rows.iter().map(history_from_row).collect()
}
