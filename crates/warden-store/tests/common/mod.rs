//! The storage tests run every body against both systems of record: a real SQLite file in a
//! temporary folder, and a fresh database on a real PostgreSQL server
//! (`WARDEN_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`),
//! created for the test and dropped after it. An unreachable PostgreSQL fails the test: a
//! backend that was not tested is never reported as passing.
//!
//! ```ignore
//! async fn a_behaviour(b: Backend) { let db = TestDb::new(b).await; … }
//! on_both_backends!(a_behaviour);   // → sqlite::a_behaviour, postgres::a_behaviour
//! ```

#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use warden_store::postgres::{PgStore, Schema};
use warden_store::{SqliteStore, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite::NAME` and `postgres::NAME` tests calling `NAME(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

pub fn admin_url() -> String {
    std::env::var("WARDEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// One empty database of either kind, removed when dropped. [`TestDb::open`] gives as many
/// handles on it as a test wants (the server and the CLI, two nodes).
pub struct TestDb {
    pub backend: Backend,
    place: Place,
}

enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let place = match backend {
            Backend::Sqlite => Place::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => Place::Postgres(PgDatabase::create().await),
        };
        TestDb { backend, place }
    }

    /// A new handle on the database (migrating it on first use).
    pub async fn open(&self) -> Arc<dyn Store> {
        match &self.place {
            Place::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("warden.db"))
                    .await
                    .unwrap(),
            ),
            Place::Postgres(db) => Arc::new(
                PgStore::connect_with(db.options(), Schema::Migrate, 8)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Blocks every append to the audit log (another connection holding SQLite's write lock,
    /// or PostgreSQL's lock on the audit table) until [`WriteHold::release`].
    pub async fn hold_writes(&self) -> WriteHold {
        match &self.place {
            Place::Sqlite(dir) => {
                let options = SqliteConnectOptions::new().filename(dir.path().join("warden.db"));
                let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                WriteHold::Sqlite(conn)
            }
            Place::Postgres(db) => {
                let mut conn = PgConnection::connect_with(&db.options()).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE audit_events IN EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                WriteHold::Postgres(conn)
            }
        }
    }

    /// The PostgreSQL database's URL (for the CLI); `None` for SQLite.
    pub fn postgres_url(&self) -> Option<String> {
        match &self.place {
            Place::Postgres(db) => Some(db.url()),
            Place::Sqlite(_) => None,
        }
    }
}

/// Appends held back by [`TestDb::hold_writes`].
pub enum WriteHold {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl WriteHold {
    pub async fn release(self) {
        match self {
            WriteHold::Sqlite(mut conn) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            WriteHold::Postgres(mut conn) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// A database of its own on the test server, dropped (with any connection still open) when
/// this goes.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin}: {e}\n\
                 The storage tests run against PostgreSQL too and do not skip it: start it \
                 (`pg_ctlcluster 15 main start`) or point WARDEN_TEST_POSTGRES_URL at a server \
                 where this user may create databases."
            )
        });
        let name = format!("warden_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name} at {admin}: {e}"));
        let _ = conn.close().await;
        PgDatabase { name }
    }

    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&admin_url())
            .unwrap()
            .database(&self.name)
    }

    /// The admin URL with this database's name in place of its own.
    pub fn url(&self) -> String {
        let admin = admin_url();
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b.to_owned(), format!("?{q}")),
            None => (admin.clone(), String::new()),
        };
        let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
        let host_part = match base[scheme_end..].find('/') {
            Some(i) => &base[..scheme_end + i],
            None => &base,
        };
        format!("{host_part}/{}{query}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: drop the database
        // from a thread with a runtime of its own.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut conn = PgConnection::connect(&admin_url()).await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await?;
                    conn.close().await
                })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test database {}", self.name),
        }
    }
}
