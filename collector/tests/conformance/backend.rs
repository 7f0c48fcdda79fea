//! The backends the suite runs against, and a fresh, empty database of each per test:
//! SQLite always (a file in a temporary directory); PostgreSQL when
//! `WHOUSES_TEST_POSTGRES_URL` names a server we may create databases on (`CREATE
//! DATABASE` per test, so tests run in parallel; `scripts/test-all.sh` starts a
//! throwaway cluster and sets it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use whouses_collector::store::{self, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests may use, if any.
pub fn postgres_url() -> Option<String> {
    std::env::var("WHOUSES_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A database of its own for one test; removed with it (PostgreSQL: best effort, the
/// cluster is a throwaway one).
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Backend {
    /// A fresh database, or `None` when this backend is not available here (the test is
    /// then skipped, saying so).
    pub async fn fresh(self, test: &str) -> Option<TestDb> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("w.db").display());
                Some(TestDb {
                    url,
                    backend: self,
                    _dir: Some(dir),
                    pg_name: None,
                })
            }
            Backend::Postgres => {
                let Some(admin) = postgres_url() else {
                    eprintln!("{test}: skipped on PostgreSQL (set WHOUSES_TEST_POSTGRES_URL)");
                    return None;
                };
                let name = format!(
                    "whouses_t{}_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed),
                    rand::random::<u32>()
                );
                let client = admin_client(&admin).await;
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&format!("/{name}"));
                Some(TestDb {
                    url: url.to_string(),
                    backend: self,
                    _dir: None,
                    pg_name: Some(name),
                })
            }
        }
    }
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to WHOUSES_TEST_POSTGRES_URL: {e}"));
    tokio::spawn(conn);
    client
}

impl TestDb {
    pub async fn open(&self) -> Arc<dyn Store> {
        store::open(&self.url).await.unwrap()
    }

    /// A direct connection (PostgreSQL), to look at the tables.
    pub async fn client(&self) -> tokio_postgres::Client {
        admin_client(&self.url).await
    }

    /// Run SQL straight on the database (either backend), behind the store's back: to
    /// put it in a state the store itself would not (e.g. as an older release left it).
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://").to_string();
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Backend::Postgres => self.client().await.batch_execute(sql).await.unwrap(),
        }
    }

    /// One integer from a query run straight on the database (either backend).
    pub async fn query_i64(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://").to_string();
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row(sql, [], |r| r.get(0)).unwrap()
            }
            Backend::Postgres => self
                .client()
                .await
                .query_one(sql, &[])
                .await
                .unwrap()
                .get(0),
        }
    }

    /// Drop the database (PostgreSQL); call at the end of a test.
    pub async fn remove(self) {
        if let (Some(name), Some(admin)) = (&self.pg_name, postgres_url()) {
            let client = admin_client(&admin).await;
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// Run one async test body against both backends: `conformance!(name, body_fn)` makes
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = $crate::backend::Backend::Sqlite.fresh(stringify!($name)).await {
                        super::$name(&db).await;
                        db.remove().await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = $crate::backend::Backend::Postgres.fresh(stringify!($name)).await {
                        super::$name(&db).await;
                        db.remove().await;
                    }
                }
            )*
        }
    };
}
