-- The small-PUT ceiling of the load bench on PostgreSQL (benches/load.rs, target pg-commit): the
-- statements Homestead's PostgreSQL engine runs for one 1 KiB PUT (backends/src/metadata), one
-- transaction per write: the session read (sql.rs SESSION), then the write transaction of the group
-- commit (postgres.rs BEGIN_WRITE, READ_FOR_PUT, WRITE_PUT). Homestead shares that transaction between
-- the writes that wait together, which this script does not.
-- Client n is user `bench<n>` with the session whose secret hash is int8send(n); load.rs makes them on a
-- database prepared by Homestead's migrations. Run with `pgbench -n -M prepared -f <this file>`.
\set slot random(0, 999)
SELECT s.capabilities, s.created_at, u.public_key, u.disabled, u.used_bytes, u.quota_bytes, u.created_at, u.limits FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.secret_hash = int8send(:client_id::bigint);
BEGIN;
SELECT pg_advisory_xact_lock(7311142570157080576), pg_notify('events', '');
-- Homestead reads these columns and computes the new usage itself; here the usage comes with the row.
SELECT u.id AS uid, u.used_bytes, u.quota_bytes, e.content_length, e.blob_key, e.content_hash, e.modified_at, u.used_bytes + 1280 - COALESCE(e.content_length + 256, 0) AS used FROM users u LEFT JOIN entries e ON e.user_id = u.id AND e.path = '/pub/load/' || :slot WHERE u.public_key = 'bench' || :client_id FOR UPDATE OF u \gset
WITH entry AS (INSERT INTO entries (user_id, path, content_hash, content_length, content_type, blob_key, created_at, modified_at) VALUES (:uid, '/pub/load/' || :slot, sha256(int8send(:slot)), 1024, 'application/octet-stream', 'bench' || :client_id || '/' || md5(random()::text), CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT), CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)) ON CONFLICT (user_id, path) DO UPDATE SET content_hash = excluded.content_hash, content_length = excluded.content_length, content_type = excluded.content_type, blob_key = excluded.blob_key, modified_at = excluded.modified_at), usage AS (UPDATE users SET used_bytes = :used WHERE id = :uid) INSERT INTO events (op, user_id, path, content_hash, created_at) VALUES ('PUT', :uid, '/pub/load/' || :slot, sha256(int8send(:slot)), CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)) RETURNING id;
END;
