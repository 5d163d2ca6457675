//! A fresh metadata database for one test, shared by the suites of this folder: a SQLite file in a
//! temporary directory, or a database of its own on the PostgreSQL server of `TEST_PG_ADMIN_URL` (set
//! by scripts/test), dropped again with the value.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use homestead_config::DatabaseUrl;

/// The engine a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh database and the test's temporary directory, removed again when dropped.
pub struct TestDatabase {
    /// Where the database is.
    pub url: DatabaseUrl,
    /// The test's temporary directory: the SQLite file, and room for the test's blobs.
    pub dir: tempfile::TempDir,
    /// The admin URL and the name of a PostgreSQL database, to drop it.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh database on `db`; a PostgreSQL database is named `prefix` and a unique suffix.
    pub fn new(db: Db, prefix: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (url, postgres) = match db {
            Db::Sqlite => (DatabaseUrl::sqlite_file(&dir.path().join("meta.db")), None),
            Db::Postgres => {
                let admin = env("TEST_PG_ADMIN_URL");
                let name = unique(prefix);
                psql(&admin, &format!("CREATE DATABASE {name}"));
                let (base, _) = admin.rsplit_once('/').unwrap();
                let url = DatabaseUrl::try_from(format!("{base}/{name}")).unwrap();
                (url, Some((admin, name)))
            }
        };
        TestDatabase { url, dir, postgres }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres {
            psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// The value of the environment variable `name`, which scripts/test sets.
pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test"))
}

/// `prefix` and a suffix of the process, a counter and the clock: a name no other test takes.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}{}x{}x{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
