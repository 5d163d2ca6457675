//! A Store on a fresh test database with two users signed up, shared by the grant and lock suites (each
//! suite adds its own helper methods to [`Fixture`]).

use std::str::FromStr;
use std::sync::Arc;

use homestead_backends::metadata::{self, Quota, SignupOutcome, now_micros};
use homestead_backends::{BlobStore, Store};
use homestead_config::{DatabaseKind, Storage, StorageType};

use crate::test_database::{Db, TestDatabase};

/// The first user of every fixture.
pub const ALICE: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
/// The second user of every fixture.
pub const BOB: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";
/// A key without an account.
pub const STRANGER: &str = "ybndrfg8ejkmcpqxot1uwisza345h769ybndrfg8ejkmcpqxot1u";

/// A Store on a fresh database with ALICE and BOB signed up, removed again when dropped.
pub struct Fixture {
    /// The Store under test.
    pub store: Store,
    /// Its database.
    pub database: TestDatabase,
}

impl Fixture {
    /// A fixture on `db`; a PostgreSQL database is named after `prefix`.
    pub async fn new(db: Db, prefix: &str) -> Self {
        let database = TestDatabase::new(db, prefix);
        let storage = Storage {
            kind: StorageType::InMemory,
            ..Storage::default()
        };
        let blobs = BlobStore::open(&storage, &database.dir.path().join("blobs")).unwrap();
        let metadata = Arc::from(metadata::open(&database.url).await.unwrap());
        let store = Store::new(
            metadata,
            &blobs,
            Quota::Unlimited,
            homestead_backends::entry_cache::TTL,
        );
        for user in [ALICE, BOB] {
            let created = store.accounts().create_user(user, None, now_micros()).await;
            assert_eq!(created.unwrap(), SignupOutcome::Created);
        }
        Fixture { store, database }
    }

    /// The number of rows of `table`, read past the Store.
    pub async fn rows(&self, table: &str) -> i64 {
        let statement = format!("SELECT COUNT(*) FROM {table}");
        let url = &self.database.url;
        match url.kind() {
            DatabaseKind::Postgres => {
                let pool = sqlx::PgPool::connect(url.as_str()).await.unwrap();
                let n = sqlx::query_scalar(&statement)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                n
            }
            DatabaseKind::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url.as_str())
                    .unwrap()
                    .read_only(true);
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                let n = sqlx::query_scalar(&statement)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                n
            }
        }
    }
}
