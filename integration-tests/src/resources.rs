//! Per-server backing resources: a fresh PostgreSQL database, a fresh S3 bucket, a free port.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback port free at the time of the call (for a process that binds it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test of this run (or a concurrent run) uses.
fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{}x{n}x{nanos}", std::process::id())
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test"))
}

/// A PostgreSQL database created for one server and dropped with this value.
pub struct TestDatabase {
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates `homestead_test_<unique>` through `TEST_PG_ADMIN_URL`.
    pub fn create() -> Self {
        let admin_url = env("TEST_PG_ADMIN_URL");
        let name = unique_name("homestead_test_");
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        Self { name, admin_url }
    }

    /// The URL a server connects with.
    pub fn url(&self) -> String {
        let (base, _) = self
            .admin_url
            .rsplit_once('/')
            .expect("URL with a database");
        format!("{base}/{}", self.name)
    }
}

impl TestDatabase {
    /// Ends every connection to this database that listens on `channel` (as a network fault would).
    pub fn terminate_listeners(&self, channel: &str) {
        psql(
            &self.admin_url,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid() \
                 AND query ILIKE '%LISTEN%{channel}%'",
                self.name
            ),
        );
    }
}

impl TestDatabase {
    /// The first column of the first row of `sql`, as text.
    pub fn value(&self, sql: &str) -> String {
        psql(&self.url(), sql)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` at `url` with psql, asserting success; what it printed (rows only, unaligned), trimmed.
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bucket on an S3-compatible server: a fresh one on the test server, or one made elsewhere (a Garage
/// cluster's) with its own credentials.
pub struct TestBucket {
    /// The bucket name.
    pub name: String,
    /// The S3 endpoint URL.
    pub endpoint: String,
    /// The access key id servers sign with.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// The region servers sign for.
    pub region: String,
}

impl TestBucket {
    /// Creates a bucket on `TEST_S3_ENDPOINT` (the test server accepts unsigned requests).
    pub async fn create() -> Self {
        let endpoint = env("TEST_S3_ENDPOINT");
        let name = unique_name("hs-");
        let response = reqwest::Client::new()
            .put(format!("{endpoint}/{name}"))
            .send()
            .await
            .expect("reach the S3 test server");
        assert!(
            response.status().is_success(),
            "create bucket {name}: {}",
            response.status()
        );
        Self {
            name,
            endpoint,
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            region: "us-east-1".into(),
        }
    }
}
