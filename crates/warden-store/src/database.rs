//! Which system of record to use: `--database postgres://…`, `--database sqlite://PATH`, or
//! (nothing given) the SQLite file in the data directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use warden_core::{Error, Result};

use crate::Store;
use crate::postgres::{PgStore, Schema};
use crate::sqlite::{DEFAULT_BUSY_TIMEOUT, SqliteStore};

/// The database file's name in the data directory.
pub const DATABASE_FILE: &str = "warden.db";

#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (created on first use).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl Database {
    /// `postgres://…`, `postgresql://…`, `sqlite://PATH` or `sqlite:PATH`.
    pub fn parse(s: &str) -> Result<Database> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Database::Postgres(s.to_owned()));
        }
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(Error::invalid(
                    "sqlite:// needs a file path, e.g. sqlite:///var/lib/warden/warden.db",
                ));
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        Err(Error::invalid(format!(
            "unknown database {:?}: use postgres://USER@HOST:PORT/DB or sqlite://PATH",
            redact_url(s)
        )))
    }

    /// The default: the SQLite file in the data directory.
    pub fn in_data_dir(data_dir: &Path) -> Database {
        Database::Sqlite(data_dir.join(DATABASE_FILE))
    }

    /// The given database, or the data directory's default.
    pub fn or_data_dir(given: Option<&str>, data_dir: &Path) -> Result<Database> {
        match given {
            Some(s) => Database::parse(s),
            None => Ok(Database::in_data_dir(data_dir)),
        }
    }
}

/// Shown in messages and logs without the password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            Database::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// How [`open`] treats the store.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// Apply pending migrations (PostgreSQL). When false, a PostgreSQL schema older than this
    /// build is refused. The embedded SQLite file is always brought up to date: it has one
    /// owner, the process opening it.
    pub migrate: bool,
    /// SQLite: how long a write waits for another process's lock before failing.
    pub busy_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            migrate: true,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }
}

/// Opens the store the database names.
pub async fn open(db: &Database, opts: OpenOptions) -> Result<Arc<dyn Store>> {
    Ok(match db {
        Database::Sqlite(path) => Arc::new(SqliteStore::open_with(path, opts.busy_timeout).await?),
        Database::Postgres(url) => Arc::new(
            PgStore::connect(
                url,
                if opts.migrate {
                    Schema::Migrate
                } else {
                    Schema::RequireCurrent
                },
            )
            .await?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_the_backend() {
        assert_eq!(
            Database::parse("postgres://u@h:5432/db").unwrap(),
            Database::Postgres("postgres://u@h:5432/db".into())
        );
        assert_eq!(
            Database::parse("postgresql://h/db").unwrap(),
            Database::Postgres("postgresql://h/db".into())
        );
        assert_eq!(
            Database::parse("sqlite:///var/lib/w.db").unwrap(),
            Database::Sqlite("/var/lib/w.db".into())
        );
        assert_eq!(
            Database::parse("sqlite:data/w.db").unwrap(),
            Database::Sqlite("data/w.db".into())
        );
        let e = Database::parse("mysql://h/db").unwrap_err().to_string();
        assert!(e.contains("postgres://") && e.contains("sqlite://"), "{e}");
        assert!(Database::parse("sqlite://").is_err());
        assert_eq!(
            Database::or_data_dir(None, Path::new("/d")).unwrap(),
            Database::Sqlite("/d/warden.db".into())
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        let db = Database::parse("postgres://warden:s3cret@db:5432/warden").unwrap();
        assert_eq!(db.to_string(), "postgres://warden:***@db:5432/warden");
        assert!(!format!("{db:?}").contains("s3cret"));
    }
}
