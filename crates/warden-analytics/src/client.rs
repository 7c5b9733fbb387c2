//! ClickHouse over its HTTP interface: statements in the body, inserts as `RowBinary`,
//! answers as `JSONCompact`. Nothing newer than ClickHouse 18.16 is used (no query
//! parameters, hence [`quote`] for every value put into a statement).

use std::time::Duration;

use reqwest::Url;
use serde_json::Value;
use warden_registry::model::SecretRef;

use crate::config::AnalyticsConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// No answer: refused connection, timeout, broken transfer.
    #[error("ClickHouse is unreachable: {0}")]
    Unreachable(String),
    /// ClickHouse answered with an error (its message, e.g. `Code: 60, e.displayText() = …`).
    #[error("ClickHouse refused the statement (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// The answer was not what the statement should return.
    #[error("unexpected answer from ClickHouse: {0}")]
    Answer(String),
    #[error("{0}")]
    Secret(String),
}

/// A handle on one ClickHouse server and the database Warden uses there.
#[derive(Clone, Debug)]
pub struct ClickHouse {
    http: reqwest::Client,
    base: Url,
    database: String,
    user: Option<String>,
    password: Option<SecretRef>,
}

/// How long a connection attempt may take: a server that is down should fail a feed attempt
/// quickly so that the retry and the lag metric say so.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one statement may take (an insert of a full batch, a report over a large window).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl ClickHouse {
    pub fn new(config: &AnalyticsConfig) -> Result<ClickHouse, String> {
        config.validate()?;
        let base = Url::parse(&config.clickhouse_url).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A connection per statement: statements are large and few, and a kept-alive
            // connection in constant use would hold up a ClickHouse that is shutting down.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(ClickHouse {
            http,
            base,
            database: config.database.clone(),
            user: config.user.clone(),
            password: config.password.clone(),
        })
    }

    /// The database Warden's table lives in.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// `database.table`, for statements.
    pub fn table(&self, table: &str) -> String {
        format!("{}.{table}", self.database)
    }

    fn password(&self) -> Result<Option<String>, ClickHouseError> {
        // Resolved at each request, so a rotated secret is picked up without a restart.
        match &self.password {
            None => Ok(None),
            Some(SecretRef::Env(name)) => std::env::var(name).map(Some).map_err(|_| {
                ClickHouseError::Secret(format!(
                    "the ClickHouse password's environment variable {name} is not set for Warden"
                ))
            }),
            Some(SecretRef::File(path)) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| {
                    ClickHouseError::Secret(format!(
                        "cannot read the ClickHouse password file {path}: {e}"
                    ))
                }),
        }
    }

    async fn send(
        &self,
        query_param: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Result<String, ClickHouseError> {
        let mut url = self.base.clone();
        if let Some(q) = query_param {
            url.query_pairs_mut().append_pair("query", q);
        }
        let mut req = self.http.post(url).body(body);
        if let Some(user) = &self.user {
            req = req.basic_auth(user, self.password()?);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClickHouseError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| ClickHouseError::Unreachable(error_chain(&e)))?;
        if !status.is_success() {
            return Err(ClickHouseError::Refused {
                status: status.as_u16(),
                message: text.trim().to_owned(),
            });
        }
        Ok(text)
    }

    /// Runs a statement that returns nothing (DDL, `ALTER`).
    pub async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        self.send(None, sql.as_bytes().to_vec()).await.map(|_| ())
    }

    /// Runs a `SELECT` and returns its rows, each a list of values in column order. 64-bit
    /// integers come back as strings from ClickHouse; [`as_u64`] reads either form.
    pub async fn rows(&self, select: &str) -> Result<Vec<Vec<Value>>, ClickHouseError> {
        let text = self
            .send(None, format!("{select} FORMAT JSONCompact").into_bytes())
            .await?;
        // An error raised after the answer started streaming is appended to a 200's body,
        // which then does not parse.
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ClickHouseError::Answer(format!("not JSON ({e}): {text:.300}")))?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| ClickHouseError::Answer(format!("no `data` in {text:.200}")))?;
        data.iter()
            .map(|r| {
                r.as_array()
                    .cloned()
                    .ok_or_else(|| ClickHouseError::Answer(format!("a row is not a list: {r}")))
            })
            .collect()
    }

    /// Inserts `RowBinary` rows of `columns` (a comma-separated list) into `table` of
    /// Warden's database.
    pub async fn insert_binary_rows(
        &self,
        table: &str,
        columns: &str,
        rows: impl Into<reqwest::Body>,
    ) -> Result<(), ClickHouseError> {
        let q = format!(
            "INSERT INTO {} ({columns}) FORMAT RowBinary",
            self.table(table)
        );
        self.send(Some(&q), rows).await.map(|_| ())
    }

    /// Whether the server answers at all.
    pub async fn ping(&self) -> Result<(), ClickHouseError> {
        self.rows("SELECT 1").await.map(|_| ())
    }
}

/// A string literal for a ClickHouse statement: quoted, with backslash and quote escaped
/// (ClickHouse reads backslash escapes in literals).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A count from a `JSONCompact` answer: a number, or a string for 64-bit integers.
pub fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A string from a `JSONCompact` answer.
pub fn as_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(quote("acme"), "'acme'");
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
    }

    #[test]
    fn counts_read_as_numbers_or_strings() {
        assert_eq!(as_u64(&serde_json::json!(7)), Some(7));
        assert_eq!(
            as_u64(&serde_json::json!("18446744073709551615")),
            Some(u64::MAX)
        );
        assert_eq!(as_u64(&serde_json::json!(null)), None);
    }
}
