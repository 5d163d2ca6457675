//! The import of a reference homeserver's database (OPERATIONS.md §12.2 at 0.9.3; grants, bearer
//! sessions, PoP nonces and token redemption times as the reference's later migrations add them), built
//! here from the spec on a real PostgreSQL, into Homestead's SQLite and PostgreSQL metadata: every table
//! mapped column by column, event ids kept with their gaps, bodies checked, a rerun changes nothing.

mod test_database;

use std::sync::Arc;

use homestead_backends::EntryPath;
use homestead_backends::import::{self, Bodies, ReferenceDb, Schema, TargetDb};
use homestead_backends::metadata::{self, EventFilter, EventOp, Quota};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use sha2::Digest;
use test_database::{Db, TestDatabase};

/// The reference's tables at 0.9.3 (OPERATIONS.md §12.2), and what 0.17.1 adds.
const SCHEMA_0_9_3: &str = r#"
CREATE TABLE migrations (id serial PRIMARY KEY, name varchar NOT NULL UNIQUE,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE users (id serial PRIMARY KEY, public_key varchar(52) NOT NULL UNIQUE,
    disabled bool NOT NULL DEFAULT false, used_bytes bigint NOT NULL DEFAULT 0,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, quota_storage_mb integer,
    quota_rate_read varchar(32), quota_rate_write varchar(32), quota_rate_read_burst integer,
    quota_rate_write_burst integer, allowed_write_paths text);
CREATE TABLE signup_codes (id varchar(14) PRIMARY KEY,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, used_by varchar(52),
    quota_storage_mb integer, quota_rate_read varchar(32), quota_rate_write varchar(32),
    quota_rate_read_burst integer, quota_rate_write_burst integer, allowed_write_paths text);
CREATE TABLE sessions (id serial PRIMARY KEY, secret varchar(26) NOT NULL UNIQUE,
    "user" integer NOT NULL REFERENCES users (id) ON DELETE CASCADE, capabilities text NOT NULL,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE events (id bigserial PRIMARY KEY, "type" varchar(3) NOT NULL,
    "user" integer NOT NULL REFERENCES users (id) ON DELETE CASCADE, path varchar NOT NULL,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, content_hash bytea);
CREATE TABLE entries (id bigserial PRIMARY KEY, path varchar NOT NULL,
    "user" integer NOT NULL REFERENCES users (id) ON DELETE CASCADE, content_hash bytea NOT NULL,
    content_length bigint NOT NULL, content_type varchar NOT NULL,
    modified_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP);
INSERT INTO migrations (name) VALUES ('m20250806_create_user'), ('m20250812_create_signup_code'),
    ('m20250813_create_session'), ('m20250814_create_event'), ('m20250815_create_entry'),
    ('m20251014_enhance_events_table'), ('m20260327_add_quota_columns'),
    ('m20260507_add_allowed_write_paths');
"#;
const SCHEMA_0_17_ADDS: &str = r#"
CREATE TABLE grants (id varchar(36) PRIMARY KEY, "user" integer NOT NULL REFERENCES users (id),
    client_id varchar(253) NOT NULL, client_cnf_key varchar(52) NOT NULL, capabilities text NOT NULL,
    issued_at bigint NOT NULL, expires_at bigint NOT NULL, revoked_at bigint,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE grant_sessions (id serial PRIMARY KEY, token_hash bytea NOT NULL UNIQUE,
    grant_id varchar(36) NOT NULL REFERENCES grants (id), expires_at bigint NOT NULL,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE pop_nonces (nonce varchar(36) PRIMARY KEY,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP);
ALTER TABLE signup_codes ADD COLUMN used_at timestamp;
CREATE TABLE entry_locks (path varchar PRIMARY KEY, token varchar(36) NOT NULL, expires_at bigint NOT NULL);
ALTER TABLE entries ALTER COLUMN path TYPE varchar COLLATE "C";
INSERT INTO migrations (name) VALUES ('m20260325_create_grant_sessions'),
    ('m20260609_add_signup_code_used_at'), ('m20260723_sanitize_capabilities'),
    ('m20260921_create_entry_locks'), ('m20261002_entry_path_c_collation');
"#;

const ALICE: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
const BOB: &str = "o4dksfbqk85ogzdb5osziw6befigbuxmuxkuxq8434q89uj56uyy";

fn hash(body: &[u8]) -> String {
    format!("\\x{}", blake3::hash(body).to_hex())
}

/// A reference database with two users, tokens, a session, three files (one of them changed on disk
/// since), events with gaps in their ids and, on 0.17.1, a grant with two
/// bearer sessions (0.17.1 itself leaves one per grant; an older database might hold more).
fn reference(schema: Schema) -> (TestDatabase, tempfile::TempDir) {
    let db = TestDatabase::new(Db::Postgres, "hs_import_ref_");
    let mut sql = SCHEMA_0_9_3.to_string();
    if schema == Schema::V0_17_1 {
        sql.push_str(SCHEMA_0_17_ADDS);
    }
    sql.push_str(&format!(
        "INSERT INTO users (public_key, created_at, quota_storage_mb, quota_rate_read) \
            VALUES ('{ALICE}', '2026-01-02 03:04:05.123456', 5, '10mb/s');
         INSERT INTO users (public_key, disabled, created_at, quota_storage_mb, allowed_write_paths) \
            VALUES ('{BOB}', true, '2026-02-01 00:00:00', -1, '[\"/pub/bob/\"]');
         INSERT INTO signup_codes (id, created_at, used_by) VALUES \
            ('AAAA-BBBB-CCCC', '2026-01-01 00:00:00', '{ALICE}'), \
            ('DDDD-EEEE-FFFF', '2026-01-01 00:00:01', NULL);
         INSERT INTO sessions (secret, \"user\", capabilities, created_at) \
            VALUES ('SECRETSECRETSECRETSECRET12', 1, '/:rw', '2026-01-02 03:04:06');
         INSERT INTO entries (path, \"user\", content_hash, content_length, content_type, created_at, modified_at) VALUES \
            ('/pub/a.txt', 1, '{}', 5, 'text/plain', '2026-01-03 00:00:00', '2026-01-04 00:00:00'), \
            ('/pub/dir/b.json', 1, '{}', 2, 'application/json', '2026-01-03 00:00:00', '2026-01-03 00:00:00'), \
            ('/pub/bob/c', 2, '{}', 3, 'application/octet-stream', '2026-02-02 00:00:00', '2026-02-02 00:00:00');
         INSERT INTO events (id, \"type\", \"user\", path, created_at, content_hash) VALUES \
            (5, 'PUT', 1, '/pub/a.txt', '2026-01-03 00:00:00', '{}'), \
            (9, 'DEL', 1, '/pub/gone', '2026-01-03 00:00:01', NULL), \
            (12, 'PUT', 2, '/pub/bob/c', '2026-02-02 00:00:00', '{}');",
        hash(b"hello"),
        hash(b"{}"),
        hash(b"bob"),
        hash(b"hello"),
        hash(b"bob"),
    ));
    if schema == Schema::V0_17_1 {
        sql.push_str(&format!(
            "UPDATE signup_codes SET used_at = '2026-01-02 03:04:05' WHERE used_by IS NOT NULL;
             INSERT INTO grants (id, \"user\", client_id, client_cnf_key, capabilities, issued_at, expires_at, created_at) \
                VALUES ('grant-1', 1, 'app.example', '{BOB}', '/pub/app/:rw', 1700000000, 4100000000, '2026-01-05 00:00:00');
             INSERT INTO grant_sessions (token_hash, grant_id, expires_at) VALUES \
                ('\\x{}', 'grant-1', 4000000000), ('\\x{}', 'grant-1', 4050000000);
             INSERT INTO pop_nonces (nonce) VALUES ('nonce-1');",
            "11".repeat(32),
            "22".repeat(32),
        ));
    }
    let out = std::process::Command::new("psql")
        .args([db.url.as_str(), "-v", "ON_ERROR_STOP=1", "-q"])
        .arg("-c")
        .arg(&sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = tempfile::tempdir().unwrap();
    let put = |user: &str, path: &str, body: &[u8]| {
        let file = files.path().join(user).join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, body).unwrap();
    };
    put(ALICE, "/pub/a.txt", b"hello");
    put(ALICE, "/pub/dir/b.json", b"{!"); // changed behind the reference's back
    put(BOB, "/pub/bob/c", b"bob");
    (db, files)
}

async fn import_into(
    reference: &TestDatabase,
    files: &std::path::Path,
    target: &TestDatabase,
) -> import::Tally {
    let mut source = ReferenceDb::open(reference.url.as_str(), "reference")
        .await
        .unwrap();
    let target_db = TargetDb::open(&target.url).await.unwrap();
    let blobs_dir = target.dir.path().join("blobs");
    std::fs::create_dir_all(&blobs_dir).unwrap();
    let blobs: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(&blobs_dir).unwrap());
    let bodies = Bodies::new(files.to_path_buf(), blobs, None);
    let tally = import::run(&mut source, &target_db, &bodies, |_| {})
        .await
        .unwrap();
    source.close().await;
    target_db.close().await;
    tally
}

async fn imports_every_table(schema: Schema, target_engine: Db) {
    let (reference, files) = reference(schema);
    let target = TestDatabase::new(target_engine, "hs_import_target_");
    let tally = import_into(&reference, files.path(), &target).await;
    assert_eq!(
        (tally.users, tally.tokens, tally.sessions, tally.events),
        (2, 2, 1, 3)
    );
    assert_eq!((tally.files_done, tally.copied, tally.already), (3, 2, 0));
    assert_eq!(tally.mismatches.len(), 1, "{:?}", tally.mismatches);
    assert!(tally.mismatches[0].starts_with(&format!("{ALICE}/pub/dir/b.json: ")));

    let meta = metadata::open(&target.url).await.unwrap();
    let alice = meta.user(ALICE).await.unwrap().unwrap();
    assert!(!alice.disabled);
    assert_eq!(alice.quota, Some(Quota::Bytes(5 << 20)));
    assert_eq!(alice.limits.rate_read.as_deref(), Some("10mb/s"));
    assert_eq!(
        alice.created_at, 1_767_323_045_123_456,
        "2026-01-02 03:04:05.123456 UTC"
    );
    assert_eq!(
        alice.used_bytes,
        5 + 256,
        "recounted from the imported files"
    );
    let bob = meta.user(BOB).await.unwrap().unwrap();
    assert!(bob.disabled);
    assert_eq!(bob.quota, Some(Quota::Unlimited));
    assert_eq!(
        bob.limits.allowed_write_paths,
        Some(vec!["/pub/bob/".to_string()])
    );
    let used = meta.signup_token("AAAA-BBBB-CCCC").await.unwrap().unwrap();
    assert_eq!(used.used_by.as_deref(), Some(ALICE));
    assert_eq!(
        used.used_at,
        Some(1_767_323_045_000_000 + 123_456 * (schema == Schema::V0_9_3) as i64)
    );
    let unused = meta.signup_token("DDDD-EEEE-FFFF").await.unwrap().unwrap();
    assert_eq!((unused.used_by, unused.used_at), (None, None));
    let secret_hash: [u8; 32] = sha2::Sha256::digest(b"SECRETSECRETSECRETSECRET12").into();
    let session = meta.session(&secret_hash).await.unwrap().unwrap();
    assert_eq!(
        (
            session.capabilities.as_str(),
            session.user.public_key.as_str()
        ),
        ("/:rw", ALICE)
    );

    let a = meta
        .entry(ALICE, &EntryPath::parse("/pub/a.txt").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.content_hash, *blake3::hash(b"hello").as_bytes());
    assert_eq!(
        (a.content_length, a.content_type.as_str()),
        (5, "text/plain")
    );
    assert_eq!(
        (a.created_at, a.modified_at),
        (1_767_398_400_000_000, 1_767_484_800_000_000)
    );
    let blob = std::fs::read(target.dir.path().join("blobs").join(&a.blob_key)).unwrap();
    assert_eq!(blob, b"hello");
    let b = meta
        .entry(ALICE, &EntryPath::parse("/pub/dir/b.json").unwrap())
        .await
        .unwrap();
    assert!(b.is_none(), "a mismatched body is left out");

    let events = meta.events(0, 100, &EventFilter::default()).await.unwrap();
    let ids: Vec<(u64, EventOp, &str)> = events
        .iter()
        .map(|e| (e.id, e.op, e.path.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            (5, EventOp::Put, "/pub/a.txt"),
            (9, EventOp::Del, "/pub/gone"),
            (12, EventOp::Put, "/pub/bob/c")
        ]
    );
    assert_eq!(
        events[0].content_hash,
        Some(*blake3::hash(b"hello").as_bytes())
    );
    assert_eq!(events[2].user, BOB);

    if schema == Schema::V0_17_1 {
        let grant = meta.grant("grant-1").await.unwrap().unwrap();
        assert_eq!(
            (
                grant.public_key.as_str(),
                grant.client_id.as_str(),
                grant.cnf.as_str()
            ),
            (ALICE, "app.example", BOB)
        );
        assert_eq!(
            (grant.issued_at, grant.expires_at, grant.revoked_at),
            (1_700_000_000, 4_100_000_000, None)
        );
        assert_eq!(grant.created_at, 1_767_571_200);
        let longest = [0x22u8; 32];
        let bearer = meta.bearer(&longest, 1_800_000_000).await.unwrap().unwrap();
        assert_eq!(
            bearer.expires_at, 4_050_000_000,
            "the longest-lived bearer of the grant"
        );
        assert!(
            meta.bearer(&[0x11; 32], 1_800_000_000)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(tally.grant_sessions, 1);
    }
    drop(meta);

    // Again: nothing to copy, the same rows.
    let again = import_into(&reference, files.path(), &target).await;
    assert_eq!((again.copied, again.already, again.events), (0, 2, 3));
    assert_eq!(again.mismatches.len(), 1);
    let meta = metadata::open(&target.url).await.unwrap();
    assert_eq!(
        meta.events(0, 100, &EventFilter::default())
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(meta.user(ALICE).await.unwrap().unwrap().used_bytes, 5 + 256);
}

#[tokio::test]
async fn a_0_9_3_reference_is_imported_into_sqlite() {
    imports_every_table(Schema::V0_9_3, Db::Sqlite).await;
}

#[tokio::test]
async fn a_0_9_3_reference_is_imported_into_postgres() {
    imports_every_table(Schema::V0_9_3, Db::Postgres).await;
}

#[tokio::test]
async fn a_0_17_1_reference_with_grants_is_imported_into_sqlite() {
    imports_every_table(Schema::V0_17_1, Db::Sqlite).await;
}

#[tokio::test]
async fn a_0_17_1_reference_with_grants_is_imported_into_postgres() {
    imports_every_table(Schema::V0_17_1, Db::Postgres).await;
}

#[tokio::test]
async fn a_target_with_other_data_is_refused() {
    let (reference, files) = reference(Schema::V0_9_3);
    let target = TestDatabase::new(Db::Sqlite, "hs_import_target_");
    let meta = metadata::open(&target.url).await.unwrap();
    meta.create_user(
        "ybndrfg8ejkmcpqxot1uwisza345h769ybndrfg8ejkmcpqxot1u",
        None,
        1,
    )
    .await
    .unwrap();
    drop(meta);
    let mut source = ReferenceDb::open(reference.url.as_str(), "reference")
        .await
        .unwrap();
    let target_db = TargetDb::open(&target.url).await.unwrap();
    let err = import::check_target(&mut source, &target_db)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not on the reference"), "{err}");
    drop(files);
}

/// Runs SQL on a test database.
fn psql(db: &TestDatabase, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([db.url.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_entry_path_that_is_not_a_file_path_is_a_mismatch() {
    let (reference, files) = reference(Schema::V0_9_3);
    psql(
        &reference,
        &format!(
            "INSERT INTO entries (path, \"user\", content_hash, content_length, content_type, created_at, modified_at) \
             VALUES ('/pub/../../secret', 1, '{}', 5, 'text/plain', '2026-01-03 00:00:00', '2026-01-03 00:00:00')",
            hash(b"hello")
        ),
    );
    let target = TestDatabase::new(Db::Sqlite, "hs_import_target_");
    let tally = import_into(&reference, files.path(), &target).await;
    assert!(
        tally
            .mismatches
            .iter()
            .any(|m| m == &format!("{ALICE}/pub/../../secret: not a normalized file path")),
        "{:?}",
        tally.mismatches
    );
    assert_eq!(tally.copied, 2, "the other bodies are imported");
}

#[tokio::test]
async fn a_user_key_that_is_not_a_public_key_stops_the_import() {
    let (reference, files) = reference(Schema::V0_9_3);
    psql(
        &reference,
        "INSERT INTO users (public_key, created_at) VALUES ('..', '2026-01-02 00:00:00')",
    );
    let target = TestDatabase::new(Db::Sqlite, "hs_import_target_");
    let mut source = ReferenceDb::open(reference.url.as_str(), "reference")
        .await
        .unwrap();
    let target_db = TargetDb::open(&target.url).await.unwrap();
    let blobs: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let bodies = Bodies::new(files.path().to_path_buf(), blobs, None);
    let err = import::run(&mut source, &target_db, &bodies, |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("user 3 has the key \"..\", which is not a public key"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
