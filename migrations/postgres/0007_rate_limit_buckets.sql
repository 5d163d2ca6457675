-- Request-rate buckets shared by every instance on this database (`[[drive.rate_limits]]`): one row per
-- limit and client address or user, holding the theoretical arrival time of the bucket's next request in
-- MICROSECONDS since the Unix epoch on the DATABASE's clock (every statement reads the clock in SQL), so
-- that instances whose clocks differ still agree. A row whose time has passed is a full bucket, the same
-- as no row: such rows are deleted once a minute by an instance that checks a bucket.
--
-- UNLOGGED: a bucket is worth a write per limited request but not a WAL record. After a crash of the
-- database (or on a promoted replica) the table is empty: every client starts with a full bucket.
CREATE UNLOGGED TABLE rate_limit_buckets (
    -- The limit as configured (method, glob, quota, burst), then `ip:<address>` or the user's key.
    bucket  TEXT COLLATE "C" PRIMARY KEY,
    tat_us  BIGINT NOT NULL,
    -- Whether the last request of this bucket was let through.
    passed  BOOLEAN NOT NULL
);
